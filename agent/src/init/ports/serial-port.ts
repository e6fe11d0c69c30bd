/**
 * A virtio-serial (or other character-device) port as a series of byte streams, one per host connection.
 *
 * Node cannot drive a character device with its streams: its fs reads and writes run on the libuv thread
 * pool, and a read that blocks holds a pool thread for good. So the fd is non-blocking, reads and writes
 * are synchronous calls that return at once (EAGAIN), and the waiting happens in the event loop: the addon
 * watches the fd edge-triggered (Sys.watch: epoll EPOLLET under a uv_poll_t), so a byte is handled in the
 * loop turn it arrives in, and no thread or timer is spent while nothing happens. Edge-triggered means
 * this class reads until EAGAIN and writes until EAGAIN before it waits; what it last learnt is kept in
 * #readable/#writeEdge. A host that stops reading therefore only fills this port's own queue: the event
 * loop, other sessions and the other port carry on.
 *
 * Measured port semantics (research/feasibility-vm.md §5): with no host client, poll reports POLLHUP and
 * reads return 0 at once; writes block (EAGAIN). The kernel wakes the port's waiters when the host connects
 * or leaves, so each of those is one event here: a port with no host is waited on, never spun on. The HUP
 * clearing is the host connecting, HUP again is it leaving. Each connection gets a fresh PortStream; the
 * old one ends (its SSH session goes with it), and anything it had queued is dropped: the resync handshake
 * makes the next connection skip stale bytes.
 */
import { closeSync, constants, openSync, readSync, writeSync } from 'node:fs';
import { Duplex } from 'node:stream';
import { describeError } from '../../../../protocol/src/errors/errors.ts';
import { SYS, type FdWatch, type Sys } from '../../sys/sys.ts';

const READ_BYTES = 64 * 1024;
const GONE = SYS.POLLHUP | SYS.POLLERR;

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
    if (this.#wantRead) return;
    this.#wantRead = true;
    this.#port.readWanted(); // bytes may be waiting: no new edge will announce them
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
      // Host away (POLLHUP): the port's reader ends this stream; otherwise the next write finds room or
      // EAGAIN, after which this waits for the port's next change.
      await this.#port.waitWritable();
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
  readonly #fd: number;
  readonly #log: (message: string) => void;
  readonly #watch: FdWatch;
  #current: PortStream | undefined;
  #closed = false;
  /** The revents of the last event (0 before the first). */
  #revents = 0;
  /** Bytes (or an EOF) may be waiting: set by an event, cleared by a read that found nothing. */
  #readable = false;
  /** An event said writable (or gone) since the last write that took nothing. */
  #writeEdge = true;
  #writeWaiters: ((revents: number) => void)[] = [];
  #wakeReader: (() => void) | undefined;

  constructor(path: string, sys: Sys, log: (message: string) => void) {
    this.path = path;
    this.#log = log;
    this.#fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK | constants.O_NOCTTY);
    try {
      this.#watch = sys.watch(this.#fd, SYS.POLLIN | SYS.POLLOUT, (revents) => this.#onEvents(revents));
    } catch (error) {
      closeSync(this.#fd);
      throw error;
    }
  }

  #onEvents(revents: number): void {
    this.#revents = revents;
    if (revents & (SYS.POLLIN | GONE)) {
      this.#readable = true;
      this.#wake();
    }
    if (revents & (SYS.POLLOUT | GONE)) {
      const waiters = this.#writeWaiters;
      this.#writeEdge = waiters.length === 0;
      this.#writeWaiters = [];
      for (const resolve of waiters) resolve(revents);
    }
  }

  #wake(): void {
    const wake = this.#wakeReader;
    this.#wakeReader = undefined;
    wake?.();
  }

  /** The reader's next reason to look again: an event, a stream that wants bytes again, or close(). */
  #changed(): Promise<void> {
    return new Promise((resolve) => (this.#wakeReader = resolve));
  }

  /** The current stream can take bytes again (called by PortStream._read). */
  readWanted(): void {
    this.#wake();
  }

  /** Writes what the port takes right now (0 when full or no host is connected). */
  writeNow(data: Buffer): number {
    try {
      return writeSync(this.#fd, data);
    } catch (error) {
      if (errnoCode(error) !== 'EAGAIN') throw error;
      this.#writeEdge = false;
      return 0;
    }
  }

  /**
   * Resolves with the port's revents once it may take bytes again: at once if an event said so since the
   * last writeNow that took nothing, else at the port's next change (room, the host leaving: POLLHUP, or
   * coming back). Never on a timer, so a port with no host behind it costs nothing while it waits.
   */
  waitWritable(): Promise<number> {
    if (this.#closed) return Promise.resolve(SYS.POLLNVAL);
    if (this.#writeEdge) {
      this.#writeEdge = false;
      return Promise.resolve(this.#revents | SYS.POLLOUT);
    }
    return new Promise((resolve) => this.#writeWaiters.push(resolve));
  }

  /**
   * Serves host connections one after another until close(): each new connection (the host's first bytes
   * after a HUP, or after the previous stream ended) becomes a PortStream handed to `onConnection`.
   */
  async serve(onConnection: (stream: PortStream) => void): Promise<void> {
    const buffer = Buffer.allocUnsafe(READ_BYTES);
    while (!this.#closed) {
      if (this.#revents & GONE) {
        // No host: end its stream, and leave any stale bytes for the resync of the next connection.
        this.#hangUp();
        this.#readable = false;
      }
      // A stream the agent ended itself (a handshake past its deadline) is no connection any more: the
      // host's next bytes start a new one. Waiting for it to want bytes again would wait for ever.
      if (this.#current?.destroyed) this.#current = undefined;
      const stream = this.#current;
      if (!this.#readable || (stream !== undefined && !stream.wantsRead)) {
        await this.#changed();
        continue;
      }
      for (;;) {
        let n: number;
        try {
          n = readSync(this.#fd, buffer, 0, buffer.length, null);
        } catch (error) {
          if (errnoCode(error) !== 'EAGAIN') this.#log(`${this.path}: read failed: ${describeError(error)}`);
          this.#readable = false;
          break;
        }
        if (n === 0) {
          this.#hangUp(); // EOF: the host is not connected (any more)
          this.#readable = false;
          break;
        }
        if (!this.#current || this.#current.destroyed) {
          const next = new PortStream(this);
          // Bytes already waiting when it ends announce themselves with no new event: look again then.
          next.once('close', () => this.#wake());
          this.#current = next;
          onConnection(next);
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
    if (this.#closed) return;
    this.#closed = true;
    this.#watch.close();
    this.#hangUp();
    this.#wake();
    for (const resolve of this.#writeWaiters.splice(0)) resolve(SYS.POLLNVAL);
    try {
      closeSync(this.#fd);
    } catch {
      // Already closed.
    }
  }
}
