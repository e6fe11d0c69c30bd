/**
 * Reports each OOM kill in the container's cgroup as it happens: memory.events changes (the kernel sends a
 * file-modified event) and its oom_kill count goes up. A slow timer backs the event up, since a missed
 * inotify event must not hide an OOM kill.
 */
import { watch, type FSWatcher } from 'node:fs';
import type { ContainerCgroup } from './cgroup.ts';

const RECHECK_MS = 2000;

export class OomWatch {
  readonly #cgroup: ContainerCgroup;
  readonly #onKills: (newKills: number, total: number) => void;
  #seen: number;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(cgroup: ContainerCgroup, onKills: (newKills: number, total: number) => void) {
    this.#cgroup = cgroup;
    this.#onKills = onKills;
    this.#seen = cgroup.oomKills();
  }

  start(): void {
    try {
      this.#watcher = watch(this.#cgroup.memoryEventsPath, () => this.check());
      this.#watcher.on('error', () => this.#watcher?.close());
    } catch {
      // No inotify on this file: the timer alone.
    }
    this.#timer = setInterval(() => this.check(), RECHECK_MS);
    this.#timer.unref();
  }

  /** Reports kills not reported yet; returns the total so far. */
  check(): number {
    const total = this.#cgroup.oomKills();
    if (total > this.#seen) {
      const fresh = total - this.#seen;
      this.#seen = total;
      this.#onKills(fresh, total);
    }
    return total;
  }

  stop(): void {
    this.#watcher?.close();
    clearInterval(this.#timer);
  }
}
