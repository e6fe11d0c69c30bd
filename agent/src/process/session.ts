/**
 * One process the agent runs: the container's main process or an exec session. Every session starts
 * through the static exec helper (identity, cwd, PATH lookup, 126/127), with pipes or a pseudo-terminal.
 * Output is reported as events; the owner applies backpressure with pauseOutput()/resumeOutput().
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { constants } from 'node:os';
import * as pty from 'node-pty';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import type { TerminalSize } from '../../../protocol/src/requests/requests.ts';
import { FORWARD_SIGKILL, isRelayed, isolationArgs, type Isolation } from '../container/isolation.ts';
import { exitStatusFrom, signalNumber, type ExitStatus } from './exit-status.ts';
import type { ResolvedUser } from './users.ts';

export interface SessionSpec {
  argv: string[];
  /** KEY=VALUE entries, exactly the process's environment. */
  env: string[];
  cwd?: string;
  user?: ResolvedUser;
  tty?: TerminalSize;
  /** False closes stdin at once. */
  stdin: boolean;
  /** Namespaces, cgroup and init (see container/isolation.ts); none means the helper just execs. */
  isolation?: Isolation;
}

export interface SpawnContext {
  /** Path of tether-exec (in the VM: /proc/1/fd/N of a descriptor kept open across pivot_root). */
  helperPath: string;
  /** Where exec sessions run: the container the main process made, at the moment of the request. */
  execIsolation?: () => Isolation | undefined;
}

/** How long output may keep flowing after the process exits (a grandchild may hold stdout open). */
const OUTPUT_GRACE_MS = 2000;
/** EOT: what a terminal sends for ctrl-d; closing a pty's stdin is done by sending it. */
const END_OF_TRANSMISSION = '\x04';

export function helperArgs(spec: SessionSpec): string[] {
  const args: string[] = isolationArgs(spec.isolation, spec.tty !== undefined);
  if (spec.user) {
    args.push(
      '--groups',
      spec.user.groups.join(','),
      '--gid',
      String(spec.user.gid),
      '--uid',
      String(spec.user.uid),
    );
  }
  if (spec.cwd) args.push('--cwd', spec.cwd);
  args.push('--', ...spec.argv);
  return args;
}

