/**
 * Disks by their virtio serial (`/sys/block/vd*\/serial`). Labels and UUIDs are no use here: a VMDK delta
 * carries its base's, so two disks of one container can look alike; the serial is set per disk by the host.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TetherError } from '../../../protocol/src/errors/errors.ts';

export function disksBySerial(sysBlock = '/sys/block'): Map<string, string> {
  const found = new Map<string, string>();
  let entries: string[] = [];
  try {
    entries = readdirSync(sysBlock);
  } catch {
    return found;
  }
  for (const name of entries) {
    try {
      const serial = readFileSync(join(sysBlock, name, 'serial'), 'utf8').trim();
      if (serial) found.set(serial, `/dev/${name}`);
    } catch {
      // Not a virtio disk (no serial attribute).
    }
  }
  return found;
}

/** Waits (bounded) for a disk: virtio devices probe asynchronously after their driver loads. */
export async function waitForDisk(
  serial: string,
  timeoutMs: number,
  sysBlock = '/sys/block',
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const disks = disksBySerial(sysBlock);
    const device = disks.get(serial);
    if (device) return device;
    if (Date.now() >= deadline) {
      const seen = [...disks].map(([s, d]) => `${d} (${s})`).join(', ') || 'none';
      throw new TetherError(
        'TETHER_DISK_NOT_FOUND',
        `no disk with virtio serial ${JSON.stringify(serial)} after ${timeoutMs} ms; disks seen: ${seen}. Attach it with -device virtio-blk-...,serial=${serial}`,
      );
    }
    await sleep(20);
  }
}
