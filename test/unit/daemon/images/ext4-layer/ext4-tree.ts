/**
 * Helpers for the ext4-layer tests: layer tars with pax records, a lower image from tar-to-ext4.sh, the
 * tree an image holds (read back with debugfs `ls -p`, `stat`, `dump`, `ea_get`) and the tree the layers
 * describe (layer-tree.ts's flattening, the project's model of merged layers), in one comparable shape.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FlatEntry } from '../../../../../hostside/src/daemon/images/layer-tree.ts';
import {
  debugfsPath,
  parseListing,
  runDebugfs,
} from '../../../../../hostside/src/daemon/images/ext4-layer/debugfs-run.ts';
import { quote } from '../../../../../hostside/src/daemon/images/ext4-layer/debugfs-script.ts';
import { REPO } from '../../../../helpers/prerequisites.ts';
import { fileBytes, mergedLayers, MTIME, tarOf as fixtureTar, type Member } from '../image-fixtures.ts';

export { MTIME, type Member };

/** A layer tar (image-fixtures.ts's), its symlinks 0777 unless given, as Linux makes them. */
export function tarOf(members: readonly Member[]): Promise<Buffer> {
  return fixtureTar(
    members.map((member) =>
      member.type === 'symlink' && member.mode === undefined ? { ...member, mode: 0o777 } : member,
    ),
  );
}

/** The lower image: init-image/tar-to-ext4.sh of `tar` at `sizeMiB`. */
export function ext4Of(tar: string, image: string, sizeMiB: number): void {
  execFileSync(join(REPO, 'init-image/tar-to-ext4.sh'), [tar, image, String(sizeMiB)], { stdio: 'pipe' });
}

/** One name of a tree, in a shape both sides can give. */
export interface TreeNode {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime?: number;
  /** Files: sha256 of the contents. Symlinks: the target. Devices: major:minor. */
  content?: string;
  /** Non-directories: the other names of the same inode, sorted, and itself. */
  names?: string[];
  xattrs?: Record<string, string>;
}

const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** The tree the layers describe, from layer-tree.ts; `compareTimes` false leaves times out. */
export async function expectedTree(layers: readonly Buffer[]): Promise<Map<string, TreeNode>> {
  const tree = await mergedLayers(layers);
  const entries = tree.entries();
  const out = new Map<string, TreeNode>();
  const groups = new Map<string, string[]>();
  const firstOf = (entry: FlatEntry): string => (entry.kind === 'link' ? entry.target : entry.path);
  for (const entry of entries) {
    if (entry.header.type === 'directory') continue;
    const first = firstOf(entry);
    groups.set(first, [...(groups.get(first) ?? []), `/${entry.path}`]);
  }
  for (const entry of entries) {
    if (entry.path === '.') continue;
    const { header } = entry;
    const source = entry.kind === 'link' ? entries.find((e) => e.path === entry.target)! : entry;
    const node: TreeNode = {
      type: header.type,
      mode: header.mode,
      uid: header.uid,
      gid: header.gid,
      mtime: Math.floor(header.mtime.getTime() / 1000),
    };
    if (header.type === 'file' && source.kind === 'inode') node.content = sha(fileBytes(layers, source));
    if (header.type === 'symlink') node.content = header.linkname;
    if (header.type === 'character-device' || header.type === 'block-device')
      node.content = `${header.devmajor}:${header.devminor}`;
    if (header.type !== 'directory') node.names = [...groups.get(firstOf(entry))!].sort();
    const xattrs: Record<string, string> = {};
    for (const [key, value] of Object.entries(header.xattrs)) {
      if (key.startsWith('SCHILY.xattr.')) xattrs[key.slice(13)] = Buffer.from(value).toString('hex');
      else xattrs[decodeURIComponent(key.slice(17))] = Buffer.from(value, 'base64').toString('hex');
    }
    if (Object.keys(xattrs).length > 0) node.xattrs = xattrs;
    out.set(`/${entry.path}`, node);
  }
  return out;
}

const TYPES: Record<number, string> = {
  0o100000: 'file',
  0o040000: 'directory',
  0o120000: 'symlink',
  0o020000: 'character-device',
  0o060000: 'block-device',
  0o010000: 'fifo',
};

/** Runs a read-only debugfs script and returns each command's output (failing on a missing echo). */
async function query(image: string, commands: string[], work: string): Promise<string[]> {
  const { transcript } = await runDebugfs(image, commands, { write: false, workDir: work });
  if (transcript.outputs.length !== commands.length)
    throw new Error(`debugfs stopped: ${transcript.preamble}`);
  return transcript.outputs.map(({ output }) => output);
}

