/**
 * tetherd: the stores, the container manager and the API, served on one unix socket. Stopping it lets go
 * of every VM without stopping them: the next tetherd adopts them.
 */
import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import type { VmDriver } from '../vm/driver.ts';
import type { BootImagePaths } from '../vm/paths.ts';
import { registerContainerRoutes } from './api/docker/containers.ts';
import { ExecSessions, registerExecRoutes } from './api/docker/exec.ts';
import { registerImageRoutes } from './api/docker/images.ts';
import { NetworkStore, registerNetworkRoutes } from './api/docker/networks.ts';
import { registerArchiveRoutes } from './api/docker/archive.ts';
import { registerStreamRoutes } from './api/docker/streams.ts';
import { registerSystemRoutes } from './api/docker/system.ts';
import { registerTopRoute } from './api/docker/top.ts';
import { registerVolumeRoutes } from './api/docker/volumes.ts';
import { registerDiskUsageRoute } from './api/docker/disk-usage.ts';
import { Router } from './api/http/router.ts';
import { registerTetherRoutes } from './api/tether/routes.ts';
import { EventBus } from './containers/events.ts';
import { ContainerManager, MAX_ROOT_PATH_BYTES } from './containers/manager.ts';
import { ImageStore } from './images/index.ts';
import { VolumeStore } from './volumes/volume-store.ts';

export interface DaemonOptions {
  root: string;
  socket: string;
  driver: VmDriver;
  bootImage: BootImagePaths;
  logger: Logger;
  bootTimeoutMs?: number;
  /** init-image/tar-to-ext4.sh: turns an image's flattened root into its disk. */
  tarToExt4Script: string;
}

export class Daemon {
  readonly manager: ContainerManager;
  readonly images: ImageStore;
  readonly #server: Server;
  readonly #socket: string;
  readonly #log: Logger;

  private constructor(
    manager: ContainerManager,
    images: ImageStore,
    server: Server,
    socket: string,
    log: Logger,
  ) {
    this.manager = manager;
    this.images = images;
    this.#server = server;
    this.#socket = socket;
    this.#log = log;
  }

  static async start(options: DaemonOptions): Promise<Daemon> {
    const log = options.logger;
    const root = resolve(options.root);
    if (Buffer.byteLength(root) > MAX_ROOT_PATH_BYTES)
      throw new TetherError(
        'TETHER_USAGE',
        `--root ${root} is ${Buffer.byteLength(root)} bytes long; each VM's sockets live under it and a unix socket path holds 107 bytes, so give a root of at most ${MAX_ROOT_PATH_BYTES} bytes`,
      );
    mkdirSync(root, { recursive: true, mode: 0o700 });
    await refuseSecondDaemon(options.socket);
    const events = new EventBus();
    const warn = (message: string): void => log.warn(message);
    const images = new ImageStore(join(root, 'images'), { script: options.tarToExt4Script, warn });
    const volumes = new VolumeStore(join(root, 'volumes'), { warn });
    const manager = await ContainerManager.open({
      root,
      driver: options.driver,
      bootImage: options.bootImage,
      images,
      volumes,
      events,
      logger: log,
      ...(options.bootTimeoutMs !== undefined ? { bootTimeoutMs: options.bootTimeoutMs } : {}),
    });
    const networks = new NetworkStore(root);
    const execs = new ExecSessions();
    const router = new Router(log);
    registerSystemRoutes(router, { manager, root, imageCount: () => images.list().length });
    registerContainerRoutes(router, {
      manager,
      execIdsOf: (id) => execs.idsOf(id),
      networkExists: (name) => networks.exists(name),
      imageBytes: (imageId) => {
        const image = images.list().find((candidate) => candidate.id === imageId);
        return images.layers.bytes(image?.layers ?? []);
      },
    });
    registerStreamRoutes(router, manager);
    registerArchiveRoutes(router, manager);
    registerExecRoutes(router, manager, execs);
    registerTopRoute(router, manager);
    registerImageRoutes(router, images, manager, events);
    registerNetworkRoutes(router, networks, events);
    registerVolumeRoutes(router, { volumes, manager, events });
    registerDiskUsageRoute(router, { images, volumes, manager });
    registerTetherRoutes(router, manager);
    events.on('event', (event) => {
      if (event.Action === 'destroy') execs.prune((id) => manager.list().some((c) => c.id === id));
    });

    const server = createServer({ requestTimeout: 0, headersTimeout: 60_000, maxHeaderSize: 64 * 1024 });
    server.on('request', (req, res) => void router.handle(req, res));
    server.on('upgrade', (req, socket, head) => void router.handle(req, undefined, socket, head));
    server.on('clientError', (error, socket) => {
      // Malformed HTTP: answer 400 and close that connection only.
      if (socket.writable)
        socket.end(
          'HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n' +
            JSON.stringify({ message: `malformed HTTP request: ${error.message}` }) +
            '\n',
        );
    });
    mkdirSync(dirname(options.socket), { recursive: true, mode: 0o755 });
    rmSync(options.socket, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.socket, () => resolve());
    });
    chmodSync(options.socket, 0o660);
    log.info({ socket: options.socket, root, driver: options.driver.name }, 'tetherd listening');
    return new Daemon(manager, images, server, options.socket, log);
  }

  /** Stops serving and lets go of every VM; they keep running. */
  async close(): Promise<void> {
    this.manager.close();
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
    rmSync(this.#socket, { force: true });
    this.#log.info('tetherd stopped; containers keep running');
  }
}

/** Two daemons on one root would both drive the same VMs: refuse when the socket answers. */
async function refuseSecondDaemon(socket: string): Promise<void> {
  if (!existsSync(socket)) return;
  const alive = await new Promise<boolean>((resolve) => {
    const probe = connect(socket);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive)
    throw new TetherError(
      'TETHER_USAGE',
      `another tetherd already serves ${socket}; stop it first or give this one --socket and --root of its own`,
    );
}
