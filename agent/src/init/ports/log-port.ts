/**
 * The main process's output, framed (stream, timestamp, bytes) onto the log port, which the hypervisor
 * backs with a file on the host: `docker logs` reads that file, so output survives tetherd being away.
 *
 * The writer is the one reader of the OutputLog that never skips: it holds the log (OutputLog.hold()),
 * which evicts only what the writer released, so a slow or absent port pauses the process instead of
 * losing output. It keeps its own offset, and releases a frame's bytes only once the whole frame is on the
 * port. The frame being written is kept as "what is left of it": after a short write, an error or EAGAIN
 * the next write starts exactly there, so a frame is never cut short nor sent twice, and the host's file
 * stays a clean sequence of frames.
 *
 * A port with no host behind it (poll says POLLHUP or POLLERR, or a write fails with EPIPE, ENXIO, EIO…)
 * is waited on with a timer that backs off to RETRY_MAX_MS, never spun on.
 */
import { describeError } from '../../../../protocol/src/errors/errors.ts';
import { encodeLogFrameHeader, MAX_LOG_PAYLOAD } from '../../../../protocol/src/logs/log-frame.ts';
import type { OutputHold, OutputLog } from '../../process/output-log.ts';
import { SYS } from '../../sys/sys.ts';

/**
 * Where the frames go: the virtio-serial log port in a VM (SerialPort), a plain file in --dev mode
 * (LogFile). writeNow takes what it can at once and says how much (0 when full), or throws when the port
 * failed; waitWritable waits for room and may resolve with poll(2) revents, where POLLHUP or POLLERR
 * mean that no host is behind the port.
 */
export interface LogSink {
  readonly path: string;
  writeNow(bytes: Buffer): number;
  waitWritable(): Promise<unknown>;
}

export interface LogPortWriterOptions {
  /** First wait after a failure or a hang-up; doubles up to retryMaxMs while it lasts. */
  retryMs?: number;
  retryMaxMs?: number;
  /** The timer (tests pass a fake). */
  sleep?: (ms: number) => Promise<void>;
}

/** Payload bytes per frame: small enough that a frame's remainder stays a modest copy-free view. */
const FRAME_PAYLOAD_BYTES = Math.min(256 * 1024, MAX_LOG_PAYLOAD);
const RETRY_MS = 50;
const RETRY_MAX_MS = 1000;

/** The frame on its way out: what is left of its header and payload, and the log offset it ends at. */
interface Outgoing {
  parts: Buffer[];
  end: number;
  payloadBytes: number;
}

const defaultSleep = (ms: number): Promise<void> =>
  new Promise((resolve) => {
    setTimeout(resolve, ms);
  });

export class LogPortWriter {
  readonly #log: OutputLog;
  readonly #port: LogSink;
  readonly #report: (message: string) => void;
  readonly #retryMs: number;
  readonly #retryMaxMs: number;
  readonly #sleep: (ms: number) => Promise<void>;
  #hold: OutputHold | undefined;
  #offset = 0;
  #frame: Outgoing | undefined;
  #running = false;
  #written = 0;
  #flushed: (() => void)[] = [];
  /** The current wait after failures (0: none yet). */
  #delay = 0;
  /** The port took nothing after a wait that said it could. */
  #stalled = false;
  /** Set while the port is failing or has no host: the first message of an outage, to report its end. */
  #outage: string | undefined;

  constructor(
    log: OutputLog,
    port: LogSink,
    report: (message: string) => void,
    options: LogPortWriterOptions = {},
  ) {
    this.#log = log;
    this.#port = port;
    this.#report = report;
    this.#retryMs = options.retryMs ?? RETRY_MS;
    this.#retryMaxMs = options.retryMaxMs ?? RETRY_MAX_MS;
    this.#sleep = options.sleep ?? defaultSleep;
  }

  /** Payload bytes that are on the port in whole frames. */
  get bytesWritten(): number {
    return this.#written;
  }

