/**
 * Root filesystem tarball → ext4 image, without root (init-image/tar-to-ext4.sh: fakeroot + mkfs.ext4 -d,
 * owners kept). Images are cached by the tarball's content hash (and the script's, and the size), so a
 * second run of the same image boots at once; VMs never write them (each gets a qcow2 layer on top).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { TetherError } from '../../../protocol/src/errors/errors.ts';

const run = promisify(execFile);

export interface RootfsOptions {
  /** Images are kept in cacheDir/rootfs/. */
  cacheDir: string;
  /** init-image/tar-to-ext4.sh */
  script: string;
  /** Image size; default: the script's (unpacked size + 25% + 16 MiB). */
  sizeMiB?: number;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

/** Pure: the cache key of an image; any change to the inputs of the conversion gives a new one. */
export function rootfsCacheKey(tarballSha256: string, scriptText: string, sizeMiB?: number): string {
  return createHash('sha256')
    .update(`tarball ${tarballSha256}\n`)
    .update(`size ${sizeMiB ?? 'default'}\n`)
    .update(scriptText)
    .digest('hex');
}

/** Returns the path of the ext4 image for `tarball`, building it when not cached. */
export async function rootfsImage(tarball: string, options: RootfsOptions): Promise<string> {
  if (!existsSync(tarball))
    throw new TetherError('TETHER_IMAGE_MISSING', `root filesystem tarball ${tarball} not found`);
  let scriptText: string;
  try {
    scriptText = readFileSync(options.script, 'utf8');
  } catch {
    throw new TetherError(
      'TETHER_IMAGE_MISSING',
      `${options.script} not found: it turns tarballs into disk images (set TETHER_TAR_TO_EXT4 to its path)`,
    );
  }
  const key = rootfsCacheKey(await sha256File(tarball), scriptText, options.sizeMiB);
  const dir = join(options.cacheDir, 'rootfs');
  const image = join(dir, `${key}.img`);
  if (existsSync(image)) return image;
  mkdirSync(dir, { recursive: true });
  // Built under a private name and renamed: a concurrent run never sees half an image.
  const partial = join(dir, `${key}.${process.pid}.partial`);
  try {
    await run(
      'bash',
      [options.script, tarball, partial, ...(options.sizeMiB !== undefined ? [String(options.sizeMiB)] : [])],
      { maxBuffer: 16 * 1024 * 1024 },
    );
    renameSync(partial, image);
  } catch (error) {
    rmSync(partial, { force: true });
    const stderr = ((error as { stderr?: string }).stderr ?? (error as Error).message).trim();
    throw new TetherError(
      'TETHER_ROOTFS_FAILED',
      `could not turn ${tarball} into an ext4 image: ${stderr.split('\n').slice(-5).join('\n')}`,
      { cause: error },
    );
  }
  return image;
}
