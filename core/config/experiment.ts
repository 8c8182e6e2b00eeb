/**
 * Experiment files: reading, checking and expanding them into trials.
 *
 * An experiment is one YAML file in `experiments/`, named after the experiment:
 *
 * ```yaml
 * name: brats-swap-vs-patch            # must equal the file name without .yaml
 * description: Full volume vs patches on synthetic BraTS.
 * dataset:
 *   name: synthetic-brats               # a registered dataset plugin
 *   settings: { cases: 8, size: 32 }    # checked against the plugin's settings schema
 * architecture:
 *   name: unet3d
 *   settings: { baseFilters: 8, depth: 4 }
 * strategy:
 *   name: full-volume                   # default strategy if no axis sets it
 *   settings: {}
 * training:                             # framework-level fields, see TRAINING_SCHEMA
 *   epochs: 10
 *   stepsPerEpoch: 8
 *   learningRate: 0.001
 *   loss: dice+ce
 *   validationFraction: 0.25
 *   deviceMemory: 16GiB                 # optional budget
 *   backend: cpu                        # auto | cpu | tensorflow | tensorflow-gpu | webgpu
 * axes:                                 # the runner expands the product of these into trials
 *   strategy:                           # a whole plugin choice per value
 *     - { name: full-volume }
 *     - { name: patch, settings: { patchSize: 16 } }
 *   seed: [1, 2, 3]
 *   dataset.settings.size: [32, 48]     # or any dotted path into the trial config
 * profiles:                             # named sets of overrides, e.g. --profile paper
 *   paper:
 *     training.epochs: 100
 *     axes.dataset.settings.size: [96, 192]     # a path may also reach into the axes
 *     axes.strategy.1.settings.patchSize: 128   # list entries by index
 * ```
 *
 * Top-level fields (anything else is an error):
 * - `name` (required): the experiment's name; must equal the file name without `.yaml`.
 * - `description` (required): one line saying what the experiment compares.
 * - `dataset`, `architecture`, `strategy`: a plugin choice `{ name, settings? }`. `name` must be a
 *   registered plugin of that kind; `settings` is checked against that plugin's settings schema and
 *   completed with its defaults. A section may be left out only when an axis of the same name supplies it.
 * - `training` (optional): framework-level fields, checked against TRAINING_SCHEMA (below).
 * - `axes` (optional): a mapping of axis → non-empty list of values. An axis is
 *   - `dataset`, `architecture` or `strategy`: each value is a whole plugin choice `{ name, settings? }`,
 *     which replaces the top-level section (the two are not merged);
 *   - `seed`: each value is an integer, the trial seed (the same field as `training.seed`);
 *   - a dotted path into the trial config: `training.<field>`, `<plugin>.name`,
 *     `<plugin>.settings.<field>` (e.g. `training.learningRate`, `dataset.settings.size`).
 *   Trials are the Cartesian product of the axes, in the order the axes are written (the first axis
 *   varies slowest). Values of one axis must all differ. Within a trial, whole-choice axes apply before
 *   paths into them, so `strategy` and `strategy.settings.patchSize` can be combined in either order.
 * - `profiles` (optional): a mapping of profile name → mapping of dotted path → value, applied with
 *   `--profile NAME` before the trials are expanded. A path may reach into the axes
 *   (`axes.seed`, `axes.strategy.1.settings.patchSize`: list entries are addressed by index).
 *
 * Command-line overrides (`--set path=value`, value read as YAML: `2`, `16GiB`, `[32,32,32]`,
 * `{name: patch}`; an empty value resets a field to its default) apply after the profile and use the same
 * paths; `axes.seed=[1]` replaces that axis, `axes.training.epochs=[1,2]` adds one. A profile entry or
 * override that could not change any trial is an error, not a silent no-op: with an axis
 * `dataset.settings.size`, set `axes.dataset.settings.size`, not `dataset.settings.size`.
 *
 * Everything is checked before anything runs: the file, the profile, the overrides and every trial of the
 * expansion. Errors name the file, the line:column of the offending node (for a missing field: its parent),
 * the dotted field, what is wrong and what to do, and say when a value came from the profile or `--set`.
 *
 * A trial's config: `{ experiment, trial, label, axes, dataset, architecture, strategy, training, seed }`,
 * every plugin's settings resolved through its schema, `seed` equal to `training.seed`, `label` such as
 * `strategy=patch seed=2 dataset.settings.size=48` (an experiment without axes has one trial, `default`).
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, relative, resolve, isAbsolute, dirname } from 'node:path';
import { LineCounter, parseDocument, isAlias, isMap, isScalar, isSeq } from 'yaml';
import type { Document, Node as YamlNode } from 'yaml';
import { checkField, defineSettings, resolveSettings, SettingsError } from './settings.js';
import type { Settings, SettingsOf, SettingsSchema } from './settings.js';
import type { PluginKind } from '../types.js';
import { parseReference, selects, type ComparedAxis } from './reference.js';

// ---------------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------------

/** The part of the plugin registry the loader needs. */
export interface PluginCatalogView {
  get(kind: PluginKind, name: string): { readonly settings: SettingsSchema };
  names(kind: PluginKind): string[];
}

export interface PluginChoice {
  name: string;
  settings: Settings;
}

export interface TrialConfig {
  experiment: string;
  /** 0-based index in the expansion. */
  trial: number;
  /** e.g. `strategy=patch seed=2 dataset.settings.size=48`; `default` when the experiment has no axes. */
  label: string;
  /** Axis → the value this trial takes, as written in the file (after profile and overrides). */
  axes: Record<string, unknown>;
  dataset: PluginChoice;
  architecture: PluginChoice;
  strategy: PluginChoice;
  /** Resolved against TRAINING_SCHEMA: every field present except unset optional ones. */
  training: TrainingSettings;
  /** The trial seed (= training.seed). */
  seed: number;
}

export interface Experiment {
  name: string;
  description: string;
  /** Absolute path of the experiment file. */
  file: string;
  profile?: string;
  trials: TrialConfig[];
  /** How the summary compares strategies (defaults filled; `reference` always set). */
  comparison: ComparisonSettings & { reference: string };
  /** The experiment as plain data after the profile and overrides were applied (what trials came from). */
  raw: unknown;
}

export interface LoadOptions {
  /** A profile of the file's `profiles`, applied first. */
  profile?: string;
  /** `path=value` texts (`--set`), applied after the profile, in order. */
  overrides?: string[];
}

/**
 * A problem with an experiment, located for a person to fix. `file` is the path as shown (relative to the
 * working directory when inside it; empty for a command-line value checked on its own), `line`/`column`
 * are 1-based, `field` is the dotted path of the offending field.
 */
export class ExperimentError extends Error {
  readonly file: string;
  readonly line?: number;
  readonly column?: number;
  readonly field?: string;
  /** What is wrong and what to do, without the location. */
  readonly problem: string;

