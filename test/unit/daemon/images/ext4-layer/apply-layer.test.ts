import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { isTetherError } from '../../../../../protocol/src/errors/errors.ts';
import { applyLayer } from '../../../../../hostside/src/daemon/images/ext4-layer/apply-layer.ts';
import { hasCommand, need, REPO } from '../../../../helpers/prerequisites.ts';
import {
  expectedTree,
  ext4Of,
  fsckProblems,
  imageTree,
  tarOf,
  writeTar,
  type Member,
  type TreeNode,
} from './ext4-tree.ts';

mkdirSync(join(REPO, 'build'), { recursive: true });
const temp = mkdtempSync(join(REPO, 'build', 'ext4-layer-test-'));
after(() => rmSync(temp, { recursive: true, force: true }));
const tools = (): Record<string, boolean> => ({
  debugfs: hasCommand('debugfs') || hasCommand('/usr/sbin/debugfs'),
  fakeroot: hasCommand('fakeroot'),
  'mkfs.ext4': hasCommand('mkfs.ext4') || hasCommand('/usr/sbin/mkfs.ext4'),
});

const dir = (name: string, extra: Partial<Member> = {}): Member => ({ name, type: 'directory', ...extra });
const file = (name: string, data: string, extra: Partial<Member> = {}): Member => ({ name, data, ...extra });

