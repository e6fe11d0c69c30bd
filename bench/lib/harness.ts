/**
 * What the benches share: starting `bin/tether --dev`, connecting a channel client, percentiles and a
 * plain-text table. Kept apart from test/helpers so that benches and tests can change independently.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ChannelClient } from '../../hostside/src/channel/client.ts';

export const REPO = new URL('../../', import.meta.url).pathname;

export interface BenchAgent {
  dir: string;
  process: ChildProcess;
  /** The agent's node process (bin/tether execs node, so the pid is the same). */
  pid: number;
  logs(): string;
  connect(): Promise<ChannelClient>;
  stop(): Promise<void>;
}

/** Fails early with the fix, rather than with a spawn error half-way through a run. */
export function requireBuild(): void {
  for (const file of ['bin/tether', 'bin/tether-exec']) {
    if (!existsSync(join(REPO, file))) throw new Error(`${file} is missing: run \`make build\` first`);
  }
}

export async function startAgent(options: { command?: string[]; args?: string[] } = {}): Promise<BenchAgent> {
  requireBuild();
  const dir = mkdtempSync(join(tmpdir(), 'tether-bench-'));
  const socket = join(dir, 'agent.sock');
  const state = join(dir, 'state');
  const args = ['--dev', '--socket', socket, '--state', state, ...(options.args ?? [])];
  if (options.command) args.push('--', ...options.command);
  // BENCH_AGENT_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") runs the same bundle that bin/tether
  // runs under node with those flags: node 20 refuses --cpu-prof in NODE_OPTIONS.
  const nodeArgs = process.env['BENCH_AGENT_NODE_ARGS']?.split(/\s+/).filter(Boolean);
  const child = nodeArgs
    ? spawn('node', [...nodeArgs, join(REPO, 'dist/tether.cjs'), ...args], {
        stdio: ['ignore', 'inherit', 'pipe'],
      })
    : spawn(join(REPO, 'bin/tether'), args, { stdio: ['ignore', 'inherit', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const fail = (message: string): Error => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    return new Error(message);
  };
  for (let i = 0; i < 400 && !existsSync(socket); i++) {
    if (child.exitCode !== null) throw fail(`agent exited ${child.exitCode}: ${stderr}`);
    await sleep(25);
  }
  if (!existsSync(socket)) throw fail(`agent did not create ${socket}: ${stderr}`);
  const rawSocket = (): Promise<Socket> =>
    new Promise((resolve, reject) => {
      const s = connect(socket);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
  return {
    dir,
    process: child,
    pid: child.pid!,
    logs: () => stderr,
    connect: async () =>
      ChannelClient.connect(await rawSocket(), {
        privateKey: readFileSync(join(state, 'id_client'), 'utf8'),
        hostPublicKey: readFileSync(join(state, 'ssh_host_key.pub'), 'utf8'),
      }),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A process's peak resident set (VmHWM) in KiB, or undefined where /proc does not say. */
export function peakRssKiB(pid: number): number | undefined {
  try {
    const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Nearest-rank percentile (p in 0..100) of unsorted samples. */
export function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

export function median(samples: number[]): number {
  return percentile(samples, 50);
}

/** Prints rows as an aligned table: the first column left-aligned, the others right-aligned. */
export function printTable(title: string, header: string[], rows: string[][]): void {
  const widths = header.map((cell, i) => Math.max(cell.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  console.log(`\n${title}`);
  console.log(line(header));
  console.log(widths.map((width) => '-'.repeat(width)).join('  '));
  for (const row of rows) console.log(line(row));
}

export const fixed = (value: number, digits = 2): string => value.toFixed(digits);
export const ratio = (value: number, baseline: number): string => `${(value / baseline).toFixed(2)}x`;

/** One line about the machine, since the figures only compare within a run. */
export function describeMachine(): string {
  const load = readFileSafe('/proc/loadavg')?.split(' ').slice(0, 3).join(' ') ?? '?';
  return `node ${process.version}, ${process.platform}/${process.arch}, load ${load}`;
}

function readFileSafe(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}
