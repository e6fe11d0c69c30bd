import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { isTetherError, type ErrorCode } from '../../../../protocol/src/errors/errors.ts';
import { ImageStore, type ImageStoreOptions } from '../../../../hostside/src/daemon/images/image-store.ts';
import { hasCommand, need, REPO } from '../../../helpers/prerequisites.ts';
import { dockerSave, listTar, ociLayout, sha256, snapshot, tarOf } from './image-fixtures.ts';
import { tarLayerDisks } from './tar-layer-disks.ts';

const temp = mkdtempSync(join(tmpdir(), 'tether-images-'));
after(() => rmSync(temp, { recursive: true, force: true }));
let stores = 0;

/** A store whose root disk is the flattened tar (no mkfs needed); counts the disks it made. */
function tarStore(options: ImageStoreOptions = {}): ImageStore & { disksMade: number } {
  const disks = tarLayerDisks();
  const store = new ImageStore(join(temp, `store${stores++}`, 'images'), { layerDisks: disks, ...options });
  return Object.defineProperty(store, 'disksMade', { get: () => disks.disksMade }) as ImageStore & {
    disksMade: number;
  };
}

const layer = (files: Record<string, string>) =>
  tarOf(Object.entries(files).map(([name, data]) => ({ name, data })));

async function refuses(code: ErrorCode, archive: Buffer | Readable, pattern: RegExp): Promise<void> {
  const store = tarStore();
  await store.load(Readable.from([(await dockerSave({ layers: [await layer({ base: 'x' })] })).archive]));
  const before = snapshot(store.directory);
  await assert.rejects(
    store.load(archive instanceof Readable ? archive : Readable.from([archive])),
    (error: unknown) => {
      assert.ok(isTetherError(error, code), `expected ${code}, got ${String(error)}`);
      assert.match(error.message, pattern);
      return true;
    },
  );
  assert.deepEqual(snapshot(store.directory), before, 'the refused load left nothing in the store');
  assert.equal(store.list().length, 1);
}

