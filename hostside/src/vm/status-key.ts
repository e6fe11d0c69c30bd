/**
 * The status key of one boot: 32 random bytes the host puts in the config (channel.statusKey) and with
 * which the agent signs its console status lines, so the host believes no line a container prints
 * (protocol/src/status/console-line.ts). Fresh for every boot, so a line from an earlier boot does not
 * verify; kept in the VM's state directory (mode 0600, beside id_client) so a host that adopts the VM
 * later checks its lines with the same key.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { STATUS_KEY_BYTES, decodeStatusKey } from '../../../protocol/src/status/console-line.ts';
import { TetherError } from '../../../protocol/src/errors/errors.ts';

export const STATUS_KEY_FILE = 'status.key';

/** A new key in its config form (base64). */
export function generateStatusKey(): string {
  return randomBytes(STATUS_KEY_BYTES).toString('base64');
}

/** Replaces the key in `stateDir` whole (a reader never sees half a key), readable by this user only. */
export function saveStatusKey(stateDir: string, key: string): void {
  const path = join(stateDir, STATUS_KEY_FILE);
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    writeFileSync(temporary, key + '\n', { mode: 0o600 });
    chmodSync(temporary, 0o600); // `mode` applies only when the file is created, not to one left over
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
}

/**
 * The key saved in `stateDir`; undefined when there is none (a VM booted by a host that gave no key).
 * Throws TETHER_STATE_INVALID for a file that holds no key.
 */
export function loadStatusKey(stateDir: string): Buffer | undefined {
  const path = join(stateDir, STATUS_KEY_FILE);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TetherError(
      'TETHER_STATE_INVALID',
      `cannot read the status key ${path}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
  try {
    return decodeStatusKey(text.trim());
  } catch (error) {
    throw new TetherError(
      'TETHER_STATE_INVALID',
      `${path} holds no status key (${(error as Error).message})`,
      {
        cause: error,
      },
    );
  }
}
