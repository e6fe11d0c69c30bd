/**
 * One image layer (a tar's entries, in tar order) → the `debugfs -w` commands that turn the ext4 tree below
 * it into lower+layer, with the semantics of layer-tree.ts (Docker's and OCI's): `.wh.NAME` deletes NAME
 * with everything under it, `.wh..wh..opq` drops what the lower layers put in its directory, a non-directory
 * over a directory drops the subtree, a directory over a directory keeps the children and takes the new
 * metadata, anything else over a name replaces it (other hard links of a replaced file keep the old inode).
 * Pure: it reads the image only through the `LowerImage` callbacks and returns command lines.
 *
 * What debugfs (e2fsprogs 1.47.0) dictates:
 * - Its line parser (lib/ss/parse.c) splits on spaces and tabs; `"..."` quotes, `""` inside quotes is one
 *   `"`; there is no backslash escape. `-f` reads lines of at most BUFSIZ (8192) bytes and cuts each at its
 *   first `\n` or `\r`, so names with either, and lines longer than LINE_MAX, are refused
 *   (TETHER_IMAGE_UNSUPPORTED). A path argument of the form `<N>` means inode N, so every path that
 *   debugfs resolves is given absolute (`/…` never starts with `<`).
 * - `mknod` links its name into the working directory whatever it holds, and `write`, `mkdir`, `symlink`,
 *   `ln`, `rm` and `rmdir` resolve an empty parent ("/x" → "") to the working directory too: so every
 *   command that adds or removes a name is `cd "/parent"` then the base name.
 * - `ln` does not count the new link and `rm` does (freeing the inode at 0), so the script keeps each
 *   inode's link count and writes it with `sif links_count` after each `ln`; a link to an inode of the
 *   lower layers needs that inode's count first (`LowerImage.linkCounts`).
 * - There is no recursive delete: a deleted or replaced directory needs its lower subtree, which the
 *   generator asks for through `LowerImage.list`, a whole tree level of directories per call (the I/O side
 *   runs one debugfs per level), and only below the paths a layer deletes or replaces, plus the parents of
 *   every path it names. Why this and not the tars of the layers below: the image is the truth (its
 *   lost+found, the base layer as mkfs laid it out), and it costs a few short debugfs runs per layer.
 * - No expected failures: every command must succeed, so the I/O side can treat any message as an error.
 *
 * Metadata: mode (with the type bits), uid, gid, atime = mtime = ctime = the entry's mtime (seconds; pax
 * fractions are dropped), as `sif`; a directory's times are set at the very end (`finish()`), after its
 * children were written, as Docker's applier does. xattrs (`SCHILY.xattr.NAME`, raw; `LIBARCHIVE.xattr.NAME`,
 * URL-encoded name and base64 value) go through `ea_set -f FILE` so that any byte survives. A directory
 * over a directory keeps the lower xattrs that the new entry does not set (as Docker's own applier does).
 *
 * Refused: paths or hard-link targets that climb out of the root, relative symlinks that do, links to
 * nothing or to a directory, entries under a non-directory (TETHER_IMAGE_INVALID, as layer-tree.ts); names
 * debugfs cannot carry, names that were not valid UTF-8 (tar-stream decodes them lossily; binary xattr
 * values come exactly from pax-xattrs.ts, see xattrsOf),
 * device numbers above 65535, symlink targets of 4096 bytes or more, negative times
 * (TETHER_IMAGE_UNSUPPORTED).
 */
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import { rootedComponents, type EntryType, type RawHeader } from '../layer-tree.ts';

/** What a name in the image is. Sockets cannot come from a tar but can be in an image. */
export type NodeType = EntryType | 'socket';

/** One name in a directory of the lower image, as `ls -p` shows it. */
export interface LowerChild {
  name: string;
  type: NodeType;
  /** Inode number: names with the same one are hard links. */
  ino: number;
}

/** Read access to the image the layer goes onto (as it was before this layer). */
export interface LowerImage {
  /** The children (without `.` and `..`) of each directory, given as absolute paths that exist. */
  list(dirs: readonly string[]): Promise<Map<string, LowerChild[]>>;
  /** The link count of each inode. */
  linkCounts(inodes: readonly number[]): Promise<Map<number, number>>;
}

