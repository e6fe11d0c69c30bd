import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isTetherError } from '../../../protocol/src/errors/errors.ts';
import {
  CONSOLE_STATUS_PREFIX,
  STATUS_KEY_BYTES,
  StatusLineSigner,
  StatusLineVerifier,
  decodeStatusKey,
  encodeStatusConsoleLine,
  signStatusConsoleLine,
  splitStatusConsoleLine,
  statusLineMac,
  type StatusLineVerdict,
} from '../../../protocol/src/status/console-line.ts';
import { BOOT_STAGES, encodeStatusRecord, type StatusRecord } from '../../../protocol/src/status/status.ts';

const KEY = Buffer.alloc(STATUS_KEY_BYTES, 0x5a);
const OTHER_KEY = Buffer.alloc(STATUS_KEY_BYTES, 0xa5);

const exited: StatusRecord = { stage: 'process-exited', outcome: 'ok', atMs: 5207.5, exitCode: 0 };
const forgedExit: StatusRecord = { stage: 'process-exited', outcome: 'ok', atMs: 5300, exitCode: 42 };

const recordArb: fc.Arbitrary<StatusRecord> = fc
  .record(
    {
      stage: fc.constantFrom(...BOOT_STAGES),
      outcome: fc.constantFrom('ok' as const, 'failed' as const, 'skipped' as const),
      atMs: fc.nat(),
      detail: fc.string({ unit: 'grapheme', maxLength: 40 }),
      pid: fc.integer({ min: 1, max: 4194304 }),
      exitCode: fc.integer({ min: 0, max: 255 }),
      oomKilled: fc.boolean(),
    },
    { requiredKeys: ['stage', 'outcome', 'atMs'] },
  )
  // fast-check makes null-prototype objects; decoded records are plain ones.
  .map((record) => ({ ...record }));

function believed(verdict: StatusLineVerdict): StatusRecord | undefined {
  return verdict.kind === 'believed' ? verdict.record : undefined;
}

function dropped(verdict: StatusLineVerdict): string | undefined {
  return verdict.kind === 'dropped' ? verdict.reason : undefined;
}

/** A signed line's three fields after the prefix. */
function fieldsOf(line: string): [string, string, string] {
  const [frame, seq, mac] = line.slice(CONSOLE_STATUS_PREFIX.length).trimEnd().split(' ');
  return [frame!, seq!, mac!];
}

