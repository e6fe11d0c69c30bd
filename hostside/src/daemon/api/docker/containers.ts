/**
 * Docker's container endpoints: validate, call the ContainerManager, answer in Docker's shapes and codes.
 * Streams (attach, logs, archive) live in their own modules.
 */
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import type { ContainerManager, CreateRequest, WaitCondition } from '../../containers/manager.ts';
import type { PortBinding } from '../../containers/record.ts';
import type { Router } from '../http/router.ts';
import { anonymousMounts, mergeMounts, parseBind, parseMount } from '../../volumes/mount-spec.ts';
import { containerInspect, containerSummary } from './container-json.ts';
import { commandList, createContainerSchema, parseBody, type CreateContainerBody } from './schemas.ts';

export interface ContainerRouteDeps {
  manager: ContainerManager;
  execIdsOf: (containerId: string) => string[];
  networkExists: (name: string) => boolean;
  /** Bytes the image's layers take on the host (docker ps -s shows them as the "virtual" size). */
  imageBytes?: (imageId: string) => number;
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
};

/** Pure: Docker's log-opt sizes ("10m", "1g", "500k", "1024"). */
export function parseSize(value: string, what: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(value.trim());
  const unit = SIZE_UNITS[match?.[2]?.toLowerCase() ?? 'x'];
  if (!match || unit === undefined)
    throw new TetherError('TETHER_INVALID_PARAMETER', `${what}: "${value}" is not a size such as 10m or 1g`);
  return Math.floor(Number(match[1]) * unit);
}

/** Pure: the create body in our terms; refuses what a VM container cannot do, saying why. */
export function createRequestFrom(
  body: CreateContainerBody,
  name: string | undefined,
  networkExists: (n: string) => boolean,
): CreateRequest {
  const host = body.HostConfig ?? {};
  const mounts = mergeMounts(
    [...(host.Binds ?? []).map(parseBind), ...(host.Mounts ?? []).map(parseMount)],
    anonymousMounts(body.Volumes),
  );
  if (Object.keys(host.Tmpfs ?? {}).length > 0)
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      `--tmpfs is not supported yet (${Object.keys(host.Tmpfs ?? {})[0]}): use a volume (-v NAME:PATH), or mount a tmpfs from the container's command`,
    );
  if (host.Privileged)
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      '--privileged is not supported: the container is a VM of its own',
    );
  const mode = host.NetworkMode ?? '';
  if (mode && !['default', 'bridge', 'host', 'none'].includes(mode) && !networkExists(mode))
    throw new TetherError('TETHER_NO_SUCH_NETWORK', `network ${mode} not found`);
  const portBindings: PortBinding[] = [];
  for (const [containerPort, list] of Object.entries(host.PortBindings ?? {})) {
    if (!/^\d{1,5}(\/(tcp|udp))?$/.test(containerPort))
      throw new TetherError('TETHER_INVALID_PARAMETER', `invalid port ${containerPort} in -p`);
    const key = containerPort.includes('/') ? containerPort : `${containerPort}/tcp`;
    for (const binding of list ?? [{}]) {
      const hostPort = binding.HostPort ?? '';
      if (hostPort && (!/^\d{1,5}$/.test(hostPort) || Number(hostPort) < 1 || Number(hostPort) > 65535))
        throw new TetherError(
          'TETHER_INVALID_PARAMETER',
          `invalid host port ${hostPort} in -p (a range is not supported)`,
        );
      const hostIp = binding.HostIp || '127.0.0.1';
      if (!/^\d+\.\d+\.\d+\.\d+$/.test(hostIp))
        throw new TetherError('TETHER_INVALID_PARAMETER', `invalid host address ${hostIp} in -p (IPv4 only)`);
      portBindings.push({ containerPort: key, hostIp, hostPort });
    }
  }
  const logType = host.LogConfig?.Type;
  if (logType && !['json-file', 'local', 'tether-log-port', 'default'].includes(logType))
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      `log driver ${logType} is not supported: tetherd keeps each container's log port file (use --log-opt max-size/max-file)`,
    );
  const logOptions = host.LogConfig?.Config ?? {};
  const memory = host.Memory ?? 0;
  return {
    name,
    image: body.Image,
    cmd: commandList(body.Cmd),
    entrypoint: commandList(body.Entrypoint),
    env: body.Env ?? undefined,
    workingDir: body.WorkingDir ?? undefined,
    user: body.User ?? undefined,
    tty: body.Tty ?? false,
    openStdin: body.OpenStdin ?? false,
    stdinOnce: body.StdinOnce ?? false,
    attachStdin: body.AttachStdin ?? false,
    attachStdout: body.AttachStdout ?? true,
    attachStderr: body.AttachStderr ?? true,
    labels: body.Labels ?? undefined,
    exposedPorts: [
      ...Object.keys(body.ExposedPorts ?? {}),
      ...portBindings.map((binding) => binding.containerPort),
    ],
    hostname: body.Hostname ?? undefined,
    mounts,
    stopSignal: body.StopSignal ?? undefined,
    stopTimeout: body.StopTimeout ?? undefined,
    hostConfig: {
      autoRemove: host.AutoRemove ?? false,
      memoryBytes: memory,
      portBindings,
      ...(logOptions['max-size']
        ? { logMaxBytes: parseSize(logOptions['max-size'], '--log-opt max-size') }
        : {}),
      ...(logOptions['max-file']
        ? { logMaxFiles: Math.max(1, parseSize(logOptions['max-file'], '--log-opt max-file')) }
        : {}),
      restartPolicy: host.RestartPolicy?.Name || 'no',
      ...(typeof host.Init === 'boolean' ? { init: host.Init } : {}),
      ...(host.PidsLimit && host.PidsLimit > 0 ? { pidsLimit: host.PidsLimit } : {}),
    },
  };
}

