/**
 * A layer's delta: the 64 KiB clusters where the raw image after a layer differs from the one before,
 * written into a new qcow2 over the parent layer's qcow2, and nothing else.
 *
 * Finding them: both raws are sparse (an 8 GiB image holds a few hundred MiB), so only the data extents of
 * either (`qemu-img map -f raw`, which asks the filesystem with SEEK_DATA/SEEK_HOLE) are read and
 * compared; what is a hole in both is zeros in both. Writing them: one qemu-io per batch of runs, each run
 * (contiguous changed clusters) copied to a temp file first (`write -s` reads from the start of a file);
 * an all-zero run is `write -z`, a zero cluster that takes no data. Not `qemu-img convert -B`: it does not
 * compare with the backing file and writes every cluster.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, open, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';

const run = promisify(execFile);

/** qcow2's default cluster size: the unit a delta allocates. */
export const CLUSTER = 64 * 1024;
/** Longest run written by one qemu-io command (it reads the run into memory). */
const MAX_RUN = 16 * 1024 * 1024;
/** Bytes of runs spooled to temp files before a qemu-io writes them. */
const BATCH = 128 * 1024 * 1024;
/** Bytes read from each image at once. */
const CHUNK = 4 * 1024 * 1024;

export interface WriteDeltaOptions {
  /** The raw image before the layer (the parent chain's contents). */
  before: string;
  /** The raw image after the layer; the same size. */
  after: string;
  /** The qcow2 of the layers below (the top of the parent chain). */
  parentQcow2: string;
  /** The new qcow2 (must not exist); its backing file is `parentQcow2`, stored relative to `out`'s directory. */
  out: string;
  /** Where temp files go (default: the OS's temp directory); its path must hold no whitespace (qemu-io). */
  workDir?: string;
}

export interface DeltaResult {
  /** Bytes of the clusters written into `out` (changed clusters × 64 KiB). */
  changedBytes: number;
  /** Bytes of the data extents compared. */
  comparedBytes: number;
  /** Runs of contiguous changed clusters (qemu-io write commands). */
  runs: number;
}

export interface Extent {
  start: number;
  length: number;
}

/** Pure: the data extents of a `qemu-img map --output=json` of a raw file. */
export function dataExtents(json: string): Extent[] {
  const map = JSON.parse(json) as { start: number; length: number; data: boolean }[];
  return map.filter((entry) => entry.data).map(({ start, length }) => ({ start, length }));
}

/** Pure: extents merged and widened to whole clusters, sorted, within `size`. */
export function clusterRanges(extents: readonly Extent[], size: number): Extent[] {
  const widened = extents
    .map(({ start, length }) => {
      const from = Math.floor(start / CLUSTER) * CLUSTER;
      const to = Math.min(size, Math.ceil((start + length) / CLUSTER) * CLUSTER);
      return { start: from, end: to };
    })
    .filter(({ start, end }) => end > start)
    .sort((a, b) => a.start - b.start);
  const merged: { start: number; end: number }[] = [];
  for (const range of widened) {
    const last = merged.at(-1);
    if (last && range.start <= last.end) last.end = Math.max(last.end, range.end);
    else merged.push({ ...range });
  }
  return merged.map(({ start, end }) => ({ start, length: end - start }));
}

async function qemuImg(args: string[], what: string): Promise<string> {
  try {
    const { stdout } = await run('qemu-img', args, { maxBuffer: 256 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new TetherError('TETHER_ROOTFS_FAILED', `${what}: ${stderr || (error as Error).message}`, {
      cause: error,
    });
  }
}

async function readFully(
  handle: FileHandle,
  buffer: Buffer,
  length: number,
  position: number,
): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) {
      buffer.fill(0, done, length);
      return;
    }
    done += bytesRead;
  }
}

interface Run {
  offset: number;
  length: number;
  /** Temp file with the run's bytes; undefined for a run of zeros. */
  file?: string;
}

/**
 * Writes into a new qcow2 `out` (backing: `parentQcow2`, format qcow2, as a path relative to `out`'s
 * directory so that the store can move) exactly the 64 KiB clusters where `after` differs from `before`.
 * Reading `out` then gives `after`'s bytes. Throws TETHER_ROOTFS_FAILED when qemu-img or qemu-io fail, and
 * when the two images differ in size.
 */
