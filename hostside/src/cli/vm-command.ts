/**
 * `tetherctl vm run`: a container in its own VM from a root filesystem tarball, like `docker run` without
 * the daemon. Builds (or reuses) the root disk, boots the VM under QEMU, attaches to the command, and exits
 * with its exit code; the VM powers itself off when the command ends.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import { STREAM_STDERR } from '../../../protocol/src/logs/log-frame.ts';
import { ContainerRun, DEFAULT_BOOT_TIMEOUT_MS } from '../vm/container-run.ts';
import { bootImagePaths, cacheDir, checkBootImage, defaultImageDir, tarToExt4Script } from '../vm/paths.ts';
import { parseMachine, QemuDriver, DEFAULT_MACHINE, DEFAULT_MEMORY_MIB } from '../vm/qemu/qemu-driver.ts';
import type { MachineType } from '../vm/qemu/command-line.ts';
import { rootfsImage } from '../vm/rootfs.ts';
import { formatTimeline } from '../vm/timeline.ts';
import { withTerminal } from './terminal.ts';

export const VM_USAGE = `usage: tetherctl vm run [OPTIONS] --rootfs TAR [--] CMD [ARG...]

  -i, --interactive        send stdin to the command
  -t, --tty                give the command a terminal (raw mode and resize when stdin is one)
  -e, --env K=V            set an environment variable (repeatable)
  -u, --user USER          name, uid, name:group or uid:gid from the image's /etc/passwd and /etc/group
  -w, --workdir DIR        working directory (absolute)
      --rootfs TAR         root filesystem tarball (turned into an ext4 image once, then cached)
      --machine pc|microvm QEMU machine type (default ${DEFAULT_MACHINE})
      --memory MiB         guest memory (default ${DEFAULT_MEMORY_MIB})
      --boot-timeout S     give up when the agent is not up after S seconds (default ${DEFAULT_BOOT_TIMEOUT_MS / 1000})
      --timeline           print the boot timeline to stderr at the end
      --keep               keep the VM's state directory (console.log, container.log, qemu.log, config.json)

  Ctrl-C sends SIGINT to the command (without -t); a second one powers the VM down, a third kills it.
  Environment: TETHER_IMAGE_DIR (boot image; default build/image), TETHER_QEMU_ACCEL (tcg or kvm; default
  tcg), TETHER_CACHE_DIR (root disk images; default ~/.cache/tether), TETHER_QEMU, TETHER_QEMU_IMG.`;

export interface VmRunArgs {
  interactive: boolean;
  tty: boolean;
  env: string[];
  user: string | undefined;
  workdir: string | undefined;
  rootfs: string;
  machine: MachineType;
  memoryMiB: number | undefined;
  bootTimeoutMs: number;
  timeline: boolean;
  keep: boolean;
  command: string[];
}

function usage(message: string): TetherError {
  return new TetherError('TETHER_USAGE', `${message}\n${VM_USAGE}`);
}

const BOOLEAN = new Map([
  ['-i', 'interactive'],
  ['--interactive', 'interactive'],
  ['-t', 'tty'],
  ['--tty', 'tty'],
  ['--timeline', 'timeline'],
  ['--keep', 'keep'],
]);
const VALUED = new Map([
  ['-e', 'env'],
  ['--env', 'env'],
  ['-u', 'user'],
  ['--user', 'user'],
  ['-w', 'workdir'],
  ['--workdir', 'workdir'],
  ['--rootfs', 'rootfs'],
  ['--machine', 'machine'],
  ['--memory', 'memory'],
  ['--boot-timeout', 'boot-timeout'],
]);

/**
 * Options end at `--` or, as with `docker run`, at the first word that is not an option: `vm run --rootfs
 * x.tar ls -la` runs `ls -la`. Short flags combine (`-it`), and a value may be attached (`-eK=V`, `--env=K=V`).
 */
