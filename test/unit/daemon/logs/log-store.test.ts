import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LOG_HEADER_BYTES, type LogFrame } from '../../../../protocol/src/logs/log-frame.ts';
import { LogStore, type CrashHook } from '../../../../hostside/src/daemon/logs/log-store.ts';
import { readLogs } from '../../../../hostside/src/daemon/logs/log-reader.ts';
import { FakeHypervisor, bytesOf, collect, frame, tempDir, texts } from './helpers.ts';

const framesNamed = (prefix: string, n: number, size = 10): LogFrame[] =>
  Array.from({ length: n }, (_, i) => frame(`${prefix}${i}:`.padEnd(size, '.'), ((i % 2) + 1) as 1 | 2, i));

class Crash extends Error {}

/** A store whose hook throws at the nth time `step` is reached after it was opened (and recovered). */
async function crashingStore(dir: string, step: string, nth: number): Promise<LogStore> {
  let seen = 0;
  let armed = false;
  const hook: CrashHook = (name) => {
    if (armed && name === step && ++seen === nth) throw new Crash(`crash at ${step}#${nth}`);
  };
  const store = await LogStore.open(dir, { crashHook: hook });
  armed = true;
  return store;
}

async function readAll(store: LogStore): Promise<string[]> {
  return texts(await collect(readLogs(store, { follow: false })));
}

/** What every recovery must leave: a whole index that lists exactly the segment files there are. */
function assertConsistent(dir: string): void {
  const logs = join(dir, 'logs');
  const index = JSON.parse(readFileSync(join(logs, 'index.json'), 'utf8')) as { segments: { seq: number }[] };
  const files = readdirSync(logs)
    .filter((name) => name.endsWith('.log'))
    .sort();
  assert.deepEqual(
    files,
    index.segments.map((s) => `${String(s.seq).padStart(6, '0')}.log`),
  );
  assert.equal(existsSync(join(logs, 'index.json.tmp')), false);
}

void describe('log store', () => {
  void it('seals a boot, rotates mid-frame recording where the next frame starts, prunes by file count', async (t) => {
    const dir = tempDir(t);
    const store = await LogStore.open(dir);
    const hv = new FakeHypervisor(store.livePath);
    await store.beginBoot();
    hv.boot();
    store.markRunning();
    const first = framesNamed('a', 3);
    const straddling = bytesOf([frame('straddles the files', 2)]);
    hv.writeFrames(first);
    hv.write(straddling.subarray(0, 5)); // inside the header
    assert.equal(await store.rotate(() => hv.reopen(straddling.subarray(5, 8))), true);
    hv.write(straddling.subarray(8));
    hv.writeFrames([frame('after')]);
    let view = store.view();
    assert.deepEqual(
      view.files.map((f) => [f.seq, f.boot, f.continues, f.live]),
      [
        [1, 1, false, false],
        [2, 1, true, true],
      ],
    );
    assert.equal(view.files[1]!.start, null, 'not known yet: the header is cut and the new file is empty');
    assert.equal(statSync(store.segmentPath(1)).size, bytesOf(first).length + 8);
    assert.deepEqual(await readAll(store), [...texts(first), 'straddles the files', 'after']);

    // A second boot: the live file of the first is sealed, its torn end dropped on read.
    hv.write(bytesOf([frame('torn')]).subarray(0, 9));
    hv.halt();
    store.markStopped();
    await store.beginBoot();
    hv.boot();
    store.markRunning();
    hv.writeFrames([frame('boot2')]);
    view = store.view();
    assert.deepEqual(
      view.files.map((f) => [f.seq, f.boot, f.continues, f.live, f.start]),
      [
        [1, 1, false, false, 0],
        [2, 1, true, false, straddling.length - 8],
        [3, 2, false, true, 0],
      ],
    );
    assert.deepEqual(await readAll(store), [...texts(first), 'straddles the files', 'after', 'boot2']);
    assert.equal(await store.liveSize(), bytesOf([frame('boot2')]).length);

    // max-file 2: only the newest segment and the live file stay; the kept segment starts mid-frame.
    assert.equal(await store.prune(1, 2), 1);
    assert.deepEqual(
      store.view().files.map((f) => f.seq),
      [2, 3],
    );
    assert.deepEqual(await readAll(store), ['after', 'boot2']);
    assertConsistent(dir);

    // A reopened store sees the same.
    const again = await LogStore.open(dir);
    assert.deepEqual(again.view().files, store.view().files);
    await again.remove();
    assert.equal(existsSync(join(dir, 'logs')), false);
    assert.equal(existsSync(store.livePath), false);
  });

  void it('keeps small per-boot segments together within the byte budget, and never the rotating one', async (t) => {
    const dir = tempDir(t);
    const store = await LogStore.open(dir);
    const hv = new FakeHypervisor(store.livePath);
    for (let boot = 0; boot < 6; boot++) {
      await store.beginBoot();
      hv.boot();
      hv.writeFrames([frame(`boot${boot}`)]);
      hv.halt();
    }
    // Five sealed segments of 19 bytes and the live file: 40-byte files, 2 of them = live + 2 segments.
    assert.equal(await store.prune(40, 2), 3);
    assert.deepEqual(await readAll(store), ['boot3', 'boot4', 'boot5']);
    assert.equal(await store.prune(1000, 1), 2, 'max-file 1 keeps the live file only');
    assert.deepEqual(await readAll(store), ['boot5']);
  });

  void it('leaves an empty live file out when the next boot begins', async (t) => {
    const dir = tempDir(t);
    const store = await LogStore.open(dir);
    const hv = new FakeHypervisor(store.livePath);
    await store.beginBoot();
    hv.boot();
    hv.halt();
    await store.beginBoot();
    assert.deepEqual(
      store.view().files.map((f) => [f.seq, f.boot, f.live]),
      [[1, 2, true]],
    );
    assert.equal(await store.rotate(hv.reopen), false, 'nothing to rotate before the hypervisor writes');
  });
});

