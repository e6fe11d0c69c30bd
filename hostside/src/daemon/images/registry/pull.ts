/**
 * `docker pull` into the image store:
 *
 *   manifest (an index narrows to linux/amd64) → config (its sha256 is the image id) → diff ids →
 *   n = store.storedLayerCount(diffIds) → layers n.. downloaded (three at a time, shared with other pulls
 *   in flight) → store.importImages([plan]) → tag
 *
 * with Docker's progress messages on the way. Every download lands in a work directory of this pull, which
 * goes whatever happens; the store's import is all or nothing, so a failed pull leaves nothing behind.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import type { SpooledFile } from '../archive.ts';
import type { ImportProgress, LoadResult } from '../image-store.ts';
import { checkPlatform, type PlannedImage } from '../plan.ts';
import { normalizeRepoTag } from '../reference.ts';
import { ImageConfigDocument, parseDocument, type Descriptor } from '../schemas.ts';
import type { Credentials } from './auth.ts';
import { RegistryClient } from './client.ts';
import { SharedDownloads } from './downloads.ts';
import { checkManifest, parseManifest, selectPlatform, type ImageManifest } from './manifest.ts';
import { layerProgress, layerStatus, pullingFrom, statusLine, type PullMessage } from './progress.ts';
import { manifestSelector, referenceText, type PullReference } from './pull-reference.ts';
import { manifestError } from './registry-errors.ts';

/** What a pull needs of the image store. */
export interface PullStore {
  /** How many of these layers, counted from the bottom, the store holds already. */
  storedLayerCount(diffIds: readonly string[]): number;
  /** Commits images whose config and layers are on disk; all or nothing. */
  importImages(plans: PlannedImage[], onProgress?: ImportProgress): Promise<LoadResult>;
  /** The image a reference names; throws TETHER_NO_SUCH_IMAGE when none. */
  resolve(ref: string): { id: string };
}

export interface PullerOptions {
  /** Where pulls make their work directories (and shared downloads live); the caller empties it at start. */
  workRoot: string;
  /** Registries spoken to over plain HTTP besides loopback ones (`host[:port]`). */
  insecure?: readonly string[];
  /** Parallel layer downloads per pull; Docker's default is 3. */
  concurrency?: number;
  /** Tests swap the transport. */
  fetch?: typeof fetch;
  /** Progress messages go at most this often per layer (Docker: 100 ms). */
  progressIntervalMs?: number;
}

export interface PullRequest {
  reference: PullReference;
  credentials?: Credentials | undefined;
  /** Each progress message, in Docker's shape. */
  emit: (message: PullMessage) => void;
  signal?: AbortSignal;
}

export interface PullResult {
  /** The image id (sha256 of its config). */
  id: string;
  /** The tag given (`busybox:latest`), or none for a pull by digest. */
  repoTag: string | undefined;
  /** The digest of the manifest (or index) the reference resolved to. */
  digest: string;
  /** The tag named this image already: nothing was downloaded or stored. */
  upToDate: boolean;
}

export class Puller {
  readonly #store: PullStore;
  readonly #options: PullerOptions;
  readonly #downloads: SharedDownloads;

  constructor(store: PullStore, options: PullerOptions) {
    this.#store = store;
    this.#options = options;
    this.#downloads = new SharedDownloads(join(options.workRoot, 'pull-downloads'));
  }

