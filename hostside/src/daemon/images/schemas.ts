/**
 * The JSON documents of an image archive, as valibot schemas: `docker save`'s manifest.json, the image
 * config (Docker's and the OCI image spec's are the same document), and the OCI image layout's index.json
 * and manifests. Unknown fields are kept (loose objects): the config is stored as it came.
 */
import * as v from 'valibot';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';

const Digest = v.pipe(v.string(), v.regex(/^sha256:[0-9a-f]{64}$/, 'expected a sha256:<64 hex> digest'));
const StringList = v.nullish(v.array(v.string()));
const StringMap = v.nullish(v.record(v.string(), v.string()));
const ObjectMap = v.nullish(v.record(v.string(), v.unknown()));

/** `docker save` manifest.json: one item per image. */
export const DockerManifest = v.array(
  v.looseObject({
    Config: v.string(),
    RepoTags: StringList,
    Layers: v.array(v.string()),
  }),
);
export type DockerManifest = v.InferOutput<typeof DockerManifest>;

/** The config's `config` object (what a container inherits), in Docker's capitalised field names. */
export const ContainerDefaults = v.looseObject({
  Env: StringList,
  Cmd: StringList,
  Entrypoint: StringList,
  WorkingDir: v.nullish(v.string()),
  User: v.nullish(v.string()),
  ExposedPorts: ObjectMap,
  Volumes: ObjectMap,
  Labels: StringMap,
  StopSignal: v.nullish(v.string()),
});

export const ImageConfigDocument = v.looseObject({
  architecture: v.string(),
  os: v.string(),
  'os.version': v.optional(v.string()),
  variant: v.optional(v.string()),
  created: v.optional(v.string()),
  author: v.optional(v.string()),
  comment: v.optional(v.string()),
  docker_version: v.optional(v.string()),
  config: v.nullish(ContainerDefaults),
  rootfs: v.looseObject({ type: v.literal('layers'), diff_ids: v.array(Digest) }),
  history: v.optional(v.array(v.looseObject({}))),
});
export type ImageConfigDocument = v.InferOutput<typeof ImageConfigDocument>;

export const Descriptor = v.looseObject({
  mediaType: v.string(),
  digest: Digest,
  size: v.pipe(v.number(), v.integer(), v.minValue(0)),
  platform: v.optional(
    v.looseObject({ architecture: v.string(), os: v.string(), variant: v.optional(v.string()) }),
  ),
  annotations: v.optional(v.record(v.string(), v.string())),
});
export type Descriptor = v.InferOutput<typeof Descriptor>;

/** OCI index.json, or an image index / Docker manifest list inside blobs/. */
export const OciIndex = v.looseObject({
  schemaVersion: v.literal(2),
  mediaType: v.optional(v.string()),
  manifests: v.array(Descriptor),
});

export const OciManifest = v.looseObject({
  schemaVersion: v.literal(2),
  mediaType: v.optional(v.string()),
  config: Descriptor,
  layers: v.array(Descriptor),
});

/** Parses `bytes` as JSON of `schema`, or TETHER_IMAGE_INVALID naming `what` and every bad field. */
export function parseDocument<S extends v.GenericSchema>(
  schema: S,
  bytes: Buffer,
  what: string,
): v.InferOutput<S> {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8')) as unknown;
  } catch (error) {
    throw new TetherError('TETHER_IMAGE_INVALID', `${what} is not valid JSON: ${(error as Error).message}`);
  }
  const result = v.safeParse(schema, value);
  if (result.success) return result.output;
  const problems = result.issues.map((issue) => `${v.getDotPath(issue) ?? '(top)'}: ${issue.message}`);
  throw new TetherError('TETHER_IMAGE_INVALID', `${what} is malformed: ${problems.join('; ')}`);
}
