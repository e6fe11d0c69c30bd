import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { applyLayer } from '../../../../../hostside/src/daemon/images/ext4-layer/apply-layer.ts';
import {
  CLUSTER,
  clusterRanges,
  dataExtents,
  writeDelta,
} from '../../../../../hostside/src/daemon/images/ext4-layer/delta.ts';
import { hasCommand, need, REPO } from '../../../../helpers/prerequisites.ts';
import { ext4Of, tarOf, writeTar } from './ext4-tree.ts';

mkdirSync(join(REPO, 'build'), { recursive: true });
const temp = mkdtempSync(join(REPO, 'build', 'ext4-delta-test-'));
after(() => rmSync(temp, { recursive: true, force: true }));
const MIB = 1024 * 1024;

/** Bytes the top qcow2 itself holds (depth 0 data), from qemu-img map. */
function topBytes(qcow2: string): number {
  const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', qcow2]).toString()) as {
    length: number;
    depth: number;
    data: boolean;
    zero: boolean;
  }[];
  return map.filter((e) => e.depth === 0 && (e.data || e.zero)).reduce((sum, e) => sum + e.length, 0);
}

function patch(file: string, offset: number, data: Buffer): void {
  const fd = openSync(file, 'r+');
  writeSync(fd, data, 0, data.length, offset);
  closeSync(fd);
}

describe('clusterRanges', () => {
  it('widens extents to whole clusters and merges them', () => {
    assert.deepEqual(
      clusterRanges(
        [
          { start: 10, length: 5 },
          { start: CLUSTER * 3 + 1, length: CLUSTER },
          { start: CLUSTER, length: 1 },
          { start: CLUSTER * 4, length: 10 },
        ],
        CLUSTER * 10,
      ),
      [
        { start: 0, length: CLUSTER * 2 },
        { start: CLUSTER * 3, length: CLUSTER * 2 },
      ],
    );
  });

  it('stops at the size of an image that is not a whole number of clusters', () => {
    assert.deepEqual(clusterRanges([{ start: 0, length: 100 }], 100), [{ start: 0, length: 100 }]);
  });

  it('reads the data extents of qemu-img map', () => {
    const json = JSON.stringify([
      { start: 0, length: 4096, depth: 0, present: true, zero: false, data: true, offset: 0 },
      { start: 4096, length: 8192, depth: 0, present: true, zero: true, data: false, offset: 4096 },
    ]);
    assert.deepEqual(dataExtents(json), [{ start: 0, length: 4096 }]);
  });
});

describe('writeDelta', () => {
  it('keeps exactly the changed clusters, and the chain reads back as the after-image', async (t) => {
    if (!need(t, { 'qemu-img': hasCommand('qemu-img'), 'qemu-io': hasCommand('qemu-io') })) return;
    const before = join(temp, 'before.raw');
    const after = join(temp, 'after.raw');
    execFileSync('truncate', ['-s', `${64 * MIB}`, before]);
    patch(before, 0, Buffer.alloc(3 * CLUSTER, 1));
    patch(before, 20 * MIB, Buffer.alloc(CLUSTER, 2));
    const parentDir = join(temp, 'parent');
    mkdirSync(parentDir);
    const parent = join(parentDir, 'layer.qcow2');
    execFileSync('qemu-img', ['convert', '-q', '-O', 'qcow2', before, parent]);
    copyFileSync(before, after);
    patch(after, CLUSTER + 7, Buffer.from('changed')); // one cluster inside data
    patch(after, 40 * MIB, Buffer.alloc(2 * CLUSTER + 1, 3)); // three new clusters in a hole
    patch(after, 20 * MIB, Buffer.alloc(CLUSTER, 0)); // data zeroed: a zero cluster
    patch(after, 2 * CLUSTER, Buffer.alloc(10, 1)); // the same bytes: no change
    const outDir = join(temp, 'child');
    mkdirSync(outDir);
    const out = join(outDir, 'layer.qcow2');
    const result = await writeDelta({ before, after, parentQcow2: parent, out, workDir: temp });
    assert.equal(result.changedBytes, 5 * CLUSTER);
    assert.equal(topBytes(out), 5 * CLUSTER);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', out]).toString()) as {
      'backing-filename': string;
      'backing-filename-format': string;
    };
    assert.equal(info['backing-filename'], '../parent/layer.qcow2');
    assert.equal(info['backing-filename-format'], 'qcow2');
    const readBack = join(temp, 'read-back.raw');
    execFileSync('qemu-img', ['convert', '-q', '-O', 'raw', out, readBack]);
    execFileSync('cmp', [readBack, after]);
  });

  it('turns an applied layer into a delta that reads back as the image', async (t) => {
    if (
      !need(t, {
        'qemu-img': hasCommand('qemu-img'),
        'qemu-io': hasCommand('qemu-io'),
        fakeroot: hasCommand('fakeroot'),
      })
    )
      return;
    const base = await tarOf([
      { name: './', type: 'directory' },
      { name: 'etc/', type: 'directory' },
      { name: 'etc/big', data: Buffer.alloc(4 * MIB, 9) },
    ]);
    const raw = join(temp, 'layered.raw');
    ext4Of(writeTar(temp, 'base.tar', base), raw, 256);
    const bottom = join(temp, 'bottom.qcow2');
    execFileSync('qemu-img', ['convert', '-q', '-O', 'qcow2', raw, bottom]);
    const before = join(temp, 'layered-before.raw');
    execFileSync('cp', ['--sparse=always', raw, before]);
    await applyLayer({
      rawImage: raw,
      layerTar: writeTar(temp, 'up.tar', await tarOf([{ name: 'etc/small', data: 'small' }])),
      workDir: temp,
    });
    const top = join(temp, 'top.qcow2');
    const { changedBytes } = await writeDelta({ before, after: raw, parentQcow2: bottom, out: top });
    // A small file: an inode table block, a directory block, a bitmap or two, the file's block, the superblock.
    assert.ok(changedBytes > 0 && changedBytes <= 8 * CLUSTER, `${changedBytes} bytes changed`);
    assert.equal(topBytes(top), changedBytes);
    const readBack = join(temp, 'layered-read-back.raw');
    execFileSync('qemu-img', ['convert', '-q', '-O', 'raw', top, readBack]);
    execFileSync('cmp', [readBack, raw]);
  });
});
