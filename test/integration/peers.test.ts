/**
 * Peers that misbehave before the handshake must cost the agent neither memory nor liveness: a flood of
 * resync SYNs, a crowd of idle connections, and (host side) an agent socket that never answers.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { run, startDevAgent, type DevAgent } from '../helpers/dev-agent.ts';
import { REPO } from '../helpers/prerequisites.ts';

const MiB = 1024 * 1024;

function rssBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(match, `no VmRSS in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/** `count` resync SYNs (`16 'T' 'S' 'Y'` + a random nonce), back to back. */
function syns(count: number): Buffer {
  const out = randomBytes(count * 8);
  for (let at = 0; at < out.length; at += 8) out.set([0x16, 0x54, 0x53, 0x59], at);
  return out;
}

/** Writes SYNs into fresh connections (a new one whenever the agent closes one) until `total` bytes went out. */
async function floodSyns(agent: DevAgent, total: number): Promise<{ sent: number; connections: number }> {
  const chunk = syns(8192); // 64 KiB
  let sent = 0;
  let connections = 0;
  while (sent < total) {
    const socket = await agent.rawSocket();
    connections++;
    let closed = false;
    socket.on('error', () => {}); // EPIPE/ECONNRESET once the agent cuts the flood off
    socket.once('close', () => (closed = true));
    while (sent < total && !closed) {
      sent += chunk.length;
      if (!socket.write(chunk))
        await new Promise<void>((resolve) => {
          socket.once('drain', resolve);
          socket.once('close', resolve);
        });
    }
    socket.destroy();
  }
  return { sent, connections };
}

function openIdle(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.off('error', reject);
      socket.on('error', () => {});
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

describe('a resync SYN flood', () => {
  it('20 MiB of SYNs keep the agent’s memory bounded while another client’s execs keep answering', async () => {
    const agent = await startDevAgent({ command: ['sleep', '600'] });
    const pid = agent.process.pid!;
    try {
      const good = await agent.connect();
      for (let i = 0; i < 3; i++) assert.equal((await run(good, ['true'])).exitCode, 0);
      const baseline = rssBytes(pid);
      let peak = baseline;
      const sampler = setInterval(() => (peak = Math.max(peak, rssBytes(pid))), 25);

      let flooding = true;
      const latencies: number[] = [];
      const execs = (async () => {
        while (flooding) {
          const started = performance.now();
          assert.equal((await run(good, ['true'])).exitCode, 0);
          latencies.push(performance.now() - started);
          await sleep(20);
        }
      })();
      const started = performance.now();
      const flood = await floodSyns(agent, 20 * MiB);
      await sleep(500); // whatever the agent queued has time to show in its RSS
      flooding = false;
      await execs;
      clearInterval(sampler);
      peak = Math.max(peak, rssBytes(pid));
      const growth = peak - baseline;
      const slowest = Math.max(...latencies);
      console.log(
        `flood: ${flood.sent / MiB} MiB over ${flood.connections} connection(s) in ${Math.round(performance.now() - started)} ms; ` +
          `agent RSS ${Math.round(baseline / MiB)} → peak ${Math.round(peak / MiB)} MiB; ` +
          `${latencies.length} execs meanwhile, slowest ${Math.round(slowest)} ms`,
      );
      assert.ok(growth < 64 * MiB, `the agent grew by ${Math.round(growth / MiB)} MiB during the flood`);
      assert.ok(latencies.length > 0, 'no exec finished during the flood');
      assert.ok(slowest < 3000, `an exec took ${Math.round(slowest)} ms during the flood`);
      assert.match(
        agent.logs(),
        /rejected before SSH: TETHER_RESYNC_FAILED: no resync handshake in the first \d+ bytes/,
      );
      good.close();
    } finally {
      await agent.stop();
    }
  });
});

describe('connections that never finish the handshake', () => {
  it('1100 idle connections do not lock a real client out; an idle one is closed after the deadline', async () => {
    const deadlineMs = 4000;
    process.env['TETHER_CHANNEL_HANDSHAKE_TIMEOUT_MS'] = String(deadlineMs);
    let agent: DevAgent;
    try {
      agent = await startDevAgent({ command: ['sleep', '600'] });
    } finally {
      delete process.env['TETHER_CHANNEL_HANDSHAKE_TIMEOUT_MS'];
    }
    const idle: Socket[] = [];
    try {
      // As on a host with the usual soft limit of 1024 open files.
      const limited = spawnSync('prlimit', ['--pid', String(agent.process.pid), '--nofile=1024:1024']);
      assert.equal(limited.status, 0, `prlimit: ${limited.stderr?.toString()}`);

      for (let batch = 0; batch < 11; batch++)
        idle.push(...(await Promise.all(Array.from({ length: 100 }, () => openIdle(agent.socket)))));
      const started = performance.now();
      const client = await agent.connect();
      assert.equal((await run(client, ['echo', 'still here'])).stdout, 'still here\n');
      const took = performance.now() - started;
      assert.ok(took < deadlineMs, `the real client needed ${Math.round(took)} ms`);

      const lonely = await openIdle(agent.socket);
      const opened = performance.now();
      await new Promise((resolve) => lonely.once('close', resolve));
      const after = performance.now() - opened;
      console.log(`an idle connection was closed after ${Math.round(after)} ms (deadline ${deadlineMs} ms)`);
      assert.ok(
        after > deadlineMs - 500 && after < deadlineMs + 2000,
        `closed after ${Math.round(after)} ms`,
      );
      // The deadline is for getting in: an authenticated client stays as long as it likes.
      assert.equal((await run(client, ['true'])).exitCode, 0);
      client.close();
      assert.match(agent.logs(), /no handshake within 4000 ms/);
      assert.match(agent.logs(), /too many connections before the handshake/);
    } finally {
      for (const socket of idle) socket.destroy();
      await agent.stop();
    }
  });
});

describe('tetherctl agent against a socket that never answers', () => {
  it('prints TETHER_RESYNC_FAILED and exits non-zero at once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-mute-'));
    const path = join(dir, 'mute.sock');
    const state = join(dir, 'state');
    mkdirSync(state);
    writeFileSync(join(state, 'id_client'), 'not read before the handshake\n');
    writeFileSync(join(state, 'ssh_host_key.pub'), 'not read before the handshake\n');
    const held: Socket[] = [];
    const mute = createServer((socket) => {
      held.push(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => mute.listen(path, resolve));
    try {
      const child = spawn(
        join(REPO, 'bin/tetherctl'),
        ['agent', '--socket', path, '--state', state, 'status'],
        {
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      let stderr = '';
      let printedAt = 0;
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        if (!printedAt && stderr.includes('TETHER_RESYNC_FAILED')) printedAt = performance.now();
      });
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      const code = await Promise.race([exited, sleep(25_000).then(() => 'still running' as const)]);
      if (code === 'still running') child.kill('SIGKILL');
      assert.match(stderr, /TETHER_RESYNC_FAILED/);
      assert.notEqual(code, 'still running', `tetherctl printed ${JSON.stringify(stderr)} and did not exit`);
      assert.notEqual(code, 0);
      assert.ok(performance.now() - printedAt < 2000, 'tetherctl lingered after printing the error');
    } finally {
      for (const socket of held) socket.destroy();
      mute.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
