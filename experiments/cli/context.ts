/**
 * `npm run context -- <experiment> [--profile P]`: how much of the experiment's labelled and mimic volume
 * lies farther than half a patch edge from the evidence that decides its label, per case, for the
 * smallest training input among the sweep's strategies (the patch). Writes
 * results/<experiment>/context[-<profile>].csv (one row per case, then the total) and prints it.
 * Only a dataset that knows what decides its labels can say (the synthetic generator does).
 */
import { join, resolve, dirname } from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { stringify } from 'csv-stringify/sync';
import { loadExperiment, ExperimentError, SettingsError } from '../../core/config/index.js';
import { instantiate } from '../../core/plugins/index.js';
import { outputChannels } from '../../core/evaluation/index.js';
import { buildContainer } from './plugins.js';
import { parseArgs, usage, UsageError, type FlagSpec } from './args.js';
import type { ContextFigures, Shape3 } from '../../core/types.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FLAGS: FlagSpec = {
  profile: { takesValue: true, description: "apply a profile of the experiment file (e.g. 'paper')" },
  set: { takesValue: true, repeatable: true, description: 'override a field: --set dataset.settings.mimics=0 (repeatable)' },
  results: { takesValue: true, description: 'folder for context.csv (default results/<experiment>)' },
  help: { takesValue: false, description: 'this help' },
};

const pct = (part: number, whole: number): string => (whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : '—');

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2), FLAGS);
  if (args.flags.has('help') || args.positional.length !== 1) {
    console.log(usage('npm run context --', '<experiment> [options]', FLAGS));
    return args.flags.has('help') ? 0 : 2;
  }
  const name = args.positional[0]!;
  const file = name.endsWith('.yaml') ? resolve(name) : join(ROOT, 'experiments', `${name}.yaml`);
  const { catalog } = buildContainer();
  const profile = args.flags.get('profile')?.[0];
  const exp = loadExperiment(file, catalog, { profile, overrides: args.flags.get('set') ?? [] });
  const baseDir = join(exp.file, '..');
  const rows: (ContextFigures & { patch: string })[] = [];
  const seen = new Set<string>();
  for (const trial of exp.trials) {
    const key = JSON.stringify([trial.dataset, trial.architecture]);
    if (seen.has(key)) continue;
    seen.add(key);
    const dataset = instantiate(catalog.dataset(trial.dataset.name), trial.dataset.settings, { baseDir });
    if (!dataset.context) {
      throw new Error(`dataset ${trial.dataset.name} cannot say what decides its labels (only a generator such as synthetic-brats can); nothing to report`);
    }
    const net = instantiate(catalog.architecture(trial.architecture.name), trial.architecture.settings, { baseDir }).build({
      inChannels: dataset.channels.length,
      outChannels: outputChannels(dataset.task),
      activation: dataset.task.kind === 'regions' ? 'sigmoid' : 'softmax',
    });
    const ids = dataset.labelledCaseIds();
    const caseShape = (await dataset.load(ids[0]!)).shape;
    // The smallest training input of the sweep's strategies: the patch (the whole volume without one).
    let patch: Shape3 = caseShape;
    for (const t of exp.trials.filter((x) => JSON.stringify([x.dataset, x.architecture]) === key)) {
      const s = instantiate(catalog.strategy(t.strategy.name), t.strategy.settings, { baseDir });
      try {
        const shape = s.trainingShape(caseShape, net);
        if (shape[0] * shape[1] * shape[2] < patch[0] * patch[1] * patch[2]) patch = shape;
      } finally {
        await s.dispose?.();
      }
    }
    const patchText = patch.join('x');
    console.log(`${trial.dataset.name} ${JSON.stringify(trial.dataset.settings)}: patch ${patchText}, half a patch edge = ${patch.map((p) => Math.floor(p / 2)).join('x')} voxels`);
    for (const id of ids) {
      const c = dataset.context(id, patch);
      rows.push({ ...c, patch: patchText });
      console.log(`  ${id}: labelled ${c.labelled}, beyond ${pct(c.labelledBeyond, c.labelled)}; mimic ${c.mimic}, beyond ${pct(c.mimic ? c.mimicBeyond : 0, c.mimic)}`);
    }
  }
  const total = rows.reduce(
    (t, r) => ({ labelled: t.labelled + r.labelled, labelledBeyond: t.labelledBeyond + r.labelledBeyond, mimic: t.mimic + r.mimic, mimicBeyond: t.mimicBeyond + r.mimicBeyond }),
    { labelled: 0, labelledBeyond: 0, mimic: 0, mimicBeyond: 0 },
  );
  console.log(
    `total over ${rows.length} cases: ${pct(total.labelledBeyond, total.labelled)} of the labelled volume (${total.labelledBeyond} of ${total.labelled} voxels) and ` +
      `${pct(total.mimicBeyond, total.mimic)} of the mimic volume (${total.mimicBeyond} of ${total.mimic}) lie farther than half a patch edge from the evidence that decides their label`,
  );
  const dir = resolve(args.flags.get('results')?.[0] ?? join(ROOT, 'results', exp.name));
  mkdirSync(dir, { recursive: true });
  const out = join(dir, `context${profile ? `-${profile}` : ''}.csv`);
  const header = ['case', 'patch', 'labelled', 'labelled_beyond', 'labelled_beyond_fraction', 'mimic', 'mimic_beyond', 'mimic_beyond_fraction'];
  const line = (c: { case: string; patch: string } & Omit<ContextFigures, 'case'>): (string | number)[] => [
    c.case,
    c.patch,
    c.labelled,
    c.labelledBeyond,
    c.labelled ? c.labelledBeyond / c.labelled : 0,
    c.mimic,
    c.mimicBeyond,
    c.mimic ? c.mimicBeyond / c.mimic : 0,
  ];
  const patches = [...new Set(rows.map((r) => r.patch))].join(' ');
  writeFileSync(out, stringify([header, ...rows.map(line), line({ case: 'total', patch: patches, ...total })], { record_delimiter: '\n' }));
  console.log(`wrote ${out}`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof UsageError || e instanceof ExperimentError || e instanceof SettingsError) console.error(e.message);
    else console.error(`context: ${(e as Error).message ?? String(e)}`);
    process.exit(e instanceof UsageError ? 2 : 1);
  },
);
