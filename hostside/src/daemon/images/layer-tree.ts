/**
 * Layers applied in order into one tree, as overlayfs would show them, without touching the disk: each
 * entry only records where its bytes are (layer, offset). Pure; the I/O is in layers.ts.
 *
 * Whiteouts (the AUFS form Docker uses in layer tars): `.wh.NAME` deletes NAME of the layers below (with
 * everything under it), and `.wh..wh..opq` makes its directory opaque: everything in it that this layer did
 * not write goes. A non-directory replacing a directory drops the whole subtree; a directory over a
 * directory keeps the children and takes the new metadata. Hard links share one inode, so a link whose
 * first name is replaced or deleted later keeps the old contents, as on a real filesystem.
 *
 * Refused (TETHER_IMAGE_INVALID): names or hard-link targets that climb out of the root with `..`, relative
 * symlink targets that do (absolute ones resolve inside the container and are fine), hard links to nothing
 * or to a directory, entries under a path that is not a directory, and entry types a root filesystem
 * cannot hold (sparse files, volume labels).
 */
import { TetherError } from '../../../../protocol/src/errors/errors.ts';

export type EntryType = 'file' | 'directory' | 'symlink' | 'character-device' | 'block-device' | 'fifo';

/** The metadata kept for every entry; extended attributes travel as their pax records. */
export interface EntryHeader {
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  mtime: Date;
  size: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  /** pax records worth keeping (SCHILY.xattr.*), as read. */
  xattrs: Record<string, string>;
}

/** A tar header as tar-stream decodes it (byteOffset: where the entry's data starts in the layer). */
export interface RawHeader {
  name: string;
  type?: string | null | undefined;
  mode?: number | undefined;
  uid?: number | undefined;
  gid?: number | undefined;
  uname?: string | undefined;
  gname?: string | undefined;
  mtime?: Date | undefined;
  size?: number | undefined;
  linkname?: string | null | undefined;
  devmajor?: number | undefined;
  devminor?: number | undefined;
  pax?: Record<string, string> | null | undefined;
}

interface Inode {
  header: EntryHeader;
  layer: number;
  offset: number;
}

interface Node {
  /** Directories only. */
  header?: EntryHeader;
  inode?: Inode;
  children?: Map<string, Node>;
  /** The layer that last wrote this path (-1: made up as a missing parent, or the root). */
  layer: number;
}

/** One entry of the flattened tree, in tar order (parents before children, a link after its target). */
export type FlatEntry =
  | { kind: 'directory'; path: string; header: EntryHeader }
  | { kind: 'inode'; path: string; header: EntryHeader; layer: number; offset: number }
  | { kind: 'link'; path: string; header: EntryHeader; target: string };

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';
const IMPLICIT_DIR: EntryHeader = {
  type: 'directory',
  mode: 0o755,
  uid: 0,
  gid: 0,
  uname: '',
  gname: '',
  mtime: new Date(0),
  size: 0,
  linkname: '',
  devmajor: 0,
  devminor: 0,
  xattrs: {},
};

function invalid(message: string): TetherError {
  return new TetherError('TETHER_IMAGE_INVALID', message);
}

/**
 * Pure: the components of a path inside the root (`/a/./b/../c` → [a, c]), or undefined when `..` climbs
 * above the root.
 */
export function rootedComponents(path: string, base: readonly string[] = []): string[] | undefined {
  const parts = [...base];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length === 0) return undefined;
      parts.pop();
    } else parts.push(part);
  }
  return parts;
}

function headerOf(raw: RawHeader, type: EntryType): EntryHeader {
  const pax = raw.pax ?? {};
  const xattrs: Record<string, string> = {};
  for (const [key, value] of Object.entries(pax))
    if (key.startsWith('SCHILY.xattr.') || key.startsWith('LIBARCHIVE.xattr.')) xattrs[key] = value;
  // tar-stream applies pax path, linkpath and size itself; ids and times past the octal fields come here.
  const paxNumber = (key: string): number | undefined => {
    const value = pax[key] === undefined ? NaN : Number(pax[key]);
    return Number.isFinite(value) ? value : undefined;
  };
  const paxMtime = paxNumber('mtime');
  return {
    type,
    mode: (raw.mode ?? 0) & 0o7777,
    uid: paxNumber('uid') ?? raw.uid ?? 0,
    gid: paxNumber('gid') ?? raw.gid ?? 0,
    uname: pax['uname'] ?? raw.uname ?? '',
    gname: pax['gname'] ?? raw.gname ?? '',
    mtime: paxMtime !== undefined ? new Date(paxMtime * 1000) : (raw.mtime ?? new Date(0)),
    size: type === 'file' ? (raw.size ?? 0) : 0,
    linkname: raw.linkname ?? '',
    devmajor: raw.devmajor ?? 0,
    devminor: raw.devminor ?? 0,
    xattrs,
  };
}

export class LayerTree {
  readonly #root: Node = { header: IMPLICIT_DIR, children: new Map(), layer: -1 };
  #rootSet = false;

