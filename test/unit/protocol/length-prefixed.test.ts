import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { TetherError, isTetherError } from '../../../protocol/src/errors/errors.ts';
import {
  FirstFrameReader,
  LengthPrefixedDecoder,
  MAX_FRAME_BYTES,
  encodeLengthPrefixed,
} from '../../../protocol/src/framing/length-prefixed.ts';

const FRAME_CODES = ['TETHER_FRAME_INVALID', 'TETHER_FRAME_TOO_LARGE', 'TETHER_FRAME_TRUNCATED'];

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

const bodies = fc.array(
  fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
  { maxLength: 8 },
);
const cuts = fc.array(fc.nat(), { maxLength: 12 });

void describe('length-prefixed framing', () => {
  void it('writes a u32 big-endian length, then the body', () => {
    assert.deepEqual(encodeLengthPrefixed(Buffer.from('abc')), Buffer.from([0, 0, 0, 3, 0x61, 0x62, 0x63]));
    assert.deepEqual(encodeLengthPrefixed(new Uint8Array(0)), Buffer.from([0, 0, 0, 0]));
    const big = encodeLengthPrefixed(Buffer.alloc(0x10203));
    assert.deepEqual(big.subarray(0, 4), Buffer.from([0x00, 0x01, 0x02, 0x03]));
    assert.equal(big.length, 4 + 0x10203);
  });

  void it('encodes a body of exactly MAX_FRAME_BYTES and refuses one byte more', () => {
    assert.equal(encodeLengthPrefixed(Buffer.alloc(MAX_FRAME_BYTES)).length, MAX_FRAME_BYTES + 4);
    assert.throws(
      () => encodeLengthPrefixed(Buffer.alloc(MAX_FRAME_BYTES + 1)),
      (error) => isTetherError(error, 'TETHER_FRAME_TOO_LARGE'),
    );
  });

  void it('round trip: decode(encode(bodies)) under arbitrary chunking', () => {
    fc.assert(
      fc.property(bodies, cuts, (input, cutPoints) => {
        const stream = Buffer.concat(input.map((body) => encodeLengthPrefixed(body)));
        const decoder = new LengthPrefixedDecoder();
        const out = chunksAt(stream, cutPoints).flatMap((chunk) => decoder.push(chunk));
        assert.deepEqual(out, input);
        assert.equal(decoder.pendingBytes, 0);
        decoder.end();
      }),
    );
  });

  void it('holds a partial frame back and reports how much is pending', () => {
    const decoder = new LengthPrefixedDecoder();
    assert.deepEqual(decoder.push(Buffer.from([0, 0])), []);
    assert.equal(decoder.pendingBytes, 2);
    assert.deepEqual(decoder.push(Buffer.from([0, 2, 0x68])), []);
    assert.equal(decoder.pendingBytes, 5);
    assert.deepEqual(decoder.push(Buffer.from([0x69, 0, 0, 0])), [Buffer.from('hi')]);
    assert.equal(decoder.pendingBytes, 3);
  });

  void it('rejects an announced length above the limit before the body arrives', () => {
    const decoder = new LengthPrefixedDecoder(16);
    assert.deepEqual(decoder.push(encodeLengthPrefixed(Buffer.alloc(16))), [Buffer.alloc(16)]);
    assert.throws(
      () => decoder.push(Buffer.from([0, 0, 0, 17])),
      (error) =>
        isTetherError(error, 'TETHER_FRAME_TOO_LARGE') &&
        /17 bytes, limit is 16/.test((error as Error).message),
    );
    assert.throws(
      () => new LengthPrefixedDecoder().push(Buffer.from([0xff, 0xff, 0xff, 0xff])),
      (error) => isTetherError(error, 'TETHER_FRAME_TOO_LARGE'),
    );
  });

  void it('end() after a truncated frame throws TETHER_FRAME_TRUNCATED', () => {
    fc.assert(
      fc.property(
        bodies.filter((list) => list.length > 0),
        fc.nat(),
        (input, cutSeed) => {
          const frames = input.map((body) => encodeLengthPrefixed(body));
          const stream = Buffer.concat(frames);
          // Cut inside the last frame: after its first byte, before its last.
          const last = frames.at(-1)!;
          const cut = stream.length - last.length + 1 + (cutSeed % (last.length - 1));
          const decoder = new LengthPrefixedDecoder();
          const out = decoder.push(stream.subarray(0, cut));
          assert.deepEqual(out, input.slice(0, -1));
          assert.throws(
            () => decoder.end(),
            (error) => isTetherError(error, 'TETHER_FRAME_TRUNCATED'),
          );
        },
      ),
    );
  });

  void it('arbitrary bytes give frames or a frame TetherError, never another exception', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 200 }),
        cuts,
        fc.integer({ min: 0, max: 64 }),
        (bytes, cutPoints, limit) => {
          const decoder = new LengthPrefixedDecoder(limit);
          try {
            for (const chunk of chunksAt(Buffer.from(bytes), cutPoints)) {
              for (const body of decoder.push(chunk)) assert.ok(body.length <= limit);
            }
            decoder.end();
          } catch (error) {
            assert.ok(error instanceof TetherError, `not a TetherError: ${String(error)}`);
            assert.ok(FRAME_CODES.includes(error.code), error.code);
          }
        },
      ),
    );
  });
});

void describe('FirstFrameReader', () => {
  void it('returns nothing until the first frame is whole, then the body and every byte after it', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 100 }).map((b) => Buffer.from(b)),
        fc.uint8Array({ maxLength: 100 }).map((b) => Buffer.from(b)),
        cuts,
        (body, after, cutPoints) => {
          const frame = encodeLengthPrefixed(body);
          const stream = Buffer.concat([frame, after]);
          const reader = new FirstFrameReader();
          let received = 0;
          for (const chunk of chunksAt(stream, cutPoints)) {
            received += chunk.length;
            const first = reader.push(chunk);
            if (received < frame.length) {
              assert.equal(first, undefined);
              continue;
            }
            assert.deepEqual(first, { body, rest: stream.subarray(frame.length, received) });
            return;
          }
          assert.fail('the frame never completed');
        },
      ),
    );
  });

  void it('refuses an oversized announcement with TETHER_FRAME_TOO_LARGE', () => {
    const reader = new FirstFrameReader(8);
    assert.throws(
      () => reader.push(Buffer.from([0, 0, 0, 9, 1])),
      (error) => isTetherError(error, 'TETHER_FRAME_TOO_LARGE'),
    );
  });
});
