import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, readdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { OUTPUT_READ_BYTES, OutputReader } from '../../../agent/src/process/output-reader.ts';
import { realSys } from '../../../agent/src/sys/sys.ts';

const REPO = new URL('../../../', import.meta.url).pathname;

/** A real output socket pair from the addon, read by an OutputReader; the test writes into `write`. */
function readerOnPipe(): {
  write: number;
  chunks: Buffer[];
  ended: Promise<Error | undefined>;
  reader: OutputReader;
  capacity: number;
} {
  const sys = realSys();
  const pipe = sys.outputSocket(OUTPUT_READ_BYTES);
  const chunks: Buffer[] = [];
  let done!: (error: Error | undefined) => void;
  const ended = new Promise<Error | undefined>((resolve) => (done = resolve));
  const reader = new OutputReader(sys, pipe.read, (chunk) => chunks.push(chunk), done);
  return { write: pipe.write, chunks, ended, reader, capacity: pipe.capacity };
}

describe('OutputReader', () => {
  it('delivers every byte in order, in bursts larger than Node reads, then ends', async () => {
    const { write, chunks, ended, capacity } = readerOnPipe();
    assert.ok(capacity >= OUTPUT_READ_BYTES, `the send buffer is at least what was asked (${capacity})`);
    const data = randomBytes(3 * OUTPUT_READ_BYTES + 12345);
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

  it('destroy closes our end: the writer gets EPIPE rather than blocking for good', async () => {
    const { write, ended, reader } = readerOnPipe();
    reader.destroy();
    assert.equal(await ended, undefined);
    assert.equal(reader.closed, true);
    assert.throws(() => writeSync(write, Buffer.from('x')), /EPIPE/);
    closeSync(write);
  });
});

describe('OutputReader and a writer that splices from a slow source', () => {
  it('does not block the event loop while busybox cat sendfiles from an idle stdin', async (t) => {
    // busybox cat copies with sendfile. Into a pipe from a socket, the kernel holds the pipe's mutex while
    // it waits for the socket, and the agent's read of that pipe blocked PID 1 (a VM with `run -i … cat`
    // stopped answering). Into a socket, nothing is held.
    const deb = readdirSync(join(REPO, 'build/cache')).find((name) => name.startsWith('busybox-static_'));
    if (!deb) {
      t.skip('no busybox-static .deb in build/cache (make image fetches it)');
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'output-reader-bb-'));
    execFileSync('dpkg-deb', ['-x', join(REPO, 'build/cache', deb), dir]);
    const { write, chunks, ended } = readerOnPipe();
    // stdin: a socket (as the agent gives a process with an open stdin) that stays idle for a second.
    const idle = spawn('sleep', ['1'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const writer = spawn(join(dir, 'bin/busybox'), ['sh', '-c', 'echo before; cat; echo after'], {
      stdio: [idle.stdout!, write, 'inherit'],
    });
    closeSync(write);
    const started = Date.now();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    await new Promise((resolve) => writer.once('exit', resolve));
    clearInterval(timer);
    rmSync(dir, { recursive: true, force: true });
    assert.equal(await ended, undefined);
    assert.equal(Buffer.concat(chunks).toString(), 'before\nafter\n');
    assert.ok(ticks > (Date.now() - started) / 40, `the event loop kept turning (${ticks} ticks)`);
  });
});
