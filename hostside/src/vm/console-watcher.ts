/**
 * Follows a VM's console file as the hypervisor writes it and reports each status record with the host
 * time it was seen. Polls: the file grows through QEMU's writes, which inotify would also see, but polling
 * works the same on any filesystem and for a driver whose console is fetched from elsewhere.
 */
import { closeSync, openSync, readSync } from 'node:fs';
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

  constructor(path: string, onRecord: (seen: SeenRecord) => void = () => {}, intervalMs = 50) {
    this.#path = path;
    this.#onRecord = onRecord;
    this.#timer = setInterval(() => this.poll(), intervalMs);
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
    this.poll();
  }
}
