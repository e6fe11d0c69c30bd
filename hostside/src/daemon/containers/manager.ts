/**
 * The containers of one tetherd: create, start (a VM boot through any VmDriver), stop, kill, restart,
 * remove, wait, and re-adoption of running VMs when tetherd starts again. Every state change is written
 * atomically before it is acted on where a crash could otherwise leave a VM nobody owns:
 *
 *   create   containers/.new-<id>/ is filled, then renamed to containers/<id>/ (whole or absent)
 *   start    the VM lives in the container's directory, so a tetherd killed between spawning QEMU and
 *            recording "running" finds the VM there on its next start and adopts it
 *   remove   the record says "removing", the VM is killed, the directory is renamed to .trash-<id> and
 *            deleted; a crash at any point is finished on the next start
 *
 * The exit of a boot comes, in order of trust, from the agent over the channel, from the agent's status
 * records on the console (which also serves a tetherd that was down when the process ended), and last from
 * how the VM ended. Console records count only when signed with the boot's status key (a fresh one per
 * boot, kept in the container's directory as status.key): a container can print on the console too.
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { randomBytes } from 'node:crypto';
import { encodeConfig } from '../../../../protocol/src/config/config.ts';
import { describeError, isTetherError, TetherError } from '../../../../protocol/src/errors/errors.ts';
import { STATUS_KEY_BYTES, decodeStatusKey } from '../../../../protocol/src/status/console-line.ts';
import type { ChannelClient } from '../../channel/client.ts';
import { connectVmChannel } from '../../vm/channel-connect.ts';
import { exitFromRecords, fatalBootRecord, oomKilledIn } from '../../vm/console-status.ts';
import { ConsoleWatcher, type ConsoleWatcherOptions } from '../../vm/console-watcher.ts';
import type { PortForward, Vm, VmDriver, VmExit } from '../../vm/driver.ts';
import type { BootImagePaths } from '../../vm/paths.ts';
import { buildRunConfig, newContainerId } from '../../vm/run-config.ts';
import { STATUS_KEY_FILE, generateStatusKey, loadStatusKey } from '../../vm/status-key.ts';
import { LogStore, startRotation } from '../logs/index.ts';
import { fsyncTree, publishDirectory, readJson, writeFileAtomic } from '../state/atomic-file.ts';
import type { VolumeMountRequest } from '../volumes/mount-spec.ts';
import type { VolumeStore } from '../volumes/volume-store.ts';
import { Container, RECORD_FILE, type Boot } from './container.ts';
import {
  checkVolumeConflicts,
  createMounts,
  removeAnonymous,
  volumeAttachments,
} from './container-volumes.ts';
import type { EventBus } from './events.ts';
import { createContainerKeys, loadContainerKeys } from './keys.ts';
import { generateName, validateName } from './names.ts';
import {
  initialState,
  processArgv,
  ZERO_TIME,
  type ContainerConfig,
  type ContainerHostConfig,
  type ContainerRecord,
} from './record.ts';

/** Under TCG a VM takes seconds to boot; a loaded CI machine may take much longer. */
export const DEFAULT_BOOT_TIMEOUT_MS = 180_000;
const MIB = 1024 * 1024;
/** Docker's own minimum for -m. */
export const MIN_MEMORY_BYTES = 6 * MIB;
/**
 * What a VM needs besides its container's memory: the kernel (about 37 MiB of a 256 MiB guest) and the
 * agent's reserve (agent/src/container/cgroup.ts), so `docker run -m 64m` gives the container 64 MiB.
 */
export const VM_MEMORY_OVERHEAD_MIB = 144;
/** Docker's json-file driver is unbounded by default; ours is bounded, like Docker's `local` driver. */
export const DEFAULT_LOG_MAX_BYTES = 20 * MIB;
export const DEFAULT_LOG_MAX_FILES = 5;
/** After a process's exit status arrives, the agent flushes and powers off; past this, the host stops it. */
const POWER_OFF_WAIT_MS = 30_000;
const KILL_WAIT_MS = 10_000;
/** Dropped console status lines logged per boot (all are counted): a container printing them in a loop
 * must not flood the log. */
const DROPPED_LINES_LOGGED = 10;

export interface ImageForContainer {
  id: string;
  repoTags: string[];
  rootDisk: string;
  config: {
    Env?: string[] | null;
    Cmd?: string[] | null;
    Entrypoint?: string[] | null;
    WorkingDir?: string;
    User?: string;
    ExposedPorts?: Record<string, unknown> | null;
    Labels?: Record<string, string> | null;
    StopSignal?: string;
    /** The image's VOLUME paths: each gets an anonymous volume. */
    Volumes?: Record<string, unknown> | null;
  };
}

export interface ImageResolver {
  resolve(ref: string): ImageForContainer;
}

export interface CreateRequest {
  name?: string | undefined;
  image: string;
  cmd?: string[] | undefined;
  entrypoint?: string[] | undefined;
  env?: string[] | undefined;
  workingDir?: string | undefined;
  user?: string | undefined;
  tty?: boolean | undefined;
  openStdin?: boolean | undefined;
  stdinOnce?: boolean | undefined;
  attachStdin?: boolean | undefined;
  attachStdout?: boolean | undefined;
  attachStderr?: boolean | undefined;
  labels?: Record<string, string> | undefined;
  exposedPorts?: string[] | undefined;
  hostname?: string | undefined;
  stopSignal?: string | undefined;
  stopTimeout?: number | undefined;
  hostConfig?: Partial<ContainerHostConfig> | undefined;
  /** Volumes to mount (-v NAME:/path, --mount, -v /path); the image's VOLUME paths are added. */
  mounts?: VolumeMountRequest[] | undefined;
}