void describe('signed status lines', () => {
  void it('the form: prefix, base64 frame, seq, base64url HMAC-SHA256 over label, u64 seq and frame', () => {
    const line = signStatusConsoleLine(exited, KEY, 7);
    assert.ok(line.endsWith('\n'));
    assert.equal(line.indexOf('\n'), line.length - 1, 'exactly one line');
    const [frame, seq, mac] = fieldsOf(line);
    assert.deepEqual(Buffer.from(frame, 'base64'), encodeStatusRecord(exited));
    assert.equal(seq, '7');
    const seqBytes = Buffer.from([0, 0, 0, 0, 0, 0, 0, 7]);
    const expected = createHmac('sha256', KEY)
      .update('tether-status/1\0')
      .update(seqBytes)
      .update(encodeStatusRecord(exited))
      .digest('base64url');
    assert.equal(mac, expected, 'independently computed');
    assert.equal(mac.length, 43);
  });

  void it('round trip: every line a signer writes is believed, in order, with its seq', () => {
    fc.assert(
      fc.property(fc.array(recordArb, { minLength: 1, maxLength: 8 }), (records) => {
        const signer = new StatusLineSigner(KEY);
        const verifier = new StatusLineVerifier(KEY);
        records.forEach((record, index) => {
          const verdict = verifier.check(signer.line(record));
          assert.deepEqual(verdict, { kind: 'believed', record, seq: index + 1 });
        });
      }),
    );
  });

  void it('kernel noise before the line, a CR after it, or an escape code do not spoil it', () => {
    const line = signStatusConsoleLine(exited, KEY, 1).trimEnd();
    assert.deepEqual(believed(new StatusLineVerifier(KEY).check(`[ 0.8] crng init done${line}\r`)), exited);
    assert.deepEqual(believed(new StatusLineVerifier(KEY).check(`\x1b[0m${line}`)), exited);
    // Something else printed a prefix of its own without a newline: the last prefix counts.
    assert.deepEqual(
      believed(new StatusLineVerifier(KEY).check(`${CONSOLE_STATUS_PREFIX}junk ${line}`)),
      exited,
    );
  });

  void it('a tampered frame, seq or MAC is dropped as bad-mac', () => {
    const line = signStatusConsoleLine(exited, KEY, 3);
    const [frame, seq, mac] = fieldsOf(line);
    const forgedFrame = encodeStatusRecord(forgedExit).toString('base64');
    const flipped = Buffer.from(frame, 'base64');
    flipped[flipped.length - 1]! ^= 1;
    const otherMac = Buffer.from(mac, 'base64url');
    otherMac[0]! ^= 0x80;
    for (const tampered of [
      `${CONSOLE_STATUS_PREFIX}${forgedFrame} ${seq} ${mac}`,
      `${CONSOLE_STATUS_PREFIX}${flipped.toString('base64')} ${seq} ${mac}`,
      `${CONSOLE_STATUS_PREFIX}${frame} 4 ${mac}`,
      `${CONSOLE_STATUS_PREFIX}${frame} ${seq} ${otherMac.toString('base64url')}`,
    ])
      assert.equal(dropped(new StatusLineVerifier(KEY).check(tampered)), 'bad-mac', tampered);
  });

  void it('a line signed with another key (another boot, a guess) is dropped as bad-mac', () => {
    fc.assert(
      fc.property(recordArb, fc.integer({ min: 1, max: 1000 }), (record, seq) => {
        const verdict = new StatusLineVerifier(KEY).check(signStatusConsoleLine(record, OTHER_KEY, seq));
        assert.equal(dropped(verdict), 'bad-mac');
      }),
    );
  });

  void it('a genuine line printed again, or an older one after a newer, is dropped as replayed', () => {
    const signer = new StatusLineSigner(KEY);
    const first = signer.line({ stage: 'process-started', outcome: 'ok', atMs: 1, pid: 97 });
    const second = signer.line(exited);
    const verifier = new StatusLineVerifier(KEY);
    assert.equal(verifier.check(first).kind, 'believed');
    assert.equal(dropped(verifier.check(first)), 'replayed');
    assert.equal(verifier.check(second).kind, 'believed');
    assert.equal(dropped(verifier.check(second)), 'replayed');
    assert.equal(dropped(verifier.check(first)), 'replayed');
    assert.equal(verifier.lastSeq, 2);
  });

  void it('gaps in the seq are fine (a line lost to the VM being killed); only order matters', () => {
    const verifier = new StatusLineVerifier(KEY);
    assert.equal(verifier.check(signStatusConsoleLine(exited, KEY, 2)).kind, 'believed');
    assert.equal(verifier.check(signStatusConsoleLine(exited, KEY, 9)).kind, 'believed');
    assert.equal(dropped(verifier.check(signStatusConsoleLine(exited, KEY, 5))), 'replayed');
  });

  void it('a forged line does not move the seq on: the genuine line after it is still believed', () => {
    const verifier = new StatusLineVerifier(KEY);
    const [frame, , mac] = fieldsOf(signStatusConsoleLine(forgedExit, OTHER_KEY, 1));
    assert.equal(
      dropped(verifier.check(`${CONSOLE_STATUS_PREFIX}${frame} 9007199254740991 ${mac}`)),
      'bad-mac',
    );
    assert.deepEqual(believed(verifier.check(signStatusConsoleLine(exited, KEY, 1))), exited);
  });

  void it('with a key, a line without seq and MAC is dropped as unsigned', () => {
    const verifier = new StatusLineVerifier(KEY);
    assert.equal(dropped(verifier.check(encodeStatusConsoleLine(forgedExit))), 'unsigned');
  });

  void it('without a key (a config that had none), unsigned and signed lines alike are believed', () => {
    const verifier = new StatusLineVerifier(undefined);
    assert.deepEqual(believed(verifier.check(encodeStatusConsoleLine(exited))), exited);
    assert.deepEqual(believed(verifier.check(signStatusConsoleLine(forgedExit, OTHER_KEY, 1))), forgedExit);
  });

  void it('an authentic line whose record this host cannot read is dropped as invalid-record', () => {
    const frame = Buffer.from(encodeStatusRecord(exited));
    frame[frame.length - 1] = 0xc1; // msgpack's never-used byte
    const mac = statusLineMac(KEY, 1, frame).toString('base64url');
    const line = `${CONSOLE_STATUS_PREFIX}${frame.toString('base64')} 1 ${mac}`;
    const verifier = new StatusLineVerifier(KEY);
    assert.equal(dropped(verifier.check(line)), 'invalid-record');
    assert.equal(dropped(verifier.check(line)), 'replayed', 'it still counted as line 1');
  });

  void it('other console lines are not status lines; a cut-short or made-up one is malformed', () => {
    const verifier = new StatusLineVerifier(KEY);
    assert.deepEqual(verifier.check('[    0.000000] Linux version 6.1.0-18-cloud-amd64'), { kind: 'other' });
    assert.deepEqual(verifier.check('@tether-status'), { kind: 'other' }, 'no space after the prefix');
    assert.deepEqual(verifier.check(''), { kind: 'other' });
    const line = signStatusConsoleLine(exited, KEY, 1);
    for (const bad of [
      line.slice(0, 30),
      line.slice(0, -10),
      `${CONSOLE_STATUS_PREFIX}not base64!`,
      `${CONSOLE_STATUS_PREFIX}AAAA 01 ${'A'.repeat(43)}`,
      `${CONSOLE_STATUS_PREFIX}AAAA 1`,
      `${CONSOLE_STATUS_PREFIX}AAAA 99999999999999999 ${'A'.repeat(43)}`,
    ])
      assert.equal(dropped(verifier.check(bad)), 'malformed', bad);
  });

  void it('junk after the prefix never throws and is never believed with a key', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 120 }), (junk) => {
        const verdict = new StatusLineVerifier(KEY).check(CONSOLE_STATUS_PREFIX + junk);
        assert.equal(verdict.kind, 'dropped');
      }),
    );
  });

  void it('splitStatusConsoleLine separates the parts without checking them', () => {
    const line = signStatusConsoleLine(exited, KEY, 12);
    const parts = splitStatusConsoleLine(line);
    assert.ok(parts && parts !== 'malformed');
    assert.equal(parts.seq, 12);
    assert.deepEqual(parts.frame, encodeStatusRecord(exited));
    assert.deepEqual(parts.mac, statusLineMac(KEY, 12, parts.frame));
    assert.deepEqual(splitStatusConsoleLine(encodeStatusConsoleLine(exited)), {
      frame: encodeStatusRecord(exited),
    });
  });
});

void describe('status keys', () => {
  void it('the config form is base64 of exactly 32 bytes', () => {
    assert.deepEqual(decodeStatusKey(KEY.toString('base64')), KEY);
    for (const bad of [Buffer.alloc(16).toString('base64'), 'not base64!', ''])
      assert.throws(
        () => decodeStatusKey(bad),
        (error) => isTetherError(error, 'TETHER_CONFIG_INVALID'),
      );
  });

  void it('a signer or verifier refuses a key of the wrong length; a seq must be a positive integer', () => {
    assert.throws(
      () => new StatusLineSigner(Buffer.alloc(31)),
      (e) => isTetherError(e, 'TETHER_CONFIG_INVALID'),
    );
    assert.throws(
      () => new StatusLineVerifier(Buffer.alloc(33)),
      (e) => isTetherError(e, 'TETHER_CONFIG_INVALID'),
    );
    for (const seq of [0, -1, 1.5, Number.MAX_SAFE_INTEGER + 1])
      assert.throws(
        () => statusLineMac(KEY, seq, Buffer.alloc(4)),
        (e) => isTetherError(e, 'TETHER_FRAME_INVALID'),
      );
  });
});
