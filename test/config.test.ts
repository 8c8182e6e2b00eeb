import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ExperimentError,
  listExperiments,
  loadExperiment,
  parseOverride,
  TRAINING_SCHEMA,
  type LoadOptions,
  type PluginCatalogView,
} from '../core/config/experiment.js';
import type { SettingsSchema } from '../core/config/settings.js';
import type { PluginKind } from '../core/types.js';
import type { Plugin } from '../core/plugins/contracts.js';

// ---- a tiny catalog: two strategies, one architecture, one dataset ------------------------------------

function plugin(kind: PluginKind, name: string, settings: SettingsSchema): Plugin<unknown> {
  return { kind, name, description: `fake ${kind} ${name}`, settings, create: () => ({}) };
}

const PLUGINS = [
  plugin('strategy', 'full-volume', {
    offload: { type: 'boolean', default: false, description: 'keep activations on the host' },
  }),
  plugin('strategy', 'patch', {
    patchSize: { type: 'shape3', required: true, description: 'patch edge or [D, H, W]' },
    overlap: { type: 'number', default: 0.25, min: 0, max: 0.9, description: 'inference overlap' },
  }),
  plugin('architecture', 'unet3d', {
    baseFilters: { type: 'integer', default: 8, min: 1, description: 'filters of the first level' },
    depth: { type: 'integer', default: 4, min: 1, description: 'levels' },
  }),
  plugin('dataset', 'synthetic-brats', {
    cases: { type: 'integer', default: 8, min: 1, description: 'number of cases' },
    size: { type: 'shape3', default: 32, description: 'volume size' },
    noise: { type: 'number', default: 0.1, description: 'noise level' },
  }),
];

const catalog: PluginCatalogView = {
  get(kind, name) {
    const found = PLUGINS.find((p) => p.kind === kind && p.name === name);
    if (!found) throw new Error(`test catalog: no ${kind} ${name}`);
    return found;
  },
  names: (kind) => PLUGINS.filter((p) => p.kind === kind).map((p) => p.name),
};

// ---- helpers ------------------------------------------------------------------------------------------

const FIXTURES = 'test/fixtures/experiments';
const EXAMPLE = `${FIXTURES}/brats-swap-vs-patch.yaml`;

