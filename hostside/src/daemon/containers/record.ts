/**
 * What tetherd keeps about one container, on disk as containers/<id>/container.json. The fields follow
 * Docker's model (Config, HostConfig, State) in our own shape; api/docker/ turns them into Docker's JSON.
 */
import type { PortForward } from '../../vm/driver.ts';

export type ContainerStatus = 'created' | 'running' | 'restarting' | 'exited' | 'dead' | 'removing';

export interface ContainerConfig {
  /** The image's Entrypoint, or the user's --entrypoint. */
  entrypoint: string[];
  /** The user's command, or the image's Cmd. */
  cmd: string[];
  env: string[];
  workingDir?: string;
  user?: string;
  tty: boolean;
  openStdin: boolean;
  stdinOnce: boolean;
  attachStdin: boolean;
  attachStdout: boolean;
  attachStderr: boolean;
  labels: Record<string, string>;
  /** "80/tcp" style keys, from the image and from -p/--expose. */
  exposedPorts: string[];
  stopSignal?: string;
  stopTimeout?: number;
  hostname?: string;
}

export interface PortBinding {
  /** "80/tcp" */
  containerPort: string;
  hostIp: string;
  /** "" asks for any free port; resolved to a number at each start. */
  hostPort: string;
}

export interface ContainerHostConfig {
  autoRemove: boolean;
  memoryBytes: number;
  portBindings: PortBinding[];
  logMaxBytes: number;
  logMaxFiles: number;
  restartPolicy: 'no' | 'always' | 'on-failure' | 'unless-stopped';
  /** Docker's HostConfig.Init: null runs the container's init (our default), false the command as PID 1. */
  init?: boolean | null;
  /** Docker's HostConfig.PidsLimit; 0 or absent: the agent's default. */
  pidsLimit?: number;
}

/** A volume mounted into the container (a disk of the volume store). */
export interface ContainerMount {
  name: string;
  /** Absolute path inside the container. */
  target: string;
  readOnly: boolean;
  /** Made for this container (Config.Volumes, an image's VOLUME): `docker rm -v` removes it. */
  anonymous: boolean;
  /** `nocopy`: the volume does not receive the image's files at its path when it is empty. */
  noCopy?: boolean;
}

export interface ContainerState {
  status: ContainerStatus;
  /** The hypervisor's process (QEMU) while running. */
  pid: number;
  exitCode: number;
  /** Why the container could not run or stopped abnormally (a failed boot, a VM that died). */
  error: string;
  oomKilled: boolean;
  startedAt: string;
  finishedAt: string;
}

export interface ContainerRecord {
  id: string;
  /** Without Docker's leading slash. */
  name: string;
  created: string;
  /** The image reference as the user gave it. */
  image: string;
  imageId: string;
  /** The image's root filesystem disk. */
  rootDisk: string;
  config: ContainerConfig;
  hostConfig: ContainerHostConfig;
  state: ContainerState;
  /** Ports published by the current (or last) boot, with host ports resolved. */
  ports: PortForward[];
  restartCount: number;
  bootCount: number;
  /** Volumes, in mount order (absent in records written before volumes existed). */
  mounts?: ContainerMount[];
}

export const ZERO_TIME = '0001-01-01T00:00:00Z';

export function initialState(): ContainerState {
  return {
    status: 'created',
    pid: 0,
    exitCode: 0,
    error: '',
    oomKilled: false,
    startedAt: ZERO_TIME,
    finishedAt: ZERO_TIME,
  };
}

/** The argv the container runs: entrypoint then command, as Docker joins them. */
export function processArgv(config: ContainerConfig): string[] {
  return [...config.entrypoint, ...config.cmd];
}
