#!/usr/bin/env node
// Wraps a root filesystem tarball as a one-layer image in `docker save` form, so that `docker load` (tetherd's,
// or a real Docker's) takes it without a Docker engine to build it.
//
//   node init-image/make-docker-image.mjs ROOTFS.tar OUT.tar [--tag NAME:TAG]
//
// ROOTFS.tar becomes the layer as it is (its sha256 is the layer's diff id); the image config says linux/amd64,
// Cmd ["sh"], the usual PATH, one history entry. Every timestamp is SOURCE_DATE_EPOCH (default 0), keys are
// written in a fixed order and members are sorted, so the same input gives the same bytes and image id.
// Members: manifest.json, repositories, <config sha256>.json, <diff id hex>/layer.tar.
import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, renameSync, rmSync, statSync } from 'node:fs';
import process from 'node:process';
import { pipeline } from 'node:stream/promises';
import tarStream from 'tar-stream';

const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function usage(message) {
  if (message) process.stderr.write(`make-docker-image: ${message}\n`);
  process.stderr.write('usage: node init-image/make-docker-image.mjs ROOTFS.tar OUT.tar [--tag NAME:TAG]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const positional = [];
  let tag = 'tether/busybox:latest';
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--tag') {
      tag = argv[++i];
      if (!tag) usage('--tag needs NAME:TAG');
    } else if (argv[i].startsWith('-')) usage(`unknown option ${argv[i]}`);
    else positional.push(argv[i]);
  }
  if (positional.length !== 2) usage();
  const colon = tag.lastIndexOf(':');
  if (colon <= tag.lastIndexOf('/')) usage(`--tag wants NAME:TAG, got ${tag}`);
  return { rootfs: positional[0], out: positional[1], tag };
}

async function sha256File(path) {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk);
  return hash.digest('hex');
}

/** The image config; key order fixed (the id is the sha256 of these bytes). */
function imageConfig(diffId, created, tag) {
  return {
    architecture: 'amd64',
    config: { Env: [`PATH=${PATH}`], Cmd: ['sh'] },
    created,
    history: [{ created, created_by: `init-image/make-docker-image.mjs (${tag})` }],
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [`sha256:${diffId}`] },
  };
}

/** Adds a member whose bytes come from `file`, streamed (the pack waits for each entry in turn). */
function fileEntry(pack, header, file) {
  return new Promise((resolve, reject) => {
    const sink = pack.entry(header, (error) => (error ? reject(error) : resolve()));
    const source = createReadStream(file);
    source.on('error', reject);
    source.on('data', (chunk) => {
      if (!sink.write(chunk)) {
        source.pause();
        sink.once('drain', () => source.resume());
      }
    });
    source.on('end', () => sink.end());
  });
}

function bufferEntry(pack, header, bytes) {
  return new Promise((resolve, reject) => {
    pack.entry({ ...header, size: bytes.length }, bytes, (error) => (error ? reject(error) : resolve()));
  });
}

async function main() {
  const { rootfs, out, tag } = parseArgs(process.argv.slice(2));
  const epoch = Number(process.env.SOURCE_DATE_EPOCH ?? 0);
  if (!Number.isInteger(epoch) || epoch < 0) usage(`SOURCE_DATE_EPOCH must be whole seconds, got ${epoch}`);
  const mtime = new Date(epoch * 1000);
  const created = mtime.toISOString().replace(/\.000Z$/, 'Z');
  const diffId = await sha256File(rootfs);
  const config = Buffer.from(JSON.stringify(imageConfig(diffId, created, tag)));
  const configId = createHash('sha256').update(config).digest('hex');
  const colon = tag.lastIndexOf(':');
  const manifest = [{ Config: `${configId}.json`, RepoTags: [tag], Layers: [`${diffId}/layer.tar`] }];
  const repositories = { [tag.slice(0, colon)]: { [tag.slice(colon + 1)]: diffId } };

  const common = { mtime, uid: 0, gid: 0, uname: '', gname: '' };
  const pack = tarStream.pack();
  const partial = `${out}.partial`;
  const written = pipeline(pack, createWriteStream(partial));
  try {
    // Sorted by name, as `docker save` writes them.
    await bufferEntry(pack, { ...common, name: `${configId}.json`, mode: 0o644 }, config);
    await bufferEntry(
      pack,
      { ...common, name: `${diffId}/`, type: 'directory', mode: 0o755 },
      Buffer.alloc(0),
    );
    await fileEntry(
      pack,
      { ...common, name: `${diffId}/layer.tar`, mode: 0o644, size: statSync(rootfs).size },
      rootfs,
    );
    await bufferEntry(
      pack,
      { ...common, name: 'manifest.json', mode: 0o644 },
      Buffer.from(JSON.stringify(manifest)),
    );
    await bufferEntry(
      pack,
      { ...common, name: 'repositories', mode: 0o644 },
      Buffer.from(JSON.stringify(repositories)),
    );
    pack.finalize();
    await written;
    renameSync(partial, out);
  } catch (error) {
    pack.destroy(error);
    await written.catch(() => undefined);
    rmSync(partial, { force: true });
    throw error;
  }
  process.stderr.write(`make-docker-image: ${out}: ${tag}, image id sha256:${configId}\n`);
}

main().catch((error) => {
  process.stderr.write(`make-docker-image: ${error.message}\n`);
  process.exit(1);
});
