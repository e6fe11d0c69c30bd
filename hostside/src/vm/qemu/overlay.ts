/**
 * The VM's private writable root disk: a qcow2 layer over the shared, never-written root filesystem image.
 * Creating one is instant and sparse; the base image stays byte-identical however the container writes.
 */
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';

const run = promisify(execFile);

/** Pure: the qemu-img arguments. The base is made absolute because qcow2 resolves a relative one against the overlay's folder. */
export function overlayArgs(base: string, overlay: string, baseFormat = 'raw'): string[] {
  return ['create', '-q', '-f', 'qcow2', '-F', baseFormat, '-b', resolve(base), overlay];
}

export async function createOverlay(base: string, overlay: string, qemuImg = 'qemu-img'): Promise<void> {
  try {
    await run(qemuImg, overlayArgs(base, overlay));
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
