/** attach@tether against a real `tether --dev`: many clients, detach, resume from offsets, backpressure. */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { STREAM_STDERR, STREAM_STDOUT, type LogFrame } from '../../protocol/src/logs/log-frame.ts';
import type { AttachHandle, ChannelClient } from '../../hostside/src/channel/client.ts';
import { startDevAgent, type DevAgent } from '../helpers/dev-agent.ts';

interface Attached {
  handle: AttachHandle;
  frames: LogFrame[];
  text(stream?: number): string;
}

async function attach(
  client: ChannelClient,
  from: 'start' | 'end' | number,
  stdin = false,
): Promise<Attached> {
  const frames: LogFrame[] = [];
  const handle = await client.attach({ from, stdin }, { onFrame: (frame) => frames.push(frame) });
  return {
    handle,
    frames,
    text: (stream = STREAM_STDOUT) =>
      Buffer.concat(frames.filter((f) => f.stream === stream).map((f) => f.data)).toString(),
  };
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe('attach to the main process', () => {
  const agents: DevAgent[] = [];
  after(async () => {
    for (const agent of agents) await agent.stop();
  });

  it('keeps output produced while nobody is attached, pausing the process rather than dropping a byte', async () => {
    // 64 KiB of log for 1.3 MB of output: the process must wait for a reader.
    const agent = await startDevAgent({ args: ['--buffer-bytes', '65536'], command: ['seq', '1', '200000'] });
    agents.push(agent);
    await sleep(500);
    const client = await agent.connect();
    const attached = await attach(client, 'start');
    const exit = await attached.handle.exit;
    const expected = Array.from({ length: 200000 }, (_, i) => `${i + 1}\n`).join('');
    assert.equal(attached.text().length, expected.length);
    assert.equal(attached.text(), expected);
    assert.equal(exit?.exitCode, 0);
    client.close();
  });

  it('attach from the end to a process paused on a full log gets new output, and the process goes on', async () => {
    // Nobody reads: `yes` fills the 16 MiB log within a second, then waits in write(). A client that
    // attaches from the end wants none of those bytes, so they may go: new output must reach it.
    const agent = await startDevAgent({ command: ['yes'] });
    agents.push(agent);
    const client = await agent.connect();
    let kept = 0;
    for (let i = 0; i < 100 && kept <= 16 * 1024 * 1024; i++) {
      await sleep(50);
      const probe = await client.attach({ from: 'end', stdin: false, output: false });
      kept = probe.result.offset - probe.result.oldest;
      probe.detach();
    }
    assert.ok(kept > 16 * 1024 * 1024, `the log holds ${kept} unread bytes`);
    let received = 0;
    const handle = await client.attach(
      { from: 'end', stdin: false },
      { onFrame: (frame) => (received += frame.data.length) },
    );
    const start = handle.result.offset;
    await until('output after attaching from the end', () => received > 0, 5000);
    // More than the whole log's worth: the process runs at the pace of this client, not once per slice.
    await until('32 MiB of new output', () => received >= 32 * 1024 * 1024, 15_000);
    assert.equal(handle.offset, start + received, 'every byte from the attach offset on, none skipped');
    handle.detach();
    client.close();
  });

  it('serves several clients at once, survives a detach, resumes from an offset, and reports the exit', async () => {
    const config = join(mkdtempSync(join(tmpdir(), 'tether-cfg-')), 'config.json');
    writeFileSync(
      config,
      JSON.stringify({ version: 1, id: 'attach', process: { argv: ['true'], openStdin: true } }),
    );
    // The config opens the main process's stdin (docker run -i); `-- CMD` sets its argv.
    const agent = await startDevAgent({
      args: ['--config', config],
      command: [
        'sh',
        '-c',
        'echo ready; read a; echo "A:$a"; echo "err:$a" >&2; read b; echo "B:$b"; exit 3',
      ],
    });
    agents.push(agent);
    const client = await agent.connect();
    const typist = await attach(client, 'start', true);
    const watcher = await attach(client, 'start');
    await until('ready', () => watcher.text() === 'ready\n');
    typist.handle.stdin.write('one\n');
    await until('A:one on both', () => typist.text().includes('A:one') && watcher.text().includes('A:one'));
    await until('stderr frame', () => watcher.text(STREAM_STDERR) === 'err:one\n');
    assert.equal(watcher.text(), 'ready\nA:one\n');

    const afterA = typist.handle.offset;
    typist.handle.detach();
    assert.equal(await typist.handle.exit, undefined, 'a detached client gets no exit');
    await sleep(200);

    const late = await attach(client, 'end', true);
    assert.equal(late.handle.result.running, true, 'the process kept running after the detach');
    late.handle.stdin.write('two\n');
    const [lateExit, watcherExit] = await Promise.all([late.handle.exit, watcher.handle.exit]);
    assert.equal(late.text(), 'B:two\n', "'end' gets only output produced after attaching");
    assert.equal(watcher.text(), 'ready\nA:one\nB:two\n');
    assert.equal(lateExit?.exitCode, 3);
    assert.equal(watcherExit?.exitCode, 3);

    const resumed = await attach(client, afterA);
    await resumed.handle.exit;
    assert.equal(resumed.handle.result.running, false);
    assert.equal(resumed.text(), 'B:two\n', 'resuming from an offset gives exactly the bytes after it');
    assert.equal(resumed.handle.offset, watcher.handle.offset);
    client.close();
  });

  it('without output: no frames, never a reader that lets output go, but stdin, signals and the exit', async () => {
    const config = join(mkdtempSync(join(tmpdir(), 'tether-cfg-')), 'config.json');
    writeFileSync(
      config,
      JSON.stringify({ version: 1, id: 'quiet', process: { argv: ['true'], openStdin: true } }),
    );
    // 1.3 MB of output against 64 KiB kept: the process can only finish if some reader takes the output.
    const agent = await startDevAgent({
      args: ['--config', config, '--buffer-bytes', '65536'],
      command: ['sh', '-c', 'read n; seq 1 200000; exit "$n"'],
    });
    agents.push(agent);
    const client = await agent.connect();
    let frames = 0;
    const quiet = await client.attach(
      { from: 'start', stdin: true, output: false },
      { onFrame: () => frames++ },
    );
    quiet.stdin.write('5\n');
    await sleep(1000);
    // Nothing took the output yet: it is all still there for a client with output, from byte 0.
    const reader = await attach(client, 'start');
    assert.equal(reader.handle.result.oldest, 0, 'the output-less client let no byte be evicted');
    const [quietExit, readerExit] = await Promise.all([quiet.exit, reader.handle.exit]);
    assert.equal(frames, 0, 'no log frame on an output-less channel');
    assert.equal(quietExit?.exitCode, 5, 'the exit status still comes');
    assert.equal(readerExit?.exitCode, 5);
    const expected = Array.from({ length: 200000 }, (_, i) => `${i + 1}\n`).join('');
    assert.equal(reader.text(), expected);

    // A signal through an output-less channel reaches the process.
    const agent2 = await startDevAgent({ command: ['sleep', '30'] });
    agents.push(agent2);
    const client2 = await agent2.connect();
    const quiet2 = await client2.attach({ from: 'end', stdin: false, output: false });
    quiet2.signal('TERM');
    assert.deepEqual(await quiet2.exit, { exitCode: 143, signal: 'SIGTERM' });
    client.close();
    client2.close();
  });

  it('refuses attach when there is no main process, and says to use exec', async () => {
    const agent = await startDevAgent();
    agents.push(agent);
    const client = await agent.connect();
    await assert.rejects(client.attach({ from: 'start', stdin: false }, { onFrame: () => {} }), {
      code: 'TETHER_NO_MAIN_PROCESS',
      message: /use exec/,
    });
    assert.equal((await client.exec({ argv: ['true'], stdin: false }).then((h) => h.exit))?.exitCode, 0);
    client.close();
  });
});
