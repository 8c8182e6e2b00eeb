/**
 * `npm run tables -- <experiment> [...] | --all | --readme`: regenerates results/<experiment>/summary.md, paired.csv
 * and the SVG plots (plots/) from the records alone (trials.csv, cases.csv, curves.csv), training nothing. The output is
 * what the run itself wrote, but for the generated-at line. `--readme` fills README.md's marked result
 * blocks from the committed records (experiments/cli/readme-tables.ts). `--merge` joins the results folders
 * of a sweep's shards (`npm run experiment -- <name> --shard k/n`) into one, then writes its tables.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mergeRecords, regenerateTables } from '../../core/experiment/index.js';
import { parseArgs, usage, UsageError, type FlagSpec } from './args.js';
import { readmeBlocks, renderReadme } from './readme-tables.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FLAGS: FlagSpec = {
  all: { takesValue: false, description: 'every folder of results/ that holds a trials.csv' },
  readme: { takesValue: false, description: "fill README.md's marked result blocks (<!-- table:NAME -->) from the committed records" },
  results: { takesValue: true, description: 'the results folder to read (default results/<experiment>; one experiment only); with --merge, the folder to merge into' },
  merge: {
    takesValue: false,
    description: "merge shards' results folders: `<experiment> --merge` takes results/<experiment>/shard-*-of-*/ into results/<experiment>/; `--merge DIR... --results OUT` names them",
  },
  help: { takesValue: false, description: 'this help' },
};

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2), FLAGS);
  const all = args.flags.has('all');
  if (args.flags.has('readme')) {
    const file = join(ROOT, 'README.md');
    const before = readFileSync(file, 'utf8');
    const after = renderReadme(before, ROOT);
    writeFileSync(file, after);
    console.log(`${before === after ? 'unchanged' : 'wrote'} ${file}: ${readmeBlocks(after).length} blocks (${readmeBlocks(after).join(', ')})`);
    if (!all && args.positional.length === 0) return 0;
  }
  if (args.flags.has('merge') && !args.flags.has('help')) return merge(args.positional, args.flags.get('results')?.[0], join(ROOT, 'results'));
  if (args.flags.has('help') || (!all && args.positional.length === 0 && !args.flags.has('results'))) {
    console.log(usage('npm run tables --', '<experiment> [...] | --all', FLAGS));
    return args.flags.has('help') ? 0 : 2;
  }
  const resultsRoot = join(ROOT, 'results');
  let dirs: string[];
  if (args.flags.has('results')) {
    if (all || args.positional.length > 1) throw new UsageError('--results names one folder: give one experiment, not --all or several');
    dirs = [resolve(args.flags.get('results')![0]!)];
  } else if (all) {
    dirs = readdirSync(resultsRoot, { withFileTypes: true })
      .filter((d) => d.isDirectory() && existsSync(join(resultsRoot, d.name, 'trials.csv')))
      .map((d) => join(resultsRoot, d.name))
      .sort();
  } else {
    dirs = args.positional.map((name) => join(resultsRoot, name));
  }
  for (const dir of dirs) {
    if (!existsSync(join(dir, 'trials.csv'))) {
      const known = existsSync(resultsRoot) ? readdirSync(resultsRoot).filter((n) => existsSync(join(resultsRoot, n, 'trials.csv'))) : [];
      throw new UsageError(`${join(dir, 'trials.csv')}: no trial records; run the experiment first (results with records: ${known.join(', ') || 'none'})`);
    }
    for (const f of await regenerateTables(dir)) console.log(`wrote ${f}`);
  }
  return 0;
}

/**
 * `--merge`: each positional is a results folder (it holds trials.csv) or an experiment whose shard folders
 * (results/<experiment>/shard-k-of-n/) are taken; the records go into --results, by default the folder
 * above the shards when they share one.
 */
async function merge(positional: string[], results: string | undefined, resultsRoot: string): Promise<number> {
  if (positional.length === 0) throw new UsageError('--merge needs folders to merge: `npm run tables -- <experiment> --merge`, or `--merge DIR DIR ... --results OUT`');
  const shardName = /^shard-(\d+)-of-(\d+)$/;
  const folders: string[] = [];
  const parents = new Set<string>();
  for (const p of positional) {
    const dir = resolve(p);
    if (existsSync(join(dir, 'trials.csv'))) {
      folders.push(dir);
      parents.add(dirname(dir));
      continue;
    }
    const expDir = existsSync(dir) ? dir : join(resultsRoot, p);
    const shards = existsSync(expDir) ? readdirSync(expDir).filter((n) => shardName.test(n) && existsSync(join(expDir, n, 'trials.csv'))) : [];
    if (shards.length === 0) throw new UsageError(`${p}: neither a results folder with a trials.csv nor an experiment with shard folders (${join(expDir, 'shard-k-of-n')}/trials.csv)`);
    const byIndex = (n: string): number => Number(shardName.exec(n)![1]);
    for (const n of shards.sort((a, b) => byIndex(a) - byIndex(b))) folders.push(join(expDir, n));
    parents.add(expDir);
  }
  if (!results && parents.size !== 1)
    throw new UsageError(`--merge: the folders are under ${[...parents].join(', ')}; say where the merged records go with --results OUT`);
  const into = resolve(results ?? [...parents][0]!);
  // The shards' n: a missing shard is worth a word (the merge still takes what there is).
  const counts = new Set(folders.map((f) => shardName.exec(basename(f))?.[2]).filter((n): n is string => n !== undefined));
  for (const n of counts) {
    const have = new Set(folders.map((f) => shardName.exec(basename(f))).filter((m) => m && m[2] === n).map((m) => Number(m![1])));
    const missing = Array.from({ length: Number(n) }, (_, i) => i + 1).filter((k) => !have.has(k));
    if (missing.length) console.warn(`warning: shard${missing.length > 1 ? 's' : ''} ${missing.map((k) => `${k}/${n}`).join(', ')} not found: the merge holds the others only`);
  }
  const report = mergeRecords(into, folders);
  for (const f of report.folders) console.log(`  ${f.dir}: ${f.trials} trial(s), ${f.added} taken`);
  if (report.duplicates.length) console.log(`  ${report.duplicates.length} trial(s) recorded in more than one folder: the first record of each is kept (${report.duplicates.join(', ')})`);
  console.log(`merged ${report.trials} trial(s) into ${into}`);
  for (const f of await regenerateTables(into)) console.log(`wrote ${f}`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`error: ${(e as Error).message}`);
    process.exit(e instanceof UsageError ? 2 : 1);
  },
);
