/**
 * Image layers as disks, stored once each and shared by every image (and so every container) that has
 * them (docs/decisions/layered-rootfs.md). A layer's disk is a delta over the disk of the layer below, so
 * it is keyed by chain id (chain-id.ts), not by its own diff id.
 *
 * On disk, under `ROOT/images/layers`:
 *
 *   <chain hex>/layer.qcow2     the disk: for the lowest layer the whole ext4 filesystem, for the others only
 *                               the clusters that applying the layer changed, over ../<parent hex>/layer.qcow2
 *   <chain hex>/layer.json      { chainId, diffId, parent, size, created }
 *   .partial-<hex>              a layer being built; a sibling of the others, so that the relative path of
 *                               its backing file is already right when it is renamed into place
 *
 * A layer is published (renamed into place) only whole, and after its parent. Which layers are still needed
 * is the image store's to say: `collect` removes every layer no image names, which is how a layer leaves the
 * store with its last image, and how a crash or a refused import leaves nothing behind.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as v from 'valibot';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import { fsyncPath, fsyncTree, writeFileAtomic } from '../state/atomic-file.ts';
import { digestHex } from './chain-id.ts';

export const LAYER_DISK = 'layer.qcow2';
const LAYER_META = 'layer.json';
const PARTIAL = '.partial-';
const HEX_RE = /^[0-9a-f]{64}$/;

const LayerMeta = v.object({
  chainId: v.string(),
  diffId: v.string(),
  parent: v.nullable(v.string()),
  size: v.number(),
  created: v.string(),
});
export type LayerRecord = v.InferOutput<typeof LayerMeta>;

export class LayerStore {
  readonly #dir: string;
  readonly #layers = new Map<string, LayerRecord>();

  /** Opens (creating) the layer folder; layers half built when a process died go. */
  constructor(dir: string, warn?: (message: string) => void) {
    this.#dir = dir;
    mkdirSync(dir, { recursive: true });
    for (const name of readdirSync(dir)) {
      if (name.startsWith(PARTIAL)) {
        rmSync(join(dir, name), { recursive: true, force: true });
        continue;
      }
      if (!HEX_RE.test(name)) continue;
      try {
        const meta = v.parse(LayerMeta, JSON.parse(readFileSync(join(dir, name, LAYER_META), 'utf8')));
        if (digestHex(meta.chainId) !== name) throw new Error(`it names the chain ${meta.chainId}`);
        if (!existsSync(join(dir, name, LAYER_DISK))) throw new Error(`no ${LAYER_DISK}`);
        this.#layers.set(meta.chainId, meta);
      } catch (error) {
        warn?.(`layer ${join(dir, name)} skipped, it cannot be read back: ${(error as Error).message}`);
      }
    }
  }

  get directory(): string {
    return this.#dir;
  }

  has(chainId: string): boolean {
    return this.#layers.has(chainId);
  }

  get(chainId: string): LayerRecord | undefined {
    return this.#layers.get(chainId);
  }

  /** Every layer in the store. */
  all(): LayerRecord[] {
    return [...this.#layers.values()];
  }

  /** The disk of a stored layer (absolute when the store's folder is). */
  disk(chainId: string): string {
    return join(this.#dir, digestHex(chainId), LAYER_DISK);
  }

  /** Bytes the layer's disk takes on the host (allocated, not its virtual size). */
  diskBytes(chainId: string): number {
    try {
      return statSync(this.disk(chainId)).blocks * 512;
    } catch {
      return 0;
    }
  }

  /** Bytes the disks of these layers (default: every stored layer) take on the host, each counted once. */
  bytes(chainIds: Iterable<string> = this.#layers.keys()): number {
    let sum = 0;
    for (const chainId of new Set(chainIds)) sum += this.diskBytes(chainId);
    return sum;
  }

  /** How many of `chain` (bottom first) are stored, counting from the bottom. */
  storedCount(chain: readonly string[]): number {
    let count = 0;
    while (count < chain.length && this.#layers.has(chain[count]!)) count++;
    return count;
  }

  /**
   * Builds and publishes one layer: `build` writes its disk to the path it is given (a folder beside the
   * published ones). The parent must be stored already. Returns the record.
   */
  async add(
    layer: Omit<LayerRecord, 'created'>,
    build: (disk: string) => Promise<void>,
  ): Promise<LayerRecord> {
    const existing = this.#layers.get(layer.chainId);
    if (existing) return existing;
    if (layer.parent !== null && !this.#layers.has(layer.parent))
      throw new TetherError(
        'TETHER_ROOTFS_FAILED',
        `layer ${layer.chainId} cannot be built: the layer below it (${layer.parent}) is not in the store`,
      );
    const hex = digestHex(layer.chainId);
    const partial = join(this.#dir, `${PARTIAL}${hex}`);
    rmSync(partial, { recursive: true, force: true });
    mkdirSync(partial);
    try {
      await build(join(partial, LAYER_DISK));
      const record: LayerRecord = { ...layer, created: new Date().toISOString() };
      writeFileAtomic(join(partial, LAYER_META), JSON.stringify(record) + '\n', 0o644, partial);
      fsyncTree(partial);
      renameSync(partial, join(this.#dir, hex));
      fsyncPath(this.#dir);
      this.#layers.set(layer.chainId, record);
      return record;
    } catch (error) {
      rmSync(partial, { recursive: true, force: true });
      throw error;
    }
  }

  /**
   * Removes every layer not in `keep`. An image names all the layers of its chain, so a kept delta never
   * loses its parent.
   */
  collect(keep: ReadonlySet<string>): string[] {
    const removed: string[] = [];
    for (const chainId of [...this.#layers.keys()]) {
      if (keep.has(chainId)) continue;
      const hex = digestHex(chainId);
      const trash = join(this.#dir, `${PARTIAL}${hex}-deleted`);
      rmSync(trash, { recursive: true, force: true });
      renameSync(join(this.#dir, hex), trash);
      this.#layers.delete(chainId);
      rmSync(trash, { recursive: true, force: true });
      removed.push(chainId);
    }
    if (removed.length > 0) fsyncPath(this.#dir);
    return removed;
  }
}