  constructor(init: {
    file: string;
    line?: number;
    column?: number;
    field?: string;
    problem: string;
    /** e.g. ` (from --set training.epochs=ten)`. */
    note?: string;
    /** Source excerpt shown under the message. */
    excerpt?: string;
  }) {
    const where = init.file && init.line !== undefined ? `${init.file}:${init.line}:${init.column ?? 1}` : init.file;
    const head = [where, init.field].filter((s) => s).join(': ');
    const text = `${head ? `${head}: ` : ''}${init.problem}${init.note ?? ''}`;
    super(init.excerpt ? `${text}\n${init.excerpt}` : text);
    this.name = 'ExperimentError';
    this.file = init.file;
    if (init.line !== undefined) this.line = init.line;
    if (init.column !== undefined) this.column = init.column;
    if (init.field !== undefined) this.field = init.field;
    this.problem = init.problem;
  }
}

/** Framework-level training fields (`training:` in an experiment). */
export const TRAINING_SCHEMA = defineSettings({
  epochs: { type: 'integer', min: 1, default: 10, description: 'passes over the training steps' },
  stepsPerEpoch: { type: 'integer', min: 1, default: 8, description: 'optimizer steps per epoch' },
  batchSize: { type: 'integer', min: 1, default: 1, description: 'training samples per step' },
  learningRate: { type: 'number', min: 0, default: 1e-3, description: 'Adam learning rate (> 0)' },
  loss: { type: 'enum', values: ['dice', 'dice+ce'], default: 'dice+ce', description: 'training loss' },
  validationFraction: {
    type: 'number',
    min: 0,
    max: 1,
    default: 0.25,
    description: 'fraction of the labelled cases held out for validation, strictly between 0 and 1',
  },
  maxValidationCases: {
    type: 'integer',
    min: 1,
    description: 'cap on the number of validation cases (all held-out cases when unset)',
  },
  splitSeed: {
    type: 'integer',
    min: 0,
    max: 2 ** 32 - 1,
    default: 0,
    description:
      'seed of the train/validation split, independent of the trial seed: every strategy and seed of a sweep trains and validates on the same cases (paired comparisons need this)',
  },
  budget: {
    type: 'enum',
    values: ['steps', 'voxels', 'seconds'],
    default: 'steps',
    description:
      "what is equal across a sweep's trials: 'steps' (epochs × stepsPerEpoch optimizer steps), 'voxels' (input voxels seen, budgetVoxels: a patch strategy takes more, smaller steps) or 'seconds' (training wall time, budgetSeconds; evaluation excluded)",
  },
  budgetVoxels: { type: 'number', min: 1, description: "with budget: voxels, the input voxels each trial trains on (it stops at the first step that reaches it)" },
  budgetSeconds: { type: 'number', min: 0, description: 'with budget: seconds, the training wall time of each trial (it stops at the first step that reaches it)' },
  curveEvery: {
    type: 'integer',
    min: 0,
    default: 0,
    description:
      'every N optimizer steps (and after the last), validate and write a row of curves.csv: Dice per region, loss, training time and voxels seen (0: no learning curve)',
  },
  curvePoints: {
    type: 'integer',
    min: 0,
    max: 1000,
    default: 0,
    description:
      "instead of curveEvery: validate at this many evenly spaced points of the trial's budget (steps, voxels seen or seconds), the last after training, so that strategies taking steps of different sizes get points at the same amounts of training (0: none)",
  },
  deviceMemory: { type: 'bytes', description: 'accelerator memory budget, e.g. 16GiB (unlimited when unset)' },
  optimizerInBackward: {
    type: 'boolean',
    default: true,
    description:
      "update each parameter inside backward as soon as its gradient is final, so parameter gradients never pile up (PyTorch's optimizer-in-backward; same arithmetic as updating after backward). No effect on memory with backward: tape",
  },
  backend: {
    type: 'enum',
    values: ['auto', 'cpu', 'tensorflow', 'tensorflow-gpu', 'webgpu'],
    default: 'cpu',
    description: 'tensor backend',
  },
  seed: {
    type: 'integer',
    min: 0,
    max: 2 ** 32 - 1,
    default: 1,
    description: 'trial seed (a 32-bit unsigned integer) when no `seed` axis sets it',
  },
  evaluate: { type: 'boolean', default: true, description: 'evaluate on the validation cases after training' },
  saveModel: { type: 'boolean', default: true, description: 'write the trained weights' },
  threshold: {
    type: 'number',
    min: 0,
    max: 1,
    default: 0.5,
    description: 'probability above which a sigmoid region output counts as foreground',
  },
});

/** The training fields of a trial, resolved (typed from TRAINING_SCHEMA). */
export type TrainingSettings = SettingsOf<typeof TRAINING_SCHEMA>;

/** How summary.md compares the strategies (`comparison:` in an experiment). */
export const COMPARISON_SCHEMA = defineSettings({
  axis: {
    type: 'enum',
    values: ['strategy', 'architecture', 'dataset'],
    default: 'strategy',
    description: "the plugin choice the configurations are compared along: 'strategy' (default), 'architecture' or 'dataset'",
  },
  reference: {
    type: 'string',
    description:
      "the value of comparison.axis the others are compared with, paired by seed and case: a plugin name, or a name with settings that single one configuration out, e.g. meunet-cascade(join=post-concat, contextRatio=1.5) (default: the sweep's first)",
  },
  target: {
    type: 'number',
    min: 0,
    max: 1,
    description: "the Dice of 'time to target' (default: the reference's final Dice, averaged over its seeds)",
  },
  metric: {
    type: 'string',
    default: 'mean',
    description: "the Dice that 'time to target' follows: 'mean' (over regions) or a region name such as WT",
  },
  confidence: { type: 'number', min: 0.5, max: 0.999, default: 0.95, description: 'level of the bootstrap confidence intervals' },
  resamples: { type: 'integer', min: 100, max: 1_000_000, default: 10_000, description: 'bootstrap resamples (a fixed seed: the same records give the same intervals)' },
});

export type ComparisonSettings = SettingsOf<typeof COMPARISON_SCHEMA>;

/** Refuses expansions that can only be a mistake (and would take forever to check). */
export const MAX_TRIALS = 10_000;

/**
 * Reads, checks and expands an experiment file. Throws ExperimentError for any problem, before anything
 * runs; every trial of the expansion is validated.
 */
