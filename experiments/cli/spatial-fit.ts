/**
 * `npm run spatial-fit -- [--budget 256MiB] [--max 256] [--check]`: the largest cube each strategy of
 * experiments/spatial-partitioning.yaml fits under a fixed per-accelerator budget.
 *
 * For every strategy of the sweep (full volume, spatial with P = 1, 2, 4) it searches the cube edges that
 * are multiples of the network's divisor (8 for its unet3d depth 4), up to --max, for the largest whose estimated per-rank training
 * peak (the runner's plan: the core estimator, per rank for spatial) is within the budget. With --check it
 * then trains one step at that edge under the budget through the runner (the meter of every rank watching)
 * and records whether it fit and its measured peak. Writes results/spatial-partitioning/largest-cube.csv.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'csv-stringify/sync';
import { formatBytes, loadExperiment, parseBytes } from '../../core/config/index.js';
import { ExperimentRunner, describeMachine } from '../../core/experiment/index.js';
import { initBackend } from '../../core/backend/index.js';
import { buildContainer } from './plugins.js';
import { parseArgs, usage, UsageError, type FlagSpec } from './args.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FILE = join(ROOT, 'experiments', 'spatial-partitioning.yaml');
const FLAGS: FlagSpec = {
  budget: { takesValue: true, description: 'per-accelerator device budget (default 256MiB)' },
  max: { takesValue: true, description: 'largest cube edge searched (default 256)' },
  check: { takesValue: false, description: 'train one step at each found edge under the budget and measure it' },
  help: { takesValue: false, description: 'this help' },
};

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2), FLAGS);
  if (args.flags.has('help')) {
    console.log(usage('npm run spatial-fit --', '[options]', FLAGS));
    return 0;
  }
  const budget = parseBytes(args.flags.get('budget')?.[0] ?? '256MiB', '--budget');
  const max = Number(args.flags.get('max')?.[0] ?? 256);
  if (!Number.isInteger(max) || max < 8) throw new UsageError(`--max must be a whole number ≥ 8, got ${args.flags.get('max')?.[0]}`);
  const { catalog } = buildContainer();
  await initBackend('cpu');
  const runner = new ExperimentRunner(catalog);
  const at = (edge: number, extra: string[] = []) =>
    loadExperiment(FILE, catalog, { overrides: [`dataset.settings.size=${edge}`, 'axes.seed=[1]', 'training.deviceMemory=', ...extra] });
  // The divisor from a plan at an edge every P can split.
  const base = at(128);
  const rows: Record<string, string | number>[] = [];
  for (const [k, trial] of base.trials.entries()) {
    // Peaks grow with the edge: the last multiple of the network's divisor whose estimate fits.
    const first = await runner.planTrial(base, trial);
    await first.strategy.dispose?.();
    const divisor = first.net.divisor;
    let best = 0;
    let bestPeak = NaN;
    for (let edge = divisor; edge <= max; edge += divisor) {
      let peak: number;
      try {
        const p = await runner.planTrial(at(edge), at(edge).trials[k]!);
        await p.strategy.dispose?.();
        peak = p.estimate.peak;
      } catch {
        continue; // an edge the partition cannot split (fewer planes than P × divisor)
      }
      if (peak > budget) break;
      best = edge;
      bestPeak = peak;
    }
    const row: Record<string, string | number> = { configuration: trial.label, budget_bytes: budget, largest_edge: best, est_peak_bytes: bestPeak };
    if (args.flags.has('check') && best > 0) {
      const dir = mkdtempSync(join(tmpdir(), 'volseg-spatial-fit-'));
      const exp = at(best, [`training.deviceMemory=${budget}`, 'training.epochs=1', 'training.stepsPerEpoch=1', 'training.evaluate=false', 'training.saveModel=false', 'dataset.settings.cases=2']);
      const only = { ...exp, trials: [exp.trials[k]!] };
      const [r] = await runner.run(only, { resultsDir: dir, fresh: true, log: () => {} });
      row.checked_status = String(r?.status ?? 'no record');
      row.measured_peak_bytes = Number(r?.peak_train_bytes ?? NaN);
    }
    rows.push(row);
    console.log(
      `${row.configuration}: largest cube ${best}³ under ${formatBytes(budget)} (estimated ${formatBytes(bestPeak)})` +
        (row.checked_status ? `; one step there: ${row.checked_status}, measured ${formatBytes(Number(row.measured_peak_bytes))}` : ''),
    );
  }
  const out = join(ROOT, 'results', 'spatial-partitioning');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'largest-cube.csv'), stringify(rows.map((r) => ({ ...r, machine: describeMachine() })), { header: true }));
  console.log(`wrote ${join(out, 'largest-cube.csv')}`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`error: ${(e as Error).message}`);
    process.exit(e instanceof UsageError ? 2 : 1);
  },
);
