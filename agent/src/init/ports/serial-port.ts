/**
 * A virtio-serial (or other character-device) port as a series of byte streams, one per host connection.
 *
 * Node cannot poll a character device: its fs reads and writes run on the libuv thread pool, and a read
 * that blocks holds a pool thread for good. So the fd is non-blocking; reads and writes are synchronous
 * calls that return at once (EAGAIN), and waiting is a bounded poll(2) in the addon (a pool thread for at
 * most POLL_MS). A host that stops reading therefore only fills this port's own queue: the event loop,
 * other sessions and the other port carry on.
 *
 * Measured port semantics (research/feasibility-vm.md §5): with no host client, poll reports POLLHUP and
 * reads return 0 at once; writes block (EAGAIN). The HUP clearing is the host connecting, HUP again is it
 * leaving. Each connection gets a fresh PortStream; the old one ends (its SSH session goes with it), and
 * anything it had queued is dropped: the resync handshake makes the next connection skip stale bytes.
 */
import { closeSync, constants, openSync, readSync, writeSync } from 'node:fs';
import { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeError } from '../../../../protocol/src/errors/errors.ts';
import { SYS, type Sys } from '../../sys/sys.ts';

const POLL_MS = 500;
const HUP_RETRY_MS = 100;
const READ_BYTES = 64 * 1024;

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException).code;
}

/** One host connection's byte stream. Writes that the port cannot take yet wait in order. */
export class PortStream extends Duplex {
  readonly #port: SerialPort;
  #pending: { data: Buffer; callback: (error?: Error | null) => void }[] = [];
  #flushing = false;
  #wantRead = true;

  constructor(port: SerialPort) {
    super({ allowHalfOpen: false, readableHighWaterMark: 256 * 1024, writableHighWaterMark: 256 * 1024 });
    this.#port = port;
  }

  get wantsRead(): boolean {
    return this.#wantRead && !this.destroyed;
  }

  override _read(): void {
    this.#wantRead = true;
  }

  /** Called by the port with bytes from the host; false means "stop reading until _read". */
  deliver(data: Buffer): void {
    if (!this.push(data)) this.#wantRead = false;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#pending.push({ data: chunk, callback });
    if (!this.#flushing) void this.#flush();
  }

  async #flush(): Promise<void> {
    this.#flushing = true;
    while (this.#pending.length > 0 && !this.destroyed) {
      const head = this.#pending[0]!;
      let written = 0;
      try {
        written = this.#port.writeNow(head.data);
      } catch (error) {
        this.destroy(error as Error);
        break;
      }
      if (written === head.data.length) {
        this.#pending.shift();
        head.callback();
        continue;
      }
      head.data = head.data.subarray(written);
      const revents = await this.#port.waitWritable();
      if (revents & SYS.POLLHUP) await sleep(HUP_RETRY_MS); // host away: the port's reader ends this stream
    }
    this.#flushing = false;
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const pending = this.#pending;
    this.#pending = [];
    for (const { callback: done } of pending) done(error ?? new Error('port connection closed'));
    callback(error);
  }

  /** The host went away: end the stream as a socket's peer closing would. */
  hangUp(): void {
    if (this.destroyed) return;
    this.push(null);
    this.destroy();
  }
}

export class SerialPort {
  readonly path: string;
  readonly #sys: Sys;
  readonly #fd: number;
  readonly #log: (message: string) => void;
  #current: PortStream | undefined;
  #closed = false;

  constructor(path: string, sys: Sys, log: (message: string) => void) {
    this.path = path;
    this.#sys = sys;
    this.#log = log;
    this.#fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK | constants.O_NOCTTY);
  }

  /** Writes what the port takes right now (0 when full or no host is connected). */
  writeNow(data: Buffer): number {
    try {
      return writeSync(this.#fd, data);
    } catch (error) {
      if (errnoCode(error) === 'EAGAIN') return 0;
      throw error;
    }
  }

  waitWritable(): Promise<number> {
    return this.#sys.poll(this.#fd, SYS.POLLOUT, POLL_MS).catch(() => SYS.POLLERR);
  }

  /**
   * Serves host connections one after another until close(): each new connection (the host's first bytes
   * after a HUP, or after the previous stream ended) becomes a PortStream handed to `onConnection`.
   */
  async serve(onConnection: (stream: PortStream) => void): Promise<void> {
    const buffer = Buffer.allocUnsafe(READ_BYTES);
    while (!this.#closed) {
      const stream = this.#current;
      const events = stream && !stream.wantsRead ? 0 : SYS.POLLIN;
      let revents: number;
      try {
        revents = await this.#sys.poll(this.#fd, events, POLL_MS);
      } catch (error) {
        this.#log(`${this.path}: poll failed: ${describeError(error)}`);
        await sleep(POLL_MS);
        continue;
      }
      if (revents & (SYS.POLLHUP | SYS.POLLERR)) {
        this.#hangUp();
        await sleep(HUP_RETRY_MS);
        continue;
      }
      if (!(revents & SYS.POLLIN)) continue;
      for (;;) {
        let n: number;
        try {
          n = readSync(this.#fd, buffer, 0, buffer.length, null);
        } catch (error) {
          if (errnoCode(error) !== 'EAGAIN') this.#log(`${this.path}: read failed: ${describeError(error)}`);
          break;
        }
        if (n === 0) {
          this.#hangUp(); // EOF: the host is not connected (any more)
          break;
        }
        if (!this.#current || this.#current.destroyed) {
          this.#current = new PortStream(this);
          onConnection(this.#current);
        }
        this.#current.deliver(Buffer.from(buffer.subarray(0, n)));
        if (!this.#current.wantsRead) break;
      }
    }
  }

  #hangUp(): void {
    if (!this.#current) return;
    this.#current.hangUp();
    this.#current = undefined;
  }

  close(): void {
    this.#closed = true;
    this.#hangUp();
    try {
      closeSync(this.#fd);
    } catch {
      // Already closed.
    }
  }
}
