/**
 * The log files of one container, as the hypervisor writes them, kept by size like Docker's json-file
 * driver (`--log-opt max-size` / `max-file`).
 *
 *   <dir>/container.log        the live file: the hypervisor's log-port file for the running boot
 *   <dir>/logs/000001.log ...  segments: earlier live files, renamed away (rotation, or sealed at a boot)
 *   <dir>/logs/index.json      which segments exist and how they join (replaced atomically)
 *
 * Every file has a sequence number; the live file's is reserved in the index before it becomes a
 * segment, so a reader names any file by its number whether it is still live or not. Each file records
 * its boot and whether it `continues` the previous file's byte stream (rotation: a frame may straddle the
 * two) or starts a boot (a fresh decoder; a torn frame at the end of the boot before is dropped). `start`
 * is the offset of the file's first frame boundary, needed once the file before it is pruned; it is
 * learnt from the bytes of the file before, when that one is complete (after the hypervisor reopened).
 *
 * Crash safety (tetherd may be killed at any instant). The index is replaced by write temp, fsync,
 * rename, fsync dir, so it is always a whole old or a whole new index. The order of each operation:
 *
 *   rotate   1. index: the live file is now segment N, a new live file N+1 continues it,
 *               `renaming: N (rotate)`
 *            2. rename container.log -> logs/N.log         3. hypervisor reopens (creates container.log)
 *            4. index: `renaming` cleared, start of N+1 recorded
 *   seal     1. index: the live file is segment N, a new boot's live file N+1, `renaming: N (seal)`
 *            2. rename container.log -> logs/N.log         3. index: `renaming` cleared
 *   prune    1. index without the oldest segments (the next one's start recorded first)
 *            2. unlink them
 *
 * Recovery on open, by what is on disk: with `renaming: N` set, logs/N.log missing and container.log
 * present, the rename did not happen: do it. Both present: the rename happened and, for a rotation, so
 * did the reopen (only the hypervisor creates container.log afterwards). logs/N.log present and
 * container.log missing after a rotation: the reopen is still owed (`pendingReopen`; the rotation driver
 * finishes it, or the next boot makes it moot). A segment file the index does not list is one a prune
 * had dropped from the index: unlink it. So no byte is lost (the live file is renamed, never copied) and
 * no segment is listed twice or left out.
 */
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BoundaryTracker } from './frame-scan.ts';
import { LOG_HEADER_BYTES } from '../../../../protocol/src/logs/log-frame.ts';

/** Docker's json-file defaults would keep everything; tetherd's defaults: 20 MiB x 5 files. */
export const DEFAULT_MAX_BYTES = 20 * 1024 * 1024;
export const DEFAULT_MAX_FILES = 5;
/** Hard cap on kept segments, whatever their size (a restart loop makes one small segment per boot). */
export const MAX_SEGMENTS = 1000;

export const LIVE_FILE_NAME = 'container.log';
const LOGS_DIR = 'logs';
const INDEX_NAME = 'index.json';
const SEGMENT_NAME = /^(\d{6,})\.log$/;

export interface FileRecord {
  seq: number;
  boot: number;
  /** True: continues the previous file's byte stream (rotation); false: the first file of a boot. */
  continues: boolean;
  /** Offset of the first frame boundary in the file; null while not known yet. */
  start: number | null;
}

interface IndexData {
  version: 1;
  nextSeq: number;
  lastBoot: number;
  segments: FileRecord[];
  live: FileRecord | null;
  renaming: { seq: number; reason: 'rotate' | 'seal' } | null;
}

/** One file of the log as a reader sees it. */
export interface LogFileRef extends FileRecord {
  path: string;
  /** The hypervisor writes this file now (or will, once the VM starts). */
  live: boolean;
}

