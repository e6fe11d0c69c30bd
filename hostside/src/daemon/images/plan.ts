/**
 * What a spooled archive holds, checked before anything is built: for `docker save` (manifest.json) and
 * for an OCI image layout (index.json, blobs/sha256/...), each image's config (whose sha256 is the image
 * id), its layers in order with the diff id each must have, and its tags. Digests that can be checked from
 * the spool alone are checked here (configs, OCI blobs, blobs/sha256/<hex> names); layer diff ids need the
 * plain tar and are checked while the layers are read (layers.ts).
 */
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import type { SpooledArchive, SpooledFile } from './archive.ts';
import { normalizeRepoTag } from './reference.ts';
import {
  DockerManifest,
  ImageConfigDocument,
  OciIndex,
  OciManifest,
  parseDocument,
  type Descriptor,
} from './schemas.ts';

export interface PlannedLayer {
  /** The layer's bytes; undefined only for a layer the store holds already (a pull skips its download). */
  file: SpooledFile | undefined;
  /** The config's rootfs.diff_ids[i]. */
  diffId: string;
}

export interface PlannedImage {
  /** `sha256:<hex>` of the config. */
  id: string;
  configBytes: Buffer;
  config: ImageConfigDocument;
  layers: PlannedLayer[];
  repoTags: string[];
}

const PLATFORM = { os: 'linux', architecture: 'amd64' };

const INDEX_TYPES = new Set([
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);
const MANIFEST_TYPES = new Set([
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
]);
const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.docker.image.rootfs.diff.tar',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
]);

function invalid(message: string): TetherError {
  return new TetherError('TETHER_IMAGE_INVALID', message);
}

const hexOf = (digest: string): string => digest.slice('sha256:'.length);

/** A file named after a digest (`blobs/sha256/<hex>`, `<hex>.json`) must have that digest. */
function checkNamedDigest(file: SpooledFile, role: string): void {
  const match = /(?:^|\/)([0-9a-f]{64})(?:\.json)?$/.exec(file.name);
  if (match && `sha256:${match[1]}` !== file.sha256)
    throw invalid(`${role} ${file.name} has sha256 ${hexOf(file.sha256)}, not the one its name gives`);
}

function tagsOf(names: readonly string[], where: string): string[] {
  const tags: string[] = [];
  for (const name of names) {
    try {
      tags.push(normalizeRepoTag(name));
    } catch {
      throw invalid(`${where} names the image "${name}", which is not a valid name:tag`);
    }
  }
  return [...new Set(tags)];
}

/** Refuses an image that is not linux/amd64 (TETHER_IMAGE_UNSUPPORTED). */
export function checkPlatform(config: ImageConfigDocument, label: string): void {
  if (config.os === PLATFORM.os && config.architecture === PLATFORM.architecture) return;
  const actual = `${config.os}/${config.architecture}${config.variant ? `/${config.variant}` : ''}`;
  throw new TetherError(
    'TETHER_IMAGE_UNSUPPORTED',
    `image ${label} is for ${actual}; tetherd runs linux/amd64 images only`,
  );
}

function planned(
  configFile: SpooledFile,
  configBytes: Buffer,
  layerFiles: SpooledFile[],
  repoTags: string[],
): PlannedImage {
  const config = parseDocument(ImageConfigDocument, configBytes, `image config ${configFile.name}`);
  const label = repoTags[0] ?? configFile.sha256;
  checkPlatform(config, label);
  const diffIds = config.rootfs.diff_ids;
  if (diffIds.length !== layerFiles.length)
    throw invalid(
      `image ${label} has ${layerFiles.length} layers but its config lists ${diffIds.length} diff ids`,
    );
  return {
    id: configFile.sha256,
    configBytes,
    config,
    layers: layerFiles.map((file, index) => ({ file, diffId: diffIds[index]! })),
    repoTags,
  };
}

async function planDocker(archive: SpooledArchive, manifestBytes: Buffer): Promise<PlannedImage[]> {
  const manifest = parseDocument(DockerManifest, manifestBytes, 'manifest.json');
  if (manifest.length === 0) throw invalid('manifest.json lists no image');
  const images: PlannedImage[] = [];
  for (const item of manifest) {
    const configFile = archive.get(item.Config);
    if (!configFile)
      throw invalid(`manifest.json names the config ${item.Config}, which the archive does not hold`);
    checkNamedDigest(configFile, 'image config');
    const layers = item.Layers.map((name) => {
      const file = archive.get(name);
      if (!file) throw invalid(`manifest.json names the layer ${name}, which the archive does not hold`);
      checkNamedDigest(file, 'layer');
      return file;
    });
    const bytes = (await archive.document(item.Config))!;
    images.push(planned(configFile, bytes, layers, tagsOf(item.RepoTags ?? [], 'manifest.json')));
  }
  return images;
}

