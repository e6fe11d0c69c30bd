/**
 * Peers that misbehave against a real `tether --dev` cost it bounded memory and no liveness: a client
 * that grants a huge SSH window and then stops reading, a request the kernel refuses to spawn, a request
 * channel that never sends its parameters, a client that walks away from a running exec, and an agent
 * stopped while execs run. Each time another client is still served, and no process is left behind.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClientChannel } from 'ssh2';
import { ChannelClient } from '../../hostside/src/channel/client.ts';
import { FirstFrameReader } from '../../protocol/src/framing/length-prefixed.ts';
import {
  archiveGetRequest,
  attachRequest,
  decodeReply,
  encodeParams,
  execRequest,
  type Reply,
  type RequestType,
} from '../../protocol/src/requests/requests.ts';
import { run, startDevAgent, type DevAgent } from '../helpers/dev-agent.ts';

const MiB = 1024 * 1024;
/** What a peer that stops reading may cost the agent, whatever it was sent meanwhile. */
const RSS_BOUND_BYTES = 64 * MiB;

function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(match, `no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** True while `pid` exists and is not a zombie. */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function until(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** A client whose socket the test controls, to stop reading it. */
async function connectRaw(agent: DevAgent): Promise<{ client: ChannelClient; socket: Socket }> {
  const socket = await agent.rawSocket();
  const client = await ChannelClient.connect(socket, {
    privateKey: readFileSync(`${agent.state}/id_client`, 'utf8'),
    hostPublicKey: readFileSync(`${agent.state}/ssh_host_key.pub`, 'utf8'),
  });
  return { client, socket };
}

/**
 * Grants the agent nearly 4 GiB of window on `channel` (RFC 4254 §5.2: a window may reach 2^32-1), as a
 * client would that claims to take everything, without reading any of it.
 */
function grantHugeWindow(client: ChannelClient, channel: ClientChannel): void {
  const ssh = client.connection as unknown as {
    _protocol: { channelWindowAdjust(recipient: number, amount: number): void };
  };
  const remote = (channel as unknown as { outgoing: { id: number } }).outgoing.id;
  ssh._protocol.channelWindowAdjust(remote, 2 ** 32 - 1 - 4 * MiB);
}

/** Opens a subsystem channel, sends `params` (when given), and resolves with the channel and its reply. */
function request<P, R>(
  client: ChannelClient,
  type: RequestType<P, R>,
  params: Buffer | undefined,
): Promise<{ channel: ClientChannel; reply: Promise<Reply<R>>; closed: Promise<void> }> {
  return new Promise((resolve, reject) =>
    client.connection.subsys(type.subsystem, (error, channel) => {
      if (error) return reject(error);
      const reader = new FirstFrameReader(64 * 1024);
      const reply = new Promise<Reply<R>>((done, fail) => {
        const onData = (chunk: Buffer): void => {
          const first = reader.push(chunk);
          if (!first) return;
          channel.off('data', onData);
          done(decodeReply(type, first.body));
        };
        channel.on('data', onData);
        channel.once('close', () => fail(new Error(`${type.subsystem}: closed without a reply`)));
      });
      reply.catch(() => {});
      const closed = new Promise<void>((done) => channel.once('close', () => done()));
      if (params) channel.write(params);
      resolve({ channel, reply, closed });
    }),
  );
}

/** How long a plain `true` takes over `client`, which must succeed. */
async function execLatencyMs(client: ChannelClient): Promise<number> {
  const started = performance.now();
  const result = await run(client, ['true']);
  assert.equal(result.exitCode, 0);
  return performance.now() - started;
}

describe('a client that grants a huge window and stops reading costs bounded memory', () => {
  let agent: DevAgent;
  let good: ChannelClient;
  before(async () => {
    // The main process writes as fast as it can; a 4 MiB log pauses it while nobody takes its output.
    agent = await startDevAgent({ args: ['--buffer-bytes', String(4 * MiB)], command: ['yes'] });
    good = await agent.connect();
  });
  after(async () => {
    good.close();
    await agent.stop();
  });

  for (const kind of ['exec of yes', 'attach to a main process that writes fast'] as const) {
    it(kind, async () => {
      const pid = agent.process.pid!;
      const { client, socket } = await connectRaw(agent);
      const { channel, reply } =
        kind === 'exec of yes'
          ? await request(client, execRequest, encodeParams(execRequest, { argv: ['yes'], stdin: false }))
          : await request(
              client,
              attachRequest,
              encodeParams(attachRequest, { from: 'start', stdin: false }),
            );
      assert.ok('ok' in (await reply), 'the request is accepted');
      grantHugeWindow(client, channel);
      socket.pause();
      const before = rssBytes(pid);
      await sleep(3000);
      const grown = rssBytes(pid) - before;
      const latency = await execLatencyMs(good);
      console.log(
        `${kind}: RSS grew by ${(grown / MiB).toFixed(1)} MiB in 3 s; exec of true ${latency.toFixed(0)} ms`,
      );
      assert.ok(grown < RSS_BOUND_BYTES, `RSS grew by ${(grown / MiB).toFixed(1)} MiB in 3 s`);
      assert.ok(latency < 2000, `another client's exec took ${latency.toFixed(0)} ms`);
      socket.destroy();
    });
  }
});