export function envObject(env: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of env) {
    const eq = entry.indexOf('=');
    if (eq > 0) out[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return out;
}

/** Merges KEY=VALUE lists; later entries replace earlier ones with the same key. */
export function mergeEnv(...lists: string[][]): string[] {
  return Object.entries(envObject(lists.flat())).map(([key, value]) => `${key}=${value}`);
}

function describeCommand(spec: SessionSpec): string {
  return JSON.stringify(spec.argv[0] ?? '');
}

/** Bytes that execve(2) copies for these strings: each with its NUL, plus a pointer each. */
function execBytes(strings: string[]): number {
  return strings.reduce((sum, text) => sum + Buffer.byteLength(text) + 1 + 8, 0);
}

function spawnFailed(helperPath: string, spec: SessionSpec, error: unknown): TetherError {
  const code = (error as NodeJS.ErrnoException).code;
  const hint =
    code === 'E2BIG'
      ? ` (E2BIG: the arguments and environment, ${execBytes([...spec.argv, ...spec.env])} bytes, are more than the kernel takes)`
      : '';
  return new TetherError(
    'TETHER_SPAWN_FAILED',
    `could not start ${describeCommand(spec)} through ${helperPath}: ${(error as Error).message}${hint}`,
    { cause: error },
  );
}

type SessionEvents = { stdout: [Buffer]; stderr: [Buffer]; exit: [ExitStatus] };

export class Session extends EventEmitter<SessionEvents> {
  /** The helper's pid: the process itself, or the relay that stands for it (see container/isolation.ts). */
  readonly pid: number;
  readonly tty: boolean;
  readonly #relayed: boolean;
  #exit: ExitStatus | undefined;
  #child: ChildProcess | undefined;
  #terminal: pty.IPty | undefined;
  #stdinOpen: boolean;

  constructor(spec: SessionSpec, context: SpawnContext) {
    super();
    this.tty = spec.tty !== undefined;
    this.#relayed = isRelayed(spec.isolation);
    this.#stdinOpen = spec.stdin;
    const args = helperArgs(spec);
    if (spec.tty) {
      let terminal: pty.IPty;
      try {
        terminal = pty.spawn(context.helperPath, args, {
          name: envObject(spec.env)['TERM'] ?? 'xterm',
          cols: spec.tty.cols,
          rows: spec.tty.rows,
          cwd: '/',
          env: envObject(spec.env),
          encoding: null,
        });
      } catch (error) {
        throw spawnFailed(context.helperPath, spec, error);
      }
      this.#terminal = terminal;
      this.pid = terminal.pid;
      this.#watchTerminal(terminal);
      if (!spec.stdin) terminal.write(END_OF_TRANSMISSION);
    } else {
      let child: ChildProcess;
      try {
        child = spawn(context.helperPath, args, {
          env: envObject(spec.env),
          cwd: '/',
          stdio: [spec.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
          // Its own session and process group, so that signals to the group reach the whole tree.
          detached: true,
        });
      } catch (error) {
        // E2BIG and other errors of execve itself are thrown here.
        throw spawnFailed(context.helperPath, spec, error);
      }
      // EMFILE, ENFILE, EAGAIN, ENOENT, EACCES come as an 'error' event on the next tick, with no pid:
      // unheard, that event would kill the agent.
      child.on('error', () => {});
      if (child.pid === undefined) {
        for (const stream of [child.stdin, child.stdout, child.stderr]) stream?.destroy();
        throw new TetherError(
          'TETHER_SPAWN_FAILED',
          `could not start ${describeCommand(spec)}: the system refused a new process or its pipes ` +
            `(EMFILE or ENFILE: too many open files; EAGAIN: too many processes), or the exec helper ` +
            `${context.helperPath} is missing`,
        );
      }
      this.pid = child.pid;
      this.#child = child;
      this.#watchChild(child);
    }
  }

  get exitStatus(): ExitStatus | undefined {
    return this.#exit;
  }

  /** Writes to the process's stdin; false means "wait for the returned stream's drain". */
  write(data: Buffer): boolean {
    if (!this.#stdinOpen || this.#exit) return true;
    if (this.#terminal) {
      this.#terminal.write(data);
      return true;
    }
    const stdin = this.#child?.stdin;
    if (!stdin || stdin.destroyed) return true;
    return stdin.write(data);
  }

  onceInputDrained(callback: () => void): void {
    const stdin = this.#child?.stdin;
    if (stdin && stdin.writableNeedDrain) stdin.once('drain', callback);
    else queueMicrotask(callback);
  }

  endInput(): void {
    if (!this.#stdinOpen) return;
    this.#stdinOpen = false;
    if (this.#terminal && !this.#exit) this.#terminal.write(END_OF_TRANSMISSION);
    this.#child?.stdin?.end();
  }

  resize(size: TerminalSize): void {
    if (this.#terminal && !this.#exit) this.#terminal.resize(size.cols, size.rows);
  }

  /** Sends a signal by name (TERM or SIGTERM); returns false for an unknown name. */
  kill(signal: string): boolean {
    const number = signalNumber(signal);
    if (number === undefined) return false;
    if (this.#exit) return true;
    try {
      process.kill(
        this.pid,
        this.#relayed && number === constants.signals.SIGKILL ? FORWARD_SIGKILL : number,
      );
    } catch {
      // Already gone: the exit event is on its way.
    }
    return true;
  }

  /**
   * Sends a signal to the session's whole process group: the helper starts a session of its own (setsid,
   * or the terminal's), so its pid is the group's id and every descendant that stayed in it is reached,
   * even once the session's own process has ended. A relayed session gets it through its relay, which
   * passes it on to the process's group; what the container left behind dies with its PID namespace.
   */
  killGroup(signal: NodeJS.Signals): void {
    if (this.#relayed) {
      if (!this.#exit) this.kill(signal);
      return;
    }
    try {
      process.kill(-this.pid, signal);
    } catch {
      // ESRCH: nothing left in the group.
    }
  }

  /**
   * Nobody reads the output any more: a terminal session is hung up (SIGHUP, as sshd does); a piped one
   * has its output pipes closed, so that its next write fails (SIGPIPE, or EPIPE where it ignores that
   * signal) as under Docker, rather than block for good once the pipe is full.
   */
  closeOutput(): void {
    if (this.#exit) return;
    if (this.#terminal) {
      this.kill('SIGHUP');
      return;
    }
    this.#child?.stdout?.destroy();
    this.#child?.stderr?.destroy();
  }

  pauseOutput(): void {
    if (this.#terminal) this.#terminal.pause();
    this.#child?.stdout?.pause();
    this.#child?.stderr?.pause();
  }

  resumeOutput(): void {
    if (this.#terminal) this.#terminal.resume();
    this.#child?.stdout?.resume();
    this.#child?.stderr?.resume();
  }

  #finish(status: ExitStatus): void {
    if (this.#exit) return;
    this.#exit = status;
    this.emit('exit', status);
  }

  #watchChild(child: ChildProcess): void {
    child.stdout!.on('data', (chunk: Buffer) => this.emit('stdout', chunk));
    child.stderr!.on('data', (chunk: Buffer) => this.emit('stderr', chunk));
    child.stdin?.on('error', () => {
      // EPIPE: the process closed its stdin; later input is discarded like a shell pipeline's.
    });
    let status: ExitStatus | undefined;
    let grace: NodeJS.Timeout | undefined;
    child.on('exit', (code, signal) => {
      status = exitStatusFrom(code, signal);
      // A grandchild may keep stdout open forever: report the exit after a grace period regardless.
      grace = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        this.#finish(status!);
      }, OUTPUT_GRACE_MS);
      grace.unref();
    });
    child.on('close', (code, signal) => {
      clearTimeout(grace);
      this.#finish(status ?? exitStatusFrom(code, signal));
    });
  }

  #watchTerminal(terminal: pty.IPty): void {
    terminal.onData((chunk: string | Buffer) =>
      this.emit('stdout', typeof chunk === 'string' ? Buffer.from(chunk, 'binary') : chunk),
    );
    // node-pty reports the exit only once the terminal's output is drained, so no byte follows it.
    terminal.onExit(({ exitCode, signal }) => this.#finish(exitStatusFrom(exitCode, signal)));
  }
}
