/**
 * How the agent waits on its virtio-serial ports, measured in a real VM (the boot image, microvm, TCG):
 *
 * 1. Stream: the main process writes 64 MiB to stdout (`head -c 67108864 /dev/zero`); the agent frames it
 *    onto the log port, which QEMU backs with a file on the host. Timed on the host, from the guest's start
 *    marker on the console to the last payload byte in the log file, against the same command writing to
 *    /dev/null in the same guest (timed there).
 * 2. Round trip: exec of `true` over the channel (open a session, send the parameters, get the exit
 *    status), p50 over BENCH_ITERATIONS runs, against the guest's own shell spawning /bin/true.
 *
 * BENCH_IMAGE_DIR picks the image (default build/image), so an older build can be measured the same way.
 */
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChannelClient } from '../hostside/src/channel/client.ts';
import { connectVmChannel } from '../hostside/src/vm/channel-connect.ts';
import { generateChannelKeys } from '../hostside/src/vm/channel-keys.ts';
import { QemuDriver } from '../hostside/src/vm/qemu/qemu-driver.ts';
import type { AgentConfig } from '../protocol/src/config/config.ts';
import { LOG_HEADER_BYTES } from '../protocol/src/logs/log-frame.ts';
import { execOutput, timeExecTrue } from './lib/channel-exec.ts';
import { describeMachine, fixed, percentile, printTable, ratio, REPO } from './lib/harness.ts';

const IMAGE = process.env['BENCH_IMAGE_DIR'] ?? join(REPO, 'build/image');
const STREAM_BYTES = 64 * 1024 * 1024;
const ITERATIONS = Number(process.env['BENCH_ITERATIONS'] ?? 30);
const WARMUP = 5;
const SPAWNS = 100;
const STEP_MS = 5;
const TIMEOUT_MS = 300_000;

const uptime = `$(cut -d' ' -f1 /proc/uptime)`;
/** The main process: the /dev/null baseline three times, then the stream, then it idles for the exec runs. */
const SCRIPT = [
  `for i in 1 2 3; do s=${uptime}; head -c ${STREAM_BYTES} /dev/zero >/dev/null; echo "BENCH-NULL $s ${uptime}" >/dev/console; done`,
  `echo "BENCH-STREAM-START" >/dev/console`,
  `head -c ${STREAM_BYTES} /dev/zero`,
  `echo "BENCH-STREAM-WRITTEN" >/dev/console`,
  `exec sleep 100000`,
].join('\n');

/** Payload bytes in the complete log frames of a file that is still growing; `broken` if the framing is. */
class FrameCounter {
  #at = 0;
  payload = 0;
  broken: string | undefined;
  readonly #header = Buffer.alloc(LOG_HEADER_BYTES);

  constructor(readonly path: string) {}

