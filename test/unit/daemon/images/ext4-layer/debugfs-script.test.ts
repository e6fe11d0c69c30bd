import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  quote,
  ScriptGenerator,
  typeOfMode,
  type LayerEntry,
  type LowerChild,
  type LowerImage,
} from '../../../../../hostside/src/daemon/images/ext4-layer/debugfs-script.ts';
import {
  firstFailure,
  parseListing,
  splitTranscript,
} from '../../../../../hostside/src/daemon/images/ext4-layer/debugfs-run.ts';
import type { RawHeader } from '../../../../../hostside/src/daemon/images/layer-tree.ts';

/** A lower image from a table of directories; records every call. */
function fakeLower(
  dirs: Record<string, LowerChild[]>,
  links: Record<number, number> = {},
): LowerImage & { calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    list: async (paths) => {
      calls.push([...paths]);
      return new Map(
        paths.map((path) => {
          const children = dirs[path];
          if (!children) throw new Error(`listed ${path}, which the fake lacks`);
          return [path, children];
        }),
      );
    },
    linkCounts: async (inodes) => new Map(inodes.map((ino) => [ino, links[ino]!])),
  };
}

const entry = (name: string, extra: Partial<RawHeader> = {}, dataFile?: string): LayerEntry => ({
  header: { name, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: new Date(1000_000), ...extra },
  ...(dataFile !== undefined || (extra.type ?? 'file') === 'file'
    ? { dataFile: dataFile ?? `/spool/${name}` }
    : {}),
});

async function script(lower: LowerImage, entries: LayerEntry[]): Promise<string[]> {
  const generator = new ScriptGenerator(lower, { valueDir: '/values', what: 'layer' });
  const { commands } = await generator.plan(entries);
  return [...commands, ...generator.finish().commands];
}

describe('quote', () => {
  it("doubles quotes, as debugfs's parser reads them", () => {
    assert.equal(quote('a "b" c'), '"a ""b"" c"');
    assert.equal(quote('back\\slash'), '"back\\slash"');
  });
});

describe('typeOfMode', () => {
  it('reads the type bits', () => {
    assert.equal(typeOfMode(0o100644), 'file');
    assert.equal(typeOfMode(0o040755), 'directory');
    assert.equal(typeOfMode(0o140777), 'socket');
    assert.equal(typeOfMode(0o170000), undefined);
  });
});