  /** Pulls one image; TetherError codes as the failure's cause (see docs/errors.md). */
  async pull(request: PullRequest): Promise<PullResult> {
    const { reference: ref, emit } = request;
    const what = referenceText(ref);
    const client = new RegistryClient({
      registry: ref.registry,
      repository: ref.repository,
      credentials: request.credentials,
      insecure: this.#options.insecure ?? [],
      ...(request.signal ? { signal: request.signal } : {}),
      ...(this.#options.fetch ? { fetch: this.#options.fetch } : {}),
    });
    const { manifest, digest } = await this.#resolve(client, ref, what);
    emit(pullingFrom(ref.tag ?? ref.digest!, ref.repository));

    const configBytes = await client.blobBytes(manifest.config, 'image config');
    const id = manifest.config.digest;
    const config = parseDocument(ImageConfigDocument, configBytes, `the image config of ${what}`);
    checkPlatform(config, what);
    const diffIds = config.rootfs.diff_ids;
    if (diffIds.length !== manifest.layers.length)
      throw new TetherError(
        'TETHER_IMAGE_INVALID',
        `${what}: the manifest lists ${manifest.layers.length} layers but the config's rootfs.diff_ids has ${diffIds.length}`,
      );

    const repoTag = ref.tag !== undefined ? normalizeRepoTag(`${ref.name}:${ref.tag}`) : undefined;
    const label = repoTag ?? what;
    if (repoTag !== undefined && this.#taggedId(repoTag) === id) {
      emit(statusLine(`Digest: ${digest}`));
      emit(statusLine(`Status: Image is up to date for ${label}`));
      return { id, repoTag, digest, upToDate: true };
    }

    const stored = this.#store.storedLayerCount(diffIds);
    const work = mkdtempSync(join(this.#options.workRoot, 'pull-'));
    try {
      const files = await this.#downloadLayers(client, manifest.layers, stored, work, request);
      const plan: PlannedImage = {
        id,
        configBytes,
        config,
        layers: diffIds.map((diffId, index) => ({ file: files[index], diffId })),
        repoTags: repoTag !== undefined ? [repoTag] : [],
      };
      // Each layer as the store builds it: Extracting while its disk is made, then Pull complete.
      await this.#store.importImages([plan], (_message, layer) => {
        if (!layer || layer.state === 'exists') return;
        const layerDigest = manifest.layers[layer.index]!.digest;
        emit(layerStatus(layerDigest, layer.state === 'building' ? 'Extracting' : 'Pull complete'));
      });
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
    emit(statusLine(`Digest: ${digest}`));
    emit(statusLine(`Status: Downloaded newer image for ${label}`));
    return { id, repoTag, digest, upToDate: false };
  }

  #taggedId(repoTag: string): string | undefined {
    try {
      return this.#store.resolve(repoTag).id;
    } catch {
      return undefined;
    }
  }

  /** The image manifest `ref` names, through an index if it names one, and the digest Docker shows. */
  async #resolve(
    client: RegistryClient,
    ref: PullReference,
    what: string,
  ): Promise<{ manifest: ImageManifest; digest: string }> {
    const first = await client.manifest(manifestSelector(ref));
    if (!first.ok) throw manifestError(first.response, ref.name, what);
    const digest = first.manifest.digest;
    if (ref.digest !== undefined && digest !== ref.digest)
      throw new TetherError(
        'TETHER_IMAGE_INVALID',
        `the registry answered ${what} with a manifest whose sha256 is ${digest}: not the digest asked for`,
      );
    let parsed = parseManifest(first.manifest.bytes, first.manifest.contentType, what);
    if (parsed.kind === 'index') {
      const entry = selectPlatform(parsed, what);
      const second = await client.manifest(entry.digest);
      if (!second.ok) throw manifestError(second.response, ref.name, `${ref.name}@${entry.digest}`);
      if (second.manifest.digest !== entry.digest)
        throw new TetherError(
          'TETHER_IMAGE_INVALID',
          `the linux/amd64 manifest of ${what} came with sha256 ${second.manifest.digest}, not the ${entry.digest} its index gives`,
        );
      parsed = parseManifest(second.manifest.bytes, second.manifest.contentType, `${what} (linux/amd64)`);
      if (parsed.kind === 'index')
        throw new TetherError(
          'TETHER_IMAGE_INVALID',
          `the index of ${what} names another index for linux/amd64`,
        );
    }
    checkManifest(parsed, what);
    return { manifest: parsed, digest };
  }

  /** Downloads layers `stored..` into `work` (each blob once), with Docker's per-layer messages. */
  async #downloadLayers(
    client: RegistryClient,
    layers: readonly Descriptor[],
    stored: number,
    work: string,
    request: PullRequest,
  ): Promise<(SpooledFile | undefined)[]> {
    const { emit, signal } = request;
    const concurrency = Math.max(1, this.#options.concurrency ?? 3);
    const interval = this.#options.progressIntervalMs ?? 100;
    for (const layer of layers.slice(0, stored)) emit(layerStatus(layer.digest, 'Already exists'));
    const wanted = new Map<string, Descriptor>();
    for (const layer of layers.slice(stored)) wanted.set(layer.digest, layer);
    for (const layer of wanted.values()) emit(layerStatus(layer.digest, 'Pulling fs layer'));
    const queue = [...wanted.values()];
    for (const layer of queue.slice(concurrency)) emit(layerStatus(layer.digest, 'Waiting'));

    const blobs = join(work, 'blobs');
    mkdirSync(blobs);
    const files = new Map<string, SpooledFile>();
    const fetchOne = async (layer: Descriptor): Promise<void> => {
      const hex = layer.digest.slice('sha256:'.length);
      const dest = join(blobs, hex);
      let last = 0;
      const onBytes = (total: number): void => {
        const now = Date.now();
        if (now - last < interval && total < layer.size) return;
        last = now;
        emit(layerProgress(layer.digest, 'Downloading', total, layer.size));
      };
      await this.#downloads.fetch(
        `${client.baseUrl}|${layer.digest}`,
        dest,
        (file, progress, downloadSignal) =>
          client.downloadBlob(layer, file, 'layer', progress, downloadSignal),
        onBytes,
        signal,
      );
      emit(layerStatus(layer.digest, 'Verifying Checksum'));
      emit(layerStatus(layer.digest, 'Download complete'));
      files.set(layer.digest, {
        name: `layer ${layer.digest}`,
        file: dest,
        sha256: layer.digest,
        size: layer.size,
      });
    };
    // A failure stops the queue; the ones under way finish or fail before the work dir goes.
    let failure: { error: unknown } | undefined;
    const worker = async (): Promise<void> => {
      for (let next = queue.shift(); next && !failure; next = queue.shift()) {
        try {
          await fetchOne(next);
        } catch (error) {
          failure ??= { error };
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, queue.length) }, worker));
    if (failure) throw failure.error;
    return layers.map((layer, index) => (index < stored ? undefined : files.get(layer.digest)));
  }
}
