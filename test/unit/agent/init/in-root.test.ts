import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync, existsSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { mkdirInRoot, resolveInRoot, type RootFs } from '../../../../agent/src/init/in-root.ts';

/** A root made of a map: path → 'dir' or a symlink target. */
function fakeRoot(entries: Record<string, string>): RootFs {
  return {
    kind: (path) => {
      const entry = entries[path];
      return entry === undefined ? undefined : entry === 'dir' ? 'dir' : 'symlink';
    },
    readlink: (path) => entries[path]!,
  };
}

void describe('resolveInRoot: paths as the container sees them, never the agent’s', () => {
  void it('follows absolute and relative symlinks inside the root', () => {
    const fs = fakeRoot({ '/r/data': '/srv/data', '/r/srv': 'dir', '/r/srv/data': 'dir', '/r/lnk': 'srv' });
    assert.deepEqual(resolveInRoot('/r', '/data/x', fs), ['srv', 'data', 'x']);
    assert.deepEqual(resolveInRoot('/r', '/lnk/data', fs), ['srv', 'data']);
  });

  void it('stops .. and absolute targets at the root', () => {
    const fs = fakeRoot({ '/r/escape': '../../../etc', '/r/abs': '/../../etc', '/r/etc': 'dir' });
    assert.deepEqual(resolveInRoot('/r', '/escape', fs), ['etc']);
    assert.deepEqual(resolveInRoot('/r', '/abs/passwd', fs), ['etc', 'passwd']);
    assert.deepEqual(resolveInRoot('/r', '/../../x', fs), ['x']);
  });

  void it('refuses a symlink loop', () => {
    const fs = fakeRoot({ '/r/a': '/b', '/r/b': '/a' });
    assert.throws(() => resolveInRoot('/r', '/a', fs), /too many levels of symbolic links/);
  });
});

void describe('mkdirInRoot on a real directory', () => {
  const root = mkdtempSync(join(tmpdir(), 'tether-in-root-'));
  const outside = mkdtempSync(join(tmpdir(), 'tether-outside-'));
  after(() => {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  void it('makes the mount point where the container sees it, not through a symlink out of the root', () => {
    // The image says /data -> <the host's outside dir>: inside the container that is a path under its root.
    symlinkSync(outside, join(root, 'data'));
    const made = mkdirInRoot(root, '/data/volume');
    assert.equal(made, join(root, outside.slice(1), 'volume'));
    assert.ok(lstatSync(made).isDirectory());
    assert.equal(existsSync(join(outside, 'volume')), false, 'nothing made outside the root');
  });

  void it('refuses a file in the way', () => {
    mkdirSync(join(root, 'etc'));
    writeFileSync(join(root, 'etc', 'passwd'), 'root\n');
    assert.throws(() => mkdirInRoot(root, '/etc/passwd/x'), /\/etc\/passwd in the image is not a directory/);
  });
});
