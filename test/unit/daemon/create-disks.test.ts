/**
 * ContainerManager.create with a driver whose writable layer takes time (as qemu-img does): the name is
 * held meanwhile, a failed layer leaves no container behind, and the layer is asked for at create.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pino from 'pino';
import { isTetherError, TetherError } from '../../../protocol/src/errors/errors.ts';
import { EventBus } from '../../../hostside/src/daemon/containers/events.ts';
import { ContainerManager } from '../../../hostside/src/daemon/containers/manager.ts';
import type { Vm, VmDriver } from '../../../hostside/src/vm/driver.ts';

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A driver that only makes writable layers, each when the test lets it. */
class LayerDriver implements VmDriver {
  readonly name = 'layers-only';
  readonly layers: string[] = [];
  readonly #pending: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];
  guestNetwork(): { interfaces: [] } {
    return { interfaces: [] };
  }
  start(): Promise<Vm> {
    return Promise.reject(new TetherError('TETHER_VM_FAILED', 'not in this test'));
  }
  adopt(): Promise<Vm> {
    return Promise.reject(new TetherError('TETHER_VM_FAILED', 'not in this test'));
  }
  createRootLayer(stateDir: string, rootDisk: string): Promise<void> {
    this.layers.push(`${rootDisk} in ${stateDir}`);
    return new Promise((resolve, reject) => this.#pending.push({ resolve, reject }));
  }
  /** Settles the oldest layer being made. */
  finish(error?: Error): void {
    const next = this.#pending.shift()!;
    if (error) next.reject(error);
    else next.resolve();
  }
  get waiting(): number {
    return this.#pending.length;
  }
}

async function open(): Promise<{ manager: ContainerManager; driver: LayerDriver; root: string }> {
  const root = mkdtempSync(join(tmpdir(), 'tetherd-create-'));
  dirs.push(root);
  const driver = new LayerDriver();
  const manager = await ContainerManager.open({
    root,
    driver,
    bootImage: { kernel: '/nonexistent', initramfs: '/nonexistent', runtimeDisk: '/nonexistent' },
    images: {
      resolve: (ref) => ({
        id: `sha256:${'d'.repeat(64)}`,
        repoTags: [ref],
        rootDisk: '/images/top.qcow2',
        config: { Cmd: ['sh'] },
      }),
    },
    events: new EventBus(),
    logger: pino({ level: 'silent' }),
  });
  return { manager, driver, root };
}

const until = async (condition: () => boolean): Promise<void> => {
  while (!condition()) await new Promise((resolve) => setImmediate(resolve));
};

void describe('docker create makes the writable layer', () => {
  void it('holds the name while the layer is made, so a second create of it is refused', async () => {
    const { manager, driver } = await open();
    const first = manager.create({ image: 'img', name: 'web' });
    await until(() => driver.waiting === 1);
    await assert.rejects(manager.create({ image: 'img', name: 'web' }), (error: unknown) =>
      isTetherError(error, 'TETHER_NAME_CONFLICT'),
    );
    driver.finish();
    const container = await first;
    assert.equal(container.record.name, 'web');
    assert.deepEqual(driver.layers.length, 1);
    assert.match(driver.layers[0]!, /^\/images\/top\.qcow2 in .*\.new-[0-9a-f]{12}$/);
  });

  void it('leaves nothing when the layer cannot be made, and frees the name', async () => {
    const { manager, driver, root } = await open();
    const failing = manager.create({ image: 'img', name: 'db' });
    await until(() => driver.waiting === 1);
    driver.finish(new TetherError('TETHER_VM_FAILED', 'qemu-img could not create the layer'));
    await assert.rejects(failing, /qemu-img could not create the layer/);
    assert.deepEqual(readdirSync(join(root, 'containers')), []);
    assert.deepEqual(manager.list(), []);
    const again = manager.create({ image: 'img', name: 'db' });
    await until(() => driver.waiting === 1);
    driver.finish();
    assert.equal((await again).record.name, 'db');
  });
});
