/** The console watcher: records reach it when the file grows (inotify), whether or not the file existed yet. */
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConsoleWatcher, type SeenRecord } from '../../../../hostside/src/vm/console-watcher.ts';
import { encodeStatusConsoleLine } from '../../../../protocol/src/status/status.ts';

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
    const watcher = new ConsoleWatcher(path, (record) => seen.push(record), 20, 60_000);
    t.after(() => watcher.stop());
    appendFileSync(path, 'kernel noise\n');
    await sleep(100);
    for (const [i, stage] of (['agent', 'config', 'process-started'] as const).entries()) {
      appendFileSync(path, `${encodeStatusConsoleLine({ stage, outcome: 'ok', atMs: i })}\nnoise\n`);
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
      const watcher = new ConsoleWatcher(path, () => {}, 60_000, 60_000);
      appendFileSync(
        path,
        encodeStatusConsoleLine({ stage: 'process-exited', outcome: 'ok', atMs: 1, exitCode: 4 }) + '\n',
      );
      watcher.stop();
      assert.equal(watcher.records[0]?.record.exitCode, 4);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
