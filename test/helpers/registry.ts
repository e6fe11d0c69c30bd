/**
 * Debian's `docker-registry` (distribution 2.8) on a free loopback port, for pull tests: storage in a temp
 * dir of its own, anonymous or with htpasswd basic auth, filled with skopeo. Each test stops what it starts.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { hasCommand } from './prerequisites.ts';

export function registryPrerequisites(): Record<string, boolean> {
  return {
    'docker-registry (apt-get install docker-registry)': hasCommand('docker-registry'),
    'skopeo (apt-get install skopeo)': hasCommand('skopeo'),
    'htpasswd (apt-get install apache2-utils)': hasCommand('htpasswd'),
  };
}

export interface TestRegistry {
  /** `127.0.0.1:PORT`. */
  host: string;
  /** The registry's storage root (docker/registry/v2/... below it). */
  storage: string;
  /** Copies an image into the registry: `source` is a skopeo reference (`docker-archive:FILE`). */
  push(source: string, name: string): Promise<void>;
  /** The path of a blob's bytes in the storage. */
  blobPath(digest: string): string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export async function startRegistry(auth?: { user: string; password: string }): Promise<TestRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'tether-registry-'));
  const storage = join(dir, 'storage');
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  let authBlock = '';
  if (auth) {
    // -B: bcrypt, the only hash distribution's htpasswd accepts.
    const line = execFileSync('htpasswd', ['-Bbn', auth.user, auth.password], { encoding: 'utf8' });
    writeFileSync(join(dir, 'htpasswd'), line);
    authBlock = `auth:\n  htpasswd:\n    realm: tether-test\n    path: ${join(dir, 'htpasswd')}\n`;
  }
  writeFileSync(
    join(dir, 'config.yml'),
    `version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${storage}\nhttp:\n  addr: ${host}\n${authBlock}`,
  );
  const child: ChildProcess = spawn('docker-registry', ['serve', join(dir, 'config.yml')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr!.on('data', (chunk: Buffer) => (log += chunk.toString()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`docker-registry exited ${child.exitCode}: ${log}`);
    }
    try {
      const response = await fetch(`http://${host}/v2/`);
      await response.body?.cancel();
      if (response.status === 200 || response.status === 401) break;
    } catch {
      // not listening yet
    }
    if (i > 200) {
      await stop();
      throw new Error(`docker-registry did not answer on ${host}: ${log}`);
    }
    await sleep(50);
  }
  const creds = auth ? ['--dest-creds', `${auth.user}:${auth.password}`] : [];
  return {
    host,
    storage,
    push: (source, name) =>
      new Promise((resolve, reject) =>
        execFile(
          'skopeo',
          [
            'copy',
            '--insecure-policy',
            '--dest-tls-verify=false',
            ...creds,
            source,
            `docker://${host}/${name}`,
          ],
          (error, _stdout, stderr) =>
            error ? reject(new Error(`skopeo copy ${source}: ${stderr}`)) : resolve(),
        ),
      ),
    blobPath: (digest) => {
      const hex = digest.replace(/^sha256:/, '');
      return join(storage, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
    },
    stop,
  };
}
