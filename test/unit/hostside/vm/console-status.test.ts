import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { encodeStatusConsoleLine, type StatusRecord } from '../../../../protocol/src/status/status.ts';
import {
  LineSplitter,
  exitFromRecords,
  fatalBootRecord,
  statusRecordsIn,
} from '../../../../hostside/src/vm/console-status.ts';
import { consoleTail } from '../../../../hostside/src/vm/container-run.ts';

const record = (
  stage: StatusRecord['stage'],
  outcome: StatusRecord['outcome'],
  extra: Partial<StatusRecord> = {},
) => ({ stage, outcome, atMs: 1000, ...extra }) as StatusRecord;

/** A console as the VM writes it: kernel lines, stage0, the agent's human line and its status line, CRLF. */
function consoleOf(records: StatusRecord[]): string {
  const lines = [
    '[    0.190563] PCI: Fatal: No config space access function found',
    'stage0: started at uptime 0.81 s',
  ];
  for (const r of records)
    lines.push(`tether: ${r.stage} ${r.outcome}`, encodeStatusConsoleLine(r).trimEnd());
  return lines.join('\r\n') + '\r\n';
}

const records = [
  record('kernel', 'ok'),
  record('config', 'ok', { detail: 'fw_cfg' }),
  record('process-started', 'ok', { pid: 97 }),
  record('process-exited', 'ok', { exitCode: 3 }),
];

void describe('console status records', () => {
  void it('finds every record among other console output', () => {
    assert.deepEqual(statusRecordsIn(consoleOf(records)), records);
  });

  void it('finds a record after kernel text on the same line, and skips a line cut short', () => {
    const line = encodeStatusConsoleLine(record('channel', 'ok')).trimEnd();
    const text = `[    3.1] random: crng init done${line}\n${line.slice(0, 30)}\n`;
    assert.deepEqual(statusRecordsIn(text), [record('channel', 'ok')]);
  });

  void it('splits lines the same however the bytes arrive', () => {
    const bytes = Buffer.from(consoleOf(records) + 'héllo ✓ partial');
    fc.assert(
      fc.property(fc.array(fc.nat({ max: bytes.length }), { maxLength: 10 }), (cuts) => {
        const splitter = new LineSplitter();
        const points = [...cuts].sort((a, b) => a - b);
        let from = 0;
        const lines: string[] = [];
        for (const point of [...points, bytes.length]) {
          lines.push(...splitter.push(bytes.subarray(from, point)));
          from = point;
        }
        assert.deepEqual(lines, consoleOf(records).split('\r\n').slice(0, -1));
      }),
    );
  });
});

void describe('what the records tell the host', () => {
  void it('a failed config or process start means the process will never run', () => {
    assert.equal(fatalBootRecord([record('config', 'ok'), record('network', 'failed')]), undefined);
    assert.deepEqual(
      fatalBootRecord([record('config', 'failed', { detail: 'bad' })]),
      record('config', 'failed', { detail: 'bad' }),
    );
    assert.equal(fatalBootRecord([record('process-started', 'failed')])?.stage, 'process-started');
    assert.equal(
      fatalBootRecord([record('channel', 'failed')]),
      undefined,
      'the log port and console still work',
    );
  });

  void it('the exit code comes from process-exited, else from shutdown', () => {
    assert.equal(exitFromRecords([record('process-started', 'ok')]), undefined);
    assert.deepEqual(exitFromRecords([record('process-exited', 'ok', { exitCode: 0 })]), { exitCode: 0 });
    assert.deepEqual(
      exitFromRecords([
        record('process-exited', 'ok', { exitCode: 1 }),
        record('process-exited', 'ok', { exitCode: 137, signal: 'SIGKILL' }),
      ]),
      { exitCode: 137, signal: 'SIGKILL' },
    );
    assert.deepEqual(exitFromRecords([record('shutdown', 'ok', { exitCode: 143, signal: 'SIGTERM' })]), {
      exitCode: 143,
      signal: 'SIGTERM',
    });
  });

  void it('the console tail for errors leaves out the machine-readable lines', () => {
    const tail = consoleTail(consoleOf(records), 3);
    assert.equal(tail, 'tether: config ok\ntether: process-started ok\ntether: process-exited ok');
    assert.equal(consoleTail(''), '');
  });
});
