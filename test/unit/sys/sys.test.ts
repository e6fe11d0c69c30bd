/**
 * The real sys.node on the host: what can be checked unprivileged, plus (as root) mounts, hostname and
 * interfaces inside throwaway namespaces (ns-child.ts). Needs build/native/sys.node (make native).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  closeSync,
  constants as fsConstants,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadNative } from '../../../agent/src/sys/native.ts';
import { isErrno, realSys, SYS, SyscallError, type Sys } from '../../../agent/src/sys/sys.ts';

const isRoot = process.getuid?.() === 0;

function thrown(fn: () => unknown): SyscallError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof SyscallError, `expected a SyscallError, got ${String(error)}`);
    assert.equal(error.code, 'TETHER_SYSCALL');
    return error;
  }
  assert.fail('expected the call to throw');
}

void describe('sys.node on the host', () => {
  let sys: Sys;
  void before(() => {
    sys = realSys();
  });

  void it('loads once and exports the same constants as the TypeScript table', () => {
    const addon = loadNative('sys') as Record<string, unknown>;
    assert.equal(loadNative('sys'), addon);
    for (const [name, value] of Object.entries(SYS)) {
      const native = addon[name] as number;
      // RB_HALT_SYSTEM does not fit in an int32: the addon exports the C int, i.e. the same bits signed.
      assert.equal(native >>> 0, value >>> 0, name);
    }
  });

  void it('bootTimeMs increases and agrees with /proc/uptime', async () => {
    const first = sys.bootTimeMs();
    await sleep(20);
    const second = sys.bootTimeMs();
    assert.ok(second - first >= 15, `${first} then ${second}`);
    const uptimeMs = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1000;
    assert.ok(Math.abs(uptimeMs - second) < 2000, `uptime ${uptimeMs} vs boottime ${second}`);
  });

  void describe('reaping children node does not own', () => {
    void before(() => sys.setSubreaper());

    async function orphan(script: string, signal?: NodeJS.Signals): Promise<number> {
      // The shell backgrounds a grandchild and exits; as a subreaper we inherit the grandchild, which libuv
      // knows nothing about, exactly like an orphan under PID 1.
      const pid = Number(
        execFileSync('/bin/sh', ['-c', `(${script}) >/dev/null 2>&1 & echo $!`], { encoding: 'utf8' }),
      );
      assert.ok(pid > 0);
      if (signal !== undefined) {
        await sleep(30); // the middle shell is gone, so the orphan is ours
        process.kill(pid, signal);
      }
      return pid;
    }

    /** Reaps the orphan once it has exited (WNOHANG until it shows up). */
    async function reap(pid: number): Promise<unknown> {
      for (let i = 0; i < 200; i++) {
        const result = sys.waitpid(pid, SYS.WNOHANG);
        if (result) return result;
        await sleep(10);
      }
      assert.fail(`orphan ${pid} never exited`);
    }

    void it('waitpid reaps an exited orphan, and then it is gone (ECHILD)', async () => {
      const pid = await orphan('sleep 0.05; exit 7');
      assert.deepEqual(await reap(pid), { pid, exitCode: 7 });
      const error = thrown(() => sys.waitpid(pid, SYS.WNOHANG));
      assert.equal(error.errnoName, 'ECHILD');
      assert.equal(error.errno, 10);
      assert.equal(error.syscall, 'waitpid');
      assert.match(
        error.message,
        new RegExp(`^waitpid pid ${pid} \\(WNOHANG\\): ECHILD \\(No child processes\\)$`),
      );
    });

    void it('reports death by signal', async () => {
      const pid = await orphan('exec sleep 10', 'SIGKILL');
      assert.deepEqual(await reap(pid), { pid, signal: 9, coreDumped: false });
    });

    void it('waitpid with WNOHANG gives null while the child runs', async () => {
      const pid = Number(
        execFileSync('/bin/sh', ['-c', '(sleep 0.3) >/dev/null 2>&1 & echo $!'], { encoding: 'utf8' }),
      );
      await sleep(50); // let the middle shell exit so the orphan is ours
      assert.equal(sys.waitpid(pid, SYS.WNOHANG), null);
      assert.deepEqual(sys.waitpid(pid, 0), { pid, exitCode: 0 });
    });
  });

  void describe('poll', () => {
    let dir: string;
    void before(() => {
      dir = mkdtempSync(path.join(tmpdir(), 'tether-poll-'));
      execFileSync('mkfifo', [path.join(dir, 'fifo')]);
    });
    void after(() => rmSync(dir, { recursive: true, force: true }));

    void it('times out with 0, then reports POLLIN, without blocking the event loop', async () => {
      const fd = openSync(path.join(dir, 'fifo'), fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
      try {
        assert.equal(await sys.poll(fd, SYS.POLLIN, 30), 0);
        const started = Date.now();
        const timer = setTimeout(() => writeSync(fd, 'x'), 30);
        const revents = await sys.poll(fd, SYS.POLLIN, 5000);
        clearTimeout(timer);
        assert.equal(revents & SYS.POLLIN, SYS.POLLIN);
        assert.ok(Date.now() - started < 2000, 'the timer ran while poll waited');
      } finally {
        closeSync(fd);
      }
    });

    void it('reports POLLHUP when the writer goes away, as a virtio-serial port does without a host', async () => {
      const reader = openSync(path.join(dir, 'fifo'), fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
      const writer = openSync(path.join(dir, 'fifo'), fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
      closeSync(writer);
      try {
        const revents = await sys.poll(reader, SYS.POLLIN, 1000);
        assert.equal(revents & SYS.POLLHUP, SYS.POLLHUP);
      } finally {
        closeSync(reader);
      }
    });

    void it('reports an invalid fd as POLLNVAL', async () => {
      const fd = openSync('/dev/null', 'r');
      closeSync(fd);
      assert.equal(await sys.poll(fd, SYS.POLLIN, 10), SYS.POLLNVAL);
    });

    void it('rejects bad arguments with a TypeError', async () => {
      await assert.rejects(sys.poll(-1, SYS.POLLIN, 10), TypeError);
    });
  });

  void describe('watch', () => {
    let dir: string;
    void before(() => {
      dir = mkdtempSync(path.join(tmpdir(), 'tether-watch-'));
      execFileSync('mkfifo', [path.join(dir, 'fifo')]);
    });
    void after(() => rmSync(dir, { recursive: true, force: true }));

    /** Resolves with the revents of the next callback (or 'none' after `ms`). */
    function next(events: number[], ms: number): Promise<number | 'none'> {
      const seen = events.length;
      return new Promise((resolve) => {
        const started = Date.now();
        const check = (): void => {
          if (events.length > seen) resolve(events[seen]!);
          else if (Date.now() - started > ms) resolve('none');
          else setImmediate(check);
        };
        check();
      });
    }

    void it('reports a byte in the loop turn it arrives in, edge-triggered, holding no pool thread', async () => {
      const fd = openSync(path.join(dir, 'fifo'), fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
      const events: number[] = [];
      const watch = sys.watch(fd, SYS.POLLIN, (revents) => events.push(revents));
      try {
        assert.equal(await next(events, 50), 'none', 'nothing to read yet');
        writeSync(fd, 'x');
        const started = performance.now();
        assert.equal(await next(events, 1000), SYS.POLLIN);
        assert.ok(performance.now() - started < 100, 'heard within the loop turn, not a poll slice');
        assert.equal(await next(events, 50), 'none', 'edge-triggered: the unread byte is not reported again');
        writeSync(fd, 'y');
        assert.equal(await next(events, 1000), SYS.POLLIN, 'a new byte is a new edge');
        assert.equal(readSync(fd, Buffer.alloc(8)), 2);
      } finally {
        watch.close();
        closeSync(fd);
      }
    });

    void it('reports a hang-up once, not on every loop turn', async () => {
      const reader = openSync(path.join(dir, 'fifo'), fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
      const writer = openSync(path.join(dir, 'fifo'), fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
      const events: number[] = [];
      const watch = sys.watch(reader, SYS.POLLIN, (revents) => events.push(revents));
      try {
        closeSync(writer);
        const revents = await next(events, 1000);
        assert.equal(typeof revents === 'number' && revents & SYS.POLLHUP, SYS.POLLHUP);
        await sleep(100);
        assert.equal(events.length, 1, `one event for one hang-up, got ${events.join(', ')}`);
      } finally {
        watch.close();
        closeSync(reader);
      }
    });

    void it('runs no callback after close, and an open watch keeps no thread busy', async () => {
      const fd = openSync(path.join(dir, 'fifo'), fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
      const events: number[] = [];
      // More watches than libuv has pool threads (4): poll() would starve the pool, watch() uses none.
      const watches = Array.from({ length: 8 }, () => sys.watch(fd, SYS.POLLIN, (r) => events.push(r)));
      try {
        const pooled = await sys.poll(fd, SYS.POLLIN, 10);
        assert.equal(pooled, 0, 'a pool thread was free for poll()');
        for (const w of watches) w.close();
        writeSync(fd, 'z');
        assert.equal(await next(events, 100), 'none');
        readSync(fd, Buffer.alloc(8));
      } finally {
        for (const w of watches) w.close();
        closeSync(fd);
      }
    });

    void it('rejects bad arguments with a TypeError, and an fd epoll cannot watch with the facade message', () => {
      assert.throws(() => sys.watch(-1, SYS.POLLIN, () => undefined), TypeError);
      assert.throws(() => sys.watch(0, SYS.POLLHUP, () => undefined), TypeError);
      assert.throws(() => sys.watch(0, SYS.POLLIN, 5 as unknown as () => void), TypeError);
      const file = path.join(dir, 'regular');
      writeFileSync(file, 'x');
      const fd = openSync(file, 'r');
      try {
        assert.throws(
          () => sys.watch(fd, SYS.POLLIN, () => undefined),
          (error: unknown) =>
            error instanceof SyscallError &&
            error.errnoName === 'EPERM' &&
            error.message.startsWith(`watch fd ${fd} for POLLIN in the event loop: `),
        );
      } finally {
        closeSync(fd);
      }
    });
  });

  void it('rlimits round-trip, and failures name the resource and values', () => {
    const original = sys.getrlimit(SYS.RLIMIT_NOFILE);
    try {
      sys.setrlimit(SYS.RLIMIT_NOFILE, 512, original.hard);
      assert.deepEqual(sys.getrlimit(SYS.RLIMIT_NOFILE), { soft: 512, hard: original.hard });
      const error = thrown(() => sys.setrlimit(SYS.RLIMIT_NOFILE, original.hard + 1, original.hard));
      assert.equal(error.errnoName, 'EINVAL');
      assert.equal(
        error.message,
        `setrlimit RLIMIT_NOFILE soft ${original.hard + 1} hard ${original.hard}: EINVAL (Invalid argument)`,
      );
    } finally {
      sys.setrlimit(SYS.RLIMIT_NOFILE, original.soft, original.hard);
    }
    assert.equal(sys.getrlimit(SYS.RLIMIT_CORE).hard >= 0, true);
  });

  void it('errors name their arguments and carry errno', () => {
    const mount = thrown(() =>
      sys.mount('/dev/nonexistent', '/nonexistent/newroot', 'ext4', SYS.MS_RDONLY, 'noload'),
    );
    assert.ok(['ENOENT', 'EPERM'].includes(mount.errnoName), mount.errnoName);
    assert.equal(mount.syscall, 'mount');
    assert.equal(typeof mount.errno, 'number');
    assert.match(
      mount.message,
      /^mount \/dev\/nonexistent onto \/nonexistent\/newroot \(ext4, MS_RDONLY, "noload"\): E[A-Z]+ \(.+\)$/,
    );

    const chroot = thrown(() => sys.chroot('/nonexistent/root'));
    assert.match(chroot.message, /^chroot \/nonexistent\/root: E(NOENT|PERM) /);

    const umount = thrown(() => sys.umount2('/nonexistent/mnt', SYS.MNT_DETACH));
    assert.match(umount.message, /^umount2 \/nonexistent\/mnt \(MNT_DETACH\): E(NOENT|PERM) /);

    const missing = thrown(() => sys.finitModule('/nonexistent/virtio_blk.ko'));
    assert.equal(missing.syscall, 'open');
    assert.equal(
      missing.message,
      'finit_module /nonexistent/virtio_blk.ko: open: ENOENT (No such file or directory)',
    );

    assert.ok(isErrno(missing, 'ENOENT'));
    assert.ok(!isErrno(missing, 'EEXIST'));
  });

  void it('finitModule reaches the kernel (ENOSYS in this sandbox, which filters finit_module)', () => {
    const error = thrown(() => sys.finitModule('/etc/hostname', 'debug=1'));
    assert.equal(error.syscall, 'finit_module');
    // ENOSYS here (seccomp); on a real kernel a non-module gives ENOEXEC, and unprivileged EPERM.
    assert.ok(['ENOSYS', 'ENOEXEC', 'EPERM', 'EINVAL'].includes(error.errnoName), error.errnoName);
    assert.match(error.message, /^finit_module \/etc\/hostname \(params "debug=1"\): E[A-Z]+ \(.+\)$/);
  });

  void it('ifList reports the loopback interface', () => {
    const lo = sys.ifList().find((i) => i.name === 'lo');
    assert.ok(lo);
    assert.equal(lo.loopback, true);
    assert.equal(typeof lo.index, 'number');
  });

  void it('bad argument types throw TypeErrors, not syscall errors', () => {
    assert.throws(() => sys.mount(null, 42 as unknown as string, null, 0), TypeError);
    assert.throws(() => sys.ifSetAddress('lo', 'not-an-ip', 8), /ipv4 must be a dotted IPv4 address/);
    assert.throws(() => sys.ifSetAddress('lo', '127.0.0.1', 33), /prefixLen must be 0 to 32/);
    assert.throws(() => sys.chroot('/a\0b'), /path must not contain NUL bytes/);
    assert.throws(() => sys.ifUp('x'.repeat(16)), /name must be an interface name/);
  });

  void it(
    'as root, in throwaway uts/mount/net namespaces: hostname, mounts, interfaces',
    { skip: !isRoot && 'needs root' },
    () => {
      const child = spawnSync(
        'unshare',
        [
          '-u',
          '-m',
          '-n',
          '--propagation',
          'private',
          process.execPath,
          '--import',
          'tsx',
          path.join(import.meta.dirname, 'ns-child.ts'),
        ],
        { encoding: 'utf8', cwd: process.cwd(), timeout: 20_000 },
      );
      assert.equal(child.status, 0, child.stderr);
      const seen = JSON.parse(child.stdout) as Record<
        string,
        { errnoName: string; message: string } | unknown
      >;
      assert.equal(seen['hostname'], 'tether-test-host');
      assert.deepEqual(seen['hostnameTooLong'], {
        errnoName: 'EINVAL',
        message: `sethostname "${'x'.repeat(100)}": EINVAL (Invalid argument)`,
      });
      assert.equal(seen['bindSees'], 'hello');
      assert.equal(seen['mountinfoHasTmpfs'], true);
      assert.equal(seen['afterUmount'], false);
      assert.match(
        (seen['badFstype'] as { message: string }).message,
        /^mount none onto \/.+\/a \(no-such-fs\): ENODEV \(No such device\)$/,
      );
      assert.match(
        (seen['umountNotMounted'] as { message: string }).message,
        /^umount2 \/.+\/a: EINVAL \(Invalid argument\)$/,
      );
      assert.match(
        (seen['pivotNotMount'] as { message: string }).message,
        /^pivot_root new root \/.+\/a, old root to \/.+\/a\/old: E[A-Z]+ /,
      );
      assert.deepEqual(seen['lo'], {
        name: 'lo',
        index: 1,
        up: true,
        running: true,
        loopback: true,
        mtu: 65536,
        ipv4: '127.0.0.1',
        prefixLen: 8,
      });
      assert.match(
        (seen['noSuchIf'] as { message: string }).message,
        /^bring interface nosuch0 up: ioctl\(SIOCGIFFLAGS\): ENODEV \(No such device\)$/,
      );
      assert.match(
        (seen['routeUnreachable'] as { message: string }).message,
        /^add default route via 10\.9\.8\.7: ioctl\(SIOCADDRT\): ENETUNREACH /,
      );
    },
  );
});
