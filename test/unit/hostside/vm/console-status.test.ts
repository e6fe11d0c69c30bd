import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  StatusLineSigner,
  encodeStatusConsoleLine,
  signStatusConsoleLine,
} from '../../../../protocol/src/status/console-line.ts';
import type { StatusRecord } from '../../../../protocol/src/status/status.ts';
import {
  ConsoleStatusReader,
  LineSplitter,
  exitFromRecords,
  fatalBootRecord,
  oomKilledIn,
  statusRecordsIn,
  type DroppedStatusLine,
} from '../../../../hostside/src/vm/console-status.ts';
import { consoleTail } from '../../../../hostside/src/vm/container-run.ts';

const record = (
  stage: StatusRecord['stage'],
  outcome: StatusRecord['outcome'],
  extra: Partial<StatusRecord> = {},
) => ({ stage, outcome, atMs: 1000, ...extra }) as StatusRecord;

const KEY = Buffer.alloc(32, 0x11);

/** A console as the VM writes it: kernel lines, stage0, the agent's human line and its signed status line, CRLF. */
/** `key` null: an agent whose config had no key (unsigned lines). */
function consoleOf(records: StatusRecord[], key: Buffer | null = KEY): string {
  const lines = [
    '[    0.190563] PCI: Fatal: No config space access function found',
    'stage0: started at uptime 0.81 s',
  ];
  const signer = key && new StatusLineSigner(key);
  for (const r of records)
    lines.push(
      `tether: ${r.stage} ${r.outcome}`,
      (signer ? signer.line(r) : encodeStatusConsoleLine(r)).trimEnd(),
    );
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
    assert.deepEqual(statusRecordsIn(consoleOf(records), KEY), records);
  });

  void it('finds a record after kernel text on the same line, and skips a line cut short', () => {
    const line = signStatusConsoleLine(record('channel', 'ok'), KEY, 1).trimEnd();
    const text = `[    3.1] random: crng init done${line}\n${line.slice(0, 30)}\n`;
    assert.deepEqual(statusRecordsIn(text, KEY), [record('channel', 'ok')]);
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

void describe('forged console status lines', () => {
  /**
   * A boot whose container printed status lines of its own among the agent's: an unsigned exit 0, a
   * config failure signed with a guessed key, and a copy of the agent's process-started line.
   */
  function forgedConsole(): string {
    const agent = new StatusLineSigner(KEY);
    const guess = new StatusLineSigner(Buffer.alloc(32, 0x22));
    const config = agent.line(record('config', 'ok')).trimEnd();
    const started = agent.line(record('process-started', 'ok', { pid: 97 })).trimEnd();
    return [
      config,
      started,
      'container output',
      encodeStatusConsoleLine(record('process-exited', 'ok', { exitCode: 0 })).trimEnd(),
      guess.line(record('config', 'failed', { detail: 'forged' })).trimEnd(),
      `${started}\r`,
      agent.line(record('process-exited', 'ok', { exitCode: 3 })).trimEnd(),
      guess.line(record('shutdown', 'ok', { exitCode: 0 })).trimEnd(),
    ].join('\n');
  }

  void it('never reach the records, the exit code or the fatal-boot decision', () => {
    const believed = statusRecordsIn(forgedConsole(), KEY);
    assert.deepEqual(
      believed.map((r) => r.stage),
      ['config', 'process-started', 'process-exited'],
    );
    assert.deepEqual(exitFromRecords(believed), { exitCode: 3 });
    assert.equal(fatalBootRecord(believed), undefined);
  });

  void it('are counted and reported with why, line by line', () => {
    const dropped: DroppedStatusLine[] = [];
    const reader = new ConsoleStatusReader(KEY, (line) => dropped.push(line));
    const records = forgedConsole()
      .split('\n')
      .map((line) => reader.read(line));
    assert.equal(records.filter(Boolean).length, 3);
    assert.deepEqual(
      dropped.map((d) => d.reason),
      ['unsigned', 'bad-mac', 'replayed', 'bad-mac'],
    );
    assert.equal(reader.dropped, 4);
    assert.match(dropped[0]!.line, /^@tether-status /);
  });

  void it("a previous boot's lines (another key) are dropped, this boot's believed", () => {
    const before = consoleOf([record('process-exited', 'ok', { exitCode: 1 })], Buffer.alloc(32, 0x33));
    const now = consoleOf([record('process-exited', 'ok', { exitCode: 2 })]);
    assert.deepEqual(exitFromRecords(statusRecordsIn(before + now, KEY)), { exitCode: 2 });
  });

  void it('without a key (a VM whose config had none), unsigned lines are believed as before', () => {
    assert.deepEqual(statusRecordsIn(consoleOf(records, null), undefined), records);
    assert.deepEqual(statusRecordsIn(consoleOf(records, null), KEY), [], 'a host that gave a key');
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

  void it('an oom record or an oomKilled exit marks the boot OOM-killed, and its exit too', () => {
    const oom = record('oom', 'failed', { pid: 120, detail: 'memory.max' });
    assert.equal(oomKilledIn([record('process-exited', 'ok', { exitCode: 0 })]), false);
    assert.equal(oomKilledIn([oom]), true, 'any process of the container, as Docker');
    assert.equal(oomKilledIn([record('process-exited', 'ok', { exitCode: 137, oomKilled: true })]), true);
    assert.deepEqual(exitFromRecords([oom, record('process-exited', 'ok', { exitCode: 0 })]), {
      exitCode: 0,
      oomKilled: true,
    });
    assert.deepEqual(
      exitFromRecords([
        record('process-exited', 'ok', { exitCode: 137, signal: 'SIGKILL', oomKilled: true }),
      ]),
      { exitCode: 137, signal: 'SIGKILL', oomKilled: true },
    );
    assert.equal(exitFromRecords([oom]), undefined, 'no exit recorded yet');
    assert.equal(fatalBootRecord([oom]), undefined, 'an OOM kill is not a failed boot');
  });

  void it('the console tail for errors leaves out the machine-readable lines', () => {
    const tail = consoleTail(consoleOf(records), 3);
    assert.equal(tail, 'tether: config ok\ntether: process-started ok\ntether: process-exited ok');
    assert.equal(consoleTail(''), '');
  });
});
