/**
 * Images as layered disks (issue 11), measured end to end with tetherd's own ImageStore in this process:
 *
 * 1. Import: a synthetic 10-layer image (bench/lib/layered-image.ts: a busybox root and about
 *    BENCH_IMAGE_MIB MiB of text and random files, upper layers replacing, deleting and hiding files of
 *    lower ones) and a 1-layer image of the same final tree, each `docker load`ed into a fresh store (one
 *    qcow2 per layer, the lowest a whole ext4, the others deltas). Baseline in the same run: the flat path
 *    the store took before layers were stored apart (every layer merged into one tar by LayerTree and
 *    writeFlatTar, then tar-to-ext4.sh at its default size). Then a second 10-layer image that shares the
 *    lower nine layers of the first, loaded into the store that holds the first: what sharing saves.
 * 2. Container start: the image's root disk booted under QEMU with the real boot image, as tetherd does it
 *    (createRootLayer at create, start keeping that layer), timed from driver.start() to a marker the
 *    container's command prints after reading a file of the lowest layer and one of the top layer. The
 *    command then digests every file under /data, which the bench checks against the model: a layer
 *    applied wrongly fails the bench.
 * 3. The container's own writable layer after each boot: what one more container of an image costs.
 *
 * BENCH_PARTS=import,boot picks parts; BENCH_IMPORT_ROUNDS (2) imports of each, alternating which path goes
 * first; BENCH_BOOTS (3) boots of each image, alternating.
 */
