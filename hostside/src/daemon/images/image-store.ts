/**
 * tetherd's image store: `docker load` archives and pulled images in, each layer a disk stored once and
 * shared by every image that has it (layer-store.ts), tags, lookups by reference or id, removal.
 *
 * On disk, under the store's directory (`ROOT/images`):
 *
 *   <hex>/config.json       the image config exactly as loaded (its sha256 is the image id, sha256:<hex>)
 *   <hex>/image.json        what the store adds: unpacked size, load time
 *   layers/<chain hex>/     the layer disks (layer-store.ts); an image's root disk is its top layer's, a
 *                           qcow2 chain down to its lowest layer
 *   <hex>/rootfs.img        (images loaded before layers were stored apart: one flattened raw disk; still read)
 *   repositories.json       tags: { "name:tag": { id, taggedAt } }
 *   tmp/                    loads in progress and files being replaced; emptied when the store opens
 *
 * Layers are published first, bottom up; then an image directory, built whole under tmp/ and renamed into
 * place; repositories.json is replaced atomically, after the images it names exist and before an image it
 * no longer names is deleted; layers no image names are removed after that (and whenever the store opens).
 * A kill -9 at any moment leaves either the old state or the new one: at worst an image without tags
 * (listed as `<none>`), never a torn record nor half an image. One store (one tetherd) per directory.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import * as v from 'valibot';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import { tarToExt4Script } from '../../vm/paths.ts';
import { spoolArchive } from './archive.ts';
import { fsyncPath, fsyncTree, publishDirectory, writeFileAtomic } from '../state/atomic-file.ts';
import { chainIds } from './chain-id.ts';
import { qcow2LayerDisks, type LayerDiskBuilder, type LayerDiskSession } from './layer-disks.ts';
import { LayerStore } from './layer-store.ts';
import { flatSize, LayerTree } from './layer-tree.ts';
import { plainLayer, scanLayer, writeFlatTar } from './layers.ts';
import { planImages, type PlannedImage } from './plan.ts';
import { fullImageId, idPrefix, normalizeRepoTag, repoTagFor, shortId } from './reference.ts';
import { ImageConfigDocument, parseDocument } from './schemas.ts';

/** The `config` of an image config, in Docker's field names, without null fields. */
export interface ImageContainerConfig {
  Env?: string[];
  Cmd?: string[];
  Entrypoint?: string[];
  WorkingDir?: string;
  User?: string;
  ExposedPorts?: Record<string, unknown>;
  Volumes?: Record<string, unknown>;
  Labels?: Record<string, string>;
  StopSignal?: string;
  [field: string]: unknown;
}

export interface ImageRecord {
  /** `sha256:<hex>`: the sha256 of the image config. */
  id: string;
  /** `name:tag`, Docker's familiar form (`busybox:latest`, `tether/busybox:latest`). */
  repoTags: string[];
  /** ISO time the image was made (its config's `created`; Docker's zero time when it has none). */
  created: string;
  /** Bytes of the unpacked root filesystem (regular files, each hard-linked file once). */
  size: number;
  config: ImageContainerConfig;
  architecture: string;
  os: string;
  variant?: string;
  osVersion?: string;
  author?: string;
  comment?: string;
  dockerVersion?: string;
  /** rootfs.diff_ids of the config. */
  diffIds: string[];
  /** When a tag last moved onto this image. */
  lastTagTime?: string;
  /** The image's root disk, never written (VMs put a writable layer on it): its top layer's qcow2. */
  rootDisk: string;
  /** The chain ids of its layers, bottom first (empty for an image stored before layers were). */
  layers: string[];
}

/** Whether a container uses the image: its id (or name) to name it in the conflict message, or true. */
export type ImageInUse = (imageId: string) => string | boolean | undefined;

export interface ImageStoreOptions {
  /** init-image/tar-to-ext4.sh; default: TETHER_TAR_TO_EXT4 or the repository's. */
  script?: string;
  /** Virtual size of a new lowest layer's filesystem (layer-disks.ts's default otherwise). */
  rootSizeMiB?: number;
  /** Turns layer tars into disks (default: ext4 in qcow2 deltas; tests swap it). */
  layerDisks?: LayerDiskBuilder;
  /** Consulted by remove() unless it is given its own. */
  isInUse?: ImageInUse;
  /** Hears of what the store skipped when opening (an image or tag file it could not read back). */
  warn?: ImportProgress;
}

