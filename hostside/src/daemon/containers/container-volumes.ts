/**
 * A container's volumes between the volume store and its VM: made at create (named ones if missing, as
 * Docker does; anonymous ones for Config.Volumes and the image's VOLUME paths), attached at each start as
 * disks, and the anonymous ones removed with the container when asked (`docker rm -v`, `--rm`).
 *
 * A volume is a disk: two VMs writing one ext4 filesystem at once would corrupt it. So a volume is mounted
 * by one running container at a time unless every one of them mounts it read-only.
 */
import { TetherError } from '../../../../protocol/src/errors/errors.ts';
import { MAX_VOLUME_DISKS, volumeDiskSerial, type VmVolumeDisk } from '../../vm/driver.ts';
import { mergeMounts, anonymousMounts, type VolumeMountRequest } from '../volumes/mount-spec.ts';
import type { VolumeStore } from '../volumes/volume-store.ts';
import type { ContainerMount } from './record.ts';

/** Makes the volumes a new container asks for; on failure, none of the anonymous ones stays. */
export async function createMounts(
  store: VolumeStore | undefined,
  requested: readonly VolumeMountRequest[],
  imageVolumes: Record<string, unknown> | null | undefined,
): Promise<ContainerMount[]> {
  const wanted = mergeMounts(requested, anonymousMounts(imageVolumes));
  if (wanted.length === 0) return [];
  if (!store)
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      'volumes are not available: this tetherd has no volume store',
    );
  if (wanted.length > MAX_VOLUME_DISKS)
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      `the container asks for ${wanted.length} volumes (${wanted.map((m) => m.target).join(', ')}); a container VM takes at most ${MAX_VOLUME_DISKS}`,
    );
  const made: ContainerMount[] = [];
  try {
    for (const mount of wanted) {
      const volume = await store.create({ name: mount.name, anonymous: mount.name === undefined });
      made.push({
        name: volume.name,
        target: mount.target,
        readOnly: mount.readOnly,
        anonymous: mount.name === undefined,
        ...(mount.noCopy ? { noCopy: true } : {}),
      });
    }
    return made;
  } catch (error) {
    for (const mount of made) if (mount.anonymous) store.remove(mount.name);
    throw error;
  }
}

export interface MountingContainer {
  id: string;
  name: string;
  mounts: readonly ContainerMount[];
}

/** Pure: refuses to start `container` while a running one holds one of its volumes in a way they cannot share. */
export function checkVolumeConflicts(
  container: MountingContainer,
  running: readonly MountingContainer[],
): void {
  for (const mount of container.mounts)
    for (const other of running) {
      if (other.id === container.id) continue;
      const theirs = other.mounts.find((m) => m.name === mount.name);
      if (!theirs || (theirs.readOnly && mount.readOnly)) continue;
      throw new TetherError(
        'TETHER_CONFLICT',
        `volume ${mount.name} is mounted by the running container ${other.name}: a volume is a disk, and only one container VM at a time may mount it unless all mount it read-only (:ro). Stop ${other.name} first`,
      );
    }
}

/** The disks and agent config entries for a start, in mount order. */
export function volumeAttachments(
  store: VolumeStore | undefined,
  mounts: readonly ContainerMount[],
): {
  disks: VmVolumeDisk[];
  config: Array<{ serial: string; target: string; readOnly: boolean; copyUp: boolean }>;
} {
  if (mounts.length > 0 && !store)
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      'volumes are not available: this tetherd has no volume store',
    );
  return {
    disks: mounts.map((mount) => ({ disk: store!.disk(mount.name), readOnly: mount.readOnly })),
    config: mounts.map((mount, index) => ({
      serial: volumeDiskSerial(index),
      target: mount.target,
      readOnly: mount.readOnly,
      // Docker's copy-up, which the agent does only while the volume is empty.
      copyUp: !mount.noCopy && !mount.readOnly,
    })),
  };
}

/** Removes the container's anonymous volumes that no other container mounts. */
export function removeAnonymous(
  store: VolumeStore | undefined,
  mounts: readonly ContainerMount[],
  usedElsewhere: (name: string) => boolean,
): void {
  if (!store) return;
  for (const mount of mounts)
    if (mount.anonymous && store.has(mount.name) && !usedElsewhere(mount.name)) store.remove(mount.name);
}
