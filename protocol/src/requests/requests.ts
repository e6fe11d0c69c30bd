/**
 * The agent's own requests. Each runs as an SSH subsystem (RFC 4254 §6.5) named `<verb>@tether`; the
 * client's first frame on the channel carries the parameters, the agent's first frame the result, and
 * then the channel carries the request's stream (stdio, log frames or status records). Frames are
 * length-prefixed msgpack. Both ends import the descriptors below, so payload drift is a compile error.
 */
import { pack, unpack } from 'msgpackr';
import { TetherError, type ErrorCode, ERROR_CODES } from '../errors/errors.ts';
import { encodeLengthPrefixed } from '../framing/length-prefixed.ts';

export interface RequestType<P, R> {
  readonly subsystem: string;
  readonly checkParams: (value: unknown) => P;
  readonly checkResult: (value: unknown) => R;
}

export function defineRequest<P, R>(
  subsystem: string,
  checkParams: (value: unknown) => P,
  checkResult: (value: unknown) => R,
): RequestType<P, R> {
  return { subsystem, checkParams, checkResult };
}

/** The agent's reply when a request fails before its stream starts. */
export interface RequestFailure {
  error: { code: ErrorCode; message: string };
}

export type Reply<R> = { ok: R } | RequestFailure;

function bad(subsystem: string, why: string): TetherError {
  return new TetherError('TETHER_REQUEST_INVALID', `${subsystem}: ${why}`);
}

type Reader = {
  value: Record<string, unknown>;
  string(key: string, optional?: boolean): string | undefined;
  number(key: string, optional?: boolean): number | undefined;
  boolean(key: string, optional?: boolean): boolean | undefined;
  strings(key: string, optional?: boolean): string[] | undefined;
};

function reader(subsystem: string, value: unknown): Reader {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw bad(subsystem, 'payload is not a map');
  const record = value as Record<string, unknown>;
  const get = <T>(
    key: string,
    optional: boolean | undefined,
    ok: (v: unknown) => boolean,
    what: string,
  ): T | undefined => {
    const field = record[key];
    if (field === undefined || field === null) {
      if (optional) return undefined;
      throw bad(subsystem, `${key} is required`);
    }
    if (!ok(field)) throw bad(subsystem, `${key} must be ${what}`);
    return field as T;
  };
  return {
    value: record,
    string: (key, optional) => get<string>(key, optional, (v) => typeof v === 'string', 'a string'),
    number: (key, optional) =>
      get<number>(key, optional, (v) => typeof v === 'number' && Number.isSafeInteger(v), 'an integer'),
    boolean: (key, optional) => get<boolean>(key, optional, (v) => typeof v === 'boolean', 'true or false'),
    strings: (key, optional) =>
      get<string[]>(
        key,
        optional,
        (v) => Array.isArray(v) && v.every((s) => typeof s === 'string'),
        'a list of strings',
      ),
  };
}

/** Drops undefined fields so exactOptionalPropertyTypes holds and msgpack stays small. */
type Defined<T> = { [K in keyof T as undefined extends T[K] ? never : K]: T[K] } & {
  [K in keyof T as undefined extends T[K] ? K : never]?: Exclude<T[K], undefined>;
};
function defined<T extends object>(value: T): Defined<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Defined<T>;
}

export interface TerminalSize {
  cols: number;
  rows: number;
}

function checkTerminal(subsystem: string, value: unknown): TerminalSize | undefined {
  if (value === undefined || value === null) return undefined;
  const r = reader(subsystem, value);
  const cols = r.number('cols')!;
  const rows = r.number('rows')!;
  if (cols < 1 || cols > 10000 || rows < 1 || rows > 10000) throw bad(subsystem, 'tty size out of range');
  return { cols, rows };
}

// exec@tether ----------------------------------------------------------------------------------------

export interface ExecParams {
  argv: string[];
  env?: string[];
  cwd?: string;
  user?: string;
  /** Present for a terminal session: its initial size. */
  tty?: TerminalSize;
  /** False closes the process's stdin at once (docker exec without -i). */
  stdin: boolean;
}

export interface ExecResult {
  pid: number;
}

export const execRequest = defineRequest<ExecParams, ExecResult>(
  'exec@tether',
  (value) => {
    const r = reader('exec@tether', value);
    const argv = r.strings('argv')!;
    if (argv.length === 0) throw bad('exec@tether', 'argv must name a command');
    const env = r.strings('env', true);
    if (env?.some((entry) => !entry.includes('='))) throw bad('exec@tether', 'env entries must be KEY=VALUE');
    return defined({
      argv,
      env,
      cwd: r.string('cwd', true),
      user: r.string('user', true),
      tty: checkTerminal('exec@tether', r.value['tty']),
      stdin: r.boolean('stdin')!,
    });
  },
  (value) => ({ pid: reader('exec@tether', value).number('pid')! }),
);

// attach@tether --------------------------------------------------------------------------------------

export type AttachFrom = 'start' | 'end' | number;