/** One tar entry; `dataFile` holds a regular file's bytes on the host (required for files). */
export interface LayerEntry {
  header: RawHeader;
  dataFile?: string | undefined;
}

/** A file the script reads (an xattr value): write it before debugfs runs. */
export interface ValueFile {
  path: string;
  data: Buffer;
}

export interface ScriptPart {
  commands: string[];
  valueFiles: ValueFile[];
}

export interface ScriptStats {
  files: number;
  directories: number;
  symlinks: number;
  hardLinks: number;
  devices: number;
  /** Names removed from the image (whiteouts, opaque directories, replaced names), each one counted. */
  removed: number;
  xattrs: number;
}

/** The longest line debugfs -f reads whole: BUFSIZ (8192) less the newline and the NUL. */
export const LINE_MAX = 8190;
/** Block size of the images tar-to-ext4.sh makes; symlink targets and xattr values must fit in one. */
const BLOCK_SIZE = 4096;
const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

const TYPE_BITS: Record<NodeType, number> = {
  file: 0o100000,
  directory: 0o040000,
  symlink: 0o120000,
  'character-device': 0o020000,
  'block-device': 0o060000,
  fifo: 0o010000,
  socket: 0o140000,
};

/** Pure: the type a mode's S_IFMT bits name, or undefined for an unknown one. */
export function typeOfMode(mode: number): NodeType | undefined {
  const bits = mode & 0o170000;
  return (Object.keys(TYPE_BITS) as NodeType[]).find((type) => TYPE_BITS[type] === bits);
}

/** Pure: one argument for debugfs's parser (double quotes, a `"` doubled). */
export function quote(arg: string): string {
  return `"${arg.replaceAll('"', '""')}"`;
}

interface Inode {
  /** Known link count; undefined for a lower inode nobody asked about (debugfs's rm keeps it right). */
  links: number | undefined;
  lowerIno?: number;
}

interface Node {
  type: NodeType;
  /** Directories: their children; undefined for a lower directory not listed yet. */
  children?: Map<string, Node> | undefined;
  /** Non-directories: the inode, shared by hard links. */
  inode?: Inode;
  /** Written by this layer (an opaque directory keeps these). */
  ours: boolean;
}

interface Metadata {
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  xattrs: Map<string, Buffer>;
}

const IMPLICIT: Metadata = { mode: 0o755, uid: 0, gid: 0, mtime: 0, xattrs: new Map() };

const invalid = (message: string): TetherError => new TetherError('TETHER_IMAGE_INVALID', message);
const unsupported = (message: string): TetherError => new TetherError('TETHER_IMAGE_UNSUPPORTED', message);
const pathOf = (parts: readonly string[]): string => `/${parts.join('/')}`;
const LOST = '\uFFFD';

function xattrsOf(raw: RawHeader, name: string, what: string): Map<string, Buffer> {
  const xattrs = new Map<string, Buffer>();
  for (const [key, value] of Object.entries(raw.pax ?? {})) {
    let attr: string;
    let data: Buffer;
    if (key.startsWith('SCHILY.xattr.')) {
      attr = key.slice('SCHILY.xattr.'.length);
      // applyLayer hands binary values (security.capability as Go's archive/tar writes it) over exactly,
      // in the LIBARCHIVE form (pax-xattrs.ts); one that still arrives decoded lossily by tar-stream is
      // dropped rather than written wrong.
      if (value.includes(LOST)) continue;
      data = Buffer.from(value, 'utf8');
    } else if (key.startsWith('LIBARCHIVE.xattr.')) {
      attr = decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length));
      data = Buffer.from(value, 'base64');
    } else continue;
    if (data.length > BLOCK_SIZE)
      throw unsupported(
        `${what}: extended attribute ${attr} of "${name}" holds ${data.length} bytes; an ext4 block holds ${BLOCK_SIZE}`,
      );
    xattrs.set(attr, data);
  }
  return xattrs;
}

function metadataOf(raw: RawHeader, what: string): Metadata {
  const pax = raw.pax ?? {};
  const paxNumber = (key: string): number | undefined => {
    const value = pax[key] === undefined ? NaN : Number(pax[key]);
    return Number.isFinite(value) ? value : undefined;
  };
  const mtime = Math.floor(paxNumber('mtime') ?? (raw.mtime ? raw.mtime.getTime() / 1000 : 0));
  if (mtime < 0) throw unsupported(`${what}: "${raw.name}" has a time before 1970 (${mtime})`);
  return {
    mode: (raw.mode ?? 0) & 0o7777,
    uid: paxNumber('uid') ?? raw.uid ?? 0,
    gid: paxNumber('gid') ?? raw.gid ?? 0,
    mtime,
    xattrs: xattrsOf(raw, raw.name, what),
  };
}

