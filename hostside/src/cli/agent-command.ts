/**
 * `tetherctl agent --socket PATH --state DIR <command>`: talks to one agent directly, as a debugging
 * tool (Kata's agent-ctl plays the same role): exec, attach, proxy for a stock OpenSSH client, status,
 * stats.
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import { STREAM_STDERR } from '../../../protocol/src/logs/log-frame.ts';
import type { AttachFrom } from '../../../protocol/src/requests/requests.ts';
import { formatStatusRecord } from '../../../protocol/src/status/status.ts';
import { ChannelClient, type ExitResult } from '../channel/client.ts';
import { resyncClient } from '../channel/resync.ts';
import { DetachKeyScanner, parseDetachKeys } from './detach-keys.ts';
import { withTerminal } from './terminal.ts';

export const AGENT_USAGE = `usage: tetherctl agent --socket PATH --state DIR <command>

commands:
  exec [-t] [-i] [-e K=V]... [-u USER] [-w DIR] -- CMD...   run a command in the agent's container
  attach [--from start|end|OFFSET] [--no-stdin] [--detach-keys KEYS]
                                                          attach to the main process (detach: ctrl-p ctrl-q)
  proxy                                                   resync, then pipe stdin/stdout (ssh ProxyCommand)
  status [--follow]                                       print the agent's boot and process status records
  stats [--reset-peak]                                    print the agent's and the container's resource use (JSON)`;

function usage(message: string): TetherError {
  return new TetherError('TETHER_USAGE', `${message}\n${AGENT_USAGE}`);
}

function openSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new TetherError(
          'TETHER_CHANNEL_CLOSED',
          `cannot connect to the agent at ${path}: ${error.code ?? error.message}; is \`tether --dev --socket ${path}\` running?`,
        ),
      ),
    );
  });
}

function readKey(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new TetherError(
      'TETHER_USAGE',
      `cannot read ${what} ${file}: ${(error as NodeJS.ErrnoException).code}; is --state the agent's state directory?`,
    );
  }
}

async function connectAgent(socketPath: string, stateDir: string): Promise<ChannelClient> {
  const credentials = {
    privateKey: readKey(join(stateDir, 'id_client'), 'client key'),
    hostPublicKey: readKey(join(stateDir, 'ssh_host_key.pub'), 'agent host key'),
  };
  const socket = await openSocket(socketPath);
  try {
    return await ChannelClient.connect(socket, credentials, { timeoutMs: 10_000 });
  } catch (error) {
    // An open socket keeps the process alive: after the error is printed it must exit.
    socket.destroy();
    throw error;
  }
}

function exitCodeOf(result: ExitResult | undefined, fallback: number): number {
  return result?.exitCode ?? fallback;
}

export async function runAgentCommand(argv: string[]): Promise<number> {
  const commandAt = argv.findIndex((arg) => ['exec', 'attach', 'proxy', 'status', 'stats'].includes(arg));
  if (commandAt === -1) throw usage('missing command');
  const { values: global } = parseArgs({
    args: argv.slice(0, commandAt),
    options: { socket: { type: 'string' }, state: { type: 'string' } },
    strict: true,
  });
  if (!global.socket) throw usage('--socket is required');
  if (!global.state) throw usage('--state is required');
  const command = argv[commandAt]!;
  const rest = argv.slice(commandAt + 1);
  switch (command) {
    case 'exec':
      return exec(global.socket, global.state, rest);
    case 'attach':
      return attach(global.socket, global.state, rest);
    case 'proxy':
      return proxy(global.socket);
    case 'stats':
      return stats(global.socket, global.state, rest);
    default:
      return status(global.socket, global.state, rest);
  }
}

async function exec(socketPath: string, stateDir: string, argv: string[]): Promise<number> {
  const split = argv.indexOf('--');
  const { values, positionals } = parseArgs({
    args: split === -1 ? argv : argv.slice(0, split),
    options: {
      tty: { type: 'boolean', short: 't' },
      interactive: { type: 'boolean', short: 'i' },
      env: { type: 'string', short: 'e', multiple: true },
      user: { type: 'string', short: 'u' },
      workdir: { type: 'string', short: 'w' },
    },
    allowPositionals: true,
    strict: true,
  });
  const command = split === -1 ? positionals : [...positionals, ...argv.slice(split + 1)];
  if (command.length === 0) throw usage('exec needs a command: exec [-t] [-i] -- CMD...');
  const env = values.env ?? [];
  const bad = env.find((entry) => !entry.includes('='));
  if (bad) throw usage(`-e ${bad}: expected KEY=VALUE`);
  const tty = Boolean(values.tty);
  const client = await connectAgent(socketPath, stateDir);
  const size = { cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 };
  let handle;
  try {
    handle = await client.exec({
      argv: command,
      env,
      stdin: Boolean(values.interactive),
      ...(values.user ? { user: values.user } : {}),
      ...(values.workdir ? { cwd: values.workdir } : {}),
      ...(tty ? { tty: size } : {}),
    });
  } catch (error) {
    client.close();
    if (error instanceof TetherError && error.code === 'TETHER_USER_UNKNOWN') {
      process.stderr.write(`tetherctl: ${error.message}\n`);
      return 126;
    }
    throw error;
  }
  const running = handle;
  handle.stdout.pipe(process.stdout);
  handle.stderr.pipe(process.stderr);
  const result = await withTerminal(
    tty && Boolean(values.interactive),
    (size) => running.resize(size),
    async () => {
      if (values.interactive) {
        process.stdin.pipe(running.stdin);
      }
      return running.exit;
    },
  );
  process.stdin.unpipe();
  process.stdin.pause();
  client.close();
  return exitCodeOf(result, 255);
}

async function attach(socketPath: string, stateDir: string, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      from: { type: 'string', default: 'start' },
      'no-stdin': { type: 'boolean' },
      'detach-keys': { type: 'string', default: 'ctrl-p,ctrl-q' },
    },
    strict: true,
  });
  const from: AttachFrom =
    values.from === 'start' || values.from === 'end' ? values.from : Number(values.from);
  if (typeof from === 'number' && !(Number.isSafeInteger(from) && from >= 0))
    throw usage('--from must be start, end or a byte offset');
  const detachKeys = parseDetachKeys(values['detach-keys']);
  const stdin = !values['no-stdin'];
  const client = await connectAgent(socketPath, stateDir);
  const handle = await client.attach(
    { from, stdin },
    {
      onFrame: (frame) =>
        (frame.stream === STREAM_STDERR ? process.stderr : process.stdout).write(frame.data),
      onError: (error) => process.stderr.write(`tetherctl: ${error.message}\n`),
    },
  );
  let detached = false;
  const result = await withTerminal(
    stdin && handle.result.tty,
    (size) => handle.resize(size),
    async () => {
      if (stdin) {
        const scanner = new DetachKeyScanner(detachKeys);
        process.stdin.on('data', (chunk: Buffer) => {
          const { forward, detach } = scanner.push(chunk);
          if (forward.length > 0) handle.stdin.write(forward);
          if (detach) {
            detached = true;
            handle.detach();
          }
        });
      }
      return handle.exit;
    },
  );
  process.stdin.pause();
  client.close();
  if (detached) {
    process.stderr.write(
      `\ntetherctl: detached at offset ${handle.offset}; reattach with --from ${handle.offset}\n`,
    );
    return 0;
  }
  if (!result) {
    process.stderr.write(`tetherctl: channel closed at offset ${handle.offset} before the process exited\n`);
    return 255;
  }
  return result.exitCode;
}

async function proxy(socketPath: string): Promise<number> {
  const socket = await openSocket(socketPath);
  try {
    await resyncClient(socket, { timeoutMs: 10_000 });
  } catch (error) {
    socket.destroy();
    throw error;
  }
  socket.pipe(process.stdout);
  process.stdin.pipe(socket);
  socket.resume();
  await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return 0;
}

async function status(socketPath: string, stateDir: string, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { follow: { type: 'boolean', short: 'f' } },
    strict: true,
  });
  const client = await connectAgent(socketPath, stateDir);
  await client.status(Boolean(values.follow), (record) =>
    process.stdout.write(formatStatusRecord(record) + '\n'),
  );
  client.close();
  return 0;
}

async function stats(socketPath: string, stateDir: string, argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { 'reset-peak': { type: 'boolean' } },
    strict: true,
  });
  const client = await connectAgent(socketPath, stateDir);
  try {
    const result = await client.stats(Boolean(values['reset-peak']));
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  } finally {
    client.close();
  }
  return 0;
}
