/**
 * Follows a VM's console file as the hypervisor writes it and reports each status record the host believes
 * (signed with the boot's status key, see ConsoleStatusReader) with the host time it was seen. Woken by inotify (fs.watch) once the file exists, with a slow poll as a backstop for
 * filesystems without it; until the file exists, a fast poll. A daemon with many idle VMs then costs
 * nothing per VM between writes.
 */
import { closeSync, openSync, readSync, watch, type FSWatcher } from 'node:fs';
import type { StatusRecord } from '../../../protocol/src/status/status.ts';
import { ConsoleStatusReader, LineSplitter, type DroppedStatusLine } from './console-status.ts';

export interface SeenRecord {
  record: StatusRecord;
  /** performance.now() when the host read it. */
  seenAt: number;
}

export interface ConsoleWatcherOptions {
  /** The key in this boot's config; undefined only for a VM whose config had none (ConsoleStatusReader). */
  statusKey: Uint8Array | undefined;
  onRecord?: (seen: SeenRecord) => void;
  /** A status line not believed: forged, replayed, unsigned, or cut short. */
  onDropped?: (dropped: DroppedStatusLine) => void;
  /** The poll until the file exists (ms). */
  intervalMs?: number;
  /** The poll once inotify watches the file, in case it misses a write (ms). */
  backstopMs?: number;
}

export class ConsoleWatcher {
  readonly #path: string;
  readonly #onRecord: (seen: SeenRecord) => void;
  readonly #lines = new LineSplitter();
  readonly #reader: ConsoleStatusReader;
  readonly #buffer = Buffer.allocUnsafe(64 * 1024);
  readonly records: SeenRecord[] = [];
  #position = 0;
  #timer: NodeJS.Timeout | undefined;
  #watcher: FSWatcher | undefined;
  readonly #backstopMs: number;

  constructor(path: string, options: ConsoleWatcherOptions) {
    this.#path = path;
    this.#onRecord = options.onRecord ?? (() => {});
    this.#reader = new ConsoleStatusReader(options.statusKey, options.onDropped);
    this.#backstopMs = options.backstopMs ?? 1000;
    this.#timer = setInterval(() => this.poll(), options.intervalMs ?? 50);
    this.#timer.unref();
    this.#watch();
  }

  /** Status lines seen and not believed so far. */
  get dropped(): number {
    return this.#reader.dropped;
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
          const record = this.#reader.read(line);
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