/**
 * Turns layers' entries into debugfs commands, batch by batch (the caller may run each batch and free its
 * data files before the next); `finish()` gives the last commands. Keeps the tree it has seen of the image
 * as the script leaves it, so batches compose.
 */
export class ScriptGenerator {
  readonly stats: ScriptStats = {
    files: 0,
    directories: 0,
    symlinks: 0,
    hardLinks: 0,
    devices: 0,
    removed: 0,
    xattrs: 0,
  };
  readonly #lower: LowerImage;
  readonly #what: string;
  readonly #valueDir: string;
  readonly #root: Node = { type: 'directory', children: undefined, ours: false };
  readonly #lowerInodes = new Map<number, Inode>();
  /** Directory times, set last; keyed by path so that the last entry for a directory wins. */
  readonly #dirTimes = new Map<string, number>();
  #out: string[] = [];
  #values: ValueFile[] = [];
  #cwd = '/';
  #valueCount = 0;

  /**
   * @param lower the image below, as it was before this layer
   * @param options.valueDir where the xattr value files will be (the caller writes them there)
   * @param options.what the layer's name in error messages
   */
  constructor(lower: LowerImage, options: { valueDir: string; what: string }) {
    this.#lower = lower;
    this.#valueDir = options.valueDir;
    this.#what = options.what;
  }

  /** The commands for these entries (the next ones of the layer in tar order). */
  async plan(entries: readonly LayerEntry[]): Promise<ScriptPart> {
    await this.#load(entries);
    for (const entry of entries) this.#apply(entry);
    return this.#take();
  }

  /** The last commands: directory times, once every child is in place. */
  finish(): ScriptPart {
    const dirs = [...this.#dirTimes].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [path, mtime] of dirs) this.#times(path, mtime, true);
    this.#dirTimes.clear();
    return this.#take();
  }

  #take(): ScriptPart {
    const part = { commands: this.#out, valueFiles: this.#values };
    this.#out = [];
    this.#values = [];
    // Each part runs in a debugfs of its own, which starts at the root.
    this.#cwd = '/';
    return part;
  }

  #emit(...args: string[]): void {
    for (const arg of args)
      if (arg.includes('\n') || arg.includes('\r'))
        throw unsupported(
          `${this.#what}: ${JSON.stringify(arg)} holds a line break, which debugfs's command files cannot carry`,
        );
      else if (arg.includes(LOST))
        throw unsupported(
          `${this.#what}: ${JSON.stringify(arg)} is not UTF-8, which this tool chain cannot keep`,
        );
    const line = args.map((arg, i) => (i === 0 || /^[-@\w.]+$/.test(arg) ? arg : quote(arg))).join(' ');
    if (Buffer.byteLength(line) > LINE_MAX)
      throw unsupported(
        `${this.#what}: the debugfs command for ${JSON.stringify(args[1])} is ${Buffer.byteLength(line)} bytes; debugfs reads at most ${LINE_MAX}`,
      );
    this.#out.push(line);
  }

  #cd(dir: string): void {
    if (this.#cwd === dir) return;
    this.#emit('cd', dir);
    this.#cwd = dir;
  }

  // ---- Loading the lower image: the parents of every path named, the subtrees of what may go. ----

