/**
 * Small image archives built in memory with tar-stream: layer tars, `docker save` tarballs and OCI image
 * layouts, with knobs to break them in every way the store must refuse.
 */
import { createHash } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import tarStream from 'tar-stream';
import {
  LayerTree,
  type FlatEntry,
  type RawHeader,
} from '../../../../hostside/src/daemon/images/layer-tree.ts';

export const MTIME = new Date('2024-05-01T12:00:00Z');

export interface Member {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  data?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  mtime?: Date;
  /** pax records (xattrs as SCHILY.xattr.NAME or LIBARCHIVE.xattr.NAME, for one). */
  pax?: Record<string, string>;
}

export async function tarOf(members: readonly Member[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    pack.on('end', () => resolve());
    pack.on('error', reject);
  });
  for (const member of members) {
    const type = member.type ?? 'file';
    const data = Buffer.from(member.data ?? '');
    await new Promise<void>((resolve, reject) => {
      pack.entry(
        {
          name: member.name,
          type,
          mode: member.mode ?? (type === 'directory' ? 0o755 : 0o644),
          uid: member.uid ?? 0,
          gid: member.gid ?? 0,
          mtime: member.mtime ?? MTIME,
          ...(member.linkname !== undefined ? { linkname: member.linkname } : {}),
          ...(member.devmajor !== undefined
            ? { devmajor: member.devmajor, devminor: member.devminor ?? 0 }
            : {}),
          ...(member.pax ? { pax: member.pax } : {}),
        },
        type === 'file' ? data : Buffer.alloc(0),
        (error) => (error ? reject(error) : resolve()),
      );
    });
  }
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}

export const sha256 = (bytes: Buffer): string => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
const hex = (digest: string): string => digest.slice('sha256:'.length);

export interface SaveOptions {
  layers: Buffer[];
  /** Default: sha256 of each (plain) layer; for gzip layers pass the plain tars' digests. */
  diffIds?: string[];
  repoTags?: string[];
  /** Merged over the default linux/amd64 config. */
  config?: Record<string, unknown>;
  /** The config member's name; default `<its sha256>.json`. */
  configName?: string;
  /** Members left out of the archive. */
  omit?: string[];
  /** Replaces manifest.json's bytes. */
  manifest?: string;
}

export function imageConfig(diffIds: string[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architecture: 'amd64',
    os: 'linux',
    created: '2024-05-01T12:00:00Z',
    config: { Env: ['PATH=/bin'], Cmd: ['sh'], WorkingDir: '/', Labels: { tier: 'test' }, Entrypoint: null },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map(() => ({ created: '2024-05-01T12:00:00Z', created_by: 'test' })),
    ...extra,
  };
}

/** A `docker save` tarball (the classic layout: `<config hex>.json`, `<n>/layer.tar`, manifest.json). */
export async function dockerSave(options: SaveOptions): Promise<{ archive: Buffer; id: string }> {
  const diffIds = options.diffIds ?? options.layers.map(sha256);
  const config = Buffer.from(JSON.stringify(imageConfig(diffIds, options.config)));
  const id = sha256(config);
  const configName = options.configName ?? `${hex(id)}.json`;
  const layerNames = options.layers.map((_, index) => `layer${index}/layer.tar`);
  const manifest =
    options.manifest ??
    JSON.stringify([
      { Config: configName, RepoTags: options.repoTags ?? ['test/image:latest'], Layers: layerNames },
    ]);
  const members: Member[] = [
    { name: configName, data: config },
    ...options.layers.map((layer, index) => ({ name: layerNames[index]!, data: layer })),
    { name: 'manifest.json', data: manifest },
  ];
  const omit = new Set(options.omit ?? []);
  return { archive: await tarOf(members.filter((member) => !omit.has(member.name))), id };
}

/** An OCI image layout with gzip-compressed layers and the image named by containerd's annotation. */
export async function ociLayout(
  layers: Buffer[],
  name: string,
  platform = { os: 'linux', architecture: 'amd64' },
) {
  const gz = layers.map((layer) => gzipSync(layer));
  const config = Buffer.from(JSON.stringify(imageConfig(layers.map(sha256), platform)));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: sha256(config),
        size: config.length,
      },
      layers: gz.map((blob) => ({
        mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
        digest: sha256(blob),
        size: blob.length,
      })),
    }),
  );
  const index = {
    schemaVersion: 2,
    manifests: [
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: sha256(manifest),
        size: manifest.length,
        platform,
        annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': 'latest' },
      },
    ],
  };
  const blob = (bytes: Buffer): Member => ({ name: `blobs/sha256/${hex(sha256(bytes))}`, data: bytes });
  const archive = await tarOf([
    { name: 'blobs/', type: 'directory' },
    { name: 'blobs/sha256/', type: 'directory' },
    blob(config),
    blob(manifest),
    ...gz.map(blob),
    { name: 'index.json', data: JSON.stringify(index) },
    { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
  ]);
  return { archive, id: sha256(config) };
}

