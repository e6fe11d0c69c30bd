/**
 * The real thing: the boot image under QEMU (TCG), the agent binary as PID 1, the busybox root filesystem.
 * Boots are slow here, so each one carries many assertions.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { STREAM_STDERR, STREAM_STDOUT } from '../../protocol/src/logs/log-frame.ts';
import { ChannelClient } from '../../hostside/src/channel/client.ts';
import { resyncClient } from '../../hostside/src/channel/resync.ts';
import { decodeLogBytes } from '../../hostside/src/vm/log-file.ts';
import { collect, run } from '../helpers/dev-agent.ts';
import { REPO, need } from '../helpers/prerequisites.ts';
import { BUSYBOX_TAR, bootTestVm, vmPrerequisites, type TestVm } from '../helpers/vm.ts';

const LINES = 3000;
const expectedStdout = Array.from({ length: LINES }, (_, i) => `line-${i}\n`).join('');

describe('a container VM: the agent as PID 1', { timeout: 300_000 }, () => {
  let box: TestVm | undefined;
  let client: ChannelClient;

  before(async (t) => {
    if (!need(t as never, vmPrerequisites())) return;
    box = await bootTestVm({
      process: {
        argv: [
          '/bin/sh',
          '-c',
          `i=0; while [ $i -lt ${LINES} ]; do echo "line-$i"; i=$((i+1)); done; echo err-line >&2; exec sleep 3600`,
        ],
      },
    });
    client = await box.connect();
  });
  after(async () => box?.dispose());

  it('reports every boot stage on the console, in order', async (t) => {
    if (!box) return t.skip('no VM');
    await box.waitForRecord((r) => r.stage === 'process-started');
    const stages = box.statusRecords().map((r) => `${r.stage} ${r.outcome}`);
    assert.deepEqual(stages.slice(0, 11), [
      'kernel ok',
      'agent ok',
      'modules ok',
      'config ok',
      'network ok',
      'root-disk ok',
      'volumes skipped',
      'storage ok',
      'isolation ok',
      'channel ok',
      'process-started ok',
    ]);
    const times = box.statusRecords().map((r) => r.atMs);
    assert.deepEqual(
      [...times].sort((a, b) => a - b),
      times,
      'timestamps since kernel start only grow',
    );
  });

  it('runs exec sessions in the running VM with Docker exit codes', async (t) => {
    if (!box) return t.skip('no VM');
    assert.equal((await run(client, ['true'])).exitCode, 0);
    assert.equal((await run(client, ['sh', '-c', 'exit 7'])).exitCode, 7);
    const missing = await run(client, ['no-such-command']);
    assert.equal(missing.exitCode, 127);
    assert.match(missing.stderr, /no-such-command/);
    const killed = await run(client, ['sh', '-c', 'kill -KILL $$']);
    assert.equal(killed.exitCode, 137);
    assert.equal(killed.signal, 'SIGKILL');
    const io = await run(client, ['sh', '-c', 'cat; echo to-err >&2; uname -r'], { stdin: 'from stdin\n' });
    assert.equal(io.stderr, 'to-err\n');
    assert.match(io.stdout, /^from stdin\n6\.1\.\d+-\d+-cloud-amd64\n$/);
  });

  it('gives a tty session a terminal and resizes it', async (t) => {
    if (!box) return t.skip('no VM');
    const handle = await client.exec({
      argv: ['sh', '-c', 'stty size; read line; stty size'],
      stdin: true,
      tty: { cols: 91, rows: 17 },
    });
    const output = collect(handle.stdout);
    await sleep(1000);
    handle.resize({ cols: 120, rows: 40 });
    await sleep(500);
    handle.stdin.write('go\r');
    const exit = await handle.exit;
    const text = await output;
    assert.match(text, /17 91/);
    assert.match(text, /40 120/);
    assert.equal(exit?.exitCode, 0);
  });

  it('shows the container its own root and no agent files', async (t) => {
    if (!box) return t.skip('no VM');
    const result = await run(client, [
      'sh',
      '-c',
      'ls -a /; echo ---; cat /proc/mounts; echo ---; hostname; cat /etc/resolv.conf',
    ]);
    const [listing, mounts, names] = result.stdout.split('---\n') as [string, string, string];
    assert.deepEqual(
      listing.split('\n').filter((entry) => /tether|runtime/.test(entry)),
      [],
      `agent files visible in /: ${listing}`,
    );
    assert.doesNotMatch(mounts, /runtime|tether|\/mnt\//, 'no agent mounts are visible');
    assert.match(mounts, /^\/dev\/vd[a-z] \/ ext4 rw/m, 'the root disk is /');
    assert.match(names, /^e2e\n/);
    assert.match(names, /nameserver 10\.0\.2\.3/);
    assert.equal((await run(client, ['sh', '-c', 'test -e /tether || test -e /tether-exec'])).exitCode, 1);
  });

  it('reaps 200 orphaned grandchildren: no zombie is left', async (t) => {
    if (!box) return t.skip('no VM');
    // PID 1 here is the container's init (the exec joins the container's PID namespace): it reaps them.
    // Each sleep outlives the loop that starts them all, which takes seconds under TCG.
    const orphansOfInit = 'grep -l "^PPid:[[:space:]]*1$" /proc/[0-9]*/status 2>/dev/null | wc -l';
    const spawned = await run(client, [
      'sh',
      '-c',
      `i=0; while [ $i -lt 200 ]; do (sleep 8 &); i=$((i+1)); done; ${orphansOfInit}`,
    ]);
    assert.ok(Number(spawned.stdout.trim()) >= 200, `orphans re-parented to PID 1: ${spawned.stdout}`);
    await sleep(11_000);
    const zombies = await run(client, [
      'sh',
      '-c',
      `cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == "Z"' | wc -l; ${orphansOfInit}`,
    ]);
    const [zombieCount, stillOrphans] = zombies.stdout.trim().split('\n').map(Number);
    assert.equal(zombieCount, 0, 'no zombies');
    assert.ok(
      stillOrphans! <= 2,
      `only the main process (and this shell) remain children of PID 1: ${stillOrphans}`,
    );
  });

  it('keeps the main process output for attach and writes every byte to the log file on the host', async (t) => {
    if (!box) return t.skip('no VM');
    const received: Buffer[] = [];
    const handle = await client.attach(
      { from: 'start', stdin: false },
      { onFrame: (frame) => frame.stream === STREAM_STDOUT && received.push(frame.data) },
    );
    assert.equal(handle.result.running, true);
    const deadline = Date.now() + 60_000;
    while (Buffer.concat(received).length < expectedStdout.length && Date.now() < deadline) await sleep(200);
    handle.detach();
    assert.equal(Buffer.concat(received).toString(), expectedStdout);

    let frames = decodeLogBytes(readFileSync(box.vm.logPortPath));
    while (frames.filter((f) => f.stream === STREAM_STDERR).length === 0 && Date.now() < deadline) {
      await sleep(200);
      frames = decodeLogBytes(readFileSync(box.vm.logPortPath));
    }
    const text = (stream: number): string =>
      Buffer.concat(frames.filter((f) => f.stream === stream).map((f) => f.data)).toString();
    assert.equal(text(STREAM_STDOUT), expectedStdout);
    assert.equal(text(STREAM_STDERR), 'err-line\n');
  });

  it('after dropping a handshake that stalled past its deadline, serves the next one on the same connection', async (t) => {
    if (!box) return t.skip('no VM');
    client.close();
    // A fresh connection once the old one is gone (QEMU takes one host connection at a time).
    let stream: Duplex | undefined;
    for (let attempt = 0; !stream; attempt++) {
      const candidate = await box.vm.openChannel();
      try {
        await resyncClient(candidate, { retryMs: 500, timeoutMs: 5_000 });
        stream = candidate;
      } catch (error) {
        candidate.destroy();
        if (attempt === 10) throw error;
        await sleep(1000);
      }
    }
    // The resync completed, then no SSH identification comes: the agent ends its side after 10 s. The
    // host never hangs up, so no POLLHUP tells the agent; the next bytes on the port must still be served.
    await sleep(12_000);
    try {
      client = await ChannelClient.connect(stream, box.credentials, { timeoutMs: 30_000, retryMs: 500 });
    } catch (error) {
      const agentLines = box
        .consoleText()
        .split('\n')
        .filter((line) => /channel|tether/.test(line));
      throw new Error(
        `${(error as Error).message}\nthe agent's channel lines:\n${agentLines.slice(-15).join('\n')}`,
      );
    }
    const result = await run(client, ['echo', 'served again']);
    assert.deepEqual([result.exitCode, result.stdout], [0, 'served again\n']);
    assert.match(box.consoleText(), /no SSH identification within 10000 ms|no handshake within 10000 ms/);
  });

  it('stops gracefully on a power-down request: stop signal, exit recorded, VM off', async (t) => {
    if (!box) return t.skip('no VM');
    client.close();
    const exit = await box.vm.stop(60_000);
    assert.equal(exit.reason, 'guest-shutdown');
    const exited = box.statusRecords().find((r) => r.stage === 'process-exited');
    assert.equal(exited?.exitCode, 143);
    assert.equal(exited?.signal, 'SIGTERM');
    assert.equal(box.statusRecords().at(-1)?.stage, 'shutdown');
  });
});

