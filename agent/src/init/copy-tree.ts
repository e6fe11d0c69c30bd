/**
 * Docker's volume copy-up: a new, empty volume mounted over a directory of the image first receives that
 * directory's contents (files, directories, symlinks, with their owners, modes and times; the volume's root
 * takes the directory's owner and mode), so that `-v data:/usr/share/nginx/html` starts with the image's
 * pages and `-v pg:/var/lib/postgresql/data` with the right owner (even when the image's directory is
 * empty). Only when the volume is empty: its data is never overwritten. Hard links are copied as separate files; device nodes, fifos and sockets are not
 * copied (Node cannot make them, and an image keeps none in a volume path in practice).
 */
import {
  chmodSync,
  chownSync,
  copyFileSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  symlinkSync,
  utimesSync,
  type Stats,
} from 'node:fs';
import { join } from 'node:path';

export interface CopyResult {
  entries: number;
  skipped: number;
}

function keepMetadata(path: string, stat: Stats): void {
  chownSync(path, stat.uid, stat.gid);
  chmodSync(path, stat.mode & 0o7777);
  utimesSync(path, stat.atime, stat.mtime);
}

/** Copies the contents of `from` into the empty directory `to`, and `from`'s metadata onto `to`. */
export function copyTree(from: string, to: string): CopyResult {
  const result: CopyResult = { entries: 0, skipped: 0 };
  const walk = (src: string, dst: string): void => {
    for (const name of readdirSync(src)) {
      const source = join(src, name);
      const target = join(dst, name);
      const stat = lstatSync(source);
      if (stat.isDirectory()) {
        mkdirSync(target);
        walk(source, target);
        keepMetadata(target, stat);
      } else if (stat.isFile()) {
        copyFileSync(source, target);
        keepMetadata(target, stat);
      } else if (stat.isSymbolicLink()) {
        symlinkSync(readlinkSync(source), target);
        lchownSync(target, stat.uid, stat.gid);
      } else {
        result.skipped++;
        continue;
      }
      result.entries++;
    }
  };
  walk(from, to);
  keepMetadata(to, lstatSync(from));
  return result;
}
