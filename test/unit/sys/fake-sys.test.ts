/** The recording fake behaves like the real facade: same error shape and messages, readable state. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SYS, SyscallError } from '../../../agent/src/sys/sys.ts';
import { FakeSys } from '../../helpers/fake-sys.ts';

void describe('FakeSys', () => {
  void it('records calls and keeps a mount table', () => {
    const sys = new FakeSys();
    sys.mount('proc', '/proc', 'proc', SYS.MS_NOSUID | SYS.MS_NODEV | SYS.MS_NOEXEC);
    sys.mount('/dev/vdb', '/newroot', 'ext4', 0, 'noload');
    sys.mount('/newroot', '/mnt/root', null, SYS.MS_MOVE);
    sys.umount2('/proc', SYS.MNT_DETACH);
    assert.deepEqual(sys.callNames(), ['mount', 'mount', 'mount', 'umount2']);
    assert.deepEqual(sys.mounts, [
      { source: '/dev/vdb', target: '/mnt/root', fstype: 'ext4', flags: 0, data: 'noload' },
    ]);
    assert.deepEqual(sys.callsOf('umount2'), [['/proc', SYS.MNT_DETACH]]);
  });

  void it('injected failures look like real ones', () => {
    const sys = new FakeSys().failNext('mount', 'EINVAL');
    assert.throws(
      () => sys.mount('/dev/vdb', '/newroot', 'ext4', 0),
      (error: unknown) =>
        error instanceof SyscallError &&
        error.code === 'TETHER_SYSCALL' &&
        error.errnoName === 'EINVAL' &&
        error.errno === 22 &&
        error.syscall === 'mount' &&
        error.message === 'mount /dev/vdb onto /newroot (ext4): EINVAL (fake)',
    );
    sys.mount('/dev/vdb', '/newroot', 'ext4', 0); // only the next one failed
    assert.equal(sys.mounts.length, 1);
  });

  void it('reports modules already loaded, hostname, network and poll results', async () => {
    const sys = new FakeSys();
    assert.equal(sys.finitModule('/lib/modules/virtio_blk.ko'), 'loaded');
    assert.equal(sys.finitModule('/lib/modules/virtio_blk.ko'), 'already-loaded');
    sys.sethostname('web-1');
    assert.equal(sys.hostname, 'web-1');
    sys.ifUp('eth0');
    sys.ifSetAddress('eth0', '10.0.2.15', 24);
    sys.addDefaultRoute('10.0.2.2');
    assert.deepEqual(
      sys.ifList().find((i) => i.name === 'eth0'),
      {
        name: 'eth0',
        index: 2,
        up: true,
        running: true,
        loopback: false,
        mtu: 1500,
        mac: '52:54:00:12:34:56',
        ipv4: '10.0.2.15',
        prefixLen: 24,
      },
    );
    assert.throws(
      () => sys.ifUp('eth9'),
      /^SyscallError|bring interface eth9 up: ioctl\(SIOCGIFFLAGS\): ENODEV/,
    );
    sys.pollResults.push(0, SYS.POLLHUP);
    assert.equal(await sys.poll(5, SYS.POLLIN, 100), 0);
    assert.equal(await sys.poll(5, SYS.POLLIN, 100), SYS.POLLHUP);
    assert.equal(await sys.poll(5, SYS.POLLIN, 100), SYS.POLLIN);
    sys.failNext('poll', 'EBADF');
    await assert.rejects(
      sys.poll(5, SYS.POLLIN, 100),
      /^Error|poll fd 5 for POLLIN \(timeout 100 ms\): EBADF \(fake\)/,
    );
  });

  void it('watches an fd: events reach the callback until close, failures carry the facade message', () => {
    const sys = new FakeSys();
    const heard: number[] = [];
    const watch = sys.watch(5, SYS.POLLIN | SYS.POLLOUT, (revents) => heard.push(revents));
    assert.equal(sys.emit(5, SYS.POLLIN), 1);
    assert.equal(sys.emit(6, SYS.POLLIN), 0, 'another fd has no watch');
    sys.emit(5, SYS.POLLIN | SYS.POLLHUP);
    watch.close();
    watch.close();
    assert.equal(sys.emit(5, SYS.POLLOUT), 0, 'a closed watch hears nothing');
    assert.deepEqual(heard, [SYS.POLLIN, SYS.POLLIN | SYS.POLLHUP]);
    assert.deepEqual(sys.callsOf('watch'), [[5, SYS.POLLIN | SYS.POLLOUT]]);
    sys.failNext('watch', 'EPERM');
    assert.throws(
      () => sys.watch(7, SYS.POLLIN, () => undefined),
      (error: unknown) =>
        error instanceof SyscallError &&
        error.errnoName === 'EPERM' &&
        error.message === 'watch fd 7 for POLLIN in the event loop: epoll_ctl: EPERM (fake)',
    );
  });

  void it('reaps scripted children', () => {
    const sys = new FakeSys();
    sys.exited.push({ pid: 7, exitCode: 0 }, { pid: 9, signal: 9 });
    assert.deepEqual(sys.waitpid(9, SYS.WNOHANG), { pid: 9, signal: 9 });
    assert.deepEqual(sys.waitpid(-1, SYS.WNOHANG), { pid: 7, exitCode: 0 });
    assert.equal(sys.waitpid(-1, SYS.WNOHANG), null);
    assert.throws(() => sys.waitpid(7), /waitpid pid 7: ECHILD/);
    const t0 = sys.bootTimeMs();
    assert.ok(sys.bootTimeMs() > t0);
  });
});
