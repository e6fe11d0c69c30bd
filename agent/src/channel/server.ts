/**
 * The agent's channel server: on each byte stream (a unix socket connection in --dev mode, the serial
 * port in a VM) it runs the resync handshake, then an SSH server with its host key and the pinned client
 * keys. Standard RFC 4254 sessions (exec, shell, pty-req, env, window-change, signal) work with a stock
 * OpenSSH client; the agent's own requests (exec@tether, attach@tether, status@tether) are subsystems.
 * A bad client (garbage, unknown key, malformed request) loses its own connection, nobody else's.
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

/** How long a client may take to start SSH once the resync handshake is done. */
const SSH_IDENT_TIMEOUT_MS = 30_000;
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
}

export interface ChannelKeysConfig {
  hostKey: string;
  authorizedKeys: string[];
}

type ParsedKey = ssh2.ParsedKey;

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
  #nextConnection = 1;
  #nextClient = 1;

  constructor(keys: ChannelKeysConfig, services: ChannelServices) {
    this.#services = services;
    this.#authorized = parsePublicKeys(keys.authorizedKeys);
    this.#server = new Server({ hostKeys: [keys.hostKey], ident: 'tether' }, (client) =>
      this.#onClient(client),
    );
  }

  /** Serves one byte stream until it closes; never throws (a bad peer only loses its own stream). */
  async serve(stream: Duplex, label = `connection ${this.#nextConnection++}`): Promise<void> {
    const log = (message: string): void => this.#services.logger(`channel ${label}: ${message}`);
    try {
      await awaitResync(stream);
    } catch (error) {
      log(`rejected before SSH: ${describeError(error)}`);
      stream.destroy();
      return;
    }
    try {
      await expectSshIdent(stream, SSH_IDENT_TIMEOUT_MS);
    } catch (error) {
      log(`rejected after the handshake: ${describeError(error)}`);
      stream.destroy();
      return;
    }
    log('handshake done, starting SSH');
    this.#server.injectSocket(stream as never);
    await new Promise<void>((resolve) => stream.once('close', () => resolve()));
  }

  #onClient(client: Connection): void {
    const label = `ssh client ${this.#nextClient++}`;
    const log = (message: string): void => this.#services.logger(`channel ${label}: ${message}`);
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
