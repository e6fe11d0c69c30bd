/**
 * The pseudo filesystems PID 1 owes the system. stage0 already mounted /proc, /sys, /dev (devtmpfs) and a
 * tmpfs /run for the agent; these are the rest, mounted before the switch so they move along with /dev and
 * /sys into the container's root.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { SYS, isErrno, type Sys } from '../sys/sys.ts';

export interface MountSpec {
  source: string;
  target: string;
  fstype: string;
  flags: number;
  data?: string;
  /** A path that exists only once this is mounted: stage0 already mounted /proc, /sys and /dev. */
  presentWhen?: string;
}

const { MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_RELATIME } = SYS;

export const EARLY_MOUNTS: readonly MountSpec[] = [
  {
    source: 'proc',
    target: '/proc',
    fstype: 'proc',
    flags: MS_NOSUID | MS_NODEV | MS_NOEXEC,
    presentWhen: '/proc/self',
  },
  {
    source: 'sysfs',
    target: '/sys',
    fstype: 'sysfs',
    flags: MS_NOSUID | MS_NODEV | MS_NOEXEC,
    presentWhen: '/sys/kernel',
  },
  {
    source: 'devtmpfs',
    target: '/dev',
    fstype: 'devtmpfs',
    flags: MS_NOSUID,
    data: 'mode=0755',
    presentWhen: '/dev/null',
  },
  // gid 5 is "tty" in Debian, Alpine and busybox images alike; ptmx 0666 so non-root users get terminals.
  {
    source: 'devpts',
    target: '/dev/pts',
    fstype: 'devpts',
    flags: MS_NOSUID | MS_NOEXEC,
    data: 'newinstance,gid=5,mode=0620,ptmxmode=0666',
  },
  { source: 'shm', target: '/dev/shm', fstype: 'tmpfs', flags: MS_NOSUID | MS_NODEV, data: 'mode=1777' },
  { source: 'mqueue', target: '/dev/mqueue', fstype: 'mqueue', flags: MS_NOSUID | MS_NODEV | MS_NOEXEC },
  {
    source: 'cgroup2',
    target: '/sys/fs/cgroup',
    fstype: 'cgroup2',
    flags: MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME,
    // Every exec session is moved into the container's cgroup; without this each move waits out an RCU
    // grace period (about 12 ms of a 30 ms exec under TCG, measured by bench/vm-exec.bench.ts).
    data: 'favordynmods',
  },
];

/** Mounts each; one already mounted (EBUSY) is fine, any other failure is reported and the rest go on. */
export function mountAll(sys: Sys, specs: readonly MountSpec[]): { mounted: string[]; failed: string[] } {
  const mounted: string[] = [];
  const failed: string[] = [];
  for (const spec of specs) {
    if (spec.presentWhen && existsSync(spec.presentWhen)) continue;
    try {
      mkdirSync(spec.target, { recursive: true });
      sys.mount(spec.source, spec.target, spec.fstype, spec.flags, spec.data ?? null);
      mounted.push(spec.target);
    } catch (error) {
      if (isErrno(error, 'EBUSY')) continue;
      failed.push(error instanceof Error ? error.message : String(error));
    }
  }
  return { mounted, failed };
}
