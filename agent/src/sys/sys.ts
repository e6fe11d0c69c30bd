/**
 * The agent's system calls, typed: a facade over `native/sys.c` (see loadNative) whose errors name their
 * arguments, e.g. `mount /dev/vdb onto /newroot (ext4): EINVAL (Invalid argument)`. Boot code takes a `Sys`, so
 * unit tests pass the recording fake in test/helpers/fake-sys.ts instead.
 */
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import { loadNative } from './native.ts';

/** Linux (x86_64/arm64 generic ABI) values, the same as the addon exports; a unit test checks they agree. */
export const SYS = {
  MS_RDONLY: 0x1,
  MS_NOSUID: 0x2,
  MS_NODEV: 0x4,
  MS_NOEXEC: 0x8,
  MS_SYNCHRONOUS: 0x10,
  MS_REMOUNT: 0x20,
  MS_NOATIME: 0x400,
  MS_NODIRATIME: 0x800,
  MS_BIND: 0x1000,
  MS_MOVE: 0x2000,
  MS_REC: 0x4000,
  MS_SILENT: 0x8000,
  MS_UNBINDABLE: 0x20000,
  MS_PRIVATE: 0x40000,
  MS_SLAVE: 0x80000,
  MS_SHARED: 0x100000,
  MS_RELATIME: 0x200000,
  MS_STRICTATIME: 0x1000000,
  MNT_FORCE: 0x1,
  MNT_DETACH: 0x2,
  MNT_EXPIRE: 0x4,
  UMOUNT_NOFOLLOW: 0x8,
  RB_AUTOBOOT: 0x01234567,
  RB_HALT_SYSTEM: 0xcdef0123,
  RB_POWER_OFF: 0x4321fedc,
  WNOHANG: 0x1,
  WUNTRACED: 0x2,
  WCONTINUED: 0x8,
  WALL: 0x40000000,
  POLLIN: 0x1,
  POLLPRI: 0x2,
  POLLOUT: 0x4,
  POLLERR: 0x8,
  POLLHUP: 0x10,
  POLLNVAL: 0x20,
  POLLRDHUP: 0x2000,
  RLIMIT_CPU: 0,
  RLIMIT_FSIZE: 1,
  RLIMIT_DATA: 2,
  RLIMIT_STACK: 3,
  RLIMIT_CORE: 4,
  RLIMIT_RSS: 5,
  RLIMIT_NPROC: 6,
  RLIMIT_NOFILE: 7,
  RLIMIT_MEMLOCK: 8,
  RLIMIT_AS: 9,
  RLIMIT_LOCKS: 10,
  RLIMIT_SIGPENDING: 11,
  RLIMIT_MSGQUEUE: 12,
  RLIMIT_NICE: 13,
  RLIMIT_RTPRIO: 14,
  RLIMIT_RTTIME: 15,
} as const;

export type SysConstant = keyof typeof SYS;

/** Docker's `--ulimit` names → resources. */
export const RLIMIT_BY_NAME: Readonly<Record<string, number>> = {
  core: SYS.RLIMIT_CORE,
  cpu: SYS.RLIMIT_CPU,
  data: SYS.RLIMIT_DATA,
  fsize: SYS.RLIMIT_FSIZE,
  locks: SYS.RLIMIT_LOCKS,
  memlock: SYS.RLIMIT_MEMLOCK,
  msgqueue: SYS.RLIMIT_MSGQUEUE,
  nice: SYS.RLIMIT_NICE,
  nofile: SYS.RLIMIT_NOFILE,
  nproc: SYS.RLIMIT_NPROC,
  rss: SYS.RLIMIT_RSS,
  rtprio: SYS.RLIMIT_RTPRIO,
  rttime: SYS.RLIMIT_RTTIME,
  sigpending: SYS.RLIMIT_SIGPENDING,
  stack: SYS.RLIMIT_STACK,
  as: SYS.RLIMIT_AS,
};

export interface WaitResult {
  pid: number;
  /** Set when the child exited normally. */
  exitCode?: number;
  /** Set when a signal killed it (the signal number). */
  signal?: number;
  coreDumped?: boolean;
  /** With WUNTRACED: the stop signal. */
  stopped?: number;
  /** With WCONTINUED. */
  continued?: boolean;
}

