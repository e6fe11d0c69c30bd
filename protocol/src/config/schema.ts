/**
 * A small structural validator. Every problem is reported with the path of the field and what was
 * expected there, e.g. `process.argv[0]: expected a non-empty string, got 42`. All problems are
 * collected, not just the first, so one round trip fixes a config.
 */
export interface Problem {
  path: string;
  expected: string;
  got: string;
}

export type Check<T> = (value: unknown, path: string, problems: Problem[]) => T | undefined;

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value);
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${String(value)}`;
}

function fail(problems: Problem[], path: string, expected: string, value: unknown): undefined {
  problems.push({ path: path || '(root)', expected, got: describe(value) });
  return undefined;
}

export const string =
  (options: { nonEmpty?: boolean; pattern?: RegExp; patternName?: string } = {}): Check<string> =>
  (value, path, problems) => {
    const expected = options.patternName ?? (options.nonEmpty ? 'a non-empty string' : 'a string');
    if (typeof value !== 'string') return fail(problems, path, expected, value);
    if (options.nonEmpty && value.length === 0) return fail(problems, path, expected, value);
    if (options.pattern && !options.pattern.test(value)) return fail(problems, path, expected, value);
    return value;
  };

export const integer =
  (min: number, max: number): Check<number> =>
  (value, path, problems) => {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      return fail(problems, path, `an integer from ${min} to ${max}`, value);
    }
    return value;
  };

export const boolean: Check<boolean> = (value, path, problems) =>
  typeof value === 'boolean' ? value : fail(problems, path, 'true or false', value);

export const oneOf =
  <T extends string>(...choices: T[]): Check<T> =>
  (value, path, problems) =>
    typeof value === 'string' && (choices as string[]).includes(value)
      ? (value as T)
      : fail(problems, path, `one of ${choices.map((c) => JSON.stringify(c)).join(', ')}`, value);

export const arrayOf =
  <T>(item: Check<T>, options: { nonEmpty?: boolean } = {}): Check<T[]> =>
  (value, path, problems) => {
    if (!Array.isArray(value) || (options.nonEmpty && value.length === 0)) {
      return fail(problems, path, options.nonEmpty ? 'a non-empty array' : 'an array', value);
    }
    const out: T[] = [];
    let ok = true;
    value.forEach((element, index) => {
      const checked = item(element, `${path}[${index}]`, problems);
      if (checked === undefined) ok = false;
      else out.push(checked);
    });
    return ok ? out : undefined;
  };

type Field<T, O extends boolean> = { check: Check<T>; optional: O };
export const required = <T>(check: Check<T>): Field<T, false> => ({ check, optional: false });
export const optional = <T>(check: Check<T>): Field<T, true> => ({ check, optional: true });

type Shape = Record<string, Field<unknown, boolean>>;
type FieldValue<F> = F extends Field<infer T, boolean> ? T : never;
type Flatten<T> = { [K in keyof T]: T[K] };
type Built<S extends Shape> = Flatten<
  {
    [K in keyof S as S[K]['optional'] extends false ? K : never]: FieldValue<S[K]>;
  } & {
    [K in keyof S as S[K]['optional'] extends true ? K : never]?: FieldValue<S[K]>;
  }
>;

/** An object with exactly these fields: unknown fields are reported too, since they are usually typos. */
export const object =
  <S extends Shape>(shape: S): Check<Built<S>> =>
  (value, path, problems) => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      return fail(problems, path, 'an object', value);
    }
    const record = value as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    const before = problems.length;
    for (const [key, field] of Object.entries(shape)) {
      const fieldPath = path ? `${path}.${key}` : key;
      const fieldValue = record[key];
      if (fieldValue === undefined) {
        if (!field.optional) fail(problems, fieldPath, 'a value (this field is required)', undefined);
        continue;
      }
      const checked = field.check(fieldValue, fieldPath, problems);
      if (checked !== undefined) out[key] = checked;
    }
    for (const key of Object.keys(record)) {
      if (!(key in shape)) {
        problems.push({
          path: path ? `${path}.${key}` : key,
          expected: `no such field (known: ${Object.keys(shape).join(', ')})`,
          got: describe(record[key]),
        });
      }
    }
    return problems.length === before ? (out as Built<S>) : undefined;
  };
