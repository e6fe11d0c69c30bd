/**
 * The container's walls as the agent sets them up: the exec helper's options for each kind of session, the
 * cgroup and its limits through a recording fake of the cgroup files, and OOM kills counted from
 * memory.events. The helper itself (namespaces, mounts, capabilities) is exercised for real in
 * test/integration/exec-helper.test.ts and in a VM by test/e2e/isolation.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  AGENT_RESERVE_BYTES,
  ContainerCgroup,
  DEFAULT_PIDS_LIMIT,
  MIN_CONTAINER_MEMORY_BYTES,
  containerLimits,
  memTotalBytes,
  oomKillCount,
  type CgroupFiles,
} from '../../../agent/src/container/cgroup.ts';
import { isolationArgs, isRelayed } from '../../../agent/src/container/isolation.ts';
import { OomWatch } from '../../../agent/src/container/oom-watch.ts';
import { helperArgs } from '../../../agent/src/process/session.ts';

const MIB = 1024 * 1024;

/** Cgroup files in memory, recording every call in order; `refuse` makes writes to a path fail. */
class RecordingCgroupFiles implements CgroupFiles {
  readonly calls: string[] = [];
  readonly contents = new Map<string, string>();
  refuse = new Set<string>();

  mkdir(path: string): void {
    this.calls.push(`mkdir ${path}`);
  }
  write(path: string, text: string): void {
    this.calls.push(`write ${path} ${text}`);
    if (this.refuse.has(path))
      throw Object.assign(new Error(`EINVAL: invalid argument, write '${path}'`), { code: 'EINVAL' });
    this.contents.set(path, text);
  }
  read(path: string): string {
    const text = this.contents.get(path);
    if (text === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    return text;
  }
}

void describe('isolationArgs', () => {
  void it('makes the container for the main process, under the init unless asked otherwise', () => {
    assert.deepEqual(
      isolationArgs(
        { kind: 'new', init: true, cgroup: '/sys/fs/cgroup/container', masks: ['/proc/cmdline'] },
        true,
      ),
      [
        '--new-container',
        '--init',
        '--cgroup',
        '/sys/fs/cgroup/container',
        '--mask',
        '/proc/cmdline',
        '--tty',
      ],
    );
    assert.deepEqual(isolationArgs({ kind: 'new', init: false }, false), ['--new-container']);
  });

  void it('joins the container by its main helper for exec sessions', () => {
    assert.deepEqual(isolationArgs({ kind: 'join', pid: 93, cgroup: '/sys/fs/cgroup/container' }, false), [
      '--join',
      '93',
      '--cgroup',
      '/sys/fs/cgroup/container',
    ]);
  });

  void it('in --dev mode gives the init alone, or nothing at all (the helper then just execs)', () => {
    assert.deepEqual(isolationArgs({ kind: 'none', init: true }, true), ['--init', '--tty']);
    assert.deepEqual(isolationArgs({ kind: 'none', init: false }, true), []);
    assert.deepEqual(isolationArgs(undefined, true), []);
    assert.equal(isRelayed({ kind: 'none', init: false }), false);
    assert.equal(isRelayed({ kind: 'none', init: true }), true);
    assert.equal(isRelayed({ kind: 'join', pid: 5 }), true);
  });

  void it('puts the isolation before identity and cwd, and the command after --', () => {
    const args = helperArgs({
      argv: ['sh', '-c', 'id'],
      env: [],
      stdin: false,
      cwd: '/work',
      user: { uid: 1000, gid: 100, groups: [100, 27], home: '/home/u', name: 'u' } as never,
      isolation: { kind: 'join', pid: 7 },
    });
    assert.deepEqual(args, [
      '--join',
      '7',
      '--groups',
      '100,27',
      '--gid',
      '100',
      '--uid',
      '1000',
      '--cwd',
      '/work',
      '--',
      'sh',
      '-c',
      'id',
    ]);
  });
});

void describe('container limits', () => {
  void it('leaves the agent its reserve, and never less than the minimum to the container', () => {
    assert.deepEqual(containerLimits(219 * MIB), {
      memoryBytes: 219 * MIB - AGENT_RESERVE_BYTES,
      pids: DEFAULT_PIDS_LIMIT,
    });
    assert.equal(containerLimits(100 * MIB).memoryBytes, MIN_CONTAINER_MEMORY_BYTES);
  });

  void it('takes what the host asked for, within what fits, in whole pages', () => {
    assert.deepEqual(containerLimits(1024 * MIB, { memoryBytes: 64 * MIB + 1, pids: 50 }), {
      memoryBytes: 64 * MIB,
      pids: 50,
    });
    assert.equal(
      containerLimits(219 * MIB, { memoryBytes: 4096 * MIB }).memoryBytes,
      219 * MIB - AGENT_RESERVE_BYTES,
    );
  });

  void it('reads MemTotal and the oom_kill count', () => {
    assert.equal(memTotalBytes('MemTotal:         224616 kB\nMemFree:  1 kB\n'), 224616 * 1024);
    assert.throws(() => memTotalBytes('MemFree: 1 kB\n'), /no MemTotal/);
    assert.equal(oomKillCount('low 0\nhigh 0\nmax 4\noom 2\noom_kill 3\noom_group_kill 0\n'), 3);
    assert.equal(oomKillCount(''), 0);
  });
});

void describe('ContainerCgroup', () => {
  void it('enables the controllers, makes the cgroup and writes its limits, in that order', () => {
    const files = new RecordingCgroupFiles();
    const cgroup = ContainerCgroup.create({ memoryBytes: 123 * MIB, pids: 1024 }, files, '/cg');
    assert.equal(cgroup.path, '/cg/container');
    assert.deepEqual(files.calls, [
      'write /cg/cgroup.subtree_control +memory +pids',
      'mkdir /cg/container',
      `write /cg/container/memory.max ${123 * MIB}`,
      'write /cg/container/memory.swap.max 0',
      'write /cg/container/pids.max 1024',
    ]);
  });

  void it('names the file that refused', () => {
    const files = new RecordingCgroupFiles();
    files.refuse.add('/cg/container/pids.max');
    assert.throws(
      () => ContainerCgroup.create({ memoryBytes: MIB, pids: 5 }, files, '/cg'),
      (error: Error & { code?: string }) =>
        error.code === 'TETHER_SYSCALL' &&
        /cannot write "5" to \/cg\/container\/pids\.max: EINVAL/.test(error.message),
    );
  });

  void it('counts OOM kills, and the watch reports only new ones', () => {
    const files = new RecordingCgroupFiles();
    const cgroup = ContainerCgroup.create({ memoryBytes: MIB, pids: 5 }, files, '/cg');
    assert.equal(cgroup.oomKills(), 0, 'no memory.events yet: none');
    files.contents.set('/cg/container/memory.events', 'oom 1\noom_kill 1\n');
    const reports: [number, number][] = [];
    const watch = new OomWatch(cgroup, (fresh, total) => reports.push([fresh, total]));
    assert.equal(watch.check(), 1);
    assert.deepEqual(reports, [], 'kills from before the watch are not news');
    files.contents.set('/cg/container/memory.events', 'oom 3\noom_kill 3\n');
    watch.check();
    watch.check();
    assert.deepEqual(reports, [[2, 3]]);
  });
});
