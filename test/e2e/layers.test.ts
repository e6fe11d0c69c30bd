/**
 * Images as layered disks under QEMU (issue 11): tetherd with the QEMU driver and the real docker CLI load
 * a four-layer image whose upper layers delete, replace and reshape files of the lower ones. Inside the
 * container the tree must be exactly the one the layers describe; two containers of the image write to the
 * same path and neither sees the other's file (each has its own writable layer, kept across its restarts);
 * a named volume's data outlives the container that wrote it, and the volume commands behave as Docker's.
 * A pull from a local registry (Debian's docker-registry) runs the same image. Four boots carry every assertion.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { need } from '../helpers/prerequisites.ts';
import { registryPrerequisites, startRegistry } from '../helpers/registry.ts';
import {
  BUSYBOX_IMAGE_TAR,
  startTetherd,
  tetherdPrerequisites,
  type DockerResult,
  type Tetherd,
} from '../helpers/tetherd.ts';
import { vmPrerequisites } from '../helpers/vm.ts';
import { dockerSave, snapshot, tarOf } from '../unit/daemon/images/image-fixtures.ts';
import { expectedListing, LAYERED_IMAGE, layeredImageTar } from './layered/image.ts';

const BOOT_TIMEOUT_MS = 180_000;
/** Runs /list.sh (the image's command), then shows and rewrites its own file and the volume's. */
const SCRIPT = (mark: string): string =>
  `/list.sh; echo "w before: $(cat /t/w 2>/dev/null || echo none)"; echo ${mark} > /t/w; ` +
  `echo "volume before: $([ -f /data/f ] && tr '\\n' ' ' </data/f || echo none)"; echo ${mark} >> /data/f`;

