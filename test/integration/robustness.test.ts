/**
 * Bad peers against a real `tether --dev`: garbage before and after the handshake, unknown client keys, a
 * pinned host key that does not match, malformed requests. Each is refused with a reason, and the agent
 * keeps serving everyone else.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import ssh2 from 'ssh2';
import { encodeLengthPrefixed, FirstFrameReader } from '../../protocol/src/framing/length-prefixed.ts';
import { decodeReply, execRequest } from '../../protocol/src/requests/requests.ts';
import { ChannelClient } from '../../hostside/src/channel/client.ts';
import { resyncClient } from '../../hostside/src/channel/resync.ts';
import { run, startDevAgent, type DevAgent } from '../helpers/dev-agent.ts';
import { REPO } from '../helpers/prerequisites.ts';

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe('bad peers are refused and the agent keeps serving', () => {
  let agent: DevAgent;
  let good: ChannelClient;
  const stillServes = async (): Promise<void> => assert.equal((await run(good, ['true'])).exitCode, 0);

  before(async () => {
    agent = await startDevAgent({ command: ['sleep', '60'] });
    good = await agent.connect();
  });
  after(async () => {
    good.close();
    await agent.stop();
  });

  it('garbage before the handshake', async () => {
    const socket = await agent.rawSocket();
    socket.write(Buffer.from('GET / HTTP/1.1\r\nHost: nope\r\n\r\n'));
    socket.write(Buffer.alloc(4096, 0xa5));
    socket.end();
    await until('the reason in the log', () => /rejected before SSH/.test(agent.logs()));
    await stillServes();
  });

  it('garbage after the handshake, in place of SSH', async () => {
    const socket = await agent.rawSocket();
    await resyncClient(socket, { timeoutMs: 5000 });
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.write(Buffer.from('this is not an SSH identification string\r\n'.repeat(20)));
    socket.write(Buffer.alloc(70_000, 0x5a));
    await closed;
    await until('the reason in the log', () =>
      /rejected after the handshake: expected an SSH identification/.test(agent.logs()),
    );
    await stillServes();
  });

  it('a client with an unknown key', async () => {
    const stranger = ssh2.utils.generateKeyPairSync('ed25519');
    await assert.rejects(
      ChannelClient.connect(await agent.rawSocket(), {
        privateKey: stranger.private,
        hostPublicKey: readFileSync(join(agent.state, 'ssh_host_key.pub'), 'utf8'),
      }),
      { code: 'TETHER_AUTH_FAILED' },
    );
    await until('the refusal in the log', () => /publickey|key/i.test(agent.logs()));
    await stillServes();
  });

  it('a client pinned to another host key refuses to talk', async () => {
    const impostor = ssh2.utils.generateKeyPairSync('ed25519');
    await assert.rejects(
      ChannelClient.connect(await agent.rawSocket(), {
        privateKey: readFileSync(join(agent.state, 'id_client'), 'utf8'),
        hostPublicKey: impostor.public,
      }),
      { code: 'TETHER_HOST_KEY_MISMATCH' },
    );
    await stillServes();
  });

  it('a malformed request gets a reply naming the problem; only its channel closes', async () => {
    const client = await agent.connect();
    const reply = await new Promise<unknown>((resolve, reject) => {
      client.connection.subsys('exec@tether', (error, channel) => {
        if (error) return reject(error);
        const reader = new FirstFrameReader(64 * 1024);
        channel.on('data', (chunk: Buffer) => {
          const first = reader.push(chunk);
          if (first) resolve(decodeReply(execRequest, first.body));
        });
        channel.write(encodeLengthPrefixed(Buffer.from([0xc1, 0xff, 0x00, 0x13])));
      });
    });
    assert.ok(reply && typeof reply === 'object' && 'error' in reply, `reply: ${JSON.stringify(reply)}`);
    const { code, message } = (reply as { error: { code: string; message: string } }).error;
    assert.match(code, /^TETHER_(REQUEST|FRAME)_INVALID$/);
    assert.ok(message.length > 10, message);
    assert.equal((await run(client, ['sh', '-c', 'exit 4'])).exitCode, 4, 'the same connection still works');
    client.close();
    await stillServes();
  });

  it('an unknown request names the known ones', async () => {
    const client = await agent.connect();
    const refused = await new Promise<boolean>((resolve) =>
      client.connection.subsys('nope@tether', (error, channel) => {
        if (error) return resolve(true);
        const reader = new FirstFrameReader(64 * 1024);
        channel.on('data', (chunk: Buffer) => {
          const first = reader.push(chunk);
          if (first) {
            const decoded = decodeReply(execRequest, first.body);
            resolve('error' in decoded && /known: exec@tether/.test(decoded.error.message));
          }
        });
      }),
    );
    assert.equal(refused, true);
    client.close();
    await stillServes();
  });
});

describe('bad start-up input', () => {
  it('a main process that does not exist exits 127 with Docker’s message, and the agent stays up', async () => {
    const agent = await startDevAgent({ command: ['no-such-command-xyz'] });
    try {
      const client = await agent.connect();
      await until('process-exited', () => /process-exited ok exit=127/.test(agent.logs()));
      let stderr = '';
      const exit = await client
        .attach({ from: 'start', stdin: false }, { onFrame: (frame) => (stderr += frame.data.toString()) })
        .then((handle) => handle.exit);
      assert.equal(exit?.exitCode, 127);
      assert.match(stderr, /"no-such-command-xyz": executable file not found in \$PATH/);
      assert.equal((await run(client, ['true'])).exitCode, 0);
      client.close();
    } finally {
      await agent.stop();
    }
  });

  it('a bad --config file names the field and what was expected', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-badcfg-'));
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ version: 1, id: 'x', process: { argv: 'sh' }, hostnmae: 'web' }));
    const result = spawnSync(
      join(REPO, 'bin/tether'),
      ['--dev', '--socket', join(dir, 's'), '--state', join(dir, 'st'), '--config', config],
      { encoding: 'utf8', timeout: 20_000 },
    );
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, /process\.argv: expected a non-empty array, got "sh"/);
    assert.match(result.stderr, /hostnmae: expected no such field/);
  });
});
