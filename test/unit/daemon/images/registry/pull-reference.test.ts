import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTetherError } from '../../../../../protocol/src/errors/errors.ts';
import {
  isLoopbackRegistry,
  parseInsecureList,
  parsePullReference,
  referenceText,
  registryBaseUrl,
  registryOfServerAddress,
} from '../../../../../hostside/src/daemon/images/registry/pull-reference.ts';

const DIGEST = `sha256:${'ab'.repeat(32)}`;

void describe('pull references', () => {
  void it('split fromImage and tag into registry, repository and tag as the docker CLI sends them', () => {
    const table: [string, string, object][] = [
      [
        'docker.io/library/busybox',
        'latest',
        { registry: 'docker.io', repository: 'library/busybox', name: 'busybox', tag: 'latest' },
      ],
      [
        'busybox',
        '1.36',
        { registry: 'docker.io', repository: 'library/busybox', name: 'busybox', tag: '1.36' },
      ],
      [
        'tether/busybox',
        'v1',
        { registry: 'docker.io', repository: 'tether/busybox', name: 'tether/busybox', tag: 'v1' },
      ],
      [
        '127.0.0.1:5000/busybox',
        'latest',
        { registry: '127.0.0.1:5000', repository: 'busybox', name: '127.0.0.1:5000/busybox', tag: 'latest' },
      ],
      [
        'localhost/team/app',
        'x',
        { registry: 'localhost', repository: 'team/app', name: 'localhost/team/app', tag: 'x' },
      ],
      [
        'registry.example.com/library/x',
        'latest',
        {
          registry: 'registry.example.com',
          repository: 'library/x',
          name: 'registry.example.com/library/x',
          tag: 'latest',
        },
      ],
      [
        'busybox:1.35',
        '',
        { registry: 'docker.io', repository: 'library/busybox', name: 'busybox', tag: '1.35' },
      ],
      [
        'busybox:1.35',
        'latest',
        { registry: 'docker.io', repository: 'library/busybox', name: 'busybox', tag: 'latest' },
      ],
    ];
    for (const [from, tag, expected] of table)
      assert.deepEqual(parsePullReference(from, tag), expected, `${from} ${tag}`);
  });

  void it('take a digest in the tag parameter or the name, and drop a tag beside it', () => {
    assert.deepEqual(parsePullReference('docker.io/library/busybox', DIGEST), {
      registry: 'docker.io',
      repository: 'library/busybox',
      name: 'busybox',
      digest: DIGEST,
    });
    assert.deepEqual(parsePullReference(`127.0.0.1:5000/a:v1@${DIGEST}`), {
      registry: '127.0.0.1:5000',
      repository: 'a',
      name: '127.0.0.1:5000/a',
      digest: DIGEST,
    });
    assert.equal(referenceText(parsePullReference('busybox', DIGEST)), `busybox@${DIGEST}`);
    assert.equal(referenceText(parsePullReference('busybox', 'latest')), 'busybox:latest');
  });

  void it('refuse bad names, bad digests and all-tags pulls with what was wrong', () => {
    for (const [from, tag] of [
      ['Busybox', 'latest'],
      ['a b', ''],
      ['busybox', 'sha256:12'],
      ['busybox', 'bad tag'],
      ['busybox', 'md5:0123456789abcdef0123456789abcdef'],
    ])
      assert.throws(
        () => parsePullReference(from!, tag),
        (error: unknown) =>
          isTetherError(error, 'TETHER_REFERENCE_INVALID') && /invalid reference format/.test(error.message),
        `${from} ${tag}`,
      );
    assert.throws(
      () => parsePullReference('busybox', ''),
      (error: unknown) =>
        isTetherError(error, 'TETHER_INVALID_PARAMETER') && /one tag at a time/.test(error.message),
    );
  });

  void it('speak plain HTTP only to loopback and listed registries', () => {
    assert.equal(isLoopbackRegistry('127.0.0.1:5000'), true);
    assert.equal(isLoopbackRegistry('127.1.2.3'), true);
    assert.equal(isLoopbackRegistry('localhost:5000'), true);
    assert.equal(isLoopbackRegistry('[::1]:5000'), true);
    assert.equal(isLoopbackRegistry('10.0.0.1:5000'), false);
    assert.equal(isLoopbackRegistry('127.0.0.1.example.com'), false);
    assert.equal(registryBaseUrl('docker.io'), 'https://registry-1.docker.io');
    assert.equal(registryBaseUrl('127.0.0.1:5000'), 'http://127.0.0.1:5000');
    assert.equal(registryBaseUrl('reg.lan:5000'), 'https://reg.lan:5000');
    assert.equal(registryBaseUrl('reg.lan:5000', ['reg.lan:5000']), 'http://reg.lan:5000');
    assert.equal(registryBaseUrl('reg.lan:5000', ['reg.lan']), 'http://reg.lan:5000');
    assert.equal(registryBaseUrl('reg.lan:5000', ['reg.lan:5001']), 'https://reg.lan:5000');
    assert.deepEqual(parseInsecureList(' a:1, ,b '), ['a:1', 'b']);
    assert.deepEqual(parseInsecureList(undefined), []);
  });

  void it('read the registry of a login server address', () => {
    assert.equal(registryOfServerAddress('https://index.docker.io/v1/'), 'docker.io');
    assert.equal(registryOfServerAddress(''), 'docker.io');
    assert.equal(registryOfServerAddress('127.0.0.1:5001'), '127.0.0.1:5001');
    assert.equal(registryOfServerAddress('http://127.0.0.1:5001/v2/'), '127.0.0.1:5001');
  });
});
