/**
 * The layered image of test/e2e/layers.test.ts: the bundled busybox image plus three layers under /t whose
 * upper layers delete, replace and reshape what the lower ones wrote (whiteouts, an opaque directory, a
 * file over a directory and a directory over a file, hard links, a symlink, a
 * fifo, a device node, owners, setuid and sticky modes), and /list.sh, which prints /t as the container
 * sees it. `expectedListing` is the same listing computed from the layers with LayerTree, the store's own
 * model of merged layers, which never touches a disk.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { FlatEntry } from '../../../hostside/src/daemon/images/layer-tree.ts';
import {
  fileBytes,
  imageOnBase,
  mergedLayers,
  tarOf,
  type Member,
} from '../../unit/daemon/images/image-fixtures.ts';

export const LAYERED_IMAGE = 'tether/layered:latest';

/** Prints every path under /t: path|type|mode|uid|gid|what (md5 and link count, link target, device). */
const LIST_SH = `#!/bin/sh
cd /
find t | sort | while read -r p; do
  type=$(stat -c %F "$p")
  case "$type" in
  "regular file" | "regular empty file") what="$(md5sum <"$p" | cut -c1-32) $(stat -c %h "$p")" ;;
  "symbolic link") what=$(readlink "$p") ;;
  "character special file" | "block special file") what=$(stat -c %t,%T "$p") ;;
  *) what= ;;
  esac
  echo "$p|$type|$(stat -c %a "$p")|$(stat -c %u "$p")|$(stat -c %g "$p")|$what"
done
`;

/** 1 MiB that no block of zeros could pass for. */
const BIG = Buffer.concat(
  Array.from({ length: 32 }, (_, i) => createHash('sha256').update(String(i)).digest()),
)
  .toString('hex')
  .repeat(256);

const LAYERS: Member[][] = [
  [
    { name: 't/', type: 'directory' },
    { name: 't/keep', data: 'keep\n', uid: 1000, gid: 1000, mode: 0o640 },
    { name: 't/replace', data: 'old\n' },
    { name: 't/gone', data: 'gone\n' },
    { name: 't/dir/', type: 'directory' },
    { name: 't/dir/a', data: 'a\n' },
    { name: 't/dir/sub/', type: 'directory' },
    { name: 't/dir/sub/b', data: 'b\n' },
    { name: 't/opq/', type: 'directory' },
    { name: 't/opq/old1', data: 'old1\n' },
    { name: 't/opq/olddir/', type: 'directory' },
    { name: 't/opq/olddir/x', data: 'x\n' },
    { name: 't/hl-src', data: 'linked\n' },
    { name: 't/hl', type: 'link', linkname: 't/hl-src' },
    { name: 't/sym', type: 'symlink', linkname: 'keep' },
    { name: 't/fifo', type: 'fifo' },
    { name: 't/dev-null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
    { name: 't/setuid', data: '#!/bin/sh\n', mode: 0o4755 },
    { name: 't/sticky/', type: 'directory', mode: 0o1777 },
    { name: 't/sticky/c', data: 'c\n' },
    { name: 't/todir', data: 'a file for now\n' },
    { name: 't/tofile/', type: 'directory' },
    { name: 't/tofile/child', data: 'child\n' },
  ],
  [
    { name: 't/.wh.gone' },
    { name: 't/.wh.dir' },
    { name: 't/opq/', type: 'directory', mode: 0o750 },
    { name: 't/opq/.wh..wh..opq' },
    { name: 't/opq/new', data: 'new\n' },
    { name: 't/replace', data: 'new contents\n', mode: 0o600 },
    { name: 't/new-dir/deep/file', data: 'deep\n' },
    { name: 't/sticky/', type: 'directory', mode: 0o1770, uid: 1000, gid: 100 },
  ],
  [
    { name: 't/todir/', type: 'directory' },
    { name: 't/todir/inside', data: 'inside\n' },
    { name: 't/tofile', data: 'was a directory\n' },
    { name: 't/.wh.sym' },
    { name: 't/big', data: BIG },
    { name: 'list.sh', data: LIST_SH, mode: 0o755 },
  ],
];

async function layerTars(): Promise<Buffer[]> {
  return Promise.all(LAYERS.map((members) => tarOf(members)));
}

const TYPE_NAMES: Record<string, string> = {
  file: 'regular file',
  directory: 'directory',
  symlink: 'symbolic link',
  'character-device': 'character special file',
  'block-device': 'block special file',
  fifo: 'fifo',
};

/** The listing /list.sh must print, from the layers alone. */
export async function expectedListing(): Promise<string[]> {
  const tars = await layerTars();
  const entries = (await mergedLayers(tars))
    .entries()
    .filter((e) => e.path === 't' || e.path.startsWith('t/'));
  const inodeOf = (entry: FlatEntry): string => (entry.kind === 'link' ? entry.target : entry.path);
  const names = new Map<string, number>();
  for (const entry of entries)
    if (entry.kind !== 'directory') names.set(inodeOf(entry), (names.get(inodeOf(entry)) ?? 0) + 1);
  const byPath = new Map(entries.map((e) => [e.path, e]));
  return entries
    .map((entry) => {
      const inode = entry.kind === 'link' ? byPath.get(entry.target)! : entry;
      const { header } = inode;
      const type =
        header.type === 'file' && header.size === 0 ? 'regular empty file' : TYPE_NAMES[header.type]!;
      const mode = header.type === 'symlink' ? '777' : (header.mode & 0o7777).toString(8);
      let what = '';
      if (header.type === 'file' && inode.kind === 'inode') {
        const data = fileBytes(tars, inode);
        what = `${createHash('md5').update(data).digest('hex')} ${names.get(inodeOf(entry))}`;
      } else if (header.type === 'symlink') what = header.linkname;
      else if (header.type === 'character-device' || header.type === 'block-device')
        what = `${header.devmajor.toString(16)},${header.devminor.toString(16)}`;
      return `${entry.path}|${type}|${mode}|${header.uid}|${header.gid}|${what}`;
    })
    .sort();
}

/** busybox-image.tar's layer plus the three above, tagged LAYERED_IMAGE, as a `docker save` tarball. */
export async function layeredImageTar(busyboxImageTar: string): Promise<Buffer> {
  return imageOnBase(readFileSync(busyboxImageTar), await layerTars(), LAYERED_IMAGE, { Cmd: ['/list.sh'] });
}
