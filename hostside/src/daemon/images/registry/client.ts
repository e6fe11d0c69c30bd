/**
 * A client of one repository on one registry (the Docker Registry HTTP API v2), for one pull or login:
 *
 *   GET /v2/                          ping: 200 (no auth) or 401 with the challenge to answer
 *   GET <realm>?service=&scope=       token auth (Bearer): a token for repository:<name>:pull
 *   GET /v2/<name>/manifests/<ref>    with Accept naming the manifest types tetherd takes
 *   GET /v2/<name>/blobs/<digest>     config and layers; registries often redirect to storage
 *
 * Node's fetch follows the redirects and drops the Authorization header when one leaves the registry's
 * origin, as a blob store must not see the registry's token. Every blob is hashed as it streams to disk and
 * refused (and deleted) when its sha256 or size is not its descriptor's.
 */
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { createHash } from 'node:crypto';
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import type { Descriptor } from '../schemas.ts';
import { basicAuthorization, parseChallenges, type Challenge, type Credentials } from './auth.ts';
import { MANIFEST_ACCEPT } from './manifest.ts';
import { registryBaseUrl } from './pull-reference.ts';
import {
  parseErrorBody,
  describeErrorItems,
  unexpectedResponse,
  unreachable,
  type FailedResponse,
} from './registry-errors.ts';

/** Manifests, indexes, configs and token answers are small; anything larger is not what we asked for. */
const DOCUMENT_MAX = 16 * 1024 * 1024;
const USER_AGENT = 'tetherd (docker registry client)';

export interface RegistryClientOptions {
  /** `docker.io` or `host[:port]`. */
  registry: string;
  /** The repository path, for the token's scope (`library/busybox`). */
  repository: string;
  credentials?: Credentials | undefined;
  /** Registries (`host[:port]`) spoken to over plain HTTP besides loopback ones. */
  insecure?: readonly string[];
  signal?: AbortSignal;
  /** Tests swap the transport. */
  fetch?: typeof fetch;
}

export interface FetchedManifest {
  bytes: Buffer;
  contentType: string | undefined;
  /** sha256 of the bytes, as we computed it. */
  digest: string;
}

/** Counts and hashes what flows through, and stops a body that runs past the size it must have. */
class BlobTap extends Transform {
  readonly #hash = createHash('sha256');
  readonly #limit: number;
  readonly #onBytes: (total: number) => void;
  bytes = 0;

  constructor(limit: number, onBytes: (total: number) => void) {
    super();
    this.#limit = limit;
    this.#onBytes = onBytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.#limit) {
      callback(
        new TetherError('TETHER_IMAGE_INVALID', `more than the ${this.#limit} bytes its descriptor gives`),
      );
      return;
    }
    this.#hash.update(chunk);
    this.#onBytes(this.bytes);
    callback(null, chunk);
  }

  digest(): string {
    return `sha256:${this.#hash.digest('hex')}`;
  }
}

export class RegistryClient {
  readonly #options: RegistryClientOptions;
  readonly #base: string;
  readonly #fetch: typeof fetch;
  #authorization: string | undefined;
  #pinged = false;
  #tokenTried = false;

  constructor(options: RegistryClientOptions) {
    this.#options = options;
    this.#base = registryBaseUrl(options.registry, options.insecure);
    this.#fetch = options.fetch ?? fetch;
  }

  /** `http://127.0.0.1:5000` or `https://registry-1.docker.io`. */
  get baseUrl(): string {
    return this.#base;
  }

  /**
   * GET /v2/: whether the registry is there and how it wants to be asked. Sets up the Authorization the
   * next requests send (Basic from the credentials, or a Bearer token fetched from the challenge's realm).
   * Returns the challenge, if any.
   */
  async ping(): Promise<Challenge | undefined> {
    this.#pinged = true;
    const url = `${this.#base}/v2/`;
    const response = await this.#send(url, {});
    await response.body?.cancel();
    if (response.ok) return undefined;
    if (response.status !== 401) throw unexpectedResponse(await failed(response, url));
    const challenge = this.#pickChallenge(response);
    if (challenge) await this.#answer(challenge);
    return challenge;
  }

  /**
   * Whether the credentials are accepted: with Basic, GET /v2/ with them; with token auth, the token service
   * gives a token for them. TETHER_REGISTRY_DENIED when refused, in Docker's words.
   */
  async login(): Promise<void> {
    const url = `${this.#base}/v2/`;
    const challenge = await this.ping();
    if (!challenge) return;
    if (challenge.scheme === 'basic') {
      const response = await this.#send(url, this.#headers({}));
      await response.body?.cancel();
      if (response.ok) return;
      if (response.status === 401 || response.status === 403)
        throw new TetherError(
          'TETHER_REGISTRY_DENIED',
          `login attempt to ${url} failed with status: ${response.status} ${response.statusText || 'Unauthorized'}`,
        );
      throw unexpectedResponse(await failed(response, url));
    }
  }

