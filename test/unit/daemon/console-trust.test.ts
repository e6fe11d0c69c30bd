/**
 * tetherd believes only the console status lines signed with the boot's key: the exit code, OOMKilled and
 * boot failures come from those, never from lines a container printed. Driven through ContainerManager
 * with a scripted driver whose "VM" writes a console and ends: no agent, no hypervisor.
 */
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { decodeConfig } from '../../../protocol/src/config/config.ts';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import {
  StatusLineSigner,
  decodeStatusKey,
  encodeStatusConsoleLine,
} from '../../../protocol/src/status/console-line.ts';
import type { StatusRecord } from '../../../protocol/src/status/status.ts';
import { containerInspect } from '../../../hostside/src/daemon/api/docker/container-json.ts';
import { EventBus, type DockerEvent } from '../../../hostside/src/daemon/containers/events.ts';
import { ContainerManager } from '../../../hostside/src/daemon/containers/manager.ts';
import type { Vm, VmDriver, VmExit, VmInfo, VmSpec } from '../../../hostside/src/vm/driver.ts';
import { STATUS_KEY_FILE } from '../../../hostside/src/vm/status-key.ts';

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** What one boot prints on its console, given the agent's signer (undefined: its config had no key). */
type Script = (agent: StatusLineSigner | undefined) => string;

const rec = (stage: StatusRecord['stage'], extra: Partial<StatusRecord> = {}): StatusRecord => ({
  stage,
  outcome: 'ok',
  atMs: 100,
  ...extra,
});

/** A signer with a key no tetherd gave: what a container guessing at the key would print. */
const forger = (): StatusLineSigner => new StatusLineSigner(Buffer.alloc(32, 0xee));

class ScriptedVm implements Vm {
  readonly id: string;
  readonly stateDir: string;
  readonly consoleLogPath: string;
  readonly logPortPath: string;
  readonly ports = [];
  readonly #exit: Promise<VmExit>;
  #end: (exit: VmExit) => void = () => {};

  constructor(spec: VmSpec, endsAtOnce: boolean) {
    this.id = spec.id;
    this.stateDir = spec.stateDir;
    this.consoleLogPath = join(spec.stateDir, 'console.log');
    this.logPortPath = join(spec.stateDir, 'container.log');
    writeFileSync(this.logPortPath, '');
    this.#exit = new Promise((resolve) => (this.#end = resolve));
    if (endsAtOnce) setTimeout(() => this.#end({ reason: 'guest-shutdown' }), 30);
  }

  inspect(): Promise<VmInfo> {
    return Promise.resolve({ id: this.id, pid: 4242, running: true });
  }
  openChannel(): Promise<Duplex> {
    return Promise.reject(new TetherError('TETHER_CHANNEL_CLOSED', 'a scripted VM has no channel'));
  }
  stop(): Promise<VmExit> {
    return this.kill();
  }
  kill(): Promise<VmExit> {
    this.#end({ reason: 'killed' });
    return this.#exit;
  }
  wait(): Promise<VmExit> {
    return this.#exit;
  }
  reopenLog(): Promise<void> {
    return Promise.resolve();
  }
  release(): void {}
}

class ScriptedDriver implements VmDriver {
  readonly name = 'scripted';
  script: Script = () => '';
  endsAtOnce = true;
  /** The channel.statusKey of each boot's config, in order. */
  readonly keys: Array<string | undefined> = [];

  guestNetwork(): { interfaces: [] } {
    return { interfaces: [] };
  }

  start(spec: VmSpec): Promise<Vm> {
    const statusKey = decodeConfig(spec.config).channel?.statusKey;
    this.keys.push(statusKey);
    const agent = statusKey === undefined ? undefined : new StatusLineSigner(decodeStatusKey(statusKey));
    writeFileSync(join(spec.stateDir, 'console.log'), '[    0.1] kernel noise\n' + this.script(agent));
    return Promise.resolve(new ScriptedVm(spec, this.endsAtOnce));
  }

