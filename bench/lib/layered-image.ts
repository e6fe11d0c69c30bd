/**
 * A synthetic image of ten layers for the image-layer bench, as a model (which files each layer adds,
 * deletes or hides) and as Docker layer tars. The lowest layer carries a busybox root (so that a container
 * can run in it) and most of the bytes; every upper layer replaces files of the ones below, adds some and
 * deletes one; one deletes a directory, one makes a directory opaque, one replaces a batch of small files.
 * All synthetic files live under /data, so that a container can digest exactly them and the bench can
 * check the digest against the model's.
 *
 * Contents are deterministic (AES-CTR of zeros, keyed by the file's seed): random files are incompressible,
 * text files compress as text does; the same seed gives the same bytes in every run.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import tarStream from 'tar-stream';

const MIB = 1024 * 1024;
const MTIME = new Date('2024-05-01T12:00:00Z');
type PackHeader = Parameters<tarStream.Pack['entry']>[0];

/** One layer as its tar carries it. Paths are relative to the root, without a leading slash. */
export interface LayerModel {
  /** Files the layer adds or replaces. */
  files: Map<string, Buffer>;
  /** Paths it deletes (with everything under them): `.wh.NAME` whiteouts. */
  deletes: string[];
  /** Directories whose lower contents it hides: `.wh..wh..opq`. */
  opaque: string[];
}

/** A tar member copied as it is (the busybox root's entries). */
export interface RawMember {
  header: tarStream.Header;
  data: Buffer;
}

/** Deterministic incompressible bytes for `seed`. */
export function noise(seed: string, bytes: number): Buffer {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(bytes));
}

/** Deterministic text (words and line breaks) of `bytes` bytes for `seed`. */
export function text(seed: string, bytes: number): Buffer {
  const words = ['layer', 'image', 'disk', 'cluster', 'tether', 'guest', 'host', 'delta', 'chain', 'root'];
  const picks = noise(seed, bytes);
  const out = Buffer.alloc(bytes, 0x20);
  let at = 0;
  for (let i = 0; at < bytes; i++) {
    const pick = picks[i % bytes]!;
    at += out.write(`${words[pick % words.length]!}${pick % 9 === 0 ? '\n' : ' '}`, at);
  }
  return out;
}

const pad3 = (n: number): string => String(n).padStart(3, '0');

/**
 * The ten layers, about `mib` MiB of file data in all (plus the busybox root). `top` names the variant of
 * the top layer: two images with different `top` share the lower nine layers byte for byte.
 */
export function tenLayers(mib: number, top = 'a'): LayerModel[] {
  // A whole number of 8 KiB, so that every size below (halves included) is whole bytes.
  const unit = Math.max(8192, Math.round((mib / 40) * (MIB / 8192)) * 8192);
  const lowest = new Map<string, Buffer>([
    ['data/layer0', Buffer.from('lowest\n')],
    ['data/top', Buffer.from('layer-0\n')],
    ['data/big.bin', noise('big', 8 * unit)],
    ['data/text.txt', text('text', 8 * unit)],
    ['data/old/a.bin', noise('old-a', unit)],
    ['data/old/sub/b.txt', text('old-b', unit)],
    ['data/opaque/x-0.txt', text('x-0', unit / 2)],
    ['data/opaque/x-1.txt', text('x-1', unit / 2)],
  ]);
  for (let f = 0; f < 4; f++) lowest.set(`data/base-${f}.bin`, noise(`base-${f}`, unit));
  for (let f = 0; f < 120; f++) lowest.set(`data/small/s-${pad3(f)}.txt`, text(`small-${f}`, 4096));
  const layers: LayerModel[] = [{ files: lowest, deletes: [], opaque: [] }];
  for (let i = 1; i < 10; i++) {
    // The top layer's seeds carry its variant: a different top layer is different bytes throughout.
    const seed = i === 9 ? `${i}${top}` : `${i}`;
    const files = new Map<string, Buffer>([
      ['data/top', Buffer.from(`layer-${seed}\n`)],
      ['data/shared.txt', text(`shared-${seed}`, unit / 2)],
      [`data/new-${i}.bin`, noise(`new-bin-${seed}`, unit)],
      [`data/new-${i}.txt`, text(`new-txt-${seed}`, unit / 2)],
    ]);
    const deletes = [i === 1 ? 'data/base-0.bin' : `data/new-${i - 1}.bin`];
    const opaque: string[] = [];
    if (i === 3)
      for (let f = 0; f < 30; f++) files.set(`data/small/s-${pad3(f)}.txt`, text(`small-${f}-3`, 4096));
    if (i === 5) deletes.push('data/old');
    if (i === 7) {
      opaque.push('data/opaque');
      files.set('data/opaque/y.txt', text('y', unit / 2));
    }
    layers.push({ files, deletes, opaque });
  }
  return layers;
}

