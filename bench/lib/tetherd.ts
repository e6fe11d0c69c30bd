/**
 * What the tetherd benches share: bin/tetherd on a temporary root (dev driver unless told), the docker CLI
 * and raw HTTP on its socket, a counter of Docker's multiplexed stream, and a process's CPU time and memory
 * from /proc. Kept apart from test/helpers/tetherd.ts, as harness.ts is from the test helpers.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO } from './harness.ts';

export const BUSYBOX_IMAGE_TAR = join(REPO, 'build/image/busybox-image.tar');
export const BUSYBOX_IMAGE = 'tether/busybox:latest';
const API = '/v1.47';

export interface HttpReply {
  status: number;
  body: Buffer;
}

export interface CliRun {
  code: number;
  seconds: number;
  stdout: string;
  stderr: string;
}

export interface BenchDaemon {
  dir: string;
  root: string;
  socket: string;
  /** tetherd's node process (bin/tetherd execs node, so the pid is the same). */
  pid: number;
  process: ChildProcess;
  /** `docker -H unix://SOCKET ARGS`, stdout to /dev/null unless `capture`; never throws on a non-zero exit. */
  docker(args: string[], options?: { capture?: boolean }): Promise<CliRun>;
  /** One request on a fresh connection (as the CLI makes one), the whole body read. */
  http(method: string, path: string, body?: unknown): Promise<HttpReply>;
  /** ROOT/containers/<first 12 hex of the id>: the container's log file and its rotated segments. */
  containerDir(id: string): string;
  /** Creates a container from the busybox image (with the dev driver the command runs on this host). */
  create(cmd: string[], hostConfig?: Record<string, unknown>): Promise<string>;
  /** Kills tetherd and every container's agent it started (by the pids in their dev.pid), removes the dir. */
  dispose(): Promise<void>;
}

export function requireTetherd(): void {
  for (const file of ['bin/tetherd', 'bin/tether', 'bin/tether-exec']) {
    if (!existsSync(join(REPO, file))) throw new Error(`${file} is missing: run \`make build\` first`);
  }
  if (!existsSync(BUSYBOX_IMAGE_TAR)) throw new Error(`${BUSYBOX_IMAGE_TAR} is missing: run \`make image\``);
}

