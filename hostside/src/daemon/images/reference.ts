/**
 * Image references as the docker CLI writes them, normalised the way Docker stores tags: `busybox`,
 * `busybox:latest`, `library/busybox` and `docker.io/library/busybox:latest` all name `busybox:latest`;
 * `localhost:5000/app` keeps its registry. Pure: no I/O.
 *
 * Grammar (distribution/reference): [domain '/'] path-component ('/' path-component)* [':' tag] ['@' digest]
 * where a first component is a domain when it holds '.' or ':' or is `localhost`.
 */
import { TetherError } from '../../../../protocol/src/errors/errors.ts';

const DEFAULT_DOMAIN = 'docker.io';
const OFFICIAL_PREFIX = 'library/';
const DOMAIN_RE =
  /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?$/;
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$/;
const NAME_MAX = 255;

export interface ImageReference {
  /** The familiar name: `busybox`, `tether/busybox`, `localhost:5000/app`. */
  name: string;
  tag?: string;
  digest?: string;
}

/** Parses a reference, or returns undefined when it is not one (the caller decides what that means). */
export function parseReference(text: string): ImageReference | undefined {
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(digest)) return undefined;
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) return undefined;
  }
  if (rest === '' || rest.length > NAME_MAX) return undefined;
  const components = rest.split('/');
  let domain = DEFAULT_DOMAIN;
  const first = components[0]!;
  if (components.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    if (!DOMAIN_RE.test(first)) return undefined;
    domain = first === 'index.docker.io' ? DEFAULT_DOMAIN : first;
    components.shift();
  }
  if (!components.every((component) => PATH_COMPONENT_RE.test(component))) return undefined;
  let path = components.join('/');
  if (domain === DEFAULT_DOMAIN && path.startsWith(OFFICIAL_PREFIX) && components.length === 2)
    path = path.slice(OFFICIAL_PREFIX.length);
  const name = domain === DEFAULT_DOMAIN ? path : `${domain}/${path}`;
  return { name, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
}

/**
 * The stored form of a tag (`name:tag`, `latest` when none is given), or TETHER_REFERENCE_INVALID with
 * Docker's wording for a reference that is not a tag (bad characters, upper case, a digest).
 */
export function normalizeRepoTag(text: string): string {
  const reference = parseReference(text);
  if (!reference || reference.digest !== undefined)
    throw new TetherError(
      'TETHER_REFERENCE_INVALID',
      `Error parsing reference: "${text}" is not a valid repository/tag: invalid reference format`,
    );
  return `${reference.name}:${reference.tag ?? 'latest'}`;
}

/** The tag a lookup by `text` means, or undefined when `text` cannot name a tag (the caller may try ids). */
export function repoTagFor(text: string): string | undefined {
  const reference = parseReference(text);
  if (!reference || reference.digest !== undefined) return undefined;
  return `${reference.name}:${reference.tag ?? 'latest'}`;
}

/** Pure: `sha256:<64 hex>`, or undefined. */
export function fullImageId(text: string): string | undefined {
  return /^sha256:[0-9a-f]{64}$/.test(text) ? text : undefined;
}

/** Pure: the hex an id prefix stands for (`abcd`, `sha256:abcd`; at least 4 hex digits), or undefined. */
export function idPrefix(text: string): string | undefined {
  const match = /^(?:sha256:)?([0-9a-f]{4,64})$/.exec(text);
  return match?.[1];
}

/** Docker's 12-digit short id. */
export function shortId(id: string): string {
  return id.replace(/^sha256:/, '').slice(0, 12);
}
