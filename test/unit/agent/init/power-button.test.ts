/**
 * The power button watcher waits in the event loop (Sys.watch), never in a pool thread: a FIFO stands in
 * for the evdev device's bytes, the recording fake for the kernel's readiness events, and the real addon
 * where the test is about the event loop itself.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  constants,
  fstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { watchPowerButton } from '../../../../agent/src/init/power-button.ts';
import { realSys, SYS, type FdWatch, type Sys } from '../../../../agent/src/sys/sys.ts';
import { FakeSys } from '../../../helpers/fake-sys.ts';

const DEVICES = `I: Bus=0019 Vendor=0000 Product=0001 Version=0000
N: Name="Power Button"
P: Phys=LNXPWRBN/button/input0
H: Handlers=kbd event3
B: EV=3

`;

/** One struct input_event (64-bit): timeval, type, code, value. */
function inputEvent(type: number, code: number, value: number): Buffer {
  const event = Buffer.alloc(24);
  event.writeUInt16LE(type, 16);
  event.writeUInt16LE(code, 18);
  event.writeInt32LE(value, 20);
  return event;
}
const EV_KEY = 1;
const EV_SYN = 0;
const KEY_POWER = 116;
const press = Buffer.concat([
  inputEvent(EV_KEY, KEY_POWER, 1),
  inputEvent(EV_SYN, 0, 0),
  inputEvent(EV_KEY, KEY_POWER, 0),
  inputEvent(EV_SYN, 0, 0),
]);

function isOpen(fd: number): boolean {
  try {
    fstatSync(fd);
    return true;
  } catch {
    return false;
  }
}

void describe('watchPowerButton', () => {
  let dir: string;
  let paths: { proc: string; dev: string };
  const writers: number[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tether-power-'));
    paths = { proc: join(dir, 'proc'), dev: join(dir, 'dev') };
    mkdirSync(join(paths.proc, 'bus/input'), { recursive: true });
    mkdirSync(join(paths.dev, 'input'), { recursive: true });
    execFileSync('mkfifo', [join(paths.dev, 'input/event3')]);
  });
  afterEach(() => {
    for (const fd of writers.splice(0)) closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });

  /** The device's other end, as the kernel's input layer. */
  function device(): number {
    const fd = openSync(join(paths.dev, 'input/event3'), constants.O_WRONLY | constants.O_NONBLOCK);
    writers.push(fd);
    return fd;
  }

  void it('finds no device without a "Power Button" and watches nothing', () => {
    execFileSync('sh', [
      '-c',
      `printf 'N: Name="AT Keyboard"\\nH: Handlers=kbd event0\\n' > ${paths.proc}/bus/input/devices`,
    ]);
    const sys = new FakeSys();
    assert.equal(
      watchPowerButton(sys, () => assert.fail('no press'), paths),
      undefined,
    );
    assert.deepEqual(sys.callNames(), []);
  });

  void it('waits in the event loop and answers each press read on a readiness event', () => {
    execFileSync('sh', ['-c', `cat > ${paths.proc}/bus/input/devices`], { input: DEVICES });
    const sys = new FakeSys();
    let presses = 0;
    const path = watchPowerButton(sys, () => presses++, paths);
    assert.equal(path, join(paths.dev, 'input/event3'));
    const [watch] = sys.watches;
    assert.ok(watch, 'the device is watched');
    assert.equal(watch.events & SYS.POLLIN, SYS.POLLIN);
    assert.deepEqual(sys.callNames(), ['watch'], 'no poll: no pool thread waits on the device');

    const input = device();
    sys.emit(watch.fd, SYS.POLLIN); // nothing there yet (EAGAIN): no press, still watching
    assert.equal(presses, 0);
    // Edge-triggered: two presses that came before one event are both read before waiting again.
    writeSync(input, press);
    writeSync(input, Buffer.alloc(24 * 20)); // more than one read's worth of other events
    writeSync(input, press);
    sys.emit(watch.fd, SYS.POLLIN);
    assert.equal(presses, 2);
    assert.equal(watch.closed, false);
    assert.deepEqual(sys.callNames(), ['watch']);
  });

  void it('stops watching and closes the device once it is gone (POLLHUP, POLLERR)', () => {
    execFileSync('sh', ['-c', `cat > ${paths.proc}/bus/input/devices`], { input: DEVICES });
    const sys = new FakeSys();
    watchPowerButton(sys, () => {}, paths);
    const [watch] = sys.watches;
    assert.ok(watch);
    assert.ok(isOpen(watch.fd));
    sys.emit(watch.fd, SYS.POLLHUP | SYS.POLLERR);
    assert.equal(watch.closed, true);
    assert.equal(isOpen(watch.fd), false, 'the device fd is closed');
  });

  void it('with the real addon: a press is answered from the event loop, and a device that goes away ends it', async () => {
    execFileSync('sh', ['-c', `cat > ${paths.proc}/bus/input/devices`], { input: DEVICES });
    // Opened read-write first, so the FIFO has a writer (no POLLHUP) before the watcher opens it.
    const input = openSync(join(paths.dev, 'input/event3'), constants.O_RDWR | constants.O_NONBLOCK);
    let watchFd = -1;
    let closedWatches = 0;
    const real = realSys();
    // The real addon, with a count of the watches closed.
    const sys: Sys = Object.assign(Object.create(real) as Sys, {
      watch: (fd: number, events: number, onEvents: (revents: number) => void): FdWatch => {
        watchFd = fd;
        const watch = real.watch(fd, events, onEvents);
        return {
          close: () => {
            closedWatches++;
            watch.close();
          },
        };
      },
    });
    let presses = 0;
    watchPowerButton(sys, () => presses++, paths);
    writeSync(input, press);
    for (let i = 0; i < 100 && presses === 0; i++) await sleep(10);
    assert.equal(presses, 1, 'the press was read when it arrived');
    closeSync(input); // the last writer leaves: POLLHUP, as a removed device reports
    for (let i = 0; i < 100 && closedWatches === 0; i++) await sleep(10);
    assert.equal(closedWatches, 1, 'the watch stopped');
    assert.equal(isOpen(watchFd), false, 'the device fd is closed');
  });
});
