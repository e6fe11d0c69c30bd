/**
 * The ACPI power button. QMP `system_powerdown` (what a hypervisor's "shut down guest" does) arrives as a
 * KEY_POWER press on the "Power Button" input device (modules button + evdev); a real init answers it with
 * a graceful shutdown, and so does the agent.
 */
import { closeSync, constants, openSync, readFileSync, readSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { SYS, type Sys } from '../sys/sys.ts';

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

/** Watches the power button until the process ends; returns a description, or undefined without one. */
export function watchPowerButton(sys: Sys, onPress: () => void): string | undefined {
  let event: string | undefined;
  try {
    event = powerButtonEvent(readFileSync('/proc/bus/input/devices', 'utf8'));
  } catch {
    return undefined;
  }
  if (!event) return undefined;
  const path = `/dev/input/${event}`;
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const buffer = Buffer.alloc(EVENT_BYTES * 16);
  void (async () => {
    for (;;) {
      const revents = await sys.poll(fd, SYS.POLLIN, 1000).catch(() => SYS.POLLERR);
      if (revents & (SYS.POLLERR | SYS.POLLNVAL)) {
        closeSync(fd);
        return;
      }
      if (!(revents & SYS.POLLIN)) continue;
      let n = 0;
      try {
        n = readSync(fd, buffer, 0, buffer.length, null);
      } catch {
        await sleep(100);
        continue;
      }
      if (hasPowerPress(buffer.subarray(0, n))) onPress();
    }
  })();
  return path;
}
