import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTetherError } from '../../../../protocol/src/errors/errors.ts';
import {
  buildQemuArgs,
  escapeOptionValue,
  kernelCommandLine,
  type QemuCommandInput,
} from '../../../../hostside/src/vm/qemu/command-line.ts';
import { parseCpuinfoTscKhz } from '../../../../hostside/src/vm/qemu/host-tsc.ts';
import { qemuLayout } from '../../../../hostside/src/vm/qemu/layout.ts';
import { overlayArgs } from '../../../../hostside/src/vm/qemu/overlay.ts';
import { cmdlineMentions } from '../../../../hostside/src/vm/qemu/process-alive.ts';

function input(overrides: Partial<QemuCommandInput> = {}): QemuCommandInput {
  return {
    name: 'c0ffee',
    machine: 'pc',
    accel: 'tcg',
    memoryMiB: 256,
    cpus: 1,
    kernel: '/img/vmlinuz',
    initramfs: '/img/initramfs.cpio.gz',
    runtimeDisk: '/img/runtime.img',
    layout: qemuLayout('/state'),
    tscKhz: 2596134,
    ...overrides,
  };
}

/** The value following each occurrence of `flag`. */
function values(args: string[], flag: string): string[] {
  return args.flatMap((arg, i) => (arg === flag ? [args[i + 1]!] : []));
}

void describe('QEMU command line', () => {
  void it('pc: PCI virtio devices, TCG, 256 MiB, no defaults, no reboot, no display', () => {
    const args = buildQemuArgs(input());
    assert.deepEqual(values(args, '-machine'), ['pc']);
    assert.deepEqual(values(args, '-accel'), ['tcg']);
    assert.deepEqual(values(args, '-m'), ['256']);
    assert.deepEqual(values(args, '-smp'), ['1']);
    for (const flag of ['-nodefaults', '-no-user-config', '-no-reboot']) assert.ok(args.includes(flag), flag);
    assert.deepEqual(values(args, '-display'), ['none']);
    assert.ok(!args.includes('-cpu'), 'TCG keeps the default CPU model');
    const devices = values(args, '-device');
    assert.deepEqual(devices, [
      'virtio-serial-pci,id=vser',
      'virtserialport,bus=vser.0,chardev=channel,name=org.tether.channel',
      'virtserialport,bus=vser.0,chardev=log,name=org.tether.log',
      'virtio-blk-pci,drive=runtime,serial=tether-runtime',
      'virtio-blk-pci,drive=root,serial=tether-root',
      'virtio-net-pci,netdev=net,mac=52:54:00:12:34:56',
    ]);
  });

  void it('microvm: the same devices on virtio-mmio', () => {
    const devices = values(buildQemuArgs(input({ machine: 'microvm' })), '-device');
    assert.ok(
      devices.every((d) => !d.includes('-pci')),
      devices.join(' '),
    );
    assert.ok(devices.includes('virtio-serial-device,id=vser'));
    assert.ok(devices.includes('virtio-blk-device,drive=root,serial=tether-root'));
    assert.ok(devices.includes('virtio-net-device,netdev=net,mac=52:54:00:12:34:56'));
  });

  void it('files and sockets live in the state directory', () => {
    const args = buildQemuArgs(input());
    assert.deepEqual(values(args, '-chardev'), [
      'file,id=console,path=/state/console.log',
      'socket,id=qmp,path=/state/qmp.sock,server=on,wait=off',
      'socket,id=channel,path=/state/channel.sock,server=on,wait=off',
      'file,id=log,path=/state/container.log',
    ]);
    assert.deepEqual(values(args, '-serial'), ['chardev:console']);
    assert.deepEqual(values(args, '-mon'), ['chardev=qmp,mode=control']);
    assert.deepEqual(values(args, '-pidfile'), ['/state/qemu.pid']);
    assert.deepEqual(values(args, '-fw_cfg'), ['name=opt/tether/config,file=/state/config.json']);
    assert.deepEqual(values(args, '-drive'), [
      'file=/img/runtime.img,if=none,id=runtime,format=raw,readonly=on',
      'file=/state/root.qcow2,if=none,id=root,format=qcow2',
    ]);
    assert.deepEqual(values(args, '-netdev'), ['user,id=net']);
    assert.deepEqual(values(args, '-kernel'), ['/img/vmlinuz']);
    assert.deepEqual(values(args, '-initrd'), ['/img/initramfs.cpio.gz']);
  });

  void it('doubles commas in option values, so a path cannot smuggle in an option', () => {
    assert.equal(escapeOptionValue('/a,b/c,,d'), '/a,,b/c,,,,d');
    const args = buildQemuArgs(
      input({ runtimeDisk: '/img,readonly=off/rt.img', layout: qemuLayout('/s,x') }),
    );
    assert.ok(values(args, '-drive')[0]!.startsWith('file=/img,,readonly=off/rt.img,if=none'));
    assert.ok(values(args, '-chardev').includes('file,id=console,path=/s,,x/console.log'));
    assert.deepEqual(values(args, '-name'), ['guest=c0ffee']);
    assert.deepEqual(values(buildQemuArgs(input({ name: 'a,b' })), '-name'), ['guest=a,,b']);
  });

  void it('kvm uses the host CPU; memory and cpus are passed through and checked', () => {
    const args = buildQemuArgs(input({ accel: 'kvm', memoryMiB: 512, cpus: 2 }));
    assert.deepEqual(values(args, '-accel'), ['kvm']);
    assert.deepEqual(values(args, '-cpu'), ['host']);
    assert.deepEqual(values(args, '-m'), ['512']);
    assert.deepEqual(values(args, '-smp'), ['2']);
    assert.throws(
      () => buildQemuArgs(input({ memoryMiB: 16 })),
      (e) => isTetherError(e, 'TETHER_VM_FAILED'),
    );
    assert.throws(
      () => buildQemuArgs(input({ cpus: 0 })),
      (e) => isTetherError(e, 'TETHER_VM_FAILED'),
    );
  });

  void it('refuses a unix socket path longer than sun_path holds', () => {
    const long = '/' + 'd'.repeat(100);
    assert.throws(
      () => buildQemuArgs(input({ layout: qemuLayout(long) })),
      (e) => isTetherError(e, 'TETHER_VM_FAILED') && /107-byte limit/.test(e.message),
    );
  });
});

