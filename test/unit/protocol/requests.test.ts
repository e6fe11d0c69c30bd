import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { pack } from 'msgpackr';
import {
  ERROR_CODES,
  TetherError,
  isTetherError,
  type ErrorCode,
} from '../../../protocol/src/errors/errors.ts';
import {
  FirstFrameReader,
  LengthPrefixedDecoder,
  encodeLengthPrefixed,
} from '../../../protocol/src/framing/length-prefixed.ts';
import {
  archiveGetRequest,
  archivePutRequest,
  archiveStatRequest,
  attachRequest,
  decodeParams,
  decodeReply,
  encodeParams,
  encodeReply,
  execRequest,
  statusRequest,
  dockerFileMode,
  type AttachParams,
  type AttachResult,
  type ExecParams,
  type RequestType,
} from '../../../protocol/src/requests/requests.ts';

const DECODE_CODES = [
  'TETHER_FRAME_INVALID',
  'TETHER_FRAME_TOO_LARGE',
  'TETHER_FRAME_TRUNCATED',
  'TETHER_REQUEST_INVALID',
];
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

/** Frames from a byte stream split anywhere, decoded with `decode`. */
function decodeStream<T>(bytes: Buffer, cuts: number[], decode: (body: Buffer) => T): T[] {
  const frames = new LengthPrefixedDecoder();
  const out = chunksAt(bytes, cuts).flatMap((chunk) => frames.push(chunk).map(decode));
  frames.end();
  return out;
}

// fc.record builds null-prototype objects; spread them into plain ones like the decoder returns.
const plain = <T extends object>(value: T): T => ({ ...value });
const text = fc.string({ unit: 'grapheme', maxLength: 30 });
const execParamsArb: fc.Arbitrary<ExecParams> = fc
  .record(
    {
      argv: fc.array(text, { minLength: 1, maxLength: 5 }),
      env: fc.array(
        fc.tuple(text, text).map(([key, value]) => `${key}=${value}`),
        { maxLength: 4 },
      ),
      cwd: text,
      user: text,
      tty: fc
        .record({ cols: fc.integer({ min: 1, max: 10000 }), rows: fc.integer({ min: 1, max: 10000 }) })
        .map(plain),
      stdin: fc.boolean(),
    },
    { requiredKeys: ['argv', 'stdin'] },
  )
  .map(plain);
const attachParamsArb: fc.Arbitrary<AttachParams> = fc
  .record(
    {
      from: fc.oneof(fc.constant('start' as const), fc.constant('end' as const), fc.maxSafeNat()),
      stdin: fc.boolean(),
      output: fc.boolean(),
    },
    { requiredKeys: ['from', 'stdin'] },
  )
  .map(plain);
const attachResultArb: fc.Arbitrary<AttachResult> = fc
  .record({ offset: fc.maxSafeNat(), oldest: fc.maxSafeNat(), tty: fc.boolean(), running: fc.boolean() })
  .map(plain);
const cuts = fc.array(fc.nat(), { maxLength: 12 });

