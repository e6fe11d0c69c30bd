import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  anonymousMounts,
  mergeMounts,
  parseBind,
  parseMount,
} from '../../../../hostside/src/daemon/volumes/mount-spec.ts';
import { parseVolumeSize } from '../../../../hostside/src/daemon/volumes/volume-store.ts';
import { checkVolumeConflicts } from '../../../../hostside/src/daemon/containers/container-volumes.ts';

void describe('volume mounts from the Docker API', () => {
  void it('reads -v NAME:/path[:ro] and --mount type=volume', () => {
    assert.deepEqual(parseBind('data:/var/lib/data'), {
      name: 'data',
      target: '/var/lib/data',
      readOnly: false,
    });
    assert.deepEqual(parseBind('data:/x/:ro'), { name: 'data', target: '/x', readOnly: true });
    assert.deepEqual(parseMount({ Type: 'volume', Source: 'v1', Target: '/m', ReadOnly: true }), {
      name: 'v1',
      target: '/m',
      readOnly: true,
    });
    assert.deepEqual(parseMount({ Type: 'volume', Target: '/anon' }), {
      name: undefined,
      target: '/anon',
      readOnly: false,
    });
  });

  void it('refuses host directories and other mount types, saying why', () => {
    assert.throws(
      () => parseBind('/etc:/host-etc'),
      /each container is a VM, which shares disks with the host, not folders/,
    );
    assert.throws(() => parseBind('./dir:/x'), /shares disks with the host, not folders/);
    assert.throws(() => parseMount({ Type: 'bind', Source: '/tmp', Target: '/x' }), /not folders/);
    assert.throws(() => parseMount({ Type: 'tmpfs', Target: '/x' }), /type tmpfs are not supported/);
    assert.throws(() => parseBind('data:relative'), /must be absolute/);
    assert.throws(() => parseBind('data:/'), /cannot be mounted at \//);
    assert.throws(() => parseBind('data:/x:rx'), /unknown mode "rx"/);
  });

  void it('adds anonymous volumes only where nothing explicit is mounted, and refuses duplicates', () => {
    const merged = mergeMounts([parseBind('data:/data')], anonymousMounts({ '/data': {}, '/cache': {} }));
    assert.deepEqual(
      merged.map((m) => `${m.name ?? '(anonymous)'}:${m.target}`),
      ['data:/data', '(anonymous):/cache'],
    );
    assert.throws(
      () => mergeMounts([parseBind('a:/x'), parseBind('b:/x')], []),
      /Duplicate mount point: \/x/,
    );
  });

  void it('reads -o size= as Docker does', () => {
    assert.equal(parseVolumeSize('10G'), 10240);
    assert.equal(parseVolumeSize('512m'), 512);
    assert.equal(parseVolumeSize('1GiB'), 1024);
    assert.throws(() => parseVolumeSize('1k'), /at least 16 MiB/);
    assert.throws(() => parseVolumeSize('big'), /invalid size/);
  });

  void it('lets only one running VM mount a volume unless all mount it read-only', () => {
    const mount = (name: string, readOnly: boolean) => ({ name, target: '/d', readOnly, anonymous: false });
    const running = [{ id: 'b', name: 'other', mounts: [mount('shared', false)] }];
    assert.throws(
      () => checkVolumeConflicts({ id: 'a', name: 'me', mounts: [mount('shared', true)] }, running),
      /volume shared is mounted by the running container other/,
    );
    const readers = [{ id: 'b', name: 'other', mounts: [mount('shared', true)] }];
    checkVolumeConflicts({ id: 'a', name: 'me', mounts: [mount('shared', true)] }, readers);
    checkVolumeConflicts({ id: 'a', name: 'me', mounts: [mount('mine', false)] }, running);
  });
});
