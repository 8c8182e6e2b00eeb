/**
 * The framework end to end: an experiment file through the real runner (trials.csv, cases.csv,
 * summary.md, saved models), a memory budget that one strategy exceeds and another meets, and
 * predictions written aligned with their images.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { mkdtempSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadExperiment } from '../core/config/experiment.js';
import { ExperimentRunner } from '../core/experiment/runner.js';
import { readTrials, readCases } from '../core/experiment/results.js';
import { predictImages } from '../core/experiment/prediction.js';
import { readNifti, writeNifti } from '../core/io/nifti.js';
import { estimatePeak } from '../core/memory/estimator.js';
import { buildContainer } from '../experiments/cli/plugins.js';
import { buildUNet3d } from '../architectures/unet3d.js';
import { SeededRng } from '../core/data/rng.js';
import type { NiftiGeometry } from '../core/types.js';
import { cpu } from './helpers/step.js';

beforeAll(cpu);

function experimentFile(dir: string, name: string, body: string): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, `name: ${name}\n${body}`);
  return file;
}

const quiet = (): void => {};

describe('an experiment end to end', () => {
  it('records one measured row per trial, per-case rows, a summary and a saved model', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'volseg-run-'));
    const file = experimentFile(
      dir,
      'tiny',
      `description: tiny sweep
dataset: { name: synthetic-brats, settings: { cases: 4, size: 16 } }
architecture: { name: unet3d, settings: { depth: 2, baseFilters: 4 } }
strategy: { name: full-volume }
training: { epochs: 1, stepsPerEpoch: 2, validationFraction: 0.25 }
axes:
  strategy:
    - { name: full-volume }
    - { name: patch, settings: { patchSize: 8, overlap: 0.25 } }
`,
    );
    const { catalog } = buildContainer();
    const exp = loadExperiment(file, catalog);
    const results = join(dir, 'results');
    await new ExperimentRunner(catalog).run(exp, { resultsDir: results, log: quiet });
    const rows = readTrials(results);
    expect(rows.map((r) => [r.strategy, r.status])).toEqual([
      ['full-volume', 'ok'],
      ['patch', 'ok'],
    ]);
    for (const r of rows) {
      for (const col of ['peak_train_bytes', 'peak_infer_bytes', 'est_peak_train_bytes', 'step_seconds', 'train_seconds', 'params'])
        expect(Number(r[col]), `${r.strategy} ${col}`).toBeGreaterThan(0);
      for (const region of ['WT', 'TC', 'ET']) {
        expect(Number(r[`dice_${region}`])).toBeGreaterThanOrEqual(0);
        expect(Number(r[`dice_${region}`])).toBeLessThanOrEqual(1);
      }
      expect(String(r.backend)).toMatch(/^cpu/);
      expect(existsSync(join(String(r.model), 'model.json'))).toBe(true);
    }
    expect(rows[0]!.input_shape).toBe('16x16x16');
    // synthetic-brats's grid is in mm (HD95 in mm); the column says so.
    expect(rows.map((r) => r.spacing_unit)).toEqual(rows.map(() => 'mm'));
    expect(rows[1]!.input_shape).toBe('8x8x8');
    // The patch step sees an eighth of the volume: its measured training peak must be lower.
    expect(Number(rows[1]!.peak_train_bytes)).toBeLessThan(Number(rows[0]!.peak_train_bytes));
    expect(readCases(results).length).toBe(2 * 1 * 3); // 2 trials × 1 validation case × 3 regions
    const summary = readFileSync(join(results, 'summary.md'), 'utf8');
    expect(summary).toContain('full-volume');
    expect(summary).toContain('patch');
  });

  it('records did-not-fit for a trial over the memory budget and goes on with the next', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'volseg-budget-'));
    // Budgets from the estimator (checked against the meter in executor.test.ts).
    const net = buildUNet3d({ inChannels: 4, outChannels: 3, activation: 'sigmoid' }, { depth: 2, baseFilters: 4, residual: true, deepSupervision: false, negativeSlope: 0.01 });
    const full = estimatePeak(net, [1, 24, 24, 24, 4], {}).peak;
    const patch = estimatePeak(net, [1, 8, 8, 8, 4], {}).peak;
    expect(patch * 1.5).toBeLessThan(full * 0.7);
    // Just above the patch step: the others overflow early in forward (inside tf.grads for the tape).
    const budget = Math.round(patch * 1.3);
    const file = experimentFile(
      dir,
      'budget',
      `description: budget
dataset: { name: synthetic-brats, settings: { cases: 3, size: 24 } }
architecture: { name: unet3d, settings: { depth: 2, baseFilters: 4 } }
strategy: { name: full-volume }
training: { epochs: 1, stepsPerEpoch: 1, deviceMemory: ${budget}, saveModel: false }
axes:
  strategy:
    - { name: full-volume, settings: { backward: tape } }
    - { name: full-volume }
    - { name: patch, settings: { patchSize: 8 } }
`,
    );
    const { catalog } = buildContainer();
    const results = join(dir, 'results');
    await new ExperimentRunner(catalog).run(loadExperiment(file, catalog), { resultsDir: results, log: quiet });
    const rows = readTrials(results).slice(1); // the tape step's overflow must leave nothing behind
    expect(readTrials(results)[0]!.status).toBe('did-not-fit');
    expect(rows.map((r) => r.status)).toEqual(['did-not-fit', 'ok']);
    expect(Number(rows[1]!.peak_train_bytes)).toBeLessThan(budget);
    expect(String(rows[0]!.status_detail)).toMatch(/out of device memory at train step 1 \/ (forward|backward|loss) \/ .+: an allocation of .+ free/);
  });
});

/** A small MSD task folder: one channel, labels {0, 1, 2}, an oblique sform so alignment is checked. */
async function msdFolder(dir: string, n: number): Promise<void> {
  const rng = new SeededRng(5);
  const geometry = (i: number): NiftiGeometry => ({
    dims: [14, 12, 10],
    pixDims: [1.2, 0.9, 1.5],
    qformCode: 1,
    sformCode: 2,
    quaternB: 0,
    quaternC: 0.1,
    quaternD: 0,
    qoffsetX: -10 - i,
    qoffsetY: 5,
    qoffsetZ: 3,
    qfac: -1,
    srow: [
      [1.2, 0.05, 0, -10 - i],
      [0, 0.9, 0.1, 5],
      [0.02, 0, -1.5, 3],
    ],
    xyztUnits: 10,
  });
  const training: { image: string; label: string }[] = [];
  for (let i = 0; i < n; i++) {
    const img = new Float32Array(14 * 12 * 10);
    const lab = new Uint8Array(img.length);
    for (let z = 0; z < 10; z++)
      for (let y = 0; y < 12; y++)
        for (let x = 0; x < 14; x++) {
          const v = (z * 12 + y) * 14 + x;
          const inside = (x - 7) ** 2 + (y - 6) ** 2 + (z - 5) ** 2 < 12;
          lab[v] = inside ? (x < 7 ? 1 : 2) : 0;
          img[v] = (inside ? 2 : 0) + rng.normal() * 0.3;
        }
    const name = `hip_${String(i).padStart(3, '0')}.nii.gz`;
    await writeNifti(join(dir, 'imagesTr', name), img, geometry(i));
    await writeNifti(join(dir, 'labelsTr', name), lab, geometry(i));
    training.push({ image: `./imagesTr/${name}`, label: `./labelsTr/${name}` });
  }
  writeFileSync(
    join(dir, 'dataset.json'),
    JSON.stringify({ name: 'tiny', modality: { 0: 'MRI' }, labels: { 0: 'background', 1: 'Anterior', 2: 'Posterior' }, training }),
  );
}

