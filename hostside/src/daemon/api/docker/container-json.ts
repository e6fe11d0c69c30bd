/**
 * Our container records in Docker's JSON (GET /containers/json and /containers/{id}/json), pure. Field
 * names and zero values follow the Engine API, since the docker CLI, docker-py and compose read them:
 * `docker port` reads NetworkSettings.Ports, `docker ps` reads Ports and Status.
 */
import { hostnameOf } from '../../../vm/run-config.ts';
import type { Container } from '../../containers/container.ts';
import type { ContainerRecord } from '../../containers/record.ts';

const MIB = 1024 * 1024;

/** Docker's "Up 5 minutes" / "Exited (0) 2 seconds ago" wording, from timestamps. */
export function humanStatus(record: ContainerRecord, now = Date.now()): string {
  const state = record.state;
  switch (state.status) {
    case 'running':
      return `Up ${humanDuration(now - Date.parse(state.startedAt))}`;
    case 'restarting':
      return `Restarting (${state.exitCode}) ${humanDuration(now - Date.parse(state.finishedAt))} ago`;
    case 'exited':
      return `Exited (${state.exitCode}) ${humanDuration(now - Date.parse(state.finishedAt))} ago`;
    case 'removing':
      return 'Removal In Progress';
    case 'dead':
      return 'Dead';
    default:
      return 'Created';
  }
}

export function humanDuration(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 1) return 'Less than a second';
  if (seconds === 1) return '1 second';
  if (seconds < 60) return `${seconds} seconds`;
  const minutes = Math.round(seconds / 60);
  if (minutes === 1) return 'About a minute';
  if (minutes < 60) return `${minutes} minutes`;
  const hours = Math.round(seconds / 3600);
  if (hours === 1) return 'About an hour';
  if (hours < 48) return `${hours} hours`;
  return `${Math.round(hours / 24)} days`;
}

function portMap(record: ContainerRecord): Record<string, { HostIp: string; HostPort: string }[] | null> {
  const ports: Record<string, { HostIp: string; HostPort: string }[] | null> = {};
  for (const exposed of record.config.exposedPorts) ports[exposed] = null;
  if (record.state.status === 'running')
    for (const forward of record.ports) {
      const key = `${forward.guestPort}/${forward.protocol}`;
      (ports[key] ??= []).push({ HostIp: forward.hostIp, HostPort: String(forward.hostPort) });
    }
  return ports;
}

function bindingsMap(record: ContainerRecord): Record<string, { HostIp: string; HostPort: string }[]> {
  const out: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const binding of record.hostConfig.portBindings)
    (out[binding.containerPort] ??= []).push({ HostIp: binding.hostIp, HostPort: binding.hostPort });
  return out;
}

export function containerSummary(container: Container, now = Date.now()): Record<string, unknown> {
  const record = container.record;
  return {
    Id: record.id,
    Names: [`/${record.name}`],
    Image: record.image,
    ImageID: record.imageId,
    Command: [...record.config.entrypoint, ...record.config.cmd].join(' '),
    Created: Math.floor(Date.parse(record.created) / 1000),
    Ports: Object.values(
      record.state.status === 'running'
        ? record.ports.map((forward) => ({
            IP: forward.hostIp,
            PrivatePort: forward.guestPort,
            PublicPort: forward.hostPort,
            Type: forward.protocol,
          }))
        : [],
    ),
    Labels: record.config.labels,
    State: record.state.status,
    Status: humanStatus(record, now),
    HostConfig: { NetworkMode: 'default' },
    NetworkSettings: { Networks: {} },
    Mounts: mountsJson(record),
  };
}

/** Docker's Mounts entries for the container's volumes (Source: the folder holding the volume's disk). */
function mountsJson(record: ContainerRecord, sourceOf: (name: string) => string = () => ''): unknown[] {
  return (record.mounts ?? []).map((mount) => ({
    Type: 'volume',
    Name: mount.name,
    Source: sourceOf(mount.name),
    Destination: mount.target,
    Driver: 'local',
    Mode: mount.readOnly ? 'ro' : 'z',
    RW: !mount.readOnly,
    Propagation: '',
  }));
}

