/**
 * Applies one plain layer tar to a raw ext4 image in place, without root or a mount: the tar is read once
 * (tar-stream); each regular file's bytes are spooled to a temp file; every `batchBytes` of spooled data
 * the script for those entries (debugfs-script.ts) runs with `debugfs -w -f` and the spooled files go, so
 * a layer never sits whole in memory, nor on disk beyond one batch.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tarStream from 'tar-stream';
import { exactXattrs, withExactXattrs } from './pax-xattrs.ts';
import type { RawHeader } from '../layer-tree.ts';
import { asInvalid } from '../layers.ts';
import { lowerImageOf, runScript } from './debugfs-run.ts';
import { ScriptGenerator, type LayerEntry, type ScriptPart, type ScriptStats } from './debugfs-script.ts';

export interface ApplyLayerOptions {
  /** The raw ext4 image of the layers below; changed in place (on failure it is half changed: drop it). */
  rawImage: string;
  /** The layer as a plain (uncompressed) tar. */
  layerTar: string;
  /** A directory for temp files (spooled file data, scripts); a temp directory in it is made and removed. */
  workDir: string;
  /** The layer's name in error messages (default: the tar's path). */
  what?: string;
  /** Spooled file bytes per debugfs run (default 256 MiB). */
  batchBytes?: number;
  /** The clock debugfs stamps new inodes with, in seconds (default 1): fixed, so results are repeatable. */
  fakeTime?: number;
}

export interface ApplyLayerStats extends ScriptStats {
  /** Tar entries read. */
  entries: number;
  /** Bytes of regular files written into the image. */
  dataBytes: number;
  /** Commands run in `debugfs -w`. */
  commands: number;
  /** `debugfs -w` runs (one per batch, plus one for the directory times). */
  applyRuns: number;
  /** Read-only debugfs runs to list the image's directories and read link counts. */
  lookupRuns: number;
}

const DEFAULT_BATCH = 256 * 1024 * 1024;

/**
 * Applies the layer tar `layerTar` to the ext4 image `rawImage` with OCI/Docker semantics (whiteouts,
 * opaque directories, hard links, devices, owners, modes, times, xattrs).
 *
 * Throws TetherError TETHER_IMAGE_INVALID (a broken tar, paths that escape the root, links to nothing),
 * TETHER_IMAGE_UNSUPPORTED (names debugfs cannot carry, device numbers over 65535...) or
 * TETHER_ROOTFS_FAILED (a debugfs command failed, naming it and debugfs's message; a full filesystem says
 * so). Needs debugfs (e2fsprogs 1.47).
 */
export async function applyLayer(options: ApplyLayerOptions): Promise<ApplyLayerStats> {
  const what = options.what ?? options.layerTar;
  const batchBytes = options.batchBytes ?? DEFAULT_BATCH;
  await mkdir(options.workDir, { recursive: true });
  const work = await mkdtemp(join(options.workDir, 'apply-'));
  const lower = lowerImageOf(options.rawImage, work);
  const generator = new ScriptGenerator(lower, { valueDir: work, what });
  let entries = 0;
  let dataBytes = 0;
  let commands = 0;
  let applyRuns = 0;
  let batch: LayerEntry[] = [];
  let spooled = 0;

  const run = async (part: ScriptPart, files: readonly string[]): Promise<void> => {
    try {
      for (const { path, data } of part.valueFiles) await writeFile(path, data);
      if (part.commands.length > 0) {
        await runScript(options.rawImage, part.commands, {
          workDir: work,
          what,
          ...(options.fakeTime !== undefined ? { fakeTime: options.fakeTime } : {}),
        });
        applyRuns++;
        commands += part.commands.length;
      }
    } finally {
      for (const file of [...files, ...part.valueFiles.map(({ path }) => path)])
        await rm(file, { force: true });
    }
  };
  const flush = async (): Promise<void> => {
    const files = batch.flatMap(({ dataFile }) => (dataFile ? [dataFile] : []));
    const part = await generator.plan(batch).catch(async (error: unknown) => {
      for (const file of files) await rm(file, { force: true });
      throw error;
    });
    batch = [];
    spooled = 0;
    await run(part, files);
  };

  try {
    // tar-stream loses binary pax values (security.capability): read them from the tar as bytes.
    const xattrs = await exactXattrs(options.layerTar);
    const extract = tarStream.extract();
    const feeding = pipeline(createReadStream(options.layerTar), extract);
    // Its failure also ends the iteration below, which reports it.
    feeding.catch(() => undefined);
    try {
      for await (const entry of extract) {
        const header = entry.header as RawHeader;
        const offset = (entry.header as { byteOffset?: number }).byteOffset;
        if (offset !== undefined && xattrs.has(offset))
          header.pax = withExactXattrs(header.pax, xattrs.get(offset));
        entries++;
        if (header.type === 'file' || header.type === 'contiguous-file') {
          const dataFile = join(work, `data-${entries}`);
          await pipeline(entry, createWriteStream(dataFile));
          batch.push({ header, dataFile });
          spooled += header.size ?? 0;
          dataBytes += header.size ?? 0;
        } else {
          entry.resume();
          batch.push({ header });
        }
        if (spooled >= batchBytes) await flush();
      }
      await feeding;
    } catch (error) {
      throw asInvalid(error, `${what} is not a valid tar`);
    }
    await flush();
    await run(generator.finish(), []);
    return { ...generator.stats, entries, dataBytes, commands, applyRuns, lookupRuns: lower.runs };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
