/**
 * Starts bin/tetherd on a temporary root and socket for a test, with the QEMU driver (e2e) or the dev driver
 * (integration: each container is `tether --dev` on this host), and runs the real docker CLI against it.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { hasCommand, REPO } from './prerequisites.ts';

export const BUSYBOX_IMAGE_TAR = join(REPO, 'build/image/busybox-image.tar');
export const BUSYBOX_IMAGE = 'tether/busybox:latest';

export function tetherdPrerequisites(): Record<string, boolean> {
  return {
    'bin/tetherd (make build)': existsSync(join(REPO, 'bin/tetherd')),
    'build/image/busybox-image.tar (make image)': existsSync(BUSYBOX_IMAGE_TAR),
    'the docker CLI': hasCommand('docker'),
  };
}

export interface Tetherd {
  dir: string;
  root: string;
  socket: string;
  /** DOCKER_HOST value. */
  host: string;
  process: ChildProcess;
  /** Everything tetherd logged so far (pino JSON lines). */
  logs(): string;
  /** Runs `docker -H ... ARGS`; never throws on a non-zero exit. */
  docker(args: string[], options?: { input?: string | Buffer; timeoutMs?: number }): Promise<DockerResult>;
  /** A raw HTTP request on the socket. */
  http(
    method: string,
    path: string,
    body?: string | Buffer,
    headers?: Record<string, string>,
  ): Promise<HttpResult>;
  /** SIGTERM (or the given signal) and wait for the exit; the root stays. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts a new tetherd on the same root and socket. */
  restart(): Promise<Tetherd>;
  /** Stops it, kills every container's VM, removes the temp dir. */
  dispose(): Promise<void>;
}

export interface DockerResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface HttpResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface StartOptions {
  driver: 'qemu' | 'dev';
  dir?: string;
  extraArgs?: string[];
}

export async function startTetherd(options: StartOptions): Promise<Tetherd> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'tetherd-'));
  const root = join(dir, 'root');
  const socket = join(dir, 'd.sock');
  const args = [
    '--root',
    root,
    '--socket',
    socket,
    '--driver',
    options.driver,
    '--log-level',
    'debug',
    ...(options.extraArgs ?? []),
  ];
  const child = spawn(join(REPO, 'bin/tetherd'), args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env },
  });
  let logs = '';
  child.stderr!.on('data', (chunk: Buffer) => (logs += chunk.toString()));
  for (let i = 0; i < 400; i++) {
    if (child.exitCode !== null) throw new Error(`tetherd exited ${child.exitCode}: ${logs}`);
    if (logs.includes('tetherd listening')) break;
    await sleep(25);
  }
  if (!logs.includes('tetherd listening')) throw new Error(`tetherd did not start: ${logs}`);
  const host = `unix://${socket}`;
  const self: Tetherd = {
    dir,
    root,
    socket,
    host,
    process: child,
    logs: () => logs,
    docker: (dockerArgs, runOptions = {}) =>
      new Promise((resolve) => {
        const proc = execFile(
          'docker',
          ['-H', host, ...dockerArgs],
          { timeout: runOptions.timeoutMs ?? 240_000, maxBuffer: 512 * 1024 * 1024, encoding: 'buffer' },
          (error, stdout, stderr) =>
            resolve({
              code: error ? (typeof error.code === 'number' ? error.code : 1) : 0,
              stdout: stdout.toString(),
              stderr: stderr.toString(),
            }),
        );
        if (runOptions.input !== undefined) proc.stdin!.end(runOptions.input);
        else proc.stdin!.end();
      }),
    http: (method, path, body, headers = {}) =>
      new Promise((resolve, reject) => {
        const req = request({ socketPath: socket, method, path, headers }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks).toString(),
            }),
          );
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end(body);
      }),
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill(signal);
      await exited;
    },
    restart: async () => {
      await self.stop();
      return startTetherd({ ...options, dir });
    },
    dispose: async () => {
      await self.stop();
      await killVms(root);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return self;
}

/** A tetherd with the bundled busybox image already loaded (fails with the CLI's error if the load does). */
export async function startTetherdWithBusybox(options: StartOptions): Promise<Tetherd> {
  const daemon = await startTetherd(options);
  const loaded = await daemon.docker(['load', '-i', BUSYBOX_IMAGE_TAR]);
  if (loaded.code !== 0) {
    await daemon.dispose();
    throw new Error(`docker load of ${BUSYBOX_IMAGE_TAR} failed (${loaded.code}): ${loaded.stderr}`);
  }
  return daemon;
}

/** Kills whatever VM (QEMU or dev agent) still runs under a root: tests leave nothing behind. */
export async function killVms(root: string): Promise<void> {
  await new Promise<void>((resolve) =>
    execFile('pkill', ['-KILL', '-f', `${root}/containers/`], () => resolve()),
  );
}
