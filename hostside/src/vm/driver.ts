/**
 * The VM driver: the boundary between tetherd/tetherctl and a hypervisor. QEMU is the first implementation
 * (hostside/src/vm/qemu/); a vSphere driver would implement the same interface with serial ports that dial
 * back to the host. What the guest sees is the same whichever driver starts it: virtio disks found by
 * serial, two named virtio-serial ports (org.tether.channel, org.tether.log), a console, and the config in
 * fw_cfg (or an equivalent path the agent already reads), so nothing in the agent knows the hypervisor.
 */
import type { Duplex } from 'node:stream';
import type { AgentConfig } from '../../../protocol/src/config/config.ts';

/** The disk serials and port names the agent looks for; the config names the root disk by ROOT_DISK_SERIAL. */
export const RUNTIME_DISK_SERIAL = 'tether-runtime';
export const ROOT_DISK_SERIAL = 'tether-root';
export const CHANNEL_PORT_NAME = 'org.tether.channel';
/** Volume disks are `tether-vol-0`, `tether-vol-1`, ... in VmSpec.volumes order. */
export const volumeDiskSerial = (index: number): string => `tether-vol-${index}`;
/**
 * Volumes one VM can take: QEMU's microvm has 8 virtio-mmio transports and the fixed devices use 4
 * (serial ports, runtime disk, root disk, network).
 */
export const MAX_VOLUME_DISKS = 4;
export const LOG_PORT_NAME = 'org.tether.log';

export interface VmSpec {
  /** The container's id, for messages and the hypervisor's VM name. */
  id: string;
  /** Per-VM directory the driver owns: disks, sockets, logs. Must exist; the caller removes it. */
  stateDir: string;
  /** Boot image, shared read-only by every VM. */
  kernel: string;
  initramfs: string;
  runtimeDisk: string;
  /**
   * The container's root filesystem image (an image's top layer disk, qcow2, or a raw ext4 image), never
   * written: the driver gives the VM a private writable copy-on-write layer over it (serial ROOT_DISK_SERIAL).
   */
  rootDisk: string;
  /** The agent config (JSON bytes, see docs/config.md). */
  config: Uint8Array;
  /** Guest memory in MiB; the driver's default when absent. */
  memoryMiB?: number;
  cpus?: number;
  /**
   * Keep the container's writable layer from an earlier boot in stateDir (docker restart / start again)
   * instead of making a fresh one over rootDisk.
   */
  keepRootLayer?: boolean;
  /** Guest TCP/UDP ports published on the host (docker run -p). */
  ports?: PortForward[];
  /** Volume disks (raw ext4 files), attached in order with serials volumeDiskSerial(i). */
  volumes?: VmVolumeDisk[];
}

export interface VmVolumeDisk {
  disk: string;
  readOnly: boolean;
}

export interface PortForward {
  protocol: 'tcp' | 'udp';
  /** Host address to listen on; 127.0.0.1 unless the user asked for another. */
  hostIp: string;
  hostPort: number;
  guestPort: number;
}

export interface VmInfo {
  id: string;
  /** The hypervisor process on this host, when there is one (QEMU); undefined for a remote hypervisor. */
  pid: number | undefined;
  running: boolean;
  /** The hypervisor's own word for the VM's state (QEMU: query-status, e.g. "running", "shutdown"). */
  state?: string;
}

export interface VmExit {
  /**
   * Why the VM ended, as far as the driver saw it: "guest-shutdown" (the agent powered off),
   * "guest-reset" (reboot; the VM is not restarted), "guest-panic", "host-qmp-quit" (stop/kill),
   * "killed" (the hypervisor process was killed), or "unknown" (the driver saw only that it is gone).
   */
  reason: string;
  /** The hypervisor process's exit status, when this process started it and saw it end. */
  exitCode?: number;
  signal?: string;
}

export interface Vm {
  readonly id: string;
  readonly stateDir: string;
  /** A file with the guest console (kernel messages, stage0, the agent's @tether-status lines). */
  readonly consoleLogPath: string;
  /** A file the hypervisor fills with what the agent writes to the log port (log frames). */
  readonly logPortPath: string;
  /** The ports published on the host for this boot (VmSpec.ports; [] when none or the driver has no network). */
  readonly ports: PortForward[];

  inspect(): Promise<VmInfo>;
  /**
   * A fresh byte stream to the agent's channel port. The port carries one host connection at a time:
   * destroy the previous stream before opening another. Bytes sent before the agent opens its end wait
   * in the hypervisor (the resync handshake skips stale ones).
   */
  openChannel(): Promise<Duplex>;
  /** Asks the guest to power down (ACPI power button), and kills the VM if it is still up after graceMs. */
  stop(graceMs?: number): Promise<VmExit>;
  /** Powers the VM off at once. */
  kill(): Promise<VmExit>;
  /** Resolves when the VM has ended, however that happened. */
  wait(): Promise<VmExit>;
  /**
   * Makes the hypervisor write the log port to a fresh file at logPortPath. The caller first renames the
   * current file away (rotation); bytes written before the switch stay in the renamed file, later ones go
   * to the new file, none are lost (QEMU: QMP chardev-change; a frame may straddle the two files).
   */
  reopenLog(): Promise<void>;
  /** Lets go of the VM without stopping it (closes control connections); it keeps running. */
  release(): void;
}

export interface VmDriver {
  readonly name: string;
  /** The network section of the agent config that matches the interfaces this driver gives its VMs. */
  guestNetwork(): NonNullable<AgentConfig['network']>;
  /** Prepares the VM's disks and files in spec.stateDir and starts it; resolves once it is running. */
  start(spec: VmSpec): Promise<Vm>;
  /** Takes a VM that a previous process started in stateDir back under control (e.g. tetherd restarted). */
  adopt(stateDir: string): Promise<Vm>;
  /**
   * Makes the container's writable root layer over `rootDisk` in stateDir before its first boot (docker
   * create), so that it exists, and counts, from then on; start() keeps it when `keepRootLayer` is set.
   * Drivers whose VMs have no disks of their own on this host leave it out.
   */
  createRootLayer?(stateDir: string, rootDisk: string): Promise<void>;
  /** Bytes the container's writable layer in stateDir takes on the host (docker ps -s, system df). */
  rootLayerBytes?(stateDir: string): number;
}