void describe('request parameters', () => {
  void it('subsystem names', () => {
    assert.equal(execRequest.subsystem, 'exec@tether');
    assert.equal(attachRequest.subsystem, 'attach@tether');
    assert.equal(statusRequest.subsystem, 'status@tether');
  });

  void it('attach@tether output: absent means the default (true) and stays absent; false survives', () => {
    const body = (params: AttachParams): Buffer => encodeParams(attachRequest, params).subarray(4);
    assert.deepEqual(decodeParams(attachRequest, body({ from: 'end', stdin: true })), {
      from: 'end',
      stdin: true,
    });
    assert.deepEqual(decodeParams(attachRequest, body({ from: 7, stdin: false, output: false })), {
      from: 7,
      stdin: false,
      output: false,
    });
  });

  void it('archive requests: params and the stat reply round trip; bad ones are refused', () => {
    const body = (frame: Buffer): Buffer => frame.subarray(4);
    assert.deepEqual(
      decodeParams(archiveGetRequest, body(encodeParams(archiveGetRequest, { path: '/etc' }))),
      {
        path: '/etc',
      },
    );
    assert.deepEqual(
      decodeParams(archivePutRequest, body(encodeParams(archivePutRequest, { path: '/tmp' }))),
      { path: '/tmp' },
      'noOverwriteDirNonDir absent stays absent',
    );
    assert.deepEqual(
      decodeParams(
        archivePutRequest,
        body(encodeParams(archivePutRequest, { path: '/tmp', noOverwriteDirNonDir: true })),
      ),
      { path: '/tmp', noOverwriteDirNonDir: true },
    );
    const stat = {
      name: 'etc',
      size: 4096,
      mode: 0o40755,
      mtime: '2024-01-02T03:04:05.000Z',
      linkTarget: '',
    };
    assert.deepEqual(
      decodeReply(archiveStatRequest, body(encodeReply(archiveStatRequest, { ok: { stat } }))),
      { ok: { stat } },
    );
    const failure = { error: { code: 'TETHER_PATH_NOT_FOUND' as const, message: 'no such file: /x' } };
    assert.deepEqual(decodeReply(archiveGetRequest, body(encodeReply(archiveGetRequest, failure))), failure);
    const invalid = (error: unknown): boolean => isTetherError(error, 'TETHER_REQUEST_INVALID');
    assert.throws(() => decodeParams(archiveStatRequest, pack({})), invalid);
    assert.throws(() => decodeParams(archiveStatRequest, pack({ path: '' })), invalid);
    assert.throws(
      () => decodeParams(archivePutRequest, pack({ path: '/x', noOverwriteDirNonDir: 1 })),
      invalid,
    );
    assert.throws(
      () => decodeReply(archiveStatRequest, pack({ ok: { stat: { ...stat, mtime: 5 } } })),
      invalid,
    );
  });

  void it("dockerFileMode gives Go's os.FileMode bits", () => {
    assert.equal(dockerFileMode(0o100644), 0o644);
    assert.equal(dockerFileMode(0o40755), 2 ** 31 + 0o755);
    assert.equal(dockerFileMode(0o120777), 2 ** 27 + 0o777);
    assert.equal(dockerFileMode(0o104755), 2 ** 23 + 0o755, 'setuid');
    assert.equal(dockerFileMode(0o41777), 2 ** 31 + 2 ** 20 + 0o777, 'sticky /tmp');
    assert.equal(dockerFileMode(0o20666), 2 ** 26 + 2 ** 21 + 0o666, 'character device');
  });

  void it('exec@tether params round trip under arbitrary chunking', () => {
    fc.assert(
      fc.property(fc.array(execParamsArb, { maxLength: 4 }), cuts, (params, cutPoints) => {
        const stream = Buffer.concat(params.map((p) => encodeParams(execRequest, p)));
        assert.deepEqual(
          decodeStream(stream, cutPoints, (body) => decodeParams(execRequest, body)),
          params,
        );
      }),
    );
  });

  void it('attach@tether and status@tether params round trip under arbitrary chunking', () => {
    fc.assert(
      fc.property(attachParamsArb, fc.boolean(), cuts, (attach, follow, cutPoints) => {
        const stream = encodeParams(attachRequest, attach);
        assert.deepEqual(
          decodeStream(stream, cutPoints, (body) => decodeParams(attachRequest, body)),
          [attach],
        );
        const status = encodeParams(statusRequest, { follow });
        assert.deepEqual(
          decodeStream(status, cutPoints, (body) => decodeParams(statusRequest, body)),
          [{ follow }],
        );
      }),
    );
  });

  void it('the first frame and the stream bytes after it separate at any split', () => {
    fc.assert(
      fc.property(execParamsArb, fc.uint8Array({ maxLength: 50 }), cuts, (params, stdin, cutPoints) => {
        const stream = Buffer.concat([encodeParams(execRequest, params), stdin]);
        const reader = new FirstFrameReader();
        let seen = 0;
        for (const chunk of chunksAt(stream, cutPoints)) {
          seen += chunk.length;
          const first = reader.push(chunk);
          if (!first) continue;
          assert.deepEqual(decodeParams(execRequest, first.body), params);
          assert.deepEqual(
            Buffer.concat([first.rest, stream.subarray(seen)]),
            Buffer.from(stdin),
            'the stream after the frame',
          );
          return;
        }
        assert.fail('the parameter frame never completed');
      }),
    );
  });

  void it('optional fields left undefined or null are omitted, not sent as nil', () => {
    const body = encodeParams(execRequest, { argv: ['true'], stdin: false }).subarray(4);
    assert.deepEqual(body, pack({ argv: ['true'], stdin: false }));
    const fromNulls = decodeParams(execRequest, pack({ argv: ['true'], stdin: false, cwd: null, tty: null }));
    assert.deepEqual(fromNulls, { argv: ['true'], stdin: false });
  });

  void describe('validation errors are TETHER_REQUEST_INVALID and name the field', () => {
    const valid = { argv: ['sh'], stdin: true };
    const cases: [RequestType<unknown, unknown>, unknown, RegExp][] = [
      [execRequest, 'not a map', /exec@tether: payload is not a map/],
      [execRequest, [1, 2], /payload is not a map/],
      [execRequest, { stdin: true }, /argv is required/],
      [execRequest, { ...valid, argv: [] }, /argv must name a command/],
      [execRequest, { ...valid, argv: 'sh -c' }, /argv must be a list of strings/],
      [execRequest, { ...valid, argv: ['sh', 1] }, /argv must be a list of strings/],
      [execRequest, { ...valid, env: ['NOEQUALS'] }, /env entries must be KEY=VALUE/],
      [execRequest, { ...valid, env: 'A=1' }, /env must be a list of strings/],
      [execRequest, { ...valid, cwd: 5 }, /cwd must be a string/],
      [execRequest, { ...valid, user: false }, /user must be a string/],
      [execRequest, { ...valid, tty: 'xterm' }, /payload is not a map/],
      [execRequest, { ...valid, tty: { cols: 80 } }, /rows is required/],
      [execRequest, { ...valid, tty: { cols: 80.5, rows: 24 } }, /cols must be an integer/],
      [execRequest, { ...valid, tty: { cols: 0, rows: 24 } }, /tty size out of range/],
      [execRequest, { ...valid, tty: { cols: 80, rows: 10001 } }, /tty size out of range/],
      [execRequest, { argv: ['sh'] }, /stdin is required/],
      [execRequest, { ...valid, stdin: 'yes' }, /stdin must be true or false/],
      [attachRequest, { stdin: true }, /from must be "start", "end" or a byte offset/],
      [attachRequest, { from: -1, stdin: true }, /from must be/],
      [attachRequest, { from: 1.5, stdin: true }, /from must be/],
      [attachRequest, { from: 'middle', stdin: true }, /from must be/],
      [attachRequest, { from: 'end' }, /attach@tether: stdin is required/],
      [attachRequest, { from: 'end', stdin: true, output: 0 }, /output must be true or false/],
      [statusRequest, {}, /status@tether: follow is required/],
      [statusRequest, { follow: 1 }, /follow must be true or false/],
    ];
    for (const [type, value, message] of cases) {
      void it(`${type.subsystem} ${JSON.stringify(value)}`, () => {
        const check = (error: unknown): boolean =>
          isTetherError(error, 'TETHER_REQUEST_INVALID') && message.test((error as Error).message);
        assert.throws(() => decodeParams(type, pack(value)), check, 'decoding');
        assert.throws(() => encodeParams(type, value), check, 'encoding refuses it too');
      });
    }
  });

  void it('a body that is not msgpack is TETHER_REQUEST_INVALID with the parse error as cause', () => {
    assert.throws(
      () => decodeParams(execRequest, Buffer.from([0x92, 0x01])),
      (error) =>
        isTetherError(error, 'TETHER_REQUEST_INVALID') &&
        /exec@tether: payload is not msgpack/.test(error.message) &&
        error.cause instanceof Error,
    );
  });

  void it('arbitrary bytes give params or a TetherError with a decoding code, never another exception', () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.from(b)),
      fc.uint8Array({ maxLength: 60 }).map((b) => encodeLengthPrefixed(b)),
      fc.anything().map((value) => encodeLengthPrefixed(pack(value))),
      fc
        .record({ argv: fc.anything(), env: fc.anything(), tty: fc.anything(), stdin: fc.anything() })
        .map((value) => encodeLengthPrefixed(pack(value))),
    );
    const types: RequestType<unknown, unknown>[] = [execRequest, attachRequest, statusRequest];
    fc.assert(
      fc.property(bytes, cuts, fc.constantFrom(...types), (input, cutPoints, type) => {
        try {
          for (const params of decodeStream(input, cutPoints, (body) => decodeParams(type, body))) {
            assert.equal(typeof params, 'object');
          }
        } catch (error) {
          assert.ok(error instanceof TetherError, `not a TetherError: ${String(error)}`);
          assert.ok(DECODE_CODES.includes(error.code), error.code);
        }
      }),
    );
  });

  void it('a truncated parameter frame: end() throws TETHER_FRAME_TRUNCATED', () => {
    fc.assert(
      fc.property(execParamsArb, fc.nat(), (params, cutSeed) => {
        const frame = encodeParams(execRequest, params);
        const decoder = new LengthPrefixedDecoder();
        assert.deepEqual(decoder.push(frame.subarray(0, 1 + (cutSeed % (frame.length - 1)))), []);
        assert.throws(
          () => decoder.end(),
          (error) => isTetherError(error, 'TETHER_FRAME_TRUNCATED'),
        );
      }),
    );
  });
});

