import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTetherError } from '../../../../../protocol/src/errors/errors.ts';
import {
  manifestError,
  parseErrorBody,
  unexpectedResponse,
  unreachable,
} from '../../../../../hostside/src/daemon/images/registry/registry-errors.ts';

const body = (code: string, message: string): string =>
  JSON.stringify({ errors: [{ code, message, detail: {} }] });
const response = (
  status: number,
  text: string,
): { status: number; statusText: string; body: string; url: string } => ({
  status,
  statusText: status === 404 ? 'Not Found' : status === 401 ? 'Unauthorized' : 'Internal Server Error',
  body: text,
  url: 'http://127.0.0.1:5000/v2/busybox/manifests/x',
});

void describe('registry errors', () => {
  void it('read the errcode body', () => {
    assert.deepEqual(parseErrorBody(body('MANIFEST_UNKNOWN', 'manifest unknown')), [
      { code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' },
    ]);
    assert.deepEqual(parseErrorBody('<html>'), []);
    assert.deepEqual(parseErrorBody('{"errors":[{"message":"no code"},{"code":"DENIED"}]}'), [
      { code: 'DENIED', message: 'denied' },
    ]);
  });

  void it("become Docker's messages for a manifest", () => {
    const cases: [number, string, RegExp][] = [
      [
        404,
        body('MANIFEST_UNKNOWN', 'manifest unknown'),
        /^manifest for busybox:nope not found: manifest unknown: manifest unknown$/,
      ],
      [404, '', /^manifest for busybox:nope not found: manifest unknown$/],
      [
        404,
        body('NAME_UNKNOWN', 'repository name not known to registry'),
        /^repository busybox not found: name unknown: repository name not known/,
      ],
      [
        401,
        body('UNAUTHORIZED', 'authentication required'),
        /^pull access denied for busybox, repository does not exist or may require 'docker login': unauthorized: authentication required$/,
      ],
      [
        403,
        body('DENIED', 'requested access to the resource is denied'),
        /^pull access denied for busybox, .*denied: requested access/,
      ],
    ];
    for (const [status, text, message] of cases) {
      const error = manifestError(response(status, text), 'busybox', 'busybox:nope');
      assert.ok(isTetherError(error, 'TETHER_NO_SUCH_IMAGE'), `${status} ${text}`);
      assert.match(error.message, message);
    }
    const failed = manifestError(response(500, 'oops'), 'busybox', 'busybox:x');
    assert.ok(isTetherError(failed, 'TETHER_REGISTRY_FAILED'));
    assert.equal(
      failed.message,
      'http://127.0.0.1:5000/v2/busybox/manifests/x answered 500 Internal Server Error: oops',
    );
    assert.match(unexpectedResponse(response(500, '')).message, /\(no body\)$/);
  });

  void it('say why a registry cannot be reached', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
    const error = unreachable('http://127.0.0.1:9/v2/', new TypeError('fetch failed', { cause: refused }));
    assert.ok(isTetherError(error, 'TETHER_REGISTRY_FAILED'));
    assert.equal(
      error.message,
      'cannot reach the registry at http://127.0.0.1:9/v2/: connect ECONNREFUSED 127.0.0.1:9 (is the registry running on that port?)',
    );
  });
});
