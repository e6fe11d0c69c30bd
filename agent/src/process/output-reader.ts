/**
 * Reads a child's stdout or stderr in the event loop, in bursts as large as its socket holds.
 *
 * Node reads a child's output 64 KiB per callback, and each callback is a trip through JavaScript; under
 * emulation each trip and each user-space copy is expensive. Here the child's end is a unix socket with a
 * large send buffer (Sys.outputSocket) and each burst is read with one read(2) straight into a Buffer of
 * exactly the size the socket holds (Sys.readAvailable): no scratch buffer, no second copy, so a quiet
 * process's short lines cost a few bytes each while a fast writer costs one callback per burst.
 *
 * Backpressure is pause()/resume(): while paused nothing is read, the socket fills, and the writer blocks in
 * write(2), exactly as with a stream's pause().
 */
import { closeSync } from 'node:fs';
import { SYS, type FdWatch, type Sys } from '../sys/sys.ts';

/** How much one read takes at most, and the send buffer asked for the child's end. */
export const OUTPUT_READ_BYTES = 1024 * 1024;
/** Reads per turn of the event loop before yielding to others (a writer that never stops cannot starve them). */
const READS_PER_TURN = 4;

export class OutputReader {
  readonly fd: number;
  readonly #sys: Sys;
  readonly #onData: (chunk: Buffer) => void;
  readonly #onEnd: (error?: Error) => void;
  #watch: FdWatch | undefined;
  #paused = false;
  #closed = false;
  #scheduled = false;

  /** Takes ownership of `fd` (the agent's non-blocking end) and starts reading it. */
  constructor(sys: Sys, fd: number, onData: (chunk: Buffer) => void, onEnd: (error?: Error) => void) {
    this.fd = fd;
    this.#sys = sys;
    this.#onData = onData;
    this.#onEnd = onEnd;
    try {
      this.#watch = sys.watch(fd, SYS.POLLIN, () => this.#drain());
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    // The watch is edge-triggered: bytes that came while paused announce nothing new, so look now (on a
    // later turn: the caller may be inside an onData of this very reader).
    this.#later();
  }

  /** Stops reading and closes our end (the writer then gets EPIPE); onEnd is called with nothing lost to report. */
  destroy(): void {
    this.#close(undefined);
  }

  #later(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#drain();
    });
  }

  #drain(): void {
    for (let reads = 0; !this.#paused && !this.#closed; reads++) {
      if (reads === READS_PER_TURN) {
        this.#later();
        return;
      }
      let chunk: Buffer | null;
      try {
        chunk = this.#sys.readAvailable(this.fd, OUTPUT_READ_BYTES);
      } catch (error) {
        this.#close(error as Error);
        return;
      }
      if (chunk === null) return; // drained: the watch calls again when more comes
      if (chunk.length === 0) {
        this.#close(undefined);
        return;
      }
      this.#onData(chunk);
    }
  }

  #close(error: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watch?.close();
    this.#watch = undefined;
    try {
      closeSync(this.fd);
    } catch {
      // Already gone: nothing more to release.
    }
    this.#onEnd(error);
  }
}