describe('docker cp of a big file to a client that stops reading costs bounded memory', () => {
  let agent: DevAgent;
  let good: ChannelClient;
  let root: string;
  before(async () => {
    // 200 MiB of zeros that take no disk: a sparse file in the agent's --rootfs.
    root = mkdtempSync(join(tmpdir(), 'tether-rootfs-'));
    writeFileSync(join(root, 'big'), '');
    truncateSync(join(root, 'big'), 200 * MiB);
    agent = await startDevAgent({ args: ['--rootfs', root], command: ['sleep', '600'] });
    good = await agent.connect();
  });
  after(async () => {
    good.close();
    await agent.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it('archive-get of a 200 MiB file', async () => {
    const pid = agent.process.pid!;
    const { client, socket } = await connectRaw(agent);
    const before = rssBytes(pid);
    const { channel, reply } = await request(
      client,
      archiveGetRequest,
      encodeParams(archiveGetRequest, { path: '/big' }),
    );
    assert.ok('ok' in (await reply), 'the request is accepted');
    grantHugeWindow(client, channel);
    socket.pause();
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 25);
    await sleep(3000);
    clearInterval(sampler);
    const grown = peak - before;
    const latency = await execLatencyMs(good);
    console.log(
      `archive-get: RSS grew by ${(grown / MiB).toFixed(1)} MiB at most in 3 s; exec of true ${latency.toFixed(0)} ms`,
    );
    assert.ok(grown < RSS_BOUND_BYTES, `RSS grew by ${(grown / MiB).toFixed(1)} MiB in 3 s`);
    assert.ok(latency < 2000, `another client's exec took ${latency.toFixed(0)} ms`);
    // Once the client reads again, the copy goes on where it stopped and ends whole.
    let received = 0;
    channel.on('data', (chunk: Buffer) => (received += chunk.length));
    const status = new Promise<number | undefined>((resolve) =>
      channel.once('exit', (code: number | null) => resolve(code ?? undefined)),
    );
    const closed = new Promise((resolve) => channel.once('close', resolve));
    socket.resume();
    assert.equal(await status, 0);
    await closed;
    assert.ok(received > 200 * MiB, `the tar stream is whole (${received} bytes)`);
    socket.destroy();
  });
});

describe('requests that cannot run, or never arrive', () => {
  let agent: DevAgent;
  let good: ChannelClient;
  const saved = process.env['TETHER_REQUEST_TIMEOUT_MS'];
  before(async () => {
    process.env['TETHER_REQUEST_TIMEOUT_MS'] = '500';
    agent = await startDevAgent({ command: ['sleep', '60'] });
    if (saved === undefined) delete process.env['TETHER_REQUEST_TIMEOUT_MS'];
    else process.env['TETHER_REQUEST_TIMEOUT_MS'] = saved;
    good = await agent.connect();
  });
  after(async () => {
    good.close();
    await agent.stop();
  });

  // 3 MiB of environment in SSH env requests (RFC 4254 §6.4), 32 KiB each: more than execve takes.
  const bigEnv: Record<string, string> = {};
  for (let i = 0; i < 96; i++) bigEnv[`BIG${i}`] = 'x'.repeat(32 * 1024);
  const execWithEnv = (
    client: ChannelClient,
    pty: boolean,
  ): Promise<{ code: number | undefined; output: string }> =>
    new Promise((resolve, reject) =>
      client.connection.exec('true', { env: bigEnv, pty }, (error, channel) => {
        if (error) return reject(error);
        let output = '';
        let code: number | undefined;
        channel.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
        channel.on('data', (chunk: Buffer) => (output += chunk.toString()));
        channel.on('exit', (exitCode: number | null) => (code = exitCode ?? undefined));
        channel.on('close', () => resolve({ code, output }));
      }),
    );

  it('an exec whose environment is larger than the kernel takes (E2BIG) fails with a reason', async () => {
    const client = await agent.connect();
    const piped = await execWithEnv(client, false);
    assert.equal(piped.code, 126, `output: ${piped.output}`);
    assert.match(piped.output, /E2BIG.*more than the kernel takes/);
    // With a terminal, node-pty's child reports the failed execvp itself, in the terminal, with status 1.
    const terminal = await execWithEnv(client, true);
    assert.notEqual(terminal.code, 0);
    assert.match(terminal.output, /Argument list too long/);
    assert.equal(agent.process.exitCode, null, 'the agent is still running');
    await execLatencyMs(client);
    client.close();
    await execLatencyMs(good);
  });

  it('execs that find the agent out of descriptors (EMFILE) fail with a reason; it keeps serving', async () => {
    const pid = agent.process.pid!;
    const soft = spawnSync(
      'prlimit',
      ['--pid', String(pid), '--nofile', '-o', 'SOFT', '--noheadings', '--raw'],
      {
        encoding: 'utf8',
      },
    ).stdout.trim();
    const inUse = readdirSync(`/proc/${pid}/fd`).length;
    // Room for a few execs (two pipes each), not for twenty.
    assert.equal(spawnSync('prlimit', ['--pid', String(pid), `--nofile=${inUse + 12}:`]).status, 0);
    const handles: ClientChannel[] = [];
    const failures: string[] = [];
    try {
      for (let i = 0; i < 20; i++) {
        const { channel, reply } = await request(
          good,
          execRequest,
          encodeParams(execRequest, { argv: ['sleep', '1000'], stdin: false }),
        );
        handles.push(channel);
        const answer = await reply;
        if ('error' in answer) failures.push(`${answer.error.code}: ${answer.error.message}`);
      }
    } finally {
      assert.equal(spawnSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:`]).status, 0);
    }
    assert.equal(agent.process.exitCode, null, 'the agent is still running');
    assert.ok(failures.length > 0, 'some execs ran out of descriptors');
    assert.match(failures[0]!, /^TETHER_SPAWN_FAILED: .*(EMFILE|open files)/);
    for (const channel of handles) channel.close();
    await execLatencyMs(good);
  });

  it(
    'an exec@tether channel that never sends its parameters is closed after the deadline',
    { timeout: 10_000 },
    async () => {
      const started = performance.now();
      const { reply, closed } = await request(good, execRequest, undefined);
      const answer = await reply;
      await closed;
      const waited = performance.now() - started;
      assert.ok('error' in answer, JSON.stringify(answer));
      assert.equal(answer.error.code, 'TETHER_REQUEST_TIMEOUT');
      assert.match(answer.error.message, /parameters/);
      assert.ok(waited >= 400 && waited < 5000, `closed after ${waited.toFixed(0)} ms`);
      await execLatencyMs(good);
    },
  );

  it('a partial parameters frame is closed after the deadline too', { timeout: 10_000 }, async () => {
    const whole = encodeParams(execRequest, { argv: ['true'], stdin: false });
    const { reply, closed } = await request(good, execRequest, whole.subarray(0, whole.length - 2));
    const answer = await reply;
    await closed;
    assert.ok('error' in answer && answer.error.code === 'TETHER_REQUEST_TIMEOUT', JSON.stringify(answer));
    await execLatencyMs(good);
  });
});

describe('processes do not outlive their client or the agent', () => {
  it('an exec whose client closes the channel (no tty) ends: its output pipes are closed', async () => {
    const agent = await startDevAgent({ command: ['sleep', '60'] });
    try {
      const client = await agent.connect();
      const handle = await client.exec({ argv: ['yes'], stdin: false });
      handle.stdout.resume();
      await sleep(300);
      assert.ok(alive(handle.pid), 'yes runs');
      (handle.stdin as unknown as ClientChannel).close();
      await until(`exec pid ${handle.pid} to end`, () => !alive(handle.pid), 3000);
      await execLatencyMs(client);
      client.close();
    } finally {
      await agent.stop();
    }
  });

  it('SIGTERM to a dev agent leaves none of its processes behind', async () => {
    const agent = await startDevAgent({ command: ['sleep', '60'] });
    let pids: number[] = [];
    try {
      const client = await agent.connect();
      const plain = await client.exec({ argv: ['sleep', '1000'], stdin: false });
      // A process that ignores SIGTERM, in a shell whose child sits in the same process group.
      const stubborn = await client.exec({
        argv: ['sh', '-c', "trap '' TERM; sleep 1000 & wait"],
        stdin: true,
        tty: { cols: 80, rows: 24 },
      });
      pids = [plain.pid, stubborn.pid];
      await sleep(300);
      assert.ok(pids.every(alive), 'the execs run');
    } finally {
      await agent.stop();
    }
    // Each exec leads its own session and process group (pgid = pid), grandchildren included.
    await until('every process of the agent to end', () => pids.every((pid) => !groupAlive(pid)), 8000);
  });
});

/** True while any live process belongs to process group `group`. */
function groupAlive(group: number): boolean {
  try {
    process.kill(-group, 0);
  } catch {
    return false;
  }
  // Zombies still count for kill(0): look for a live member.
  for (const entry of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] !== 'Z' && Number(fields[2]) === group) return true;
    } catch {
      // Gone meanwhile.
    }
  }
  return false;
}
