// Loads one archive into a store and exits: the process the crash test kills at random moments.
// Usage: node --import tsx load-child.ts STORE_DIR ARCHIVE [fake]   ("fake": the root disk is the flat tar)
import { createReadStream } from 'node:fs';
import { ImageStore } from '../../../../hostside/src/daemon/images/image-store.ts';
import { tarLayerDisks } from './tar-layer-disks.ts';

const [dir, archive, mode] = process.argv.slice(2);
const store = new ImageStore(dir!, mode === 'fake' ? { layerDisks: tarLayerDisks() } : {});
store.load(createReadStream(archive!)).then(
  (result) => process.stdout.write(`${result.loaded.join('\n')}\n`),
  (error: unknown) => {
    process.stderr.write(`${String(error)}\n`);
    process.exit(1);
  },
);
