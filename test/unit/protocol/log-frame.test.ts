import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { TetherError, isTetherError } from '../../../protocol/src/errors/errors.ts';
import {
  LOG_HEADER_BYTES,
  LogFrameDecoder,
  MAX_LOG_PAYLOAD,
  STREAM_STDERR,
  STREAM_STDOUT,
  encodeLogFrame,
  encodeLogFrameHeader,
  type LogFrame,
} from '../../../protocol/src/logs/log-frame.ts';

const FRAME_CODES = ['TETHER_FRAME_INVALID', 'TETHER_FRAME_TOO_LARGE', 'TETHER_FRAME_TRUNCATED'];
const FIXTURES = join(process.cwd(), 'test/fixtures/frames');

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

/** The layout from the header comment of log-frame.ts, written out by hand. */
function handEncoded(stream: number, timestampMs: number, data: Buffer): Buffer {
  const header = new DataView(new ArrayBuffer(14));
  header.setUint8(0, 0x7e);
  header.setUint8(1, stream);
  header.setUint32(2, data.length, false);
  header.setFloat64(6, timestampMs, false);
  return Buffer.concat([Buffer.from(header.buffer), data]);
}

// fc.record builds null-prototype objects; spread them into plain ones like the decoder returns.
const frameArb: fc.Arbitrary<LogFrame> = fc
  .record({
    stream: fc.constantFrom(STREAM_STDOUT, STREAM_STDERR),
    timestampMs: fc.double({ noNaN: true, noDefaultInfinity: true }),
    data: fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)),
  })
  .map((frame) => ({ ...frame }));
const cuts = fc.array(fc.nat(), { maxLength: 12 });

