/**
 * Docker's image endpoints over the image store: load (a `docker save` or OCI tarball), list, inspect,
 * tag, remove. Pulls from a registry arrive with layered disks; until then a pull is refused saying so.
 */
import type { Readable } from 'node:stream';
import { describeError, TetherError } from '../../../../../protocol/src/errors/errors.ts';
import type { EventBus } from '../../containers/events.ts';
import type { ContainerManager } from '../../containers/manager.ts';
import {
  dockerImageDeleteResponse,
  dockerImageInspect,
  dockerImageSummary,
  type ImageStore,
} from '../../images/index.ts';
import type { Router } from '../http/router.ts';

export function registerImageRoutes(
  router: Router,
  images: ImageStore,
  manager: ContainerManager,
  events: EventBus,
): void {
  const inUse = (imageId: string): string | undefined => manager.imageInUse(imageId)?.id;

  router.add('POST', '/images/load', async (ctx) => {
    const quiet = ['1', 'true'].includes(ctx.query.get('quiet') ?? '');
    let out: ReturnType<typeof ctx.stream> | undefined;
    const line = (value: unknown): void => {
      out ??= ctx.stream(200, 'application/json');
      out.write(JSON.stringify(value) + '\r\n');
    };
    try {
      const result = await images.load(ctx.req as Readable, (message) => {
        if (!quiet) line({ stream: `${message}\n` });
      });
      for (const text of result.loaded) line({ stream: `${text}\n` });
      for (const image of result.images)
        events.publish('image', 'load', image.id, { name: image.repoTags[0] ?? image.id });
      out?.end();
    } catch (error) {
      ctx.log.warn({ err: describeError(error) }, 'image load refused');
      // Before any output the status says it; after progress lines, Docker's in-stream error does.
      if (!out) throw error;
      const message = error instanceof TetherError ? error.message : describeError(error);
      line({ errorDetail: { message }, error: message });
      out.end();
    }
  });

  router.add('GET', '/images/json', (ctx) =>
    ctx.send(
      200,
      images.list().map((image) => dockerImageSummary(image)),
    ),
  );

  router.add('GET', '/images/{name*}/json', (ctx) =>
    ctx.send(200, dockerImageInspect(images.resolve(ctx.params['name']!))),
  );

  router.add('POST', '/images/{name*}/tag', (ctx) => {
    const repo = ctx.query.get('repo');
    if (!repo) throw new TetherError('TETHER_INVALID_PARAMETER', 'repository name (repo) is required');
    const tag = ctx.query.get('tag') || 'latest';
    const image = images.resolve(ctx.params['name']!);
    images.tag(image.id, `${repo}:${tag}`);
    events.publish('image', 'tag', image.id, { name: `${repo}:${tag}` });
    ctx.send(201, '');
  });

  router.add('DELETE', '/images/{name*}', (ctx) => {
    const force = ['1', 'true'].includes(ctx.query.get('force') ?? '');
    const ref = ctx.params['name']!;
    const image = images.resolve(ref);
    const lines = images.remove(ref, { force, isInUse: inUse });
    const deleted = !images.list().some((i) => i.id === image.id);
    events.publish('image', deleted ? 'delete' : 'untag', image.id, { name: ref });
    ctx.send(200, dockerImageDeleteResponse(lines));
  });

  router.add('POST', '/images/create', (ctx) => {
    const from = ctx.query.get('fromImage') ?? '';
    throw new TetherError(
      'TETHER_NO_SUCH_IMAGE',
      `pull access denied for ${from}: tetherd does not pull from registries yet; load the image with \`docker save IMAGE | docker -H ... load\` or \`docker load -i FILE\``,
    );
  });

  router.add('POST', '/images/prune', (ctx) => ctx.send(200, { ImagesDeleted: [], SpaceReclaimed: 0 }));
}
