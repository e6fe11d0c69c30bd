/** archive-stat/get/put@tether (docker cp) against a real `tether --dev` with its own --rootfs. */
import assert from 'node:assert/strict';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import tarStream from 'tar-stream';
import type { ChannelClient } from '../../hostside/src/channel/client.ts';
import { isTetherError } from '../../protocol/src/errors/errors.ts';
import { dockerFileMode } from '../../protocol/src/requests/requests.ts';
import { startDevAgent, type DevAgent } from '../helpers/dev-agent.ts';

interface Entry {
  name: string;
  type: string;
  data: string;
  linkname?: string;
}

async function untar(tar: Readable): Promise<Entry[]> {
  const extract = tarStream.extract();
  const entries: Entry[] = [];
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: unknown) => void chunks.push(chunk as Buffer));
      stream.on('end', () => {
        entries.push({
          name: header.name,
          type: header.type ?? 'file',
          data: Buffer.concat(chunks).toString(),
          ...(header.linkname ? { linkname: header.linkname } : {}),
        });
        next();
      });
    });
    extract.on('finish', () => resolve());
    extract.on('error', reject);
  });
  tar.pipe(extract as unknown as NodeJS.WritableStream);
  await done;
  return entries.sort((a, b) => a.name.localeCompare(b.name));
}

function tarOf(
  entries: { name: string; data?: string; type?: 'file' | 'directory' | 'symlink'; linkname?: string }[],
): Readable {
  const pack = tarStream.pack();
  for (const entry of entries)
    pack.entry(
      {
        name: entry.name,
        type: entry.type ?? 'file',
        mode: 0o644,
        ...(entry.linkname ? { linkname: entry.linkname } : {}),
      },
      entry.data ?? '',
    );
  pack.finalize();
  return pack as unknown as Readable;
}

