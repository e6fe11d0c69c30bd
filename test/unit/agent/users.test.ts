import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isTetherError } from '../../../protocol/src/errors/errors.ts';
import { parseGroup, parsePasswd, resolveUser, type ResolvedUser } from '../../../agent/src/process/users.ts';

const etc = join(process.cwd(), 'test/fixtures/rootfs/etc');
const passwd = parsePasswd(readFileSync(join(etc, 'passwd'), 'utf8'));
const groups = parseGroup(readFileSync(join(etc, 'group'), 'utf8'));

void describe('parsePasswd / parseGroup', () => {
  void it('read the fixture files', () => {
    assert.deepEqual(passwd, [
      { name: 'root', uid: 0, gid: 0, home: '/root', shell: '/bin/sh' },
      { name: 'nobody', uid: 65534, gid: 65534, home: '/nonexistent', shell: '/usr/sbin/nologin' },
      { name: 'tester', uid: 1000, gid: 1000, home: '/home/tester', shell: '/bin/sh' },
    ]);
    assert.deepEqual(groups, [
      { name: 'root', gid: 0, members: [] },
      { name: 'wheel', gid: 10, members: ['tester'] },
      { name: 'audio', gid: 29, members: ['tester', 'root'] },
      { name: 'tester', gid: 1000, members: [] },
      { name: 'nogroup', gid: 65534, members: [] },
    ]);
  });

  void it('skip comments, blank and malformed lines; default an empty home to /', () => {
    const text = [
      '# comment',
      '',
      '  daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin  ',
      'broken:x:notanumber:1::/:/bin/sh',
      'short:x:5',
      ':x:7:7::/:/bin/sh',
      'nohome:x:8:8:::',
      'crlf:x:9:9::/crlf:/bin/sh\r',
    ].join('\n');
    assert.deepEqual(parsePasswd(text), [
      { name: 'daemon', uid: 1, gid: 1, home: '/usr/sbin', shell: '/usr/sbin/nologin' },
      { name: 'nohome', uid: 8, gid: 8, home: '/', shell: '' },
      { name: 'crlf', uid: 9, gid: 9, home: '/crlf', shell: '/bin/sh' },
    ]);
    assert.deepEqual(parseGroup('staff:x:50:a,,b,\nbad:x:x:\n#c:x:1:\nempty:x:51'), [
      { name: 'staff', gid: 50, members: ['a', 'b'] },
      { name: 'empty', gid: 51, members: [] },
    ]);
  });
});

void describe('resolveUser', () => {
  const cases: [spec: string, expected: ResolvedUser][] = [
    // By name: the primary group first, then every group listing the user.
    ['tester', { uid: 1000, gid: 1000, groups: [1000, 10, 29], home: '/home/tester', name: 'tester' }],
    ['root', { uid: 0, gid: 0, groups: [0, 29], home: '/root', name: 'root' }],
    // By uid: the passwd entry still supplies gid, groups and home.
    ['1000', { uid: 1000, gid: 1000, groups: [1000, 10, 29], home: '/home/tester', name: 'tester' }],
    ['0', { uid: 0, gid: 0, groups: [0, 29], home: '/root', name: 'root' }],
    // A uid with no entry is allowed, as in Docker: gid 0, home /.
    ['4242', { uid: 4242, gid: 0, groups: [0], home: '/' }],
    // An explicit group replaces the group list.
    ['tester:audio', { uid: 1000, gid: 29, groups: [29], home: '/home/tester', name: 'tester' }],
    ['tester:4000', { uid: 1000, gid: 4000, groups: [4000], home: '/home/tester', name: 'tester' }],
    ['1000:10', { uid: 1000, gid: 10, groups: [10], home: '/home/tester', name: 'tester' }],
    ['4242:4343', { uid: 4242, gid: 4343, groups: [4343], home: '/' }],
    ['4242:nogroup', { uid: 4242, gid: 65534, groups: [65534], home: '/' }],
    // An empty group part is the same as none.
    ['tester:', { uid: 1000, gid: 1000, groups: [1000, 10, 29], home: '/home/tester', name: 'tester' }],
    ['nobody', { uid: 65534, gid: 65534, groups: [65534], home: '/nonexistent', name: 'nobody' }],
  ];
  for (const [spec, expected] of cases) {
    void it(`resolves ${JSON.stringify(spec)}`, () => {
      assert.deepEqual(resolveUser(spec, passwd, groups), expected);
    });
  }

  void it('the primary gid is not listed twice when a group also names the user', () => {
    const ownGroup = parseGroup('tester:x:1000:tester\nwheel:x:10:tester');
    assert.deepEqual(resolveUser('tester', passwd, ownGroup).groups, [1000, 10]);
  });

  const unknown: [spec: string, message: RegExp][] = [
    ['nosuch', /unable to find user nosuch: no matching entries in passwd file/],
    ['nosuch:audio', /unable to find user nosuch/],
    ['tester:nosuchgroup', /unable to find group nosuchgroup: no matching entries in group file/],
    ['1000:nosuchgroup', /unable to find group nosuchgroup/],
    ['', /the user part is empty/],
    [':audio', /the user part is empty/],
  ];
  for (const [spec, message] of unknown) {
    void it(`refuses ${JSON.stringify(spec)} with TETHER_USER_UNKNOWN`, () => {
      assert.throws(
        () => resolveUser(spec, passwd, groups),
        (error) => isTetherError(error, 'TETHER_USER_UNKNOWN') && message.test((error as Error).message),
      );
    });
  }
});
