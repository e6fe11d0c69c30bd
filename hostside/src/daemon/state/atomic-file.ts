/**
 * Durable state files: written to a temporary name, flushed, renamed over the old one, and the directory
 * flushed, so a kill -9 (or a power cut) at any moment leaves either the old file or the new one, never a
 * torn mix. A directory is filled and flushed under a temporary name and renamed into place whole.
 */
import {
  closeSync,
  fsyncSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';

export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Writes `path` atomically. The temporary file lives beside it, or in `tmpDir` (same filesystem) when the
 * caller cleans such a folder at start-up.
 */
export function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode = 0o644,
  tmpDir: string = dirname(path),
): void {
  const temporary = join(
    tmpDir,
    `.${basename(path)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`,
  );
  const fd = openSync(temporary, 'w', mode);
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

export function writeJsonAtomic(path: string, value: unknown, mode = 0o644): void {
  writeFileAtomic(path, JSON.stringify(value, null, 2) + '\n', mode);
}

export function readJson(path: string): unknown {
  return JSON.parse(readFileSync(path, 'utf8')) as unknown;
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
