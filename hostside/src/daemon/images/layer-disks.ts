/**
 * How a layer becomes a disk (docs/decisions/layered-rootfs.md): the lowest layer is a whole ext4
 * filesystem made from its tar by init-image/tar-to-ext4.sh (fakeroot + mkfs.ext4 -d, no root needed) at a
 * fixed, sparse virtual size, stored as qcow2; every layer above is applied by a generated debugfs script to
 * a raw copy of the filesystem below, and only the clusters that changed are kept, as a qcow2 delta over the
 * layer below's disk. The guest sees one ext4 disk whatever the layer count.
 *
 * A session keeps the raw filesystem of the last layer it built, so an image's layers, built bottom up in
 * one session, cost one raw copy each, not a qcow2 → raw conversion each.
 */
import { execFile } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import { applyLayer } from './ext4-layer/apply-layer.ts';
import { writeDelta } from './ext4-layer/delta.ts';

const run = promisify(execFile);

/** The virtual size of every image's filesystem: the container's writes share it (sparse until written). */
export const DEFAULT_ROOT_SIZE_MIB = 8192;

export interface LayerDiskSession {
  /** Makes the lowest layer's disk at `out` from its flattened tar (whiteouts already dropped). */
  base(flatTar: string, out: string): Promise<void>;
  /** Makes an upper layer's disk at `out`: `plainTar` applied over the disk `parent`. */
  upper(plainTar: string, parent: string, out: string): Promise<void>;
  /** Frees what the session keeps in its work folder. */
  close(): void;
}

export interface LayerDiskBuilder {
  /** A session working in `work` (a folder of its own, removed by the caller). */
  session(work: string): LayerDiskSession;
}

export interface Qcow2LayerDiskOptions {
  /** init-image/tar-to-ext4.sh */
  script: string;
  rootSizeMiB?: number;
  qemuImg?: string;
}

async function tool(command: string, args: string[], what: string): Promise<void> {
  try {
    await run(command, args, { maxBuffer: 16 * 1024 * 1024 });
  } catch (error) {
    const stderr = ((error as { stderr?: string }).stderr ?? (error as Error).message).trim();
    throw new TetherError(
      'TETHER_ROOTFS_FAILED',
      `${what}: ${stderr.split('\n').slice(-5).join('\n') || (error as Error).message}`,
      { cause: error },
    );
  }
}

/** The product's builder: ext4 in qcow2 deltas. */
export function qcow2LayerDisks(options: Qcow2LayerDiskOptions): LayerDiskBuilder {
  const qemuImg = options.qemuImg ?? 'qemu-img';
  const sizeMiB = options.rootSizeMiB ?? DEFAULT_ROOT_SIZE_MIB;
  return {
    session(work) {
      const current = join(work, 'current.raw');
      const before = join(work, 'before.raw');
      /** The disk whose filesystem `current` holds, if any. */
      let currentIs: string | undefined;
      return {
        async base(flatTar, out) {
          if (!existsSync(options.script))
            throw new TetherError(
              'TETHER_IMAGE_MISSING',
              `${options.script} not found: it turns tarballs into disk images (set TETHER_TAR_TO_EXT4 to its path)`,
            );
          currentIs = undefined;
          await tool(
            'bash',
            [options.script, flatTar, current, String(sizeMiB)],
            "could not turn the image's lowest layer into an ext4 disk",
          );
          await tool(qemuImg, ['convert', '-q', '-O', 'qcow2', current, out], `could not write ${out}`);
          currentIs = out;
        },
        async upper(plainTar, parent, out) {
          if (currentIs !== parent) {
            currentIs = undefined;
            rmSync(current, { force: true });
            await tool(
              qemuImg,
              ['convert', '-q', '-O', 'raw', parent, current],
              `could not read the layer below (${parent})`,
            );
          }
          currentIs = undefined;
          await tool('cp', ['--sparse=always', current, before], 'could not copy the filesystem');
          try {
            await applyLayer({ rawImage: current, layerTar: plainTar, workDir: work });
            await writeDelta({ before, after: current, parentQcow2: parent, out, workDir: work });
          } finally {
            rmSync(before, { force: true });
          }
          currentIs = out;
        },
        close() {
          rmSync(current, { force: true });
          rmSync(before, { force: true });
        },
      };
    },
  };
}
