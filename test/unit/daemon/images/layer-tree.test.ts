import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { isTetherError } from '../../../../protocol/src/errors/errors.ts';
import { ImageStore } from '../../../../hostside/src/daemon/images/image-store.ts';
import {
  LayerTree,
  rootedComponents,
  type RawHeader,
} from '../../../../hostside/src/daemon/images/layer-tree.ts';
import { dockerSave, listTar, MTIME, tarOf, type ListedEntry } from './image-fixtures.ts';
import { tarLayerDisks } from './tar-layer-disks.ts';

const temp = mkdtempSync(join(tmpdir(), 'tether-layers-'));
after(() => rmSync(temp, { recursive: true, force: true }));

/** A store whose "root disk" is the flattened tar itself, so the test can list it. */
function tarStore(name: string): ImageStore {
  return new ImageStore(join(temp, name, 'images'), { layerDisks: tarLayerDisks() });
}

const lower = () =>
  tarOf([
    { name: './', type: 'directory', mode: 0o755 },
    { name: 'bin/', type: 'directory' },
    { name: 'bin/busybox', data: 'BUSYBOX', mode: 0o4755 },
    { name: 'bin/sh', type: 'symlink', linkname: 'busybox' },
    { name: 'dev/', type: 'directory' },
    { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
    { name: 'etc/', type: 'directory' },
    { name: 'etc/passwd', data: 'root\n' },
    { name: 'etc/hosts', data: '127.0.0.1 localhost\n' },
    { name: 'etc/keep', data: 'kept\n', uid: 1000, gid: 1000, mode: 0o600 },
    { name: 'data/', type: 'directory', uid: 1000, gid: 100 },
    { name: 'data/a', data: 'a\n' },
    { name: 'data/sub/', type: 'directory' },
    { name: 'data/sub/b', data: 'b\n' },
    { name: 'opaque/', type: 'directory' },
    { name: 'opaque/old', data: 'old\n' },
    { name: 'opaque/olddir/', type: 'directory' },
    { name: 'opaque/olddir/x', data: 'x\n' },
    { name: 'shared', data: 'shared contents\n' },
    { name: 'hl', type: 'link', linkname: 'shared' },
    { name: 'usr/', type: 'directory' },
    { name: 'usr/bin', type: 'symlink', linkname: '../bin' },
    { name: 'replaced/', type: 'directory' },
    { name: 'replaced/child', data: 'child\n' },
    { name: 'z-target', data: 'Z\n' },
    { name: 'a-link', type: 'link', linkname: 'z-target' },
  ]);

const upper = () =>
  tarOf([
    { name: 'etc/', type: 'directory', mode: 0o750 },
    { name: 'etc/.wh.hosts' },
    { name: 'etc/passwd', data: 'root\nuser\n' },
    { name: 'opaque/', type: 'directory', mode: 0o700 },
    { name: 'opaque/.wh..wh..opq' },
    { name: 'opaque/new', data: 'new\n' },
    { name: 'data/.wh.sub' },
    { name: 'shared', data: 'replaced\n' },
    { name: 'replaced', data: 'now a file\n' },
    { name: 'new/deep/file', data: 'deep\n' },
    { name: '.wh..wh.plnk/', type: 'directory' },
    { name: 'etc/.wh.never-existed' },
  ]);

void describe('flattening layers', () => {
  void it('applies whiteouts, opaque directories and replacements, keeping modes, owners, links, devices and mtimes', async () => {
    const { archive, id } = await dockerSave({ layers: [await lower(), await upper()] });
    const store = tarStore('two-layers');
    const result = await store.load(Readable.from([archive]));
    assert.deepEqual(result.loaded, ['Loaded image: test/image:latest']);
    const record = store.resolve('test/image');
    assert.equal(record.id, id);
    const entries = await listTar(readFileSync(record.rootDisk));
    const byName = new Map(entries.map((entry) => [entry.name, entry]));
    assert.deepEqual(
      entries.map((entry) => entry.name),
      [
        '.',
        'a-link',
        'bin/',
        'bin/busybox',
        'bin/sh',
        'data/',
        'data/a',
        'dev/',
        'dev/null',
        'etc/',
        'etc/keep',
        'etc/passwd',
        'hl',
        'new/',
        'new/deep/',
        'new/deep/file',
        'opaque/',
        'opaque/new',
        'replaced',
        'shared',
        'usr/',
        'usr/bin',
        'z-target',
      ],
    );
    const mtime = MTIME.getTime();
    const expect = (name: string, fields: Partial<ListedEntry>) =>
      assert.deepEqual({ ...byName.get(name), ...fields }, byName.get(name), name);
    expect('etc/passwd', { type: 'file', data: 'root\nuser\n', mtime });
    expect('etc/', { type: 'directory', mode: 0o750 }); // the upper layer's metadata, children kept
    expect('etc/keep', { data: 'kept\n', uid: 1000, gid: 1000, mode: 0o600 });
    expect('bin/busybox', { data: 'BUSYBOX', mode: 0o4755 });
    expect('bin/sh', { type: 'symlink', linkname: 'busybox' });
    expect('usr/bin', { type: 'symlink', linkname: '../bin' });
    expect('dev/null', { type: 'character-device', dev: '1,3', mode: 0o666 });
    expect('data/', { uid: 1000, gid: 100 });
    expect('opaque/', { mode: 0o700 });
    expect('replaced', { type: 'file', data: 'now a file\n' });
    expect('shared', { type: 'file', data: 'replaced\n' });
    // The hard link keeps the inode it was made to, though its first name was replaced above it.
    expect('hl', { type: 'file', data: 'shared contents\n' });
    // A link whose name sorts first carries the data; its target's name becomes the link.
    expect('a-link', { type: 'file', data: 'Z\n' });
    expect('z-target', { type: 'link', linkname: 'a-link' });
    // Missing parents are made as 0755 root directories.
    expect('new/', { type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: 0 });
    // As Docker counts it: each layer's own files, a file replaced above counted in both layers.
    const lowerBytes = [
      'BUSYBOX',
      'root\n',
      '127.0.0.1 localhost\n',
      'kept\n',
      'a\n',
      'b\n',
      'old\n',
      'x\n',
      'shared contents\n',
      'child\n',
      'Z\n',
    ];
    const upperBytes = ['root\nuser\n', 'new\n', 'replaced\n', 'now a file\n', 'deep\n'];
    assert.equal(
      record.size,
      [...lowerBytes, ...upperBytes].reduce((n, s) => n + s.length, 0),
    );
  });

  void it('keeps what this layer wrote in an opaque directory, down its subdirectories', () => {
    const tree = new LayerTree();
    const apply = (layer: number, header: RawHeader) => tree.apply(layer, header, 0, `layer ${layer}`);
    apply(0, { name: 'o/', type: 'directory' });
    apply(0, { name: 'o/d/', type: 'directory' });
    apply(0, { name: 'o/d/lower', type: 'file', size: 1 });
    apply(0, { name: 'o/gone', type: 'file', size: 1 });
    apply(1, { name: 'o/d/', type: 'directory' });
    apply(1, { name: 'o/d/upper', type: 'file', size: 1 });
    apply(1, { name: 'o/.wh..wh..opq', type: 'file' });
    assert.deepEqual(
      tree.entries().map((entry) => entry.path),
      ['o', 'o/d', 'o/d/upper'],
    );
  });

  void it('drops a subtree replaced by a file and a file replaced by a directory', () => {
    const tree = new LayerTree();
    tree.apply(0, { name: 'a/b/c', type: 'file' }, 0, 'l0');
    tree.apply(0, { name: 'f', type: 'file' }, 0, 'l0');
    tree.apply(1, { name: 'a', type: 'symlink', linkname: '/x' }, 0, 'l1');
    tree.apply(1, { name: 'f/', type: 'directory' }, 0, 'l1');
    assert.deepEqual(
      tree.entries().map((entry) => [entry.path, entry.header.type]),
      [
        ['a', 'symlink'],
        ['f', 'directory'],
      ],
    );
  });

  for (const [what, header, pattern] of [
    ['a name climbing out', { name: '../x', type: 'file' }, /climbs out of the root/],
    ['a name climbing out midway', { name: 'a/../../x', type: 'file' }, /climbs out of the root/],
    [
      'a hard link out of the root',
      { name: 'x', type: 'link', linkname: '../../etc/shadow' },
      /hard link "x" points out/,
    ],
    ['a hard link to nothing', { name: 'x', type: 'link', linkname: 'nothing' }, /not in the layers so far/],
    [
      'a relative symlink out of the root',
      { name: 'a/s', type: 'symlink', linkname: '../../etc' },
      /symlink "a\/s" points out/,
    ],
    ['an entry under a symlink', { name: 'lnk/x', type: 'file' }, /lies under "lnk", which is a symlink/],
    ['a GNU sparse file', { name: 'sparse', type: null }, /type a root filesystem cannot hold/],
  ] as const) {
    void it(`refuses ${what}`, () => {
      const tree = new LayerTree();
      tree.apply(0, { name: 'lnk', type: 'symlink', linkname: '/etc' }, 0, 'layer 1');
      assert.throws(
        () => tree.apply(0, header, 0, 'layer 1'),
        (error: unknown) => isTetherError(error, 'TETHER_IMAGE_INVALID') && pattern.test(error.message),
      );
    });
  }

  void it('accepts absolute symlink targets and relative ones that stay inside', () => {
    const tree = new LayerTree();
    tree.apply(0, { name: 'a/abs', type: 'symlink', linkname: '/../../etc/passwd' }, 0, 'l');
    tree.apply(0, { name: 'a/rel', type: 'symlink', linkname: '../etc/passwd' }, 0, 'l');
    assert.equal(tree.entries().length, 3);
  });

  void it('resolves paths lexically inside the root', () => {
    assert.deepEqual(rootedComponents('/a/./b/../c/'), ['a', 'c']);
    assert.deepEqual(rootedComponents('./'), []);
    assert.equal(rootedComponents('a/../..'), undefined);
    assert.deepEqual(rootedComponents('../x', ['d']), ['x']);
  });
});
