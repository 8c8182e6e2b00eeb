/**
 * Plugin settings: each plugin declares a schema; experiment files are validated against it before
 * anything runs, and every value a trial used is written next to its result (nnU-Net's "plans are data").
 */

export type FieldType =
  | 'number'
  | 'integer'
  | 'boolean'
  | 'string'
  | 'enum'
  /** A byte count: a number or a string such as '16GiB', '512MB'. */
  | 'bytes'
  /** A spatial size: one integer (a cube edge) or [D, H, W]. */
  | 'shape3'
  | 'number[]'
  | 'string[]'
  /** Free-form value (an object), checked by the plugin itself. */
  | 'object';

export interface FieldSpec {
  type: FieldType;
  description: string;
  default?: unknown;
  /** Allowed values for 'enum'. */
  values?: readonly string[];
  min?: number;
  max?: number;
  required?: boolean;
}

export type SettingsSchema = Record<string, FieldSpec>;
/** Settings as an experiment file gives them (checked against a schema by `resolveSettings`). */
export type Settings = Record<string, unknown>;

/** The value a field holds once resolved (bytes parsed to a number, a shape expanded to [D, H, W]). */
export type FieldValue<F extends FieldSpec> = F['type'] extends 'number' | 'integer' | 'bytes'
  ? number
  : F['type'] extends 'boolean'
    ? boolean
    : F['type'] extends 'string'
      ? string
      : F['type'] extends 'enum'
        ? F extends { values: readonly (infer V)[] }
          ? V
          : string
        : F['type'] extends 'shape3'
          ? [number, number, number]
          : F['type'] extends 'number[]'
            ? number[]
            : F['type'] extends 'string[]'
              ? string[]
              : F['type'] extends 'object'
                ? Record<string, unknown>
                : never;

/** Whether a resolved field always has a value: it is required or has a default. */
type AlwaysSet<F> = F extends { required: true } ? true : F extends { default: unknown } ? true : false;

/**
 * The resolved settings of a schema, field by field: a field with a default or `required` is always
 * present, any other may be absent. A plugin's settings type is this of its schema: each field is
 * declared once, in the schema.
 */
export type SettingsOf<S extends SettingsSchema> = {
  -readonly [K in keyof S as AlwaysSet<S[K]> extends true ? K : never]: FieldValue<S[K]>;
} & {
  -readonly [K in keyof S as AlwaysSet<S[K]> extends true ? never : K]?: FieldValue<S[K]>;
};

/** Declares a settings schema, keeping its literal types (enum values, defaults) for `SettingsOf`. */
export function defineSettings<const S extends SettingsSchema>(schema: S): S {
  return schema;
}

/** A settings problem: `path` is the dotted field path, e.g. `strategy.settings.patchSize`. */
export class SettingsError extends Error {
  constructor(
    readonly path: string,
    readonly problem: string,
  ) {
    super(`${path}: ${problem}`);
    this.name = 'SettingsError';
  }
}

const UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/** Parses '16GiB', '512 MB', '1e9' or a number into bytes; throws a message naming the value otherwise. */
export function parseBytes(value: unknown, path = 'value'): number {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value;
  if (typeof value === 'string') {
    const m = /^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$/i.exec(value);
    if (m) {
      const unit = (m[2] || 'b').toLowerCase();
      if (unit in UNITS) return Math.round(parseFloat(m[1]!) * UNITS[unit]!);
    }
  }
  throw new SettingsError(path, `expected a byte size such as 16GiB, 512MB or 1000000, got ${JSON.stringify(value)}`);
}

/** Formats bytes with a binary unit, e.g. 1.50 GiB. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(2)} ${units[i]}`;
}

export function toShape3(value: unknown, path = 'value'): [number, number, number] {
  const ok = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n > 0;
  if (ok(value)) return [value, value, value];
  if (Array.isArray(value) && value.length === 3 && value.every(ok)) return [value[0], value[1], value[2]];
  throw new SettingsError(path, `expected a positive integer edge or [D, H, W], got ${JSON.stringify(value)}`);
}

function describeType(spec: FieldSpec): string {
  if (spec.type === 'enum') return `one of ${spec.values?.map((v) => JSON.stringify(v)).join(', ')}`;
  if (spec.type === 'shape3') return 'a positive integer edge or [D, H, W]';
  if (spec.type === 'bytes') return 'a byte size such as 16GiB';
  return `a value of type ${spec.type}`;
}

/** Checks one value against its spec and returns it normalised (bytes parsed, shapes expanded). */
export function checkField(spec: FieldSpec, value: unknown, path: string): unknown {
  const fail = (): never => {
    throw new SettingsError(path, `expected ${describeType(spec)}, got ${JSON.stringify(value)}`);
  };
  let out: unknown = value;
  switch (spec.type) {
    case 'number':
      if (typeof value !== 'number' || !Number.isFinite(value)) fail();
      break;
    case 'integer':
      if (typeof value !== 'number' || !Number.isInteger(value)) fail();
      break;
    case 'boolean':
      if (typeof value !== 'boolean') fail();
      break;
    case 'string':
      if (typeof value !== 'string') fail();
      break;
    case 'enum':
      if (typeof value !== 'string' || !spec.values?.includes(value)) fail();
      break;
    case 'bytes':
      out = parseBytes(value, path);
      break;
    case 'shape3':
      out = toShape3(value, path);
      break;
    case 'number[]':
      if (!Array.isArray(value) || !value.every((v) => typeof v === 'number' && Number.isFinite(v))) fail();
      break;
    case 'string[]':
      if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) fail();
      break;
    case 'object':
      if (value === null || typeof value !== 'object' || Array.isArray(value)) fail();
      break;
  }
  if (typeof out === 'number') {
    if (spec.min !== undefined && out < spec.min) throw new SettingsError(path, `must be ≥ ${spec.min}, got ${out}`);
    if (spec.max !== undefined && out > spec.max) throw new SettingsError(path, `must be ≤ ${spec.max}, got ${out}`);
  }
  return out;
}

/**
 * Validates `given` against `schema` and fills defaults. Unknown fields are errors (a typo must never be
 * silently ignored): the message lists the known fields.
 */
export function resolveSettings<S extends SettingsSchema>(schema: S, given: Settings | undefined, path: string): SettingsOf<S> {
  const out: Settings = {};
  const input = given ?? {};
  for (const key of Object.keys(input)) {
    if (!Object.hasOwn(schema, key)) {
      const known = Object.keys(schema);
      throw new SettingsError(
        `${path}.${key}`,
        `unknown setting; known settings: ${known.length ? known.join(', ') : '(none)'}`,
      );
    }
  }
  for (const [key, spec] of Object.entries(schema)) {
    const value = input[key];
    if (value === undefined || value === null) {
      if (spec.required) throw new SettingsError(`${path}.${key}`, `is required: ${spec.description}`);
      if (spec.default !== undefined) out[key] = checkField(spec, spec.default, `${path}.${key}`);
      continue;
    }
    out[key] = checkField(spec, value, `${path}.${key}`);
  }
  // Every field was checked against its spec above: this is the one place the values get their types.
  return out as SettingsOf<S>;
}

/** A schema's defaults (every field that has one), resolved. */
export function defaultSettings<S extends SettingsSchema>(schema: S, path = 'defaults'): SettingsOf<S> {
  return resolveSettings(schema, {}, path);
}
