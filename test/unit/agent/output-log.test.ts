import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { OutputLog, type OutputChunk } from '../../../agent/src/process/output-log.ts';

const bytes = (text: string): Buffer => Buffer.from(text);
/** Chunks without timestamps, for readable comparisons. */
const view = (chunks: OutputChunk[]): [number, number, string][] =>
  chunks.map((chunk) => [chunk.offset, chunk.stream, chunk.data.toString()]);

/** Counts how often an event fires. */
function counter(log: OutputLog, event: 'data' | 'drain' | 'end'): { count: number } {
  const seen = { count: 0 };
  log.on(event, () => seen.count++);
  return seen;
}

void describe('OutputLog', () => {
  void it('counts offsets in payload bytes across both streams, in arrival order', () => {
    const log = new OutputLog(1000);
    const data = counter(log, 'data');
    assert.equal(log.append(1, bytes('hello '), 10), true);
    assert.equal(log.append(2, bytes('oops\n'), 11), true);
    assert.equal(log.append(1, Buffer.alloc(0), 12), true);
    assert.equal(log.append(1, bytes('world'), 13), true);
    assert.equal(data.count, 3, 'an empty append is not data');
    assert.equal(log.oldest, 0);
    assert.equal(log.end, 16);
    assert.equal(log.keptBytes, 16);
    assert.deepEqual(log.read(0), [
      { offset: 0, stream: 1, timestampMs: 10, data: bytes('hello ') },
      { offset: 6, stream: 2, timestampMs: 11, data: bytes('oops\n') },
      { offset: 11, stream: 1, timestampMs: 13, data: bytes('world') },
    ]);
  });

  void it('reads from any offset, splitting the chunk it starts in', () => {
    const log = new OutputLog(1000);
    log.append(1, bytes('abcdef'));
    log.append(2, bytes('ghij'));
    assert.deepEqual(view(log.read(4)), [
      [4, 1, 'ef'],
      [6, 2, 'ghij'],
    ]);
    assert.deepEqual(view(log.read(6)), [[6, 2, 'ghij']]);
    assert.deepEqual(view(log.read(9)), [[9, 2, 'j']]);
    assert.deepEqual(log.read(10), []);
    assert.deepEqual(log.read(99), []);
  });

  void it('read with maxBytes takes at most that many bytes, splitting chunks', () => {
    const log = new OutputLog(1000);
    log.append(1, bytes('abcdef'));
    log.append(2, bytes('ghij'));
    assert.deepEqual(view(log.read(0, 4)), [[0, 1, 'abcd']]);
    assert.deepEqual(view(log.read(4, 4)), [
      [4, 1, 'ef'],
      [6, 2, 'gh'],
    ]);
    assert.deepEqual(view(log.read(8, 4)), [[8, 2, 'ij']]);
    assert.deepEqual(log.read(0, 0), []);
  });

  void it('property: reading in slices of any size yields the appended bytes exactly once, in order', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom(1 as const, 2 as const), fc.uint8Array({ maxLength: 20 }))),
        fc.integer({ min: 1, max: 30 }),
        (appends, slice) => {
          const log = new OutputLog(1 << 20);
          for (const [stream, data] of appends) log.append(stream, Buffer.from(data));
          const out: OutputChunk[] = [];
          let offset = 0;
          for (;;) {
            const chunks = log.read(offset, slice);
            if (chunks.length === 0) break;
            assert.ok(chunks.reduce((sum, chunk) => sum + chunk.data.length, 0) <= slice);
            for (const chunk of chunks) {
              assert.equal(chunk.offset, offset, 'no gap and no overlap');
              offset += chunk.data.length;
            }
            out.push(...chunks);
          }
          assert.equal(offset, log.end);
          assert.deepEqual(
            Buffer.concat(out.map((chunk) => chunk.data)),
            Buffer.concat(appends.map(([, data]) => data)),
          );
          // Each stream's bytes stay in that stream.
          for (const stream of [1, 2] as const) {
            assert.deepEqual(
              Buffer.concat(out.filter((c) => c.stream === stream).map((c) => c.data)),
              Buffer.concat(appends.filter(([s]) => s === stream).map(([, data]) => data)),
            );
          }
        },
      ),
    );
  });

  void it('keeps every undelivered byte: append returns false when over capacity, and nothing is evicted', () => {
    const log = new OutputLog(10);
    assert.equal(log.append(1, bytes('0123456789')), true, 'exactly full is not over');
    assert.equal(log.append(1, bytes('abc')), false);
    assert.equal(log.append(2, bytes('def')), false);
    assert.equal(log.oldest, 0);
    assert.equal(log.keptBytes, 16);
    assert.deepEqual(view(log.read(0, 0)), []);
    assert.equal(log.oldest, 0, 'reading nothing delivers nothing');
  });

  void it('evicts only delivered bytes, whole chunks at a time, oldest first', () => {
    const log = new OutputLog(10);
    log.append(1, bytes('aaaa'));
    log.append(1, bytes('bbbb'));
    log.append(1, bytes('cccc')); // 12 kept, over capacity by 2
    assert.equal(log.oldest, 0);

    // Delivering part of the first chunk frees nothing: a chunk leaves whole.
    log.read(0, 2);
    assert.equal(log.oldest, 0);
    // Delivering the first chunk lets it go; the log is back within capacity.
    log.read(2, 2);
    assert.equal(log.oldest, 4);
    assert.equal(log.keptBytes, 8);
    // Within capacity, delivered bytes stay for late readers.
    log.read(4);
    assert.equal(log.oldest, 4);
    assert.deepEqual(
      view(log.read(0)),
      [
        [4, 1, 'bbbb'],
        [8, 1, 'cccc'],
      ],
      'a reader from before oldest starts at oldest and sees the gap in the offset',
    );

    // New output pushes out delivered bytes only.
    assert.equal(log.append(2, bytes('dddd')), true);
    assert.equal(log.oldest, 8);
    assert.equal(log.end, 16);
  });

  void it("'drain' fires once when reading frees space, after append returned false", () => {
    const log = new OutputLog(8);
    const drain = counter(log, 'drain');
    log.append(1, bytes('aaaa'));
    log.append(1, bytes('bbbb'));
    assert.equal(log.append(1, bytes('cccc')), false);
    log.read(0, 2);
    assert.equal(drain.count, 0, 'part of a chunk frees nothing');
    log.read(2, 2);
    assert.equal(drain.count, 1);
    log.read(4);
    log.read(0);
    assert.equal(drain.count, 1, 'no second drain without a new false');
    assert.equal(log.append(1, bytes('dd')), true);
    assert.equal(drain.count, 1);
  });

  void it("no 'drain' when the log was never full", () => {
    const log = new OutputLog(100);
    const drain = counter(log, 'drain');
    log.append(1, bytes('abc'));
    log.read(0);
    assert.equal(drain.count, 0);
  });

  void it('close emits end once and marks the log ended', () => {
    const log = new OutputLog(10);
    const end = counter(log, 'end');
    assert.equal(log.ended, false);
    log.close();
    log.close();
    assert.equal(log.ended, true);
    assert.equal(end.count, 1);
  });

  void it('a hold keeps every byte it has not released, whatever other readers take', () => {
    const log = new OutputLog(8);
    const port = log.hold();
    log.append(1, bytes('aaaa'));
    log.append(1, bytes('bbbb'));
    assert.equal(log.append(1, bytes('cccc')), false);
    assert.equal(view(log.read(0)).length, 3, 'an attach reader takes everything');
    assert.equal(log.oldest, 0, 'still kept: the port has not taken it');
    assert.deepEqual(view(log.peek(0, 6)), [
      [0, 1, 'aaaa'],
      [4, 1, 'bb'],
    ]);
    assert.equal(log.oldest, 0, 'peek delivers nothing');
    port.release(6);
    assert.equal(log.oldest, 4, 'released whole chunks leave');
    port.release(3);
    assert.equal(port.offset, 6, 'a hold never moves back');
    port.close();
    log.append(2, bytes('dd'));
    assert.equal(log.oldest, 8, 'once the hold is gone, what readers took may leave again');
  });

  void it('acknowledge after peek delivers like read', () => {
    const log = new OutputLog(4);
    const drain = counter(log, 'drain');
    log.append(1, bytes('aaaa'));
    assert.equal(log.append(1, bytes('bb')), false);
    assert.deepEqual(view(log.peek(0)), [
      [0, 1, 'aaaa'],
      [4, 1, 'bb'],
    ]);
    assert.equal(log.oldest, 0);
    log.acknowledge(4);
    assert.equal(log.oldest, 4);
    assert.equal(drain.count, 1);
  });

  void it('property: with the log port holding it, readers coming and going lose the port no byte and memory stays within capacity plus one append', () => {
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('append' as const),
        stream: fc.constantFrom(1 as const, 2 as const),
        data: fc.uint8Array({ minLength: 1, maxLength: 24 }),
      }),
      fc.record({ kind: fc.constant('port' as const), n: fc.nat({ max: 40 }) }),
      fc.record({
        kind: fc.constant('reader' as const),
        id: fc.nat({ max: 2 }),
        n: fc.nat({ max: 40 }),
        ack: fc.boolean(),
      }),
      fc.record({ kind: fc.constant('leave' as const), id: fc.nat({ max: 2 }) }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.array(op, { maxLength: 80 }), (capacity, ops) => {
        const log = new OutputLog(capacity);
        const hold = log.hold();
        const appended: Buffer[] = [];
        const waiting: [1 | 2, Buffer][] = []; // the producer's output while the log says "pause"
        let paused = false;
        const produce = (): void => {
          while (!paused && waiting.length > 0) {
            const [stream, data] = waiting.shift()!;
            appended.push(data);
            paused = !log.append(stream, data);
            assert.ok(log.keptBytes <= capacity + 24, `kept ${log.keptBytes} of ${capacity}`);
          }
        };
        log.on('drain', () => {
          paused = false;
          produce();
        });
        const port: Buffer[] = [];
        let portOffset = 0;
        const takeForPort = (n: number): void => {
          const chunks = log.peek(portOffset, n);
          for (const chunk of chunks) {
            assert.equal(chunk.offset, portOffset, 'the port never finds a gap');
            port.push(chunk.data);
            portOffset += chunk.data.length;
          }
          hold.release(portOffset);
        };
        const readers = new Map<number, number>();
        for (const step of ops) {
          if (step.kind === 'append') {
            waiting.push([step.stream, Buffer.from(step.data)]);
            produce();
          } else if (step.kind === 'port') {
            takeForPort(step.n);
          } else if (step.kind === 'leave') {
            readers.delete(step.id);
          } else {
            const at = readers.get(step.id) ?? (step.n % 2 === 0 ? log.oldest : log.end);
            if (at < log.oldest) {
              readers.delete(step.id); // fell behind: told the gap, and gone
              continue;
            }
            const chunks = step.ack ? log.peek(at, step.n) : log.read(at, step.n);
            let offset = at;
            const all = Buffer.concat(appended);
            for (const chunk of chunks) {
              assert.equal(chunk.offset, offset);
              assert.deepEqual(chunk.data, all.subarray(offset, offset + chunk.data.length));
              offset += chunk.data.length;
            }
            if (step.ack) log.acknowledge(offset);
            readers.set(step.id, offset);
          }
          assert.ok(log.oldest <= hold.offset, 'nothing the port has not taken is evicted');
        }
        // The port catches up: the producer resumes and every byte reaches the port once, in order.
        for (let guard = 0; guard < 10_000 && (portOffset < log.end || waiting.length > 0); guard++)
          takeForPort(7);
        assert.equal(waiting.length, 0, 'the producer is not left paused');
        assert.deepEqual(Buffer.concat(port), Buffer.concat(appended));
      }),
      { numRuns: 300 },
    );
  });
});
