/**
 * Docker's image endpoints over the image store: load (a `docker save` or OCI tarball), pull (from a
 * registry, images/registry/), list, inspect, tag, remove.
 */
import { join } from 'node:path';
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
import {
  errorMessage,
  layerLabel,
  parseInsecureList,
  parsePullReference,
  progressText,
  parseRegistryAuthHeader,
  Puller,
  referenceText,
  type PullMessage,
} from '../../images/registry/index.ts';
import type { Router } from '../http/router.ts';
import { parseFilters } from './containers.ts';

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
      const result = await images.load(ctx.req as Readable, (message, layer) => {
        if (quiet) return;
        // Docker's per-layer line (the CLI draws it as a bar); other steps as text.
        if (!layer) line({ stream: `${message}\n` });
        else if (layer.state !== 'exists') {
          const total = layer.bytes ?? 0;
          const current = layer.state === 'built' ? total : 0;
          line({
            status: 'Loading layer',
            id: layerLabel(layer.diffId),
            progressDetail: { current, total },
            progress: progressText(current, total),
          });
        }
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

  router.add('GET', '/images/json', (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    const dangling = filters.get('dangling')?.[0];
    const references = filters.get('reference');
    let list = images.list();
    if (dangling !== undefined)
      list = list.filter((image) => (image.repoTags.length === 0) === isTrue(dangling));
    // As Docker's daemon: an image shows with the tags the reference filter matched, and only then.
    if (references)
      list = list
        .map((image) => ({
          ...image,
          repoTags: image.repoTags.filter((tag) =>
            references.some((pattern) => referenceMatches(tag, pattern)),
          ),
        }))
        .filter((image) => image.repoTags.length > 0);
    const users = (id: string): number => manager.list().filter((c) => c.record.imageId === id).length;
    ctx.send(
      200,
      list.map((image) => dockerImageSummary(image, users(image.id))),
    );
  });

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

  // Downloads land under the store's tmp/, which the store empties when it opens: a crash leaves nothing.
  const puller = new Puller(images, {
    workRoot: join(images.directory, 'tmp'),
    insecure: parseInsecureList(process.env['TETHER_INSECURE_REGISTRIES']),
  });

  router.add('POST', '/images/create', async (ctx) => {
    if (ctx.query.get('fromSrc'))
      throw new TetherError(
        'TETHER_INVALID_PARAMETER',
        'tetherd does not import root filesystem tarballs (docker import); load an image with `docker load -i FILE` or pull one',
      );
    const from = ctx.query.get('fromImage') ?? '';
    if (from === '')
      throw new TetherError('TETHER_INVALID_PARAMETER', 'fromImage (the image to pull) is required');
    const platform = ctx.query.get('platform') ?? '';
    if (platform !== '' && !/^linux\/amd64(?:\/v[12])?$/.test(platform))
      throw new TetherError(
        'TETHER_IMAGE_UNSUPPORTED',
        `tetherd pulls linux/amd64 images only, not ${platform}`,
      );
    const reference = parsePullReference(from, ctx.query.get('tag') ?? '');
    const header = ctx.req.headers['x-registry-auth'];
    const credentials = parseRegistryAuthHeader(Array.isArray(header) ? header[0] : header);
    // Docker cancels a pull whose client went away (ctrl-c on docker pull).
    const cancel = new AbortController();
    void ctx.closed.then(() => cancel.abort(new Error('the client went away')));
    let out: ReturnType<typeof ctx.stream> | undefined;
    const line = (value: PullMessage): void => {
      out ??= ctx.stream(200, 'application/json');
      out.write(JSON.stringify(value) + '\r\n');
    };
    try {
      const result = await puller.pull({ reference, credentials, emit: line, signal: cancel.signal });
      if (!result.upToDate) events.publish('image', 'pull', result.id, { name: referenceText(reference) });
      out?.end();
    } catch (error) {
      ctx.log.warn({ err: describeError(error), image: referenceText(reference) }, 'image pull failed');
      // Before any output the status says it (404 for a missing image, as Docker); after, the stream does.
      if (!out) throw error;
      const message = error instanceof TetherError ? error.message : describeError(error);
      line(errorMessage(message));
      out.end();
    }
  });

  // docker image prune [-a]: untagged images (all images with dangling=false) that no container uses.
  router.add('POST', '/images/prune', (ctx) => {
    const filters = parseFilters(ctx.query.get('filters'));
    const all = filters.has('dangling') && !isTrue(filters.get('dangling')![0]!);
    const before = images.layers.bytes();
    const deleted: string[] = [];
    for (const image of images.list()) {
      if ((!all && image.repoTags.length > 0) || inUse(image.id)) continue;
      deleted.push(...images.remove(image.id, { force: true, isInUse: inUse }));
      events.publish('image', 'delete', image.id, { name: image.repoTags[0] ?? image.id });
    }
    ctx.send(200, {
      ImagesDeleted: dockerImageDeleteResponse(deleted),
      SpaceReclaimed: before - images.layers.bytes(),
    });
  });
}

const isTrue = (value: string): boolean => value === 'true' || value === '1';

/** Docker's `reference` filter: `name`, `name:tag`, with `*` globs. */
function referenceMatches(repoTag: string, pattern: string): boolean {
  const glob = (text: string): RegExp =>
    new RegExp(`^${text.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replaceAll('*', '[^/]*')}$`);
  const target = pattern.includes(':') ? repoTag : repoTag.slice(0, repoTag.lastIndexOf(':'));
  return glob(pattern).test(target);
}