export function containerInspect(
  container: Container,
  execIds: string[] = [],
  volumeSource?: (name: string) => string,
): Record<string, unknown> {
  const record = container.record;
  const state = record.state;
  const argv = [...record.config.entrypoint, ...record.config.cmd];
  return {
    Id: record.id,
    Created: record.created,
    Path: argv[0] ?? '',
    Args: argv.slice(1),
    State: {
      Status: state.status,
      Running: state.status === 'running',
      Paused: false,
      Restarting: state.status === 'restarting',
      OOMKilled: state.oomKilled,
      Dead: state.status === 'dead',
      Pid: state.pid,
      ExitCode: state.exitCode,
      Error: state.error,
      StartedAt: state.startedAt,
      FinishedAt: state.finishedAt,
    },
    Image: record.imageId,
    ResolvConfPath: '',
    HostnamePath: '',
    HostsPath: '',
    LogPath: `${container.dir}/container.log`,
    Name: `/${record.name}`,
    RestartCount: record.restartCount,
    Driver: 'tether-vm',
    Platform: 'linux',
    MountLabel: '',
    ProcessLabel: '',
    AppArmorProfile: '',
    ExecIDs: execIds.length ? execIds : null,
    HostConfig: {
      AutoRemove: record.hostConfig.autoRemove,
      Memory: record.hostConfig.memoryBytes,
      Init: record.hostConfig.init ?? null,
      PidsLimit: record.hostConfig.pidsLimit ?? null,
      PortBindings: bindingsMap(record),
      NetworkMode: 'default',
      RestartPolicy: { Name: record.hostConfig.restartPolicy, MaximumRetryCount: 0 },
      // The log-port file behaves as json-file does (docker logs reads it, max-size/max-file rotate it), and
      // clients branch on the name: docker-py's containers.run() returns the output only for json-file.
      LogConfig: {
        Type: 'json-file',
        Config: {
          'max-size': String(record.hostConfig.logMaxBytes),
          'max-file': String(record.hostConfig.logMaxFiles),
        },
      },
      Binds: (record.mounts ?? []).filter((m) => !m.anonymous).length
        ? (record.mounts ?? [])
            .filter((m) => !m.anonymous)
            .map((m) => `${m.name}:${m.target}${m.readOnly ? ':ro' : ''}`)
        : null,
      Privileged: false,
      Isolation: 'vm',
    },
    GraphDriver: { Name: 'qcow2', Data: { RootDisk: record.rootDisk } },
    Mounts: mountsJson(record, volumeSource),
    Config: {
      Hostname: record.config.hostname ?? hostnameOf(record.id),
      Domainname: '',
      User: record.config.user ?? '',
      AttachStdin: record.config.attachStdin,
      AttachStdout: record.config.attachStdout,
      AttachStderr: record.config.attachStderr,
      ExposedPorts: Object.fromEntries(record.config.exposedPorts.map((port) => [port, {}])),
      Tty: record.config.tty,
      OpenStdin: record.config.openStdin,
      StdinOnce: record.config.stdinOnce,
      Env: record.config.env,
      Cmd: record.config.cmd,
      Image: record.image,
      Volumes: (record.mounts ?? []).length
        ? Object.fromEntries((record.mounts ?? []).map((m) => [m.target, {}]))
        : null,
      WorkingDir: record.config.workingDir ?? '',
      Entrypoint: record.config.entrypoint.length ? record.config.entrypoint : null,
      OnBuild: null,
      Labels: record.config.labels,
      ...(record.config.stopSignal ? { StopSignal: record.config.stopSignal } : {}),
      ...(record.config.stopTimeout !== undefined ? { StopTimeout: record.config.stopTimeout } : {}),
    },
    NetworkSettings: {
      Ports: portMap(record),
      IPAddress: '',
      Networks: {},
    },
    // Not Docker's: how the container's VM is set up (tetherctl and the status page show more).
    Tether: { MemoryMiB: record.hostConfig.memoryBytes ? record.hostConfig.memoryBytes / MIB : undefined },
  };
}
