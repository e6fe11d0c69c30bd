/**
 * The container's root filesystem: its disk (found by serial) and volumes mounted under a staging point,
 * the files Docker writes into every container (/etc/hostname, /etc/hosts, /etc/resolv.conf), then the
 * switch: /dev, /proc and /sys move in, and pivot_root makes it `/`. The old root (the runtime disk with the
 * agent, its helper and its tmpfs) is detached: the container never sees it, while the agent keeps what it
 * needs open (its executable, the exec helper's fd, the loaded addons).
 *
 * pivot_root refuses an initramfs root, which is why stage0 already moved us onto the runtime disk.
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentConfig } from '../../../protocol/src/config/config.ts';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import { SYS, type Sys } from '../sys/sys.ts';
import { waitForDisk } from './disks.ts';
import { copyTree } from './copy-tree.ts';
import { mkdirInRoot } from './in-root.ts';
import { hostsFile, resolvConf } from './network.ts';

type StorageConfig = NonNullable<AgentConfig['storage']>;

export const STAGING_ROOT = '/mnt/root';
const DISK_TIMEOUT_MS = 10_000;
/** Mount points the container gets whether or not its image has them. */
const REQUIRED_DIRS = ['proc', 'sys', 'dev', 'run', 'tmp', 'etc'];

/**
 * ext4 mounts skip the kernel's lazy zeroing of inode tables: images and volumes are made with tables
 * that read as zeros already (sparse files), and the zeroing would cost guest CPU and write up to 128 MiB
 * per 8 GiB into the container's own layer on the host.
 */
const EXT4_DATA = 'noinit_itable';

function mountDisk(
  sys: Sys,
  device: string,
  target: string,
  fstype: string,
  flags: number,
  what: string,
): void {
  try {
    sys.mount(device, target, fstype, flags, fstype === 'ext4' ? EXT4_DATA : null);
  } catch (error) {
    throw new TetherError('TETHER_SYSCALL', `${what}: ${describeMountError(error)}`);
  }
}

/** A mount failure with what it most likely means for a disk from the host. */
function describeMountError(error: unknown): string {
  const message = (error as Error).message;
  if (/EINVAL|EUCLEAN|EBADMSG|EIO/.test(message))
    return `${message}: the disk holds no readable filesystem (corrupt, or not made by tetherd); remove and recreate it`;
  return message;
}

/** The container's root disk, mounted at `root`; returns what was done. */
export async function mountRootDisk(sys: Sys, storage: StorageConfig, root = STAGING_ROOT): Promise<string> {
  const device = await waitForDisk(storage.root.serial, DISK_TIMEOUT_MS);
  const fstype = storage.root.fstype ?? 'ext4';
  mountDisk(sys, device, root, fstype, 0, `root disk ${device} (${storage.root.serial})`);
  return `${device} (${storage.root.serial}, ${fstype})`;
}

const COPY_UP_STAGING = '/run/tether-volume';

/**
 * Docker's copy-up (copy-tree.ts): an empty volume first receives what the image has at its path. The
 * volume is mounted aside for it, under the agent's own /run, never inside the container's root.
 */
function copyUp(sys: Sys, device: string, fstype: string, imageDir: string, what: string): string {
  mkdirSync(COPY_UP_STAGING, { recursive: true });
  mountDisk(sys, device, COPY_UP_STAGING, fstype, 0, what);
  try {
    if (readdirSync(COPY_UP_STAGING).length > 0) return '';
    // Even from an empty directory the volume takes its owner and mode, as Docker's does: a postgres
    // image's empty, postgres-owned data directory makes a volume postgres can write.
    const { entries, skipped } = copyTree(imageDir, COPY_UP_STAGING);
    if (entries === 0 && skipped === 0) return ", the image's owner and mode";
    return `, ${entries} entries copied from the image${skipped ? ` (${skipped} special files left out)` : ''}`;
  } catch (error) {
    throw new TetherError(
      'TETHER_SYSCALL',
      `${what}: copying the image's files into the new volume: ${(error as Error).message}`,
    );
  } finally {
    sys.umount2(COPY_UP_STAGING, 0);
  }
}

/** The volumes, each on its path inside the mounted root (symlinks resolved inside it); returns what was done. */
export async function mountVolumes(sys: Sys, storage: StorageConfig, root = STAGING_ROOT): Promise<string[]> {
  const done: string[] = [];
  for (const volume of storage.volumes ?? []) {
    const device = await waitForDisk(volume.serial, DISK_TIMEOUT_MS);
    let target: string;
    try {
      target = mkdirInRoot(root, volume.target);
    } catch (error) {
      throw new TetherError(
        'TETHER_SYSCALL',
        `volume ${volume.serial}: cannot make the mount point ${volume.target} in the root filesystem: ${(error as Error).message}`,
      );
    }
    const fstype = volume.fstype ?? 'ext4';
    const what = `volume ${device} (${volume.serial}) on ${volume.target}`;
    const copied = volume.copyUp ? copyUp(sys, device, fstype, target, what) : '';
    mountDisk(sys, device, target, fstype, volume.readOnly ? SYS.MS_RDONLY : 0, what);
    done.push(`${device} (${volume.serial}) on ${volume.target}${volume.readOnly ? ' ro' : ''}${copied}`);
  }
  return done;
}

/** The files Docker writes into every container; the image's own versions are replaced as Docker does. */
export function writeContainerFiles(root: string, hostname: string, network: AgentConfig['network']): void {
  for (const dir of REQUIRED_DIRS) mkdirSync(join(root, dir), { recursive: true });
  chmodSync(join(root, 'tmp'), 0o1777);
  writeFileSync(join(root, 'etc/hostname'), `${hostname}\n`);
  writeFileSync(join(root, 'etc/hosts'), hostsFile(hostname, network));
  writeFileSync(join(root, 'etc/resolv.conf'), resolvConf(network));
}

/** Moves the pseudo filesystems in, pivots, and detaches the old root. Afterwards `/` is the container's. */
export function switchRoot(sys: Sys, root = STAGING_ROOT): void {
  for (const pseudo of ['/dev', '/proc', '/sys']) {
    if (!existsSync(join(root, pseudo))) mkdirSync(join(root, pseudo), { recursive: true });
    sys.mount(pseudo, join(root, pseudo), null, SYS.MS_MOVE);
  }
  sys.mount('tmpfs', join(root, 'run'), 'tmpfs', SYS.MS_NOSUID | SYS.MS_NODEV, 'mode=0755');
  process.chdir(root);
  // pivot_root(".", "."): the old root ends up stacked under the new one, where a lazy unmount hides it.
  sys.pivotRoot('.', '.');
  sys.umount2('.', SYS.MNT_DETACH);
  process.chdir('/');
}
