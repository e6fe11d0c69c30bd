import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PIPE_READ_BYTES, PipeReader } from '../../../agent/src/process/pipe-reader.ts';
import { realSys } from '../../../agent/src/sys/sys.ts';

/** A real pipe from the addon, read by a PipeReader; the test writes into `write` itself. */
function readerOnPipe(): {
  write: number;
  chunks: Buffer[];
  ended: Promise<Error | undefined>;
  reader: PipeReader;
  capacity: number;
} {
  const sys = realSys();
  const pipe = sys.pipe(PIPE_READ_BYTES);
  const chunks: Buffer[] = [];
  let done!: (error: Error | undefined) => void;
  const ended = new Promise<Error | undefined>((resolve) => (done = resolve));
  const reader = new PipeReader(sys, pipe.read, (chunk) => chunks.push(chunk), done);
  return { write: pipe.write, chunks, ended, reader, capacity: pipe.capacity };
}

describe('PipeReader', () => {
  it('delivers every byte in order, in bursts as large as the pipe holds, then ends', async () => {
    const { write, chunks, ended, capacity } = readerOnPipe();
    assert.equal(capacity, PIPE_READ_BYTES, 'the pipe took the capacity asked for (as root)');
    const data = randomBytes(3 * PIPE_READ_BYTES + 12345);
    const dir = mkdtempSync(join(tmpdir(), 'pipe-reader-'));
    writeFileSync(join(dir, 'data'), data);
    // A real writer process on the pipe's other end, as a container's process would be: it blocks when the
    // pipe is full, which a write from this test's own thread would do with the reader stuck behind it.
    const writer = spawn('sh', ['-c', `cat ${join(dir, 'data')}; printf tail`], {
      stdio: ['ignore', write, 'inherit'],
    });
    await new Promise((resolve) => writer.once('exit', resolve));
    rmSync(dir, { recursive: true, force: true });
    closeSync(write);
    assert.equal(await ended, undefined);
    assert.deepEqual(Buffer.concat(chunks), Buffer.concat([data, Buffer.from('tail')]));
    assert.ok(
      chunks.some((chunk) => chunk.length > 64 * 1024),
      `bursts larger than Node's 64 KiB reads (largest ${Math.max(...chunks.map((c) => c.length))})`,
    );
  });

  it('pause stops reading until resume, and bytes written meanwhile still arrive', async () => {
    const { write, chunks, ended, reader } = readerOnPipe();
    reader.pause();
    writeSync(write, Buffer.from('while paused'));
    await sleep(50);
    assert.equal(chunks.length, 0, 'nothing read while paused');
    reader.resume();
    await sleep(50);
    assert.equal(Buffer.concat(chunks).toString(), 'while paused');
    closeSync(write);
    assert.equal(await ended, undefined);
  });

  it('destroy closes the pipe: the writer gets EPIPE rather than blocking for good', async () => {
    const { write, ended, reader } = readerOnPipe();
    reader.destroy();
    assert.equal(await ended, undefined);
    assert.equal(reader.closed, true);
    assert.throws(() => writeSync(write, Buffer.from('x')), /EPIPE/);
    closeSync(write);
  });
});
