/**
 * The container's main process: started once from the config, its output kept in the OutputLog (with
 * backpressure), its exit recorded and reported, and restarted when the policy says so.
 */
import { EventEmitter } from 'node:events';
import { STREAM_STDERR, STREAM_STDOUT } from '../../../protocol/src/logs/log-frame.ts';
import type { TerminalSize } from '../../../protocol/src/requests/requests.ts';
import type { StatusReporter } from '../status/reporter.ts';
import type { ExitStatus } from './exit-status.ts';
import type { OutputLog } from './output-log.ts';
import { Session, type SessionSpec, type SpawnContext } from './session.ts';

export type RestartPolicy = 'no' | 'on-failure' | 'always';

export interface MainProcessOptions {
  spec: SessionSpec;
  context: SpawnContext;
  log: OutputLog;
  status: StatusReporter;
  restart: RestartPolicy;
  stopSignal: string;
  stopTimeoutMs: number;
  /** Docker's StdinOnce: the first attach client that ends its input closes the process's stdin. */
  stdinOnce?: boolean;
  /** The kernel's OOM kills in the container so far, for Docker's State.OOMKilled on the exit record. */
  oomKills?: () => number;
}

const RESTART_BACKOFF_MAX_MS = 10_000;

export function shouldRestart(policy: RestartPolicy, status: ExitStatus, stopping: boolean): boolean {
  if (stopping) return false;
  return policy === 'always' || (policy === 'on-failure' && status.exitCode !== 0);
}

export class MainProcess extends EventEmitter<{ exit: [ExitStatus]; final: [ExitStatus] }> {
  readonly #options: MainProcessOptions;
  #session: Session | undefined;
  #lastExit: ExitStatus | undefined;
  #final = false;
  #stopping = false;
  #restarts = 0;

  constructor(options: MainProcessOptions) {
    super();
    this.#options = options;
    options.log.on('drain', () => this.#session?.resumeOutput());
  }

  get tty(): boolean {
    return this.#options.spec.tty !== undefined;
  }

  get running(): boolean {
    return this.#session !== undefined && this.#session.exitStatus === undefined;
  }

  get pid(): number | undefined {
    return this.running ? this.#session?.pid : undefined;
  }

  /** The last exit, once the process has ended for good (no restart coming). */
  get finalExit(): ExitStatus | undefined {
    return this.#final ? this.#lastExit : undefined;
  }

  get restarts(): number {
    return this.#restarts;
  }

  start(): void {
    const { spec, context, log, status } = this.#options;
    let session: Session;
    try {
      session = new Session(spec, context);
    } catch (error) {
      // The helper itself could not start: report it like a command that cannot run.
      const exit: ExitStatus = { exitCode: 126 };
      status.report('process-started', 'failed', { detail: (error as Error).message });
      this.#ended(exit);
      return;
    }
    this.#session = session;
    const oomKillsBefore = this.#options.oomKills?.() ?? 0;
    status.report('process-started', 'ok', { pid: session.pid, detail: spec.argv.join(' ') });
    const append = (stream: typeof STREAM_STDOUT | typeof STREAM_STDERR) => (chunk: Buffer) => {
      if (!log.append(stream, chunk)) session.pauseOutput();
    };
    session.on('stdout', append(STREAM_STDOUT));
    session.on('stderr', append(STREAM_STDERR));
    session.on('exit', (exit) => {
      const oomKilled = (this.#options.oomKills?.() ?? 0) > oomKillsBefore;
      status.report('process-exited', 'ok', {
        exitCode: exit.exitCode,
        ...(exit.signal ? { signal: exit.signal } : {}),
        ...(oomKilled ? { oomKilled } : {}),
      });
      this.#ended(exit);
    });
  }

  #ended(exit: ExitStatus): void {
    this.#lastExit = exit;
    this.emit('exit', exit);
    if (shouldRestart(this.#options.restart, exit, this.#stopping)) {
      const delay = Math.min(RESTART_BACKOFF_MAX_MS, 100 * 2 ** Math.min(this.#restarts, 10));
      this.#restarts++;
      setTimeout(() => (this.#stopping ? this.#finalize(exit) : this.start()), delay).unref();
      return;
    }
    this.#finalize(exit);
  }

  #finalize(exit: ExitStatus): void {
    this.#final = true;
    this.#options.log.close();
    this.emit('final', exit);
  }

  write(data: Buffer): boolean {
    return this.#session?.write(data) ?? true;
  }

  onceInputDrained(callback: () => void): void {
    if (this.#session) this.#session.onceInputDrained(callback);
    else queueMicrotask(callback);
  }

  endInput(): void {
    this.#session?.endInput();
  }

  /** An attach client that sent stdin ended it or went away: with stdinOnce, that closes stdin for good. */
  attachInputEnded(): void {
    if (this.#options.stdinOnce) this.endInput();
  }

  resize(size: TerminalSize): void {
    this.#session?.resize(size);
  }

  kill(signal: string): boolean {
    return this.#session?.kill(signal) ?? false;
  }

  /** Kills whatever the last run of the process left in its process group (descendants that outlive it). */
  killRemaining(): void {
    this.#session?.killGroup('SIGKILL');
  }

  /** Graceful stop: the stop signal, then SIGKILL after the timeout. Resolves with the final exit. */
  stop(): Promise<ExitStatus> {
    this.#stopping = true;
    if (this.#final && this.#lastExit) return Promise.resolve(this.#lastExit);
    return new Promise((resolve) => {
      this.once('final', resolve);
      if (!this.running) return;
      this.kill(this.#options.stopSignal);
      const timer = setTimeout(() => this.kill('SIGKILL'), this.#options.stopTimeoutMs);
      this.once('final', () => clearTimeout(timer));
    });
  }
}