void describe('ImageStore.load refuses broken and malicious archives, leaving the store as it was', () => {
  void it('a layer entry climbing out of the root (../x)', async () => {
    const bad = await tarOf([{ name: '../x', data: 'pwned' }]);
    await refuses(
      'TETHER_IMAGE_INVALID',
      (await dockerSave({ layers: [bad] })).archive,
      /"\.\.\/x" climbs out/,
    );
  });

  void it('a hard link escaping the root', async () => {
    const bad = await tarOf([
      { name: 'a', data: 'a' },
      { name: 'x', type: 'link', linkname: '../../etc/shadow' },
    ]);
    await refuses(
      'TETHER_IMAGE_INVALID',
      (await dockerSave({ layers: [bad] })).archive,
      /hard link "x" points out/,
    );
  });

  void it('a relative symlink escaping the root', async () => {
    const bad = await tarOf([{ name: 'etc/s', type: 'symlink', linkname: '../../../etc/shadow' }]);
    await refuses(
      'TETHER_IMAGE_INVALID',
      (await dockerSave({ layers: [bad] })).archive,
      /symlink "etc\/s" points out/,
    );
  });

  void it('a layer whose sha256 is not its diff id', async () => {
    const good = await layer({ a: '1' });
    const { archive } = await dockerSave({ layers: [good], diffIds: [sha256(Buffer.from('other'))] });
    await refuses(
      'TETHER_IMAGE_INVALID',
      archive,
      /layer 1 of 1 .*its sha256 is sha256:[0-9a-f]{64}, but the config's rootfs\.diff_ids\[0\]/,
    );
  });

  void it('a config whose sha256 is not the id its name gives', async () => {
    const { archive } = await dockerSave({
      layers: [await layer({ a: '1' })],
      configName: `${'ab'.repeat(32)}.json`,
    });
    await refuses(
      'TETHER_IMAGE_INVALID',
      archive,
      /image config abab.*\.json has sha256 [0-9a-f]{64}, not the one its name gives/,
    );
  });

  void it('a truncated archive', async () => {
    const { archive } = await dockerSave({ layers: [await layer({ a: 'x'.repeat(5000) })] });
    await refuses(
      'TETHER_IMAGE_INVALID',
      archive.subarray(0, 3000),
      /not a valid tar: Unexpected end of data/,
    );
  });

  void it('gzip garbage, as the archive or as a layer', async () => {
    const garbage = Buffer.concat([
      Buffer.from([0x1f, 0x8b, 0x08, 0x00]),
      Buffer.from('not really gzip at all'),
    ]);
    await refuses('TETHER_IMAGE_INVALID', garbage, /not a valid gzip-compressed tar/);
    const { archive } = await dockerSave({ layers: [garbage], diffIds: [sha256(garbage)] });
    await refuses(
      'TETHER_IMAGE_INVALID',
      archive,
      /layer 1 of 1 \(layer0\/layer\.tar\) is not a valid gzip stream/,
    );
  });

  void it('something that is not a tar at all', async () => {
    await refuses(
      'TETHER_IMAGE_INVALID',
      Buffer.from('hello\n'.repeat(200)),
      /not a valid tar: Invalid tar header/,
    );
    await refuses('TETHER_IMAGE_INVALID', Buffer.alloc(0), /no manifest\.json/);
  });

  void it('a layer that is not a tar', async () => {
    const text = Buffer.from('plain text, not a tar\n'.repeat(40));
    const { archive } = await dockerSave({ layers: [text], diffIds: [sha256(text)] });
    await refuses('TETHER_IMAGE_INVALID', archive, /layer 1 of 1 .* is not a valid tar/);
  });

  void it('a zstd layer', async () => {
    const zstd = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(600)]);
    const { archive } = await dockerSave({ layers: [zstd], diffIds: [sha256(zstd)] });
    await refuses('TETHER_IMAGE_UNSUPPORTED', archive, /compressed with zstd/);
  });

  void it('a missing or malformed manifest.json', async () => {
    const { archive } = await dockerSave({ layers: [await layer({ a: '1' })], omit: ['manifest.json'] });
    await refuses('TETHER_IMAGE_INVALID', archive, /no manifest\.json/);
    const bad = await dockerSave({
      layers: [await layer({ a: '1' })],
      manifest: '[{"Config": 7, "Layers": "x"}]',
    });
    await refuses(
      'TETHER_IMAGE_INVALID',
      bad.archive,
      /manifest\.json is malformed: 0\.Config: .*0\.Layers:/,
    );
    const notJson = await dockerSave({ layers: [await layer({ a: '1' })], manifest: '{not json' });
    await refuses('TETHER_IMAGE_INVALID', notJson.archive, /manifest\.json is not valid JSON/);
  });

  void it('a layer or config that manifest.json names but the archive lacks', async () => {
    const noLayer = await dockerSave({ layers: [await layer({ a: '1' })], omit: ['layer0/layer.tar'] });
    await refuses(
      'TETHER_IMAGE_INVALID',
      noLayer.archive,
      /names the layer layer0\/layer\.tar, which the archive does not hold/,
    );
    const noConfig = await dockerSave({
      layers: [await layer({ a: '1' })],
      configName: 'config.json',
      omit: ['config.json'],
    });
    await refuses('TETHER_IMAGE_INVALID', noConfig.archive, /names the config config\.json/);
  });

  void it('an image for windows', async () => {
    const { archive } = await dockerSave({ layers: [await layer({ a: '1' })], config: { os: 'windows' } });
    await refuses(
      'TETHER_IMAGE_UNSUPPORTED',
      archive,
      /image test\/image:latest is for windows\/amd64; tetherd runs linux\/amd64 images only/,
    );
  });

  void it('an OCI layout with only an arm64 image', async () => {
    const { archive } = await ociLayout([await layer({ a: '1' })], 'docker.io/library/armed:1', {
      os: 'linux',
      architecture: 'arm64',
    });
    await refuses('TETHER_IMAGE_UNSUPPORTED', archive, /holds images for linux\/arm64/);
  });

  void it('a stream that fails midway', async () => {
    const { archive } = await dockerSave({ layers: [await layer({ a: 'x'.repeat(20000) })] });
    const failing = new Readable({
      read() {
        this.push(archive.subarray(0, 10000));
        this.destroy(new Error('client went away'));
      },
    });
    await refuses('TETHER_IMAGE_INVALID', failing, /client went away/);
  });
});

