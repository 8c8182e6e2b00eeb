/**
 * `npm run tables -- <experiment> [...] | --all | --readme`: regenerates results/<experiment>/summary.md, paired.csv
 * and the SVG plots (plots/) from the records alone (trials.csv, cases.csv, curves.csv), training nothing. The output is
 * what the run itself wrote, but for the generated-at line. `--readme` fills README.md's marked result
 * blocks from the committed records (experiments/cli/readme-tables.ts).
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { regenerateTables } from '../../core/experiment/index.js';
import { parseArgs, usage, UsageError, type FlagSpec } from './args.js';
import { readmeBlocks, renderReadme } from './readme-tables.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FLAGS: FlagSpec = {
  all: { takesValue: false, description: 'every folder of results/ that holds a trials.csv' },
  readme: { takesValue: false, description: "fill README.md's marked result blocks (<!-- table:NAME -->) from the committed records" },
  results: { takesValue: true, description: 'the results folder to read (default results/<experiment>; one experiment only)' },
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

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`error: ${(e as Error).message}`);
    process.exit(e instanceof UsageError ? 2 : 1);
  },
);