export interface NetInterface {
  name: string;
  index: number;
  up: boolean;
  running: boolean;
  loopback: boolean;
  mtu?: number;
  mac?: string;
  ipv4?: string;
  prefixLen?: number;
}

export interface RLimit {
  /** Infinity is RLIM_INFINITY. */
  soft: number;
  hard: number;
}

/** A watch on one fd in the event loop (see Sys.watch). */
export interface FdWatch {
  /** Stops watching: no callback runs after it returns. Idempotent. Call it before closing the fd. */
  close(): void;
}

/** What `finitModule` did: loaded the module, or found it already loaded (EEXIST). */
export type ModuleLoad = 'loaded' | 'already-loaded';

export interface Sys {
  /** mount(2). `source`/`fstype`/`data` may be null (e.g. for MS_MOVE, MS_BIND, MS_REMOUNT). */
  mount(
    source: string | null,
    target: string,
    fstype: string | null,
    flags: number,
    data?: string | null,
  ): void;
  umount2(target: string, flags?: number): void;
  pivotRoot(newRoot: string, putOld: string): void;
  chroot(path: string): void;
  sethostname(name: string): void;
  /** reboot(2) with RB_POWER_OFF, RB_AUTOBOOT or RB_HALT_SYSTEM. Call sync() first. */
  reboot(cmd: number): void;
  sync(): void;
  /** Opens the file and calls finit_module(2); EEXIST is reported, not thrown. */
  finitModule(path: string, params?: string): ModuleLoad;
  /** prctl(PR_SET_CHILD_SUBREAPER, 1). */
  setSubreaper(): void;
  /** waitpid(2); null when nothing changed under WNOHANG. Throws ECHILD when there is no such child. */
  waitpid(pid: number, options?: number): WaitResult | null;
  /** CLOCK_BOOTTIME in milliseconds: time since the kernel started, including suspend. */
  bootTimeMs(): number;
  /** Infinity (or a negative number) is RLIM_INFINITY. */
  setrlimit(resource: number, soft: number, hard: number): void;
  getrlimit(resource: number): RLimit;
  /** Sets IFF_UP|IFF_RUNNING. */
  ifUp(name: string): void;
  /** Address, netmask and broadcast of an IPv4 interface. */
  ifSetAddress(name: string, ipv4: string, prefixLen: number): void;
  addDefaultRoute(gateway: string, ifname?: string): void;
  ifList(): NetInterface[];
  /** poll(2) on one fd, off the main thread; resolves to revents (0 on timeout). Uses a libuv pool thread for
   * up to `timeoutMs`, so keep timeouts bounded (a negative one waits forever and holds the thread). */
  poll(fd: number, events: number, timeoutMs: number): Promise<number>;
  /**
   * Watches `fd` in the event loop, holding no thread: `onEvents(revents)` runs each time its readiness
   * changes, with the fd's poll(2) revents at that moment (POLLHUP and POLLERR always included). `events`
   * is a mask of POLLIN, POLLPRI, POLLOUT and POLLRDHUP. Edge-triggered (epoll EPOLLET under a libuv
   * uv_poll_t): the first call reports the state when the watch starts, if anything is ready; after that, a
   * call comes only on a change, so read or write until EAGAIN before waiting for the next one. A port with
   * no host behind it (POLLHUP) is reported once, not on every loop turn. An open watch keeps the process
   * alive. A throw in `onEvents` is an uncaught exception, as in any event-loop callback.
   */
  watch(fd: number, events: number, onEvents: (revents: number) => void): FdWatch;
}

/** A failed system call: `errno` (number), `errnoName` ('EINVAL') and `syscall` say which and why. */
export class SyscallError extends TetherError {
  readonly errno: number;
  readonly errnoName: string;
  readonly syscall: string;

  constructor(
    message: string,
    details: { errno: number; errnoName: string; syscall: string },
    cause?: unknown,
  ) {
    super('TETHER_SYSCALL', message, cause === undefined ? undefined : { cause });
    this.errno = details.errno;
    this.errnoName = details.errnoName;
    this.syscall = details.syscall;
  }
}

export function isErrno(error: unknown, errnoName: string): error is SyscallError {
  return error instanceof SyscallError && error.errnoName === errnoName;
}