export function loadExperiment(file: string, catalog: PluginCatalogView, options: LoadOptions = {}): Experiment {
  const absFile = resolve(file);
  const shown = displayPath(absFile);
  // Overrides are checked for form first: a malformed --set is reported even when the file has errors.
  const overrides = (options.overrides ?? []).map((o) => {
    try {
      return { text: o, ...parseOverride(o) };
    } catch (e) {
      if (e instanceof ExperimentError) throw new ExperimentError({ file: shown, problem: e.problem });
      throw e;
    }
  });
  const src = new Source(shown, readExperimentText(absFile, shown));

  const root = src.data;
  if (!isPlainObject(root)) {
    throw src.error([], 'value', undefined, `an experiment file is a mapping with ${TOP_LEVEL.join(', ')}; got ${describe(root)}`);
  }

  // Profiles are part of the file: check their shape before using one.
  const profiles = checkProfiles(src, root);
  if (options.profile !== undefined) {
    const names = Object.keys(profiles);
    const profile = Object.hasOwn(profiles, options.profile) ? profiles[options.profile] : undefined;
    if (!profile) {
      if (names.length) {
        const problem = `unknown profile ${JSON.stringify(options.profile)}${didYouMean(options.profile, names)}; profiles in this file: ${names.join(', ')}`;
        throw src.error(['profiles'], 'key', 'profiles', problem, ' (from --profile)');
      }
      throw new ExperimentError({
        file: shown,
        field: 'profiles',
        problem: `unknown profile ${JSON.stringify(options.profile)}: this experiment defines no profiles (add a \`profiles:\` section or drop --profile)`,
      });
    }
    for (const entry of profile.entries) {
      const origin: Origin = { kind: 'profile', profile: options.profile, keyNode: entry.keyNode, valueNode: entry.valueNode };
      const fail = (problem: string): never => {
        const { line, column } = src.position(entry.keyNode);
        throw new ExperimentError({
          file: shown,
          line,
          column,
          field: `profiles.${options.profile}.${entry.path}`,
          problem,
          excerpt: src.excerpt(line, column),
        });
      };
      applyPatch(src, root, entry.path, entry.value, origin, fail);
    }
  }
  for (const o of overrides) {
    const fail = (problem: string): never => {
      throw new ExperimentError({ file: shown, field: o.path, problem, note: ` (from --set ${o.text})` });
    };
    applyPatch(src, root, o.path, o.value, { kind: 'set', text: o.text }, fail);
  }

  const checked = checkTopLevel(src, root, catalog);
  checkNoDeadPatches(src, checked.axes);
  const trials = expandTrials(src, root, checked, catalog);
  const experiment: Experiment = {
    name: checked.name,
    description: checked.description,
    file: absFile,
    trials,
    comparison: checkComparison(src, root, trials),
    raw: root,
  };
  if (options.profile !== undefined) experiment.profile = options.profile;
  return experiment;
}

/**
 * The experiments in a folder, sorted by name, for `--list`: read without a plugin catalog, so `trials` is
 * the size of the default expansion (no profile), absent when the axes cannot be read. A file that cannot
 * be parsed is still listed, its description saying why.
 */
export function listExperiments(dir: string): { name: string; description: string; trials?: number; file: string }[] {
  const absDir = resolve(dir);
  let entries: string[];
  try {
    entries = readdirSync(absDir);
  } catch (e) {
    throw new ExperimentError({ file: displayPath(absDir), problem: `cannot list experiments: ${errnoText(e)}` });
  }
  const out: { name: string; description: string; trials?: number; file: string }[] = [];
  for (const entry of entries.filter((f) => f.endsWith('.yaml')).sort()) {
    const file = resolve(absDir, entry);
    const name = entry.slice(0, -'.yaml'.length);
    let text: string;
    try {
      if (!statSync(file).isFile()) continue;
      text = readFileSync(file, 'utf8');
    } catch (e) {
      out.push({ name, description: `(cannot be read: ${errnoText(e)})`, file });
      continue;
    }
    const doc = parseDocument(text, { prettyErrors: false });
    if (doc.errors.length) {
      out.push({ name, description: `(YAML syntax error: ${doc.errors[0]!.message})`, file });
      continue;
    }
    const data: unknown = doc.toJS();
    const description =
      isPlainObject(data) && typeof data.description === 'string' ? data.description : '(no description)';
    const item: { name: string; description: string; trials?: number; file: string } = { name, description, file };
    const axes = isPlainObject(data) ? data.axes : undefined;
    if (axes === undefined || axes === null) item.trials = 1;
    else if (isPlainObject(axes) && Object.values(axes).every((v) => Array.isArray(v) && v.length > 0)) {
      item.trials = Object.values(axes).reduce<number>((n, v) => n * (v as unknown[]).length, 1);
    }
    out.push(item);
  }
  return out;
}

/**
 * Parses one `--set` text: `path=value`, the value read as YAML (`2`, `0.5`, `true`, `16GiB`,
 * `[32,32,32]`, `{name: patch}`; nothing after `=` means null, i.e. back to the default).
 */
export function parseOverride(text: string): { path: string; value: unknown } {
  const form = 'expected the form path=value, e.g. training.epochs=2 or dataset.settings.size=[32,32,32]';
  const eq = text.indexOf('=');
  if (eq < 0) throw new ExperimentError({ file: '', problem: `--set ${JSON.stringify(text)}: ${form}` });
  const path = text.slice(0, eq).trim();
  if (!path) throw new ExperimentError({ file: '', problem: `--set ${JSON.stringify(text)}: the path is empty; ${form}` });
  if (path.split('.').some((s) => s.trim() === '' || s !== s.trim())) {
    throw new ExperimentError({
      file: '',
      problem: `--set ${JSON.stringify(text)}: ${JSON.stringify(path)} is not a dotted path (empty part or spaces); ${form}`,
    });
  }
  const doc = parseDocument(text.slice(eq + 1), { prettyErrors: false });
  if (doc.errors.length) {
    throw new ExperimentError({
      file: '',
      problem: `--set ${JSON.stringify(text)}: the value is not valid YAML (${doc.errors[0]!.message}); quote a string that contains YAML punctuation`,
    });
  }
  return { path, value: doc.toJS() };
}

// ---------------------------------------------------------------------------------------------------
// Source locations and provenance
// ---------------------------------------------------------------------------------------------------

type Seg = string | number;
type Path = Seg[];

type Origin =
  | { kind: 'profile'; profile: string; keyNode: YamlNode; valueNode: YamlNode | null }
  | { kind: 'set'; text: string };

/** Where a problem is: the node of the value itself, or the key that names it (also: the missing field's parent). */
type Role = 'value' | 'key';

const TOP_LEVEL = ['name', 'description', 'dataset', 'architecture', 'strategy', 'training', 'comparison', 'axes', 'profiles'];
const PLUGIN_SECTIONS = ['dataset', 'architecture', 'strategy'] as const;
type PluginSection = (typeof PLUGIN_SECTIONS)[number];

/**
 * The parsed file plus the record of what the profile and overrides changed, so that any path of the
 * effective config can be traced back to where its value was written.
 */
class Source {
  readonly doc: Document.Parsed;
  readonly data: unknown;
  private readonly lines: string[];
  private readonly counter = new LineCounter();
  /** Paths set by the profile or `--set`, in the order applied. */
  readonly patches: { path: Path; origin: Origin }[] = [];

