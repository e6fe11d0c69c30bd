/**
 * Drives the host's side of the resync handshake over a byte stream: sends a SYN, retries with a new
 * nonce every `retryMs` until the agent answers, and hands the stream back with any bytes that followed
 * the handshake (the start of the agent's SSH banner) put back in front.
 */
import { randomInt } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import { ResyncClient } from '../../../protocol/src/resync/resync.ts';

export interface ResyncOptions {
  retryMs?: number;
  timeoutMs?: number;
}

export function resyncClient(stream: Duplex, options: ResyncOptions = {}): Promise<void> {
  const retryMs = options.retryMs ?? 1000;
  const timeoutMs = options.timeoutMs ?? 30_000;
  const machine = new ResyncClient();
  return new Promise((resolve, reject) => {
    const attempt = (): void => void stream.write(machine.start(randomInt(0, 2 ** 32)));
    let retry = setInterval(attempt, retryMs);
    const deadline = setTimeout(
      () =>
        finish(
          new TetherError(
            'TETHER_RESYNC_FAILED',
            `the agent did not answer the resync handshake within ${timeoutMs} ms; is it running and is this its channel?`,
          ),
        ),
      timeoutMs,
    );
    const finish = (error?: Error): void => {
      clearInterval(retry);
      clearTimeout(deadline);
      stream.off('data', onData);
      stream.off('error', finish);
      stream.off('close', onClose);
      if (error) reject(error);
      else resolve();
    };
    const onData = (chunk: Buffer): void => {
      try {
        const step = machine.push(chunk);
        for (const bytes of step.send) stream.write(bytes);
        if (step.send.length > 0 && !step.done) {
          // ACK sent: a new SYN now would reach an agent that has moved on to SSH. Wait for READY, and
          // start over only if it does not come (the ACK was lost on the line).
          clearInterval(retry);
          retry = setInterval(attempt, retryMs * 3);
        }
        if (step.done) {
          stream.pause();
          if (step.rest.length > 0) stream.unshift(step.rest);
          finish();
        }
      } catch (error) {
        finish(error as Error);
      }
    };
    const onClose = (): void =>
      finish(new TetherError('TETHER_CHANNEL_CLOSED', 'the channel closed during the resync handshake'));
    stream.on('data', onData);
    // A stream handed back paused (by an earlier handshake on it) stays paused for a new 'data' listener.
    stream.resume();
    stream.on('error', finish);
    stream.on('close', onClose);
    attempt();
  });
}
