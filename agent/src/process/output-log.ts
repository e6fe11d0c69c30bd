/**
 * The main process's output, kept so that attach clients can come and go and resume from an offset.
 *
 * Offsets count payload bytes since the process started (stdout and stderr interleaved in arrival
 * order). The log is bounded, and nothing is dropped silently. Every reader keeps its own offset; the
 * log keeps no per-reader state except for holds:
 * - A hold (hold()) is a reader that must never skip: the log port, whose file on the host is what
 *   `docker logs` reads. While any hold is open, a byte leaves the log only once every hold released it,
 *   whatever the other readers did.
 * - Without a hold, a byte leaves the log once at least one reader took it (read(), or acknowledge()
 *   after peek()).
 * When the log is full of bytes that may not leave yet, append() returns false and the caller pauses the
 * process's output (it blocks in write()) until 'drain'; so the log holds at most its capacity plus the
 * one append that found it full. A reader that falls so far behind that its bytes were evicted learns
 * the exact gap: `oldest` says where the log now starts.
 */
import { EventEmitter } from 'node:events';
import type { StreamId } from '../../../protocol/src/logs/log-frame.ts';

export interface OutputChunk {
  offset: number;
  stream: StreamId;
  timestampMs: number;
  data: Buffer;
}

/**
 * A reader that must never skip (see hold()). It reads with peek() from its own offset and calls
 * release() with the offset up to which it has taken everything.
 */
export interface OutputHold {
  /** Offset up to which this reader has taken everything; the log may evict below it. */
  readonly offset: number;
  /** Everything below `offset` is taken (offsets only move forward; a smaller one is ignored). */
  release(offset: number): void;
  /** This reader is gone: the log no longer keeps bytes for it. */
  close(): void;
}

export class OutputLog extends EventEmitter<{ data: []; drain: []; end: [] }> {
  readonly capacityBytes: number;
  #chunks: OutputChunk[] = [];
  #oldest = 0;
  #end = 0;
  #delivered = 0;
  #ended = false;
  #full = false;
  readonly #holds = new Set<{ offset: number }>();

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
   * delivery: unless a hold keeps them, the bytes returned may now be evicted. Same as peek() followed by
   * acknowledge() of the end of what it returned.
   */
  read(offset: number, maxBytes = Number.POSITIVE_INFINITY): OutputChunk[] {
    const out = this.peek(offset, maxBytes);
    const last = out.at(-1);
    if (last) this.acknowledge(last.offset + last.data.length);
    return out;
  }

  /**
   * Chunks from `offset` on (from `oldest` when `offset` is older), at most `maxBytes` of payload (a chunk
   * may be split). Delivers nothing: a reader that may stop part-way (a full channel) peeks, writes what
   * it can, then acknowledges what went out.
   */
  peek(offset: number, maxBytes = Number.POSITIVE_INFINITY): OutputChunk[] {
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
    return out;
  }

  /** A reader took every byte below `offset`: without a hold, those bytes may now be evicted. */
  acknowledge(offset: number): void {
    if (offset <= this.#delivered) return;
    this.#delivered = Math.min(offset, this.#end);
    this.#release();
  }

  /**
   * Opens a hold at `oldest`: until it is released or closed, the log evicts none of the bytes from
   * there on, and a full log pauses the process rather than lose them.
   */
  hold(): OutputHold {
    const state = { offset: this.#oldest };
    this.#holds.add(state);
    return {
      get offset(): number {
        return state.offset;
      },
      release: (offset: number): void => {
        if (!this.#holds.has(state) || offset <= state.offset) return;
        state.offset = Math.min(offset, this.#end);
        this.#release();
      },
      close: (): void => {
        if (this.#holds.delete(state)) this.#release();
      },
    };
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

  /** Offset below which bytes may leave: what every hold released, or without holds what any reader took. */
  #evictable(): number {
    if (this.#holds.size === 0) return this.#delivered;
    let low = Number.POSITIVE_INFINITY;
    for (const hold of this.#holds) low = Math.min(low, hold.offset);
    return low;
  }

  #release(): void {
    this.#evict();
    if (this.#full && this.keptBytes <= this.capacityBytes) {
      this.#full = false;
      this.emit('drain');
    }
  }

  #evict(): void {
    const evictable = this.#evictable();
    while (this.keptBytes > this.capacityBytes && this.#chunks.length > 0) {
      const first = this.#chunks[0]!;
      const firstEnd = first.offset + first.data.length;
      if (firstEnd > evictable) break;
      this.#chunks.shift();
      this.#oldest = firstEnd;
    }
  }
}
