/**
 * The two key pairs of one VM's channel, made fresh per container: the agent's host key (its private half
 * goes into the config, the host pins the public half) and the host's client key (its public half is the
 * config's only authorized key). Nobody else can talk to the agent, and the host talks to no other agent.
 */
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import type { ChannelCredentials } from '../channel/client.ts';

const { utils } = ssh2;

export interface ChannelKeys {
  /** For the config's channel.hostKey (PEM/OpenSSH private key). */
  agentHostKey: string;
  /** For the config's channel.authorizedKeys. */
  clientPublicKey: string;
  /** What the host needs to connect. */
  credentials: ChannelCredentials;
}

export function generateChannelKeys(id: string): ChannelKeys {
  const host = utils.generateKeyPairSync('ed25519', { comment: `tether-agent@${id.slice(0, 12)}` });
  const client = utils.generateKeyPairSync('ed25519', { comment: 'tetherctl' });
  return {
    agentHostKey: host.private,
    clientPublicKey: client.public,
    credentials: { privateKey: client.private, hostPublicKey: host.public },
  };
}

/**
 * Saves the host's half under the names `tetherctl agent --state DIR` reads (id_client, ssh_host_key.pub),
 * so a kept VM can be reached with the debugging commands too.
 */
export function saveClientKeys(stateDir: string, keys: ChannelKeys): void {
  const secret = join(stateDir, 'id_client');
  writeFileSync(secret, keys.credentials.privateKey, { mode: 0o600 });
  chmodSync(secret, 0o600);
  writeFileSync(join(stateDir, 'id_client.pub'), keys.clientPublicKey + '\n');
  writeFileSync(join(stateDir, 'ssh_host_key.pub'), keys.credentials.hostPublicKey + '\n');
}
