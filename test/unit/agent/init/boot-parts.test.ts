/** The PID-1 boot pieces that are pure or run over the recording FakeSys: no VM needed. */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ext4Label, findConfig } from '../../../../agent/src/init/config-source.ts';
import { disksBySerial, waitForDisk } from '../../../../agent/src/init/disks.ts';
import { hostnameFor } from '../../../../agent/src/init/init.ts';
import { loadModules, loadOrder, moduleName, parseModulesDep } from '../../../../agent/src/init/modules.ts';
import {
  configureNetwork,
  hostsFile,
  pickInterface,
  resolvConf,
} from '../../../../agent/src/init/network.ts';
import { hasPowerPress, powerButtonEvent } from '../../../../agent/src/init/power-button.ts';
import { virtioPorts } from '../../../../agent/src/init/ports/virtio-ports.ts';
import { FakeSys } from '../../../helpers/fake-sys.ts';

const temp = (): string => mkdtempSync(join(tmpdir(), 'tether-init-'));

const MODULES_DEP = [
  'kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko',
  'kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko',
  'kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko',
  'kernel/net/core/failover.ko:',
  'kernel/drivers/virtio/virtio.ko:',
  'kernel/drivers/virtio/virtio_ring.ko:',
  'kernel/drivers/input/evdev.ko:',
].join('\n');

describe('modules', () => {
  it('names modules as kmod does', () => {
    assert.equal(moduleName('kernel/fs/fuse/fuse.ko'), 'fuse');
    assert.equal(moduleName('kernel/drivers/x/snd-hda.ko.xz'), 'snd_hda');
  });

  it('orders dependencies first, each once, and skips built-ins', () => {
    const index = parseModulesDep(MODULES_DEP, 'kernel/drivers/block/virtio_blk.ko\n');
    assert.deepEqual(loadOrder(['virtio_net', 'virtio_console', 'virtio_blk'], index), [
      'kernel/drivers/virtio/virtio.ko',
      'kernel/net/core/failover.ko',
      'kernel/drivers/net/net_failover.ko',
      'kernel/drivers/net/virtio_net.ko',
      'kernel/drivers/virtio/virtio_ring.ko',
      'kernel/drivers/char/virtio_console.ko',
    ]);
  });

  it('names an unknown module and where to add it', () => {
    assert.throws(
      () => loadOrder(['nosuch'], parseModulesDep(MODULES_DEP)),
      /"nosuch" is neither in modules.dep nor built in/,
    );
  });

  it('loads through finit_module, reports what was loaded, already there, or failed, and goes on', () => {
    const dir = temp();
    writeFileSync(join(dir, 'modules.dep'), MODULES_DEP);
    const sys = new FakeSys();
    sys.modules.add(join(dir, 'kernel/drivers/virtio/virtio.ko'));
    sys.failNext('finitModule', 'ENOEXEC');
    const report = loadModules(sys, ['virtio_console', 'nosuch', 'evdev'], dir);
    assert.deepEqual(report.alreadyLoaded, ['virtio']);
    assert.equal(report.failed.length, 2);
    assert.match(report.failed[0]!.error, /ENOEXEC/);
    assert.equal(report.failed[1]!.name, 'nosuch');
    assert.ok(report.loaded.includes('evdev'));
  });

  it('reports a missing modules.dep instead of throwing', () => {
    const report = loadModules(new FakeSys(), ['evdev'], join(temp(), 'none'));
    assert.equal(report.failed[0]?.name, 'modules.dep');
  });
});

describe('config sources', () => {
  const config = { version: 1, id: 'c1' };
  const layout = () => {
    const dir = temp();
    mkdirSync(join(dir, 'block'));
    writeFileSync(join(dir, 'cmdline'), 'console=ttyS0 quiet\n');
    return {
      fwCfg: join(dir, 'fw_cfg_raw'),
      cmdline: join(dir, 'cmdline'),
      sysBlock: join(dir, 'block'),
      dev: join(dir, 'dev'),
      mountPoint: join(dir, 'mnt'),
    };
  };

  it('prefers fw_cfg, then the kernel command line', () => {
    const paths = layout();
    writeFileSync(
      paths.cmdline,
      `quiet tether.config=${Buffer.from(JSON.stringify({ ...config, id: 'cmd' })).toString('base64')}\n`,
    );
    assert.equal(findConfig(new FakeSys(), paths).config.id, 'cmd');
    writeFileSync(paths.fwCfg, JSON.stringify(config));
    const found = findConfig(new FakeSys(), paths);
    assert.equal(found.config.id, 'c1');
    assert.equal(found.source, 'fw_cfg opt/tether/config');
  });

  it('reports an invalid fw_cfg config with the field, not a fallback', () => {
    const paths = layout();
    writeFileSync(paths.fwCfg, JSON.stringify({ version: 1, id: 'c1', process: { argv: [] } }));
    assert.throws(() => findConfig(new FakeSys(), paths), {
      code: 'TETHER_CONFIG_INVALID',
      message: /fw_cfg opt\/tether\/config[\s\S]*process\.argv/,
    });
  });

  it('says where it looked when there is no config at all', () => {
    assert.throws(() => findConfig(new FakeSys(), layout()), {
      code: 'TETHER_CONFIG_MISSING',
      message: /-fw_cfg name=opt\/tether\/config[\s\S]*tether\.config=[\s\S]*TETHER-CFG/,
    });
  });

  it('reads the ext4 label from a superblock', () => {
    const superblock = Buffer.alloc(0x100);
    superblock.writeUInt16LE(0xef53, 0x38);
    superblock.write('TETHER-CFG', 0x78);
    assert.equal(ext4Label(superblock), 'TETHER-CFG');
    assert.equal(ext4Label(Buffer.alloc(0x100)), undefined);
  });
});