  /** Lists, level by level, the lower directories this batch needs. */
  async #load(entries: readonly LayerEntry[]): Promise<void> {
    // Paths whose parents must be known, and roots whose whole lower subtree must be known.
    const named: string[][] = [];
    const whole: string[][] = [];
    for (const { header } of entries) {
      const parts = this.#parts(header.name);
      const base = parts.at(-1);
      if (base === OPAQUE) {
        named.push(parts.slice(0, -1));
        whole.push(parts.slice(0, -1));
      } else if (base?.startsWith(WHITEOUT)) {
        const target = [...parts.slice(0, -1), base.slice(WHITEOUT.length)];
        named.push(target);
        whole.push(target);
      } else {
        named.push(parts);
        if (header.type !== 'directory') whole.push(parts);
      }
      if (header.type === 'link') {
        const target = rootedComponents(header.linkname ?? '');
        if (target) named.push(target);
      }
    }
    const key = (parts: readonly string[]): string => parts.join('\0');
    const onPath = new Set<string>();
    // A named path needs its parents listed; a whole root itself too (and all below it, further down).
    for (const parts of named) for (let i = 0; i < parts.length; i++) onPath.add(key(parts.slice(0, i)));
    for (const parts of whole) for (let i = 0; i <= parts.length; i++) onPath.add(key(parts.slice(0, i)));
    const wholeRoots = new Set(whole.map(key));

    // Breadth first: each round lists one level of directories, all at once.
    let level: { parts: string[]; node: Node; all: boolean }[] = [
      { parts: [], node: this.#root, all: wholeRoots.has('') },
    ];
    while (level.length > 0) {
      const unlisted = level.filter(({ node }) => node.children === undefined);
      if (unlisted.length > 0) {
        const listed = await this.#lower.list(unlisted.map(({ parts }) => pathOf(parts)));
        for (const { parts, node } of unlisted) {
          const children = listed.get(pathOf(parts));
          if (!children) throw new Error(`the lower image's listing lacks ${pathOf(parts)}`);
          node.children = new Map(children.map((child) => [child.name, this.#lowerNode(child)]));
        }
      }
      const next: typeof level = [];
      for (const { parts, node, all } of level)
        for (const [name, child] of node.children!) {
          if (child.type !== 'directory') continue;
          const childParts = [...parts, name];
          const childKey = key(childParts);
          const childAll = all || wholeRoots.has(childKey);
          if (childAll || onPath.has(childKey)) next.push({ parts: childParts, node: child, all: childAll });
        }
      level = next;
    }

    // Link counts of the lower inodes this batch links to.
    const wanted = new Set<number>();
    for (const { header } of entries) {
      if (header.type !== 'link') continue;
      const target = rootedComponents(header.linkname ?? '');
      const node = target && this.#lookup(target);
      if (node?.inode?.lowerIno !== undefined && node.inode.links === undefined)
        wanted.add(node.inode.lowerIno);
    }
    if (wanted.size > 0) {
      const counts = await this.#lower.linkCounts([...wanted]);
      for (const ino of wanted) {
        const links = counts.get(ino);
        if (links === undefined) throw new Error(`the lower image's link counts lack inode ${ino}`);
        this.#lowerInodes.get(ino)!.links = links;
      }
    }
  }

  #lowerNode(child: LowerChild): Node {
    if (child.type === 'directory') return { type: 'directory', children: undefined, ours: false };
    let inode = this.#lowerInodes.get(child.ino);
    if (!inode) {
      inode = { links: undefined, lowerIno: child.ino };
      this.#lowerInodes.set(child.ino, inode);
    }
    return { type: child.type, inode, ours: false };
  }

  #parts(name: string): string[] {
    const parts = rootedComponents(name);
    if (!parts) throw invalid(`${this.#what}: entry "${name}" climbs out of the root filesystem`);
    if (name.includes(LOST))
      throw unsupported(
        `${this.#what}: entry "${name}" has a name that is not UTF-8, which the tar reader cannot keep`,
      );
    return parts;
  }

  #lookup(parts: readonly string[]): Node | undefined {
    let node: Node | undefined = this.#root;
    for (const part of parts) {
      node = node.children?.get(part);
      if (!node) return undefined;
    }
    return node;
  }

  // ---- Applying entries ----

