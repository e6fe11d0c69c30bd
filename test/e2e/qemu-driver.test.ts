/**
 * The QEMU driver's own features under real QEMU (TCG, microvm): a published port fetched from the host, the
 * log file rotated under a process that writes without pause (Vm.reopenLog, QMP chardev-change), a root layer
 * kept across a restart, and a taken host port named in the start error. Two boots of one state directory.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentConfig } from '../../protocol/src/config/config.ts';
import { isTetherError } from '../../protocol/src/errors/errors.ts';
import {
  LOG_HEADER_BYTES,
  LogFrameDecoder,
  STREAM_STDOUT,
  type LogFrame,
} from '../../protocol/src/logs/log-frame.ts';
import { generateChannelKeys } from '../../hostside/src/vm/channel-keys.ts';
import type { PortForward, Vm, VmSpec } from '../../hostside/src/vm/driver.ts';
import { QemuDriver } from '../../hostside/src/vm/qemu/qemu-driver.ts';
import { need } from '../helpers/prerequisites.ts';
import { IMAGE_DIR, vmPrerequisites } from '../helpers/vm.ts';

const ROTATIONS = 3;

/** A port that was free a moment ago: bound by the kernel's choice, then let go. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function listen(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

function stdoutText(frames: readonly LogFrame[]): string {
  return Buffer.concat(frames.filter((f) => f.stream === STREAM_STDOUT).map((f) => f.data)).toString();
}

/** Every whole frame in the bytes; a frame cut short at the very end is left out, damage anywhere fails. */
function decodeAll(bytes: Buffer): LogFrame[] {
  const decoder = new LogFrameDecoder();
  const frames: LogFrame[] = [];
  for (let at = 0; at < bytes.length; at += 4096) frames.push(...decoder.push(bytes.subarray(at, at + 4096)));
  return frames;
}

function readOr(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch {
    return Buffer.alloc(0);
  }
}

async function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  ms = 90_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(250);
  }
}

// The main process: a web server on guest port 80, a file in the container's root layer (kept across a
// restart, reported on the next boot), then a counter written as fast as the shell can.
const SCRIPT = [
  'mkdir -p /www && echo hello-from-guest > /www/index.html && httpd -p 80 -h /www',
  'if [ -e /kept ]; then echo "kept:$(cat /kept)"; else echo first-boot > /kept; sync; echo wrote-kept; fi',
  'i=0; while :; do echo "n=$i"; i=$((i+1)); done',
].join('\n');

