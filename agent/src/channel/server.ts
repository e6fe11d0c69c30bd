/**
 * The agent's channel server: on each byte stream (a unix socket connection in --dev mode, the serial
 * port in a VM) it runs the resync handshake, then an SSH server with its host key and the pinned client
 * keys. Standard RFC 4254 sessions (exec, shell, pty-req, env, window-change, signal) work with a stock
 * OpenSSH client; the agent's own requests (exec@tether, attach@tether, status@tether) are subsystems.
 * A bad client (garbage, unknown key, malformed request) loses its own connection, nobody else's.
 *
 * Until its SSH client has authenticated, a connection is on probation: it must get there within
 * `handshakeTimeoutMs` (resync, SSH key exchange and auth together), and at most `maxUnauthenticated`
 * connections may be on probation at once; a new one pushes the oldest out. So idle or slow peers cannot
 * hold the agent's descriptors or memory and lock everyone else out.
 */
import { createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import ssh2, {
  type AuthContext,
  type Connection,
  type ServerChannel,
  type Session as SshSession,
} from 'ssh2';
import { describeError, TetherError } from '../../../protocol/src/errors/errors.ts';
import type { TerminalSize } from '../../../protocol/src/requests/requests.ts';
import type { MainProcess } from '../process/main-process.ts';
import type { ExecFactory } from '../process/exec-factory.ts';
import type { OutputLog } from '../process/output-log.ts';
import type { StatusReporter } from '../status/reporter.ts';
import { awaitResync, expectSshIdent } from './resync-driver.ts';
import { serveSubsystem } from './subsystems.ts';
import { pipeSession } from './session-pipe.ts';

const { Server, utils } = ssh2;

export interface ChannelServices {
  main: MainProcess | undefined;
  log: OutputLog;
  status: StatusReporter;
  exec: ExecFactory;
  logger: (message: string) => void;
  /** The container's root on this machine, for the archive requests: / in a VM, --rootfs in --dev mode. */
  rootDir?: string;
  /** The container's cgroup directory, for stats@tether (none in --dev mode). */
  containerCgroup?: () => string | undefined;
}

export interface ChannelKeysConfig {
  hostKey: string;
  authorizedKeys: string[];
}

type ParsedKey = ssh2.ParsedKey;

/** What a connection may cost before its SSH client has authenticated. */
export interface ChannelLimits {
  /** From the first byte to an authenticated SSH client: resync, key exchange and auth together. */
  handshakeTimeoutMs: number;
  /** Connections between accept and authentication at once; a new one closes the oldest. */
  maxUnauthenticated: number;
}

export const DEFAULT_CHANNEL_LIMITS: ChannelLimits = { handshakeTimeoutMs: 10_000, maxUnauthenticated: 64 };

/**
 * The limits, with `TETHER_CHANNEL_HANDSHAKE_TIMEOUT_MS` and `TETHER_CHANNEL_MAX_UNAUTHENTICATED` from
 * `env` in place of the defaults (tests shorten the deadline this way). A value that is not a positive
 * integer is refused by name.
 */
export function channelLimitsFromEnv(env: NodeJS.ProcessEnv): ChannelLimits {
  const read = (name: string, fallback: number): number => {
    const text = env[name];
    if (text === undefined || text === '') return fallback;
    const value = Number(text);
    if (!Number.isSafeInteger(value) || value < 1)
      throw new TetherError('TETHER_CONFIG_INVALID', `${name}=${text}: expected a positive integer`);
    return value;
  };
  return {
    handshakeTimeoutMs: read(
      'TETHER_CHANNEL_HANDSHAKE_TIMEOUT_MS',
      DEFAULT_CHANNEL_LIMITS.handshakeTimeoutMs,
    ),
    maxUnauthenticated: read('TETHER_CHANNEL_MAX_UNAUTHENTICATED', DEFAULT_CHANNEL_LIMITS.maxUnauthenticated),
  };
}

/** A connection whose SSH client has not authenticated yet. */
interface Probation {
  timer: NodeJS.Timeout;
  log: (message: string) => void;
}

/** HACK: ssh2 hands the server no link from a Connection to the stream it was injected with but this one. */
function streamOf(client: Connection): Duplex | undefined {
  return (client as unknown as { _sock?: Duplex })._sock;
}

function parsePublicKeys(lines: string[]): ParsedKey[] {
  return lines.map((line) => {
    const parsed = utils.parseKey(line);
    if (parsed instanceof Error)
      throw new TetherError('TETHER_CONFIG_INVALID', `authorized key: ${parsed.message}`);
    return Array.isArray(parsed) ? parsed[0]! : parsed;
  });
}

export function fingerprint(publicSsh: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(publicSsh).digest('base64').replace(/=+$/, '');
}

export class ChannelServer {
  readonly #services: ChannelServices;
  readonly #authorized: ParsedKey[];
  readonly #server: InstanceType<typeof Server>;
  readonly #limits: ChannelLimits;
  /** Oldest first (a Map keeps insertion order). */
  readonly #probation = new Map<Duplex, Probation>();
  #nextConnection = 1;
  #nextClient = 1;

  constructor(
    keys: ChannelKeysConfig,
    services: ChannelServices,
    limits: ChannelLimits = channelLimitsFromEnv(process.env),
  ) {
    this.#services = services;
    this.#limits = limits;
    this.#authorized = parsePublicKeys(keys.authorizedKeys);
    this.#server = new Server({ hostKeys: [keys.hostKey], ident: 'tether' }, (client) =>
      this.#onClient(client),
    );
  }

  /** Serves one byte stream until it closes; never throws (a bad peer only loses its own stream). */
  async serve(stream: Duplex, label = `connection ${this.#nextConnection++}`): Promise<void> {
    const log = (message: string): void => this.#services.logger(`channel ${label}: ${message}`);
    this.#admit(stream, log);
    try {
      await awaitResync(stream);
    } catch (error) {
      log(`rejected before SSH: ${describeError(error)}`);
      stream.destroy();
      return;
    }
    try {
      await expectSshIdent(stream, this.#limits.handshakeTimeoutMs);
    } catch (error) {
      log(`rejected after the handshake: ${describeError(error)}`);
      stream.destroy();
      return;
    }
    log('handshake done, starting SSH');
    this.#server.injectSocket(stream as never);
    await new Promise<void>((resolve) => stream.once('close', () => resolve()));
  }

  /** Puts a new connection on probation until its SSH client authenticates; makes room if need be. */
  #admit(stream: Duplex, log: (message: string) => void): void {
    while (this.#probation.size >= this.#limits.maxUnauthenticated) {
      const [oldest, entry] = this.#probation.entries().next().value!;
      this.#release(oldest);
      entry.log(
        `too many connections before the handshake (${this.#limits.maxUnauthenticated}): closing the oldest, this one`,
      );
      oldest.destroy();
    }
    const { handshakeTimeoutMs } = this.#limits;
    const timer = setTimeout(() => {
      this.#release(stream);
      log(`no handshake within ${handshakeTimeoutMs} ms (resync, SSH and auth): closing`);
      stream.destroy();
    }, handshakeTimeoutMs);
    this.#probation.set(stream, { timer, log });
    stream.once('close', () => this.#release(stream));
  }

  #release(stream: Duplex): void {
    const entry = this.#probation.get(stream);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.#probation.delete(stream);
  }

  #onClient(client: Connection): void {
    const label = `ssh client ${this.#nextClient++}`;
    const log = (message: string): void => this.#services.logger(`channel ${label}: ${message}`);
    client.once('ready', () => {
      const stream = streamOf(client);
      if (stream) this.#release(stream);
    });
    client.on('error', (error) => log(`closed: ${error.message}`));
    client.on('authentication', (context) => this.#authenticate(context, log));
    client.on('session', (accept) => this.#onSession(accept(), log));
  }

  #authenticate(context: AuthContext, log: (message: string) => void): void {
    if (context.method !== 'publickey') {
      context.reject(['publickey']);
      return;
    }
    const offered = context.key;
    const match = this.#authorized.find(
      (key) => key.type === offered.algo && key.getPublicSSH().equals(offered.data),
    );
    if (!match) {
      log(
        `rejected public key ${fingerprint(offered.data)} (${offered.algo}) for user ${context.username}: not authorized`,
      );
      context.reject(['publickey']);
      return;
    }
    if (!context.signature) {
      context.accept(); // RFC 4252 §7: the client only asked whether this key would do.
      return;
    }
    if (match.verify(context.blob!, context.signature, context.hashAlgo) === true) context.accept();
    else {
      log(`bad signature for key ${fingerprint(offered.data)}`);
      context.reject(['publickey']);
    }
  }

  #onSession(session: SshSession, log: (message: string) => void): void {
    let tty: (TerminalSize & { term: string }) | undefined;
    const env: string[] = [];
    session.on('pty', (accept, _reject, info) => {
      tty = { cols: info.cols || 80, rows: info.rows || 24, term: info.term || 'xterm' };
      accept?.();
    });
    session.on('env', (accept, _reject, info) => {
      env.push(`${info.key}=${info.val}`);
      accept?.();
    });
    const run = (argv: string[], channel: () => ServerChannel): void => {
      let started;
      try {
        started = this.#services.exec.start({
          argv,
          env: tty ? [...env, `TERM=${tty.term}`] : env,
          stdin: true,
          ...(tty ? { tty: { cols: tty.cols, rows: tty.rows } } : {}),
        });
      } catch (error) {
        const stream = channel();
        stream.stderr.write(
          `tether: ${error instanceof TetherError ? error.message : describeError(error)}\n`,
        );
        stream.exit(126);
        stream.end();
        return;
      }
      pipeSession(started, channel(), session, log);
    };
    session.on('exec', (accept, _reject, info) => run(this.#services.exec.commandArgv(info.command), accept));
    session.on('shell', (accept) => run(['/bin/sh', '-l'], accept));
    session.on('subsystem', (accept, reject, info) => {
      if (!info.name.endsWith('@tether')) {
        log(`unknown subsystem ${JSON.stringify(info.name)}`);
        reject?.();
        return;
      }
      serveSubsystem(info.name, accept(), session, this.#services, log);
    });
  }
}
