/**
 * The dev VM driver: each "VM" is `bin/tether --dev` on this host, for integration tests and benchmarks of
 * tetherd with many containers and no QEMU. The agent stands in for a whole VM (agent/src/dev.ts): it
 * serves the channel on a unix socket, writes the framed output to the log-port file (reopened on SIGHUP),
 * the status records to the console file, and exits 0 after its process with powerOffOnExit.
 *
 * What dev mode does not do: it runs the container's commands on this host, as the current user, in the
 * host's filesystem (the driver's `rootfs` option only picks where users and archive paths resolve). So
 * spec.rootDisk, kernel, initramfs, runtime disk, memory, cpus and keepRootLayer are ignored, the config's
 * network, storage and hostname are not applied, and spec.ports are not published (the process uses the
 * host's network directly). The agent runs detached (setsid, stdio on a file), so it outlives the process
 * that started it and adopt() takes it back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import type { Vm, VmDriver, VmSpec } from '../driver.ts';
import { repoRoot } from '../paths.ts';
import { isProcessAlive } from '../qemu/process-alive.ts';
import type { NetworkConfig } from '../qemu/user-network.ts';
import { devLayout, type DevLayout, type DevVmMetadata } from './dev-layout.ts';
import { DevVm } from './dev-vm.ts';

export interface DevDriverOptions {
  /** The agent to run; default TETHER_AGENT, else bin/tether of this repository. */
  agentPath?: string;
  /** Passed as --rootfs: where the agent resolves users and archive paths (default /, the host's root). */
  rootfs?: string;
  /** Output the agent keeps for attach clients (--buffer-bytes); the agent's default when absent. */
  bufferBytes?: number;
  /** How long the agent may take to listen on its channel socket. */
  startTimeoutMs?: number;
}

function tail(path: string, lines = 20): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

function sizeOf(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

export class DevDriver implements VmDriver {
  readonly name = 'dev';
  readonly #options: DevDriverOptions;

  constructor(options: DevDriverOptions = {}) {
    this.#options = options;
  }

  get agentPath(): string {
    return this.#options.agentPath ?? process.env['TETHER_AGENT'] ?? join(repoRoot(), 'bin', 'tether');
  }

  /** Dev mode configures no network: the process shares the host's. */
  guestNetwork(): NetworkConfig {
    return { interfaces: [] };
  }

  async start(given: VmSpec): Promise<Vm> {
    const layout = devLayout(resolve(given.stateDir));
    if (!existsSync(this.agentPath))
      throw new TetherError(
        'TETHER_VM_FAILED',
        `the agent ${this.agentPath} is not there: build it with \`make build\` (or set TETHER_AGENT)`,
      );
    // The config holds the agent's private host key.
    writeFileSync(layout.configFile, given.config, { mode: 0o600 });
    // A socket or pid left by an earlier boot in this directory must not pass for this one.
    rmSync(layout.channelSocket, { force: true });
    rmSync(layout.pidFile, { force: true });
    const consoleOffset = sizeOf(layout.consoleLog);
    const args = [
      '--dev',
      '--socket',
      layout.channelSocket,
      '--state',
      layout.agentState,
      '--config',
      layout.configFile,
      '--log-file',
      layout.logPort,
      '--console-file',
      layout.consoleLog,
      ...(this.#options.rootfs ? ['--rootfs', this.#options.rootfs] : []),
      ...(this.#options.bufferBytes ? ['--buffer-bytes', String(this.#options.bufferBytes)] : []),
    ];
    const child = this.#spawn(args, layout);
    try {
      await this.#waitForSocket(child, layout);
    } catch (error) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      throw error;
    }
    const metadata: DevVmMetadata = { id: given.id, pid: child.pid!, consoleOffset };
    writeFileSync(layout.pidFile, `${child.pid}\n`);
    writeFileSync(layout.metadata, JSON.stringify(metadata) + '\n');
    return new DevVm(metadata, layout, child);
  }

  async adopt(stateDir: string): Promise<Vm> {
    const layout = devLayout(resolve(stateDir));
    let metadata: DevVmMetadata;
    try {
      metadata = JSON.parse(readFileSync(layout.metadata, 'utf8')) as DevVmMetadata;
      metadata.pid = Number(readFileSync(layout.pidFile, 'utf8').trim());
    } catch (error) {
      throw new TetherError(
        'TETHER_VM_FAILED',
        `no dev VM in ${stateDir}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
        { cause: error },
      );
    }
    if (!Number.isSafeInteger(metadata.pid) || !isProcessAlive(metadata.pid, layout.channelSocket))
      throw new TetherError(
        'TETHER_VM_FAILED',
        `the dev VM in ${stateDir} is not running (pid ${metadata.pid} is gone)`,
      );
    return Promise.resolve(new DevVm(metadata, layout));
  }

  #spawn(args: string[], layout: DevLayout): ChildProcess {
    const log = openSync(layout.agentLog, 'a');
    try {
      const child = spawn(this.agentPath, args, {
        // detached = setsid: the agent outlives us and is outside our terminal's process group.
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

  async #waitForSocket(child: ChildProcess, layout: DevLayout): Promise<void> {
    const timeoutMs = this.#options.startTimeoutMs ?? 30_000;
    const deadline = Date.now() + timeoutMs;
    let spawnError: NodeJS.ErrnoException | undefined;
    child.once('error', (error) => (spawnError = error));
    for (;;) {
      if (spawnError)
        throw new TetherError('TETHER_VM_FAILED', `cannot start ${this.agentPath}: ${spawnError.message}`, {
          cause: spawnError,
        });
      // Exit 0 is a process that ran and powered off (powerOffOnExit) before we looked: started fine.
      if (child.exitCode === 0) return;
      if (child.exitCode !== null || child.signalCode !== null)
        throw new TetherError(
          'TETHER_VM_FAILED',
          `the dev agent exited at once (${child.exitCode !== null ? `status ${child.exitCode}` : child.signalCode}): ${tail(layout.agentLog) || 'no message'}`,
        );
      if (existsSync(layout.channelSocket)) return;
      if (Date.now() > deadline)
        throw new TetherError(
          'TETHER_VM_FAILED',
          `the dev agent did not listen on ${layout.channelSocket} within ${timeoutMs} ms: ${tail(layout.agentLog) || 'no message'}`,
        );
      await sleep(10);
    }
  }
}
