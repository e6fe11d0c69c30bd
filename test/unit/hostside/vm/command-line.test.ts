import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isTetherError } from '../../../../protocol/src/errors/errors.ts';
import type { PortForward } from '../../../../hostside/src/vm/driver.ts';
import {
  buildQemuArgs,
  escapeOptionValue,
  kernelCommandLine,
  type QemuCommandInput,
} from '../../../../hostside/src/vm/qemu/command-line.ts';
import { parseCpuinfoTscKhz } from '../../../../hostside/src/vm/qemu/host-tsc.ts';
import { qemuLayout } from '../../../../hostside/src/vm/qemu/layout.ts';
import { overlayArgs, prepareRootLayer, qcow2BackingFile } from '../../../../hostside/src/vm/qemu/overlay.ts';
import {
  checkPortForwards,
  describeForwardFailure,
  failedForward,
  probeHostPort,
  userNetdevOption,
} from '../../../../hostside/src/vm/qemu/port-forward.ts';
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
      (e) => isTetherError(e, 'TETHER_VM_FAILED') && /at least 64, got 16$/.test(e.message),
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

void describe('memory sizes (docker run -m)', () => {
  void it('passes any whole number of MiB from 64 up', () => {
    for (const mib of [64, 65, 300, 512, 4096, 65536])
      assert.deepEqual(values(buildQemuArgs(input({ memoryMiB: mib })), '-m'), [String(mib)]);
  });

  void it('refuses less than 64 MiB or a fraction, naming the value', () => {
    for (const mib of [0, 32, 63, 100.5, Number.NaN, -512])
      assert.throws(
        () => buildQemuArgs(input({ memoryMiB: mib })),
        (e) =>
          isTetherError(e, 'TETHER_VM_FAILED') &&
          e.message === `memory must be a whole number of MiB, at least 64, got ${mib}`,
        String(mib),
      );
  });
});

const web: PortForward = { protocol: 'tcp', hostIp: '127.0.0.1', hostPort: 8080, guestPort: 80 };

