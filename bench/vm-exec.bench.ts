/**
 * Exec round trip in a real VM (the boot image, microvm, TCG): over one channel connection, open an exec
 * session of `true` and wait for its exit status, BENCH_EXECS times; against the same guest spawning
 * /bin/true itself, each spawn timed in the guest by the shell ($EPOCHREALTIME before and after).
 *
 * The two are measured in blocks that alternate (BLOCK execs, then one exec of a shell loop that times
 * BLOCK spawns), so that a burst of host noise, which under TCG slows the whole guest, hits both. The
 * loop runs where exec sessions run (in the container, when the agent makes one), so the baseline is a
 * spawn as the container's own processes see it. BENCH_IMAGE_DIR boots another image (an older build)
 * with the same bench and the same host code; BENCH_COMPARE_IMAGE_DIR boots a second VM from another image
 * beside it, and the blocks alternate between the two VMs too.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChannelClient } from '../hostside/src/channel/client.ts';
import { connectVmChannel } from '../hostside/src/vm/channel-connect.ts';
import { QemuDriver } from '../hostside/src/vm/qemu/qemu-driver.ts';
import { execOutput, timeExecTrue } from './lib/channel-exec.ts';
import { describeMachine, fixed, percentile, printTable, ratio } from './lib/harness.ts';
import { bootImages, describeImages, startImageVm, type BootImage } from './lib/vm-image.ts';

const EXECS = Number(process.env['BENCH_EXECS'] ?? 50);
const WARMUP = 5;
/** Execs per block, and spawns per baseline loop between blocks. */
const BLOCK = 10;

/** $EPOCHREALTIME ("seconds.micros") as integer microseconds: a double holds them exactly. */
function micros(epochRealtime: string): number {
  const [seconds, fraction = ''] = epochRealtime.split('.');
  return Number(seconds) * 1e6 + Number(fraction.padEnd(6, '0').slice(0, 6));
}

/** The guest's shell spawning /bin/true `count` times, each timed: ms per spawn. */
async function guestSpawns(client: ChannelClient, count: number): Promise<number[]> {
  // The times are printed after the loop: a write to the session's pipe inside it would wake the agent,
  // which then shares the one vCPU with the spawns being timed.
  const loop =
    `t=; i=0; while [ $i -lt ${count} ]; do s=$EPOCHREALTIME; /bin/true; e=$EPOCHREALTIME; ` +
    `t="$t$s $e\n"; i=$((i+1)); done; printf "$t"`;
  const lines = (await execOutput(client, ['sh', '-c', loop])).trim().split('\n');
  const samples = lines.map((line) => {
    const [from, to] = line.trim().split(' ');
    if (!from || !to || !/^\d+\.\d+$/.test(from) || !/^\d+\.\d+$/.test(to))
      throw new Error(`the guest's shell has no $EPOCHREALTIME? it printed "${line}"`);
    return (micros(to) - micros(from)) / 1000;
  });
  if (samples.length !== count) throw new Error(`expected ${count} spawn timings, got ${samples.length}`);
  return samples;
}

interface BenchVm {
  image: BootImage;
  client: ChannelClient;
  execs: number[];
  spawns: number[];
  /** stats@tether round trips: a request channel without a process (empty when the agent has none). */
  requests: number[];
  hasStats: boolean;
  dispose(): Promise<void>;
}

/** Milliseconds from opening a stats@tether request to its reply and close: the channel's own cost. */
async function timeRequest(client: ChannelClient): Promise<number> {
  const started = performance.now();
  await client.stats();
  return performance.now() - started;
}

// On a busy host the TCG guest's clock watchdog drops the TSC for refined-jiffies, whose 4 ms steps would
// make every timed spawn 4, 8 or 12 ms. Trusting the TSC keeps the guest's clock fine-grained; the exec's
// own time is taken on the host.
const driver = new QemuDriver({ kernelArgs: ['tsc=reliable'] });

