/**
 * A container's channel keys, made once at create and kept in its directory (mode 0600), so every boot of
 * the container (start, restart) and every tetherd that adopts it later speaks to the same pinned agent.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import { generateChannelKeys, saveClientKeys, type ChannelKeys } from '../../vm/channel-keys.ts';
import { writeJsonAtomic } from '../state/atomic-file.ts';

const KEYS_FILE = 'keys.json';

export function createContainerKeys(dir: string, id: string): ChannelKeys {
  const keys = generateChannelKeys(id);
  writeJsonAtomic(join(dir, KEYS_FILE), keys, 0o600);
  // Also under tetherctl agent's names, so a person can reach the agent by hand for debugging.
  saveClientKeys(dir, keys);
  return keys;
}

export function loadContainerKeys(dir: string): ChannelKeys {
  try {
    const keys = JSON.parse(readFileSync(join(dir, KEYS_FILE), 'utf8')) as ChannelKeys;
    if (typeof keys.agentHostKey !== 'string' || typeof keys.credentials?.privateKey !== 'string')
      throw new Error('fields missing');
    return keys;
  } catch (error) {
    throw new TetherError(
      'TETHER_STATE_INVALID',
      `the channel keys in ${dir}/${KEYS_FILE} are unreadable (${(error as Error).message}); remove the container and create it again`,
      { cause: error },
    );
  }
}
