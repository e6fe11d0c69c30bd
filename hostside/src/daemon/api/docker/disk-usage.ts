/**
 * GET /system/df (`docker system df [-v]`): what images, containers and volumes take on the host's disk.
 * Sizes here are bytes allocated on the host, not the unpacked size `docker images` shows: a layer shared
 * by several images is stored once, which is what SharedSize counts (Docker's meaning: the part of an image
 * that other images have too), and LayersSize is what all layers take once each. The sum of the images'
 * sizes less LayersSize is what sharing saves.
 */
import type { ContainerManager } from '../../containers/manager.ts';
import { dockerImageSummary } from '../../images/docker-json.ts';
import type { ImageStore } from '../../images/image-store.ts';
import type { VolumeStore } from '../../volumes/volume-store.ts';
import type { Router } from '../http/router.ts';
import { containerSummary } from './container-json.ts';
import { volumeJson } from './volumes.ts';

export interface DiskUsageDeps {
  images: ImageStore;
  volumes: VolumeStore;
  manager: ContainerManager;
}

export function registerDiskUsageRoute(router: Router, deps: DiskUsageDeps): void {
  const { images, volumes, manager } = deps;
  router.add('GET', '/system/df', (ctx) => {
    const layers = images.layers;
    const list = images.list();
    const holders = new Map<string, number>();
    for (const image of list)
      for (const chainId of image.layers) holders.set(chainId, (holders.get(chainId) ?? 0) + 1);
    const containers = manager.list();
    const now = Date.now();
    ctx.send(200, {
      LayersSize: layers.bytes(),
      Images: list.map((image) => {
        const size = image.layers.length ? layers.bytes(image.layers) : image.size;
        const shared = layers.bytes(image.layers.filter((id) => (holders.get(id) ?? 0) > 1));
        const users = containers.filter((c) => c.record.imageId === image.id).length;
        return { ...dockerImageSummary(image, users), Size: size, SharedSize: shared, VirtualSize: size };
      }),
      Containers: containers.map((container) => {
        const own = manager.driver.rootLayerBytes?.(container.dir) ?? 0;
        const image = list.find((candidate) => candidate.id === container.record.imageId);
        const base = image ? layers.bytes(image.layers) : 0;
        return { ...containerSummary(container, now), SizeRw: own, SizeRootFs: own + base };
      }),
      Volumes: volumes.list().map((volume) =>
        volumeJson(volumes, volume, {
          size: volumes.diskBytes(volume.name),
          refs: manager.volumeUsers(volume.name).length,
        }),
      ),
      BuildCache: [],
    });
  });
}
