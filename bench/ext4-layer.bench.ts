/**
 * Building an upper layer of a layered root disk (hostside/src/daemon/images/ext4-layer/): applying a
 * layer tar to the raw ext4 image of the layers below with debugfs, then keeping the changed clusters as
 * a qcow2 delta. Baseline, in the same run: `tar-to-ext4.sh` of the same layer tar alone (tar under
 * fakeroot, `mkfs.ext4 -d`), what building that layer as a flat image of its own costs.
 *
 * Also measured, for the delta: `qemu-img rebase` of an empty qcow2 over the after-image onto the parent
 * chain (qemu compares old and new backing itself; no `before` copy needed), against writeDelta's
 * map-and-compare.
 *
 * BENCH_LOWER_FILES (default 2000) files of BENCH_FILE_KIB (default 32) KiB in the lower layer; the upper
 * layer replaces a quarter of them, deletes a directory with a tenth, adds as many new ones, on an image of
 * BENCH_IMAGE_MIB (default 8192) MiB, sparse.
 */
import { execFileSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tarStream from 'tar-stream';
import { applyLayer } from '../hostside/src/daemon/images/ext4-layer/apply-layer.ts';
import { writeDelta } from '../hostside/src/daemon/images/ext4-layer/delta.ts';
import { describeMachine, printTable, ratio, REPO } from './lib/harness.ts';

const FILES = Number(process.env['BENCH_LOWER_FILES'] ?? 2000);
const FILE_KIB = Number(process.env['BENCH_FILE_KIB'] ?? 32);
const IMAGE_MIB = Number(process.env['BENCH_IMAGE_MIB'] ?? 8192);

function randomData(name: string, bytes: number): Buffer {
  const key = createHash('sha256').update(name).digest().subarray(0, 16);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(bytes));
}

async function tarOf(
  entries: { name: string; data?: Buffer; type?: 'directory' | 'file' }[],
): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve) => pack.on('end', () => resolve()));
  const mtime = new Date(1_700_000_000_000);
  for (const { name, data, type } of entries)
    pack.entry(
      { name, type: type ?? 'file', mode: type === 'directory' ? 0o755 : 0o644, mtime },
      data ?? Buffer.alloc(0),
    );
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}

const dirOf = (i: number): string => `d${i % 20}`;
const timed = async <T>(run: () => T | Promise<T>): Promise<[T, number]> => {
  const started = performance.now();
  const result = await run();
  return [result, (performance.now() - started) / 1000];
};
const allocatedKiB = (file: string): number => Math.round((statSync(file).blocks * 512) / 1024);

async function main(): Promise<void> {
  console.log(`ext4-layer: ${describeMachine()}`);
  const work = mkdtempSync(join(tmpdir(), 'tether-bench-ext4-'));
  try {
    const bytes = FILE_KIB * 1024;
    const lowerEntries = [
      { name: './', type: 'directory' as const },
      ...Array.from({ length: 20 }, (_, d) => ({ name: `d${d}/`, type: 'directory' as const })),
      ...Array.from({ length: FILES }, (_, i) => ({
        name: `${dirOf(i)}/f${i}`,
        data: randomData(`l${i}`, bytes),
      })),
    ];
    const upperEntries = [
      { name: '.wh.d0', data: Buffer.alloc(0) }, // a directory with a twentieth of the files
      { name: 'd1/.wh.f1', data: Buffer.alloc(0) },
      ...Array.from({ length: FILES / 4 }, (_, k) => {
        const i = 4 * k + 2; // files of the other directories
        return { name: `${dirOf(i)}/f${i}`, data: randomData(`u${i}`, bytes) };
      }),
      { name: 'new/', type: 'directory' as const },
      ...Array.from({ length: FILES / 4 }, (_, i) => ({
        name: `new/n${i}`,
        data: randomData(`n${i}`, bytes),
      })),
    ];
    const lowerTar = join(work, 'lower.tar');
    const upperTar = join(work, 'upper.tar');
    writeFileSync(lowerTar, await tarOf(lowerEntries));
    writeFileSync(upperTar, await tarOf(upperEntries));
    const layerMiB = (statSync(upperTar).size / 1048576).toFixed(1);
    const script = join(REPO, 'init-image/tar-to-ext4.sh');

    const lowerRaw = join(work, 'lower.raw');
    execFileSync(script, [lowerTar, lowerRaw, String(IMAGE_MIB)], { stdio: 'ignore' });
    const parent = join(work, 'lower.qcow2');
    execFileSync('qemu-img', ['convert', '-q', '-O', 'qcow2', lowerRaw, parent]);

    const [, flatS] = await timed(() =>
      execFileSync(script, [upperTar, join(work, 'flat.raw'), String(IMAGE_MIB)], { stdio: 'ignore' }),
    );
    const after = join(work, 'after.raw');
    const [, copyS] = await timed(() => execFileSync('cp', ['--sparse=always', lowerRaw, after]));
    const [stats, applyS] = await timed(() =>
      applyLayer({ rawImage: after, layerTar: upperTar, workDir: work }),
    );
    const delta = join(work, 'delta.qcow2');
    const [result, deltaS] = await timed(() =>
      writeDelta({ before: lowerRaw, after, parentQcow2: parent, out: delta, workDir: work }),
    );
    // The alternative: an empty qcow2 over the after-image, rebased onto the parent.
    const rebased = join(work, 'rebased.qcow2');
    const [, rebaseS] = await timed(() => {
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', after, rebased]);
      execFileSync('qemu-img', ['rebase', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', parent, rebased]);
    });

    console.log(
      `layer: ${upperEntries.length} entries, ${layerMiB} MiB tar; image ${IMAGE_MIB} MiB; ` +
        `${stats.commands} debugfs commands in ${stats.applyRuns} runs, ${stats.lookupRuns} look-up runs, ` +
        `${stats.removed} names removed`,
    );
    printTable(
      'building one upper layer (s)',
      ['step', 's', 'ratio', 'KiB written'],
      [
        [
          'tar-to-ext4 of the layer alone (baseline)',
          flatS.toFixed(2),
          '1.00x',
          String(allocatedKiB(join(work, 'flat.raw'))),
        ],
        ['cp --sparse of the lower raw', copyS.toFixed(2), ratio(copyS, flatS), '-'],
        ['applyLayer (debugfs)', applyS.toFixed(2), ratio(applyS, flatS), '-'],
        [
          'writeDelta (map + compare + qemu-io)',
          deltaS.toFixed(2),
          ratio(deltaS, flatS),
          String(allocatedKiB(delta)),
        ],
        [
          'qemu-img rebase (alternative)',
          rebaseS.toFixed(2),
          ratio(rebaseS, flatS),
          String(allocatedKiB(rebased)),
        ],
        [
          'apply + delta',
          (applyS + deltaS).toFixed(2),
          ratio(applyS + deltaS, flatS),
          `${Math.round(result.changedBytes / 1024)} changed`,
        ],
      ],
    );
    console.log(
      `delta: ${Math.round(result.changedBytes / 1024)} KiB changed in ${result.runs} runs, ` +
        `${Math.round(result.comparedBytes / 1048576)} MiB compared; layer data ${Math.round(stats.dataBytes / 1024)} KiB`,
    );
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
