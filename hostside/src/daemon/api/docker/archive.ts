/**
 * docker cp: Docker's archive endpoints, served by the agent's archive requests over the container's
 * channel (the agent packs and unpacks tar streams inside the VM). HEAD and GET carry the path's stat in
 * the X-Docker-Container-Path-Stat header, base64 JSON with Go's file-mode bits, as the CLI expects.
 */
import { pipeline } from 'node:stream/promises';
import { isTetherError, TetherError } from '../../../../../protocol/src/errors/errors.ts';
import { dockerFileMode, type ArchiveStat } from '../../../../../protocol/src/requests/requests.ts';
import type { ContainerManager } from '../../containers/manager.ts';
import type { Router, RouteContext } from '../http/router.ts';

export function statHeader(stat: ArchiveStat): string {
  return Buffer.from(JSON.stringify({ ...stat, mode: dockerFileMode(stat.mode) })).toString('base64');
}

function pathOf(ctx: RouteContext): string {
  const path = ctx.query.get('path');
  if (!path)
    throw new TetherError('TETHER_INVALID_PARAMETER', 'path is required (the path inside the container)');
  return path.startsWith('/') ? path : `/${path}`;
}

/** Docker's words for a path that is not there (the CLI prints them as they are). */
async function dockerPathErrors<T>(path: string, containerId: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (isTetherError(error, 'TETHER_PATH_NOT_FOUND'))
      throw new TetherError(
        'TETHER_PATH_NOT_FOUND',
        `Could not find the file ${path} in container ${containerId}`,
        {
          cause: error,
        },
      );
    throw error;
  }
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
    const channel = await client(ctx);
    const stat = await dockerPathErrors(pathOf(ctx), ctx.params['id']!, () =>
      channel.archiveStat(pathOf(ctx)),
    );
    ctx.send(200, undefined, {
      'X-Docker-Container-Path-Stat': statHeader(stat),
      'Content-Type': 'application/x-tar',
    });
  });

  router.add('GET', '/containers/{id}/archive', async (ctx) => {
    const channel = await client(ctx);
    const { stat, tar, done } = await dockerPathErrors(pathOf(ctx), ctx.params['id']!, () =>
      channel.archiveGet(pathOf(ctx)),
    );
    const out = ctx.stream(200, 'application/x-tar', { 'X-Docker-Container-Path-Stat': statHeader(stat) });
    // The response ends only once the agent says the tar is whole: a failure part-way then cuts the
    // connection (the client sees a truncated body) instead of ending a clean, short tar that the CLI
    // would unpack as a success.
    await pipeline(tar, out, { end: false });
    await done;
    out.end();
  });

  router.add('PUT', '/containers/{id}/archive', async (ctx) => {
    const channel = await client(ctx);
    await dockerPathErrors(pathOf(ctx), ctx.params['id']!, () => channel.archivePut(pathOf(ctx), ctx.req));
    ctx.send(200, '');
  });
}