  /** GET the manifest `selector` (a tag or digest) names; TETHER_NO_SUCH_IMAGE and such are the caller's. */
  async manifest(
    selector: string,
  ): Promise<{ ok: true; manifest: FetchedManifest } | { ok: false; response: FailedResponse }> {
    const url = `${this.#base}/v2/${this.#options.repository}/manifests/${selector}`;
    const response = await this.#request(url, { Accept: MANIFEST_ACCEPT });
    if (!response.ok) return { ok: false, response: await failed(response, url) };
    const bytes = await readLimited(response, url);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    return {
      ok: true,
      manifest: { bytes, contentType: response.headers.get('content-type') ?? undefined, digest },
    };
  }

  /** A small blob (an image config) in memory, checked against its descriptor. */
  async blobBytes(descriptor: Descriptor, role: string): Promise<Buffer> {
    if (descriptor.size > DOCUMENT_MAX)
      throw new TetherError(
        'TETHER_IMAGE_INVALID',
        `the ${role} ${descriptor.digest} is ${descriptor.size} bytes, too large for a JSON document`,
      );
    const url = this.#blobUrl(descriptor.digest);
    const response = await this.#request(url, {});
    if (!response.ok) throw blobError(await failed(response, url), role, descriptor.digest);
    const bytes = await readLimited(response, url);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (digest !== descriptor.digest || bytes.length !== descriptor.size)
      throw mismatch(role, descriptor, digest, bytes.length);
    return bytes;
  }

  /**
   * Streams a blob into `file`, hashing it; `onBytes` hears the running total. A digest or size that is not
   * the descriptor's is TETHER_IMAGE_INVALID, and the file is deleted.
   */
  async downloadBlob(
    descriptor: Descriptor,
    file: string,
    role: string,
    onBytes: (total: number) => void = () => undefined,
    signal?: AbortSignal,
  ): Promise<void> {
    const url = this.#blobUrl(descriptor.digest);
    const response = await this.#request(url, {}, signal);
    if (!response.ok) throw blobError(await failed(response, url), role, descriptor.digest);
    if (!response.body) throw new TetherError('TETHER_REGISTRY_FAILED', `${url} answered with no body`);
    const tap = new BlobTap(descriptor.size, onBytes);
    try {
      const body = Readable.fromWeb(response.body as WebReadableStream<Uint8Array>);
      await pipeline(body, tap, createWriteStream(file), ...(signal ? [{ signal }] : []));
    } catch (error) {
      await rm(file, { force: true });
      if (error instanceof TetherError)
        throw new TetherError(
          'TETHER_IMAGE_INVALID',
          `the ${role} ${descriptor.digest} from ${url} has ${error.message}`,
        );
      if (signal?.aborted) throw error;
      throw new TetherError(
        'TETHER_REGISTRY_FAILED',
        `the download of ${url} broke off after ${tap.bytes} of ${descriptor.size} bytes: ${(error as Error).message}`,
        { cause: error },
      );
    }
    const digest = tap.digest();
    if (digest !== descriptor.digest || tap.bytes !== descriptor.size) {
      await rm(file, { force: true });
      throw mismatch(role, descriptor, digest, tap.bytes);
    }
  }

