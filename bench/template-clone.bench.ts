/**
 * Issue 12's design spike, measured: container VMs cloned from a booted template instead of booted.
 *
 * A template is the real image booted with the driver's own command line (command-line.ts) plus guest RAM
 * from a file (memory-backend-file, share=on), to "agent ready, channel up, no process", then saved over
 * QMP with x-ignore-shared (the RAM stays in the file; the state file holds the devices). A clone is the
 * same command line with its own sockets, logs, config and disk layer, the file mapped privately
 * (share=off), `-incoming defer`, and QMP feeding it the state. The bench answers, in one run:
 *
 *   probe     a busybox template of the same kernel (the agent's containers cannot see /sys/firmware): does
 *             a clone read its own fw_cfg config, at what size; what a disk swapped under a clone shows
 *             through the page cache; kernel random bytes and the clock right after restore, and whether
 *             RNDADDENTROPY + RNDRESEEDCRNG makes clones diverge
 *   agent     the real agent: what the two command lines differ in; in two clones, /dev/urandom, the clock
 *             and the SSH KEXINIT cookie (Node's OpenSSL generator) against two cold boots
 *   times     QEMU start → an exec's output: clone, cold boot of the same config, busybox cold boot
 *   parallel  1, 4, 16 clones started at once (BENCH_CLONES): time to all first outputs, PSS
 *   pss       host memory (PSS) of BENCH_PSS_VMS idle clones against as many idle cold-booted VMs
 *
 * BENCH_SECTIONS picks sections (comma-separated; default all); BENCH_RUNS the boots per case in `times`.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ChannelClient } from '../hostside/src/channel/client.ts';
import type { ChannelKeys } from '../hostside/src/vm/channel-keys.ts';
import { generateChannelKeys } from '../hostside/src/vm/channel-keys.ts';
import { buildQemuArgs } from '../hostside/src/vm/qemu/command-line.ts';
import { hostTscKhz } from '../hostside/src/vm/qemu/host-tsc.ts';
import { qemuLayout, type QemuLayout } from '../hostside/src/vm/qemu/layout.ts';
import { userNetworkConfig } from '../hostside/src/vm/qemu/user-network.ts';
import { generateStatusKey } from '../hostside/src/vm/status-key.ts';
import type { AgentConfig } from '../protocol/src/config/config.ts';
import { ACCEL, baseQemuArgs, busyboxInitramfs } from './lib/baseline-vm.ts';
import { execOutput } from './lib/channel-exec.ts';
import { describeMachine, fixed, median, printTable, ratio, REPO } from './lib/harness.ts';
import {
  cloneArgs,
  connectChannelSocket,
  connectQmp,
  differingArgs,
  guestRamMapping,
  kexinitCookie,
  type MappingMemory,
  memAvailableKiB,
  pssKiB,
  QemuProcesses,
  saveTemplate,
  waitForLine,
  restoreClone,
  withFileMemory,
} from './lib/template-vm.ts';
import { bootImages, describeImages, type BootImage } from './lib/vm-image.ts';

const RUNS = Number(process.env['BENCH_RUNS'] ?? 3);
const CLONE_COUNTS = (process.env['BENCH_CLONES'] ?? '1,4,16').split(',').map(Number);
const PSS_VMS = Number(process.env['BENCH_PSS_VMS'] ?? 4);
const SECTIONS = new Set((process.env['BENCH_SECTIONS'] ?? 'probe,agent,times,parallel,pss').split(','));
const MEMORY_MIB = 256;
const BOOT_TIMEOUT_MS = 180_000;
/** Idle time before PSS is read: the agents' post-exec work settles. */
const SETTLE_MS = 3000;
const MARK = 'TETHER-FIRST-OUTPUT';

const qemus = new QemuProcesses();
const alive = (child: ChildProcess) => (): boolean => child.exitCode === null && child.signalCode === null;

function qcow2Over(base: string, baseFormat: 'raw' | 'qcow2', overlay: string): void {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', baseFormat, '-b', base, overlay]);
}

// ---------------------------------------------------------------------------------------------------------
// probe: a busybox template of the same kernel and machine

const PROBE_MODULES = ['virtio', 'virtio_ring', 'virtio_mmio', 'virtio_blk', 'qemu_fw_cfg'];
const FW = '/sys/firmware/qemu_fw_cfg/by_name/opt';
/**
 * Boots, then blocks reading the console: the template is saved there, and each clone is let go by its own
 * "go" on its own stdin, so everything after is measured in the clone. The template itself never reads the
 * disk: whatever the clone's kernel finds cached of it, the template's boot (the partition scan) put there.
 */
