/**
 * Named volumes (`docker volume create`, `docker run -v NAME:/path`): each volume is a disk of its own, a
 * sparse ext4 image that outlives the containers that mount it, as a VMDK volume did in vSphere Integrated
 * Containers. A container's VM gets it as one more virtio disk, found by serial, and the agent mounts it at
 * its path before the switch into the container's root.
 *
 * On disk, under `ROOT/volumes`:
 *
 *   <name>/volume.json     { name, createdAt, labels, options, anonymous, sizeMiB }
 *   <name>/disk.img        the filesystem (raw ext4, sparse: a new volume takes a few MiB whatever its size)
 *   .new-<name>            a volume being made; renamed into place whole, removed when the store opens
 *
 * A volume is a block device, not a shared folder: two VMs that both mount it writable would corrupt it,
 * so which container may mount it when is the container manager's to check (see `users`).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import * as v from 'valibot';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import { fsyncPath, fsyncTree, writeFileAtomic } from '../state/atomic-file.ts';

const run = promisify(execFile);

/** Docker's rule for volume names (daemon/names: RestrictedNamePattern). */
const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;
const NEW = '.new-';
/** Room a volume has unless created with `-o size=`: sparse, so it costs nothing until written. */
export const DEFAULT_VOLUME_SIZE_MIB = 8192;
const MIN_VOLUME_SIZE_MIB = 16;

const VolumeMeta = v.object({
  name: v.string(),
  createdAt: v.string(),
  labels: v.record(v.string(), v.string()),
  options: v.record(v.string(), v.string()),
  anonymous: v.boolean(),
  sizeMiB: v.number(),
});
export type VolumeRecord = v.InferOutput<typeof VolumeMeta>;

export interface CreateVolumeRequest {
  /** Docker's rules; a random 64-hex name when absent (an anonymous volume). */
  name?: string | undefined;
  labels?: Record<string, string> | undefined;
  /** `-o` driver options: only `size` (e.g. 10G, 512M, bytes without a unit). */
  options?: Record<string, string> | undefined;
  anonymous?: boolean;
}

export interface VolumeStoreOptions {
  /** mkfs.ext4's path (default: /sbin/mkfs.ext4 when present, else from PATH). */
  mkfs?: string;
  warn?: (message: string) => void;
}

/** Pure: `-o size=` in MiB (units k, m, g, t as Docker's go-units reads them, 1024-based); a TetherError otherwise. */
export function parseVolumeSize(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(text.trim());
  if (!match)
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      `invalid size for the volume: ${JSON.stringify(text)} (use e.g. 512M or 10G)`,
    );
  const unit = { '': 1 / (1024 * 1024), k: 1 / 1024, m: 1, g: 1024, t: 1024 * 1024 }[
    match[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'
  ];
  const mib = Math.ceil(Number(match[1]) * unit);
  if (mib < MIN_VOLUME_SIZE_MIB)
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      `a volume needs at least ${MIN_VOLUME_SIZE_MIB} MiB (got size=${text})`,
    );
  return mib;
}

export class VolumeStore {
  readonly #dir: string;
  readonly #options: VolumeStoreOptions;
  readonly #volumes = new Map<string, VolumeRecord>();
  /** Names being created: a second create of one of them waits for the first. */
  readonly #creating = new Map<string, Promise<VolumeRecord>>();

  constructor(dir: string, options: VolumeStoreOptions = {}) {
    this.#dir = dir;
    this.#options = options;
    mkdirSync(dir, { recursive: true });
    for (const name of readdirSync(dir)) {
      if (name.startsWith(NEW) || name.startsWith('.deleted-')) {
        rmSync(join(dir, name), { recursive: true, force: true });
        continue;
      }
      try {
        const meta = v.parse(VolumeMeta, JSON.parse(readFileSync(join(dir, name, 'volume.json'), 'utf8')));
        if (meta.name !== name) throw new Error(`it names the volume ${meta.name}`);
        if (!existsSync(join(dir, name, 'disk.img'))) throw new Error('no disk.img');
        this.#volumes.set(name, meta);
      } catch (error) {
        options.warn?.(
          `volume ${join(dir, name)} skipped, it cannot be read back: ${(error as Error).message}`,
        );
      }
    }
  }

