/** The dev VM driver: `tether --dev` as a VM, driven through the VmDriver/Vm interfaces tetherd uses. */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isTetherError } from '../../protocol/src/errors/errors.ts';
import { encodeLogFrame, STREAM_STDERR, STREAM_STDOUT } from '../../protocol/src/logs/log-frame.ts';
import { connectVmChannel } from '../../hostside/src/vm/channel-connect.ts';
import { generateChannelKeys } from '../../hostside/src/vm/channel-keys.ts';
import { ConsoleWatcher } from '../../hostside/src/vm/console-watcher.ts';
import { generateStatusKey } from '../../hostside/src/vm/status-key.ts';
import { decodeStatusKey } from '../../protocol/src/status/console-line.ts';
import { DevDriver } from '../../hostside/src/vm/dev/dev-driver.ts';
import type { Vm, VmSpec } from '../../hostside/src/vm/driver.ts';
import { decodeLogBytes } from '../../hostside/src/vm/log-file.ts';
import { collect } from '../helpers/dev-agent.ts';

const dirs: string[] = [];
const vms: Vm[] = [];
/** Every VM here signs its console lines with this key, as one tetherd starts would (a key per boot). */
const STATUS_KEY = generateStatusKey();

/** This run's records as the host believes them (signed with STATUS_KEY), read to the file's end. */
function consoleRecords(vm: Vm): ConsoleWatcher {
  const watcher = new ConsoleWatcher(vm.consoleLogPath, { statusKey: decodeStatusKey(STATUS_KEY) });
  watcher.stop();
  return watcher;
}

function spec(id: string, config: { channel?: object; [field: string]: unknown }): VmSpec {
  const stateDir = mkdtempSync(join(tmpdir(), 'tether-devdrv-'));
  dirs.push(stateDir);
  return {
    id,
    stateDir,
    // Dev mode boots nothing and mounts no disk: these are never opened.
    kernel: '/nonexistent/vmlinuz',
    initramfs: '/nonexistent/initramfs',
    runtimeDisk: '/nonexistent/runtime.img',
    rootDisk: '/nonexistent/root.img',
    config: Buffer.from(
      JSON.stringify({ version: 1, id, ...config, channel: { ...config.channel, statusKey: STATUS_KEY } }),
    ),
  };
}

function stdoutOf(bytes: Buffer, stream = STREAM_STDOUT): string {
  return Buffer.concat(
    decodeLogBytes(bytes)
      .filter((frame) => frame.stream === stream)
      .map((frame) => frame.data),
  ).toString();
}

