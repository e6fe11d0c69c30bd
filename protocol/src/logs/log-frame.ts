/**
 * Log frames: the main process's output as (stream, timestamp, bytes). Used on the log port, which the
 * hypervisor backs with a file on the host, and on attach channels.
 *
 *   offset 0  u8   magic 0x7e
 *          1  u8   stream: 1 stdout, 2 stderr
 *          2  u32  payload length (at most MAX_LOG_PAYLOAD)
 *          6  f64  timestamp, milliseconds since the Unix epoch (sub-ms precision kept)
 *         14  ...  payload
 *
 * The magic byte lets a reader of a damaged file notice that it is not at a frame boundary.
 */
import { TetherError } from '../errors/errors.ts';

export const LOG_FRAME_MAGIC = 0x7e;
export const LOG_HEADER_BYTES = 14;
export const MAX_LOG_PAYLOAD = 1 << 20;

export const STREAM_STDOUT = 1;
export const STREAM_STDERR = 2;
export type StreamId = typeof STREAM_STDOUT | typeof STREAM_STDERR;

export interface LogFrame {
  stream: StreamId;
  timestampMs: number;
  data: Buffer;
}

export function encodeLogFrameHeader(stream: StreamId, timestampMs: number, payloadBytes: number): Buffer {
  if (payloadBytes > MAX_LOG_PAYLOAD) {
    throw new TetherError(
      'TETHER_FRAME_TOO_LARGE',
      `log payload of ${payloadBytes} bytes exceeds ${MAX_LOG_PAYLOAD}`,
    );
  }
  // Refuse what LogFrameDecoder refuses: one such frame would make the rest of a log file unreadable.
  if (stream !== STREAM_STDOUT && stream !== STREAM_STDERR) {
    throw new TetherError('TETHER_FRAME_INVALID', `log frame: unknown stream ${String(stream)}`);
  }
  if (!Number.isFinite(timestampMs))
    throw new TetherError('TETHER_FRAME_INVALID', 'log frame: timestamp is not finite');
  const header = Buffer.allocUnsafe(LOG_HEADER_BYTES);
  header.writeUInt8(LOG_FRAME_MAGIC, 0);
  header.writeUInt8(stream, 1);
  header.writeUInt32BE(payloadBytes, 2);
  header.writeDoubleBE(timestampMs, 6);
  return header;
}

export function encodeLogFrame(frame: LogFrame): Buffer {
  return Buffer.concat([
    encodeLogFrameHeader(frame.stream, frame.timestampMs, frame.data.length),
    frame.data,
  ]);
}

/** Incremental decoder: push() any chunk, get every whole frame. Payloads are copies, safe to keep. */
export class LogFrameDecoder {
  #pending: Buffer = Buffer.alloc(0);

  push(chunk: Uint8Array): LogFrame[] {
    this.#pending = this.#pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#pending, chunk]);
    const frames: LogFrame[] = [];
    let at = 0;
    while (this.#pending.length - at >= LOG_HEADER_BYTES) {
      const magic = this.#pending.readUInt8(at);
      if (magic !== LOG_FRAME_MAGIC) {
        throw new TetherError(
          'TETHER_FRAME_INVALID',
          `log frame: bad magic 0x${magic.toString(16)} at byte ${at}`,
        );
      }
      const stream = this.#pending.readUInt8(at + 1);
      if (stream !== STREAM_STDOUT && stream !== STREAM_STDERR) {
        throw new TetherError('TETHER_FRAME_INVALID', `log frame: unknown stream ${stream}`);
      }
      const length = this.#pending.readUInt32BE(at + 2);
      if (length > MAX_LOG_PAYLOAD) {
        throw new TetherError(
          'TETHER_FRAME_TOO_LARGE',
          `log frame announces ${length} bytes, limit is ${MAX_LOG_PAYLOAD}`,
        );
      }
      const timestampMs = this.#pending.readDoubleBE(at + 6);
      if (!Number.isFinite(timestampMs))
        throw new TetherError('TETHER_FRAME_INVALID', 'log frame: timestamp is not finite');
      if (this.#pending.length - at - LOG_HEADER_BYTES < length) break;
      const start = at + LOG_HEADER_BYTES;
      frames.push({ stream, timestampMs, data: Buffer.from(this.#pending.subarray(start, start + length)) });
      at = start + length;
    }
    this.#pending = this.#pending.subarray(at);
    return frames;
  }

  get pendingBytes(): number {
    return this.#pending.length;
  }

  end(): void {
    if (this.#pending.length > 0) {
      throw new TetherError(
        'TETHER_FRAME_TRUNCATED',
        `log stream ended inside a frame (${this.#pending.length} bytes left)`,
      );
    }
  }
}