  /** Applies one entry of layer `layer` (0 = the bottom one); `what` names the layer in messages. */
  apply(layer: number, raw: RawHeader, offset: number, what: string): void {
    const parts = rootedComponents(raw.name);
    if (!parts) throw invalid(`${what}: entry "${raw.name}" climbs out of the root filesystem`);
    const base = parts.at(-1);
    if (base === undefined) {
      if (raw.type !== 'directory') throw invalid(`${what}: the root entry "${raw.name}" is not a directory`);
      this.#root.header = headerOf(raw, 'directory');
      this.#rootSet = true;
      return;
    }
    const parentParts = parts.slice(0, -1);
    if (base === OPAQUE) {
      const dir = this.#directory(parentParts, layer, raw.name, what);
      this.#clearLower(dir, layer);
      return;
    }
    if (base.startsWith(WHITEOUT)) {
      // Other .wh..wh.* names are AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs): nothing to apply.
      if (base.startsWith(`${WHITEOUT}${WHITEOUT}`)) return;
      const dir = this.#lookup(parentParts);
      dir?.children?.delete(base.slice(WHITEOUT.length));
      return;
    }
    const dir = this.#directory(parentParts, layer, raw.name, what);
    const children = dir.children!;
    const existing = children.get(base);
    switch (raw.type) {
      case 'directory': {
        const header = headerOf(raw, 'directory');
        if (existing?.children) {
          existing.header = header;
          existing.layer = layer;
        } else children.set(base, { header, children: new Map(), layer });
        return;
      }
      case 'link': {
        const targetName = raw.linkname ?? '';
        const targetParts = rootedComponents(targetName);
        if (!targetParts || targetParts.length === 0)
          throw invalid(
            `${what}: hard link "${raw.name}" points out of the root filesystem ("${targetName}")`,
          );
        const target = this.#lookup(targetParts);
        if (!target?.inode)
          throw invalid(
            `${what}: hard link "${raw.name}" points to "${targetName}", which is ${target ? 'a directory' : 'not in the layers so far'}`,
          );
        if (target !== existing) children.set(base, { inode: target.inode, layer });
        return;
      }
      case 'symlink': {
        const target = raw.linkname ?? '';
        if (!target.startsWith('/') && !rootedComponents(target, parentParts))
          throw invalid(`${what}: symlink "${raw.name}" points out of the root filesystem ("${target}")`);
        children.set(base, { inode: { header: headerOf(raw, 'symlink'), layer, offset }, layer });
        return;
      }
      case 'file':
      case 'contiguous-file':
        children.set(base, { inode: { header: headerOf(raw, 'file'), layer, offset }, layer });
        return;
      case 'character-device':
      case 'block-device':
      case 'fifo':
        children.set(base, { inode: { header: headerOf(raw, raw.type), layer, offset }, layer });
        return;
      default:
        throw invalid(
          `${what}: entry "${raw.name}" has a type a root filesystem cannot hold (${raw.type ?? 'unknown'})`,
        );
    }
  }

  /** The flattened tree in tar order: depth first, names sorted; a second name of an inode is a link. */
  entries(): FlatEntry[] {
    const out: FlatEntry[] = [];
    const firstName = new Map<Inode, string>();
    if (this.#rootSet) out.push({ kind: 'directory', path: '.', header: this.#root.header! });
    const visit = (dir: Node, prefix: string): void => {
      const names = [...dir.children!.keys()].sort();
      for (const name of names) {
        const node = dir.children!.get(name)!;
        const path = prefix + name;
        if (node.children) {
          out.push({ kind: 'directory', path, header: node.header! });
          visit(node, `${path}/`);
          continue;
        }
        const inode = node.inode!;
        const first = firstName.get(inode);
        if (first !== undefined) out.push({ kind: 'link', path, header: inode.header, target: first });
        else {
          firstName.set(inode, path);
          out.push({ kind: 'inode', path, header: inode.header, layer: inode.layer, offset: inode.offset });
        }
      }
    };
    visit(this.#root, '');
    return out;
  }

  #lookup(parts: readonly string[]): Node | undefined {
    let node: Node | undefined = this.#root;
    for (const part of parts) {
      node = node.children?.get(part);
      if (!node) return undefined;
    }
    return node;
  }

  /** The directory at `parts`, made (0755 root) where missing; refuses a path through a non-directory. */
  #directory(parts: readonly string[], layer: number, name: string, what: string): Node {
    let node = this.#root;
    for (const [index, part] of parts.entries()) {
      let child = node.children!.get(part);
      if (!child) {
        child = { header: IMPLICIT_DIR, children: new Map(), layer };
        node.children!.set(part, child);
      } else if (!child.children) {
        const kind = child.inode!.header.type === 'symlink' ? 'a symlink' : 'not a directory';
        throw invalid(
          `${what}: entry "${name}" lies under "${parts.slice(0, index + 1).join('/')}", which is ${kind}`,
        );
      }
      node = child;
    }
    return node;
  }

  /** Opaque directory: drops what lower layers put in it, keeping (and descending into) this layer's. */
  #clearLower(dir: Node, layer: number): void {
    for (const [name, child] of dir.children!) {
      if (child.layer < layer) dir.children!.delete(name);
      else if (child.children) this.#clearLower(child, layer);
    }
  }
}

/** Bytes of the unpacked tree: regular files, each inode once. */
export function flatSize(entries: readonly FlatEntry[]): number {
  let size = 0;
  for (const entry of entries) if (entry.kind === 'inode') size += entry.header.size;
  return size;
}
