/**
 * Layer files on disk → one flattened root filesystem tar. A layer is a plain tar or a gzip-compressed one
 * (decompressed to a file first, so that its entries can be read back by offset); its diff id is the sha256
 * of the plain tar. Nothing is held in memory but the tree of names (layer-tree.ts).
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tarStream from 'tar-stream';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import { LayerTree, type FlatEntry, type RawHeader } from './layer-tree.ts';

const COPY_CHUNK = 1024 * 1024;

export type Compression = 'none' | 'gzip' | 'zstd' | 'xz' | 'bzip2';

/** Pure: what the first bytes of a layer (or archive) say about its compression. */
export function sniffCompression(head: Buffer): Compression {
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return 'zstd';
  if (head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (head.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
  return 'none';
}

async function readHead(file: string, length = 512): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** A pass-through that hashes what flows by. */
export class HashTap extends Transform {
  readonly #hash = createHash('sha256');
  bytes = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  digest(): string {
    return `sha256:${this.#hash.digest('hex')}`;
  }
}

/** Errors of the data (bad tar, bad gzip) become TETHER_IMAGE_INVALID; the host's own (ENOSPC...) stay. */
export function asInvalid(error: unknown, what: string): unknown {
  if (error instanceof TetherError) return error;
  if (error instanceof Error && 'syscall' in error) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new TetherError('TETHER_IMAGE_INVALID', `${what}: ${message}`, { cause: error });
}

export interface PlainLayer {
  /** A plain tar: the input itself, or its decompressed copy. */
  file: string;
  /** sha256 of the plain tar: the diff id. */
  diffId: string;
  compression: 'none' | 'gzip';
}

/**
 * Makes `file` a plain tar: a gzip layer is decompressed to `plainPath` while hashed; a plain one is used
 * as it is (`knownSha256`, the hash taken while spooling it, is its diff id). Other formats are refused.
 */
export async function plainLayer(
  file: string,
  plainPath: string,
  knownSha256: string,
  what: string,
): Promise<PlainLayer> {
  const compression = sniffCompression(await readHead(file, 8));
  if (compression === 'none') return { file, diffId: knownSha256, compression };
  if (compression !== 'gzip')
    throw new TetherError(
      'TETHER_IMAGE_UNSUPPORTED',
      `${what} is compressed with ${compression}; tetherd takes plain or gzip-compressed layer tars`,
    );
  const tap = new HashTap();
  try {
    await pipeline(createReadStream(file), createGunzip(), tap, createWriteStream(plainPath));
  } catch (error) {
    throw asInvalid(error, `${what} is not a valid gzip stream`);
  }
  return { file: plainPath, diffId: tap.digest(), compression };
}

/** Reads every entry header of a plain layer tar into `tree` (data is skipped, its offset kept). */
export async function scanLayer(tree: LayerTree, layer: number, file: string, what: string): Promise<void> {
  const extract = tarStream.extract();
  extract.on('entry', (header, stream, next) => {
    const offset = (header as { byteOffset?: number }).byteOffset ?? 0;
    try {
      tree.apply(layer, header as RawHeader, offset, what);
    } catch (error) {
      // The extractor destroys the entry stream with the error too: heard here, not as an uncaught one.
      stream.on('error', () => undefined);
      stream.resume();
      next(error as Error);
      return;
    }
    stream.on('end', () => next());
    stream.resume();
  });
  try {
    await pipeline(createReadStream(file), extract);
  } catch (error) {
    throw asInvalid(error, `${what} is not a valid tar`);
  }
}

type PackHeader = Parameters<tarStream.Pack['entry']>[0];
type Sink = ReturnType<tarStream.Pack['entry']>;

function packHeader(entry: FlatEntry): PackHeader {
  const { header } = entry;
  const pax: Record<string, string> = { ...header.xattrs };
  // The ustar id fields hold 6 octal digits as tar-stream writes them; larger ids go as pax records.
  if (header.uid > 0o777777) pax['uid'] = String(header.uid);
  if (header.gid > 0o777777) pax['gid'] = String(header.gid);
  const base = {
    name: entry.kind === 'directory' && entry.path !== '.' ? `${entry.path}/` : entry.path,
    mode: header.mode,
    uid: header.uid,
    gid: header.gid,
    uname: header.uname,
    gname: header.gname,
    mtime: header.mtime,
    ...(Object.keys(pax).length > 0 ? { pax } : {}),
  };
  if (entry.kind === 'link') return { ...base, type: 'link', linkname: entry.target, size: 0 };
  if (entry.kind === 'directory') return { ...base, type: 'directory', size: 0 };
  return {
    ...base,
    type: header.type,
    size: header.size,
    ...(header.type === 'symlink' ? { linkname: header.linkname } : {}),
    ...(header.type === 'character-device' || header.type === 'block-device'
      ? { devmajor: header.devmajor, devminor: header.devminor }
      : {}),
  };
}

async function copyRange(handle: FileHandle, start: number, size: number, sink: Sink): Promise<void> {
  let position = start;
  let left = size;
  while (left > 0) {
    const buffer = Buffer.allocUnsafe(Math.min(left, COPY_CHUNK));
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
    if (bytesRead === 0) throw new TetherError('TETHER_IMAGE_INVALID', 'a layer file ended inside an entry');
    position += bytesRead;
    left -= bytesRead;
    if (!sink.write(buffer.subarray(0, bytesRead)))
      await new Promise<void>((resolve, reject) => {
        const onError = (error: Error): void => {
          sink.off('drain', onDrain);
          reject(error);
        };
        const onDrain = (): void => {
          sink.off('error', onError);
          resolve();
        };
        sink.once('drain', onDrain);
        sink.once('error', onError);
      });
  }
  sink.end(undefined);
}

/** Writes the flattened tree as one tar to `out`, reading file contents from the plain layer tars. */
export async function writeFlatTar(
  entries: readonly FlatEntry[],
  layerFiles: readonly string[],
  out: string,
): Promise<void> {
  const pack = tarStream.pack();
  const written = pipeline(pack, createWriteStream(out));
  const handles = new Map<number, FileHandle>();
  try {
    for (const entry of entries) {
      const header = packHeader(entry);
      let sink: Sink | undefined;
      const done = new Promise<void>((resolve, reject) => {
        sink = pack.entry(header, (error) => (error ? reject(error) : resolve()));
      });
      if (entry.kind === 'inode' && entry.header.type === 'file' && entry.header.size > 0) {
        let handle = handles.get(entry.layer);
        if (!handle) {
          handle = await open(layerFiles[entry.layer]!, 'r');
          handles.set(entry.layer, handle);
        }
        await copyRange(handle, entry.offset, entry.header.size, sink!);
      } else if (entry.kind === 'inode' && entry.header.type === 'file') sink!.end(undefined);
      await done;
    }
    pack.finalize();
    await written;
  } catch (error) {
    pack.destroy(error as Error);
    await written.catch(() => undefined);
    throw error;
  } finally {
    for (const handle of handles.values()) await handle.close();
  }
}

export { LayerTree };
