import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTetherError } from '../../../../protocol/src/errors/errors.ts';
import { bootImagePaths, cacheDir, checkBootImage, findRepoRoot } from '../../../../hostside/src/vm/paths.ts';
import { rootfsCacheKey } from '../../../../hostside/src/vm/rootfs.ts';
import { formatTimeline } from '../../../../hostside/src/vm/timeline.ts';

void describe('paths', () => {
  void it('finds the repository from the bundle or a source file', () => {
    const exists = (path: string) => path === '/repo/init-image/tar-to-ext4.sh';
    assert.equal(findRepoRoot('/repo/dist', exists), '/repo');
    assert.equal(findRepoRoot('/repo/hostside/src/cli', exists), '/repo');
    assert.equal(findRepoRoot('/elsewhere/bin', exists), undefined);
  });

  void it('names the boot image files in an image folder', () => {
    assert.deepEqual(bootImagePaths('/img'), {
      kernel: '/img/vmlinuz',
      initramfs: '/img/initramfs.cpio.gz',
      runtimeDisk: '/img/runtime.img',
    });
  });

  void it('says which boot image file is missing', () => {
    assert.throws(
      () => checkBootImage(bootImagePaths('/nonexistent-image-dir')),
      (e) =>
        isTetherError(e, 'TETHER_IMAGE_MISSING') && /kernel \/nonexistent-image-dir\/vmlinuz/.test(e.message),
    );
  });

  void it('caches under TETHER_CACHE_DIR, else XDG_CACHE_HOME, else ~/.cache', () => {
    assert.equal(cacheDir({ TETHER_CACHE_DIR: '/c', XDG_CACHE_HOME: '/x' }, '/home/u'), '/c');
    assert.equal(cacheDir({ XDG_CACHE_HOME: '/x' }, '/home/u'), '/x/tether');
    assert.equal(cacheDir({ XDG_CACHE_HOME: '' }, '/home/u'), '/home/u/.cache/tether');
  });
});

void describe('root disk cache key', () => {
  void it('changes with the tarball, the size and the conversion script, and only with them', () => {
    const key = rootfsCacheKey('aa', 'script v1');
    assert.match(key, /^[0-9a-f]{64}$/);
    assert.equal(rootfsCacheKey('aa', 'script v1'), key);
    assert.notEqual(rootfsCacheKey('ab', 'script v1'), key);
    assert.notEqual(rootfsCacheKey('aa', 'script v2'), key);
    assert.notEqual(rootfsCacheKey('aa', 'script v1', 64), key);
  });
});

void describe('timeline', () => {
  void it('merges host events and guest records in host-time order, each with its own clock', () => {
    const text = formatTimeline([
      { source: 'host', hostMs: 4737, text: 'channel up' },
      { source: 'host', hostMs: 80, text: 'VM running (qemu)' },
      { source: 'guest', hostMs: 4039, record: { stage: 'kernel', outcome: 'ok', atMs: 808, detail: 'up' } },
      {
        source: 'guest',
        hostMs: 4740,
        record: { stage: 'process-exited', outcome: 'ok', atMs: 3904, exitCode: 0 },
      },
    ]);
    assert.equal(
      text,
      [
        'timeline: host s since the VM start was asked | guest s since its kernel started',
        '   0.080 |          host  VM running (qemu)',
        '   4.039 |    0.808 guest kernel ok up',
        '   4.737 |          host  channel up',
        '   4.740 |    3.904 guest process-exited ok exit=0',
        '',
      ].join('\n'),
    );
  });
});
