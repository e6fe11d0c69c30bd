/**
 * The QEMU VM driver. Each VM is a qemu-system-x86_64 process in its own session (setsid), with stdio on a
 * file, so it survives the process that started it (tetherctl exiting, tetherd restarting) and a Ctrl-C in
 * the starting terminal does not reach it. Control goes through QMP on a unix socket in the state directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  fstatSync,
  openSync,
  readFileSync,
  readSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import type { PortForward, Vm, VmDriver, VmSpec } from '../driver.ts';
import { checkBootImage } from '../paths.ts';
import { buildQemuArgs, MACHINE_TYPES, type MachineType } from './command-line.ts';
import { hostTscKhz } from './host-tsc.ts';
import { qemuLayout, type QemuLayout } from './layout.ts';
import { createOverlay, prepareRootLayer } from './overlay.ts';
import { describeForwardFailure } from './port-forward.ts';
import { isProcessAlive } from './process-alive.ts';
import { QmpClient } from './qmp-client.ts';
import { QemuVm } from './qemu-vm.ts';
import { userNetworkConfig, type NetworkConfig } from './user-network.ts';

/**
 * microvm reaches the agent 0.5-0.7 s sooner than pc under TCG here (no firmware PCI enumeration), ~30% of
 * the boot to a static agent and ~0.4 s of the real agent's ~4 s; fw_cfg, both virtio-serial ports, the
 * disks and the power button work on it. Measurements: docs/decisions/vm-driver.md.
 */
export const DEFAULT_MACHINE: MachineType = 'microvm';
export const DEFAULT_MEMORY_MIB = 256;
export const DEFAULT_ACCEL = 'tcg';

export interface QemuDriverOptions {
  machine?: MachineType;
  /** tcg or kvm; default TETHER_QEMU_ACCEL, else tcg (nested KVM hangs on our CI machines). */
  accel?: string;
  memoryMiB?: number;
  cpus?: number;
  /** Default TETHER_QEMU, else qemu-system-x86_64 on PATH. */
  qemuBinary?: string;
  /** Default TETHER_QEMU_IMG, else qemu-img on PATH. */
  qemuImg?: string;
  /** Extra kernel command-line words, for debugging. */
  kernelArgs?: readonly string[];
  /** How long QEMU may take to open its control socket. */
  startTimeoutMs?: number;
}

interface VmMetadata {
  id: string;
  machine: MachineType;
  accel: string;
  /** Absent in files written before ports existed. */
  ports?: PortForward[];
}

export function parseMachine(value: string): MachineType {
  if ((MACHINE_TYPES as readonly string[]).includes(value)) return value as MachineType;
  throw new TetherError(
    'TETHER_USAGE',
    `machine type must be one of ${MACHINE_TYPES.join(', ')}, got "${value}"`,
  );
}

export function parseAccel(value: string): string {
  if (/^(tcg|kvm)$/.test(value)) return value;
  throw new TetherError(
    'TETHER_USAGE',
    `QEMU accelerator must be tcg or kvm, got "${value}" (TETHER_QEMU_ACCEL)`,
  );
}

