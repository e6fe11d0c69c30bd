/** Starts `bin/tether --dev` in a temp dir and connects channel clients to it. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ChannelClient } from '../../hostside/src/channel/client.ts';
import { REPO } from './prerequisites.ts';

export interface DevAgent {
  dir: string;
  socket: string;
  state: string;
  process: ChildProcess;
  /** Everything the agent wrote to stderr so far. */
  logs(): string;
  connect(): Promise<ChannelClient>;
  rawSocket(): Promise<Socket>;
  stop(): Promise<void>;
}

export async function startDevAgent(
  options: { args?: string[]; command?: string[] } = {},
): Promise<DevAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'tether-dev-'));
  const socket = join(dir, 'agent.sock');
  const state = join(dir, 'state');
  const args = ['--dev', '--socket', socket, '--state', state, ...(options.args ?? [])];
  if (options.command) args.push('--', ...options.command);
  const child = spawn(join(REPO, 'bin/tether'), args, { stdio: ['ignore', 'inherit', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  for (let i = 0; i < 200 && !existsSync(socket); i++) {
    if (child.exitCode !== null) throw new Error(`agent exited ${child.exitCode}: ${stderr}`);
    await sleep(25);
  }
  if (!existsSync(socket)) throw new Error(`agent did not create ${socket}: ${stderr}`);
  const rawSocket = (): Promise<Socket> =>
    new Promise((resolve, reject) => {
      const s = connect(socket);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
  return {
    dir,
    socket,
    state,
    process: child,
    logs: () => stderr,
    rawSocket,
    connect: async () =>
      ChannelClient.connect(await rawSocket(), {
        privateKey: readFileSync(join(state, 'id_client'), 'utf8'),
        hostPublicKey: readFileSync(join(state, 'ssh_host_key.pub'), 'utf8'),
      }),
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Collects a readable stream into a string. */
export function collect(stream: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(Buffer.from(chunk)));
    stream.on('end', () => resolve(Buffer.concat(chunks).toString()));
    stream.on('error', reject);
  });
}

/** Runs a command over the channel; returns its output and exit. */
export async function run(
  client: ChannelClient,
  argv: string[],
  options: { stdin?: string; env?: string[]; user?: string; cwd?: string } = {},
): Promise<{ stdout: string; stderr: string; exitCode: number | undefined; signal: string | undefined }> {
  const handle = await client.exec({
    argv,
    stdin: options.stdin !== undefined,
    ...(options.env ? { env: options.env } : {}),
    ...(options.user ? { user: options.user } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
  });
  if (options.stdin !== undefined) handle.stdin.end(options.stdin);
  const [stdout, stderr, exit] = await Promise.all([
    collect(handle.stdout),
    collect(handle.stderr),
    handle.exit,
  ]);
  return { stdout, stderr, exitCode: exit?.exitCode, signal: exit?.signal };
}
