/**
 * Connects a running Session to an SSH channel: stdout to channel data, stderr to extended data (RFC 4254
 * §5.2), channel data to stdin, window-change to resize, signal to kill, and exit-status / exit-signal
 * (§6.10) when it ends. Backpressure holds both ways: a peer that does not take the output pauses the
 * process (see peerHasRoom), a full stdin pipe pauses the channel. A client that closes the channel
 * closes the process's output: it gets SIGPIPE on its next write instead of blocking for good.
 */
import type { Writable } from 'node:stream';
import type { ServerChannel, Session as SshSession } from 'ssh2';
import type { Session } from '../process/session.ts';

/**
 * Bytes the connection's byte stream may hold for a peer before writers to any of its channels wait.
 * The SSH window alone does not bound the agent: a client may grant up to 4 GiB (RFC 4254 §5.2) and
 * then stop reading, and ssh2 writes every packet the window allows into the stream at once.
 */
export const PEER_BUFFER_BYTES = 1024 * 1024;

/** HACK: ssh2 gives a channel no public link to the byte stream its connection runs on. */
function transportOf(channel: ServerChannel): Writable | undefined {
  return (channel as unknown as { _client?: { _sock?: Writable } })._client?._sock;
}

function isOpen(channel: ServerChannel): boolean {
  const state = (channel as unknown as { outgoing?: { state?: string } }).outgoing?.state;
  return state === 'open' || state === 'eof';
}

/**
 * True while a writer to `channel` may go on: neither the channel (its SSH window is used up and its own
 * buffer full) nor the connection's byte stream (PEER_BUFFER_BYTES queued for a peer that does not read)
 * asks it to wait.
 */
export function peerHasRoom(channel: ServerChannel): boolean {
  if (channel.writableNeedDrain || channel.stderr.writableNeedDrain) return false;
  const stream = transportOf(channel);
  return !stream || stream.writableLength < PEER_BUFFER_BYTES;
}

/** Callbacks waiting for a connection's stream to drain: one 'drain' listener per stream, however many wait. */
const streamWaiters = new WeakMap<Writable, Set<() => void>>();

function onceStreamDrained(stream: Writable, callback: () => void): void {
  let waiters = streamWaiters.get(stream);
  if (!waiters) {
    const set = new Set<() => void>();
    waiters = set;
    streamWaiters.set(stream, set);
    stream.once('drain', () => {
      streamWaiters.delete(stream);
      for (const waiter of set) waiter();
    });
  }
  waiters.add(callback);
}

/**
 * Calls `callback` once peerHasRoom(channel) holds again (on a later tick, never synchronously). A
 * channel that closes meanwhile never calls back: its owner's 'close' handler cleans up instead.
 */
export function oncePeerDrained(channel: ServerChannel, callback: () => void): void {
  const check = (): void => {
    if (!isOpen(channel)) return;
    if (channel.writableNeedDrain) channel.once('drain', check);
    else if (channel.stderr.writableNeedDrain) channel.stderr.once('drain', check);
    else {
      const stream = transportOf(channel);
      if (stream && stream.writableLength >= PEER_BUFFER_BYTES && !stream.destroyed)
        onceStreamDrained(stream, check);
      else if (!stream?.destroyed) callback();
    }
  };
  setImmediate(check);
}

export function pipeSession(
  session: Session,
  channel: ServerChannel,
  sshSession: SshSession,
  log: (message: string) => void,
): void {
  let paused = false;
  const forward = (write: (chunk: Buffer) => boolean) => (chunk: Buffer) => {
    if ((write(chunk) && peerHasRoom(channel)) || paused) return;
    paused = true;
    session.pauseOutput();
    oncePeerDrained(channel, () => {
      paused = false;
      session.resumeOutput();
    });
  };
  session.on(
    'stdout',
    forward((chunk) => channel.write(chunk)),
  );
  session.on(
    'stderr',
    forward((chunk) => channel.stderr.write(chunk)),
  );
  channel.on('data', (chunk: Buffer) => {
    if (!session.write(chunk)) {
      channel.pause();
      session.onceInputDrained(() => channel.resume());
    }
  });
  channel.on('end', () => session.endInput());
  channel.on('error', (error: Error) => log(`session channel error: ${error.message}`));
  channel.on('close', () => {
    // The client went away first: hang up a terminal session as sshd does; a piped one loses its stdin
    // and its output pipes, so that it is not left blocked in write() for good.
    if (session.exitStatus === undefined) session.closeOutput();
    session.endInput();
  });
  sshSession.on('window-change', (accept, _reject, info) => {
    session.resize({ cols: info.cols || 80, rows: info.rows || 24 });
    accept?.();
  });
  sshSession.on('signal', (accept, reject, info) => {
    if (session.kill(info.name)) accept?.();
    else reject?.();
  });
  session.on('exit', (status) => {
    if (status.signal) channel.exit(status.signal.replace(/^SIG/, ''), false, '');
    else channel.exit(status.exitCode);
    channel.end();
  });
}
