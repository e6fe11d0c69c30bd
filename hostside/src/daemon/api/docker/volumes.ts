/**
 * Docker's volume endpoints, as far as tetherd has volumes: none yet (a container is a VM; named volumes
 * arrive with layered disks). Listing answers Docker's empty shape, so `docker volume ls`, docker-py's
 * volumes.list() and compose's checks work; a name is unknown (404) and creating one is refused saying why.
 */
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';
import type { Router } from '../http/router.ts';

const NOT_YET =
  'named volumes are not supported yet: a container is a VM and its files live in its root disk; volumes arrive with layered disks';

export function registerVolumeRoutes(router: Router): void {
  router.add('GET', '/volumes', (ctx) => ctx.send(200, { Volumes: [], Warnings: [] }));

  router.add('GET', '/volumes/{name}', (ctx) => {
    throw new TetherError('TETHER_NO_SUCH_VOLUME', `get ${ctx.params['name']!}: no such volume`);
  });

  router.add('DELETE', '/volumes/{name}', (ctx) => {
    throw new TetherError('TETHER_NO_SUCH_VOLUME', `get ${ctx.params['name']!}: no such volume`);
  });

  router.add('POST', '/volumes/create', () => {
    throw new TetherError('TETHER_INVALID_PARAMETER', NOT_YET);
  });

  router.add('POST', '/volumes/prune', (ctx) => ctx.send(200, { VolumesDeleted: [], SpaceReclaimed: 0 }));
}
