/**
 * The pull flow against an in-process registry (node:http on loopback) and a fake store: auth schemes,
 * indexes, redirects to a blob store on another origin, Already exists, up to date, corrupt blobs, shared
 * downloads, and that a failed pull leaves no file behind.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { isTetherError, TetherError } from '../../../../../protocol/src/errors/errors.ts';
import type { PlannedImage } from '../../../../../hostside/src/daemon/images/plan.ts';
import type { ImportProgress } from '../../../../../hostside/src/daemon/images/image-store.ts';
import { basicAuthorization } from '../../../../../hostside/src/daemon/images/registry/auth.ts';
import { checkLogin } from '../../../../../hostside/src/daemon/images/registry/login.ts';
import { MEDIA_TYPES } from '../../../../../hostside/src/daemon/images/registry/manifest.ts';
import type { PullMessage } from '../../../../../hostside/src/daemon/images/registry/progress.ts';
import { parsePullReference } from '../../../../../hostside/src/daemon/images/registry/pull-reference.ts';
import { Puller, type PullStore } from '../../../../../hostside/src/daemon/images/registry/pull.ts';

const sha = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

interface Image {
  config: Buffer;
  layers: Buffer[];
  manifest: Buffer;
}

function makeImage(seed: string, layerCount: number, architecture = 'amd64'): Image {
  const layers = Array.from({ length: layerCount }, (_, i) =>
    Buffer.from(`${seed}-layer-${i}-`.repeat(5000)),
  );
  const config = Buffer.from(
    JSON.stringify({
      architecture,
      os: 'linux',
      config: { Cmd: ['sh'] },
      rootfs: {
        type: 'layers',
        diff_ids: layers.map((layer) => sha(Buffer.concat([layer, Buffer.from('diff')]))),
      },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.dockerManifest,
      config: {
        mediaType: 'application/vnd.docker.container.image.v1+json',
        digest: sha(config),
        size: config.length,
      },
      layers: layers.map((layer) => ({
        mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
        digest: sha(layer),
        size: layer.length,
      })),
    }),
  );
  return { config, layers, manifest };
}

type Auth = 'none' | 'basic' | 'bearer';

interface Registry {
  url: string;
  host: string;
  auth: Auth;
  manifests: Map<string, { bytes: Buffer; type: string }>;
  blobs: Map<string, Buffer>;
  corrupt: Set<string>;
  blobRequests: string[];
  /** Authorization headers the blob store (another origin) saw. */
  storageAuth: (string | undefined)[];
  storageUrl: string;
  /** Holds blob answers until released (shared-download test). */
  gate?: Promise<void> | undefined;
}

