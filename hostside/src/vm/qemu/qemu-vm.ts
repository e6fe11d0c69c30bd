/**
 * One running QEMU VM under control: its QMP connection, its process, and how it ended. Built by
 * QemuDriver.start() (this process is QEMU's parent and sees its exit status) or adopt() (another process
 * started it; QMP's socket closing and the pid going away tell us it ended).
 */
import type { ChildProcess } from 'node:child_process';
import type { Duplex } from 'node:stream';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import type { PortForward, Vm, VmExit, VmInfo } from '../driver.ts';
import { LOG_CHARDEV_ID } from './command-line.ts';
import type { QemuLayout } from './layout.ts';
import { isProcessAlive } from './process-alive.ts';
import type { QmpClient } from './qmp-client.ts';
import { connectUnixChannel } from '../unix-channel.ts';

/** How often the pid is checked, as a backstop to QMP's socket closing. */
const PID_POLL_MS = 250;
/** After QMP quit, how long QEMU gets to flush its disks and exit before SIGKILL. */
const QUIT_GRACE_MS = 5000;
export const DEFAULT_STOP_GRACE_MS = 15_000;

/**
 * Whether `promise` settled within `ms`. The timer is cleared as soon as it does: a pending one would hold
 * the event loop (a caller's process would linger for the whole grace period after the VM ended).
 */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export interface QemuVmOptions {
  /** Set when this process started QEMU: its exit event carries the status. */
  child?: ChildProcess | undefined;
  ports: PortForward[];
}

export class QemuVm implements Vm {
  readonly id: string;
  readonly stateDir: string;
  readonly consoleLogPath: string;
  readonly logPortPath: string;
  readonly ports: PortForward[];
  readonly #layout: QemuLayout;
  readonly #qmp: QmpClient;
  readonly #pid: number;
  readonly #exit: Promise<VmExit>;
  #shutdownReason: string | undefined;
  #released = false;
  #ended = false;
  #poll: NodeJS.Timeout | undefined;
  #child: ChildProcess | undefined;

  constructor(id: string, layout: QemuLayout, pid: number, qmp: QmpClient, options: QemuVmOptions) {
    const { child } = options;
    this.id = id;
    this.ports = options.ports;
    this.stateDir = layout.stateDir;
    this.consoleLogPath = layout.consoleLog;
    this.logPortPath = layout.logPort;
    this.#layout = layout;
    this.#qmp = qmp;
    this.#pid = pid;
    qmp.onEvent((event) => {
      if (event.event === 'SHUTDOWN' && typeof event.data['reason'] === 'string')
        this.#shutdownReason = event.data['reason'];
      else if (event.event === 'GUEST_PANICKED') this.#shutdownReason = 'guest-panic';
    });
    this.#exit = new Promise<VmExit>((resolve) => {
      const done = (exit: Omit<VmExit, 'reason'>, fallbackReason: string): void => {
        clearInterval(this.#poll);
        this.#ended = true;
        this.#qmp.close();
        resolve({ reason: this.#shutdownReason ?? fallbackReason, ...exit });
      };
      if (child && child.exitCode === null && child.signalCode === null) {
        // Our own child: its exit event carries the status; QMP closing a moment earlier changes nothing.
        // Held (ref) while under control, so that event is not lost to this process exiting first.
        child.ref();
        this.#child = child;
        child.once('exit', (code, signal) =>
          done(
            { ...(code !== null ? { exitCode: code } : {}), ...(signal ? { signal } : {}) },
            signal ? 'killed' : 'unknown',
          ),
        );
        return;
      }
      const check = (): void => {
        if (!isProcessAlive(pid, layout.qmpSocket)) done({}, 'unknown');
      };
      this.#poll = setInterval(check, PID_POLL_MS);
      void qmp.closed.then(check);
    });
  }

  inspect(): Promise<VmInfo> {
    const running = isProcessAlive(this.#pid, this.#layout.qmpSocket);
    const info: VmInfo = { id: this.id, pid: this.#pid, running };
    if (!running || !this.#qmp.isOpen) return Promise.resolve(info);
    return this.#qmp.execute<{ status?: string }>('query-status').then(
      (status) => ({ ...info, ...(status.status ? { state: status.status } : {}) }),
      () => info,
    );
  }

  openChannel(): Promise<Duplex> {
    return connectUnixChannel(this.#layout.channelSocket, "the VM's channel");
  }

  wait(): Promise<VmExit> {
    return this.#exit;
  }

  async stop(graceMs = DEFAULT_STOP_GRACE_MS): Promise<VmExit> {
    if (!this.#running()) return this.#exit;
    // The ACPI power button; the agent watches it and shuts the container down gracefully.
    await this.#qmp.execute('system_powerdown').catch(() => undefined);
    if (await settlesWithin(this.#exit, graceMs)) return this.#exit;
    return this.kill();
  }

  async kill(): Promise<VmExit> {
    if (!this.#running()) return this.#exit;
    // quit: QEMU stops the guest at once but still flushes its disk layers and exits cleanly.
    await this.#qmp.execute('quit').catch(() => undefined);
    if (await settlesWithin(this.#exit, QUIT_GRACE_MS)) return this.#exit;
    try {
      if (isProcessAlive(this.#pid, this.#layout.qmpSocket)) process.kill(this.#pid, 'SIGKILL');
    } catch {
      // Gone in between.
    }
    this.#shutdownReason ??= 'killed';
    return this.#exit;
  }

  /**
   * QMP chardev-change swaps the log chardev's backend for a new file at the same path; virtio-console
   * re-attaches the port to it (its be_change handler), between two writes of the guest's data under
   * QEMU's big lock, so each byte lands in exactly one of the two files. append=on: if the caller did not
   * move the old file away, nothing in it is lost. A VM that has ended writes nothing: nothing to do.
   * QEMU 7.2 refuses the swap while the VM is paused ("Chardev user does not support chardev hotswap":
   * virtio-serial drops the port's handlers when the VM stops); on any refusal the old file stays in use.
   */
  async reopenLog(): Promise<void> {
    if (!this.#running()) return;
    try {
      await this.#qmp.execute('chardev-change', {
        id: LOG_CHARDEV_ID,
        backend: { type: 'file', data: { out: this.logPortPath, append: true } },
      });
    } catch (error) {
      // It ended in between: as above.
      if (!this.#running()) return;
      const state = await this.#qmp.execute<{ status?: string }>('query-status').then(
        (status) => status.status,
        () => undefined,
      );
      const paused =
        state !== undefined && state !== 'running'
          ? ` (the VM is ${state}; QEMU swaps the file only while it runs)`
          : '';
      throw new TetherError(
        'TETHER_VM_FAILED',
        `cannot reopen the log file ${this.logPortPath} of VM ${this.id}${paused}: ${(error as Error).message}; output still goes to the previous file`,
        { cause: error },
      );
    }
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    clearInterval(this.#poll);
    this.#child?.unref();
    this.#qmp.close();
  }

  #running(): boolean {
    if (this.#released)
      throw new TetherError('TETHER_VM_FAILED', `VM ${this.id} was released; adopt it again to control it`);
    return !this.#ended && isProcessAlive(this.#pid, this.#layout.qmpSocket);
  }
}