  constructor(
    readonly file: string,
    text: string,
  ) {
    this.lines = text.split(/\r?\n/);
    this.doc = parseDocument(text, { lineCounter: this.counter, prettyErrors: false });
    const err = this.doc.errors[0];
    if (err) {
      const { line, col } = this.counter.linePos(Math.min(err.pos[0], text.length));
      throw new ExperimentError({
        file,
        line,
        column: col,
        problem: `YAML syntax error: ${err.message}`,
        excerpt: this.excerpt(line, col),
      });
    }
    this.data = this.doc.toJS();
  }

  position(node: YamlNode | null | undefined): { line: number; column: number } {
    const offset = node?.range?.[0];
    if (offset === undefined) return { line: 1, column: 1 };
    const { line, col } = this.counter.linePos(offset);
    return { line, column: col };
  }

  excerpt(line: number, column: number): string {
    const src = this.lines[line - 1];
    if (src === undefined) return '';
    const gutter = String(line).length;
    return `  ${line} | ${src}\n  ${' '.repeat(gutter)} | ${' '.repeat(Math.max(0, column - 1))}^`;
  }

  /**
   * Locates `path` of the effective config: in the profile or `--set` that last set it or one of its
   * parents, else in the file. A path that does not exist resolves to its deepest existing parent.
   */
  locate(path: Path, role: Role): { line?: number; column?: number; note?: string } {
    for (let i = this.patches.length - 1; i >= 0; i--) {
      const { path: p, origin } = this.patches[i]!;
      if (!isPrefix(p, path)) continue;
      if (origin.kind === 'set') return { note: ` (from --set ${origin.text})` };
      const note = ` (set by profile ${JSON.stringify(origin.profile)})`;
      const rest = path.slice(p.length);
      const node = rest.length === 0 && role === 'key' ? origin.keyNode : walk(this.doc, origin.valueNode, rest, role) ?? origin.keyNode;
      return { ...this.position(node), note };
    }
    if (!exists(this.doc, path)) {
      // Not in the file: created by an override below it (e.g. --set trainig.epochs=2 made `trainig`).
      for (let i = this.patches.length - 1; i >= 0; i--) {
        const { path: p, origin } = this.patches[i]!;
        if (!isPrefix(path, p)) continue;
        if (origin.kind === 'set') return { note: ` (from --set ${origin.text})` };
        return { ...this.position(origin.keyNode), note: ` (set by profile ${JSON.stringify(origin.profile)})` };
      }
    }
    const node = walk(this.doc, this.doc.contents, path, role);
    return this.position(node);
  }

  error(path: Path, role: Role, field: string | undefined, problem: string, extraNote = ''): ExperimentError {
    const at = this.locate(path, role);
    const init: ConstructorParameters<typeof ExperimentError>[0] = {
      file: this.file,
      problem,
      note: `${at.note ?? ''}${extraNote}`,
    };
    if (field !== undefined) init.field = field;
    else if (path.length) init.field = path.join('.');
    if (at.line !== undefined) {
      init.line = at.line;
      init.column = at.column ?? 1;
      init.excerpt = this.excerpt(at.line, init.column);
    }
    return new ExperimentError(init);
  }
}

/**
 * Follows `path` from `start` through the YAML nodes. Returns the node of the value (role 'value') or of the
 * key naming it (role 'key'); when the path leaves the document, the deepest node reached (by its key when
 * it has one, so a missing field points at the line of its parent's key).
 */
function walk(doc: Document.Parsed, start: unknown, path: Path, role: Role): YamlNode | null {
  const { node, key, found } = descend(doc, start, path);
  if (!found) return key ?? node;
  const emptyValue = !node || (isScalar(node) && node.value === null && node.source === '');
  return role === 'key' || emptyValue ? key ?? node : node;
}

/** Whether `path` names a node of the file itself. */
function exists(doc: Document.Parsed, path: Path): boolean {
  return descend(doc, doc.contents, path).found;
}

/**
 * Follows `path` from `start`: the node reached and the key that named it; when the path leaves the
 * document (`found` false), the deepest node reached and its key.
 */
function descend(doc: Document.Parsed, start: unknown, path: Path): { node: YamlNode | null; key: YamlNode | null; found: boolean } {
  let node = (start ?? null) as YamlNode | null;
  let key: YamlNode | null = null;
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(doc) ?? null;
    let next: unknown;
    if (isMap(node)) {
      const pair = node.items.find((it) => isScalar(it.key) && String(it.key.value) === String(seg));
      if (!pair) return { node, key, found: false };
      key = pair.key as YamlNode;
      next = pair.value;
    } else if (isSeq(node)) {
      next = node.items[Number(seg)];
      if (next === undefined) return { node, key, found: false };
      key = null;
    } else {
      return { node, key, found: false };
    }
    node = (next ?? null) as YamlNode | null;
  }
  return { node, key, found: true };
}

function isPrefix(prefix: Path, path: Path): boolean {
  return prefix.length <= path.length && prefix.every((s, i) => String(s) === String(path[i]));
}

// ---------------------------------------------------------------------------------------------------
// Profiles and overrides
// ---------------------------------------------------------------------------------------------------

interface ProfileEntry {
  path: string;
  value: unknown;
  keyNode: YamlNode;
  valueNode: YamlNode | null;
}

/** Checks `profiles:` in the file (a mapping of name → mapping of path → value) and indexes its entries. */
function checkProfiles(src: Source, root: Record<string, unknown>): Record<string, { entries: ProfileEntry[] }> {
  const out: Record<string, { entries: ProfileEntry[] }> = {};
  const section = root.profiles;
  if (section === undefined || section === null) return out;
  if (!isPlainObject(section)) {
    throw src.error(['profiles'], 'value', undefined, `expected a mapping of profile name → { path: value }, got ${describe(section)}`);
  }
  const sectionNode = walk(src.doc, src.doc.contents, ['profiles'], 'value');
  for (const [name, profile] of Object.entries(section)) {
    if (profile !== null && !isPlainObject(profile)) {
      throw src.error(
        ['profiles', name],
        'value',
        undefined,
        `a profile is a mapping of dotted path → value, e.g. { training.epochs: 50 }; got ${describe(profile)}`,
      );
    }
    const entries: ProfileEntry[] = [];
    for (const [path, value] of Object.entries(profile ?? {})) {
      const keyNode = walk(src.doc, sectionNode, [name, path], 'key');
      const valueNode = walk(src.doc, sectionNode, [name, path], 'value');
      if (path.split('.').some((s) => s === '')) {
        throw src.error(['profiles', name, path], 'key', undefined, 'not a dotted path (it has an empty part)');
      }
      entries.push({ path, value, keyNode: keyNode!, valueNode: valueNode === keyNode ? null : valueNode });
    }
    out[name] = { entries };
  }
  return out;
}

/**
 * Sets `dotted` in the effective config. At each mapping the longest existing key made of the next parts
 * wins (axis keys contain dots); under `axes`, a path matching no axis adds a new axis. Intermediate
 * mappings are created; a list is addressed by index and a scalar cannot be entered.
 */
