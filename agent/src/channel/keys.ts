/**
 * Channel keys for --dev mode, kept in the state directory: the agent's host key (generated when
 * missing), the authorized client keys, and, when there were none, a client key pair for tetherctl plus
 * a known_hosts line so a stock OpenSSH client can pin the agent too. In a VM the keys come from the config.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { TetherError } from '../../../protocol/src/errors/errors.ts';

// ssh2 is CommonJS: its named exports exist only in the bundle, not under node's ESM loader (tests, tsx).
const { utils } = ssh2;

export const KNOWN_HOST_NAME = 'tether';

export interface ChannelKeys {
  hostKey: string;
  authorizedKeys: string[];
}

/** Enough draws that a failure means something else is wrong (each draw is bad about 1 time in 256). */
const KEYGEN_ATTEMPTS = 8;

/**
 * ssh2's ed25519 generator strips the public key's leading zero bytes, so about one pair in 256 comes
 * out with a 31-byte key that nothing parses, ssh2 included (mscdex/ssh2#1390, #1513). With two pairs
 * per fresh state directory, about one --dev start in 128 died with "Malformed OpenSSH private key".
 * Draw again until both halves parse.
 */
function generate(comment: string): { private: string; public: string } {
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