void describe('published ports', () => {
  void it('become one hostfwd rule each on the user network, tcp and udp, in order', () => {
    const ports: PortForward[] = [
      web,
      { protocol: 'udp', hostIp: '0.0.0.0', hostPort: 5353, guestPort: 53 },
      { protocol: 'tcp', hostIp: '10.1.2.3', hostPort: 65535, guestPort: 1 },
    ];
    assert.deepEqual(values(buildQemuArgs(input({ ports })), '-netdev'), [
      'user,id=net,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:0.0.0.0:5353-:53,hostfwd=tcp:10.1.2.3:65535-:1',
    ]);
    assert.equal(userNetdevOption([]), 'user,id=net');
    // The same port number over tcp and udp is two different sockets.
    assert.doesNotThrow(() => checkPortForwards([web, { ...web, protocol: 'udp' }]));
    assert.doesNotThrow(() => checkPortForwards([web, { ...web, hostIp: '127.0.0.2' }]));
  });

  void it('are checked before QEMU sees them, naming the bad value', () => {
    const cases: [Partial<PortForward> | Record<string, unknown>, RegExp][] = [
      [{ hostPort: 0 }, /^published port #2: host port must be an integer from 1 to 65535, got 0$/],
      [{ hostPort: 65536 }, /host port .* got 65536$/],
      [{ hostPort: 80.5 }, /host port .* got 80\.5$/],
      [{ hostPort: '80' }, /host port .* got "80"$/],
      [{ guestPort: 0 }, /container port must be an integer from 1 to 65535, got 0$/],
      [{ guestPort: 100000 }, /container port .* got 100000$/],
      [{ hostIp: 'localhost' }, /host address must be an IPv4 address, got "localhost"$/],
      [{ hostIp: '::1' }, /IPv4 address, got "::1"$/],
      [{ hostIp: '127.0.0.1,hostfwd=tcp::22-:22' }, /IPv4 address, got "127\.0\.0\.1,hostfwd/],
      [{ hostIp: '256.0.0.1' }, /IPv4 address, got "256\.0\.0\.1"$/],
      [{ protocol: 'sctp' }, /protocol must be tcp or udp, got "sctp"$/],
    ];
    for (const [change, message] of cases)
      assert.throws(
        () => buildQemuArgs(input({ ports: [web, { ...web, hostPort: 9000, ...change } as PortForward] })),
        (e) => isTetherError(e, 'TETHER_VM_FAILED') && message.test(e.message),
        JSON.stringify(change),
      );
  });

  void it('refuse one host port published twice (0.0.0.0 covers every address)', () => {
    assert.throws(
      () => checkPortForwards([web, { ...web, guestPort: 81 }]),
      (e) =>
        isTetherError(e, 'TETHER_VM_FAILED') &&
        e.message ===
          'published port 127.0.0.1:8080->81/tcp uses host port 127.0.0.1:8080/tcp, already published as 127.0.0.1:8080->80/tcp',
    );
    assert.throws(
      () => checkPortForwards([{ ...web, hostIp: '0.0.0.0' }, web]),
      (e) =>
        isTetherError(e, 'TETHER_VM_FAILED') &&
        /already published as 0\.0\.0\.0:8080->80\/tcp/.test(e.message),
    );
  });

  void it("match QEMU's forwarding failure back to the port", () => {
    const log =
      "qemu-system-x86_64: -netdev user,id=net,hostfwd=tcp:127.0.0.1:8080-:80: Could not set up host forwarding rule 'tcp:127.0.0.1:8080-:80'\n";
    const other = { ...web, hostPort: 9090 };
    assert.deepEqual(failedForward(log, [other, web]), web);
    assert.equal(failedForward(log, [other]), undefined);
    assert.equal(failedForward('qemu-system-x86_64: -m 1: too small\n', [web]), undefined);
  });

  void it('say which host port is taken and why, by binding it', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const tcp = { ...web, hostPort: (server.address() as AddressInfo).port };
    const udpSocket = createSocket('udp4');
    await new Promise<void>((resolve) => udpSocket.bind(0, '127.0.0.1', resolve));
    const udp: PortForward = { ...web, protocol: 'udp', hostPort: udpSocket.address().port };
    try {
      assert.equal(await probeHostPort(tcp), 'EADDRINUSE');
      assert.equal(await probeHostPort(udp), 'EADDRINUSE');
      const log = `x: Could not set up host forwarding rule 'tcp:127.0.0.1:${tcp.hostPort}-:80'\n`;
      assert.equal(
        await describeForwardFailure(log, [tcp]),
        `cannot publish 127.0.0.1:${tcp.hostPort}->80/tcp: host port 127.0.0.1:${tcp.hostPort}/tcp cannot be bound, it is already in use (EADDRINUSE)`,
      );
      assert.equal(await describeForwardFailure('x: other failure\n', [tcp]), undefined);
    } finally {
      server.close();
      udpSocket.close();
    }
    // Free again (another process raced QEMU for it and let go): still named.
    const log = `x: Could not set up host forwarding rule 'tcp:127.0.0.1:${tcp.hostPort}-:80'\n`;
    assert.match((await describeForwardFailure(log, [tcp])) ?? '', /taken when QEMU started$/);
  });
});

/** A qcow2 header as qemu-img writes one: magic, version 3, the backing name after the 104-byte header. */
function qcow2Header(backing?: string): Buffer {
  const name = Buffer.from(backing ?? '');
  const header = Buffer.alloc(512 + name.length);
  header.writeUInt32BE(0x514649fb, 0);
  header.writeUInt32BE(3, 4);
  if (backing !== undefined) {
    header.writeBigUInt64BE(512n, 8);
    header.writeUInt32BE(name.length, 16);
    name.copy(header, 512);
  }
  return header;
}

void describe('root layer kept across boots (keepRootLayer)', () => {
  void it('reads the backing file a qcow2 header names', () => {
    assert.equal(qcow2BackingFile(qcow2Header('/cache/base.img')), '/cache/base.img');
    assert.equal(qcow2BackingFile(qcow2Header()), undefined);
    assert.throws(() => qcow2BackingFile(Buffer.alloc(512)), /not a qcow2 image/);
  });

  void it('keeps an existing layer over the same base; makes a fresh one otherwise', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-layer-'));
    try {
      const base = join(dir, 'base.img');
      const overlay = join(dir, 'root.qcow2');
      const made: string[] = [];
      const create = (from: string, to: string): Promise<void> => {
        made.push(`${from} -> ${to}`);
        writeFileSync(to, qcow2Header(from));
        return Promise.resolve();
      };
      // First boot: nothing to keep yet, even when asked.
      assert.equal(await prepareRootLayer(base, overlay, { keep: true, create }), 'created');
      assert.deepEqual(made, [`${base} -> ${overlay}`]);
      // The container writes into its layer; a restart with keep uses the file as it is.
      const written = Buffer.concat([qcow2Header(base), Buffer.from('container files')]);
      writeFileSync(overlay, written);
      assert.equal(await prepareRootLayer(base, overlay, { keep: true, create }), 'kept');
      assert.equal(made.length, 1, 'no new layer');
      assert.deepEqual(readFileSync(overlay), written);
      // Without keep (docker run again, or an old caller): a fresh layer, as before.
      assert.equal(await prepareRootLayer(base, overlay, { keep: false, create }), 'created');
      assert.equal(made.length, 2);
      assert.deepEqual(readFileSync(overlay), qcow2Header(base));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  void it('refuses to keep a layer over another image, or a file that is not a layer', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tether-layer-'));
    try {
      const overlay = join(dir, 'root.qcow2');
      const create = (): Promise<void> => Promise.reject(new Error('must not be called'));
      writeFileSync(overlay, qcow2Header('/images/old.img'));
      await assert.rejects(
        prepareRootLayer('/images/new.img', overlay, { keep: true, create }),
        (e) =>
          isTetherError(e, 'TETHER_VM_FAILED') &&
          e.message ===
            `cannot keep the root disk layer ${overlay}: it lies over /images/old.img, not /images/new.img`,
      );
      writeFileSync(overlay, 'not qcow2 at all, but long enough to have a header');
      await assert.rejects(
        prepareRootLayer('/images/new.img', overlay, { keep: true, create }),
        (e) => isTetherError(e, 'TETHER_VM_FAILED') && /bad magic/.test(e.message),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
