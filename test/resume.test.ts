/**
 * Kill-safe sweeps: `npm run experiment` killed with SIGKILL at random moments, then let finish, records
 * each trial exactly once with the numbers of an uninterrupted run; a re-run skips what is recorded;
 * `--fresh` moves the old records aside; a torn last record is dropped, never read as a trial.
 */
import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, readdirSync, appendFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { readTrials, readCases, readCurves, TrialRecorder, completePrefix } from '../core/experiment/results.js';
import { SeededRng } from '../core/data/rng.js';

const ROOT = resolve(__dirname, '..');
const CLI = join(ROOT, 'experiments/cli/experiment.ts');

const SWEEP = `name: resume
description: a tiny sweep to kill
dataset: { name: synthetic-brats, settings: { cases: 4, size: 16 } }
architecture: { name: unet3d, settings: { depth: 2, baseFilters: 4 } }
strategy: { name: full-volume }
training: { epochs: 3, stepsPerEpoch: 6, curveEvery: 5, validationFraction: 0.25 }
axes:
  strategy: [{ name: full-volume }, { name: patch, settings: { patchSize: 8, overlap: 0.25 } }]
  seed: [1, 2, 3]
`;

/**
 * Runs the experiment CLI; with `killAfterMs`, kills it with SIGKILL that long after it starts its first
 * trial. Resolves with its output and when (ms after spawning) the first trial started.
 */
function runCli(
  file: string,
  results: string,
  opts: { killAfterMs?: number; extra?: string[] } = {},
): Promise<{ code: number | null; signal: string | null; out: string; firstTrialMs: number }> {
  return new Promise((done, fail) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, file, '--results', results, ...(opts.extra ?? [])], {
      cwd: ROOT,
      env: { ...process.env, VOLSEG_BACKEND: 'cpu' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let firstTrialMs = NaN;
    let timer: NodeJS.Timeout | undefined;
    child.stdout.on('data', (d) => {
      out += d;
      if (Number.isNaN(firstTrialMs) && /^trial \d+\//m.test(out)) {
        firstTrialMs = performance.now() - t0;
        if (opts.killAfterMs !== undefined) timer = setTimeout(() => child.kill('SIGKILL'), opts.killAfterMs);
      }
    });
    child.stderr.on('data', (d) => (out += d));
    child.on('error', fail);
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      done({ code, signal, out, firstTrialMs });
    });
  });
}

const COMPARED = ['status', 'dice_mean', 'dice_WT', 'final_loss', 'peak_train_bytes', 'peak_infer_bytes', 'est_peak_train_bytes', 'steps'];