  update(): number {
    if (this.broken !== undefined || !existsSync(this.path)) return this.payload;
    const size = statSync(this.path).size;
    const fd = openSync(this.path, 'r');
    try {
      while (this.#at + LOG_HEADER_BYTES <= size) {
        readSync(fd, this.#header, 0, LOG_HEADER_BYTES, this.#at);
        if (this.#header[0] !== 0x7e) {
          this.broken = `no frame magic at offset ${this.#at}`;
          break;
        }
        const length = this.#header.readUInt32BE(2);
        if (this.#at + LOG_HEADER_BYTES + length > size) break;
        this.#at += LOG_HEADER_BYTES + length;
        this.payload += length;
      }
    } finally {
      closeSync(fd);
    }
    return this.payload;
  }
}

/** When the file last grew, once it holds at least `bytes` and has not grown for `quietMs`. */
class GrowthWatch {
  #size = 0;
  #grewAt = performance.now();

  constructor(
    readonly path: string,
    readonly bytes: number,
    readonly quietMs: number,
  ) {}

  done(): number | undefined {
    const size = existsSync(this.path) ? statSync(this.path).size : 0;
    const now = performance.now();
    if (size !== this.#size) {
      this.#size = size;
      this.#grewAt = now;
    }
    return size >= this.bytes && now - this.#grewAt >= this.quietMs ? this.#grewAt : undefined;
  }

  get size(): number {
    return this.#size;
  }
}

async function waitFor<T>(what: string, probe: () => T | undefined, console: () => string): Promise<T> {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    const found = probe();
    if (found !== undefined) return found;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}; console tail:\n${console().slice(-2000)}`);
    await sleep(STEP_MS);
  }
}

async function main(): Promise<void> {
  const stateDir = mkdtempSync(join(tmpdir(), 'tether-bench-port-'));
  const id = `bench-${Date.now().toString(36)}`;
  const keys = generateChannelKeys(id);
  const driver = new QemuDriver();
  const config: AgentConfig = {
    version: 1,
    id,
    hostname: 'bench',
    storage: { root: { serial: 'tether-root', fstype: 'ext4' } },
    network: driver.guestNetwork(),
    channel: { hostKey: keys.agentHostKey, authorizedKeys: [keys.clientPublicKey] },
    process: { argv: ['sh', '-c', SCRIPT] },
    powerOffOnExit: true,
  };
  const vm = await driver.start({
    id,
    stateDir,
    kernel: join(IMAGE, 'vmlinuz'),
    initramfs: join(IMAGE, 'initramfs.cpio.gz'),
    runtimeDisk: join(IMAGE, 'runtime.img'),
    rootDisk: join(IMAGE, 'busybox.img'),
    config: Buffer.from(JSON.stringify(config)),
  });
  const consoleText = (): string =>
    existsSync(vm.consoleLogPath) ? readFileSync(vm.consoleLogPath, 'utf8') : '';
  let client: ChannelClient | undefined;
  try {
    // 1. The stream.
    const nulls = await waitFor(
      'the /dev/null runs',
      () => {
        const runs = [...consoleText().matchAll(/BENCH-NULL ([\d.]+) ([\d.]+)/g)];
        return runs.length >= 3 ? runs.map((m) => (Number(m[2]) - Number(m[1])) * 1000) : undefined;
      },
      consoleText,
    );
    await waitFor(
      'the stream start',
      () => (consoleText().includes('BENCH-STREAM-START') ? true : undefined),
      consoleText,
    );
    const started = performance.now();
    // Done when the file holds the bytes and has stopped growing: timed to its last growth. The frames are
    // then checked, so a broken framing (lost or doubled bytes) shows up in the output.
    const growth = new GrowthWatch(vm.logPortPath, STREAM_BYTES, 1000);
    const endedAt = await waitFor('64 MiB in the log file', () => growth.done(), consoleText);
    const streamMs = endedAt - started;
    const counter = new FrameCounter(vm.logPortPath);
    counter.update();
    const framing =
      counter.broken ?? (counter.payload === STREAM_BYTES ? 'intact' : `${counter.payload} payload bytes`);
    const nullMs = percentile(nulls, 50);
    const mbps = (ms: number): string => fixed(STREAM_BYTES / 1e6 / (ms / 1000), 1);

    // 2. The round trip.
    client = await connectVmChannel(vm, { credentials: keys.credentials, timeoutMs: 120_000 });
    const samples: number[] = [];
    for (let i = 0; i < WARMUP + ITERATIONS; i++) {
      const elapsed = await timeExecTrue(client);
      if (i >= WARMUP) samples.push(elapsed);
    }
    const loop = `s=${uptime}; i=0; while [ $i -lt ${SPAWNS} ]; do /bin/true; i=$((i+1)); done; echo $s ${uptime}`;
    const [from, to] = (await execOutput(client, ['sh', '-c', loop])).trim().split(/\s+/).map(Number);
    const spawnMs = ((to! - from!) * 1000) / SPAWNS;
    const idle = (await execOutput(client, ['sh', '-c', 'cat /proc/1/stat'])).trim().split(' ');
    const pid1CpuTicks = Number(idle[13]) + Number(idle[14]);
    // PID 1 at rest: its threads (libuv's pool is created whole on first use) and memory, and what 5 idle
    // seconds cost it in CPU.
    const status = await execOutput(client, ['sh', '-c', 'grep -E "^(Threads|VmRSS|VmHWM)" /proc/1/status']);
    const ticks = async (): Promise<number> => {
      const stat = (await execOutput(client!, ['cat', '/proc/1/stat'])).trim().split(' ');
      return Number(stat[13]) + Number(stat[14]);
    };
    const idleFrom = await ticks();
    await sleep(5000);
    const idleTicks = (await ticks()) - idleFrom;

    console.log(`port wait: image ${IMAGE}; microvm, TCG, 256 MiB; ${describeMachine()}`);
    printTable(
      `stream of ${STREAM_BYTES / 1048576} MiB (ratio = against the same command writing to /dev/null in the guest)`,
      ['case', 'ms', 'MB/s', 'ratio'],
      [
        ['guest: head > /dev/null (median of 3)', fixed(nullMs, 0), mbps(nullMs), '1.00'],
        [
          'agent: main stdout → log port → host file',
          fixed(streamMs, 0),
          mbps(streamMs),
          ratio(nullMs, streamMs),
        ],
      ],
    );
    printTable(
      `exec true round trip: ${ITERATIONS} runs after ${WARMUP} warm-up (ratio = against the guest shell spawning /bin/true)`,
      ['case', 'p50 ms', 'p90 ms', 'p50 ratio'],
      [
        [`guest: sh spawns /bin/true (mean of ${SPAWNS})`, fixed(spawnMs), '', '1.00'],
        [
          'channel: exec true',
          fixed(percentile(samples, 50)),
          fixed(percentile(samples, 90)),
          ratio(percentile(samples, 50), spawnMs),
        ],
      ],
    );
    console.log(`\nlog file: ${growth.size} bytes, framing ${framing}`);
    console.log(
      `PID 1: ${status.trim().replace(/\s+/g, ' ')}; ${idleTicks} CPU ticks in 5 s idle (2 execs of cat included)`,
    );
    console.log(`PID 1 CPU so far (utime+stime): ${pid1CpuTicks} ticks`);
  } finally {
    client?.close();
    await vm.kill().catch(() => undefined);
    vm.release();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

await main();
