/**
 * Pure: one stream's bytes cut into lines the way Docker's json-file driver stores them. A line keeps its
 * `\n`; a line longer than MAX_LINE_BYTES is cut into pieces of that size (Docker's copier does the same
 * with its 16 KiB buffer, storing each piece as a partial message), which also bounds what is held.
 */
export const MAX_LINE_BYTES = 16 * 1024;

export class LineSplitter {
  readonly #maxLineBytes: number;
  #parts: Buffer[] = [];
  #bytes = 0;

  constructor(maxLineBytes = MAX_LINE_BYTES) {
    this.#maxLineBytes = maxLineBytes;
  }

  /** The lines completed by `data` (views into it when a line lies inside it, copies otherwise). */
  push(data: Buffer): Buffer[] {
    const lines: Buffer[] = [];
    let from = 0;
    while (from < data.length) {
      const room = this.#maxLineBytes - this.#bytes;
      const newline = data.indexOf(0x0a, from);
      const end = newline === -1 ? data.length : newline + 1;
      if (end - from <= room && newline !== -1) {
        lines.push(this.#take(data.subarray(from, end)));
      } else if (end - from < room) {
        this.#parts.push(data.subarray(from, end));
        this.#bytes += end - from;
      } else {
        // The line reaches the size limit: the first `room` bytes make a piece of their own.
        lines.push(this.#take(data.subarray(from, from + room)));
        from += room;
        continue;
      }
      from = end;
    }
    return lines;
  }

  /** The partial line held, if any (end of a read, or a boot that ended without a final newline). */
  flush(): Buffer | undefined {
    if (this.#bytes === 0) return undefined;
    return this.#take(Buffer.alloc(0));
  }

  get pendingBytes(): number {
    return this.#bytes;
  }

  #take(last: Buffer): Buffer {
    if (this.#parts.length === 0) return last;
    const line = Buffer.concat([...this.#parts, last]);
    this.#parts = [];
    this.#bytes = 0;
    return line;
  }
}
