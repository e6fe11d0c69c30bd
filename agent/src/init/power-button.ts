/**
 * The ACPI power button. QMP `system_powerdown` (what a hypervisor's "shut down guest" does) arrives as a
 * KEY_POWER press on the "Power Button" input device (modules button + evdev); a real init answers it with
 * a graceful shutdown, and so does the agent.
 */
import { closeSync, constants, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { SYS, type FdWatch, type Sys } from '../sys/sys.ts';

/** struct input_event on 64-bit: timeval (16 bytes), type u16, code u16, value s32. */
const EVENT_BYTES = 24;
const EV_KEY = 1;
const KEY_POWER = 116;

/** `event3` for the device named "Power Button" in /proc/bus/input/devices, if any. */
export function powerButtonEvent(devicesText: string): string | undefined {
  for (const block of devicesText.split(/\n\s*\n/)) {
    if (!/^N: Name="Power Button"$/m.test(block)) continue;
    const handlers = /^H: Handlers=(.*)$/m.exec(block)?.[1] ?? '';
    const event = handlers.split(/\s+/).find((handler) => /^event\d+$/.test(handler));
    if (event) return event;
  }
  return undefined;
}

/** True when the buffer holds a KEY_POWER press (value 1) among its events. */
export function hasPowerPress(events: Buffer): boolean {
  for (let at = 0; at + EVENT_BYTES <= events.length; at += EVENT_BYTES) {
    if (
      events.readUInt16LE(at + 16) === EV_KEY &&
      events.readUInt16LE(at + 18) === KEY_POWER &&
      events.readInt32LE(at + 20) === 1
    )
      return true;
  }
  return false;
}

/** Where the kernel's views are: `/proc` and `/dev` in the VM, a temp tree in tests. */
export interface PowerButtonPaths {
  proc: string;
  dev: string;
}

/**
 * Watches the power button until the device goes away; returns its path, or undefined without one. The
 * wait is in the event loop (Sys.watch, edge-triggered), so the button holds no pool thread and no timer:
 * each readiness event reads until EAGAIN, and a press is answered in the loop turn it arrives in.
 */
export function watchPowerButton(
  sys: Sys,
  onPress: () => void,
  paths: PowerButtonPaths = { proc: '/proc', dev: '/dev' },
): string | undefined {
  let event: string | undefined;
  try {
    event = powerButtonEvent(readFileSync(join(paths.proc, 'bus/input/devices'), 'utf8'));
  } catch {
    return undefined;
  }
  if (!event) return undefined;
  const path = join(paths.dev, 'input', event);
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const buffer = Buffer.alloc(EVENT_BYTES * 16);
  let stopped = false;
  let watch: FdWatch | undefined;
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    watch?.close();
    closeSync(fd);
  };
  const onEvents = (revents: number): void => {
    if (stopped) return;
    // Read even when the device is going: a press that came just before still counts.
    while (revents & SYS.POLLIN) {
      let n: number;
      try {
        n = readSync(fd, buffer, 0, buffer.length, null);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EAGAIN') break;
        stop(); // ENODEV: the device was removed
        return;
      }
      if (n === 0) break;
      if (hasPowerPress(buffer.subarray(0, n))) onPress();
    }
    // The device was removed: nothing more will come, and an edge-triggered watch would not say so again.
    if (revents & (SYS.POLLHUP | SYS.POLLERR | SYS.POLLNVAL)) stop();
  };
  try {
    watch = sys.watch(fd, SYS.POLLIN, onEvents);
  } catch (error) {
    closeSync(fd);
    throw error;
  }
  return path;
}
