/**
 * A recording fake of the agent's system calls for unit tests. It runs the real facade (createSys) over a fake
 * addon, so errors it raises have the same messages and fields as real ones. It keeps a little state where boot
 * code reads back what it wrote: the mount table, the hostname, interfaces and rlimits.
 *
 *   const sys = new FakeSys();
 *   sys.failNext('mount', 'EINVAL');           // the next mount throws SyscallError EINVAL
 *   sys.exited.push({ pid: 42, exitCode: 0 });  // what waitpid(-1) reports
 *   bootVm(sys); assert.deepEqual(sys.callNames(), ['mount', 'mount', ...]);
 *   sys.emit(fd, SYS.POLLIN);                   // what an open watch(fd) hears next, as the event loop would
 */
import { constants } from 'node:os';
import {
  createSys,
  SYS,
  type FdWatch,
  type ModuleLoad,
  type NetInterface,
  type RLimit,
  type Sys,
  type SysAddon,
  type WaitResult,
} from '../../agent/src/sys/sys.ts';

export type SysCallName = keyof Sys;

export interface RecordedCall {
  name: SysCallName;
  args: unknown[];
}

export interface FakeMount {
  source: string | null;
  target: string;
  fstype: string | null;
  flags: number;
  data: string | null;
}

/** A child that has exited, as a scripted waitpid reports it. */
export interface ExitedChild {
  pid: number;
  exitCode?: number;
  signal?: number;
}

const errnoNumbers = constants.errno as Record<string, number>;

function fakeErrnoError(syscall: string, errnoName: string): Error {
  const error = new Error(`${syscall}: ${errnoName} (fake)`) as Error & {
    errno: number;
    code: string;
    syscall: string;
  };
  error.errno = errnoNumbers[errnoName] ?? 0;
  error.code = errnoName;
  error.syscall = syscall;
  return error;
}

const SYSCALL_OF: Record<SysCallName, string> = {
  mount: 'mount',
  umount2: 'umount2',
  pivotRoot: 'pivot_root',
  chroot: 'chroot',
  sethostname: 'sethostname',
  reboot: 'reboot',
  sync: 'sync',
  finitModule: 'finit_module',
  setSubreaper: 'prctl',
  waitpid: 'waitpid',
  bootTimeMs: 'clock_gettime',
  setrlimit: 'setrlimit',
  getrlimit: 'getrlimit',
  ifUp: 'ioctl(SIOCSIFFLAGS)',
  ifSetAddress: 'ioctl(SIOCSIFADDR)',
  addDefaultRoute: 'ioctl(SIOCADDRT)',
  ifList: 'if_nameindex',
  poll: 'poll',
  watch: 'epoll_ctl',
};

/** A watch the fake holds: `emit` (or FakeSys.emit) stands in for the kernel reporting a change. */
export interface FakeWatch {
  readonly fd: number;
  readonly events: number;
  closed: boolean;
  emit(revents: number): void;
}

export class FakeSys implements Sys {
  readonly calls: RecordedCall[] = [];
  readonly mounts: FakeMount[] = [];
  hostname = '';
  subreaper = false;
  root = '/';
  /** Set by reboot(); the fake does not throw, so code after reboot() runs in tests (it never does for real). */
  rebootedWith: number | undefined;
  /** Module paths that were loaded; loading one again reports 'already-loaded'. */
  readonly modules = new Set<string>();
  readonly rlimits = new Map<number, RLimit>();
  interfaces: NetInterface[] = [
    { name: 'lo', index: 1, up: false, running: false, loopback: true, mtu: 65536 },
    {
      name: 'eth0',
      index: 2,
      up: false,
      running: false,
      loopback: false,
      mtu: 1500,
      mac: '52:54:00:12:34:56',
    },
  ];
  readonly routes: { gateway: string; ifname?: string }[] = [];
  /** Exited children, oldest first: waitpid(pid or -1) reaps them. */
  readonly exited: ExitedChild[] = [];
  /** poll results in order; when empty, poll resolves to `defaultRevents`. */
  readonly pollResults: number[] = [];
  defaultRevents = SYS.POLLIN;
  /** Every watch() made, open or closed, oldest first. */
  readonly watches: FakeWatch[] = [];
  /** The fake CLOCK_BOOTTIME; each read advances it by `clockStepMs`. */
  clockMs = 1000;
  clockStepMs = 1;