describe('a sweep killed with SIGKILL and resumed', () => {
  it('records each trial once, with the numbers of an uninterrupted run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'volseg-resume-'));
    const file = join(dir, 'resume.yaml');
    writeFileSync(file, SWEEP);
    const reference = join(dir, 'reference');
    const t0 = performance.now();
    const first = await runCli(file, reference);
    const trainingMs = performance.now() - t0 - first.firstTrialMs;
    expect(first.code, first.out).toBe(0);
    const expected = new Map(readTrials(reference).map((r) => [r.trial_id, r]));
    expect(expected.size).toBe(6);

    const killed = join(dir, 'killed');
    const rng = new SeededRng(2026);
    let kills = 0;
    const progress: number[] = [];
    for (let k = 0; k < 5; k++) {
      // At a random moment of what is left to run (each resumed run has less to do).
      const left = 6 - (existsSync(join(killed, 'trials.csv')) ? readTrials(killed).length : 0);
      const r = await runCli(file, killed, { killAfterMs: Math.floor(rng.next() * 0.8 * trainingMs * (left / 6)) });
      if (r.signal === 'SIGKILL') kills++;
      progress.push(existsSync(join(killed, 'trials.csv')) ? readTrials(killed).length : 0);
    }
    console.log(`uninterrupted trials ${Math.round(trainingMs)} ms; trials recorded after each kill: ${progress.join(', ')}`);
    // The kills fell inside the sweep: some after trials had been recorded, with trials still to run.
    expect(progress.filter((n) => n > 0 && n < 6).length, progress.join(', ')).toBeGreaterThanOrEqual(2);
    expect(kills, 'runs that were killed before they finished').toBeGreaterThanOrEqual(4);
    const last = await runCli(file, killed);
    expect(last.code, last.out).toBe(0);

    const rows = readTrials(killed);
    expect(rows.map((r) => r.trial_id).sort()).toEqual([...expected.keys()].sort());
    for (const r of rows) {
      const e = expected.get(r.trial_id)!;
      for (const c of COMPARED) expect(r[c], `${r.trial_id} ${c}`).toEqual(e[c]);
    }
    // Per-case rows and curve points: once per trial, the same as uninterrupted.
    const key = (c: { trial_id?: unknown; case?: unknown; region?: unknown; step?: unknown }) => `${c.trial_id} ${c.case ?? ''} ${c.region ?? ''} ${c.step ?? ''}`;
    const cases = readCases(killed).map(key).sort();
    expect(cases).toEqual(readCases(reference).map(key).sort());
    expect(new Set(cases).size).toBe(cases.length);
    const curves = readCurves(killed);
    expect(curves.map(key).sort()).toEqual(readCurves(reference).map(key).sort());
    for (const c of curves) {
      const ref = readCurves(reference).find((x) => key(x) === key(c))!;
      expect(c.dice_mean).toEqual(ref.dice_mean);
    }
    // Every trial's saved model is there.
    for (const r of rows) expect(existsSync(join(String(r.model), 'model.json')), String(r.model)).toBe(true);
    // rm summary.md && npm run tables restores it: the same text but for the generated-at line.
    const summary = readFileSync(join(killed, 'summary.md'), 'utf8');
    rmSync(join(killed, 'summary.md'));
    const tables = await new Promise<number | null>((done) =>
      spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'experiments/cli/tables.ts'), '--results', killed], { cwd: ROOT, stdio: 'ignore' }).on('close', done),
    );
    expect(tables).toBe(0);
    const strip = (t: string) => t.replace(/- Generated: .*\n/, '');
    expect(strip(readFileSync(join(killed, 'summary.md'), 'utf8'))).toBe(strip(summary));
    expect(existsSync(join(killed, 'plots', 'curves.svg'))).toBe(true);
  }, 180_000);

  it('skips recorded trials on a re-run, and --fresh moves the old records aside', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'volseg-resume-'));
    const file = join(dir, 'resume.yaml');
    writeFileSync(file, SWEEP.replace('seed: [1, 2, 3]', 'seed: [1]'));
    const results = join(dir, 'results');
    expect((await runCli(file, results)).code).toBe(0);
    const again = await runCli(file, results);
    expect(again.out).toContain('every trial is recorded; summary.md regenerated');
    expect(again.out).toMatch(/resuming: 2 of 2 trials are already recorded in .*trials\.csv \(2 ok\) and are skipped; --fresh starts over/);
    expect(readTrials(results).length).toBe(2);
    const fresh = await runCli(file, results, { extra: ['--fresh'] });
    expect(fresh.out, fresh.out).toMatch(/--fresh: the old records are kept as .*trials\.[^,]+\.csv/);
    expect(readTrials(results).length).toBe(2);
    const names = readdirSync(results);
    expect(names.filter((n) => /^trials\..+\.csv$/.test(n)).length).toBe(1);
    expect(names.filter((n) => /^models\..+$/.test(n)).length).toBe(1);
  }, 120_000);
});

describe('torn records', () => {
  it('drops a last record cut by a kill, and keeps every whole one', () => {
    const header = 'trial,trial_id,status\n';
    const whole = '0,t1,ok\n1,t2,"failed: a, b"\n';
    expect(completePrefix(header + whole)).toBe((header + whole).length);
    for (const torn of ['2,t3,o', '2,t3', '2,"t3', '2,t3,"failed: x\ny']) {
      expect(completePrefix(header + whole + torn), torn).toBe((header + whole).length);
    }
    expect(completePrefix('tri')).toBe(0);

    const dir = mkdtempSync(join(tmpdir(), 'volseg-torn-'));
    const rec = new TrialRecorder(dir);
    rec.append({ trial: 0, trial_id: 't1', status: 'ok', machine: 'm' });
    appendFileSync(join(dir, 'trials.csv'), '1,t2,o');
    const notes = rec.repair();
    expect(notes.join('\n')).toMatch(/trials\.csv: removed a torn last record \(6 bytes\) left by an interrupted run/);
    expect(readTrials(dir).map((r) => r.trial_id)).toEqual(['t1']);
    expect(readFileSync(join(dir, 'trials.csv'), 'utf8').endsWith('\n')).toBe(true);
  });
});
