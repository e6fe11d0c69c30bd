/**
 * Channel keys for --dev mode, kept in the state directory: the agent's host key (generated when
 * missing), the authorized client keys, and, when there were none, a client key pair for tetherctl plus
 * a known_hosts line so a stock OpenSSH client can pin the agent too. In a VM the keys come from the config.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { utils } from 'ssh2';
import { TetherError } from '../../../protocol/src/errors/errors.ts';

export const KNOWN_HOST_NAME = 'tether';

export interface ChannelKeys {
  hostKey: string;
  authorizedKeys: string[];
}

function generate(comment: string): { private: string; public: string } {
  return utils.generateKeyPairSync('ed25519', { comment });
}

function writeSecret(file: string, text: string): void {
  writeFileSync(file, text, { mode: 0o600 });
  chmodSync(file, 0o600);
}

/** Authorized key lines, ignoring blanks and comments; throws naming the file and line of a bad key. */
export function parseAuthorizedKeys(text: string, source: string): string[] {
  const keys: string[] = [];
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const parsed = utils.parseKey(line);
    if (parsed instanceof Error) {
      throw new TetherError(
        'TETHER_CONFIG_INVALID',
        `${source} line ${index + 1}: not an OpenSSH public key (${parsed.message})`,
      );
    }
    keys.push(line);
  });
  return keys;
}

export function ensureStateKeys(stateDir: string): ChannelKeys {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const hostKeyFile = join(stateDir, 'ssh_host_key');
  if (!existsSync(hostKeyFile)) {
    const pair = generate('tether-host');
    writeSecret(hostKeyFile, pair.private);
    writeFileSync(`${hostKeyFile}.pub`, pair.public + '\n');
    writeFileSync(join(stateDir, 'known_hosts'), `${KNOWN_HOST_NAME} ${pair.public}\n`);
  }
  const authorizedFile = join(stateDir, 'authorized_keys');
  if (!existsSync(authorizedFile)) {
    const pair = generate('tetherctl');
    writeSecret(join(stateDir, 'id_client'), pair.private);
    writeFileSync(join(stateDir, 'id_client.pub'), pair.public + '\n');
    writeFileSync(authorizedFile, pair.public + '\n', { mode: 0o600 });
  }
  return {
    hostKey: readFileSync(hostKeyFile, 'utf8'),
    authorizedKeys: parseAuthorizedKeys(readFileSync(authorizedFile, 'utf8'), authorizedFile),
  };
}
