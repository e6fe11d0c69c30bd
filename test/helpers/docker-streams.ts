/**
 * Raw Docker API streams for tetherd tests: a hijacked attach over a plain unix socket (what the docker CLI
 * does, minus the CLI), the multiplexed-stream decoder, and a bounded poll.
 */
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Demuxed {
  stdout: string;
  stderr: string;
  /** Bytes after the last whole frame (a stream cut mid-frame). */
  rest: number;
}

/** Splits Docker's multiplexed stream (8-byte header: stream, 0, 0, 0, big-endian length) by stream. */
export function demux(bytes: Buffer): Demuxed {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let at = 0;
  while (at + 8 <= bytes.length) {
    const size = bytes.readUInt32BE(at + 4);
    if (at + 8 + size > bytes.length) break;
    const payload = bytes.subarray(at + 8, at + 8 + size);
    if (bytes[at] === 2) err.push(payload);
    else out.push(payload);
    at += 8 + size;
  }
  return {
    stdout: Buffer.concat(out).toString(),
    stderr: Buffer.concat(err).toString(),
    rest: bytes.length - at,
  };
}

export interface RawAttach {
  socket: Socket;
  /** The response head (status line and headers). */
  head: string;
  /** Everything received after the head so far. */
  received(): Buffer;
  /** Resolves when the daemon has closed the connection (or it errored). */
  ended: Promise<void>;
}

/**
 * POST /containers/ID/attach?QUERY with `Upgrade: tcp`, on a fresh connection. With `read: false` the
 * socket is paused right after the head and never read again (a client that stops reading).
 */
export function rawAttach(
  socketPath: string,
  id: string,
  query: string,
  options: { read?: boolean; path?: string } = {},
): Promise<RawAttach> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    const chunks: Buffer[] = [];
    let head: string | undefined;
    let pending = Buffer.alloc(0);
    const ended = new Promise<void>((done) => {
      socket.once('close', () => done());
      socket.once('error', () => done());
    });
    socket.once('error', reject);
    socket.on('data', (chunk: Buffer) => {
      if (head !== undefined) return void chunks.push(chunk);
      pending = Buffer.concat([pending, chunk]);
      const end = pending.indexOf('\r\n\r\n');
      if (end < 0) return;
      head = pending.subarray(0, end).toString();
      const after = pending.subarray(end + 4);
      if (after.length) chunks.push(after);
      if (options.read === false) socket.pause();
      resolve({ socket, head, received: () => Buffer.concat(chunks), ended });
    });
    socket.write(
      `POST ${options.path ?? `/v1.47/containers/${id}/attach`}?${query} HTTP/1.1\r\n` +
        'Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n',
    );
  });
}

/** Polls `check` until it returns a truthy value; fails with `what` after `timeoutMs`. */
export async function eventually<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = 10_000,
  everyMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`,
      );
    await sleep(everyMs);
  }
}

/** "1\n2\n...\nN\n" */
export function numberedLines(from: number, to: number, prefix = ''): string {
  let text = '';
  for (let i = from; i <= to; i++) text += `${prefix}${i}\n`;
  return text;
}
