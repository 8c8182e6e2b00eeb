import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  cpuGeneration,
  describeMachine,
  aggregateCaseMetrics,
  canonicalColumns,
  parseCsv,
  readCases,
  readTrials,
  regenerateSummary,
  regionColumns,
  renderSummary,
  TRIAL_COLUMNS,
  TrialRecorder,
  writeSummary,
  type TrialRow,
} from '../core/experiment/results.js';
import { BRATS_TASK } from '../core/data/brats-task.js';

const BRATS = BRATS_TASK;

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'results-test-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  vi.restoreAllMocks();
});

function row(over: Partial<TrialRow> = {}): TrialRow {
  return {
    trial: 1,
    experiment: 'exp',
    strategy: 'patch',
    architecture: 'unet3d',
    dataset: 'brats',
    input_shape: '64x64x64',
    seed: 1,
    backend: 'cpu',
    epochs: 2,
    dice_WT: 0.8,
    hd95_WT: 5.5,
    hd95_na_WT: 0,
    dice_TC: 0.7,
    hd95_TC: NaN,
    hd95_na_TC: 1,
    dice_mean: 0.75,
    params: 1234567,
    peak_train_bytes: 3 * 2 ** 30,
    peak_infer_bytes: 2 ** 30,
    est_peak_train_bytes: null,
    host_peak_bytes: 0,
    step_seconds: 1.5,
    train_seconds: 300,
    infer_seconds: 20,
    status: 'ok',
    settings: JSON.stringify({ seed: 1, strategy: { name: 'patch', settings: { patch: 64 } } }),
    started_at: '2025-01-01T00:00:00.000Z',
    machine: 'test machine, 4 cores',
    ...over,
  };
}

describe('CSV', () => {
  it('parses RFC 4180: quotes, doubled quotes, commas and line breaks in fields, CRLF', () => {
    expect(parseCsv('a,b\r\n"x,1","say ""hi""\nthere"\n,\n')).toEqual([
      ['a', 'b'],
      ['x,1', 'say "hi"\nthere'],
      ['', ''],
    ]);
    expect(() => parseCsv('a,"b')).toThrow(/inside a quoted field/);
  });

  it('orders columns canonically: leading, region, trailing, extras', () => {
    const cols = canonicalColumns(['zzz', 'status', 'dice_WT', 'trial', 'hd95_WT', 'dice_mean']);
    expect(cols.slice(0, 10)).toEqual(TRIAL_COLUMNS.slice(0, 10));
    expect(cols.slice(10, 12)).toEqual(['dice_WT', 'hd95_WT']);
    expect(cols[12]).toBe('dice_mean');
    expect(cols[cols.length - 1]).toBe('zzz');
    expect(regionColumns(BRATS)).toEqual(['dice_WT', 'hd95_WT', 'hd95_na_WT', 'dice_TC', 'hd95_TC', 'hd95_na_TC', 'dice_ET', 'hd95_ET', 'hd95_na_ET']);
  });
});