export type WaitCondition = 'not-running' | 'next-exit' | 'removed';

export interface WaitResult {
  StatusCode: number;
  Error?: { Message: string };
}

export interface ManagerOptions {
  root: string;
  driver: VmDriver;
  bootImage: BootImagePaths;
  images: ImageResolver;
  events: EventBus;
  logger: Logger;
  bootTimeoutMs?: number;
  /** Named volumes; without it a container asking for one is refused. */
  volumes?: VolumeStore;
}

interface Waiter {
  condition: WaitCondition;
  resolve: (result: WaitResult) => void;
}

function noSuchContainer(ref: string): TetherError {
  return new TetherError('TETHER_NO_SUCH_CONTAINER', `No such container: ${ref}`);
}

/** Picks a free loopback port for `-p 80` (no host port given), as Docker does. */
function freePort(hostIp: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, hostIp, () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

export class ContainerManager {
  readonly #options: ManagerOptions;
  readonly #dir: string;
  readonly #containers = new Map<string, Container>();
  /** Names of containers between the name check and their entry in the table (create awaits disks). */
  readonly #namesBeingCreated = new Set<string>();
  readonly #waiters = new Map<string, Waiter[]>();
  /** Signals asked for before a boot's exit monitor was attached, woken when it is (or the boot ends). */
  readonly #monitorWaiters = new WeakMap<Boot, Array<() => void>>();
  readonly #log: Logger;
  #closed = false;

  private constructor(options: ManagerOptions) {
    this.#options = options;
    this.#dir = join(options.root, 'containers');
    this.#log = options.logger;
  }

  /** Loads every container, finishes interrupted creates and removes, and re-adopts running VMs. */
  static async open(options: ManagerOptions): Promise<ContainerManager> {
    const manager = new ContainerManager(options);
    mkdirSync(manager.#dir, { recursive: true });
    await manager.#load();
    return manager;
  }

  get events(): EventBus {
    return this.#options.events;
  }

  get driver(): VmDriver {
    return this.#options.driver;
  }

  list(): Container[] {
    return [...this.#containers.values()].sort((a, b) => b.record.created.localeCompare(a.record.created));
  }

  /** By full id, name (with or without Docker's leading slash), or unambiguous id prefix. */
  find(ref: string): Container {
    const exact = this.#containers.get(ref);
    if (exact) return exact;
    const name = ref.replace(/^\//, '');
    for (const container of this.#containers.values()) if (container.record.name === name) return container;
    if (/^[0-9a-f]{1,64}$/.test(ref)) {
      const matches = [...this.#containers.values()].filter((c) => c.id.startsWith(ref));
      if (matches.length === 1) return matches[0]!;
      if (matches.length > 1)
        throw new TetherError(
          'TETHER_INVALID_PARAMETER',
          `multiple containers found with provided prefix: ${ref}; give more of the id`,
        );
    }
    throw noSuchContainer(ref);
  }

  // ---------------------------------------------------------------------------------------------- create

  async create(request: CreateRequest): Promise<Container> {
    const image = this.#options.images.resolve(request.image);
    const name = request.name ? validateName(request.name) : this.#unusedName();
    for (const other of this.#containers.values())
      if (other.record.name === name)
        throw new TetherError(
          'TETHER_NAME_CONFLICT',
          `Conflict. The container name "/${name}" is already in use by container "${other.id}". You have to remove (or rename) that container to be able to reuse that name.`,
        );
    if (this.#namesBeingCreated.has(name))
      throw new TetherError(
        'TETHER_NAME_CONFLICT',
        `Conflict. The container name "/${name}" is already in use by a container being created. You have to remove (or rename) that container to be able to reuse that name.`,
      );
    // Held until the container is in the table: creating its volumes and writable layer takes a while.
    this.#namesBeingCreated.add(name);
    try {
      return await this.#create(request, image, name);
    } finally {
      this.#namesBeingCreated.delete(name);
    }
  }

  async #create(request: CreateRequest, image: ImageForContainer, name: string): Promise<Container> {
    const host = request.hostConfig ?? {};
    const memoryBytes = host.memoryBytes ?? 0;
    if (memoryBytes !== 0 && memoryBytes < MIN_MEMORY_BYTES)
      throw new TetherError(
        'TETHER_INVALID_PARAMETER',
        `Minimum memory limit allowed is 6MB (got ${memoryBytes} bytes)`,
      );
    const imageConfig = image.config;
    const stopSignal = request.stopSignal ?? imageConfig.StopSignal;
    const entrypoint = request.entrypoint ?? imageConfig.Entrypoint ?? [];
    // Docker: a new entrypoint drops the image's Cmd unless a command is given too.
    const cmd = request.cmd ?? (request.entrypoint ? [] : (imageConfig.Cmd ?? []));
    if (entrypoint.length + cmd.length === 0)
      throw new TetherError('TETHER_INVALID_PARAMETER', 'no command specified');
    const config: ContainerConfig = {
      entrypoint,
      cmd,
      env: mergeEnv(imageConfig.Env ?? [], request.env ?? []),
      ...optional('workingDir', request.workingDir || imageConfig.WorkingDir || undefined),
      ...optional('user', request.user || imageConfig.User || undefined),
      tty: request.tty ?? false,
      openStdin: request.openStdin ?? false,
      stdinOnce: request.stdinOnce ?? false,
      attachStdin: request.attachStdin ?? false,
      attachStdout: request.attachStdout ?? true,
      attachStderr: request.attachStderr ?? true,
      labels: { ...(imageConfig.Labels ?? {}), ...(request.labels ?? {}) },
      exposedPorts: [
        ...new Set([...Object.keys(imageConfig.ExposedPorts ?? {}), ...(request.exposedPorts ?? [])]),
      ],
      ...optional('stopSignal', stopSignal ? normaliseSignal(stopSignal) : undefined),
      ...optional('stopTimeout', request.stopTimeout),
      ...optional('hostname', request.hostname || undefined),
    };
    let id = newContainerId();
    // Directories are named by the short id (sockets live in them, and a unix socket path has 107 bytes).
    while (existsSync(join(this.#dir, shortId(id))) || existsSync(join(this.#dir, `.new-${shortId(id)}`)))
      id = newContainerId();
    const record: ContainerRecord = {
      id,
      name,
      created: new Date().toISOString(),
      image: request.image,
      imageId: image.id,
      rootDisk: image.rootDisk,
      config,
      hostConfig: {
        autoRemove: host.autoRemove ?? false,
        memoryBytes,
        portBindings: host.portBindings ?? [],
        logMaxBytes: host.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES,
        logMaxFiles: host.logMaxFiles ?? DEFAULT_LOG_MAX_FILES,
        restartPolicy: host.restartPolicy ?? 'no',
        ...(host.init !== undefined ? { init: host.init } : {}),
        ...(host.pidsLimit !== undefined ? { pidsLimit: host.pidsLimit } : {}),
      },
      state: initialState(),
      ports: [],
      restartCount: 0,
      bootCount: 0,
    };
    const prepared = join(this.#dir, `.new-${shortId(id)}`);
    const final = join(this.#dir, shortId(id));
    record.mounts = await createMounts(this.#options.volumes, request.mounts ?? [], imageConfig.Volumes);
    mkdirSync(prepared, { recursive: true, mode: 0o700 });
    try {
      const keys = createContainerKeys(prepared, id);
      // The container's writable layer exists from `docker create` on, as Docker's does.
      await this.#options.driver.createRootLayer?.(prepared, record.rootDisk);
      const placeholder = new Container(record, prepared, keys, undefined);
      placeholder.persist();
      fsyncTree(prepared);
      publishDirectory(prepared, final);
      const container = new Container(record, final, keys, await LogStore.open(final));
      this.#containers.set(id, container);
      this.#log.info({ container: id, name, image: request.image }, 'container created');
      this.#options.events.publish('container', 'create', id, { name, image: request.image });
      return container;
    } catch (error) {
      rmSync(prepared, { recursive: true, force: true });
      removeAnonymous(this.#options.volumes, record.mounts, (name) => this.volumeUsers(name).length > 0);
      throw error;
    }
  }

  #unusedName(): string {
    const taken = new Set([...this.#containers.values()].map((c) => c.record.name));
    for (const name of this.#namesBeingCreated) taken.add(name);
    for (;;) {
      const name = generateName();
      if (!taken.has(name)) return name;
    }
  }

  // ----------------------------------------------------------------------------------------------- start

  /** Boots the container's VM; false when it was already running (Docker's 304). */
  start(ref: string): Promise<boolean> {
    const container = this.find(ref);
    return container.serialize(() => this.#start(container));
  }

  async #start(container: Container): Promise<boolean> {
    if (container.running) return false;
    if (container.record.state.status === 'removing')
      throw new TetherError('TETHER_NAME_CONFLICT', `container ${container.id} is being removed`);
    const record = container.record;
    const mounts = record.mounts ?? [];
    checkVolumeConflicts(
      { id: record.id, name: record.name, mounts },
      [...this.#containers.values()]
        .filter((other) => other.running)
        .map((other) => ({ id: other.id, name: other.record.name, mounts: other.record.mounts ?? [] })),
    );
    const volumes = volumeAttachments(this.#options.volumes, mounts);
    const ports = await this.#resolvePorts(record);
    const statusKey = generateStatusKey();
    const config = buildRunConfig({
      id: record.id,
      argv: processArgv(record.config),
      env: record.config.env,
      cwd: record.config.workingDir,
      user: record.config.user,
      tty: record.config.tty,
      openStdin: record.config.openStdin,
      stdinOnce: record.config.stdinOnce,
      hostname: record.config.hostname,
      stopSignal: record.config.stopSignal,
      stopTimeoutSeconds: record.config.stopTimeout,
      network: this.#options.driver.guestNetwork(),
      agentHostKey: container.keys.agentHostKey,
      clientPublicKey: container.keys.clientPublicKey,
      statusKey,
      init: record.hostConfig.init ?? undefined,
      limits: {
        ...(record.hostConfig.memoryBytes ? { memoryBytes: record.hostConfig.memoryBytes } : {}),
        ...(record.hostConfig.pidsLimit ? { pids: record.hostConfig.pidsLimit } : {}),
      },
      volumes: volumes.config,
    });
    await container.logs.beginBoot();
    // The console of the boot before must not speak for this one (QEMU truncates it; a dev agent appends).
    rmSync(join(container.dir, 'console.log'), { force: true });
    // Saved before the VM exists: a tetherd that adopts it checks its lines with this key.
    writeFileAtomic(join(container.dir, STATUS_KEY_FILE), statusKey + '\n', 0o600);
    const boot = newBoot(record.bootCount + 1, decodeStatusKey(statusKey));
    container.boot = boot;
    let vm: Vm;
    try {
      vm = await this.#options.driver.start({
        id: record.id,
        stateDir: container.dir,
        ...this.#options.bootImage,
        rootDisk: record.rootDisk,
        config: encodeConfig(config),
        // Made by create (or by an earlier boot of a container created before that was so).
        keepRootLayer: true,
        ports,
        volumes: volumes.disks,
        ...(record.hostConfig.memoryBytes
          ? { memoryMiB: Math.ceil(record.hostConfig.memoryBytes / MIB) + VM_MEMORY_OVERHEAD_MIB }
          : {}),
      });
    } catch (error) {
      boot.ended = true;
      boot.markSettled();
      container.update((r) => {
        r.state = {
          ...r.state,
          status: 'exited',
          exitCode: 128,
          error: describeError(error),
          finishedAt: new Date().toISOString(),
        };
      });
      this.#log.error({ container: record.id, err: describeError(error) }, 'VM start failed');
      throw error;
    }
    const info = await vm.inspect();
    container.update((r) => {
      r.bootCount += 1;
      r.ports = ports;
      r.state = {
        ...r.state,
        status: 'running',
        pid: info.pid ?? 0,
        exitCode: 0,
        error: '',
        oomKilled: false,
        startedAt: new Date().toISOString(),
        finishedAt: ZERO_TIME,
      };
    });
    this.#log.info({ container: record.id, vmPid: info.pid, boot: boot.number }, 'container started');
    this.#options.events.publish('container', 'start', record.id, this.#attributes(container));
    this.#watch(container, boot, vm);
    return true;
  }

  async #resolvePorts(record: ContainerRecord): Promise<PortForward[]> {
    const out: PortForward[] = [];
    for (const binding of record.hostConfig.portBindings) {
      const [port, protocol = 'tcp'] = binding.containerPort.split('/');
      const guestPort = Number(port);
      if (protocol !== 'tcp' && protocol !== 'udp')
        throw new TetherError('TETHER_INVALID_PARAMETER', `unsupported protocol ${protocol} in -p`);
      const hostIp = binding.hostIp || '127.0.0.1';
      const hostPort = binding.hostPort ? Number(binding.hostPort) : await freePort(hostIp);
      out.push({ protocol, hostIp, hostPort, guestPort });
    }
    return out;
  }

  /** Follows one boot: console records, the shared channel, the exit monitor, the VM's end. */
  #watch(container: Container, boot: Boot, vm: Vm): void {
    boot.vm = vm;
    boot.timeline.push({ source: 'host', hostMs: 0, text: `VM running (${this.#options.driver.name})` });
    boot.console = new ConsoleWatcher(vm.consoleLogPath, {
      ...this.#consoleTrust(container, boot.number, boot.statusKey),
      onRecord: (seen) => {
        boot.timeline.push({ source: 'guest', hostMs: seen.seenAt - boot.t0, record: seen.record });
        if (oomKilledIn([seen.record])) this.#oomKilled(container, boot, seen.record.detail);
        const fatal = fatalBootRecord([seen.record]);
        if (fatal && !boot.fatal) {
          boot.fatal = fatal;
          this.#log.warn(
            { container: container.id, stage: fatal.stage, detail: fatal.detail },
            'boot failed',
          );
          // The agent stays up to report a bad config; nothing will run, so the VM goes.
          void vm.kill().catch(() => undefined);
        }
      },
    });
    container.logs.markRunning();
    boot.rotation = startRotation(container.logs, () => vm.reopenLog(), {
      maxBytes: container.record.hostConfig.logMaxBytes,
      maxFiles: container.record.hostConfig.logMaxFiles,
      onError: (error) =>
        this.#log.warn({ container: container.id, err: describeError(error) }, 'log rotation failed'),
    });
    void this.#monitor(container, boot, vm);
    const bootTimer = setTimeout(() => {
      if (boot.ended || boot.channelState === 'up') return;
      if (boot.console?.records.some((seen) => seen.record.stage === 'process-started')) return;
      boot.fatal ??= {
        stage: 'channel',
        outcome: 'failed',
        atMs: 0,
        detail: `the agent did not come up within ${Math.round(this.#bootTimeout / 1000)} s`,
      };
      this.#log.warn({ container: container.id }, 'boot timed out');
      void vm.kill().catch(() => undefined);
    }, this.#bootTimeout);
    bootTimer.unref();
    void vm.wait().then((exit) => {
      clearTimeout(bootTimer);
      return this.#ended(container, boot, exit);
    });
  }

  /**
   * What the console watcher of `boot` believes: lines signed with its key. Drops are counted (health
   * shows the count) and the first few logged at debug level: they are a container's doing, or a line cut
   * short by a VM's end, never the agent's word.
   */
  #consoleTrust(
    container: Container,
    bootNumber: number,
    statusKey: Buffer | undefined,
  ): Pick<ConsoleWatcherOptions, 'statusKey' | 'onDropped'> {
    let logged = 0;
    return {
      statusKey,
      onDropped: ({ reason, line }) => {
        if (logged++ >= DROPPED_LINES_LOGGED) return;
        this.#log.debug(
          { container: container.id, boot: bootNumber, reason, line: line.slice(0, 200) },
          'console status line not believed',
        );
      },
    };
  }

  /**
   * The OOM killer struck in the container (an oom record, or an exit marked so): Docker's OOMKilled is
   * set at once, with its `oom` event, once per boot (a re-adopting tetherd reads the records again).
   */
  #oomKilled(container: Container, boot: Boot, detail: string | undefined): void {
    if (container.record.state.oomKilled || container.boot !== boot) return;
    container.update((r) => void (r.state.oomKilled = true));
    this.#log.warn({ container: container.id, detail }, 'OOM killer struck in the container');
    this.#options.events.publish('container', 'oom', container.id, this.#attributes(container));
  }

  /**
   * The status key of the boot running in the container's directory. None there: a VM booted by a tetherd
   * that gave no key, whose unsigned lines are believed. Unreadable: a key nobody has, so no line is.
   */
  #savedStatusKey(container: Container): Buffer | undefined {
    try {
      return loadStatusKey(container.dir);
    } catch (error) {
      this.#log.error(
        { container: container.id, err: describeError(error) },
        'status key unreadable: no console status line of this boot is believed',
      );
      return randomBytes(STATUS_KEY_BYTES);
    }
  }

  get #bootTimeout(): number {
    return this.#options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
  }

  /** The container's shared channel connection, opened on first use and again after a drop. */
  channel(container: Container): Promise<ChannelClient> {
    const boot = container.boot;
    const vm = boot?.vm;
    if (!boot || !vm || boot.ended || !container.running)
      return Promise.reject(
        new TetherError('TETHER_NOT_RUNNING', `container ${container.id} is not running`),
      );
    const existing = container.channel;
    if (existing) return existing;
    boot.channelState = 'connecting';
    const abort = new AbortController();
    void vm
      .wait()
      .then(() =>
        abort.abort(new TetherError('TETHER_NOT_RUNNING', `container ${container.id} has stopped`)),
      );
    const connecting = connectVmChannel(vm, {
      credentials: container.keys.credentials,
      timeoutMs: this.#bootTimeout,
      signal: abort.signal,
    }).then(
      (client) => {
        boot.channelState = 'up';
        container.hostNote('channel up');
        client.onClose(() => {
          if (container.channel === connecting) container.channel = undefined;
          boot.channelState = boot.ended ? 'none' : 'down';
          container.hostNote('channel closed');
        });
        return client;
      },
      (error: unknown) => {
        if (container.channel === connecting) container.channel = undefined;
        boot.channelState = 'down';
        throw error;
      },
    );
    container.channel = connecting;
    return connecting;
  }

  /** Holds an output-less attach open for the exit status; reconnects while the VM runs. */
  async #monitor(container: Container, boot: Boot, vm: Vm): Promise<void> {
    let ended = false;
    void vm.wait().then(() => (ended = true));
    while (!ended && !this.#closed && container.boot === boot) {
      try {
        const client = await this.channel(container);
        const handle = await client.attach(
          { from: 'end', stdin: false, output: false },
          { onFrame: () => {} },
        );
        container.hostNote(`attached (process ${handle.result.running ? 'running' : 'already ended'})`);
        boot.monitor = handle;
        this.#wakeMonitorWaiters(boot);
        if (boot.terminalSize) handle.resize(boot.terminalSize);
        const exit = await handle.exit;
        if (boot.monitor === handle) boot.monitor = undefined;
        if (exit) {
          boot.exit = exit;
          container.hostNote(`exit status ${exit.exitCode}${exit.signal ? ` (${exit.signal})` : ''}`);
          this.#log.info({ container: container.id, exitCode: exit.exitCode }, 'process exited');
          this.#powerOffWatchdog(vm);
          return;
        }
      } catch (error) {
        if (ended || this.#closed) return;
        if (isTetherError(error, 'TETHER_NO_MAIN_PROCESS')) return;
        if (isTetherError(error, 'TETHER_NOT_RUNNING')) return;
        this.#log.debug({ container: container.id, err: describeError(error) }, 'monitor retry');
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  #powerOffWatchdog(vm: Vm): void {
    const timer = setTimeout(() => void vm.stop(5000).catch(() => undefined), POWER_OFF_WAIT_MS);
    timer.unref();
    void vm.wait().then(() => clearTimeout(timer));
  }

  /** The boot is over: record the exit and tell everyone waiting. */
  async #ended(container: Container, boot: Boot, vmExit: VmExit): Promise<void> {
    if (boot.ended) return;
    try {
      await this.#recordEnd(container, boot, vmExit);
    } finally {
      boot.markSettled();
    }
  }

  async #recordEnd(container: Container, boot: Boot, vmExit: VmExit): Promise<void> {
    boot.ended = true;
    this.#wakeMonitorWaiters(boot);
    boot.console?.stop();
    await boot.rotation?.stop();
    container.channel?.then((client) => client.close()).catch(() => undefined);
    container.channel = undefined;
    boot.channelState = 'none';
    container.hostNote(`VM ended (${vmExit.reason})`);
    if (this.#closed) return; // tetherd is going down: the next one records this exit from the console.
    const result = this.#exitOf(boot, vmExit);
    container.logs.markStopped();
    container.update((r) => {
      r.state = {
        ...r.state,
        status: 'exited',
        pid: 0,
        exitCode: result.exitCode,
        error: result.error,
        // Whichever way the exit came (channel or console), OOM kills are known from the records.
        oomKilled: r.state.oomKilled || oomKilledIn(boot.console?.records.map((seen) => seen.record) ?? []),
        finishedAt: new Date().toISOString(),
      };
    });
    this.#log.info(
      {
        container: container.id,
        exitCode: result.exitCode,
        reason: vmExit.reason,
        error: result.error || undefined,
      },
      'container exited',
    );
    this.#options.events.publish('container', 'die', container.id, {
      ...this.#attributes(container),
      exitCode: String(result.exitCode),
    });
    this.#settleWaiters(container, ['not-running', 'next-exit']);
    if (container.record.hostConfig.autoRemove)
      await this.remove(container.id, { force: true, removeVolumes: true }).catch((error: unknown) =>
        this.#log.error({ container: container.id, err: describeError(error) }, 'auto-remove failed'),
      );
    else if (restartWanted(container.record.hostConfig.restartPolicy, result, boot.stoppedByUser === true))
      this.#restartByPolicy(container, boot);
  }

  /** Docker's backoff: 100 ms doubling per quick failure, at most a minute; a boot that ran 10 s resets it. */
  #restartByPolicy(container: Container, boot: Boot): void {
    const ranMs = performance.now() - boot.t0;
    container.policyRestarts = ranMs > 10_000 ? 0 : (container.policyRestarts ?? 0) + 1;
    const delay = Math.min(100 * 2 ** container.policyRestarts, 60_000);
    this.#log.info({ container: container.id, delayMs: delay }, 'restarting by policy');
    const timer = setTimeout(() => {
      if (this.#closed || !this.#containers.has(container.id) || container.running) return;
      container.update((r) => void (r.restartCount += 1));
      this.start(container.id).catch((error: unknown) =>
        this.#log.error({ container: container.id, err: describeError(error) }, 'policy restart failed'),
      );
    }, delay);
    timer.unref();
  }

  #exitOf(boot: Boot, vmExit: VmExit): { exitCode: number; error: string } {
    if (boot.exit) return { exitCode: boot.exit.exitCode, error: '' };
    const records = boot.console?.records.map((seen) => seen.record) ?? [];
    const recorded = exitFromRecords(records);
    if (recorded) return { exitCode: recorded.exitCode, error: '' };
    const fatal = boot.fatal ?? fatalBootRecord(records);
    if (fatal)
      return { exitCode: 128, error: `boot failed at ${fatal.stage}: ${fatal.detail ?? 'no detail'}` };
    if (boot.killedByHost) return { exitCode: 137, error: '' };
    const started = records.some((record) => record.stage === 'process-started' && record.outcome === 'ok');
    return {
      exitCode: started ? 137 : 128,
      error: `the VM ended (${vmExit.reason}${vmExit.exitCode !== undefined ? `, hypervisor status ${vmExit.exitCode}` : ''}) ${started ? 'under the running container' : 'before the container process started'}`,
    };
  }

  // ------------------------------------------------------------------------------------ stop, kill, wait

  /** Sends a signal to the main process (docker kill); SIGKILL with no channel kills the VM. */
  kill(ref: string, signal = 'SIGKILL'): Promise<void> {
    const container = this.find(ref);
    const name = normaliseSignal(signal);
    return container.serialize(async () => {
      if (!container.running)
        throw new TetherError('TETHER_NOT_RUNNING', `Container ${container.id} is not running`);
      this.#options.events.publish('container', 'kill', container.id, {
        ...this.#attributes(container),
        signal: name.replace(/^SIG/, ''),
      });
      // As Docker: a container the user killed or stopped is not brought back by its restart policy.
      if (container.boot) container.boot.stoppedByUser = true;
      const sent = await this.#signal(container, name, name === 'SIGKILL' ? 0 : this.#bootTimeout);
      if (!sent && name === 'SIGKILL') await this.#killVm(container);
      else if (!sent)
        throw new TetherError(
          'TETHER_NOT_RUNNING',
          `cannot deliver ${name} to container ${container.id}: its agent is not reachable yet`,
        );
    });
  }

  /**
   * Sends through the exit monitor. `waitMs`: a container just started has no monitor for a moment (its
   * agent is coming up); `docker run -d X && docker kill -s TERM X` must still reach the process, so wait
   * that long for the monitor rather than fail.
   */
  async #signal(container: Container, name: string, waitMs = 0): Promise<boolean> {
    const boot = container.boot;
    if (!boot || boot.ended) return false;
    if (!boot.monitor && waitMs > 0) await this.#monitorAttached(boot, waitMs);
    if (!boot.monitor || boot.ended) return false;
    boot.monitor.signal(name);
    return true;
  }

  #monitorAttached(boot: Boot, waitMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, waitMs);
      const list = this.#monitorWaiters.get(boot) ?? [];
      list.push(done);
      this.#monitorWaiters.set(boot, list);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  #wakeMonitorWaiters(boot: Boot): void {
    const list = this.#monitorWaiters.get(boot);
    this.#monitorWaiters.delete(boot);
    for (const wake of list ?? []) wake();
  }

  async #killVm(container: Container): Promise<void> {
    const boot = container.boot;
    if (!boot?.vm || boot.ended) return;
    boot.killedByHost = true;
    await boot.vm.kill();
  }

  /** docker stop: the stop signal, then SIGKILL after `timeoutSeconds`, then the VM itself. */
  stop(ref: string, timeoutSeconds?: number): Promise<boolean> {
    const container = this.find(ref);
    return container.serialize(() => this.#stop(container, timeoutSeconds));
  }

  async #stop(container: Container, timeoutSeconds?: number): Promise<boolean> {
    const boot = container.boot;
    if (!container.running || !boot?.vm || boot.ended) return false;
    const vm = boot.vm;
    const grace = (timeoutSeconds ?? container.record.config.stopTimeout ?? 10) * 1000;
    const signal = container.record.config.stopSignal ?? 'SIGTERM';
    this.#log.info({ container: container.id, signal, graceMs: grace }, 'stopping');
    // A container still booting spends its grace bringing the agent up; the signal then goes as usual.
    const deadline = Date.now() + grace;
    boot.stoppedByUser = true;
    this.#options.events.publish('container', 'kill', container.id, {
      ...this.#attributes(container),
      signal: signal.replace(/^SIG/, ''),
    });
    const sent = await this.#signal(container, signal, Math.min(grace, this.#bootTimeout));
    if (!sent) {
      // No channel yet (still booting): the power button makes the agent stop what it runs.
      boot.killedByHost = true;
      await vm.stop(grace + 5000);
    } else if ((await raceTimeout(vm.wait(), Math.max(0, deadline - Date.now()))) === 'timeout') {
      boot.killedByHost = true;
      await this.#signal(container, 'SIGKILL');
      if ((await raceTimeout(vm.wait(), KILL_WAIT_MS)) === 'timeout') await vm.kill();
    }
    await vm.wait();
    await this.#settled(container);
    this.#options.events.publish('container', 'stop', container.id, this.#attributes(container));
    return true;
  }

  /** docker's resize: applied now, and again when the agent is reachable if it is not yet. */
  resize(container: Container, size: { rows: number; cols: number }): void {
    if (!container.running || !container.boot)
      throw new TetherError('TETHER_NOT_RUNNING', `Container ${container.id} is not running`);
    container.boot.terminalSize = size;
    container.boot.monitor?.resize(size);
  }

  /** Waits until #ended has recorded the exit of the boot that just ended. */
  async #settled(container: Container): Promise<void> {
    await container.boot?.settled;
  }

  restart(ref: string, timeoutSeconds?: number): Promise<void> {
    const container = this.find(ref);
    return container.serialize(async () => {
      await this.#stop(container, timeoutSeconds);
      container.update((r) => void (r.restartCount += 1));
      await this.#start(container);
      this.#options.events.publish('container', 'restart', container.id, this.#attributes(container));
    });
  }

  wait(ref: string, condition: WaitCondition = 'not-running'): Promise<WaitResult> {
    const container = this.find(ref);
    if (condition === 'not-running' && !container.running) return Promise.resolve(waitResult(container));
    return new Promise((resolve) => {
      const list = this.#waiters.get(container.id) ?? [];
      list.push({ condition, resolve });
      this.#waiters.set(container.id, list);
    });
  }

  #settleWaiters(container: Container, conditions: WaitCondition[]): void {
    const list = this.#waiters.get(container.id) ?? [];
    const keep = list.filter((waiter) => {
      if (!conditions.includes(waiter.condition)) return true;
      waiter.resolve(waitResult(container));
      return false;
    });
    if (keep.length) this.#waiters.set(container.id, keep);
    else this.#waiters.delete(container.id);
  }

  // ---------------------------------------------------------------------------------------------- remove

  /** `docker rm [-f] [-v]`: -v (removeVolumes) also removes its anonymous volumes, as --rm does. */
  remove(ref: string, options: { force: boolean; removeVolumes?: boolean }): Promise<void> {
    const container = this.find(ref);
    return container.serialize(async () => {
      if (container.running && !options.force)
        throw new TetherError(
          'TETHER_NAME_CONFLICT',
          `cannot remove container "/${container.record.name}": container is running: stop the container before removing or force remove`,
        );
      container.update((r) => void (r.state.status = 'removing'));
      const boot = container.boot;
      if (boot?.vm && !boot.ended) {
        boot.killedByHost = true;
        await boot.vm.kill().catch(() => undefined);
        await boot.vm.wait();
      }
      this.#destroy(container);
      if (options.removeVolumes)
        removeAnonymous(
          this.#options.volumes,
          container.record.mounts ?? [],
          (name) => this.volumeUsers(name).length > 0,
        );
    });
  }

  /** The containers (any state) that mount the volume `name`: it may not be removed while there are any. */
  volumeUsers(name: string): Container[] {
    return [...this.#containers.values()].filter((c) => (c.record.mounts ?? []).some((m) => m.name === name));
  }

  #destroy(container: Container): void {
    const trash = join(this.#dir, `.trash-${shortId(container.id)}`);
    renameSync(container.dir, trash);
    this.#containers.delete(container.id);
    container.existingFollower?.close();
    rmSync(trash, { recursive: true, force: true });
    this.#log.info({ container: container.id }, 'container removed');
    this.#options.events.publish('container', 'destroy', container.id, this.#attributes(container));
    this.#settleWaiters(container, ['not-running', 'next-exit', 'removed']);
  }

  /** Whether any container (in any state) uses the image: it may not be removed without force. */
  imageInUse(imageId: string): Container | undefined {
    return [...this.#containers.values()].find((c) => c.record.imageId === imageId);
  }

  #attributes(container: Container): Record<string, string> {
    return { name: container.record.name, image: container.record.image };
  }

  // ---------------------------------------------------------------------------------------- load, close

  async #load(): Promise<void> {
    for (const entry of readdirSync(this.#dir)) {
      const path = join(this.#dir, entry);
      if (entry.startsWith('.new-') || entry.startsWith('.trash-')) {
        // An interrupted create or remove: never visible as a container; a VM cannot run in a .new dir.
        rmSync(path, { recursive: true, force: true });
        continue;
      }
      if (!/^[0-9a-f]{12}$/.test(entry)) continue;
      let record: ContainerRecord;
      let container: Container;
      try {
        record = readJson(join(path, RECORD_FILE)) as ContainerRecord;
        container = new Container(record, path, loadContainerKeys(path), await LogStore.open(path));
      } catch (error) {
        this.#log.error(
          { container: entry, err: describeError(error) },
          'unreadable container state; skipped',
        );
        continue;
      }
      this.#containers.set(record.id, container);
      await this.#adopt(container);
    }
  }

  /** A VM still running from a previous tetherd is taken back; one that ended meanwhile is recorded. */
  async #adopt(container: Container): Promise<void> {
    const record = container.record;
    let vm: Vm | undefined;
    if (existsSync(join(container.dir, 'vm.json'))) {
      try {
        vm = await this.#options.driver.adopt(container.dir);
      } catch {
        vm = undefined;
      }
    }
    if (record.state.status === 'removing') {
      if (vm) {
        await vm.kill().catch(() => undefined);
        await vm.wait();
      }
      this.#destroy(container);
      return;
    }
    if (vm) {
      const boot = newBoot(record.bootCount, this.#savedStatusKey(container));
      container.boot = boot;
      const info = await vm.inspect();
      container.update((r) => {
        r.state = { ...r.state, status: 'running', pid: info.pid ?? 0 };
        if (r.bootCount === 0) r.bootCount = 1;
      });
      this.#log.info({ container: record.id, vmPid: info.pid }, 'container re-adopted');
      this.#watch(container, boot, vm);
      return;
    }
    if (record.state.status !== 'running' && record.state.status !== 'restarting') return;
    // It ended while no tetherd watched: the console still holds the agent's exit record.
    const watcher = new ConsoleWatcher(
      join(container.dir, 'console.log'),
      this.#consoleTrust(container, record.bootCount, this.#savedStatusKey(container)),
    );
    watcher.stop();
    const records = watcher.records.map((seen) => seen.record);
    const recorded = exitFromRecords(records);
    container.logs.markStopped();
    container.update((r) => {
      r.state = {
        ...r.state,
        status: 'exited',
        pid: 0,
        exitCode: recorded?.exitCode ?? 137,
        error: recorded ? '' : 'the VM ended while tetherd was not running, without an exit record',
        oomKilled: r.state.oomKilled || oomKilledIn(records),
        finishedAt: new Date().toISOString(),
      };
    });
    this.#log.info(
      { container: record.id, exitCode: container.record.state.exitCode },
      'container exited while tetherd was down',
    );
  }

  /** Lets go of every VM without stopping it: they keep running for the next tetherd. */
  close(): void {
    this.#closed = true;
    for (const container of this.#containers.values()) {
      container.boot?.console?.stop();
      void container.boot?.rotation?.stop();
      container.existingFollower?.close();
      container.channel?.then((client) => client.close()).catch(() => undefined);
      container.boot?.vm?.release();
    }
  }
}