  #apply({ header, dataFile }: LayerEntry): void {
    const parts = this.#parts(header.name);
    const base = parts.at(-1);
    if (base === undefined) {
      if (header.type !== 'directory')
        throw invalid(`${this.#what}: the root entry "${header.name}" is not a directory`);
      this.#metadata('/', 'directory', metadataOf(header, this.#what), true);
      return;
    }
    const parentParts = parts.slice(0, -1);
    if (base === OPAQUE) {
      this.#clearLower(this.#directory(parentParts, header.name), parentParts);
      return;
    }
    if (base.startsWith(WHITEOUT)) {
      // Other .wh..wh.* names are AUFS bookkeeping; a whiteout of nothing changes nothing.
      if (base.startsWith(`${WHITEOUT}${WHITEOUT}`)) return;
      const dir = this.#lookup(parentParts);
      const name = base.slice(WHITEOUT.length);
      if (dir?.type === 'directory' && dir.children!.has(name)) this.#remove(dir, parentParts, name);
      return;
    }
    const dir = this.#directory(parentParts, header.name);
    const path = pathOf(parts);
    const parent = pathOf(parentParts);
    const existing = dir.children!.get(base);
    switch (header.type) {
      case 'directory': {
        const meta = metadataOf(header, this.#what);
        if (existing?.type === 'directory') {
          existing.ours = true;
          this.#metadata(path, 'directory', meta, true);
          return;
        }
        if (existing) this.#remove(dir, parentParts, base);
        this.#mkdir(dir, parent, base, meta);
        return;
      }
      case 'link': {
        const targetName = header.linkname ?? '';
        const targetParts = rootedComponents(targetName);
        if (!targetParts || targetParts.length === 0)
          throw invalid(
            `${this.#what}: hard link "${header.name}" points out of the root filesystem ("${targetName}")`,
          );
        const target = this.#lookup(targetParts);
        if (!target?.inode)
          throw invalid(
            `${this.#what}: hard link "${header.name}" points to "${targetName}", which is ${target ? 'a directory' : 'not in the layers so far'}`,
          );
        if (target === existing) return;
        if (existing) this.#remove(dir, parentParts, base);
        const inode = target.inode;
        if (inode.links === undefined) throw new Error(`link count of "${targetName}" not loaded`);
        this.#cd(parent);
        this.#emit('ln', pathOf(targetParts), base);
        inode.links += 1;
        this.#emit('sif', path, 'links_count', String(inode.links));
        dir.children!.set(base, { type: target.type, inode, ours: true });
        this.stats.hardLinks++;
        return;
      }
      case 'symlink': {
        const target = header.linkname ?? '';
        if (!target.startsWith('/') && !rootedComponents(target, parentParts))
          throw invalid(
            `${this.#what}: symlink "${header.name}" points out of the root filesystem ("${target}")`,
          );
        if (target.includes(LOST))
          throw unsupported(`${this.#what}: symlink "${header.name}" has a target that is not UTF-8`);
        if (Buffer.byteLength(target) >= BLOCK_SIZE)
          throw unsupported(
            `${this.#what}: symlink "${header.name}" has a target of ${Buffer.byteLength(target)} bytes; ext4 takes fewer than ${BLOCK_SIZE}`,
          );
        const meta = metadataOf(header, this.#what);
        if (existing) this.#remove(dir, parentParts, base);
        this.#cd(parent);
        this.#emit('symlink', base, target);
        this.#created(dir, base, path, 'symlink', meta);
        this.stats.symlinks++;
        return;
      }
      case 'file':
      case 'contiguous-file': {
        if (dataFile === undefined) throw new Error(`no data file for "${header.name}"`);
        const meta = metadataOf(header, this.#what);
        if (existing) this.#remove(dir, parentParts, base);
        this.#cd(parent);
        this.#emit('write', dataFile, base);
        this.#created(dir, base, path, 'file', meta);
        this.stats.files++;
        return;
      }
      case 'character-device':
      case 'block-device':
      case 'fifo': {
        const meta = metadataOf(header, this.#what);
        const type = header.type;
        const numbers: string[] = [];
        if (type !== 'fifo') {
          const { devmajor = 0, devminor = 0 } = header;
          if (devmajor > 65535 || devminor > 65535)
            throw unsupported(
              `${this.#what}: device "${header.name}" is ${devmajor}:${devminor}; debugfs makes devices up to 65535:65535`,
            );
          numbers.push(type === 'character-device' ? 'c' : 'b', String(devmajor), String(devminor));
        } else numbers.push('p');
        if (existing) this.#remove(dir, parentParts, base);
        this.#cd(parent);
        this.#emit('mknod', base, ...numbers);
        this.#created(dir, base, path, type, meta);
        this.stats.devices++;
        return;
      }
      default:
        throw invalid(
          `${this.#what}: entry "${header.name}" has a type a root filesystem cannot hold (${header.type ?? 'unknown'})`,
        );
    }
  }

  /** The directory at `parts`, made (0755 root, time 0, as layer-tree.ts) where missing. */
  #directory(parts: readonly string[], name: string): Node {
    let node = this.#root;
    for (const [index, part] of parts.entries()) {
      let child = node.children!.get(part);
      if (!child) {
        this.#mkdir(node, pathOf(parts.slice(0, index)), part, IMPLICIT);
        child = node.children!.get(part)!;
      } else if (child.type !== 'directory') {
        const kind = child.type === 'symlink' ? 'a symlink' : 'not a directory';
        throw invalid(
          `${this.#what}: entry "${name}" lies under "${parts.slice(0, index + 1).join('/')}", which is ${kind}`,
        );
      } else if (child.children === undefined) throw new Error(`lower directory ${pathOf(parts)} not loaded`);
      node = child;
    }
    return node;
  }

  #mkdir(dir: Node, parent: string, name: string, meta: Metadata): void {
    this.#cd(parent);
    this.#emit('mkdir', name);
    dir.children!.set(name, { type: 'directory', children: new Map(), ours: true });
    this.#metadata(parent === '/' ? `/${name}` : `${parent}/${name}`, 'directory', meta, false);
    this.stats.directories++;
  }

  #created(dir: Node, name: string, path: string, type: NodeType, meta: Metadata): void {
    dir.children!.set(name, { type, inode: { links: 1 }, ours: true });
    this.#metadata(path, type, meta, false);
  }

