import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { encodeLogFrame, type LogFrame } from '../../../../protocol/src/logs/log-frame.ts';
import { decodeLogBytes, framesFromOffset } from '../../../../hostside/src/vm/log-file.ts';

const frame = (text: string, stream: 1 | 2 = 1): LogFrame => ({
  stream,
  timestampMs: 1.5,
  data: Buffer.from(text),
});
const text = (frames: LogFrame[]) => frames.map((f) => f.data.toString()).join('');

void describe('log-port file', () => {
  const frames = [frame('hello '), frame('err', 2), frame(''), frame('world\n')];

  void it('resumes at any byte offset of the output, cutting the first frame where needed', () => {
    const all = text(frames);
    for (let offset = 0; offset <= all.length + 2; offset++)
      assert.equal(text(framesFromOffset(frames, offset)), all.slice(offset), `offset ${offset}`);
    const cut = framesFromOffset(frames, 7);
    assert.deepEqual(cut[0], { ...frame('rr', 2) });
    assert.equal(cut[1]!.data.toString(), '', 'an empty frame after the offset is kept');
  });

  void it('offsets agree with the concatenated payloads for any frames', () => {
    fc.assert(
      fc.property(
        fc.array(fc.string({ maxLength: 8 }), { maxLength: 8 }),
        fc.nat({ max: 80 }),
        (payloads, offset) => {
          const given = payloads.map((p) => frame(p));
          assert.equal(text(framesFromOffset(given, offset)), payloads.join('').slice(offset));
        },
      ),
    );
  });

  void it('decodes whole frames, leaving out one the VM cut short and anything after damage', () => {
    const bytes = Buffer.concat(frames.map(encodeLogFrame));
    assert.deepEqual(decodeLogBytes(bytes), frames);
    assert.deepEqual(decodeLogBytes(bytes.subarray(0, bytes.length - 2)), frames.slice(0, 3));
    const damaged = Buffer.concat([encodeLogFrame(frames[0]!), Buffer.from('garbage-garbage!')]);
    assert.deepEqual(decodeLogBytes(damaged, 4), [frames[0]]);
    assert.deepEqual(decodeLogBytes(Buffer.alloc(0)), []);
  });
});