const under = (path: string, dir: string): boolean => path === dir || path.startsWith(`${dir}/`);

/** The files after applying `layers` in order, as a container sees them. */
export function mergedFiles(layers: readonly LayerModel[]): Map<string, Buffer> {
  let tree = new Map<string, Buffer>();
  for (const layer of layers) {
    const hidden = (path: string): boolean =>
      layer.deletes.some((gone) => under(path, gone)) ||
      layer.opaque.some((dir) => path.startsWith(`${dir}/`));
    tree = new Map([...tree].filter(([path]) => !hidden(path)));
    for (const [path, data] of layer.files) tree.set(path, data);
  }
  return tree;
}

/**
 * What `cd /data && find . -type f | sort | xargs md5sum | md5sum` prints first (busybox's tools, byte
 * order) for the files under data/ of `files`.
 */
export function dataDigest(files: Map<string, Buffer>): string {
  const lines = [...files.keys()]
    .filter((path) => path.startsWith('data/'))
    .map((path) => `./${path.slice('data/'.length)}`)
    .sort()
    .map(
      (rel) =>
        `${createHash('md5')
          .update(files.get(`data/${rel.slice(2)}`)!)
          .digest('hex')}  ${rel}\n`,
    );
  return createHash('md5').update(lines.join('')).digest('hex');
}

/** The entries of a tar file, each with its data in memory (for small tars: the busybox root). */
export async function readMembers(path: string): Promise<RawMember[]> {
  const extract = tarStream.extract();
  const members: RawMember[] = [];
  extract.on('entry', (header, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: unknown) => void chunks.push(chunk as Buffer));
    stream.on('end', () => {
      members.push({ header, data: Buffer.concat(chunks) });
      next();
    });
  });
  const done = new Promise<void>((resolve, reject) => {
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  extract.end(readFileSync(path));
  await done;
  return members;
}

/** Every directory above `path`, outermost first (`a/b/c` → `a`, `a/b`). */
function parents(path: string): string[] {
  const parts = path.split('/').slice(0, -1);
  return parts.map((_, i) => parts.slice(0, i + 1).join('/'));
}

/**
 * The layer as a Docker layer tar: `base` first (the busybox root, in the lowest layer), then directories,
 * opaque markers, whiteouts and files, in Docker's whiteout form.
 */
export async function layerTar(layer: LayerModel, base: readonly RawMember[] = []): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk: unknown) => void chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  const add = (header: PackHeader, data: Buffer = Buffer.alloc(0)): Promise<void> =>
    new Promise((resolve, reject) =>
      pack.entry(header, data, (error) => (error ? reject(error) : resolve())),
    );
  const file = (name: string, data: Buffer = Buffer.alloc(0)): Promise<void> =>
    add({ name, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: MTIME }, data);
  const names = [...layer.files.keys(), ...layer.deletes, ...layer.opaque.map((dir) => `${dir}/x`)];
  const dirs = [...new Set(names.flatMap(parents))].sort();
  for (const member of base) await add(member.header, member.data);
  for (const dir of dirs) await add({ name: `${dir}/`, type: 'directory', mode: 0o755, mtime: MTIME });
  for (const dir of layer.opaque) await file(`${dir}/.wh..wh..opq`);
  for (const gone of layer.deletes) {
    const at = gone.lastIndexOf('/');
    await file(`${gone.slice(0, at + 1)}.wh.${gone.slice(at + 1)}`);
  }
  for (const [name, data] of layer.files) await file(name, data);
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}
