/**
 * A stand-in for the qcow2 layer disks that needs no mkfs, debugfs nor qemu-img: every layer's "disk" is a
 * tar of the whole tree up to that layer, flattened by LayerTree, so a test can list an image's root disk.
 * It counts the disks it made.
 */
import { copyFileSync } from 'node:fs';
import type { LayerDiskBuilder } from '../../../../hostside/src/daemon/images/layer-disks.ts';
import { LayerTree, scanLayer, writeFlatTar } from '../../../../hostside/src/daemon/images/layers.ts';

export function tarLayerDisks(): LayerDiskBuilder & { disksMade: number } {
  const builder = {
    disksMade: 0,
    session: () => ({
      base: async (flatTar: string, out: string) => {
        builder.disksMade++;
        copyFileSync(flatTar, out);
      },
      upper: async (plainTar: string, parent: string, out: string) => {
        builder.disksMade++;
        const tree = new LayerTree();
        await scanLayer(tree, 0, parent, 'the layer below');
        await scanLayer(tree, 1, plainTar, 'the layer');
        await writeFlatTar(tree.entries(), [parent, plainTar], out);
      },
      close: () => undefined,
    }),
  };
  return builder;
}
