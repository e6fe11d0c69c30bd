/**
 * Where the VM's config comes from, in the design's order: QEMU fw_cfg `opt/tether/config`, then the kernel
 * command line (`tether.config=<base64>`), then a disk whose ext4 label is TETHER-CFG (holding /config.json).
 * The first source present wins; if it is invalid, that is the error reported (a broken config the host meant
 * must not be silently replaced by an older one).
 */
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { configFromCmdline, decodeConfig, type AgentConfig } from '../../../protocol/src/config/config.ts';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import { SYS, type Sys } from '../sys/sys.ts';

export const FW_CFG_CONFIG = '/sys/firmware/qemu_fw_cfg/by_name/opt/tether/config/raw';
export const CONFIG_DISK_LABEL = 'TETHER-CFG';

export interface ConfigFound {
  config: AgentConfig;
  source: string;
}

export interface ConfigSourcePaths {
  fwCfg: string;
  cmdline: string;
  sysBlock: string;
  dev: string;
  mountPoint: string;
}

const DEFAULT_PATHS: ConfigSourcePaths = {
  fwCfg: FW_CFG_CONFIG,
  cmdline: '/proc/cmdline',
  sysBlock: '/sys/block',
  dev: '/dev',
  mountPoint: '/run/tether/config-disk',
};

/** The ext4 volume label from a superblock (1024 bytes in; magic 0xEF53 at +0x38, label at +0x78). */
export function ext4Label(superblock: Buffer): string | undefined {
  if (superblock.length < 0x88 || superblock.readUInt16LE(0x38) !== 0xef53) return undefined;
  const raw = superblock.subarray(0x78, 0x88);
  const end = raw.indexOf(0);
  return raw.subarray(0, end === -1 ? raw.length : end).toString('utf8');
}

function readSuperblock(device: string): Buffer | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(device, 'r');
    const buffer = Buffer.alloc(0x100);
    const n = readSync(fd, buffer, 0, buffer.length, 1024);
    return buffer.subarray(0, n);
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Finds and validates the config; throws TETHER_CONFIG_MISSING when no source has one. */
export function findConfig(sys: Sys, paths: ConfigSourcePaths = DEFAULT_PATHS): ConfigFound {
  if (existsSync(paths.fwCfg)) {
    const source = 'fw_cfg opt/tether/config';
    return { config: decodeConfig(readFileSync(paths.fwCfg), source), source };
  }
  const fromCmdline = configFromCmdline(readFileSync(paths.cmdline, 'utf8'));
  if (fromCmdline) return { config: fromCmdline, source: 'kernel command line tether.config' };
  for (const name of readdirSync(paths.sysBlock).filter((entry) => /^vd[a-z]+$/.test(entry))) {
    const device = join(paths.dev, name);
    const superblock = readSuperblock(device);
    if (!superblock || ext4Label(superblock) !== CONFIG_DISK_LABEL) continue;
    mkdirSync(paths.mountPoint, { recursive: true });
    sys.mount(device, paths.mountPoint, 'ext4', SYS.MS_RDONLY | SYS.MS_NOSUID | SYS.MS_NODEV);
    try {
      const source = `disk ${device} labeled ${CONFIG_DISK_LABEL}`;
      return { config: decodeConfig(readFileSync(join(paths.mountPoint, 'config.json')), source), source };
    } finally {
      sys.umount2(paths.mountPoint, SYS.MNT_DETACH);
    }
  }
  throw new TetherError(
    'TETHER_CONFIG_MISSING',
    `no config: none at ${paths.fwCfg} (QEMU: -fw_cfg name=opt/tether/config,file=CONFIG.json), none on the kernel command line (tether.config=<base64>), no disk labeled ${CONFIG_DISK_LABEL}`,
  );
}
