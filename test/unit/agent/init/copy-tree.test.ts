import assert from 'node:assert/strict';
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { copyTree } from '../../../../agent/src/init/copy-tree.ts';

void describe('copyTree (a volume’s copy-up)', () => {
  const temp = mkdtempSync(join(tmpdir(), 'tether-copy-'));
  after(() => rmSync(temp, { recursive: true, force: true }));

  void it('copies files, directories and symlinks with their owners, modes and times; the root takes the source’s', (t) => {
    const root = process.getuid?.() === 0;
    const from = join(temp, 'image-dir');
    const to = join(temp, 'volume');
    mkdirSync(join(from, 'sub'), { recursive: true });
    mkdirSync(to);
    writeFileSync(join(from, 'page.html'), '<h1>hi</h1>\n');
    chmodSync(join(from, 'page.html'), 0o640);
    writeFileSync(join(from, 'sub', 'deep'), 'deep\n');
    symlinkSync('page.html', join(from, 'index.html'));
    chmodSync(from, 0o1770);
    if (root) chownSync(join(from, 'page.html'), 1000, 100);
    if (root) chownSync(from, 999, 999);
    const result = copyTree(from, to);
    assert.deepEqual(result, { entries: 4, skipped: 0 });
    assert.equal(readFileSync(join(to, 'page.html'), 'utf8'), '<h1>hi</h1>\n');
    assert.equal(readFileSync(join(to, 'sub', 'deep'), 'utf8'), 'deep\n');
    assert.equal(readlinkSync(join(to, 'index.html')), 'page.html');
    assert.equal(lstatSync(join(to, 'page.html')).mode & 0o7777, 0o640);
    assert.equal(lstatSync(to).mode & 0o7777, 0o1770);
    // Node hands utimes seconds as a double: the time survives to the millisecond, give or take one.
    const skew = lstatSync(join(to, 'page.html')).mtimeMs - lstatSync(join(from, 'page.html')).mtimeMs;
    assert.ok(Math.abs(skew) <= 1, `mtime kept (off by ${skew} ms)`);
    if (!root) return t.diagnostic('not root: owners not checked');
    assert.deepEqual(
      [lstatSync(join(to, 'page.html')).uid, lstatSync(join(to, 'page.html')).gid],
      [1000, 100],
    );
    assert.deepEqual([lstatSync(to).uid, lstatSync(to).gid], [999, 999]);
  });
});
