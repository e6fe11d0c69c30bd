/**
 * One container run in its own VM, start to finish: config and keys, boot through any VmDriver, connect
 * and attach (resuming after drops), and the exit code. When the channel cannot tell (a short command ends
 * before the host attaches, or the channel never comes up), the console's status records give the exit
 * code and the log-port file the output, so nothing is lost either way. tetherctl's `vm run` is a thin
 * terminal wrapper around this; tests can drive it directly.
 */
import { readFileSync } from 'node:fs';
import { encodeConfig } from '../../../protocol/src/config/config.ts';
import { describeError, TetherError } from '../../../protocol/src/errors/errors.ts';
import type { LogFrame } from '../../../protocol/src/logs/log-frame.ts';
import type { TerminalSize } from '../../../protocol/src/requests/requests.ts';
import { CONSOLE_STATUS_PREFIX, decodeStatusKey } from '../../../protocol/src/status/console-line.ts';
import { connectVmChannel } from './channel-connect.ts';
import { generateChannelKeys, saveClientKeys } from './channel-keys.ts';
import { exitFromRecords, fatalBootRecord, oomKilledIn } from './console-status.ts';
import { ConsoleWatcher, type SeenRecord } from './console-watcher.ts';
import type { Vm, VmDriver, VmExit } from './driver.ts';
import { readLogFile } from './log-file.ts';
import type { BootImagePaths } from './paths.ts';
import { ResumableAttach } from './resumable-attach.ts';
import { buildRunConfig, newContainerId } from './run-config.ts';
import { generateStatusKey, saveStatusKey } from './status-key.ts';
import type { TimelineEntry } from './timeline.ts';

/** Under TCG the agent answers within seconds; this is for a loaded CI machine. */
export const DEFAULT_BOOT_TIMEOUT_MS = 180_000;
/** After the exit status arrives the agent flushes and powers off; past this, the host stops the VM. */
const POWER_OFF_WAIT_MS = 30_000;
const CONSOLE_TAIL_LINES = 25;
/** How long an attach may still finish after the VM has ended. */
const VM_END_GRACE_MS = 2000;

export interface ContainerRunOptions {
  driver: VmDriver;
  image: BootImagePaths;
  /** The root filesystem image (raw ext4); the VM writes to its own layer over it. */
  rootDisk: string;
  /** An existing, empty directory for this VM's files; the caller removes it afterwards. */
  stateDir: string;
  argv: string[];
  env?: string[];
  cwd?: string | undefined;
  user?: string | undefined;
  tty?: boolean;
  openStdin?: boolean;
  memoryMiB?: number | undefined;
  /** Until the channel is up or the process has started. */
  bootTimeoutMs?: number;
  /** The main process's output, in order, each byte once. */
  onFrame: (frame: LogFrame) => void;
  /** Problems worth telling a user about that do not end the run (a dropped channel, a refused attach). */
  onNotice?: (message: string) => void;
}

export interface RunResult {
  exitCode: number;
  signal?: string;
  /** Where the exit code came from: the attach's exit status, or the console's status records. */
  source: 'attach' | 'console';
  /** The kernel's OOM killer ended a process of the container (as the boot's status records tell). */
  oomKilled: boolean;
  vmExit: VmExit;
}

/** The console's last lines without the machine-readable status lines (each has a human twin). */
export function consoleTail(text: string, lines = CONSOLE_TAIL_LINES): string {
  return text
    .split('\n')
    .map((line) => line.replace(/\r$/, ''))
    .filter((line) => !line.includes(CONSOLE_STATUS_PREFIX))
    .join('\n')
    .trimEnd()
    .split('\n')
    .slice(-lines)
    .join('\n');
}

export class ContainerRun {
  readonly id: string;
  readonly vm: Vm;
  readonly result: Promise<RunResult>;
  readonly #options: ContainerRunOptions;
  readonly #timeline: TimelineEntry[] = [];
  readonly #t0: number;
  readonly #console: ConsoleWatcher;
  readonly #attach: ResumableAttach;
  readonly #abort = new AbortController();
  #fatal: TetherError | undefined;
  #processStarted = false;
  /** Console status lines not believed (not signed with this boot's key): forged, replayed, cut short. */
  #droppedLines = 0;