describe('a bad config', { timeout: 200_000 }, () => {
  let box: TestVm | undefined;
  before(async (t) => {
    if (!need(t as never, vmPrerequisites())) return;
    box = await bootTestVm(Buffer.from(JSON.stringify({ version: 1, id: 'bad', process: { argv: 42 } })));
  });
  after(async () => box?.dispose());

  it('is reported with the field and what was expected, and the agent stays up', async (t) => {
    if (!box) return t.skip('no VM');
    const record = await box.waitForRecord((r) => r.stage === 'config');
    assert.equal(record.outcome, 'failed');
    assert.match(record.detail ?? '', /process\.argv: expected a non-empty array, got number 42/);
    await sleep(3000);
    assert.equal((await box.vm.inspect()).running, true, 'the VM is still up: PID 1 did not exit');
    assert.doesNotMatch(box.consoleText(), /Kernel panic/);
  });
});

describe('tetherctl vm run', { timeout: 300_000 }, () => {
  it('boots a VM from a rootfs tarball, passes stdin, prints the guest kernel and exits with the code', async (t) => {
    if (!need(t, vmPrerequisites())) return;
    const child = spawn(
      join(REPO, 'bin/tetherctl'),
      ['vm', 'run', '-i', '--timeline', '--rootfs', BUSYBOX_TAR, '--', 'sh', '-c', 'uname -a; cat; exit 7'],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    child.stdin.end('from-stdin\n');
    const [stdout, stderr, code] = await Promise.all([
      collect(child.stdout),
      collect(child.stderr),
      new Promise<number | null>((resolve) => child.on('exit', resolve)),
    ]);
    assert.equal(code, 7, `stderr: ${stderr}`);
    assert.match(stdout, /^Linux \S+ 6\.1\.\d+-\d+-cloud-amd64 .* x86_64 GNU\/Linux\nfrom-stdin\n$/);
    assert.match(stderr, /process-started/);
  });
});