const PROBE_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${PROBE_MODULES.join(' ')}; do insmod /lib/modules/$m.ko; done
byserial() { for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = "$1" ] && echo \${d##*/}; done; }
while [ -z "$(byserial probe-disk)" ] || [ -z "$(byserial held-disk)" ] || [ ! -e ${FW}/bench/seed/raw ]; do sleep 0.01; done
P=$(byserial probe-disk)
H=$(byserial held-disk)
# The held disk stays open across the save (as a mounted one would), after a read through the page cache.
exec 3</dev/$H
dd if=/dev/$H bs=512 count=8 of=/dev/null 2>/dev/null
# As Node at its start (a blocking getrandom): the kernel's generator is initialised before the save.
dd if=/dev/random of=/dev/null bs=1 count=1 2>/dev/null
clock() { adjtimex | awk '/tv_sec/{s=$2} /tv_usec/{u=$2} END{printf "%d.%06d", s, u}'; }
echo "PROBE-TEMPLATE-READY clock=$(clock) cfgsize=$(cat ${FW}/tether/config/size)"
read go
disk() { dd if=/dev/$1 bs=512 count=8 2>/dev/null | md5sum | cut -c1-32; }
echo "PROBE-RESTORED $(/bin/entropy-probe ${FW}/bench/seed/raw) cfgsize=$(cat ${FW}/tether/config/size) cfglen=$(wc -c < ${FW}/tether/config/raw) cfgmd5=$(md5sum < ${FW}/tether/config/raw | cut -c1-32) disksize=$(cat /sys/block/$P/size) cached=$(disk $P) heldcached=$(disk $H)"
read go2
echo "PROBE-RESIZED disksize=$(cat /sys/block/$P/size)"
blockdev --flushbufs /dev/$P
blockdev --flushbufs /dev/$H
echo "PROBE-FLUSHED cached=$(disk $P) heldcached=$(disk $H)"
rmmod qemu_fw_cfg && insmod /lib/modules/qemu_fw_cfg.ko
while [ ! -e ${FW}/tether/config/raw ]; do sleep 0.01; done
echo "PROBE-RELOADED cfgsize=$(cat ${FW}/tether/config/size) cfgmd5=$(md5sum < ${FW}/tether/config/raw | cut -c1-32)"
poweroff -f
`;

/** The static entropy probe (bench/lib/entropy-probe.c), compiled once per source under build/bench/. */
function entropyProbe(): string {
  const source = join(REPO, 'bench/lib/entropy-probe.c');
  const digest = createHash('sha256').update(readFileSync(source)).digest('hex').slice(0, 12);
  const out = join(REPO, 'build/bench', `entropy-probe-${digest}`);
  mkdirSync(join(REPO, 'build/bench'), { recursive: true });
  try {
    statSync(out);
  } catch {
    execFileSync('cc', ['-static', '-O2', '-Wall', '-o', out, source]);
  }
  return out;
}

const md5 = (bytes: Buffer): string => createHash('md5').update(bytes).digest('hex');

/** A config-like JSON file of exactly `size` bytes (the fw_cfg item the clone should read). */
function configOfSize(name: string, size: number): Buffer {
  const head = `{"id":"${name}","pad":"`;
  const tail = '"}\n';
  return Buffer.from(head + 'x'.repeat(size - head.length - tail.length) + tail);
}

interface ProbeLine {
  line: string;
  hostMs: number;
}

/** Spawns a probe VM with stdio on pipes: its console lines, each stamped with the host's clock. */
function spawnProbe(args: string[]): {
  child: ChildProcess;
  lines: ProbeLine[];
  next: (tag: string) => Promise<ProbeLine>;
  stderr: () => string;
} {
  const child = qemus.spawn(args, 'pipe');
  const lines: ProbeLine[] = [];
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const waiters: (() => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (raw) => {
    lines.push({ line: raw.replace(/\r$/, ''), hostMs: Date.now() + (performance.now() % 1) });
    for (const wake of waiters.splice(0)) wake();
  });
  const next = async (tag: string): Promise<ProbeLine> => {
    const deadline = Date.now() + BOOT_TIMEOUT_MS;
    for (;;) {
      const found = lines.find((l) => l.line.startsWith(tag));
      if (found) return found;
      if (!alive(child)())
        throw new Error(
          `probe VM exited before ${tag}: ${stderr}\n${lines
            .map((l) => l.line)
            .slice(-10)
            .join('\n')}`,
        );
      if (Date.now() > deadline) throw new Error(`no ${tag} from the probe VM`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  };
  return { child, lines, next, stderr: () => stderr };
}

const field = (line: string, name: string): string | undefined =>
  new RegExp(`(?:^| )${name}=(\\S+)`).exec(line)?.[1];

async function probeSection(dir: string, image: BootImage): Promise<void> {
  const probeDir = join(dir, 'probe');
  mkdirSync(probeDir);
  const initramfs = busyboxInitramfs('template-probe', PROBE_INIT, PROBE_MODULES, {
    'bin/entropy-probe': entropyProbe(),
  });
  const TEMPLATE_CONFIG = 1000;
  // Disk A in the template, 1 MiB of 'A'; disk B (a clone's) 2 MiB of 'B'.
  const diskA = join(probeDir, 'disk-a.img');
  const diskB = join(probeDir, 'disk-b.img');
  writeFileSync(diskA, Buffer.alloc(1 << 20, 'A'));
  writeFileSync(diskB, Buffer.alloc(2 << 20, 'B'));
  // The held disk: C in the template, D in every clone (same size).
  const diskC = join(probeDir, 'disk-c.img');
  const diskD = join(probeDir, 'disk-d.img');
  writeFileSync(diskC, Buffer.alloc(1 << 20, 'C'));
  writeFileSync(diskD, Buffer.alloc(1 << 20, 'D'));
  const vmArgs = (name: string, config: Buffer, seed: Buffer, disk: string, held: string): string[] => {
    const configFile = join(probeDir, `${name}.config`);
    const seedFile = join(probeDir, `${name}.seed`);
    writeFileSync(configFile, config);
    writeFileSync(seedFile, seed);
    return [
      ...baseQemuArgs(join(image.dir, 'vmlinuz'), initramfs),
      ...['-qmp', `unix:${join(probeDir, `${name}.qmp`)},server=on,wait=off`],
      ...['-fw_cfg', `name=opt/tether/config,file=${configFile}`],
      ...['-fw_cfg', `name=opt/bench/seed,file=${seedFile}`],
      ...['-drive', `file=${disk},if=none,id=d0,format=raw`],
      ...['-device', 'virtio-blk-device,drive=d0,serial=probe-disk'],
      ...['-drive', `file=${held},if=none,id=d1,format=raw`],
      ...['-device', 'virtio-blk-device,drive=d1,serial=held-disk'],
    ];
  };
  const memory = join(probeDir, 'memory');
  const stateFile = join(probeDir, 'template.state');
  const templateConfig = configOfSize('template', TEMPLATE_CONFIG);
  const template = spawnProbe(
    withFileMemory(vmArgs('template', templateConfig, randomBytes(32), diskA, diskC), {
      path: memory,
      sizeMiB: MEMORY_MIB,
      share: true,
    }),
  );
  const ready = await template.next('PROBE-TEMPLATE-READY');
  const templateSkew = Number(field(ready.line, 'clock')) - ready.hostMs / 1000;
  await sleep(500); // into `read go`
  const qmp = await connectQmp(join(probeDir, 'template.qmp'));
  const saved = await saveTemplate(qmp, stateFile);
  const savedAt = Date.now();
  await qmp.execute('quit').catch(() => undefined);
  await qemus.kill(template.child);

  const seed1 = randomBytes(32);
  const clones = [
    {
      name: 'clone-1',
      config: configOfSize('clone-1', TEMPLATE_CONFIG),
      seed: seed1,
      disk: diskB,
      diskNote: 'B (2 MiB of B)',
      resize: false,
    },
    {
      name: 'clone-2',
      config: configOfSize('clone-2', 600),
      seed: randomBytes(32),
      disk: diskA,
      diskNote: "A (the template's)",
      resize: false,
    },
    {
      name: 'clone-3',
      config: configOfSize('clone-3', 1400),
      seed: seed1,
      disk: diskA,
      diskNote: "A (the template's)",
      resize: false,
    },
    {
      name: 'clone-4',
      config: configOfSize('clone-4', TEMPLATE_CONFIG),
      seed: randomBytes(32),
      disk: diskB,
      diskNote: 'B, then QMP block_resize',
      resize: true,
    },
  ];
  const results: {
    name: string;
    restored: ProbeLine;
    resized: ProbeLine;
    flushed: ProbeLine;
    reloaded: ProbeLine;
    config: Buffer;
    diskNote: string;
    disk: string;
  }[] = [];
  for (const clone of clones) {
    const disk = join(probeDir, `${clone.name}.img`);
    writeFileSync(disk, readFileSync(clone.disk));
    const heldDisk = join(probeDir, `${clone.name}-held.img`);
    writeFileSync(heldDisk, readFileSync(diskD));
    const vm = spawnProbe(
      cloneArgs(
        withFileMemory(vmArgs(clone.name, clone.config, clone.seed, disk, heldDisk), {
          path: memory,
          sizeMiB: MEMORY_MIB,
          share: false,
        }),
      ),
    );
    // Only once restored: a byte fed to the serial port before the state is loaded would be lost with the
    // fresh UART's state.
    await restoreClone(join(probeDir, `${clone.name}.qmp`), stateFile).catch((error: Error) => {
      throw new Error(`${clone.name} did not resume: ${error.message}; QEMU: ${vm.stderr()}`);
    });
    vm.child.stdin!.write('go\n');
    try {
      const restored = await vm.next('PROBE-RESTORED');
      // The kernel keeps the capacity it probed in the template; a resize event makes it read it again.
      if (clone.resize) {
        const qmp = await connectQmp(join(probeDir, `${clone.name}.qmp`));
        await qmp.execute('block_resize', { device: 'd0', size: statSync(disk).size });
        qmp.close();
      }
      vm.child.stdin!.write('go\n');
      const resized = await vm.next('PROBE-RESIZED');
      const flushed = await vm.next('PROBE-FLUSHED');
      const reloaded = await vm.next('PROBE-RELOADED');
      results.push({
        name: clone.name,
        restored,
        resized,
        flushed,
        reloaded,
        config: clone.config,
        diskNote: clone.diskNote,
        disk,
      });
    } finally {
      await qemus.kill(vm.child);
    }
  }

  console.log(
    `\n## probe: busybox template (same kernel, microvm, ${ACCEL}), saved in ${fixed(saved.ms, 0)} ms, state file ` +
      `${statSync(stateFile).size} bytes; template config ${TEMPLATE_CONFIG} bytes (md5 ${md5(templateConfig).slice(0, 8)})`,
  );
  const first4k = (file: string): string => md5(readFileSync(file).subarray(0, 4096));
  const whichConfig = (guestMd5: string | undefined, config: Buffer): string => {
    const padded = Buffer.concat([
      config,
      Buffer.alloc(Math.max(0, TEMPLATE_CONFIG - config.length)),
    ]).subarray(0, TEMPLATE_CONFIG);
    if (guestMd5 === md5(config)) return "the clone's file, whole";
    if (guestMd5 === md5(templateConfig)) return "the template's file";
    if (guestMd5 === md5(padded))
      return config.length < TEMPLATE_CONFIG
        ? "the clone's file + NULs to the template's size"
        : "the clone's file cut to the template's size";
    return `unknown (${guestMd5})`;
  };
  const whichDisk = (guestMd5: string | undefined): string =>
    [diskA, diskB, diskC, diskD]
      .map((file) => [file, first4k(file)])
      .find(([, sum]) => sum === guestMd5)?.[0]
      ?.slice(-5, -4) ?? `? ${guestMd5}`;
  printTable(
    'fw_cfg and disks as each clone sees them (first line after restore; then after BLKFLSBUF; then after reloading qemu_fw_cfg)',
    [
      'clone',
      'config bytes',
      'sysfs size',
      'raw read',
      'raw is',
      'disk',
      'cached 4K',
      'flushed',
      'size (sectors)',
      'then',
      'held C→D: cached, flushed',
      'reloaded: size, raw is',
    ],
    results.map((r) => [
      r.name,
      String(r.config.length),
      field(r.restored.line, 'cfgsize') ?? '?',
      field(r.restored.line, 'cfglen') ?? '?',
      whichConfig(field(r.restored.line, 'cfgmd5'), r.config),
      r.diskNote,
      whichDisk(field(r.restored.line, 'cached')),
      whichDisk(field(r.flushed.line, 'cached')),
      field(r.restored.line, 'disksize') ?? '?',
      field(r.resized.line, 'disksize') ?? '?',
      whichDisk(field(r.restored.line, 'heldcached')) + `, ${whichDisk(field(r.flushed.line, 'heldcached'))}`,
      `${field(r.reloaded.line, 'cfgsize') ?? '?'}, ${whichConfig(field(r.reloaded.line, 'cfgmd5'), r.config)}`,
    ]),
  );
  console.log(
    `\nthe template's guest clock − host clock when it was ready (before the save): ${fixed(templateSkew, 3)} s`,
  );
  printTable(
    "kernel random bytes and clock right after restore (a: as drawn; b: after RNDRESEEDCRNG; c: after RNDADDENTROPY of the clone's seed + RNDRESEEDCRNG; clone-3 has clone-1's seed)",
    ['clone', 'guest clock − host clock s', 'host s since save', 'a', 'b', 'c', 'ioctls'],
    results.map((r) => {
      const clock = Number(field(r.restored.line, 'clock')) * 1000;
      return [
        r.name,
        fixed((clock - r.restored.hostMs) / 1000, 3),
        fixed((r.restored.hostMs - savedAt) / 1000, 3),
        field(r.restored.line, 'a') ?? '?',
        field(r.restored.line, 'b') ?? '?',
        field(r.restored.line, 'c') ?? '?',
        ['reseed1', 'add', 'reseed2']
          .map((name) => `${name} ${field(r.restored.line, name) ?? '?'}`)
          .join(', '),
      ];
    }),
  );
}

// ---------------------------------------------------------------------------------------------------------
// the real agent: template, clones, cold boots

interface AgentTemplate {
  image: BootImage;
  keys: ChannelKeys;
  statusKey: string;
  memory: string;
  stateFile: string;
  rootLayer: string;
  args: string[];
  bootMs: number;
  saveMs: number;
  savedAt: number;
}

function agentConfig(name: string, keys: ChannelKeys, statusKey: string): AgentConfig {
  return {
    version: 1,
    id: name,
    hostname: name,
    // A root disk but no process: the exec sessions need a shell, which the runtime root has not.
    storage: { root: { serial: 'tether-root', fstype: 'ext4' } },
    network: userNetworkConfig(),
    channel: { hostKey: keys.agentHostKey, authorizedKeys: [keys.clientPublicKey], statusKey },
  };
}

/** The driver's command line for a VM in `stateDir` (its config and root layer written there). */
function driverArgs(image: BootImage, name: string, layout: QemuLayout): string[] {
  return buildQemuArgs({
    name,
    machine: 'microvm',
    accel: ACCEL,
    memoryMiB: MEMORY_MIB,
    cpus: 1,
    kernel: join(image.dir, 'vmlinuz'),
    initramfs: join(image.dir, 'initramfs.cpio.gz'),
    runtimeDisk: join(image.dir, 'runtime.img'),
    layout,
    tscKhz: hostTscKhz(),
    // As the VM benches: a busy host otherwise drops the TCG guest's TSC for 4 ms jiffies.
    kernelArgs: ['tsc=reliable'],
  });
}

function prepareVmDir(
  dir: string,
  name: string,
  config: AgentConfig,
  base: string,
  baseFormat: 'raw' | 'qcow2',
): QemuLayout {
  const stateDir = join(dir, name);
  mkdirSync(stateDir);
  const layout = qemuLayout(stateDir);
  writeFileSync(layout.configFile, JSON.stringify(config), { mode: 0o600 });
  qcow2Over(base, baseFormat, layout.rootOverlay);
  return layout;
}

async function buildAgentTemplate(dir: string, image: BootImage): Promise<AgentTemplate> {
  const keys = generateChannelKeys('template');
  const statusKey = generateStatusKey();
  const layout = prepareVmDir(
    dir,
    'template',
    agentConfig('template', keys, statusKey),
    join(image.dir, 'busybox.img'),
    'raw',
  );
  const memory = join(dir, 'template.mem');
  const stateFile = join(dir, 'template.state');
  const args = driverArgs(image, 'template', layout);
  const started = performance.now();
  const child = qemus.spawn(
    withFileMemory(args, { path: memory, sizeMiB: MEMORY_MIB, share: true }),
    layout.qemuLog,
    layout.stateDir,
  );
  try {
    // The console's human status line; the host never connects to a template (a clone would inherit the session).
    await waitForLine(layout.consoleLog, /\] channel ok /, BOOT_TIMEOUT_MS, alive(child));
    const bootMs = performance.now() - started;
    const qmp = await connectQmp(layout.qmpSocket);
    const saved = await saveTemplate(qmp, stateFile);
    const savedAt = Date.now();
    await qmp.execute('quit').catch(() => undefined);
    qmp.close();
    return {
      image,
      keys,
      statusKey,
      memory,
      stateFile,
      rootLayer: layout.rootOverlay,
      args,
      bootMs,
      saveMs: saved.ms,
      savedAt,
    };
  } finally {
    await qemus.kill(child);
  }
}

interface Started {
  name: string;
  child: ChildProcess;
  args: string[];
  /** A clone: QEMU spawned → QMP says running (state loaded, guest resumed). */
  runningMs: number | undefined;
  /** QEMU spawned → the channel's SSH session ready. */
  connectedMs: number;
  /** QEMU spawned → the exec's output (echo) received and the session ended. */
  outputMs: number;
  cookie: string | undefined;
  /** Channel connections it took (the agent drops a handshake slower than 10 s: a loaded host). */
  attempts: number;
  client: ChannelClient;
}

let vmCounter = 0;

/** Starts a clone (`template` given) or a cold boot of the template's config, until an exec's first output. */
async function startAgentVm(
  dir: string,
  image: BootImage,
  template: AgentTemplate,
  clone: boolean,
): Promise<Started> {
  const name = `${clone ? 'clone' : 'cold'}-${++vmCounter}`;
  const config = agentConfig(name, template.keys, template.statusKey);
  const layout = clone
    ? prepareVmDir(dir, name, config, template.rootLayer, 'qcow2')
    : prepareVmDir(dir, name, config, join(image.dir, 'busybox.img'), 'raw');
  const base = driverArgs(image, name, layout);
  const args = clone
    ? cloneArgs(withFileMemory(base, { path: template.memory, sizeMiB: MEMORY_MIB, share: false }))
    : base;
  const started = performance.now();
  const child = qemus.spawn(args, layout.qemuLog, layout.stateDir);
  let runningMs: number | undefined;
  try {
    if (clone) {
      await restoreClone(layout.qmpSocket, template.stateFile);
      runningMs = performance.now() - started;
    }
    const { client, received, attempts } = await connectChannelSocket(
      layout.channelSocket,
      template.keys.credentials,
      BOOT_TIMEOUT_MS,
    );
    const connectedMs = performance.now() - started;
    const output = await execOutput(client, ['echo', MARK]);
    const outputMs = performance.now() - started;
    if (output.trim() !== MARK) throw new Error(`${name}: echo printed ${JSON.stringify(output)}`);
    return {
      name,
      child,
      args,
      runningMs,
      connectedMs,
      outputMs,
      cookie: kexinitCookie(received),
      attempts,
      client,
    };
  } catch (error) {
    await qemus.kill(child);
    throw new Error(
      `${name}: ${(error as Error).message}\nconsole: ${readFileSync(layout.consoleLog, 'utf8').slice(-1500)}\nqemu: ${readFileSync(layout.qemuLog, 'utf8').slice(-1500)}`,
      { cause: error },
    );
  }
}

async function stopVm(vm: Started): Promise<void> {
  vm.client.close();
  await qemus.kill(vm.child);
}

/** The guest's clock against the host's (midpoint of the exec) and 16 bytes of its /dev/urandom. */
async function guestClockAndRandom(vm: Started): Promise<{ skewS: number; random: string }> {
  const before = Date.now();
  // busybox's date has no %N; adjtimex prints the clock to the microsecond.
  const script =
    `adjtimex | awk '/tv_sec/{s=$2} /tv_usec/{u=$2} END{printf "%d.%06d\\n", s, u}'; ` +
    `head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'`;
  const out = await execOutput(vm.client, ['sh', '-c', script]);
  const after = Date.now();
  const [clock = '', random = ''] = out.trim().split('\n');
  return { skewS: Number(clock) - (before + after) / 2000, random };
}

async function agentSection(dir: string, template: AgentTemplate): Promise<void> {
  const vms: Started[] = [];
  try {
    const rows: string[][] = [];
    for (const clone of [true, true, false, false]) {
      const vm = await startAgentVm(dir, template.image, template, clone);
      vms.push(vm);
      // At once: the kernel reseeds its generator from the input pool (which diverges between clones) every
      // uptime/2 s early in a boot, so "right after restore" means the first exec after the echo.
      const { skewS, random } = await guestClockAndRandom(vm);
      rows.push([
        vm.name,
        fixed(skewS, 3),
        random,
        vm.cookie ?? '?',
        fixed((Date.now() - template.savedAt) / 1000, 1),
      ]);
    }
    const cloneArgsOf = vms[0]!.args;
    const templateArgs = withFileMemory(template.args, {
      path: template.memory,
      sizeMiB: MEMORY_MIB,
      share: true,
    });
    console.log(
      `\n## agent: template booted to "channel ok" in ${fixed(template.bootMs / 1000, 2)} s, saved in ${fixed(template.saveMs, 0)} ms; ` +
        `state file ${statSync(template.stateFile).size} bytes; memory file ${MEMORY_MIB} MiB (sparse: ${Math.round((statSync(template.memory).blocks * 512) / 1024 / 1024)} MiB allocated)`,
    );
    console.log('\ntemplate and clone command lines differ in (the clone adds -incoming defer):');
    for (const [a, b] of differingArgs(templateArgs, cloneArgsOf.slice(0, templateArgs.length)))
      console.log(`  ${a}\n    → ${b}`);
    console.log(`  (clone adds: ${cloneArgsOf.slice(templateArgs.length).join(' ')})`);
    printTable(
      "two clones of one template, then two cold boots: the guest's clock, /dev/urandom in an exec, and the agent's first SSH KEXINIT cookie (Node's OpenSSL generator)",
      ['vm', 'guest − host clock s', 'urandom (16 bytes, 2nd exec)', 'KEXINIT cookie', 's since save'],
      rows,
    );
  } finally {
    for (const vm of vms) await stopVm(vm);
  }
}

// ---------------------------------------------------------------------------------------------------------
// times: clone, cold boot, busybox cold boot

const BUSYBOX_MODULES = ['virtio', 'virtio_ring', 'virtio_mmio', 'virtio_blk'];
const BUSYBOX_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${BUSYBOX_MODULES.join(' ')}; do insmod /lib/modules/$m.ko; done
mkdir -p /mnt/root
dev=
while [ -z "$dev" ]; do
  for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = tether-root ] && dev=/dev/\${d##*/}; done
  [ -n "$dev" ] || sleep 0.01
done
mount -t ext4 $dev /mnt/root
for p in dev proc sys; do mount --move /$p /mnt/root/$p; done
exec switch_root /mnt/root /bin/sh -c "echo ${MARK}; poweroff -f"
`;

/** QEMU start → the busybox init's line on the console, with the same kernel and root disk. */
async function busyboxBoot(dir: string, image: BootImage): Promise<number> {
  const overlay = join(dir, `busybox-${++vmCounter}.qcow2`);
  qcow2Over(join(image.dir, 'busybox.img'), 'raw', overlay);
  const initramfs = busyboxInitramfs('template-baseline', BUSYBOX_INIT, BUSYBOX_MODULES);
  const started = performance.now();
  const vm = spawnProbe([
    ...baseQemuArgs(join(image.dir, 'vmlinuz'), initramfs),
    ...['-drive', `file=${overlay},if=none,id=root,format=qcow2`],
    ...['-device', 'virtio-blk-device,drive=root,serial=tether-root'],
  ]);
  try {
    await vm.next(MARK);
    return performance.now() - started;
  } finally {
    await qemus.kill(vm.child);
  }
}

async function timesSection(dir: string, template: AgentTemplate): Promise<void> {
  const clones: Started[] = [];
  const colds: Started[] = [];
  const busybox: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const clone = await startAgentVm(dir, template.image, template, true);
    await stopVm(clone);
    clones.push(clone);
    const cold = await startAgentVm(dir, template.image, template, false);
    await stopVm(cold);
    colds.push(cold);
    busybox.push(await busyboxBoot(dir, template.image));
  }
  const s = (ms: number): string => fixed(ms / 1000, 3);
  const bb = median(busybox);
  const row = (name: string, runs: Started[]): string[] => {
    const out = median(runs.map((r) => r.outputMs));
    const running = runs.flatMap((r) => (r.runningMs === undefined ? [] : [r.runningMs]));
    return [
      name,
      running.length ? s(median(running)) : '',
      s(median(runs.map((r) => r.connectedMs))),
      s(out),
      ratio(out, bb),
      runs.map((r) => s(r.outputMs)).join(' '),
    ];
  };
  printTable(
    `\n## times: QEMU start → first output, median of ${RUNS} (ratio against the busybox cold boot, same run)`,
    ['case', 'QMP running s', 'channel up s', 'first output s', 'ratio', 'each run s'],
    [
      row('clone (restore, connect, exec echo)', clones),
      row('cold boot, same config (boot, connect, exec echo)', colds),
      ['busybox cold boot (its init echoes)', '', '', s(bb), '1.00x', busybox.map(s).join(' ')],
    ],
  );
  console.log(
    `clone / cold boot: ${ratio(median(clones.map((r) => r.outputMs)), median(colds.map((r) => r.outputMs)))}`,
  );
}

