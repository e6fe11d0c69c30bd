/**
 * The flattened root tar → a raw ext4 disk, by init-image/tar-to-ext4.sh (fakeroot + mkfs.ext4 -d, owners
 * kept, no root needed), as hostside/src/vm/rootfs.ts does for `tetherctl vm run`. That one also hashes the
 * tarball to key its cache; the store is content-addressed by image id already, so the script is run
 * directly, sparing a sha256 pass over the whole root (0.7 s per 300 MiB here, of a 3-4 s load).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';

const run = promisify(execFile);

/** Builds `workDir/rootfs.img` from `flatTar` with `script`; returns its path. */
export async function buildRootDisk(script: string, flatTar: string, workDir: string): Promise<string> {
  if (!existsSync(script))
    throw new TetherError(
      'TETHER_IMAGE_MISSING',
      `${script} not found: it turns tarballs into disk images (set TETHER_TAR_TO_EXT4 to its path)`,
    );
  const out = join(workDir, 'rootfs.img');
  try {
    await run('bash', [script, flatTar, out], { maxBuffer: 16 * 1024 * 1024 });
  } catch (error) {
    const stderr = ((error as { stderr?: string }).stderr ?? (error as Error).message).trim();
    throw new TetherError(
      'TETHER_ROOTFS_FAILED',
      `could not turn the image's root filesystem into an ext4 disk: ${stderr.split('\n').slice(-5).join('\n')}`,
      { cause: error },
    );
  }
  return out;
}