  #blobUrl(digest: string): string {
    return `${this.#base}/v2/${this.#options.repository}/blobs/${digest}`;
  }

  #headers(extra: Record<string, string>): Record<string, string> {
    return { ...extra, ...(this.#authorization ? { Authorization: this.#authorization } : {}) };
  }

  /** A request with the Authorization set up so far; a 401 with a new token challenge is answered once. */
  async #request(url: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Response> {
    if (!this.#pinged) await this.ping();
    const response = await this.#send(url, this.#headers(headers), signal);
    if (response.status !== 401 || this.#tokenTried) return response;
    const challenge = this.#pickChallenge(response);
    if (challenge?.scheme !== 'bearer') return response;
    await response.body?.cancel();
    await this.#answer(challenge);
    return this.#send(url, this.#headers(headers), signal);
  }

  async #send(url: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Response> {
    const anySignal = signal ?? this.#options.signal;
    try {
      return await this.#fetch(url, {
        headers: { 'User-Agent': USER_AGENT, ...headers },
        redirect: 'follow',
        ...(anySignal ? { signal: anySignal } : {}),
      });
    } catch (error) {
      if (anySignal?.aborted) throw error;
      throw unreachable(url, error);
    }
  }

  #pickChallenge(response: Response): Challenge | undefined {
    const challenges = parseChallenges(response.headers.get('www-authenticate') ?? '');
    return challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic');
  }

  async #answer(challenge: Challenge): Promise<void> {
    const credentials = this.#options.credentials;
    if (challenge.scheme === 'basic') {
      if (credentials?.username !== undefined)
        this.#authorization = basicAuthorization(credentials.username, credentials.password ?? '');
      return;
    }
    if (challenge.scheme !== 'bearer') return;
    this.#tokenTried = true;
    if (credentials?.registryToken !== undefined) {
      this.#authorization = `Bearer ${credentials.registryToken}`;
      return;
    }
    this.#authorization = `Bearer ${await this.#token(challenge)}`;
  }

  /** A token from the challenge's realm (distribution's token auth; a refresh token goes by OAuth2 POST). */
  async #token(challenge: Challenge): Promise<string> {
    const realm = challenge.params['realm'];
    if (!realm)
      throw new TetherError(
        'TETHER_REGISTRY_FAILED',
        `${this.#base}/v2/ asks for a bearer token but names no realm to get it from`,
      );
    const service = challenge.params['service'];
    // A login names no repository: its token only proves the credentials.
    const scope = this.#options.repository !== '' ? `repository:${this.#options.repository}:pull` : undefined;
    const credentials = this.#options.credentials;
    let response: Response;
    const realmUrl = new URL(realm);
    if (credentials?.identityToken !== undefined) {
      const form = new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: credentials.identityToken,
        client_id: 'tetherd',
        ...(scope !== undefined ? { scope } : {}),
        ...(service !== undefined ? { service } : {}),
      });
      response = await this.#post(realmUrl.href, form);
    } else {
      if (service !== undefined) realmUrl.searchParams.set('service', service);
      if (scope !== undefined) realmUrl.searchParams.set('scope', scope);
      const headers: Record<string, string> =
        credentials?.username !== undefined
          ? { Authorization: basicAuthorization(credentials.username, credentials.password ?? '') }
          : {};
      response = await this.#send(realmUrl.href, headers);
    }
    if (response.status === 401 || response.status === 403) {
      const body = await response.text();
      const items = parseErrorBody(body);
      const said =
        items.length > 0
          ? describeErrorItems(items)
          : (tokenErrorText(body) ?? `${response.status} ${response.statusText}`);
      throw new TetherError(
        'TETHER_REGISTRY_DENIED',
        `the registry's token service ${realmUrl.origin}${realmUrl.pathname} refused the credentials: ${said}`,
      );
    }
    if (!response.ok) throw unexpectedResponse(await failed(response, realmUrl.href));
    const bytes = await readLimited(response, realmUrl.href);
    let value: { token?: unknown; access_token?: unknown };
    try {
      value = JSON.parse(bytes.toString('utf8')) as typeof value;
    } catch {
      throw new TetherError(
        'TETHER_REGISTRY_FAILED',
        `the token service ${realmUrl.href} answered with something other than JSON`,
      );
    }
    const token = typeof value.token === 'string' && value.token !== '' ? value.token : value.access_token;
    if (typeof token !== 'string' || token === '')
      throw new TetherError(
        'TETHER_REGISTRY_FAILED',
        `the token service ${realmUrl.href} answered without a token`,
      );
    return token;
  }

  async #post(url: string, form: URLSearchParams): Promise<Response> {
    try {
      return await this.#fetch(url, {
        method: 'POST',
        headers: { 'User-Agent': USER_AGENT, 'Content-Type': 'application/x-www-form-urlencoded' },
        body: form.toString(),
        ...(this.#options.signal ? { signal: this.#options.signal } : {}),
      });
    } catch (error) {
      if (this.#options.signal?.aborted) throw error;
      throw unreachable(url, error);
    }
  }
}

function tokenErrorText(body: string): string | undefined {
  try {
    const value = JSON.parse(body) as { details?: unknown; error?: unknown; error_description?: unknown };
    for (const candidate of [value.details, value.error_description, value.error])
      if (typeof candidate === 'string' && candidate !== '') return candidate;
  } catch {
    // not JSON: the caller says the status instead
  }
  return undefined;
}

async function failed(response: Response, url: string): Promise<FailedResponse> {
  let body = '';
  try {
    body = (await readLimited(response, url, 64 * 1024)).toString('utf8');
  } catch {
    // the status says enough
  }
  return { status: response.status, statusText: response.statusText, body, url };
}

/** A response body into memory, refused past `limit` bytes (a document, never a layer). */
async function readLimited(response: Response, url: string, limit = DOCUMENT_MAX): Promise<Buffer> {
  if (!response.body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of Readable.fromWeb(response.body as WebReadableStream<Uint8Array>)) {
    size += (chunk as Buffer).length;
    if (size > limit) {
      throw new TetherError(
        'TETHER_REGISTRY_FAILED',
        `${url} answered with more than ${limit} bytes where a JSON document was expected`,
      );
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function blobError(response: FailedResponse, role: string, digest: string): TetherError {
  if (response.status === 404)
    return new TetherError(
      'TETHER_IMAGE_INVALID',
      `the registry has no ${role} ${digest}, which the manifest names (${response.url} answered 404)`,
    );
  return unexpectedResponse(response);
}

function mismatch(role: string, descriptor: Descriptor, digest: string, size: number): TetherError {
  return new TetherError(
    'TETHER_IMAGE_INVALID',
    size !== descriptor.size
      ? `the ${role} ${descriptor.digest} came as ${size} bytes, not the ${descriptor.size} its descriptor gives: the registry's copy is damaged or the download was cut`
      : `the ${role} ${descriptor.digest} came with sha256 ${digest}: the registry's copy is damaged (a digest mismatch), so nothing of it is kept`,
  );
}
