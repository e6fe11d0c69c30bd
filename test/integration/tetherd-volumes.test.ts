/**
 * Volumes and disk usage through the real docker CLI against tetherd (dev driver: the API, the records and
 * the stores are real; the dev agent runs on this host and mounts no disks, which the e2e test does under
 * QEMU): docker volume create/ls/inspect/rm/prune, -v and --mount recorded on the container, anonymous
 * volumes for -v /path and removed by rm -v, a volume in use kept, host directories refused, and
 * `docker system df`.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { need } from '../helpers/prerequisites.ts';
import {
  BUSYBOX_IMAGE,
  startTetherdWithBusybox,
  tetherdPrerequisites,
  type Tetherd,
} from '../helpers/tetherd.ts';
import { dockerSave, tarOf } from '../unit/daemon/images/image-fixtures.ts';

describe('tetherd volumes and disk usage (docker CLI)', { timeout: 180_000 }, () => {
  let d: Tetherd | undefined;
  const ok = async (args: string[]): Promise<string> => {
    const result = await d!.docker(args);
    assert.equal(result.code, 0, `docker ${args.join(' ')}: ${result.stderr}`);
    return result.stdout;
  };
  const fails = async (args: string[], pattern: RegExp): Promise<void> => {
    const result = await d!.docker(args);
    assert.notEqual(result.code, 0, `docker ${args.join(' ')} should fail`);
    assert.match(result.stderr, pattern);
  };

  before(async (t) => {
    if (!need(t as never, tetherdPrerequisites())) return;
    d = await startTetherdWithBusybox({ driver: 'dev' });
  });
  after(async () => {
    if (d) await d.dispose();
  });

  it('creates, lists, inspects and removes named volumes as Docker does', async (t) => {
    if (!d) return t.skip('no tetherd');
    assert.equal(
      (await ok(['volume', 'create', '--label', 'team=a', '-o', 'size=64M', 'data'])).trim(),
      'data',
    );
    // Creating an existing name answers the same volume.
    assert.equal((await ok(['volume', 'create', 'data'])).trim(), 'data');
    const [volume] = JSON.parse(await ok(['volume', 'inspect', 'data'])) as Array<Record<string, unknown>>;
    assert.deepEqual([volume!['Name'], volume!['Driver'], volume!['Scope']], ['data', 'local', 'local']);
    assert.deepEqual(volume!['Labels'], { team: 'a' });
    assert.deepEqual(volume!['Options'], { size: '64M' });
    assert.deepEqual((await ok(['volume', 'ls', '-q', '--filter', 'label=team=a'])).trim().split('\n'), [
      'data',
    ]);
    await fails(['volume', 'create', '-o', 'type=nfs', 'other'], /unknown option "type"/);
    await fails(['volume', 'create', '-d', 'nfs', 'other'], /volume driver nfs is not supported/);
    await fails(['volume', 'inspect', 'nosuch'], /no such volume/);
  });

  it('records -v, --mount and anonymous volumes on the container, and keeps a volume in use', async (t) => {
    if (!d) return t.skip('no tetherd');
    await ok([
      'create',
      '--name',
      'c1',
      '-v',
      'data:/data:ro',
      '--mount',
      'type=volume,source=made,target=/made',
      '-v',
      '/anon',
      BUSYBOX_IMAGE,
      'true',
    ]);
    const [inspect] = JSON.parse(await ok(['inspect', 'c1'])) as Array<{
      Mounts: Array<{ Type: string; Name: string; Destination: string; RW: boolean }>;
    }>;
    const mounts = inspect!.Mounts.map((m) => `${m.Type} ${m.Destination} ${m.RW ? 'rw' : 'ro'}`);
    assert.deepEqual(mounts, ['volume /data ro', 'volume /made rw', 'volume /anon rw']);
    const anonymous = inspect!.Mounts[2]!.Name;
    assert.match(anonymous, /^[0-9a-f]{64}$/);
    assert.deepEqual(
      (await ok(['volume', 'ls', '-q'])).trim().split('\n').sort(),
      [anonymous, 'data', 'made'].sort(),
    );
    await fails(['volume', 'rm', 'data'], /volume is in use - \[[0-9a-f]{64}\]/);
    // Pruning skips volumes in use.
    assert.doesNotMatch(await ok(['volume', 'prune', '-f', '--all']), /data|made/);
    await ok(['rm', '-v', 'c1']);
    assert.deepEqual(
      (await ok(['volume', 'ls', '-q'])).trim().split('\n').sort(),
      ['data', 'made'],
      'rm -v took the anonymous one',
    );
    await ok(['volume', 'rm', 'data', 'made']);
    assert.equal((await ok(['volume', 'ls', '-q'])).trim(), '');
  });

  it('refuses host directories and other mounts it cannot give a VM, saying why', async (t) => {
    if (!d) return t.skip('no tetherd');
    await fails(
      ['create', '-v', '/etc:/host-etc', BUSYBOX_IMAGE, 'true'],
      /shares disks with the host, not folders/,
    );
    await fails(
      ['create', '--mount', 'type=bind,source=/tmp,target=/x', BUSYBOX_IMAGE, 'true'],
      /not folders/,
    );
    await fails(['create', '--tmpfs', '/run', BUSYBOX_IMAGE, 'true'], /./);
    // (Names of one letter would read as Windows drives to the CLI, which then sends them as anonymous paths.)
    await fails(
      ['create', '-v', 'v1:/x', '-v', 'v2:/x', BUSYBOX_IMAGE, 'true'],
      /Duplicate mount point: \/x/,
    );
    assert.equal((await ok(['volume', 'ls', '-q'])).trim(), '', 'a refused create leaves no volume behind');
  });

  it('reports disk usage with docker system df', async (t) => {
    if (!d) return t.skip('no tetherd');
    await ok(['volume', 'create', 'sized']);
    await ok(['create', '--name', 'c2', '-v', 'sized:/s', BUSYBOX_IMAGE, 'true']);
    const table = await ok(['system', 'df']);
    assert.match(table, /^Images\s+1\s+1\s+\S+/m);
    assert.match(table, /^Containers\s+1\s+0\s+/m);
    assert.match(table, /^Local Volumes\s+1\s+1\s+/m);
    const verbose = await ok(['system', 'df', '-v']);
    assert.match(verbose, /tether\/busybox\s+latest/);
    assert.match(verbose, /sized\s+1\s+/);
    await ok(['rm', 'c2']);
    await ok(['volume', 'rm', 'sized']);
  });

  it('lists dangling images and prunes what no container uses, with the space it freed', async (t) => {
    if (!d) return t.skip('no tetherd');
    const { archive } = await dockerSave({
      layers: [await tarOf([{ name: 'junk', data: 'x'.repeat(100_000) }])],
      repoTags: [],
    });
    const file = join(d.dir, 'untagged.tar');
    writeFileSync(file, archive);
    await ok(['load', '-i', file]);
    await ok(['tag', BUSYBOX_IMAGE, 'extra:1']);
    assert.equal((await ok(['images', '-q', '--filter', 'reference=extra'])).trim().split('\n').length, 1);
    assert.equal(
      (await ok(['images', '-q', '--filter', 'reference=tether/*:latest'])).trim().split('\n').length,
      1,
    );
    assert.match((await ok(['images', '-q', '--filter', 'dangling=true'])).trim(), /^[0-9a-f]{12}$/);
    // A dangling image goes; tagged ones and those in use stay.
    const pruned = await ok(['image', 'prune', '-f']);
    assert.match(pruned, /deleted: sha256:[0-9a-f]{64}/i);
    assert.match(pruned, /Total reclaimed space: [1-9]/);
    assert.equal((await ok(['images', '-q', '--filter', 'dangling=true'])).trim(), '');
    await ok(['create', '--name', 'user1', BUSYBOX_IMAGE, 'true']);
    const all = await ok(['image', 'prune', '-a', '-f']);
    assert.doesNotMatch(all, /deleted:/i, 'busybox is in use (under two tags)');
    await ok(['rmi', 'extra:1']);
    await ok(['rm', 'user1']);
  });
});
