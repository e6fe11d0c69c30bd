/**
 * Version negotiation and daemon facts: /_ping (the CLI reads API-Version from its headers and speaks the
 * lower of its own and ours), /version, /info, /auth (`docker login`, checked against the registry), and
 * the /events stream.
 */
import { cpus, hostname, totalmem, release } from 'node:os';
import type { ContainerManager } from '../../containers/manager.ts';
import type { DockerEvent } from '../../containers/events.ts';
import { checkLogin, parseInsecureList } from '../../images/registry/index.ts';
import { parseDockerTime } from '../../logs/index.ts';
import { API_VERSION, MIN_API_VERSION, type Router } from '../http/router.ts';
import { parseFilters } from './containers.ts';

export const TETHER_VERSION = '0.1.0';
const MAX_UNREAD_EVENT_BYTES = 1024 * 1024;

export interface SystemInfo {
  manager: ContainerManager;
  root: string;
  imageCount: () => number;
}

function pingHeaders(): Record<string, string> {
  return {
    'API-Version': API_VERSION,
    'Docker-Experimental': 'false',
    OSType: 'linux',
    Server: `tetherd/${TETHER_VERSION}`,
    'Cache-Control': 'no-cache, no-store, must-revalidate',
    Pragma: 'no-cache',
  };
}

/** Pure: whether an event passes Docker's events filters (type, container, event/action, image, label). */
export function eventMatches(event: DockerEvent, filters: Map<string, string[]>): boolean {
  for (const [key, values] of filters) {
    const ok = (() => {
      switch (key) {
        case 'type':
          return values.includes(event.Type);
        case 'container':
          return (
            event.Type === 'container' &&
            values.some((v) => event.Actor.ID.startsWith(v) || event.Actor.Attributes['name'] === v)
          );
        case 'event':
        case 'action':
          return values.some((v) => event.Action === v || event.Action.startsWith(`${v}:`));
        case 'image':
          return values.includes(event.Actor.Attributes['image'] ?? '');
        case 'label':
          return values.every((v) => {
            const [k, val] = v.split('=', 2) as [string, string | undefined];
            return val === undefined ? k in event.Actor.Attributes : event.Actor.Attributes[k] === val;
          });
        default:
          return true;
      }
    })();
    if (!ok) return false;
  }
  return true;
}

export function registerSystemRoutes(router: Router, info: SystemInfo): void {
  const ping = (ctx: Parameters<Parameters<Router['add']>[2]>[0]): void => ctx.send(200, 'OK', pingHeaders());
  router.add('GET', '/_ping', ping);
  router.add('HEAD', '/_ping', ping);

  router.add('GET', '/version', (ctx) => {
    ctx.send(
      200,
      {
        Platform: { Name: 'Tether' },
        Components: [
          {
            Name: 'Engine',
            Version: TETHER_VERSION,
            Details: { ApiVersion: API_VERSION, MinAPIVersion: MIN_API_VERSION, Os: 'linux', Arch: 'amd64' },
          },
          { Name: 'tetherd', Version: TETHER_VERSION, Details: { VmDriver: info.manager.driver.name } },
        ],
        Version: TETHER_VERSION,
        ApiVersion: API_VERSION,
        MinAPIVersion: MIN_API_VERSION,
        GitCommit: '',
        GoVersion: process.version,
        Os: 'linux',
        Arch: 'amd64',
        KernelVersion: release(),
        BuildTime: '',
      },
      pingHeaders(),
    );
  });

  // `docker login HOST`: the CLI stores the credentials only after the daemon has checked them here.
  const insecure = parseInsecureList(process.env['TETHER_INSECURE_REGISTRIES']);
  router.add('POST', '/auth', async (ctx) => ctx.send(200, await checkLogin(await ctx.json(), { insecure })));

  router.add('GET', '/info', (ctx) => {
    const containers = info.manager.list();
    const count = (status: string): number =>
      containers.filter((c) => c.record.state.status === status).length;
    ctx.send(200, {
      ID: hostname(),
      Containers: containers.length,
      ContainersRunning: count('running'),
      ContainersPaused: 0,
      ContainersStopped: containers.length - count('running'),
      Images: info.imageCount(),
      Driver: 'tether-vm',
      DriverStatus: [['VM driver', info.manager.driver.name]],
      Plugins: { Volume: [], Network: ['tether'], Authorization: null, Log: ['json-file'] },
      MemoryLimit: true,
      SwapLimit: false,
      CpuCfsPeriod: false,
      CpuCfsQuota: false,
      IPv4Forwarding: false,
      Debug: false,
      NFd: 0,
      NGoroutines: 0,
      SystemTime: new Date().toISOString(),
      // Our log file behaves as json-file does (max-size, max-file, docker logs); clients branch on the name.
      LoggingDriver: 'json-file',
      CgroupDriver: 'none',
      CgroupVersion: '2',
      NEventsListener: info.manager.events.listenerCount('event'),
      KernelVersion: release(),
      OperatingSystem: 'Tether (containers as VMs)',
      OSType: 'linux',
      Architecture: 'x86_64',
      NCPU: cpus().length,
      MemTotal: totalmem(),
      DockerRootDir: info.root,
      Name: hostname(),
      Labels: [],
      ExperimentalBuild: false,
      ServerVersion: TETHER_VERSION,
      Runtimes: { 'tether-vm': { path: 'tetherd' } },
      DefaultRuntime: 'tether-vm',
      Isolation: 'vm',
      SecurityOptions: [],
      Warnings: [],
    });
  });

  router.add('GET', '/events', async (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    const now = Date.now();
    const since = ctx.query.get('since');
    const until = ctx.query.get('until');
    const sinceNs = since ? parseDockerTime(since, now) * 1e6 : undefined;
    const untilMs = until ? parseDockerTime(until, now) : undefined;
    const out = ctx.stream(200, 'application/json');
    const send = (event: DockerEvent): void => {
      if (!eventMatches(event, filters)) return;
      // A client that stops reading is cut loose rather than buffered for without bound.
      if (out.writableLength > MAX_UNREAD_EVENT_BYTES) {
        ctx.log.warn('events client not reading: disconnected');
        out.destroy();
        return;
      }
      out.write(JSON.stringify(event) + '\n');
    };
    if (sinceNs !== undefined)
      for (const event of info.manager.events.since(sinceNs))
        if (untilMs === undefined || event.time * 1000 <= untilMs) send(event);
    if (untilMs !== undefined && untilMs <= Date.now()) {
      out.end();
      return;
    }
    info.manager.events.on('event', send);
    const timer = untilMs !== undefined ? setTimeout(() => out.end(), untilMs - Date.now()) : undefined;
    await Promise.race([ctx.closed, new Promise<void>((resolve) => out.once('finish', () => resolve()))]);
    clearTimeout(timer);
    info.manager.events.off('event', send);
  });
}
