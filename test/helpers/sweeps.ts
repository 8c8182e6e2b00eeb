/**
 * Running the commands (experiment, worker, tables) as child processes, the way a person runs them, and
 * comparing two results folders' records: what must be equal between a local run and a sweep run another
 * way (queue, shards), and what legitimately differs (times, resident memory, where the model is).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { expect } from 'vitest';
import { readCases, readCurves, readTrials } from '../../core/experiment/results.js';

export const ROOT = resolve(__dirname, '../..');
export const SWEEP = join(ROOT, 'test/fixtures/experiments/sweeps/sweep-tiny.yaml');

/** trials.csv columns that differ between two runs of the same trials on one machine. */
export const TRIAL_TIMING = ['step_seconds', 'train_seconds', 'infer_seconds', 'curve_seconds', 'recompute_seconds', 'started_at', 'rss_peak_bytes', 'model'];
/** curves.csv columns that differ between two runs. */
export const CURVE_TIMING = ['train_seconds', 'eval_seconds'];

/** A command started as a child process, its output gathered. */
export class Command {
  readonly child: ChildProcess;
  out = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: { re: RegExp; from: number; done: (m: RegExpMatchArray) => void }[] = [];

  constructor(script: string, args: string[], env: Record<string, string> = {}) {
    this.child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, script), ...args], {
      cwd: ROOT,
      env: { ...process.env, VOLSEG_BACKEND: 'cpu', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const take = (d: Buffer): void => {
      this.out += d;
      for (const w of [...this.waiters]) {
        const m = this.out.slice(w.from).match(w.re);
        if (m) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.done(m);
        }
      }
    };
    this.child.stdout!.on('data', take);
    this.child.stderr!.on('data', take);
    this.exited = new Promise((done) => this.child.on('close', (code, signal) => done({ code, signal })));
  }

  /** Resolves with the first match of `re` in the output from `from` (default: from now on). */
  waitFor(re: RegExp, timeoutMs = 60_000, from = this.out.length): Promise<RegExpMatchArray> {
    return new Promise((done, fail) => {
      const m = this.out.slice(from).match(re);
      if (m) return done(m);
      const timer = setTimeout(() => fail(new Error(`no ${re} in ${timeoutMs} ms; output:\n${this.out}`)), timeoutMs);
      this.waiters.push({ re, from, done: (x) => (clearTimeout(timer), done(x)) });
    });
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<unknown> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}

/** Runs a command to its end. */
export async function run(script: string, args: string[], env?: Record<string, string>): Promise<{ code: number | null; out: string }> {
  const c = new Command(script, args, env);
  const { code } = await c.exited;
  return { code, out: c.out };
}

/**
 * `actual`'s records equal `expected`'s: the same trials.csv header, every trial once with every column equal
 * but the timing ones (dice_*, final_loss, status, peaks, steps…: exactly, as the CSV text holds them), and
 * the same case rows and curve points. With `anyOrder` (a queue records trials as they finish) the rows are
 * compared in expansion order (by `trial`, stable within a trial); otherwise in the order written.
 */
export function expectSameRecords(actual: string, expected: string, opts: { anyOrder?: boolean } = {}): void {
  const ordered = <R extends { trial?: unknown }>(rows: R[]): R[] =>
    opts.anyOrder ? rows.map((r, i) => ({ r, i })).sort((x, y) => Number(x.r.trial) - Number(y.r.trial) || x.i - y.i).map((x) => x.r) : rows;
  const a = ordered(readTrials(actual));
  const e = ordered(readTrials(expected));
  expect(Object.keys(a[0] ?? {})).toEqual(Object.keys(e[0] ?? {}));
  expect(a.map((r) => r.trial_id)).toEqual(e.map((r) => r.trial_id));
  const strip = <T extends Record<string, unknown>>(r: T, cols: string[]): Record<string, unknown> => Object.fromEntries(Object.entries(r).filter(([k]) => !cols.includes(k)));
  for (const [i, r] of a.entries()) {
    expect(strip(r, TRIAL_TIMING), `trial ${r.trial} (${r.trial_id})`).toEqual(strip(e[i]!, TRIAL_TIMING));
    for (const c of ['dice_mean', 'dice_WT', 'dice_TC', 'dice_ET', 'final_loss']) expect(typeof r[c], c).toBe('number');
  }
  expect(ordered(readCases(actual))).toEqual(ordered(readCases(expected)));
  expect(ordered(readCurves(actual)).map((c) => strip(c, CURVE_TIMING))).toEqual(ordered(readCurves(expected)).map((c) => strip(c, CURVE_TIMING)));
}