  /** mode, owners, xattrs now; times now, or at the end for a directory. */
  #metadata(path: string, type: NodeType, meta: Metadata, existed: boolean): void {
    // Linux ignores a symlink's permission bits and makes every one 0777 (as tar -x and mkfs -d leave them).
    const mode = type === 'symlink' ? 0o777 : meta.mode;
    this.#emit('sif', path, 'mode', `0${(TYPE_BITS[type] | mode).toString(8)}`);
    this.#emit('sif', path, 'uid', String(meta.uid));
    this.#emit('sif', path, 'gid', String(meta.gid));
    for (const [name, data] of meta.xattrs) {
      const file = `${this.#valueDir}/xattr-${this.#valueCount++}`;
      this.#values.push({ path: file, data });
      this.#emit('ea_set', '-f', file, path, name);
      this.stats.xattrs++;
    }
    if (type === 'directory') this.#dirTimes.set(path, meta.mtime);
    else this.#times(path, meta.mtime, existed);
  }

  /** atime, mtime and ctime to `mtime`; an inode made earlier may carry nanoseconds, cleared first. */
  #times(path: string, mtime: number, existed: boolean): void {
    for (const field of ['atime', 'mtime', 'ctime']) {
      if (existed) this.#emit('sif', path, `${field}_extra`, '0');
      this.#emit('sif', path, field, `@${mtime}`);
    }
  }

  /** Removes `name` from `dir` (at `dirParts`): a file by `rm`, a directory with all below it. */
  #remove(dir: Node, dirParts: readonly string[], name: string): void {
    const node = dir.children!.get(name)!;
    const parts = [...dirParts, name];
    const path = pathOf(parts);
    if (node.type === 'directory') {
      if (node.children === undefined) throw new Error(`lower directory ${path} not loaded`);
      for (const child of [...node.children.keys()]) this.#remove(node, parts, child);
      this.#cd(pathOf(dirParts));
      this.#emit('rmdir', name);
      this.#dirTimes.delete(path);
      // A directory made again at this path is a new inode: the working directory must be entered anew.
      if (this.#cwd === path || this.#cwd.startsWith(`${path}/`)) this.#cwd = '';
    } else {
      this.#cd(pathOf(dirParts));
      this.#emit('rm', name);
      if (node.inode!.links !== undefined) node.inode!.links -= 1;
    }
    dir.children!.delete(name);
    this.stats.removed++;
  }

  /** Opaque directory: drops what lower layers put in it, keeping (and descending into) this layer's. */
  #clearLower(dir: Node, parts: readonly string[]): void {
    if (dir.children === undefined) throw new Error(`lower directory ${pathOf(parts)} not loaded`);
    for (const [name, child] of [...dir.children]) {
      if (!child.ours) this.#remove(dir, parts, name);
      else if (child.type === 'directory') this.#clearLower(child, [...parts, name]);
    }
  }
}
