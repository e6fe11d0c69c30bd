/**
 * Boot to ready: QEMU start until the container's process runs, for the real image (stage0 initramfs, the
 * agent as PID 1 from the runtime disk) against a baseline booted in the same run: the same kernel with a
 * busybox `/init` script that does the same mounts, loads the same virtio modules, finds the same root
 * disk by serial, switch_roots into it and starts the same process. Both under TCG on microvm, the
 * driver's default machine. Prints medians, the ratio, initramfs sizes, the memory in use in each VM at
 * ready and where the agent's boot time goes (from its status records).
 *
 * "Ready" is the process's own first line on its stdout, carrying the guest uptime it read: only a line
 * from the process proves that it runs (the agent's process-started record comes when the helper is
 * spawned, before the container's namespaces are made). The container has no /dev/console, so under the
 * agent the line arrives through the log port (the file QEMU writes it into); under the baseline, stdout
 * is the console. BENCH_IMAGE_DIR boots another image (an older build) with the same bench;
 * BENCH_COMPARE_IMAGE_DIR boots a second one in the same run, turn and turn about with the first.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import ssh2 from 'ssh2';
import { randomBytes } from 'node:crypto';
import { LogFrameDecoder } from '../protocol/src/logs/log-frame.ts';
import { StatusLineVerifier } from '../protocol/src/status/console-line.ts';
import type { StatusRecord } from '../protocol/src/status/status.ts';
import { ACCEL, baseQemuArgs, busyboxInitramfs } from './lib/baseline-vm.ts';
import { describeMachine, median, printTable } from './lib/harness.ts';
import { bootImages, describeImages, type BootImage } from './lib/vm-image.ts';

const RUNS = Number(process.env['BENCH_RUNS'] ?? 3);
const BOOT_TIMEOUT_MS = 120_000;
/** How often the log port's file is read for the process's lines (it adds at most this to the host time). */
const LOG_POLL_MS = 5;
const READY = 'TETHER-BENCH-READY';
/**
 * The container's process, the same in both, all on its stdout: readiness with the guest uptime, then the
 * VM's memory. /proc/meminfo is the VM's whole in both (a PID namespace has its own /proc/1, not its own
 * meminfo), so MemTotal − MemAvailable compares the two VMs; PID 1's own status is the agent's only where
 * the process shares its PID namespace (agents before the container had namespaces of its own).
 */
const PROCESS =
  `echo ${READY} $(cut -d' ' -f1 /proc/uptime); grep -E '^(MemTotal|MemAvailable):' /proc/meminfo; ` +
  `grep -E '^(Name|VmRSS|VmHWM):' /proc/1/status | tr '\\n\\t' '  '; echo`;
const BASELINE_MODULES = ['virtio', 'virtio_ring', 'virtio_mmio', 'virtio_blk'];

interface BootResult {
  hostMs: number;
  guestMs: number;
  /** MemTotal − MemAvailable at ready, KiB. */
  usedKiB?: number;
  /** PID 1's Name, VmRSS and VmHWM as the process sees it. */
  pid1?: string;
  records: StatusRecord[];
}

/** Where the process's stdout goes: the console (baseline), or the log port's file (the agent). */
type Output = { kind: 'console' } | { kind: 'log-port'; path: string };

function rootDiskArgs(dir: string, image: string): string[] {
  const overlay = join(dir, 'root.qcow2');
  rmSync(overlay, { force: true });
  execFileSync('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-F',
    'raw',
    '-b',
    join(image, 'busybox.img'),
    overlay,
  ]);
  return [
    ...['-drive', `file=${overlay},if=none,id=root,format=qcow2`],
    ...['-device', 'virtio-blk-device,drive=root,serial=tether-root'],
  ];
}

/**
 * Reads the frames QEMU writes into the log port's file as they arrive, and hands on the process's output
 * line by line. Polled: the file is written by QEMU, and a few ms of polling is small against a boot.
 */
