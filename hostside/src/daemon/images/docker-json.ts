/**
 * Image records in the Docker Engine API's shapes (v1.43 and later): an item of GET /images/json
 * (ImageSummary) and the body of GET /images/{name}/json (ImageInspect). Pure.
 */
import type { ImageRecord } from './image-store.ts';

export interface DockerImageSummary {
  Id: string;
  ParentId: string;
  RepoTags: string[];
  RepoDigests: string[];
  /** Unix seconds. */
  Created: number;
  Size: number;
  SharedSize: number;
  /** Removed in API v1.44; older clients still read it. */
  VirtualSize: number;
  Labels: Record<string, string>;
  Containers: number;
}

/** Unix seconds of an ISO time (Docker's zero time, year 1, when unparseable). */
function unixSeconds(iso: string): number {
  const ms = Date.parse(iso);
  return Math.floor((Number.isNaN(ms) ? Date.parse('0001-01-01T00:00:00Z') : ms) / 1000);
}

/** GET /images/json item; `containers` is how many containers use the image (-1: not counted). */
export function dockerImageSummary(record: ImageRecord, containers = -1): DockerImageSummary {
  return {
    Id: record.id,
    ParentId: '',
    RepoTags: [...record.repoTags],
    RepoDigests: [],
    Created: unixSeconds(record.created),
    Size: record.size,
    SharedSize: -1,
    VirtualSize: record.size,
    Labels: { ...(record.config.Labels ?? {}) },
    Containers: containers,
  };
}

/** GET /images/{name}/json body. */
export function dockerImageInspect(record: ImageRecord): Record<string, unknown> {
  const config = record.config;
  return {
    Id: record.id,
    RepoTags: [...record.repoTags],
    RepoDigests: [],
    Parent: '',
    Comment: record.comment ?? '',
    Created: record.created,
    DockerVersion: record.dockerVersion ?? '',
    Author: record.author ?? '',
    // Docker fills the fields an image config may leave out with their zero values.
    Config: {
      User: '',
      Env: null,
      Cmd: null,
      Entrypoint: null,
      WorkingDir: '',
      Volumes: null,
      OnBuild: null,
      Labels: null,
      ...config,
    },
    Architecture: record.architecture,
    ...(record.variant !== undefined ? { Variant: record.variant } : {}),
    Os: record.os,
    ...(record.osVersion !== undefined ? { OsVersion: record.osVersion } : {}),
    Size: record.size,
    VirtualSize: record.size,
    // The root disk is the top of a qcow2 chain, one delta per layer (layer-store.ts).
    GraphDriver: {
      Name: record.layers.length ? 'tether-qcow2-chain' : 'tether-ext4',
      Data: { RootDisk: record.rootDisk, LayerCount: String(record.layers.length) },
    },
    RootFS: { Type: 'layers', Layers: [...record.diffIds] },
    Metadata: { LastTagTime: record.lastTagTime ?? '0001-01-01T00:00:00Z' },
  };
}

/** DELETE /images/{name} body from ImageStore.remove()'s lines. */
export function dockerImageDeleteResponse(
  lines: readonly string[],
): Array<{ Untagged: string } | { Deleted: string }> {
  return lines.map((line) =>
    line.startsWith('Untagged: ')
      ? { Untagged: line.slice('Untagged: '.length) }
      : { Deleted: line.slice('Deleted: '.length) },
  );
}
