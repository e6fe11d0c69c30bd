import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { containerPath, escapesTarget } from '../../../agent/src/channel/archive.ts';

void describe('archive paths', () => {
  void it('a container path stays under the root, whatever its dots', () => {
    assert.equal(containerPath('/', '/etc/hostname'), '/etc/hostname');
    assert.equal(containerPath('/srv/root', '/etc'), '/srv/root/etc');
    assert.equal(containerPath('/srv/root', 'etc/../../..'), '/srv/root/');
    assert.equal(containerPath('/srv/root', '/../../etc/passwd'), '/srv/root/etc/passwd');
  });

  void it('tar entries that climb out of the target are named as escaping; others are not', () => {
    for (const name of ['..', '../x', 'a/../../x', '/../x', './../x', 'a/b/../../../x'])
      assert.equal(escapesTarget(name), true, name);
    for (const name of ['x', './x', 'a/../x', '/abs/x', 'a/b/../../x', '..x', 'a/..b'])
      assert.equal(escapesTarget(name), false, name);
  });
});