const LOWER: Member[] = [
  dir('./'),
  dir('bin/'),
  file('bin/busybox', 'BUSYBOX v1', { mode: 0o755 }),
  { name: 'bin/sh', type: 'link', linkname: 'bin/busybox' },
  { name: 'bin/ls', type: 'link', linkname: 'bin/busybox' },
  dir('dev/'),
  { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
  dir('etc/'),
  file('etc/passwd', 'root:x:0:0::/root:/bin/sh\n'),
  file('etc/hosts', '127.0.0.1 localhost\n'),
  file('etc/replace-me', 'old contents\n'),
  file('etc/delete-me', 'going\n'),
  dir('old/'),
  file('old/a', 'a'),
  dir('old/sub/'),
  file('old/sub/b', 'b'),
  dir('old/sub/deeper/'),
  file('old/sub/deeper/c', 'c'),
  { name: 'old/sub/link-out', type: 'link', linkname: 'etc/hosts' },
  dir('opq/'),
  file('opq/x', 'x'),
  file('opq/keep', 'lower keep'),
  dir('opq/sub/'),
  file('opq/sub/y', 'y'),
  dir('meta/'),
  file('meta/child', 'child'),
  dir('becomes-file/'),
  dir('becomes-file/inner/'),
  file('becomes-file/inner/f', 'inner'),
  file('becomes-dir', 'a file for now'),
];

const ODD_NAMES = [
  'a "quoted" name',
  'with space',
  'back\\slash',
  'tab\tname',
  '<12>',
  '-dash',
  '#hash',
  '!bang',
  'é ü',
];
const DEEP = Array.from({ length: 30 }, (_, i) => `d${i}`).join('/');

const UPPER: Member[] = [
  dir('etc/', { mtime: new Date('2024-06-01T00:00:00Z') }),
  file('etc/replace-me', 'new contents\n'),
  file('etc/.wh.delete-me', ''),
  file('.wh.old', ''),
  dir('opq/'),
  file('opq/.wh..wh..opq', ''),
  file('opq/new', 'new in opq'),
  dir('opq/sub/'),
  file('opq/sub/z', 'z'),
  dir('meta/', { mode: 0o700, uid: 1000, gid: 1000, mtime: new Date('2023-01-01T00:00:00Z') }),
  file('becomes-file', 'was a directory'),
  dir('becomes-dir/', { mode: 0o2755 }),
  file('becomes-dir/child', 'child of the new dir'),
  dir('lnk/'),
  { name: 'lnk/rel', type: 'symlink', linkname: '../etc/hosts' },
  { name: 'lnk/abs', type: 'symlink', linkname: '/etc/passwd' },
  dir('data/'),
  file('data/f1', 'shared by three names'),
  { name: 'data/f2', type: 'link', linkname: 'data/f1' },
  { name: 'data/f3', type: 'link', linkname: 'data/f1' },
  { name: 'bin/sh2', type: 'link', linkname: 'bin/busybox' },
  file('bin/ls', 'a real ls now', { mode: 0o755 }),
  file('bin/suid', 'setuid', { mode: 0o4755 }),
  { name: 'dev/zero', type: 'character-device', devmajor: 1, devminor: 5, mode: 0o666 },
  { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0, mode: 0o660, gid: 6 },
  { name: 'dev/big', type: 'character-device', devmajor: 259, devminor: 300, mode: 0o600 },
  { name: 'dev/fifo', type: 'fifo', mode: 0o644 },
  dir('tmp/', { mode: 0o1777 }),
  dir('home/user/', { uid: 1000, gid: 1000, mode: 0o750 }),
  file('home/user/.profile', 'export PS1\n', { uid: 1000, gid: 1000, mode: 0o600 }),
  file('xattr-file', 'has xattrs', {
    pax: {
      'SCHILY.xattr.user.comment': 'hello "world"',
      'LIBARCHIVE.xattr.user.bin': Buffer.from([0, 1, 2, 255, 10, 13]).toString('base64'),
      'LIBARCHIVE.xattr.security.capability': Buffer.from(
        '0100000200200000000000000000000000000000',
        'hex',
      ).toString('base64'),
    },
  }),
  dir('xattr-dir/', { pax: { 'SCHILY.xattr.user.dir': 'on a directory' } }),
  dir('odd/'),
  ...ODD_NAMES.map((name) => file(`odd/${name}`, `contents of ${name}`)),
  dir(`odd/${ODD_NAMES[0]} dir/`),
  file(`odd/${ODD_NAMES[0]} dir/inner`, 'inner'),
  file(`deep/${DEEP}/leaf`, 'at the bottom'),
];

const THIRD: Member[] = [
  file('data/.wh.f1', ''),
  file('deep/d0/.wh.d1', ''),
  { name: 'becomes-dir', type: 'symlink', linkname: 'etc' },
  file('old/again', 'old is back'),
  file('odd/.wh.with space', ''),
  file('bin/.wh.busybox', ''),
  { name: 'meta/child', type: 'fifo' },
  { name: 'etc/hosts', type: 'link', linkname: 'bin/sh' },
];

const XATTRS = ['user.comment', 'user.bin', 'security.capability', 'user.dir'];

function diff(actual: Map<string, TreeNode>, expected: Map<string, TreeNode>): string[] {
  const problems: string[] = [];
  for (const [path, node] of expected) {
    const got = actual.get(path);
    if (!got) problems.push(`missing ${path}`);
    else {
      const { mtime: wantTime, ...want } = node;
      const { mtime: gotTime, ...have } = got;
      try {
        assert.deepEqual(have, want);
      } catch {
        problems.push(`${path}: image ${JSON.stringify(have)} layers ${JSON.stringify(want)}`);
      }
      if (wantTime !== gotTime) problems.push(`${path}: mtime ${gotTime} expected ${wantTime}`);
    }
  }
  for (const path of actual.keys()) if (!expected.has(path)) problems.push(`extra ${path}`);
  return problems;
}

async function lowerImage(t: TestContext, name: string, members: Member[], sizeMiB = 32): Promise<string> {
  const lowerTar = writeTar(temp, `${name}-lower.tar`, await tarOf(members));
  const image = join(temp, `${name}.raw`);
  ext4Of(lowerTar, image, sizeMiB);
  t.after(() => rmSync(image, { force: true }));
  return image;
}

describe('applyLayer', () => {
  it('applies layers as layer-tree.ts merges them, leaving e2fsck clean', async (t) => {
    if (!need(t, tools())) return;
    const image = await lowerImage(t, 'chain', LOWER);
    assert.equal(fsckProblems(image), undefined);
    const layers = [await tarOf(LOWER)];
    for (const [i, members] of [UPPER, THIRD].entries()) {
      const tar = await tarOf(members);
      layers.push(tar);
      const stats = await applyLayer({
        rawImage: image,
        layerTar: writeTar(temp, `layer-${i + 1}.tar`, tar),
        workDir: join(temp, 'work'),
        what: `layer ${i + 1}`,
      });
      assert.equal(stats.entries, members.length);
      assert.equal(fsckProblems(image), undefined, `e2fsck after layer ${i + 1}`);
      const problems = diff(await imageTree(image, XATTRS), await expectedTree(layers));
      assert.deepEqual(problems, [], `after layer ${i + 1}`);
    }
    // The temp files went with the work.
    assert.deepEqual(readdirSync(join(temp, 'work')), []);
  });

  it('gives the same bytes for the same layer on the same image', async (t) => {
    if (!need(t, tools())) return;
    const image = await lowerImage(t, 'repeat', LOWER);
    const copy = join(temp, 'repeat-copy.raw');
    copyFileSync(image, copy);
    t.after(() => rmSync(copy, { force: true }));
    const layerTar = writeTar(temp, 'repeat.tar', await tarOf(UPPER));
    for (const rawImage of [image, copy]) await applyLayer({ rawImage, layerTar, workDir: temp });
    const cmp = await import('node:child_process').then(({ spawnSync }) => spawnSync('cmp', [image, copy]));
    assert.equal(cmp.status, 0, cmp.stdout.toString());
  });

  it('applies in batches the same as at once', async (t) => {
    if (!need(t, tools())) return;
    const image = await lowerImage(t, 'batch', LOWER);
    const layers = [await tarOf(LOWER), await tarOf(UPPER)];
    const stats = await applyLayer({
      rawImage: image,
      layerTar: writeTar(temp, 'batch.tar', layers[1]!),
      workDir: temp,
      batchBytes: 1,
    });
    assert.ok(stats.applyRuns > 20, `${stats.applyRuns} runs`);
    assert.equal(fsckProblems(image), undefined);
    assert.deepEqual(diff(await imageTree(image, XATTRS), await expectedTree(layers)), []);
  });

  it('says so when the filesystem is full of blocks, or of inodes', async (t) => {
    if (!need(t, tools())) return;
    const big = await lowerImage(t, 'full-blocks', [dir('./')], 8);
    const huge = Buffer.alloc(16 * 1024 * 1024, 7).toString('latin1');
    await assert.rejects(
      applyLayer({
        rawImage: big,
        layerTar: writeTar(temp, 'huge.tar', await tarOf([file('huge', huge)])),
        workDir: temp,
      }),
      (error) =>
        isTetherError(error) &&
        error.code === 'TETHER_ROOTFS_FAILED' &&
        /filesystem is full/.test(error.message) &&
        /write/.test(error.message),
    );
    const many = await lowerImage(t, 'full-inodes', [dir('./')], 8);
    const files = Array.from({ length: 3000 }, (_, i) => file(`f${i}`, ''));
    await assert.rejects(
      applyLayer({ rawImage: many, layerTar: writeTar(temp, 'many.tar', await tarOf(files)), workDir: temp }),
      (error) =>
        isTetherError(error) &&
        error.code === 'TETHER_ROOTFS_FAILED' &&
        /filesystem is full/.test(error.message),
    );
  });

  it('refuses what it cannot carry or what escapes, before touching the image', async (t) => {
    if (!need(t, tools())) return;
    const image = await lowerImage(t, 'refuse', LOWER);
    const cases: [Member[], string, RegExp][] = [
      [[file('new\nline', 'x')], 'TETHER_IMAGE_UNSUPPORTED', /line break/],
      [[file('cr\rname', 'x')], 'TETHER_IMAGE_UNSUPPORTED', /line break/],
      [[file('../escape', 'x')], 'TETHER_IMAGE_INVALID', /climbs out/],
      [
        [{ name: 'l', type: 'link', linkname: '../../etc/passwd' }],
        'TETHER_IMAGE_INVALID',
        /out of the root/,
      ],
      [[{ name: 'l', type: 'link', linkname: 'nothing' }], 'TETHER_IMAGE_INVALID', /not in the layers/],
      [[{ name: 'l', type: 'link', linkname: 'etc' }], 'TETHER_IMAGE_INVALID', /a directory/],
      [[{ name: 's', type: 'symlink', linkname: '../../x' }], 'TETHER_IMAGE_INVALID', /out of the root/],
      [[file('etc/passwd/under', 'x')], 'TETHER_IMAGE_INVALID', /not a directory/],
      [
        [{ name: 'dev/x', type: 'character-device', devmajor: 70000, devminor: 1 }],
        'TETHER_IMAGE_UNSUPPORTED',
        /65535/,
      ],
    ];
    const before = await imageTree(image);
    for (const [members, code, pattern] of cases)
      await assert.rejects(
        applyLayer({
          rawImage: image,
          layerTar: writeTar(temp, 'bad.tar', await tarOf(members)),
          workDir: temp,
        }),
        (error) => isTetherError(error) && error.code === code && pattern.test(error.message),
        `${members[0]!.name}: ${code}`,
      );
    assert.deepEqual(await imageTree(image), before);
  });

  it('names the failed debugfs command when the image is not what it was told', async (t) => {
    if (!need(t, tools())) return;
    const notExt4 = join(temp, 'not-ext4.raw');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(notExt4, Buffer.alloc(1024 * 1024));
    await assert.rejects(
      applyLayer({
        rawImage: notExt4,
        layerTar: writeTar(temp, 'one.tar', await tarOf([file('a', 'a')])),
        workDir: temp,
      }),
      (error) =>
        isTetherError(error) && error.code === 'TETHER_ROOTFS_FAILED' && /not-ext4\.raw/.test(error.message),
    );
  });
});
