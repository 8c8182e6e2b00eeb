/**
 * The README's result tables, generated from the committed records. Each is a marked block,
 *
 *   <!-- table:NAME -->
 *   …generated…
 *   <!-- /table:NAME -->
 *
 * that `npm run tables -- --readme` fills from results/ (and test/readme.test.ts fails when one is
 * stale). Every number inside a block comes from trials.csv, cases.csv, curves.csv, context*.csv or
 * results/bench/bench.json; each block names the machine its records were measured on.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { mean as mathMean, median as mathMedian, std } from 'mathjs';
import {
  pairedDifferences,
  pairedReference,
  pairedResult,
  recordedComparison,
  referenceGroups,
  parseCsv,
  readCases,
  readCurves,
  readTrials,
  timeToTarget,
  configurationLabel,
  hd95Unit,
  rowRegions,
  rowSettings,
  trialKey,
  type ComparisonGroup,
  type TrialRow,
} from '../../core/experiment/index.js';
import { bytesText, readMicroctRecords, recordsOverview } from './microct-records.js';
// Types only (erased): the record's shape as the bench writes it, without loading the bench's modules.
import type { BenchOptions, BenchRow, TileCeiling } from './bench-kernels.js';
import type { StepProfile } from './bench-profile.js';

type Rows = TrialRow[];

const num = (v: unknown): number => (typeof v === 'number' ? v : NaN);
const finite = (rows: Rows, c: string): number[] => rows.map((r) => num(r[c])).filter(Number.isFinite);
const mean = (v: number[]): number => (v.length ? (mathMean(v) as number) : NaN);
const sd = (v: number[]): number => std(v, 'unbiased') as unknown as number;

function bytes(v: number): string {
  return Number.isFinite(v) ? bytesText(v) : '—';
}
function meanSd(v: number[], digits = 3): string {
  if (v.length === 0) return '—';
  return v.length > 1 ? `${mean(v).toFixed(digits)} ± ${sd(v).toFixed(digits)}` : mean(v).toFixed(digits);
}
const percent = (f: number): string => `${f >= 0 ? '+' : '−'}${Math.abs(100 * f).toFixed(1)}%`;
const signed = (v: number): string => `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(3)}`;

/** Trials grouped by configuration, in record order. */
function groups(rows: Rows, drop: RegExp[] = []): [string, Rows][] {
  const out = new Map<string, Rows>();
  for (const r of rows) out.set(configurationLabel(r, drop), [...(out.get(configurationLabel(r, drop)) ?? []), r]);
  return [...out];
}

function machines(rows: Rows): string {
  const m = [...new Set(rows.map((r) => String(r.machine ?? '')).filter((s) => s))];
  return m.length ? m.join('; ') : 'not recorded';
}

function table(header: string[], body: string[][]): string[] {
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...body.map((r) => `| ${r.join(' | ')} |`)];
}

/** The stop of a trial that did not fit: where and at what peak. */
function notFit(g: Rows): string {
  const r = g.find((x) => x.status === 'did-not-fit');
  if (!r) return String(g[0]?.status ?? '—');
  const at = /at (train step \d+ \/ \w+ \/ [^:]+)/.exec(String(r.status_detail ?? ''))?.[1];
  return `did not fit (stopped at ${bytes(num(r.peak_train_bytes))}${at ? `, ${at}` : ''})`;
}

interface Context {
  root: string;
}

type Block = (ctx: Context) => string[];

function load(ctx: Context, name: string): Rows {
  const dir = join(ctx.root, 'results', name);
  const rows = readTrials(dir);
  if (rows.length === 0) throw new Error(`results/${name}/trials.csv: no records; run npm run experiment -- ${name}`);
  return rows;
}

/**
 * The records' configurations as comparison groups along `axis` (each named by its label without the
 * seed), the reference configurations the records name, and the recorded comparison settings.
 */
function compared(rows: Rows, axis: 'strategy' | 'architecture' | 'dataset') {
  const comparison = recordedComparison(rows);
  const cg: ComparisonGroup[] = groups(rows).map(([name, g]) => ({ axes: { [axis]: String(g[0]![axis]), [`${axis}.label`]: name }, rows: g }));
  // Configurations sharing everything but `axis` pair up: the label names the other axes too.
  const context = (g: ComparisonGroup): string => configurationLabel(g.rows[0]!).split(/\s+/).filter((p) => !p.startsWith(`${axis}=`) && !p.startsWith(`${axis}.`)).join(' ');
  for (const g of cg) g.axes.context = context(g);
  return { cg, refs: referenceGroups(cg, { ...comparison, axis }).refs, comparison };
}