describe('docker cp through the archive requests', () => {
  let agent: DevAgent;
  let client: ChannelClient;
  let root: string;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'tether-rootfs-'));
    mkdirSync(join(root, 'etc/conf.d'), { recursive: true });
    writeFileSync(join(root, 'etc/hostname'), 'box\n');
    writeFileSync(join(root, 'etc/conf.d/a.conf'), 'a=1\n');
    symlinkSync('/etc/hostname', join(root, 'etc/name-link'));
    mkdirSync(join(root, 'tmp'));
    agent = await startDevAgent({ args: ['--rootfs', root] });
    client = await agent.connect();
  });
  after(async () => {
    client.close();
    await agent.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it('stats a file, a directory and a symlink', async () => {
    const file = await client.archiveStat('/etc/hostname');
    assert.equal(file.name, 'hostname');
    assert.equal(file.size, 4);
    assert.equal(file.mode & 0o170000, 0o100000);
    assert.equal(file.linkTarget, '');
    assert.ok(!Number.isNaN(Date.parse(file.mtime)));
    const dir = await client.archiveStat('/etc');
    assert.equal(dockerFileMode(dir.mode) >= 2 ** 31, true, 'Go os.ModeDir');
    assert.equal((await client.archiveStat('/etc/name-link')).linkTarget, '/etc/hostname');
  });

  it('gets a file as a tar with one entry named after it', async () => {
    const got = await client.archiveGet('/etc/hostname');
    assert.equal(got.stat.name, 'hostname');
    const [entries] = await Promise.all([untar(got.tar), got.done]);
    assert.deepEqual(entries, [{ name: 'hostname', type: 'file', data: 'box\n' }]);
  });

  it('gets a directory with its entries under its name', async () => {
    const got = await client.archiveGet('/etc');
    const [entries] = await Promise.all([untar(got.tar), got.done]);
    assert.deepEqual(
      entries.map((entry) => [entry.name, entry.type, entry.data, entry.linkname ?? '']),
      [
        ['etc', 'directory', '', ''],
        ['etc/conf.d', 'directory', '', ''],
        ['etc/conf.d/a.conf', 'file', 'a=1\n', ''],
        ['etc/hostname', 'file', 'box\n', ''],
        ['etc/name-link', 'symlink', '', '/etc/hostname'],
      ],
    );
  });

  it('carries a large file whole, with backpressure', async () => {
    const big = Buffer.alloc(8 * 1024 * 1024, 'x');
    writeFileSync(join(root, 'tmp/big'), big);
    const got = await client.archiveGet('/tmp/big');
    const [entries] = await Promise.all([untar(got.tar), got.done]);
    assert.equal(entries[0]?.data.length, big.length);
  });

  it('puts a tar into a directory; the files are there to read back', async () => {
    await client.archivePut(
      '/tmp',
      tarOf([
        { name: 'put', type: 'directory' },
        { name: 'put/one.txt', data: 'first\n' },
        { name: 'put/sub/two.txt', data: 'second\n' },
      ]),
    );
    assert.equal(readFileSync(join(root, 'tmp/put/one.txt'), 'utf8'), 'first\n');
    assert.equal(readFileSync(join(root, 'tmp/put/sub/two.txt'), 'utf8'), 'second\n');
    const back = await client.archiveGet('/tmp/put/sub/two.txt');
    const [entries] = await Promise.all([untar(back.tar), back.done]);
    assert.equal(entries[0]?.data, 'second\n');
  });

  it('answers TETHER_PATH_NOT_FOUND for a missing path, before any stream', async () => {
    const missing = (error: unknown): boolean => isTetherError(error, 'TETHER_PATH_NOT_FOUND');
    await assert.rejects(client.archiveStat('/no/such'), missing);
    await assert.rejects(client.archiveGet('/etc/nothing'), missing);
    await assert.rejects(client.archivePut('/no/dir', tarOf([{ name: 'x', data: 'x' }])), missing);
    await assert.rejects(client.archivePut('/etc/hostname', tarOf([{ name: 'x', data: 'x' }])), missing);
  });

  it('refuses an entry that would land outside the target directory', async () => {
    mkdirSync(join(root, 'tmp/jail'));
    await assert.rejects(
      client.archivePut(
        '/tmp/jail',
        tarOf([
          { name: 'inside.txt', data: 'ok\n' },
          { name: '../escaped.txt', data: 'bad\n' },
          { name: 'after.txt', data: 'never\n' },
        ]),
      ),
      (error) => isTetherError(error, 'TETHER_ARCHIVE_FAILED') && /escaped\.txt.*outside/.test(error.message),
    );
    assert.equal(readFileSync(join(root, 'tmp/jail/inside.txt'), 'utf8'), 'ok\n', 'entries before it stay');
    assert.equal(existsSync(join(root, 'tmp/escaped.txt')), false);
    assert.equal(existsSync(join(root, 'tmp/jail/escaped.txt')), false, 'not clamped into the target either');
    assert.equal(existsSync(join(root, 'tmp/jail/after.txt')), false);

    // A path through a symlink the tar itself made is refused too (tar-fs's check), and the agent lives on.
    await assert.rejects(
      client.archivePut(
        '/tmp/jail',
        tarOf([
          { name: 'up', type: 'symlink', linkname: '..' },
          { name: 'up/through-link.txt', data: 'bad\n' },
        ]),
      ),
      (error) => isTetherError(error, 'TETHER_ARCHIVE_FAILED') && /not a valid path/.test(error.message),
    );
    assert.equal(existsSync(join(root, 'tmp/through-link.txt')), false);
    assert.equal((await client.archiveStat('/tmp/jail/up')).linkTarget, '..');
  });

  it('noOverwriteDirNonDir refuses replacing a directory with a file', async () => {
    mkdirSync(join(root, 'tmp/keep/dir'), { recursive: true });
    await assert.rejects(
      client.archivePut('/tmp/keep', tarOf([{ name: 'dir', data: 'file now\n' }]), {
        noOverwriteDirNonDir: true,
      }),
      (error) => isTetherError(error, 'TETHER_ARCHIVE_FAILED') && /replace a directory/.test(error.message),
    );
    assert.ok(existsSync(join(root, 'tmp/keep/dir')));
  });
});