describe(
  'layered images: one disk per layer, a writable layer per container, volumes',
  { timeout: 900_000 },
  () => {
    let daemon: Tetherd | undefined;
    const docker = (args: string[]): Promise<DockerResult> =>
      daemon!.docker(args, { timeoutMs: BOOT_TIMEOUT_MS });
    const ok = async (args: string[]): Promise<string> => {
      const result = await docker(args);
      assert.equal(result.code, 0, `docker ${args.join(' ')}: ${result.stderr}`);
      return result.stdout;
    };
    const skipUnlessReady = (t: { skip(message?: string): void }): boolean => {
      if (daemon) return false;
      t.skip('no tetherd');
      return true;
    };

    before(async (t) => {
      if (!need(t as never, { ...vmPrerequisites(), ...tetherdPrerequisites() })) return;
      daemon = await startTetherd({ driver: 'qemu' });
    });

    after(async () => {
      if (daemon) await daemon.dispose();
    });

    it('loads the image: a qcow2 per layer, the busybox layer shared with the busybox image', async (t) => {
      if (skipUnlessReady(t)) return;
      const archive = join(daemon!.dir, 'layered.tar');
      writeFileSync(archive, await layeredImageTar(BUSYBOX_IMAGE_TAR));
      await ok(['load', '-i', BUSYBOX_IMAGE_TAR]);
      assert.match(await ok(['load', '-i', archive]), new RegExp(`Loaded image: ${LAYERED_IMAGE}`));
      const inspect = JSON.parse(await ok(['image', 'inspect', LAYERED_IMAGE])) as Array<{
        RootFS: { Layers: string[] };
        GraphDriver: { Name: string; Data: { LayerCount: string } };
      }>;
      assert.equal(inspect[0]!.RootFS.Layers.length, 4);
      assert.deepEqual(
        [inspect[0]!.GraphDriver.Name, inspect[0]!.GraphDriver.Data.LayerCount],
        ['tether-qcow2-chain', '4'],
      );
      const df = JSON.parse((await daemon!.http('GET', '/v1.43/system/df')).body) as {
        LayersSize: number;
        Images: Array<{ RepoTags: string[]; Size: number; SharedSize: number }>;
      };
      const layered = df.Images.find((image) => image.RepoTags.includes(LAYERED_IMAGE))!;
      const busybox = df.Images.find((image) => image.RepoTags.includes('tether/busybox:latest'))!;
      t.diagnostic(
        `system df: layers ${df.LayersSize} B; busybox ${busybox.Size} B, layered ${layered.Size} B, shared ${layered.SharedSize} B`,
      );
      assert.ok(
        layered.SharedSize > 0 && layered.SharedSize === busybox.Size,
        'the busybox layer is stored once',
      );
      assert.equal(df.LayersSize, layered.Size, 'all layers once: the layered image holds busybox’s');
    });

    it('refuses malicious and broken tarballs, leaving the store as it was', async (t) => {
      if (skipUnlessReady(t)) return;
      const ok1 = await tarOf([{ name: 'fine', data: 'fine\n' }]);
      const cases: Array<[string, Buffer, RegExp]> = [
        [
          'a path out of the root',
          (await dockerSave({ layers: [await tarOf([{ name: '../../etc/x', data: 'x' }])] })).archive,
          /climbs out/,
        ],
        [
          'a symlink out of the root',
          (
            await dockerSave({
              layers: [await tarOf([{ name: 'l', type: 'symlink', linkname: '../../../etc' }])],
            })
          ).archive,
          /out of the root|points out/,
        ],
        [
          'a layer whose digest is not its diff id',
          (await dockerSave({ layers: [ok1], diffIds: [`sha256:${'0'.repeat(64)}`] })).archive,
          /sha256/,
        ],
        ['a truncated archive', (await dockerSave({ layers: [ok1] })).archive.subarray(0, 1536), /./],
        [
          'an image for another platform',
          (await dockerSave({ layers: [ok1], config: { architecture: 'arm64' } })).archive,
          /linux\/amd64 images only/,
        ],
      ];
      const store = join(daemon!.root, 'images');
      const before = snapshot(store);
      const images = await ok(['images', '-q', '--no-trunc']);
      for (const [what, archive, pattern] of cases) {
        const file = join(daemon!.dir, 'bad.tar');
        writeFileSync(file, archive);
        const load = await docker(['load', '-i', file]);
        assert.notEqual(load.code, 0, `${what}: docker load should fail`);
        assert.match(load.stderr, pattern, what);
      }
      assert.deepEqual(snapshot(store), before, 'nothing of a refused load is left in the store');
      assert.equal(await ok(['images', '-q', '--no-trunc']), images);
    });

    it('shows inside the container exactly the tree the layers describe', async (t) => {
      if (skipUnlessReady(t)) return;
      await ok(['volume', 'create', 'vol1']);
      const out = await ok([
        'run',
        '--name',
        'one',
        '-v',
        'vol1:/data',
        LAYERED_IMAGE,
        'sh',
        '-c',
        SCRIPT('one'),
      ]);
      // busybox sort orders by its locale, the listing by code points: compare the sets in one order.
      const listing = out
        .split('\n')
        .filter((line) => line.startsWith('t'))
        .sort();
      assert.deepEqual(listing, await expectedListing());
      assert.match(out, /^w before: none$/m);
      assert.match(out, /^volume before: none$/m);
    });

    it('gives each container its own writable layer, kept across its restarts', async (t) => {
      if (skipUnlessReady(t)) return;
      // A second container of the image, on the same volume once the first is stopped.
      // And a new volume over /t/sticky: Docker's copy-up gives it the image's files, owner and mode there.
      const two = await ok([
        'run',
        '--name',
        'two',
        '-v',
        'vol1:/data',
        '-v',
        'copied:/t/sticky',
        LAYERED_IMAGE,
        'sh',
        '-c',
        `${SCRIPT('two')}; echo "data: $(ls -A /data)"; stat -c 'sticky %a %u %g' /t/sticky; cat /t/sticky/c`,
      ]);
      assert.match(two, /^data: f$/m, 'a new volume holds only what was written to it (no lost+found)');
      assert.match(two, /^sticky 1770 1000 100\nc$/m, 'the new volume received the image’s /t/sticky');
      assert.match(two, /^w before: none$/m, 'the second container does not see the first one’s file');
      assert.match(two, /^volume before: one $/m, 'the volume’s data outlived the container that wrote it');
      // The first again: its own file is still in its layer, and the volume has both writes.
      const again = await ok(['start', '-a', 'one']);
      assert.match(again, /^w before: one$/m);
      assert.match(again, /^volume before: one two $/m);
    });

    it('keeps a volume in use, removes it once free, and refuses host directories', async (t) => {
      if (skipUnlessReady(t)) return;
      const volumes = await ok(['volume', 'ls', '--format', '{{.Name}}']);
      assert.deepEqual(volumes.trim().split('\n'), ['copied', 'vol1']);
      const inspect = JSON.parse(await ok(['volume', 'inspect', 'vol1'])) as Array<{
        Name: string;
        Driver: string;
      }>;
      assert.deepEqual([inspect[0]!.Name, inspect[0]!.Driver], ['vol1', 'local']);
      const busy = await docker(['volume', 'rm', 'vol1']);
      assert.notEqual(busy.code, 0);
      assert.match(busy.stderr, /volume is in use/);
      const bind = await docker(['run', '--rm', '-v', '/etc:/host-etc', LAYERED_IMAGE, 'true']);
      assert.notEqual(bind.code, 0);
      assert.match(bind.stderr, /shares disks with the host, not folders/);
      const df = JSON.parse((await daemon!.http('GET', '/v1.43/system/df')).body) as {
        Containers: Array<{ Names: string[]; SizeRw: number }>;
      };
      for (const container of df.Containers)
        t.diagnostic(`${container.Names[0]}: writable layer ${container.SizeRw} B`);
      // docker ps -s: each container's own layer, and with its image's shared layers ("virtual").
      const sizes = await ok(['ps', '-a', '-s', '--format', '{{.Names}} {{.Size}}']);
      for (const line of sizes.trim().split('\n'))
        assert.match(line, /^(one|two) [\d.]+[kM]B \(virtual [\d.]+MB\)$/, sizes);
      await ok(['rm', 'one', 'two']);
      await ok(['volume', 'rm', 'vol1', 'copied']);
      assert.equal((await ok(['volume', 'ls', '-q'])).trim(), '');
      // The image's layers go with it; busybox's stays for the busybox image.
      await ok(['rmi', LAYERED_IMAGE]);
      const after = JSON.parse((await daemon!.http('GET', '/v1.43/system/df')).body) as {
        LayersSize: number;
        Images: Array<{ Size: number }>;
      };
      assert.deepEqual([after.Images.length, after.LayersSize], [1, after.Images[0]!.Size]);
    });

    it('pulls the image from a registry (only the layers it lacks) and runs it', async (t) => {
      if (skipUnlessReady(t)) return;
      if (!need(t, registryPrerequisites())) return;
      const registry = await startRegistry();
      try {
        await registry.push(`docker-archive:${join(daemon!.dir, 'layered.tar')}`, 'layered:latest');
        const image = `${registry.host}/layered:latest`;
        const pull = await ok(['pull', image]);
        // busybox's layer is here already; the three above it come from the registry.
        assert.equal(pull.match(/Already exists/g)?.length, 1, pull);
        assert.equal(pull.match(/Pull complete/g)?.length, 3, pull);
        assert.match(pull, new RegExp(`Status: Downloaded newer image for ${image}`));
        const out = await ok(['run', '--rm', image]);
        assert.deepEqual(
          out
            .split('\n')
            .filter((line) => line.startsWith('t'))
            .sort(),
          await expectedListing(),
        );
      } finally {
        await registry.stop();
      }
    });
  },
);
