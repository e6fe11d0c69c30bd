import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTetherError } from '../../../../../protocol/src/errors/errors.ts';
import {
  basicAuthorization,
  credentialsFromAuthConfig,
  parseChallenges,
  parseRegistryAuthHeader,
} from '../../../../../hostside/src/daemon/images/registry/auth.ts';

const encode = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

void describe('registry credentials', () => {
  void it('come from the X-Registry-Auth header the docker CLI sends (base64url JSON)', () => {
    assert.deepEqual(
      parseRegistryAuthHeader(encode({ username: 'u', password: 'p?>>', serveraddress: '127.0.0.1:5001' })),
      {
        username: 'u',
        password: 'p?>>',
        serverAddress: '127.0.0.1:5001',
      },
    );
    // Standard base64 (+ and /) is taken too, and padding.
    const standard = Buffer.from(JSON.stringify({ username: 'ü', password: '>>>?' })).toString('base64');
    assert.deepEqual(parseRegistryAuthHeader(standard), { username: 'ü', password: '>>>?' });
    assert.deepEqual(parseRegistryAuthHeader(encode({ identitytoken: 'tok' })), { identityToken: 'tok' });
    assert.deepEqual(parseRegistryAuthHeader(encode({ auth: Buffer.from('a:b:c').toString('base64') })), {
      username: 'a',
      password: 'b:c',
    });
  });

  void it('are none for an absent, empty or anonymous header', () => {
    assert.equal(parseRegistryAuthHeader(undefined), undefined);
    assert.equal(parseRegistryAuthHeader(''), undefined);
    assert.equal(parseRegistryAuthHeader(encode({})), undefined);
    assert.equal(parseRegistryAuthHeader(encode({ serveraddress: 'x' })), undefined);
    assert.equal(credentialsFromAuthConfig(null), undefined);
    assert.equal(credentialsFromAuthConfig([1]), undefined);
  });

  void it('refuse a header that is not base64 JSON', () => {
    assert.throws(
      () => parseRegistryAuthHeader('!!!not json'),
      (error: unknown) =>
        isTetherError(error, 'TETHER_INVALID_PARAMETER') && /X-Registry-Auth/.test(error.message),
    );
  });

  void it('make a Basic Authorization (RFC 7617)', () => {
    assert.equal(basicAuthorization('Aladdin', 'open sesame'), 'Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==');
  });
});

void describe('WWW-Authenticate challenges', () => {
  void it('parse Docker Hub and distribution token challenges', () => {
    assert.deepEqual(
      parseChallenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"',
      ),
      [
        {
          scheme: 'bearer',
          params: {
            realm: 'https://auth.docker.io/token',
            service: 'registry.docker.io',
            scope: 'repository:library/busybox:pull',
          },
        },
      ],
    );
  });

  void it('parse Basic, unquoted values, escapes, spacing and several challenges in one header', () => {
    assert.deepEqual(parseChallenges('Basic realm="Registry Realm"'), [
      { scheme: 'basic', params: { realm: 'Registry Realm' } },
    ]);
    assert.deepEqual(parseChallenges('basic realm=plain , charset="UTF-8"'), [
      { scheme: 'basic', params: { realm: 'plain', charset: 'UTF-8' } },
    ]);
    assert.deepEqual(parseChallenges('Basic realm="a \\"b\\"", Bearer realm="https://t/x",service=s'), [
      { scheme: 'basic', params: { realm: 'a "b"' } },
      { scheme: 'bearer', params: { realm: 'https://t/x', service: 's' } },
    ]);
    assert.deepEqual(parseChallenges('Negotiate, Basic'), [
      { scheme: 'negotiate', params: {} },
      { scheme: 'basic', params: {} },
    ]);
  });

  void it('end on garbage instead of looping', () => {
    assert.deepEqual(parseChallenges(''), []);
    for (const junk of ['"', '=', 'Bearer realm="unterminated', 'Bearer ===', ',,,', 'a b c'])
      assert.ok(Array.isArray(parseChallenges(junk)), junk);
  });
});