describe('TrialRecorder', () => {
  it('puts each row on disk immediately and reads it back (NaN as n/a, null as empty)', () => {
    const rec = new TrialRecorder(dir);
    rec.append(row({ trial: 1 }));
    let back = readTrials(dir);
    expect(back).toHaveLength(1);
    expect(back[0]!.dice_WT).toBe(0.8);
    expect(back[0]!.hd95_TC).toBeNaN();
    expect(back[0]!.est_peak_train_bytes).toBeNull();
    expect(back[0]!.settings).toBe(row().settings);
    expect(fs.readFileSync(path.join(dir, 'trials.csv'), 'utf8')).toContain(',n/a,');
    rec.append(row({ trial: 2, seed: 2, status: 'failed: out of "memory", badly' }));
    back = rec.readAll();
    expect(back).toHaveLength(2);
    expect(back[1]!.status).toBe('failed: out of "memory", badly');
    // The header is the canonical order.
    const header = parseCsv(fs.readFileSync(path.join(dir, 'trials.csv'), 'utf8'))[0]!;
    expect(header.slice(0, 10)).toEqual(TRIAL_COLUMNS.slice(0, 10));
    expect(header[10]).toBe('dice_WT');
  });

  it('fills the machine column when the row does not set it', () => {
    const rec = new TrialRecorder(dir);
    const r = row();
    delete r.machine;
    rec.append(r);
    expect(String(readTrials(dir)[0]!.machine)).toMatch(/cores/);
  });

  it('writes a row with fewer columns under the existing header', () => {
    const rec = new TrialRecorder(dir);
    rec.append(row({ trial: 1 }));
    rec.append({ trial: 2, experiment: 'exp', strategy: 'full', status: 'did-not-fit', machine: 'm' });
    const back = readTrials(dir);
    expect(back).toHaveLength(2);
    expect(back[1]!.dice_WT).toBeNull();
    expect(back[1]!.status).toBe('did-not-fit');
    expect(fs.readdirSync(dir)).toEqual(['trials.csv']);
  });

  it('on a header that lacks the new columns, keeps the old file and rewrites trials.csv with all rows', () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const rec = new TrialRecorder(dir);
    const old = row({ trial: 1 });
    delete old.dice_ET;
    rec.append(old);
    const before = fs.readFileSync(path.join(dir, 'trials.csv'), 'utf8');
    rec.append(row({ trial: 2, dice_ET: 0.6, new_metric: 42 }));
    const files = fs.readdirSync(dir).sort();
    expect(files).toHaveLength(2);
    const backup = files.find((f) => f !== 'trials.csv')!;
    expect(backup).toMatch(/^trials\.\d{4}-\d\d-\d\dT[\d-]+Z\.csv$/);
    expect(fs.readFileSync(path.join(dir, backup), 'utf8')).toBe(before); // the old file untouched
    expect(warn).toHaveBeenCalledOnce();
    expect(String(warn.mock.calls[0]![0])).toContain(backup);
    const back = readTrials(dir);
    expect(back.map((r) => r.trial)).toEqual([1, 2]);
    expect(back[0]!.dice_ET).toBeNull();
    expect(back[1]!.dice_ET).toBe(0.6);
    expect(back[1]!.new_metric).toBe(42);
    expect(back[0]!.dice_WT).toBe(0.8);
  });

  it('starts anew (keeping the old file) when the old file cannot be parsed', () => {
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    fs.writeFileSync(path.join(dir, 'trials.csv'), 'trial,status\n1,"ok\n');
    new TrialRecorder(dir).append(row({ trial: 7 }));
    expect(readTrials(dir).map((r) => r.trial)).toEqual([7]);
    expect(fs.readdirSync(dir)).toHaveLength(2);
  });

  it('appends per-case rows to cases.csv', () => {
    const rec = new TrialRecorder(dir);
    rec.appendCases([
      { trial: 1, case: 'BraTS-001', region: 'WT', dice: 0.9, hd95: 3 },
      { trial: 1, case: 'BraTS-001', region: 'ET', dice: 0, hd95: NaN },
    ]);
    rec.appendCases([{ trial: 2, case: 'BraTS-002', region: 'WT', dice: 1, hd95: 0 }]);
    const text = fs.readFileSync(path.join(dir, 'cases.csv'), 'utf8');
    expect(text.split('\n')[0]).toBe('trial,trial_id,case,region,dice,hd95');
    expect(text).toContain('1,,BraTS-001,ET,0,n/a');
    const back = readCases(dir);
    expect(rec.readAllCases()).toEqual(back);
    expect(back).toHaveLength(3);
    expect(back[1]!.hd95).toBeNaN();
    expect(back[2]).toEqual({ trial: 2, case: 'BraTS-002', region: 'WT', dice: 1, hd95: 0 });
  });
});

