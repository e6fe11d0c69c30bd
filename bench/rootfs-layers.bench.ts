/**
 * How image layers become one root filesystem (issue 11's design question), measured in real VMs: the
 * boot image's kernel with a busybox `/init` script that assembles the root, reads a file, then reads two
 * big files of the lowest layer, each guest-timed. Variants, each for an image of N layers (BENCH_LAYERS,
 * default 1 and 10) whose layers delete and replace files of the layers below; every N gives the same tree:
 *
 * - `sqfs disks`: one squashfs disk per layer (built from a tar by tar2sqfs, without root) plus an ext4
 *   writable disk; overlayfs in the guest. N + 1 block devices.
 * - `sqfs packed`: the same squashfs images at 1 MiB-aligned offsets of ONE disk, a qcow2 chain with one
 *   file per layer (each holds only its own squashfs); the guest loop-mounts each at its offset, then
 *   overlayfs. Two block devices whatever N is.
 * - `qcow2 chain`: VIC's way. One qcow2 per layer, each a delta over the one below, holding the ext4
 *   blocks that applying the layer changed (applied with debugfs, without root or mounts), and the
 *   container's writable layer as the top qcow2. The guest sees one ext4 disk.
 *
 * The baseline is the merged tree as one plain ext4 disk (a qcow2 overlay per container on a raw image):
 * what a flattened image costs. Figures: guest uptime and host time (QEMU start) until the root is
 * assembled and a file of the top layer read; the first read of each big file; the bytes of the shared
 * layer files and the bytes each container adds (its own file, after a boot that wrote to its root).
 * The first boot of each variant checks the tree it sees against the tree the layers describe.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { buffer } from 'node:stream/consumers';
import tar from 'tar-stream';
import { ACCEL, baseQemuArgs, busyboxInitramfs } from './lib/baseline-vm.ts';
import { describeMachine, median, printTable, REPO } from './lib/harness.ts';

const RUNS = Number(process.env['BENCH_RUNS'] ?? 3);
const LAYER_COUNTS = (process.env['BENCH_LAYERS'] ?? '1,10').split(',').map(Number);
const BIG_MIB = Number(process.env['BENCH_BIG_MIB'] ?? 16);
/** tar2sqfs's compressor for the layers: zstd compresses best, lz4 decompresses fastest. */
const SQFS_COMPRESSOR = process.env['BENCH_SQFS_COMPRESSOR'] ?? 'zstd';
const BOOT_TIMEOUT_MS = 180_000;
/** Size of every ext4 filesystem (root, writable layer): sparse, so only what is written costs bytes. */
const EXT4_MIB = 256;
/** The packed disk's virtual size; layers sit at 1 MiB-aligned offsets in it. */
const PACKED_MIB = 2048;
const MIB = 1 << 20;
const MODULES = ['virtio', 'virtio_ring', 'virtio_mmio', 'virtio_blk', 'loop', 'squashfs', 'overlay'];

/** A layer as a tar would carry it: files it adds or replaces, paths it deletes (whiteouts). */
interface Layer {
  files: Map<string, Buffer>;
  deletes: string[];
}

/** Deterministic bytes for `name` (AES-CTR of zeros): incompressible, and the same in every run. */
function randomData(name: string, bytes: number): Buffer {
  const key = createHash('sha256').update(name).digest().subarray(0, 16);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(bytes));
}

/** Text that compresses about as a binary or a library does (3-4x), so squashfs's decompression shows. */
function textData(name: string, bytes: number): Buffer {
  const words = ['alpha', 'beta', 'gamma', 'delta', 'lorem', 'ipsum', 'dolor', 'sit', 'amet', 'tether'];
  const noise = randomData(name, bytes);
  const out = Buffer.alloc(bytes);
  let at = 0;
  for (let i = 0; at < bytes; i++) {
    const byte = noise[i % bytes]!;
    const word = byte % 16 < words.length ? words[byte % 16]! : byte.toString(36);
    at += out.write(`${word}${byte % 7 === 0 ? '\n' : ' '}`, at);
  }
  return out;
}

/**
 * The ten layers of the synthetic image. Layer 0 holds the big files the first-read figure reads, an
 * /old directory and base files; each upper layer adds three files, replaces /etc/marker and
 * /lib/shared.bin, deletes a file of the layer below, and layer 5 deletes /old whole.
 */