// ---------------------------------------------------------------------------------------------------------
// parallel and pss

async function parallelSection(dir: string, template: AgentTemplate): Promise<void> {
  const rows: string[][] = [];
  for (const count of CLONE_COUNTS) {
    const availableBefore = memAvailableKiB();
    const started = performance.now();
    const results = await Promise.allSettled(
      Array.from({ length: count }, () => startAgentVm(dir, template.image, template, true)),
    );
    const allMs = performance.now() - started;
    const vms = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason).split('\n')[0]] : []));
    const firstFailure = results.find((r) => r.status === 'rejected');
    if (firstFailure)
      console.log(
        `\n${count} clones: first failure in full:\n${String((firstFailure as PromiseRejectedResult).reason)}`,
      );
    const pss = vms.map((vm) => pssKiB(vm.child.pid!) ?? 0).reduce((a, b) => a + b, 0);
    const used = availableBefore - memAvailableKiB();
    for (const vm of vms) await stopVm(vm);
    const outputs = vms.map((vm) => vm.outputMs);
    rows.push([
      String(count),
      String(vms.length),
      String(vms.reduce((total, vm) => total + vm.attempts - 1, 0)),
      fixed(median(outputs) / 1000, 3),
      fixed(allMs / 1000, 3),
      fixed(pss / 1024, 1),
      fixed(used / 1024, 1),
      failed.join('; '),
    ]);
  }
  printTable(
    '\n## parallel: clones started at once (PSS and MemAvailable drop read when all have answered)',
    [
      'clones',
      'answered',
      'retried connections',
      'median first output s',
      'all first outputs s',
      'PSS sum MiB',
      'MemAvailable drop MiB',
      'failures',
    ],
    rows,
  );
}

