/**
 * Extended attributes exactly as a layer tar carries them. Docker's layers (Go's archive/tar) store each
 * xattr as a pax record `SCHILY.xattr.NAME=<raw bytes>`, and `security.capability` (a `setcap` in a
 * Dockerfile) is binary; tar-stream decodes pax values as UTF-8 and loses those bytes. So the tar's headers
 * are read a second time here, by position, for the pax records alone: each entry's xattr values as bytes,
 * keyed by where the entry's data starts (tar-stream's `byteOffset` for the same entry).
 *
 * Header layout (POSIX ustar, pax): 512-byte blocks; size at 124 (12 bytes, octal, or base-256 when the
 * first byte has its high bit set), typeflag at 156. `x`: a pax header for the next entry, whose `size`
 * record overrides that entry's size; `g`: a global pax header for all that follow; `L`/`K`: GNU long name
 * and link name; an all-zero block is skipped (as tar-stream does). Pax records: `LEN KEY=VALUE\n`, LEN
 * counting the whole record in bytes.
 */
import { open } from 'node:fs/promises';

const BLOCK = 512;
const XATTR = 'SCHILY.xattr.';
/** A pax header larger than this is not a header (tar-stream refuses past 1 MiB as well). */
const MAX_PAX_BYTES = 1024 * 1024;

/** Pure: the records of one pax extended header, values as bytes; stops at the first malformed record. */
export function parsePaxRecords(data: Buffer): Map<string, Buffer> {
  const records = new Map<string, Buffer>();
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    if (space < 0) break;
    const length = Number(data.subarray(at, space).toString('latin1'));
    if (!Number.isInteger(length) || length <= space - at + 1 || at + length > data.length) break;
    const record = data.subarray(space + 1, at + length - 1); // without the trailing newline
    const equals = record.indexOf(0x3d);
    if (equals > 0)
      records.set(record.subarray(0, equals).toString('utf8'), Buffer.from(record.subarray(equals + 1)));
    at += length;
  }
  return records;
}

/** Pure: a header's size field (octal ASCII, or GNU base-256). */
export function headerSize(header: Buffer): number {
  const field = header.subarray(124, 136);
  if (field[0]! & 0x80) {
    let size = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) size = size * 256 + field[i]!;
    return size;
  }
  const text = field
    .toString('latin1')
    .replace(/[\0 ]+$/, '')
    .replace(/^[\0 ]+/, '');
  return text === '' ? 0 : parseInt(text, 8);
}

const xattrsIn = (records: Map<string, Buffer>): Map<string, Buffer> =>
  new Map(
    [...records]
      .filter(([key]) => key.startsWith(XATTR))
      .map(([key, value]) => [key.slice(XATTR.length), value]),
  );

/**
 * The xattrs of every entry that has any, by the offset of the entry's data in the tar. Entries whose
 * headers cannot be read are left out: tar-stream, reading the same bytes, reports the tar as broken.
 */
export async function exactXattrs(tar: string): Promise<Map<number, Map<string, Buffer>>> {
  const found = new Map<number, Map<string, Buffer>>();
  const handle = await open(tar, 'r');
  try {
    const { size: total } = await handle.stat();
    const header = Buffer.alloc(BLOCK);
    let global = new Map<string, Buffer>();
    let next: Map<string, Buffer> | undefined;
    for (let at = 0; at + BLOCK <= total;) {
      const { bytesRead } = await handle.read(header, 0, BLOCK, at);
      if (bytesRead < BLOCK) break;
      at += BLOCK;
      if (header.every((byte) => byte === 0)) continue;
      const type = String.fromCharCode(header[156]!);
      let size = headerSize(header);
      if (!Number.isFinite(size) || size < 0) break;
      if (type === 'x' || type === 'g') {
        if (size > MAX_PAX_BYTES) break;
        const data = Buffer.alloc(size);
        await handle.read(data, 0, size, at);
        const records = parsePaxRecords(data);
        if (type === 'g') global = new Map([...global, ...records]);
        else next = records;
      } else if (type !== 'L' && type !== 'K') {
        const records = new Map([...global, ...(next ?? [])]);
        const paxSize = records.get('size');
        if (paxSize !== undefined) size = Number(paxSize.toString('latin1'));
        const xattrs = xattrsIn(records);
        if (xattrs.size > 0) found.set(at, xattrs);
        next = undefined;
      }
      at += Math.ceil(size / BLOCK) * BLOCK;
    }
    return found;
  } finally {
    await handle.close();
  }
}

/**
 * Pure: `pax` with every SCHILY.xattr value replaced by its exact bytes, as the base64 LIBARCHIVE.xattr form
 * (URL-encoded name) that carries any byte.
 */
export function withExactXattrs(
  pax: Record<string, string> | null | undefined,
  exact: Map<string, Buffer> | undefined,
): Record<string, string> | null | undefined {
  if (!exact || exact.size === 0) return pax;
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(pax ?? {})) if (!key.startsWith(XATTR)) out[key] = value;
  for (const [name, value] of exact)
    out[`LIBARCHIVE.xattr.${encodeURIComponent(name)}`] = value.toString('base64');
  return out;
}
