/**
 * Baseline VMs for the VM benches: the image's kernel with a busybox `/init` script instead of stage0 and
 * the agent, so that a bench can measure the same work without Tether in the same run. The initramfs is
 * built from the cached busybox-static package and the kernel's own modules, once per script: its file
 * name carries a digest of the script and the module list, so an edited script is never booted stale.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { hostTscKhz } from '../../hostside/src/vm/qemu/host-tsc.ts';
import { REPO } from './harness.ts';

export const KERNEL_ROOT = join(REPO, 'build/kernel/root');
export const ACCEL = process.env['TETHER_QEMU_ACCEL'] ?? 'tcg';

/** The kernel's module file for `name` (virtio_blk → …/virtio_blk.ko). */
function modulePath(name: string): string {
  const release = execFileSync('ls', [join(KERNEL_ROOT, 'lib/modules')], { encoding: 'utf8' })
    .trim()
    .split('\n')[0]!;
  const path = execFileSync('find', [join(KERNEL_ROOT, 'lib/modules', release), '-name', `${name}.ko`], {
    encoding: 'utf8',
  }).trim();
  if (!path) throw new Error(`module ${name} not found under ${KERNEL_ROOT}: run \`make image\` first`);
  return path;
}

/**
 * A busybox initramfs whose /init is `script`, with `modules` in /lib/modules/NAME.ko (insmod them in
 * the order given) and `files` (path in the image → host file, e.g. a static probe binary). Built once
 * under build/bench/ and reused while the script, modules and files are the same.
 */
export function busyboxInitramfs(
  name: string,
  script: string,
  modules: readonly string[],
  files: Readonly<Record<string, string>> = {},
): string {
  const hash = createHash('sha256').update(script).update(modules.join(','));
  for (const [target, source] of Object.entries(files)) hash.update(target).update(readFileSync(source));
  const digest = hash.digest('hex').slice(0, 12);
  const out = join(REPO, 'build/bench', `${name}-${digest}.cpio.gz`);
  if (existsSync(out)) return out;
  const deb = execFileSync('sh', ['-c', `ls ${join(REPO, 'build/cache')}/busybox-static_*.deb | head -1`], {
    encoding: 'utf8',
  }).trim();
  if (!deb) throw new Error('no busybox-static .deb in build/cache: run `make image` first');
  const stage = mkdtempSync(join(tmpdir(), 'tether-baseline-'));
  try {
    const unpacked = join(stage, 'deb');
    execFileSync('dpkg-deb', ['-x', deb, unpacked]);
    const root = join(stage, 'root');
    for (const dir of ['bin', 'dev', 'proc', 'sys', 'mnt', 'lib/modules'])
      mkdirSync(join(root, dir), { recursive: true });
    copyFileSync(join(unpacked, 'bin/busybox'), join(root, 'bin/busybox'));
    chmodSync(join(root, 'bin/busybox'), 0o755);
    for (const module of modules) copyFileSync(modulePath(module), join(root, 'lib/modules', `${module}.ko`));
    for (const [target, source] of Object.entries(files)) {
      mkdirSync(join(root, dirname(target)), { recursive: true });
      copyFileSync(source, join(root, target));
      chmodSync(join(root, target), 0o755);
    }
    writeFileSync(join(root, 'init'), script, { mode: 0o755 });
    mkdirSync(join(REPO, 'build/bench'), { recursive: true });
    execFileSync('sh', [
      '-c',
      `cd ${root} && mknod -m 600 dev/console c 5 1 2>/dev/null; find . | sort | cpio -o -H newc --quiet | gzip -9n > ${out}.tmp && mv ${out}.tmp ${out}`,
    ]);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  return out;
}

/**
 * QEMU's arguments shared by every bench VM: microvm, one vCPU, 256 MiB, the serial console on stdio, no
 * reboot. `tsc=reliable`: on a busy host the TCG guest's clock watchdog otherwise drops the TSC, and guest
 * timings then come in 4 ms steps.
 */
export function baseQemuArgs(kernel: string, initramfs: string, extraAppend = ''): string[] {
  const tsc = hostTscKhz();
  return [
    ...['-accel', ACCEL, '-M', 'microvm', '-m', '256', '-smp', '1'],
    ...['-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot', '-serial', 'stdio'],
    ...['-kernel', kernel, '-initrd', initramfs],
    '-append',
    `console=ttyS0 quiet panic=-1 tsc=reliable tether.transport=mmio${tsc ? ` tsc_early_khz=${tsc}` : ''}${extraAppend}`,
  ];
}
