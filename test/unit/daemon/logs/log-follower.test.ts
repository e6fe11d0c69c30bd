import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LogStore } from '../../../../hostside/src/daemon/logs/log-store.ts';
import { LogFollower, type SubscriptionEnd } from '../../../../hostside/src/daemon/logs/log-follower.ts';
import type { LogEntry } from '../../../../hostside/src/daemon/logs/log-reader.ts';
import { FakeHypervisor, frame, tempDir, texts, until } from './helpers.ts';

async function drain(iterable: AsyncIterable<LogEntry>, into: LogEntry[]): Promise<void> {
  for await (const entry of iterable) into.push(entry);
}

void describe('log follower', () => {
  void it('decodes once for every subscriber, from the moment each subscribed, until the stop', async (t) => {
    const store = await LogStore.open(tempDir(t));
    const hv = new FakeHypervisor(store.livePath);
    const follower = new LogFollower(store);
    // docker start -a: the attach comes first, then the boot.
    const ends: SubscriptionEnd[] = [];
    const first = follower.subscribe({ onEnd: (reason) => ends.push(reason) });
    const firstGot: LogEntry[] = [];
    const firstDone = drain(first, firstGot);
    await store.beginBoot();
    hv.boot();
    store.markRunning();
    hv.writeFrames([frame('one'), frame('two', 2)]);
    await until(() => firstGot.length === 2);
    const second = follower.subscribe({ onEnd: (reason) => ends.push(reason) });
    const secondGot: LogEntry[] = [];
    const secondDone = drain(second, secondGot);
    await new Promise((resolve) => setTimeout(resolve, 20));
    hv.writeFrames([frame('three')]);
    await until(() => firstGot.length === 3 && secondGot.length === 1);
    hv.halt();
    store.markStopped();
    await Promise.all([firstDone, secondDone]);
    assert.deepEqual(texts(firstGot), ['one', 'two', 'three']);
    assert.deepEqual(texts(secondGot), ['three']);
    assert.equal(firstGot[2]!.data, secondGot[0]!.data, 'the same decoded entry for both');
    assert.deepEqual(ends, ['stopped', 'stopped']);
    assert.equal(follower.subscriberCount, 0);
  });

  void it('waits for a subscriber that reads slowly: it gets every byte, and so do the others', async (t) => {
    const store = await LogStore.open(tempDir(t));
    const hv = new FakeHypervisor(store.livePath);
    await store.beginBoot();
    hv.boot();
    store.markRunning();
    const follower = new LogFollower(store);
    const slow = follower.subscribe({ queueBytes: 1000 });
    const fast = follower.subscribe();
    const fastGot: LogEntry[] = [];
    const fastDone = drain(fast, fastGot);
    await new Promise((resolve) => setTimeout(resolve, 20));
    for (let i = 0; i < 50; i++) hv.writeFrames([frame(Buffer.alloc(100, i))]);
    const slowGot: LogEntry[] = [];
    const slowDone = (async () => {
      for await (const entry of slow) {
        slowGot.push(entry);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })();
    await until(() => fastGot.length === 50 && slowGot.length === 50);
    assert.ok(slow.queuedBytes <= 1000 + 100, 'its queue stayed near its limit');
    hv.halt();
    store.markStopped();
    await Promise.all([fastDone, slowDone]);
    assert.deepEqual(
      slowGot.map((e) => e.data[0]),
      [...Array(50).keys()],
    );
    assert.equal(slow.endReason, 'stopped');
  });

  void it('cuts loose a subscriber that stops reading, then carries on for the others', async (t) => {
    const store = await LogStore.open(tempDir(t));
    const hv = new FakeHypervisor(store.livePath);
    await store.beginBoot();
    hv.boot();
    store.markRunning();
    const follower = new LogFollower(store, { stallMs: 200 });
    let stuckEnd: SubscriptionEnd | undefined;
    const stuck = follower.subscribe({ queueBytes: 1000, onEnd: (reason) => (stuckEnd = reason) });
    const fast = follower.subscribe();
    const fastGot: LogEntry[] = [];
    const fastDone = drain(fast, fastGot);
    await new Promise((resolve) => setTimeout(resolve, 20));
    for (let i = 0; i < 20; i++) hv.writeFrames([frame(Buffer.alloc(100, i))]);
    await until(() => fastGot.length === 20);
    assert.equal(stuckEnd, 'overflow');
    assert.equal(stuck.queuedBytes, 0, 'its queue is dropped, not kept');
    assert.deepEqual(await stuck.next(), { value: undefined, done: true });
    hv.halt();
    store.markStopped();
    await fastDone;
    assert.equal(fast.endReason, 'stopped');
  });

  void it('stops reading when the last subscriber leaves, and starts again for a new one', async (t) => {
    const store = await LogStore.open(tempDir(t));
    const hv = new FakeHypervisor(store.livePath);
    await store.beginBoot();
    hv.boot();
    store.markRunning();
    const follower = new LogFollower(store);
    const ends: SubscriptionEnd[] = [];
    const a = follower.subscribe({ onEnd: (reason) => ends.push(reason) });
    a.close();
    assert.deepEqual(ends, ['closed']);
    assert.equal(follower.subscriberCount, 0);
    hv.writeFrames([frame('missed: nobody attached')]);
    const b = follower.subscribe();
    await new Promise((resolve) => setTimeout(resolve, 20));
    hv.writeFrames([frame('seen')]);
    const got = await b.next();
    assert.equal(got.value?.data.toString(), 'seen');
    await store.remove();
    assert.deepEqual(await b.next(), { value: undefined, done: true });
    assert.equal(b.endReason, 'removed');
  });
});