export async function writeDelta(options: WriteDeltaOptions): Promise<DeltaResult> {
  const [beforeSize, afterSize] = await Promise.all([stat(options.before), stat(options.after)]).then(
    (stats) => stats.map(({ size }) => size),
  );
  if (beforeSize !== afterSize)
    throw new TetherError(
      'TETHER_ROOTFS_FAILED',
      `${options.before} (${beforeSize} bytes) and ${options.after} (${afterSize} bytes) differ in size`,
    );
  const size = afterSize!;
  const work = await mkdtemp(join(options.workDir ?? tmpdir(), 'delta-'));
  if (/\s/.test(work))
    throw new TetherError(
      'TETHER_ROOTFS_FAILED',
      `temp directory "${work}" holds whitespace, which qemu-io cannot take`,
    );
  const backing = relative(dirname(options.out), options.parentQcow2);
  const result: DeltaResult = { changedBytes: 0, comparedBytes: 0, runs: 0 };
  const handles: FileHandle[] = [];
  try {
    await qemuImg(
      ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', backing, options.out, String(size)],
      `creating ${options.out} over ${options.parentQcow2}`,
    );
    const maps = await Promise.all(
      [options.before, options.after].map((file) =>
        qemuImg(['map', '--output=json', '-f', 'raw', file], `mapping ${file}`),
      ),
    );
    const ranges = clusterRanges(maps.flatMap(dataExtents), size);
    const before = await open(options.before, 'r');
    handles.push(before);
    const after = await open(options.after, 'r');
    handles.push(after);

    let pending: Run[] = [];
    let pendingBytes = 0;
    let current: { offset: number; chunks: Buffer[]; length: number } | undefined;
    const flushBatch = async (): Promise<void> => {
      if (pending.length === 0) return;
      const commands = pending.flatMap(({ offset, length, file }) => [
        '-c',
        file ? `write -q -s ${file} ${offset} ${length}` : `write -q -z ${offset} ${length}`,
      ]);
      try {
        const { stderr } = await run('qemu-io', ['-f', 'qcow2', ...commands, options.out], {
          maxBuffer: 16 * 1024 * 1024,
        });
        // qemu-io reports a failed command on stderr and may still exit 0.
        if (stderr.trim()) throw Object.assign(new Error(stderr.trim()), { stderr });
      } catch (error) {
        const stderr = (error as { stderr?: string }).stderr?.trim();
        throw new TetherError(
          'TETHER_ROOTFS_FAILED',
          `writing ${pending.length} runs into ${options.out}: ${stderr || (error as Error).message}`,
          { cause: error },
        );
      }
      for (const { file } of pending) if (file) await rm(file, { force: true });
      pending = [];
      pendingBytes = 0;
    };
    const endRun = async (): Promise<void> => {
      if (!current) return;
      const data = Buffer.concat(current.chunks);
      const zero = data.every((byte) => byte === 0);
      const runFile = zero ? undefined : join(work, `run-${result.runs}`);
      if (runFile) await writeFile(runFile, data);
      pending.push({ offset: current.offset, length: current.length, ...(runFile ? { file: runFile } : {}) });
      pendingBytes += runFile ? current.length : 0;
      result.runs++;
      current = undefined;
      if (pendingBytes >= BATCH) await flushBatch();
    };

    const a = Buffer.alloc(CHUNK);
    const b = Buffer.alloc(CHUNK);
    for (const range of ranges) {
      for (let at = range.start; at < range.start + range.length; at += CHUNK) {
        const length = Math.min(CHUNK, range.start + range.length - at);
        await Promise.all([readFully(before, a, length, at), readFully(after, b, length, at)]);
        result.comparedBytes += length;
        for (let c = 0; c < length; c += CLUSTER) {
          const end = Math.min(c + CLUSTER, length);
          if (a.subarray(c, end).equals(b.subarray(c, end))) {
            await endRun();
            continue;
          }
          if (current && current.offset + current.length !== at + c) await endRun();
          current ??= { offset: at + c, chunks: [], length: 0 };
          current.chunks.push(Buffer.from(b.subarray(c, end)));
          current.length += end - c;
          result.changedBytes += end - c;
          if (current.length >= MAX_RUN) await endRun();
        }
      }
      await endRun();
    }
    await endRun();
    await flushBatch();
    return result;
  } catch (error) {
    await rm(options.out, { force: true });
    throw error;
  } finally {
    for (const handle of handles) await handle.close();
    await rm(work, { recursive: true, force: true });
  }
}
