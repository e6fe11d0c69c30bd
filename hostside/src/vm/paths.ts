/**
 * Where the host finds the boot image, the init-image scripts and its cache. The repository layout is
 * found from the running file (dist/tetherctl.cjs or the .ts source), as agent/src/dev.ts finds its helper:
 * bundles avoid import.meta, so process.argv[1] is the anchor.
 */
import { existsSync, realpathSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { TetherError } from '../../../protocol/src/errors/errors.ts';

const MARKER = join('init-image', 'tar-to-ext4.sh');

/** Pure: the nearest folder at or above `start` for which `exists(folder/init-image/tar-to-ext4.sh)`. */
export function findRepoRoot(
  start: string,
  exists: (path: string) => boolean = existsSync,
): string | undefined {
  for (let dir = resolve(start); ; dir = dirname(dir)) {
    if (exists(join(dir, MARKER))) return dir;
    if (dirname(dir) === dir) return undefined;
  }
}

export function repoRoot(): string {
  const script = process.argv[1];
  let start = process.cwd();
  if (script) {
    try {
      start = dirname(realpathSync(script));
    } catch {
      start = dirname(resolve(script));
    }
  }
  return findRepoRoot(start) ?? findRepoRoot(process.cwd()) ?? resolve(start, '..');
}

export interface BootImagePaths {
  kernel: string;
  initramfs: string;
  runtimeDisk: string;
}

/** Pure: the boot image files in `imageDir` (build/image by default, TETHER_IMAGE_DIR to override). */
export function bootImagePaths(imageDir: string): BootImagePaths {
  return {
    kernel: join(imageDir, 'vmlinuz'),
    initramfs: join(imageDir, 'initramfs.cpio.gz'),
    runtimeDisk: join(imageDir, 'runtime.img'),
  };
}

/** Fails early, naming the first missing file, before any disk is built or VM started. */
export function checkBootImage(paths: BootImagePaths): void {
  const files: [string, string][] = [
    ['kernel', paths.kernel],
    ['initramfs', paths.initramfs],
    ['runtime disk', paths.runtimeDisk],
  ];
  for (const [what, path] of files)
    if (!existsSync(path))
      throw new TetherError(
        'TETHER_IMAGE_MISSING',
        `boot image ${what} ${path} not found: build it with \`make image\` (or set TETHER_IMAGE_DIR)`,
      );
}

export function defaultImageDir(env: NodeJS.ProcessEnv = process.env): string {
  return env['TETHER_IMAGE_DIR'] ?? join(repoRoot(), 'build', 'image');
}

export function tarToExt4Script(env: NodeJS.ProcessEnv = process.env): string {
  return env['TETHER_TAR_TO_EXT4'] ?? join(repoRoot(), MARKER);
}

/** Pure: TETHER_CACHE_DIR, else $XDG_CACHE_HOME/tether, else ~/.cache/tether. */
export function cacheDir(env: NodeJS.ProcessEnv = process.env, home: string = homedir()): string {
  if (env['TETHER_CACHE_DIR']) return env['TETHER_CACHE_DIR'];
  return join(env['XDG_CACHE_HOME'] || join(home, '.cache'), 'tether');
}