async function followLogPort(path: string, onLine: (line: string) => void, stop: AbortSignal): Promise<void> {
  const decoder = new LogFrameDecoder();
  let at = 0;
  let text = '';
  const readMore = (): void => {
    if (!existsSync(path)) return;
    const bytes = readFileSync(path);
    if (bytes.length <= at) return;
    for (const frame of decoder.push(bytes.subarray(at))) text += frame.data.toString();
    at = bytes.length;
    const lines = text.split('\n');
    text = lines.pop()!;
    for (const line of lines) onLine(line);
  };
  while (!stop.aborted) {
    readMore();
    await sleep(LOG_POLL_MS);
  }
  readMore(); // what came in with the VM's last breath
}

/**
 * Spawns QEMU, watches the process's output until it has reported, reads the status records off the
 * console, and waits for the power-off.
 */
function boot(args: string[], output: Output, statusKey?: Buffer): Promise<BootResult> {
  return new Promise((resolve, reject) => {
    if (output.kind === 'log-port') rmSync(output.path, { force: true });
    const started = performance.now();
    const qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const result: Partial<BootResult> = { records: [] };
    const lines: string[] = [];
    const verifier = new StatusLineVerifier(statusKey);
    const timer = setTimeout(() => qemu.kill('SIGKILL'), BOOT_TIMEOUT_MS);
    let memTotal: number | undefined;
    const onProcessLine = (line: string): void => {
      const ready = line.match(new RegExp(`${READY} ([\\d.]+)`));
      if (ready && result.hostMs === undefined) {
        result.hostMs = performance.now() - started;
        result.guestMs = Number(ready[1]) * 1000;
      }
      const memory = line.match(/^(MemTotal|MemAvailable):\s+(\d+) kB/);
      if (memory?.[1] === 'MemTotal') memTotal = Number(memory[2]);
      else if (memory && memTotal !== undefined) result.usedKiB = memTotal - Number(memory[2]);
      if (line.startsWith('Name:')) result.pid1 = line.replace(/\s+/g, ' ').trim();
    };
    createInterface({ input: qemu.stdout }).on('line', (raw) => {
      const line = raw.replace(/\r$/, '');
      lines.push(line);
      const verdict = verifier.check(line);
      if (verdict.kind === 'believed') result.records!.push(verdict.record);
      if (output.kind === 'console') onProcessLine(line);
    });
    const stopFollowing = new AbortController();
    const following =
      output.kind === 'log-port'
        ? followLogPort(output.path, onProcessLine, stopFollowing.signal)
        : Promise.resolve();
    let stderr = '';
    qemu.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    qemu.on('exit', () => {
      clearTimeout(timer);
      stopFollowing.abort();
      void following.then(() => {
        if (result.hostMs === undefined)
          reject(
            new Error(
              `no ${READY} line; QEMU stderr: ${stderr}\nconsole tail:\n${lines.slice(-15).join('\n')}`,
            ),
          );
        else resolve(result as BootResult);
      }, reject);
    });
  });
}

const logPortFile = (dir: string): string => join(dir, 'container.log');

/**
 * The real image's run: the agent config in fw_cfg, the two virtio-serial ports, the runtime disk. The
 * agent signs its console status lines with the config's key, as under tetherd (the cost is measured); an
 * agent that predates the key gets none and writes unsigned lines.
 */
function agentBoot(dir: string, image: BootImage): Promise<BootResult> {
  const statusKey = image.statusKey ? randomBytes(32) : undefined;
  const host = ssh2.utils.generateKeyPairSync('ed25519');
  const client = ssh2.utils.generateKeyPairSync('ed25519');
  const config = join(dir, 'config.json');
  writeFileSync(
    config,
    JSON.stringify({
      version: 1,
      id: 'bench',
      process: { argv: ['/bin/sh', '-c', PROCESS] },
      storage: { root: { serial: 'tether-root', fstype: 'ext4' } },
      channel: {
        hostKey: host.private,
        authorizedKeys: [client.public],
        ...(statusKey ? { statusKey: statusKey.toString('base64') } : {}),
      },
      powerOffOnExit: true,
    }),
  );
  const args = [
    ...baseQemuArgs(join(image.dir, 'vmlinuz'), join(image.dir, 'initramfs.cpio.gz')),
    ...['-drive', `file=${join(image.dir, 'runtime.img')},if=none,id=rt,format=raw,readonly=on`],
    ...['-device', 'virtio-blk-device,drive=rt,serial=tether-runtime'],
    ...rootDiskArgs(dir, image.dir),
    ...['-device', 'virtio-serial-device'],
    ...['-chardev', `socket,id=ch,path=${join(dir, 'ch.sock')},server=on,wait=off`],
    ...['-device', 'virtserialport,chardev=ch,name=org.tether.channel'],
    ...['-chardev', `file,id=log,path=${logPortFile(dir)}`],
    ...['-device', 'virtserialport,chardev=log,name=org.tether.log'],
    ...['-fw_cfg', `name=opt/tether/config,file=${config}`],
  ];
  return boot(args, { kind: 'log-port', path: logPortFile(dir) }, statusKey);
}

