/**
 * Docker's multiplexed stream, used by attach, logs and exec when the container has no tty:
 *
 *   offset 0  u8      stream type: 0 stdin, 1 stdout, 2 stderr
 *          1  u8[3]   zero
 *          4  u32 BE  payload size
 *          8  ...     payload
 *
 * Also the time formats `docker logs` uses: `-t` prints RFC 3339 with nine fractional digits in UTC, and
 * `--since` / `--until` reach the API as Unix seconds with up to nine fractional digits.
 */
import { TetherError } from '../../../../protocol/src/errors/errors.ts';

export const DOCKER_STDIN = 0;
export const DOCKER_STDOUT = 1;
export const DOCKER_STDERR = 2;
export type DockerStreamType = typeof DOCKER_STDIN | typeof DOCKER_STDOUT | typeof DOCKER_STDERR;
export const DOCKER_HEADER_BYTES = 8;

export interface DockerFrame {
  stream: DockerStreamType;
  data: Buffer;
}

export function encodeDockerFrame(stream: DockerStreamType, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(DOCKER_HEADER_BYTES + payload.length);
  out.writeUInt32BE(0, 0);
  out.writeUInt8(stream, 0);
  out.writeUInt32BE(payload.length, 4);
  out.set(payload, DOCKER_HEADER_BYTES);
  return out;
}

/** Incremental decoder: push() any chunk, get every whole frame (payloads are copies). */
export class DockerFrameDecoder {
  #pending: Buffer = Buffer.alloc(0);

  push(chunk: Uint8Array): DockerFrame[] {
    this.#pending = this.#pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#pending, chunk]);
    const frames: DockerFrame[] = [];
    let at = 0;
    while (this.#pending.length - at >= DOCKER_HEADER_BYTES) {
      const stream = this.#pending.readUInt8(at);
      if (stream > DOCKER_STDERR || this.#pending.readUIntBE(at + 1, 3) !== 0) {
        throw new TetherError(
          'TETHER_FRAME_INVALID',
          `docker stream: bad header ${this.#pending.subarray(at, at + 4).toString('hex')} at byte ${at}`,
        );
      }
      const size = this.#pending.readUInt32BE(at + 4);
      if (this.#pending.length - at - DOCKER_HEADER_BYTES < size) break;
      const start = at + DOCKER_HEADER_BYTES;
      frames.push({
        stream: stream as DockerStreamType,
        data: Buffer.from(this.#pending.subarray(start, start + size)),
      });
      at = start + size;
    }
    this.#pending = this.#pending.subarray(at);
    return frames;
  }

  get pendingBytes(): number {
    return this.#pending.length;
  }

  /** Throws when the stream ended inside a frame. */
  end(): void {
    if (this.#pending.length > 0) {
      throw new TetherError(
        'TETHER_FRAME_TRUNCATED',
        `docker stream ended inside a frame (${this.#pending.length} bytes left)`,
      );
    }
  }
}

/**
 * A timestamp as `docker logs -t` prints it (Go's RFC3339NanoFixed in UTC), e.g.
 * `2024-12-03T07:52:25.123456789Z`. The sub-millisecond digits come from the fraction of `ms`.
 */
export function formatDockerTimestamp(ms: number): string {
  let whole = Math.floor(ms);
  let nanos = Math.round((ms - whole) * 1e6);
  if (nanos >= 1e6) {
    whole += 1;
    nanos -= 1e6;
  }
  const iso = new Date(whole).toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  const millis = iso.slice(20, 23);
  return `${iso.slice(0, 19)}.${millis}${String(nanos).padStart(6, '0')}Z`;
}

const UNIX_TIME = /^(-?\d+)(?:\.(\d{1,9}))?$/;
const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|z|[+-]\d{2}:?\d{2})?)?$/;
const DURATION_PART = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g;
const DURATION_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * A `since` / `until` query value as milliseconds since the Unix epoch. The docker CLI sends Unix seconds
 * with up to nine fractional digits (`1733212345.123456789`); also accepted: integer seconds, RFC 3339
 * (`2024-12-03T07:52:25.5Z`, an offset, or no zone meaning UTC; a bare date), and a Go duration
 * (`10m`, `1h30m`) meaning that long before `now`.
 */
export function parseDockerTime(value: string, now: number = Date.now()): number {
  const text = value.trim();
  const unix = UNIX_TIME.exec(text);
  if (unix) {
    const sign = unix[1]!.startsWith('-') ? -1 : 1;
    const fraction = unix[2] ? Number(unix[2].padEnd(9, '0')) / 1e6 : 0;
    return sign * (Math.abs(Number(unix[1])) * 1000 + fraction);
  }
  const date = RFC3339.exec(text);
  if (date) {
    const [, y, mo, d, h = '0', mi = '0', s = '0', frac, zone] = date;
    let ms = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
    if (frac) ms += Number(frac.padEnd(9, '0')) / 1e6;
    if (zone && zone !== 'Z' && zone !== 'z') {
      const sign = zone.startsWith('-') ? -1 : 1;
      const digits = zone.slice(1).replace(':', '');
      ms -= sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2))) * 60_000;
    }
    if (Number.isFinite(ms) && Number(mo) >= 1 && Number(mo) <= 12) return ms;
  }
  if (text.length > 0 && text.replace(DURATION_PART, '') === '') {
    let total = 0;
    for (const match of text.matchAll(DURATION_PART)) total += Number(match[1]) * DURATION_MS[match[2]!]!;
    return now - total;
  }
  throw new TetherError(
    'TETHER_REQUEST_INVALID',
    `log time ${JSON.stringify(value)}: expected Unix seconds (1733212345.123456789), RFC 3339 or a duration (10m)`,
  );
}
