import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ImageStore } from '../../../../hostside/src/daemon/images/image-store.ts';
import { hasCommand } from '../../../helpers/prerequisites.ts';
import { dockerSave, tarOf } from './image-fixtures.ts';

const temp = mkdtempSync(join(tmpdir(), 'tether-crash-'));
after(() => rmSync(temp, { recursive: true, force: true }));
const CHILD = new URL('./load-child.ts', import.meta.url).pathname;
const realDisks =
  (existsSync('/sbin/mkfs.ext4') || hasCommand('mkfs.ext4')) &&
  (process.getuid?.() === 0 || hasCommand('fakeroot'));

/** Runs the loader; with `killAfterMs`, SIGKILLs its whole process group then. Returns the ms it ran. */
async function runChild(store: string, archive: string, killAfterMs?: number): Promise<number> {
  const started = Date.now();
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', CHILD, store, archive, realDisks ? 'real' : 'fake'],
    {
      detached: true,
      stdio: 'ignore',
    },
  );
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  if (killAfterMs !== undefined) {
    await Promise.race([sleep(killAfterMs), exited]);
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // Already gone: it finished before the kill.
    }
  }
  await exited;
  return Date.now() - started;
}

void describe('a kill -9 during docker load', () => {
  void it('leaves either no image or a whole one, never a torn record, at any moment', async (t) => {
    const big = Buffer.alloc(24 * 1024 * 1024, 7);
    const layers = [await tarOf([{ name: 'big', data: big }]), await tarOf([{ name: 'small', data: 'x' }])];
    const { archive, id } = await dockerSave({ layers, repoTags: ['crash:test'] });
    const archivePath = join(temp, 'archive.tar');
    writeFileSync(archivePath, archive);
    const full = await runChild(join(temp, 'calibrate'), archivePath);
    t.diagnostic(
      `a whole load takes ${full} ms (${realDisks ? 'mkfs.ext4' : 'fake disks'}); killing at 9 points from 12% to 108% of that, and once at 300% (a busy host can make a load slower than the first)`,
    );
    const outcomes: string[] = [];
    for (let step = 1; step <= 10; step++) {
      const dir = join(temp, `store${step}`);
      await runChild(dir, archivePath, Math.round((full * (step < 10 ? step * 12 : 300)) / 100));
      const warnings: string[] = [];
      const store = new ImageStore(dir, { warn: (message) => warnings.push(message) });
      assert.deepEqual(warnings, [], 'everything on disk reads back');
      const images = store.list();
      for (const name of readdirSync(dir))
        assert.ok(
          /^[0-9a-f]{64}$/.test(name) || ['tmp', 'layers', 'repositories.json'].includes(name),
          `stray ${name}`,
        );
      for (const name of readdirSync(join(dir, 'layers')))
        assert.match(name, /^[0-9a-f]{64}$/, 'no half-built layer is left');
      assert.deepEqual(readdirSync(join(dir, 'tmp')), [], 'tmp/ emptied on open');
      if (images.length === 0) {
        assert.equal(readdirSync(dir).filter((name) => /^[0-9a-f]{64}$/.test(name)).length, 0);
        assert.deepEqual(readdirSync(join(dir, 'layers')), [], 'no layer without its image');
        outcomes.push('none');
        continue;
      }
      assert.equal(images.length, 1);
      const image = images[0]!;
      assert.equal(image.id, id);
      assert.equal(image.layers.length, 2);
      assert.ok(existsSync(image.rootDisk), 'the top layer is there');
      assert.ok(
        statSync(store.layers.disk(image.layers[0]!)).size > big.length,
        'the whole lowest layer is there',
      );
      outcomes.push(image.repoTags.length ? 'tagged' : 'untagged');
      // The store is usable after the crash: the load can be repeated and completes.
      await runChild(dir, archivePath);
      assert.deepEqual(new ImageStore(dir).resolve('crash:test').id, id);
    }
    t.diagnostic(`outcomes by kill point: ${outcomes.join(' ')}`);
    assert.ok(outcomes.includes('none'), 'some kill landed before the image was published');
    assert.ok(outcomes.includes('tagged'), 'the last kills came after the load');
  });
});