import { execFile } from 'node:child_process';
import {
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { spoolArchive } from '../hostside/src/daemon/images/archive.ts';
import { applyLayer } from '../hostside/src/daemon/images/ext4-layer/apply-layer.ts';
import { writeDelta } from '../hostside/src/daemon/images/ext4-layer/delta.ts';
import { ImageStore, type ImageRecord } from '../hostside/src/daemon/images/image-store.ts';
import { qcow2LayerDisks, type LayerDiskBuilder } from '../hostside/src/daemon/images/layer-disks.ts';
import { LayerTree, plainLayer, scanLayer, writeFlatTar } from '../hostside/src/daemon/images/layers.ts';
import { planImages } from '../hostside/src/daemon/images/plan.ts';
import { tarToExt4Script } from '../hostside/src/vm/paths.ts';
import { QemuDriver } from '../hostside/src/vm/qemu/qemu-driver.ts';
import { LogFrameDecoder } from '../protocol/src/logs/log-frame.ts';
import { dockerSave } from '../test/unit/daemon/images/image-fixtures.ts';
import { describeMachine, fixed, median, printTable, ratio, REPO } from './lib/harness.ts';
import {
  dataDigest,
  layerTar,
  mergedFiles,
  readMembers,
  tenLayers,
  type LayerModel,
} from './lib/layered-image.ts';
import { bootImages, describeImages, startImageVm, type BootImage } from './lib/vm-image.ts';

const run = promisify(execFile);
const IMAGE_MIB = Number(process.env['BENCH_IMAGE_MIB'] ?? 40);
const ROUNDS = Number(process.env['BENCH_IMPORT_ROUNDS'] ?? 2);
const BOOTS = Number(process.env['BENCH_BOOTS'] ?? 3);
const PARTS = new Set((process.env['BENCH_PARTS'] ?? 'import,boot').split(','));
const BUSYBOX_TAR = join(REPO, 'build/image/busybox.tar');
const BOOT_TIMEOUT_MS = 180_000;
/** How often the log port's file is read for the marker (adds at most this to the host time). */
const LOG_POLL_MS = 5;
const READY = 'IMAGE-LAYERS-READY';
const DIGEST = 'IMAGE-LAYERS-DIGEST';
/**
 * The container's command: the marker with the guest uptime, a file of the lowest layer and one of the
 * top layer; then (after the timed part) the digest of every file under /data.
 */
const COMMAND =
  `echo ${READY} $(cut -d' ' -f1 /proc/uptime) $(cat /data/layer0) $(cat /data/top); ` +
  `cd /data && echo ${DIGEST} $(find . -type f | sort | xargs md5sum | md5sum)`;
const MIB = 1024 * 1024;

interface Image {
  name: string;
  tag: string;
  layers: Buffer[];
  tarball: string;
  /** What /data/top holds in a container of it. */
  top: string;
  digest: string;
}

const seconds = (from: number): number => (performance.now() - from) / 1000;
const mib = (bytes: number): string => fixed(bytes / MIB, 1);
const sum = (values: number[]): number => values.reduce((a, b) => a + b, 0);
const allocated = (file: string): number => statSync(file).blocks * 512;

async function makeImage(
  name: string,
  tag: string,
  layers: Buffer[],
  model: LayerModel[],
  work: string,
): Promise<Image> {
  const { archive } = await dockerSave({ layers, repoTags: [tag] });
  const tarball = join(work, `${tag.replace(/[/:]/g, '-')}.tar`);
  writeFileSync(tarball, archive);
  const files = mergedFiles(model);
  return {
    name,
    tag,
    layers,
    tarball,
    top: files.get('data/top')!.toString().trim(),
    digest: dataDigest(files),
  };
}

/** Seconds spent in the layer builder's steps during one import. */
interface BuildTimes {
  base: number;
  upper: number;
}

/** The product's layer builder, with the time of each base and upper layer added to `times`. */
function timedLayerDisks(times: BuildTimes): LayerDiskBuilder {
  const inner = qcow2LayerDisks({ script: tarToExt4Script() });
  return {
    session(work) {
      const session = inner.session(work);
      const timed =
        <A extends unknown[]>(step: keyof BuildTimes, call: (...args: A) => Promise<void>) =>
        async (...args: A): Promise<void> => {
          const started = performance.now();
          try {
            await call(...args);
          } finally {
            times[step] += seconds(started);
          }
        };
      return {
        base: timed('base', (flat: string, out: string) => session.base(flat, out)),
        upper: timed('upper', (plain: string, parent: string, out: string) =>
          session.upper(plain, parent, out),
        ),
        close: () => session.close(),
      };
    },
  };
}

interface LayeredImport {
  seconds: number;
  times: BuildTimes;
  record: ImageRecord;
  /** Allocated bytes of the layers this import added to the store. */
  addedBytes: number;
  /** Allocated bytes of all the image's layers. */
  imageBytes: number;
}

/** A layered store and the builder times of the import running in it. */
interface TimedStore {
  store: ImageStore;
  times: BuildTimes;
}

function layeredStore(dir: string): TimedStore {
  const times: BuildTimes = { base: 0, upper: 0 };
  return { store: new ImageStore(dir, { layerDisks: timedLayerDisks(times) }), times };
}

async function importLayered({ store, times }: TimedStore, image: Image): Promise<LayeredImport> {
  times.base = 0;
  times.upper = 0;
  const before = new Set(store.layers.all().map((layer) => layer.chainId));
  const started = performance.now();
  const { images } = await store.load(createReadStream(image.tarball));
  const took = seconds(started);
  const record = images[0]!;
  const bytes = (chainIds: string[]): number => sum(chainIds.map((id) => store.layers.diskBytes(id)));
  return {
    seconds: took,
    times: { ...times },
    record,
    addedBytes: bytes(record.layers.filter((id) => !before.has(id))),
    imageBytes: bytes(record.layers),
  };
}

interface FlatImport {
  seconds: number;
  bytes: number;
  /** Where the time went: spooling and checking the archive, decompressing and scanning the layers, the flat tar, tar-to-ext4. */
  phases: { spool: number; scan: number; flatTar: number; mkfs: number };
}

/**
 * The flat path, as ImageStore built an image before layers were stored apart (272397c): every layer's
 * tree merged into one, written as one tar, made into one raw ext4 disk by tar-to-ext4.sh at its default
 * size (the unpacked size plus a quarter and 16 MiB, sparse).
 */
async function importFlat(image: Image, work: string): Promise<FlatImport> {
  const dir = mkdtempSync(join(work, 'flat-'));
  try {
    const started = performance.now();
    const spool = join(dir, 'spool');
    mkdirSync(spool);
    const [plan] = await planImages(await spoolArchive(createReadStream(image.tarball), spool));
    const spooled = performance.now();
    const tree = new LayerTree();
    const plainFiles: string[] = [];
    for (const [index, layer] of plan!.layers.entries()) {
      const what = `${image.name}, layer ${index + 1}`;
      const plain = await plainLayer(
        layer.file!.file,
        join(dir, `layer${index}.tar`),
        layer.file!.sha256,
        what,
      );
      if (plain.diffId !== layer.diffId)
        throw new Error(`${what}: diff id ${plain.diffId} is not ${layer.diffId}`);
      await scanLayer(tree, index, plain.file, what);
      plainFiles.push(plain.file);
    }
    const scanned = performance.now();
    const flat = join(dir, 'flat.tar');
    await writeFlatTar(tree.entries(), plainFiles, flat);
    const flattened = performance.now();
    const disk = join(dir, 'rootfs.img');
    await run('bash', [tarToExt4Script(), flat, disk], { maxBuffer: 16 * MIB });
    const done = performance.now();
    return {
      seconds: (done - started) / 1000,
      bytes: allocated(disk),
      phases: {
        spool: (spooled - started) / 1000,
        scan: (scanned - spooled) / 1000,
        flatTar: (flattened - scanned) / 1000,
        mkfs: (done - flattened) / 1000,
      },
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One upper layer built again step by step, with the product's functions: where an upper layer's time goes. */
async function upperLayerSteps(store: ImageStore, image: Image, work: string): Promise<string> {
  const dir = mkdtempSync(join(work, 'steps-'));
  try {
    const record = store.resolve(image.tag);
    const parent = store.layers.disk(record.layers.at(-2)!);
    const layerFile = join(dir, 'layer.tar');
    writeFileSync(layerFile, image.layers.at(-1)!);
    const raw = join(dir, 'current.raw');
    const before = join(dir, 'before.raw');
    let at = performance.now();
    const step = (): number => {
      const took = seconds(at);
      at = performance.now();
      return took;
    };
    await run('qemu-img', ['convert', '-q', '-O', 'raw', parent, raw]);
    const convert = step();
    await run('cp', ['--sparse=always', raw, before]);
    const copy = step();
    const applied = await applyLayer({ rawImage: raw, layerTar: layerFile, workDir: dir });
    const apply = step();
    const delta = await writeDelta({
      before,
      after: raw,
      parentQcow2: parent,
      out: join(dir, 'layer.qcow2'),
      workDir: dir,
    });
    const deltaS = step();
    return (
      `the top layer built again step by step: raw copy of the filesystem below ${fixed(copy)} s, debugfs ` +
      `apply ${fixed(apply)} s (${applied.entries} entries, ${applied.commands} commands, ${applied.applyRuns} ` +
      `debugfs -w runs, ${applied.lookupRuns} lookups), delta ${fixed(deltaS)} s (${mib(delta.changedBytes)} MiB ` +
      `of ${mib(delta.comparedBytes)} MiB compared changed, ${delta.runs} runs); qemu-img convert of the layer ` +
      `below to raw ${fixed(convert)} s (an import does it only for a first upper layer over a stored one)`
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface ImportRound {
  ten: LayeredImport;
  other: LayeredImport;
  one: LayeredImport;
  flatTen: FlatImport;
  flatOther: FlatImport;
  flatOne: FlatImport;
}

async function importPart(
  ten: Image,
  other: Image,
  one: Image,
  work: string,
): Promise<{ tenStore: ImageStore; oneStore: ImageStore }> {
  const rounds: ImportRound[] = [];
  let stores: { tenStore: ImageStore; oneStore: ImageStore } | undefined;
  for (let round = 0; round < ROUNDS; round++) {
    const layered = async (): Promise<Pick<ImportRound, 'ten' | 'other' | 'one'>> => {
      const dir = join(work, `stores-${round}`);
      const tenStore = layeredStore(join(dir, 'ten'));
      const oneStore = layeredStore(join(dir, 'one'));
      const result = {
        ten: await importLayered(tenStore, ten),
        other: await importLayered(tenStore, other),
        one: await importLayered(oneStore, one),
      };
      // The last round's stores are the boot part's images; earlier ones go.
      if (stores) rmSync(join(work, `stores-${round - 1}`), { recursive: true, force: true });
      stores = { tenStore: tenStore.store, oneStore: oneStore.store };
      return result;
    };
    const flat = async (): Promise<Pick<ImportRound, 'flatTen' | 'flatOther' | 'flatOne'>> => ({
      flatTen: await importFlat(ten, work),
      flatOther: await importFlat(other, work),
      flatOne: await importFlat(one, work),
    });
    if (round % 2 === 0) rounds.push({ ...(await layered()), ...(await flat()) });
    else {
      const flatFirst = await flat();
      rounds.push({ ...(await layered()), ...flatFirst });
    }
  }
  const med = (pick: (round: ImportRound) => number): number => median(rounds.map(pick));
  const tarball = (image: Image): number => statSync(image.tarball).size;

  printTable(
    `import time, median of ${ROUNDS} (flat = the old path: all layers merged into one tar, tar-to-ext4.sh at its default size)`,
    ['image', 'tarball MiB', 'layered s', 'flat s', 'layered/flat'],
    [
      [
        `${ten.name}`,
        mib(tarball(ten)),
        fixed(med((r) => r.ten.seconds)),
        fixed(med((r) => r.flatTen.seconds)),
        ratio(
          med((r) => r.ten.seconds),
          med((r) => r.flatTen.seconds),
        ),
      ],
      [
        `${one.name}`,
        mib(tarball(one)),
        fixed(med((r) => r.one.seconds)),
        fixed(med((r) => r.flatOne.seconds)),
        ratio(
          med((r) => r.one.seconds),
          med((r) => r.flatOne.seconds),
        ),
      ],
      [
        `${other.name}`,
        mib(tarball(other)),
        fixed(med((r) => r.other.seconds)),
        fixed(med((r) => r.flatOther.seconds)),
        ratio(
          med((r) => r.other.seconds),
          med((r) => r.flatOther.seconds),
        ),
      ],
    ],
  );

  const last = rounds.at(-1)!;
  const topTar = other.layers.at(-1)!.length;
  printTable(
    'bytes on disk (allocated; layered = the qcow2 layers, flat = the raw ext4 disk)',
    ['image', 'tarball MiB', 'layered MiB', 'layered/tarball', 'flat MiB', 'flat/tarball', 'layered/flat'],
    [
      [
        ten.name,
        mib(tarball(ten)),
        mib(last.ten.addedBytes),
        ratio(last.ten.addedBytes, tarball(ten)),
        mib(last.flatTen.bytes),
        ratio(last.flatTen.bytes, tarball(ten)),
        ratio(last.ten.addedBytes, last.flatTen.bytes),
      ],
      [
        one.name,
        mib(tarball(one)),
        mib(last.one.addedBytes),
        ratio(last.one.addedBytes, tarball(one)),
        mib(last.flatOne.bytes),
        ratio(last.flatOne.bytes, tarball(one)),
        ratio(last.one.addedBytes, last.flatOne.bytes),
      ],
      [
        `${other.name}: added`,
        mib(tarball(other)),
        mib(last.other.addedBytes),
        ratio(last.other.addedBytes, tarball(other)),
        mib(last.flatOther.bytes),
        ratio(last.flatOther.bytes, tarball(other)),
        ratio(last.other.addedBytes, last.flatOther.bytes),
      ],
    ],
  );
  const newLayers = last.other.record.layers.filter((id) => !last.ten.record.layers.includes(id)).length;
  console.log(
    `${other.name}: ${newLayers} of its ${last.other.record.layers.length} layers new to the store; it added ` +
      `${mib(last.other.addedBytes)} MiB for a top layer tar of ${mib(topTar)} MiB ` +
      `(${ratio(last.other.addedBytes, topTar)}); its layers together take ${mib(last.other.imageBytes)} MiB. ` +
      `Its import took ${ratio(
        med((r) => r.other.seconds),
        med((r) => r.ten.seconds),
      )} of the first's.`,
  );

  const phase = (pick: (round: ImportRound) => number): string => fixed(med(pick));
  printTable(
    `where the import time goes, median of ${ROUNDS} (s)`,
    ['image', 'path', 'total', 'lowest layer', 'upper layers', 'the rest'],
    [ten, one, other].flatMap((image) => {
      const key = image === ten ? 'ten' : image === one ? 'one' : 'other';
      const flatKey = image === ten ? 'flatTen' : image === one ? 'flatOne' : 'flatOther';
      return [
        [
          image.name,
          'layered',
          phase((r) => r[key].seconds),
          phase((r) => r[key].times.base),
          phase((r) => r[key].times.upper),
          phase((r) => r[key].seconds - r[key].times.base - r[key].times.upper),
        ],
        [
          image.name,
          'flat',
          phase((r) => r[flatKey].seconds),
          '',
          '',
          `spool ${phase((r) => r[flatKey].phases.spool)}, scan ${phase((r) => r[flatKey].phases.scan)}, ` +
            `flat tar ${phase((r) => r[flatKey].phases.flatTar)}, tar-to-ext4 ${phase((r) => r[flatKey].phases.mkfs)}`,
        ],
      ];
    }),
  );
  console.log(
    'layered: lowest layer = tar-to-ext4.sh at 8 GiB + qemu-img convert to qcow2; upper layers = raw copy + ' +
      'debugfs + delta each; the rest = spooling and hashing the archive, scanning each layer, the flat tar of ' +
      'the lowest layer, publishing.',
  );
  console.log(await upperLayerSteps(stores!.tenStore, ten, work));
  return stores!;
}

interface BootResult {
  hostS: number;
  guestS: number;
  layerBytes: number;
}

/** Lines of the container's output as they reach the log port's file; stops at `until` or `deadline`. */
async function followLog(path: string, onLine: (line: string) => boolean, deadline: number): Promise<void> {
  const decoder = new LogFrameDecoder();
  let at = 0;
  let pending = '';
  while (performance.now() < deadline) {
    if (existsSync(path)) {
      const bytes = readFileSync(path);
      if (bytes.length > at) {
        for (const frame of decoder.push(bytes.subarray(at))) pending += frame.data.toString();
        at = bytes.length;
        const lines = pending.split('\n');
        pending = lines.pop()!;
        for (const line of lines) if (onLine(line)) return;
      }
    }
    await sleep(LOG_POLL_MS);
  }
  throw new Error(`no ${DIGEST} line in ${path} within ${BOOT_TIMEOUT_MS / 1000} s`);
}

async function bootOnce(
  driver: QemuDriver,
  boot: BootImage,
  image: Image,
  rootDisk: string,
): Promise<BootResult> {
  const stateDir = mkdtempSync(join(tmpdir(), 'tether-bench-layers-'));
  try {
    // As tetherd: the writable layer is made at docker create, the start keeps it.
    await driver.createRootLayer(stateDir, rootDisk);
    const started = performance.now();
    const { vm } = await startImageVm(driver, boot, stateDir, ['/bin/sh', '-c', COMMAND], {
      rootDisk,
      keepRootLayer: true,
    });
    const lines: string[] = [];
    let ready: { hostS: number; guestS: number } | undefined;
    let digest: string | undefined;
    try {
      await followLog(
        vm.logPortPath,
        (line) => {
          lines.push(line);
          const words = line.trim().split(/\s+/);
          if (words[0] === READY && !ready) {
            ready = { hostS: seconds(started), guestS: Number(words[1]) };
            if (words[2] !== 'lowest' || words[3] !== image.top)
              throw new Error(
                `${image.name}: the container read "${words.slice(2).join(' ')}", not "lowest ${image.top}"`,
              );
          }
          if (words[0] === DIGEST) digest = words[1];
          return digest !== undefined;
        },
        started + BOOT_TIMEOUT_MS,
      );
      await Promise.race([vm.wait(), sleep(30_000).then(() => vm.kill())]);
    } catch (error) {
      await vm.kill().catch(() => undefined);
      throw new Error(
        `${(error as Error).message}\ncontainer output:\n${lines.join('\n')}\nconsole: ${vm.consoleLogPath}`,
      );
    } finally {
      vm.release();
    }
    if (!ready) throw new Error(`${image.name}: no ${READY} line; output:\n${lines.join('\n')}`);
    if (digest !== image.digest)
      throw new Error(
        `${image.name}: the files under /data in the container digest to ${digest}, the layers describe ` +
          `${image.digest}: a layer was applied wrongly (tarball ${image.tarball})`,
      );
    return { ...ready, layerBytes: driver.rootLayerBytes(stateDir) };
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }
}

async function bootPart(boot: BootImage, cases: { image: Image; store: ImageStore }[]): Promise<void> {
  const driver = new QemuDriver();
  const results = cases.map(() => [] as BootResult[]);
  for (let round = 0; round < BOOTS; round++)
    for (let k = 0; k < cases.length; k++) {
      const i = (round + k) % cases.length;
      const { image, store } = cases[i]!;
      results[i]!.push(await bootOnce(driver, boot, image, store.resolve(image.tag).rootDisk));
    }
  const hostOf = (i: number): number => median(results[i]!.map((r) => r.hostS));
  const guestOf = (i: number): number => median(results[i]!.map((r) => r.guestS));
  printTable(
    `container start, median of ${BOOTS} (driver.start() → the marker in the log port's file; guest uptime at the marker)`,
    ['image', 'host s', 'ratio', 'guest s', 'ratio', 'boots host s'],
    cases.map(({ image }, i) => [
      image.name,
      fixed(hostOf(i)),
      ratio(hostOf(i), hostOf(0)),
      fixed(guestOf(i)),
      ratio(guestOf(i), guestOf(0)),
      results[i]!.map((r) => fixed(r.hostS)).join(' '),
    ]),
  );
  printTable(
    'disk bytes per container (its own writable qcow2 after a boot, allocated) against the image',
    ['image', 'container KiB (median)', 'each boot KiB', 'image layers MiB'],
    cases.map(({ image, store }, i) => {
      const record = store.resolve(image.tag);
      return [
        image.name,
        fixed(median(results[i]!.map((r) => r.layerBytes)) / 1024, 0),
        results[i]!.map((r) => fixed(r.layerBytes / 1024, 0)).join(' '),
        mib(sum(record.layers.map((id) => store.layers.diskBytes(id)))),
      ];
    }),
  );
  for (const [i, { image, store }] of cases.entries()) {
    const record = store.resolve(image.tag);
    console.log(
      `${image.name}: a container adds ${fixed(median(results[i]!.map((r) => r.layerBytes)) / 1024, 0)} KiB to an ` +
        `image of ${mib(sum(record.layers.map((id) => store.layers.diskBytes(id))))} MiB`,
    );
  }
}

async function main(): Promise<void> {
  if (!existsSync(BUSYBOX_TAR)) {
    console.log(`image layers bench skipped: ${BUSYBOX_TAR} is missing: run \`make build image\``);
    return;
  }
  const work = mkdtempSync(join(tmpdir(), 'tether-bench-image-layers-'));
  try {
    const busybox = await readMembers(BUSYBOX_TAR);
    const model = tenLayers(IMAGE_MIB, 'a');
    const otherModel = tenLayers(IMAGE_MIB, 'b');
    const tars = [await layerTar(model[0]!, busybox)];
    for (const layer of model.slice(1)) tars.push(await layerTar(layer));
    // The same lower nine tars, byte for byte: the second image shares their chain ids.
    const otherTars = [...tars.slice(0, 9), await layerTar(otherModel[9]!)];
    const flat: LayerModel = { files: mergedFiles(model), deletes: [], opaque: [] };
    const ten = await makeImage('10 layers', 'bench/layers10:latest', tars, model, work);
    const other = await makeImage(
      '10 layers, other top',
      'bench/layers10b:latest',
      otherTars,
      otherModel,
      work,
    );
    const one = await makeImage(
      '1 layer, same tree',
      'bench/layers1:latest',
      [await layerTar(flat, busybox)],
      [flat],
      work,
    );
    console.log(
      `image layers: ${IMAGE_MIB} MiB of synthetic files (${mib(sum(tars.map((t) => t.length)))} MiB of layer tars), ` +
        `${ROUNDS} import rounds, ${BOOTS} boots each; ${describeMachine()}`,
    );

    let stores: { tenStore: ImageStore; oneStore: ImageStore } | undefined;
    if (PARTS.has('import') || PARTS.has('boot')) {
      if (PARTS.has('import')) stores = await importPart(ten, other, one, work);
      else {
        const tenStore = new ImageStore(join(work, 'ten'));
        const oneStore = new ImageStore(join(work, 'one'));
        await tenStore.load(createReadStream(ten.tarball));
        await oneStore.load(createReadStream(one.tarball));
        stores = { tenStore, oneStore };
      }
    }
    if (PARTS.has('boot')) {
      const images = bootImages();
      if (typeof images === 'string') {
        console.log(`\ncontainer start skipped: ${images}`);
        return;
      }
      console.log(`\nboot image: ${describeImages(images.slice(0, 1))}; microvm, QEMU driver defaults`);
      await bootPart(images[0]!, [
        { image: one, store: stores!.oneStore },
        { image: ten, store: stores!.tenStore },
      ]);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
