/**
 * The outer archive of `docker load` (a `docker save` tarball or an OCI image layout, plain or gzip) read
 * once, as a stream: every file is spooled to a numbered temporary file while hashed, so no layer is held in
 * memory, and the archive's order does not matter (manifest.json usually comes last).
 */
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tarStream from 'tar-stream';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import { asInvalid, HashTap, sniffCompression } from './layers.ts';

/** JSON documents (manifests, configs, indexes) are read into memory; nothing real comes near this. */
const DOCUMENT_MAX = 16 * 1024 * 1024;
const SYMLINK_HOPS = 16;

export interface SpooledFile {
  name: string;
  /** The temporary file holding its bytes. */
  file: string;
  /** `sha256:<hex>` of its bytes. */
  sha256: string;
  size: number;
}

/** Pure: an archive member name as manifests refer to it (`./a//b/` → `a/b`). */
export function memberName(name: string): string {
  const normal = posix.normalize(`/${name}`).replace(/\/+$/, '');
  return normal.slice(1);
}

export class SpooledArchive {
  readonly files = new Map<string, SpooledFile>();
  readonly symlinks = new Map<string, string>();

  /** The file `name` names, following the archive's own symlinks (old `docker save` links shared layers). */
  get(name: string): SpooledFile | undefined {
    let current = memberName(name);
    for (let hop = 0; hop <= SYMLINK_HOPS; hop++) {
      const file = this.files.get(current);
      if (file) return file;
      const target = this.symlinks.get(current);
      if (target === undefined) return undefined;
      current = memberName(target.startsWith('/') ? target : posix.join(posix.dirname(current), target));
    }
    return undefined;
  }

  /** A JSON document of the archive, or undefined when absent; refuses one over 16 MiB. */
  async document(name: string): Promise<Buffer | undefined> {
    const file = this.get(name);
    if (!file) return undefined;
    if (file.size > DOCUMENT_MAX)
      throw new TetherError(
        'TETHER_IMAGE_INVALID',
        `${name} is ${file.size} bytes, too large for a JSON document`,
      );
    return readFile(file.file);
  }
}

/** Yields `head` (already read from `input`) and then the rest of `input`. */
async function* withHead(head: Buffer, rest: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  if (head.length > 0) yield head;
  yield* rest;
}

/** Reads `input` into `dir` (which must exist). `onFile` hears of each file as it is spooled. */
export async function spoolArchive(
  input: Readable,
  dir: string,
  onFile?: (file: SpooledFile) => void,
): Promise<SpooledArchive> {
  const iterator = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let head = Buffer.alloc(0);
  let ended = false;
  while (head.length < 8) {
    const next = await iterator.next();
    if (next.done) {
      ended = true;
      break;
    }
    head = Buffer.concat([head, Buffer.from(next.value)]);
  }
  async function* rest(): AsyncGenerator<Buffer> {
    if (ended) return;
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      yield next.value;
    }
  }
  const compression = sniffCompression(head);
  if (compression !== 'none' && compression !== 'gzip')
    throw new TetherError(
      'TETHER_IMAGE_UNSUPPORTED',
      `the archive is compressed with ${compression}; send it plain or gzip-compressed`,
    );

  const archive = new SpooledArchive();
  let count = 0;
  const extract = tarStream.extract();
  extract.on('entry', (header, stream, next) => {
    const name = memberName(header.name);
    const type = header.type;
    if (type === 'file' || type === 'contiguous-file') {
      const spooled = join(dir, String(count++));
      const tap = new HashTap();
      pipeline(stream, tap, createWriteStream(spooled)).then(
        () => {
          const file = { name, file: spooled, sha256: tap.digest(), size: tap.bytes };
          archive.files.set(name, file);
          archive.symlinks.delete(name);
          onFile?.(file);
          next();
        },
        (error: unknown) => next(error as Error),
      );
      return;
    }
    if (type === 'symlink') archive.symlinks.set(name, header.linkname ?? '');
    else if (type === 'link') {
      const target = archive.get(header.linkname ?? '');
      if (target) archive.files.set(name, { ...target, name });
    }
    stream.on('end', () => next());
    stream.resume();
  });
  const source = Readable.from(withHead(head, rest()), { objectMode: false });
  try {
    if (compression === 'gzip') await pipeline(source, createGunzip(), extract);
    else await pipeline(source, extract);
  } catch (error) {
    throw asInvalid(
      error,
      compression === 'gzip'
        ? 'the archive is not a valid gzip-compressed tar'
        : 'the archive is not a valid tar',
    );
  }
  return archive;
}