describe('npm run predict on MSD-layout images', () => {
  it('writes one label map per image with the image dims and affine', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'volseg-predict-'));
    const data = join(dir, 'msd');
    await msdFolder(data, 4);
    const file = experimentFile(
      dir,
      'msd-tiny',
      `description: tiny msd
dataset: { name: msd, settings: { root: ${JSON.stringify(data)} } }
architecture: { name: unet3d, settings: { depth: 2, baseFilters: 4 } }
strategy: { name: patch, settings: { patchSize: [8, 8, 8] } }
training: { epochs: 1, stepsPerEpoch: 1 }
`,
    );
    const { catalog } = buildContainer();
    const results = join(dir, 'results');
    await new ExperimentRunner(catalog).run(loadExperiment(file, catalog), { resultsDir: results, log: quiet });
    const [row] = readTrials(results);
    expect(row!.status).toBe('ok');
    const out = join(dir, 'predictions');
    const written = await predictImages(catalog, String(row!.model), data, out);
    expect(written.length).toBe(4);
    for (const w of written) {
      const pred = await readNifti(w.file);
      const image = await readNifti(join(data, 'imagesTr', `${w.id}.nii.gz`));
      expect(pred.dims).toEqual(image.dims);
      expect(pred.geometry.pixDims).toEqual(image.geometry.pixDims);
      expect(pred.geometry.srow).toEqual(image.geometry.srow);
      expect([pred.geometry.sformCode, pred.geometry.qformCode, pred.geometry.qfac]).toEqual([2, 1, -1]);
      expect([pred.geometry.quaternC, pred.geometry.qoffsetX]).toEqual([image.geometry.quaternC, image.geometry.qoffsetX]);
      expect(pred.datatypeName).toBe('uint8');
      expect(new Set(pred.data).size).toBeLessThanOrEqual(3);
    }
  });
});
