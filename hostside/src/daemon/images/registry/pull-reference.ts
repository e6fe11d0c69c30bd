/**
 * What a pull names: the registry to ask, the repository path on it, and the tag or digest, from the
 * `fromImage` and `tag` of POST /images/create (the docker CLI sends `fromImage=docker.io/library/busybox`
 * and `tag=latest`, or the digest in `tag`). Familiar names come from reference.ts, so a pulled image is
 * tagged exactly as `docker load` would tag it. Pure: no I/O.
 */
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import { parseReference } from '../reference.ts';

/** Docker Hub: the name `docker.io` stands for it, and its API lives elsewhere. */
export const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';
const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

export interface PullReference {
  /** `docker.io`, or the `host[:port]` the name starts with. */
  registry: string;
  /** The path on the registry: `library/busybox` for Docker Hub's official images, `busybox` elsewhere. */
  repository: string;
  /** The familiar name: `busybox`, `127.0.0.1:5000/busybox`. */
  name: string;
  tag?: string;
  digest?: string;
}

function invalid(text: string): TetherError {
  return new TetherError(
    'TETHER_REFERENCE_INVALID',
    `invalid reference format: "${text}" is not an image name`,
  );
}

/**
 * The reference `fromImage` and `tag` name together. A `tag` that is a digest pulls by digest (as Docker
 * does); no tag at all means every tag (`docker pull -a`), which tetherd refuses.
 */
export function parsePullReference(fromImage: string, tag = ''): PullReference {
  const parsed = parseReference(fromImage);
  if (!parsed) throw invalid(fromImage);
  let { tag: ownTag, digest } = parsed;
  if (tag !== '') {
    if (tag.includes(':')) {
      if (!DIGEST_RE.test(tag)) throw invalid(`${fromImage}@${tag}`);
      digest = tag;
    } else {
      const withTag = parseReference(`${parsed.name}:${tag}`);
      if (!withTag) throw invalid(`${fromImage}:${tag}`);
      ownTag = tag;
    }
  }
  if (digest !== undefined && !DIGEST_RE.test(digest))
    throw new TetherError(
      'TETHER_REFERENCE_INVALID',
      `invalid reference format: tetherd pulls sha256 digests only, not ${digest}`,
    );
  if (ownTag === undefined && digest === undefined)
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      `tetherd pulls one tag at a time (docker pull --all-tags is not supported): name a tag, e.g. ${parsed.name}:latest`,
    );
  const slash = parsed.name.indexOf('/');
  const first = slash === -1 ? '' : parsed.name.slice(0, slash);
  const hasDomain = first.includes('.') || first.includes(':') || first === 'localhost';
  const registry = hasDomain ? first : DOCKER_HUB;
  let repository = hasDomain ? parsed.name.slice(slash + 1) : parsed.name;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  return {
    registry,
    repository,
    name: parsed.name,
    // A digest pins the content; a tag beside it would only mislead (Docker drops it too).
    ...(digest !== undefined ? { digest } : { tag: ownTag! }),
  };
}

/** `name:tag` or `name@sha256:...`, as messages name the pull. */
export function referenceText(ref: PullReference): string {
  return ref.digest !== undefined ? `${ref.name}@${ref.digest}` : `${ref.name}:${ref.tag ?? 'latest'}`;
}

/** The tag or digest the registry's manifest URL takes. */
export function manifestSelector(ref: PullReference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

/** Pure: whether `registry` (`host[:port]`) is on this machine: pulls from it may use plain HTTP. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = hostOf(registry);
  return host === 'localhost' || host === '::1' || /^127(?:\.\d{1,3}){3}$/.test(host);
}

function hostOf(registry: string): string {
  if (registry.startsWith('[')) return registry.slice(1, registry.indexOf(']'));
  const colon = registry.lastIndexOf(':');
  return colon === -1 ? registry : registry.slice(0, colon);
}

/** Pure: the `TETHER_INSECURE_REGISTRIES` list (comma-separated `host[:port]`), trimmed, empty entries out. */
export function parseInsecureList(text: string | undefined): string[] {
  return (text ?? '')
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
}

/**
 * Pure: the base URL of a registry's API. Plain HTTP only for loopback registries and those listed as
 * insecure (an entry without a port covers every port of that host); HTTPS for everything else.
 */
export function registryBaseUrl(registry: string, insecure: readonly string[] = []): string {
  if (registry === DOCKER_HUB) return `https://${DOCKER_HUB_API}`;
  const plain =
    isLoopbackRegistry(registry) ||
    insecure.some((entry) => entry === registry || entry === hostOf(registry));
  return `${plain ? 'http' : 'https'}://${registry}`;
}

/**
 * Pure: the registry a login's `serveraddress` names (`https://index.docker.io/v1/` and other URLs come
 * with a scheme and a path; `127.0.0.1:5000` comes bare).
 */
export function registryOfServerAddress(address: string): string {
  const bare = address.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '');
  if (bare === '' || bare === 'index.docker.io' || bare === DOCKER_HUB_API || bare === DOCKER_HUB)
    return DOCKER_HUB;
  return bare;
}