/** What a reader needs to know about the store at one moment. */
export interface LogStoreView {
  /** Oldest first; the live file last when there is one. */
  files: LogFileRef[];
  /** The VM runs (markRunning() ... markStopped()). */
  running: boolean;
  /** How many times markStopped() was called: a follower ends on a stop it saw happen. */
  stops: number;
  /** A segment the hypervisor may still be writing (renamed, reopen not done yet). */
  rotatingSeq: number | undefined;
  removed: boolean;
}

/** Test hook: called at each named step of an operation; throwing simulates a crash there. */
export type CrashHook = (step: string) => void;

export interface LogStoreOptions {
  /** The hypervisor's log-port file (Vm.logPortPath); `<dir>/container.log` by default. */
  livePath?: string;
  crashHook?: CrashHook;
}

function emptyIndex(): IndexData {
  return { version: 1, nextSeq: 1, lastBoot: 0, segments: [], live: null, renaming: null };
}

function isFileRecord(value: unknown): value is FileRecord {
  const r = value as FileRecord;
  return (
    typeof r === 'object' &&
    r !== null &&
    Number.isSafeInteger(r.seq) &&
    Number.isSafeInteger(r.boot) &&
    typeof r.continues === 'boolean' &&
    (r.start === null || Number.isSafeInteger(r.start))
  );
}

