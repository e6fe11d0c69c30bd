import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  SharedDownloads,
  type Download,
} from '../../../../../hostside/src/daemon/images/registry/downloads.ts';

const work = mkdtempSync(join(tmpdir(), 'downloads-test-'));
after(() => rmSync(work, { recursive: true, force: true }));

/** A download that writes `text` once `release` is called, or fails when its signal aborts. */
function held(text: string): {
  download: Download;
  release: () => void;
  started: () => number;
  signal: () => AbortSignal | undefined;
} {
  let starts = 0;
  let release!: () => void;
  let seen: AbortSignal | undefined;
  const gate = new Promise<void>((resolve) => (release = resolve));
  return {
    download: async (file, onBytes, signal) => {
      starts++;
      seen = signal;
      await Promise.race([
        gate,
        new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error))),
      ]);
      writeFileSync(file, text);
      onBytes(text.length);
    },
    release: () => release(),
    started: () => starts,
    signal: () => seen,
  };
}

void describe('shared downloads', () => {
  void it('run once for every waiter of the same key, each getting its own file, and leave nothing', async () => {
    const downloads = new SharedDownloads(join(work, 'shared1'));
    const blob = held('layer bytes');
    const heard: number[] = [];
    const a = downloads.fetch('k', join(work, 'a'), blob.download, (n) => heard.push(n));
    const b = downloads.fetch('k', join(work, 'b'), blob.download, (n) => heard.push(n));
    assert.equal(downloads.inFlight, 1);
    blob.release();
    await Promise.all([a, b]);
    assert.equal(blob.started(), 1);
    assert.equal(readFileSync(join(work, 'a'), 'utf8'), 'layer bytes');
    assert.equal(readFileSync(join(work, 'b'), 'utf8'), 'layer bytes');
    assert.deepEqual(heard, [11, 11]);
    assert.deepEqual(readdirSync(join(work, 'shared1')), []);
    assert.equal(downloads.inFlight, 0);
  });

  void it('keep going while one waiter is left, and stop when the last gives up', async () => {
    const downloads = new SharedDownloads(join(work, 'shared2'));
    const blob = held('x');
    const first = new AbortController();
    const second = new AbortController();
    const a = downloads.fetch('k', join(work, 'c'), blob.download, undefined, first.signal);
    const b = downloads.fetch('k', join(work, 'd'), blob.download, undefined, second.signal);
    first.abort(new Error('first went away'));
    await assert.rejects(a, /first went away/);
    assert.equal(blob.signal()!.aborted, false);
    second.abort(new Error('second went away'));
    await assert.rejects(b, /second went away/);
    assert.equal(blob.signal()!.aborted, true);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(downloads.inFlight, 0);
    assert.equal(existsSync(join(work, 'c')) || existsSync(join(work, 'd')), false);
  });

  void it('hand a failure to every waiter and start afresh next time', async () => {
    const downloads = new SharedDownloads(join(work, 'shared3'));
    const failing: Download = () => Promise.reject(new Error('digest mismatch'));
    await Promise.all([
      assert.rejects(downloads.fetch('k', join(work, 'e'), failing), /digest mismatch/),
      assert.rejects(downloads.fetch('k', join(work, 'f'), failing), /digest mismatch/),
    ]);
    const blob = held('ok');
    const again = downloads.fetch('k', join(work, 'g'), blob.download);
    blob.release();
    await again;
    assert.equal(readFileSync(join(work, 'g'), 'utf8'), 'ok');
  });
});
