/**
 * Pure helpers to walk log frames (protocol/src/logs/log-frame.ts) in a file read by chunks, without
 * copying payloads: a frame's data is a view into the chunk that held it, so callers hand over chunks
 * they never reuse. Shared by the reader (decode), the store (find a frame boundary at rotation) and
 * the rotation driver.
 */
import {
  LOG_FRAME_MAGIC,
  LOG_HEADER_BYTES,
  MAX_LOG_PAYLOAD,
  type LogFrame,
  type StreamId,
} from '../../../../protocol/src/logs/log-frame.ts';

export interface FrameHeader {
  stream: StreamId;
  timestampMs: number;
  length: number;
}

/**
 * The header at `at`: a header, 'short' when fewer than LOG_HEADER_BYTES remain, or 'invalid' when
 * those bytes cannot start a frame (bad magic, unknown stream, oversized, timestamp not finite).
 */
export function headerAt(buf: Buffer, at: number): FrameHeader | 'short' | 'invalid' {
  if (buf.length - at < LOG_HEADER_BYTES) {
    // A partial header can still be told invalid by what it has.
    if (at < buf.length && buf[at] !== LOG_FRAME_MAGIC) return 'invalid';
    if (at + 1 < buf.length && buf[at + 1] !== 1 && buf[at + 1] !== 2) return 'invalid';
    return 'short';
  }
  if (buf[at] !== LOG_FRAME_MAGIC) return 'invalid';
  const stream = buf[at + 1];
  if (stream !== 1 && stream !== 2) return 'invalid';
  const length = buf.readUInt32BE(at + 2);
  if (length > MAX_LOG_PAYLOAD) return 'invalid';
  const timestampMs = buf.readDoubleBE(at + 6);
  if (!Number.isFinite(timestampMs)) return 'invalid';
  return { stream, timestampMs, length };
}

export interface WalkResult {
  /** Whole frames, payloads viewing `buf`. */
  frames: LogFrame[];
  /** Offset in `buf` of the first byte not consumed (the start of a partial frame, or buf.length). */
  consumed: number;
  /** Bytes skipped over because they could not start a frame (damage); 0 in a healthy file. */
  skipped: number;
}

/**
 * Walks the frames in `buf` from its start. Damaged bytes are skipped up to the next offset where a
 * valid header begins, so one bad frame does not make the rest of a log unreadable.
 */
export function walkFrames(buf: Buffer, maxFrames = Infinity): WalkResult {
  const frames: LogFrame[] = [];
  let at = 0;
  let skipped = 0;
  while (at < buf.length && frames.length < maxFrames) {
    const header = headerAt(buf, at);
    if (header === 'short') break;
    if (header === 'invalid') {
      const next = resyncFrom(buf, at + 1);
      skipped += next - at;
      at = next;
      continue;
    }
    const end = at + LOG_HEADER_BYTES + header.length;
    if (end > buf.length) break;
    frames.push({
      stream: header.stream,
      timestampMs: header.timestampMs,
      data: buf.subarray(at + LOG_HEADER_BYTES, end),
    });
    at = end;
  }
  return { frames, consumed: at, skipped };
}

/** The first offset ≥ from where a header could begin (a valid or still-short header), else buf.length. */
export function resyncFrom(buf: Buffer, from: number): number {
  for (let at = buf.indexOf(LOG_FRAME_MAGIC, from); at !== -1; at = buf.indexOf(LOG_FRAME_MAGIC, at + 1)) {
    if (headerAt(buf, at) !== 'invalid') return at;
  }
  return buf.length;
}

/**
 * Tracks frame boundaries through a byte stream fed in pieces, looking only at headers: after feeding
 * a file from a known boundary, `carry` says how many bytes of the next file belong to the frame that
 * straddles the end (0 when the file ends on a boundary), or `carry` is undefined while the end holds a
 * partial header (feed the next file's first bytes to learn it).
 */
export class BoundaryTracker {
  /** Bytes still to pass before the next header. */
  #toSkip: number;
  /** A header cut by the end of a piece. */
  #partial: Buffer = Buffer.alloc(0);
  /** Bytes passed so far, and where the last frame (or the stream, at the initial skip) began. */
  #position = 0;
  #lastFrameAt: number;

  constructor(initialSkip = 0) {
    this.#toSkip = initialSkip;
    this.#lastFrameAt = initialSkip;
  }

  /** Feeds the next bytes of the stream. */
  feed(bytes: Buffer): void {
    let at = 0;
    while (at < bytes.length) {
      if (this.#toSkip > 0) {
        const n = Math.min(this.#toSkip, bytes.length - at);
        this.#toSkip -= n;
        at += n;
        continue;
      }
      if (this.#partial.length === 0) this.#lastFrameAt = this.#position + at;
      const need = LOG_HEADER_BYTES - this.#partial.length;
      const piece = bytes.subarray(at, at + need);
      const header = Buffer.concat([this.#partial, piece]);
      at += piece.length;
      if (header.length < LOG_HEADER_BYTES) {
        this.#partial = header;
        break;
      }
      this.#partial = Buffer.alloc(0);
      const parsed = headerAt(header, 0);
      // A damaged header: the reader resyncs on its own; count it as a boundary here.
      this.#toSkip = typeof parsed === 'object' ? parsed.length : 0;
    }
    this.#position += bytes.length;
  }

  /** Bytes that can be passed without looking at them (inside a payload). */
  get pendingSkip(): number {
    return this.#toSkip;
  }

  /** Passes `n` ≤ pendingSkip bytes unseen. */
  advance(n: number): void {
    this.#toSkip -= n;
    this.#position += n;
  }

  /** Bytes of the following data before the next frame boundary; undefined inside a partial header. */
  get carry(): number | undefined {
    return this.#partial.length > 0 ? undefined : this.#toSkip;
  }

  /** The header bytes held when `carry` is undefined. */
  get partialHeaderBytes(): number {
    return this.#partial.length;
  }

  /** The last frame boundary at or before the bytes passed so far. */
  get lastBoundary(): number {
    return this.carry === 0 ? this.#position : this.#lastFrameAt;
  }
}