/** The raw addon, as native/sys.c exports it. */
export interface SysAddon {
  mount(
    source: string | null,
    target: string,
    fstype: string | null,
    flags: number,
    data: string | null,
  ): void;
  umount2(target: string, flags: number): void;
  pivotRoot(newRoot: string, putOld: string): void;
  chroot(path: string): void;
  sethostname(name: string): void;
  reboot(cmd: number): void;
  sync(): void;
  finitModule(path: string, params: string): number;
  setSubreaper(): void;
  waitpid(pid: number, options: number): WaitResult | null;
  bootTimeMs(): number;
  setrlimit(resource: number, soft: number, hard: number): void;
  getrlimit(resource: number): RLimit;
  ifUp(name: string): void;
  ifSetAddress(name: string, ipv4: string, prefixLen: number): void;
  addDefaultRoute(gateway: string, ifname: string | null): void;
  ifList(): NetInterface[];
  poll(fd: number, events: number, timeoutMs: number): Promise<number>;
  watch(fd: number, events: number, onEvents: (revents: number) => void): FdWatch;
}

interface NativeErrnoError extends Error {
  errno: number;
  code: string;
  syscall: string;
}

function isNativeErrnoError(error: unknown): error is NativeErrnoError {
  return error instanceof Error && typeof (error as Partial<NativeErrnoError>).errno === 'number';
}

/** `EINVAL (Invalid argument)` out of the addon's `mount: EINVAL (Invalid argument)`. */
function rewrap(description: string, error: unknown): unknown {
  if (!isNativeErrnoError(error)) return error;
  const prefix = `${error.syscall}: `;
  const tail =
    description.startsWith(`${error.syscall} `) && error.message.startsWith(prefix)
      ? error.message.slice(prefix.length)
      : error.message;
  return new SyscallError(
    `${description}: ${tail}`,
    { errno: error.errno, errnoName: error.code, syscall: error.syscall },
    error,
  );
}

function call<T>(description: () => string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    throw rewrap(description(), error);
  }
}

/** Names of the set flags among `names`, e.g. `MS_RDONLY|MS_NOSUID`, plus any unnamed rest in hex. */
export function flagNames(value: number, names: readonly SysConstant[]): string {
  const parts: string[] = [];
  let rest = value;
  for (const name of names) {
    const bit = SYS[name];
    if (bit !== 0 && (value & bit) === bit) {
      parts.push(name);
      rest &= ~bit;
    }
  }
  if (rest !== 0) parts.push(`0x${(rest >>> 0).toString(16)}`);
  return parts.join('|');
}

const MOUNT_FLAGS: readonly SysConstant[] = [
  'MS_RDONLY',
  'MS_NOSUID',
  'MS_NODEV',
  'MS_NOEXEC',
  'MS_SYNCHRONOUS',
  'MS_REMOUNT',
  'MS_NOATIME',
  'MS_NODIRATIME',
  'MS_BIND',
  'MS_MOVE',
  'MS_REC',
  'MS_SILENT',
  'MS_UNBINDABLE',
  'MS_PRIVATE',
  'MS_SLAVE',
  'MS_SHARED',
  'MS_RELATIME',
  'MS_STRICTATIME',
];
const UMOUNT_FLAGS: readonly SysConstant[] = ['MNT_FORCE', 'MNT_DETACH', 'MNT_EXPIRE', 'UMOUNT_NOFOLLOW'];
const WAIT_FLAGS: readonly SysConstant[] = ['WNOHANG', 'WUNTRACED', 'WCONTINUED', 'WALL'];
const POLL_FLAGS: readonly SysConstant[] = [
  'POLLIN',
  'POLLPRI',
  'POLLOUT',
  'POLLERR',
  'POLLHUP',
  'POLLNVAL',
  'POLLRDHUP',
];

function constantName(value: number, prefix: string): string {
  const found = (Object.keys(SYS) as SysConstant[]).find(
    (name) => name.startsWith(prefix) && SYS[name] === value,
  );
  return found ?? String(value);
}

function limitText(value: number): string {
  return value < 0 || value === Infinity ? 'unlimited' : String(value);
}

