/**
 * The VM's private writable root disk: a qcow2 layer over the shared, never-written root filesystem image.
 * Creating one is instant and sparse; the base image stays byte-identical however the container writes.
 */
import { execFile } from 'node:child_process';
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';

const run = promisify(execFile);

/** Pure: the qemu-img arguments. The base is made absolute because qcow2 resolves a relative one against the overlay's folder. */
export function overlayArgs(base: string, overlay: string, baseFormat = 'raw'): string[] {
  return ['create', '-q', '-f', 'qcow2', '-F', baseFormat, '-b', resolve(base), overlay];
}

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

/** The format of a disk image file: qcow2 by its magic, raw otherwise (an image's layered or flat disk). */
export function diskFormat(path: string): 'qcow2' | 'raw' {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(4);
    const read = readSync(fd, head, 0, 4, 0);
    return read === 4 && head.readUInt32BE(0) === QCOW2_MAGIC ? 'qcow2' : 'raw';
  } finally {
    closeSync(fd);
  }
}

export async function createOverlay(base: string, overlay: string, qemuImg = 'qemu-img'): Promise<void> {
  try {
    await run(qemuImg, overlayArgs(base, overlay, existsSync(base) ? diskFormat(base) : 'raw'));
  } catch (error) {
    const failure = error as NodeJS.ErrnoException & { stderr?: string };
    throw new TetherError(
      'TETHER_VM_FAILED',
      failure.code === 'ENOENT'
        ? `${qemuImg} not found: install it with 'apt-get install qemu-utils'`
        : `${qemuImg} could not create the root disk layer ${overlay} over ${base}: ${(failure.stderr ?? failure.message).trim()}`,
      { cause: error },
    );
  }
}

/**
 * Pure: the backing file a qcow2 header names (undefined when it names none). Header layout (qcow2 spec,
 * docs/interop/qcow2.txt): magic u32 at 0, version u32 at 4, backing_file_offset u64 at 8,
 * backing_file_size u32 at 16, all big-endian; the name is not NUL-terminated.
 */
export function qcow2BackingFile(file: Buffer): string | undefined {
  if (file.length < 20 || file.readUInt32BE(0) !== QCOW2_MAGIC)
    throw new Error('not a qcow2 image (bad magic)');
  const offset = Number(file.readBigUInt64BE(8));
  const size = file.readUInt32BE(16);
  if (offset === 0 || size === 0) return undefined;
  if (offset + size > file.length) throw new Error('qcow2 backing file name lies past the header read');
  return file.toString('utf8', offset, offset + size);
}

function readBackingFile(overlay: string): string | undefined {
  const fd = openSync(overlay, 'r');
  try {
    // The name sits in the first cluster (qemu-img puts it right after the header extensions).
    const head = Buffer.alloc(64 * 1024);
    const read = readSync(fd, head, 0, head.length, 0);
    return qcow2BackingFile(head.subarray(0, read));
  } finally {
    closeSync(fd);
  }
}

export interface RootLayerOptions {
  /** Use an existing layer as it is (the container's files from an earlier boot). */
  keep: boolean;
  /** Makes a fresh layer (default: createOverlay with qemu-img). */
  create?: (base: string, overlay: string) => Promise<void>;
}

/**
 * The VM's writable root layer: kept when asked and present (after checking it still lies over `base`, since
 * a layer over another image would show the guest a corrupt disk), otherwise made afresh over `base`.
 */
export async function prepareRootLayer(
  base: string,
  overlay: string,
  options: RootLayerOptions,
): Promise<'kept' | 'created'> {
  if (options.keep && existsSync(overlay)) {
    let backing: string | undefined;
    try {
      backing = readBackingFile(overlay);
    } catch (error) {
      throw new TetherError(
        'TETHER_VM_FAILED',
        `cannot keep the root disk layer ${overlay}: ${(error as Error).message}`,
        { cause: error },
      );
    }
    if (backing !== resolve(base))
      throw new TetherError(
        'TETHER_VM_FAILED',
        `cannot keep the root disk layer ${overlay}: it lies over ${backing ?? 'no image'}, not ${resolve(base)}`,
      );
    return 'kept';
  }
  await (options.create ?? createOverlay)(base, overlay);
  return 'created';
}
