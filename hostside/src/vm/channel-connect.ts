/**
 * Connecting to a VM's agent over its channel, for as long as it takes the agent to come up. Under TCG the
 * agent answers several seconds after QEMU starts; until then the socket accepts but nobody answers the
 * resync handshake. Each attempt is a fresh connection (the port carries one host connection at a time),
 * and any driver's Vm works: only openChannel() is used.
 */
import type { Duplex } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { isTetherError, TetherError } from '../../../protocol/src/errors/errors.ts';
import { ChannelClient, type ChannelCredentials } from '../channel/client.ts';
import type { Vm } from './driver.ts';

export interface ConnectOptions {
  credentials: ChannelCredentials;
  /** Give up after this long in all (TETHER_RESYNC_FAILED). */
  timeoutMs?: number;
  /** One attempt's handshake deadline; the next attempt opens a new connection. */
  attemptTimeoutMs?: number;
  /** Stops trying (e.g. the VM has ended): the pending attempt fails with TETHER_CHANNEL_CLOSED. */
  signal?: AbortSignal;
  /** Called after a failed attempt, before the next one. */
  onRetry?: (attempt: number, error: Error) => void;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 180_000;
const DEFAULT_ATTEMPT_TIMEOUT_MS = 10_000;
const RETRY_PAUSE_MS = 200;

/** Errors that a later attempt cannot fix: a wrong key stays wrong. */
function permanent(error: unknown): boolean {
  return isTetherError(error, 'TETHER_HOST_KEY_MISMATCH') || isTetherError(error, 'TETHER_AUTH_FAILED');
}

function aborted(signal: AbortSignal | undefined): TetherError {
  const reason: unknown = signal?.reason;
  return reason instanceof TetherError
    ? reason
    : new TetherError('TETHER_CHANNEL_CLOSED', 'stopped connecting to the agent: the VM has ended');
}

export async function connectVmChannel(vm: Vm, options: ConnectOptions): Promise<ChannelClient> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  let lastError: Error | undefined;
  for (let attempt = 1; ; attempt++) {
    if (options.signal?.aborted) throw aborted(options.signal);
    const left = deadline - Date.now();
    if (left <= 0)
      throw new TetherError(
        'TETHER_RESYNC_FAILED',
        `the agent in VM ${vm.id} did not answer on its channel within ${Math.round(timeoutMs / 1000)} s` +
          (lastError ? ` (last attempt: ${lastError.message})` : ''),
      );
    let stream: Duplex | undefined;
    const onAbort = (): void => void stream?.destroy();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      stream = await vm.openChannel();
      if (options.signal?.aborted) throw aborted(options.signal);
      return await ChannelClient.connect(stream, options.credentials, {
        timeoutMs: Math.min(options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS, left),
        retryMs: 500,
      });
    } catch (error) {
      stream?.destroy();
      if (permanent(error)) throw error;
      if (options.signal?.aborted) throw aborted(options.signal);
      lastError = error as Error;
      options.onRetry?.(attempt, lastError);
      await sleep(RETRY_PAUSE_MS);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }
}