export async function startDaemon(options: { driver?: 'dev' | 'qemu' } = {}): Promise<BenchDaemon> {
  requireTetherd();
  const dir = mkdtempSync(join(tmpdir(), 'tetherd-bench-'));
  const root = join(dir, 'root');
  const socket = join(dir, 'd.sock');
  const logFile = join(dir, 'tetherd.log');
  // tetherd's own log goes to a file: a pipe into this process would cost the bench CPU.
  const out = openSync(logFile, 'a');
  const args = ['--root', root, '--socket', socket, '--driver', options.driver ?? 'dev'];
  // BENCH_TETHERD_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") runs the bundle bin/tetherd runs
  // under node with those flags (a profile is written when tetherd exits on SIGTERM). BENCH_TETHERD_BUNDLE
  // runs another build of it (an A/B of a change), resolving its packages from this repository.
  const nodeArgs = process.env['BENCH_TETHERD_NODE_ARGS']?.split(/\s+/).filter(Boolean);
  const bundle = process.env['BENCH_TETHERD_BUNDLE'];
  const child =
    nodeArgs || bundle
      ? spawn('node', [...(nodeArgs ?? []), bundle ?? join(REPO, 'dist/tetherd.cjs'), ...args], {
          stdio: ['ignore', out, out],
          env: { ...process.env, NODE_PATH: join(REPO, 'node_modules') },
        })
      : spawn(join(REPO, 'bin/tetherd'), args, { stdio: ['ignore', out, out] });
  const logs = (): string => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  const http = (method: string, path: string, body?: unknown): Promise<HttpReply> =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = request(
        {
          socketPath: socket,
          method,
          path: API + path,
          agent: false,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`tetherd exited ${child.exitCode}: ${logs()}`);
    if (existsSync(socket) && (await http('GET', '/_ping').catch(() => undefined))?.status === 200) break;
    if (i > 400) throw new Error(`tetherd did not start: ${logs()}`);
    await sleep(25);
  }
  const host = `unix://${socket}`;
  const self: BenchDaemon = {
    dir,
    root,
    socket,
    pid: child.pid!,
    process: child,
    docker: (args, runOptions = {}) =>
      new Promise((resolve, reject) => {
        const started = performance.now();
        const proc = spawn('docker', ['-H', host, ...args], {
          stdio: ['ignore', runOptions.capture ? 'pipe' : 'ignore', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        proc.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
        proc.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
        proc.on('error', reject);
        proc.on('close', (code) =>
          resolve({ code: code ?? 1, seconds: (performance.now() - started) / 1000, stdout, stderr }),
        );
      }),
    http,
    containerDir: (id) => {
      // The directory has the short id (as `docker ps` shows it); older trees used the whole id.
      const short = join(root, 'containers', id.slice(0, 12));
      return existsSync(short) ? short : join(root, 'containers', id);
    },
    create: async (cmd, hostConfig = {}) => {
      const reply = await http('POST', '/containers/create', {
        Image: BUSYBOX_IMAGE,
        Cmd: cmd,
        HostConfig: hostConfig,
      });
      if (reply.status !== 201) throw new Error(`create: ${reply.status} ${reply.body.toString()}`);
      return (JSON.parse(reply.body.toString()) as { Id: string }).Id;
    },
    dispose: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        // SIGTERM: tetherd stops at once and leaves containers running (they are killed below); a
        // profiling node writes its profile on the way out.
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      for (const pid of agentPids(root)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  const load = await self.docker(['load', '-i', BUSYBOX_IMAGE_TAR]);
  if (load.code !== 0) throw new Error(`docker load: ${load.stderr}`);
  return self;
}

/** The dev agents under a root, from each container's dev.pid, kept only while the pid is still that agent. */
export function agentPids(root: string): number[] {
  const containers = join(root, 'containers');
  if (!existsSync(containers)) return [];
  const pids: number[] = [];
  for (const id of readdirSync(containers)) {
    try {
      const pid = Number(readFileSync(join(containers, id, 'dev.pid'), 'utf8').trim());
      if (pid > 0 && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(join(containers, id)))
        pids.push(pid);
    } catch {
      // no agent, or it has ended
    }
  }
  return pids;
}

/**
 * Counts the payload of Docker's multiplexed stream (8-byte header: stream, 0, 0, 0, length BE32) without
 * copying it.
 */
export class DockerPayloadCounter {
  stdout = 0;
  other = 0;
  readonly #header = Buffer.alloc(8);
  #headerFill = 0;
  #remaining = 0;
  #stream = 0;

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.#remaining === 0) {
        const take = Math.min(8 - this.#headerFill, chunk.length - at);
        chunk.copy(this.#header, this.#headerFill, at, at + take);
        this.#headerFill += take;
        at += take;
        if (this.#headerFill === 8) {
          this.#stream = this.#header[0]!;
          this.#remaining = this.#header.readUInt32BE(4);
          this.#headerFill = 0;
        }
        continue;
      }
      const take = Math.min(this.#remaining, chunk.length - at);
      if (this.#stream === 1) this.stdout += take;
      else this.other += take;
      this.#remaining -= take;
      at += take;
    }
  }
}

/** A streaming GET whose multiplexed body is counted as it arrives; resolves at its end. */
export function countStream(socket: string, path: string): Promise<DockerPayloadCounter> {
  return new Promise((resolve, reject) => {
    const counter = new DockerPayloadCounter();
    const req = request({ socketPath: socket, method: 'GET', path: API + path, agent: false }, (res) => {
      if (res.statusCode !== 200) reject(new Error(`GET ${path}: ${res.statusCode}`));
      res.on('data', (chunk: Buffer) => counter.push(chunk));
      res.on('end', () => resolve(counter));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

export interface AttachClient {
  counter: DockerPayloadCounter;
  /** Resolves when tetherd closes the connection. */
  ended: Promise<void>;
  socket: Socket;
}

/**
 * A raw attach as the CLI makes it (POST with `Upgrade: tcp`); resolves after the 101, by when tetherd
 * has subscribed this client to the container's output.
 */
export function rawAttach(socketPath: string, id: string, query: string): Promise<AttachClient> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    const counter = new DockerPayloadCounter();
    let head = Buffer.alloc(0);
    let upgraded = false;
    const ended = new Promise<void>((done) => socket.once('close', () => done()));
    socket.on('error', reject);
    socket.on('connect', () =>
      socket.write(
        `POST ${API}/containers/${id}/attach?${query} HTTP/1.1\r\nHost: tetherd\r\n` +
          'Upgrade: tcp\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n',
      ),
    );
    socket.on('data', (chunk: Buffer) => {
      if (upgraded) return counter.push(chunk);
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      const status = head.subarray(0, head.indexOf('\r\n')).toString();
      if (!/^HTTP\/1\.1 101/.test(status)) {
        socket.destroy();
        return reject(new Error(`attach: ${status}`));
      }
      upgraded = true;
      counter.push(head.subarray(end + 4));
      resolve({ counter, ended, socket });
    });
  });
}

let clockTicks: number | undefined;

/** User plus system CPU seconds a process has used so far (utime + stime from /proc/PID/stat). */
export function cpuSeconds(pid: number): number {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at state: utime and stime are 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

/** A process's resident set and proportional set size in KiB (/proc/PID/smaps_rollup). */
export function memoryKiB(pid: number): { rss: number; pss: number } {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const field = (name: string): number =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(text)?.[1] ?? 0);
  return { rss: field('Rss'), pss: field('Pss') };
}
