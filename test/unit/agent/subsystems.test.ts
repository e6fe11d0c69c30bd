/**
 * The agent's request handlers (serveSubsystem) against a fake SSH channel whose peer the test fills and
 * drains, for what needs no process or socket: here status@tether's follow stream.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import type { ServerChannel, Session as SshSession } from 'ssh2';
import type { ChannelServices } from '../../../agent/src/channel/server.ts';
import { PEER_BUFFER_BYTES } from '../../../agent/src/channel/session-pipe.ts';
import { serveSubsystem } from '../../../agent/src/channel/subsystems.ts';
import { StatusReporter } from '../../../agent/src/status/reporter.ts';
import { FirstFrameReader } from '../../../protocol/src/framing/length-prefixed.ts';
import { encodeParams, statusRequest } from '../../../protocol/src/requests/requests.ts';
import { StatusDecoder } from '../../../protocol/src/status/status.ts';

/** The connection's byte stream: what the peer has not read yet is `writableLength`. */
class FakeStream extends EventEmitter {
  writableLength = 0;
  destroyed = false;
  /** The peer read everything. */
  drain(): void {
    this.writableLength = 0;
    this.emit('drain');
  }
}

/** Just what the handlers and peerHasRoom/oncePeerDrained touch of an ssh2 ServerChannel. */
class FakeChannel extends EventEmitter {
  readonly written: Buffer[] = [];
  readonly stream = new FakeStream();
  readonly stderr = Object.assign(new EventEmitter(), { writableNeedDrain: false, write: () => true });
  readonly outgoing = { state: 'open' };
  readonly _client = { _sock: this.stream };
  writableNeedDrain = false;
  exitCode: number | undefined;
  ended = false;

  write(data: Buffer): boolean {
    this.written.push(Buffer.from(data));
    // As ssh2 does with a big window: every byte goes into the connection's stream at once.
    this.stream.writableLength += data.length;
    return true;
  }
  exit(code: number): void {
    this.exitCode = code;
  }
  end(): void {
    this.ended = true;
  }
  close(): void {
    this.outgoing.state = 'closed';
    this.emit('close');
  }
  pause(): void {}
  resume(): void {}
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function serveStatus(follow: boolean, status: StatusReporter): FakeChannel {
  const channel = new FakeChannel();
  const services = { status } as unknown as ChannelServices;
  serveSubsystem(
    statusRequest.subsystem,
    channel as unknown as ServerChannel,
    new EventEmitter() as unknown as SshSession,
    services,
    () => {},
  );
  channel.emit('data', encodeParams(statusRequest, { follow }));
  return channel;
}

/** The stages of the status records the channel carried after its reply frame. */
function stagesOf(channel: FakeChannel): string[] {
  const first = new FirstFrameReader(64 * 1024).push(Buffer.concat(channel.written));
  assert.ok(first, 'a reply frame');
  return new StatusDecoder().push(first.rest).map((record) => `${record.stage}:${record.detail ?? ''}`);
}

void describe('status@tether', () => {
  void it('sends the records so far, then exits without follow', () => {
    const status = new StatusReporter(() => 0);
    status.report('agent', 'ok', { detail: 'a' });
    status.report('channel', 'ok', { detail: 'b' });
    const channel = serveStatus(false, status);
    assert.deepEqual(stagesOf(channel), ['agent:a', 'channel:b']);
    assert.equal(channel.exitCode, 0);
    assert.equal(channel.ended, true);
  });

  void it('follows a client that stops reading without queueing records for it, and resumes in order', async () => {
    const status = new StatusReporter(() => 0);
    status.report('agent', 'ok', { detail: 'boot' });
    const channel = serveStatus(true, status);
    assert.deepEqual(stagesOf(channel), ['agent:boot']);
    // The peer stops reading: its stream is full.
    channel.stream.writableLength = PEER_BUFFER_BYTES;
    const queuedBefore = channel.stream.writableLength;
    for (let i = 0; i < 10_000; i++) status.report('process-exited', 'ok', { detail: String(i) });
    await nextTurn();
    const queued = channel.stream.writableLength - queuedBefore;
    assert.ok(queued < 1024, `${queued} bytes queued toward a peer that does not read`);

    channel.stream.drain();
    for (let i = 0; i < 20 && stagesOf(channel).length < 10_001; i++) await nextTurn();
    const expected = ['agent:boot', ...Array.from({ length: 10_000 }, (_, i) => `process-exited:${i}`)];
    assert.deepEqual(stagesOf(channel), expected, 'every record once, in order');

    channel.close();
    assert.equal(status.listenerCount('record'), 0, 'a closed channel no longer follows');
    status.report('shutdown', 'ok');
    assert.equal(stagesOf(channel).length, 10_001);
  });
});