void describe('request replies', () => {
  const reply = <R>(type: RequestType<unknown, R>, bytes: Buffer): ReturnType<typeof decodeReply<R>> => {
    const [body] = new LengthPrefixedDecoder().push(bytes);
    assert.ok(body, 'one whole frame');
    return decodeReply(type, body);
  };

  void it('results round trip', () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), attachResultArb, (pid, attach) => {
        assert.deepEqual(reply(execRequest, encodeReply(execRequest, { ok: { pid } })), { ok: { pid } });
        assert.deepEqual(reply(attachRequest, encodeReply(attachRequest, { ok: attach })), { ok: attach });
        assert.deepEqual(reply(statusRequest, encodeReply(statusRequest, { ok: {} })), { ok: {} });
      }),
    );
  });

  void it('failures round trip with their code and message', () => {
    fc.assert(
      fc.property(fc.constantFrom(...ERROR_CODES), text, (code: ErrorCode, message) => {
        const failure = { error: { code, message } };
        assert.deepEqual(reply(attachRequest, encodeReply(attachRequest, failure)), failure);
      }),
    );
  });

  void it('an error code this side does not know becomes TETHER_REQUEST_INVALID, keeping the message', () => {
    const bytes = encodeLengthPrefixed(
      pack({ error: { code: 'TETHER_FROM_THE_FUTURE', message: 'newer agent' } }),
    );
    assert.deepEqual(reply(execRequest, bytes), {
      error: { code: 'TETHER_REQUEST_INVALID', message: 'newer agent' },
    });
  });

  void it('malformed replies are TETHER_REQUEST_INVALID naming the field', () => {
    const cases: [RequestType<unknown, unknown>, unknown, RegExp][] = [
      [execRequest, { ok: {} }, /pid is required/],
      [execRequest, { ok: { pid: 'one' } }, /pid must be an integer/],
      [attachRequest, { ok: { offset: 0, oldest: 0, tty: false } }, /running is required/],
      [execRequest, { neither: true }, /payload is not a map/],
      [execRequest, { error: { message: 'x' } }, /code is required/],
      [execRequest, { error: { code: 'TETHER_USAGE' } }, /message is required/],
    ];
    for (const [type, value, message] of cases) {
      assert.throws(
        () => decodeReply(type, pack(value)),
        (error) => isTetherError(error, 'TETHER_REQUEST_INVALID') && message.test((error as Error).message),
        JSON.stringify(value),
      );
    }
  });
});

void describe('exec@tether params golden bytes', () => {
  const params = JSON.parse(readFileSync(join(FIXTURES, 'exec-params.json'), 'utf8')) as ExecParams;
  const bin = readFileSync(join(FIXTURES, 'exec-params.bin'));

  void it('encoding exec-params.json gives exactly exec-params.bin', () => {
    assert.deepEqual(encodeParams(execRequest, params), bin);
  });

  void it('decoding exec-params.bin gives exec-params.json', () => {
    assert.deepEqual(decodeParams(execRequest, bin.subarray(4)), params);
  });
});