export interface AttachParams {
  /** Where output starts: the oldest byte still kept, only new output, or an absolute byte offset. */
  from: AttachFrom;
  stdin: boolean;
  /**
   * False: the channel carries no output frames (the host reads output from the log-port file), only
   * stdin, window-change, signals and the final exit status. The agent then never reads the output log,
   * so this client does not count as a reader that lets bytes be evicted. Default true.
   */
  output?: boolean;
}

export interface AttachResult {
  /** Offset of the first output byte this channel will carry. */
  offset: number;
  /** Oldest offset still kept; a `from` below it was moved up to it, and the gap is reported here. */
  oldest: number;
  tty: boolean;
  running: boolean;
}

export const attachRequest = defineRequest<AttachParams, AttachResult>(
  'attach@tether',
  (value) => {
    const r = reader('attach@tether', value);
    const from = r.value['from'];
    if (
      from !== 'start' &&
      from !== 'end' &&
      !(typeof from === 'number' && Number.isSafeInteger(from) && from >= 0)
    ) {
      throw bad('attach@tether', 'from must be "start", "end" or a byte offset');
    }
    return defined({
      from: from as AttachFrom,
      stdin: r.boolean('stdin')!,
      output: r.boolean('output', true),
    });
  },
  (value) => {
    const r = reader('attach@tether', value);
    return {
      offset: r.number('offset')!,
      oldest: r.number('oldest')!,
      tty: r.boolean('tty')!,
      running: r.boolean('running')!,
    };
  },
);

// status@tether --------------------------------------------------------------------------------------

export interface StatusParams {
  /** Keep the channel open and send new records as they happen. */
  follow: boolean;
}

export const statusRequest = defineRequest<StatusParams, Record<string, never>>(
  'status@tether',
  (value) => ({ follow: reader('status@tether', value).boolean('follow')! }),
  () => ({}),
);

// archive-stat@tether, archive-get@tether, archive-put@tether (docker cp) ----------------------------------

/** A path in the container, as Docker's X-Docker-Container-Path-Stat describes it. */
export interface ArchiveStat {
  /** The path's last component. */
  name: string;
  size: number;
  /** POSIX st_mode (file type and permission bits); see dockerFileMode() for Docker's Go form. */
  mode: number;
  /** Modification time, ISO 8601. */
  mtime: string;
  /** The symlink's target when the path is one, else "". */
  linkTarget: string;
}

export interface ArchivePathParams {
  /** An absolute path in the container's root filesystem. */
  path: string;
}

export interface ArchivePutParams extends ArchivePathParams {
  /** Refuse to replace an existing directory with a non-directory and the other way round (Docker's flag). */
  noOverwriteDirNonDir?: boolean;
}

export interface ArchiveStatResult {
  stat: ArchiveStat;
}

function checkPath(subsystem: string, value: unknown): string {
  const path = reader(subsystem, value).string('path')!;
  if (path === '' || path.includes('\0')) throw bad(subsystem, 'path must be a non-empty path');
  return path;
}

function checkStat(subsystem: string, value: unknown): ArchiveStatResult {
  const stat = reader(subsystem, reader(subsystem, value).value['stat']);
  return {
    stat: {
      name: stat.string('name')!,
      size: stat.number('size')!,
      mode: stat.number('mode')!,
      mtime: stat.string('mtime')!,
      linkTarget: stat.string('linkTarget')!,
    },
  };
}

/** Reply: the path's stat. Nothing follows; the channel ends with status 0. */
export const archiveStatRequest = defineRequest<ArchivePathParams, ArchiveStatResult>(
  'archive-stat@tether',
  (value) => ({ path: checkPath('archive-stat@tether', value) }),
  (value) => checkStat('archive-stat@tether', value),
);

/**
 * Reply: the path's stat; then the channel carries a tar stream of the path, its entries named under the
 * path's last component (`/etc` gives `etc/...`), and ends with status 0, or 1 with a message on stderr
 * when packing failed part-way.
 */
export const archiveGetRequest = defineRequest<ArchivePathParams, ArchiveStatResult>(
  'archive-get@tether',
  (value) => ({ path: checkPath('archive-get@tether', value) }),
  (value) => checkStat('archive-get@tether', value),
);

/**
 * Reply `{}` once the target directory exists; then the client sends a tar stream and ends its side. The
 * agent extracts it into the directory and ends with status 0, or 1 with a message on stderr.
 */
export const archivePutRequest = defineRequest<ArchivePutParams, Record<string, never>>(
  'archive-put@tether',
  (value) =>
    defined({
      path: checkPath('archive-put@tether', value),
      noOverwriteDirNonDir: reader('archive-put@tether', value).boolean('noOverwriteDirNonDir', true),
    }),
  () => ({}),
);