  private readonly failures = new Map<SysCallName, string[]>();
  private readonly facade: Sys;

  constructor() {
    this.facade = createSys(this.addon());
  }

  /** The next `times` calls of `name` throw `errnoName` (e.g. 'EINVAL'). */
  failNext(name: SysCallName, errnoName: string, times = 1): this {
    const queue = this.failures.get(name) ?? [];
    for (let i = 0; i < times; i++) queue.push(errnoName);
    this.failures.set(name, queue);
    return this;
  }

  callNames(): SysCallName[] {
    return this.calls.map((c) => c.name);
  }

  callsOf(name: SysCallName): unknown[][] {
    return this.calls.filter((c) => c.name === name).map((c) => c.args);
  }

  mount(
    source: string | null,
    target: string,
    fstype: string | null,
    flags: number,
    data?: string | null,
  ): void {
    this.facade.mount(source, target, fstype, flags, data);
  }
  umount2(target: string, flags?: number): void {
    this.facade.umount2(target, flags);
  }
  pivotRoot(newRoot: string, putOld: string): void {
    this.facade.pivotRoot(newRoot, putOld);
  }
  chroot(path: string): void {
    this.facade.chroot(path);
  }
  sethostname(name: string): void {
    this.facade.sethostname(name);
  }
  reboot(cmd: number): void {
    this.facade.reboot(cmd);
  }
  sync(): void {
    this.facade.sync();
  }
  finitModule(path: string, params?: string): ModuleLoad {
    return this.facade.finitModule(path, params);
  }
  setSubreaper(): void {
    this.facade.setSubreaper();
  }
  waitpid(pid: number, options?: number): WaitResult | null {
    return this.facade.waitpid(pid, options);
  }
  bootTimeMs(): number {
    return this.facade.bootTimeMs();
  }
  setrlimit(resource: number, soft: number, hard: number): void {
    this.facade.setrlimit(resource, soft, hard);
  }
  getrlimit(resource: number): RLimit {
    return this.facade.getrlimit(resource);
  }
  ifUp(name: string): void {
    this.facade.ifUp(name);
  }
  ifSetAddress(name: string, ipv4: string, prefixLen: number): void {
    this.facade.ifSetAddress(name, ipv4, prefixLen);
  }
  addDefaultRoute(gateway: string, ifname?: string): void {
    this.facade.addDefaultRoute(gateway, ifname);
  }
  ifList(): NetInterface[] {
    return this.facade.ifList();
  }
  poll(fd: number, events: number, timeoutMs: number): Promise<number> {
    return this.facade.poll(fd, events, timeoutMs);
  }
  watch(fd: number, events: number, onEvents: (revents: number) => void): FdWatch {
    return this.facade.watch(fd, events, onEvents);
  }

  /** Reports `revents` to the open watches of `fd` (synchronously); returns how many heard it. */
  emit(fd: number, revents: number): number {
    const open = this.watches.filter((w) => w.fd === fd && !w.closed);
    for (const w of open) w.emit(revents);
    return open.length;
  }

  /** Records the call and throws an injected failure, if one is queued. */
  private enter(name: SysCallName, args: unknown[]): void {
    this.calls.push({ name, args });
    const failure = this.failures.get(name)?.shift();
    if (failure !== undefined) throw fakeErrnoError(SYSCALL_OF[name], failure);
  }

  private iface(name: string, syscall: string): NetInterface {
    const found = this.interfaces.find((i) => i.name === name);
    if (found === undefined) throw fakeErrnoError(syscall, 'ENODEV');
    return found;
  }