/** The first 12 hex digits, as `docker ps` shows ids: the container's directory name. */
export function shortId(id: string): string {
  return id.slice(0, 12);
}

/**
 * A VM's sockets are ROOT/containers/<12 hex>/<name>.sock and a unix socket path holds 107 bytes: refuse a
 * root that leaves no room, at start rather than at the first `docker run`.
 */
export const MAX_ROOT_PATH_BYTES = 107 - '/containers/123456789012/channel.sock'.length;

function newBoot(number: number, statusKey: Buffer | undefined): Boot {
  let markSettled = (): void => {};
  const settled = new Promise<void>((resolve) => (markSettled = resolve));
  return {
    number,
    statusKey,
    t0: performance.now(),
    timeline: [],
    channelState: 'none',
    ended: false,
    settled,
    markSettled,
  };
}

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}

/** Image env first, the user's -e entries replacing any with the same key. */
export function mergeEnv(image: readonly string[], user: readonly string[]): string[] {
  const key = (entry: string): string => entry.split('=')[0]!;
  const given = new Set(user.map(key));
  return [...image.filter((entry) => !given.has(key(entry))), ...user];
}

/** The signal names an SSH channel request may carry (RFC 4254 §6.10), which ssh2 enforces. */
const CHANNEL_SIGNALS = [
  'ABRT',
  'ALRM',
  'FPE',
  'HUP',
  'ILL',
  'INT',
  'QUIT',
  'SEGV',
  'TERM',
  'USR1',
  'USR2',
  'KILL',
  'PIPE',
];