const tmp = mkdtempSync(join(tmpdir(), 'config-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Writes `<tmp>/<name>.yaml` with `name:` and `description:` on lines 1-2 unless `body` has its own. */
function experiment(name: string, body: string): string {
  const file = join(tmp, `${name}.yaml`);
  writeFileSync(file, body);
  return file;
}

/** A valid experiment, lines numbered for the tests that break one line of it. */
function valid(name: string, replace: Record<string, string> = {}): string {
  const lines = [
    `name: ${name}`, //                                   1
    'description: A small valid experiment.', //          2
    'dataset:', //                                        3
    '  name: synthetic-brats', //                         4
    '  settings: { cases: 4 }', //                        5
    'architecture: { name: unet3d }', //                  6
    'strategy:', //                                       7
    '  name: full-volume', //                             8
    'training:', //                                       9
    '  epochs: 3', //                                     10
    '  learningRate: 0.01', //                            11
  ].join('\n');
  let text = `${lines}\n`;
  for (const [from, to] of Object.entries(replace)) {
    expect(text).toContain(from);
    text = text.replace(from, to);
  }
  return experiment(name, text);
}

function failure(file: string, options?: LoadOptions): ExperimentError {
  try {
    loadExperiment(file, catalog, options);
  } catch (e) {
    if (e instanceof ExperimentError) return e;
    throw e;
  }
  throw new Error(`expected ${file} to fail to load`);
}

// ---- the example file -----------------------------------------------------------------------------------

describe('the example experiment', () => {
  const exp = loadExperiment(EXAMPLE, catalog);

  it('expands the product of the axes, the first axis slowest, with short labels', () => {
    expect(exp.name).toBe('brats-swap-vs-patch');
    expect(exp.description).toBe('Full volume vs patches on synthetic BraTS.');
    expect(exp.trials).toHaveLength(2 * 3 * 2);
    expect(exp.trials.map((t) => t.trial)).toEqual([...Array(12).keys()]);
    expect(exp.trials.slice(0, 3).map((t) => t.label)).toEqual([
      'strategy=full-volume seed=1 dataset.settings.size=32',
      'strategy=full-volume seed=1 dataset.settings.size=48',
      'strategy=full-volume seed=2 dataset.settings.size=32',
    ]);
    expect(exp.trials[11]!.label).toBe('strategy=patch seed=3 dataset.settings.size=48');
    expect(exp.trials.map((t) => `${t.strategy.name}/${t.seed}/${t.dataset.settings.size}`)).toEqual([
      'full-volume/1/32,32,32', 'full-volume/1/48,48,48', 'full-volume/2/32,32,32',
      'full-volume/2/48,48,48', 'full-volume/3/32,32,32', 'full-volume/3/48,48,48',
      'patch/1/32,32,32', 'patch/1/48,48,48', 'patch/2/32,32,32',
      'patch/2/48,48,48', 'patch/3/32,32,32', 'patch/3/48,48,48',
    ]);
    expect(exp.trials[7]!.axes).toEqual({
      strategy: { name: 'patch', settings: { patchSize: 16 } },
      seed: 1,
      'dataset.settings.size': 48,
    });
  });

  it('resolves every plugin and training field of every trial, defaults filled', () => {
    const t = exp.trials[7]!;
    expect(t.experiment).toBe('brats-swap-vs-patch');
    expect(t.dataset).toEqual({ name: 'synthetic-brats', settings: { cases: 8, size: [48, 48, 48], noise: 0.1 } });
    expect(t.architecture).toEqual({ name: 'unet3d', settings: { baseFilters: 8, depth: 4 } });
    expect(t.strategy).toEqual({ name: 'patch', settings: { patchSize: [16, 16, 16], overlap: 0.25 } });
    expect(exp.trials[0]!.strategy).toEqual({ name: 'full-volume', settings: { offload: false } });
    expect(t.training).toEqual({
      epochs: 10,
      stepsPerEpoch: 8,
      batchSize: 1,
      learningRate: 0.001,
      loss: 'dice+ce',
      validationFraction: 0.25,
      splitSeed: 0,
      budget: 'steps',
      curveEvery: 0,
      curvePoints: 0,
      deviceMemory: 16 * 2 ** 30,
      optimizerInBackward: true,
      backend: 'cpu',
      seed: 1,
      evaluate: true,
      saveModel: true,
      threshold: 0.5,
    });
    expect(t.seed).toBe(t.training.seed);
  });

  it('gives an experiment without axes one trial with every default', () => {
    const single = loadExperiment(`${FIXTURES}/single-run.yaml`, catalog);
    expect(single.trials).toHaveLength(1);
    const [t] = single.trials;
    expect(t!.label).toBe('default');
    expect(t!.axes).toEqual({});
    expect(t!.seed).toBe(TRAINING_SCHEMA.seed!.default);
    expect(t!.strategy.settings).toEqual({ patchSize: [16, 32, 32], overlap: 0.25 });
    expect(t!.training.deviceMemory).toBeUndefined();
    expect(t!.training.maxValidationCases).toBeUndefined();
  });

  it('applies the profile, then overrides in order', () => {
    const paper = loadExperiment(EXAMPLE, catalog, { profile: 'paper' });
    expect(paper.profile).toBe('paper');
    expect(paper.trials).toHaveLength(12);
    expect(paper.trials.every((t) => t.training.epochs === 100)).toBe(true);
    expect(paper.trials[7]!.dataset.settings.size).toEqual([192, 192, 192]);
    expect(paper.trials[7]!.strategy.settings.patchSize).toEqual([128, 128, 128]);

    const both = loadExperiment(EXAMPLE, catalog, {
      profile: 'paper',
      overrides: ['training.epochs=2', 'axes.strategy.1.settings.patchSize=[32,64,64]', 'axes.seed=[7]', 'training.epochs=3'],
    });
    expect(both.trials).toHaveLength(2 * 1 * 2);
    expect(both.trials.map((t) => t.label)).toEqual([
      'strategy=full-volume seed=7 dataset.settings.size=96',
      'strategy=full-volume seed=7 dataset.settings.size=192',
      'strategy=patch seed=7 dataset.settings.size=96',
      'strategy=patch seed=7 dataset.settings.size=192',
    ]);
    expect(both.trials.every((t) => t.training.epochs === 3 && t.seed === 7)).toBe(true);
    expect(both.trials[3]!.strategy.settings.patchSize).toEqual([32, 64, 64]);
    // The effective document is what the trials came from.
    expect((both.raw as { training: { epochs: number } }).training.epochs).toBe(3);
  });

  it('lets an override add an axis and reset a field to its default', () => {
    const exp2 = loadExperiment(EXAMPLE, catalog, {
      profile: 'quick',
      overrides: ['axes.training.learningRate=[0.1, 0.01]', 'training.deviceMemory='],
    });
    expect(exp2.trials).toHaveLength(2 * 1 * 2 * 2);
    expect(exp2.trials[1]!.label).toBe('strategy=full-volume seed=1 dataset.settings.size=32 training.learningRate=0.01');
    expect(exp2.trials[1]!.training.learningRate).toBe(0.01);
    expect(exp2.trials[1]!.training.epochs).toBe(1);
    expect(exp2.trials[1]!.training.deviceMemory).toBeUndefined();
  });

  it('lists the experiments of a folder', () => {
    expect(listExperiments(FIXTURES).map(({ name, trials, description }) => ({ name, trials, description }))).toEqual([
      { name: 'brats-swap-vs-patch', trials: 12, description: 'Full volume vs patches on synthetic BraTS.' },
      { name: 'single-run', trials: 1, description: 'One trial, every default.' },
    ]);
  });
});

// ---- errors -----------------------------------------------------------------------------------------------

describe('errors in the file', () => {
  it('a typo in a top-level field: file, line, field, did you mean, known fields', () => {
    const file = valid('typo-top', { 'training:': 'trainig:' });
    const e = failure(file);
    expect(e.file).toBe(file);
    expect([e.line, e.column, e.field]).toEqual([9, 1, 'trainig']);
    expect(e.message.split('\n')[0]).toBe(
      `${file}:9:1: trainig: unknown field (did you mean "training"?); top-level fields: name, description, dataset, architecture, strategy, training, comparison, axes, profiles`,
    );
    // The offending line is shown under the message.
    expect(e.message).toContain('9 | trainig:');
  });

  it('a comparison reference that is not a value of the compared axis, or that selects no trial', () => {
    const sweep = (name: string, comparison: string) =>
      valid(name, { 'architecture: { name: unet3d }': `architecture: { name: unet3d }\naxes:\n  architecture.settings.depth: [3, 4]\ncomparison: ${comparison}` });
    let e = failure(sweep('ref-strategy', '{ reference: unet3d }'));
    expect(e.field).toBe('comparison.reference');
    expect(e.problem).toMatch(/"unet3d" is not a strategy of this sweep.*its strategies: full-volume \(set comparison.axis to compare architectures or datasets\)/);
    e = failure(sweep('ref-settings', '{ axis: architecture, reference: "unet3d(depth=5)" }'));
    expect(e.problem).toMatch(/no trial's architecture is unet3d\(depth=5\): check the setting names \(unet3d has baseFilters, depth\)/);
    e = failure(sweep('ref-form', '{ axis: architecture, reference: "unet3d(depth)" }'));
    expect(e.problem).toMatch(/is not a plugin name or name\(key=value, \.\.\.\)/);
    expect(loadExperiment(sweep('ref-ok', '{ axis: architecture, reference: "unet3d(depth=4)" }'), catalog).comparison).toMatchObject({ axis: 'architecture', reference: 'unet3d(depth=4)' });
  });

  it('a typo in a training field and in a plugin setting', () => {
    let e = failure(valid('typo-training', { '  epochs: 3': '  epoch: 3' }));
    expect([e.line, e.column, e.field]).toEqual([10, 3, 'training.epoch']);
    expect(e.problem).toMatch(/^unknown training field \(did you mean "epochs"\?\); training fields: epochs, stepsPerEpoch, /);

    // Names an object has anyway are not fields.
    e = failure(valid('constructor-field', { '  epochs: 3': '  constructor: 3' }));
    expect([e.line, e.column, e.field]).toEqual([10, 3, 'training.constructor']);

    e = failure(valid('typo-setting', { '{ cases: 4 }': '{ case: 4 }' }));
    expect([e.line, e.column, e.field]).toEqual([5, 15, 'dataset.settings.case']);
    expect(e.problem).toBe(
      'unknown setting of dataset "synthetic-brats" (did you mean "cases"?); known settings: cases, size, noise',
    );
  });

  it('a missing required field points at the parent mapping', () => {
    let e = failure(experiment('no-description', 'name: no-description\ndataset: { name: synthetic-brats }\n'));
    expect([e.line, e.column, e.field]).toEqual([1, 1, 'description']);
    expect(e.problem).toMatch(/^missing; add a one-line `description:`/);

    e = failure(valid('no-dataset-name', { '  name: synthetic-brats\n': '' }));
    expect([e.line, e.column, e.field]).toEqual([3, 1, 'dataset.name']);
    expect(e.problem).toBe('missing; add `name:` (registered datasets: synthetic-brats)');

    // A required plugin setting, in one entry of an axis.
    const file = valid('no-patch-size', {
      'training:': 'axes:\n  strategy:\n    - { name: full-volume }\n    - { name: patch }\ntraining:',
    });
    e = failure(file);
    expect([e.line, e.column, e.field]).toEqual([12, 7, 'axes.strategy.1.settings.patchSize']);
    expect(e.message.split('\n')[0]).toBe(
      `${file}:12:7: axes.strategy.1.settings.patchSize: missing: strategy "patch" requires it (patch edge or [D, H, W]); add \`patchSize: ...\` (in trial 1: strategy=patch)`,
    );
  });

  it('a wrong type: line and column point at the value', () => {
    const file = valid('wrong-type', { 'epochs: 3': 'epochs: ten' });
    const e = failure(file);
    expect([e.line, e.column, e.field]).toEqual([10, 11, 'training.epochs']);
    expect(e.message.split('\n')[0]).toBe(`${file}:10:11: training.epochs: expected a value of type integer, got "ten"`);
    expect(e.message.split('\n').slice(1)).toEqual(['  10 |   epochs: ten', '     |           ^']);

    const bounds = failure(valid('bad-fraction', { '  epochs: 3': '  validationFraction: 1' }));
    expect([bounds.line, bounds.column, bounds.field]).toEqual([10, 23, 'training.validationFraction']);
    expect(bounds.problem).toMatch(/strictly between 0 and 1/);
  });

  it('an unknown plugin lists the registered names of that kind', () => {
    const e = failure(valid('unknown-plugin', { 'name: full-volume': 'name: pach' }));
    expect([e.line, e.column, e.field]).toEqual([8, 9, 'strategy.name']);
    expect(e.problem).toBe('unknown strategy "pach" (did you mean "patch"?); registered strategies: full-volume, patch');
  });

  it('a bad value in one axis entry fails up front, located in the axis', () => {
    const file = valid('bad-axis-value', { 'training:': 'axes:\n  seed: [1, 2, "three"]\ntraining:' });
    const e = failure(file);
    expect([e.line, e.column, e.field]).toEqual([10, 16, 'axes.seed.2']);
    expect(e.problem).toBe('expected a value of type integer, got "three"');
    expect(e.message.split('\n')[0]).toContain('(in trial 2: seed=three)');
  });

  it('axes: bad keys, empty and repeated values', () => {
    let e = failure(valid('bad-axis-key', { 'training:': 'axes:\n  strategy.setings.patchSize: [8]\ntraining:' }));
    expect([e.line, e.column, e.field]).toEqual([10, 3, 'axes.strategy.setings.patchSize']);
    expect(e.problem).toMatch(/did you mean "settings"/);

    e = failure(valid('empty-axis', { 'training:': 'axes:\n  seed: []\ntraining:' }));
    expect([e.line, e.field]).toEqual([10, 'axes.seed']);
    expect(e.problem).toMatch(/at least one value/);

    e = failure(valid('repeated-axis', { 'training:': 'axes:\n  seed: [1, 2, 1]\ntraining:' }));
    expect([e.line, e.column, e.field]).toEqual([10, 16, 'axes.seed.2']);
    expect(e.problem).toMatch(/repeats entry 0/);
  });

  it('name must equal the file name', () => {
    const file = valid('file-name', { 'name: file-name': 'name: other-name' });
    const e = failure(file);
    expect([e.line, e.column, e.field]).toEqual([1, 7, 'name']);
    expect(e.problem).toBe(
      '"other-name" does not match the file name "file-name.yaml"; rename the file to other-name.yaml or set `name: file-name`',
    );
  });

  it('a YAML syntax error gives file:line:column and the parser message', () => {
    const file = experiment('syntax', 'name: syntax\ndescription: x\ndataset: name: synthetic-brats\n');
    const e = failure(file);
    expect([e.line, e.column]).toEqual([3, 10]);
    expect(e.message.split('\n')[0]).toBe(
      `${file}:3:10: YAML syntax error: Nested mappings are not allowed in compact mappings`,
    );
    expect(e.message).toContain('3 | dataset: name: synthetic-brats');

    // yaml reports an unclosed flow collection where it notices it: the next line.
    const unclosed = failure(experiment('unclosed', 'name: unclosed\ndescription: x\ndataset: { name: synthetic-brats\narchitecture: { name: unet3d }\n'));
    expect(unclosed.line).toBe(4);
    expect(unclosed.problem).toMatch(/^YAML syntax error: .*end with a \}/);

    const dup = failure(experiment('duplicate', 'name: duplicate\ndescription: x\nname: duplicate\n'));
    expect(dup.line).toBe(3);
    expect(dup.problem).toMatch(/unique/);
  });

  it('a missing file names the experiments that exist', () => {
    const e = failure(`${FIXTURES}/single-rum.yaml`);
    expect(e.problem).toMatch(/no such file.*did you mean "single-run"\?.*experiments there: brats-swap-vs-patch, single-run/);
  });
});

describe('errors from profiles and overrides', () => {
  it('parseOverride reads path=value as YAML and explains the form', () => {
    expect(parseOverride('training.epochs=2')).toEqual({ path: 'training.epochs', value: 2 });
    expect(parseOverride('dataset.settings.size=[32,32,32]')).toEqual({ path: 'dataset.settings.size', value: [32, 32, 32] });
    expect(parseOverride('strategy={name: patch, settings: {patchSize: 16}}').value).toEqual({ name: 'patch', settings: { patchSize: 16 } });
    expect(parseOverride('training.deviceMemory=16GiB').value).toBe('16GiB');
    expect(parseOverride('training.deviceMemory=').value).toBeNull();
    expect(() => parseOverride('training.epochs')).toThrow(/expected the form path=value/);
    expect(() => parseOverride('=3')).toThrow(/path is empty.*path=value/);
    expect(() => parseOverride('training..epochs=3')).toThrow(/not a dotted path/);
    expect(() => parseOverride('dataset.settings.size=[32,32')).toThrow(/not valid YAML/);
  });

  it('a bad override says it came from --set and names the path', () => {
    let e = failure(EXAMPLE, { overrides: ['training.epochs=ten'] });
    expect(e.file).toBe(EXAMPLE);
    expect(e.line).toBeUndefined();
    expect(e.message).toBe(
      `${EXAMPLE}: training.epochs: expected a value of type integer, got "ten" (from --set training.epochs=ten)`,
    );

    e = failure(EXAMPLE, { overrides: ['training.epoch=2'] });
    expect(e.field).toBe('training.epoch');
    expect(e.message).toMatch(/did you mean "epochs"\?.*\(from --set training\.epoch=2\)$/);

    e = failure(EXAMPLE, { overrides: ['trainig.epochs=2'] });
    expect(e.field).toBe('trainig');
    expect(e.message).toMatch(/unknown field \(did you mean "training"\?\).*\(from --set trainig\.epochs=2\)$/);

    e = failure(EXAMPLE, { overrides: ['axes.seed.5=4'] });
    expect(e.message).toBe(
      `${EXAMPLE}: axes.seed.5: index 5 is out of range: axes.seed has 3 entries (0..2); set the whole list to add entries (from --set axes.seed.5=4)`,
    );

    e = failure(EXAMPLE, { overrides: ['training.epochs.max=3'] });
    expect(e.problem).toMatch(/training\.epochs is number 10, not a mapping or list/);

    e = failure(EXAMPLE, { overrides: ['training.epochs'] });
    expect(e.message).toMatch(/^test\/fixtures\/experiments\/brats-swap-vs-patch\.yaml: --set "training\.epochs": expected the form path=value/);
  });

  it('an override that no trial would see is an error, not a silent no-op', () => {
    const e = failure(EXAMPLE, { overrides: ['dataset.settings.size=64'] });
    expect(e.problem).toBe(
      'has no effect: axis "dataset.settings.size" sets dataset.settings.size in every trial; set axes.dataset.settings.size instead',
    );
    expect(failure(EXAMPLE, { overrides: ['strategy.settings.offload=true'] }).problem).toMatch(
      /set axes\.strategy\.<index>\.settings\.offload instead/,
    );
  });

  it('a bad value from a profile points at the profile entry', () => {
    const file = experiment(
      'bad-profile-value',
      [
        'name: bad-profile-value',
        'description: x',
        'dataset: { name: synthetic-brats }',
        'architecture: { name: unet3d }',
        'strategy: { name: full-volume }',
        'profiles:',
        '  paper:',
        '    training.batchSize: 0',
      ].join('\n'),
    );
    let e = failure(file, { profile: 'paper' });
    expect([e.line, e.column, e.field]).toEqual([8, 25, 'training.batchSize']);
    expect(e.message.split('\n')[0]).toBe(`${file}:8:25: training.batchSize: must be ≥ 1, got 0 (set by profile "paper")`);
    // The default (no profile) loads.
    expect(loadExperiment(file, catalog).trials).toHaveLength(1);

    const file2 = experiment('bad-profile-path', 'name: bad-profile-path\ndescription: x\nprofiles:\n  paper:\n    axes.seed.3: 1\n');
    e = failure(file2, { profile: 'paper' });
    expect([e.line, e.column, e.field]).toEqual([5, 5, 'profiles.paper.axes.seed.3']);
    expect(e.problem).toMatch(/no axis "seed" to index into/);
  });

  it('an unknown profile lists the profiles of the file', () => {
    let e = failure(EXAMPLE, { profile: 'papr' });
    expect(e.field).toBe('profiles');
    expect(e.line).toBe(27);
    expect(e.problem).toBe('unknown profile "papr" (did you mean "paper"?); profiles in this file: paper, quick');
    e = failure(`${FIXTURES}/single-run.yaml`, { profile: 'paper' });
    expect(e.problem).toMatch(/defines no profiles/);
  });
});