  private addon(): SysAddon {
    return {
      mount: (source, target, fstype, flags, data) => {
        this.enter('mount', [source, target, fstype, flags, data]);
        if (flags & SYS.MS_MOVE) {
          const moved = this.mounts.find((m) => m.target === source);
          if (moved === undefined) throw fakeErrnoError('mount', 'EINVAL');
          moved.target = target;
        } else {
          this.mounts.push({ source, target, fstype, flags, data });
        }
      },
      umount2: (target, flags) => {
        this.enter('umount2', [target, flags]);
        const at = this.mounts.findLastIndex((m) => m.target === target);
        if (at < 0) throw fakeErrnoError('umount2', 'EINVAL');
        this.mounts.splice(at, 1);
      },
      pivotRoot: (newRoot, putOld) => {
        this.enter('pivotRoot', [newRoot, putOld]);
        this.root = newRoot;
      },
      chroot: (path) => {
        this.enter('chroot', [path]);
        this.root = path;
      },
      sethostname: (name) => {
        this.enter('sethostname', [name]);
        if (Buffer.byteLength(name) > 64) throw fakeErrnoError('sethostname', 'EINVAL');
        this.hostname = name;
      },
      reboot: (cmd) => {
        this.enter('reboot', [cmd]);
        this.rebootedWith = cmd;
      },
      sync: () => this.enter('sync', []),
      finitModule: (path, params) => {
        this.enter('finitModule', [path, params]);
        if (this.modules.has(path)) return errnoNumbers['EEXIST'] ?? 17;
        this.modules.add(path);
        return 0;
      },
      setSubreaper: () => {
        this.enter('setSubreaper', []);
        this.subreaper = true;
      },
      waitpid: (pid, options) => {
        this.enter('waitpid', [pid, options]);
        const at = this.exited.findIndex((c) => pid === -1 || c.pid === pid);
        if (at < 0) {
          if (options & SYS.WNOHANG) return null;
          throw fakeErrnoError('waitpid', 'ECHILD');
        }
        const [child] = this.exited.splice(at, 1);
        return child === undefined ? null : { ...child };
      },
      bootTimeMs: () => {
        this.enter('bootTimeMs', []);
        const now = this.clockMs;
        this.clockMs += this.clockStepMs;
        return now;
      },
      setrlimit: (resource, soft, hard) => {
        this.enter('setrlimit', [resource, soft, hard]);
        const norm = (v: number): number => (v < 0 ? Infinity : v);
        if (norm(soft) > norm(hard)) throw fakeErrnoError('setrlimit', 'EINVAL');
        this.rlimits.set(resource, { soft: norm(soft), hard: norm(hard) });
      },
      getrlimit: (resource) => {
        this.enter('getrlimit', [resource]);
        return { ...(this.rlimits.get(resource) ?? { soft: Infinity, hard: Infinity }) };
      },
      ifUp: (name) => {
        this.enter('ifUp', [name]);
        const iface = this.iface(name, 'ioctl(SIOCGIFFLAGS)');
        iface.up = true;
        iface.running = true;
      },
      ifSetAddress: (name, ipv4, prefixLen) => {
        this.enter('ifSetAddress', [name, ipv4, prefixLen]);
        const iface = this.iface(name, 'ioctl(SIOCSIFADDR)');
        iface.ipv4 = ipv4;
        iface.prefixLen = prefixLen;
      },
      addDefaultRoute: (gateway, ifname) => {
        this.enter('addDefaultRoute', [gateway, ifname]);
        if (this.routes.length > 0) throw fakeErrnoError('ioctl(SIOCADDRT)', 'EEXIST');
        this.routes.push(ifname === null ? { gateway } : { gateway, ifname });
      },
      ifList: () => {
        this.enter('ifList', []);
        return this.interfaces.map((i) => ({ ...i }));
      },
      poll: (fd, events, timeoutMs) => {
        try {
          this.enter('poll', [fd, events, timeoutMs]);
        } catch (error) {
          return Promise.reject(error);
        }
        return Promise.resolve(this.pollResults.shift() ?? this.defaultRevents);
      },
      watch: (fd, events, onEvents) => {
        this.enter('watch', [fd, events]);
        if (fd < 0) throw new TypeError('fd must be a non-negative integer');
        const watch: FakeWatch = {
          fd,
          events,
          closed: false,
          emit: (revents) => {
            if (!watch.closed) onEvents(revents);
          },
        };
        this.watches.push(watch);
        return {
          close: () => {
            watch.closed = true;
          },
        };
      },
    };
  }
}