describe('the QEMU driver under real QEMU', { timeout: 240_000 }, () => {
  let stateDir = '';
  let spec: VmSpec | undefined;
  let vm: Vm | undefined;
  let hostPort = 0;
  const driver = new QemuDriver();

  before(async (t) => {
    if (!need(t as never, vmPrerequisites())) return;
    stateDir = mkdtempSync(join(tmpdir(), 'tether-qd-'));
    hostPort = await freePort();
    const id = `qd-${Date.now().toString(36)}`;
    const keys = generateChannelKeys(id);
    const config: AgentConfig = {
      version: 1,
      id,
      hostname: 'qd',
      storage: { root: { serial: 'tether-root', fstype: 'ext4' } },
      network: driver.guestNetwork(),
      channel: { hostKey: keys.agentHostKey, authorizedKeys: [keys.clientPublicKey] },
      powerOffOnExit: true,
      process: { argv: ['/bin/sh', '-c', SCRIPT] },
    };
    spec = {
      id,
      stateDir,
      kernel: join(IMAGE_DIR, 'vmlinuz'),
      initramfs: join(IMAGE_DIR, 'initramfs.cpio.gz'),
      runtimeDisk: join(IMAGE_DIR, 'runtime.img'),
      rootDisk: join(IMAGE_DIR, 'busybox.img'),
      config: Buffer.from(JSON.stringify(config)),
      memoryMiB: 320,
      ports: [{ protocol: 'tcp', hostIp: '127.0.0.1', hostPort, guestPort: 80 }],
    };
    vm = await driver.start(spec);
  });

  after(async () => {
    if (vm && (await vm.inspect().catch(() => undefined))?.running) await vm.kill().catch(() => undefined);
    vm?.release();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('publishes a guest TCP port on a host loopback port and records it', async (t) => {
    if (!vm) return t.skip('no VM');
    const expected: PortForward[] = [{ protocol: 'tcp', hostIp: '127.0.0.1', hostPort, guestPort: 80 }];
    assert.deepEqual(vm.ports, expected);
    assert.deepEqual(JSON.parse(readFileSync(join(stateDir, 'vm.json'), 'utf8')).ports, expected);
    const cmdline = readFileSync(`/proc/${(await vm.inspect()).pid}/cmdline`, 'utf8').split('\0');
    assert.equal(cmdline[cmdline.indexOf('-m') + 1], '320', 'memoryMiB reaches QEMU');
    const body = await until('the guest web server through the forward', async () => {
      try {
        const response = await fetch(`http://127.0.0.1:${hostPort}/index.html`, {
          signal: AbortSignal.timeout(3000),
        });
        return response.ok ? await response.text() : undefined;
      } catch {
        return undefined; // slirp accepts, then drops the connection until the guest listens
      }
    });
    assert.equal(body, 'hello-from-guest\n');
  });

  it('rotates the log file under a busy writer: every line lands in exactly one file, in order', async (t) => {
    if (!vm) return t.skip('no VM');
    const live = vm.logPortPath;
    await until('the counter in the log file', () =>
      stdoutText(decodeAll(readOr(live))).includes('n=100\n') ? true : undefined,
    );
    const rotated: string[] = [];
    const took: number[] = [];
    for (let k = 1; k <= ROTATIONS; k++) {
      const away = `${live}.${k}`;
      renameSync(live, away);
      const asked = performance.now();
      await vm.reopenLog();
      took.push(performance.now() - asked);
      assert.ok(existsSync(live), `QEMU opened a fresh ${live} (rotation ${k})`);
      rotated.push(away);
      await sleep(1000);
    }
    const exit = await vm.stop(60_000);
    assert.equal(exit.reason, 'guest-shutdown');
    const files = [...rotated, live].map((path) => readFileSync(path));
    for (const [k, bytes] of files.entries())
      assert.ok(bytes.length > 0, `file ${k + 1} of ${files.length} got output`);
    const lines = stdoutText(decodeAll(Buffer.concat(files))).split('\n');
    assert.equal(lines.pop(), '', 'the output ends with a whole line');
    assert.equal(lines.shift(), 'wrote-kept');
    const counters = lines.map((line) => line.replace(/^n=/, ''));
    const firstBad = counters.findIndex((value, i) => value !== String(i));
    assert.equal(firstBad, -1, `line ${firstBad}: ${counters[firstBad]}, expected n=${firstBad}`);
    assert.ok(counters.length > 1000, `the writer kept writing (${counters.length} lines)`);
    // Where the cuts fell: on a frame boundary, or inside a frame (it straddles two files; fine once joined).
    const frameEnds = new Set<number>();
    let end = 0;
    for (const frame of decodeAll(Buffer.concat(files)))
      frameEnds.add((end += LOG_HEADER_BYTES + frame.data.length));
    let cut = 0;
    const cuts = files
      .slice(0, -1)
      .map((bytes) => (frameEnds.has((cut += bytes.length)) ? 'boundary' : 'mid-frame'));
    t.diagnostic(`cuts: ${cuts.join(', ')}`);
    t.diagnostic(`reopenLog took ${took.map((ms) => ms.toFixed(1)).join(', ')} ms`);
    t.diagnostic(
      `${counters.length} lines across ${files.length} files of ${files.map((b) => b.length).join(', ')} bytes`,
    );
  });

  it('keeps the container root layer when restarted with keepRootLayer; adopt() knows the ports', async (t) => {
    if (!vm || !spec) return t.skip('no VM');
    vm.release();
    vm = await driver.start({ ...spec, keepRootLayer: true });
    const text = await until('the second boot to report the kept file', () => {
      const out = stdoutText(decodeAll(readOr(vm!.logPortPath)));
      return out.includes('n=0\n') ? out : undefined;
    });
    assert.match(text, /^kept:first-boot\n/);
    // Another process (a restarted tetherd) takes the VM over: it learns the published ports from vm.json.
    vm.release();
    vm = await driver.adopt(stateDir);
    assert.deepEqual(vm.ports, spec.ports);
    assert.equal((await vm.kill()).reason, 'host-qmp-quit');
  });

  it('names the taken host port when QEMU cannot publish it', async (t) => {
    if (!spec) return t.skip('no VM');
    const busy = await listen(await freePort());
    const port = (busy.address() as { port: number }).port;
    const otherDir = mkdtempSync(join(tmpdir(), 'tether-qd-'));
    try {
      await assert.rejects(
        driver.start({
          ...spec,
          id: `${spec.id}-busy`,
          stateDir: otherDir,
          ports: [{ protocol: 'tcp', hostIp: '127.0.0.1', hostPort: port, guestPort: 80 }],
        }),
        (error) =>
          isTetherError(error, 'TETHER_VM_FAILED') &&
          error.message.includes(`127.0.0.1:${port}/tcp`) &&
          /already in use \(EADDRINUSE\)/.test(error.message),
      );
    } finally {
      busy.close();
      rmSync(otherDir, { recursive: true, force: true });
    }
  });
});
