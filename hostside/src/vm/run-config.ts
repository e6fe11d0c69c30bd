/**
 * The agent config for a `vm run`: the command and its environment as Docker would set them up, the root
 * disk by serial, the driver's network, the channel keys and the boot's status key, and power-off when
 * the command ends.
 */
import { randomBytes } from 'node:crypto';
import { CONFIG_VERSION, validateConfig, type AgentConfig } from '../../../protocol/src/config/config.ts';
import { ROOT_DISK_SERIAL } from './driver.ts';

/** Docker's default PATH for a container whose image sets none. */
export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface RunConfigInput {
  id: string;
  argv: string[];
  /** KEY=VALUE entries from the user (-e); they override the defaults. */
  env?: string[];
  cwd?: string | undefined;
  user?: string | undefined;
  tty?: boolean;
  openStdin?: boolean;
  /** Docker's StdinOnce: the process's stdin closes when the first attached client ends its input. */
  stdinOnce?: boolean;
  /** Default: the id's first 12 characters, as Docker does. */
  hostname?: string | undefined;
  stopSignal?: string | undefined;
  stopTimeoutSeconds?: number | undefined;
  network: NonNullable<AgentConfig['network']>;
  agentHostKey: string;
  clientPublicKey: string;
  /** The boot's status key (status-key.ts), base64: the agent signs its console status lines with it. */
  statusKey: string;
  /** False: the process is PID 1 of the container's namespace (Docker without --init). */
  init?: boolean | undefined;
  /** The container's cgroup limits (docker run -m, --pids-limit). */
  limits?: { memoryBytes?: number; pids?: number } | undefined;
  /** Volume disks (VmSpec.volumes) and where the agent mounts them, in order. */
  volumes?: Array<{ serial: string; target: string; readOnly: boolean; copyUp?: boolean }> | undefined;
}

/** A Docker-style container id: 64 hex digits. */
export function newContainerId(): string {
  return randomBytes(32).toString('hex');
}

/** Docker's default hostname: the id's first 12 characters. */
export function hostnameOf(id: string): string {
  return id.slice(0, 12);
}

function keyOf(entry: string): string {
  return entry.slice(0, entry.indexOf('='));
}

/** Defaults first (PATH, HOSTNAME, TERM with a tty), each dropped when the user sets the same key. */
export function containerEnv(user: readonly string[], hostname: string, tty: boolean): string[] {
  const given = new Set(user.map(keyOf));
  const defaults = [DEFAULT_PATH, `HOSTNAME=${hostname}`, ...(tty ? ['TERM=xterm'] : [])];
  return [...defaults.filter((entry) => !given.has(keyOf(entry))), ...user];
}

/** Builds and validates the config; throws TETHER_CONFIG_INVALID naming any bad field (e.g. -w relative). */
export function buildRunConfig(input: RunConfigInput): AgentConfig {
  const hostname = input.hostname ?? hostnameOf(input.id);
  const tty = input.tty ?? false;
  const config: AgentConfig = {
    version: CONFIG_VERSION,
    id: input.id,
    hostname,
    process: {
      argv: input.argv,
      env: containerEnv(input.env ?? [], hostname, tty),
      ...(input.cwd !== undefined ? { cwd: input.cwd } : {}),
      ...(input.user !== undefined ? { user: input.user } : {}),
      tty,
      openStdin: input.openStdin ?? false,
      // docker run -i: the stdin of `echo hi | run -i cat` ends when the piped input does.
      stdinOnce: input.stdinOnce ?? input.openStdin ?? false,
      ...(input.stopSignal !== undefined ? { stopSignal: input.stopSignal } : {}),
      ...(input.stopTimeoutSeconds !== undefined ? { stopTimeoutSeconds: input.stopTimeoutSeconds } : {}),
      ...(input.init === false ? { init: false } : {}),
    },
    ...(input.limits && Object.keys(input.limits).length > 0 ? { limits: input.limits } : {}),
    storage: {
      root: { serial: ROOT_DISK_SERIAL, fstype: 'ext4' },
      ...(input.volumes?.length
        ? {
            volumes: input.volumes.map((volume) => ({
              serial: volume.serial,
              target: volume.target,
              fstype: 'ext4',
              ...(volume.readOnly ? { readOnly: true } : {}),
              ...(volume.copyUp ? { copyUp: true } : {}),
            })),
          }
        : {}),
    },
    network: input.network,
    channel: {
      hostKey: input.agentHostKey,
      authorizedKeys: [input.clientPublicKey],
      statusKey: input.statusKey,
    },
    powerOffOnExit: true,
  };
  return validateConfig(config, 'the vm run config');
}
