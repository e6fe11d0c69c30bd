import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { LogFrameDecoder } from '../../../../protocol/src/logs/log-frame.ts';
import { LogPortWriter, type LogSink } from '../../../../agent/src/init/ports/log-port.ts';
import { OutputLog } from '../../../../agent/src/process/output-log.ts';
import { SYS } from '../../../../agent/src/sys/sys.ts';

type Step =
  | { kind: 'append'; stream: 1 | 2; data: Uint8Array }
  | { kind: 'take'; n: number }
  | { kind: 'fail'; code: 'EPIPE' | 'ENXIO' | 'EIO' | 'ENOSPC' }
  | { kind: 'full'; revents: number; waits: number }
  | { kind: 'reader'; id: number; n: number }
  | { kind: 'leave'; id: number };

const arbStep: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    kind: fc.constant('append' as const),
    stream: fc.constantFrom(1 as const, 2 as const),
    data: fc.uint8Array({ minLength: 1, maxLength: 40 }),
  }),
  fc.record({ kind: fc.constant('take' as const), n: fc.integer({ min: 1, max: 30 }) }),
  fc.record({ kind: fc.constant('fail' as const), code: fc.constantFrom('EPIPE', 'ENXIO', 'EIO', 'ENOSPC') }),
  // A full port (poll timed out, or said POLLOUT), or no host behind it (HUP), until the next steps.
  fc.record({
    kind: fc.constant('full' as const),
    revents: fc.constantFrom(0, SYS.POLLOUT, SYS.POLLHUP, SYS.POLLHUP | SYS.POLLOUT, SYS.POLLERR),
    waits: fc.integer({ min: 1, max: 6 }),
  }),
  fc.record({ kind: fc.constant('reader' as const), id: fc.nat({ max: 2 }), n: fc.nat({ max: 50 }) }),
  fc.record({ kind: fc.constant('leave' as const), id: fc.nat({ max: 2 }) }),
);

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Drives a LogPortWriter through a script: the sink's behaviour on each write (take some bytes, fail,
 * be full, have no host) interleaved with the producer's appends and attach readers reading the log.
 */
class ScriptedSink implements LogSink {
  readonly path = 'fake-port';
  readonly received: Buffer[] = [];
  /** Longest run of writes that took nothing with no wait in between (a spin). */
  maxSpin = 0;
  sleeps = 0;
  #spin = 0;
  #revents: number = SYS.POLLOUT;
  readonly #steps: Step[];
  readonly #other: (step: Step) => void;

  constructor(steps: Step[], other: (step: Step) => void) {
    this.#steps = steps;
    this.#other = other;
  }

  /** Runs the producer's and readers' steps at the head of the script. */
  runOthers(): void {
    while (this.#steps.length > 0) {
      const head = this.#steps[0]!;
      if (head.kind === 'take' || head.kind === 'fail' || head.kind === 'full') return;
      this.#steps.shift();
      this.#other(head);
    }
  }

  get done(): boolean {
    return this.#steps.length === 0;
  }

  /** Drops a port behaviour that found nothing to write. */
  skip(): void {
    this.#steps.shift();
  }

