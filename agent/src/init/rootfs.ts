/**
 * The container's root filesystem: its disk (found by serial) and volumes mounted under a staging point,
 * the files Docker writes into every container (/etc/hostname, /etc/hosts, /etc/resolv.conf), then the
 * switch: /dev, /proc and /sys move in, and pivot_root makes it `/`. The old root (the runtime disk with the
 * agent, its helper and its tmpfs) is detached: the container never sees it, while the agent keeps what it
 * needs open (its executable, the exec helper's fd, the loaded addons).
 *
 * pivot_root refuses an initramfs root, which is why stage0 already moved us onto the runtime disk.
 */
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AgentConfig } from '../../../protocol/src/config/config.ts';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import { SYS, type Sys } from '../sys/sys.ts';
import { waitForDisk } from './disks.ts';
import { hostsFile, resolvConf } from './network.ts';

type StorageConfig = NonNullable<AgentConfig['storage']>;

export const STAGING_ROOT = '/mnt/root';
const DISK_TIMEOUT_MS = 10_000;
/** Mount points the container gets whether or not its image has them. */
const REQUIRED_DIRS = ['proc', 'sys', 'dev', 'run', 'tmp', 'etc'];

export async function mountStorage(sys: Sys, storage: StorageConfig, root = STAGING_ROOT): Promise<string[]> {
  const done: string[] = [];
  const device = await waitForDisk(storage.root.serial, DISK_TIMEOUT_MS);
  sys.mount(device, root, storage.root.fstype ?? 'ext4', 0);
  done.push(`root ${device} (${storage.root.serial})`);
  for (const volume of storage.volumes ?? []) {
    const volumeDevice = await waitForDisk(volume.serial, DISK_TIMEOUT_MS);
    const target = join(root, volume.target);
    try {
      mkdirSync(target, { recursive: true });
    } catch (error) {
      throw new TetherError(
        'TETHER_SYSCALL',
        `volume ${volume.serial}: cannot create mount point ${volume.target} in the root filesystem: ${(error as Error).message}`,
      );
    }
    const flags = volume.readOnly ? SYS.MS_RDONLY : 0;
    sys.mount(volumeDevice, target, volume.fstype ?? 'ext4', flags);
    done.push(`volume ${volumeDevice} (${volume.serial}) on ${volume.target}${volume.readOnly ? ' ro' : ''}`);
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