function blob(archive: SpooledArchive, descriptor: Descriptor, role: string): SpooledFile {
  const name = `blobs/sha256/${hexOf(descriptor.digest)}`;
  const file = archive.get(name);
  if (!file)
    throw invalid(`index.json refers to the ${role} ${descriptor.digest}, which the archive does not hold`);
  if (file.sha256 !== descriptor.digest)
    throw invalid(`${role} ${name} has sha256 ${hexOf(file.sha256)}, not the digest it is referred to by`);
  if (file.size !== descriptor.size)
    throw invalid(`${role} ${name} is ${file.size} bytes, not the ${descriptor.size} its descriptor gives`);
  return file;
}

function ociNames(descriptor: Descriptor): string[] {
  const annotations = descriptor.annotations ?? {};
  const containerd = annotations['io.containerd.image.name'];
  if (containerd) return [containerd];
  // The OCI annotation is often only a tag ("latest"), which names no repository: such images load untagged.
  const ref = annotations['org.opencontainers.image.ref.name'];
  return ref && /[/:]/.test(ref) ? [ref] : [];
}

async function planOci(archive: SpooledArchive, indexBytes: Buffer): Promise<PlannedImage[]> {
  const images: PlannedImage[] = [];
  const skipped: string[] = [];
  const visit = async (descriptor: Descriptor, names: string[], depth: number): Promise<void> => {
    const platform = descriptor.platform;
    if (platform && (platform.os !== PLATFORM.os || platform.architecture !== PLATFORM.architecture)) {
      // Attestations (unknown/unknown) are not images; anything else is one we cannot run.
      if (platform.os !== 'unknown') skipped.push(`${platform.os}/${platform.architecture}`);
      return;
    }
    if (INDEX_TYPES.has(descriptor.mediaType)) {
      if (depth > 4) throw invalid('index.json nests image indexes too deep');
      const file = blob(archive, descriptor, 'image index');
      const index = parseDocument(OciIndex, (await archive.document(file.name))!, `image index ${file.name}`);
      for (const child of index.manifests) await visit(child, names, depth + 1);
      return;
    }
    if (!MANIFEST_TYPES.has(descriptor.mediaType)) return;
    const file = blob(archive, descriptor, 'manifest');
    const manifest = parseDocument(
      OciManifest,
      (await archive.document(file.name))!,
      `manifest ${file.name}`,
    );
    const configFile = blob(archive, manifest.config, 'image config');
    const layers = manifest.layers.map((layer) => {
      if (
        layer.mediaType.endsWith('+zstd') ||
        layer.mediaType.includes('foreign') ||
        layer.mediaType.includes('nondistributable')
      )
        throw new TetherError(
          'TETHER_IMAGE_UNSUPPORTED',
          `layer ${layer.digest} is ${layer.mediaType}; tetherd takes plain or gzip-compressed layer tars`,
        );
      if (!LAYER_TYPES.has(layer.mediaType))
        throw invalid(`layer ${layer.digest} has the unknown media type ${layer.mediaType}`);
      return blob(archive, layer, 'layer');
    });
    const bytes = (await archive.document(configFile.name))!;
    images.push(planned(configFile, bytes, layers, tagsOf(names, 'index.json')));
  };
  const index = parseDocument(OciIndex, indexBytes, 'index.json');
  for (const descriptor of index.manifests) await visit(descriptor, ociNames(descriptor), 0);
  if (images.length === 0) {
    if (skipped.length > 0)
      throw new TetherError(
        'TETHER_IMAGE_UNSUPPORTED',
        `the archive holds images for ${[...new Set(skipped)].join(', ')}; tetherd runs linux/amd64 images only`,
      );
    throw invalid('index.json lists no image manifest');
  }
  return images;
}

/** The images of a spooled archive; `docker save`'s manifest.json wins over an OCI index.json beside it. */
export async function planImages(archive: SpooledArchive): Promise<PlannedImage[]> {
  const manifest = await archive.document('manifest.json');
  if (manifest) return planDocker(archive, manifest);
  const index = await archive.document('index.json');
  if (index) return planOci(archive, index);
  throw invalid(
    'the archive has no manifest.json (nor an OCI index.json): it is not a `docker save` archive',
  );
}
