import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { pack } from 'msgpackr';
import { TetherError, isTetherError } from '../../../protocol/src/errors/errors.ts';
import { encodeLengthPrefixed } from '../../../protocol/src/framing/length-prefixed.ts';
import {
  BOOT_STAGES,
  StatusDecoder,
  checkStatusRecord,
  decodeStatusFrame,
  encodeStatusRecord,
  formatStatusRecord,
  type StatusRecord,
} from '../../../protocol/src/status/status.ts';

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

// Strings are well-formed Unicode: msgpack carries UTF-8, which cannot hold a lone surrogate.
const text = fc.string({ unit: 'grapheme', maxLength: 60 });
const recordArb: fc.Arbitrary<StatusRecord> = fc
  .record(
    {
      stage: fc.constantFrom(...BOOT_STAGES),
      outcome: fc.constantFrom('ok' as const, 'failed' as const, 'skipped' as const),
      atMs: fc.oneof(fc.nat(), fc.double({ min: 0, noNaN: true, noDefaultInfinity: true })),
      detail: text,
      pid: fc.integer({ min: 1, max: 4194304 }),
      exitCode: fc.integer({ min: -1, max: 255 }),
      signal: fc.constantFrom('SIGKILL', 'SIGTERM', 'SIGSEGV'),
      oomKilled: fc.boolean(),
    },
    { requiredKeys: ['stage', 'outcome', 'atMs'] },
  )
  .map((record) => ({ ...record }));
const cuts = fc.array(fc.nat(), { maxLength: 12 });

