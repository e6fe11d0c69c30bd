/**
 * tetherd's attach multiplexer with the dev driver: many clients on one container's output, a client that
 * stops reading is cut loose without costing the others (or the container) anything, logs=1 replay, stdin
 * from one client, detach keys given in the query, and the WebSocket attach.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it, type TestContext } from 'node:test';
import { WebSocket } from 'ws';
import { demux, eventually, numberedLines, rawAttach, type RawAttach } from '../helpers/docker-streams.ts';
import { need } from '../helpers/prerequisites.ts';
import {
  BUSYBOX_IMAGE,
  startTetherdWithBusybox,
  tetherdPrerequisites,
  type Tetherd,
} from '../helpers/tetherd.ts';

const IMG = BUSYBOX_IMAGE;
const OUT = 'stream=1&stdout=1&stderr=1';

interface CliRun {
  code: Promise<number | null>;
  stdout: () => string;
}

describe('tetherd (dev driver): the attach multiplexer', () => {
  let d: Tetherd | undefined;
  const ready = (t: TestContext): Tetherd | undefined => (need(t, tetherdPrerequisites()) ? d : undefined);
  const ok = async (args: string[]): Promise<string> => {
    const result = await d!.docker(args);
    assert.equal(result.code, 0, `docker ${args.join(' ')}: ${result.stderr}`);
    return result.stdout.trim();
  };
  /** A long-running docker CLI process (attach), read as it goes. */
  const dockerCli = (args: string[]): CliRun => {
    const child = spawn('docker', ['-H', d!.host, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.resume();
    return {
      code: new Promise((resolve) => child.once('exit', (code) => resolve(code))),
      stdout: () => stdout,
    };
  };
  const attachLogLines = (id: string): number =>
    d!
      .logs()
      .split('\n')
      .filter((line) => line.includes('"msg":"attach"') && line.includes(id)).length;

  before(async () => {
    if (Object.values(tetherdPrerequisites()).includes(false)) return;
    d = await startTetherdWithBusybox({ driver: 'dev' });
  });
  after(async () => d?.dispose());

  it('64 clients attached at once all get the same, complete output', async (t) => {
    if (!ready(t)) return;
    // The container waits for a line on stdin, so every client is attached before it writes.
    const id = await ok(['run', '-d', '-i', IMG, 'sh', '-c', 'read go; seq 1 2000; echo done >&2']);
    const raw: RawAttach[] = [];
    for (let i = 0; i < 60; i++) raw.push(await rawAttach(d!.socket, id, OUT));
    for (const client of raw) assert.match(client.head, /^HTTP\/1\.1 101 /);
    const clis = Array.from({ length: 4 }, () => dockerCli(['attach', '--no-stdin', id]));
    // The CLI prints nothing until output comes: its attach is attached once tetherd has logged it.
    await eventually('the 4 CLI attaches', () => attachLogLines(id) >= 64, 20_000);

    const trigger = await rawAttach(d!.socket, id, 'stdin=1&stream=1');
    trigger.socket.write('go\n');
    await Promise.all([...raw.map((client) => client.ended), trigger.ended]);
    const expected = numberedLines(1, 2000);
    for (const [i, client] of raw.entries()) {
      const got = demux(client.received());
      assert.equal(got.rest, 0, `client ${i}: whole frames`);
      assert.equal(got.stdout, expected, `client ${i} stdout`);
      assert.equal(got.stderr, 'done\n', `client ${i} stderr`);
    }
    for (const [i, cli] of clis.entries()) {
      assert.equal(await cli.code, 0, `docker attach ${i} exits with the container's code`);
      assert.equal(cli.stdout(), expected, `docker attach ${i}`);
    }
    await ok(['rm', id]);
  });

  it('a client that stops reading is cut loose after 10 s; the container is never held up, the others not for long', async (t) => {
    if (!ready(t)) return;
    const lines = 1_500_000; // about 11 MiB
    const id = await ok(['run', '-d', '-i', IMG, 'sh', '-c', `read go; seq 1 ${lines}`]);
    const stalled = await rawAttach(d!.socket, id, OUT, { read: false });
    const reader = await rawAttach(d!.socket, id, OUT);
    const trigger = await rawAttach(d!.socket, id, 'stdin=1&stream=1');
    const t0 = Date.now();
    trigger.socket.write('go\n');
    assert.equal(await ok(['wait', id]), '0');
    const took = Date.now() - t0;
    assert.ok(took < 20_000, `the container took ${took} ms to write 11 MiB with a stalled client attached`);
    await reader.ended;

    const expected = numberedLines(1, lines);
    const got = demux(reader.received());
    assert.equal(got.stdout.length, expected.length, 'the reading client got every byte');
    assert.ok(got.stdout === expected, 'the reading client got the bytes in order');
    const logs = await d!.docker(['logs', id]);
    assert.equal(logs.stdout.length, expected.length, 'docker logs has every byte');
    assert.ok(logs.stdout === expected, 'docker logs has the bytes in order');

    assert.match(d!.logs(), /attach client stopped reading: cut loose/);
    // Now read what the stalled client was given: a prefix, then the end of the stream (not a hang).
    stalled.socket.resume();
    await stalled.ended;
    const partial = demux(stalled.received());
    assert.ok(
      partial.stdout.length < expected.length,
      `the stalled client got ${partial.stdout.length} bytes`,
    );
    assert.ok(
      expected.startsWith(partial.stdout),
      'what it got is a prefix of the output, not a corrupted mix',
    );
    await ok(['rm', id]);
  });

  it('logs=1 replays earlier output before the live stream; logs=1 alone just replays', async (t) => {
    if (!ready(t)) return;
    const id = await ok([
      'run',
      '-d',
      '-i',
      IMG,
      'sh',
      '-c',
      'echo early1; echo early2 >&2; read x; echo "late $x"',
    ]);
    await eventually('the early output', async () => (await d!.docker(['logs', id])).stderr === 'early2\n');

    const replayOnly = await rawAttach(d!.socket, id, 'logs=1&stdout=1&stderr=1');
    await replayOnly.ended;
    assert.deepEqual(demux(replayOnly.received()), { stdout: 'early1\n', stderr: 'early2\n', rest: 0 });

    const both = await rawAttach(d!.socket, id, `logs=1&stdin=1&${OUT}`);
    await eventually('the replay', () => demux(both.received()).stderr === 'early2\n');
    both.socket.write('now\n');
    await both.ended;
    assert.deepEqual(demux(both.received()), { stdout: 'early1\nlate now\n', stderr: 'early2\n', rest: 0 });

    const onlyOut = await rawAttach(d!.socket, id, 'logs=1&stdout=1');
    await onlyOut.ended;
    assert.deepEqual(demux(onlyOut.received()), { stdout: 'early1\nlate now\n', stderr: '', rest: 0 });
    await ok(['rm', id]);
  });

  it('stdin from one client reaches the container; its output reaches the others (raw and the CLI)', async (t) => {
    if (!ready(t)) return;
    const script = 'while read l; do echo "got $l"; [ "$l" = quit ] && exit 3; done';
    const id = await ok(['run', '-d', '-i', IMG, 'sh', '-c', script]);
    const watcher = await rawAttach(d!.socket, id, OUT);
    const cli = dockerCli(['attach', '--no-stdin', id]);
    await eventually('the CLI attach', () => attachLogLines(id) >= 2, 20_000);
    const writer = await rawAttach(d!.socket, id, 'stdin=1&stream=1');
    writer.socket.write('hello\n');
    await eventually('the echo', () => demux(watcher.received()).stdout === 'got hello\n');
    writer.socket.write('quit\n');
    await watcher.ended;
    assert.deepEqual(demux(watcher.received()), { stdout: 'got hello\ngot quit\n', stderr: '', rest: 0 });
    assert.equal(await cli.code, 3, 'docker attach exits with the container’s code');
    assert.equal(cli.stdout(), 'got hello\ngot quit\n');
    assert.deepEqual(demux(writer.received()), { stdout: '', stderr: '', rest: 0 }, 'it asked for no output');
    await ok(['rm', id]);
  });

  it('detachKeys=ctrl-x: 0x18 closes that client only; the container keeps running', async (t) => {
    if (!ready(t)) return;
    const id = await ok(['run', '-d', '-i', IMG, 'cat']);
    const client = await rawAttach(d!.socket, id, `stdin=1&${OUT}&detachKeys=ctrl-x`);
    const other = await rawAttach(d!.socket, id, OUT);
    client.socket.write('before\n');
    await eventually('the echo', () => demux(client.received()).stdout === 'before\n');
    client.socket.write(Buffer.from([0x18]));
    await client.ended;
    assert.equal(await ok(['inspect', '-f', '{{.State.Status}}', id]), 'running');

    const again = await rawAttach(d!.socket, id, `stdin=1&${OUT}`);
    again.socket.write('after\n');
    await eventually('the echo after the detach', () => demux(other.received()).stdout === 'before\nafter\n');
    assert.equal(demux(client.received()).stdout, 'before\n', 'the detached client got nothing more');
    const badKeys = await d!.http(
      'POST',
      `/v1.47/containers/${id}/attach?stdin=1&stream=1&detachKeys=nonsense`,
    );
    assert.equal(badKeys.status, 400, 'a bad detach key sequence is refused before hijacking');
    await ok(['rm', '-f', id]);
    await Promise.all([again.ended, other.ended]);
  });

  it('attach/ws carries input and output as WebSocket messages', async (t) => {
    if (!ready(t)) return;
    const id = await ok([
      'run',
      '-d',
      '-i',
      IMG,
      'sh',
      '-c',
      'while read l; do echo "ws:$l"; echo "err:$l" >&2; done',
    ]);
    const ws = new WebSocket(`ws+unix://${d!.socket}:/v1.47/containers/${id}/attach/ws?stdin=1&${OUT}`);
    let received = '';
    ws.on('message', (data: Buffer) => (received += data.toString()));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.send(Buffer.from('one\n'));
    ws.send('two\n');
    await eventually('the WebSocket output', () =>
      received.includes('ws:two\n') && received.includes('err:two\n') ? true : undefined,
    );
    // Output comes raw (no multiplexing headers); both streams are in order per stream.
    assert.equal(received.replace(/err:\w+\n/g, ''), 'ws:one\nws:two\n');
    assert.equal(received.replace(/ws:\w+\n/g, ''), 'err:one\nerr:two\n');
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    await ok(['kill', id]);
    assert.equal(await closed, 1000, 'the daemon closes the WebSocket cleanly when the container ends');
    await ok(['rm', id]);
  });
});
