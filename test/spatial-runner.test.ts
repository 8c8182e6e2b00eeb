/**
 * The spatial strategy through the real runner (MemoryStrategy.trainer): a sweep of full-volume and spatial
 * P = 2 on the same data and seed gives the same losses, the spatial row carries its columns and a
 * per-rank peak (measured and estimated), and a budget below a rank's step makes the trial did-not-fit
 * with that rank's message and no worker thread left running.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadExperiment } from '../core/config/experiment.js';
import { ExperimentRunner } from '../core/experiment/runner.js';
import { readTrials } from '../core/experiment/results.js';
import { WorkerGroup } from '../core/parallel/index.js';
import { buildContainer } from '../experiments/cli/plugins.js';
import { cpu } from './helpers/step.js';

// The native pool is one per process, sized at its first kernel: one thread, as the ranks expect
// (vitest runs each file in its own process).
beforeAll(async () => {
  process.env.VOLSEG_THREADS = '1';
  await cpu();
});

// Every group the strategy starts, to check that none is left running.
const groups: WorkerGroup[] = [];
const start = WorkerGroup.start.bind(WorkerGroup);
const spy = vi.spyOn(WorkerGroup, 'start').mockImplementation(async (opts) => {
  const g = await start(opts);
  groups.push(g);
  return g;
});
afterAll(() => spy.mockRestore());

const quiet = (): void => {};

function sweep(dir: string, name: string, training: string, strategies: string[]): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    `name: ${name}
description: spatial through the runner
dataset: { name: synthetic-brats, settings: { cases: 3, size: 16 } }
architecture: { name: unet3d, settings: { depth: 3, baseFilters: 4 } }
strategy: { name: full-volume }
training: { epochs: 1, stepsPerEpoch: 2, validationFraction: 0.34, ${training} }
axes:
  strategy:
${strategies.map((s) => `    - ${s}`).join('\n')}
`,
  );
  return file;
}

describe('spatial partitioning through the runner', () => {
  let peakWorker = 0;

  it('full-volume and spatial P = 2: both ok, the same final loss (≤ 1e-5 relative), the spatial columns, a per-rank peak', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'volseg-spatial-'));
    const file = sweep(dir, 'spatial-runner', 'saveModel: true', ['{ name: full-volume }', '{ name: spatial, settings: { workers: 2 } }']);
    const { catalog } = buildContainer();
    const results = join(dir, 'results');
    await new ExperimentRunner(catalog).run(loadExperiment(file, catalog), { resultsDir: results, log: quiet });
    const rows = readTrials(results);
    expect(rows.map((r) => [r.strategy, r.status])).toEqual([
      ['full-volume', 'ok'],
      ['spatial', 'ok'],
    ]);
    const [full, spatial] = rows as [Record<string, unknown>, Record<string, unknown>];
    const lf = Number(full.final_loss);
    const ls = Number(spatial.final_loss);
    expect(Math.abs(ls - lf) / Math.abs(lf)).toBeLessThanOrEqual(1e-5);
    expect(Number(spatial.steps)).toBe(2);
    expect(Number(spatial.workers)).toBe(2);
    for (const c of ['peak_worker_bytes', 'peak_workers_sum_bytes', 'exchange_bytes_per_step', 'est_peak_train_bytes', 'peak_train_bytes', 'dice_WT'])
      expect(Number(spatial[c]), c).toBeGreaterThan(0);
    peakWorker = Number(spatial.peak_worker_bytes);
    expect(Number(spatial.peak_train_bytes)).toBe(peakWorker);
    // Two ranks of half the volume each: each below the single-process peak, together above it (halos, each rank's parameters and Adam state).
    expect(peakWorker).toBeLessThan(Number(full.peak_train_bytes));
    expect(Number(spatial.peak_workers_sum_bytes)).toBeGreaterThan(Number(full.peak_train_bytes));
    // Inference ran on the ranks: the row's inference peak is the largest rank's.
    expect(Number(spatial.peak_infer_bytes)).toBeGreaterThan(0);
    expect(Number(spatial.peak_infer_bytes)).toBeLessThan(Number(full.peak_infer_bytes));
    const ratio = Number(spatial.est_peak_train_bytes) / peakWorker;
    console.log(
      `spatial P = 2 at 16³: per-rank peak ${peakWorker} B (estimate ${spatial.est_peak_train_bytes} B, ratio ${ratio.toFixed(3)}); ` +
        `full-volume ${full.peak_train_bytes} B; inference ${spatial.peak_infer_bytes} / ${full.peak_infer_bytes} B; ${spatial.exchange_bytes_per_step} B exchanged per step; final losses ${lf} / ${ls}`,
    );
    expect(ratio).toBeGreaterThan(0.7);
    expect(ratio).toBeLessThan(1.5);
    expect(existsSync(join(String(spatial.model), 'model.json'))).toBe(true);
    expect(groups.length).toBe(1);
    expect(groups.every((g) => g.closed && g.liveWorkers === 0)).toBe(true);
  });

  it("a budget below a rank's step: did-not-fit naming the rank, and no worker thread left running", async () => {
    expect(peakWorker).toBeGreaterThan(0);
    const dir = mkdtempSync(join(tmpdir(), 'volseg-spatial-budget-'));
    const budget = Math.round(peakWorker * 0.6);
    const file = sweep(dir, 'spatial-budget', `deviceMemory: ${budget}, saveModel: false`, ['{ name: spatial, settings: { workers: 2 } }']);
    const { catalog } = buildContainer();
    const results = join(dir, 'results');
    const before = groups.length;
    await new ExperimentRunner(catalog).run(loadExperiment(file, catalog), { resultsDir: results, log: quiet });
    const [row] = readTrials(results);
    expect(row!.status).toBe('did-not-fit');
    console.log(`budget ${budget} B: ${row!.status_detail}`);
    expect(String(row!.status_detail)).toMatch(/^out of device memory at rank [01] \/ train step 1 \/ (forward|loss|backward) \/ [^:]+: an allocation of .+ budget free$/);
    expect(Number(row!.peak_train_bytes)).toBeGreaterThan(budget);
    expect(groups.length).toBe(before + 1);
    expect(groups.every((g) => g.closed && g.liveWorkers === 0)).toBe(true);
  });
});
