/**
 * The main process's output, framed (stream, timestamp, bytes) onto the log port, which the hypervisor
 * backs with a file on the host: `docker logs` reads that file, so output survives tetherd being away.
 * The writer is a reader of the OutputLog like any attach client, but it never skips: the log keeps bytes
 * until some reader took them, so a slow port pauses the process instead of losing output.
 */
import { encodeLogFrame, MAX_LOG_PAYLOAD } from '../../../../protocol/src/logs/log-frame.ts';
import type { OutputLog } from '../../process/output-log.ts';

/**
 * Where the frames go: the virtio-serial log port in a VM (SerialPort), a plain file in --dev mode
 * (LogFile). writeNow takes what it can at once and says how much; waitWritable waits for room.
 */
export interface LogSink {
  readonly path: string;
  writeNow(bytes: Buffer): number;
  waitWritable(): Promise<unknown>;
}

const SLICE_BYTES = 256 * 1024;

export class LogPortWriter {
  readonly #log: OutputLog;
  readonly #port: LogSink;
  #offset = 0;
  #running = false;
  #written = 0;
  #flushed: (() => void)[] = [];

  readonly #report: (message: string) => void;

  constructor(log: OutputLog, port: LogSink, report: (message: string) => void) {
    this.#log = log;
    this.#port = port;
    this.#report = report;
  }

  get bytesWritten(): number {
    return this.#written;
  }

  start(): void {
    this.#log.on('data', () => void this.#pump());
    this.#log.on('end', () => void this.#pump());
    void this.#pump();
  }

  /** Resolves once every byte the log holds (up to its end) is on the port, or after `timeoutMs`. */
  flushed(timeoutMs: number): Promise<boolean> {
    if (this.#offset >= this.#log.end && !this.#running) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.#flushed.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  async #pump(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      for (;;) {
        const chunks = this.#log.read(this.#offset, SLICE_BYTES);
        if (chunks.length === 0) break;
        for (const chunk of chunks) {
          for (let at = 0; at < chunk.data.length; at += MAX_LOG_PAYLOAD) {
            const data = chunk.data.subarray(at, at + MAX_LOG_PAYLOAD);
            await this.#writeAll(
              encodeLogFrame({ stream: chunk.stream, timestampMs: chunk.timestampMs, data }),
            );
          }
          this.#offset = chunk.offset + chunk.data.length;
          this.#written += chunk.data.length;
        }
      }
    } catch (error) {
      // The offset did not move past the failed chunk: retry it rather than lose it.
      this.#report(`log port ${this.#port.path}: ${(error as Error).message}; retrying in 1 s`);
      setTimeout(() => void this.#pump(), 1000);
      return;
    } finally {
      this.#running = false;
    }
    if (this.#offset >= this.#log.end) for (const done of this.#flushed.splice(0)) done();
  }

  async #writeAll(bytes: Buffer): Promise<void> {
    let rest = bytes;
    while (rest.length > 0) {
      const n = this.#port.writeNow(rest);
      rest = rest.subarray(n);
      if (rest.length > 0) await this.#port.waitWritable();
    }
  }
}
