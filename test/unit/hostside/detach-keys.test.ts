import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isTetherError } from '../../../protocol/src/errors/errors.ts';
import { DetachKeyScanner, parseDetachKeys } from '../../../hostside/src/cli/detach-keys.ts';

const CTRL_P = 0x10;
const CTRL_Q = 0x11;

/** Feeds chunks until a detach; returns what was forwarded and whether it detached. */
function scan(sequence: Buffer, chunks: Buffer[]): { forwarded: Buffer; detached: boolean } {
  const scanner = new DetachKeyScanner(sequence);
  const forwarded: Buffer[] = [];
  for (const chunk of chunks) {
    const { forward, detach } = scanner.push(chunk);
    forwarded.push(forward);
    if (detach) return { forwarded: Buffer.concat(forwarded), detached: true };
  }
  return { forwarded: Buffer.concat(forwarded), detached: false };
}

/** Splits `bytes` at the given cut points (taken modulo length + 1; repeats give empty chunks). */
function chunksAt(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = cuts.map((cut) => cut % (bytes.length + 1)).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const point of [...points, bytes.length]) {
    out.push(bytes.subarray(from, point));
    from = point;
  }
  return out;
}

void describe('parseDetachKeys', () => {
  void it('reads Docker spellings', () => {
    assert.deepEqual(parseDetachKeys('ctrl-p,ctrl-q'), Buffer.from([CTRL_P, CTRL_Q]));
    assert.deepEqual(parseDetachKeys('CTRL-P, Ctrl-Q'), Buffer.from([CTRL_P, CTRL_Q]));
    assert.deepEqual(parseDetachKeys('ctrl-a'), Buffer.from([0x01]));
    assert.deepEqual(parseDetachKeys('a,b'), Buffer.from('ab'));
    assert.deepEqual(
      parseDetachKeys('ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_'),
      Buffer.from([0, 27, 28, 29, 30, 31]),
    );
  });

  for (const spec of ['', 'ctrl-', 'ctrl-pp', 'ctrl-1', 'ab', 'ctrl-p,,ctrl-q', 'alt-x']) {
    void it(`refuses ${JSON.stringify(spec)} with TETHER_USAGE naming the key`, () => {
      assert.throws(
        () => parseDetachKeys(spec),
        (error) =>
          isTetherError(error, 'TETHER_USAGE') &&
          /^detach keys: ".*" is not a key/.test((error as Error).message),
      );
    });
  }
});

void describe('DetachKeyScanner', () => {
  const sequence = Buffer.from([CTRL_P, CTRL_Q]);

  void it('ctrl-p,ctrl-q detaches; bytes before it are forwarded, the sequence is not', () => {
    assert.deepEqual(scan(sequence, [Buffer.from([0x61, CTRL_P, CTRL_Q, 0x62])]), {
      forwarded: Buffer.from('a'),
      detached: true,
    });
    assert.deepEqual(scan(sequence, [Buffer.from('ls'), Buffer.from([CTRL_P]), Buffer.from([CTRL_Q])]), {
      forwarded: Buffer.from('ls'),
      detached: true,
    });
  });

  void it('a broken partial sequence is forwarded intact, in order', () => {
    const scanner = new DetachKeyScanner(sequence);
    assert.deepEqual(scanner.push(Buffer.from([0x61, CTRL_P])), { forward: Buffer.from('a'), detach: false });
    assert.deepEqual(scanner.push(Buffer.from('x')), { forward: Buffer.from([CTRL_P, 0x78]), detach: false });
    // ctrl-p twice: the first is ordinary input, the second may still start the sequence.
    assert.deepEqual(scan(sequence, [Buffer.from([CTRL_P, CTRL_P, CTRL_Q])]), {
      forwarded: Buffer.from([CTRL_P]),
      detached: true,
    });
    assert.deepEqual(scan(sequence, [Buffer.from([CTRL_P, CTRL_P, 0x7a])]), {
      forwarded: Buffer.from([CTRL_P, CTRL_P, 0x7a]),
      detached: false,
    });
  });

  void it('property: input without the sequence is forwarded byte-identical under any chunking', () => {
    const specs = fc.constantFrom('ctrl-p,ctrl-q', 'ctrl-a', 'a,b,c', 'ctrl-x,ctrl-x');
    fc.assert(
      fc.property(specs, fc.uint8Array({ maxLength: 200 }), fc.array(fc.nat()), (spec, input, cuts) => {
        const keys = parseDetachKeys(spec);
        // Favour the sequence's own bytes so that partial matches are common.
        const bytes = Buffer.from(input.map((byte) => (byte % 3 === 0 ? keys[byte % keys.length]! : byte)));
        fc.pre(!bytes.includes(keys));
        const { forwarded, detached } = scan(keys, chunksAt(bytes, cuts));
        assert.equal(detached, false);
        // A trailing proper prefix of the sequence may still be held back, waiting for the next byte.
        const held = bytes.subarray(forwarded.length);
        assert.deepEqual(forwarded, bytes.subarray(0, forwarded.length));
        assert.ok(
          held.length < keys.length && keys.subarray(0, held.length).equals(held),
          'only a prefix is held',
        );
      }),
    );
  });

  void it('property: input containing the sequence detaches at its first occurrence under any chunking', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 100 }).filter((bytes) => !bytes.includes(CTRL_P)),
        fc.uint8Array({ maxLength: 20 }),
        fc.array(fc.nat()),
        (before, after, cuts) => {
          const input = Buffer.concat([before, sequence, after]);
          assert.deepEqual(scan(sequence, chunksAt(input, cuts)), {
            forwarded: Buffer.from(before),
            detached: true,
          });
        },
      ),
    );
  });
});