/** Go's os.FileMode bits (what Docker's path-stat header carries) for a POSIX st_mode. */
export function dockerFileMode(mode: number): number {
  const GO_DIR = 2 ** 31;
  const GO_SYMLINK = 2 ** 27;
  const GO_DEVICE = 2 ** 26;
  const GO_PIPE = 2 ** 25;
  const GO_SOCKET = 2 ** 24;
  const GO_SETUID = 2 ** 23;
  const GO_SETGID = 2 ** 22;
  const GO_CHARDEV = 2 ** 21;
  const GO_STICKY = 2 ** 20;
  let out = mode & 0o777;
  if (mode & 0o4000) out += GO_SETUID;
  if (mode & 0o2000) out += GO_SETGID;
  if (mode & 0o1000) out += GO_STICKY;
  switch (mode & 0o170000) {
    case 0o040000:
      return out + GO_DIR;
    case 0o120000:
      return out + GO_SYMLINK;
    case 0o060000:
      return out + GO_DEVICE;
    case 0o020000:
      return out + GO_DEVICE + GO_CHARDEV;
    case 0o010000:
      return out + GO_PIPE;
    case 0o140000:
      return out + GO_SOCKET;
    default:
      return out;
  }
}

// framing --------------------------------------------------------------------------------------------

export function encodeParams<P>(type: RequestType<P, unknown>, params: P): Buffer {
  return encodeLengthPrefixed(pack(defined(type.checkParams(params) as object)));
}

export function decodeParams<P>(type: RequestType<P, unknown>, body: Buffer): P {
  return type.checkParams(unpackOrThrow(type.subsystem, body));
}

export function encodeReply<R>(_type: RequestType<unknown, R>, reply: Reply<R>): Buffer {
  return encodeLengthPrefixed(pack('ok' in reply ? { ok: defined(reply.ok as object) } : reply));
}

export function decodeReply<R>(type: RequestType<unknown, R>, body: Buffer): Reply<R> {
  const r = reader(type.subsystem, unpackOrThrow(type.subsystem, body));
  if ('ok' in r.value) return { ok: type.checkResult(r.value['ok']) };
  const error = reader(type.subsystem, r.value['error']);
  const code = error.string('code')!;
  return {
    error: {
      code: (ERROR_CODES as readonly string[]).includes(code)
        ? (code as ErrorCode)
        : 'TETHER_REQUEST_INVALID',
      message: error.string('message')!,
    },
  };
}

function unpackOrThrow(subsystem: string, body: Buffer): unknown {
  try {
    return unpack(body);
  } catch (error) {
    throw new TetherError('TETHER_REQUEST_INVALID', `${subsystem}: payload is not msgpack`, { cause: error });
  }
}

// stats@tether --------------------------------------------------------------------------------------------

export interface StatsParams {
  /** Reset the agent's peak RSS (VmHWM) after reading it, so the next reply's peak covers only what follows. */
  resetPeak?: boolean;
}

/** The agent process itself, from /proc/self and V8. */
export interface AgentProcessStats {
  rssBytes: number;
  /** VmHWM: the largest RSS since the agent started or since the last resetPeak. */
  peakRssBytes: number;
  heapUsedBytes: number;
  heapTotalBytes: number;
  /** Memory outside V8's heap held by JavaScript objects (Buffers and the like). */
  externalBytes: number;
  /** User plus system CPU time since the agent started. */
  cpuMicros: number;
  /** The system (kernel) part of cpuMicros: system calls, copies, device writes. */
  cpuSystemMicros: number;
  threads: number;
}

/** The container's cgroup (absent in --dev mode, where the container has none). */
export interface ContainerStats {
  memoryBytes: number;
  /** memory.max, or undefined for no limit. */
  memoryLimitBytes?: number;
  pids: number;
  cpuMicros: number;
}

export interface StatsResult {
  agent: AgentProcessStats;
  container?: ContainerStats;
}

function checkAgentStats(subsystem: string, value: unknown): AgentProcessStats {
  const r = reader(subsystem, value);
  return {
    rssBytes: r.number('rssBytes')!,
    peakRssBytes: r.number('peakRssBytes')!,
    heapUsedBytes: r.number('heapUsedBytes')!,
    heapTotalBytes: r.number('heapTotalBytes')!,
    externalBytes: r.number('externalBytes')!,
    cpuMicros: r.number('cpuMicros')!,
    cpuSystemMicros: r.number('cpuSystemMicros')!,
    threads: r.number('threads')!,
  };
}

function checkContainerStats(subsystem: string, value: unknown): ContainerStats | undefined {
  if (value === undefined || value === null) return undefined;
  const r = reader(subsystem, value);
  return defined({
    memoryBytes: r.number('memoryBytes')!,
    memoryLimitBytes: r.number('memoryLimitBytes', true),
    pids: r.number('pids')!,
    cpuMicros: r.number('cpuMicros')!,
  });
}

/** Reply: one snapshot of the agent's and the container's resource use. Nothing follows. */
export const statsRequest = defineRequest<StatsParams, StatsResult>(
  'stats@tether',
  (value) => defined({ resetPeak: reader('stats@tether', value).boolean('resetPeak', true) }),
  (value) => {
    const r = reader('stats@tether', value);
    return defined({
      agent: checkAgentStats('stats@tether', r.value['agent']),
      container: checkContainerStats('stats@tether', r.value['container']),
    });
  },
);