/** Each named step of each operation, the scenario crashing there, then recovery and a full read. */
void describe('log store recovery after a kill at any step', () => {
  const payloadA = framesNamed('a', 4);
  const straddle = bytesOf([frame('straddle-frame', 2)]);
  const cutAt = LOG_HEADER_BYTES + 3;

  for (const [step, nth] of [
    ['index:temp-written', 1],
    ['rotate:index-written', 1],
    ['rotate:renamed', 1],
    ['rotate:reopened', 1],
    ['index:temp-written', 2],
    ['rotate:done', 1],
  ] as const) {
    void it(`rotation: ${step}#${nth}`, async (t) => {
      const dir = tempDir(t);
      const setup = await LogStore.open(dir);
      const hv = new FakeHypervisor(setup.livePath);
      await setup.beginBoot();
      hv.boot();
      hv.writeFrames(payloadA);
      hv.write(straddle.subarray(0, cutAt));
      const crashing = await crashingStore(dir, step, nth);
      await assert.rejects(crashing.rotate(hv.reopen), Crash);
      // tetherd is gone; the VM is not: it goes on writing wherever its descriptor points.
      hv.write(straddle.subarray(cutAt));
      hv.writeFrames([frame('while-down')]);
      const store = await LogStore.open(dir);
      assertConsistent(dir);
      if (store.pendingReopen) assert.equal(await store.rotate(hv.reopen), true, 'finishes the owed reopen');
      assert.equal(store.pendingReopen, false);
      hv.writeFrames([frame('after')]);
      assert.deepEqual(await readAll(store), [...texts(payloadA), 'straddle-frame', 'while-down', 'after']);
      // Still a working store: rotate and prune as usual, nothing counted twice.
      assert.equal(await store.rotate(hv.reopen), true);
      hv.writeFrames([frame('last')]);
      assert.equal(await store.rotate(hv.reopen), true);
      await store.prune(1, 2);
      assertConsistent(dir);
      assert.deepEqual(await readAll(store), ['last']);
    });
  }

  for (const [step, nth] of [
    ['index:temp-written', 1],
    ['seal:index-written', 1],
    ['seal:renamed', 1],
    ['index:temp-written', 2],
  ] as const) {
    void it(`sealing at a boot: ${step}#${nth}`, async (t) => {
      const dir = tempDir(t);
      const setup = await LogStore.open(dir);
      const hv = new FakeHypervisor(setup.livePath);
      await setup.beginBoot();
      hv.boot();
      hv.writeFrames(payloadA);
      hv.write(straddle.subarray(0, cutAt)); // torn by the end of the boot
      hv.halt();
      const crashing = await crashingStore(dir, step, nth);
      await assert.rejects(crashing.beginBoot(), Crash);
      const store = await LogStore.open(dir);
      assertConsistent(dir);
      await store.beginBoot(); // the daemon starts the container again
      hv.boot();
      hv.writeFrames([frame('boot2')]);
      hv.halt();
      assert.deepEqual(await readAll(store), [...texts(payloadA), 'boot2']);
      assert.deepEqual(
        store.view().files.map((f) => f.continues),
        [false, false],
      );
    });
  }

  for (const [step, nth] of [
    ['index:temp-written', 1],
    ['prune:index-written', 1],
    ['prune:unlinked', 1],
    ['prune:unlinked', 2],
  ] as const) {
    void it(`prune: ${step}#${nth}`, async (t) => {
      const dir = tempDir(t);
      const setup = await LogStore.open(dir);
      const hv = new FakeHypervisor(setup.livePath);
      await setup.beginBoot();
      hv.boot();
      for (let i = 0; i < 4; i++) {
        hv.writeFrames(framesNamed(`r${i}-`, 2));
        hv.write(straddle.subarray(0, cutAt));
        await setup.rotate(() => hv.reopen());
        hv.write(straddle.subarray(cutAt));
      }
      const crashing = await crashingStore(dir, step, nth);
      await assert.rejects(crashing.prune(1, 2), Crash);
      const store = await LogStore.open(dir);
      assertConsistent(dir);
      await store.prune(1, 2);
      assertConsistent(dir);
      assert.deepEqual(
        store.view().files.map((f) => f.seq),
        [4, 5],
      );
      assert.deepEqual(await readAll(store), [...texts(framesNamed('r3-', 2)), 'straddle-frame']);
    });
  }
});
