/**
 * Counts the payload bytes in the complete log frames of a file that is still growing (the file QEMU
 * writes the log port into), reading only the frame headers and only what is new since the last call.
 */
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { LOG_FRAME_MAGIC, LOG_HEADER_BYTES } from '../../protocol/src/logs/log-frame.ts';

export class LogFileCounter {
  #at = 0;
  #payload = 0;
  /** Set when the framing is broken (a lost or doubled byte): where and how. */
  broken: string | undefined;
  readonly #header = Buffer.alloc(LOG_HEADER_BYTES);

  constructor(readonly path: string) {}

  /** Payload bytes in whole frames so far. */
  update(): number {
    if (this.broken !== undefined || !existsSync(this.path)) return this.#payload;
    const size = statSync(this.path).size;
    if (this.#at + LOG_HEADER_BYTES > size) return this.#payload;
    const fd = openSync(this.path, 'r');
    try {
      while (this.#at + LOG_HEADER_BYTES <= size) {
        readSync(fd, this.#header, 0, LOG_HEADER_BYTES, this.#at);
        if (this.#header[0] !== LOG_FRAME_MAGIC) {
          this.broken = `no frame magic at offset ${this.#at}`;
          break;
        }
        const length = this.#header.readUInt32BE(2);
        if (this.#at + LOG_HEADER_BYTES + length > size) break;
        this.#at += LOG_HEADER_BYTES + length;
        this.#payload += length;
      }
    } finally {
      closeSync(fd);
    }
    return this.#payload;
  }
}
