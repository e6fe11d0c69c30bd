import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { encodeLogFrame, LOG_HEADER_BYTES } from '../../../../protocol/src/logs/log-frame.ts';
import { BoundaryTracker, headerAt, walkFrames } from '../../../../hostside/src/daemon/logs/frame-scan.ts';
import { LineSplitter } from '../../../../hostside/src/daemon/logs/line-splitter.ts';
import { bytesOf, frame } from './helpers.ts';

const arbFrames = fc.array(
  fc.record({
    stream: fc.constantFrom(1 as const, 2 as const),
    timestampMs: fc.double({ noNaN: true, noDefaultInfinity: true }),
    data: fc.uint8Array({ maxLength: 50 }).map((a) => Buffer.from(a)),
  }),
  { maxLength: 12 },
);

void describe('frame walk', () => {
  void it('gives whole frames as views and stops at a partial one', () => {
    const bytes = bytesOf([frame('one'), frame('two', 2, 5)]);
    for (let cut = 0; cut <= bytes.length; cut++) {
      const walked = walkFrames(bytes.subarray(0, cut));
      const whole = cut >= 17 + 17 ? 2 : cut >= 17 ? 1 : 0;
      assert.equal(walked.frames.length, whole, `cut ${cut}`);
      assert.equal(walked.consumed, whole * 17);
      assert.equal(walked.skipped, 0);
    }
    const [a, b] = walkFrames(bytes).frames;
    assert.deepEqual(
      [a!.data.toString(), a!.stream, b!.data.toString(), b!.stream, b!.timestampMs],
      ['one', 1, 'two', 2, 5],
    );
    assert.equal(a!.data.buffer, bytes.buffer, 'payloads view the chunk, no copy');
  });

  void it('skips damaged bytes up to the next valid header', () => {
    const good = bytesOf([frame('after')]);
    const damaged = Buffer.concat([Buffer.from([0x7e, 9, 0x7e, 0x7e, 1]), Buffer.from('xyz'), good]);
    const walked = walkFrames(damaged);
    // 0x7e 0x7e 0x01 'xyz' … is not a frame either (length would be huge): resync lands on `good`.
    assert.deepEqual(
      walked.frames.map((f) => f.data.toString()),
      ['after'],
    );
    assert.equal(walked.skipped, 8);
    assert.equal(headerAt(Buffer.from([0x7e, 1]), 0), 'short');
    assert.equal(headerAt(Buffer.from([0x7e, 3]), 0), 'invalid');
  });

  void it('finds the frame boundary of any continuation, whatever the cut', () => {
    fc.assert(
      fc.property(arbFrames, fc.nat(), fc.nat(), (frames, a, b) => {
        const bytes = bytesOf(frames);
        const [cut1, cut2] = [a % (bytes.length + 1), b % (bytes.length + 1)].sort((x, y) => x - y) as [
          number,
          number,
        ];
        const boundaries = new Set([0]);
        let at = 0;
        for (const f of frames) boundaries.add((at += LOG_HEADER_BYTES + f.data.length));
        // Feed the first file, then (when inside a header) the next file's first bytes.
        const tracker = new BoundaryTracker();
        tracker.feed(bytes.subarray(0, cut1));
        let start: number;
        if (tracker.carry !== undefined) {
          start = cut1 + tracker.carry;
        } else {
          const need = LOG_HEADER_BYTES - tracker.partialHeaderBytes;
          tracker.feed(bytes.subarray(cut1, cut1 + need));
          start = cut1 + need + tracker.carry!;
        }
        const expected = [...boundaries].filter((x) => x >= cut1).sort((x, y) => x - y)[0];
        assert.equal(start, expected);
        // lastBoundary: the boundary at or before cut2 when fed from 0.
        const whole = new BoundaryTracker();
        whole.feed(bytes.subarray(0, cut2));
        assert.equal(whole.lastBoundary, Math.max(...[...boundaries].filter((x) => x <= cut2)));
      }),
    );
  });

  void it('jumps over payloads with advance()', () => {
    const bytes = Buffer.concat([encodeLogFrame(frame(Buffer.alloc(1000))), encodeLogFrame(frame('x'))]);
    const tracker = new BoundaryTracker();
    tracker.feed(bytes.subarray(0, LOG_HEADER_BYTES));
    assert.equal(tracker.pendingSkip, 1000);
    tracker.advance(1000);
    tracker.feed(bytes.subarray(LOG_HEADER_BYTES + 1000));
    assert.equal(tracker.carry, 0);
    assert.equal(tracker.lastBoundary, bytes.length);
  });
});

void describe('line splitter', () => {
  void it('keeps each newline, holds a partial line, flushes it at the end', () => {
    const s = new LineSplitter();
    assert.deepEqual(s.push(Buffer.from('a\nb')).map(String), ['a\n']);
    assert.deepEqual(s.push(Buffer.from('c\n\nd')).map(String), ['bc\n', '\n']);
    assert.equal(s.pendingBytes, 1);
    assert.equal(s.flush()?.toString(), 'd');
    assert.equal(s.flush(), undefined);
  });

  void it('cuts a line at the size limit like Docker’s 16 KiB copier buffer', () => {
    const s = new LineSplitter(4);
    assert.deepEqual(s.push(Buffer.from('abcdefghij\n')).map(String), ['abcd', 'efgh', 'ij\n']);
    assert.deepEqual(s.push(Buffer.from('ab')).map(String), []);
    assert.deepEqual(s.push(Buffer.from('cd\n')).map(String), ['abcd', '\n']);
  });

  void it('gives back exactly the bytes pushed, in lines that end with a newline or are full', () => {
    fc.assert(
      fc.property(
        fc.array(fc.string({ unit: fc.constantFrom('a', 'b', '\n'), maxLength: 20 }), { maxLength: 10 }),
        fc.integer({ min: 1, max: 8 }),
        (pieces, max) => {
          const s = new LineSplitter(max);
          const lines = pieces.flatMap((p) => s.push(Buffer.from(p)));
          const tail = s.flush();
          assert.equal([...lines, ...(tail ? [tail] : [])].map(String).join(''), pieces.join(''));
          for (const line of lines) {
            assert.ok(line.length <= max);
            assert.ok(line.at(-1) === 0x0a || line.length === max);
            assert.equal(line.subarray(0, -1).includes(0x0a), false);
          }
        },
      ),
    );
  });
});
