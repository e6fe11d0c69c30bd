/** Boots the real boot image under QEMU for e2e tests: fresh keys, a config, the QEMU driver, a channel. */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentConfig } from '../../protocol/src/config/config.ts';
import { decodeStatusKey } from '../../protocol/src/status/console-line.ts';
import type { StatusRecord } from '../../protocol/src/status/status.ts';
import type { ChannelClient, ChannelCredentials } from '../../hostside/src/channel/client.ts';
import { connectVmChannel } from '../../hostside/src/vm/channel-connect.ts';
import { generateChannelKeys } from '../../hostside/src/vm/channel-keys.ts';
import { statusRecordsIn } from '../../hostside/src/vm/console-status.ts';
import type { Vm } from '../../hostside/src/vm/driver.ts';
import { QemuDriver } from '../../hostside/src/vm/qemu/qemu-driver.ts';
import { generateStatusKey } from '../../hostside/src/vm/status-key.ts';
import { REPO, hasCommand } from './prerequisites.ts';

export const IMAGE_DIR = join(REPO, 'build/image');
export const BUSYBOX_TAR = join(IMAGE_DIR, 'busybox.tar');

/** What the e2e tests need, for need(): the boot image and QEMU. */
export function vmPrerequisites(): Record<string, boolean> {
  return {
    'the boot image (make image)': ['vmlinuz', 'initramfs.cpio.gz', 'runtime.img', 'busybox.img'].every((f) =>
      existsSync(join(IMAGE_DIR, f)),
    ),
    'qemu-system-x86_64': hasCommand('qemu-system-x86_64'),
    'qemu-img': hasCommand('qemu-img'),
  };
}

export interface TestVm {
  vm: Vm;
  config: AgentConfig;
  /** Connects (waiting for the agent to come up). */
  connect(): Promise<ChannelClient>;
  /** The host's keys for this VM's channel (to connect over a stream of the test's own). */
  credentials: ChannelCredentials;
  consoleText(): string;
  /** The records the host believes: signed with the config's status key (unsigned ones if it has none). */
  statusRecords(): StatusRecord[];
  /** Polls the console until a record matches; fails with the console's tail after `timeoutMs`. */
  waitForRecord(match: (record: StatusRecord) => boolean, timeoutMs?: number): Promise<StatusRecord>;
  dispose(): Promise<void>;
}

/** `config` may be an object merged over a working default, or raw bytes sent as they are. */
export async function bootTestVm(config: Partial<AgentConfig> | Buffer): Promise<TestVm> {
  const stateDir = mkdtempSync(join(tmpdir(), 'tether-e2e-'));
  const id = `e2e-${Date.now().toString(36)}`;
  const keys = generateChannelKeys(id);
  const driver = new QemuDriver();
  const full: AgentConfig = Buffer.isBuffer(config)
    ? ({ version: 1, id } as AgentConfig)
    : {
        version: 1,
        id,
        hostname: 'e2e',
        storage: { root: { serial: 'tether-root', fstype: 'ext4' } },
        network: driver.guestNetwork(),
        channel: {
          hostKey: keys.agentHostKey,
          authorizedKeys: [keys.clientPublicKey],
          statusKey: generateStatusKey(),
        },
        powerOffOnExit: true,
        ...config,
      };
  const vm = await driver.start({
    id,
    stateDir,
    kernel: join(IMAGE_DIR, 'vmlinuz'),
    initramfs: join(IMAGE_DIR, 'initramfs.cpio.gz'),
    runtimeDisk: join(IMAGE_DIR, 'runtime.img'),
    rootDisk: join(IMAGE_DIR, 'busybox.img'),
    config: Buffer.isBuffer(config) ? config : Buffer.from(JSON.stringify(full)),
  });
  const consoleText = (): string => {
    try {
      return readFileSync(vm.consoleLogPath, 'utf8');
    } catch {
      return '';
    }
  };
  const statusKey = full.channel?.statusKey;
  const statusRecords = (): StatusRecord[] =>
    statusRecordsIn(consoleText(), statusKey === undefined ? undefined : decodeStatusKey(statusKey));
  const clients: ChannelClient[] = [];
  return {
    vm,
    config: full,
    credentials: keys.credentials,
    consoleText,
    statusRecords,
    connect: async () => {
      const client = await connectVmChannel(vm, { credentials: keys.credentials, timeoutMs: 120_000 });
      clients.push(client);
      return client;
    },
    waitForRecord: async (match, timeoutMs = 120_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = statusRecords().find(match);
        if (found) return found;
        if (Date.now() > deadline)
          throw new Error(
            `no matching status record after ${timeoutMs} ms; console tail:\n${consoleText().slice(-3000)}`,
          );
        await sleep(200);
      }
    },
    dispose: async () => {
      for (const client of clients) client.close();
      const info = await vm.inspect().catch(() => undefined);
      if (info?.running) await vm.kill().catch(() => undefined);
      vm.release();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}
