/**
 * An attach to the main process that survives the channel dropping: it reconnects and attaches again from
 * the offset just past the last byte it delivered, so output is neither lost nor repeated. It ends with the
 * process's exit, or with undefined once reconnecting is impossible (the VM is gone).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { isTetherError } from '../../../protocol/src/errors/errors.ts';
import type { LogFrame } from '../../../protocol/src/logs/log-frame.ts';
import type { AttachFrom, AttachResult, TerminalSize } from '../../../protocol/src/requests/requests.ts';
import type { AttachHandle, ChannelClient, ExitResult } from '../channel/client.ts';

const RETRY_PAUSE_MS = 200;

export interface ResumableAttachOptions {
  /** A connected client; called again after a drop. Throwing ends the attach (exit resolves undefined). */
  connect: () => Promise<ChannelClient>;
  from: AttachFrom;
  stdin: boolean;
  onFrame: (frame: LogFrame) => void;
  /** The first attach's reply (tty, running, offsets). */
  onAttached?: (result: AttachResult, reconnects: number) => void;
  onDrop?: (offset: number) => void;
  onError?: (error: Error) => void;
}

export class ResumableAttach {
  readonly #options: ResumableAttachOptions;
  #client: ChannelClient | undefined;
  #handle: AttachHandle | undefined;
  #offset: number | undefined;
  #size: TerminalSize | undefined;
  #stdinEnded = false;
  /** Input that arrived while no attach was up (before the first, or during a reconnect). */
  #stdinQueue: Buffer[] = [];
  #closed = false;
  readonly exit: Promise<ExitResult | undefined>;

  constructor(options: ResumableAttachOptions) {
    this.#options = options;
    this.exit = this.#run();
  }

  /** Where a later attach would resume: just past the last byte delivered (undefined before any). */
  get offset(): number | undefined {
    return this.#handle?.offset ?? this.#offset;
  }

  get attached(): boolean {
    return this.#handle !== undefined;
  }

  async #run(): Promise<ExitResult | undefined> {
    for (let reconnects = 0; !this.#closed; reconnects++) {
      let client: ChannelClient;
      try {
        client = await this.#options.connect();
      } catch (error) {
        this.#options.onError?.(error as Error);
        return undefined;
      }
      if (this.#closed) {
        client.close();
        return undefined;
      }
      this.#client = client;
      let handle: AttachHandle;
      try {
        handle = await client.attach(
          { from: this.#offset ?? this.#options.from, stdin: this.#options.stdin },
          { onFrame: this.#options.onFrame, onError: (error) => this.#options.onError?.(error) },
        );
      } catch (error) {
        client.close();
        this.#options.onError?.(error as Error);
        // The agent's refusal (no main process, bad offset) stands; a dropped channel is worth another try.
        if (!isTetherError(error, 'TETHER_CHANNEL_CLOSED') && isTetherError(error)) return undefined;
        await sleep(RETRY_PAUSE_MS);
        continue;
      }
      this.#handle = handle;
      this.#options.onAttached?.(handle.result, reconnects);
      if (this.#size) handle.resize(this.#size);
      for (const chunk of this.#stdinQueue.splice(0)) handle.stdin.write(chunk);
      if (this.#stdinEnded) handle.stdin.end();
      const result = await handle.exit;
      this.#offset = handle.offset;
      this.#handle = undefined;
      client.close();
      this.#client = undefined;
      if (result) return result;
      if (this.#closed) break;
      this.#options.onDrop?.(this.#offset);
      await sleep(RETRY_PAUSE_MS);
    }
    return undefined;
  }

  /**
   * Sends input to the process, or keeps it until an attach is up: piped input usually arrives before the
   * channel does. (Bytes already handed to a channel that then dropped are lost, as on any broken line.)
   */
  writeStdin(chunk: Buffer): void {
    if (this.#handle) this.#handle.stdin.write(chunk);
    else this.#stdinQueue.push(chunk);
  }

  endStdin(): void {
    this.#stdinEnded = true;
    this.#handle?.stdin.end();
  }

  resize(size: TerminalSize): void {
    this.#size = size;
    this.#handle?.resize(size);
  }

  signal(name: string): boolean {
    if (!this.#handle) return false;
    this.#handle.signal(name);
    return true;
  }

  close(): void {
    this.#closed = true;
    this.#handle?.detach();
    this.#client?.close();
  }
}
