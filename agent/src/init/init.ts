/**
 * The agent as PID 1: boots the VM stage by stage (each a status record on the console and, later, on the
 * channel), switches into the container's root filesystem, serves the channel on the virtio-serial port,
 * runs the main process, and powers the VM off when it ends for good.
 *
 * PID 1 must never exit (the kernel panics): every stage catches its failure, reports it and carries on
 * with what still makes sense; stray exceptions are reported and survived; a timer keeps the loop alive.
 */
import { openSync, readFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentConfig } from '../../../protocol/src/config/config.ts';
import { describeError, TetherError } from '../../../protocol/src/errors/errors.ts';
import { formatStatusRecord, type StatusRecord } from '../../../protocol/src/status/status.ts';
import { ChannelServer } from '../channel/server.ts';
import { mainSessionSpec, stopPolicy } from '../config/process-spec.ts';
import { ContainerCgroup, containerLimits, memTotalBytes } from '../container/cgroup.ts';
import type { Isolation } from '../container/isolation.ts';
import { OomWatch } from '../container/oom-watch.ts';
import { ExecFactory } from '../process/exec-factory.ts';
import { MainProcess } from '../process/main-process.ts';
import { OutputLog } from '../process/output-log.ts';
import { ConsoleStatusLines } from '../status/console-lines.ts';
import { StatusReporter } from '../status/reporter.ts';
import { realSys, SYS, type Sys } from '../sys/sys.ts';
import { findConfig } from './config-source.ts';
import { loadModules } from './modules.ts';
import { EARLY_MOUNTS, mountAll } from './mounts.ts';
import { configureNetwork } from './network.ts';
import { watchPowerButton } from './power-button.ts';
import { LogPortWriter } from './ports/log-port.ts';
import { SerialPort } from './ports/serial-port.ts';
import { CHANNEL_PORT, LOG_PORT, waitForPorts } from './ports/virtio-ports.ts';
import { mountRootDisk, mountVolumes, switchRoot, writeContainerFiles } from './rootfs.ts';

/** The drivers the agent itself needs; stage0 already loaded virtio, the transport and virtio_blk. */
const AGENT_MODULES = ['virtio_console', 'qemu_fw_cfg', 'virtio_net', 'button', 'evdev'];
/** Output kept for attach clients beyond what the log port took: the VM has 256 MiB for everything. */
const OUTPUT_LOG_BYTES = 8 * 1024 * 1024;
const PORT_WAIT_MS = 3000;
const LOG_FLUSH_MS = 10_000;
/** Time for a final exit-status to cross the channel to attached clients before the power goes. */
const CHANNEL_LINGER_MS = 200;
/** How long exec sessions have between SIGTERM and SIGKILL when the VM powers off. */
const EXEC_STOP_GRACE_MS = 1000;
const MIB = 1024 * 1024;

function writeConsole(text: string): void {
  try {
    writeSync(1, text);
  } catch {
    // No console: the status records still reach the channel.
  }
}

/** Docker's default hostname is the container id's first 12 characters; keep it a valid hostname. */
export function hostnameFor(config: AgentConfig): string {
  if (config.hostname) return config.hostname;
  const cleaned = config.id
    .slice(0, 12)
    .replace(/[^a-zA-Z0-9-]/g, '-')
    .replace(/^-+|-+$/g, '');
  return cleaned || 'tether';
}

export class Init {
  readonly #sys: Sys;
  readonly #status: StatusReporter;
  #config: AgentConfig | undefined;
  #main: MainProcess | undefined;
  #logWriter: LogPortWriter | undefined;
  #exec: ExecFactory | undefined;
  #cgroup: ContainerCgroup | undefined;
  /** Paths the container must not see besides Docker's masked ones (where the config came from). */
  #masks: string[] = [];
  #shuttingDown = false;
  #helperPath = join(dirname(process.execPath), 'tether-exec');

  constructor(sys: Sys) {
    this.#sys = sys;
    // Signed with the config's status key, so the host believes no line a container prints.
    const consoleLines = ConsoleStatusLines.untilConfig(() => this.#config?.channel?.statusKey);
    this.#status = new StatusReporter(
      () => sys.bootTimeMs(),
      [
        (record: StatusRecord) =>
          writeConsole(`tether: ${formatStatusRecord(record)}\n${consoleLines.linesFor(record)}`),
      ],
    );
  }

