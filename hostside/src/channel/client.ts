/**
 * The host's channel client, a library tetherctl and tetherd share: resync, then SSH over any byte
 * stream with both keys pinned, then the agent's requests (exec, attach with resume, status).
 */
import { EventEmitter } from 'node:events';
import { PassThrough, type Duplex, type Readable, type Writable } from 'node:stream';
import ssh2, { type ClientChannel } from 'ssh2';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import { FirstFrameReader } from '../../../protocol/src/framing/length-prefixed.ts';
import { LogFrameDecoder, type LogFrame } from '../../../protocol/src/logs/log-frame.ts';
import {
  attachRequest,
  decodeReply,
  encodeParams,
  execRequest,
  statusRequest,
  type AttachParams,
  type AttachResult,
  type ExecParams,
  type RequestType,
  type TerminalSize,
} from '../../../protocol/src/requests/requests.ts';
import { StatusDecoder, type StatusRecord } from '../../../protocol/src/status/status.ts';
import { resyncClient, type ResyncOptions } from './resync.ts';

const { Client, utils } = ssh2;

export interface ChannelCredentials {
  /** The client's private key (OpenSSH or PEM). */
  privateKey: string;
  /** The agent's public host key line; any other key is refused. */
  hostPublicKey: string;
}

export interface ExitResult {
  exitCode: number;
  signal?: string;
}

const SIGNALS: Record<string, number> = { HUP: 1, INT: 2, QUIT: 3, ABRT: 6, KILL: 9, USR1: 10, SEGV: 11, USR2: 12, PIPE: 13, ALRM: 14, TERM: 15 };

function exitFrom(channel: ClientChannel): Promise<ExitResult | undefined> {
  return new Promise((resolve) => {
    let result: ExitResult | undefined;
    channel.on('exit', (code: number | null, signal?: string) => {
      result =
        code !== null && code !== undefined
          ? { exitCode: code }
          : { exitCode: 128 + (SIGNALS[signal ?? ''] ?? 0), signal: `SIG${signal ?? 'UNKNOWN'}` };
    });
    channel.on('close', () => resolve(result));
  });
}

/** Reads the agent's reply frame, then passes every later byte to `rest`. */
function readReply<R>(type: RequestType<unknown, R>, channel: ClientChannel, rest: (chunk: Buffer) => void): Promise<R> {
  return new Promise((resolve, reject) => {
    const reader = new FirstFrameReader(64 * 1024);
    let replied = false;
    channel.on('data', (chunk: Buffer) => {
      if (replied) return rest(chunk);
      let first;
      try {
        first = reader.push(chunk);
        if (!first) return;
        replied = true;
        const reply = decodeReply(type, first.body);
        if ('error' in reply) throw new TetherError(reply.error.code, reply.error.message);
        resolve(reply.ok);
      } catch (error) {
        replied = true;
        reject(error);
        channel.close();
        return;
      }
      if (first.rest.length > 0) rest(first.rest);
    });
    channel.on('close', () => {
      if (!replied) reject(new TetherError('TETHER_CHANNEL_CLOSED', `${type.subsystem}: the agent closed the request without a reply`));
    });
  });
}

export interface ExecHandle {
  pid: number;
  stdout: Readable;
  stderr: Readable;
  stdin: Writable;
  resize(size: TerminalSize): void;
  signal(name: string): void;
  exit: Promise<ExitResult | undefined>;
}

export interface AttachHandle extends EventEmitter<{ frame: [LogFrame]; error: [Error] }> {
  result: AttachResult;
  /** Offset just past the last byte received: where a later attach resumes. */
  readonly offset: number;
  stdin: Writable;
  resize(size: TerminalSize): void;
  signal(name: string): void;
  detach(): void;
  /** The process's exit, or undefined when this client detached or the channel dropped first. */
  exit: Promise<ExitResult | undefined>;
}

export class ChannelClient {
  readonly #ssh: InstanceType<typeof Client>;

  private constructor(ssh: InstanceType<typeof Client>) {
    this.#ssh = ssh;
  }

