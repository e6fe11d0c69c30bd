/**
 * The request bodies tetherd accepts, as valibot schemas: unknown fields are ignored (clients send many we
 * have no use for), known ones must have the right type, and a bad one is refused naming its path.
 */
import * as v from 'valibot';
import { TetherError } from '../../../../../protocol/src/errors/errors.ts';

const stringList = v.nullish(v.union([v.array(v.string()), v.string()]));
const stringMap = v.nullish(v.record(v.string(), v.string()));

const portBindingSchema = v.nullish(
  v.array(v.looseObject({ HostIp: v.nullish(v.string()), HostPort: v.nullish(v.string()) })),
);

export const createContainerSchema = v.looseObject({
  Hostname: v.nullish(v.string()),
  User: v.nullish(v.string()),
  AttachStdin: v.nullish(v.boolean()),
  AttachStdout: v.nullish(v.boolean()),
  AttachStderr: v.nullish(v.boolean()),
  Tty: v.nullish(v.boolean()),
  OpenStdin: v.nullish(v.boolean()),
  StdinOnce: v.nullish(v.boolean()),
  Env: v.nullish(v.array(v.string())),
  Cmd: stringList,
  Entrypoint: stringList,
  Image: v.pipe(v.string(), v.minLength(1, 'an image is required')),
  Labels: stringMap,
  WorkingDir: v.nullish(v.string()),
  ExposedPorts: v.nullish(v.record(v.string(), v.unknown())),
  StopSignal: v.nullish(v.string()),
  StopTimeout: v.nullish(v.pipe(v.number(), v.integer(), v.minValue(0))),
  Volumes: v.nullish(v.record(v.string(), v.unknown())),
  HostConfig: v.nullish(
    v.looseObject({
      AutoRemove: v.nullish(v.boolean()),
      Memory: v.nullish(v.pipe(v.number(), v.integer(), v.minValue(0))),
      PortBindings: v.nullish(v.record(v.string(), portBindingSchema)),
      PublishAllPorts: v.nullish(v.boolean()),
      Binds: v.nullish(v.array(v.string())),
      Mounts: v.nullish(v.array(v.unknown())),
      Tmpfs: v.nullish(v.record(v.string(), v.string())),
      NetworkMode: v.nullish(v.string()),
      LogConfig: v.nullish(
        v.looseObject({ Type: v.nullish(v.string()), Config: v.nullish(v.record(v.string(), v.string())) }),
      ),
      RestartPolicy: v.nullish(
        v.looseObject({
          Name: v.nullish(v.picklist(['', 'no', 'always', 'on-failure', 'unless-stopped'])),
        }),
      ),
      Privileged: v.nullish(v.boolean()),
      Init: v.nullish(v.boolean()),
      // -1 or 0 mean "no limit" to Docker; a VM keeps the agent's default then.
      PidsLimit: v.nullish(v.pipe(v.number(), v.integer(), v.minValue(-1))),
    }),
  ),
});

export type CreateContainerBody = v.InferOutput<typeof createContainerSchema>;

export const execCreateSchema = v.looseObject({
  AttachStdin: v.nullish(v.boolean()),
  AttachStdout: v.nullish(v.boolean()),
  AttachStderr: v.nullish(v.boolean()),
  DetachKeys: v.nullish(v.string()),
  Tty: v.nullish(v.boolean()),
  Env: v.nullish(v.array(v.string())),
  Cmd: v.pipe(v.array(v.string()), v.minLength(1, 'No exec command specified')),
  User: v.nullish(v.string()),
  WorkingDir: v.nullish(v.string()),
  Privileged: v.nullish(v.boolean()),
  ConsoleSize: v.nullish(v.array(v.number())),
});

export const execStartSchema = v.looseObject({
  Detach: v.nullish(v.boolean()),
  Tty: v.nullish(v.boolean()),
  ConsoleSize: v.nullish(v.array(v.number())),
});

export const networkCreateSchema = v.looseObject({
  Name: v.pipe(v.string(), v.minLength(1, 'a network name is required')),
  Driver: v.nullish(v.string()),
  Labels: stringMap,
  Internal: v.nullish(v.boolean()),
  Attachable: v.nullish(v.boolean()),
});

/** Validates `value`; throws TETHER_INVALID_PARAMETER naming each bad field. */
export function parseBody<S extends v.GenericSchema>(
  schema: S,
  value: unknown,
  what: string,
): v.InferOutput<S> {
  const result = v.safeParse(schema, value);
  if (result.success) return result.output;
  const problems = result.issues.map((issue) => {
    const path = issue.path?.map((item) => String(item.key)).join('.') ?? '(body)';
    return `${path}: ${issue.message}`;
  });
  throw new TetherError('TETHER_INVALID_PARAMETER', `invalid ${what}: ${problems.join('; ')}`);
}

/** Docker accepts Cmd/Entrypoint as a list or a single string (one argv word, as its StrSlice does). */
export function commandList(value: string[] | string | null | undefined): string[] | undefined {
  if (value === null || value === undefined) return undefined;
  return typeof value === 'string' ? [value] : value;
}
