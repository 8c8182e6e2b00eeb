/**
 * Shards without Redis: `npm run experiment -- <name> --shard k/n` (or a SLURM array task's
 * SLURM_ARRAY_TASK_ID/MIN/COUNT) runs the trials whose index mod n is k − 1 into <results>/shard-k-of-n/,
 * and `npm run tables -- --merge` joins the shards' folders into records equal to a local run's: the same
 * trials.csv (header, rows in expansion order, every column but the timing ones), cases.csv and curves.csv,
 * and, once the timing columns are set equal, the same summary.md and paired.csv.
 */
import { describe, it, expect } from 'vitest';
import { cpSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readCases, readCurves, readTrials, regenerateTables, TrialRecorder } from '../core/experiment/results.js';
import { parseShard, shardTrials, slurmShard } from '../core/experiment/shards.js';
import { CURVE_TIMING, SWEEP, TRIAL_TIMING, expectSameRecords, run } from './helpers/sweeps.js';

const EXPERIMENT = 'experiments/cli/experiment.ts';
const TABLES = 'experiments/cli/tables.ts';

/** The records of `dir` with every timing column set to one value, and their tables written. */
async function withoutTimings(dir: string, into: string): Promise<string> {
  const recorder = new TrialRecorder(into);
  const same = <R extends Record<string, unknown>>(r: R, cols: string[]): R => ({ ...r, ...Object.fromEntries(cols.filter((c) => c in r).map((c) => [c, c === 'started_at' ? '2026-01-01T00:00:00.000Z' : 1])) });
  for (const r of readTrials(dir)) recorder.append(same(r, TRIAL_TIMING.filter((c) => c !== 'model')));
  recorder.appendCases(readCases(dir));
  recorder.appendCurves(readCurves(dir).map((c) => same(c, CURVE_TIMING)));
  await regenerateTables(into);
  return into;
}

describe('the slices of a sweep', () => {
  it('are round robin over the trial index, cover every trial once, and take SLURM array variables', () => {
    const trials = Array.from({ length: 7 }, (_, trial) => ({ trial })) as Parameters<typeof shardTrials>[0];
    const slices = [1, 2, 3].map((index) => shardTrials(trials, { index, count: 3 }).map((t) => t.trial));
    expect(slices).toEqual([[0, 3, 6], [1, 4], [2, 5]]);
    expect(parseShard('2/3')).toEqual({ index: 2, count: 3 });
    expect(() => parseShard('4/3')).toThrow('--shard 4/3: k must be from 1 to 3');
    expect(() => parseShard('0/3')).toThrow('--shard 0/3: k must be from 1 to 3');
    expect(() => parseShard('two')).toThrow('--shard two: expected k/n, e.g. --shard 2/3');
    expect(slurmShard({})).toBeNull();
    expect(slurmShard({ SLURM_ARRAY_TASK_ID: '0', SLURM_ARRAY_TASK_COUNT: '3', SLURM_ARRAY_TASK_MIN: '0' })!.shard).toEqual({ index: 1, count: 3 });
    expect(slurmShard({ SLURM_ARRAY_TASK_ID: '3', SLURM_ARRAY_TASK_COUNT: '3', SLURM_ARRAY_TASK_MIN: '1' })!.shard).toEqual({ index: 3, count: 3 });
    expect(() => slurmShard({ SLURM_ARRAY_TASK_ID: '4', SLURM_ARRAY_TASK_COUNT: '3', SLURM_ARRAY_TASK_MIN: '0' })).toThrow(
      /gives shard 5\/3: the array's task ids must run from its minimum in steps of 1 .*or pass --shard k\/n/,
    );
  });

  it('shards 1/3, 2/3 and 3/3 merged by npm run tables equal the local run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'volseg-shards-'));
    const local = join(dir, 'local');
    const sharded = join(dir, 'sharded');
    const t0 = performance.now();
    // The local run and the three shards side by side, as a job array runs them; shard 3 learns its slice from SLURM's variables.
    const runs = await Promise.all([
      run(EXPERIMENT, [SWEEP, '--results', local]),
      run(EXPERIMENT, [SWEEP, '--shard', '1/3', '--results', join(sharded, 'shard-1-of-3')]),
      run(EXPERIMENT, [SWEEP, '--shard', '2/3', '--results', join(sharded, 'shard-2-of-3')]),
      run(EXPERIMENT, [SWEEP, '--results', join(sharded, 'shard-3-of-3')], { SLURM_ARRAY_TASK_ID: '2', SLURM_ARRAY_TASK_MIN: '0', SLURM_ARRAY_TASK_COUNT: '3' }),
    ]);
    for (const r of runs) expect(r.code, r.out).toBe(0);
    console.log(`local run and 3 shards: ${Math.round(performance.now() - t0)} ms`);
    expect(runs[3]!.out).toContain('shard 3/3 from SLURM_ARRAY_TASK_ID=2, SLURM_ARRAY_TASK_MIN=0, SLURM_ARRAY_TASK_COUNT=3');
    expect(runs[3]!.out).toMatch(/shard 3\/3: 2 of 6 trials \(indices 2, 5\)/);
    expect(readTrials(join(sharded, 'shard-2-of-3')).map((r) => r.trial)).toEqual([1, 4]);

    // `--merge <folder>`: the shard folders in it, merged into it.
    const merged = await run(TABLES, ['--merge', sharded]);
    expect(merged.code, merged.out).toBe(0);
    expect(merged.out).toMatch(/merged 6 trial\(s\) into .*sharded/);
    expectSameRecords(sharded, local);
    for (const f of ['summary.md', 'paired.csv']) expect(readdirSync(sharded)).toContain(f);

    // The tables of the merged records are the local run's once the timings are the same.
    const a = await withoutTimings(sharded, join(dir, 'sharded-untimed'));
    const b = await withoutTimings(local, join(dir, 'local-untimed'));
    const text = (d: string, f: string): string => readFileSync(join(d, f), 'utf8').replace(/- Generated: .*\n/, '');
    expect(text(a, 'summary.md')).toBe(text(b, 'summary.md'));
    expect(text(a, 'paired.csv')).toBe(text(b, 'paired.csv'));

    // Merging again adds nothing; a shard run again with the merged records beside it is all recorded.
    cpSync(join(sharded, 'trials.csv'), join(dir, 'trials-before.csv'));
    const again = await run(TABLES, ['--merge', join(sharded, 'shard-1-of-3'), join(sharded, 'shard-2-of-3'), join(sharded, 'shard-3-of-3')]);
    expect(again.code, again.out).toBe(0);
    expect(again.out).toMatch(/6 trial\(s\) recorded in more than one folder: the first record of each is kept/);
    expect(readFileSync(join(sharded, 'trials.csv'), 'utf8')).toBe(readFileSync(join(dir, 'trials-before.csv'), 'utf8'));
  }, 180_000);

  it('says what is wrong with a bad --shard or --merge', async () => {
    const bad = await run(EXPERIMENT, [SWEEP, '--shard', '4/3']);
    expect(bad.code).toBe(2);
    expect(bad.out).toContain('error: --shard 4/3: k must be from 1 to 3');
    const dir = mkdtempSync(join(tmpdir(), 'volseg-shards-'));
    const none = await run(TABLES, ['--merge', join(dir, 'nothing-here')]);
    expect(none.code).toBe(2);
    expect(none.out).toMatch(/nothing-here: neither a results folder with a trials.csv nor an experiment with shard folders/);
  }, 60_000);
});