void describe('ImageStore.load', () => {
  void it('loads an OCI image layout with gzip layers, checking blob digests, named by its annotation', async () => {
    const store = tarStore();
    const { archive, id } = await ociLayout(
      [await layer({ a: '1' }), await layer({ b: '2' })],
      'docker.io/library/oci:1.0',
    );
    const result = await store.load(Readable.from([archive]));
    assert.deepEqual(result.loaded, ['Loaded image: oci:1.0']);
    assert.equal(store.resolve('oci:1.0').id, id);
    assert.deepEqual(
      (await listTar(readFileSync(store.resolve(id).rootDisk))).map((entry) => entry.name),
      ['a', 'b'],
    );
  });

  void it('takes a gzip-compressed archive with gzip-compressed layers', async () => {
    const plain = await layer({ a: '1' });
    const { archive } = await dockerSave({ layers: [gzipSync(plain)], diffIds: [sha256(plain)] });
    const store = tarStore();
    assert.deepEqual((await store.load(Readable.from([gzipSync(archive)]))).loaded, [
      'Loaded image: test/image:latest',
    ]);
  });

  void it('loads an untagged image by id, and an image already there without building it again', async () => {
    const store = tarStore();
    const { archive, id } = await dockerSave({ layers: [await layer({ a: '1' })], repoTags: [] });
    assert.deepEqual((await store.load(Readable.from([archive]))).loaded, [`Loaded image ID: ${id}`]);
    assert.equal(store.disksMade, 1);
    const progress: string[] = [];
    const again = await store.load(Readable.from([archive]), (message) => progress.push(message));
    assert.deepEqual(again.loaded, [`Loaded image ID: ${id}`]);
    assert.equal(store.disksMade, 1, 'content-addressed: the second load built nothing');
    assert.deepEqual(progress, []);
  });

  void it('moves a tag to a newly loaded image, leaving the old one untagged', async () => {
    const store = tarStore();
    const first = await dockerSave({ layers: [await layer({ v: '1' })] });
    const second = await dockerSave({ layers: [await layer({ v: '2' })] });
    await store.load(Readable.from([first.archive]));
    const progress: string[] = [];
    await store.load(Readable.from([second.archive]), (message) => progress.push(message));
    assert.ok(
      progress.includes(
        `The image test/image:latest already exists, renaming the old one with ID ${first.id} to empty string`,
      ),
    );
    assert.equal(store.resolve('test/image').id, second.id);
    assert.deepEqual(store.resolve(first.id).repoTags, []);
  });
});

