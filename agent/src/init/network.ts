/**
 * Loopback and the configured interfaces (address, default route), and the name-resolution files the
 * container reads: /etc/resolv.conf and /etc/hosts, as Docker writes them into every container.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentConfig } from '../../../protocol/src/config/config.ts';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import type { NetInterface, Sys } from '../sys/sys.ts';

type NetworkConfig = NonNullable<AgentConfig['network']>;
type InterfaceConfig = NonNullable<NetworkConfig['interfaces']>[number];

/** Which kernel interface a configured one means: by MAC, else by name, else the n-th non-loopback one. */
export function pickInterface(
  wanted: InterfaceConfig,
  position: number,
  present: readonly NetInterface[],
): NetInterface | undefined {
  if (wanted.mac) return present.find((candidate) => candidate.mac?.toLowerCase() === wanted.mac);
  if (wanted.name) return present.find((candidate) => candidate.name === wanted.name);
  return present.filter((candidate) => !candidate.loopback)[position];
}

export async function configureNetwork(
  sys: Sys,
  network: NetworkConfig | undefined,
  timeoutMs = 3000,
): Promise<string[]> {
  const done: string[] = [];
  sys.ifUp('lo');
  done.push('lo up');
  const wanted = network?.interfaces ?? [];
  const deadline = Date.now() + timeoutMs;
  for (const [position, config] of wanted.entries()) {
    let found: NetInterface | undefined;
    // virtio_net registers its interfaces asynchronously after the module loads.
    while (!(found = pickInterface(config, position, sys.ifList())) && Date.now() < deadline) await sleep(20);
    if (!found) {
      const present = sys
        .ifList()
        .map((i) => `${i.name}${i.mac ? ` (${i.mac})` : ''}`)
        .join(', ');
      throw new TetherError(
        'TETHER_SYSCALL',
        `network interface ${config.mac ?? config.name ?? `#${position}`} not found after ${timeoutMs} ms; present: ${present || 'none'}`,
      );
    }
    const [address, prefix] = config.address.split('/') as [string, string];
    sys.ifSetAddress(found.name, address, Number(prefix));
    sys.ifUp(found.name);
    if (config.gateway) sys.addDefaultRoute(config.gateway, found.name);
    done.push(`${found.name} ${config.address}${config.gateway ? ` via ${config.gateway}` : ''}`);
  }
  return done;
}

export function resolvConf(network: NetworkConfig | undefined): string {
  const lines = ['# written by tether from the container config'];
  if (network?.search?.length) lines.push(`search ${network.search.join(' ')}`);
  for (const server of network?.dns ?? []) lines.push(`nameserver ${server}`);
  return lines.join('\n') + '\n';
}

export function hostsFile(hostname: string, network: NetworkConfig | undefined): string {
  const short = hostname.split('.')[0]!;
  const names = short === hostname ? hostname : `${hostname} ${short}`;
  const address = network?.interfaces?.[0]?.address.split('/')[0];
  return [
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    address ? `${address}\t${names}` : `127.0.1.1\t${names}`,
    '',
  ].join('\n');
}
