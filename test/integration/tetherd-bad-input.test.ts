/**
 * tetherd facing bad input with the dev driver: garbage on the socket, bad JSON, wrong types, unknown
 * paths, oversized bodies, missing containers and images, and clients that vanish mid-stream (logs -f,
 * docker load). Each answer is checked, and so is that the daemon goes on serving.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { extract, pack } from 'tar-stream';
import { eventually } from '../helpers/docker-streams.ts';
import { need } from '../helpers/prerequisites.ts';
import {
  BUSYBOX_IMAGE,
  BUSYBOX_IMAGE_TAR,
  startTetherdWithBusybox,
  tetherdPrerequisites,
  type Tetherd,
} from '../helpers/tetherd.ts';

const IMG = BUSYBOX_IMAGE;
const JSON_HEADERS = { 'Content-Type': 'application/json' };

/** Sends raw bytes on a fresh connection and returns everything the daemon answered before closing. */
function rawExchange(socketPath: string, bytes: Buffer | string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within ${timeoutMs} ms; got ${Buffer.concat(chunks).toString()}`));
    }, timeoutMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString());
    });
    socket.write(bytes);
  });
}

/** The bundled docker-save archive as a different image: a label in its config, a new tag. */
async function retaggedArchive(tag: string): Promise<Buffer> {
  const entries: Array<{ name: string; type: string; data: Buffer }> = [];
  const reader = extract();
  const done = new Promise<void>((resolve, reject) => {
    reader.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
      stream.on('end', () => {
        entries.push({ name: header.name, type: header.type ?? 'file', data: Buffer.concat(chunks) });
        next();
      });
    });
    reader.on('finish', resolve);
    reader.on('error', reject);
  });
  reader.end(readFileSync(BUSYBOX_IMAGE_TAR));
  await done;
  const manifestEntry = entries.find((entry) => entry.name === 'manifest.json')!;
  const manifest = JSON.parse(manifestEntry.data.toString()) as Array<{ Config: string; RepoTags: string[] }>;
  const configEntry = entries.find((entry) => entry.name === manifest[0]!.Config)!;
  const config = JSON.parse(configEntry.data.toString()) as { config?: { Labels?: Record<string, string> } };
  config.config = { ...config.config, Labels: { ...config.config?.Labels, 'tdk.variant': tag } };
  configEntry.data = Buffer.from(JSON.stringify(config));
  configEntry.name = `${createHash('sha256').update(configEntry.data).digest('hex')}.json`;
  manifest[0]!.Config = configEntry.name;
  manifest[0]!.RepoTags = [tag];
  manifestEntry.data = Buffer.from(JSON.stringify(manifest));
  entries.splice(
    entries.findIndex((entry) => entry.name === 'repositories'),
    1,
  );

  const writer = pack();
  const chunks: Buffer[] = [];
  writer.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
  const packed = new Promise<void>((resolve) => writer.on('end', resolve));
  for (const entry of entries)
    if (entry.type === 'directory') writer.entry({ name: entry.name, type: 'directory', mode: 0o755 });
    else writer.entry({ name: entry.name, mode: 0o644 }, entry.data);
  writer.finalize();
  await packed;
  return Buffer.concat(chunks);
}

describe('tetherd (dev driver): bad input', () => {
  let d: Tetherd | undefined;
  const ready = (t: TestContext): Tetherd | undefined => (need(t, tetherdPrerequisites()) ? d : undefined);
  const ok = async (args: string[]): Promise<string> => {
    const result = await d!.docker(args);
    assert.equal(result.code, 0, `docker ${args.join(' ')}: ${result.stderr}`);
    return result.stdout.trim();
  };
  const stillServing = async (): Promise<void> => {
    assert.equal((await d!.http('GET', '/_ping')).body, 'OK');
    assert.equal(await ok(['version', '--format', '{{.Server.APIVersion}}']), '1.47');
  };
  /** What a load in progress keeps under the image store's tmp/ (nothing once it is over, either way). */
  const loadLeftovers = (): string[] => {
    const tmp = join(d!.root, 'images', 'tmp');
    return existsSync(tmp) ? readdirSync(tmp) : [];
  };
  const message = (body: string): string => (JSON.parse(body) as { message: string }).message;

  before(async () => {
    if (Object.values(tetherdPrerequisites()).includes(false)) return;
    d = await startTetherdWithBusybox({ driver: 'dev' });
  });
  after(async () => d?.dispose());

  it('garbage bytes get 400 and the connection closed; the daemon keeps serving', async (t) => {
    if (!ready(t)) return;
    const garbage = await rawExchange(
      d!.socket,
      Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a]),
    );
    assert.match(garbage, /^HTTP\/1\.1 400 Bad Request\r\n/);
    const badLine = await rawExchange(d!.socket, 'GET /_ping HTTP/9.9 junk\r\n\r\n');
    assert.match(badLine, /^HTTP\/1\.1 400 /);
    const badHeader = await rawExchange(d!.socket, 'GET /_ping HTTP/1.1\r\nHost docker\r\n\r\n');
    assert.match(badHeader, /^HTTP\/1\.1 400 /);
    // Half a request, then the client goes.
    const half = connect(d!.socket);
    half.write('POST /v1.47/containers/create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"Ima');
    await sleep(50);
    half.destroy();
    await stillServing();
  });

  it('malformed JSON in a create is a 400 naming the JSON problem', async (t) => {
    const daemon = ready(t);
    if (!daemon) return;
    const result = await daemon.http(
      'POST',
      '/v1.47/containers/create',
      '{"Image": "x", "Cmd": [',
      JSON_HEADERS,
    );
    assert.equal(result.status, 400);
    assert.match(message(result.body), /^invalid JSON in the request body: .*(JSON|Unexpected|Expected)/);
    const notObject = await daemon.http('POST', '/v1.47/containers/create', '[1, 2]', JSON_HEADERS);
    assert.equal(notObject.status, 400, notObject.body);
    await stillServing();
  });

  it('a wrong type is a 400 naming the field', async (t) => {
    const daemon = ready(t);
    if (!daemon) return;
    const cmd = await daemon.http(
      'POST',
      '/v1.47/containers/create',
      JSON.stringify({ Image: IMG, Cmd: 5 }),
      JSON_HEADERS,
    );
    assert.equal(cmd.status, 400);
    assert.match(message(cmd.body), /\bCmd\b/);
    const env = await daemon.http(
      'POST',
      '/v1.47/containers/create',
      JSON.stringify({ Image: IMG, Cmd: ['true'], Env: 'A=1' }),
      JSON_HEADERS,
    );
    assert.equal(env.status, 400);
    assert.match(message(env.body), /\bEnv\b/);
    const nested = await daemon.http(
      'POST',
      '/v1.47/containers/create',
      JSON.stringify({ Image: IMG, Cmd: ['true'], HostConfig: { AutoRemove: 'yes' } }),
      JSON_HEADERS,
    );
    assert.equal(nested.status, 400);
    assert.match(message(nested.body), /AutoRemove/);
    assert.equal(await ok(['ps', '-a', '-q']), '', 'nothing was created');
  });

  it('an unknown endpoint is a 404 {"message":"page not found"}', async (t) => {
    const daemon = ready(t);
    if (!daemon) return;
    for (const [method, path] of [
      ['GET', '/v1.47/nothing/here'],
      ['GET', '/nothing'],
      ['POST', '/v1.47/containers/x/teleport'],
    ] as const) {
      const result = await daemon.http(method, path);
      assert.equal(result.status, 404, `${method} ${path}`);
      assert.deepEqual(JSON.parse(result.body), { message: 'page not found' });
      assert.match(String(result.headers['content-type']), /application\/json/);
    }
  });

  it('a 5 MiB JSON body is a 413, declared or chunked', async (t) => {
    const daemon = ready(t);
    if (!daemon) return;
    const huge = JSON.stringify({ Image: IMG, Cmd: ['echo', 'x'.repeat(5 * 1024 * 1024)] });
    const declared = await daemon.http('POST', '/v1.47/containers/create', huge, JSON_HEADERS);
    assert.equal(declared.status, 413);
    assert.match(message(declared.body), /too large/);
    const chunked = await daemon.http('POST', '/v1.47/containers/create', huge, {
      ...JSON_HEADERS,
      'Transfer-Encoding': 'chunked',
    });
    assert.equal(chunked.status, 413);
    await stillServing();
    assert.equal(await ok(['ps', '-a', '-q']), '');
  });

  it('missing containers: inspect exits 1 with the CLI’s "No such object", the API answers 404', async (t) => {
    const daemon = ready(t);
    if (!daemon) return;
    const inspect = await daemon.docker(['inspect', 'nosuch']);
    assert.equal(inspect.code, 1);
    // The CLI's inspect tries every object type and prints its own message.
    assert.match(inspect.stderr, /^Error: No such object: nosuch$/m);
    const logs = await daemon.docker(['logs', 'nosuch']);
    assert.equal(logs.code, 1);
    assert.match(logs.stderr, /No such container: nosuch/);
    const raw = await daemon.http('GET', '/v1.47/containers/nosuch/json');
    assert.equal(raw.status, 404);
    assert.deepEqual(JSON.parse(raw.body), { message: 'No such container: nosuch' });
    const start = await daemon.docker(['start', 'nosuch']);
    assert.notEqual(start.code, 0);
    assert.match(start.stderr, /No such container: nosuch/);
  });

  it('docker run of a missing image exits 125 and says why the pull the CLI tries failed', async (t) => {
    const daemon = ready(t);
    if (!daemon) return;
    // A registry name on a closed loopback port: the pull fails here, without the network.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const image = `127.0.0.1:${port}/tdk/missing:1`;
    const run = await daemon.docker(['run', image, 'true']);
    assert.equal(run.code, 125);
    assert.match(
      run.stderr,
      new RegExp(`Unable to find image '127\\.0\\.0\\.1:${port}/tdk/missing:1' locally`),
    );
    assert.match(
      run.stderr,
      new RegExp(`cannot reach the registry at http://127\\.0\\.0\\.1:${port}/v2/: .*ECONNREFUSED`),
    );
    const create = await daemon.http(
      'POST',
      '/v1.47/containers/create',
      JSON.stringify({ Image: 'tdk/missing:1', Cmd: ['true'] }),
      JSON_HEADERS,
    );
    assert.equal(create.status, 404, 'a 404 is what makes the CLI try a pull');
    assert.match(message(create.body), /No such image: tdk\/missing:1/);
  });

  it('a client leaving mid logs -f costs nothing: the daemon serves, the container runs, logs still work', async (t) => {
    if (!ready(t)) return;
    const id = await ok([
      'run',
      '-d',
      IMG,
      'sh',
      '-c',
      'i=0; while true; do echo $i; i=$((i+1)); sleep 0.02; done',
    ]);
    for (let round = 0; round < 3; round++) {
      const cli = spawn('docker', ['-H', d!.host, 'logs', '-f', id], { stdio: ['ignore', 'pipe', 'ignore'] });
      let seen = 0;
      cli.stdout.on('data', (chunk: Buffer) => (seen += chunk.length));
      await eventually('logs -f output', () => seen > 20);
      const exited = new Promise((resolve) => cli.once('exit', resolve));
      cli.kill('SIGKILL');
      await exited;
    }
    // A raw follower that goes without a word.
    const raw = connect(d!.socket);
    raw.write(`GET /v1.47/containers/${id}/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: docker\r\n\r\n`);
    await sleep(200);
    raw.destroy();
    await stillServing();
    assert.equal(await ok(['inspect', '-f', '{{.State.Status}}', id]), 'running');
    const tail = await ok(['logs', '--tail', '1', id]);
    assert.match(tail, /^\d+$/);
    await ok(['rm', '-f', id]);
  });

  it('a docker load cut off halfway leaves no image; the whole archive then loads', async (t) => {
    if (!ready(t)) return;
    const tag = 'tdk/half:1';
    const archive = await retaggedArchive(tag);
    for (const fraction of [0.1, 0.5, 0.95]) {
      const cli = spawn('docker', ['-H', d!.host, 'load'], { stdio: ['pipe', 'ignore', 'ignore'] });
      cli.stdin.on('error', () => undefined);
      cli.stdin.write(archive.subarray(0, Math.floor(archive.length * fraction)));
      await sleep(300);
      const exited = new Promise((resolve) => cli.once('exit', resolve));
      cli.kill('SIGKILL');
      await exited;
      await sleep(200);
      const images = await ok(['images', '--format', '{{.Repository}}:{{.Tag}}']);
      assert.equal(images, 'tether/busybox:latest', `after a load cut at ${fraction}`);
      await eventually('the cut load’s temporary files to go', () => loadLeftovers().length === 0, 5000);
    }
    // Input that ends early (the client half-closes) is refused, not half-loaded.
    const truncated = await d!.docker(['load'], { input: archive.subarray(0, archive.length >> 1) });
    assert.notEqual(truncated.code, 0, 'a truncated archive is an error');
    assert.match(truncated.stderr, /Error response from daemon: .*(archive|tar|end)/i);
    assert.deepEqual(loadLeftovers(), []);
    assert.equal(await ok(['images', '--format', '{{.Repository}}:{{.Tag}}']), 'tether/busybox:latest');
    await stillServing();

    const whole = await d!.docker(['load'], { input: archive });
    assert.equal(whole.code, 0, whole.stderr);
    assert.match(whole.stdout, /Loaded image: tdk\/half:1/);
    const id = await ok(['run', '-d', tag, 'sleep', '30']);
    assert.equal(await ok(['inspect', '-f', '{{.Config.Image}} {{.State.Status}}', id]), `${tag} running`);
    await ok(['rm', '-f', id]);
    await ok(['rmi', tag]);
  });
});
