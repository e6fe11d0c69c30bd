/**
 * Runs the agent's side of the resync handshake on a byte stream, then hands the stream over with the
 * bytes that followed the handshake put back in front, so SSH sees exactly what the host sent.
 */
import type { Duplex } from 'node:stream';
import { randomInt } from 'node:crypto';
import { ResyncServer } from '../../../protocol/src/resync/resync.ts';

export function awaitResync(stream: Duplex): Promise<void> {
  return new Promise((resolve, reject) => {
    const machine = new ResyncServer(() => randomInt(0, 2 ** 32));
    const cleanup = (): void => {
      stream.off('data', onData);
      stream.off('error', onError);
      stream.off('close', onClose);
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
      for (const bytes of step.send) stream.write(bytes);
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