void describe('ImageStore lookups, tags and removal', async () => {
  const store = tarStore();
  const { archive, id } = await dockerSave({
    layers: [await layer({ a: '1' })],
    repoTags: ['busybox:latest'],
  });
  await store.load(Readable.from([archive]));
  const hex = id.slice('sha256:'.length);

  void it('resolves by tag, name, docker.io forms, full id and id prefix', () => {
    for (const ref of [
      'busybox',
      'busybox:latest',
      'library/busybox',
      'docker.io/library/busybox:latest',
      'index.docker.io/library/busybox',
      id,
      hex,
      hex.slice(0, 4),
      `sha256:${hex.slice(0, 12)}`,
    ])
      assert.equal(store.resolve(ref).id, id, ref);
  });

  void it('says No such image for anything else', () => {
    for (const ref of ['busybox:1', 'other', hex.slice(0, 3), `sha256:${'0'.repeat(64)}`, 'UPPER', ''])
      assert.throws(
        () => store.resolve(ref),
        (error: unknown) =>
          isTetherError(error, 'TETHER_NO_SUCH_IMAGE') && error.message === `No such image: ${ref}`,
        ref,
      );
  });

  void it('describes the image as its config says', () => {
    const record = store.resolve('busybox');
    assert.deepEqual(record.config, {
      Env: ['PATH=/bin'],
      Cmd: ['sh'],
      WorkingDir: '/',
      Labels: { tier: 'test' },
    });
    assert.equal(record.created, '2024-05-01T12:00:00Z');
    assert.equal(record.architecture, 'amd64');
    assert.equal(record.os, 'linux');
    assert.equal(record.size, 1);
    // The root disk is the top layer's (one layer here), stored apart from the image and keyed by chain id.
    assert.equal(record.layers.length, 1);
    assert.equal(record.layers[0], record.diffIds[0], "the lowest layer's chain id is its diff id");
    assert.equal(record.rootDisk, join(store.directory, 'layers', record.layers[0]!.slice(7), 'layer.qcow2'));
    assert.ok(existsSync(record.rootDisk));
  });

  void it('tags, refuses an invalid tag, and reads everything back after a restart', () => {
    store.tag('busybox', 'mine/box');
    store.tag(hex.slice(0, 6), 'localhost:5000/box:v1');
    assert.throws(
      () => store.tag('busybox', 'Bad:Name'),
      (error: unknown) => isTetherError(error, 'TETHER_REFERENCE_INVALID'),
    );
    assert.throws(
      () => store.tag('nothing', 'x'),
      (error: unknown) => isTetherError(error, 'TETHER_NO_SUCH_IMAGE'),
    );
    const reopened = new ImageStore(store.directory);
    assert.deepEqual(reopened.resolve('mine/box:latest').repoTags, [
      'busybox:latest',
      'localhost:5000/box:v1',
      'mine/box:latest',
    ]);
    assert.deepEqual(reopened.list(), store.list());
  });

  void it('untags one of several tags without asking about containers', () => {
    const lines = store.remove('mine/box', { isInUse: () => 'c0ffee' });
    assert.deepEqual(lines, ['Untagged: mine/box:latest']);
    assert.deepEqual(store.resolve(id).repoTags, ['busybox:latest', 'localhost:5000/box:v1']);
  });

  void it('refuses to delete by id an image with several tags unless forced', () => {
    assert.throws(
      () => store.remove(hex.slice(0, 12)),
      (error: unknown) =>
        isTetherError(error, 'TETHER_CONFLICT') &&
        error.message ===
          `conflict: unable to delete ${hex.slice(0, 12)} (must be forced) - image is referenced in multiple repositories`,
    );
  });

  void it('refuses to drop the last tag of an image in use, and only untags it when forced', () => {
    store.remove('localhost:5000/box:v1');
    assert.throws(
      () => store.remove('busybox', { isInUse: (image) => (image === id ? 'abc123' : undefined) }),
      (error: unknown) =>
        isTetherError(error, 'TETHER_CONFLICT') &&
        error.message ===
          `conflict: unable to remove repository reference "busybox" (must force) - container abc123 is using its referenced image ${hex.slice(0, 12)}`,
    );
    assert.deepEqual(store.remove('busybox', { force: true, isInUse: () => true }), [
      'Untagged: busybox:latest',
    ]);
    assert.deepEqual(store.resolve(id).repoTags, []);
    assert.ok(existsSync(store.resolve(id).rootDisk), 'the disk under a container stays');
    assert.throws(
      () => store.remove(id, { isInUse: () => 'abc123' }),
      (error: unknown) =>
        isTetherError(error, 'TETHER_CONFLICT') &&
        /image is being used by container abc123/.test(error.message),
    );
  });

  void it('deletes with the last tag once nothing uses it, and forgets it for good', () => {
    store.tag(id, 'busybox');
    assert.deepEqual(store.remove('busybox'), ['Untagged: busybox:latest', `Deleted: ${id}`]);
    assert.equal(existsSync(join(store.directory, hex)), false);
    assert.deepEqual(store.list(), []);
    // Its layer went with it: no other image had it.
    assert.deepEqual(snapshot(store.directory), ['layers/', 'repositories.json 17', 'tmp/']);
    assert.deepEqual(new ImageStore(store.directory).list(), []);
  });

  void it('deletes by id with all its tags when forced', async () => {
    await store.load(Readable.from([archive]));
    store.tag('busybox', 'again');
    assert.deepEqual(store.remove(hex.slice(0, 8), { force: true }), [
      'Untagged: again:latest',
      'Untagged: busybox:latest',
      `Deleted: ${id}`,
    ]);
    assert.throws(
      () => store.remove('busybox'),
      (error: unknown) => isTetherError(error, 'TETHER_NO_SUCH_IMAGE'),
    );
  });

  void it('cleans what a crash left in tmp/ when it opens', () => {
    const leftover = join(store.directory, 'tmp', 'load-crashed');
    execFileSync('mkdir', ['-p', join(leftover, 'spool')]);
    new ImageStore(store.directory);
    assert.equal(existsSync(leftover), false);
  });
});