describe('disks by serial', () => {
  it('maps serials to devices and waits (bounded) for a missing one', async () => {
    const dir = temp();
    for (const [name, serial] of [
      ['vda', 'tether-runtime'],
      ['vdb', 'tether-root'],
    ] as const) {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, 'serial'), `${serial}\n`);
    }
    mkdirSync(join(dir, 'loop0'));
    assert.deepEqual(
      [...disksBySerial(dir)],
      [
        ['tether-runtime', '/dev/vda'],
        ['tether-root', '/dev/vdb'],
      ],
    );
    assert.equal(await waitForDisk('tether-root', 100, dir), '/dev/vdb');
    await assert.rejects(waitForDisk('vol-data', 60, dir), {
      code: 'TETHER_DISK_NOT_FOUND',
      message:
        /"vol-data" after 60 ms; disks seen: \/dev\/vda \(tether-runtime\), \/dev\/vdb \(tether-root\)/,
    });
  });
});

describe('virtio ports', () => {
  it('finds ports by name in sysfs', () => {
    const dir = temp();
    for (const [entry, name] of [
      ['vport1p1', 'org.tether.channel'],
      ['vport1p2', 'org.tether.log'],
    ]) {
      mkdirSync(join(dir, entry!));
      writeFileSync(join(dir, entry!, 'name'), `${name}\n`);
    }
    assert.deepEqual(Object.fromEntries(virtioPorts(dir)), {
      'org.tether.channel': '/dev/vport1p1',
      'org.tether.log': '/dev/vport1p2',
    });
  });
});

describe('network', () => {
  it('picks interfaces by MAC, by name, else in order', () => {
    const sys = new FakeSys();
    const present = sys.ifList();
    assert.equal(
      pickInterface({ address: '10.0.0.2/24', mac: '52:54:00:12:34:56' }, 0, present)?.name,
      'eth0',
    );
    assert.equal(pickInterface({ address: '10.0.0.2/24', name: 'eth1' }, 0, present), undefined);
    assert.equal(pickInterface({ address: '10.0.0.2/24' }, 0, present)?.name, 'eth0');
  });

  it('brings up loopback and the interface with address and default route', async () => {
    const sys = new FakeSys();
    const done = await configureNetwork(sys, {
      interfaces: [{ address: '10.0.2.15/24', gateway: '10.0.2.2' }],
    });
    assert.deepEqual(done, ['lo up', 'eth0 10.0.2.15/24 via 10.0.2.2']);
    const eth0 = sys.ifList().find((i) => i.name === 'eth0')!;
    assert.equal(eth0.ipv4, '10.0.2.15');
    assert.equal(eth0.prefixLen, 24);
    assert.deepEqual(sys.routes, [{ gateway: '10.0.2.2', ifname: 'eth0' }]);
  });

  it('names a missing interface and lists those present', async () => {
    await assert.rejects(
      configureNetwork(new FakeSys(), { interfaces: [{ address: '10.0.2.15/24', name: 'eth9' }] }, 50),
      /eth9 not found after 50 ms; present: lo, eth0 \(52:54:00:12:34:56\)/,
    );
  });

  it('writes resolv.conf and hosts as Docker does', () => {
    const network = {
      interfaces: [{ address: '10.0.2.15/24' }],
      dns: ['10.0.2.3'],
      search: ['example.internal'],
    };
    assert.equal(
      resolvConf(network),
      '# written by tether from the container config\nsearch example.internal\nnameserver 10.0.2.3\n',
    );
    assert.match(hostsFile('web.example.internal', network), /^10\.0\.2\.15\tweb\.example\.internal web$/m);
    assert.match(hostsFile('box', undefined), /^127\.0\.1\.1\tbox$/m);
  });

  it('derives a valid hostname from the container id, as Docker does', () => {
    assert.equal(hostnameFor({ version: 1, id: 'c0ffee_web.1-abcdef' }), 'c0ffee-web-1');
    assert.equal(hostnameFor({ version: 1, id: 'x', hostname: 'web' }), 'web');
  });
});

describe('power button', () => {
  it('finds the Power Button event device', () => {
    const devices = [
      'I: Bus=0011 Vendor=0001\nN: Name="AT Translated Set 2 keyboard"\nH: Handlers=sysrq kbd event1',
      'I: Bus=0019 Vendor=0000\nN: Name="Power Button"\nP: Phys=LNXPWRBN/button/input0\nH: Handlers=kbd event0 ',
    ].join('\n\n');
    assert.equal(powerButtonEvent(devices), 'event0');
    assert.equal(powerButtonEvent('N: Name="keyboard"\nH: Handlers=event1'), undefined);
  });

  it('recognises a KEY_POWER press among input events', () => {
    const event = (type: number, code: number, value: number): Buffer => {
      const b = Buffer.alloc(24);
      b.writeUInt16LE(type, 16);
      b.writeUInt16LE(code, 18);
      b.writeInt32LE(value, 20);
      return b;
    };
    assert.equal(hasPowerPress(Buffer.concat([event(0, 0, 0), event(1, 116, 1)])), true);
    assert.equal(hasPowerPress(event(1, 116, 0)), false); // release only
    assert.equal(hasPowerPress(event(1, 30, 1)), false);
  });
});