function applyPatch(
  src: Source,
  root: Record<string, unknown>,
  dotted: string,
  value: unknown,
  origin: Origin,
  fail: (problem: string) => never,
): void {
  const parts = dotted.split('.');
  if (parts[0] === 'profiles') {
    fail(origin.kind === 'set' ? 'profiles cannot be changed from the command line; choose one with --profile' : 'a profile cannot change profiles');
  }
  const path: Path = [];
  let cur: unknown = root;
  let i = 0;
  while (i < parts.length) {
    const here = path.length ? path.join('.') : '(the experiment)';
    if (Array.isArray(cur)) {
      const seg = parts[i]!;
      if (cur.length === 0) fail(`${here} is an empty list; set the whole list instead`);
      if (!/^\d+$/.test(seg)) fail(`${here} is a list: address its entries by index (0..${cur.length - 1}), or set the whole list`);
      const idx = Number(seg);
      if (idx >= cur.length) {
        fail(`index ${idx} is out of range: ${here} has ${cur.length} entr${cur.length === 1 ? 'y' : 'ies'} (0..${cur.length - 1}); set the whole list to add entries`);
      }
      path.push(idx);
      i++;
    } else if (isPlainObject(cur)) {
      let take = 1;
      for (let k = parts.length - i; k > 1; k--) {
        if (Object.hasOwn(cur, parts.slice(i, i + k).join('.'))) {
          take = k;
          break;
        }
      }
      if (take === 1 && path.length === 1 && path[0] === 'axes' && !Object.hasOwn(cur, parts[i]!)) {
        // A new axis: the rest of the path is its key. Indexing into an axis that does not exist is a typo.
        const rest = parts.slice(i);
        if (rest.some((s) => /^\d+$/.test(s))) {
          const axes = Object.keys(cur);
          fail(`there is no axis ${JSON.stringify(rest[0])} to index into; axes: ${axes.length ? axes.join(', ') : '(none)'}`);
        }
        take = rest.length;
      }
      const key = parts.slice(i, i + take).join('.');
      path.push(key);
      i += take;
      if (i < parts.length && (cur[key] === undefined || cur[key] === null)) cur[key] = {};
    } else {
      fail(`${here} is ${describe(cur)}, not a mapping or list, so it has no field ${JSON.stringify(parts[i])}`);
    }
    if (i === parts.length) {
      (cur as Record<string | number, unknown>)[path[path.length - 1]!] = structuredClone(value);
    } else {
      cur = (cur as Record<string | number, unknown>)[path[path.length - 1]!];
    }
  }
  src.patches.push({ path, origin });
}

// ---------------------------------------------------------------------------------------------------
// Checking the experiment
// ---------------------------------------------------------------------------------------------------

interface Axis {
  key: string;
  /** Where its values go in a trial. */
  target: Path;
  values: unknown[];
  /** Whole plugin choices: labelled by plugin name. */
  choice: boolean;
}

interface CheckedTop {
  name: string;
  description: string;
  axes: Axis[];
}

function checkTopLevel(src: Source, root: Record<string, unknown>, catalog: PluginCatalogView): CheckedTop {
  for (const key of Object.keys(root)) {
    if (!TOP_LEVEL.includes(key)) {
      const hint =
        key === 'seed'
          ? '; the seed is training.seed, or a `seed` axis to vary it'
          : `${didYouMean(key, TOP_LEVEL)}; top-level fields: ${TOP_LEVEL.join(', ')}`;
      throw src.error([key], 'key', key, `unknown field${hint}`);
    }
  }
  const expected = basename(src.file).replace(/\.ya?ml$/, '');
  const name = requireString(src, root, 'name', `add \`name: ${expected}\``);
  if (name !== expected) {
    throw src.error(
      ['name'],
      'value',
      'name',
      `${JSON.stringify(name)} does not match the file name ${JSON.stringify(basename(src.file))}; rename the file to ${name}.yaml or set \`name: ${expected}\``,
    );
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
    throw src.error(['name'], 'value', 'name', `${JSON.stringify(name)} is not a usable name; use letters, digits, '.', '_' and '-' (it names the results folder)`);
  }
  const description = requireString(src, root, 'description', 'add a one-line `description:` saying what the experiment compares');

  const axes = checkAxes(src, root);
  const wholeChoiceAxes = new Set(axes.filter((a) => a.choice).map((a) => a.key));

  for (const kind of PLUGIN_SECTIONS) {
    const section = root[kind];
    if (section === undefined || section === null) {
      if (wholeChoiceAxes.has(kind)) continue;
      throw src.error(
        [kind],
        'value',
        kind,
        `missing; add \`${kind}: { name: ... }\` (registered ${plural(kind)}: ${listNames(catalog, kind)}) or a \`${kind}\` axis`,
      );
    }
    // The top-level choice is the default: check it even where axes replace it in every trial (a typo is a typo).
    checkChoice(src, catalog, kind, section, (p, role) => ({ path: [kind, ...p], role }), { partial: true });
  }

  const training = root.training;
  if (training !== undefined && training !== null) {
    if (!isPlainObject(training)) {
      throw src.error(['training'], 'value', 'training', `expected a mapping of training fields (${Object.keys(TRAINING_SCHEMA).join(', ')}), got ${describe(training)}`);
    }
    checkTrainingPartial(src, training);
  }
  return { name, description, axes };
}

/** A profile entry or override below a path that an axis sets in every trial would silently do nothing. */
function checkNoDeadPatches(src: Source, axes: Axis[]): void {
  for (const { path } of src.patches) {
    if (path[0] === 'axes') continue;
    const axis = axes.find((a) => isPrefix(a.target, path));
    if (!axis) continue;
    const inside = path.slice(axis.target.length).join('.');
    const instead = axis.choice
      ? `axes.${axis.key}.<index>${inside ? `.${inside}` : ''}`
      : `axes.${axis.key}`;
    throw src.error(
      path,
      'value',
      path.join('.'),
      `has no effect: axis ${JSON.stringify(axis.key)} sets ${axis.target.join('.')} in every trial; set ${instead} instead`,
    );
  }
}

function requireString(src: Source, root: Record<string, unknown>, key: string, todo: string): string {
  const value = root[key];
  if (value === undefined || value === null) throw src.error([key], 'value', key, `missing; ${todo}`);
  if (typeof value !== 'string' || !value.trim()) {
    throw src.error([key], 'value', key, `expected a non-empty string, got ${describe(value)}`);
  }
  return value;
}