/**
 * One line from a context record (`npm run context`): how much of the labels needs context beyond the
 * patch; with `patch`, summed over that patch's rows only (a sweep whose inputs differ records each).
 */
function contextLine(ctx: Context, experiment: string, file: string, what: string, patch?: string): string {
  const path = join(ctx.root, 'results', experiment, file);
  if (!existsSync(path)) throw new Error(`${path}: missing; run npm run context -- ${experiment}${file.includes('paper') ? ' --profile paper' : ''}`);
  const [header, ...recs] = parseCsv(readFileSync(path, 'utf8')).filter((r) => r.length > 1);
  const col = (c: string): number => header!.indexOf(c);
  let rowsOf = recs.filter((r) => r[0] !== 'total');
  if (patch !== undefined) rowsOf = rowsOf.filter((r) => r[col('patch')] === patch);
  if (rowsOf.length === 0) throw new Error(`${path}: no rows${patch ? ` for patch ${patch}` : ''}; run npm run context -- ${experiment}`);
  const sum = (c: string): number => rowsOf.reduce((a, r) => a + Number(r[col(c)]), 0);
  const [labelled, labelledBeyond, mimic, mimicBeyond] = ['labelled', 'labelled_beyond', 'mimic', 'mimic_beyond'].map(sum) as [number, number, number, number];
  const patches = [...new Set(rowsOf.map((r) => r[col('patch')]))].join(' ');
  return `- ${what} (${rowsOf.length} cases, patch ${patches}): **${((100 * labelledBeyond) / labelled).toFixed(1)}% of the labelled volume** (${labelledBeyond} of ${labelled} voxels) and **${((100 * mimicBeyond) / mimic).toFixed(1)}% of the mimic volume** (${mimicBeyond} of ${mimic}) lie farther than half a patch edge from the evidence that decides their label.`;
}

const machineLine = (rows: Rows, command: string): string => `Records: \`${command}\`; machine: ${machines(rows)}.`;

