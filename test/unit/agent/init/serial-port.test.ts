/**
 * SerialPort waits in the event loop (Sys.watch, edge-triggered): a FIFO stands in for the port's bytes;
 * the recording fake stands in for the kernel's readiness events where the test must choose them, and the
 * real addon where the test is about when bytes move.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  constants as fsConstants,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setImmediate as turn, setTimeout as sleep } from 'node:timers/promises';
import { PortStream, SerialPort } from '../../../../agent/src/init/ports/serial-port.ts';
import { realSys, SYS } from '../../../../agent/src/sys/sys.ts';
import { FakeSys } from '../../../helpers/fake-sys.ts';

const noLog = (): void => undefined;

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await turn();
}

void describe('SerialPort', () => {
  let dir: string;
  let fifo: string;
  let host: number;
  const ports: SerialPort[] = [];

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'tether-serial-'));
    fifo = path.join(dir, 'port');
    execFileSync('mkfifo', [fifo]);
    host = openSync(fifo, fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
  });
  afterEach(() => {
    for (const port of ports.splice(0)) port.close();
    closeSync(host);
    rmSync(dir, { recursive: true, force: true });
  });

  function open(sys: FakeSys | ReturnType<typeof realSys>): SerialPort {
    const port = new SerialPort(fifo, sys, noLog);
    ports.push(port);
    return port;
  }

  void it('watches its fd for reads and writes, and reads only when an event says so', async () => {
    const sys = new FakeSys();
    const port = open(sys);
    assert.equal(sys.watches.length, 1);
    assert.equal(sys.watches[0]!.events, SYS.POLLIN | SYS.POLLOUT);
    const streams: PortStream[] = [];
    const served = port.serve((stream) => streams.push(stream));
    writeSync(host, 'hello');
    await turns(5);
    assert.equal(streams.length, 0, 'no event yet: nothing read');
    sys.emit(sys.watches[0]!.fd, SYS.POLLIN | SYS.POLLOUT);
    await turns(2);
    assert.equal(streams.length, 1);
    assert.equal((streams[0]!.read() as Buffer).toString(), 'hello');
    port.close();
    await served;
    assert.equal(sys.watches[0]!.closed, true, 'close() ends the watch');
    assert.deepEqual(sys.callNames(), ['watch'], 'no poll, no timers: only the one watch');
  });

  void it('ends the stream on a hang-up and waits for the next event, without polling', async () => {
    const sys = new FakeSys();
    const port = open(sys);
    const fd = sys.watches[0]!.fd;
    const streams: PortStream[] = [];
    void port.serve((stream) => streams.push(stream));
    writeSync(host, 'one');
    sys.emit(fd, SYS.POLLIN);
    await turns(2);
    assert.equal(streams.length, 1);
    const ended = new Promise((resolve) => streams[0]!.on('close', resolve));
    streams[0]!.resume();
    writeSync(host, 'stale');
    sys.emit(fd, SYS.POLLIN | SYS.POLLHUP);
    await ended;
    await sleep(50);
    assert.equal(streams.length, 1, 'bytes left by a host that went away start no connection');
    assert.deepEqual(sys.callNames(), ['watch']);
    sys.emit(fd, SYS.POLLIN | SYS.POLLOUT); // the host is back
    await turns(2);
    assert.equal(streams.length, 2);
    assert.equal((streams[1]!.read() as Buffer).toString(), 'stale');
  });

  void it('a stream the agent ended (a handshake that timed out) never blocks the port: the host’s next bytes are a new connection', async () => {
    const sys = new FakeSys();
    const port = open(sys);
    const fd = sys.watches[0]!.fd;
    const streams: PortStream[] = [];
    void port.serve((stream) => streams.push(stream));
    writeSync(host, 'slow handshake');
    sys.emit(fd, SYS.POLLIN);
    await turns(2);
    assert.equal(streams.length, 1);
    // Not read (as a stalled SSH server does not), then ended by the agent; the host never hung up, or
    // left and came back before the agent looked (no POLLHUP seen), and sends again.
    streams[0]!.destroy();
    writeSync(host, 'SYN again');
    sys.emit(fd, SYS.POLLIN);
    await turns(4);
    assert.equal(streams.length, 2, 'a new connection is served');
    assert.equal((streams[1]!.read() as Buffer).toString(), 'SYN again');
  });

  void it('bytes left unread when the agent ends a stream start the next connection without a new event', async () => {
    const sys = new FakeSys();
    const port = open(sys);
    const fd = sys.watches[0]!.fd;
    const streams: PortStream[] = [];
    void port.serve((stream) => streams.push(stream));
    // Fill the stream's buffer (nobody reads it, as a stalled handshake does not): the port stops reading,
    // and the next bytes stay in the fifo, their one event spent.
    for (let i = 0; i < 5; i++) {
      writeSync(host, Buffer.alloc(64 * 1024, i));
      sys.emit(fd, SYS.POLLIN);
      await turns(3);
    }
    assert.equal(streams.length, 1);
    assert.equal(streams[0]!.wantsRead, false, 'the stream is full');
    streams[0]!.destroy();
    await turns(4);
    assert.equal(streams.length, 2, 'the waiting bytes open a new connection');
    assert.ok((streams[1]!.read() as Buffer).length > 0);
  });

  void it('waitWritable resolves on the next POLLOUT or POLLHUP after EAGAIN, and at once if one came', async () => {
    const sys = new FakeSys();
    const port = open(sys);
    const fd = sys.watches[0]!.fd;
    const chunk = Buffer.alloc(4096, 1);
    while (port.writeNow(chunk) > 0); // fill the FIFO: the port is full
    let revents: number | undefined;
    void port.waitWritable().then((r) => (revents = r));
    await turns(3);
    assert.equal(revents, undefined, 'full, and no event: it waits');
    sys.emit(fd, SYS.POLLIN);
    await turns(1);
    assert.equal(revents, undefined, 'readable is not writable');
    sys.emit(fd, SYS.POLLOUT);
    await turns(1);
    assert.equal(revents, SYS.POLLOUT);

    assert.equal(port.writeNow(chunk), 0);
    sys.emit(fd, SYS.POLLOUT | SYS.POLLHUP); // before anyone waits: kept
    assert.equal(await port.waitWritable(), SYS.POLLOUT | SYS.POLLHUP);

    assert.equal(port.writeNow(chunk), 0);
    const waiting = port.waitWritable();
    port.close();
    assert.equal(await waiting, SYS.POLLNVAL, 'close() releases a waiting writer');
  });

  void it('a stream writes what the port takes and the rest once the port has room', async () => {
    const sys = new FakeSys();
    const port = open(sys);
    const fd = sys.watches[0]!.fd;
    const streams: PortStream[] = [];
    void port.serve((stream) => streams.push(stream));
    writeSync(host, 'x');
    sys.emit(fd, SYS.POLLIN | SYS.POLLOUT);
    await turns(2);
    assert.throws(() => readSync(host, Buffer.alloc(16)), /EAGAIN/, 'the port read the x');
    const big = Buffer.alloc(200 * 1024, 7);
    let written = false;
    streams[0]!.write(big, () => (written = true));
    await turns(3);
    assert.equal(written, false, 'a FIFO takes 64 KiB: the rest waits');
    let drained = 0;
    const sink = Buffer.alloc(64 * 1024);
    for (let i = 0; i < 10 && !written; i++) {
      for (;;) {
        try {
          drained += readSync(host, sink);
        } catch {
          break;
        }
      }
      sys.emit(fd, SYS.POLLOUT);
      await turns(3);
    }
    assert.equal(written, true);
    for (;;) {
      try {
        drained += readSync(host, sink);
      } catch {
        break;
      }
    }
    assert.equal(drained, big.length);
  });

  void it('with the real addon, a paused stream resumes at once when read from (no poll slice)', async () => {
    const port = open(realSys());
    let stream: PortStream | undefined;
    void port.serve((s) => (stream = s));
    const total = 512 * 1024;
    const chunk = Buffer.alloc(16 * 1024, 3);
    let sent = 0;
    // Feed until the stream stops reading (its 256 KiB buffer is full) and the FIFO is full too.
    for (let idle = 0; sent < total && idle < 20;) {
      try {
        sent += writeSync(host, chunk, 0, Math.min(chunk.length, total - sent));
        idle = 0;
      } catch {
        idle++;
        await sleep(5);
      }
    }
    assert.ok(stream !== undefined);
    assert.ok(sent < total, 'the port stopped reading: backpressure reached the FIFO');
    let received = 0;
    const started = performance.now();
    stream.on('data', (data: Buffer) => (received += data.length));
    while (sent < total || received < total) {
      try {
        if (sent < total) sent += writeSync(host, chunk, 0, Math.min(chunk.length, total - sent));
      } catch {
        // full: the port is still catching up
      }
      await turn();
      assert.ok(performance.now() - started < 5000, `stalled at ${received} of ${total} bytes`);
    }
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 250, `resumed and drained in ${elapsed.toFixed(0)} ms, as fast as bytes move`);
  });
});
