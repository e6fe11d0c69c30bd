/**
 * Binary xattrs through a layer: a pax header as Go's archive/tar writes one for `setcap` (raw bytes in
 * `SCHILY.xattr.security.capability`) is read exactly and lands in the image byte for byte.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { applyLayer } from '../../../../../hostside/src/daemon/images/ext4-layer/apply-layer.ts';
import {
  exactXattrs,
  headerSize,
  parsePaxRecords,
  withExactXattrs,
} from '../../../../../hostside/src/daemon/images/ext4-layer/pax-xattrs.ts';
import { hasCommand, need, REPO } from '../../../../helpers/prerequisites.ts';
import { ext4Of, tarOf, writeTar } from './ext4-tree.ts';

mkdirSync(join(REPO, 'build'), { recursive: true });
const temp = mkdtempSync(join(REPO, 'build', 'pax-xattrs-test-'));
after(() => rmSync(temp, { recursive: true, force: true }));

/** A vfs_cap_data (revision 2) for cap_net_bind_service+ep: the bytes `setcap` stores. */
const CAPABILITY = Buffer.from([0x01, 0, 0, 0x02, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

function ustarHeader(name: string, type: string, size: number): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0, 'utf8');
  header.write('0000644\0', 100, 'latin1');
  header.write('0000000\0', 108, 'latin1');
  header.write('0000000\0', 116, 'latin1');
  header.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  header.write('14000000000\0', 136, 'latin1');
  header.write(type, 156, 'latin1');
  header.write('ustar\0' + '00', 257, 'latin1');
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return header;
}

const padded = (data: Buffer): Buffer =>
  Buffer.concat([data, Buffer.alloc((512 - (data.length % 512)) % 512)]);

/** A pax record: `LEN KEY=VALUE\n`, LEN counting itself. */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let length = body.length + 1;
  while (String(length).length + body.length !== length) length = String(length).length + body.length;
  return Buffer.concat([Buffer.from(String(length)), body]);
}

/** A tar of one file, `bin/server`, whose pax header carries the capability as Go writes it. */
function tarWithCapability(): Buffer {
  const pax = paxRecord('SCHILY.xattr.security.capability', CAPABILITY);
  const data = Buffer.from('#!/bin/sh\n');
  return Buffer.concat([
    ustarHeader('bin/', '5', 0),
    ustarHeader('PaxHeaders/server', 'x', pax.length),
    padded(pax),
    ustarHeader('bin/server', '0', data.length),
    padded(data),
    Buffer.alloc(1024),
  ]);
}

void describe('exact xattrs from pax headers', () => {
  void it('parses records with binary values and sizes in either encoding', () => {
    const records = parsePaxRecords(
      Buffer.concat([
        paxRecord('SCHILY.xattr.security.capability', CAPABILITY),
        paxRecord('path', Buffer.from('a b')),
      ]),
    );
    assert.deepEqual(records.get('SCHILY.xattr.security.capability'), CAPABILITY);
    assert.equal(records.get('path')?.toString(), 'a b');
    assert.equal(headerSize(ustarHeader('x', '0', 123456)), 123456);
    const big = ustarHeader('x', '0', 0);
    big.fill(0, 124, 136);
    big[124] = 0x80;
    big.writeUIntBE(9 * 2 ** 32, 130, 6);
    assert.equal(headerSize(big), 9 * 2 ** 32);
    assert.deepEqual(
      withExactXattrs({ 'SCHILY.xattr.user.a': '\uFFFD', mtime: '1' }, new Map([['user.a', CAPABILITY]])),
      {
        mtime: '1',
        'LIBARCHIVE.xattr.user.a': CAPABILITY.toString('base64'),
      },
    );
  });

  void it('finds each entry’s xattrs by where its data starts', async () => {
    const tar = writeTar(temp, 'cap.tar', tarWithCapability());
    const found = await exactXattrs(tar);
    // bin/ (header at 0), pax header (512) and its data (1024), bin/server's header at 1536: data at 2048.
    assert.deepEqual([...found.keys()], [2048]);
    assert.deepEqual(found.get(2048)?.get('security.capability'), CAPABILITY);
  });

  void it('writes security.capability into the image byte for byte', async (t) => {
    const debugfs = existsSync('/sbin/debugfs') ? '/sbin/debugfs' : 'debugfs';
    if (
      !need(t, { debugfs: hasCommand(debugfs), fakeroot: hasCommand('fakeroot') || process.getuid?.() === 0 })
    )
      return;
    const image = join(temp, 'cap.raw');
    ext4Of(writeTar(temp, 'base.tar', await tarOf([{ name: 'etc/', type: 'directory' }])), image, 32);
    await applyLayer({
      rawImage: image,
      layerTar: writeTar(temp, 'layer.tar', tarWithCapability()),
      workDir: temp,
    });
    // ea_get -x prints `security.capability (20) = 01 00 00 02 ...`.
    const out = execFileSync(debugfs, ['-R', 'ea_get -x /bin/server security.capability', image], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const hex = out.slice(out.indexOf(' = ') + 3).replace(/\s+/g, '');
    assert.deepEqual(Buffer.from(hex, 'hex'), CAPABILITY, out);
  });
});