const BASELINE_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /mnt/root
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs shm /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for m in ${BASELINE_MODULES.join(' ')}; do insmod /lib/modules/$m.ko; done
dev=
while [ -z "$dev" ]; do
  for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = tether-root ] && dev=/dev/\${d##*/}; done
  [ -n "$dev" ] || sleep 0.01
done
mount -t ext4 $dev /mnt/root
for p in dev proc sys; do mount --move /$p /mnt/root/$p; done
exec switch_root /mnt/root /bin/sh -c "$1; poweroff -f"
`;

/** The baseline boots the first image's kernel and root disk. */
function baselineArgs(dir: string, image: BootImage, initramfs: string): string[] {
  // Words after `--` on the kernel command line are init's arguments.
  return [
    ...baseQemuArgs(join(image.dir, 'vmlinuz'), initramfs, ` -- "${PROCESS}"`),
    ...rootDiskArgs(dir, image.dir),
  ];
}

interface Stage {
  name: string;
  atMs: number;
  tookMs: number;
}

/** One boot's stages from its status records, each with when it ended and how long it took. */
function stagesOf(records: StatusRecord[], readyMs: number): Stage[] {
  const stages: Stage[] = [];
  let previous = 0;
  const stage = (name: string, atMs: number): void => {
    stages.push({ name, atMs, tookMs: atMs - previous });
    previous = atMs;
  };
  for (const record of records) {
    if (record.stage === 'process-exited' || record.stage === 'shutdown') break;
    if (record.stage === 'kernel') stage('kernel (until stage0 starts)', record.atMs);
    else if (record.stage === 'agent') {
      const stage0Done = /stage0 done at ([\d.]+) s/.exec(record.detail ?? '');
      if (stage0Done) stage('stage0 (modules, runtime disk, switch_root)', Number(stage0Done[1]) * 1000);
      stage('runtime start (node until the agent runs)', record.atMs);
    } else stage(record.stage, record.atMs);
  }
  // After process-started (the helper spawned): the container made, the shell started, uptime read.
  stage("the process's first line (ready)", readyMs);
  return stages;
}

/**
 * Each stage's median over the boots of each image, in boot order: a single boot's split moves by tens of
 * ms with the host's noise, more than some stages take. A stage only one image has (a newer agent's) goes
 * after the stage it follows there.
 */
function stageTable(boots: BootResult[][]): string[][] {
  const perImage = boots.map((runs) => runs.map((boot) => stagesOf(boot.records, boot.guestMs)));
  const names: string[] = [];
  for (const runs of perImage)
    runs[0]!.forEach(({ name }, index) => {
      if (names.includes(name)) return;
      const after = index === 0 ? -1 : names.indexOf(runs[0]![index - 1]!.name);
      names.splice(after + 1, 0, name);
    });
  const seconds = (ms: number): string => (ms / 1000).toFixed(3);
  return names.map((name) => [
    name,
    ...perImage.flatMap((runs) => {
      const found = runs.flatMap((stages) => stages.filter((stage) => stage.name === name));
      if (found.length === 0) return ['-', '-'];
      return [seconds(median(found.map((s) => s.atMs))), seconds(median(found.map((s) => s.tookMs)))];
    }),
  ]);
}

async function main(): Promise<void> {
  const images = bootImages();
  if (typeof images === 'string') {
    console.log(`boot bench skipped: ${images}`);
    return;
  }
  const baselineImage = busyboxInitramfs('boot-baseline', BASELINE_INIT, BASELINE_MODULES);
  const dir = mkdtempSync(join(tmpdir(), 'tether-bootbench-'));
  const agents: BootResult[][] = images.map(() => []);
  const baseline: BootResult[] = [];
  try {
    for (let run = 0; run < RUNS; run++) {
      // Turn and turn about, so that drift in machine load hits all alike; with two images, which of them
      // goes first alternates too.
      for (let k = 0; k < images.length; k++) {
        const index = (run + k) % images.length;
        agents[index]!.push(await agentBoot(dir, images[index]!));
      }
      baseline.push(await boot(baselineArgs(dir, images[0]!, baselineImage), { kind: 'console' }));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const seconds = (ms: number): string => (ms / 1000).toFixed(3);
  const host = (runs: BootResult[]): number => median(runs.map((r) => r.hostMs));
  const guest = (runs: BootResult[]): number => median(runs.map((r) => r.guestMs));
  const times = (runs: BootResult[]): [number, number] => [host(runs), guest(runs)];
  const [hostBaseline, guestBaseline] = times(baseline);
  console.log(
    `boot to ready, ${RUNS} runs each, microvm, ${ACCEL}; ${describeImages(images)}; ${describeMachine()}`,
  );
  const ratioRow = (name: string, [h, g]: [number, number], [hb, gb]: [number, number]): string[] => [
    name,
    (h / hb).toFixed(2) + 'x',
    (g / gb).toFixed(2) + 'x',
    '',
  ];
  printTable(
    'boot to ready (main process running), median',
    ['', 'host s (QEMU start → ready)', 'guest uptime s', 'initramfs bytes'],
    [
      ...images.map((image, index) => [
        `${image.label} (stage0 + agent as PID 1)`,
        seconds(host(agents[index]!)),
        seconds(guest(agents[index]!)),
        String(statSync(join(image.dir, 'initramfs.cpio.gz')).size),
      ]),
      [
        'baseline (busybox /init script)',
        seconds(hostBaseline),
        seconds(guestBaseline),
        String(statSync(baselineImage).size),
      ],
      ...images.map((image, index) =>
        ratioRow(`ratio ${image.label} / baseline`, times(agents[index]!), [hostBaseline, guestBaseline]),
      ),
      ...(images.length === 2
        ? [ratioRow('ratio compare / tether', times(agents[1]!), times(agents[0]!))]
        : []),
    ],
  );
  const used = (results: BootResult[]): number | undefined => {
    const known = results.flatMap((r) => (r.usedKiB === undefined ? [] : [r.usedKiB]));
    return known.length ? median(known) : undefined;
  };
  const mib = (kib: number | undefined): string => (kib === undefined ? '?' : (kib / 1024).toFixed(1));
  const usedBaseline = used(baseline);
  console.log(
    `\nmemory in use in the VM at ready (MemTotal − MemAvailable, median, of 256 MiB): baseline ${mib(usedBaseline)} MiB`,
  );
  images.forEach((image, index) => {
    const usedAgent = used(agents[index]!);
    const share = usedAgent !== undefined && usedBaseline !== undefined ? mib(usedAgent - usedBaseline) : '?';
    console.log(
      `  ${image.label}: ${mib(usedAgent)} MiB, the agent's share ${share} MiB; PID 1 as the container's ` +
        `process sees it: ${agents[index]!.at(-1)!.pid1 ?? '?'}`,
    );
  });
  printTable(
    `where the agent boot time goes (median of ${RUNS} boots each, guest seconds since kernel start)`,
    ['stage', ...images.flatMap((image) => [`${image.label} at`, 'took'])],
    stageTable(agents),
  );
  const list = (runs: BootResult[], of: (r: BootResult) => number): string =>
    runs.map((r) => (of(r) / 1000).toFixed(2)).join(' ');
  console.log('\neach run, host s / guest s:');
  for (const [name, runs] of [
    ...images.map((image, index): [string, BootResult[]] => [image.label, agents[index]!]),
    ['baseline', baseline] as [string, BootResult[]],
  ])
    console.log(`  ${name}: ${list(runs, (r) => r.hostMs)} / ${list(runs, (r) => r.guestMs)}`);
}

await main();
