/**
 * tetherd's image store: `docker load` archives in, one flattened root disk (raw ext4) per image out,
 * tags, lookups by reference or id, removal.
 *
 * On disk, under the store's directory (`ROOT/images`):
 *
 *   <hex>/config.json       the image config exactly as loaded (its sha256 is the image id, sha256:<hex>)
 *   <hex>/image.json        what the store adds: unpacked size, load time
 *   <hex>/rootfs.img        the root disk: every layer applied in order, made by init-image/tar-to-ext4.sh
 *   repositories.json       tags: { "name:tag": { id, taggedAt } }
 *   tmp/                    loads in progress and files being replaced; emptied when the store opens
 *
 * An image directory is built whole under tmp/ and renamed into place; repositories.json is replaced
 * atomically, after the images it names exist and before an image it no longer names is deleted. A kill -9
 * at any moment leaves either the old state or the new one: at worst an image without tags (listed as
 * `<none>`), never a torn record nor half an image. One store (one tetherd) per directory.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import * as v from 'valibot';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import { tarToExt4Script } from '../../vm/paths.ts';
import { spoolArchive } from './archive.ts';
import { fsyncPath, fsyncTree, publishDirectory, writeFileAtomic } from '../state/atomic-file.ts';
import { flatSize, LayerTree } from './layer-tree.ts';
import { plainLayer, scanLayer, writeFlatTar } from './layers.ts';
import { planImages, type PlannedImage } from './plan.ts';
import { buildRootDisk } from './root-disk.ts';
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
  /** Absolute path of the raw ext4 root disk (read-only; VMs put an overlay on it). */
  rootDisk: string;
}

/** Whether a container uses the image: its id (or name) to name it in the conflict message, or true. */
export type ImageInUse = (imageId: string) => string | boolean | undefined;

export interface ImageStoreOptions {
  /** init-image/tar-to-ext4.sh; default: TETHER_TAR_TO_EXT4 or the repository's. */
  script?: string;
  /** Turns a flattened root tar into a disk image under `workDir`, returning its path (tests swap it). */
  makeRootDisk?: (flatTar: string, workDir: string) => Promise<string>;
  /** Consulted by remove() unless it is given its own. */
  isInUse?: ImageInUse;
  /** Hears of what the store skipped when opening (an image or tag file it could not read back). */
  warn?: (message: string) => void;
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
  #tags: TagTable = {};

  /** Opens (creating) the store in `dir`, normally `ROOT/images`; what a crash left in tmp/ goes. */
  constructor(dir: string, options: ImageStoreOptions = {}) {
    this.#dir = dir;
    this.#tmp = join(dir, 'tmp');
    this.#options = options;
    mkdirSync(dir, { recursive: true });
    rmSync(this.#tmp, { recursive: true, force: true });
    mkdirSync(this.#tmp);
    for (const name of readdirSync(dir)) if (HEX_RE.test(name)) this.#readImage(name);
    this.#readTags();
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
  async load(input: Readable, onProgress: (message: string) => void = () => undefined): Promise<LoadResult> {
    const work = mkdtempSync(join(this.#tmp, 'load-'));
    try {
      const spool = join(work, 'spool');
      mkdirSync(spool);
      const archive = await spoolArchive(input, spool);
      const plans = await planImages(archive);
      const staged = new Map<string, { dir: string; size: number }>();
      for (const plan of plans) {
        const hex = plan.id.slice('sha256:'.length);
        if (this.#images.has(plan.id) || staged.has(hex)) continue;
        staged.set(hex, await this.#build(plan, work, onProgress));
      }
      // From here on nothing awaits, so no other call can slip in between the check and the commit.
      for (const plan of plans)
        if (!this.#images.has(plan.id) && !staged.has(plan.id.slice('sha256:'.length)))
          throw new TetherError(
            'TETHER_CONFLICT',
            `image ${plan.id} was removed while this load was running: load the archive again`,
          );
      // Commit: images first, then the tags that name them.
      for (const [hex, { dir, size }] of staged) {
        const final = join(this.#dir, hex);
        if (!existsSync(final)) publishDirectory(dir, final);
        this.#images.set(`sha256:${hex}`, {
          id: `sha256:${hex}`,
          config: plans.find((plan) => plan.id === `sha256:${hex}`)!.config,
          size,
          rootDisk: join(final, 'rootfs.img'),
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
      rmSync(work, { recursive: true, force: true });
    }
  }

  async #build(
    plan: PlannedImage,
    work: string,
    onProgress: (message: string) => void,
  ): Promise<{ dir: string; size: number }> {
    const hex = plan.id.slice('sha256:'.length);
    const label = plan.repoTags[0] ?? shortId(plan.id);
    const tree = new LayerTree();
    const plainFiles: string[] = [];
    for (const [index, layer] of plan.layers.entries()) {
      const what = `image ${label}, layer ${index + 1} of ${plan.layers.length} (${layer.file.name})`;
      onProgress(`Loading layer ${index + 1}/${plan.layers.length} ${shortId(layer.diffId)}`);
      const plain = await plainLayer(
        layer.file.file,
        join(work, `${hex}.layer${index}.tar`),
        layer.file.sha256,
        what,
      );
      if (plain.diffId !== layer.diffId)
        throw new TetherError(
          'TETHER_IMAGE_INVALID',
          `${what}: its sha256 is ${plain.diffId}, but the config's rootfs.diff_ids[${index}] is ${layer.diffId}`,
        );
      await scanLayer(tree, index, plain.file, what);
      plainFiles.push(plain.file);
    }
    const entries = tree.entries();
    const flat = join(work, `${hex}.flat.tar`);
    await writeFlatTar(entries, plainFiles, flat);
    for (const [index, file] of plainFiles.entries())
      if (file !== plan.layers[index]!.file.file) rmSync(file, { force: true });
    onProgress(`Building the root disk of ${label}`);
    const stage = join(work, hex);
    mkdirSync(stage);
    const disk = await this.#makeRootDisk(flat, work);
    renameSync(disk, join(stage, 'rootfs.img'));
    rmSync(flat, { force: true });
    const size = flatSize(entries);
    writeFileAtomic(join(stage, 'config.json'), plan.configBytes, 0o644, this.#tmp);
    writeFileAtomic(
      join(stage, 'image.json'),
      JSON.stringify({ size, loaded: new Date().toISOString() }) + '\n',
      0o644,
      this.#tmp,
    );
    fsyncTree(stage);
    return { dir: stage, size };
  }

  #makeRootDisk(flatTar: string, workDir: string): Promise<string> {
    if (this.#options.makeRootDisk) return this.#options.makeRootDisk(flatTar, workDir);
    return buildRootDisk(this.#options.script ?? tarToExt4Script(), flatTar, workDir);
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
    };
  }

  #readImage(hex: string): void {
    const dir = join(this.#dir, hex);
    const rootDisk = join(dir, 'rootfs.img');
    try {
      const config = parseDocument(
        ImageConfigDocument,
        readFileSync(join(dir, 'config.json')),
        `${dir}/config.json`,
      );
      const meta = v.parse(ImageMeta, JSON.parse(readFileSync(join(dir, 'image.json'), 'utf8')));
      if (!existsSync(rootDisk)) throw new Error('no rootfs.img');
      this.#images.set(`sha256:${hex}`, { id: `sha256:${hex}`, config, size: meta.size, rootDisk });
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
  }
}

function noSuchImage(ref: string): TetherError {
  return new TetherError('TETHER_NO_SUCH_IMAGE', `No such image: ${ref}`);
}

function userText(user: string | boolean): string {
  return typeof user === 'string' ? `container ${user}` : 'a container';
}
