/**
 * A QMP client on QEMU's control socket: the greeting, capability negotiation, commands matched to their
 * replies by id, and events. The socket closing is how the host learns, at once, that QEMU has exited.
 */
import { connect, type Socket } from 'node:net';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import { QmpDecoder, encodeQmpCommand, type QmpMessage } from './qmp-codec.ts';

export type QmpEvent = Extract<QmpMessage, { kind: 'event' }>;

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
}

function vmError(message: string, cause?: unknown): TetherError {
  return new TetherError('TETHER_VM_FAILED', message, cause === undefined ? undefined : { cause });
}

export class QmpClient {
  readonly #socket: Socket;
  readonly #pending = new Map<string, Pending>();
  readonly #listeners = new Set<(event: QmpEvent) => void>();
  #nextId = 1;
  #closedError: Error | undefined;
  readonly closed: Promise<void>;
  version = '';

  private constructor(socket: Socket) {
    this.#socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('close', () => {
      this.#closedError ??= vmError('QMP: QEMU closed its control socket (it has exited)');
      for (const pending of this.#pending.values()) pending.reject(this.#closedError);
      this.#pending.clear();
    });
  }

  /**
   * Connects, reads the greeting and enters command mode. QEMU serves one QMP client per socket at a time:
   * a second one connects but hears nothing, so the greeting has a deadline.
   */
  static connect(path: string, timeoutMs = 5000): Promise<QmpClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      const client = new QmpClient(socket);
      const decoder = new QmpDecoder();
      let greeted = false;
      const fail = (error: Error): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      };
      const timer = setTimeout(
        () =>
          fail(
            vmError(
              `QMP: no greeting on ${path} within ${timeoutMs} ms (is another client connected to it?)`,
            ),
          ),
        timeoutMs,
      );
      socket.once('error', (error: NodeJS.ErrnoException) =>
        fail(vmError(`QMP: cannot connect to ${path}: ${error.code ?? error.message}`, error)),
      );
      socket.on('data', (chunk: Buffer) => {
        let messages: QmpMessage[];
        try {
          messages = decoder.push(chunk);
        } catch (error) {
          if (!greeted) return fail(error as Error);
          client.#closedError = error as Error;
          socket.destroy();
          return;
        }
        for (const message of messages) {
          if (message.kind === 'greeting' && !greeted) {
            greeted = true;
            client.version = message.version;
            client.execute('qmp_capabilities').then(
              () => {
                clearTimeout(timer);
                socket.removeAllListeners('error');
                socket.on('error', (error) => (client.#closedError ??= vmError(`QMP: ${error.message}`)));
                resolve(client);
              },
              (error: Error) => fail(error),
            );
          } else {
            client.#dispatch(message);
          }
        }
      });
      socket.once('close', () => fail(vmError(`QMP: ${path} closed before the greeting`)));
    });
  }

  #dispatch(message: QmpMessage): void {
    if (message.kind === 'event') {
      for (const listener of this.#listeners) listener(message);
      return;
    }
    if (message.kind !== 'return' && message.kind !== 'error') return;
    const pending = message.id === undefined ? undefined : this.#pending.get(message.id);
    if (!pending || message.id === undefined) return;
    this.#pending.delete(message.id);
    if (message.kind === 'return') pending.resolve(message.value);
    else pending.reject(vmError(`QMP ${pending.command}: ${message.errorClass}: ${message.description}`));
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.#closedError || this.#socket.destroyed)
      return Promise.reject(this.#closedError ?? vmError('QMP: not connected'));
    const id = `tether-${this.#nextId++}`;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { command, resolve: resolve as (value: unknown) => void, reject });
      this.#socket.write(encodeQmpCommand(command, args, id));
    });
  }

  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  get isOpen(): boolean {
    return !this.#socket.destroyed && this.#closedError === undefined;
  }

  close(): void {
    this.#socket.destroy();
  }
}