function tenLayers(): Layer[] {
  const layers: Layer[] = [];
  const base = new Map<string, Buffer>([
    ['/data/big.bin', randomData('big', BIG_MIB * MIB)],
    ['/data/text.txt', textData('text', BIG_MIB * MIB)],
    ['/etc/marker', Buffer.from('layer 0\n')],
    ['/lib/shared.bin', randomData('shared-0', 2 * MIB)],
    ['/old/a.bin', randomData('old-a', MIB)],
    ['/old/sub/b.bin', randomData('old-b', MIB)],
  ]);
  for (let f = 0; f < 4; f++) base.set(`/lib/base-${f}.bin`, randomData(`base-${f}`, MIB));
  layers.push({ files: base, deletes: [] });
  for (let i = 1; i < 10; i++) {
    const files = new Map<string, Buffer>([
      ['/etc/marker', Buffer.from(`layer ${i}\n`)],
      ['/lib/shared.bin', randomData(`shared-${i}`, 2 * MIB)],
    ]);
    for (let f = 0; f < 3; f++) files.set(`/lib/layer-${i}-${f}.bin`, randomData(`layer-${i}-${f}`, MIB));
    const deletes = [i === 1 ? '/lib/base-0.bin' : `/lib/layer-${i - 1}-0.bin`];
    if (i === 5) deletes.push('/old');
    layers.push({ files, deletes });
  }
  return layers;
}

const under = (path: string, dir: string): boolean => path === dir || path.startsWith(`${dir}/`);

/** The tree after applying `layer` to `tree`: a deleted directory takes everything under it. */
function apply(tree: Map<string, Buffer>, layer: Layer): Map<string, Buffer> {
  const out = new Map([...tree].filter(([path]) => !layer.deletes.some((dir) => under(path, dir))));
  for (const [path, data] of layer.files) out.set(path, data);
  return out;
}

/** The image as N layers: the ten layers' lowest 11 − N flattened into one, the rest as they are. */
function imageOf(n: number): Layer[] {
  const ten = tenLayers();
  const flat = ten.slice(0, 11 - n).reduce((tree, layer) => apply(tree, layer), new Map<string, Buffer>());
  return [{ files: flat, deletes: [] }, ...ten.slice(11 - n)];
}

/** What `cd ROOT && find . -type f | sort | xargs md5sum | md5sum` prints for this tree. */
function treeDigest(tree: Map<string, Buffer>): string {
  const lines = [...tree.keys()]
    .map((path) => `.${path}`)
    .sort()
    .map(
      (path) =>
        `${createHash('md5')
          .update(tree.get(path.slice(1))!)
          .digest('hex')}  ${path}\n`,
    );
  return createHash('md5').update(lines.join('')).digest('hex');
}

/**
 * The layer as an OCI-style tar, with overlayfs's whiteouts (a character device 0:0 per deleted path),
 * which a tar can carry without root: no mknod on the host.
 */
async function layerTar(layer: Layer): Promise<Buffer> {
  const pack = tar.pack();
  const bytes = buffer(pack);
  const mtime = new Date(1_700_000_000_000);
  for (const path of layer.deletes)
    pack.entry({ name: path.slice(1), type: 'character-device', devmajor: 0, devminor: 0, mode: 0, mtime });
  for (const [path, data] of layer.files) pack.entry({ name: path.slice(1), mode: 0o644, mtime }, data);
  pack.finalize();
  return bytes;
}

function writeTree(dir: string, files: Map<string, Buffer>): void {
  for (const [path, data] of files) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), data);
  }
}

const run = (command: string, args: string[], input?: Buffer): void => {
  const result = spawnSync(command, args, { input, stdio: ['pipe', 'ignore', 'pipe'] });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')}: ${result.stderr.toString()}`);
};
const mkfsExt4 = (image: string, from?: string): void =>
  run('mkfs.ext4', [
    '-q',
    '-F',
    '-E',
    'root_owner=0:0',
    ...(from ? ['-d', from] : []),
    image,
    `${EXT4_MIB}M`,
  ]);
const qcow2Over = (backing: string, format: string, out: string): void =>
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', format, '-b', backing, out]);
/** qcow2's default cluster: the unit a delta allocates. */
const CLUSTER = 64 << 10;

/**
 * A new layer qcow2 over `backing` (or standalone, `size` bytes) holding exactly `writes`: qemu-io writes
 * each range from a file, so only the clusters a layer touched are allocated in its file.
 */
