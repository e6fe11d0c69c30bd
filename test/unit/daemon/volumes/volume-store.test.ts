import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isTetherError } from '../../../../protocol/src/errors/errors.ts';
import { VolumeStore } from '../../../../hostside/src/daemon/volumes/volume-store.ts';
import { hasCommand, need } from '../../../helpers/prerequisites.ts';

const temp = mkdtempSync(join(tmpdir(), 'tether-volumes-'));
after(() => rmSync(temp, { recursive: true, force: true }));
const mkfs = () => ({
  'mkfs.ext4 (e2fsprogs)':
    existsSync('/sbin/mkfs.ext4') || existsSync('/usr/sbin/mkfs.ext4') || hasCommand('mkfs.ext4'),
});

void describe('VolumeStore', () => {
  void it('makes a sparse ext4 disk per volume, reads it back after a restart, and removes it', async (t) => {
    if (!need(t, mkfs())) return;
    const dir = join(temp, 'a');
    const store = new VolumeStore(dir);
    const volume = await store.create({ name: 'data', labels: { team: 'x' }, options: { size: '64M' } });
    assert.equal(volume.sizeMiB, 64);
    const disk = store.disk('data');
    assert.equal(statSync(disk).size, 64 * 1024 * 1024);
    assert.ok(
      store.diskBytes('data') < 8 * 1024 * 1024,
      `sparse: ${store.diskBytes('data')} bytes allocated`,
    );
    const dumpe2fs = existsSync('/sbin/dumpe2fs') ? '/sbin/dumpe2fs' : 'dumpe2fs';
    assert.match(
      execFileSync(dumpe2fs, ['-h', disk], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }),
      /Filesystem volume name:\s+data/,
    );
    const debugfs = existsSync('/sbin/debugfs') ? '/sbin/debugfs' : 'debugfs';
    const root = execFileSync(debugfs, ['-R', 'ls -p /', disk], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    assert.doesNotMatch(root, /lost\+found/, 'a new volume is empty, as Docker’s are');
    // A second create of the same name answers the same volume, as Docker's does.
    assert.equal((await store.create({ name: 'data' })).createdAt, volume.createdAt);
    const anonymous = await store.create({ anonymous: true, options: { size: '32M' } });
    assert.match(anonymous.name, /^[0-9a-f]{64}$/);
    const reopened = new VolumeStore(dir);
    assert.deepEqual(
      reopened
        .list()
        .map((v) => v.name)
        .sort(),
      [anonymous.name, 'data'].sort(),
    );
    assert.deepEqual(reopened.get('data').labels, { team: 'x' });
    reopened.remove('data');
    assert.equal(existsSync(join(dir, 'data')), false);
    assert.throws(
      () => reopened.get('data'),
      (e: unknown) => isTetherError(e, 'TETHER_NO_SUCH_VOLUME'),
    );
  });

  void it('refuses bad names and options, leaving nothing behind', async (t) => {
    if (!need(t, mkfs())) return;
    const dir = join(temp, 'b');
    const store = new VolumeStore(dir);
    await assert.rejects(store.create({ name: '-x' }), /invalid characters for a local volume name/);
    await assert.rejects(store.create({ name: 'ok', options: { type: 'nfs' } }), /unknown option "type"/);
    await assert.rejects(store.create({ name: 'ok', options: { size: 'huge' } }), /invalid size/);
    assert.deepEqual(readdirSync(dir), []);
  });
});
