/** What the log tests share: a fake hypervisor writing the live file, temp dirs, frames and collection. */
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeLogFrame, type LogFrame, type StreamId } from '../../../../protocol/src/logs/log-frame.ts';
import type { LogEntry } from '../../../../hostside/src/daemon/logs/log-reader.ts';

export function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'tether-logs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export const frame = (text: string | Buffer, stream: StreamId = 1, timestampMs = 1000): LogFrame => ({
  stream,
  timestampMs,
  data: typeof text === 'string' ? Buffer.from(text) : text,
});

export const bytesOf = (frames: LogFrame[]): Buffer => Buffer.concat(frames.map(encodeLogFrame));

/**
 * Writes the live file as QEMU's file chardev does: opened with truncation at boot, plain writes, and on
 * reopen (chardev-change) a fresh file at the same path, the old descriptor closed.
 */
export class FakeHypervisor {
  readonly #path: string;
  #fd: number | undefined;

  constructor(path: string) {
    this.#path = path;
  }

  boot(): void {
    this.#fd = openSync(this.#path, 'w');
  }

  write(bytes: Uint8Array): void {
    if (this.#fd === undefined) throw new Error('not booted');
    let at = 0;
    while (at < bytes.length) at += writeSync(this.#fd, bytes, at);
  }

  writeFrames(frames: LogFrame[]): void {
    this.write(bytesOf(frames));
  }

  /** Vm.reopenLog(); `beforeSwitch` bytes still go to the old (renamed) file, as in the real window. */
  reopen = async (beforeSwitch?: Uint8Array): Promise<void> => {
    if (beforeSwitch) this.write(beforeSwitch);
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = openSync(this.#path, 'w');
  };

  halt(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }
}

export async function collect(entries: AsyncIterable<LogEntry>): Promise<LogEntry[]> {
  const out: LogEntry[] = [];
  for await (const entry of entries) out.push({ ...entry, data: Buffer.from(entry.data) });
  return out;
}

export const texts = (entries: LogEntry[]): string[] => entries.map((e) => e.data.toString());
export const joined = (entries: LogEntry[]): string => texts(entries).join('');

/** Resolves when `condition` holds, checking after each macrotask; fails after `ms`. */
export async function until(condition: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
