/**
 * Where tetherd keeps its state and its API socket, as DESIGN.md gives them: system paths as root, the
 * user's XDG directories otherwise (tetherd needs no root: QEMU runs under TCG, disks are files).
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface DaemonPaths {
  root: string;
  socket: string;
}

/** Pure: the default root and socket for a user id and environment. */
export function defaultDaemonPaths(
  uid: number,
  env: NodeJS.ProcessEnv,
  home: string = homedir(),
): DaemonPaths {
  if (uid === 0) return { root: '/var/lib/tether', socket: '/run/tether/tetherd.sock' };
  const data = env['XDG_DATA_HOME'] || join(home, '.local', 'share');
  const runtime = env['XDG_RUNTIME_DIR'] || join(data, 'tether', 'run');
  return { root: join(data, 'tether'), socket: join(runtime, 'tether', 'tetherd.sock') };
}