  writeNow(bytes: Buffer): number {
    assert.ok(bytes.length > 0, 'never asked to write nothing');
    this.runOthers();
    const step = this.#steps[0];
    if (step?.kind === 'full') {
      this.#revents = step.revents;
      this.#spin++;
      this.maxSpin = Math.max(this.maxSpin, this.#spin);
      return 0;
    }
    this.#spin = 0;
    this.#steps.shift();
    if (step?.kind === 'fail') throw Object.assign(new Error(`write ${step.code}`), { code: step.code });
    const n = step?.kind === 'take' ? Math.min(step.n, bytes.length) : bytes.length;
    this.received.push(Buffer.from(bytes.subarray(0, n)));
    return n;
  }

  waitWritable(): Promise<number> {
    // A full port stays full for `waits` waits; the script goes on afterwards.
    const revents = this.#revents;
    this.#revents = SYS.POLLOUT;
    const head = this.#steps[0];
    if (head?.kind === 'full') {
      if (head.waits > 1) this.#steps[0] = { ...head, waits: head.waits - 1 };
      else this.#steps.shift();
    }
    if (revents === 0) this.#spin = 0; // a poll that timed out waited
    return tick().then(() => revents);
  }

  sleep = async (): Promise<void> => {
    this.sleeps++;
    this.#spin = 0;
    await tick();
  };
}

/** A sink that takes `take` bytes of its first write, then fails once, then takes everything. */
class FlakySink implements LogSink {
  readonly path = 'fake-port';
  received: Buffer[] = [];
  #calls = 0;
  writeNow(bytes: Buffer): number {
    this.#calls++;
    if (this.#calls === 1) {
      this.received.push(Buffer.from(bytes.subarray(0, 5)));
      return 5;
    }
    if (this.#calls === 2) throw Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
    this.received.push(Buffer.from(bytes));
    return bytes.length;
  }
  waitWritable(): Promise<number> {
    return Promise.resolve(0x4);
  }
}

void describe('LogPortWriter', () => {
  void it('resumes a frame exactly where an error cut it: no byte twice, none lost', async () => {
    const log = new OutputLog(1 << 20);
    const sink = new FlakySink();
    const writer = new LogPortWriter(log, sink, () => {});
    writer.start();
    log.append(1, Buffer.from('hello, world'));
    log.append(2, Buffer.from('oops'));
    assert.equal(await writer.flushed(5000), true);
    const frames = new LogFrameDecoder().push(Buffer.concat(sink.received));
    assert.deepEqual(
      frames.map((f) => [f.stream, f.data.toString()]),
      [
        [1, 'hello, world'],
        [2, 'oops'],
      ],
    );
  });

  void it('property: partial writes, errors, full ports, HUPs and reconnects, with readers coming and going, lose and duplicate no byte', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 64 }),
        fc.array(arbStep, { maxLength: 60 }),
        async (capacity, steps) => {
          const log = new OutputLog(capacity);
          const appended: Buffer[] = [];
          const streams: Record<1 | 2, Buffer[]> = { 1: [], 2: [] };
          const waiting: [1 | 2, Buffer][] = [];
          let paused = false;
          let maxKept = 0;
          const produce = (): void => {
            while (!paused && waiting.length > 0) {
              const [stream, data] = waiting.shift()!;
              appended.push(data);
              streams[stream].push(data);
              paused = !log.append(stream, data);
              maxKept = Math.max(maxKept, log.keptBytes);
            }
          };
          log.on('drain', () => {
            paused = false;
            produce();
          });
          const readers = new Map<number, number>();
          const other = (step: Step): void => {
            if (step.kind === 'append') {
              waiting.push([step.stream, Buffer.from(step.data)]);
              produce();
            } else if (step.kind === 'leave') {
              readers.delete(step.id);
            } else if (step.kind === 'reader') {
              // An attach client: read() counts as delivery, which must not let the port's bytes go.
              const at = readers.get(step.id) ?? log.oldest;
              if (at < log.oldest) readers.delete(step.id);
              else
                readers.set(
                  step.id,
                  log.read(at, step.n).reduce((_, c) => c.offset + c.data.length, at),
                );
            }
          };
          const sink = new ScriptedSink([...steps], other);
          const reports: string[] = [];
          const writer = new LogPortWriter(log, sink, (m) => reports.push(m), { sleep: sink.sleep });
          writer.start();
          for (let guard = 0; !sink.done && guard < 10_000; guard++) {
            sink.runOthers();
            await tick();
            if (!sink.done && writer.offset === log.end && (await writer.flushed(0))) sink.skip();
          }
          assert.equal(await writer.flushed(5000), true, 'everything reaches the port in the end');
          assert.equal(waiting.length, 0, 'the producer is not left paused');

          const decoder = new LogFrameDecoder();
          const frames = decoder.push(Buffer.concat(sink.received));
          decoder.end(); // throws if the port's bytes end inside a frame
          assert.deepEqual(Buffer.concat(frames.map((f) => f.data)), Buffer.concat(appended));
          for (const stream of [1, 2] as const) {
            assert.deepEqual(
              Buffer.concat(frames.filter((f) => f.stream === stream).map((f) => f.data)),
              Buffer.concat(streams[stream]),
            );
          }
          assert.equal(writer.bytesWritten, Buffer.concat(appended).length);
          assert.ok(maxKept <= capacity + 40, `the log held ${maxKept} bytes, capacity ${capacity}`);
          assert.ok(sink.maxSpin <= 2, `${sink.maxSpin} writes in a row took nothing without a wait`);
          assert.ok(
            reports.every((m) => !m.includes('lost') && !m.includes('evicted')),
            reports.join('\n'),
          );
        },
      ),
      { numRuns: 200 },
    );
  });

  void it('waits on a port with no host behind it, backing off, and says so once', async () => {
    const log = new OutputLog(100);
    let writes = 0;
    let host = false;
    const sink: LogSink = {
      path: 'fake-port',
      writeNow(bytes) {
        writes++;
        if (!host) return 0;
        return bytes.length;
      },
      waitWritable: () => Promise.resolve(host ? SYS.POLLOUT : SYS.POLLHUP),
    };
    const waits: number[] = [];
    const reports: string[] = [];
    const writer = new LogPortWriter(log, sink, (m) => reports.push(m), {
      retryMs: 10,
      retryMaxMs: 80,
      sleep: async (ms) => {
        waits.push(ms);
        if (waits.length === 8) host = true;
        await tick();
      },
    });
    writer.start();
    log.append(1, Buffer.from('hello'));
    assert.equal(await writer.flushed(5000), true);
    assert.deepEqual(waits, [10, 20, 40, 80, 80, 80, 80, 80]);
    assert.equal(writes, 10, 'one write per wait, then the header and the payload');
    assert.equal(reports.length, 2, reports.join('\n'));
    assert.match(reports[0]!, /no host/);
    assert.match(reports[1]!, /writing again/);
  });
});
