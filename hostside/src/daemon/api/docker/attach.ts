/**
 * docker attach, over a hijacked HTTP connection or a WebSocket. Output comes from the container's log
 * file (the one source: the follower decodes it once for every client; a client that falls 4 MiB behind
 * is cut loose); input goes to the agent over the container's shared channel, as an output-less attach
 * of its own, so each client's stdin, detach keys and end-of-input are its own.
 */
import type { Duplex, Writable } from 'node:stream';
import type { Logger } from 'pino';
import { describeError } from '../../../../../protocol/src/errors/errors.ts';
import type { AttachHandle } from '../../../channel/client.ts';
import { DetachKeyScanner, parseDetachKeys } from '../../../cli/detach-keys.ts';
import type { Container } from '../../containers/container.ts';
import type { ContainerManager } from '../../containers/manager.ts';
import { encodeDockerFrame, readLogs, type LogEntry } from '../../logs/index.ts';

export const DEFAULT_DETACH_KEYS = 'ctrl-p,ctrl-q';
/** Input typed before the container's agent is reachable is held up to this, then the client waits. */
const MAX_PENDING_INPUT_BYTES = 1024 * 1024;

export interface AttachOptions {
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  /** Replay what the container wrote before (Docker's logs=1). */
  logs: boolean;
  /** Carry live output (Docker's stream=1). */
  stream: boolean;
  detachKeys: string;
}

/** Where one client's bytes go: a hijacked socket, or a WebSocket's messages. */
export interface AttachPeer {
  /** Writes output; resolves when the peer can take more. */
  write(bytes: Buffer): Promise<void>;
  /** Called with each chunk the client sends, and with `end` when it half-closes. */
  onInput(listener: (chunk: Buffer) => void, onEnd: () => void): void;
  pauseInput(): void;
  resumeInput(): void;
  /** Closes the client's connection (after the output ended, a detach, or a cut). */
  close(reason?: string): void;
  closed: Promise<void>;
  /** Output without Docker's stream headers even without a tty (WebSocket messages keep their bounds). */
  raw?: boolean;
}

export function attachOptionsFrom(query: URLSearchParams): AttachOptions {
  const on = (name: string): boolean => ['1', 'true', 'True'].includes(query.get(name) ?? '');
  const detachKeys = query.get('detachKeys') || DEFAULT_DETACH_KEYS;
  parseDetachKeys(detachKeys); // refuse a bad sequence before hijacking
  return {
    stdin: on('stdin'),
    stdout: on('stdout'),
    stderr: on('stderr'),
    logs: on('logs'),
    stream: on('stream'),
    detachKeys,
  };
}

/** Docker's output framing: raw bytes with a tty, the multiplexed stream without. */
export function encodeOutput(entry: LogEntry, tty: boolean): Buffer {
  return tty ? entry.data : encodeDockerFrame(entry.stream, entry.data);
}

/**
 * The follower hands the same entry to every attach client: frame it once for all of them, not one copy
 * of the payload per client (measured with bench/tetherd.bench.ts, attach fan-out).
 */
const sharedFrames = new WeakMap<LogEntry, Buffer>();

function encodeShared(entry: LogEntry, tty: boolean): Buffer {
  if (tty) return entry.data;
  let frame = sharedFrames.get(entry);
  if (!frame) {
    frame = encodeDockerFrame(entry.stream, entry.data);
    sharedFrames.set(entry, frame);
  }
  return frame;
}

/** Writes and resolves when the stream can take more (or has gone: a closed peer never blocks us). */
export function writeWithBackpressure(out: Writable, bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    if (out.destroyed || out.writableEnded) return resolve();
    if (out.write(bytes)) return resolve();
    const done = (): void => {
      out.off('drain', done);
      out.off('close', done);
      resolve();
    };
    out.on('drain', done);
    out.on('close', done);
  });
}

export function socketPeer(socket: Duplex): AttachPeer {
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => undefined);
  return {
    write: (bytes) => writeWithBackpressure(socket, bytes),
    onInput: (listener, onEnd) => {
      socket.on('data', listener);
      socket.once('end', onEnd);
      // The router paused it after taking the request body (an explicit pause outlasts a new listener).
      socket.resume();
    },
    pauseInput: () => socket.pause(),
    resumeInput: () => socket.resume(),
    close: () => {
      if (!socket.destroyed) socket.end();
      setTimeout(() => socket.destroy(), 1000).unref();
    },
    closed,
  };
}