export function mountDescription(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data?: string | null,
): string {
  const details = [
    fstype ?? '',
    flags !== 0 ? flagNames(flags, MOUNT_FLAGS) : '',
    data ? JSON.stringify(data) : '',
  ]
    .filter((part) => part !== '')
    .join(', ');
  return `mount ${source ?? 'none'} onto ${target}${details ? ` (${details})` : ''}`;
}

/** The facade over a loaded addon (or over a fake addon in tests). */
export function createSys(addon: SysAddon): Sys {
  return {
    mount: (source, target, fstype, flags, data = null) =>
      call(
        () => mountDescription(source, target, fstype, flags, data),
        () => addon.mount(source, target, fstype, flags, data),
      ),
    umount2: (target, flags = 0) =>
      call(
        () => `umount2 ${target}${flags ? ` (${flagNames(flags, UMOUNT_FLAGS)})` : ''}`,
        () => addon.umount2(target, flags),
      ),
    pivotRoot: (newRoot, putOld) =>
      call(
        () => `pivot_root new root ${newRoot}, old root to ${putOld}`,
        () => addon.pivotRoot(newRoot, putOld),
      ),
    chroot: (path) =>
      call(
        () => `chroot ${path}`,
        () => addon.chroot(path),
      ),
    sethostname: (name) =>
      call(
        () => `sethostname ${JSON.stringify(name)}`,
        () => addon.sethostname(name),
      ),
    reboot: (cmd) =>
      call(
        () => `reboot ${constantName(cmd, 'RB_')}`,
        () => addon.reboot(cmd),
      ),
    sync: () => addon.sync(),
    finitModule: (path, params = '') =>
      call(
        () => `finit_module ${path}${params ? ` (params ${JSON.stringify(params)})` : ''}`,
        () => (addon.finitModule(path, params) === 0 ? 'loaded' : 'already-loaded'),
      ),
    setSubreaper: () =>
      call(
        () => 'prctl PR_SET_CHILD_SUBREAPER',
        () => addon.setSubreaper(),
      ),
    waitpid: (pid, options = 0) =>
      call(
        () => `waitpid pid ${pid}${options ? ` (${flagNames(options, WAIT_FLAGS)})` : ''}`,
        () => addon.waitpid(pid, options),
      ),
    bootTimeMs: () =>
      call(
        () => 'clock_gettime CLOCK_BOOTTIME',
        () => addon.bootTimeMs(),
      ),
    setrlimit: (resource, soft, hard) =>
      call(
        () =>
          `setrlimit ${constantName(resource, 'RLIMIT_')} soft ${limitText(soft)} hard ${limitText(hard)}`,
        () => addon.setrlimit(resource, soft, hard),
      ),
    getrlimit: (resource) =>
      call(
        () => `getrlimit ${constantName(resource, 'RLIMIT_')}`,
        () => addon.getrlimit(resource),
      ),
    ifUp: (name) =>
      call(
        () => `bring interface ${name} up`,
        () => addon.ifUp(name),
      ),
    ifSetAddress: (name, ipv4, prefixLen) =>
      call(
        () => `set address ${ipv4}/${prefixLen} on interface ${name}`,
        () => addon.ifSetAddress(name, ipv4, prefixLen),
      ),
    addDefaultRoute: (gateway, ifname) =>
      call(
        () => `add default route via ${gateway}${ifname ? ` dev ${ifname}` : ''}`,
        () => addon.addDefaultRoute(gateway, ifname ?? null),
      ),
    ifList: () =>
      call(
        () => 'list network interfaces',
        () => addon.ifList(),
      ),
    poll: async (fd, events, timeoutMs) => {
      const description = (): string =>
        `poll fd ${fd} for ${flagNames(events, POLL_FLAGS)} (timeout ${timeoutMs} ms)`;
      try {
        return await call(description, () => addon.poll(fd, events, timeoutMs));
      } catch (error) {
        throw error instanceof SyscallError ? error : rewrap(description(), error);
      }
    },
    watch: (fd, events, onEvents) =>
      call(
        () => `watch fd ${fd} for ${flagNames(events, POLL_FLAGS) || 'POLLHUP|POLLERR'} in the event loop`,
        () => addon.watch(fd, events, onEvents),
      ),
  };
}

let shared: Sys | undefined;

/** The real system calls (loads sys.node on first use). */
export function realSys(): Sys {
  shared ??= createSys(loadNative('sys') as SysAddon);
  return shared;
}