export interface ListedEntry {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkname?: string;
  data?: string;
  dev?: string;
}

/** Every entry of a tar, with file contents as text. */
export async function listTar(bytes: Buffer): Promise<ListedEntry[]> {
  const extract = tarStream.extract();
  const out: ListedEntry[] = [];
  extract.on('entry', (header, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk) => chunks.push(chunk as Buffer));
    stream.on('end', () => {
      out.push({
        name: header.name,
        type: header.type,
        mode: header.mode,
        uid: header.uid,
        gid: header.gid,
        mtime: header.mtime.getTime(),
        ...(header.linkname ? { linkname: header.linkname } : {}),
        ...(header.type === 'file' ? { data: Buffer.concat(chunks).toString() } : {}),
        ...(header.type === 'character-device' || header.type === 'block-device'
          ? { dev: `${header.devmajor},${header.devminor}` }
          : {}),
      });
      next();
    });
  });
  extract.end(bytes);
  await new Promise<void>((resolve, reject) => {
    extract.on('finish', () => resolve());
    extract.on('error', reject);
  });
  return out;
}

/** Every path under `dir` with its size, to show that a refused load left nothing behind. */
export function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (path: string, rel: string): void => {
    for (const name of readdirSync(path).sort()) {
      const full = join(path, name);
      const stat = statSync(full);
      out.push(`${rel}${name}${stat.isDirectory() ? '/' : ` ${stat.size}`}`);
      if (stat.isDirectory()) walk(full, `${rel}${name}/`);
    }
  };
  walk(dir, '');
  return out;
}

/** The files of one `docker save` tarball, by name. */
export async function membersOf(archive: Buffer): Promise<Map<string, Buffer>> {
  const members = new Map<string, Buffer>();
  const extract = tarStream.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: unknown) => void chunks.push(chunk as Buffer));
      stream.on('end', () => {
        if (header.type === 'file') members.set(header.name, Buffer.concat(chunks));
        next();
      });
      stream.on('error', reject);
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  extract.end(archive);
  await done;
  return members;
}

/** The layers (plain tars in memory, bottom first) merged by LayerTree: the store's model, as an oracle. */
export async function mergedLayers(tars: readonly Buffer[]): Promise<LayerTree> {
  const tree = new LayerTree();
  for (const [layer, tar] of tars.entries()) {
    const extract = tarStream.extract();
    const done = new Promise<void>((resolve, reject) => {
      extract.on('entry', (header, stream, next) => {
        const offset = (header as { byteOffset?: number }).byteOffset ?? 0;
        tree.apply(layer, header as RawHeader, offset, `layer ${layer}`);
        stream.on('end', () => next());
        stream.resume();
      });
      extract.on('finish', resolve);
      extract.on('error', reject);
    });
    extract.end(tar);
    await done;
  }
  return tree;
}

/** The bytes of a merged regular file, read from the layer tar that holds them. */
export function fileBytes(tars: readonly Buffer[], entry: FlatEntry & { kind: 'inode' }): Buffer {
  return tars[entry.layer]!.subarray(entry.offset, entry.offset + entry.header.size);
}

/**
 * A `docker save` tarball of the one image in `baseArchive` (another `docker save`) with `layers` on top,
 * tagged `repoTag`, its config's `config` merged with `config` (a new Cmd, say).
 */
export async function imageOnBase(
  baseArchive: Buffer,
  layers: Buffer[],
  repoTag: string,
  config: Record<string, unknown>,
): Promise<Buffer> {
  const members = await membersOf(baseArchive);
  const [manifest] = JSON.parse(members.get('manifest.json')!.toString()) as Array<{
    Config: string;
    Layers: string[];
  }>;
  const base = JSON.parse(members.get(manifest!.Config)!.toString()) as { config: Record<string, unknown> };
  const { archive } = await dockerSave({
    layers: [...manifest!.Layers.map((name) => members.get(name)!), ...layers],
    repoTags: [repoTag],
    config: { config: { ...base.config, ...config } },
  });
  return archive;
}
