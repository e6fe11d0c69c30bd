/**
 * Where a QEMU VM keeps its files inside its state directory. One place, so the driver that starts a VM
 * and the one that adopts it later (after a restart) agree on every path.
 */
import { join } from 'node:path';

export interface QemuLayout {
  stateDir: string;
  /** Guest console (ttyS0): kernel messages, stage0, @tether-status lines. */
  consoleLog: string;
  /** Backs the org.tether.log port: the agent's log frames. */
  logPort: string;
  /** Backs the org.tether.channel port; QEMU listens, the host connects. */
  channelSocket: string;
  qmpSocket: string;
  /** Written by QEMU once running, removed by QEMU when it exits. */
  pidFile: string;
  /** QEMU's own stdout/stderr: its warnings and errors. */
  qemuLog: string;
  /** The agent config, handed to the guest through fw_cfg. */
  configFile: string;
  /** The per-VM copy-on-write layer over the root filesystem image. */
  rootOverlay: string;
  /** What adopt() needs to know about a VM that another process started. */
  metadata: string;
}

export function qemuLayout(stateDir: string): QemuLayout {
  return {
    stateDir,
    consoleLog: join(stateDir, 'console.log'),
    logPort: join(stateDir, 'container.log'),
    channelSocket: join(stateDir, 'channel.sock'),
    qmpSocket: join(stateDir, 'qmp.sock'),
    pidFile: join(stateDir, 'qemu.pid'),
    qemuLog: join(stateDir, 'qemu.log'),
    configFile: join(stateDir, 'config.json'),
    rootOverlay: join(stateDir, 'root.qcow2'),
    metadata: join(stateDir, 'vm.json'),
  };
}