function checkAxes(src: Source, root: Record<string, unknown>): Axis[] {
  const section = root.axes;
  if (section === undefined || section === null) return [];
  if (!isPlainObject(section)) {
    throw src.error(['axes'], 'value', 'axes', `expected a mapping of axis → list of values, e.g. { seed: [1, 2, 3] }; got ${describe(section)}`);
  }
  const axes: Axis[] = [];
  for (const [key, values] of Object.entries(section)) {
    const target = axisTarget(key, (problem) => {
      throw src.error(['axes', key], 'key', `axes.${key}`, problem);
    });
    const clash = axes.find((a) => a.target.join('.') === target.join('.'));
    if (clash) {
      throw src.error(['axes', key], 'key', `axes.${key}`, `sets the same field as axis ${JSON.stringify(clash.key)}; keep one of the two`);
    }
    if (!Array.isArray(values)) {
      throw src.error(['axes', key], 'value', `axes.${key}`, `expected a list of values, got ${describe(values)}; write [${stringifyInline(values)}] for a single value`);
    }
    if (values.length === 0) {
      throw src.error(['axes', key], 'value', `axes.${key}`, 'an axis needs at least one value; list its values or remove the axis');
    }
    const seen = new Map<string, number>();
    values.forEach((v, i) => {
      const id = stableStringify(v);
      const first = seen.get(id);
      if (first !== undefined) {
        throw src.error(['axes', key, i], 'value', `axes.${key}.${i}`, `repeats entry ${first}; the values of an axis must differ (vary the seed for repeated runs)`);
      }
      seen.set(id, i);
    });
    axes.push({ key, target, values, choice: target.length === 1 && (PLUGIN_SECTIONS as readonly string[]).includes(key) });
  }
  let count = 1;
  for (const a of axes) count *= a.values.length;
  if (count > MAX_TRIALS) {
    throw src.error(['axes'], 'key', 'axes', `the axes expand to ${count} trials (${axes.map((a) => `${a.key}: ${a.values.length}`).join(' × ')}), more than ${MAX_TRIALS}; split the experiment or drop values`);
  }
  return axes;
}

/** Where an axis puts its values in a trial config, or why its key is not a valid axis. */
function axisTarget(key: string, fail: (problem: string) => never): Path {
  if (key === 'seed') return ['training', 'seed'];
  const parts = key.split('.');
  if (parts.some((p) => p === '')) fail('not a dotted path (it has an empty part)');
  const roots = [...PLUGIN_SECTIONS, 'training', 'seed'];
  const [head, second] = parts as [string, ...string[]];
  if ((PLUGIN_SECTIONS as readonly string[]).includes(head)) {
    if (parts.length === 1) return parts;
    if (second === 'name' && parts.length === 2) return parts;
    if (second === 'settings') return parts;
    fail(
      `not a path into a plugin choice${didYouMean(second!, ['name', 'settings'])}; an axis over ${head} is \`${head}\` (whole choices), \`${head}.name\` or \`${head}.settings.<field>\``,
    );
  }
  if (head === 'training') {
    if (parts.length !== 2) {
      fail('an axis over training is one field, e.g. `training.learningRate`: list its values');
    }
    if (!Object.hasOwn(TRAINING_SCHEMA, second!)) {
      const known = Object.keys(TRAINING_SCHEMA);
      fail(`unknown training field ${JSON.stringify(second)}${didYouMean(second!, known)}; training fields: ${known.join(', ')}`);
    }
    return parts;
  }
  fail(
    `not an axis${didYouMean(head, roots)}; an axis is strategy, architecture, dataset, seed, or a path starting with dataset., architecture., strategy. or training.`,
  );
}

/** Maps a problem at a path inside a plugin choice / training block back to a path of the effective config. */
type Mapper = (inner: Path, role: Role) => { path: Path; role: Role; note?: string };

/**
 * Checks one plugin choice `{ name, settings? }`; returns it resolved (defaults filled) unless `partial`,
 * where only the fields present are checked (the top-level default choice, possibly replaced by axes).
 */
function checkChoice(
  src: Source,
  catalog: PluginCatalogView,
  kind: PluginSection,
  value: unknown,
  map: Mapper,
  opts: { partial: boolean },
): PluginChoice {
  const fail = (inner: Path, role: Role, problem: string): never => {
    const at = map(inner, role);
    throw src.error(at.path, at.role, at.path.join('.'), problem, at.note);
  };
  if (!isPlainObject(value)) {
    fail([], 'value', `expected a plugin choice { name: ..., settings: { ... } }, got ${describe(value)}${typeof value === 'string' ? `; write { name: ${value} }` : ''}`);
  }
  const choice = value as Record<string, unknown>;
  for (const key of Object.keys(choice)) {
    if (key !== 'name' && key !== 'settings') {
      fail([key], 'key', `unknown field${didYouMean(key, ['name', 'settings'])}; a plugin choice has name and settings`);
    }
  }
  const names = catalog.names(kind);
  const name = choice.name;
  if (name === undefined || name === null) fail(['name'], 'value', `missing; add \`name:\` (registered ${plural(kind)}: ${names.join(', ') || '(none)'})`);
  if (typeof name !== 'string') fail(['name'], 'value', `expected the name of a ${kind} plugin, got ${describe(name)}`);
  const pluginName = name as string;
  if (!names.includes(pluginName)) {
    fail(['name'], 'value', `unknown ${kind} ${JSON.stringify(pluginName)}${didYouMean(pluginName, names)}; registered ${plural(kind)}: ${names.join(', ') || '(none)'}`);
  }
  const schema = catalog.get(kind, pluginName).settings;
  const given = choice.settings ?? {};
  if (!isPlainObject(given)) fail(['settings'], 'value', `expected a mapping of settings of ${kind} ${JSON.stringify(pluginName)}, got ${describe(given)}`);
  const settings = given as Settings;
  const owner = `${kind} ${JSON.stringify(pluginName)}`;
  checkUnknown(schema, settings, owner, (key, problem) => fail(['settings', key], 'key', problem));
  if (opts.partial) {
    checkPresent(schema, settings, `${kind}.settings`, (key, problem) => fail(['settings', key], 'value', problem));
    return { name: pluginName, settings };
  }
  return {
    name: pluginName,
    settings: resolveOrFail(schema, settings, `${kind}.settings`, owner, (key, problem) => fail(['settings', key], 'value', problem)),
  };
}

function checkTrainingPartial(src: Source, training: Record<string, unknown>): void {
  checkUnknown(TRAINING_SCHEMA, training, 'training', (key, problem) => {
    throw src.error(['training', key], 'key', `training.${key}`, problem);
  });
  checkPresent(TRAINING_SCHEMA, training, 'training', (key, problem) => {
    throw src.error(['training', key], 'value', `training.${key}`, problem);
  });
  checkTrainingBounds(training, (key, problem) => {
    throw src.error(['training', key], 'value', `training.${key}`, problem);
  });
}

