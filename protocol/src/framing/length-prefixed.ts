/**
 * Length-prefixed framing shared by the status and request codecs: a u32 big-endian byte count, then that
 * many bytes. The decoder is incremental: push() takes any chunk and returns every whole frame it completes.
 */
import { TetherError } from '../errors/errors.ts';

export const MAX_FRAME_BYTES = 1 << 20;

export function encodeLengthPrefixed(body: Uint8Array): Buffer {
  if (body.length > MAX_FRAME_BYTES) {
    throw new TetherError(
      'TETHER_FRAME_TOO_LARGE',
      `frame of ${body.length} bytes exceeds ${MAX_FRAME_BYTES}`,
    );
  }
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.set(body, 4);
  return out;
}

export class LengthPrefixedDecoder {
  #pending: Buffer = Buffer.alloc(0);
  readonly #maxBytes: number;

  constructor(maxBytes = MAX_FRAME_BYTES) {
    this.#maxBytes = maxBytes;
  }

  /** Whole frame bodies completed by this chunk; throws TETHER_FRAME_TOO_LARGE on an impossible length. */
  push(chunk: Uint8Array): Buffer[] {
    this.#pending = this.#pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#pending, chunk]);
    const bodies: Buffer[] = [];
    let at = 0;
    while (this.#pending.length - at >= 4) {
      const length = this.#pending.readUInt32BE(at);
      if (length > this.#maxBytes) {
        throw new TetherError(
          'TETHER_FRAME_TOO_LARGE',
          `frame announces ${length} bytes, limit is ${this.#maxBytes}`,
        );
      }
      if (this.#pending.length - at - 4 < length) break;
      bodies.push(this.#pending.subarray(at + 4, at + 4 + length));
      at += 4 + length;
    }
    this.#pending = this.#pending.subarray(at);
    return bodies;
  }

  /** Bytes held back waiting for the rest of a frame. */
  get pendingBytes(): number {
    return this.#pending.length;
  }

  /** Call at end of stream: a partial frame left over means the peer was cut off mid-frame. */
  end(): void {
    if (this.#pending.length > 0) {
      throw new TetherError(
        'TETHER_FRAME_TRUNCATED',
        `stream ended inside a frame (${this.#pending.length} bytes left)`,
      );
    }
  }
}

/**
 * Collects bytes until one whole frame has arrived, for streams where a single frame (a request's
 * parameters or reply) precedes bytes of another kind. push() returns the frame body and everything after
 * it once complete, undefined until then.
 */
export class FirstFrameReader {
  #pending: Buffer = Buffer.alloc(0);
  readonly #maxBytes: number;

  constructor(maxBytes = MAX_FRAME_BYTES) {
    this.#maxBytes = maxBytes;
  }

  push(chunk: Uint8Array): { body: Buffer; rest: Buffer } | undefined {
    this.#pending = this.#pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#pending, chunk]);
    if (this.#pending.length < 4) return undefined;
    const length = this.#pending.readUInt32BE(0);
    if (length > this.#maxBytes) {
      throw new TetherError(
        'TETHER_FRAME_TOO_LARGE',
        `frame announces ${length} bytes, limit is ${this.#maxBytes}`,
      );
    }
    if (this.#pending.length < 4 + length) return undefined;
    return { body: this.#pending.subarray(4, 4 + length), rest: this.#pending.subarray(4 + length) };
  }
}