void describe('kernel command line', () => {
  void it('pc: console on ttyS0, quiet, panic ends the VM, PCI transport; no TSC hint', () => {
    assert.equal(kernelCommandLine(input()), 'console=ttyS0 quiet panic=-1 tether.transport=pci');
  });

  void it('microvm under TCG: mmio transport and the host TSC rate', () => {
    assert.equal(
      kernelCommandLine(input({ machine: 'microvm' })),
      'console=ttyS0 quiet panic=-1 tether.transport=mmio tsc_early_khz=2596134',
    );
  });

  void it('microvm under KVM, or with no known TSC rate: no TSC hint', () => {
    assert.doesNotMatch(kernelCommandLine(input({ machine: 'microvm', accel: 'kvm' })), /tsc_early_khz/);
    assert.doesNotMatch(kernelCommandLine(input({ machine: 'microvm', tscKhz: undefined })), /tsc_early_khz/);
  });

  void it('appends extra words last', () => {
    assert.match(kernelCommandLine(input({ kernelArgs: ['loglevel=7', 'x=y'] })), / loglevel=7 x=y$/);
    assert.deepEqual(values(buildQemuArgs(input({ kernelArgs: ['a=b'] })), '-append'), [
      'console=ttyS0 quiet panic=-1 tether.transport=pci a=b',
    ]);
  });
});

void describe('host TSC rate', () => {
  void it('reads the first "cpu MHz" line in kHz, truncated like awk printf %d', () => {
    const cpuinfo =
      'processor\t: 0\nmodel name\t: X\ncpu MHz\t\t: 2596.134\ncache size\t: 1 KB\ncpu MHz\t\t: 1.0\n';
    assert.equal(parseCpuinfoTscKhz(cpuinfo), 2596134);
    assert.equal(parseCpuinfoTscKhz('cpu MHz : 3000\n'), 3000000);
    assert.equal(parseCpuinfoTscKhz('cpu MHz\t\t: 2596.1349\n'), 2596134);
  });

  void it('gives undefined without a usable line', () => {
    assert.equal(parseCpuinfoTscKhz(''), undefined);
    assert.equal(parseCpuinfoTscKhz('cpu MHz : fast\n'), undefined);
    assert.equal(parseCpuinfoTscKhz('cpu MHz : 0.000\n'), undefined);
  });
});

void describe('root disk layer and process checks', () => {
  void it('qemu-img creates a qcow2 over the raw base, by absolute path', () => {
    assert.deepEqual(overlayArgs('/cache/base.img', '/state/root.qcow2'), [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-F',
      'raw',
      '-b',
      '/cache/base.img',
      '/state/root.qcow2',
    ]);
    assert.equal(overlayArgs('rel/base.img', '/s/o.qcow2')[7], `${process.cwd()}/rel/base.img`);
  });

  void it('a pid is our QEMU only while its command line names our QMP socket', () => {
    const cmdline = [
      'qemu-system-x86_64',
      '-chardev',
      'socket,id=qmp,path=/state/qmp.sock,server=on',
      '',
    ].join('\0');
    assert.ok(cmdlineMentions(cmdline, '/state/qmp.sock'));
    assert.ok(!cmdlineMentions(cmdline, '/other/qmp.sock'));
    assert.ok(!cmdlineMentions('', '/state/qmp.sock'), 'a zombie has an empty command line');
  });
});