  list(): VolumeRecord[] {
    return [...this.#volumes.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): VolumeRecord {
    const volume = this.#volumes.get(name);
    if (!volume) throw new TetherError('TETHER_NO_SUCH_VOLUME', `get ${name}: no such volume`);
    return volume;
  }

  has(name: string): boolean {
    return this.#volumes.has(name);
  }

  /** The volume's disk on the host. */
  disk(name: string): string {
    return join(this.#dir, this.get(name).name, 'disk.img');
  }

  /** Where Docker would show the volume's data: here, the folder holding its disk. */
  mountpoint(name: string): string {
    return join(this.#dir, name);
  }

  /** Bytes the volume's disk takes on the host. */
  diskBytes(name: string): number {
    try {
      return statSync(this.disk(name)).blocks * 512;
    } catch {
      return 0;
    }
  }

  /**
   * `docker volume create`: a new volume, or the existing one of that name (Docker answers a create of an
   * existing name with it, unless its options differ).
   */
  async create(request: CreateVolumeRequest = {}): Promise<VolumeRecord> {
    const name = request.name || randomBytes(32).toString('hex');
    if (!NAME_RE.test(name))
      throw new TetherError(
        'TETHER_INVALID_PARAMETER',
        `create ${name}: "${name}" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path`,
      );
    const options = request.options ?? {};
    for (const key of Object.keys(options))
      if (key !== 'size')
        throw new TetherError(
          'TETHER_INVALID_PARAMETER',
          `create ${name}: unknown option ${JSON.stringify(key)}: a volume is a disk, and takes only size=`,
        );
    const sizeMiB =
      options['size'] !== undefined ? parseVolumeSize(options['size']) : DEFAULT_VOLUME_SIZE_MIB;
    const existing = this.#volumes.get(name);
    if (existing) {
      if (options['size'] !== undefined && existing.sizeMiB !== sizeMiB)
        throw new TetherError(
          'TETHER_CONFLICT',
          `create ${name}: a volume of that name exists with size=${existing.sizeMiB}M`,
        );
      return existing;
    }
    const pending = this.#creating.get(name);
    if (pending) return pending;
    const made = this.#make({
      name,
      createdAt: new Date().toISOString(),
      labels: request.labels ?? {},
      options,
      anonymous: request.anonymous ?? false,
      sizeMiB,
    }).finally(() => this.#creating.delete(name));
    this.#creating.set(name, made);
    return made;
  }

  async #make(record: VolumeRecord): Promise<VolumeRecord> {
    const partial = join(this.#dir, `${NEW}${record.name}`);
    rmSync(partial, { recursive: true, force: true });
    mkdirSync(partial, { recursive: true, mode: 0o700 });
    try {
      const disk = join(partial, 'disk.img');
      writeFileSync(disk, '');
      truncateSync(disk, record.sizeMiB * 1024 * 1024);
      // lazy_*_init: the journal and inode tables are left unwritten (a sparse file reads as zeros), so
      // a new volume takes a few MiB; the agent mounts volumes with noinit_itable, so the guest does not
      // zero them later either.
      await run(this.#mkfs(), [
        '-q',
        '-F',
        '-m',
        '0',
        '-E',
        'lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0',
        '-L',
        record.name.slice(0, 16),
        disk,
      ]);
      // A Docker volume starts empty: mkfs's lost+found would be in the container's way (initdb, for one,
      // refuses a data directory that is not empty). e2fsck makes it again if it ever needs it.
      await run(this.#tool('debugfs'), ['-w', '-R', 'rmdir lost+found', disk]);
      writeFileAtomic(join(partial, 'volume.json'), JSON.stringify(record) + '\n', 0o644, partial);
      fsyncTree(partial);
      renameSync(partial, join(this.#dir, record.name));
      fsyncPath(this.#dir);
      this.#volumes.set(record.name, record);
      return record;
    } catch (error) {
      rmSync(partial, { recursive: true, force: true });
      if (error instanceof TetherError) throw error;
      const failure = error as NodeJS.ErrnoException & { stderr?: string };
      throw new TetherError(
        'TETHER_ROOTFS_FAILED',
        failure.code === 'ENOENT'
          ? `mkfs.ext4 not found: install it with 'apt-get install e2fsprogs'`
          : `could not make the volume ${record.name}'s filesystem: ${(failure.stderr ?? failure.message).trim()}`,
        { cause: error },
      );
    }
  }

  #mkfs(): string {
    return this.#options.mkfs ?? this.#tool('mkfs.ext4');
  }

  /** An e2fsprogs tool: in /sbin on Debian, which a non-root PATH may lack. */
  #tool(name: string): string {
    for (const dir of ['/sbin', '/usr/sbin']) if (existsSync(join(dir, name))) return join(dir, name);
    return name;
  }

  /** `docker volume rm`: the caller has checked that no container uses it (unless forced). */
  remove(name: string): void {
    this.get(name);
    const trash = join(this.#dir, `.deleted-${name}`);
    rmSync(trash, { recursive: true, force: true });
    renameSync(join(this.#dir, name), trash);
    fsyncPath(this.#dir);
    this.#volumes.delete(name);
    rmSync(trash, { recursive: true, force: true });
  }
}