function qcow2Layer(
  out: string,
  backing: string | undefined,
  size: number,
  writes: { file: string; offset: number; length: number }[],
): void {
  run('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    ...(backing ? ['-F', 'qcow2', '-b', backing] : []),
    out,
    String(size),
  ]);
  if (writes.length === 0) return;
  run('qemu-io', [
    '-f',
    'qcow2',
    ...writes.flatMap(({ file, offset, length }) => ['-c', `write -q -s ${file} ${offset} ${length}`]),
    out,
  ]);
}

/**
 * The runs of clusters where `after` differs from `before` (two raw images of one size), each saved to a
 * file for qemu-io. Reads both whole: the bench's stand-in for writing through a qcow2 overlay (what VIC
 * did in a VM, or qemu-storage-daemon's FUSE export would do on the host).
 */
function changedRuns(
  before: string,
  after: string,
  dir: string,
): { file: string; offset: number; length: number }[] {
  const runs: { file: string; offset: number; length: number }[] = [];
  const a = openSync(before, 'r');
  const b = openSync(after, 'r');
  const chunk = 64 * CLUSTER;
  const x = Buffer.alloc(chunk);
  const y = Buffer.alloc(chunk);
  let pending: Buffer[] = [];
  let pendingAt = 0;
  const flush = (): void => {
    if (pending.length === 0) return;
    const file = join(dir, `run-${runs.length}.bin`);
    writeFileSync(file, Buffer.concat(pending));
    runs.push({ file, offset: pendingAt, length: pending.length * CLUSTER });
    pending = [];
  };
  try {
    for (let at = 0; ; at += chunk) {
      const got = readSync(b, y, 0, chunk, at);
      readSync(a, x, 0, chunk, at);
      if (got === 0) break;
      for (let c = 0; c < got; c += CLUSTER) {
        if (x.subarray(c, c + CLUSTER).equals(y.subarray(c, c + CLUSTER))) flush();
        else {
          if (pending.length === 0) pendingAt = at + c;
          pending.push(Buffer.from(y.subarray(c, c + CLUSTER)));
        }
      }
    }
    flush();
  } finally {
    closeSync(a);
    closeSync(b);
  }
  return runs;
}

/** Bytes allocated on the host. */
const allocated = (files: string[]): number =>
  files.reduce((sum, file) => sum + statSync(file).blocks * 512, 0);

type Kind = 'ext4 baseline' | 'sqfs disks' | 'sqfs packed' | 'qcow2 chain';

/** A variant's image as built: the shared files, how to make a container's, and the guest's arguments. */
interface Built {
  kind: Kind;
  n: number;
  buildMs: number;
  /** Layer files, stored once per image (or once per layer, shared). */
  shared: string[];
  /** Makes one container's own files; returns QEMU's drive arguments and the per-container files. */
  container(dir: string): { args: string[]; own: string[] };
  /** The init script's arguments: mode, layer count, offsets. */
  init: string;
}

const drive = (file: string, format: string, serial: string, readonly = false): string[] => [
  ...['-drive', `file=${file},if=none,id=${serial},format=${format}${readonly ? ',readonly=on' : ''}`],
  ...['-device', `virtio-blk-device,drive=${serial},serial=${serial}`],
];

/** A blank ext4 for writable layers, one raw image every container's qcow2 sits on. */
function writableTemplate(dir: string): string {
  const template = join(dir, 'writable-template.raw');
  if (!existsSync(template)) mkfsExt4(template);
  return template;
}

function withWritable(store: string, layerArgs: string[]): Built['container'] {
  const template = writableTemplate(store);
  return (dir) => {
    const own = join(dir, 'writable.qcow2');
    qcow2Over(template, 'raw', own);
    return { args: [...layerArgs, ...drive(own, 'qcow2', 'rw')], own: [own] };
  };
}