  adopt(stateDir: string): Promise<Vm> {
    return Promise.reject(new TetherError('TETHER_VM_FAILED', `no scripted VM runs in ${stateDir}`));
  }
}

interface Daemon {
  manager: ContainerManager;
  driver: ScriptedDriver;
  events: DockerEvent[];
  logs: Array<Record<string, unknown>>;
  root: string;
}

async function openDaemon(root?: string, driver = new ScriptedDriver()): Promise<Daemon> {
  const dir = root ?? mkdtempSync(join(tmpdir(), 'tetherd-trust-'));
  if (!root) dirs.push(dir);
  const logs: Array<Record<string, unknown>> = [];
  const logger = pino(
    { level: 'debug' },
    { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) },
  );
  const bus = new EventBus();
  const events: DockerEvent[] = [];
  bus.on('event', (event) => events.push(event));
  const manager = await ContainerManager.open({
    root: dir,
    driver,
    bootImage: { kernel: '/nonexistent', initramfs: '/nonexistent', runtimeDisk: '/nonexistent' },
    images: {
      resolve: (ref) => ({
        id: 'sha256:' + 'c'.repeat(64),
        repoTags: [ref],
        rootDisk: '/nonexistent',
        config: {},
      }),
    },
    events: bus,
    logger,
    bootTimeoutMs: 60_000,
  });
  return { manager, driver, events, logs, root: dir };
}

/** Runs one container through one boot of `script`; resolves once its exit is recorded. */
async function runOnce(daemon: Daemon, script: Script): Promise<ReturnType<ContainerManager['find']>> {
  daemon.driver.script = script;
  const container = await daemon.manager.create({ image: 'scripted', cmd: ['true'] });
  await daemon.manager.start(container.id);
  await daemon.manager.wait(container.id, 'not-running');
  return daemon.manager.find(container.id);
}