/** The last lines written to `path` from byte `from` on (qemu.log is appended to across boots). */
function tail(path: string, from = 0, lines = 20): string {
  try {
    const fd = openSync(path, 'r');
    try {
      const size = fstatSync(fd).size;
      const bytes = Buffer.alloc(Math.max(0, size - from));
      readSync(fd, bytes, 0, bytes.length, from);
      return bytes.toString('utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } finally {
      closeSync(fd);
    }
  } catch {
    return '';
  }
}

function sizeOf(path: string): number {
  try {
    const fd = openSync(path, 'r');
    try {
      return fstatSync(fd).size;
    } finally {
      closeSync(fd);
    }
  } catch {
    return 0;
  }
}

export class QemuDriver implements VmDriver {
  readonly name = 'qemu';
  readonly machine: MachineType;
  readonly accel: string;
  readonly #options: QemuDriverOptions;

  constructor(options: QemuDriverOptions = {}) {
    this.#options = options;
    this.machine = options.machine ?? DEFAULT_MACHINE;
    this.accel = parseAccel(options.accel ?? process.env['TETHER_QEMU_ACCEL'] ?? DEFAULT_ACCEL);
  }

  guestNetwork(): NetworkConfig {
    return userNetworkConfig();
  }

  get #qemu(): string {
    return this.#options.qemuBinary ?? process.env['TETHER_QEMU'] ?? 'qemu-system-x86_64';
  }

  async createRootLayer(stateDir: string, rootDisk: string): Promise<void> {
    const base = resolve(rootDisk);
    if (!existsSync(base))
      throw new TetherError('TETHER_IMAGE_MISSING', `root filesystem image ${base} not found`);
    await prepareRootLayer(base, qemuLayout(resolve(stateDir)).rootOverlay, {
      keep: false,
      create: (disk, overlay) =>
        createOverlay(disk, overlay, this.#options.qemuImg ?? process.env['TETHER_QEMU_IMG']),
    });
  }

  rootLayerBytes(stateDir: string): number {
    try {
      return statSync(qemuLayout(resolve(stateDir)).rootOverlay).blocks * 512;
    } catch {
      return 0;
    }
  }

  async start(given: VmSpec): Promise<Vm> {
    // QEMU runs in the state directory and the qcow2 layer records its base's path: use absolute paths.
    const spec: VmSpec = {
      ...given,
      stateDir: resolve(given.stateDir),
      kernel: resolve(given.kernel),
      initramfs: resolve(given.initramfs),
      runtimeDisk: resolve(given.runtimeDisk),
      rootDisk: resolve(given.rootDisk),
    };
    checkBootImage(spec);
    if (!existsSync(spec.rootDisk))
      throw new TetherError('TETHER_IMAGE_MISSING', `root filesystem image ${spec.rootDisk} not found`);
    const layout = qemuLayout(spec.stateDir);
    // Built first: a bad input (e.g. a socket path too long) fails before any file is written.
    const args = buildQemuArgs({
      name: spec.id,
      machine: this.machine,
      accel: this.accel,
      memoryMiB: spec.memoryMiB ?? this.#options.memoryMiB ?? DEFAULT_MEMORY_MIB,
      cpus: spec.cpus ?? this.#options.cpus ?? 1,
      kernel: spec.kernel,
      initramfs: spec.initramfs,
      runtimeDisk: spec.runtimeDisk,
      layout,
      tscKhz: this.machine === 'microvm' ? hostTscKhz() : undefined,
      ...(this.#options.kernelArgs ? { kernelArgs: this.#options.kernelArgs } : {}),
      ports: spec.ports,
      volumes: (spec.volumes ?? []).map((volume) => ({ ...volume, disk: resolve(volume.disk) })),
    });
    const ports = (spec.ports ?? []).map((port) => ({ ...port }));
    // The config holds the agent's private host key.
    writeFileSync(layout.configFile, spec.config, { mode: 0o600 });
    // keepRootLayer: docker restart keeps the container's files, which live in this layer.
    await prepareRootLayer(spec.rootDisk, layout.rootOverlay, {
      keep: spec.keepRootLayer === true,
      create: (base, overlay) =>
        createOverlay(base, overlay, this.#options.qemuImg ?? process.env['TETHER_QEMU_IMG']),
    });
    const metadata: VmMetadata = { id: spec.id, machine: this.machine, accel: this.accel, ports };
    writeFileSync(layout.metadata, JSON.stringify(metadata) + '\n');
    const logFrom = sizeOf(layout.qemuLog);
    const child = this.#spawn(args, layout);
    let qmp: QmpClient;
    try {
      qmp = await this.#waitForQmp(child, layout, logFrom);
    } catch (error) {
      // A QEMU we cannot control must not run on unseen.
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      const portFailure = await describeForwardFailure(tail(layout.qemuLog, logFrom), ports);
      if (portFailure) throw new TetherError('TETHER_VM_FAILED', portFailure, { cause: error });
      throw error;
    }
    return new QemuVm(spec.id, layout, child.pid!, qmp, { child, ports });
  }

  async adopt(stateDir: string): Promise<Vm> {
    const layout = qemuLayout(resolve(stateDir));
    let metadata: VmMetadata;
    let pid: number;
    try {
      metadata = JSON.parse(readFileSync(layout.metadata, 'utf8')) as VmMetadata;
      pid = Number(readFileSync(layout.pidFile, 'utf8').trim());
    } catch (error) {
      throw new TetherError(
        'TETHER_VM_FAILED',
        `no running VM in ${stateDir}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message} (QEMU removes qemu.pid when it exits)`,
        { cause: error },
      );
    }
    if (!Number.isSafeInteger(pid) || !isProcessAlive(pid, layout.qmpSocket))
      throw new TetherError('TETHER_VM_FAILED', `the VM in ${stateDir} is not running (pid ${pid} is gone)`);
    const qmp = await QmpClient.connect(layout.qmpSocket);
    return new QemuVm(metadata.id, layout, pid, qmp, { ports: metadata.ports ?? [] });
  }

  #spawn(args: string[], layout: QemuLayout): ChildProcess {
    const log = openSync(layout.qemuLog, 'a');
    try {
      const child = spawn(this.#qemu, args, {
        // detached = setsid: QEMU outlives us and is outside our terminal's process group.
        detached: true,
        stdio: ['ignore', log, log],
        cwd: layout.stateDir,
      });
      child.unref();
      return child;
    } finally {
      closeSync(log);
    }
  }

  /** Ready = QMP answers: by then QEMU has created every device and its sockets listen. */
  async #waitForQmp(child: ChildProcess, layout: QemuLayout, logFrom: number): Promise<QmpClient> {
    const deadline = Date.now() + (this.#options.startTimeoutMs ?? 30_000);
    let spawnError: NodeJS.ErrnoException | undefined;
    child.once('error', (error) => (spawnError = error));
    for (;;) {
      if (spawnError)
        throw new TetherError(
          'TETHER_VM_FAILED',
          spawnError.code === 'ENOENT'
            ? `${this.#qemu} not found: install it with 'apt-get install qemu-system-x86' (or set TETHER_QEMU)`
            : `cannot start ${this.#qemu}: ${spawnError.message}`,
          { cause: spawnError },
        );
      if (child.exitCode !== null || child.signalCode !== null)
        throw new TetherError(
          'TETHER_VM_FAILED',
          `QEMU exited at once (${child.exitCode !== null ? `status ${child.exitCode}` : child.signalCode}): ${tail(layout.qemuLog, logFrom) || 'no message'}`,
        );
      if (existsSync(layout.qmpSocket)) {
        try {
          return await QmpClient.connect(layout.qmpSocket, 2000);
        } catch (error) {
          if (Date.now() > deadline) throw error;
        }
      }
      if (Date.now() > deadline) {
        throw new TetherError(
          'TETHER_VM_FAILED',
          `QEMU did not open its control socket ${layout.qmpSocket} within ${this.#options.startTimeoutMs ?? 30_000} ms: ${tail(layout.qemuLog, logFrom) || 'no message'}`,
        );
      }
      await sleep(10);
    }
  }
}
