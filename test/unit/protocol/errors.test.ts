import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import {
  ERROR_CODES,
  TetherError,
  describeError,
  isTetherError,
  type ErrorCode,
} from '../../../protocol/src/errors/errors.ts';
import { ConfigError } from '../../../protocol/src/config/config.ts';

const errorsDoc = readFileSync(join(process.cwd(), 'docs/errors.md'), 'utf8');

/** The text of the docs/errors.md section headed by `code`, up to the next heading. */
function section(code: string): string | undefined {
  const start = errorsDoc.indexOf(`\n### \`${code}\`\n`);
  if (start === -1) return undefined;
  const body = errorsDoc.slice(start + 1).split('\n');
  const end = body.findIndex((line, index) => index > 0 && line.startsWith('#'));
  return body.slice(1, end === -1 ? undefined : end).join('\n');
}

void describe('error codes', () => {
  void it('are unique and spelled TETHER_UPPER_SNAKE', () => {
    assert.equal(new Set(ERROR_CODES).size, ERROR_CODES.length);
    for (const code of ERROR_CODES) assert.match(code, /^TETHER_[A-Z]+(_[A-Z]+)*$/);
  });

  for (const code of ERROR_CODES) {
    void it(`${code} has a section in docs/errors.md with its meaning and what to do`, () => {
      const text = section(code);
      assert.ok(text !== undefined, `docs/errors.md has no "### \`${code}\`" heading`);
      assert.match(text, /\*\*Meaning\.\*\* \S/);
      assert.match(text, /\*\*What to do\.\*\* \S/);
    });
  }

  void it('docs/errors.md documents no code that does not exist', () => {
    const documented = [...errorsDoc.matchAll(/^### `(TETHER_[A-Z_]+)`$/gm)].map((match) => match[1]);
    assert.deepEqual(
      documented.filter((code) => !(ERROR_CODES as readonly string[]).includes(code!)),
      [],
    );
  });
});

void describe('TetherError', () => {
  void it('keeps code, message and cause, and is an Error', () => {
    const cause = new RangeError('low level');
    const error = new TetherError('TETHER_SYSCALL', 'mount /dev/vdb onto /newroot (ext4): EINVAL', { cause });
    assert.ok(error instanceof Error);
    assert.equal(error.name, 'TetherError');
    assert.equal(error.code, 'TETHER_SYSCALL');
    assert.equal(error.message, 'mount /dev/vdb onto /newroot (ext4): EINVAL');
    assert.equal(error.cause, cause);
    assert.match(String(error.stack), /TetherError: mount \/dev\/vdb/);
    assert.equal(new TetherError('TETHER_USAGE', 'x').cause, undefined);
  });

  void it('isTetherError matches the class, and the code when one is given', () => {
    const error = new TetherError('TETHER_OFFSET_GONE', 'gone');
    assert.equal(isTetherError(error), true);
    assert.equal(isTetherError(error, 'TETHER_OFFSET_GONE'), true);
    assert.equal(isTetherError(error, 'TETHER_USAGE'), false);
    const lookalike = Object.assign(new Error('gone'), { code: 'TETHER_OFFSET_GONE' });
    assert.equal(isTetherError(lookalike), false);
    assert.equal(isTetherError(undefined), false);
  });

  void it('subclasses keep their literal code', () => {
    const code: ErrorCode = new ConfigError('test', []).code;
    assert.equal(code, 'TETHER_CONFIG_INVALID');
    assert.ok(isTetherError(new ConfigError('test', []), 'TETHER_CONFIG_INVALID'));
  });

  void it('describeError reports any thrown value', () => {
    assert.equal(describeError(new TetherError('TETHER_USAGE', 'bad flag')), 'TETHER_USAGE: bad flag');
    assert.equal(describeError(new TypeError('plain')), 'plain');
    assert.equal(describeError('a string'), 'a string');
    assert.equal(describeError(42), '42');
  });
});