describe('aggregateCaseMetrics', () => {
  it('averages per region, excludes n/a HD95 and counts it', () => {
    const agg = aggregateCaseMetrics([
      [
        { name: 'WT', dice: 0.8, hd95: 4 },
        { name: 'ET', dice: 0, hd95: NaN },
      ],
      [
        { name: 'WT', dice: 0.6, hd95: 6 },
        { name: 'ET', dice: 1, hd95: 0 },
      ],
    ]);
    expect(agg.dice_WT).toBeCloseTo(0.7, 12);
    expect(agg.hd95_WT).toBe(5);
    expect(agg.hd95_na_WT).toBe(0);
    expect(agg.dice_ET).toBe(0.5);
    expect(agg.hd95_ET).toBe(0);
    expect(agg.hd95_na_ET).toBe(1);
    expect(agg.dice_mean).toBeCloseTo(0.6, 12);
  });
});

describe('summary', () => {
  const rows = (): TrialRow[] => [
    row({ trial: 1, seed: 1, dice_WT: 0.8, peak_train_bytes: 1.0 * 2 ** 30, step_seconds: 1.0 }),
    row({ trial: 2, seed: 2, dice_WT: 0.9, peak_train_bytes: 1.5 * 2 ** 30, step_seconds: 2.0 }),
    row({ trial: 3, seed: 3, dice_WT: 0.7, peak_train_bytes: 2.0 * 2 ** 30, step_seconds: 3.0, hd95_na_TC: 2 }),
    row({ trial: 4, seed: 1, strategy: 'full-volume', input_shape: '240x240x155', status: 'did-not-fit', dice_WT: null, est_peak_train_bytes: 40 * 2 ** 30, peak_train_bytes: 16 * 2 ** 30 }),
    row({ trial: 5, seed: 1, strategy: 'checkpoint', status: 'failed: NaN loss' }),
  ];

  it("labels HD95 with the records' spacing unit: mm (also where a record has none), voxels, or both", () => {
    const header = (rs: TrialRow[]): string => renderSummary('exp', rs, { date: new Date(0) }).split('\n').find((l) => l.startsWith('| strategy |'))!;
    expect(header(rows())).toContain('HD95 TC (mm)');
    expect(header(rows().map((r) => ({ ...r, spacing_unit: 'mm' })))).toContain('HD95 TC (mm)');
    const voxels = renderSummary('exp', rows().map((r) => ({ ...r, spacing_unit: 'voxel' })), { date: new Date(0) });
    expect(voxels).toContain('HD95 TC (voxels)');
    expect(voxels).toContain('- HD95 (voxels):');
    expect(voxels).not.toContain('(mm)');
    expect(header(rows().map((r, i) => ({ ...r, spacing_unit: i === 0 ? 'voxel' : 'mm' })))).toContain('HD95 TC (mm or voxels, see spacing_unit)');
  });

  it('shows mean ± sample std over seeds, n, memory in binary units, and lists non-ok trials separately', () => {
    const text = renderSummary('exp', rows(), { date: new Date('2025-02-03T04:05:06Z') });
    expect(text).toContain('# exp — results');
    expect(text).toContain('2025-02-03T04:05:06.000Z');
    expect(text).toContain('- Machine: test machine, 4 cores');
    expect(text).toContain('- Backend: cpu');
    expect(text).toContain('5 (3 ok, 1 did-not-fit, 1 failed)');
    const line = text.split('\n').find((l) => l.startsWith('| patch |'))!;
    const cells = line.split(' | ');
    // Dice WT: mean 0.8, sample std of 0.8/0.9/0.7 = 0.1; n = 3
    expect(line).toContain('| 3 | 0.800 ± 0.100 |');
    // peak train: mean 1.5 GiB, sample std 0.5 GiB
    expect(line).toContain('1.50 GiB ± 0.50 GiB');
    // step: mean 2, std 1
    expect(line).toContain('2.00 ± 1.00');
    // HD95 TC is NaN in every trial (no mean: —); the n/a case counts 1 + 1 + 2 are summed
    expect(line).toContain('— (4 n/a cases)');
    expect(cells.length).toBeGreaterThan(8);
    // non-ok trials are not in the results table but in their own list, with their status
    expect(text.split('\n').filter((l) => l.startsWith('| full-volume |'))).toHaveLength(0);
    expect(text).toMatch(/\| 4 \| full-volume \| unet3d \| 240x240x155 \| 1 \| did-not-fit \| 40.00 GiB \| 16.00 GiB \|/);
    expect(text).toContain('| failed: NaN loss |');
    // the legend quotes the conventions
    expect(text).toContain('n/a');
    expect(text).toContain('sample standard deviation');
    expect(text).toContain('HD95 is 0 when prediction and reference are both empty');
  });

  it('splits configurations by settings that vary other than the seed', () => {
    const r = rows().slice(0, 3);
    r.push(row({ trial: 6, seed: 1, settings: JSON.stringify({ seed: 1, strategy: { name: 'patch', settings: { patch: 96 } } }) }));
    const text = renderSummary('exp', r, { date: new Date(0) });
    const header = text.split('\n').find((l) => l.startsWith('| strategy |'))!;
    expect(header).toContain('strategy.settings.patch');
    expect(header).not.toContain('| seed |');
    expect(text.split('\n').filter((l) => l.startsWith('| patch |'))).toHaveLength(2);
    expect(text).toMatch(/\| patch \| unet3d \| 64x64x64 \| 96 \| 1 \|/);
  });

  it("does not split seeds by the runner's trial label or by seed-named settings", () => {
    const mk = (trial: number, seed: number, patch: number): TrialRow =>
      row({
        trial,
        seed,
        settings: JSON.stringify({
          label: `strategy=patch seed=${seed} patch=${patch}`,
          training: { seed, epochs: 2 },
          strategy: { name: 'patch', settings: { patch } },
        }),
      });
    const text = renderSummary('exp', [mk(0, 1, 64), mk(1, 2, 64), mk(2, 1, 96), mk(3, 2, 96)], { date: new Date(0) });
    const header = text.split('\n').find((l) => l.startsWith('| strategy |'))!;
    expect(header).toContain('| strategy.settings.patch | n |');
    expect(header).not.toContain('label');
    expect(header).not.toContain('training.seed');
    const lines = text.split('\n').filter((l) => l.startsWith('| patch |'));
    expect(lines).toHaveLength(2);
    expect(lines.every((l) => l.includes(' | 2 | '))).toBe(true);
  });

  it('regenerates summary.md from trials.csv alone', () => {
    const rec = new TrialRecorder(dir);
    for (const r of rows()) rec.append(r);
    const date = new Date('2025-02-03T04:05:06Z');
    const direct = renderSummary('exp', rows(), { date });
    const file = regenerateSummary(dir, { date });
    expect(file).toBe(path.join(dir, 'summary.md'));
    expect(fs.readFileSync(file, 'utf8')).toBe(direct);
    expect(writeSummary(dir, 'exp', readTrials(dir), { date })).toBe(file);
    expect(fs.readFileSync(file, 'utf8')).toBe(direct);
  });

  it('says when no trial finished ok', () => {
    const text = renderSummary('exp', [row({ status: 'did-not-fit' })], { date: new Date(0) });
    expect(text).toContain('No trial finished with status ok.');
    expect(() => regenerateSummary(dir)).toThrow(/no trials/);
  });
});

describe('describeMachine', () => {
  it('names the x86 CPU family and model, which a VM\'s generic model name hides', () => {
    const info = 'processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n';
    expect(cpuGeneration(info)).toBe('family 26 model 2');
    expect(cpuGeneration('processor\t: 0\nmodel name\t: ARMv8\n')).toBeNull();
    // On this machine: the string it writes into every record carries the generation where /proc/cpuinfo has it.
    const here = cpuGeneration();
    if (here !== null) expect(describeMachine()).toContain(`(${here}), `);
  });
});