describe('ScriptGenerator', () => {
  const root: LowerChild[] = [
    { name: 'etc', type: 'directory', ino: 12 },
    { name: 'old', type: 'directory', ino: 13 },
    { name: 'bin', type: 'directory', ino: 20 },
  ];

  it('deletes a whole lower directory, depth first, listing one level per call', async () => {
    const lower = fakeLower({
      '/': root,
      '/old': [
        { name: 'a', type: 'file', ino: 14 },
        { name: 'sub', type: 'directory', ino: 15 },
      ],
      '/old/sub': [{ name: 'b', type: 'symlink', ino: 16 }],
    });
    const commands = await script(lower, [entry('.wh.old', { size: 0 })]);
    assert.deepEqual(lower.calls, [['/'], ['/old'], ['/old/sub']]);
    assert.deepEqual(commands, [
      'cd "/old"',
      'rm a',
      'cd "/old/sub"',
      'rm b',
      'cd "/old"',
      'rmdir sub',
      'cd "/"',
      'rmdir old',
    ]);
  });

  it('lists only the parents of what a layer names', async () => {
    const lower = fakeLower({ '/': root, '/etc': [{ name: 'hosts', type: 'file', ino: 30 }] });
    const commands = await script(lower, [entry('etc/hosts', { mtime: new Date(5000) })]);
    assert.deepEqual(lower.calls, [['/'], ['/etc']]);
    assert.deepEqual(commands, [
      'cd "/etc"',
      'rm hosts',
      'write "/spool/etc/hosts" hosts',
      'sif "/etc/hosts" mode 0100644',
      'sif "/etc/hosts" uid 0',
      'sif "/etc/hosts" gid 0',
      'sif "/etc/hosts" atime @5',
      'sif "/etc/hosts" mtime @5',
      'sif "/etc/hosts" ctime @5',
    ]);
  });

  it('counts the links of a lower inode it links to', async () => {
    const lower = fakeLower({ '/': root, '/bin': [{ name: 'busybox', type: 'file', ino: 40 }] }, { 40: 3 });
    const commands = await script(lower, [entry('bin/sh2', { type: 'link', linkname: 'bin/busybox' })]);
    assert.deepEqual(commands, ['cd "/bin"', 'ln "/bin/busybox" sh2', 'sif "/bin/sh2" links_count 4']);
  });

  it('quotes names with spaces and quotes, and sets directory times last', async () => {
    const lower = fakeLower({ '/': [] });
    const commands = await script(lower, [
      entry('a b/', { type: 'directory', mode: 0o1777, mtime: new Date(7000) }),
      entry('a b/say "hi"', { mtime: new Date(9000) }),
    ]);
    assert.equal(commands[0], 'mkdir "a b"');
    assert.ok(commands.includes('cd "/a b"'));
    assert.ok(commands.includes('write "/spool/a b/say ""hi""" "say ""hi"""'));
    assert.ok(commands.includes('sif "/a b" mode 041777'));
    assert.deepEqual(commands.slice(-6), [
      'sif "/a b" atime_extra 0',
      'sif "/a b" atime @7',
      'sif "/a b" mtime_extra 0',
      'sif "/a b" mtime @7',
      'sif "/a b" ctime_extra 0',
      'sif "/a b" ctime @7',
    ]);
  });

  it('refuses lines debugfs would cut', async () => {
    const lower = fakeLower({ '/': [] });
    await assert.rejects(script(lower, [entry(`${'x'.repeat(250)}/`.repeat(40) + 'f')]), /at most 8190/);
    await assert.rejects(
      script(lower, [entry('s', { type: 'symlink', linkname: 'x\ny' })]),
      (error: Error & { code?: string }) => error.code === 'TETHER_IMAGE_UNSUPPORTED',
    );
  });
});

describe('transcripts', () => {
  const commands = ['cd "/etc"', 'rm hosts', 'write "/spool/h" hosts'];

  it('splits at the echoes and finds the first failure', () => {
    const text =
      'debugfs 1.47.0 (5-Feb-2023)\ndebugfs: cd "/etc"\ndebugfs: rm hosts\n\ndebugfs: write "/spool/h" hosts\n' +
      'Allocated inode: 20\n';
    const transcript = splitTranscript(text, commands);
    assert.equal(transcript.outputs.length, 3);
    assert.equal(firstFailure(transcript, commands), undefined);
    const failed = splitTranscript(
      text.replace(
        'debugfs: rm hosts\n\n',
        'debugfs: rm hosts\nrm: File not found by ext2_lookup while trying to resolve filename\n',
      ),
      commands,
    );
    assert.match(firstFailure(failed, commands)!, /`rm hosts` failed: rm: File not found/);
  });

  it('says when debugfs could not open the image', () => {
    const transcript = splitTranscript(
      'debugfs 1.47.0\ndebugfs: Bad magic number in super-block while trying to open x\n',
      commands,
    );
    assert.match(firstFailure(transcript, commands)!, /could not open the image: .*Bad magic/s);
  });

  it('parses ls -p, names with spaces and quotes included', () => {
    const output =
      '/2/040755/0/0/.//\n/2/040755/0/0/..//\n/12/100644/1000/1000/a "b" c/5/\n/13/020666/0/0/null/0/\n\n';
    assert.deepEqual(parseListing(output, '/x'), [
      { name: 'a "b" c', type: 'file', ino: 12 },
      { name: 'null', type: 'character-device', ino: 13 },
    ]);
    assert.throws(() => parseListing('/x: File not found by ext2_lookup\n', '/x'), /File not found/);
  });
});