/** The tree an image holds (without lost+found), read with debugfs. */
export async function imageTree(
  image: string,
  xattrNames: readonly string[] = [],
): Promise<Map<string, TreeNode>> {
  const work = mkdtempSync(join(REPO, 'build', 'ext4-tree-'));
  try {
    const found = new Map<string, { ino: number; mode: number; uid: number; gid: number }>();
    let level = ['/'];
    while (level.length > 0) {
      const outputs = await query(
        image,
        level.map((dir) => `ls -p ${quote(dir)}`),
        work,
      );
      const next: string[] = [];
      for (const [i, dir] of level.entries()) {
        for (const line of outputs[i]!.split('\n')) {
          const m = /^\/(\d+)\/([0-7]+)\/(\d+)\/(\d+)\/(.*)\/\d*\/$/s.exec(line);
          if (!m || m[5] === '.' || m[5] === '..') continue;
          const path = dir === '/' ? `/${m[5]}` : `${dir}/${m[5]}`;
          if (path === '/lost+found') continue;
          const mode = parseInt(m[2]!, 8);
          found.set(path, { ino: Number(m[1]), mode, uid: Number(m[3]), gid: Number(m[4]) });
          if ((mode & 0o170000) === 0o040000) next.push(path);
        }
        // The same listing through the module's parser must agree.
        parseListing(outputs[i]!, dir);
      }
      level = next;
    }
    const paths = [...found.keys()];
    const stats = await query(
      image,
      paths.map((path) => `stat ${quote(path)}`),
      work,
    );
    const byIno = new Map<number, string[]>();
    for (const [path, { ino, mode }] of found)
      if ((mode & 0o170000) !== 0o040000) byIno.set(ino, [...(byIno.get(ino) ?? []), path]);
    const dumps: string[] = [];
    const dumpCommands: string[] = [];
    const eaCommands: string[] = [];
    const eaKeys: [string, string, string][] = [];
    for (const [i, path] of paths.entries()) {
      const { mode } = found.get(path)!;
      if ((mode & 0o170000) === 0o100000) {
        const file = join(work, `dump-${i}`);
        dumps[i] = file;
        dumpCommands.push(`dump ${quote(path)} ${quote(file)}`);
      }
      for (const name of xattrNames) {
        const file = join(work, `ea-${i}-${name}`);
        eaCommands.push(`ea_get -f ${quote(file)} ${quote(path)} ${quote(name)}`);
        eaKeys.push([path, name, file]);
      }
    }
    await query(image, dumpCommands, work);
    const eaOutputs = await query(image, eaCommands, work);
    const tree = new Map<string, TreeNode>();
    for (const [i, path] of paths.entries()) {
      const { ino, mode, uid, gid } = found.get(path)!;
      const stat = stats[i]!;
      const type = TYPES[mode & 0o170000] ?? `mode ${mode.toString(8)}`;
      const node: TreeNode = { type, mode: mode & 0o7777, uid, gid };
      const mtime = /^\s*mtime: 0x([0-9a-f]+)/m.exec(stat);
      if (mtime) node.mtime = parseInt(mtime[1]!, 16);
      if (type === 'file') node.content = sha(readFileSync(dumps[i]!));
      if (type === 'symlink') node.content = /Fast link dest: "(.*)"$/m.exec(stat)?.[1] ?? '(slow link)';
      if (type.endsWith('-device')) {
        const dev = /Device major\/minor number: (\d+):(\d+)/.exec(stat);
        node.content = `${Number(dev?.[1])}:${Number(dev?.[2])}`;
      }
      if (type !== 'directory') {
        node.names = [...byIno.get(ino)!].sort();
        const links = Number(/^Links: (\d+)/m.exec(stat)?.[1]);
        if (links !== node.names.length) node.names.push(`(links_count ${links})`);
      }
      tree.set(path, node);
    }
    for (const [j, [path, name, file]] of eaKeys.entries()) {
      if (/not found|No such/i.test(eaOutputs[j]!)) continue;
      const node = tree.get(path)!;
      node.xattrs = { ...node.xattrs, [name]: readFileSync(file).toString('hex') };
    }
    return tree;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** `e2fsck -fn`'s verdict: undefined when clean, else its output. */
export function fsckProblems(image: string): string | undefined {
  try {
    execFileSync(debugfsPath().replace(/debugfs$/, 'e2fsck'), ['-fn', image], { stdio: 'pipe' });
    return undefined;
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: Buffer; stderr?: Buffer };
    return `${stdout?.toString() ?? ''}${stderr?.toString() ?? ''}`;
  }
}

export function writeTar(dir: string, name: string, tar: Buffer): string {
  const file = join(dir, name);
  writeFileSync(file, tar);
  return file;
}