void describe('status records', () => {
  void it('round trip: decode(encode(records)) deep-equals the records under arbitrary chunking', () => {
    fc.assert(
      fc.property(fc.array(recordArb, { maxLength: 6 }), cuts, (records, cutPoints) => {
        const stream = Buffer.concat(records.map(encodeStatusRecord));
        const decoder = new StatusDecoder();
        const out = chunksAt(stream, cutPoints).flatMap((chunk) => decoder.push(chunk));
        assert.deepEqual(out, records);
        decoder.end();
      }),
    );
  });

  void it('a record is a length-prefixed msgpack map', () => {
    const record: StatusRecord = { stage: 'config', outcome: 'ok', atMs: 12 };
    const encoded = encodeStatusRecord(record);
    assert.equal(encoded.readUInt32BE(0), encoded.length - 4);
    assert.deepEqual(encoded.subarray(4), pack(record));
  });

  void it('unknown fields from a newer agent are dropped, not refused', () => {
    const frame = encodeLengthPrefixed(pack({ stage: 'network', outcome: 'ok', atMs: 5, future: [1, 2] }));
    assert.deepEqual(new StatusDecoder().push(frame), [{ stage: 'network', outcome: 'ok', atMs: 5 }]);
  });

  void it('refuses records that break the schema with TETHER_FRAME_INVALID naming what was wrong', () => {
    const cases: [unknown, RegExp][] = [
      ['a string', /not a map/],
      [null, /not a map/],
      [{ stage: 'bogus', outcome: 'ok', atMs: 1 }, /unknown stage bogus/],
      [{ stage: 'kernel', outcome: 'maybe', atMs: 1 }, /unknown outcome maybe/],
      [{ stage: 'kernel', outcome: 'ok' }, /atMs/],
      [{ stage: 'kernel', outcome: 'ok', atMs: '1' }, /atMs/],
      [{ stage: 'kernel', outcome: 'ok', atMs: Number.POSITIVE_INFINITY }, /atMs/],
      [{ stage: 'kernel', outcome: 'ok', atMs: 1, detail: 7 }, /detail is not a string/],
      [{ stage: 'kernel', outcome: 'ok', atMs: 1, pid: '7' }, /pid is not a number/],
      [{ stage: 'kernel', outcome: 'ok', atMs: 1, exitCode: true }, /exitCode is not a number/],
      [{ stage: 'kernel', outcome: 'ok', atMs: 1, signal: 9 }, /signal is not a string/],
    ];
    for (const [value, message] of cases) {
      const check = (error: unknown): boolean =>
        isTetherError(error, 'TETHER_FRAME_INVALID') && message.test((error as Error).message);
      assert.throws(() => checkStatusRecord(value), check, JSON.stringify(value));
      assert.throws(
        () => new StatusDecoder().push(encodeLengthPrefixed(pack(value))),
        check,
        JSON.stringify(value),
      );
      assert.throws(() => encodeStatusRecord(value as StatusRecord), check, JSON.stringify(value));
    }
  });

  void it('a frame that is not msgpack is TETHER_FRAME_INVALID with the parse error as cause', () => {
    // A cut-off string, an empty body, and a value followed by stray bytes.
    for (const body of [Buffer.from([0xa5, 0x61]), Buffer.alloc(0), Buffer.from([0x01, 0x02])]) {
      assert.throws(
        () => new StatusDecoder().push(encodeLengthPrefixed(body)),
        (error) =>
          isTetherError(error, 'TETHER_FRAME_INVALID') &&
          /not msgpack/.test(error.message) &&
          error.cause instanceof Error,
        body.toString('hex'),
      );
    }
  });

  void it('any record the encoder accepts, the decoder accepts (a long detail)', () => {
    const record: StatusRecord = { stage: 'config', outcome: 'failed', atMs: 3, detail: 'x'.repeat(70_000) };
    assert.deepEqual(new StatusDecoder().push(encodeStatusRecord(record)), [record]);
  });

  void it('end() after a truncated frame throws TETHER_FRAME_TRUNCATED', () => {
    fc.assert(
      fc.property(recordArb, fc.nat(), (record, cutSeed) => {
        const encoded = encodeStatusRecord(record);
        const decoder = new StatusDecoder();
        assert.deepEqual(decoder.push(encoded.subarray(0, 1 + (cutSeed % (encoded.length - 1)))), []);
        assert.throws(
          () => decoder.end(),
          (error) => isTetherError(error, 'TETHER_FRAME_TRUNCATED'),
        );
      }),
    );
  });

  void it('arbitrary bytes give records or a frame TetherError, never another exception', () => {
    const frames = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)),
      // Well-framed arbitrary bodies reach the msgpack layer.
      fc
        .array(fc.uint8Array({ maxLength: 40 }), { maxLength: 4 })
        .map((bodies) => Buffer.concat(bodies.map((body) => encodeLengthPrefixed(body)))),
      // Well-framed msgpack of arbitrary values reaches the schema check.
      fc
        .array(fc.anything(), { maxLength: 4 })
        .map((values) => Buffer.concat(values.map((value) => encodeLengthPrefixed(pack(value))))),
    );
    fc.assert(
      fc.property(frames, cuts, (bytes, cutPoints) => {
        const decoder = new StatusDecoder();
        try {
          for (const chunk of chunksAt(bytes, cutPoints)) {
            for (const record of decoder.push(chunk)) assert.ok(BOOT_STAGES.includes(record.stage));
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

void describe('one status frame', () => {
  void it('decodeStatusFrame reads exactly one whole frame', () => {
    fc.assert(
      fc.property(recordArb, (record) => {
        assert.deepEqual(decodeStatusFrame(encodeStatusRecord(record)), record);
      }),
    );
  });

  void it('anything but one whole frame is a frame TetherError', () => {
    const frame = encodeStatusRecord({ stage: 'oom', outcome: 'failed', atMs: 5, pid: 9 });
    for (const bad of [
      Buffer.alloc(0),
      frame.subarray(0, 3),
      frame.subarray(0, -1),
      Buffer.concat([frame, frame]),
    ])
      assert.throws(
        () => decodeStatusFrame(bad),
        (error) => error instanceof TetherError && FRAME_CODES.includes(error.code),
      );
  });

  void it('the oom stage and the oomKilled flag are part of a record; a non-boolean flag is not', () => {
    const record: StatusRecord = {
      stage: 'process-exited',
      outcome: 'ok',
      atMs: 1,
      exitCode: 137,
      oomKilled: true,
    };
    assert.deepEqual(decodeStatusFrame(encodeStatusRecord(record)), record);
    assert.ok(BOOT_STAGES.includes('oom'));
    assert.throws(
      () => checkStatusRecord({ stage: 'process-exited', outcome: 'ok', atMs: 1, oomKilled: 1 }),
      (error) =>
        isTetherError(error, 'TETHER_FRAME_INVALID') && /oomKilled is not a boolean/.test(error.message),
    );
  });
  void it('formats a human line with the time in seconds and every field present', () => {
    assert.equal(
      formatStatusRecord({
        stage: 'process-exited',
        outcome: 'failed',
        atMs: 1234.25,
        pid: 7,
        exitCode: 137,
        signal: 'SIGKILL',
        detail: 'OOM',
      }),
      '[   1.234] process-exited failed pid=7 exit=137 signal=SIGKILL OOM',
    );
    assert.equal(
      formatStatusRecord({
        stage: 'process-exited',
        outcome: 'ok',
        atMs: 2000,
        exitCode: 137,
        oomKilled: true,
      }),
      '[   2.000] process-exited ok exit=137 oom-killed',
    );
    assert.equal(
      formatStatusRecord({
        stage: 'oom',
        outcome: 'failed',
        atMs: 1500,
        pid: 97,
        detail: 'memory.max reached',
      }),
      '[   1.500] oom failed pid=97 memory.max reached',
    );
    assert.equal(formatStatusRecord({ stage: 'kernel', outcome: 'ok', atMs: 0 }), '[   0.000] kernel ok');
  });
});

void describe('status record golden bytes', () => {
  const record = JSON.parse(readFileSync(join(FIXTURES, 'status-record.json'), 'utf8')) as StatusRecord;
  const bin = readFileSync(join(FIXTURES, 'status-record.bin'));

  void it('encoding status-record.json gives exactly status-record.bin', () => {
    assert.deepEqual(encodeStatusRecord(record), bin);
  });

  void it('decoding status-record.bin gives status-record.json', () => {
    assert.deepEqual(new StatusDecoder().push(bin), [record]);
  });
});