  log(message: string): void {
    writeConsole(`tether: ${message}\n`);
  }

  async boot(): Promise<void> {
    this.#guard();
    const stage0Start = Number(process.env['TETHER_STAGE0_START_MS']);
    const stage0Exec = Number(process.env['TETHER_STAGE0_EXEC_MS']);
    if (Number.isFinite(stage0Start))
      this.#status.reportAt(stage0Start, 'kernel', 'ok', { detail: 'kernel up, stage0 started' });

    const mounts = mountAll(this.#sys, EARLY_MOUNTS);
    // The container's orphans are reaped by its own init (native/tether-exec): PID 1's only children are
    // the exec helpers node spawned and waits for. The timer keeps PID 1's event loop alive for good.
    setInterval(() => {}, 1 << 30);
    const runtimeStart = Number.isFinite(stage0Exec)
      ? `, stage0 done at ${(stage0Exec / 1000).toFixed(3)} s`
      : '';
    this.#status.report('agent', mounts.failed.length ? 'failed' : 'ok', {
      pid: process.pid,
      detail: mounts.failed.length
        ? `mounts failed: ${mounts.failed.join('; ')}`
        : `mounted ${mounts.mounted.join(' ')}${runtimeStart}`,
    });

    this.#loadModules(AGENT_MODULES);
    // Before the config: a VM with a bad one still powers off gracefully when the host asks.
    this.#watchShutdownRequests();
    if (!this.#readConfig()) return; // reported; stay up so the host can read why
    const config = this.#config!;
    if (config.modules?.length) this.#loadModules(config.modules);

    await this.#network(config);
    const storageFailure = await this.#storage(config);
    this.#isolation(config);
    const exec = new ExecFactory(
      {
        env: config.process?.env ?? [],
        rootDir: '/',
        ...(config.process?.user ? { user: config.process.user } : {}),
        ...(config.process?.cwd ? { cwd: config.process.cwd } : {}),
      },
      { helperPath: this.#helperPath, execIsolation: () => this.#execIsolation() },
    );
    this.#exec = exec;
    const log = new OutputLog(OUTPUT_LOG_BYTES);
    if (config.process && storageFailure === undefined) this.#createMain(config, exec, log);
    else if (config.process)
      this.#status.report('process-started', 'failed', {
        detail: `no root filesystem to run it in: ${storageFailure}`,
      });