async function build(kind: Kind, n: number, store: string): Promise<Built> {
  const started = performance.now();
  const layers = imageOf(n);
  const dir = mkdtempSync(join(store, `${kind.replace(' ', '-')}-${n}-`));
  const squashfs = async (): Promise<string[]> => {
    const files: string[] = [];
    for (const [i, layer] of layers.entries()) {
      const out = join(dir, `layer-${i}.sqfs`);
      run('tar2sqfs', ['-q', '-f', '-c', SQFS_COMPRESSOR, '-j', '1', out], await layerTar(layer));
      files.push(out);
    }
    return files;
  };
  const done = (built: Omit<Built, 'buildMs' | 'kind' | 'n'>): Built => ({
    kind,
    n,
    buildMs: performance.now() - started,
    ...built,
  });
  if (kind === 'ext4 baseline') {
    const raw = join(dir, 'root.raw');
    const tree = join(dir, 'tree');
    writeTree(
      tree,
      layers.reduce((t, layer) => apply(t, layer), new Map<string, Buffer>()),
    );
    mkfsExt4(raw, tree);
    rmSync(tree, { recursive: true });
    return done({
      shared: [raw],
      init: `ext4 1 0`,
      container: (cdir) => {
        const own = join(cdir, 'root.qcow2');
        qcow2Over(raw, 'raw', own);
        return { args: drive(own, 'qcow2', 'root'), own: [own] };
      },
    });
  }
  if (kind === 'sqfs disks') {
    const files = await squashfs();
    return done({
      shared: files,
      init: `overlay ${n} ${files.map(() => 0).join(',')}`,
      container: withWritable(
        store,
        files.flatMap((file, i) => drive(file, 'raw', `layer${i}`, true)),
      ),
    });
  }
  if (kind === 'sqfs packed') {
    // Each layer's qcow2 holds its squashfs at the next free 1 MiB boundary of one virtual disk, over the
    // layer below: the guest sees every layer in one disk, and each file holds only its own layer.
    const files = await squashfs();
    const offsets: number[] = [];
    const deltas: string[] = [];
    let next = 0;
    for (const [i, file] of files.entries()) {
      offsets.push(next);
      const delta = join(dir, `layer-${i}.qcow2`);
      const length = statSync(file).size; // tar2sqfs pads to 4 KiB
      qcow2Layer(delta, deltas.at(-1), PACKED_MIB * MIB, [{ file, offset: next, length }]);
      next += Math.ceil(length / MIB) * MIB;
      deltas.push(delta);
    }
    for (const file of files) rmSync(file);
    return done({
      shared: deltas,
      init: `packed ${n} ${offsets.join(',')}`,
      container: withWritable(store, drive(deltas.at(-1)!, 'qcow2', 'layers', true)),
    });
  }
  // qcow2 chain: the lowest layer by mkfs.ext4 -d, each upper one applied to the same raw ext4 image by
  // debugfs (rm, rmdir, mkdir, write: no root, no mount), then only the changed clusters kept as a delta.
  const raw = join(dir, 'cumulative.raw');
  const deltas: string[] = [];
  let tree = new Map<string, Buffer>();
  for (const [i, layer] of layers.entries()) {
    const files = join(dir, `files-${i}`);
    writeTree(files, layer.files);
    const before = join(dir, 'before.raw');
    if (i === 0) mkfsExt4(raw, files);
    else {
      execFileSync('cp', ['--sparse=always', raw, before]);
      const commands: string[] = [];
      for (const path of layer.deletes) {
        const gone = [...tree.keys()].filter((file) => under(file, path));
        for (const file of gone) commands.push(`rm ${file}`);
        const dirs = new Set(gone.flatMap((file) => ancestors(file).filter((d) => under(d, path))));
        for (const d of [...dirs].sort((a, b) => b.length - a.length)) commands.push(`rmdir ${d}`);
        if (!gone.includes(path) && !dirs.has(path)) commands.push(`rm ${path}`);
      }
      const after = apply(tree, { files: new Map(), deletes: layer.deletes });
      for (const [path] of layer.files) {
        for (const d of ancestors(path)) commands.push(`mkdir ${d}`); // "exists" errors are harmless
        if (after.has(path)) commands.push(`rm ${path}`);
        commands.push(`write ${join(files, path)} ${path}`);
      }
      const script = join(dir, `debugfs-${i}.txt`);
      writeFileSync(script, commands.join('\n') + '\n');
      run('debugfs', ['-w', '-f', script, raw]);
    }
    tree = apply(tree, layer);
    rmSync(files, { recursive: true });
    const delta = join(dir, `layer-${i}.qcow2`);
    if (i === 0) run('qemu-img', ['convert', '-q', '-O', 'qcow2', raw, delta]);
    else {
      const runs = changedRuns(before, raw, dir);
      qcow2Layer(delta, deltas.at(-1), EXT4_MIB * MIB, runs);
      for (const { file } of runs) rmSync(file);
      rmSync(before);
    }
    deltas.push(delta);
  }
  rmSync(raw);
  return done({
    shared: deltas,
    init: `ext4 ${n} 0`,
    container: (cdir) => {
      const own = join(cdir, 'top.qcow2');
      qcow2Over(deltas.at(-1)!, 'qcow2', own);
      return { args: drive(own, 'qcow2', 'root'), own: [own] };
    },
  });
}

