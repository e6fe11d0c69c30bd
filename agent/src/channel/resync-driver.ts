/**
 * Runs the agent's side of the resync handshake on a byte stream, then hands the stream over with the
 * bytes that followed the handshake put back in front, so SSH sees exactly what the host sent.
 *
 * What a peer can make the agent hold before the handshake is bounded: the state machine answers at most
 * one SYN per read and gives up after RESYNC_GARBAGE_LIMIT bytes, and while the peer does not read, only
 * the newest SYNACK waits here for the stream to drain (it supersedes any older one).
 */
import type { Duplex } from 'node:stream';
import { randomInt } from 'node:crypto';
import { ResyncServer } from '../../../protocol/src/resync/resync.ts';

export function awaitResync(stream: Duplex): Promise<void> {
  return new Promise((resolve, reject) => {
    const machine = new ResyncServer(() => randomInt(0, 2 ** 32));
    /** The newest SYNACK, waiting for the peer to read what was already written. */
    let held: Buffer | undefined;
    let draining = false;
    const answer = (bytes: Buffer): void => {
      if (draining) {
        held = bytes;
        return;
      }
      if (!stream.write(bytes)) {
        draining = true;
        stream.once('drain', onDrain);
      }
    };
    const onDrain = (): void => {
      draining = false;
      const next = held;
      held = undefined;
      if (next) answer(next);
    };
    const cleanup = (): void => {
      stream.off('data', onData);
      stream.off('error', onError);
      stream.off('close', onClose);
      stream.off('drain', onDrain);
      held = undefined;
    };
    const onData = (chunk: Buffer): void => {
      let step;
      try {
        step = machine.push(chunk);
      } catch (error) {
        cleanup();
        reject(error);
        return;
      }
      if (step.done) {
        // READY answers an ACK of the newest token, so no SYNACK is held: write it, and SSH follows it.
        for (const bytes of step.send) stream.write(bytes);
      } else {
        for (const bytes of step.send) answer(bytes);
      }
      if (step.done) {
        cleanup();
        stream.pause();
        if (step.rest.length > 0) stream.unshift(step.rest);
        resolve();
      }
    };
    const onError = (error: Error): void => {
      cleanup();
      reject(error);
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error('stream closed before the resync handshake completed'));
    };
    stream.on('data', onData);
    stream.on('error', onError);
    stream.on('close', onClose);
  });
}

/**
 * RFC 4253 §4.2: a client's first line is its identification string, so the first bytes after the resync
 * must be `SSH-`. Checking that here refuses garbage at once, where ssh2 would wait for more. The bytes are
 * put back for ssh2.
 */
export function expectSshIdent(stream: Duplex, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = Buffer.alloc(0);
    const timer = setTimeout(
      () => finish(new Error(`no SSH identification within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const finish = (error?: Error): void => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('close', onClose);
      stream.pause();
      if (error) return reject(error);
      stream.unshift(seen);
      resolve();
    };
    const onData = (chunk: Buffer): void => {
      seen = Buffer.concat([seen, chunk]);
      if (seen.length < 4) return;
      if (seen.subarray(0, 4).toString('latin1') === 'SSH-') finish();
      else
        finish(
          new Error(
            `expected an SSH identification ("SSH-2.0-..."), got ${JSON.stringify(seen.subarray(0, 16).toString('latin1'))}`,
          ),
        );
    };
    const onClose = (): void => finish(new Error('stream closed before SSH started'));
    stream.on('data', onData);
    stream.on('close', onClose);
    stream.resume();
  });
}
