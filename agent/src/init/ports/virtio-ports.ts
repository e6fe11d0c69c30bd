/**
 * virtio-serial ports by name. There is no udev in the VM to make /dev/virtio-ports/NAME links, so the
 * agent reads `/sys/class/virtio-ports/vportXpY/name` and opens `/dev/vportXpY` (devtmpfs creates it).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export const CHANNEL_PORT = 'org.tether.channel';
export const LOG_PORT = 'org.tether.log';

export function virtioPorts(sysClass = '/sys/class/virtio-ports'): Map<string, string> {
  const ports = new Map<string, string>();
  let entries: string[] = [];
  try {
    entries = readdirSync(sysClass);
  } catch {
    return ports;
  }
  for (const entry of entries) {
    try {
      const name = readFileSync(`${sysClass}/${entry}/name`, 'utf8').trim();
      if (name) ports.set(name, `/dev/${entry}`);
    } catch {
      // A port without a name: not one of ours.
    }
  }
  return ports;
}

/** Waits (bounded) for the named ports: virtio_console registers them asynchronously after it loads. */
export async function waitForPorts(
  names: readonly string[],
  timeoutMs: number,
  sysClass?: string,
): Promise<Map<string, string>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ports = virtioPorts(sysClass);
    if (names.every((name) => ports.has(name)) || Date.now() >= deadline) return ports;
    await sleep(20);
  }
}