  static async connect(stream: Duplex, credentials: ChannelCredentials, options: ResyncOptions & { readyTimeoutMs?: number } = {}): Promise<ChannelClient> {
    await resyncClient(stream, options);
    const pinned = utils.parseKey(credentials.hostPublicKey);
    if (pinned instanceof Error) throw new TetherError('TETHER_CONFIG_INVALID', `agent host key: ${pinned.message}`);
    const expected = (Array.isArray(pinned) ? pinned[0]! : pinned).getPublicSSH();
    const ssh = new Client();
    let hostKeyMismatch = false;
    await new Promise<void>((resolve, reject) => {
      ssh.once('ready', () => resolve());
      ssh.once('error', (error) =>
        reject(
          hostKeyMismatch
            ? new TetherError('TETHER_HOST_KEY_MISMATCH', "the agent's host key is not the pinned one: refusing to talk to it")
            : /authentication/i.test(error.message)
              ? new TetherError('TETHER_AUTH_FAILED', `the agent refused this client's key (${error.message})`, { cause: error })
              : error,
        ),
      );
      ssh.connect({
        sock: stream as never,
        username: 'root',
        privateKey: credentials.privateKey,
        readyTimeout: options.readyTimeoutMs ?? 20_000,
        hostVerifier: (key: Buffer) => {
          hostKeyMismatch = !key.equals(expected);
          return !hostKeyMismatch;
        },
      });
    });
    ssh.on('error', () => {
      // After ready, errors surface on the channels that fail; keep the process alive.
    });
    return new ChannelClient(ssh);
  }

  get connection(): InstanceType<typeof Client> {
    return this.#ssh;
  }

  close(): void {
    this.#ssh.end();
  }

  onClose(callback: () => void): void {
    this.#ssh.once('close', callback);
  }

  #subsystem(name: string): Promise<ClientChannel> {
    return new Promise((resolve, reject) => this.#ssh.subsys(name, (error, channel) => (error ? reject(error) : resolve(channel))));
  }

  async exec(params: ExecParams): Promise<ExecHandle> {
    const channel = await this.#subsystem(execRequest.subsystem);
    const stdout = new PassThrough();
    const exit = exitFrom(channel);
    channel.write(encodeParams(execRequest, params));
    const result = await readReply(execRequest, channel, (chunk) => {
      if (!stdout.write(chunk)) {
        channel.pause();
        stdout.once('drain', () => channel.resume());
      }
    });
    channel.on('end', () => stdout.end());
    return {
      pid: result.pid,
      stdout,
      stderr: channel.stderr,
      stdin: channel,
      resize: (size) => void channel.setWindow(size.rows, size.cols, 0, 0),
      signal: (name) => void channel.signal(name.replace(/^SIG/, '')),
      exit,
    };
  }

  async attach(params: AttachParams): Promise<AttachHandle> {
    const channel = await this.#subsystem(attachRequest.subsystem);
    const exit = exitFrom(channel);
    const frames = new LogFrameDecoder();
    const emitter = new EventEmitter<{ frame: [LogFrame]; error: [Error] }>();
    let offset = 0;
    channel.write(encodeParams(attachRequest, params));
    const result = await readReply(attachRequest, channel, (chunk) => {
      try {
        for (const frame of frames.push(chunk)) {
          offset += frame.data.length;
          emitter.emit('frame', frame);
        }
      } catch (error) {
        emitter.emit('error', error as Error);
        channel.close();
      }
    });
    offset = result.offset;
    channel.stderr.on('data', (chunk: Buffer) => emitter.emit('error', new TetherError('TETHER_OFFSET_GONE', chunk.toString().trim())));
    return Object.assign(emitter, {
      result,
      get offset() {
        return offset;
      },
      stdin: channel,
      resize: (size: TerminalSize) => void channel.setWindow(size.rows, size.cols, 0, 0),
      signal: (name: string) => void channel.signal(name.replace(/^SIG/, '')),
      detach: () => channel.close(),
      exit,
    });
  }

  /** The agent's status records so far, and with `follow`, each new one as it happens. */
  async status(follow: boolean, onRecord: (record: StatusRecord) => void): Promise<void> {
    const channel = await this.#subsystem(statusRequest.subsystem);
    const decoder = new StatusDecoder();
    const done = new Promise<void>((resolve) => channel.on('close', () => resolve()));
    channel.write(encodeParams(statusRequest, { follow }));
    await readReply(statusRequest, channel, (chunk) => decoder.push(chunk).forEach(onRecord));
    await done;
  }
}
