/**
 * Peers that misbehave against a real `tether --dev` cost it no liveness: a request channel that never
 * sends its parameters is closed after a deadline, and another client is still served.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ClientChannel } from 'ssh2';
import type { ChannelClient } from '../../hostside/src/channel/client.ts';
import { FirstFrameReader } from '../../protocol/src/framing/length-prefixed.ts';
import {
  decodeReply,
  encodeParams,
  execRequest,
  type Reply,
  type RequestType,
} from '../../protocol/src/requests/requests.ts';
import { run, startDevAgent, type DevAgent } from '../helpers/dev-agent.ts';

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

describe('requests that never arrive', () => {
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