/** The `comparison:` section, checked and completed; its reference must be a strategy of the sweep. */
function checkComparison(src: Source, root: Record<string, unknown>, trials: TrialConfig[]): Experiment['comparison'] {
  const section = root.comparison ?? {};
  if (!isPlainObject(section)) {
    throw src.error(['comparison'], 'value', 'comparison', `expected a mapping (${Object.keys(COMPARISON_SCHEMA).join(', ')}), got ${describe(section)}`);
  }
  const fail = (key: string, role: Role, problem: string): never => {
    throw src.error(['comparison', key], role, `comparison.${key}`, problem);
  };
  checkUnknown(COMPARISON_SCHEMA, section, 'comparison', (key, problem) => fail(key, 'key', problem));
  const resolved = resolveOrFail(COMPARISON_SCHEMA, section, 'comparison', 'comparison', (key, problem) => fail(key, 'value', problem));
  const axis = resolved.axis as ComparedAxis;
  const choices = trials.map((t) => t[axis]);
  const names = [...new Set(choices.map((c) => c.name))];
  const reference = resolved.reference ?? names[0]!;
  const sel = parseReference(reference);
  if (!sel) fail('reference', 'value', `${JSON.stringify(reference)} is not a plugin name or name(key=value, ...), e.g. meunet-cascade(join=post-concat)`);
  if (!names.includes(sel!.name)) {
    fail('reference', 'value', `${JSON.stringify(sel!.name)} is not ${axis === 'architecture' ? 'an' : 'a'} ${axis} of this sweep${didYouMean(sel!.name, names)}; its ${axis === 'strategy' ? 'strategies' : `${axis}s`}: ${names.join(', ')}${axis === 'strategy' ? ' (set comparison.axis to compare architectures or datasets)' : ''}`);
  }
  if (!choices.some((c) => selects(sel!, c))) {
    const known = [...new Set(choices.filter((c) => c.name === sel!.name).flatMap((c) => Object.keys(c.settings ?? {})))];
    fail('reference', 'value', `no trial's ${axis} is ${reference}: check the setting names (${sel!.name} has ${known.join(', ')}) and their values as the trials resolve them`);
  }
  return { ...resolved, reference };
}

/** Bounds TRAINING_SCHEMA cannot say (its min/max are inclusive), and fields that go together. */
function checkTrainingBounds(training: Settings, fail: (key: string, problem: string) => never): void {
  const budget = training.budget ?? 'steps';
  const needs = { voxels: 'budgetVoxels', seconds: 'budgetSeconds' } as const;
  for (const [kind, field] of Object.entries(needs)) {
    const given = training[field] !== undefined && training[field] !== null;
    if (budget === kind && !given) fail('budget', `budget: ${kind} needs \`${field}\` (e.g. ${kind === 'voxels' ? '2e7' : '120'}); add it to training`);
    if (budget !== kind && given) fail(field, `is only read with budget: ${kind} (budget is ${budget}); set \`budget: ${kind}\` or remove ${field}`);
  }
  if (Number(training.curveEvery ?? 0) > 0 && Number(training.curvePoints ?? 0) > 0) {
    fail('curvePoints', `set curveEvery (every N steps) or curvePoints (evenly through the budget), not both (curveEvery is ${training.curveEvery})`);
  }
  const bs = training.budgetSeconds;
  if (typeof bs === 'number' && !(bs > 0)) fail('budgetSeconds', `must be > 0, got ${bs}`);
  const lr = training.learningRate;
  if (typeof lr === 'number' && !(lr > 0)) fail('learningRate', `must be > 0, got ${lr}`);
  const vf = training.validationFraction;
  if (typeof vf === 'number' && !(vf > 0 && vf < 1)) {
    fail('validationFraction', `must be strictly between 0 and 1 (some cases must train and some validate), got ${vf}`);
  }
}

function checkUnknown(schema: SettingsSchema, given: Settings, owner: string, fail: (key: string, problem: string) => never): void {
  const known = Object.keys(schema);
  for (const key of Object.keys(given)) {
    // hasOwn, not `in`: `constructor` or `toString` must not pass for a known field.
    if (!Object.hasOwn(schema, key)) {
      const what = owner === 'training' ? 'training field' : `setting of ${owner}`;
      const list = owner === 'training' ? 'training fields' : 'known settings';
      fail(key, `unknown ${what}${didYouMean(key, known)}; ${list}: ${known.length ? known.join(', ') : `(none: ${owner} takes no settings)`}`);
    }
  }
}

function checkPresent(schema: SettingsSchema, given: Settings, prefix: string, fail: (key: string, problem: string) => never): void {
  for (const [key, value] of Object.entries(given)) {
    const spec = Object.hasOwn(schema, key) ? schema[key] : undefined;
    if (!spec || value === undefined || value === null) continue;
    try {
      checkField(spec, value, `${prefix}.${key}`);
    } catch (e) {
      if (e instanceof SettingsError) fail(key, e.problem);
      throw e;
    }
  }
}

/**
 * resolveSettings, with its errors turned into located ones. A missing required field is reported at its
 * path too: that path does not exist in the file, so it is located at its parent.
 */
function resolveOrFail<S extends SettingsSchema>(
  schema: S,
  given: Settings,
  prefix: string,
  owner: string,
  fail: (key: string, problem: string) => never,
): SettingsOf<S> {
  try {
    return resolveSettings(schema, given, prefix);
  } catch (e) {
    if (!(e instanceof SettingsError)) throw e;
    const key = e.path.startsWith(`${prefix}.`) ? e.path.slice(prefix.length + 1).split('.')[0]! : '';
    const value = given[key];
    if (value !== undefined && value !== null) return fail(key, e.problem);
    const what = schema[key]?.description;
    return fail(key, `missing: ${owner} requires it${what ? ` (${what})` : ''}; add \`${key}: ...\``);
  }
}

// ---------------------------------------------------------------------------------------------------
// Expansion
// ---------------------------------------------------------------------------------------------------

