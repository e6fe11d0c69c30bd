import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTetherError } from '../../../../protocol/src/errors/errors.ts';
import {
  idPrefix,
  normalizeRepoTag,
  parseReference,
  repoTagFor,
  shortId,
} from '../../../../hostside/src/daemon/images/reference.ts';

void describe('image references', () => {
  void it('normalise to the familiar name:tag Docker stores', () => {
    const table: [string, string][] = [
      ['busybox', 'busybox:latest'],
      ['busybox:1.36', 'busybox:1.36'],
      ['library/busybox', 'busybox:latest'],
      ['docker.io/library/busybox:latest', 'busybox:latest'],
      ['index.docker.io/library/busybox', 'busybox:latest'],
      ['docker.io/tether/busybox', 'tether/busybox:latest'],
      ['tether/busybox:v1', 'tether/busybox:v1'],
      ['localhost/app', 'localhost/app:latest'],
      ['localhost:5000/team/app:2', 'localhost:5000/team/app:2'],
      ['registry.example.com/library/x', 'registry.example.com/library/x:latest'],
      ['a.b-c/e__f.g-h', 'a.b-c/e__f.g-h:latest'],
      ['team/a__b', 'team/a__b:latest'],
    ];
    for (const [input, expected] of table) assert.equal(normalizeRepoTag(input), expected, input);
  });

  void it('refuse what is not a name:tag with Docker message', () => {
    for (const input of [
      'Busybox',
      'bad name',
      'x:',
      ':tag',
      'a//b',
      'a/-b',
      `x:${'t'.repeat(129)}`,
      '',
      'busybox@sha256:abc',
    ])
      assert.throws(
        () => normalizeRepoTag(input),
        (error: unknown) =>
          isTetherError(error, 'TETHER_REFERENCE_INVALID') &&
          error.message ===
            `Error parsing reference: "${input}" is not a valid repository/tag: invalid reference format`,
        input,
      );
  });

  void it('keep a digest apart (it names no tag)', () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    assert.deepEqual(parseReference(`busybox@${digest}`), { name: 'busybox', digest });
    assert.equal(repoTagFor(`busybox@${digest}`), undefined);
    assert.equal(repoTagFor('busybox'), 'busybox:latest');
  });

  void it('read id prefixes of at least 4 hex digits, and short ids', () => {
    assert.equal(idPrefix('abcd'), 'abcd');
    assert.equal(idPrefix('sha256:abcdef'), 'abcdef');
    assert.equal(idPrefix('abc'), undefined);
    assert.equal(idPrefix('abcg'), undefined);
    assert.equal(shortId(`sha256:${'0123456789abcdef'.repeat(4)}`), '0123456789ab');
  });
});