  /** Log offset up to which every byte is on the port. */
  get offset(): number {
    return this.#offset;
  }

  start(): void {
    if (this.#hold) return;
    this.#hold = this.#log.hold();
    this.#offset = this.#hold.offset;
    if (this.#offset > 0) {
      this.#report(
        `log port ${this.#port.path}: output 0..${this.#offset} was evicted before the port opened`,
      );
    }
    this.#log.on('data', this.#wake);
    this.#log.on('end', this.#wake);
    this.#wake();
  }

  /** Resolves once every byte the log holds (up to its end) is on the port, or after `timeoutMs`. */
  flushed(timeoutMs: number): Promise<boolean> {
    if (this.#idle()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.#flushed.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  readonly #wake = (): void => void this.#pump();

  #idle(): boolean {
    return !this.#running && this.#frame === undefined && this.#offset >= this.#log.end;
  }

  async #pump(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      for (;;) {
        const frame = this.#frame ?? this.#next();
        if (!frame) break;
        this.#frame = frame;
        const part = frame.parts[0]!;
        let taken: number;
        try {
          taken = this.#port.writeNow(part);
        } catch (error) {
          // The remainder of the frame stays as it is: the next write starts exactly where this one stopped.
          await this.#backOff(describeError(error));
          continue;
        }
        if (taken > 0) {
          this.#progress(frame, part, taken);
          continue;
        }
        const revents = await this.#port.waitWritable();
        const polled = typeof revents === 'number';
        if (polled && (revents & (SYS.POLLHUP | SYS.POLLERR)) !== 0) {
          await this.#backOff('no host is connected to the port');
        } else if (polled && revents === 0) {
          // The poll timed out: it did the waiting.
        } else if (this.#stalled) {
          // Said writable (or cannot tell), yet took nothing twice in a row: wait rather than spin.
          await this.#backOff('the port takes no bytes');
        } else {
          this.#stalled = true;
        }
      }
    } finally {
      this.#running = false;
    }
    if (this.#idle()) for (const done of this.#flushed.splice(0)) done();
  }

  /** The next frame from the log at our offset, or undefined when we are at its end. */
  #next(): Outgoing | undefined {
    const [chunk] = this.#log.peek(this.#offset, FRAME_PAYLOAD_BYTES);
    if (!chunk) return undefined;
    if (chunk.offset > this.#offset) {
      // Cannot happen while we hold the log; say so rather than skip in silence if it ever does.
      this.#report(`log port ${this.#port.path}: output ${this.#offset}..${chunk.offset} was lost`);
      this.#offset = chunk.offset;
      this.#hold?.release(chunk.offset);
    }
    const header = encodeLogFrameHeader(chunk.stream, chunk.timestampMs, chunk.data.length);
    return {
      parts: [header, chunk.data],
      end: chunk.offset + chunk.data.length,
      payloadBytes: chunk.data.length,
    };
  }

  #progress(frame: Outgoing, part: Buffer, taken: number): void {
    this.#delay = 0;
    this.#stalled = false;
    if (this.#outage !== undefined) {
      this.#report(`log port ${this.#port.path}: writing again (after: ${this.#outage})`);
      this.#outage = undefined;
    }
    if (taken < part.length) {
      frame.parts[0] = part.subarray(taken);
      return;
    }
    frame.parts.shift();
    if (frame.parts.length > 0) return;
    // The whole frame is on the port: only now may the log let its bytes go.
    this.#frame = undefined;
    this.#offset = frame.end;
    this.#written += frame.payloadBytes;
    this.#hold?.release(frame.end);
  }

  async #backOff(reason: string): Promise<void> {
    this.#delay = this.#delay === 0 ? this.#retryMs : Math.min(this.#delay * 2, this.#retryMaxMs);
    if (this.#outage === undefined) {
      this.#outage = reason;
      this.#report(
        `log port ${this.#port.path}: ${reason}; output waits (retrying, at most every ${this.#retryMaxMs} ms)`,
      );
    }
    await this.#sleep(this.#delay);
  }
}
