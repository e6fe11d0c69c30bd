/**
 * A path inside the container's root filesystem, resolved as the container would see it: symlinks are
 * followed inside the root (an absolute target starts again at the root, `..` stops at it), never into the
 * agent's own filesystem. The image decides what its symlinks say, so a volume at `/data` in an image where
 * `/data -> /../../etc` must land at the container's /etc, not the runtime disk's. Docker does the same for
 * its mounts (FollowSymlinkInScope).
 */
import { lstatSync, mkdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { TetherError } from '../../../protocol/src/errors/errors.ts';

/** Linux's own limit on symlinks followed in one lookup. */
const MAX_SYMLINKS = 40;

export interface RootFs {
  /** 'dir' | 'symlink' | 'other', or undefined when nothing is there. */
  kind(path: string): 'dir' | 'symlink' | 'other' | undefined;
  readlink(path: string): string;
}

export const realRootFs: RootFs = {
  kind(path) {
    try {
      const stat = lstatSync(path);
      return stat.isSymbolicLink() ? 'symlink' : stat.isDirectory() ? 'dir' : 'other';
    } catch {
      return undefined;
    }
  },
  readlink: (path) => readlinkSync(path),
};

/**
 * Pure over `fs`: the components (inside the root) that `path` names once every symlink on the way is
 * resolved in the root; components past the first missing one are kept as they are.
 */
export function resolveInRoot(root: string, path: string, fs: RootFs = realRootFs): string[] {
  const resolved: string[] = [];
  const pending = path.split('/').filter((part) => part !== '' && part !== '.');
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const here = join(root, ...resolved, part);
    if (fs.kind(here) !== 'symlink') {
      resolved.push(part);
      continue;
    }
    if (++hops > MAX_SYMLINKS)
      throw new TetherError('TETHER_SYSCALL', `${path}: too many levels of symbolic links in the image`);
    const target = fs.readlink(here);
    if (target.startsWith('/')) resolved.length = 0;
    pending.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
  }
  return resolved;
}

/** Makes (as needed) the directory `path` names inside `root` and returns its host path. */
export function mkdirInRoot(root: string, path: string, fs: RootFs = realRootFs): string {
  const parts = resolveInRoot(root, path, fs);
  let at = root;
  for (const part of parts) {
    at = join(at, part);
    const kind = fs.kind(at);
    if (kind === undefined) mkdirSync(at, { mode: 0o755 });
    else if (kind !== 'dir')
      throw new TetherError(
        'TETHER_SYSCALL',
        `cannot mount at ${path}: /${parts.slice(0, parts.indexOf(part) + 1).join('/')} in the image is not a directory`,
      );
  }
  return at;
}
