/**
 * What a container asks to mount, from the three ways Docker's API carries it: `HostConfig.Binds`
 * (`-v NAME:/path[:ro]`), `HostConfig.Mounts` (`--mount type=volume,...`) and `Config.Volumes`
 * (`-v /path` alone, an anonymous volume). Only volumes: a host directory cannot be bound into a VM without
 * a file-sharing device, and a tmpfs mount is not supported yet; both are refused saying so. Pure.
 */
import { posix } from 'node:path';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';

export interface VolumeMountRequest {
  /** The named volume; undefined for an anonymous one (made at create, named by a random id). */
  name: string | undefined;
  /** Absolute path inside the container. */
  target: string;
  readOnly: boolean;
  /** `nocopy`: a new volume does not receive what the image has at the path (Docker's copy-up). */
  noCopy?: boolean;
}

const HOST_PATH_REFUSED =
  'a host directory cannot be mounted into a container here: each container is a VM, which shares disks with the host, not folders. Use a named volume (-v NAME:PATH, docker volume create) and docker cp to copy files in or out';

function invalid(message: string): TetherError {
  return new TetherError('TETHER_INVALID_PARAMETER', message);
}

function checkTarget(target: string, spec: string): string {
  if (!target.startsWith('/'))
    throw invalid(`invalid volume specification: '${spec}': the container path must be absolute`);
  const clean = posix.normalize(target).replace(/(.)\/+$/, '$1');
  if (clean === '/')
    throw invalid(`invalid volume specification: '${spec}': a volume cannot be mounted at /`);
  return clean;
}

/** `-v SPEC` as it arrives in HostConfig.Binds: `NAME:/path`, `NAME:/path:ro`; a host path is refused. */
export function parseBind(spec: string): VolumeMountRequest {
  const parts = spec.split(':');
  if (parts.length < 2 || parts.length > 3 || parts.some((part) => part === ''))
    throw invalid(`invalid volume specification: '${spec}' (expected NAME:PATH[:ro])`);
  const [source, target, mode] = parts as [string, string, string | undefined];
  if (source.startsWith('/') || source.startsWith('.') || source.startsWith('~'))
    throw invalid(`${spec}: ${HOST_PATH_REFUSED}`);
  const flags = (mode ?? '').split(',').filter(Boolean);
  for (const flag of flags)
    if (!['ro', 'rw', 'z', 'Z', 'nocopy', 'copy'].includes(flag))
      throw invalid(`invalid volume specification: '${spec}': unknown mode ${JSON.stringify(flag)}`);
  return {
    name: source,
    target: checkTarget(target, spec),
    readOnly: flags.includes('ro'),
    ...(flags.includes('nocopy') ? { noCopy: true } : {}),
  };
}

/** One entry of HostConfig.Mounts (`--mount`): type volume only. */
export function parseMount(mount: unknown): VolumeMountRequest {
  const m = (mount ?? {}) as Record<string, unknown>;
  const type = typeof m['Type'] === 'string' ? m['Type'] : 'volume';
  const target = typeof m['Target'] === 'string' ? m['Target'] : '';
  const spec = `type=${type},target=${target}`;
  if (type === 'bind') throw invalid(`--mount ${spec}: ${HOST_PATH_REFUSED}`);
  if (type !== 'volume')
    throw invalid(`--mount ${spec}: mounts of type ${type} are not supported; use type=volume`);
  const source = typeof m['Source'] === 'string' && m['Source'] !== '' ? m['Source'] : undefined;
  const options = (m['VolumeOptions'] ?? {}) as Record<string, unknown>;
  return {
    name: source,
    target: checkTarget(target, spec),
    readOnly: m['ReadOnly'] === true,
    ...(options['NoCopy'] === true ? { noCopy: true } : {}),
  };
}

/** `Config.Volumes` (and an image's VOLUME lines): anonymous volumes at these paths. */
export function anonymousMounts(volumes: Record<string, unknown> | null | undefined): VolumeMountRequest[] {
  return Object.keys(volumes ?? {}).map((target) => ({
    name: undefined,
    target: checkTarget(target, target),
    readOnly: false,
  }));
}

/**
 * The mounts of a container, in order: explicit ones first (binds, then --mount), then anonymous ones at
 * paths nothing else covers. Two explicit mounts at one path are refused, as Docker does.
 */
export function mergeMounts(
  explicit: readonly VolumeMountRequest[],
  anonymous: readonly VolumeMountRequest[],
): VolumeMountRequest[] {
  const seen = new Set<string>();
  const out: VolumeMountRequest[] = [];
  for (const mount of explicit) {
    if (seen.has(mount.target)) throw invalid(`Duplicate mount point: ${mount.target}`);
    seen.add(mount.target);
    out.push(mount);
  }
  for (const mount of anonymous) {
    if (seen.has(mount.target)) continue;
    seen.add(mount.target);
    out.push(mount);
  }
  return out;
}
