/**
 * QEMU's user-mode network (slirp) as the guest sees it: QEMU's fixed defaults, so the agent can be told
 * its address statically and needs no DHCP client. Each VM has its own slirp, so every guest may use the
 * same address and MAC.
 */
import type { AgentConfig } from '../../../../protocol/src/config/config.ts';

export const USER_NET_MAC = '52:54:00:12:34:56';
export const USER_NET_ADDRESS = '10.0.2.15/24';
export const USER_NET_GATEWAY = '10.0.2.2';
export const USER_NET_DNS = '10.0.2.3';

export type NetworkConfig = NonNullable<AgentConfig['network']>;

export function userNetworkConfig(): NetworkConfig {
  return {
    interfaces: [{ name: 'eth0', mac: USER_NET_MAC, address: USER_NET_ADDRESS, gateway: USER_NET_GATEWAY }],
    dns: [USER_NET_DNS],
  };
}