export function parseVmRunArgs(argv: readonly string[]): VmRunArgs {
  const values = new Map<string, string[]>();
  const flags = new Set<string>();
  const add = (name: string, value: string): void =>
    void values.set(name, [...(values.get(name) ?? []), value]);
  let at = 0;
  for (; at < argv.length; at++) {
    const arg = argv[at]!;
    if (arg === '--') {
      at++;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    const [name, inline] = arg.startsWith('--') && arg.includes('=') ? arg.split(/=(.*)/s) : [arg, undefined];
    if (BOOLEAN.has(name!)) {
      if (inline !== undefined) throw usage(`${name} takes no value`);
      flags.add(BOOLEAN.get(name!)!);
      continue;
    }
    if (VALUED.has(name!)) {
      const value = inline ?? argv[++at];
      if (value === undefined) throw usage(`${name} needs a value`);
      add(VALUED.get(name!)!, value);
      continue;
    }
    if (!arg.startsWith('--') && arg.length > 2) {
      // A cluster of short flags, the last of which may take a value (attached or next).
      for (let i = 1; i < arg.length; i++) {
        const short = `-${arg[i]}`;
        if (BOOLEAN.has(short)) {
          flags.add(BOOLEAN.get(short)!);
          continue;
        }
        if (!VALUED.has(short)) throw usage(`unknown option ${short} in ${arg}`);
        const value = i + 1 < arg.length ? arg.slice(i + 1) : argv[++at];
        if (value === undefined) throw usage(`${short} needs a value`);
        add(VALUED.get(short)!, value);
        break;
      }
      continue;
    }
    throw usage(`unknown option ${arg}`);
  }
  const command = argv.slice(at);
  if (command.length === 0) throw usage('vm run needs a command: vm run --rootfs TAR -- CMD...');
  const one = (name: string): string | undefined => {
    const given = values.get(name);
    if (given && given.length > 1) throw usage(`--${name} given more than once`);
    return given?.[0];
  };
  const rootfs = one('rootfs');
  if (!rootfs) throw usage('--rootfs TAR is required');
  const env = values.get('env') ?? [];
  const bad = env.find((entry) => !/^[^=]+=/.test(entry));
  if (bad !== undefined) throw usage(`-e ${bad}: expected KEY=VALUE`);
  const workdir = one('workdir');
  if (workdir !== undefined && !workdir.startsWith('/'))
    throw usage(`-w ${workdir}: must be an absolute path`);
  const memory = one('memory');
  const memoryMiB = memory === undefined ? undefined : Number(memory);
  if (memoryMiB !== undefined && !(Number.isSafeInteger(memoryMiB) && memoryMiB >= 64))
    throw usage(`--memory ${memory}: expected a whole number of MiB, at least 64`);
  const bootTimeout = one('boot-timeout');
  const bootTimeoutS = bootTimeout === undefined ? DEFAULT_BOOT_TIMEOUT_MS / 1000 : Number(bootTimeout);
  if (!(Number.isFinite(bootTimeoutS) && bootTimeoutS > 0))
    throw usage(`--boot-timeout ${bootTimeout}: expected a number of seconds`);
  const machine = one('machine');
  let machineType: MachineType = DEFAULT_MACHINE;
  if (machine !== undefined) {
    try {
      machineType = parseMachine(machine);
    } catch (error) {
      throw usage((error as Error).message);
    }
  }
  return {
    interactive: flags.has('interactive'),
    tty: flags.has('tty'),
    env,
    user: one('user'),
    workdir,
    rootfs,
    machine: machineType,
    memoryMiB,
    bootTimeoutMs: bootTimeoutS * 1000,
    timeline: flags.has('timeline'),
    keep: flags.has('keep'),
    command,
  };
}

export async function runVmCommand(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'run':
      return vmRun(parseVmRunArgs(rest));
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(VM_USAGE + '\n');
      return command === undefined ? 2 : 0;
    default:
      throw usage(`unknown vm command ${JSON.stringify(command)}`);
  }
}