const canMakeDisks = () => ({
  'qemu-img (qemu-utils)': hasCommand('qemu-img'),
  'mkfs.ext4 (e2fsprogs)':
    existsSync('/sbin/mkfs.ext4') || existsSync('/usr/sbin/mkfs.ext4') || hasCommand('mkfs.ext4'),
  'debugfs (e2fsprogs)':
    existsSync('/sbin/debugfs') || existsSync('/usr/sbin/debugfs') || hasCommand('debugfs'),
  'fakeroot (or root)': process.getuid?.() === 0 || hasCommand('fakeroot'),
});
const debugfsRaw = (image: string, request: string): string =>
  execFileSync(existsSync('/sbin/debugfs') ? '/sbin/debugfs' : 'debugfs', ['-R', request, image], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
const flattened = new Map<string, string>();
/** debugfs on what the guest sees: the whole qcow2 chain of the root disk, read back as one raw image. */
const debugfs = (disk: string, request: string): string => {
  let raw = flattened.get(disk);
  if (!raw) {
    raw = join(temp, `flat-${flattened.size}.raw`);
    execFileSync('qemu-img', ['convert', '-O', 'raw', disk, raw]);
    flattened.set(disk, raw);
  }
  return debugfsRaw(raw, request);
};

void describe('root disks (mkfs.ext4)', () => {
  void it('makes an ext4 root disk of the flattened layers', async (t) => {
    if (!need(t, canMakeDisks())) return;
    const store = new ImageStore(join(temp, 'ext4', 'images'));
    const lower = await tarOf([
      { name: 'etc/', type: 'directory' },
      { name: 'etc/passwd', data: 'root\n' },
      { name: 'etc/hosts', data: 'gone\n' },
      { name: 'home/', type: 'directory', uid: 1000, gid: 1000, mode: 0o700 },
      { name: 'dev/', type: 'directory' },
      { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'bin/', type: 'directory' },
      { name: 'bin/tool', data: '#!/bin/sh\n', mode: 0o755 },
      { name: 'bin/alias', type: 'link', linkname: 'bin/tool' },
    ]);
    const upper = await tarOf([
      { name: 'etc/.wh.hosts' },
      { name: 'etc/passwd', data: 'root\nuser\n' },
      { name: 'bin/sh', type: 'symlink', linkname: 'tool' },
    ]);
    const { archive } = await dockerSave({ layers: [lower, upper], repoTags: ['disk:test'] });
    await store.load(Readable.from([archive]));
    const record = store.resolve('disk:test');
    const disk = record.rootDisk;
    // Two layers, two disks: the upper one a delta over the lower one, which the guest sees as one ext4.
    assert.equal(record.layers.length, 2);
    assert.match(
      execFileSync('qemu-img', ['info', disk], { encoding: 'utf8' }),
      /backing file: \.\.\/[0-9a-f]{64}\/layer\.qcow2/,
    );
    assert.match(debugfs(disk, 'stats'), /Filesystem magic number:\s+0xEF53/);
    const etc = debugfs(disk, 'ls -l /etc');
    assert.match(etc, /100644 \(1\)\s+0\s+0\s+10 .* passwd/);
    assert.doesNotMatch(etc, /hosts/);
    assert.equal(debugfs(disk, 'cat /etc/passwd'), 'root\nuser\n');
    assert.match(debugfs(disk, 'ls -l /'), /40700 \(2\)\s+1000\s+1000 .* home/);
    assert.match(debugfs(disk, 'stat /dev/null'), /Type: character special/);
    const bin = debugfs(disk, 'ls -l /bin');
    assert.match(bin, /120777 \(7\)\s+0\s+0\s+4 .* sh/);
    const inodes = [...bin.matchAll(/^\s*(\d+)\s+100755.* (alias|tool)\s*$/gm)].map((match) => match[1]);
    assert.equal(inodes.length, 2);
    assert.equal(inodes[0], inodes[1], 'the hard link shares its inode');
  });

  void it('loads build/image/busybox-image.tar (init-image/make-docker-image.mjs) as tether/busybox:latest', async (t) => {
    const busybox = join(REPO, 'build/image/busybox.tar');
    if (!need(t, { ...canMakeDisks(), 'build/image/busybox.tar (make image)': existsSync(busybox) })) return;
    // Made afresh from busybox.tar, twice: the script's output must be the same bytes each time.
    const first = join(temp, 'busybox-image-1.tar');
    const second = join(temp, 'busybox-image-2.tar');
    for (const out of [first, second])
      execFileSync(process.execPath, [join(REPO, 'init-image/make-docker-image.mjs'), busybox, out], {
        stdio: 'ignore',
      });
    assert.ok(readFileSync(first).equals(readFileSync(second)), 'deterministic output');
    const store = new ImageStore(join(temp, 'busybox', 'images'));
    const started = Date.now();
    const result = await store.load(createReadStream(first));
    t.diagnostic(`busybox image loaded and its ext4 disk made in ${Date.now() - started} ms`);
    assert.deepEqual(result.loaded, ['Loaded image: tether/busybox:latest']);
    const record = store.resolve('tether/busybox');
    assert.deepEqual(record.config, {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['sh'],
    });
    assert.match(debugfs(record.rootDisk, 'ls -l /bin'), / busybox\s*$/m);
    assert.match(debugfs(record.rootDisk, 'ls -l /home'), /40755 \(2\)\s+1000\s+1000 .* tester/);
  });
});