void describe('tetherd and the console status lines', () => {
  void it('an OOM kill the agent reported sets State.OOMKilled, with an oom event; a forged exit changes nothing', async () => {
    const daemon = await openDaemon();
    const container = await runOnce(
      daemon,
      (agent) =>
        agent!.line(rec('process-started', { pid: 97 })) +
        agent!.line(rec('oom', { outcome: 'failed', pid: 120, detail: 'memory.max reached' })) +
        // The container's own lines: an unsigned clean exit, a shutdown signed with a guessed key.
        encodeStatusConsoleLine(rec('process-exited', { exitCode: 0 })) +
        forger().line(rec('shutdown', { exitCode: 0 })) +
        agent!.line(rec('process-exited', { exitCode: 137, signal: 'SIGKILL', oomKilled: true })) +
        agent!.line(rec('shutdown', { exitCode: 137, signal: 'SIGKILL' })),
    );
    assert.equal(container.record.state.exitCode, 137);
    assert.equal(container.record.state.oomKilled, true);
    const state = containerInspect(container)['State'] as Record<string, unknown>;
    assert.equal(state['OOMKilled'], true);
    assert.equal(state['ExitCode'], 137);
    const actions = daemon.events.filter((e) => e.Actor.ID === container.id).map((e) => e.Action);
    assert.ok(
      actions.indexOf('oom') !== -1 && actions.indexOf('oom') < actions.indexOf('die'),
      actions.join(),
    );
    assert.equal(actions.filter((a) => a === 'oom').length, 1);
    const timeline = container.boot!.timeline.flatMap((entry) =>
      entry.source === 'guest' ? [entry.record.stage] : [],
    );
    assert.deepEqual(timeline, ['process-started', 'oom', 'process-exited', 'shutdown']);
    assert.equal(container.boot!.console!.dropped, 2);
    const dropped = daemon.logs.filter((log) => log['msg'] === 'console status line not believed');
    assert.deepEqual(
      dropped.map((log) => [log['level'], log['reason']]),
      [
        [20, 'unsigned'],
        [20, 'bad-mac'],
      ],
    );
  });

  void it('forged oom, exit and boot-failure lines reach neither the state nor the timeline', async () => {
    const daemon = await openDaemon();
    const container = await runOnce(daemon, (agent) => {
      const started = agent!.line(rec('process-started', { pid: 97 }));
      return (
        started +
        forger().line(rec('oom', { outcome: 'failed', detail: 'forged' })) +
        encodeStatusConsoleLine(rec('process-exited', { exitCode: 0, oomKilled: true })) +
        encodeStatusConsoleLine(rec('config', { outcome: 'failed', detail: 'forged' })) +
        started + // a genuine line printed again
        agent!.line(rec('process-exited', { exitCode: 3 })) +
        agent!.line(rec('shutdown', { exitCode: 3 }))
      );
    });
    assert.equal(container.record.state.exitCode, 3);
    assert.equal(container.record.state.oomKilled, false);
    assert.equal(container.record.state.error, '', 'no boot failure was believed');
    assert.equal((containerInspect(container)['State'] as Record<string, unknown>)['OOMKilled'], false);
    assert.ok(!daemon.events.some((e) => e.Action === 'oom'));
    const stages = container.boot!.timeline.flatMap((entry) =>
      entry.source === 'guest' ? [entry.record.stage] : [],
    );
    assert.deepEqual(stages, ['process-started', 'process-exited', 'shutdown']);
    assert.equal(container.boot!.console!.dropped, 4);
  });

  void it('each boot gets a fresh key, in the config and in status.key (mode 0600); OOMKilled resets', async () => {
    const daemon = await openDaemon();
    let oom = true;
    daemon.driver.script = (agent) =>
      (oom ? agent!.line(rec('oom', { outcome: 'failed' })) : '') +
      agent!.line(rec('process-exited', { exitCode: 0 }));
    const created = await daemon.manager.create({ image: 'scripted', cmd: ['true'] });
    await daemon.manager.start(created.id);
    await daemon.manager.wait(created.id, 'not-running');
    const container = daemon.manager.find(created.id);
    const keyFile = join(container.dir, STATUS_KEY_FILE);
    const first = readFileSync(keyFile, 'utf8').trim();
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    assert.equal(first, daemon.driver.keys[0]);
    assert.equal(container.record.state.oomKilled, true);

    oom = false;
    await daemon.manager.start(created.id);
    await daemon.manager.wait(created.id, 'not-running');
    const second = readFileSync(keyFile, 'utf8').trim();
    assert.equal(second, daemon.driver.keys[1]);
    assert.notEqual(second, first);
    assert.equal(daemon.manager.find(created.id).record.state.oomKilled, false, 'since the last start');
  });

  void it('a VM that ended while tetherd was down: the next tetherd reads its exit with the saved key', async () => {
    const first = await openDaemon();
    first.driver.endsAtOnce = false;
    first.driver.script = (agent) => agent!.line(rec('process-started', { pid: 97 }));
    const created = await first.manager.create({ image: 'scripted', cmd: ['true'] });
    await first.manager.start(created.id);
    const { dir, boot } = first.manager.find(created.id);
    first.manager.close();
    // Only now does the VM end, unseen: the closed tetherd records nothing (and stops reconnecting).
    await boot!.vm!.kill();

    // Meanwhile the VM ends; its container printed a forged exit before the agent's own lines.
    const key = decodeStatusKey(readFileSync(join(dir, STATUS_KEY_FILE), 'utf8').trim());
    const agent = new StatusLineSigner(key);
    agent.line(rec('process-started')); // seq 1 was the line above
    appendFileSync(
      join(dir, 'console.log'),
      encodeStatusConsoleLine(rec('process-exited', { exitCode: 0 })) +
        agent.line(rec('process-exited', { exitCode: 137, oomKilled: true })),
    );

    const second = await openDaemon(first.root);
    const state = second.manager.find(created.id).record.state;
    assert.equal(state.status, 'exited');
    assert.equal(state.exitCode, 137);
    assert.equal(state.oomKilled, true);
    assert.equal(state.error, '');
    second.manager.close();
  });
});