async function vmRun(args: VmRunArgs): Promise<number> {
  let run: ContainerRun | undefined;
  let interrupts = 0;
  // Registered before anything starts: a Ctrl-C while the disk is built or QEMU starts must not orphan a VM.
  const onSignal = (name: NodeJS.Signals): void => {
    interrupts++;
    if (!run) return;
    if (interrupts === 1 && name === 'SIGINT' && run.signal(name)) return;
    if (interrupts <= 2) {
      process.stderr.write(`\ntetherctl: ${name}: powering the VM down\n`);
      void run.stop(10_000).catch(() => undefined);
    } else {
      process.stderr.write(`\ntetherctl: ${name}: killing the VM\n`);
      void run.kill().catch(() => undefined);
    }
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const signal of signals) process.on(signal, onSignal);

  const image = bootImagePaths(defaultImageDir());
  checkBootImage(image);
  const rootDisk = await rootfsImage(args.rootfs, { cacheDir: cacheDir(), script: tarToExt4Script() });
  if (interrupts > 0) {
    for (const signal of signals) process.off(signal, onSignal);
    process.stderr.write('tetherctl: interrupted before the VM started\n');
    return 130;
  }
  const stateDir = mkdtempSync(join(tmpdir(), 'tether-vm-'));
  const stdout = process.stdout;
  // A reader that goes away (`| head`) must not crash us with EPIPE and leave the VM running.
  const ignore = (): void => {};
  stdout.on('error', ignore);
  process.stderr.on('error', ignore);
  try {
    run = await ContainerRun.start({
      driver: new QemuDriver({ machine: args.machine }),
      image,
      rootDisk,
      stateDir,
      argv: args.command,
      env: args.env,
      cwd: args.workdir,
      user: args.user,
      tty: args.tty,
      openStdin: args.interactive,
      memoryMiB: args.memoryMiB,
      bootTimeoutMs: args.bootTimeoutMs,
      onFrame: (frame) => void (frame.stream === STREAM_STDERR ? process.stderr : stdout).write(frame.data),
      onNotice: (message) => void process.stderr.write(`tetherctl: ${message}\n`),
    });
    if (interrupts > 0) void run.kill();
    const started = run;
    const size = (): { cols: number; rows: number } => ({
      cols: stdout.columns || 80,
      rows: stdout.rows || 24,
    });
    if (args.tty && stdout.isTTY) started.resize(size());
    const result = await withTerminal(
      args.tty && args.interactive,
      (next) => started.resize(next),
      async () => {
        if (args.interactive) {
          process.stdin.on('data', (chunk: Buffer) => started.writeStdin(chunk));
          process.stdin.once('end', () => started.endStdin());
        }
        return started.result;
      },
    );
    if (result.oomKilled)
      process.stderr.write(
        'tetherctl: the kernel OOM-killed a process of the container; --memory gives the VM more\n',
      );
    return result.exitCode;
  } finally {
    if (args.interactive) {
      process.stdin.removeAllListeners('data');
      process.stdin.pause();
    }
    for (const signal of signals) process.off(signal, onSignal);
    stdout.off('error', ignore);
    process.stderr.off('error', ignore);
    if (run) {
      if (args.timeline) {
        process.stderr.write(formatTimeline(run.timeline()));
        if (run.droppedStatusLines > 0)
          process.stderr.write(
            `${run.droppedStatusLines} console status line(s) left out: not signed with this boot's key (forged, replayed or cut short)\n`,
          );
      }
      // Whatever happened, no VM outlives `vm run`.
      await run.kill().catch(() => undefined);
      run.vm.release();
    }
    if (args.keep) process.stderr.write(`tetherctl: VM state kept in ${stateDir}\n`);
    else rmSync(stateDir, { recursive: true, force: true });
  }
}
