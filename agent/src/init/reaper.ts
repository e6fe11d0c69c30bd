/**
 * PID 1 reaps every zombie: orphans re-parented to it included. Not with a blanket waitpid(-1), which would
 * steal the children that node's child_process and node-pty wait for by pid (their 'exit' would never fire):
 * it peeks at one exited child without reaping it (waitid WNOWAIT) and reaps it only when node does not own
 * it. An owned zombie hides the others until node reaps it, one event-loop turn later, hence the re-check.
 */
import type { Sys } from '../sys/sys.ts';

const RECHECK_MS = 10;
const SWEEP_MS = 1000;

export class Reaper {
  readonly #sys: Sys;
  readonly #owned: ReadonlySet<number>;
  readonly #onReaped: (pid: number) => void;
  #recheck: NodeJS.Timeout | undefined;
  #reaped = 0;

  constructor(sys: Sys, owned: ReadonlySet<number>, onReaped: (pid: number) => void = () => {}) {
    this.#sys = sys;
    this.#owned = owned;
    this.#onReaped = onReaped;
  }

  get reaped(): number {
    return this.#reaped;
  }

  /** Sweeps on every SIGCHLD and on a timer (signals coalesce); the timer also keeps PID 1's loop alive. */
  start(): void {
    process.on('SIGCHLD', () => this.sweep());
    setInterval(() => this.sweep(), SWEEP_MS);
  }

  sweep(): void {
    for (;;) {
      let exited;
      try {
        exited = this.#sys.peekExited();
      } catch {
        return; // ECHILD: no children at all.
      }
      if (!exited) return;
      if (this.#owned.has(exited.pid)) {
        if (this.#recheck === undefined) {
          this.#recheck = setTimeout(() => {
            this.#recheck = undefined;
            this.sweep();
          }, RECHECK_MS);
        }
        return;
      }
      try {
        this.#sys.waitpid(exited.pid, 1 /* WNOHANG */);
        this.#reaped++;
        this.#onReaped(exited.pid);
      } catch {
        return;
      }
    }
  }
}
