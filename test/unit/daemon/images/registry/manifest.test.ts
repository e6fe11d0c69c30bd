import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTetherError } from '../../../../../protocol/src/errors/errors.ts';
import {
  checkManifest,
  MEDIA_TYPES,
  parseManifest,
  selectPlatform,
  type ImageIndex,
  type ImageManifest,
} from '../../../../../hostside/src/daemon/images/registry/manifest.ts';

const digest = (n: number): string => `sha256:${n.toString(16).padStart(64, '0')}`;
const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
const entry = (n: number, os: string, architecture: string, variant?: string): object => ({
  mediaType: MEDIA_TYPES.ociManifest,
  digest: digest(n),
  size: 100,
  platform: { os, architecture, ...(variant ? { variant } : {}) },
});
const index = (...manifests: object[]): ImageIndex =>
  parseManifest(
    json({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests }),
    undefined,
    'x',
  ) as ImageIndex;

const dockerManifest = {
  schemaVersion: 2,
  mediaType: MEDIA_TYPES.dockerManifest,
  config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: digest(1), size: 10 },
  layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: digest(2), size: 20 }],
};

void describe('registry manifests', () => {
  void it('are told apart by their media type, the Content-Type, or their shape', () => {
    assert.equal(parseManifest(json(dockerManifest), 'text/plain', 'x').kind, 'manifest');
    const bare: Record<string, unknown> = { ...dockerManifest };
    delete bare['mediaType'];
    assert.equal(
      parseManifest(json(bare), `${MEDIA_TYPES.ociManifest}; charset=utf-8`, 'x').kind,
      'manifest',
    );
    assert.equal(parseManifest(json(bare), undefined, 'x').kind, 'manifest');
    const list = { schemaVersion: 2, manifests: [entry(3, 'linux', 'amd64')] };
    assert.equal(parseManifest(json(list), MEDIA_TYPES.dockerList, 'x').kind, 'index');
    assert.equal(parseManifest(json(list), undefined, 'x').kind, 'index');
  });

  void it('refuse schema 1 by name, and other documents clearly', () => {
    const schema1 = { schemaVersion: 1, name: 'x', tag: 'latest', fsLayers: [] };
    for (const type of ['application/vnd.docker.distribution.manifest.v1+prettyjws', undefined])
      assert.throws(
        () => parseManifest(json(schema1), type, 'busybox:old'),
        (error: unknown) =>
          isTetherError(error, 'TETHER_REGISTRY_FAILED') &&
          /busybox:old has a schema 1 manifest/.test(error.message),
      );
    assert.throws(
      () => parseManifest(Buffer.from('{'), undefined, 'x'),
      (error: unknown) => isTetherError(error, 'TETHER_IMAGE_INVALID'),
    );
    assert.throws(
      () =>
        parseManifest(
          json({ ...dockerManifest, mediaType: 'application/vnd.cncf.helm.chart' }),
          undefined,
          'x',
        ),
      (error: unknown) => isTetherError(error, 'TETHER_IMAGE_UNSUPPORTED') && /helm/.test(error.message),
    );
    assert.throws(
      () => parseManifest(json({ ...dockerManifest, layers: 'no' }), undefined, 'x'),
      (error: unknown) => isTetherError(error, 'TETHER_IMAGE_INVALID') && /layers/.test(error.message),
    );
  });

  void it('narrow an index to linux/amd64, the plain entry before variants, attestations ignored', () => {
    const chosen = selectPlatform(
      index(
        entry(1, 'linux', 'arm64', 'v8'),
        entry(2, 'linux', 'amd64', 'v2'),
        entry(3, 'linux', 'amd64'),
        entry(4, 'unknown', 'unknown'),
      ),
      'x',
    );
    assert.equal(chosen.digest, digest(3));
    assert.equal(selectPlatform(index(entry(2, 'linux', 'amd64', 'v2')), 'x').digest, digest(2));
  });

  void it('name the platforms offered when none is linux/amd64', () => {
    assert.throws(
      () =>
        selectPlatform(
          index(
            entry(1, 'linux', 'arm64', 'v8'),
            entry(2, 'windows', 'amd64'),
            entry(4, 'unknown', 'unknown'),
            entry(5, 'linux', 'amd64', 'v4'),
          ),
          'app:1',
        ),
      (error: unknown) =>
        isTetherError(error, 'TETHER_IMAGE_UNSUPPORTED') &&
        error.message.includes(
          'no matching manifest for linux/amd64 in the manifest list entries of app:1: it offers linux/arm64/v8, windows/amd64, linux/amd64/v4',
        ),
    );
    assert.throws(() => selectPlatform(index(), 'x'), /lists no image/);
  });

  void it('take plain and gzip layers only', () => {
    const manifest = parseManifest(json(dockerManifest), undefined, 'x') as ImageManifest;
    checkManifest(manifest, 'x');
    const withLayer = (mediaType: string): ImageManifest => ({
      ...manifest,
      layers: [{ ...manifest.layers[0]!, mediaType }],
    });
    assert.throws(
      () => checkManifest(withLayer('application/vnd.oci.image.layer.v1.tar+zstd'), 'x'),
      (error: unknown) => isTetherError(error, 'TETHER_IMAGE_UNSUPPORTED'),
    );
    assert.throws(
      () => checkManifest(withLayer('application/vnd.docker.image.rootfs.foreign.diff.tar.gzip'), 'x'),
      (error: unknown) => isTetherError(error, 'TETHER_IMAGE_UNSUPPORTED'),
    );
    assert.throws(
      () => checkManifest(withLayer('text/plain'), 'x'),
      (error: unknown) => isTetherError(error, 'TETHER_IMAGE_INVALID'),
    );
    assert.throws(
      () =>
        checkManifest(
          {
            ...manifest,
            config: { ...manifest.config, mediaType: 'application/vnd.cncf.helm.config.v1+json' },
          },
          'chart:1',
        ),
      /chart:1 is not a container image/,
    );
  });
});
