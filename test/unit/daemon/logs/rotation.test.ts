import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeLogFrame } from '../../../../protocol/src/logs/log-frame.ts';
import { LogStore } from '../../../../hostside/src/daemon/logs/log-store.ts';
import { readLogs } from '../../../../hostside/src/daemon/logs/log-reader.ts';
import { startRotation } from '../../../../hostside/src/daemon/logs/rotation.ts';
import { FakeHypervisor, collect, frame, tempDir, texts, until } from './helpers.ts';

void describe('rotation driver', () => {
  void it('rotates on growth past max-size (woken by inotify), prunes to max-file, loses no byte', async (t) => {
    const store = await LogStore.open(tempDir(t));
    const hv = new FakeHypervisor(store.livePath);
    await store.beginBoot();
    hv.boot();
    store.markRunning();
    let reopens = 0;
    const errors: unknown[] = [];
    const rotation = startRotation(
      store,
      async () => {
        reopens += 1;
        await hv.reopen();
      },
      { maxBytes: 1000, maxFiles: 3, onError: (error) => errors.push(error) },
    );
    const follower = collect(readLogs(store, { follow: true }));
    const expected: string[] = [];
    for (let i = 0; i < 60; i++) {
      const bytes = encodeLogFrame(frame(`frame ${i} `.padEnd(90, '.')));
      hv.write(bytes.subarray(0, 50)); // frames straddle whatever file the switch lands in
      await new Promise((resolve) => setImmediate(resolve));
      hv.write(bytes.subarray(50));
      expected.push(`frame ${i} `.padEnd(90, '.'));
      if (i % 10 === 9) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await until(() => reopens >= 4);
    await rotation.settled();
    await rotation.stop();
    hv.halt();
    store.markStopped();
    assert.deepEqual(errors, []);
    assert.deepEqual(texts(await follower), expected, 'the follower saw every frame once, in order');
    const files = store.view().files;
    assert.ok(files.length <= 3, `at most max-file files (${files.length})`);
    const kept = texts(await collect(readLogs(store, { follow: false })));
    assert.deepEqual(kept, expected.slice(expected.length - kept.length), 'what is kept is the newest');
    assert.ok(kept.length > 0 && kept.length < expected.length);
  });

  void it('finishes a reopen a crash left owed as soon as it starts', async (t) => {
    const dir = tempDir(t);
    const setup = await LogStore.open(dir);
    const hv = new FakeHypervisor(setup.livePath);
    await setup.beginBoot();
    hv.boot();
    hv.writeFrames([frame('before')]);
    const crashing = await LogStore.open(dir, {
      crashHook: (step) => {
        if (step === 'rotate:renamed') throw new Error('killed');
      },
    });
    await assert.rejects(crashing.rotate(hv.reopen));
    hv.writeFrames([frame('into the renamed file')]);
    const store = await LogStore.open(dir);
    assert.equal(store.pendingReopen, true);
    store.markRunning();
    const rotation = startRotation(store, hv.reopen, { maxBytes: 1 << 20, maxFiles: 5 });
    await until(() => !store.pendingReopen);
    await rotation.stop();
    hv.writeFrames([frame('after')]);
    assert.deepEqual(texts(await collect(readLogs(store, { follow: false }))), [
      'before',
      'into the renamed file',
      'after',
    ]);
  });
});
