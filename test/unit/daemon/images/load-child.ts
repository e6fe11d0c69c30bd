// Loads one archive into a store and exits: the process the crash test kills at random moments.
// Usage: node --import tsx load-child.ts STORE_DIR ARCHIVE [fake]   ("fake": the root disk is the flat tar)
import { copyFileSync, createReadStream } from 'node:fs';
import { join } from 'node:path';
import { ImageStore } from '../../../../hostside/src/daemon/images/image-store.ts';

const [dir, archive, mode] = process.argv.slice(2);
const store = new ImageStore(dir!, {
  ...(mode === 'fake'
    ? {
        makeRootDisk: async (flat: string, work: string) => {
          copyFileSync(flat, join(work, 'disk'));
          return join(work, 'disk');
        },
      }
    : {}),
});
store.load(createReadStream(archive!)).then(
  (result) => process.stdout.write(`${result.loaded.join('\n')}\n`),
  (error: unknown) => {
    process.stderr.write(`${String(error)}\n`);
    process.exit(1);
  },
);
