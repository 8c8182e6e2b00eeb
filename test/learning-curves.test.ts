/**
 * What makes a sweep's comparison paired and timed: a validation split independent of the trial seed,
 * learning-curve rows (validation outside the training time), equal budgets of steps, voxels or seconds,
 * and the summary's paired section built from the records.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadExperiment, ExperimentError } from '../core/config/experiment.js';
import { ExperimentRunner } from '../core/experiment/runner.js';
import { readTrials, readCases, readCurves, regenerateSummary } from '../core/experiment/results.js';
import { buildContainer } from '../experiments/cli/plugins.js';
import { cpu } from './helpers/step.js';

beforeAll(cpu);

const quiet = (): void => {};
const { catalog } = buildContainer();

function experiment(body: string, name = 'curves'): { file: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'volseg-curves-'));
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, `name: ${name}\ndescription: learning curves\n${body}`);
  return { file, dir };
}

const BASE = `dataset: { name: synthetic-brats, settings: { cases: 6, size: 16, mimics: 2, edemaFingers: 1 } }
architecture: { name: unet3d, settings: { depth: 2, baseFilters: 4 } }
strategy: { name: full-volume }
`;

describe('the validation split', () => {
  it('is the same for every seed and strategy of a sweep, and follows training.splitSeed', async () => {
    const { file } = experiment(`${BASE}training: { validationFraction: 0.5 }
axes:
  strategy: [{ name: full-volume }, { name: patch, settings: { patchSize: 8 } }]
  seed: [1, 2, 3]
`);
    const exp = loadExperiment(file, catalog);
    const runner = new ExperimentRunner(catalog);
    const splits = new Set<string>();
    for (const t of exp.trials) {
      const p = await runner.planTrial(exp, t);
      await p.strategy.dispose?.();
      expect(p.validation.length).toBe(3);
      splits.add(JSON.stringify([p.train, p.validation]));
    }
    expect(splits.size).toBe(1);
    // Another split seed gives another split; the trial seed never does.
    const ids = Array.from({ length: 20 }, (_, i) => `case-${i}`);
    const a = ExperimentRunner.split(ids, 0, 0.4);
    expect(ExperimentRunner.split(ids, 0, 0.4)).toEqual(a);
    expect(ExperimentRunner.split(ids, 7, 0.4)).not.toEqual(a);
    expect(a.validation.length).toBe(8);
  });
});

describe('learning curves and budgets', () => {
  it('writes a curves.csv row every N steps and after the last, with training time that excludes validation', async () => {
    const { file, dir } = experiment(`${BASE}training: { epochs: 2, stepsPerEpoch: 4, curveEvery: 3, validationFraction: 0.5, saveModel: false }
axes:
  seed: [1, 2]
`);
    const results = join(dir, 'results');
    await new ExperimentRunner(catalog).run(loadExperiment(file, catalog), { resultsDir: results, log: quiet });
    const trials = readTrials(results);
    const curves = readCurves(results);
    for (const t of trials) {
      expect(t.status).toBe('ok');
      const points = curves.filter((c) => c.trial === t.trial);
      // Steps 3 and 6, then the final evaluation after step 8.
      expect(points.map((c) => c.step)).toEqual([3, 6, 8]);
      expect(points.map((c) => c.voxels_seen)).toEqual([3, 6, 8].map((s) => s * 16 ** 3));
      const seconds = points.map((c) => Number(c.train_seconds));
      expect(seconds[0]).toBeGreaterThan(0);
      expect(seconds[1]).toBeGreaterThan(seconds[0]!);
      expect(seconds[2]).toBeGreaterThan(seconds[1]!);
      const last = points[2]!;
      // The last point is the trial's final evaluation and training time.
      expect(last.dice_mean).toBe(t.dice_mean);
      expect(last.dice_WT).toBe(t.dice_WT);
      expect(last.train_seconds).toBe(t.train_seconds);
      expect(Number(t.curve_seconds)).toBeGreaterThan(0);
      for (const c of points) {
        expect(Number(c.eval_seconds)).toBeGreaterThan(0);
        expect(Number.isFinite(Number(c.loss))).toBe(true);
        expect(c.strategy).toBe('full-volume');
        expect(c.seed).toBe(t.seed);
      }
      expect([t.budget, t.steps, t.voxels_seen]).toEqual(['steps 8', 8, 8 * 16 ** 3]);
    }
    // The mid-training validation passes do not change what training does.
    const { file: plainFile, dir: plainDir } = experiment(`${BASE}training: { epochs: 2, stepsPerEpoch: 4, validationFraction: 0.5, saveModel: false }
axes:
  seed: [1, 2]
`);
    await new ExperimentRunner(catalog).run(loadExperiment(plainFile, catalog), { resultsDir: join(plainDir, 'r'), log: quiet });
    const plain = readTrials(join(plainDir, 'r'));
    expect(plain.map((r) => [r.final_loss, r.dice_mean, r.peak_train_bytes])).toEqual(trials.map((r) => [r.final_loss, r.dice_mean, r.peak_train_bytes]));
    expect(readCurves(join(plainDir, 'r'))).toEqual([]);
  });

  it('gives every strategy the same voxels seen under budget: voxels, with curve points at the same amounts', async () => {
    const { file, dir } = experiment(`${BASE}training: { budget: voxels, budgetVoxels: 20000, curvePoints: 2, validationFraction: 0.5, saveModel: false }
comparison: { reference: patch }
axes:
  strategy: [{ name: full-volume }, { name: patch, settings: { patchSize: 8 } }]
`);
    const results = join(dir, 'results');
    await new ExperimentRunner(catalog).run(loadExperiment(file, catalog), { resultsDir: results, log: quiet });
    const [full, patch] = readTrials(results);
    // 16³ = 4096 voxels a step: 5 steps reach 20000; 8³ = 512: 40 steps.
    expect([full!.budget, full!.steps, full!.voxels_seen]).toEqual(['voxels 20000', 5, 20480]);
    expect([patch!.budget, patch!.steps, patch!.voxels_seen]).toEqual(['voxels 20000', 40, 20480]);
    const curves = readCurves(results);
    // Half the budget (10000 voxels): full volume at step 3 (12288), patches at step 20 (10240).
    expect(curves.filter((c) => c.trial === 0).map((c) => c.step)).toEqual([3, 5]);
    expect(curves.filter((c) => c.trial === 1).map((c) => c.step)).toEqual([20, 40]);
    const summary = readFileSync(join(results, 'summary.md'), 'utf8');
    expect(summary).toContain('Budget: equal voxels seen: each trial trains until it has seen 20 k input voxels (20000)');
    expect(summary).toContain('| full-volume − patch | 1 | 3 |');
    expect(summary).toContain('Target: for each seed, the final mean Dice over regions of `patch` with that seed');
    expect(summary).toContain('### Learning curves (mean Dice over regions, mean over seeds, at each validation point)');
    // paired.csv holds every difference; the summary regenerates from the records alone, identically.
    const paired = readFileSync(join(results, 'paired.csv'), 'utf8').trim().split('\n');
    expect(paired.length).toBe(1 + 3 * readCases(results).filter((c) => c.trial === 0).length / 3);
    const before = summary.replace(/Generated: .*\n/, '');
    regenerateSummary(results);
    expect(readFileSync(join(results, 'summary.md'), 'utf8').replace(/Generated: .*\n/, '')).toBe(before);
  });

  it('stops a trial at its wall-time budget, validation excluded', async () => {
    const { file, dir } = experiment(`${BASE}training: { budget: seconds, budgetSeconds: 0.3, curvePoints: 3, validationFraction: 0.5, saveModel: false }
`);
    const results = join(dir, 'results');
    await new ExperimentRunner(catalog).run(loadExperiment(file, catalog), { resultsDir: results, log: quiet });
    const [t] = readTrials(results);
    expect(t!.status).toBe('ok');
    expect(t!.budget).toBe('seconds 0.3');
    expect(Number(t!.train_seconds)).toBeGreaterThanOrEqual(0.3);
    expect(Number(t!.steps)).toBeGreaterThan(1);
    const points = readCurves(results);
    // Points at 0.1 s and 0.2 s of training (one step may cross both), and the final evaluation.
    expect(points.length).toBeGreaterThanOrEqual(2);
    expect(points.length).toBeLessThanOrEqual(3);
    expect(Number(points[0]!.train_seconds)).toBeGreaterThanOrEqual(0.1);
    expect(points[points.length - 1]!.train_seconds).toBe(t!.train_seconds);
  });
});

describe('budget and comparison fields are checked before anything runs', () => {
  const failure = (body: string): ExperimentError => {
    const { file } = experiment(body, 'bad');
    try {
      loadExperiment(file, catalog);
    } catch (e) {
      if (e instanceof ExperimentError) return e;
      throw e;
    }
    throw new Error('expected an ExperimentError');
  };

  it('names a missing budget value, a value without its budget, and both curve settings', () => {
    expect(failure(`${BASE}training: { budget: voxels }\n`).message).toMatch(/training\.budget: budget: voxels needs `budgetVoxels`/);
    expect(failure(`${BASE}training: { budgetSeconds: 10 }\n`).message).toMatch(/training\.budgetSeconds: is only read with budget: seconds \(budget is steps\)/);
    expect(failure(`${BASE}training: { curveEvery: 2, curvePoints: 3 }\n`).message).toMatch(/training\.curvePoints: set curveEvery .* or curvePoints .*, not both/);
  });

  it('names a reference that is not a strategy of the sweep', () => {
    const e = failure(`${BASE}comparison: { reference: pach }\naxes:\n  strategy: [{ name: full-volume }, { name: patch }]\n`);
    expect(e.field).toBe('comparison.reference');
    expect(e.message).toMatch(/"pach" is not a strategy of this sweep \(did you mean "patch"\?\); its strategies: full-volume, patch/);
  });
});