function expandTrials(src: Source, root: Record<string, unknown>, top: CheckedTop, catalog: PluginCatalogView): TrialConfig[] {
  const { axes } = top;
  // Whole-choice axes before paths into them, whatever the order written; otherwise as written.
  const applyOrder = axes.map((a, i) => ({ a, i })).sort((x, y) => x.a.target.length - y.a.target.length || x.i - y.i);
  const labels = axes.map((a) => axisLabels(a));
  const total = axes.reduce((n, a) => n * a.values.length, 1);
  const trials: TrialConfig[] = [];

  for (let t = 0; t < total; t++) {
    // Mixed-radix digits, the first axis the most significant (slowest).
    const pick: number[] = new Array<number>(axes.length);
    let rest = t;
    for (let k = axes.length - 1; k >= 0; k--) {
      const n = axes[k]!.values.length;
      pick[k] = rest % n;
      rest = Math.floor(rest / n);
    }
    const label = axes.length ? axes.map((a, k) => `${a.key}=${labels[k]![pick[k]!]}`).join(' ') : 'default';

    const config: Record<string, unknown> = {
      dataset: structuredClone(root.dataset),
      architecture: structuredClone(root.architecture),
      strategy: structuredClone(root.strategy),
      training: structuredClone(root.training ?? {}),
    };
    const applied: { target: Path; source: Path; key: Path }[] = [];
    const axisValues: Record<string, unknown> = {};
    axes.forEach((a, k) => (axisValues[a.key] = structuredClone(a.values[pick[k]!])));
    const trialNote = total > 1 ? ` (in trial ${t}: ${label})` : '';

    for (const { a, i: k } of applyOrder) {
      const idx = pick[k]!;
      setTrialPath(config, a.target, structuredClone(a.values[idx]), (problem) => {
        throw src.error(['axes', a.key], 'key', `axes.${a.key}`, problem, trialNote);
      });
      applied.push({ target: a.target, source: ['axes', a.key, idx], key: ['axes', a.key] });
    }

    /** A path of this trial's config → where its value was written (the axis entry that set it, else itself). */
    const trace = (path: Path, role: Role): { path: Path; role: Role; note?: string } => {
      for (let j = applied.length - 1; j >= 0; j--) {
        const m = applied[j]!;
        if (!isPrefix(m.target, path)) continue;
        if (role === 'key' && path.length === m.target.length) return { path: m.key, role: 'key', note: trialNote };
        return { path: [...m.source, ...path.slice(m.target.length)], role, note: trialNote };
      }
      return { path, role };
    };

    const resolved = {} as Record<PluginSection, PluginChoice>;
    for (const kind of PLUGIN_SECTIONS) {
      resolved[kind] = checkChoice(src, catalog, kind, config[kind], (p, role) => trace([kind, ...p], role), { partial: false });
    }

    const givenTraining = config.training as Settings;
    const failTraining = (key: string, role: Role, problem: string): never => {
      const at = trace(['training', key], role);
      throw src.error(at.path, at.role, at.path.join('.'), problem, at.note);
    };
    checkUnknown(TRAINING_SCHEMA, givenTraining, 'training', (key, problem) => failTraining(key, 'key', problem));
    const training = resolveOrFail(TRAINING_SCHEMA, givenTraining, 'training', 'training', (key, problem) =>
      failTraining(key, 'value', problem),
    );
    checkTrainingBounds(training, (key, problem) => failTraining(key, 'value', problem));

    trials.push({
      experiment: top.name,
      trial: t,
      label,
      axes: axisValues,
      dataset: resolved.dataset,
      architecture: resolved.architecture,
      strategy: resolved.strategy,
      training,
      seed: training.seed,
    });
  }
  return trials;
}

/** Sets an axis value in a trial config, creating intermediate mappings. */
function setTrialPath(config: Record<string, unknown>, target: Path, value: unknown, fail: (problem: string) => never): void {
  let cur: unknown = config;
  for (let i = 0; i < target.length - 1; i++) {
    const obj = cur as Record<string, unknown>;
    const seg = String(target[i]);
    if (obj[seg] === undefined || obj[seg] === null) obj[seg] = {};
    cur = obj[seg];
    if (!isPlainObject(cur)) {
      fail(`cannot set ${target.join('.')}: ${target.slice(0, i + 1).join('.')} is ${describe(cur)}, not a mapping`);
    }
  }
  (cur as Record<string, unknown>)[String(target[target.length - 1])] = value;
}

/** Short label text per value of an axis: plugin choices by name, with settings where names repeat. */
function axisLabels(axis: Axis): string[] {
  if (!axis.choice) return axis.values.map((v) => stringifyInline(v));
  const nameOf = (v: unknown): string => (isPlainObject(v) && typeof v.name === 'string' ? v.name : stringifyInline(v));
  const counts = new Map<string, number>();
  for (const v of axis.values) counts.set(nameOf(v), (counts.get(nameOf(v)) ?? 0) + 1);
  return axis.values.map((v) => {
    const name = nameOf(v);
    if ((counts.get(name) ?? 0) < 2) return name;
    const settings = isPlainObject(v) && isPlainObject(v.settings) ? v.settings : {};
    return `${name}(${Object.entries(settings).map(([k, s]) => `${k}=${stringifyInline(s)}`).join(',')})`;
  });
}

// ---------------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------------

function readExperimentText(absFile: string, shown: string): string {
  try {
    return readFileSync(absFile, 'utf8');
  } catch (e) {
    let hint = '';
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      try {
        const names = readdirSync(dirname(absFile)).filter((f) => f.endsWith('.yaml')).map((f) => f.slice(0, -5));
        const wanted = basename(absFile).replace(/\.ya?ml$/, '');
        hint = names.length ? `${didYouMean(wanted, names)}; experiments there: ${names.sort().join(', ')}` : '';
      } catch {
        hint = '';
      }
    }
    throw new ExperimentError({ file: shown, problem: `cannot read the experiment: ${errnoText(e)}${hint}` });
  }
}

function displayPath(abs: string): string {
  const rel = relative(process.cwd(), abs);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : abs;
}

function errnoText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err.code === 'ENOENT') return 'no such file or folder';
  if (err.code === 'EACCES') return 'permission denied';
  if (err.code === 'EISDIR') return 'it is a folder, not a file';
  return err.message ?? String(e);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return `a list (${stringifyInline(v)})`;
  if (isPlainObject(v)) return `a mapping (${stringifyInline(v)})`;
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** Compact one-line form for labels and messages: 48, patch, [32,32,32], {patchSize:16}. */
function stringifyInline(v: unknown): string {
  if (typeof v === 'string') return /^[^\s,=()[\]{}:"']+$/.test(v) ? v : JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(stringifyInline).join(',')}]`;
  if (isPlainObject(v)) return `{${Object.entries(v).map(([k, x]) => `${k}:${stringifyInline(x)}`).join(',')}}`;
  return String(v);
}

/**
 * JSON with sorted keys and undefined fields dropped (as JSON drops them), to compare values regardless of
 * key order: equal configurations give equal text (trial ids hash it).
 */
export function stableStringify(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableStringify).join(',')}]`;
  if (isPlainObject(v)) {
    return `{${Object.keys(v)
      .filter((k) => v[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableStringify(v[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'undefined';
}

function plural(kind: PluginKind): string {
  return kind === 'strategy' ? 'strategies' : `${kind}s`;
}

function listNames(catalog: PluginCatalogView, kind: PluginKind): string {
  const names = catalog.names(kind);
  return names.length ? names.join(', ') : '(none)';
}

/** ` (did you mean "x"?)` for the closest candidate within a small edit distance, else ''. */
export function didYouMean(word: string, candidates: readonly string[]): string {
  const w = word.toLowerCase();
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(w, c.toLowerCase());
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  const limit = Math.max(1, Math.min(3, Math.floor(word.length / 3)));
  return best !== undefined && bestD <= limit ? ` (did you mean ${JSON.stringify(best)}?)` : '';
}

/** Optimal string alignment distance (Levenshtein with adjacent transpositions). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => {
    const row = new Array<number>(b.length + 1).fill(0);
    row[0] = i;
    return row;
  });
  for (let j = 0; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}