  private constructor(
    options: ContainerRunOptions,
    id: string,
    vm: Vm,
    t0: number,
    credentials: ReturnType<typeof generateChannelKeys>['credentials'],
    statusKey: Buffer,
  ) {
    this.#options = options;
    this.id = id;
    this.vm = vm;
    this.#t0 = t0;
    this.#host(`VM running (${options.driver.name})`);
    this.#console = new ConsoleWatcher(vm.consoleLogPath, {
      statusKey,
      onRecord: (seen) => this.#onRecord(seen),
      onDropped: () => void this.#droppedLines++,
    });
    void vm.wait().then((exit) => {
      this.#host(`VM ended (${exit.reason})`);
      this.#abort.abort(
        new TetherError('TETHER_CHANNEL_CLOSED', `the VM ended (${exit.reason}) before the channel was up`),
      );
      // A channel the VM took down in the middle of the SSH handshake may never say so: after a moment for
      // what it still carries, the attach is given up and the log file and console records tell the rest.
      setTimeout(() => this.#attach.close(), VM_END_GRACE_MS);
    });
    this.#attach = new ResumableAttach({
      connect: async () => {
        let failed = 0;
        const client = await connectVmChannel(vm, {
          credentials,
          timeoutMs: Infinity, // the boot timer below decides when to give up
          signal: this.#abort.signal,
          onRetry: () => void failed++,
        });
        this.#host(`channel up${failed ? ` after ${failed} failed attempt${failed > 1 ? 's' : ''}` : ''}`);
        return client;
      },
      from: 'start',
      stdin: options.openStdin ?? false,
      onFrame: options.onFrame,
      onAttached: (result, reconnects) =>
        this.#host(
          reconnects === 0
            ? `attached (process ${result.running ? 'running' : 'already ended'}, tty ${result.tty})`
            : `attached again at offset ${result.offset}`,
        ),
      onDrop: (offset) => {
        this.#host(`channel dropped at offset ${offset}`);
        options.onNotice?.(`channel dropped at output offset ${offset}; reconnecting`);
      },
      onError: (error) => {
        if (!this.#abort.signal.aborted) options.onNotice?.(describeError(error));
      },
    });
    this.result = this.#run();
  }

  /** Writes the config and keys into the state directory and boots the VM. */
  static async start(options: ContainerRunOptions): Promise<ContainerRun> {
    const id = newContainerId();
    const keys = generateChannelKeys(id);
    const statusKey = generateStatusKey();
    const config = buildRunConfig({
      id,
      argv: options.argv,
      env: options.env ?? [],
      cwd: options.cwd,
      user: options.user,
      tty: options.tty ?? false,
      openStdin: options.openStdin ?? false,
      network: options.driver.guestNetwork(),
      agentHostKey: keys.agentHostKey,
      clientPublicKey: keys.clientPublicKey,
      statusKey,
    });
    saveClientKeys(options.stateDir, keys);
    saveStatusKey(options.stateDir, statusKey);
    const t0 = performance.now();
    const vm = await options.driver.start({
      id,
      stateDir: options.stateDir,
      ...options.image,
      rootDisk: options.rootDisk,
      config: encodeConfig(config),
      ...(options.memoryMiB !== undefined ? { memoryMiB: options.memoryMiB } : {}),
    });
    return new ContainerRun(options, id, vm, t0, keys.credentials, decodeStatusKey(statusKey));
  }

  timeline(): TimelineEntry[] {
    return [...this.#timeline];
  }

  /** Console status lines seen so far that the host did not believe (none unless something forged them). */
  get droppedStatusLines(): number {
    return this.#droppedLines;
  }

  writeStdin(chunk: Buffer): void {
    this.#attach.writeStdin(chunk);
  }

  endStdin(): void {
    this.#attach.endStdin();
  }

  resize(size: TerminalSize): void {
    this.#attach.resize(size);
  }

  /** Sends a signal to the main process; false when no attach is up to carry it. */
  signal(name: string): boolean {
    return this.#attach.signal(name);
  }

  /** Asks the VM to power down (the agent stops the process gracefully); kills it after graceMs. */
  stop(graceMs?: number): Promise<VmExit> {
    return this.vm.stop(graceMs);
  }

  kill(): Promise<VmExit> {
    return this.vm.kill();
  }

  #host(text: string): void {
    this.#timeline.push({ source: 'host', hostMs: performance.now() - this.#t0, text });
  }

  #onRecord(seen: SeenRecord): void {
    this.#timeline.push({ source: 'guest', hostMs: seen.seenAt - this.#t0, record: seen.record });
    if (seen.record.stage === 'process-started' && seen.record.outcome === 'ok') this.#processStarted = true;
    const fatal = fatalBootRecord([seen.record]);
    if (fatal && !this.#fatal) {
      this.#fail(
        new TetherError(
          'TETHER_BOOT_FAILED',
          `the agent reported ${fatal.stage} failed: ${fatal.detail ?? 'no detail'}`,
        ),
      );
    }
  }

  #fail(error: TetherError): void {
    this.#fatal ??= error;
    this.#abort.abort(error);
    this.#attach.close();
  }

  async #run(): Promise<RunResult> {
    const bootTimeoutMs = this.#options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
    const bootTimer = setTimeout(() => {
      if (this.#attach.attached || this.#processStarted) return;
      const last = this.#console.records.at(-1)?.record;
      this.#fail(
        new TetherError(
          'TETHER_BOOT_FAILED',
          `the agent did not come up within ${Math.round(bootTimeoutMs / 1000)} s` +
            (last ? ` (last status: ${last.stage} ${last.outcome})` : ' (no status record on the console)'),
        ),
      );
    }, bootTimeoutMs);
    try {
      const attached = await this.#attach.exit;
      clearTimeout(bootTimer);
      if (attached) {
        this.#host(`exit status ${attached.exitCode}${attached.signal ? ` (${attached.signal})` : ''}`);
        const vmExit = await this.#waitPowerOff();
        this.#console.stop(); // the last lines (an oom record) are read before the verdict
        return { ...attached, source: 'attach', oomKilled: this.#oomKilled(), vmExit };
      }
      if (this.#fatal) throw this.#fatal;
      // No exit status over the channel: the VM has ended, or the channel refused us while the process
      // runs on; it powers off when the process ends (a user's Ctrl-C stops it sooner).
      const vmExit = await this.vm.wait();
      this.#console.stop();
      if (this.#fatal) throw this.#fatal;
      for (const frame of readLogFile(this.vm.logPortPath, this.#attach.offset ?? 0))
        this.#options.onFrame(frame);
      const recorded = exitFromRecords(this.#console.records.map((seen) => seen.record));
      if (recorded)
        return {
          exitCode: recorded.exitCode,
          ...(recorded.signal ? { signal: recorded.signal } : {}),
          source: 'console',
          oomKilled: recorded.oomKilled === true,
          vmExit,
        };
      throw new TetherError(
        this.#processStarted ? 'TETHER_VM_FAILED' : 'TETHER_BOOT_FAILED',
        `the VM ended (${vmExit.reason}${vmExit.exitCode !== undefined ? `, QEMU status ${vmExit.exitCode}` : ''}) ` +
          (this.#processStarted
            ? 'before the container process exited'
            : 'before the container process started'),
      );
    } catch (error) {
      clearTimeout(bootTimer);
      await this.vm.kill().catch(() => undefined);
      throw this.#withConsole(error);
    } finally {
      this.#console.stop();
      this.#attach.close();
    }
  }

  #oomKilled(): boolean {
    return oomKilledIn(this.#console.records.map((seen) => seen.record));
  }

  async #waitPowerOff(): Promise<VmExit> {
    const timer = new Promise<'timeout'>((resolve) =>
      setTimeout(() => resolve('timeout'), POWER_OFF_WAIT_MS).unref(),
    );
    const first = await Promise.race([this.vm.wait(), timer]);
    if (first !== 'timeout') return first;
    this.#options.onNotice?.(`the VM did not power off within ${POWER_OFF_WAIT_MS / 1000} s; stopping it`);
    return this.vm.stop(5000);
  }

  #withConsole(error: unknown): unknown {
    if (!(error instanceof TetherError)) return error;
    let text = '';
    try {
      text = readFileSync(this.vm.consoleLogPath, 'utf8');
    } catch {
      // No console file: say so below.
    }
    const tail = consoleTail(text);
    return new TetherError(
      error.code,
      `${error.message}\n${this.vm.consoleLogPath} (last lines):\n` +
        (tail ? tail.replace(/^/gm, '  | ') : '  (empty)'),
      { cause: error },
    );
  }
}
