/**
 * Shards: the k-th of n deterministic slices of a sweep's trials, for running a sweep as n independent
 * jobs (a SLURM job array) without a queue. The slice is round robin over the expansion order: shard k
 * of n runs the trials whose index i satisfies i mod n = k − 1. Axes vary the first one slowest, so
 * contiguous blocks would hand one shard all the trials of one strategy (the slow one, often); round robin
 * spreads every configuration over the shards. Each shard writes its own results folder; `npm run tables
 * -- --merge` joins them (mergeRecords, results.ts).
 */
import type { TrialConfig } from '../config/index.js';

/** Shard `index` (1-based) of `count`. */
export interface Shard {
  index: number;
  count: number;
}

/** The trials of one shard, in expansion order. */
export function shardTrials(trials: TrialConfig[], shard: Shard): TrialConfig[] {
  checkShard(shard);
  return trials.filter((t) => t.trial % shard.count === shard.index - 1);
}

/** A bad shard, said for a person: which value, and what would be right. */
export class ShardError extends Error {}

function checkShard({ index, count }: Shard): void {
  if (!Number.isInteger(count) || count < 1) throw new ShardError(`shard count ${count}: must be a whole number ≥ 1`);
  if (!Number.isInteger(index) || index < 1 || index > count) throw new ShardError(`shard ${index}/${count}: k must be a whole number from 1 to ${count}`);
}

/** `k/n` as `--shard` takes it (`2/3`: the second of three). */
export function parseShard(text: string): Shard {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!m) throw new ShardError(`--shard ${text}: expected k/n, e.g. --shard 2/3 (the second of three slices)`);
  const shard = { index: Number(m[1]), count: Number(m[2]) };
  if (shard.count < 1) throw new ShardError(`--shard ${text}: n must be at least 1`);
  if (shard.index < 1 || shard.index > shard.count) throw new ShardError(`--shard ${text}: k must be from 1 to ${shard.count}`);
  return shard;
}

/**
 * The shard of a SLURM array task: SLURM_ARRAY_TASK_ID counted from SLURM_ARRAY_TASK_MIN (0 when unset)
 * among SLURM_ARRAY_TASK_COUNT tasks, so `--array=0-2` and `--array=1-3` both give shards 1/3, 2/3, 3/3.
 * Null when the variables are not set. An array with a step (`--array=0-10:2`) does not number its tasks
 * 1..n and is an error.
 */
export function slurmShard(env: NodeJS.ProcessEnv = process.env): { shard: Shard; source: string } | null {
  const id = env.SLURM_ARRAY_TASK_ID;
  const count = env.SLURM_ARRAY_TASK_COUNT;
  if (id === undefined || count === undefined || id === '' || count === '') return null;
  const min = env.SLURM_ARRAY_TASK_MIN ?? '0';
  const source = `SLURM_ARRAY_TASK_ID=${id}, SLURM_ARRAY_TASK_MIN=${env.SLURM_ARRAY_TASK_MIN ?? '(unset, taken as 0)'}, SLURM_ARRAY_TASK_COUNT=${count}`;
  const [i, lo, n] = [Number(id), Number(min), Number(count)];
  if (![i, lo, n].every(Number.isInteger)) throw new ShardError(`${source}: not whole numbers`);
  const shard = { index: i - lo + 1, count: n };
  if (shard.index < 1 || shard.index > n)
    throw new ShardError(`${source} gives shard ${shard.index}/${n}: the array's task ids must run from its minimum in steps of 1 (e.g. --array=0-${n - 1}); or pass --shard k/n`);
  return { shard, source };
}

/** The default results folder of a shard: `<results>/shard-k-of-n`. */
export function shardFolderName({ index, count }: Shard): string {
  return `shard-${index}-of-${count}`;
}