function parseIndex(text: string): IndexData | undefined {
  try {
    const data = JSON.parse(text) as IndexData;
    if (
      data.version !== 1 ||
      !Number.isSafeInteger(data.nextSeq) ||
      !Number.isSafeInteger(data.lastBoot) ||
      !Array.isArray(data.segments) ||
      !data.segments.every(isFileRecord) ||
      !(data.live === null || isFileRecord(data.live))
    )
      return undefined;
    return data;
  } catch {
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

function fsyncDir(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * One container's log files. Keep one instance per container directory in the process: readers and the
 * rotation driver learn of boots, rotations and stops through its change events.
 */
export class LogStore {
  readonly dir: string;
  readonly logsDir: string;
  readonly livePath: string;
  readonly #indexPath: string;
  readonly #crashHook: CrashHook;
  #index: IndexData = emptyIndex();
  #pendingReopen = false;
  #rotatingSeq: number | undefined;
  #running = false;
  #stops = 0;
  #removed = false;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #listeners = new Set<() => void>();

  private constructor(dir: string, options: LogStoreOptions) {
    this.dir = dir;
    this.logsDir = join(dir, LOGS_DIR);
    this.livePath = options.livePath ?? join(dir, LIVE_FILE_NAME);
    this.#indexPath = join(this.logsDir, INDEX_NAME);
    this.#crashHook = options.crashHook ?? (() => {});
  }

  /** Opens (or creates) the store of a container directory, finishing whatever a crash interrupted. */
  static async open(dir: string, options: LogStoreOptions = {}): Promise<LogStore> {
    const store = new LogStore(dir, options);
    await store.#recover();
    return store;
  }

  /** The segment file of a sequence number. */
  segmentPath(seq: number): string {
    return join(this.logsDir, `${String(seq).padStart(6, '0')}.log`);
  }

  /** A rotation renamed the live file but the hypervisor has not been told to reopen yet (after a crash). */
  get pendingReopen(): boolean {
    return this.#pendingReopen;
  }

  view(): LogStoreView {
    const files: LogFileRef[] = this.#index.segments.map((r) => ({
      ...r,
      path: this.segmentPath(r.seq),
      live: false,
    }));
    if (this.#index.live) files.push({ ...this.#index.live, path: this.livePath, live: true });
    return {
      files,
      running: this.#running,
      stops: this.#stops,
      rotatingSeq: this.#rotatingSeq,
      removed: this.#removed,
    };
  }

  /** Calls `listener` after every change of the view; returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** The VM is up and its hypervisor writes the live file (call after it started, or after adopting it). */
  markRunning(): void {
    this.#running = true;
    this.#emit();
  }

  /**
   * The VM ended: the hypervisor will write nothing more. Followers read what is left and end. A
   * rotation still owed its reopen has nothing left to reopen.
   */
  markStopped(): void {
    this.#running = false;
    this.#stops += 1;
    this.#emit();
  }

  /** Size of the live file now (0 when there is none). */
  async liveSize(): Promise<number> {
    return (await sizeOf(this.livePath)) ?? 0;
  }

  /**
   * Before a VM boots: a live file left by the boot before becomes a segment (the hypervisor will
   * start a fresh file from offset 0), and the next boot's live file is reserved.
   */
  beginBoot(): Promise<void> {
    return this.#serial(async () => {
      this.#pendingReopen = false;
      this.#rotatingSeq = undefined;
      await this.#resolveStarts(); // every file is complete now
      const index = this.#index;
      const boot = index.lastBoot + 1;
      const size = index.live ? await sizeOf(this.livePath) : undefined;
      if (index.live && size !== undefined && size > 0) {
        const sealed = index.live;
        const next: IndexData = {
          ...index,
          nextSeq: index.nextSeq + 1,
          lastBoot: boot,
          segments: [...index.segments, sealed],
          live: { seq: index.nextSeq, boot, continues: false, start: 0 },
          renaming: { seq: sealed.seq, reason: 'seal' },
        };
        await this.#writeIndex(next);
        this.#crashHook('seal:index-written');
        await this.#renameLive(sealed.seq);
        this.#crashHook('seal:renamed');
        this.#emit();
        await this.#writeIndex({ ...this.#index, renaming: null });
      } else {
        if (size !== undefined) await unlink(this.livePath); // empty: nothing to keep
        const seq = index.live?.seq ?? index.nextSeq;
        await this.#writeIndex({
          ...index,
          nextSeq: Math.max(index.nextSeq, seq + 1),
          lastBoot: boot,
          live: { seq, boot, continues: false, start: 0 },
          renaming: null,
        });
      }
      this.#emit();
    });
  }

  /**
   * Rotation: renames the live file to the next segment and calls `reopen` (Vm.reopenLog), after which
   * the hypervisor writes a fresh live file that continues the same byte stream. Returns false when
   * there was no live file to rotate. Finishes a rotation left owed by a crash instead of starting one.
   */
  rotate(reopen: () => Promise<void>): Promise<boolean> {
    return this.#serial(async () => {
      if (this.#pendingReopen) {
        await this.#finishRotation(reopen);
        return true;
      }
      const index = this.#index;
      if (!index.live || (await sizeOf(this.livePath)) === undefined) return false;
      const rotated = index.live;
      await this.#writeIndex({
        ...index,
        nextSeq: index.nextSeq + 1,
        segments: [...index.segments, rotated],
        live: { seq: index.nextSeq, boot: rotated.boot, continues: true, start: null },
        renaming: { seq: rotated.seq, reason: 'rotate' },
      });
      this.#crashHook('rotate:index-written');
      await this.#renameLive(rotated.seq);
      this.#crashHook('rotate:renamed');
      this.#pendingReopen = true;
      this.#rotatingSeq = rotated.seq;
      this.#emit();
      await this.#finishRotation(reopen);
      return true;
    });
  }

  /**
   * Drops the oldest segments so that at most `maxFiles` files of about `maxBytes` remain, the live file
   * counting as one. Consecutive small segments (one per short boot) share a file's worth of bytes, as
   * Docker's single json file would hold them; MAX_SEGMENTS caps their number. Returns the number dropped.
   */
  prune(maxBytes: number = DEFAULT_MAX_BYTES, maxFiles: number = DEFAULT_MAX_FILES): Promise<number> {
    return this.#serial(async () => {
      await this.#resolveStarts();
      const segments = this.#index.segments;
      // Pack segments into file-sized slots, newest first; keep those in the first maxFiles - 1 slots.
      let slots = this.#index.live ? 1 : 0;
      let slotBytes = maxBytes;
      let keepFrom = segments.length;
      for (let i = segments.length - 1; i >= 0; i--) {
        const size = (await sizeOf(this.segmentPath(segments[i]!.seq))) ?? 0;
        if (slotBytes + size > maxBytes) {
          slots += 1;
          slotBytes = 0;
        }
        slotBytes += size;
        if (slots > maxFiles || segments.length - i > MAX_SEGMENTS) break;
        keepFrom = i;
      }
      // Never drop the segment the hypervisor may still write, nor one whose successor's start is unknown.
      let drop = 0;
      while (drop < keepFrom) {
        const victim = segments[drop]!;
        if (victim.seq === this.#rotatingSeq) break;
        const after = segments[drop + 1] ?? this.#index.live;
        if (after && after.continues && after.start === null) break;
        drop += 1;
      }
      if (drop === 0) return 0;
      const dropped = segments.slice(0, drop);
      await this.#writeIndex({ ...this.#index, segments: segments.slice(drop) });
      this.#crashHook('prune:index-written');
      this.#emit();
      for (const record of dropped) {
        await rm(this.segmentPath(record.seq), { force: true });
        this.#crashHook('prune:unlinked');
      }
      fsyncDir(this.logsDir);
      return drop;
    });
  }

  /** Deletes every log file of the container (docker rm). Readers end; the store is done with. */
  remove(): Promise<void> {
    return this.#serial(async () => {
      this.#removed = true;
      this.#running = false;
      await rm(this.logsDir, { recursive: true, force: true });
      await rm(this.livePath, { force: true });
      this.#index = emptyIndex();
      this.#emit();
    });
  }

  /**
   * The offset in `file` (a boundary) where frames written after now begin: its current end, or the
   * start of the frame being written there. For attach without a replay of the logs.
   */
  async boundaryAtEnd(file: LogFileRef): Promise<number> {
    const tracker = new BoundaryTracker(file.start ?? 0);
    try {
      await this.#feedFile(tracker, file.path, Infinity);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return file.start ?? 0;
      throw error;
    }
    return tracker.lastBoundary;
  }

  async #finishRotation(reopen: () => Promise<void>): Promise<void> {
    await reopen();
    this.#crashHook('rotate:reopened');
    this.#pendingReopen = false;
    this.#rotatingSeq = undefined;
    await this.#resolveStarts(false);
    await this.#writeIndex({ ...this.#index, renaming: null });
    this.#crashHook('rotate:done');
    this.#emit();
  }

  /**
   * Fills in unknown `start`s from the bytes of the file before (which must be complete: not the one
   * being rotated). Writes the index when something was learnt, unless `write` is false.
   */
  async #resolveStarts(write = true): Promise<void> {
    const files = [...this.#index.segments, ...(this.#index.live ? [this.#index.live] : [])];
    let changed = false;
    for (let i = 1; i < files.length; i++) {
      const file = files[i]!;
      const before = files[i - 1]!;
      if (file.start !== null || !file.continues) continue;
      if (before.start === null || before.seq === this.#rotatingSeq) break;
      const start = await this.#startAfter(before, file);
      if (start === undefined) break;
      file.start = start;
      changed = true;
    }
    if (changed && write) await this.#writeIndex({ ...this.#index });
  }

  /** Where the first frame of `file` begins, from the headers of `before` (from its start). */
  async #startAfter(before: FileRecord, file: FileRecord): Promise<number | undefined> {
    const tracker = new BoundaryTracker(before.start ?? 0);
    await this.#feedFile(tracker, this.#pathOf(before), Infinity);
    if (tracker.carry !== undefined) return tracker.carry;
    // The file before ends inside a header: its rest is at the start of `file`.
    const need = LOG_HEADER_BYTES - tracker.partialHeaderBytes;
    const fed = await this.#feedFile(tracker, this.#pathOf(file), need);
    return fed < need ? undefined : need + tracker.carry!;
  }

  /** Feeds a file's bytes (at most `limit`) to a tracker, jumping over payloads; returns bytes passed. */
  async #feedFile(tracker: BoundaryTracker, path: string, limit: number): Promise<number> {
    const handle = await open(path, 'r');
    try {
      const size = Math.min((await handle.stat()).size, limit);
      const buffer = Buffer.allocUnsafe(16 * 1024);
      let at = 0;
      while (at < size) {
        const jump = Math.min(tracker.pendingSkip, size - at);
        if (jump > 0) {
          tracker.advance(jump);
          at += jump;
          continue;
        }
        const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, size - at), at);
        if (bytesRead === 0) break;
        tracker.feed(buffer.subarray(0, bytesRead));
        at += bytesRead;
      }
      return at;
    } finally {
      await handle.close();
    }
  }

  #pathOf(record: FileRecord): string {
    return record.seq === this.#index.live?.seq ? this.livePath : this.segmentPath(record.seq);
  }

  async #renameLive(seq: number): Promise<void> {
    await rename(this.livePath, this.segmentPath(seq));
    fsyncDir(this.logsDir);
    fsyncDir(this.dir);
  }

  async #writeIndex(next: IndexData): Promise<void> {
    const temp = `${this.#indexPath}.tmp`;
    const handle = await open(temp, 'w');
    try {
      await handle.writeFile(JSON.stringify(next));
      this.#crashHook('index:temp-written');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, this.#indexPath);
    fsyncDir(this.logsDir);
    this.#index = next;
  }

  async #recover(): Promise<void> {
    await mkdir(this.logsDir, { recursive: true });
    await rm(`${this.#indexPath}.tmp`, { force: true });
    let text: string | undefined;
    try {
      text = await readFile(this.#indexPath, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    let index = text === undefined ? emptyIndex() : parseIndex(text);
    const names = await readdir(this.logsDir);
    const onDisk = names.flatMap((name) => {
      const match = SEGMENT_NAME.exec(name);
      return match ? [Number(match[1])] : [];
    });
    if (!index) {
      // Cannot happen through our own writes (the index is replaced atomically); if someone damaged it,
      // keep it for inspection and list the segments as separate streams (readers resync on frames).
      await writeFile(`${this.#indexPath}.damaged`, text ?? '');
      index = emptyIndex();
      index.segments = onDisk
        .sort((a, b) => a - b)
        .map((seq) => ({ seq, boot: 0, continues: false, start: null }));
      index.nextSeq = Math.max(0, ...onDisk) + 1;
    }
    const liveExists = await exists(this.livePath);
    if (index.renaming) {
      const { seq, reason } = index.renaming;
      const segmentExists = onDisk.includes(seq);
      if (!segmentExists && liveExists) {
        await this.#renameLive(seq); // the crash came before the rename
        onDisk.push(seq);
        if (reason === 'rotate') this.#pendingReopen = true;
      } else if (segmentExists && !liveExists) {
        if (reason === 'rotate') this.#pendingReopen = true;
      } else if (!segmentExists) {
        index.segments = index.segments.filter((r) => r.seq !== seq);
      }
      if (this.#pendingReopen) this.#rotatingSeq = seq;
    }
    // Segments a prune dropped from the index but had not unlinked yet.
    const listed = new Set(index.segments.map((r) => r.seq));
    for (const seq of onDisk) if (!listed.has(seq)) await rm(this.segmentPath(seq), { force: true });
    index.segments = index.segments.filter((r) => onDisk.includes(r.seq));
    if (!index.live && (await exists(this.livePath))) {
      index.lastBoot += 1;
      index.live = { seq: index.nextSeq, boot: index.lastBoot, continues: false, start: 0 };
      index.nextSeq += 1;
    }
    if (!this.#pendingReopen) index.renaming = null;
    await this.#writeIndex(index);
    await this.#resolveStarts();
  }

  #serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => {});
    return run;
  }

  #emit(): void {
    for (const listener of [...this.#listeners]) listener();
  }
}
