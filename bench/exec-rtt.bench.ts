/**
 * Exec round trip: open an exec session over the channel, run `true`, get its exit status; against
 * spawning `true` from Node on the host. Both run interleaved in one loop (alternating which goes first),
 * so that a noisy neighbour slows both alike and the ratio stays meaningful when the absolute times do not.
 *
 * A third row, spawning `tether-exec -- true` from Node, is what the agent itself does per exec: the gap
 * between it and the channel row is the channel's own cost (SSH channel open, request frames, exit-status).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import type { ChannelClient } from '../hostside/src/channel/client.ts';
import { timeExecTrue } from './lib/channel-exec.ts';
import { describeMachine, fixed, percentile, printTable, ratio, REPO, startAgent } from './lib/harness.ts';

const WARMUP = 20;
const ITERATIONS = Number(process.env['BENCH_ITERATIONS'] ?? 200);

function hostSpawn(command: string, args: string[]): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', (code) => {
      const elapsed = performance.now() - started;
      if (code === 0) resolve(elapsed);
      else reject(new Error(`${command} exited ${code}`));
    });
  });
}

async function main(): Promise<void> {
  const agent = await startAgent();
  const helper = join(REPO, 'bin/tether-exec');
  let client: ChannelClient | undefined;
  try {
    client = await agent.connect();
    const cases: [string, () => Promise<number>][] = [
      ['channel: exec true', () => timeExecTrue(client!)],
      ['host: spawn true', () => hostSpawn('true', [])],
      ['host: spawn tether-exec -- true', () => hostSpawn(helper, ['--', 'true'])],
    ];
    const samples = cases.map(() => [] as number[]);
    for (let i = 0; i < WARMUP + ITERATIONS; i++) {
      // Rotate the order so that no case always runs right after another (caches, scheduler).
      for (let k = 0; k < cases.length; k++) {
        const index = (i + k) % cases.length;
        const elapsed = await cases[index]![1]();
        if (i >= WARMUP) samples[index]!.push(elapsed);
      }
    }

    const [channel, baseline] = [samples[0]!, samples[1]!];
    const p50 = (s: number[]) => percentile(s, 50);
    const p99 = (s: number[]) => percentile(s, 99);
    console.log(
      `exec round trip: ${ITERATIONS} iterations after ${WARMUP} warm-up, one connection; ${availableParallelism()} cpus, ${describeMachine()}`,
    );
    printTable(
      'ms per command (ratio = against host: spawn true, same run)',
      ['case', 'p50 ms', 'p99 ms', 'p50 ratio', 'p99 ratio'],
      cases.map(([name], index) => {
        const s = samples[index]!;
        return [
          name,
          fixed(p50(s)),
          fixed(p99(s)),
          ratio(p50(s), p50(baseline)),
          ratio(p99(s), p99(baseline)),
        ];
      }),
    );
    console.log(
      `\nchannel overhead over the helper it spawns: p50 ${fixed(p50(channel) - p50(samples[2]!))} ms`,
    );
  } finally {
    client?.close();
    await agent.stop();
  }
}

await main();
