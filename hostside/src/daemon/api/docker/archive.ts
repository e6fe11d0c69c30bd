/**
 * docker cp: Docker's archive endpoints, served by the agent's archive requests over the container's
 * channel (the agent packs and unpacks tar streams inside the VM). HEAD and GET carry the path's stat in
 * the X-Docker-Container-Path-Stat header, base64 JSON with Go's file-mode bits, as the CLI expects.
 */
import { pipeline } from 'node:stream/promises';
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import type { ContainerManager } from '../../containers/manager.ts';
import type { Router, RouteContext } from '../http/router.ts';

/** Go's os.FileMode type bits, which the docker CLI tests (IsDir, symlink). */
const GO_MODE_DIR = 2 ** 31;
const GO_MODE_SYMLINK = 2 ** 27;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

export interface PathStat {
  name: string;
  size: number;
  mode: number;
  mtime: string;
  linkTarget: string;
}

/** Pure: a unix st_mode as Go's FileMode (permission bits plus the type bit). */
export function goFileMode(unixMode: number): number {
  const type = unixMode & S_IFMT;
  const perm = unixMode & 0o777;
  if (type === S_IFDIR) return GO_MODE_DIR + perm;
  if (type === S_IFLNK) return GO_MODE_SYMLINK + perm;
  return perm;
}

export function statHeader(stat: PathStat): string {
  return Buffer.from(JSON.stringify({ ...stat, mode: goFileMode(stat.mode) })).toString('base64');
}

function pathOf(ctx: RouteContext): string {
  const path = ctx.query.get('path');
  if (!path)
    throw new TetherError('TETHER_INVALID_PARAMETER', 'path is required (the path inside the container)');
  return path.startsWith('/') ? path : `/${path}`;
}

export function registerArchiveRoutes(router: Router, manager: ContainerManager): void {
  const client = async (ctx: RouteContext): Promise<Awaited<ReturnType<ContainerManager['channel']>>> => {
    const container = manager.find(ctx.params['id']!);
    if (!container.running)
      throw new TetherError(
        'TETHER_NOT_RUNNING',
        `container ${container.id} is not running: docker cp reaches its files through the agent in its VM, so start it first`,
      );
    return manager.channel(container);
  };

  router.add('HEAD', '/containers/{id}/archive', async (ctx) => {
    const stat = await (await client(ctx)).archiveStat(pathOf(ctx));
    ctx.send(200, undefined, {
      'X-Docker-Container-Path-Stat': statHeader(stat),
      'Content-Type': 'application/x-tar',
    });
  });

  router.add('GET', '/containers/{id}/archive', async (ctx) => {
    const channel = await client(ctx);
    const { stat, tar, done } = await channel.archiveGet(pathOf(ctx));
    const out = ctx.stream(200, 'application/x-tar', { 'X-Docker-Container-Path-Stat': statHeader(stat) });
    await pipeline(tar, out);
    await done;
  });

  router.add('PUT', '/containers/{id}/archive', async (ctx) => {
    const channel = await client(ctx);
    await channel.archivePut(pathOf(ctx), ctx.req);
    ctx.send(200, '');
  });
}