describe('DevDriver', () => {
  const driver = new DevDriver();
  after(async () => {
    for (const vm of vms) await vm.kill().catch(() => undefined);
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('runs the config as a VM: framed output in the log-port file, the exit on the console, guest-shutdown', async () => {
    const given = spec('exit3', {
      powerOffOnExit: true,
      process: { argv: ['sh', '-c', 'for i in 1 2 3; do echo "line $i"; done; echo oops >&2; exit 3'] },
    });
    const vm = await driver.start(given);
    vms.push(vm);
    assert.equal(vm.consoleLogPath, join(given.stateDir, 'console.log'));
    assert.equal(vm.logPortPath, join(given.stateDir, 'container.log'));
    assert.deepEqual(vm.ports, []);
    assert.equal(readFileSync(join(given.stateDir, 'config.json')).toString(), given.config.toString());
    const exit = await vm.wait();
    assert.deepEqual(exit, { reason: 'guest-shutdown', exitCode: 0 });

    const bytes = readFileSync(vm.logPortPath);
    const frames = decodeLogBytes(bytes);
    assert.deepEqual(
      Buffer.concat(frames.map((frame) => encodeLogFrame(frame))),
      bytes,
      'the file is whole frames and nothing else',
    );
    assert.equal(stdoutOf(bytes), 'line 1\nline 2\nline 3\n');
    assert.equal(stdoutOf(bytes, STREAM_STDERR), 'oops\n');

    const watcher = consoleRecords(vm);
    const exited = watcher.records.find((seen) => seen.record.stage === 'process-exited');
    assert.equal(exited?.record.exitCode, 3);
    assert.equal(watcher.records.at(-1)?.record.stage, 'shutdown');
    assert.equal((await vm.inspect()).running, false);
  });

  it('is adopted by a second driver while it runs, which can talk to it and stop it', async () => {
    const keys = generateChannelKeys('adopt');
    const given = spec('adopt', {
      channel: { hostKey: keys.agentHostKey, authorizedKeys: [keys.clientPublicKey] },
      process: { argv: ['sh', '-c', 'trap "echo stopping; exit 0" TERM; while :; do sleep 0.1; done'] },
    });
    const first = await driver.start(given);
    vms.push(first);
    first.release();

    const adopted = await new DevDriver().adopt(given.stateDir);
    vms.push(adopted);
    const info = await adopted.inspect();
    assert.equal(info.running, true);
    assert.equal(info.pid, Number(readFileSync(join(given.stateDir, 'dev.pid'), 'utf8')));
    const client = await connectVmChannel(adopted, { credentials: keys.credentials, timeoutMs: 10_000 });
    const handle = await client.exec({ argv: ['echo', 'through the adopted channel'], stdin: false });
    assert.equal(await collect(handle.stdout), 'through the adopted channel\n');
    client.close();

    const exit = await adopted.stop(5000);
    assert.equal(exit.reason, 'guest-shutdown', 'stopped gracefully: the agent reported its shutdown');
    assert.equal(stdoutOf(readFileSync(adopted.logPortPath)), 'stopping\n');
    await assert.rejects(new DevDriver().adopt(given.stateDir), (error) =>
      isTetherError(error, 'TETHER_VM_FAILED'),
    );
  });

  it('kill() ends the agent and its main process: reason killed', async () => {
    const given = spec('kill', { process: { argv: ['sleep', '300'] } });
    const vm = await driver.start(given);
    vms.push(vm);
    let mainPid: number | undefined;
    for (let i = 0; i < 200 && mainPid === undefined; i++) {
      const watcher = consoleRecords(vm);
      mainPid = watcher.records.find((seen) => seen.record.stage === 'process-started')?.record.pid;
      await sleep(25);
    }
    assert.ok(mainPid);
    const exit = await vm.kill();
    assert.equal(exit.reason, 'killed');
    assert.equal(exit.signal, 'SIGKILL');
    // Gone, or a zombie waiting for whoever reaps orphans here.
    const dead = (): boolean => {
      try {
        return readFileSync(`/proc/${mainPid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z') ?? true;
      } catch {
        return true;
      }
    };
    for (let i = 0; i < 100 && !dead(); i++) await sleep(20);
    assert.ok(dead(), 'the main process went with it');
  });

  it('reopenLog() rotates the log-port file without losing or repeating a byte', async () => {
    const lines = 30_000;
    const given = spec('rotate', {
      powerOffOnExit: true,
      process: {
        argv: [
          'sh',
          '-c',
          `i=0; while [ $i -lt ${lines} ]; do echo "line $i"; i=$((i+1)); [ $((i % 1000)) -eq 0 ] && sleep 0.05; done`,
        ],
      },
    });
    const vm = await driver.start(given);
    vms.push(vm);
    let ended = false;
    const exit = vm.wait().then((value) => {
      ended = true;
      return value;
    });
    const pieces: string[] = [];
    while (!ended) {
      await sleep(30);
      if (!existsSync(vm.logPortPath)) continue;
      const piece = `${vm.logPortPath}.${pieces.length + 1}`;
      renameSync(vm.logPortPath, piece);
      pieces.push(piece);
      try {
        await vm.reopenLog();
      } catch (error) {
        if ((await vm.inspect()).running) throw error; // only the race with the VM ending may fail it
      }
    }
    assert.equal((await exit).reason, 'guest-shutdown');
    assert.ok(pieces.length >= 5, `rotated ${pieces.length} times`);
    const all = Buffer.concat([...pieces, vm.logPortPath].filter(existsSync).map((p) => readFileSync(p)));
    const expected = Array.from({ length: lines }, (_, i) => `line ${i}\n`).join('');
    assert.equal(stdoutOf(all), expected);
  });
});