const USER = 'alice';
const PASSWORD = 'wonder land';

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function startRegistry(auth: Auth): Promise<{ registry: Registry; close: () => Promise<void> }> {
  const registry = {} as Registry;
  const storage = createServer((req, res) => {
    registry.storageAuth.push(req.headers.authorization);
    const blob = registry.blobs.get(decodeURIComponent(req.url!.slice('/storage/'.length)));
    if (!blob) return void res.writeHead(404).end();
    res.writeHead(200, { 'Content-Length': blob.length }).end(blob);
  });
  const token = 'the-token';
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      const url = new URL(req.url!, 'http://x');
      const authz = req.headers.authorization;
      if (url.pathname === '/token') {
        const given = authz === undefined || authz === basicAuthorization(USER, PASSWORD);
        if (!given)
          return void res
            .writeHead(401, { 'Content-Type': 'application/json' })
            .end('{"details":"incorrect username or password"}');
        return void res
          .writeHead(200, { 'Content-Type': 'application/json' })
          .end(JSON.stringify({ token: authz ? token : 'anonymous' }));
      }
      const allowed =
        auth === 'none' ||
        (auth === 'basic' && authz === basicAuthorization(USER, PASSWORD)) ||
        (auth === 'bearer' && authz === `Bearer ${token}`);
      if (!allowed) {
        const challenge =
          auth === 'basic'
            ? 'Basic realm="Registry Realm"'
            : `Bearer realm="${registry.url}/token",service="test",scope="repository:app:pull"`;
        return void res
          .writeHead(401, { 'WWW-Authenticate': challenge, 'Content-Type': 'application/json' })
          .end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
      }
      if (url.pathname === '/v2/') return void res.writeHead(200).end('{}');
      const manifest = /^\/v2\/(.+)\/manifests\/(.+)$/.exec(url.pathname);
      if (manifest) {
        const found = registry.manifests.get(`${manifest[1]}:${manifest[2]}`);
        if (!found)
          return void res
            .writeHead(404, { 'Content-Type': 'application/json' })
            .end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
        return void res.writeHead(200, { 'Content-Type': found.type }).end(found.bytes);
      }
      const blob = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]+)$/.exec(url.pathname);
      if (blob) {
        const digest = blob[2]!;
        registry.blobRequests.push(digest);
        if ((registry.blobs.get(digest)?.length ?? 0) > 1000) await registry.gate;
        if (!registry.blobs.has(digest)) return void res.writeHead(404).end();
        if (registry.corrupt.has(digest)) {
          const bytes = Buffer.from(registry.blobs.get(digest)!);
          bytes[0] = bytes[0]! ^ 0xff;
          return void res.writeHead(200, { 'Content-Length': bytes.length }).end(bytes);
        }
        // Layers go to the blob store, as registries on S3 do; configs are answered here.
        if (registry.blobs.get(digest)!.length > 1000)
          return void res.writeHead(307, { Location: `${registry.storageUrl}/storage/${digest}` }).end();
        return void res.writeHead(200).end(registry.blobs.get(digest));
      }
      res.writeHead(404).end();
    })();
  });
  return (async () => {
    const host = await listen(server);
    const storageHost = await listen(storage);
    Object.assign(registry, {
      url: `http://${host}`,
      host,
      auth,
      manifests: new Map(),
      blobs: new Map(),
      corrupt: new Set(),
      blobRequests: [],
      storageAuth: [],
      storageUrl: `http://${storageHost}`,
    });
    return {
      registry,
      close: async () => {
        server.closeAllConnections();
        storage.closeAllConnections();
        await Promise.all([new Promise((r) => server.close(r)), new Promise((r) => storage.close(r))]);
      },
    };
  })();
}

function push(registry: Registry, repo: string, tag: string, image: Image): void {
  registry.manifests.set(`${repo}:${tag}`, { bytes: image.manifest, type: MEDIA_TYPES.dockerManifest });
  registry.manifests.set(`${repo}:${sha(image.manifest)}`, {
    bytes: image.manifest,
    type: MEDIA_TYPES.dockerManifest,
  });
  registry.blobs.set(sha(image.config), image.config);
  for (const layer of image.layers) registry.blobs.set(sha(layer), layer);
}

class FakeStore implements PullStore {
  stored = 0;
  tags = new Map<string, string>();
  imports: PlannedImage[] = [];
  /** Bytes of each layer file when import was called. */
  files: (Buffer | undefined)[][] = [];
  storedLayerCount(): number {
    return this.stored;
  }
  importImages(
    plans: PlannedImage[],
    onProgress?: ImportProgress,
  ): Promise<{ loaded: string[]; images: [] }> {
    for (const plan of plans) {
      this.imports.push(plan);
      this.files.push(plan.layers.map((layer) => (layer.file ? readFileSync(layer.file.file) : undefined)));
      for (const tag of plan.repoTags) this.tags.set(tag, plan.id);
      // As the real store does: each layer it lacks is built, one after the other.
      for (const [index, layer] of plan.layers.entries()) {
        const base = { index, count: plan.layers.length, diffId: layer.diffId };
        if (index < this.stored) onProgress?.('', { ...base, state: 'exists' });
        else for (const state of ['building', 'built'] as const) onProgress?.('', { ...base, state });
      }
    }
    return Promise.resolve({ loaded: [], images: [] });
  }
  resolve(ref: string): { id: string } {
    const id = this.tags.get(ref);
    if (!id) throw new TetherError('TETHER_NO_SUCH_IMAGE', `No such image: ${ref}`);
    return { id };
  }
}

