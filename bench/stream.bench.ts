/**
 * Stream throughput: 256 MiB from the main process's stdout, through the agent (output log, attach pump,
 * log frames, SSH channel) to an attach client; against the same bytes from the same command piped
 * through a plain unix socket by a separate Node process. Rounds alternate between the two so that both
 * see the same machine; the ratio of the medians is the figure to read.
 *
 * The command waits on a FIFO before it writes, and the clock starts when the bench opens that gate:
 * otherwise the agent would read (and buffer) up to --buffer-bytes before the client attaches, and the
 * channel would look faster than it is.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { STREAM_STDOUT } from '../protocol/src/logs/log-frame.ts';
import {
  describeMachine,
  fixed,
  median,
  peakRssKiB,
  printTable,
  ratio,
  REPO,
  requireBuild,
  startAgent,
  type BenchAgent,
} from './lib/harness.ts';

/** 256 MiB unless BENCH_BYTES says otherwise (e.g. to check that memory stays flat over more bytes). */
const TOTAL_BYTES = Number(process.env['BENCH_BYTES'] ?? 256 * 1024 * 1024);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const MIB = 1024 * 1024;

interface Result {
  seconds: number;
  peakRssKiB: number | undefined;
}

/** The command both sides run: wait for the gate, then write TOTAL_BYTES to stdout. */
function gatedCommand(fifo: string): string[] {
  return ['/bin/sh', '-c', `read _ < "$1"; exec head -c ${TOTAL_BYTES} /dev/zero`, 'sh', fifo];
}

function makeFifo(dir: string): string {
  const fifo = join(dir, 'gate');
  execFileSync('mkfifo', [fifo]);
  return fifo;
}

/** Opens the gate; resolves once the command has read it. */
async function openGate(fifo: string): Promise<void> {
  await writeFile(fifo, 'go\n');
}

async function channelRound(): Promise<Result> {
  const dir = mkdtempSync(join(tmpdir(), 'tether-bench-gate-'));
  const fifo = makeFifo(dir);
  let agent: BenchAgent | undefined;
  try {
    agent = await startAgent({ command: gatedCommand(fifo) });
    const client = await agent.connect();
    let bytes = 0;
    let otherBytes = 0;
    let error: Error | undefined;
    const handle = await client.attach(
      { from: 'start', stdin: false },
      {
        onFrame(frame) {
          if (frame.stream === STREAM_STDOUT) bytes += frame.data.length;
          else otherBytes += frame.data.length;
        },
        onError(e) {
          error = e;
        },
      },
    );
    const started = performance.now();
    await openGate(fifo);
    const exit = await handle.exit;
    const seconds = (performance.now() - started) / 1000;
    const peak = peakRssKiB(agent.pid);
    client.close();
    if (error) throw error;
    if (exit?.exitCode !== 0) throw new Error(`main process exit ${JSON.stringify(exit)}\n${agent.logs()}`);
    if (bytes !== TOTAL_BYTES || otherBytes !== 0) {
      throw new Error(`attach got ${bytes} stdout bytes (+${otherBytes} other), expected ${TOTAL_BYTES}`);
    }
    return { seconds, peakRssKiB: peak };
  } finally {
    await agent?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function baselineRound(): Promise<Result> {
  const dir = mkdtempSync(join(tmpdir(), 'tether-bench-pipe-'));
  const fifo = makeFifo(dir);
  const socketPath = join(dir, 'pipe.sock');
  const server: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', join(REPO, 'bench/lib/pipe-server.ts'), socketPath, '--', ...gatedCommand(fifo)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  try {
    await once(server.stdout!, 'data'); // "listening"
    const socket = connect(socketPath);
    await once(socket, 'connect');
    let bytes = 0;
    socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
    const ended = once(socket, 'end');
    const started = performance.now();
    await openGate(fifo);
    await ended;
    const seconds = (performance.now() - started) / 1000;
    const peak = peakRssKiB(server.pid!);
    socket.destroy();
    if (bytes !== TOTAL_BYTES) throw new Error(`plain socket got ${bytes} bytes, expected ${TOTAL_BYTES}`);
    return { seconds, peakRssKiB: peak };
  } finally {
    if (server.exitCode === null && server.signalCode === null) {
      const exited = once(server, 'exit');
      server.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  requireBuild();
  console.log(
    `stream: ${TOTAL_BYTES / MIB} MiB of stdout per round, ${ROUNDS} rounds each, alternating; ${availableParallelism()} cpus, ${describeMachine()}`,
  );
  const channel: Result[] = [];
  const baseline: Result[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate which goes first, so that neither always runs on a warmer (or busier) machine.
    if (round % 2 === 0) {
      baseline.push(await baselineRound());
      channel.push(await channelRound());
    } else {
      channel.push(await channelRound());
      baseline.push(await baselineRound());
    }
  }

  const mibPerSecond = (r: Result) => TOTAL_BYTES / MIB / r.seconds;
  const rows = (name: string, results: Result[]) =>
    results.map((r, i) => [
      `${name} #${i + 1}`,
      fixed(r.seconds, 3),
      fixed(mibPerSecond(r), 1),
      r.peakRssKiB === undefined ? '?' : fixed(r.peakRssKiB / 1024, 1),
    ]);
  printTable(
    'each round (peak RSS: the agent, or the plain server, VmHWM at the end)',
    ['round', 'seconds', 'MiB/s', 'peak RSS MiB'],
    [...rows('channel (attach)', channel), ...rows('plain unix socket', baseline)],
  );

  const channelRate = median(channel.map(mibPerSecond));
  const baselineRate = median(baseline.map(mibPerSecond));
  const peak = Math.max(...channel.map((r) => r.peakRssKiB ?? 0));
  printTable(
    'median of the rounds (ratio = channel / plain socket, same run; 1.00x would be free)',
    ['case', 'MiB/s', 'ratio'],
    [
      ['channel (attach)', fixed(channelRate, 1), ratio(channelRate, baselineRate)],
      ['plain unix socket', fixed(baselineRate, 1), '1.00x'],
    ],
  );
  console.log(`\nagent peak RSS over the rounds: ${peak > 0 ? `${fixed(peak / 1024, 1)} MiB` : 'unknown'}`);
}

await main();
