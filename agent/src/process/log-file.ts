/**
 * The log port's stand-in in --dev mode: the framed output appended to a file, which the host reads as it
 * reads a VM's log-port file. Rotation works as with QEMU's chardev-change: the host renames the file away
 * and asks for a reopen (SIGHUP); every write goes whole to whichever file is open at that moment, so a
 * frame may straddle the two files but no byte is lost or written twice.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import type { LogSink } from '../init/ports/log-port.ts';

export class LogFile implements LogSink {
  readonly path: string;
  #fd: number;

  constructor(path: string) {
    this.path = path;
    this.#fd = openSync(path, 'a', 0o600);
  }

  /**
   * A regular file takes every byte at once. On an error (ENOSPC) it reports what did go in, so the writer
   * carries on from there, or throws when nothing did, and the writer retries the same bytes later.
   */
  writeNow(bytes: Buffer): number {
    let written = 0;
    try {
      while (written < bytes.length) written += writeSync(this.#fd, bytes, written);
    } catch (error) {
      if (written === 0) throw error;
    }
    return written;
  }

  waitWritable(): Promise<void> {
    return Promise.resolve();
  }

  /** Opens `path` afresh (creating it): later writes go there, earlier ones stay in the renamed file. */
  reopen(): void {
    const fd = openSync(this.path, 'a', 0o600);
    closeSync(this.#fd);
    this.#fd = fd;
  }

  close(): void {
    closeSync(this.#fd);
  }
}