/**
 * Hears what an import does: a line for people, and for a layer's steps the layer (so that an API can draw
 * Docker's per-layer progress: `Loading layer`, `Already exists`, `Pull complete`).
 */
export type ImportProgress = (message: string, layer?: LayerProgress) => void;

export interface LayerProgress {
  /** Bottom first. */
  index: number;
  count: number;
  diffId: string;
  /** `exists`: the store had it; `building`: its disk is being made; `built`: made. */
  state: 'exists' | 'building' | 'built';
  /** Bytes of the layer's file as given (compressed or not), when there is one. */
  bytes?: number;
}

export interface LoadResult {
  /** What `docker load` prints: `Loaded image: name:tag`, or `Loaded image ID: sha256:...` when untagged. */
  loaded: string[];
  images: ImageRecord[];
}

export interface RemoveOptions {
  force?: boolean;
  isInUse?: ImageInUse;
}

const HEX_RE = /^[0-9a-f]{64}$/;
const ZERO_TIME = '0001-01-01T00:00:00Z';

const ImageMeta = v.looseObject({ size: v.number(), loaded: v.string() });
const Repositories = v.looseObject({
  tags: v.record(v.string(), v.looseObject({ id: v.string(), taggedAt: v.string() })),
});
type TagTable = Record<string, { id: string; taggedAt: string }>;

interface StoredImage {
  id: string;
  config: ImageConfigDocument;
  size: number;
  rootDisk: string;
  /** Chain ids, bottom first; empty for a flattened image of old (its own rootfs.img). */
  layers: string[];
}

/** Pure: the container config of an image config with null fields dropped. */
export function containerConfig(config: ImageConfigDocument): ImageContainerConfig {
  const out: ImageContainerConfig = {};
  for (const [key, value] of Object.entries(config.config ?? {}))
    if (value !== null && value !== undefined) out[key] = value;
  return out;
}

export class ImageStore {
  readonly #dir: string;
  readonly #tmp: string;
  readonly #options: ImageStoreOptions;
  readonly #images = new Map<string, StoredImage>();
  readonly #layers: LayerStore;
  #tags: TagTable = {};
  /** Imports run one at a time: they build layers other imports may want to share. */
  #importing: Promise<unknown> = Promise.resolve();
  /** Layers an import in progress builds on or has built: never collected under it. */
  readonly #pinned = new Set<string>();