function flag(query: URLSearchParams, name: string): boolean {
  const value = query.get(name);
  return value === '1' || value === 'true' || value === 'True';
}

function timeoutOf(query: URLSearchParams): number | undefined {
  const value = query.get('t') ?? query.get('timeout');
  if (value === null || value === '') return undefined;
  const seconds = Number(value);
  if (!Number.isInteger(seconds))
    throw new TetherError('TETHER_INVALID_PARAMETER', `timeout must be whole seconds, got ${value}`);
  return seconds < 0 ? 3600 * 24 : seconds;
}

function filterPattern(value: string): RegExp {
  try {
    return new RegExp(value);
  } catch (error) {
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      `invalid filter name=${value}: ${(error as Error).message}`,
    );
  }
}

/** Docker's `filters` query parameter: JSON {"name": ["x"], "status": ["running"]} (or legacy {"name":{"x":true}}). */
export function parseFilters(raw: string | null): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (!raw) return out;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new TetherError('TETHER_INVALID_PARAMETER', `invalid filters: ${raw}`);
  }
  for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (Array.isArray(value)) out.set(key, value.map(String));
    else if (value && typeof value === 'object') out.set(key, Object.keys(value));
  }
  return out;
}

export function registerContainerRoutes(router: Router, deps: ContainerRouteDeps): void {
  const { manager } = deps;

  router.add('POST', '/containers/create', async (ctx) => {
    const body = parseBody(createContainerSchema, await ctx.json(), 'container config');
    const container = await manager.create(
      createRequestFrom(body, ctx.query.get('name') || undefined, deps.networkExists),
    );
    ctx.send(201, { Id: container.id, Warnings: [] });
  });

  router.add('GET', '/containers/json', (ctx) => {
    const all = flag(ctx.query, 'all');
    const filters = parseFilters(ctx.query.get('filters'));
    const limit = Number(ctx.query.get('limit') ?? -1);
    let list = manager.list().filter((c) => all || c.running || filters.has('status'));
    for (const [key, values] of filters) {
      list = list.filter((c) => {
        const r = c.record;
        switch (key) {
          case 'name':
            // As Docker since 18.09: the pattern matches the name with or without its leading slash
            // (`name=^/web$` is the usual exact match in scripts).
            return values.some((v) => {
              const pattern = filterPattern(v);
              return pattern.test(r.name) || pattern.test(`/${r.name}`);
            });
          case 'id':
            return values.some((v) => r.id.startsWith(v));
          case 'status':
            return values.includes(r.state.status);
          case 'label':
            return values.every((v) => {
              const [k, val] = v.split('=', 2) as [string, string | undefined];
              return val === undefined ? k in r.config.labels : r.config.labels[k] === val;
            });
          case 'ancestor':
            return values.some((v) => r.image === v || r.imageId.includes(v));
          case 'exited':
            return r.state.status === 'exited' && values.includes(String(r.state.exitCode));
          default:
            return true;
        }
      });
    }
    if (limit > 0) list = list.slice(0, limit);
    const now = Date.now();
    // docker ps -s: the bytes of the container's own writable layer, and with its image's (shared) layers.
    const size = flag(ctx.query, 'size');
    const sizesOf = (c: (typeof list)[number]): { SizeRw: number; SizeRootFs: number } => {
      const own = manager.driver.rootLayerBytes?.(c.dir) ?? 0;
      return { SizeRw: own, SizeRootFs: own + (deps.imageBytes?.(c.record.imageId) ?? 0) };
    };
    ctx.send(
      200,
      list.map((c) => ({
        ...containerSummary(c, now),
        ...(size ? sizesOf(c) : {}),
      })),
    );
  });

  router.add('GET', '/containers/{id}/json', (ctx) => {
    const container = manager.find(ctx.params['id']!);
    ctx.send(200, containerInspect(container, deps.execIdsOf(container.id)));
  });

  router.add('POST', '/containers/{id}/start', async (ctx) => {
    const started = await manager.start(ctx.params['id']!);
    ctx.send(started ? 204 : 304);
  });

  router.add('POST', '/containers/{id}/stop', async (ctx) => {
    const stopped = await manager.stop(ctx.params['id']!, timeoutOf(ctx.query));
    ctx.send(stopped ? 204 : 304);
  });

  router.add('POST', '/containers/{id}/restart', async (ctx) => {
    await manager.restart(ctx.params['id']!, timeoutOf(ctx.query));
    ctx.send(204);
  });

  router.add('POST', '/containers/{id}/kill', async (ctx) => {
    await manager.kill(ctx.params['id']!, ctx.query.get('signal') || 'SIGKILL');
    ctx.send(204);
  });

  router.add('POST', '/containers/{id}/wait', async (ctx) => {
    const condition = (ctx.query.get('condition') || 'not-running') as WaitCondition;
    if (!['not-running', 'next-exit', 'removed'].includes(condition))
      throw new TetherError('TETHER_INVALID_PARAMETER', `invalid condition: "${condition}"`);
    const pending = manager.wait(ctx.params['id']!, condition);
    // The CLI reads the status line before the result: send headers now so it knows the wait began.
    const body = ctx.stream(200, 'application/json');
    const result = await pending;
    body.end(JSON.stringify(result) + '\n');
  });

  router.add('DELETE', '/containers/{id}', async (ctx) => {
    if (flag(ctx.query, 'link')) throw new TetherError('TETHER_INVALID_PARAMETER', 'links are not supported');
    await manager.remove(ctx.params['id']!, {
      force: flag(ctx.query, 'force'),
      removeVolumes: flag(ctx.query, 'v'),
    });
    ctx.send(204);
  });

  router.add('POST', '/containers/{id}/resize', (ctx) => {
    const container = manager.find(ctx.params['id']!);
    const rows = Number(ctx.query.get('h'));
    const cols = Number(ctx.query.get('w'));
    if (!(rows > 0 && cols > 0 && rows <= 10000 && cols <= 10000))
      throw new TetherError(
        'TETHER_INVALID_PARAMETER',
        `invalid terminal size h=${ctx.query.get('h')} w=${ctx.query.get('w')}`,
      );
    manager.resize(container, { rows, cols });
    ctx.send(200, '');
  });

  router.add('POST', '/containers/{id}/rename', (ctx) => {
    void ctx;
    throw new TetherError('TETHER_INVALID_PARAMETER', 'rename is not supported yet');
  });

  router.add('POST', '/containers/prune', (ctx) => {
    const deleted: string[] = [];
    const work = manager
      .list()
      .filter((c) => c.record.state.status === 'exited' || c.record.state.status === 'created')
      .map(async (c) => {
        await manager.remove(c.id, { force: false });
        deleted.push(c.id);
      });
    return Promise.all(work).then(() => ctx.send(200, { ContainersDeleted: deleted, SpaceReclaimed: 0 }));
  });
}
