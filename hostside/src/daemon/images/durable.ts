/**
 * Writes that survive a kill -9 or a power cut at any moment: a file is written under a temporary name,
 * flushed, renamed over the old one and its directory flushed; a directory is filled and flushed under a
 * temporary name and renamed into place whole.
 */
import { closeSync, fsyncSync, openSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Writes `path` atomically; the temporary file lives in `tmpDir` (same filesystem, cleaned at start-up). */
export function writeFileDurable(path: string, data: string | Uint8Array, tmpDir: string): void {
  const temporary = join(tmpDir, `${basename(path)}.${process.pid}.${Math.random().toString(36).slice(2)}`);
  const fd = openSync(temporary, 'w', 0o644);
  try {
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    for (let at = 0; at < bytes.length;) at += writeSync(fd, bytes, at);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    rmSync(temporary, { force: true });
    throw error;
  }
  closeSync(fd);
  renameSync(temporary, path);
  fsyncPath(dirname(path));
}

/** Flushes every file in `dir` (one level) and `dir` itself, before it is renamed into place. */
export function fsyncTree(dir: string): void {
  for (const entry of readdirSync(dir, { withFileTypes: true }))
    if (entry.isFile()) fsyncPath(join(dir, entry.name));
  fsyncPath(dir);
}

/** Renames a complete directory into place and flushes the parent: it appears whole or not at all. */
export function publishDirectory(prepared: string, final: string): void {
  renameSync(prepared, final);
  fsyncPath(dirname(final));
}
