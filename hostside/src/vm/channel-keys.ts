/**
 * The two key pairs of one VM's channel, made fresh per container: the agent's host key (its private half
 * goes into the config, the host pins the public half) and the host's client key (its public half is the
 * config's only authorized key). Nobody else can talk to the agent, and the host talks to no other agent.
 */
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { TetherError } from '../../../protocol/src/errors/errors.ts';
import type { ChannelCredentials } from '../channel/client.ts';

// ssh2 is CommonJS: its named exports exist only in the bundle, not under node's ESM loader (tests, tsx).
const { utils } = ssh2;

/** Enough draws that a failure means something else is wrong (each draw is bad about 1 time in 256). */
const KEYGEN_ATTEMPTS = 8;

export interface ChannelKeys {
  /** For the config's channel.hostKey (PEM/OpenSSH private key). */
  agentHostKey: string;
  /** For the config's channel.authorizedKeys. */
  clientPublicKey: string;
  /** What the host needs to connect. */
  credentials: ChannelCredentials;
}

/**
 * ssh2 1.17's ed25519 generator strips the public key's leading zero bytes, so about one pair in 256 does
 * not parse (mscdex/ssh2#1390, #1513): the agent would refuse its config or the host its pinned key. Draw
 * again until both halves parse.
 */
export function generateKeyPair(comment: string): { private: string; public: string } {
  let problem = '';
  for (let attempt = 0; attempt < KEYGEN_ATTEMPTS; attempt++) {
    const pair = utils.generateKeyPairSync('ed25519', { comment });
    const bad = [utils.parseKey(pair.private), utils.parseKey(pair.public)].find((r) => r instanceof Error);
    if (!bad) return pair;
    problem = bad.message;
  }
  throw new TetherError(
    'TETHER_CONFIG_INVALID',
    `could not generate a usable ed25519 key pair in ${KEYGEN_ATTEMPTS} attempts (${problem})`,
  );
}

export function generateChannelKeys(id: string): ChannelKeys {
  const host = generateKeyPair(`tether-agent@${id.slice(0, 12)}`);
  const client = generateKeyPair('tetherctl');
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