/** Pure: whether Docker's restart policy brings a container back after this exit. A boot that failed (its
 * VM could not run the process) is not retried: it would fail the same way, a VM boot at a time. */
export function restartWanted(
  policy: ContainerHostConfig['restartPolicy'],
  exit: { exitCode: number; error: string },
  stoppedByUser: boolean,
): boolean {
  if (stoppedByUser || exit.error.startsWith('boot failed')) return false;
  if (policy === 'always' || policy === 'unless-stopped') return true;
  return policy === 'on-failure' && exit.exitCode !== 0;
}

export function normaliseSignal(signal: string): string {
  const upper = signal.toUpperCase();
  if (/^\d+$/.test(upper)) {
    const names: Record<string, string> = { '1': 'SIGHUP', '2': 'SIGINT', '9': 'SIGKILL', '15': 'SIGTERM' };
    const name = names[upper];
    if (!name)
      throw new TetherError('TETHER_INVALID_PARAMETER', `signal ${signal}: give it by name, e.g. SIGUSR1`);
    return name;
  }
  const name = upper.startsWith('SIG') ? upper : `SIG${upper}`;
  if (!/^SIG[A-Z0-9]+$/.test(name))
    throw new TetherError('TETHER_INVALID_PARAMETER', `Invalid signal: ${signal}`);
  if (!CHANNEL_SIGNALS.includes(name.slice(3)))
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      `signal ${name} cannot be sent to a container: the agent's channel carries the signals of RFC 4254 (${CHANNEL_SIGNALS.join(', ')})`,
    );
  return name;
}

function waitResult(container: Container): WaitResult {
  const state = container.record.state;
  return {
    StatusCode: state.exitCode,
    ...(state.error ? { Error: { Message: state.error } } : {}),
  };
}

async function raceTimeout<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
