/** The console watcher: records reach it when the file grows (inotify), whether or not the file existed yet. */
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DroppedStatusLine } from '../../../../hostside/src/vm/console-status.ts';
import { ConsoleWatcher, type SeenRecord } from '../../../../hostside/src/vm/console-watcher.ts';
import { StatusLineSigner, encodeStatusConsoleLine } from '../../../../protocol/src/status/console-line.ts';

const KEY = Buffer.alloc(32, 3);

async function until(check: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return true;
    await sleep(5);
  }
  return check();
}

void describe('ConsoleWatcher', () => {
  void it('is woken by the file growing, not by its slow backstop poll', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'console-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'console.log');
    const seen: SeenRecord[] = [];
    // The file appears after the watcher starts (QEMU creates it); the backstop is far longer than the test.
    const watcher = new ConsoleWatcher(path, {
      statusKey: KEY,
      onRecord: (record) => seen.push(record),
      intervalMs: 20,
      backstopMs: 60_000,
    });
    t.after(() => watcher.stop());
    appendFileSync(path, 'kernel noise\n');
    await sleep(100);
    const signer = new StatusLineSigner(KEY);
    for (const [i, stage] of (['agent', 'config', 'process-started'] as const).entries()) {
      appendFileSync(path, `${signer.line({ stage, outcome: 'ok', atMs: i })}noise\n`);
      assert.ok(
        await until(() => seen.length === i + 1, 2000),
        `record ${stage} seen without waiting for the poll`,
      );
    }
    assert.deepEqual(
      seen.map((s) => s.record.stage),
      ['agent', 'config', 'process-started'],
    );
  });

  void it('reads what was written last when stopped', () => {
    const dir = mkdtempSync(join(tmpdir(), 'console-'));
    try {
      const path = join(dir, 'console.log');
      const watcher = new ConsoleWatcher(path, { statusKey: KEY, intervalMs: 60_000, backstopMs: 60_000 });
      appendFileSync(
        path,
        new StatusLineSigner(KEY).line({ stage: 'process-exited', outcome: 'ok', atMs: 1, exitCode: 4 }),
      );
      watcher.stop();
      assert.equal(watcher.records[0]?.record.exitCode, 4);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  void it('drops lines not signed with its key: they never become records, and are counted', () => {
    const dir = mkdtempSync(join(tmpdir(), 'console-'));
    try {
      const path = join(dir, 'console.log');
      const dropped: DroppedStatusLine[] = [];
      const watcher = new ConsoleWatcher(path, {
        statusKey: KEY,
        onDropped: (line) => dropped.push(line),
        intervalMs: 60_000,
        backstopMs: 60_000,
      });
      const genuine = new StatusLineSigner(KEY);
      const forger = new StatusLineSigner(Buffer.alloc(32, 4));
      const started = genuine.line({ stage: 'process-started', outcome: 'ok', atMs: 1, pid: 97 });
      appendFileSync(
        path,
        started +
          encodeStatusConsoleLine({ stage: 'process-exited', outcome: 'ok', atMs: 2, exitCode: 0 }) +
          forger.line({ stage: 'config', outcome: 'failed', atMs: 2, detail: 'forged' }) +
          started +
          genuine.line({ stage: 'process-exited', outcome: 'ok', atMs: 3, exitCode: 9 }),
      );
      watcher.stop();
      assert.deepEqual(
        watcher.records.map((seen) => [seen.record.stage, seen.record.exitCode]),
        [
          ['process-started', undefined],
          ['process-exited', 9],
        ],
      );
      assert.deepEqual(
        dropped.map((line) => line.reason),
        ['unsigned', 'bad-mac', 'replayed'],
      );
      assert.equal(watcher.dropped, 3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