export async function attachContainer(
  manager: ContainerManager,
  container: Container,
  options: AttachOptions,
  peer: AttachPeer,
  log: Logger,
): Promise<void> {
  const tty = container.record.config.tty || peer.raw === true;
  const wants = (entry: LogEntry): boolean => (entry.stream === 1 ? options.stdout : options.stderr);
  const abort = new AbortController();
  void peer.closed.then(() => abort.abort());
  const input =
    options.stdin && container.record.config.openStdin
      ? new AttachInput(manager, container, options, peer, log)
      : undefined;
  input?.start();

  // Subscribed before the replay is read, so nothing written in between is missed (a byte may show twice
  // at the seam of logs=1 and stream=1, never zero times).
  const subscription =
    options.stream && (options.stdout || options.stderr || options.stdin)
      ? container.follower.subscribe({
          onEnd: (reason) => {
            if (reason === 'overflow') {
              log.warn({ container: container.id }, 'attach client stopped reading: cut loose');
              peer.close('too slow');
            }
          },
        })
      : undefined;
  void peer.closed.then(() => subscription?.close());
  try {
    if (options.logs)
      for await (const entry of readLogs(container.logs, { follow: false, signal: abort.signal }))
        if (wants(entry)) await peer.write(encodeOutput(entry, tty));
    if (subscription)
      for await (const entry of subscription) if (wants(entry)) await peer.write(encodeShared(entry, tty));
  } catch (error) {
    log.warn({ container: container.id, err: describeError(error) }, 'attach output failed');
  } finally {
    subscription?.close();
    input?.close();
    peer.close();
  }
}

/** One client's input: held until the agent is reachable, then through its own attach channel. */
class AttachInput {
  readonly #manager: ContainerManager;
  readonly #container: Container;
  readonly #peer: AttachPeer;
  readonly #log: Logger;
  readonly #scanner: DetachKeyScanner;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #ended = false;
  #closed = false;
  #handle: AttachHandle | undefined;

  constructor(
    manager: ContainerManager,
    container: Container,
    options: AttachOptions,
    peer: AttachPeer,
    log: Logger,
  ) {
    this.#manager = manager;
    this.#container = container;
    this.#peer = peer;
    this.#log = log;
    this.#scanner = new DetachKeyScanner(parseDetachKeys(options.detachKeys));
  }

  start(): void {
    this.#peer.onInput(
      (chunk) => this.#onInput(chunk),
      () => {
        // As Docker: a client leaving a tty (the CLI handles ctrl-p ctrl-q itself and just closes) is a
        // detach; only without a tty does its end of input reach the process (with StdinOnce).
        if (this.#container.record.config.tty) {
          this.close();
          return;
        }
        this.#ended = true;
        this.#handle?.stdin.end();
      },
    );
    void this.#connect();
  }

  close(): void {
    this.#closed = true;
    this.#handle?.detach();
  }

  #onInput(chunk: Buffer): void {
    const { forward, detach } = this.#scanner.push(chunk);
    if (forward.length > 0) this.#send(forward);
    if (detach) {
      this.#log.info({ container: this.#container.id }, 'attach client detached');
      this.close();
      this.#peer.close('detached');
    }
  }

  #send(bytes: Buffer): void {
    if (this.#handle) {
      if (!this.#handle.stdin.write(bytes)) {
        this.#peer.pauseInput();
        this.#handle.stdin.once('drain', () => this.#peer.resumeInput());
      }
      return;
    }
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.length;
    if (this.#pendingBytes > MAX_PENDING_INPUT_BYTES) this.#peer.pauseInput();
  }

  async #connect(): Promise<void> {
    // docker run attaches before it starts the container: wait for the boot, then for the agent.
    for (let attempt = 0; !this.#closed; attempt++) {
      if (!this.#container.running) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        if (this.#container.record.state.status === 'exited' && attempt > 50) return;
        continue;
      }
      try {
        const client = await this.#manager.channel(this.#container);
        const handle = await client.attach(
          { from: 'end', stdin: true, output: false },
          { onFrame: () => {} },
        );
        if (this.#closed) {
          handle.detach();
          return;
        }
        this.#handle = handle;
        for (const chunk of this.#pending.splice(0)) handle.stdin.write(chunk);
        this.#pendingBytes = 0;
        this.#peer.resumeInput();
        if (this.#ended) handle.stdin.end();
        return;
      } catch (error) {
        if (this.#container.record.state.status === 'exited') return;
        this.#log.debug(
          { container: this.#container.id, err: describeError(error) },
          'attach input: retrying',
        );
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  }
}
