import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  dockerImageDeleteResponse,
  dockerImageInspect,
  dockerImageSummary,
} from '../../../../hostside/src/daemon/images/docker-json.ts';
import type { ImageRecord } from '../../../../hostside/src/daemon/images/image-store.ts';

const id = `sha256:${'ab'.repeat(32)}`;
const record: ImageRecord = {
  id,
  repoTags: ['busybox:latest'],
  created: '2024-05-01T12:00:00Z',
  size: 2_000_000,
  config: { Env: ['PATH=/bin'], Cmd: ['sh'], Labels: { a: 'b' }, ExposedPorts: { '80/tcp': {} } },
  architecture: 'amd64',
  os: 'linux',
  diffIds: [`sha256:${'cd'.repeat(32)}`],
  lastTagTime: '2026-01-01T00:00:00.000Z',
  rootDisk: '/var/lib/tether/images/layers/cdcd/layer.qcow2',
  layers: [`sha256:${'cd'.repeat(32)}`],
};

void describe('Docker Engine API image shapes', () => {
  void it('GET /images/json item', () => {
    assert.deepEqual(dockerImageSummary(record), {
      Id: id,
      ParentId: '',
      RepoTags: ['busybox:latest'],
      RepoDigests: [],
      Created: Date.parse('2024-05-01T12:00:00Z') / 1000,
      Size: 2_000_000,
      SharedSize: -1,
      VirtualSize: 2_000_000,
      Labels: { a: 'b' },
      Containers: -1,
    });
    assert.equal(dockerImageSummary({ ...record, created: '0001-01-01T00:00:00Z' }, 3).Created, -62135596800);
    assert.equal(dockerImageSummary(record, 3).Containers, 3);
  });

  void it('GET /images/{name}/json body, with the zero values Docker fills in', () => {
    const body = dockerImageInspect(record);
    assert.deepEqual(body, {
      Id: id,
      RepoTags: ['busybox:latest'],
      RepoDigests: [],
      Parent: '',
      Comment: '',
      Created: '2024-05-01T12:00:00Z',
      DockerVersion: '',
      Author: '',
      Config: {
        User: '',
        Env: ['PATH=/bin'],
        Cmd: ['sh'],
        Entrypoint: null,
        WorkingDir: '',
        Volumes: null,
        OnBuild: null,
        Labels: { a: 'b' },
        ExposedPorts: { '80/tcp': {} },
      },
      Architecture: 'amd64',
      Os: 'linux',
      Size: 2_000_000,
      VirtualSize: 2_000_000,
      GraphDriver: { Name: 'tether-qcow2-chain', Data: { RootDisk: record.rootDisk, LayerCount: '1' } },
      RootFS: { Type: 'layers', Layers: record.diffIds },
      Metadata: { LastTagTime: '2026-01-01T00:00:00.000Z' },
    });
    assert.equal(dockerImageInspect({ ...record, variant: 'v2' })['Variant'], 'v2');
  });

  void it('DELETE /images/{name} body from remove() lines', () => {
    assert.deepEqual(dockerImageDeleteResponse(['Untagged: busybox:latest', `Deleted: ${id}`]), [
      { Untagged: 'busybox:latest' },
      { Deleted: id },
    ]);
  });
});
