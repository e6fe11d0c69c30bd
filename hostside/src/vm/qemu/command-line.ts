/**
 * The QEMU command line for one container VM, as a pure function of its inputs (unit-tested: every flag
 * here was exercised in docs/decisions and research/feasibility-vm.md; see the comments for why each one).
 */
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import {
  CHANNEL_PORT_NAME,
  LOG_PORT_NAME,
  ROOT_DISK_SERIAL,
  RUNTIME_DISK_SERIAL,
  volumeDiskSerial,
  type PortForward,
  type VmVolumeDisk,
} from '../driver.ts';
import type { QemuLayout } from './layout.ts';
import { userNetdevOption } from './port-forward.ts';
import { USER_NET_MAC } from './user-network.ts';

export const MACHINE_TYPES = ['pc', 'microvm'] as const;
export type MachineType = (typeof MACHINE_TYPES)[number];

export const CONFIG_FW_CFG_NAME = 'opt/tether/config';
/** The chardev behind the log port; Vm.reopenLog() swaps its backend by this id (QMP chardev-change). */
export const LOG_CHARDEV_ID = 'log';
/** QEMU's own floor is lower, but the agent (Node) needs this much to boot. */
export const MIN_MEMORY_MIB = 64;
/** sun_path is 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

export interface QemuCommandInput {
  /** The VM's id: QEMU's -name, shown in `ps` and QMP. */
  name: string;
  machine: MachineType;
  /** tcg (emulation, the default here: nested KVM hangs on our machines) or kvm. */
  accel: string;
  memoryMiB: number;
  cpus: number;
  kernel: string;
  initramfs: string;
  runtimeDisk: string;
  layout: QemuLayout;
  /**
   * The host's TSC frequency in kHz; passed to a microvm guest under TCG, which has no HPET or PM timer to
   * calibrate the TSC against and otherwise hangs in some boots (feasibility-vm.md §2).
   */
  tscKhz?: number | undefined;
  /** Extra kernel command-line words (debugging: e.g. drop nothing, add `loglevel=7`). */
  kernelArgs?: readonly string[];
  /** Guest ports published on the host (user-mode network forwards). */
  ports?: readonly PortForward[] | undefined;
  /** Volume disks, each one more virtio disk with serial volumeDiskSerial(i). */
  volumes?: readonly VmVolumeDisk[] | undefined;
}

/** QEMU's option syntax ends a value at a comma; a literal comma is written twice. */
export function escapeOptionValue(value: string): string {
  return value.replaceAll(',', ',,');
}

function checkSocketPath(path: string): void {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES)
    throw new TetherError(
      'TETHER_VM_FAILED',
      `unix socket path ${path} is ${Buffer.byteLength(path)} bytes, over the ${MAX_SOCKET_PATH_BYTES}-byte limit; use a shorter state directory`,
    );
}

export function kernelCommandLine(input: QemuCommandInput): string {
  // quiet: the console is a slow emulated UART and the agent's status lines are what matter there.
  // panic=-1 with -no-reboot: a panicking guest ends QEMU at once instead of hanging.
  const words = ['console=ttyS0', 'quiet', 'panic=-1'];
  // stage0 would probe the PCI bus for the transport; the host knows it, so say it.
  words.push(`tether.transport=${input.machine === 'microvm' ? 'mmio' : 'pci'}`);
  if (input.machine === 'microvm' && input.accel === 'tcg' && input.tscKhz !== undefined && input.tscKhz > 0)
    words.push(`tsc_early_khz=${Math.round(input.tscKhz)}`);
  words.push(...(input.kernelArgs ?? []));
  return words.join(' ');
}

export function buildQemuArgs(input: QemuCommandInput): string[] {
  const { layout } = input;
  checkSocketPath(layout.channelSocket);
  checkSocketPath(layout.qmpSocket);
  if (!Number.isSafeInteger(input.memoryMiB) || input.memoryMiB < MIN_MEMORY_MIB)
    throw new TetherError(
      'TETHER_VM_FAILED',
      `memory must be a whole number of MiB, at least ${MIN_MEMORY_MIB}, got ${input.memoryMiB}`,
    );
  if (!Number.isSafeInteger(input.cpus) || input.cpus < 1)
    throw new TetherError('TETHER_VM_FAILED', `cpus must be a positive integer, got ${input.cpus}`);
  const v = escapeOptionValue;
  // microvm has no PCI bus: its virtio devices sit on virtio-mmio, found by the guest through ACPI.
  const bus = input.machine === 'microvm' ? 'device' : 'pci';
  const args = [
    '-name',
    `guest=${v(input.name)}`,
    '-machine',
    input.machine,
    '-accel',
    input.accel,
    ...(input.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m',
    String(input.memoryMiB),
    '-smp',
    String(input.cpus),
    // No default devices, no host config files, no display: only what is listed here.
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    // A guest reboot ends QEMU (the agent powers off; anything else is a failure to report, not repeat).
    '-no-reboot',
    '-kernel',
    input.kernel,
    '-initrd',
    input.initramfs,
    '-append',
    kernelCommandLine(input),
    '-chardev',
    `file,id=console,path=${v(layout.consoleLog)}`,
    '-serial',
    'chardev:console',
    '-chardev',
    `socket,id=qmp,path=${v(layout.qmpSocket)},server=on,wait=off`,
    '-mon',
    'chardev=qmp,mode=control',
    '-pidfile',
    layout.pidFile,
    '-fw_cfg',
    `name=${CONFIG_FW_CFG_NAME},file=${v(layout.configFile)}`,
    '-device',
    `virtio-serial-${bus},id=vser`,
    // wait=off: QEMU starts without a host client; the host connects (and reconnects) when it likes.
    '-chardev',
    `socket,id=channel,path=${v(layout.channelSocket)},server=on,wait=off`,
    '-device',
    `virtserialport,bus=vser.0,chardev=channel,name=${CHANNEL_PORT_NAME}`,
    // Truncated at each start: the file then holds this boot's output from offset 0, the same offsets
    // attach uses, so a host can resume from the file where an attach left off.
    '-chardev',
    `file,id=${LOG_CHARDEV_ID},path=${v(layout.logPort)}`,
    '-device',
    `virtserialport,bus=vser.0,chardev=log,name=${LOG_PORT_NAME}`,
    '-drive',
    `file=${v(input.runtimeDisk)},if=none,id=runtime,format=raw,readonly=on`,
    '-device',
    `virtio-blk-${bus},drive=runtime,serial=${RUNTIME_DISK_SERIAL}`,
    '-drive',
    `file=${v(layout.rootOverlay)},if=none,id=root,format=qcow2`,
    '-device',
    `virtio-blk-${bus},drive=root,serial=${ROOT_DISK_SERIAL}`,
    // Volumes: QEMU's image locking keeps a second VM from opening one for writing while this one runs.
    ...(input.volumes ?? []).flatMap((volume, index) => [
      '-drive',
      `file=${v(volume.disk)},if=none,id=vol${index},format=raw${volume.readOnly ? ',readonly=on' : ''}`,
      '-device',
      `virtio-blk-${bus},drive=vol${index},serial=${volumeDiskSerial(index)}`,
    ]),
    // Each published port is a hostfwd rule; a taken host port makes QEMU exit at start (see port-forward.ts).
    '-netdev',
    userNetdevOption(input.ports),
    '-device',
    `virtio-net-${bus},netdev=net,mac=${USER_NET_MAC}`,
  ];
  return args;
}
