/**
 * What the VM benches share about the boot image: which one to boot (BENCH_IMAGE_DIR, so that an older
 * build can be measured by the same bench and the same host code), whether it is complete, and whether its
 * agent takes a status key.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './harness.ts';

export const IMAGE_DIR = process.env['BENCH_IMAGE_DIR'] ?? join(REPO, 'build/image');

const IMAGE_FILES = ['vmlinuz', 'initramfs.cpio.gz', 'runtime.img', 'busybox.img'];

/** The first missing file of the image, as a sentence with the fix; undefined when all are there. */
export function missingImageFile(): string | undefined {
  const missing = IMAGE_FILES.find((file) => !existsSync(join(IMAGE_DIR, file)));
  return missing === undefined
    ? undefined
    : `${join(IMAGE_DIR, missing)} is missing: run \`make build image\``;
}

/**
 * Whether the image's agent knows channel.statusKey. Agents built before console status lines were signed
 * refuse a config that has it (unknown fields are refused as typos), so it is given only to those that
 * know it. The agent executable next to the image holds its bundle as plain text: the field's name is in
 * it exactly when the agent reads the field. Without the executable, assume a current agent.
 */
export function agentTakesStatusKey(): boolean {
  const agent = join(IMAGE_DIR, 'tether');
  if (!existsSync(agent)) return true;
  return readFileSync(agent).includes('statusKey');
}