/** Boots the image with a main process that only waits (the container exec sessions join), connected. */
async function bootVm(image: BootImage): Promise<BenchVm> {
  const stateDir = mkdtempSync(join(tmpdir(), 'tether-bench-vmexec-'));
  const { vm, keys } = await startImageVm(driver, image, stateDir, ['sleep', '1000000']);
  let client: ChannelClient | undefined;
  const dispose = async (): Promise<void> => {
    client?.close();
    await vm.kill().catch(() => undefined);
    vm.release();
    rmSync(stateDir, { recursive: true, force: true });
  };
  try {
    client = await connectVmChannel(vm, { credentials: keys.credentials, timeoutMs: 180_000 });
    for (let i = 0; i < WARMUP; i++) await timeExecTrue(client);
    await guestSpawns(client, BLOCK);
    // Agents before stats@tether refuse it: their row is left out.
    const hasStats = await timeRequest(client).then(
      () => true,
      () => false,
    );
    return { image, client, execs: [], spawns: [], requests: [], hasStats, dispose };
  } catch (error) {
    await dispose();
    throw error;
  }
}

async function main(): Promise<void> {
  const images = bootImages();
  if (typeof images === 'string') {
    console.log(`vm exec bench skipped: ${images}`);
    return;
  }
  // Booted one after the other (a boot takes a whole core under TCG); an idle VM costs the host little.
  const vms: BenchVm[] = [];
  try {
    for (const image of images) vms.push(await bootVm(image));
    for (let round = 0; vms[0]!.execs.length < EXECS; round++) {
      const block = Math.min(BLOCK, EXECS - vms[0]!.execs.length);
      for (let k = 0; k < vms.length; k++) {
        const { client, execs, spawns, requests, hasStats } = vms[(round + k) % vms.length]!;
        for (let i = 0; i < block; i++) {
          execs.push(await timeExecTrue(client));
          if (hasStats) requests.push(await timeRequest(client));
        }
        spawns.push(...(await guestSpawns(client, block)));
      }
    }
    const clocks = await Promise.all(
      vms.map(async ({ client }) =>
        (
          await execOutput(client, [
            'cat',
            '/sys/devices/system/clocksource/clocksource0/current_clocksource',
          ])
        ).trim(),
      ),
    );

    const p50 = (s: number[]): number => percentile(s, 50);
    const p99 = (s: number[]): number => percentile(s, 99);
    console.log(
      `vm exec round trip: ${EXECS} execs after ${WARMUP} warm-up, one connection per VM, blocks of ${BLOCK} ` +
        `alternating with the baseline${vms.length > 1 ? ' and between the VMs' : ''}; ${describeImages(images)}; ` +
        `microvm, ${driver.accel}, 256 MiB, guest clock ${clocks.join('/')}; ${describeMachine()}`,
    );
    printTable(
      'ms per command (ratio = against the same guest spawning /bin/true, same run)',
      ['case', 'p50 ms', 'p99 ms', 'p50 ratio', 'p99 ratio'],
      vms.flatMap(({ image, execs, spawns, requests }) => [
        [
          `${image.label}, guest: sh spawns /bin/true`,
          fixed(p50(spawns)),
          fixed(p99(spawns)),
          '1.00x',
          '1.00x',
        ],
        [
          `${image.label}, channel: exec true (open → exit status)`,
          fixed(p50(execs)),
          fixed(p99(execs)),
          ratio(p50(execs), p50(spawns)),
          ratio(p99(execs), p99(spawns)),
        ],
        ...(requests.length > 0
          ? [
              [
                `${image.label}, channel: stats request, no process (open → reply → close)`,
                fixed(p50(requests)),
                fixed(p99(requests)),
                ratio(p50(requests), p50(spawns)),
                ratio(p99(requests), p99(spawns)),
              ],
            ]
          : []),
      ]),
    );
    console.log('');
    for (const { image, execs, spawns, requests } of vms)
      console.log(
        `${image.label}: exec overhead over a guest spawn, p50 ${fixed(p50(execs) - p50(spawns))} ms` +
          (requests.length > 0
            ? `; of an exec, the request channel alone (stats) is ${fixed(p50(requests))} ms and starting ` +
              `and reaping the process through the helper the other ${fixed(p50(execs) - p50(requests))} ms`
            : ''),
      );
    if (vms.length === 2) {
      const [a, b] = [vms[0]!, vms[1]!];
      console.log(
        `compare / tether: exec p50 ${ratio(p50(b.execs), p50(a.execs))}, p99 ${ratio(p99(b.execs), p99(a.execs))}; ` +
          `spawn p50 ${ratio(p50(b.spawns), p50(a.spawns))}`,
      );
    }
  } finally {
    for (const vm of vms) await vm.dispose();
  }
}

await main();
