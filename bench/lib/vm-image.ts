/**
 * What the VM benches share about boot images: which to boot, whether each is complete, and whether its
 * agent takes a status key. BENCH_IMAGE_DIR replaces the image (an older build, measured by the same bench
 * and the same host code); BENCH_COMPARE_IMAGE_DIR adds a second one, measured in the same run, turn and
 * turn about with the first: on a noisy machine that is the only before/after that holds still.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateChannelKeys, type ChannelKeys } from '../../hostside/src/vm/channel-keys.ts';
import type { Vm } from '../../hostside/src/vm/driver.ts';
import type { QemuDriver } from '../../hostside/src/vm/qemu/qemu-driver.ts';
import { generateStatusKey } from '../../hostside/src/vm/status-key.ts';
import type { AgentConfig } from '../../protocol/src/config/config.ts';
import { REPO } from './harness.ts';

export interface BootImage {
  /** How the tables name it: "tether", or "compare" for BENCH_COMPARE_IMAGE_DIR. */
  label: string;
  dir: string;
  /** Whether its agent knows channel.statusKey (see agentTakesStatusKey). */
  statusKey: boolean;
}

const IMAGE_FILES = ['vmlinuz', 'initramfs.cpio.gz', 'runtime.img', 'busybox.img'];

/** The first missing file of the image, as a sentence with the fix; undefined when all are there. */
function missingFile(dir: string): string | undefined {
  const missing = IMAGE_FILES.find((file) => !existsSync(join(dir, file)));
  return missing === undefined ? undefined : `${join(dir, missing)} is missing: run \`make build image\``;
}

/**
 * Whether the image's agent knows channel.statusKey. Agents built before console status lines were signed
 * refuse a config that has it (unknown fields are refused as typos), so it is given only to those that
 * know it. The agent executable next to the image holds its bundle as plain text: the field's name is in
 * it exactly when the agent reads the field. Without the executable, assume a current agent.
 */
function agentTakesStatusKey(dir: string): boolean {
  const agent = join(dir, 'tether');
  if (!existsSync(agent)) return true;
  return readFileSync(agent).includes('statusKey');
}

/** The images to measure, the first being the main one; or why they cannot be (a missing file). */
export function bootImages(): BootImage[] | string {
  const dirs: [string, string][] = [['tether', process.env['BENCH_IMAGE_DIR'] ?? join(REPO, 'build/image')]];
  const compare = process.env['BENCH_COMPARE_IMAGE_DIR'];
  if (compare) dirs.push(['compare', compare]);
  const images: BootImage[] = [];
  for (const [label, dir] of dirs) {
    const missing = missingFile(dir);
    if (missing) return missing;
    images.push({ label, dir, statusKey: agentTakesStatusKey(dir) });
  }
  return images;
}

/** One line per image, for the bench's header. */
export function describeImages(images: BootImage[]): string {
  return images
    .map((image) => `${image.label} = ${image.dir}${image.statusKey ? '' : ' (agent without status keys)'}`)
    .join('; ');
}

export interface ImageVmOptions {
  /** The container's root disk: an image's top layer qcow2 (default: the boot image's busybox.img). */
  rootDisk?: string;
  /**
   * Boot on the writable layer already in stateDir (made by driver.createRootLayer, as tetherd does at
   * docker create) instead of a fresh one.
   */
  keepRootLayer?: boolean;
}

/**
 * Boots `image` through the QEMU driver with `argv` as the container's main process, as tetherd would (its
 * own channel keys, a status key when the agent knows one, power-off when the process ends). The caller
 * connects with `keys.credentials` and kills and releases the VM.
 */
export async function startImageVm(
  driver: QemuDriver,
  image: BootImage,
  stateDir: string,
  argv: string[],
  options: ImageVmOptions = {},
): Promise<{ vm: Vm; keys: ChannelKeys }> {
  const id = `bench-${image.label}-${Date.now().toString(36)}`;
  const keys = generateChannelKeys(id);
  const config: AgentConfig = {
    version: 1,
    id,
    hostname: 'bench',
    storage: { root: { serial: 'tether-root', fstype: 'ext4' } },
    network: driver.guestNetwork(),
    channel: {
      hostKey: keys.agentHostKey,
      authorizedKeys: [keys.clientPublicKey],
      ...(image.statusKey ? { statusKey: generateStatusKey() } : {}),
    },
    process: { argv },
    powerOffOnExit: true,
  };
  const vm = await driver.start({
    id,
    stateDir,
    kernel: join(image.dir, 'vmlinuz'),
    initramfs: join(image.dir, 'initramfs.cpio.gz'),
    runtimeDisk: join(image.dir, 'runtime.img'),
    rootDisk: options.rootDisk ?? join(image.dir, 'busybox.img'),
    ...(options.keepRootLayer ? { keepRootLayer: true } : {}),
    config: Buffer.from(JSON.stringify(config)),
  });
  return { vm, keys };
}
