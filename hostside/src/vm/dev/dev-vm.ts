/**
 * One dev VM under control: a `tether --dev` process on this host. Built by DevDriver.start() (this process
 * is the agent's parent and sees its exit status) or adopt() (another process started it; the pid going
 * away tells us it ended, and the console file tells us whether it powered off on its own).
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { decodeConfig } from '../../../../protocol/src/config/config.ts';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import { STATUS_KEY_BYTES, decodeStatusKey } from '../../../../protocol/src/status/console-line.ts';
import type { StatusRecord } from '../../../../protocol/src/status/status.ts';
import { statusRecordsIn } from '../console-status.ts';
import type { PortForward, Vm, VmExit, VmInfo } from '../driver.ts';
import { isProcessAlive } from '../qemu/process-alive.ts';
import type { DevLayout, DevVmMetadata } from './dev-layout.ts';
import { connectUnixChannel } from '../unix-channel.ts';

const PID_POLL_MS = 100;
const REOPEN_TIMEOUT_MS = 5000;
export const DEFAULT_STOP_GRACE_MS = 15_000;

/** The console file from `offset` on (this boot's records). */
function consoleSince(path: string, offset: number): string {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return '';
  }
  try {
    const chunks: Buffer[] = [];
    const buffer = Buffer.allocUnsafe(64 * 1024);
    for (let at = offset; ;) {
      const n = readSync(fd, buffer, 0, buffer.length, at);
      if (n <= 0) break;
      chunks.push(Buffer.from(buffer.subarray(0, n)));
      at += n;
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/**
 * The status key of the config this boot was given (the driver wrote it): kill() takes pids from the
 * console, so only the agent's own lines may name them. A config without a key gives undefined: its agent
 * signs nothing.
 */
function statusKeyOf(configFile: string): Buffer | undefined {
  try {
    const key = decodeConfig(readFileSync(configFile), configFile).channel?.statusKey;
    return key === undefined ? undefined : decodeStatusKey(key);
  } catch {
    // Unreadable: believe no line rather than every line (a key nobody has verifies none).
    return randomBytes(STATUS_KEY_BYTES);
  }
}

export class DevVm implements Vm {
  readonly id: string;
  readonly stateDir: string;
  readonly consoleLogPath: string;
  readonly logPortPath: string;
  /** Always none: dev mode publishes no ports (the process listens on the host's network directly). */
  readonly ports: PortForward[] = [];
  readonly #layout: DevLayout;
  readonly #pid: number;
  readonly #consoleOffset: number;
  readonly #statusKey: Buffer | undefined;
  readonly #exit: Promise<VmExit>;
  #killed = false;
  #released = false;
  #ended = false;
  #poll: NodeJS.Timeout | undefined;
  #child: ChildProcess | undefined;

  constructor(metadata: DevVmMetadata, layout: DevLayout, child?: ChildProcess) {
    this.id = metadata.id;
    this.stateDir = layout.stateDir;
    this.consoleLogPath = layout.consoleLog;
    this.logPortPath = layout.logPort;
    this.#layout = layout;
    this.#pid = metadata.pid;
    this.#consoleOffset = metadata.consoleOffset;
    this.#statusKey = statusKeyOf(layout.configFile);
    this.#exit = new Promise<VmExit>((resolve) => {
      const done = (exit: VmExit): void => {
        clearInterval(this.#poll);
        this.#ended = true;
        resolve(exit);
      };
      if (child) {
        this.#child = child;
        const fromStatus = (code: number | null, signal: NodeJS.Signals | null): VmExit => ({
          // The dev agent exits 0 only after its shutdown (powerOffOnExit or a stop request).
          reason: signal || this.#killed ? 'killed' : code === 0 ? 'guest-shutdown' : 'unknown',
          ...(code !== null ? { exitCode: code } : {}),
          ...(signal ? { signal } : {}),
        });
        if (child.exitCode !== null || child.signalCode !== null) {
          done(fromStatus(child.exitCode, child.signalCode));
          return;
        }
        // Held (ref) while under control, so the exit event is not lost to this process exiting first.
        child.ref();
        child.once('exit', (code, signal) => done(fromStatus(code, signal)));
        return;
      }
      const check = (): void => {
        if (isProcessAlive(this.#pid, layout.channelSocket)) return;
        const shutDown = this.#records().some((record) => record.stage === 'shutdown');
        done({ reason: this.#killed ? 'killed' : shutDown ? 'guest-shutdown' : 'unknown' });
      };
      this.#poll = setInterval(check, PID_POLL_MS);
      check();
    });
  }

  /** The agent's pid on this host. */
  get pid(): number {
    return this.#pid;
  }

  inspect(): Promise<VmInfo> {
    const running = !this.#ended && isProcessAlive(this.#pid, this.#layout.channelSocket);
    return Promise.resolve({ id: this.id, pid: this.#pid, running, state: running ? 'running' : 'exited' });
  }

  openChannel(): Promise<Duplex> {
    return connectUnixChannel(this.#layout.channelSocket, "the dev agent's channel");
  }

  wait(): Promise<VmExit> {
    return this.#exit;
  }

  /** SIGTERM: the agent stops its process gracefully (its stop signal and timeout) and exits 0. */
  async stop(graceMs = DEFAULT_STOP_GRACE_MS): Promise<VmExit> {
    if (!this.#running()) return this.#exit;
    this.#signal('SIGTERM');
    const timer = sleep(graceMs, 'timeout' as const);
    if ((await Promise.race([this.#exit, timer])) !== 'timeout') return this.#exit;
    return this.kill();
  }

  /**
   * SIGKILL to the agent, then to the process groups of the main processes it started (each runs in its
   * own session, so killing the agent alone would leave them running on the host, where a VM's power-off
   * ends everything). Exec sessions started over the channel are not found this way and may linger.
   */
  async kill(): Promise<VmExit> {
    if (!this.#running()) return this.#exit;
    this.#killed = true;
    this.#signal('SIGKILL');
    for (const record of this.#records()) {
      if (record.stage !== 'process-started' || record.pid === undefined) continue;
      try {
        process.kill(-record.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    return this.#exit;
  }

  /**
   * SIGHUP: the agent reopens the log file, creating it anew. Resolves once the file exists again (the
   * caller renamed the old one away first); no byte is lost or written twice across the two files.
   */
  async reopenLog(): Promise<void> {
    if (!this.#running())
      throw new TetherError('TETHER_VM_FAILED', `dev VM ${this.id} is not running: cannot reopen its log`);
    this.#signal('SIGHUP');
    const deadline = Date.now() + REOPEN_TIMEOUT_MS;
    while (!existsSync(this.logPortPath)) {
      if (this.#ended || Date.now() > deadline)
        throw new TetherError(
          'TETHER_VM_FAILED',
          `dev VM ${this.id} did not reopen ${this.logPortPath} within ${REOPEN_TIMEOUT_MS} ms`,
        );
      await sleep(5);
    }
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    clearInterval(this.#poll);
    this.#child?.unref();
  }

  /** This boot's status records the host believes. */
  #records(): StatusRecord[] {
    return statusRecordsIn(consoleSince(this.#layout.consoleLog, this.#consoleOffset), this.#statusKey);
  }

  #signal(signal: NodeJS.Signals): void {
    try {
      process.kill(this.#pid, signal);
    } catch {
      // Gone in between: wait() resolves.
    }
  }

  #running(): boolean {
    if (this.#released)
      throw new TetherError(
        'TETHER_VM_FAILED',
        `dev VM ${this.id} was released; adopt it again to control it`,
      );
    return !this.#ended && isProcessAlive(this.#pid, this.#layout.channelSocket);
  }
}