const statuses = (messages: PullMessage[]): string[] =>
  messages.filter((m) => m.status !== 'Downloading').map((m) => (m.id ? `${m.id}: ${m.status}` : m.status!));

void describe('pull from a registry', () => {
  let work: string;
  const closers: (() => Promise<void>)[] = [];
  before(() => {
    work = mkdtempSync(join(tmpdir(), 'pull-test-'));
  });
  after(async () => {
    for (const close of closers) await close();
    rmSync(work, { recursive: true, force: true });
  });
  beforeEach(() => {
    // Every test leaves the work root as it found it: no download, no work dir.
    for (const name of readdirSync(work)) assert.fail(`left behind: ${name}`);
  });

  const registryWith = async (auth: Auth): Promise<Registry> => {
    const { registry, close } = await startRegistry(auth);
    closers.push(close);
    return registry;
  };
  const leftovers = (): string[] =>
    readdirSync(work).filter((name) => readdirSync(join(work, name)).length > 0);

  void it('pulls anonymously with Docker progress, then says up to date', async () => {
    const registry = await registryWith('none');
    const image = makeImage('anon', 2);
    push(registry, 'app', 'v1', image);
    const store = new FakeStore();
    const puller = new Puller(store, { workRoot: work, progressIntervalMs: 0 });
    const messages: PullMessage[] = [];
    const result = await puller.pull({
      reference: parsePullReference(`${registry.host}/app`, 'v1'),
      emit: (m) => messages.push(m),
    });
    assert.equal(result.id, sha(image.config));
    assert.equal(result.digest, sha(image.manifest));
    assert.equal(result.upToDate, false);
    const [l0, l1] = image.layers.map((layer) => sha(layer).slice(7, 19));
    assert.deepEqual(statuses(messages), [
      'v1: Pulling from app',
      `${l0}: Pulling fs layer`,
      `${l1}: Pulling fs layer`,
      ...statuses(messages).slice(3, 7),
      // Layer by layer, as the store builds each disk over the one below.
      `${l0}: Extracting`,
      `${l0}: Pull complete`,
      `${l1}: Extracting`,
      `${l1}: Pull complete`,
      `Digest: ${sha(image.manifest)}`,
      `Status: Downloaded newer image for ${registry.host}/app:v1`,
    ]);
    assert.ok(
      messages.some((m) => m.status === 'Downloading' && m.progressDetail?.total === image.layers[0]!.length),
    );
    const plan = store.imports[0]!;
    assert.deepEqual(plan.repoTags, [`${registry.host}/app:v1`]);
    assert.deepEqual(plan.configBytes, image.config);
    assert.deepEqual(store.files[0], image.layers);
    assert.deepEqual(leftovers(), []);
    // The blob store on another origin never saw a credential (none here), and the redirect was followed.
    assert.equal(registry.storageAuth.length, 2);

    const again: PullMessage[] = [];
    const second = await puller.pull({
      reference: parsePullReference(`${registry.host}/app`, 'v1'),
      emit: (m) => again.push(m),
    });
    assert.equal(second.upToDate, true);
    assert.deepEqual(statuses(again), [
      'v1: Pulling from app',
      `Digest: ${sha(image.manifest)}`,
      `Status: Image is up to date for ${registry.host}/app:v1`,
    ]);
    assert.equal(store.imports.length, 1);
    rmSync(join(work, 'pull-downloads'), { recursive: true, force: true });
  });

  void it('skips the layers the store holds (Already exists) and pulls by digest untagged', async () => {
    const registry = await registryWith('none');
    const image = makeImage('skip', 3);
    push(registry, 'app', 'v1', image);
    const store = new FakeStore();
    store.stored = 2;
    const messages: PullMessage[] = [];
    await new Puller(store, { workRoot: work }).pull({
      reference: parsePullReference(`${registry.host}/app`, sha(image.manifest)),
      emit: (m) => messages.push(m),
    });
    const labels = image.layers.map((layer) => sha(layer).slice(7, 19));
    assert.deepEqual(statuses(messages).slice(0, 4), [
      `${sha(image.manifest)}: Pulling from app`,
      `${labels[0]}: Already exists`,
      `${labels[1]}: Already exists`,
      `${labels[2]}: Pulling fs layer`,
    ]);
    assert.deepEqual(store.files[0], [undefined, undefined, image.layers[2]]);
    assert.deepEqual(store.imports[0]!.repoTags, []);
    assert.equal(registry.blobRequests.filter((d) => d !== sha(image.config)).length, 1);
    rmSync(join(work, 'pull-downloads'), { recursive: true, force: true });
  });

  void it('pulls with Basic credentials and refuses without them as Docker says', async () => {
    const registry = await registryWith('basic');
    push(registry, 'app', 'latest', makeImage('basic', 1));
    const store = new FakeStore();
    const puller = new Puller(store, { workRoot: work });
    const reference = parsePullReference(`${registry.host}/app`, 'latest');
    await assert.rejects(
      puller.pull({ reference, emit: () => undefined }),
      (error: unknown) =>
        isTetherError(error, 'TETHER_NO_SUCH_IMAGE') &&
        error.message ===
          `pull access denied for ${registry.host}/app, repository does not exist or may require 'docker login': unauthorized: authentication required`,
    );
    await puller.pull({
      reference,
      credentials: { username: USER, password: PASSWORD },
      emit: () => undefined,
    });
    assert.equal(store.imports.length, 1);
    await checkLogin({ username: USER, password: PASSWORD, serveraddress: registry.host });
    await assert.rejects(
      checkLogin({ username: USER, password: 'wrong', serveraddress: registry.host }),
      (error: unknown) =>
        isTetherError(error, 'TETHER_REGISTRY_DENIED') &&
        error.message === `login attempt to ${registry.url}/v2/ failed with status: 401 Unauthorized`,
    );
    rmSync(join(work, 'pull-downloads'), { recursive: true, force: true });
  });

  void it('pulls with a bearer token from the challenge realm, through an index', async () => {
    const registry = await registryWith('bearer');
    const image = makeImage('bearer', 1);
    push(registry, 'app', 'amd', image);
    const arm = makeImage('arm', 1, 'arm64');
    push(registry, 'app', 'arm', arm);
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPES.ociIndex,
        manifests: [
          {
            mediaType: MEDIA_TYPES.dockerManifest,
            digest: sha(arm.manifest),
            size: arm.manifest.length,
            platform: { os: 'linux', architecture: 'arm64' },
          },
          {
            mediaType: MEDIA_TYPES.dockerManifest,
            digest: sha(image.manifest),
            size: image.manifest.length,
            platform: { os: 'linux', architecture: 'amd64' },
          },
        ],
      }),
    );
    registry.manifests.set('app:multi', { bytes: index, type: MEDIA_TYPES.ociIndex });
    const store = new FakeStore();
    const result = await new Puller(store, { workRoot: work }).pull({
      reference: parsePullReference(`${registry.host}/app`, 'multi'),
      credentials: { username: USER, password: PASSWORD },
      emit: () => undefined,
    });
    assert.equal(result.id, sha(image.config));
    assert.equal(result.digest, sha(index));
    // The blob store, another origin, never saw the registry's token.
    assert.deepEqual(registry.storageAuth, [undefined]);
    await checkLogin({ username: USER, password: PASSWORD, serveraddress: registry.host });
    await assert.rejects(
      checkLogin({ username: USER, password: 'nope', serveraddress: registry.host }),
      (error: unknown) =>
        isTetherError(error, 'TETHER_REGISTRY_DENIED') &&
        /incorrect username or password/.test(error.message),
    );
    registry.manifests.set('app:armonly', {
      bytes: Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MEDIA_TYPES.ociIndex,
          manifests: [
            {
              mediaType: MEDIA_TYPES.dockerManifest,
              digest: sha(arm.manifest),
              size: 1,
              platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
            },
          ],
        }),
      ),
      type: MEDIA_TYPES.ociIndex,
    });
    await assert.rejects(
      new Puller(store, { workRoot: work }).pull({
        reference: parsePullReference(`${registry.host}/app`, 'armonly'),
        credentials: { username: USER, password: PASSWORD },
        emit: () => undefined,
      }),
      (error: unknown) =>
        isTetherError(error, 'TETHER_IMAGE_UNSUPPORTED') && /it offers linux\/arm64\/v8/.test(error.message),
    );
    rmSync(join(work, 'pull-downloads'), { recursive: true, force: true });
  });

  void it('refuses a missing tag, a corrupt blob and an unreachable registry, leaving nothing', async () => {
    const registry = await registryWith('none');
    const image = makeImage('corrupt', 2);
    push(registry, 'app', 'v1', image);
    const store = new FakeStore();
    const puller = new Puller(store, { workRoot: work });
    await assert.rejects(
      puller.pull({ reference: parsePullReference(`${registry.host}/app`, 'nope'), emit: () => undefined }),
      (error: unknown) =>
        isTetherError(error, 'TETHER_NO_SUCH_IMAGE') &&
        error.message ===
          `manifest for ${registry.host}/app:nope not found: manifest unknown: manifest unknown`,
    );
    registry.corrupt.add(sha(image.layers[1]!));
    await assert.rejects(
      puller.pull({ reference: parsePullReference(`${registry.host}/app`, 'v1'), emit: () => undefined }),
      (error: unknown) =>
        isTetherError(error, 'TETHER_IMAGE_INVALID') && /digest mismatch/.test(error.message),
    );
    registry.corrupt.clear();
    registry.corrupt.add(sha(image.config));
    await assert.rejects(
      puller.pull({ reference: parsePullReference(`${registry.host}/app`, 'v1'), emit: () => undefined }),
      (error: unknown) => isTetherError(error, 'TETHER_IMAGE_INVALID') && /image config/.test(error.message),
    );
    assert.equal(store.imports.length, 0);
    assert.deepEqual(leftovers(), []);
    const closed = createServer();
    const closedHost = await listen(closed);
    await new Promise((resolve) => closed.close(resolve));
    await assert.rejects(
      puller.pull({ reference: parsePullReference(`${closedHost}/app`, 'v1'), emit: () => undefined }),
      (error: unknown) =>
        isTetherError(error, 'TETHER_REGISTRY_FAILED') && /ECONNREFUSED/.test(error.message),
    );
    rmSync(join(work, 'pull-downloads'), { recursive: true, force: true });
  });

  void it('downloads a layer once for two pulls at the same time', async () => {
    const registry = await registryWith('none');
    const image = makeImage('shared', 1);
    push(registry, 'app', 'a', image);
    push(registry, 'app', 'b', image);
    let release!: () => void;
    registry.gate = new Promise((resolve) => (release = resolve));
    const store = new FakeStore();
    const puller = new Puller(store, { workRoot: work });
    const pulls = [
      puller.pull({ reference: parsePullReference(`${registry.host}/app`, 'a'), emit: () => undefined }),
      puller.pull({ reference: parsePullReference(`${registry.host}/app`, 'b'), emit: () => undefined }),
    ];
    while (registry.blobRequests.filter((d) => d === sha(image.layers[0]!)).length === 0)
      await new Promise((resolve) => setTimeout(resolve, 5));
    await new Promise((resolve) => setTimeout(resolve, 50));
    release();
    await Promise.all(pulls);
    assert.equal(registry.blobRequests.filter((d) => d === sha(image.layers[0]!)).length, 1);
    assert.deepEqual(store.files, [image.layers, image.layers]);
    assert.ok(
      !existsSync(join(work, 'pull-downloads')) || readdirSync(join(work, 'pull-downloads')).length === 0,
    );
    rmSync(join(work, 'pull-downloads'), { recursive: true, force: true });
  });
});
