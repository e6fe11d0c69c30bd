/**
 * The host's channel client, a library tetherctl and tetherd share: resync, then SSH over any byte
 * stream with both keys pinned, then the agent's requests (exec, attach with resume, status).
 */
import { constants } from 'node:os';
import { PassThrough, type Duplex, type Readable, type Writable } from 'node:stream';
import ssh2, { type ClientChannel } from 'ssh2';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import { FirstFrameReader } from '../../../protocol/src/framing/length-prefixed.ts';
import { LogFrameDecoder, type LogFrame } from '../../../protocol/src/logs/log-frame.ts';
import {
  archiveGetRequest,
  archivePutRequest,
  archiveStatRequest,
  attachRequest,
  decodeReply,
  encodeParams,
  execRequest,
  statsRequest,
  statusRequest,
  type ArchivePutParams,
  type ArchiveStat,
  type AttachParams,
  type AttachResult,
  type StatsResult,
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

const SIGNALS = constants.signals as Record<string, number>;

/** ssh2 reports exit-signal (RFC 4254 §6.10) as `SIG` + the name; users expect 128+n. */
function exitFromSignal(signal: string | undefined): ExitResult {
  const name = signal ? (signal.startsWith('SIG') ? signal : `SIG${signal}`) : 'SIGUNKNOWN';
  return { exitCode: 128 + (SIGNALS[name] ?? 0), signal: name };
}

function exitFrom(channel: ClientChannel): Promise<ExitResult | undefined> {
  return new Promise((resolve) => {
    let result: ExitResult | undefined;
    channel.on('exit', (code: number | null, signal?: string) => {
      result = code !== null && code !== undefined ? { exitCode: code } : exitFromSignal(signal);
    });
    channel.on('close', () => resolve(result));
  });
}

interface ChannelInternals {
  writable: boolean;
  outgoing: { id: number; state: string };
  _client: {
    _protocol: { windowChange(id: number, rows: number, cols: number, height: number, width: number): void };
  };
}

/**
 * window-change (RFC 4254 §6.7) is valid on any session channel, but ssh2's `setWindow` only sends it for
 * shell and exec channels and silently drops it on a subsystem channel like ours; so send it directly.
 */
function sendWindowChange(channel: ClientChannel, size: TerminalSize): void {
  const internals = channel as unknown as ChannelInternals;
  if (!internals.writable || internals.outgoing.state !== 'open') return;
  internals._client._protocol.windowChange(internals.outgoing.id, size.rows, size.cols, 0, 0);
}

/** Reads the agent's reply frame, then passes every later byte to `rest`. */
function readReply<R>(
  type: RequestType<unknown, R>,
  channel: ClientChannel,
  rest: (chunk: Buffer) => void,
  onReply: (reply: R) => void = () => {},
): Promise<R> {
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
        onReply(reply.ok);
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
      if (!replied)
        reject(
          new TetherError(
            'TETHER_CHANNEL_CLOSED',
            `${type.subsystem}: the agent closed the request without a reply`,
          ),
        );
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

export interface AttachHandlers {
  /** Each output frame, in order; called from the first frame on, so none can be missed. */
  onFrame(frame: LogFrame): void;
  /** The agent could not serve the asked offset, or sent a frame that does not decode. */
  onError?(error: Error): void;
}

export interface AttachHandle {
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

export interface ArchiveGetHandle {
  stat: ArchiveStat;
  /** The tar stream of the path; pausing it pauses the agent. It ends early when `done` rejects. */
  tar: Readable;
  /** Resolves when the agent has sent the whole archive; rejects with TETHER_ARCHIVE_FAILED otherwise. */
  done: Promise<void>;
}

/** Resolves when the channel closed with status 0; otherwise rejects with what the agent said on stderr. */
function archiveOutcome(channel: ClientChannel, what: string): Promise<void> {
  let message = '';
  channel.stderr.on('data', (chunk: Buffer) => (message += chunk.toString()));
  return exitFrom(channel).then((exit) => {
    if (exit?.exitCode === 0) return;
    const reason = message.trim().replace(/^tether: /, '');
    throw new TetherError(
      'TETHER_ARCHIVE_FAILED',
      reason ||
        `${what}: the agent ended it with ${exit ? `status ${exit.exitCode}` : 'no exit status (channel lost)'}`,
    );
  });
}

export class ChannelClient {
  readonly #ssh: InstanceType<typeof Client>;

  private constructor(ssh: InstanceType<typeof Client>) {
    this.#ssh = ssh;
  }

  static async connect(
    stream: Duplex,
    credentials: ChannelCredentials,
    options: ResyncOptions & { readyTimeoutMs?: number } = {},
  ): Promise<ChannelClient> {
    await resyncClient(stream, options);
    const pinned = utils.parseKey(credentials.hostPublicKey);
    if (pinned instanceof Error)
      throw new TetherError('TETHER_CONFIG_INVALID', `agent host key: ${pinned.message}`);
    const expected = (Array.isArray(pinned) ? pinned[0]! : pinned).getPublicSSH();
    const ssh = new Client();
    let hostKeyMismatch = false;
    await new Promise<void>((resolve, reject) => {
      ssh.once('ready', () => resolve());
      // `on`, not `once`: ssh2 can report a second error before ready (a handshake timeout, then "Connection
      // lost before handshake"), and an unheard 'error' would crash the caller. Only the first one counts.
      ssh.on('error', (error) =>
        reject(
          hostKeyMismatch
            ? new TetherError(
                'TETHER_HOST_KEY_MISMATCH',
                "the agent's host key is not the pinned one: refusing to talk to it",
              )
            : /authentication/i.test(error.message)
              ? new TetherError(
                  'TETHER_AUTH_FAILED',
                  `the agent refused this client's key (${error.message})`,
                  { cause: error },
                )
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
    return new Promise((resolve, reject) =>
      this.#ssh.subsys(name, (error, channel) => (error ? reject(error) : resolve(channel))),
    );
  }

  async exec(params: ExecParams): Promise<ExecHandle> {
    const channel = await this.#subsystem(execRequest.subsystem);
    const stdout = new PassThrough();
    const exit = exitFrom(channel);
    // Before the reply: a process that fails at once sends its reply, output and EOF in one read.
    channel.on('end', () => stdout.end());
    channel.write(encodeParams(execRequest, params));
    const result = await readReply(execRequest, channel, (chunk) => {
      if (!stdout.write(chunk)) {
        channel.pause();
        stdout.once('drain', () => channel.resume());
      }
    });
    return {
      pid: result.pid,
      stdout,
      stderr: channel.stderr,
      stdin: channel,
      resize: (size) => sendWindowChange(channel, size),
      signal: (name) => void channel.signal(name.replace(/^SIG/, '')),
      exit,
    };
  }

  /**
   * Attaches to the main process. With `output: false` the channel carries no output (read it from the
   * log-port file), only stdin, resize, signals and the exit status; `onFrame` is then never called.
   */
  async attach(
    params: AttachParams,
    handlers: AttachHandlers = { onFrame: () => {} },
  ): Promise<AttachHandle> {
    const channel = await this.#subsystem(attachRequest.subsystem);
    const exit = exitFrom(channel);
    const frames = new LogFrameDecoder();
    const onError = handlers.onError ?? (() => {});
    let offset = 0;
    channel.stderr.on('data', (chunk: Buffer) =>
      onError(new TetherError('TETHER_OFFSET_GONE', chunk.toString().trim())),
    );
    channel.write(encodeParams(attachRequest, params));
    const result = await readReply(
      attachRequest,
      channel,
      (chunk) => {
        try {
          for (const frame of frames.push(chunk)) {
            offset += frame.data.length;
            handlers.onFrame(frame);
          }
        } catch (error) {
          onError(error as Error);
          channel.close();
        }
      },
      (reply) => (offset = reply.offset),
    );
    return {
      result,
      get offset() {
        return offset;
      },
      stdin: channel,
      resize: (size: TerminalSize) => sendWindowChange(channel, size),
      signal: (name: string) => void channel.signal(name.replace(/^SIG/, '')),
      detach: () => channel.close(),
      exit,
    };
  }

  /** A path in the container (lstat); TETHER_PATH_NOT_FOUND when it is not there. */
  async archiveStat(path: string): Promise<ArchiveStat> {
    const channel = await this.#subsystem(archiveStatRequest.subsystem);
    channel.write(encodeParams(archiveStatRequest, { path }));
    const result = await readReply(archiveStatRequest, channel, () => {});
    return result.stat;
  }

  /**
   * A tar stream of a path in the container (docker cp CTR:PATH), entries named under the path's last
   * component. Rejects with TETHER_PATH_NOT_FOUND before any byte when the path is not there.
   */
  async archiveGet(path: string): Promise<ArchiveGetHandle> {
    const channel = await this.#subsystem(archiveGetRequest.subsystem);
    const tar = new PassThrough();
    const done = archiveOutcome(channel, `archive of ${path}`);
    done.catch(() => {}); // the caller awaits it; after a failed reply nobody does
    channel.on('end', () => tar.end());
    channel.write(encodeParams(archiveGetRequest, { path }));
    const result = await readReply(archiveGetRequest, channel, (chunk) => {
      if (!tar.write(chunk)) {
        channel.pause();
        tar.once('drain', () => channel.resume());
      }
    });
    // The caller may give up on the tar (destroy it): close the channel so the agent stops packing.
    tar.once('close', () => channel.close());
    return { stat: result.stat, tar, done };
  }

  /**
   * Extracts a tar stream into a directory of the container (docker cp SRC CTR:DIR). Rejects with
   * TETHER_PATH_NOT_FOUND before reading `tar` when the directory is not there (the caller still owns `tar`),
   * and with TETHER_ARCHIVE_FAILED when the agent could not extract it.
   */
  async archivePut(path: string, tar: Readable, options: Omit<ArchivePutParams, 'path'> = {}): Promise<void> {
    const channel = await this.#subsystem(archivePutRequest.subsystem);
    const done = archiveOutcome(channel, `extracting into ${path}`);
    done.catch(() => {}); // awaited below; a failed reply must not leave it unhandled
    channel.write(encodeParams(archivePutRequest, { path, ...options }));
    await readReply(archivePutRequest, channel, () => {});
    // By hand rather than pipe(), so any stream with data/end/pause/resume works (tar-stream's streamx
    // packs too): the agent's SSH window pauses the tar when it falls behind; EOF when the tar ends.
    let open = true;
    const onData = (chunk: Buffer): void => {
      if (open && !channel.write(chunk)) {
        tar.pause();
        channel.once('drain', () => tar.resume());
      }
    };
    tar.on('data', onData);
    tar.once('end', () => open && channel.end());
    tar.once('error', () => open && channel.close());
    channel.once('close', () => {
      open = false;
      tar.off('data', onData);
    });
    await done;
  }

  /** One snapshot of the agent's and the container's resource use; resetPeak restarts the agent's peak RSS. */
  async stats(resetPeak = false): Promise<StatsResult> {
    const channel = await this.#subsystem(statsRequest.subsystem);
    const closed = new Promise<void>((resolve) => channel.on('close', () => resolve()));
    channel.write(encodeParams(statsRequest, resetPeak ? { resetPeak } : {}));
    const result = await readReply(statsRequest, channel, () => {});
    await closed;
    return result;
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
