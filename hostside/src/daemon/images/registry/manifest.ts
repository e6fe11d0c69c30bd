/**
 * Manifests as a registry serves them (Docker v2 schema 2, Docker manifest lists, OCI manifests and
 * indexes), told apart, checked and narrowed to the one image tetherd runs: linux/amd64. Schema 1 is refused
 * by name. Pure: bytes and media types in, descriptors out.
 */
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import { OciIndex, OciManifest, parseDocument, type Descriptor } from '../schemas.ts';

export const MEDIA_TYPES = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
} as const;

/** What GET /v2/<name>/manifests/<ref> asks for; schema 1 is left out, so registries that convert do. */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.dockerManifest,
  MEDIA_TYPES.dockerList,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.ociIndex,
].join(', ');

const SCHEMA1_TYPES = new Set([
  'application/vnd.docker.distribution.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
]);
const INDEX_TYPES = new Set<string>([MEDIA_TYPES.dockerList, MEDIA_TYPES.ociIndex]);
const MANIFEST_TYPES = new Set<string>([MEDIA_TYPES.dockerManifest, MEDIA_TYPES.ociManifest]);
const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.docker.image.rootfs.diff.tar',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
]);
const CONFIG_TYPES = new Set([
  'application/vnd.docker.container.image.v1+json',
  'application/vnd.oci.image.config.v1+json',
]);

export const PLATFORM = { os: 'linux', architecture: 'amd64' } as const;

export interface ImageManifest {
  kind: 'manifest';
  config: Descriptor;
  layers: Descriptor[];
}

export interface ImageIndex {
  kind: 'index';
  manifests: Descriptor[];
}

function invalid(message: string): TetherError {
  return new TetherError('TETHER_IMAGE_INVALID', message);
}

/**
 * Pure: the manifest `bytes` hold, told apart by the media type in the document, else by the response's
 * Content-Type, else by its shape. `what` names it in errors (`busybox:latest`).
 */
export function parseManifest(
  bytes: Buffer,
  contentType: string | undefined,
  what: string,
): ImageManifest | ImageIndex {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8')) as unknown;
  } catch (error) {
    throw invalid(`the manifest of ${what} is not valid JSON: ${(error as Error).message}`);
  }
  const document = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  const header = contentType?.split(';')[0]?.trim().toLowerCase();
  const declared = typeof document['mediaType'] === 'string' ? document['mediaType'] : undefined;
  const mediaType = declared ?? header;
  if (document['schemaVersion'] === 1 || (mediaType !== undefined && SCHEMA1_TYPES.has(mediaType)))
    throw new TetherError(
      'TETHER_REGISTRY_FAILED',
      `${what} has a schema 1 manifest (application/vnd.docker.distribution.manifest.v1), a format Docker deprecated and tetherd does not pull: push the image again with a current docker or skopeo`,
    );
  const isIndex =
    (mediaType !== undefined && INDEX_TYPES.has(mediaType)) ||
    (mediaType === undefined && Array.isArray(document['manifests']));
  if (isIndex) {
    const index = parseDocument(OciIndex, bytes, `the image index of ${what}`);
    return { kind: 'index', manifests: index.manifests };
  }
  if (mediaType !== undefined && !MANIFEST_TYPES.has(mediaType) && mediaType !== 'application/json')
    throw new TetherError(
      'TETHER_IMAGE_UNSUPPORTED',
      `the manifest of ${what} is ${mediaType}, which is not an image manifest tetherd knows (Docker v2 schema 2 or OCI)`,
    );
  const manifest = parseDocument(OciManifest, bytes, `the manifest of ${what}`);
  return { kind: 'manifest', config: manifest.config, layers: manifest.layers };
}

function platformText(descriptor: Descriptor): string {
  const platform = descriptor.platform;
  if (!platform) return 'an unnamed platform';
  return `${platform.os}/${platform.architecture}${platform.variant ? `/${platform.variant}` : ''}`;
}

/** amd64 variants a TCG or KVM guest of today runs; the plain entry comes first. */
const VARIANT_RANK = new Map<string | undefined, number>([
  [undefined, 0],
  ['v1', 1],
  ['v2', 2],
]);

/**
 * Pure: the linux/amd64 entry of an index (the plain one before `v1`/`v2` variants), or
 * TETHER_IMAGE_UNSUPPORTED naming the platforms it offers. Attestations (`unknown/unknown`) are not images.
 */
export function selectPlatform(index: ImageIndex, what: string): Descriptor {
  const images = index.manifests.filter((entry) => entry.platform?.os !== 'unknown');
  const candidates = images
    .filter(
      (entry) =>
        entry.platform?.os === PLATFORM.os &&
        entry.platform.architecture === PLATFORM.architecture &&
        VARIANT_RANK.has(entry.platform.variant),
    )
    .sort((a, b) => VARIANT_RANK.get(a.platform?.variant)! - VARIANT_RANK.get(b.platform?.variant)!);
  const chosen = candidates[0];
  if (chosen) return chosen;
  const offered = [...new Set(images.map(platformText))];
  throw new TetherError(
    'TETHER_IMAGE_UNSUPPORTED',
    offered.length === 0
      ? `no matching manifest for linux/amd64 in the manifest list entries of ${what}: it lists no image`
      : `no matching manifest for linux/amd64 in the manifest list entries of ${what}: it offers ${offered.join(', ')}; tetherd runs linux/amd64 images only`,
  );
}

/** Pure: checks that a manifest names a config and layers tetherd can take (plain or gzip tars). */
export function checkManifest(manifest: ImageManifest, what: string): void {
  const configType = manifest.config.mediaType;
  if (!CONFIG_TYPES.has(configType))
    throw new TetherError(
      'TETHER_IMAGE_UNSUPPORTED',
      `${what} is not a container image: its config is ${configType}`,
    );
  for (const layer of manifest.layers) {
    const type = layer.mediaType;
    if (type.endsWith('+zstd') || type.includes('foreign') || type.includes('nondistributable'))
      throw new TetherError(
        'TETHER_IMAGE_UNSUPPORTED',
        `${what}: layer ${layer.digest} is ${type}; tetherd takes plain or gzip-compressed layer tars`,
      );
    if (!LAYER_TYPES.has(type))
      throw invalid(`${what}: layer ${layer.digest} has the unknown media type ${type}`);
  }
}
