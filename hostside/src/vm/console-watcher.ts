/**
 * Follows a VM's console file as the hypervisor writes it and reports each status record with the host
 * time it was seen. Woken by inotify (fs.watch) once the file exists, with a slow poll as a backstop for
 * filesystems without it; until the file exists, a fast poll. A daemon with many idle VMs then costs
 * nothing per VM between writes.
 */
import { closeSync, openSync, readSync, watch, type FSWatcher } from 'node:fs';
import type { StatusRecord } from '../../../protocol/src/status/status.ts';
import { LineSplitter, statusFromConsoleLine } from './console-status.ts';

export interface SeenRecord {
  record: StatusRecord;
  /** performance.now() when the host read it. */
  seenAt: number;
}

export class ConsoleWatcher {
  readonly #path: string;
  readonly #onRecord: (seen: SeenRecord) => void;
  readonly #lines = new LineSplitter();
  readonly #buffer = Buffer.allocUnsafe(64 * 1024);
  readonly records: SeenRecord[] = [];
  #position = 0;
  #timer: NodeJS.Timeout | undefined;
  #watcher: FSWatcher | undefined;
  readonly #backstopMs: number;

  constructor(
    path: string,
    onRecord: (seen: SeenRecord) => void = () => {},
    intervalMs = 50,
    backstopMs = 1000,
  ) {
    this.#path = path;
    this.#onRecord = onRecord;
    this.#backstopMs = backstopMs;
    this.#timer = setInterval(() => this.poll(), intervalMs);
    this.#timer.unref();
    this.#watch();
  }

  /** Once the file exists: inotify wakes the reader, and the poll slows to a backstop. */
  #watch(): void {
    if (this.#watcher || !this.#timer) return;
    try {
      this.#watcher = watch(this.#path, { persistent: false }, () => this.poll());
      this.#watcher.on('error', () => undefined);
    } catch {
      return; // Not there yet (or no inotify): keep polling fast.
    }
    clearInterval(this.#timer);
    this.#timer = setInterval(() => this.poll(), this.#backstopMs);
    this.#timer.unref();
  }

  /** Reads what is new now (also called once more at the end, so nothing written last is missed). */
  poll(): void {
    let fd: number;
    try {
      fd = openSync(this.#path, 'r');
    } catch {
      return; // Not created yet.
    }
    this.#watch();
    try {
      for (;;) {
        const n = readSync(fd, this.#buffer, 0, this.#buffer.length, this.#position);
        if (n <= 0) break;
        this.#position += n;
        for (const line of this.#lines.push(this.#buffer.subarray(0, n))) {
          const record = statusFromConsoleLine(line);
          if (!record) continue;
          const seen = { record, seenAt: performance.now() };
          this.records.push(seen);
          this.#onRecord(seen);
        }
      }
    } finally {
      closeSync(fd);
    }
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#watcher?.close();
    this.#watcher = undefined;
    this.poll();
  }
}