    await this.#channel(config, exec, log);
    this.#main?.start();
  }

  /** PID 1 survives everything: report stray errors, refuse to exit. */
  #guard(): void {
    process.on('uncaughtException', (error) => this.log(`uncaught: ${describeError(error)}`));
    process.on('unhandledRejection', (error) => this.log(`unhandled rejection: ${describeError(error)}`));
    process.exit = ((code?: number) => {
      this.log(`refusing to exit (code ${code ?? 0}): PID 1 must not exit`);
    }) as typeof process.exit;
  }

  #loadModules(names: readonly string[]): void {
    const report = loadModules(this.#sys, names);
    const loaded = report.loaded.length ? `loaded ${report.loaded.join(' ')}` : 'nothing new to load';
    if (report.failed.length === 0) this.#status.report('modules', 'ok', { detail: loaded });
    else
      this.#status.report('modules', 'failed', {
        detail: `${loaded}; failed: ${report.failed.map((f) => `${f.name}: ${f.error}`).join('; ')}`,
      });
  }

  #readConfig(): boolean {
    try {
      const found = findConfig(this.#sys);
      this.#config = found.config;
      // The kernel command line is readable by any process: a config (and its keys) there stays out of sight.
      if (found.source.startsWith('kernel command line')) this.#masks.push('/proc/cmdline');
      this.#status.report('config', 'ok', { detail: `${found.source}, container ${found.config.id}` });
      return true;
    } catch (error) {
      this.#status.report('config', 'failed', { detail: describeError(error) });
      this.log('no valid config: the agent stays up but runs nothing; fix the config and restart the VM');
      return false;
    }
  }

  async #network(config: AgentConfig): Promise<void> {
    const hostname = hostnameFor(config);
    try {
      this.#sys.sethostname(hostname);
      const done = await configureNetwork(this.#sys, config.network);
      this.#status.report('network', 'ok', { detail: `hostname ${hostname}; ${done.join(', ')}` });
    } catch (error) {
      this.#status.report('network', 'failed', { detail: describeError(error) });
    }
  }

  /** Mounts the root disk and volumes and switches into them; undefined, or why the container has no root. */
  async #storage(config: AgentConfig): Promise<string | undefined> {
    if (!config.storage) {
      this.#status.report('storage', 'skipped', {
        detail: 'no storage in the config: running in the runtime root',
      });
      return undefined;
    }
    // Each step is its own boot stage, so a missing or damaged disk is named on the host's timeline.
    let stage: 'root-disk' | 'volumes' | 'storage' = 'root-disk';
    try {
      const root = await mountRootDisk(this.#sys, config.storage);
      this.#status.report('root-disk', 'ok', { detail: root });
      stage = 'volumes';
      const volumes = await mountVolumes(this.#sys, config.storage);
      if (volumes.length) this.#status.report('volumes', 'ok', { detail: volumes.join(', ') });
      else this.#status.report('volumes', 'skipped', { detail: 'no volumes' });
      stage = 'storage';
      writeContainerFiles('/mnt/root', hostnameFor(config), config.network);
      // The helper stays reachable through PID 1's fd after the runtime disk is out of sight.
      const helperFd = openSync(this.#helperPath, 'r');
      switchRoot(this.#sys);
      this.#helperPath = `/proc/1/fd/${helperFd}`;
      this.#status.report('storage', 'ok', { detail: 'container files written, switched into its root' });
      return undefined;
    } catch (error) {
      const detail = describeError(error);
      this.#status.report(stage, 'failed', { detail });
      return `${stage} failed: ${detail}`;
    }
  }

  /**
   * The container's cgroup, with limits that leave the agent room in the VM, and the watch that reports
   * the kernel's OOM kills in it. A failure here is reported and the container still runs (in its
   * namespaces, without limits): losing the container would be worse.
   */
  #isolation(config: AgentConfig): void {
    try {
      const limits = containerLimits(memTotalBytes(readFileSync('/proc/meminfo', 'utf8')), config.limits);
      const cgroup = ContainerCgroup.create(limits);
      this.#cgroup = cgroup;
      new OomWatch(cgroup, (fresh, total) =>
        this.#status.report('oom', 'failed', {
          detail:
            `the kernel killed ${fresh} process${fresh === 1 ? '' : 'es'} of the container for memory ` +
            `(limit ${(limits.memoryBytes / MIB).toFixed(0)} MiB; ${total} so far)`,
        }),
      ).start();
      const init = config.process?.init === false ? 'the process is PID 1' : 'init';
      this.#status.report('isolation', 'ok', {
        detail:
          `namespaces mnt pid ipc uts cgroup, ${init}; cgroup ${cgroup.path} ` +
          `memory.max ${(limits.memoryBytes / MIB).toFixed(0)} MiB pids.max ${limits.pids}`,
      });
    } catch (error) {
      this.#status.report('isolation', 'failed', {
        detail: `${describeError(error)}; the container runs in its namespaces but without limits`,
      });
    }
  }

  #mainIsolation(config: AgentConfig): Isolation {
    return {
      kind: 'new',
      init: config.process?.init !== false,
      ...(this.#cgroup ? { cgroup: this.#cgroup.path } : {}),
      masks: this.#masks,
    };
  }

  /**
   * Exec sessions join the running container. A VM whose config has no main process serves exec alone:
   * each session then makes a container of its own. Between a main process's end and its restart there is
   * no container to join, and Docker refuses such an exec too.
   */
  #execIsolation(): Isolation {
    const cgroup = this.#cgroup ? { cgroup: this.#cgroup.path } : {};
    if (!this.#main) return { kind: 'new', init: true, ...cgroup, masks: this.#masks };
    const mainPid = this.#main.pid;
    if (mainPid === undefined)
      throw new TetherError(
        'TETHER_NOT_RUNNING',
        'the container is not running (its main process has ended or is restarting): exec needs a running container',
      );
    return { kind: 'join', pid: mainPid, ...cgroup };
  }

  #createMain(config: AgentConfig, exec: ExecFactory, log: OutputLog): void {
    const processConfig = config.process!;
    try {
      this.#main = new MainProcess({
        spec: { ...mainSessionSpec(processConfig, exec), isolation: this.#mainIsolation(config) },
        context: { helperPath: this.#helperPath },
        log,
        status: this.#status,
        ...stopPolicy(processConfig),
        ...(this.#cgroup ? { oomKills: () => this.#cgroup!.oomKills() } : {}),
      });
    } catch (error) {
      this.#status.report('process-started', 'failed', { detail: describeError(error) });
      return;
    }
    this.#main.on('final', () => {
      if (config.powerOffOnExit !== false) void this.shutdown('the main process ended');
    });
  }

  async #channel(config: AgentConfig, exec: ExecFactory, log: OutputLog): Promise<void> {
    const ports = await waitForPorts([CHANNEL_PORT, LOG_PORT], PORT_WAIT_MS);
    const logPath = ports.get(LOG_PORT);
    if (logPath) {
      try {
        this.#logWriter = new LogPortWriter(
          log,
          new SerialPort(logPath, this.#sys, (m) => this.log(m)),
          (m) => this.log(m),
        );
        this.#logWriter.start();
      } catch (error) {
        this.log(`log port ${logPath}: ${describeError(error)}`);
      }
    }
    const channelPath = ports.get(CHANNEL_PORT);
    const logNote = logPath ? `; log port ${logPath}` : '; no log port (output only via attach)';
    if (!channelPath) {
      this.#status.report('channel', 'failed', {
        detail: `no virtio-serial port named ${CHANNEL_PORT} (ports: ${[...ports.keys()].join(', ') || 'none'})${logNote}`,
      });
      return;
    }
    const keys = config.channel;
    if (!keys?.hostKey || !keys.authorizedKeys?.length) {
      this.#status.report('channel', 'failed', {
        detail: 'the config has no channel.hostKey or no channel.authorizedKeys: nobody could connect',
      });
      return;
    }
    try {
      const server = new ChannelServer(
        { hostKey: keys.hostKey, authorizedKeys: keys.authorizedKeys },
        {
          main: this.#main,
          log,
          status: this.#status,
          exec,
          logger: (m) => this.log(m),
          containerCgroup: () => this.#cgroup?.path,
        },
      );
      const port = new SerialPort(channelPath, this.#sys, (m) => this.log(m));
      let connections = 0;
      void port.serve((stream) => void server.serve(stream, `connection ${++connections}`));
      this.#status.report('channel', 'ok', { detail: `${channelPath} (${CHANNEL_PORT})${logNote}` });
    } catch (error) {
      this.#status.report('channel', 'failed', { detail: describeError(error) });
    }
  }

  #watchShutdownRequests(): void {
    const request = (why: string) => () => void this.shutdown(why);
    process.on('SIGTERM', request('SIGTERM'));
    process.on('SIGINT', request('SIGINT (ctrl-alt-del)'));
    try {
      const device = watchPowerButton(this.#sys, request('power button'));
      if (!device) this.log('no power button device: QMP system_powerdown will not be seen');
    } catch (error) {
      this.log(`power button: ${describeError(error)}`);
    }
  }

  /** Graceful stop of the container, every output byte to the log port, then power off. */
  async shutdown(why: string): Promise<void> {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    this.log(`shutting down: ${why}`);
    try {
      const exit = await this.#main?.stop();
      const flushed = (await this.#logWriter?.flushed(LOG_FLUSH_MS)) ?? true;
      this.#status.report('shutdown', flushed ? 'ok' : 'failed', {
        detail: `${why}${flushed ? '' : `; the log port did not take all output within ${LOG_FLUSH_MS} ms`}`,
        ...(exit ? { exitCode: exit.exitCode, ...(exit.signal ? { signal: exit.signal } : {}) } : {}),
      });
      await sleep(CHANNEL_LINGER_MS);
      // The main process's end took its PID namespace and everything in it along; exec sessions of a VM
      // without one end here.
      await this.#exec?.stopAll(EXEC_STOP_GRACE_MS);
      this.#sys.sync();
      try {
        this.#sys.mount(null, '/', null, SYS.MS_REMOUNT | SYS.MS_RDONLY);
      } catch {
        // Busy or already read-only: the sync above is what matters.
      }
    } catch (error) {
      this.log(`shutdown: ${describeError(error)}`);
    }
    try {
      this.#sys.reboot(SYS.RB_POWER_OFF);
    } catch (error) {
      this.log(`power off failed: ${describeError(error)}`);
    }
  }
}

export async function runInit(): Promise<void> {
  const sys = realSys();
  const init = new Init(sys);
  try {
    await init.boot();
  } catch (error) {
    init.log(`boot: ${describeError(error)}; staying up`);
  }
}
