import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isTetherError } from '../../../../protocol/src/errors/errors.ts';
import {
  QmpDecoder,
  encodeQmpCommand,
  parseQmpMessage,
  type QmpMessage,
} from '../../../../hostside/src/vm/qemu/qmp-codec.ts';

// What QEMU 7.2 sent in research/feasibility-vm.md §6, one message per line, CRLF-terminated.
const GREETING =
  '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}';
const TRANSCRIPT = [
  GREETING,
  '{"return": {}, "id": "tether-1"}',
  '{"return": {"status": "running", "singlestep": false, "running": true}, "id": "tether-2"}',
  '{"timestamp": {"seconds": 1700000000, "microseconds": 250000}, "event": "POWERDOWN"}',
  '{"timestamp": {"seconds": 1700000001, "microseconds": 0}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}',
  '{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": "tether-3"}',
]
  .map((line) => line + '\r\n')
  .join('');

const EXPECTED: QmpMessage[] = [
  { kind: 'greeting', version: '7.2.22', capabilities: ['oob'] },
  { kind: 'return', id: 'tether-1', value: {} },
  { kind: 'return', id: 'tether-2', value: { status: 'running', singlestep: false, running: true } },
  { kind: 'event', event: 'POWERDOWN', data: {}, timestampMs: 1700000000250 },
  {
    kind: 'event',
    event: 'SHUTDOWN',
    data: { guest: true, reason: 'guest-shutdown' },
    timestampMs: 1700000001000,
  },
  {
    kind: 'error',
    id: 'tether-3',
    errorClass: 'CommandNotFound',
    description: 'The command nope has not been found',
  },
];

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

void describe('QMP codec', () => {
  void it('decodes a real transcript: greeting, returns, events, an error', () => {
    assert.deepEqual(new QmpDecoder().push(Buffer.from(TRANSCRIPT)), EXPECTED);
  });

  void it('gives the same messages however the bytes are chunked', () => {
    const bytes = Buffer.from(TRANSCRIPT);
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 20 }), (cuts) => {
        const decoder = new QmpDecoder();
        assert.deepEqual(
          chunksAt(bytes, cuts).flatMap((chunk) => decoder.push(chunk)),
          EXPECTED,
        );
      }),
    );
  });

  void it('keeps a multi-byte UTF-8 character split across chunks intact', () => {
    const line = Buffer.from('{"return": "héllo ✓", "id": "x"}\n');
    const cut = line.indexOf(0xa9); // inside "é"
    const decoder = new QmpDecoder();
    assert.deepEqual(decoder.push(line.subarray(0, cut)), []);
    assert.deepEqual(decoder.push(line.subarray(cut)), [{ kind: 'return', id: 'x', value: 'héllo ✓' }]);
  });

  void it('skips blank lines and waits for the end of a partial one', () => {
    const decoder = new QmpDecoder();
    assert.deepEqual(decoder.push(Buffer.from('\r\n\n{"return": {}')), []);
    assert.deepEqual(decoder.push(Buffer.from('}\n')), [{ kind: 'return', id: undefined, value: {} }]);
  });

  void it('rejects what is not QMP with TETHER_VM_FAILED', () => {
    for (const line of ['not json', '[1,2]', '{"something": 1}', '"text"'])
      assert.throws(
        () => parseQmpMessage(line),
        (e) => isTetherError(e, 'TETHER_VM_FAILED'),
        line,
      );
    assert.throws(
      () => new QmpDecoder().push(Buffer.from('{"return": 1}\n{oops}\n')),
      (e) => isTetherError(e, 'TETHER_VM_FAILED'),
    );
  });

  void it('tolerates missing optional parts: event without data or timestamp, error without desc', () => {
    assert.deepEqual(parseQmpMessage('{"event": "RESUME"}'), {
      kind: 'event',
      event: 'RESUME',
      data: {},
      timestampMs: undefined,
    });
    const error = parseQmpMessage('{"error": {"class": "GenericError"}}');
    assert.equal(error.kind, 'error');
    assert.equal(error.kind === 'error' && error.errorClass, 'GenericError');
  });

  void it('encodes a command as one JSON line, with arguments and id only when given', () => {
    assert.equal(encodeQmpCommand('qmp_capabilities').toString(), '{"execute":"qmp_capabilities"}\n');
    assert.equal(
      encodeQmpCommand('human-monitor-command', { 'command-line': 'info' }, 'tether-7').toString(),
      '{"execute":"human-monitor-command","arguments":{"command-line":"info"},"id":"tether-7"}\n',
    );
    const decoded = JSON.parse(encodeQmpCommand('quit', undefined, 'a').toString()) as unknown;
    assert.deepEqual(decoded, { execute: 'quit', id: 'a' });
  });
});