interface VmMemory {
  pssKiB: number;
  ram: MappingMemory | undefined;
}

async function memoryOf(vms: Started[]): Promise<VmMemory[]> {
  await sleep(SETTLE_MS);
  return vms.map((vm) => ({
    pssKiB: pssKiB(vm.child.pid!) ?? 0,
    ram: guestRamMapping(vm.child.pid!, MEMORY_MIB),
  }));
}

async function pssSection(dir: string, template: AgentTemplate): Promise<void> {
  const rows: string[][] = [];
  let cloneSum = 0;
  for (const clone of [true, false]) {
    const availableBefore = memAvailableKiB();
    const vms = await Promise.all(
      Array.from({ length: PSS_VMS }, () => startAgentVm(dir, template.image, template, clone)),
    );
    try {
      const memory = await memoryOf(vms);
      const sum = memory.reduce((total, m) => total + m.pssKiB, 0);
      if (clone) cloneSum = sum;
      const used = availableBefore - memAvailableKiB();
      const mib = (kib: number): string => fixed(kib / 1024, 1);
      const ramSum = (of: (ram: MappingMemory) => number): string =>
        mib(memory.reduce((total, m) => total + (m.ram ? of(m.ram) : 0), 0));
      rows.push([
        clone ? 'clones' : 'cold boots',
        memory.map((m) => mib(m.pssKiB)).join(' '),
        mib(sum),
        clone ? '1.00x' : ratio(sum, cloneSum),
        ramSum((ram) => ram.rssKiB),
        ramSum((ram) => ram.pssKiB),
        ramSum((ram) => ram.privateDirtyKiB),
        mib(sum - memory.reduce((total, m) => total + (m.ram?.pssKiB ?? 0), 0)),
        mib(used),
      ]);
    } finally {
      for (const vm of vms) await stopVm(vm);
    }
  }
  let resident = '?';
  try {
    resident = execFileSync('fincore', ['-n', '-o', 'RES', template.memory], { encoding: 'utf8' }).trim();
  } catch {
    // fincore (util-linux) missing: the column stays '?'
  }
  printTable(
    `\n## pss: ${PSS_VMS} idle VMs each (an exec answered, then ${SETTLE_MS / 1000} s idle); the template file's page cache: ${resident}`,
    [
      'case',
      'PSS per QEMU MiB',
      'PSS sum MiB',
      'cold / clones',
      'guest RAM: RSS sum',
      'PSS sum',
      'private dirty sum',
      'the rest (QEMU, TCG) PSS sum',
      'MemAvailable drop MiB',
    ],
    rows,
  );
}

async function main(): Promise<void> {
  const images = bootImages();
  if (typeof images === 'string') {
    console.log(`template-clone bench skipped: ${images}`);
    return;
  }
  const image = images[0]!;
  const dir = mkdtempSync(join(tmpdir(), 'tether-tpl-'));
  console.log(
    `template clones: microvm, ${ACCEL}, ${MEMORY_MIB} MiB; ${describeImages([image])}; ${describeMachine()}`,
  );
  try {
    if (SECTIONS.has('probe')) await probeSection(dir, image);
    if (['agent', 'times', 'parallel', 'pss'].some((s) => SECTIONS.has(s))) {
      const template = await buildAgentTemplate(dir, image);
      if (SECTIONS.has('agent')) await agentSection(dir, template);
      if (SECTIONS.has('times')) await timesSection(dir, template);
      if (SECTIONS.has('parallel')) await parallelSection(dir, template);
      if (SECTIONS.has('pss')) await pssSection(dir, template);
    }
  } finally {
    await qemus.killAllAndWait();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
