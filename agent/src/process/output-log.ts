/**
 * The main process's output, kept so that attach clients can come and go and resume from an offset.
 *
 * Offsets count payload bytes since the process started (stdout and stderr interleaved in arrival
 * order). The log is bounded, and nothing is dropped silently: a byte leaves the log only after at
 * least one reader (an attach client, or the log port that the hypervisor writes to a file) has taken
 * it. When the log is full of bytes nobody has taken yet, append() returns false and the caller pauses
 * the process's output (it blocks in write()) until 'drain'. A reader that falls so far behind that its
 * bytes were evicted learns the exact gap: `oldest` says where the log now starts.
 */
import { EventEmitter } from 'node:events';
import type { StreamId } from '../../../protocol/src/logs/log-frame.ts';

export interface OutputChunk {
  offset: number;
  stream: StreamId;
  timestampMs: number;
  data: Buffer;
}

export class OutputLog extends EventEmitter<{ data: []; drain: []; end: [] }> {
  readonly capacityBytes: number;
  #chunks: OutputChunk[] = [];
  #oldest = 0;
  #end = 0;
  #delivered = 0;
  #ended = false;
  #full = false;

  constructor(capacityBytes: number) {
    super();
    this.capacityBytes = capacityBytes;
  }

  /** Offset of the oldest byte still kept. */
  get oldest(): number {
    return this.#oldest;
  }

  /** Offset just past the newest byte. */
  get end(): number {
    return this.#end;
  }

  get ended(): boolean {
    return this.#ended;
  }

  get keptBytes(): number {
    return this.#end - this.#oldest;
  }

  /** Adds output; false means "full of unread bytes: pause the source until 'drain'". */
  append(stream: StreamId, data: Buffer, timestampMs = Date.now()): boolean {
    if (data.length > 0) {
      this.#chunks.push({ offset: this.#end, stream, timestampMs, data });
      this.#end += data.length;
      this.#evict();
      this.emit('data');
    }
    this.#full = this.keptBytes > this.capacityBytes;
    return !this.#full;
  }

  /** No more output will come (the process's stdout and stderr closed). */
  close(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.emit('end');
  }

  /**
   * Chunks from `offset` on, at most `maxBytes` of payload (a chunk may be split). Reading counts as
   * delivery: the bytes returned may now be evicted.
   */
  read(offset: number, maxBytes = Number.POSITIVE_INFINITY): OutputChunk[] {
    const from = Math.max(offset, this.#oldest);
    const out: OutputChunk[] = [];
    let budget = maxBytes;
    let index = this.#indexOf(from);
    while (index < this.#chunks.length && budget > 0) {
      const chunk = this.#chunks[index]!;
      const skip = Math.max(0, from - chunk.offset);
      const take = Math.min(chunk.data.length - skip, budget);
      out.push({ ...chunk, offset: chunk.offset + skip, data: chunk.data.subarray(skip, skip + take) });
      budget -= take;
      index++;
    }
    const last = out.at(-1);
    if (last) this.#markDelivered(last.offset + last.data.length);
    return out;
  }

  #indexOf(offset: number): number {
    // Binary search: the log may hold many small chunks and readers call this on every wake-up.
    let low = 0;
    let high = this.#chunks.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      const chunk = this.#chunks[mid]!;
      if (chunk.offset + chunk.data.length <= offset) low = mid + 1;
      else high = mid;
    }
    return low;
  }

  #markDelivered(offset: number): void {
    if (offset <= this.#delivered) return;
    this.#delivered = offset;
    this.#evict();
    if (this.#full && this.keptBytes <= this.capacityBytes) {
      this.#full = false;
      this.emit('drain');
    }
  }

  #evict(): void {
    while (this.keptBytes > this.capacityBytes && this.#chunks.length > 0) {
      const first = this.#chunks[0]!;
      const firstEnd = first.offset + first.data.length;
      if (firstEnd > this.#delivered) break;
      this.#chunks.shift();
      this.#oldest = firstEnd;
    }
  }
}