  /** Opens (creating) the store in `dir`, normally `ROOT/images`; what a crash left in tmp/ goes. */
  constructor(dir: string, options: ImageStoreOptions = {}) {
    this.#dir = dir;
    this.#tmp = join(dir, 'tmp');
    this.#options = options;
    mkdirSync(dir, { recursive: true });
    rmSync(this.#tmp, { recursive: true, force: true });
    mkdirSync(this.#tmp);
    this.#layers = new LayerStore(join(dir, 'layers'), options.warn);
    for (const name of readdirSync(dir)) if (HEX_RE.test(name)) this.#readImage(name);
    this.#readTags();
    // Layers of an import a crash cut short, or of images deleted while the store was closed.
    this.#collectLayers();
  }

  /** The layer disks, for accounting (docker system df). */
  get layers(): LayerStore {
    return this.#layers;
  }

  get directory(): string {
    return this.#dir;
  }

  /** Every image, newest first. */
  list(): ImageRecord[] {
    return [...this.#images.values()]
      .map((image) => this.#record(image))
      .sort((a, b) => Date.parse(b.created) - Date.parse(a.created) || a.id.localeCompare(b.id));
  }

  /**
   * The image `ref` names: `name[:tag]` (docker.io/library/ forms too), a full id `sha256:<hex>`, or an
   * unambiguous id prefix of at least 4 hex digits. TETHER_NO_SUCH_IMAGE (`No such image: REF`) otherwise.
   */
  resolve(ref: string): ImageRecord {
    return this.#record(this.#find(ref));
  }

  /** Tags the image `ref` names as `repoTag` (`name` alone means `name:latest`); a tag elsewhere moves. */
  tag(ref: string, repoTag: string): void {
    const image = this.#find(ref);
    const tag = normalizeRepoTag(repoTag);
    this.#writeTags({ ...this.#tags, [tag]: { id: image.id, taggedAt: new Date().toISOString() } });
  }

  /**
   * `docker rmi`: by tag, untags it and deletes the image with its last tag; by id, untags all and deletes.
   * Refuses (TETHER_CONFLICT, Docker's messages) to drop the last tag of, or delete, an image a container
   * uses, and to delete by id an image with several tags, unless `force`. Forced, an image in use loses its
   * tags but stays (its containers' disks are layered on its root disk). Returns Docker's lines:
   * `Untagged: name:tag`, `Deleted: sha256:...`.
   */
  remove(ref: string, options: RemoveOptions = {}): string[] {
    const force = options.force ?? false;
    const isInUse = options.isInUse ?? this.#options.isInUse ?? (() => false);
    const byTag = repoTagFor(ref);
    const tagged = byTag !== undefined ? this.#tags[byTag] : undefined;
    if (byTag !== undefined && tagged !== undefined && !fullImageId(ref)) {
      const image = this.#images.get(tagged.id)!;
      const others = this.#tagsOf(image.id).filter((tag) => tag !== byTag);
      const rest = { ...this.#tags };
      delete rest[byTag];
      if (others.length > 0) {
        this.#writeTags(rest);
        return [`Untagged: ${byTag}`];
      }
      const user = isInUse(image.id);
      if (user && !force)
        throw new TetherError(
          'TETHER_CONFLICT',
          `conflict: unable to remove repository reference "${ref}" (must force) - ${userText(user)} is using its referenced image ${shortId(image.id)}`,
        );
      this.#writeTags(rest);
      if (user) return [`Untagged: ${byTag}`];
      this.#deleteImage(image);
      return [`Untagged: ${byTag}`, `Deleted: ${image.id}`];
    }
    const image = this.#find(ref);
    const tags = this.#tagsOf(image.id);
    if (tags.length > 1 && !force)
      throw new TetherError(
        'TETHER_CONFLICT',
        `conflict: unable to delete ${shortId(image.id)} (must be forced) - image is referenced in multiple repositories`,
      );
    const user = isInUse(image.id);
    if (user && !force)
      throw new TetherError(
        'TETHER_CONFLICT',
        `conflict: unable to delete ${shortId(image.id)} (must be forced) - image is being used by ${userText(user)}`,
      );
    const rest = Object.fromEntries(Object.entries(this.#tags).filter(([, entry]) => entry.id !== image.id));
    if (tags.length > 0) this.#writeTags(rest);
    const lines = tags.map((tag) => `Untagged: ${tag}`);
    if (user) return lines;
    this.#deleteImage(image);
    return [...lines, `Deleted: ${image.id}`];
  }

  /**
   * `docker load`: reads a `docker save` tarball (or an OCI image layout; plain or gzip) from `input`,
   * checks every digest, flattens each image's layers into one root disk and tags it. All or nothing: a
   * refused or broken archive leaves the store as it was (TETHER_IMAGE_INVALID, TETHER_IMAGE_UNSUPPORTED).
   * An image already in the store is not built again.
   */
  async load(input: Readable, onProgress: ImportProgress = () => undefined): Promise<LoadResult> {
    const work = mkdtempSync(join(this.#tmp, 'load-'));
    try {
      const spool = join(work, 'spool');
      mkdirSync(spool);
      const archive = await spoolArchive(input, spool);
      return await this.importImages(await planImages(archive), onProgress);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }

  /**
   * How many of these layers (diff ids, bottom first) the store holds already, counted from the bottom: a
   * pull need not download them.
   */
  storedLayerCount(diffIds: readonly string[]): number {
    return this.#layers.storedCount(chainIds(diffIds));
  }

  /**
   * Commits images whose config and layer files are on disk (a load's spool, a pull's downloads): builds
   * the layers the store lacks, then the images, then their tags. `plan.layers[i].file` may be undefined
   * for the layers the store holds already (storedLayerCount). All or nothing, as load().
   */
  importImages(plans: PlannedImage[], onProgress: ImportProgress = () => undefined): Promise<LoadResult> {
    const result = this.#importing.then(() => this.#import(plans, onProgress));
    this.#importing = result.catch(() => undefined);
    return result;
  }

  async #import(plans: PlannedImage[], onProgress: ImportProgress): Promise<LoadResult> {
    const pinned = plans.flatMap((plan) => chainIds(plan.config.rootfs.diff_ids));
    const work = mkdtempSync(join(this.#tmp, 'import-'));
    const session = this.#layerDisks().session(work);
    for (const chainId of pinned) this.#pinned.add(chainId);
    try {
      const staged = new Map<string, { dir: string; size: number; layers: string[] }>();
      for (const plan of plans) {
        const hex = plan.id.slice('sha256:'.length);
        if (this.#images.has(plan.id) || staged.has(hex)) continue;
        staged.set(hex, await this.#build(plan, work, session, onProgress));
      }
      // From here on nothing awaits, so no other call can slip in between the check and the commit.
      for (const plan of plans)
        if (!this.#images.has(plan.id) && !staged.has(plan.id.slice('sha256:'.length)))
          throw new TetherError(
            'TETHER_CONFLICT',
            `image ${plan.id} was removed while this load was running: load the archive again`,
          );
      // Commit: images first (their layers are in place), then the tags that name them.
      for (const [hex, { dir, size, layers }] of staged) {
        const final = join(this.#dir, hex);
        if (!existsSync(final)) publishDirectory(dir, final);
        this.#images.set(`sha256:${hex}`, {
          id: `sha256:${hex}`,
          config: plans.find((plan) => plan.id === `sha256:${hex}`)!.config,
          size,
          rootDisk: this.#layers.disk(layers.at(-1)!),
          layers,
        });
      }
      const tags = { ...this.#tags };
      const now = new Date().toISOString();
      const loaded: string[] = [];
      for (const plan of plans) {
        for (const tag of plan.repoTags) {
          const previous = tags[tag];
          if (previous && previous.id !== plan.id)
            onProgress(
              `The image ${tag} already exists, renaming the old one with ID ${previous.id} to empty string`,
            );
          tags[tag] = { id: plan.id, taggedAt: now };
          loaded.push(`Loaded image: ${tag}`);
        }
        if (plan.repoTags.length === 0) loaded.push(`Loaded image ID: ${plan.id}`);
      }
      this.#writeTags(tags);
      return { loaded, images: plans.map((plan) => this.#record(this.#images.get(plan.id)!)) };
    } finally {
      session.close();
      rmSync(work, { recursive: true, force: true });
      for (const chainId of pinned) this.#pinned.delete(chainId);
      // A refused import leaves none of the layers it built.
      this.#collectLayers();
    }
  }

  /** Builds the layers of `plan` the store lacks, bottom up, and stages its image directory. */
  async #build(
    plan: PlannedImage,
    work: string,
    session: LayerDiskSession,
    onProgress: ImportProgress,
  ): Promise<{ dir: string; size: number; layers: string[] }> {
    const hex = plan.id.slice('sha256:'.length);
    const label = plan.repoTags[0] ?? shortId(plan.id);
    const chain = chainIds(plan.layers.map((layer) => layer.diffId));
    if (chain.length === 0)
      throw new TetherError(
        'TETHER_IMAGE_UNSUPPORTED',
        `image ${label} has no layers: there is no root filesystem to run a container in`,
      );
    const stored = this.#layers.storedCount(chain);
    for (const [index, layer] of plan.layers.entries()) {
      if (index < stored) {
        onProgress(`Layer ${index + 1}/${plan.layers.length} ${shortId(layer.diffId)} already exists`, {
          index,
          count: plan.layers.length,
          diffId: layer.diffId,
          state: 'exists',
        });
        continue;
      }
      const file = layer.file;
      const what = `image ${label}, layer ${index + 1} of ${plan.layers.length}${file ? ` (${file.name})` : ''}`;
      if (!file)
        throw new TetherError(
          'TETHER_IMAGE_INVALID',
          `${what}: the store lacks it and no file was given for it`,
        );
      const step = (state: 'building' | 'built'): LayerProgress => ({
        index,
        count: plan.layers.length,
        diffId: layer.diffId,
        state,
        bytes: file.size,
      });
      onProgress(
        `Loading layer ${index + 1}/${plan.layers.length} ${shortId(layer.diffId)}`,
        step('building'),
      );
      const plainPath = join(work, `layer${index}.tar`);
      const plain = await plainLayer(file.file, plainPath, file.sha256, what);
      if (plain.diffId !== layer.diffId)
        throw new TetherError(
          'TETHER_IMAGE_INVALID',
          `${what}: its sha256 is ${plain.diffId}, but the config's rootfs.diff_ids[${index}] is ${layer.diffId}`,
        );
      // One layer's own tree: refuses escapes and impossible entries before any disk is touched.
      const tree = new LayerTree();
      await scanLayer(tree, 0, plain.file, what);
      const entries = tree.entries();
      const parent = index === 0 ? null : chain[index - 1]!;
      await this.#layers.add(
        { chainId: chain[index]!, diffId: layer.diffId, parent, size: flatSize(entries) },
        async (disk) => {
          if (parent === null) {
            // The lowest layer: its whiteouts delete nothing, and the flat tar drops them.
            const flat = join(work, `layer${index}.flat.tar`);
            await writeFlatTar(entries, [plain.file], flat);
            await session.base(flat, disk);
            rmSync(flat, { force: true });
          } else await session.upper(plain.file, this.#layers.disk(parent), disk);
        },
      );
      if (plain.file !== file.file) rmSync(plain.file, { force: true });
      onProgress(`Loaded layer ${index + 1}/${plan.layers.length} ${shortId(layer.diffId)}`, step('built'));
    }
    const size = chain.reduce((sum, chainId) => sum + (this.#layers.get(chainId)?.size ?? 0), 0);
    const stage = join(work, hex);
    mkdirSync(stage);
    writeFileAtomic(join(stage, 'config.json'), plan.configBytes, 0o644, this.#tmp);
    writeFileAtomic(
      join(stage, 'image.json'),
      JSON.stringify({ size, loaded: new Date().toISOString() }) + '\n',
      0o644,
      this.#tmp,
    );
    fsyncTree(stage);
    return { dir: stage, size, layers: chain };
  }

  #layerDisks(): LayerDiskBuilder {
    return (
      this.#options.layerDisks ??
      qcow2LayerDisks({
        script: this.#options.script ?? tarToExt4Script(),
        ...(this.#options.rootSizeMiB !== undefined ? { rootSizeMiB: this.#options.rootSizeMiB } : {}),
      })
    );
  }

  /** Removes the layers that no image (nor an import in progress) names. */
  #collectLayers(): void {
    const keep = new Set(this.#pinned);
    for (const image of this.#images.values()) for (const chainId of image.layers) keep.add(chainId);
    this.#layers.collect(keep);
  }

  #find(ref: string): StoredImage {
    const full = fullImageId(ref);
    if (full) {
      const image = this.#images.get(full);
      if (image) return image;
      throw noSuchImage(ref);
    }
    const tag = repoTagFor(ref);
    const tagged = tag !== undefined ? this.#tags[tag] : undefined;
    if (tagged) return this.#images.get(tagged.id)!;
    const prefix = idPrefix(ref);
    if (prefix !== undefined) {
      const matches = [...this.#images.values()].filter((image) => image.id.startsWith(`sha256:${prefix}`));
      if (matches.length === 1) return matches[0]!;
      if (matches.length > 1)
        throw new TetherError(
          'TETHER_NO_SUCH_IMAGE',
          `No such image: ${ref} (the prefix matches ${matches.length} images)`,
        );
    }
    throw noSuchImage(ref);
  }

  #tagsOf(id: string): string[] {
    return Object.entries(this.#tags)
      .filter(([, entry]) => entry.id === id)
      .map(([tag]) => tag)
      .sort();
  }

  #record(image: StoredImage): ImageRecord {
    const { config } = image;
    const taggedAt = Object.values(this.#tags)
      .filter((entry) => entry.id === image.id)
      .map((entry) => entry.taggedAt)
      .sort()
      .at(-1);
    return {
      id: image.id,
      repoTags: this.#tagsOf(image.id),
      created: config.created ?? ZERO_TIME,
      size: image.size,
      config: containerConfig(config),
      architecture: config.architecture,
      os: config.os,
      ...(config.variant !== undefined ? { variant: config.variant } : {}),
      ...(config['os.version'] !== undefined ? { osVersion: config['os.version'] } : {}),
      ...(config.author !== undefined ? { author: config.author } : {}),
      ...(config.comment !== undefined ? { comment: config.comment } : {}),
      ...(config.docker_version !== undefined ? { dockerVersion: config.docker_version } : {}),
      diffIds: [...config.rootfs.diff_ids],
      ...(taggedAt !== undefined ? { lastTagTime: taggedAt } : {}),
      rootDisk: image.rootDisk,
      layers: [...image.layers],
    };
  }

  #readImage(hex: string): void {
    const dir = join(this.#dir, hex);
    const flatDisk = join(dir, 'rootfs.img');
    try {
      const config = parseDocument(
        ImageConfigDocument,
        readFileSync(join(dir, 'config.json')),
        `${dir}/config.json`,
      );
      const meta = v.parse(ImageMeta, JSON.parse(readFileSync(join(dir, 'image.json'), 'utf8')));
      let layers: string[] = [];
      let rootDisk = flatDisk;
      if (!existsSync(flatDisk)) {
        layers = chainIds(config.rootfs.diff_ids);
        const missing = layers.find((chainId) => !this.#layers.has(chainId));
        if (layers.length === 0 || missing !== undefined)
          throw new Error(`its layer ${missing ?? '(none)'} is not in ${this.#layers.directory}`);
        rootDisk = this.#layers.disk(layers.at(-1)!);
      }
      this.#images.set(`sha256:${hex}`, { id: `sha256:${hex}`, config, size: meta.size, rootDisk, layers });
    } catch (error) {
      // Images are renamed in whole, so this is an edit or a damaged disk: the rest of the store still works.
      this.#options.warn?.(`image ${dir} skipped, it cannot be read back: ${(error as Error).message}`);
    }
  }

  #readTags(): void {
    const path = join(this.#dir, 'repositories.json');
    if (!existsSync(path)) return;
    let table: TagTable;
    try {
      table = v.parse(Repositories, JSON.parse(readFileSync(path, 'utf8'))).tags;
    } catch (error) {
      this.#options.warn?.(
        `${path} cannot be read back, the images stay untagged: ${(error as Error).message}`,
      );
      return;
    }
    // Tags are written after their images exist and removed before them: a dangling one means an edit.
    this.#tags = Object.fromEntries(Object.entries(table).filter(([, entry]) => this.#images.has(entry.id)));
  }

  #writeTags(tags: TagTable): void {
    const sorted = Object.fromEntries(Object.entries(tags).sort(([a], [b]) => a.localeCompare(b)));
    writeFileAtomic(
      join(this.#dir, 'repositories.json'),
      JSON.stringify({ tags: sorted }, null, 2) + '\n',
      0o644,
      this.#tmp,
    );
    this.#tags = sorted;
  }

  #deleteImage(image: StoredImage): void {
    const hex = image.id.slice('sha256:'.length);
    const trash = join(this.#tmp, `deleted-${hex}`);
    rmSync(trash, { recursive: true, force: true });
    renameSync(join(this.#dir, hex), trash);
    fsyncPath(this.#dir);
    this.#images.delete(image.id);
    rmSync(trash, { recursive: true, force: true });
    // A layer leaves the store with the last image that has it.
    this.#collectLayers();
  }
}

function noSuchImage(ref: string): TetherError {
  return new TetherError('TETHER_NO_SUCH_IMAGE', `No such image: ${ref}`);
}

function userText(user: string | boolean): string {
  return typeof user === 'string' ? `container ${user}` : 'a container';
}