/** /a/b/c → /a, /a/b (not the root). */
function ancestors(path: string): string[] {
  const parts = path.split('/').slice(1, -1);
  return parts.map((_, i) => '/' + parts.slice(0, i + 1).join('/'));
}

/**
 * Args: MODE (ext4 | overlay | packed), N, comma-separated offsets (packed), DIGEST (1: print the tree's
 * digest). Disks are found by serial, as the agent will. Loop devices are made one per layer.
 */
const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mode=$1 n=$2 offsets=$3 digest=$4
for m in virtio virtio_ring virtio_mmio virtio_blk; do insmod /lib/modules/$m.ko; done
disk() {
  while :; do
    for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = "$1" ] && { echo /dev/\${d##*/}; return; }; done
    sleep 0.01
  done
}
mkdir -p /mnt/root /w
if [ $mode = ext4 ]; then
  mount -t ext4 $(disk root) /mnt/root
else
  insmod /lib/modules/squashfs.ko
  insmod /lib/modules/overlay.ko
  [ $mode = packed ] && { insmod /lib/modules/loop.ko max_loop=$n; layers=$(disk layers); }
  i=0 lower=
  for off in $(echo $offsets | tr , ' '); do
    mkdir -p /l/$i
    if [ $mode = packed ]; then dev=/dev/loop$i; losetup -r -o $off $dev $layers; else dev=$(disk layer$i); fi
    mount -t squashfs -o ro $dev /l/$i
    lower=/l/$i\${lower:+:$lower}
    i=$((i+1))
  done
  mount -t ext4 $(disk rw) /w
  mkdir -p /w/upper /w/work
  mount -t overlay overlay -o lowerdir=$lower,upperdir=/w/upper,workdir=/w/work /mnt/root
fi
read marker < /mnt/root/etc/marker
echo "ROOTFS-ASSEMBLED $(cut -d' ' -f1 /proc/uptime) $marker"
t0=$EPOCHREALTIME
cat /mnt/root/data/big.bin > /dev/null
t1=$EPOCHREALTIME
cat /mnt/root/data/text.txt > /dev/null
t2=$EPOCHREALTIME
echo "ROOTFS-READ $t0 $t1 $t2"
[ "$digest" = 1 ] && echo "ROOTFS-DIGEST $(cd /mnt/root && find . -type f | sort | xargs md5sum | md5sum)"
echo container > /mnt/root/container-file
umount /mnt/root
umount /w 2>/dev/null
sync
poweroff -f
`;

interface Boot {
  hostMs: number;
  guestMs: number;
  bigMs: number;
  textMs: number;
  digest?: string;
  ownBytes: number;
}

function boot(built: Built, initramfs: string, dir: string, digest: boolean): Promise<Boot> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const { args, own } = built.container(dir);
  const qemuArgs = [
    ...baseQemuArgs(join(REPO, 'build/image/vmlinuz'), initramfs, ` -- ${built.init} ${digest ? 1 : 0}`),
    ...args,
  ];
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const qemu = spawn('qemu-system-x86_64', qemuArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => qemu.kill('SIGKILL'), BOOT_TIMEOUT_MS);
    const result: Partial<Boot> = {};
    const lines: string[] = [];
    createInterface({ input: qemu.stdout }).on('line', (raw) => {
      const line = raw.replace(/\r$/, '');
      lines.push(line);
      const words = line.split(' ');
      if (words[0] === 'ROOTFS-ASSEMBLED') {
        result.hostMs = performance.now() - started;
        result.guestMs = Number(words[1]) * 1000;
      } else if (words[0] === 'ROOTFS-READ') {
        const [t0, t1, t2] = words.slice(1).map(Number) as [number, number, number];
        result.bigMs = (t1 - t0) * 1000;
        result.textMs = (t2 - t1) * 1000;
      } else if (words[0] === 'ROOTFS-DIGEST' && words[1]) result.digest = words[1];
    });
    let stderr = '';
    qemu.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    qemu.on('exit', () => {
      clearTimeout(timer);
      if (result.bigMs === undefined || result.guestMs === undefined)
        return reject(
          new Error(
            `${built.kind} N=${built.n}: no figures; QEMU: ${stderr}\n${lines.slice(-20).join('\n')}`,
          ),
        );
      resolve({ ...(result as Boot), ownBytes: allocated(own) });
    });
  });
}

async function main(): Promise<void> {
  for (const [file, why] of [
    [join(REPO, 'build/image/vmlinuz'), 'run `make build image`'],
    ['/usr/bin/tar2sqfs', 'install squashfs-tools-ng'],
  ] as const)
    if (!existsSync(file)) return console.log(`rootfs-layers bench skipped: ${file} is missing: ${why}`);
  const initramfs = busyboxInitramfs('rootfs-layers', INIT, MODULES);
  const store = mkdtempSync(join(tmpdir(), 'tether-layersbench-'));
  try {
    const expected = treeDigest(imageOf(1)[0]!.files);
    const variants: Built[] = [await build('ext4 baseline', 1, store)];
    for (const n of LAYER_COUNTS)
      for (const kind of ['sqfs disks', 'sqfs packed', 'qcow2 chain'] as const)
        variants.push(await build(kind, n, store));
    const boots: Boot[][] = variants.map(() => []);
    for (let r = 0; r < RUNS; r++)
      // Rotating order, so that drift in the host's load hits every variant alike.
      for (let k = 0; k < variants.length; k++) {
        const index = (r + k) % variants.length;
        const result = await boot(variants[index]!, initramfs, join(store, 'container'), r === 0);
        if (r === 0 && result.digest !== expected)
          throw new Error(
            `${variants[index]!.kind} N=${variants[index]!.n}: tree ${result.digest}, expected ${expected}`,
          );
        boots[index]!.push(result);
      }
    console.log(
      `rootfs layers: ${RUNS} boots each, microvm, ${ACCEL}, big files ${BIG_MIB} MiB, squashfs ${SQFS_COMPRESSOR}; every variant's tree ` +
        `matched the layers' (md5 ${expected}); ${describeMachine()}`,
    );
    const of = (i: number, pick: (b: Boot) => number): number => median(boots[i]!.map(pick));
    const x = (value: number, base: number): string => `${(value / base).toFixed(2)}x`;
    const kib = (bytes: number): string => (bytes / 1024).toFixed(0);
    printTable(
      'median; ratios against the ext4 baseline (one plain disk of the merged tree)',
      [
        'variant',
        'N',
        'disks',
        'root ready guest s',
        'ratio',
        'host s',
        'big.bin first read ms',
        'ratio',
        'text.txt ms',
        'ratio',
        'layer files KiB',
        'per container KiB',
        'build s',
      ],
      variants.map((built, i) => [
        built.kind,
        String(built.n),
        String(built.kind === 'sqfs disks' ? built.n + 1 : built.kind === 'sqfs packed' ? 2 : 1),
        (of(i, (b) => b.guestMs) / 1000).toFixed(3),
        x(
          of(i, (b) => b.guestMs),
          of(0, (b) => b.guestMs),
        ),
        (of(i, (b) => b.hostMs) / 1000).toFixed(3),
        of(i, (b) => b.bigMs).toFixed(0),
        x(
          of(i, (b) => b.bigMs),
          of(0, (b) => b.bigMs),
        ),
        of(i, (b) => b.textMs).toFixed(0),
        x(
          of(i, (b) => b.textMs),
          of(0, (b) => b.textMs),
        ),
        kib(allocated(built.shared)),
        kib(of(i, (b) => b.ownBytes)),
        (built.buildMs / 1000).toFixed(2),
      ]),
    );
    console.log(
      `\nwritable-layer template (shared, sqfs variants): ${kib(allocated([writableTemplate(store)]))} KiB`,
    );
    console.log('each boot, root ready guest s:');
    for (const [i, built] of variants.entries())
      console.log(
        `  ${built.kind} N=${built.n}: ${boots[i]!.map((b) => (b.guestMs / 1000).toFixed(2)).join(' ')}`,
      );
  } finally {
    rmSync(store, { recursive: true, force: true });
  }
}

await main();