void describe('log frames', () => {
  void it('match the documented byte layout', () => {
    const data = Buffer.from('hello\n');
    assert.equal(LOG_HEADER_BYTES, 14);
    assert.deepEqual(
      encodeLogFrame({ stream: STREAM_STDERR, timestampMs: 1700000000123.5, data }),
      handEncoded(2, 1700000000123.5, data),
    );
    assert.deepEqual(
      encodeLogFrameHeader(STREAM_STDOUT, 0, 0x0102),
      Buffer.from([0x7e, 0x01, 0x00, 0x00, 0x01, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]),
    );
  });

  void it('round trip: decode(encode(frames)) deep-equals the frames under arbitrary chunking', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { maxLength: 8 }), cuts, (frames, cutPoints) => {
        const stream = Buffer.concat(frames.map(encodeLogFrame));
        const decoder = new LogFrameDecoder();
        const out = chunksAt(stream, cutPoints).flatMap((chunk) => decoder.push(chunk));
        assert.deepEqual(out, frames);
        assert.equal(decoder.pendingBytes, 0);
        decoder.end();
      }),
    );
  });

  void it('keeps sub-millisecond precision and negative zero in the timestamp', () => {
    const decoder = new LogFrameDecoder();
    const [a, b] = decoder.push(
      Buffer.concat([
        encodeLogFrame({ stream: 1, timestampMs: 1700000000000.125, data: Buffer.alloc(0) }),
        encodeLogFrame({ stream: 1, timestampMs: -0, data: Buffer.alloc(0) }),
      ]),
    );
    assert.equal(a?.timestampMs, 1700000000000.125);
    assert.ok(Object.is(b?.timestampMs, -0));
  });

  void it('decoded payloads are copies: reusing the input buffer does not change them', () => {
    const input = encodeLogFrame({ stream: 1, timestampMs: 1, data: Buffer.from('abc') });
    const [frame] = new LogFrameDecoder().push(input);
    input.fill(0);
    assert.deepEqual(frame?.data, Buffer.from('abc'));
  });

  void it('a bad magic, an unknown stream or a non-finite timestamp is TETHER_FRAME_INVALID', () => {
    const good = handEncoded(1, 5, Buffer.from('x'));
    const cases: [string, Buffer, RegExp][] = [
      ['magic', Buffer.concat([Buffer.from([0x7f]), good.subarray(1)]), /bad magic 0x7f/],
      ['stream 0', handEncoded(0, 5, Buffer.from('x')), /unknown stream 0/],
      ['stream 3', handEncoded(3, 5, Buffer.from('x')), /unknown stream 3/],
      ['NaN', handEncoded(1, Number.NaN, Buffer.from('x')), /timestamp/],
      ['Infinity', handEncoded(1, Number.POSITIVE_INFINITY, Buffer.from('x')), /timestamp/],
    ];
    for (const [name, bytes, message] of cases) {
      assert.throws(
        () => new LogFrameDecoder().push(bytes),
        (error) => isTetherError(error, 'TETHER_FRAME_INVALID') && message.test((error as Error).message),
        name,
      );
    }
  });

  void it('a bad frame after good ones names its position', () => {
    const good = handEncoded(1, 5, Buffer.from('xy'));
    assert.throws(
      () => new LogFrameDecoder().push(Buffer.concat([good, Buffer.from('garbage-after-frame')])),
      (error) => isTetherError(error, 'TETHER_FRAME_INVALID') && /at byte 16/.test((error as Error).message),
    );
  });

  void it('refuses payloads above MAX_LOG_PAYLOAD when encoding and when a header announces one', () => {
    assert.throws(
      () => encodeLogFrameHeader(STREAM_STDOUT, 0, MAX_LOG_PAYLOAD + 1),
      (error) => isTetherError(error, 'TETHER_FRAME_TOO_LARGE'),
    );
    assert.equal(encodeLogFrameHeader(STREAM_STDOUT, 0, MAX_LOG_PAYLOAD).readUInt32BE(2), MAX_LOG_PAYLOAD);
    const header = handEncoded(1, 0, Buffer.alloc(0));
    header.writeUInt32BE(MAX_LOG_PAYLOAD + 1, 2);
    assert.throws(
      () => new LogFrameDecoder().push(header),
      (error) => isTetherError(error, 'TETHER_FRAME_TOO_LARGE'),
    );
  });

  void it('the encoder refuses what the decoder would refuse (stream, timestamp)', () => {
    for (const timestampMs of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      assert.throws(
        () => encodeLogFrame({ stream: STREAM_STDOUT, timestampMs, data: Buffer.from('x') }),
        (error) => isTetherError(error, 'TETHER_FRAME_INVALID'),
        String(timestampMs),
      );
    }
    assert.throws(
      () => encodeLogFrameHeader(3 as typeof STREAM_STDOUT, 0, 0),
      (error) => isTetherError(error, 'TETHER_FRAME_INVALID'),
    );
  });

  void it('end() after a truncated frame throws TETHER_FRAME_TRUNCATED', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 4 }), fc.nat(), (frames, cutSeed) => {
        const encoded = frames.map(encodeLogFrame);
        const stream = Buffer.concat(encoded);
        const last = encoded.at(-1)!;
        const cut = stream.length - last.length + 1 + (cutSeed % (last.length - 1));
        const decoder = new LogFrameDecoder();
        assert.deepEqual(decoder.push(stream.subarray(0, cut)), frames.slice(0, -1));
        assert.throws(
          () => decoder.end(),
          (error) => isTetherError(error, 'TETHER_FRAME_TRUNCATED'),
        );
      }),
    );
  });

  void it('arbitrary bytes give frames or a frame TetherError, never another exception', () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      // Mostly well-formed: a valid stream with a few bytes changed.
      fc
        .tuple(fc.array(frameArb, { maxLength: 4 }), fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 }))))
        .map(([frames, edits]) => {
          const out = Buffer.concat(frames.map(encodeLogFrame));
          for (const [at, value] of edits) if (out.length > 0) out[at % out.length] = value;
          return out;
        }),
    );
    fc.assert(
      fc.property(bytes, cuts, (input, cutPoints) => {
        const decoder = new LogFrameDecoder();
        try {
          for (const chunk of chunksAt(Buffer.from(input), cutPoints)) {
            for (const frame of decoder.push(chunk)) {
              assert.ok(frame.stream === STREAM_STDOUT || frame.stream === STREAM_STDERR);
              assert.ok(Number.isFinite(frame.timestampMs));
            }
          }
          decoder.end();
        } catch (error) {
          assert.ok(error instanceof TetherError, `not a TetherError: ${String(error)}`);
          assert.ok(FRAME_CODES.includes(error.code), error.code);
        }
      }),
    );
  });
});

void describe('log frame golden bytes', () => {
  const golden = JSON.parse(readFileSync(join(FIXTURES, 'log-frame.json'), 'utf8')) as {
    stream: typeof STREAM_STDOUT;
    timestampMs: number;
    dataBase64: string;
  };
  const frame: LogFrame = {
    stream: golden.stream,
    timestampMs: golden.timestampMs,
    data: Buffer.from(golden.dataBase64, 'base64'),
  };
  const bin = readFileSync(join(FIXTURES, 'log-frame.bin'));

  void it('encoding log-frame.json gives exactly log-frame.bin', () => {
    assert.deepEqual(encodeLogFrame(frame), bin);
  });

  void it('decoding log-frame.bin gives log-frame.json', () => {
    assert.deepEqual(new LogFrameDecoder().push(bin), [frame]);
  });
});
