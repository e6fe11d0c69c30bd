/**
 * Docker's volume endpoints over the volume store: each volume a disk of its own (volumes/volume-store.ts).
 * A volume in use by any container (running or not) is not removed, as Docker refuses it too.
 */
import * as v from 'valibot';
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import type { ContainerManager } from '../../containers/manager.ts';
import type { EventBus } from '../../containers/events.ts';
import type { VolumeRecord, VolumeStore } from '../../volumes/volume-store.ts';
import type { Router } from '../http/router.ts';
import { parseFilters } from './containers.ts';
import { parseBody } from './schemas.ts';

const volumeCreateSchema = v.looseObject({
  Name: v.nullish(v.string()),
  Driver: v.nullish(v.string()),
  DriverOpts: v.nullish(v.record(v.string(), v.string())),
  Labels: v.nullish(v.record(v.string(), v.string())),
});

/** Docker's Volume object. */
export function volumeJson(
  store: VolumeStore,
  volume: VolumeRecord,
  usage?: { size: number; refs: number },
): Record<string, unknown> {
  return {
    CreatedAt: volume.createdAt,
    Driver: 'local',
    Labels: volume.labels,
    Mountpoint: store.mountpoint(volume.name),
    Name: volume.name,
    Options: Object.keys(volume.options).length ? volume.options : null,
    Scope: 'local',
    ...(usage ? { UsageData: { Size: usage.size, RefCount: usage.refs } } : {}),
  };
}

function labelsMatch(labels: Record<string, string>, wanted: readonly string[]): boolean {
  return wanted.every((want) => {
    const at = want.indexOf('=');
    return at < 0 ? want in labels : labels[want.slice(0, at)] === want.slice(at + 1);
  });
}

export interface VolumeRouteDeps {
  volumes: VolumeStore;
  manager: ContainerManager;
  events: EventBus;
}

export function registerVolumeRoutes(router: Router, deps: VolumeRouteDeps): void {
  const { volumes, manager, events } = deps;
  const inUse = (name: string): boolean => manager.volumeUsers(name).length > 0;

  router.add('GET', '/volumes', (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    let list = volumes.list();
    const names = filters.get('name');
    if (names) list = list.filter((volume) => names.some((name) => volume.name.includes(name)));
    const dangling = filters.get('dangling')?.[0];
    if (dangling !== undefined) {
      const want = dangling === 'true' || dangling === '1';
      list = list.filter((volume) => !inUse(volume.name) === want);
    }
    const labels = filters.get('label');
    if (labels) list = list.filter((volume) => labelsMatch(volume.labels, labels));
    const drivers = filters.get('driver');
    if (drivers && !drivers.includes('local')) list = [];
    ctx.send(200, { Volumes: list.map((volume) => volumeJson(volumes, volume)), Warnings: [] });
  });

  router.add('POST', '/volumes/create', async (ctx) => {
    const body = parseBody(volumeCreateSchema, await ctx.json(), 'volume config');
    if (body.Driver && body.Driver !== 'local')
      throw new TetherError(
        'TETHER_INVALID_PARAMETER',
        `volume driver ${body.Driver} is not supported: tetherd's volumes are disks of its own (driver "local")`,
      );
    const existed = body.Name ? volumes.has(body.Name) : false;
    const volume = await volumes.create({
      name: body.Name ?? undefined,
      labels: body.Labels ?? undefined,
      options: body.DriverOpts ?? undefined,
    });
    if (!existed) events.publish('volume', 'create', volume.name, { driver: 'local' });
    ctx.send(201, volumeJson(volumes, volume));
  });

  router.add('GET', '/volumes/{name}', (ctx) => {
    ctx.send(200, volumeJson(volumes, volumes.get(ctx.params['name']!)));
  });

  router.add('DELETE', '/volumes/{name}', (ctx) => {
    const name = ctx.params['name']!;
    const users = manager.volumeUsers(name);
    if (!volumes.has(name)) {
      // docker volume rm -f of a missing volume succeeds, as Docker's does.
      if (ctx.query.get('force') === 'true' || ctx.query.get('force') === '1') return ctx.send(204);
      volumes.get(name);
    }
    if (users.length > 0)
      throw new TetherError(
        'TETHER_CONFLICT',
        `remove ${name}: volume is in use - [${users.map((c) => c.id).join(', ')}]`,
      );
    volumes.remove(name);
    events.publish('volume', 'destroy', name, { driver: 'local' });
    ctx.send(204);
  });

  router.add('POST', '/volumes/prune', (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    // Docker 23+: only anonymous volumes, unless all=true.
    const all = ['true', '1'].includes(filters.get('all')?.[0] ?? '');
    const labels = filters.get('label') ?? [];
    const deleted: string[] = [];
    let reclaimed = 0;
    for (const volume of volumes.list()) {
      if (inUse(volume.name) || (!all && !volume.anonymous) || !labelsMatch(volume.labels, labels)) continue;
      reclaimed += volumes.diskBytes(volume.name);
      volumes.remove(volume.name);
      events.publish('volume', 'destroy', volume.name, { driver: 'local' });
      deleted.push(volume.name);
    }
    ctx.send(200, { VolumesDeleted: deleted, SpaceReclaimed: reclaimed });
  });
}
