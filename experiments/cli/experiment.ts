/**
 * `npm run experiment -- <name>`: runs experiments/<name>.yaml and writes results/<name>/trials.csv,
 * cases.csv, curves.csv and summary.md. A re-run resumes: trials already recorded are skipped (`--fresh`
 * starts over, moving the old records aside). `--list` lists experiments; `--dry-run` prints every trial
 * with its estimated peak memory and runs nothing. `--shard k/n` runs one deterministic slice (SLURM job
 * arrays: SLURM_ARRAY_TASK_ID/COUNT are read when set) into results/<name>/shard-k-of-n/; `--queue
 * redis://host:port` puts the trials on a queue that `npm run worker` processes pull from, and records
 * their results as they arrive (core/queue).
 */
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadExperiment, listExperiments, ExperimentError, formatBytes, SettingsError } from '../../core/config/index.js';
import { ExperimentRunner, parseShard, shardFolderName, shardTrials, slurmShard, ShardError, type Shard } from '../../core/experiment/index.js';
import { runCoordinator, QueueError } from '../../core/queue/index.js';
import { chooseBackend, initBackend } from '../../core/backend/index.js';
import { parameterCount } from '../../core/engine/index.js';
import { buildContainer } from './plugins.js';
import { parseArgs, usage, UsageError, runCli, type FlagSpec } from './args.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FLAGS: FlagSpec = {
  list: { takesValue: false, description: 'list the experiments in experiments/' },
  profile: { takesValue: true, description: "apply a profile of the experiment file (e.g. 'paper')" },
  set: { takesValue: true, repeatable: true, description: 'override a field: --set training.epochs=2 (repeatable)' },
  backend: { takesValue: true, description: 'cpu | tensorflow | tensorflow-gpu | webgpu | auto (overrides VOLSEG_BACKEND and the file)' },
  'dry-run': { takesValue: false, description: 'print the trials and their estimated peak memory; run nothing' },
  explain: { takesValue: false, description: 'with --dry-run: also list what is live at each estimated peak' },
  results: { takesValue: true, description: 'results folder (default results/<experiment>)' },
  fresh: { takesValue: false, description: 'start over: move the old records aside (kept, renamed with the time) instead of resuming' },
  shard: { takesValue: true, description: 'k/n: run the k-th of n slices of the trials (trial index mod n = k-1) into <results>/shard-k-of-n; SLURM_ARRAY_TASK_ID/COUNT give it when set' },
  queue: { takesValue: true, description: 'redis://host:port: enqueue the trials for `npm run worker` processes and record their results as they arrive' },
  models: { takesValue: true, description: "with --queue: the folder (shared with the workers) for the trained models (default <results>/models)" },
  help: { takesValue: false, description: 'this help' },
};

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2), FLAGS);
  const expDir = join(ROOT, 'experiments');
  if (args.flags.has('help')) {
    console.log(usage('npm run experiment --', '<name> [options]', FLAGS));
    return 0;
  }
  if (args.flags.has('list') || args.positional.length === 0) {
    const list = listExperiments(expDir);
    console.log('experiments (npm run experiment -- <name>):');
    for (const e of list) console.log(`  ${e.name.padEnd(24)} ${e.trials !== undefined ? `${e.trials} trials  ` : ''}${e.description}`);
    if (!args.flags.has('list')) console.log(`\n${usage('npm run experiment --', '<name> [options]', FLAGS)}`);
    return args.flags.has('list') ? 0 : 2;
  }
  const name = args.positional[0]!;
  const file = name.endsWith('.yaml') ? resolve(name) : join(expDir, `${name}.yaml`);
  const { catalog } = buildContainer();
  const exp = loadExperiment(file, catalog, { profile: args.flags.get('profile')?.[0], overrides: args.flags.get('set') ?? [] });
  console.log(`${exp.name}${exp.profile ? ` (profile ${exp.profile})` : ''}: ${exp.trials.length} trial(s) — ${exp.description}`);
  // Steps set on the command line do not limit a voxel or time budget: say so rather than run longer than asked.
  const paced = (args.flags.get('set') ?? []).filter((s) => /^training\.(epochs|stepsPerEpoch)=/.test(s));
  const budget = exp.trials[0]?.training.budget;
  if (paced.length && budget && budget !== 'steps')
    console.log(`note: ${paced.join(', ')} only paces the log: this experiment's budget is ${budget}; add --set training.budget=steps to train epochs × stepsPerEpoch steps`);

  const shard = shardOf(args.flags.get('shard')?.[0]);
  if (args.flags.has('dry-run')) {
    // Estimates depend on the backend (the cpu backend's fused loss and optimizer allocate less).
    const backend = await initBackend(chooseBackend(args.flags.get('backend')?.[0], exp.trials[0]?.training.backend as string | undefined));
    console.log(`estimates for backend ${backend.label}`);
    const runner = new ExperimentRunner(catalog);
    for (const t of shard ? shardTrials(exp.trials, shard) : exp.trials) {
      try {
        const p = await runner.planTrial(exp, t, { breakdown: args.flags.has('explain') });
        await p.strategy.dispose?.();
        const budget = t.training.deviceMemory as number | undefined;
        const fit = budget === undefined ? '' : p.estimate.peak <= budget ? `fits ${formatBytes(budget)}` : `exceeds ${formatBytes(budget)}`;
        console.log(
          `  trial ${t.trial}: ${t.label}\n     input ${p.stepShape.join('x')}, ${parameterCount(p.net)} params, estimated peak ${formatBytes(p.estimate.peak)} (at ${p.estimate.at})${fit ? `, ${fit}` : ''}`,
        );
        // What is live at the peak, largest first (entries under 1% of the peak summed into one line).
        const parts = p.estimate.breakdown ?? [];
        const big = parts.filter((b) => b.bytes >= p.estimate.peak / 100);
        const rest = parts.filter((b) => b.bytes < p.estimate.peak / 100).reduce((n, b) => n + b.bytes, 0);
        for (const b of big) console.log(`       ${formatBytes(b.bytes).padStart(11)}  ${b.what}`);
        if (big.length && rest) console.log(`       ${formatBytes(rest).padStart(11)}  (${parts.length - big.length} smaller entries)`);
      } catch (e) {
        console.log(`  trial ${t.trial}: ${t.label}\n     cannot estimate: ${(e as Error).message}`);
      }
    }
    return 0;
  }
  const queue = args.flags.get('queue')?.[0];
  if (shard && queue) throw new UsageError(`--shard ${shard.index}/${shard.count} and --queue: choose one (a queue spreads every trial over the workers; shards are for runs without Redis)`);
  if (args.flags.has('models') && !queue) throw new UsageError('--models is for --queue (a local run keeps its models in <results>/models)');
  const base = resolve(args.flags.get('results')?.[0] ?? join(ROOT, 'results', exp.name));
  const resultsDir = shard && !args.flags.has('results') ? join(base, shardFolderName(shard)) : base;
  if (shard) {
    const mine = shardTrials(exp.trials, shard);
    console.log(`shard ${shard.index}/${shard.count}: ${mine.length} of ${exp.trials.length} trials (indices ${mine.map((t) => t.trial).join(', ') || 'none'}) into ${resultsDir}`);
  }
  const runner = new ExperimentRunner(catalog);
  if (queue) {
    const done = await runCoordinator(runner, exp, {
      url: queue,
      resultsDir,
      modelsDir: args.flags.has('models') ? resolve(args.flags.get('models')![0]!) : undefined,
      backend: args.flags.get('backend')?.[0],
      fresh: args.flags.has('fresh'),
      projectRoot: ROOT,
    });
    console.log(`\nwrote ${join(resultsDir, 'trials.csv')} and ${join(resultsDir, 'summary.md')}`);
    return done.failed === done.recordedNow && done.recordedNow > 0 ? 1 : 0;
  }
  const rows = await runner.run(exp, { resultsDir, backend: args.flags.get('backend')?.[0], fresh: args.flags.has('fresh'), shard });
  const failed = rows.filter((r) => String(r.status).startsWith('failed')).length;
  console.log(`\nwrote ${join(resultsDir, 'trials.csv')} and ${join(resultsDir, 'summary.md')}${failed ? ` (${failed} trial(s) failed)` : ''}`);
  return failed === rows.length && rows.length > 0 ? 1 : 0;
}

/** --shard k/n, else the SLURM array task's shard, else none. */
function shardOf(flag: string | undefined): Shard | undefined {
  if (flag !== undefined) return parseShard(flag);
  const slurm = slurmShard();
  if (slurm) console.log(`shard ${slurm.shard.index}/${slurm.shard.count} from ${slurm.source}`);
  return slurm?.shard;
}

runCli(main, [ExperimentError, SettingsError, ShardError, QueueError]);