export const README_BLOCKS: Record<string, Block> = {
  'brats-swap-vs-patch': (ctx) => {
    const rows = load(ctx, 'brats-swap-vs-patch');
    const body = groups(rows).map(([name, g]) => {
      const ok = g.filter((r) => r.status === 'ok');
      if (ok.length === 0) return [name, '—', notFit(g), '', '', '', '', bytes(num(g[0]!.est_peak_train_bytes)), '', ''];
      return [
        name,
        String(ok[0]!.steps ?? '—'),
        ...['WT', 'TC', 'ET', 'mean'].map((k) => meanSd(finite(ok, `dice_${k}`))),
        bytes(mean(finite(ok, 'peak_train_bytes'))),
        bytes(mean(finite(ok, 'est_peak_train_bytes'))),
        mean(finite(ok, 'step_seconds')).toFixed(2),
        mean(finite(ok, 'train_seconds')).toFixed(1),
      ];
    });
    const budget = [...new Set(rows.map((r) => r.budget))].join(', ');
    // Wall time of the sweep: the first trial's start to the end of the last (its start plus its times).
    const starts = rows.map((r) => Date.parse(String(r.started_at))).filter(Number.isFinite);
    const last = rows.reduce((a, b) => (Date.parse(String(b.started_at)) > Date.parse(String(a.started_at)) ? b : a));
    const lastEnd = Date.parse(String(last.started_at)) + 1000 * ['train_seconds', 'curve_seconds', 'infer_seconds'].reduce((t, c) => t + (Number.isFinite(num(last[c])) ? num(last[c]) : 0), 0);
    const minutes = (lastEnd - Math.min(...starts)) / 60000;
    return [
      machineLine(rows, 'npm run experiment -- brats-swap-vs-patch'),
      `${ok(rows).length} trials ok of ${rows.length}, seeds ${[...new Set(rows.map((r) => r.seed))].join(', ')}; budget ${budget}; the sweep took about ${minutes.toFixed(0)} minutes (from the trials' start times and durations); Dice mean ± sample std over seeds.`,
      '',
      ...table(['configuration', 'steps', 'Dice WT', 'Dice TC', 'Dice ET', 'Dice mean', 'peak train', 'est. peak', 'step (s)', 'train (s)'], body),
    ];
  },

  'brats-swap-vs-patch-paired': (ctx) => {
    const rows = load(ctx, 'brats-swap-vs-patch');
    const cases = readCases(join(ctx.root, 'results', 'brats-swap-vs-patch'));
    const curves = readCurves(join(ctx.root, 'results', 'brats-swap-vs-patch'));
    const { cg, refs, comparison } = compared(rows, 'strategy');
    const ref = refs[0];
    if (!ref) throw new Error(`results/brats-swap-vs-patch: no trials of the reference strategy ${comparison.reference}; run npm run experiment -- brats-swap-vs-patch`);
    const regions = ['WT', 'TC', 'ET'];
    const body: string[][] = [];
    for (const g of cg) {
      const paired = pairedReference(g, refs, 'strategy');
      if (!paired) continue;
      const d = pairedDifferences(g, paired, regions, cases);
      if (d.size === 0) continue;
      const cells = [...regions, 'mean'].map((r) => {
        const p = pairedResult(r, d.get(r)!, comparison);
        return `${signed(p.mean)} [${signed(p.low)}, ${signed(p.high)}], p = ${p.p.toFixed(3)}`;
      });
      body.push([`${g.axes.strategy} − ${paired.axes.strategy}`, String(d.get('WT')!.length), String(d.get('WT')![0]!.length), ...cells]);
    }
    const target = (seed: number): number | undefined => num(ref.rows.find((r) => r.status === 'ok' && r.seed === seed)?.dice_mean);
    const times = cg
      .filter((g) => g.rows.some((r) => r.status === 'ok'))
      .map((g) => {
        const t = timeToTarget(g, curves, 'dice_mean', target);
        return [g.axes.strategy!, `${t.reached} of ${t.of}`, t.seconds === null ? 'not reached' : `${t.seconds.toFixed(1)} s`, t.best === null ? '—' : t.best.toFixed(3)];
      });
    return [
      `ΔDice against \`${ref.axes.strategy}\`, paired by seed and validation case: mean [${Math.round(comparison.confidence * 100)}% bootstrap CI over seeds and cases], Wilcoxon p over the cases.`,
      '',
      ...table(['comparison', 'seeds', 'cases', 'ΔDice WT', 'ΔDice TC', 'ΔDice ET', 'ΔDice mean'], body),
      '',
      `Time to \`${ref.axes.strategy}\`'s final mean Dice of the same seed (training wall time, median over seeds; "best": the highest mean Dice the curve reached, median over seeds):`,
      '',
      ...table(['strategy', 'reached', 'time', 'best'], times),
    ];
  },

  'brats-swap-vs-patch-context': (ctx) => [
    contextLine(ctx, 'brats-swap-vs-patch', 'context.csv', 'Quick profile, `npm run context -- brats-swap-vs-patch`'),
    contextLine(ctx, 'brats-swap-vs-patch', 'context-paper.csv', 'Paper profile, `npm run context -- brats-swap-vs-patch --profile paper`'),
  ],

  'memory-64': (ctx) => {
    const rows = load(ctx, 'memory-64');
    const owned = rows.find((r) => configurationLabel(r).endsWith('strategy=full-volume()'));
    const body = groups(rows, [/dataset\.settings\.size=\S+/g]).map(([name, g]) => {
      const r = g[0]!;
      const m = num(r.peak_train_bytes);
      return [name, bytes(m), bytes(num(r.est_peak_train_bytes)), owned ? `${((100 * m) / num(owned.peak_train_bytes)).toFixed(1)}%` : '—', num(r.step_seconds).toFixed(2)];
    });
    return [machineLine(rows, 'npm run experiment -- memory-scaling --profile at64 --results results/memory-64'), '', ...table(['configuration', 'measured peak', 'estimated', 'vs owned full volume', 'step (s)'], body)];
  },

  'tflms-tuning': (ctx) => {
    const rows = load(ctx, 'tflms-tuning');
    const plain = rows.filter((r) => r.strategy === 'full-volume').map((r) => num(r.step_seconds));
    const base = mean(plain);
    const body = rows.map((r) => [
      configurationLabel(r, [/dataset\.settings\.size=\S+/g]),
      num(r.step_seconds).toFixed(2),
      r.strategy === 'full-volume' ? '—' : percent(num(r.step_seconds) / base - 1),
      Number.isFinite(num(r.swap_wait_seconds)) ? num(r.swap_wait_seconds).toFixed(3) : '—',
      bytes(num(r.peak_train_bytes)),
      bytes(num(r.est_peak_train_bytes)),
    ]);
    return [
      machineLine(rows, 'npm run experiment -- tflms-tuning --profile at128 --results results/tflms-tuning'),
      `Plain step: ${plain.map((p) => p.toFixed(2)).join(' / ')} s (mean ${base.toFixed(2)} s), the reference of "vs plain".`,
      '',
      ...table(['configuration', 'step (s)', 'vs plain', 'backward waited (s)', 'measured peak', 'estimated'], body),
    ];
  },

  'tflms-tuning-copies': (ctx) => {
    const rows = ok(load(ctx, 'tflms-tuning-copies'));
    const seeds = [...new Set(rows.map((r) => String(r.seed)))];
    // Each seed is one round (every setting once, one after another): ratios within a round cancel drift.
    const plainOf = new Map(seeds.map((s) => [s, num(rows.find((r) => String(r.seed) === s && r.strategy === 'full-volume')?.step_seconds)]));
    const body = groups(rows).map(([label, g]) => {
      const ratios = g.map((r) => num(r.step_seconds) / plainOf.get(String(r.seed))!).filter(Number.isFinite);
      // Per step: the strategy's columns are totals over the trial's steps.
      const cell = (k: string, d = 3, perStep = true): string =>
        g.some((r) => Number.isFinite(num(r[k]))) ? mean(g.map((r) => num(r[k]) / (perStep ? num(r.steps) : 1))).toFixed(d) : '—';
      return [
        label,
        String(g.length),
        meanSd(g.map((r) => num(r.step_seconds)), 2),
        g[0]!.strategy === 'full-volume' ? '—' : `${Number(mathMedian(ratios)).toFixed(3)} (${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)})`,
        cell('swap_wait_seconds'),
        cell('swap_out_wait_seconds'),
        cell('swap_staging_seconds'),
        cell('swap_overlap', 2, false),
        bytes(mean(g.map((r) => num(r.peak_train_bytes)))),
        bytes(mean(g.map((r) => num(r.est_peak_train_bytes)))),
      ];
    });
    return [
      machineLine(rows, 'npm run experiment -- tflms-tuning-copies'),
      `${seeds.length} rounds (seeds ${seeds.join(', ')}), each running every setting once in the order below; per trial the median of its timed steps.`,
      '',
      ...table(['configuration', 'rounds', 'step (s), mean ± sd', 'step / plain step of its round: median (range)', 'backward waited (s/step)', 'forward waited (s/step)', 'main-thread staging (s/step)', 'overlap', 'measured peak', 'estimated'], body),
    ];
  },

  'tflms-tuning-paper': (ctx) => {
    const rows = load(ctx, join('tflms-tuning', 'paper-192'));
    const plain = num(rows.find((r) => r.strategy === 'full-volume' && r.status === 'ok')?.step_seconds);
    const body = rows.map((r) => [
      configurationLabel(r, [/dataset\.settings\.size=\S+/g]),
      String(r.status),
      num(r.step_seconds).toFixed(1),
      r.strategy === 'full-volume' || !Number.isFinite(plain) ? '—' : percent(num(r.step_seconds) / plain - 1),
      Number.isFinite(num(r.swap_wait_seconds)) ? num(r.swap_wait_seconds).toFixed(2) : '—',
      bytes(num(r.peak_train_bytes)),
      bytes(num(r.est_peak_train_bytes)),
      Number.isFinite(num(r.host_peak_bytes)) ? bytes(num(r.host_peak_bytes)) : '—',
    ]);
    return [
      machineLine(rows, "npm run experiment -- tflms-tuning --profile paper --set 'axes.dataset.settings.size=[192]' --results results/tflms-tuning/paper-192"),
      '',
      ...table(['configuration', 'status', 'step (s)', 'vs plain', 'backward waited (s)', 'measured peak', 'estimated', 'host peak'], body),
    ];
  },

  'msd-hippocampus': (ctx) => {
    const rows = load(ctx, 'msd-hippocampus');
    const r = rows[0]!;
    const labels = Object.keys(r).filter((k) => k.startsWith('dice_') && k !== 'dice_mean').map((k) => k.slice(5));
    return [
      machineLine(rows, 'npm run experiment -- msd-hippocampus'),
      `${r.validation_cases ?? '?'} validation cases, ${r.steps ?? num(rowSettings(r).training?.epochs) * num(rowSettings(r).training?.stepsPerEpoch)} steps, training ${(num(r.train_seconds) / 60).toFixed(0)} min.`,
      '',
      ...table(['label', 'Dice', `HD95 (${hd95Unit(rows)})`], [...labels.map((l) => [l, num(r[`dice_${l}`]).toFixed(3), num(r[`hd95_${l}`]).toFixed(2)]), ['mean', num(r.dice_mean).toFixed(3), '']]),
      '',
      `Measured peak ${bytes(num(r.peak_train_bytes))}, estimated ${bytes(num(r.est_peak_train_bytes))}.`,
    ];
  },

  'memory-scaling': (ctx) => {
    const rows = load(ctx, 'memory-scaling');
    const edges = [...new Set(rows.map((r) => String(r.volume_shape)))];
    const configs = groups(rows, [/dataset\.settings\.size=\S+/g]).map(([n]) => n);
    const body = edges.map((e) => [
      e,
      ...configs.map((c) => {
        const r = rows.find((x) => String(x.volume_shape) === e && configurationLabel(x, [/dataset\.settings\.size=\S+/g]) === c);
        if (!r) return '—';
        return r.status === 'ok' ? bytes(num(r.peak_train_bytes)) : `did not fit (${bytes(num(r.est_peak_train_bytes))} estimated)`;
      }),
    ]);
    const exact = rows.filter((r) => r.status === 'ok' && r.peak_train_bytes === r.est_peak_train_bytes).length;
    const okRows = rows.filter((r) => r.status === 'ok');
    const worst = Math.max(...okRows.map((r) => Math.abs(num(r.est_peak_train_bytes) / num(r.peak_train_bytes) - 1)));
    return [
      machineLine(rows, 'npm run experiment -- memory-scaling'),
      '',
      ...table(['input', ...configs], body),
      '',
      `The estimate equals the measured peak in ${exact} of the ${okRows.length} trials that ran; the largest difference is ${(100 * worst).toFixed(2)}%.`,
    ];
  },

  'brats2015-sample': (ctx) => {
    const rows = load(ctx, 'brats2015-sample');
    const body = rows.map((r) => [configurationLabel(r), bytes(num(r.peak_train_bytes)), bytes(num(r.est_peak_train_bytes)), bytes(num(r.peak_infer_bytes)), num(r.step_seconds).toFixed(1), num(r.host_peak_bytes) > 0 ? bytes(num(r.host_peak_bytes)) : '—']);
    return [machineLine(rows, 'npm run experiment -- brats2015-sample'), '', ...table(['configuration', 'peak train', 'estimated', 'peak inference', 'step (s)', 'host (swap)'], body)];
  },

  'architectures-memory': (ctx) => {
    const dir = join(ctx.root, 'results', 'architectures-memory');
    const rows = load(ctx, 'architectures-memory');
    const { cg, refs, comparison } = compared(rows, 'architecture');
    const ref = refs[0];
    if (!ref) throw new Error('results/architectures-memory: no unet3d reference trials; run npm run experiment -- architectures-memory');
    const cases = readCases(dir);
    const refParams = num(ref.rows[0]!.params);
    const refPeak = mean(finite(ref.rows, 'peak_train_bytes'));
    const regions = rowRegions(rows);
    const meets: string[] = [];
    const body = cg.map((g) => {
      const ok = g.rows.filter((r) => r.status === 'ok');
      const p = num(ok[0]?.params);
      const m = mean(finite(ok, 'peak_train_bytes'));
      const paired = pairedReference(g, refs, 'architecture');
      const d = paired ? pairedDifferences(g, paired, regions, cases).get('mean') : undefined;
      const r = d ? pairedResult('mean', d, comparison) : null;
      const isRef = refs.includes(g);
      const fp = p / refParams;
      const fm = m / refPeak;
      // The paper's point (Wang, Oda, Mori 2020): about 40% of the memory and 30% of the parameters,
      // accuracy kept; here ≤ 45%, ≤ 35% and a mean Dice within 0.03 of the reference's.
      const point = !isRef && r !== null && fm <= 0.45 && fp <= 0.35 && r.mean >= -0.03;
      if (point) meets.push(g.axes['architecture.label']!);
      return [
        g.axes['architecture.label']!,
        `${(p / 1000).toFixed(1)} k${isRef ? '' : ` (${(100 * fp).toFixed(0)}%)`}`,
        `${bytes(m)}${isRef ? '' : ` (${(100 * fm).toFixed(0)}%)`}`,
        meanSd(finite(ok, 'dice_mean')),
        r ? `${signed(r.mean)} [${signed(r.low)}, ${signed(r.high)}]` : '—',
        isRef ? 'reference' : point ? '**yes**' : 'no',
      ];
    });
    const seeds = [...new Set(rows.map((r) => r.seed))].length;
    const validation = new Set(cases.filter((c) => trialKey(c) === trialKey(ref.rows[0]!)).map((c) => c.case)).size;
    return [
      machineLine(rows, 'npm run experiment -- architectures-memory'),
      `${seeds} seeds, ${validation} validation cases, ${rows[0]!.steps ?? '?'} steps per trial. ΔDice: the mean over regions against \`${comparison.reference}\`, paired by seed and validation case, mean [${Math.round(comparison.confidence * 100)}% bootstrap CI over seeds and cases]. "Paper point": ≤ 45% of unet3d's peak training memory, ≤ 35% of its parameters and ΔDice ≥ −0.03.`,
      '',
      ...table(['configuration', 'params (vs unet3d)', 'peak train (vs unet3d)', 'Dice mean (seeds)', 'ΔDice mean vs unet3d', 'paper point'], body),
      '',
      meets.length ? `At the paper's point: ${meets.map((m) => `\`${m}\``).join(', ')}.` : "No configuration of these records is at the paper's point.",
    ];
  },

  'cascade-joins': (ctx) => {
    const dir = join(ctx.root, 'results', 'cascade-joins');
    const rows = load(ctx, 'cascade-joins');
    const { cg, refs, comparison } = compared(rows, 'architecture');
    if (refs.length === 0) throw new Error(`results/cascade-joins: no trials of the reference ${comparison.reference}; run npm run experiment -- cascade-joins`);
    const cases = readCases(dir);
    const regions = rowRegions(rows);
    const body = cg.map((g) => {
      const ok = g.rows.filter((r) => r.status === 'ok');
      const paired = pairedReference(g, refs, 'architecture');
      const d = paired ? pairedDifferences(g, paired, regions, cases) : undefined;
      const cell = (region: string): string => {
        const x = d?.get(region);
        if (!x) return refs.includes(g) ? 'reference' : '—';
        const p = pairedResult(region, x, comparison);
        return `${signed(p.mean)} [${signed(p.low)}, ${signed(p.high)}]`;
      };
      return [g.axes['architecture.label']!, String(ok.length), Number(mathMedian(finite(ok, 'steps'))).toFixed(0), meanSd(finite(ok, 'dice_mean')), ...[...regions, 'mean'].map(cell)];
    });
    const budget = [...new Set(rows.map((r) => String(r.budget)))].join(', ');
    const validation = new Set(cases.map((c) => c.case)).size;
    return [
      contextLine(ctx, 'cascade-joins', 'context.csv', "At unet3d's and the cascade's 16³ output patch, `npm run context -- cascade-joins`", '16x16x16'),
      '',
      machineLine(rows, 'npm run experiment -- cascade-joins'),
      `Budget ${budget} of training per trial (validation excluded); ${validation} validation cases; ΔDice against \`${comparison.reference}\`, paired by seed and validation case: mean [${Math.round(comparison.confidence * 100)}% bootstrap CI over seeds and cases].`,
      '',
      ...table(['configuration', 'seeds', 'steps (median)', 'Dice mean (seeds)', ...[...regions, 'mean'].map((r) => `ΔDice ${r}`)], body),
    ];
  },

  'cascade-brats-size': (ctx) => {
    const rows = load(ctx, 'cascade-brats-size');
    const body = groups(rows).map(([name, g]) => {
      const ok = g.filter((r) => r.status === 'ok');
      if (ok.length === 0) return [name, notFit(g), bytes(num(g[0]!.est_peak_train_bytes)), '—', '—'];
      return [name, bytes(mean(finite(ok, 'peak_train_bytes'))), bytes(mean(finite(ok, 'est_peak_train_bytes'))), bytes(mean(finite(ok, 'peak_infer_bytes'))), meanSd(finite(ok, 'dice_mean'))];
    });
    return [machineLine(rows, 'npm run experiment -- cascade-brats-size'), '', ...table(['configuration', 'peak train', 'estimated', 'peak inference', 'Dice mean (seeds)'], body)];
  },

  'spatial-partitioning': (ctx) => {
    const rows = load(ctx, 'spatial-partitioning');
    const full = ok(rows).find((r) => r.strategy === 'full-volume');
    const base = full ? num(full.peak_train_bytes) : NaN;
    const body = groups(rows).map(([name, g]) => {
      const ok1 = g.filter((r) => r.status === 'ok');
      if (ok1.length === 0) return [name, '—', notFit(g), bytes(num(g[0]!.est_peak_train_bytes)), '—', '—', '—', '—'];
      const r = ok1[0]!;
      const peak = mean(finite(ok1, 'peak_train_bytes'));
      const exchanged = finite(ok1, 'exchange_bytes_per_step');
      return [
        name,
        String(r.workers ?? 1),
        `${bytes(peak)}${Number.isFinite(base) ? ` (${(peak / base).toFixed(2)}×)` : ''}`,
        bytes(mean(finite(ok1, 'est_peak_train_bytes'))),
        exchanged.length ? bytes(mean(exchanged)) : '—',
        mean(finite(ok1, 'step_seconds')).toFixed(2),
        Number(r.final_loss).toPrecision(6),
        meanSd(finite(ok1, 'dice_mean')),
      ];
    });
    return [
      machineLine(rows, 'VOLSEG_THREADS=1 npm run experiment -- spatial-partitioning'),
      '',
      ...table(['configuration', 'ranks', 'peak train per rank (vs full volume)', 'estimated', 'exchanged per step', 'step (s)', 'final loss', 'Dice mean'], body),
    ];
  },

  bench: (ctx) => {
    const file = join(ctx.root, 'results', 'bench', 'bench.json');
    if (!existsSync(file)) throw new Error(`${file}: missing; run npm run bench -- --record`);
    const doc = JSON.parse(readFileSync(file, 'utf8')) as { date: string; machine: string; fmaPeakGflops: number | null; tileCeiling?: TileCeiling | null; rows: BenchRow[]; profile?: StepProfile; options?: Partial<BenchOptions>; command?: string };
    // The command line the record stores; records made before it did rebuild it from their options.
    const command = doc.command ?? `npm run bench -- --record${doc.options?.quick ? ' --quick' : ''}${doc.options?.repeats !== undefined && doc.options.repeats !== 7 ? ` --repeats ${doc.options.repeats}` : ''}`;
    const prof = doc.profile;
    const profileLines = !prof
      ? []
      : [
          '',
          `Where the owned step's time goes (${prof.step}, ${prof.steps} more steps with every kernel timed, in the same run; FMA peak around them ${prof.fmaPeak === null ? 'n/a' : `${prof.fmaPeak.toFixed(0)} GFLOP/s`}): ` +
            `${prof.wallMs.toFixed(0)} ms a step, of which kernels ${prof.kernelMs.toFixed(0)} ms, main-thread GC pauses ${prof.gcMs.toFixed(0)} ms, and the rest (JavaScript outside kernels) ${prof.otherMs.toFixed(0)} ms.`,
          '',
          ...table(
            ['kernel', 'ms per step', 'calls per step', 'GFLOP/s (% of that FMA peak)'],
            prof.kernels
              .filter((k) => k.msPerStep >= 1)
              .map((k) => [
                k.kernel,
                k.msPerStep.toFixed(1),
                k.callsPerStep.toFixed(0),
                k.gflops === null ? '—' : `${k.gflops.toFixed(0)}${prof.fmaPeak ? ` (${((100 * k.gflops) / prof.fmaPeak).toFixed(0)}%)` : ''}`,
              ]),
          ),
        ];
    const kernels = doc.rows.filter((r) => r.strategy === null);
    const steps = doc.rows.filter((r) => r.strategy !== null);
    const peak = doc.fmaPeakGflops;
    return [
      `Records: \`${command}\` (results/bench/bench.json, ${doc.date.slice(0, 10)}); machine: ${doc.machine}; FMA peak measured: ${peak ? `${peak.toFixed(0)} GFLOP/s` : 'n/a'}${doc.tileCeiling ? `; the convolution micro-kernel with its data in cache (${doc.tileCeiling.tile}, the tile of the 16 → 16 layers): ${doc.tileCeiling.gflops.toFixed(0)} GFLOP/s, ${(100 * doc.tileCeiling.share).toFixed(0)}% of the FMA peak around it, the convolutions' own ceiling` : ''}.`,
      '',
      ...table(
        ['kernel', 'shape', 'backend', 'ms', 'GFLOP/s'],
        kernels.map((r) => [r.name, r.shape, r.backend, r.ms.toFixed(1), r.gflops === null ? '—' : r.gflops.toFixed(0)]),
      ),
      '',
      `Training steps (${steps[0] ? `${steps[0].name}, ${steps[0].shape}` : 'none recorded'}): median of the timed steps, their range, the measured peak, and what each row is. ` +
        "Paired: the median over the row's timed steps of each over the owned step timed just before it (range in brackets), and of its GFLOP/s over the FMA peak measured around its round (a probe before the round and one after) and around the step itself (a short probe just before it and one just after).",
      '',
      ...table(
        ['strategy', 'backend', 'ms', 'range (ms)', 'GFLOP/s (% of FMA peak)', "% of its round's FMA peak (median)", '% of the FMA peak around the step (median)', 'paired: × the owned step before it', 'peak', 'row'],
        steps.map((r) => [
          r.strategy!,
          r.backend,
          r.ms.toFixed(0),
          r.spreadMs ? `${r.spreadMs[0].toFixed(0)}–${r.spreadMs[1].toFixed(0)}` : '—',
          r.gflops === null ? '—' : `${r.gflops.toFixed(0)}${peak ? ` (${((100 * r.gflops) / peak).toFixed(0)}%)` : ''}`,
          r.roundPeakShare === undefined ? '—' : `${(100 * r.roundPeakShare).toFixed(0)}%`,
          r.stepPeakShare === undefined ? '—' : `${(100 * r.stepPeakShare).toFixed(0)}%`,
          r.pairedRatio ? `${r.pairedRatio.median.toFixed(2)} [${r.pairedRatio.min.toFixed(2)}, ${r.pairedRatio.max.toFixed(2)}]` : '—',
          r.peakBytes === undefined ? '—' : bytes(r.peakBytes),
          r.note ?? '',
        ]),
      ),
      ...profileLines,
    ];
  },
  'microct-cascade': (ctx) => {
    const dir = join(ctx.root, 'results', 'microct-cascade');
    const rows = ok(load(ctx, 'microct-cascade'));
    if (rows.length === 0) throw new Error(`${join(dir, 'trials.csv')}: no trial ok; run npm run experiment -- microct-cascade`);
    const r = rows[0]!;
    const curve = readCurves(dir).filter((c) => c.trial === r.trial);
    const ds = (rowSettings(r).dataset as { settings?: { cases?: number; size?: number[] } } | undefined)?.settings;
    return [
      machineLine(rows, 'npm run experiment -- microct-cascade'),
      `${ds?.cases ?? '?'} synthetic-microct cases of ${(ds?.size ?? []).join('×')}, ${r.validation_cases} of them validating; ${r.steps} steps on ${String(r.input_shape).replace(/x/g, '×')} inputs ` +
        `(64³ output patches), training ${(num(r.train_seconds) / 60).toFixed(1)} min (median step ${num(r.step_seconds).toFixed(2)} s); peak train ${bytes(num(r.peak_train_bytes))} ` +
        `(estimated ${bytes(num(r.est_peak_train_bytes))}), inference ${bytes(num(r.peak_infer_bytes))}. Validation Dice on the whole volumes (sliding window) along training:`,
      '',
      ...table(
        ['step', 'train (s)', 'loss', 'Dice tube', 'Dice sheet', 'Dice mean'],
        curve.map((c) => [String(c.step), num(c.train_seconds).toFixed(0), num(c.loss).toFixed(3), num(c.dice_tube).toFixed(3), num(c.dice_sheet).toFixed(3), num(c.dice_mean).toFixed(3)]),
      ),
      '',
      `Final: Dice tube ${num(r.dice_tube).toFixed(3)}, sheet ${num(r.dice_sheet).toFixed(3)}; HD95 tube ${num(r.hd95_tube).toFixed(1)}, sheet ${num(r.hd95_sheet).toFixed(1)} voxels.`,
    ];
  },

  'microct-inference': (ctx) => {
    const file = join(ctx.root, 'results', 'microct-inference', 'records.json');
    const records = readMicroctRecords(file);
    if (records.length === 0) throw new Error(`${file}: no records; run npm run microct-inference -- --size 397 --size 630 --record`);
    return [`Records: ${records.map((r) => `\`${r.command}\``).join(', ')} (results/microct-inference/records.json).`, ...recordsOverview(records)];
  },
};

function ok(rows: Rows): Rows {
  return rows.filter((r) => r.status === 'ok');
}

const BLOCK = /<!-- table:([\w-]+) -->\n[\s\S]*?<!-- \/table:\1 -->/g;

/** The README with every marked block regenerated from the records under `root`; names blocks it does not know. */
export function renderReadme(text: string, root: string): string {
  return text.replace(BLOCK, (_all, name: string) => {
    const block = README_BLOCKS[name];
    if (!block) throw new Error(`README.md: unknown table block "${name}"; known: ${Object.keys(README_BLOCKS).join(', ')}`);
    return `<!-- table:${name} -->\n${block({ root }).join('\n')}\n<!-- /table:${name} -->`;
  });
}

/** The names of the marked blocks in a README text. */
export function readmeBlocks(text: string): string[] {
  return [...text.matchAll(BLOCK)].map((m) => m[1]!);
}
