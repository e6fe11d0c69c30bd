/**
 * The container's cgroup (v2): every process of the container lives in it, the agent stays outside, so the
 * container's memory limit leaves the agent room in the VM and a fork bomb meets pids.max instead of the
 * agent. The kernel's OOM kills inside it are counted in memory.events, which is how they are reported.
 *
 * File access goes through CgroupFiles so the set-up can be tested against a recording fake.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TetherError } from '../../../protocol/src/errors/errors.ts';

export interface CgroupFiles {
  mkdir(path: string): void;
  write(path: string, text: string): void;
  read(path: string): string;
}

export const realCgroupFiles: CgroupFiles = {
  mkdir: (path) => mkdirSync(path, { recursive: true }),
  write: (path, text) => writeFileSync(path, text),
  read: (path) => readFileSync(path, 'utf8'),
};

export const CGROUP_ROOT = '/sys/fs/cgroup';
export const CONTAINER_CGROUP_NAME = 'container';

const MIB = 1024 * 1024;
/**
 * What the agent, the kernel's own allocations outside the container and the page cache of the runtime
 * need: the agent idles near 55 MiB and its heap is capped (stage0's V8 flags).
 */
export const AGENT_RESERVE_BYTES = 96 * MIB;
/** A container gets at least this much, however small the VM (the host refuses VMs that leave less). */
export const MIN_CONTAINER_MEMORY_BYTES = 16 * MIB;
/** Enough for a busy service's threads; a fork bomb stops here. Docker has no default; a VM has to. */
export const DEFAULT_PIDS_LIMIT = 1024;

export interface ContainerLimits {
  memoryBytes: number;
  pids: number;
}

export interface RequestedLimits {
  memoryBytes?: number;
  pids?: number;
}

/** The limits for a VM whose kernel reports `memTotalBytes`: what the host asked for, within what fits. */
export function containerLimits(memTotalBytes: number, requested: RequestedLimits = {}): ContainerLimits {
  const room = Math.max(MIN_CONTAINER_MEMORY_BYTES, memTotalBytes - AGENT_RESERVE_BYTES);
  const memoryBytes = Math.min(requested.memoryBytes ?? room, room);
  return { memoryBytes: Math.floor(memoryBytes / 4096) * 4096, pids: requested.pids ?? DEFAULT_PIDS_LIMIT };
}

/** MemTotal from /proc/meminfo, in bytes. */
export function memTotalBytes(meminfo: string): number {
  const match = /^MemTotal:\s+(\d+) kB$/m.exec(meminfo);
  if (!match) throw new TetherError('TETHER_SYSCALL', 'no MemTotal line in /proc/meminfo');
  return Number(match[1]) * 1024;
}

/** The `oom_kill` count of a memory.events file. */
export function oomKillCount(memoryEvents: string): number {
  const match = /^oom_kill (\d+)$/m.exec(memoryEvents);
  return match ? Number(match[1]) : 0;
}

export class ContainerCgroup {
  readonly path: string;
  readonly limits: ContainerLimits;
  readonly #files: CgroupFiles;

  private constructor(path: string, limits: ContainerLimits, files: CgroupFiles) {
    this.path = path;
    this.limits = limits;
    this.#files = files;
  }

  /**
   * Enables the memory and pids controllers for the root's children, makes the container's cgroup and sets
   * its limits. Throws TETHER_SYSCALL naming the file that refused.
   */
  static create(
    limits: ContainerLimits,
    files: CgroupFiles = realCgroupFiles,
    root = CGROUP_ROOT,
  ): ContainerCgroup {
    const path = join(root, CONTAINER_CGROUP_NAME);
    const write = (file: string, text: string): void => {
      try {
        files.write(file, text);
      } catch (error) {
        throw new TetherError(
          'TETHER_SYSCALL',
          `cgroup: cannot write "${text}" to ${file}: ${(error as Error).message}`,
          {
            cause: error,
          },
        );
      }
    };
    write(join(root, 'cgroup.subtree_control'), '+memory +pids');
    try {
      files.mkdir(path);
    } catch (error) {
      throw new TetherError('TETHER_SYSCALL', `cgroup: cannot create ${path}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    write(join(path, 'memory.max'), String(limits.memoryBytes));
    // No swap in the VM; said anyway so a swap device added later does not lift the limit.
    write(join(path, 'memory.swap.max'), '0');
    write(join(path, 'pids.max'), String(limits.pids));
    return new ContainerCgroup(path, limits, files);
  }

  get memoryEventsPath(): string {
    return join(this.path, 'memory.events');
  }

  /** How many processes of the container the kernel has OOM-killed so far (0 when unreadable). */
  oomKills(): number {
    try {
      return oomKillCount(this.#files.read(this.memoryEventsPath));
    } catch {
      return 0;
    }
  }
}
