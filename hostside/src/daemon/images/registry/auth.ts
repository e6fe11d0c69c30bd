/**
 * Registry credentials and challenges, pure: the X-Registry-Auth header the docker CLI sends with a pull
 * (base64url JSON of its AuthConfig), the body of POST /auth (the same JSON, plain), and the
 * WWW-Authenticate challenges a registry answers 401 with (RFC 7235 section 4.1: `Basic realm="..."`, or
 * `Bearer realm="...",service="...",scope="..."` for token auth as Docker Hub and distribution use it).
 */
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';

export interface Credentials {
  username?: string;
  password?: string;
  /** A refresh token from an earlier token-auth login (Docker's `identitytoken`). */
  identityToken?: string;
  /** A bearer token to send as it is (Docker's `registrytoken`). */
  registryToken?: string;
  /** The registry the credentials are for, as the CLI wrote it. */
  serverAddress?: string;
}

export interface Challenge {
  /** Lower-case: `basic`, `bearer`. */
  scheme: string;
  params: Record<string, string>;
}

function field(value: Record<string, unknown>, name: string): string | undefined {
  const found = value[name];
  return typeof found === 'string' && found !== '' ? found : undefined;
}

/** Pure: credentials from Docker's AuthConfig JSON object; undefined when it holds none. */
export function credentialsFromAuthConfig(value: unknown): Credentials | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const config = value as Record<string, unknown>;
  let username = field(config, 'username');
  let password = field(config, 'password');
  // Older clients send only `auth`, base64 of `user:password`, as config.json stores it.
  const auth = field(config, 'auth');
  if (auth !== undefined && username === undefined) {
    const text = Buffer.from(auth, 'base64').toString('utf8');
    const colon = text.indexOf(':');
    if (colon > 0) {
      username = text.slice(0, colon);
      password = text.slice(colon + 1);
    }
  }
  const credentials: Credentials = {
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    ...(field(config, 'identitytoken') !== undefined
      ? { identityToken: field(config, 'identitytoken')! }
      : {}),
    ...(field(config, 'registrytoken') !== undefined
      ? { registryToken: field(config, 'registrytoken')! }
      : {}),
    ...(field(config, 'serveraddress') !== undefined
      ? { serverAddress: field(config, 'serveraddress')! }
      : {}),
  };
  const usable =
    credentials.username !== undefined ||
    credentials.identityToken !== undefined ||
    credentials.registryToken !== undefined;
  return usable ? credentials : undefined;
}

/**
 * Pure: the credentials of an X-Registry-Auth header, or undefined for none (absent, empty, `{}`). The CLI
 * encodes with base64url; standard base64 is taken too. A header that is not base64 JSON is refused.
 */
export function parseRegistryAuthHeader(header: string | undefined): Credentials | undefined {
  const text = header?.trim() ?? '';
  if (text === '') return undefined;
  let value: unknown;
  try {
    const json = Buffer.from(text.replace(/\+/g, '-').replace(/\//g, '_'), 'base64url').toString('utf8');
    value = JSON.parse(json) as unknown;
  } catch {
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      'the X-Registry-Auth header is not base64-encoded JSON (an AuthConfig with username and password)',
    );
  }
  return credentialsFromAuthConfig(value);
}

/** Pure: the `Authorization` value of Basic credentials (RFC 7617). */
export function basicAuthorization(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}

/**
 * Pure: the challenges of a WWW-Authenticate header (several may share one header, comma-separated, each a
 * scheme followed by `name=value` or `name="quoted value"` parameters).
 */
export function parseChallenges(header: string): Challenge[] {
  const challenges: Challenge[] = [];
  let at = 0;
  const skip = (): void => {
    while (at < header.length && /[\s,]/.test(header[at]!)) at++;
  };
  const token = (): string => {
    const start = at;
    while (at < header.length && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(header[at]!)) at++;
    return header.slice(start, at);
  };
  while (at < header.length) {
    skip();
    const scheme = token();
    if (scheme === '') {
      at++; // not a token character: step over it rather than loop
      continue;
    }
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    challenges.push(challenge);
    for (;;) {
      const save = at;
      skip();
      const name = token();
      while (at < header.length && header[at] === ' ') at++;
      if (name === '' || header[at] !== '=') {
        at = save; // the next scheme (or token68 data, which registries do not send)
        break;
      }
      at++;
      while (at < header.length && header[at] === ' ') at++;
      let value = '';
      if (header[at] === '"') {
        at++;
        while (at < header.length && header[at] !== '"') {
          if (header[at] === '\\' && at + 1 < header.length) at++;
          value += header[at++];
        }
        at++;
      } else {
        const start = at;
        while (at < header.length && header[at] !== ',') at++;
        value = header.slice(start, at).trim();
      }
      challenge.params[name.toLowerCase()] = value;
    }
    if (at < header.length && !/[\s,]/.test(header[at]!)) {
      // A scheme followed by something other than parameters: move on so the loop ends.
      const before = at;
      skip();
      if (at === before) at++;
    }
  }
  return challenges;
}
