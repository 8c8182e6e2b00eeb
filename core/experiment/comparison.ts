/**
 * The comparison sections of summary.md, computed from the records alone (trials.csv, cases.csv,
 * curves.csv): each configuration against the experiment's reference, paired by seed and validation
 * case. The reference is a value of the compared axis (`comparison.axis`: the strategy by default, or the
 * architecture or the dataset), a plugin name optionally narrowed by settings, such as
 * `meunet-cascade(join=post-concat)`; a configuration is paired with the reference configuration that
 * shares every other axis. The sections: ΔDice with a bootstrap interval over cases and seeds and a
 * Wilcoxon signed-rank p, the time each configuration takes to reach a target Dice on its learning curve,
 * and the budget the trials were given.
 */
import { median } from 'mathjs';
import { bootstrapMeanInterval, wilcoxonSignedRank } from '../evaluation/index.js';
import { rowSettings, trialKey } from './labels.js';
import { COMPARED_AXES, parseReference, selects, type ComparedAxis } from '../config/index.js';

type Value = string | number | null;
type Row = Record<string, Value>;

/** One configuration of the summary (its trials over seeds) and its axis values. */
export interface ComparisonGroup {
  axes: Record<string, string>;
  rows: Row[];
}

/** A per-case record (cases.csv). */
export interface CaseRecord {
  trial: string | number;
  trial_id?: string;
  case: string;
  region: string;
  dice: number;
}

export interface ComparisonInput {
  groups: ComparisonGroup[];
  /** Region names, in task order. */
  regions: string[];
  cases: CaseRecord[];
  curves: Row[];
}

/** The comparison settings a trial recorded (settings.comparison), with the defaults of COMPARISON_SCHEMA. */
export interface RecordedComparison {
  reference: string | null;
  /** The plugin choice compared ('strategy', 'architecture' or 'dataset'). */
  axis: ComparedAxis;
  target: number | null;
  metric: string;
  confidence: number;
  resamples: number;
}

/** Paired difference of one strategy to the reference in one region. */
export interface PairedResult {
  region: string;
  seeds: number;
  cases: number;
  mean: number;
  low: number;
  high: number;
  p: number;
}

/** Time to target of one configuration. */
export interface TimeToTarget {
  reached: number;
  of: number;
  /** Median over seeds (unreached seeds count as never): training seconds, voxels seen, steps; null: not reached. */
  seconds: number | null;
  voxels: number | null;
  steps: number | null;
  /** Median over seeds of the best value the curve reached. */
  best: number | null;
}

const num = (v: Value | undefined): number => (typeof v === 'number' ? v : NaN);

const signed = (v: number, digits = 3): string => `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(digits)}`;

/** Whether a configuration is the reference (every trial of a group shares its plugin choices). */
function isReference(g: ComparisonGroup, c: RecordedComparison, reference: string): boolean {
  const sel = parseReference(reference);
  if (!sel) return false;
  if (sel.settings.length === 0) return g.axes[c.axis] === sel.name;
  const row = g.rows[0];
  return row !== undefined && selects(sel, rowSettings(row)[c.axis]);
}

export function recordedComparison(rows: Row[]): RecordedComparison {
  const out: RecordedComparison = { reference: null, axis: 'strategy', target: null, metric: 'mean', confidence: 0.95, resamples: 10_000 };
  const c = rows.map((r) => rowSettings(r).comparison as Partial<RecordedComparison> | undefined).find((x) => x);
  if (!c) return out;
  if (typeof c.reference === 'string') out.reference = c.reference;
  if (typeof c.axis === 'string' && (COMPARED_AXES as readonly string[]).includes(c.axis)) out.axis = c.axis;
  if (typeof c.target === 'number') out.target = c.target;
  if (typeof c.metric === 'string') out.metric = c.metric;
  if (typeof c.confidence === 'number') out.confidence = c.confidence;
  if (typeof c.resamples === 'number') out.resamples = c.resamples;
  return out;
}

/** The axes that say what a configuration is apart from the compared axis (paired configurations share them). */
function contextOn(g: ComparisonGroup, axis: ComparedAxis): string {
  return JSON.stringify(otherAxes(g, axis));
}

/** The axes of `g` other than the compared one and its settings (input_shape follows from them). */
function otherAxes(g: ComparisonGroup, axis: ComparedAxis): [string, string][] {
  return Object.entries(g.axes).filter(([k]) => k !== axis && k !== 'input_shape' && !k.startsWith(`${axis}.`));
}

/**
 * A configuration as the comparison names it: its value on the compared axis as the trial's label writes it
 * (the plugin and the settings the experiment file gave it, e.g. `me-fcn(depth=3,narrow=true)`, and any
 * path axis into it), else the plugin's name and the settings that vary among the configurations.
 */
function labelOn(g: ComparisonGroup, axis: ComparedAxis): string {
  const text = g.rows[0] ? rowSettings(g.rows[0]).label : undefined;
  if (typeof text === 'string') {
    const parts = text.split(/\s+/).filter((p) => p.startsWith(`${axis}=`) || p.startsWith(`${axis}.`));
    if (parts.length) return parts.map((p) => (p.startsWith(`${axis}=`) ? p.slice(axis.length + 1) : p)).join(' ');
  }
  const extra = Object.entries(g.axes)
    // Settings the configuration's plugin does not have ('—': another plugin's) say nothing about it.
    .filter(([k, v]) => k.startsWith(`${axis}.`) && v !== '—')
    .map(([k, v]) => `${k.slice(`${axis}.settings.`.length) || k}=${v}`);
  return extra.length ? `${g.axes[axis]} (${extra.join(', ')})` : (g.axes[axis] ?? '?');
}

/**
 * The pairing context of each group in words, for the comparison rows: the other axes whose values differ
 * among the groups (e.g. `dataset.settings.size=[48,48,48]`), so two comparisons of the same pair of
 * strategies at different sizes read apart; '' where every group shares its context.
 */
function contextWords(groups: ComparisonGroup[], axis: ComparedAxis): (g: ComparisonGroup) => string {
  const varying = new Set<string>();
  for (const g of groups)
    for (const [k, v] of otherAxes(g, axis)) if (groups.some((h) => h.axes[k] !== v)) varying.add(k);
  return (g) => {
    const parts = otherAxes(g, axis).filter(([k]) => varying.has(k)).map(([k, v]) => `${k}=${v}`);
    return parts.length ? ` at ${parts.join(', ')}` : '';
  };
}

/** The compared axis, the reference as written and the reference configurations of `groups`. */
export function referenceGroups(groups: ComparisonGroup[], c: RecordedComparison): { reference: string | null; refs: ComparisonGroup[] } {
  const reference = c.reference ?? groups[0]?.axes[c.axis] ?? null;
  return { reference, refs: reference === null ? [] : groups.filter((g) => isReference(g, c, reference)) };
}

/** The reference configuration `g` is paired with (the first that shares its other axes), if any. */
export function pairedReference(g: ComparisonGroup, refs: ComparisonGroup[], axis: ComparedAxis): ComparisonGroup | undefined {
  if (refs.includes(g)) return undefined;
  return refs.find((r) => contextOn(r, axis) === contextOn(g, axis));
}

/** "a − b" as the comparison tables name a paired difference. */
export function comparisonLabel(g: ComparisonGroup, ref: ComparisonGroup, axis: ComparedAxis): string {
  return `${labelOn(g, axis)} − ${labelOn(ref, axis)}`;
}

/**
 * Paired differences of `g` to `ref`, per region: d[seed][case] = Dice(g) − Dice(ref), over the seeds
 * both ran ok and the cases every one of those trials validated on.
 */
export function pairedDifferences(g: ComparisonGroup, ref: ComparisonGroup, regions: string[], cases: CaseRecord[]): Map<string, number[][]> {
  const ok = (rows: Row[]): Map<number, string> => {
    const m = new Map<number, string>();
    for (const r of rows) if (r.status === 'ok' && typeof r.seed === 'number') m.set(r.seed, trialKey(r));
    return m;
  };
  const a = ok(g.rows);
  const b = ok(ref.rows);
  const seeds = [...a.keys()].filter((s) => b.has(s)).sort((x, y) => x - y);
  const byTrial = new Map<string, Map<string, number>>();
  for (const c of cases) {
    const key = trialKey(c);
    if (!byTrial.has(key)) byTrial.set(key, new Map());
    byTrial.get(key)!.set(`${c.case}\u0000${c.region}`, c.dice);
  }
  const out = new Map<string, number[][]>();
  for (const region of regions) {
    const trials = seeds.flatMap((s) => [a.get(s)!, b.get(s)!]);
    const caseIds = [...new Set(cases.filter((c) => c.region === region && trials.includes(trialKey(c))).map((c) => c.case))]
      .filter((id) => trials.every((t) => Number.isFinite(byTrial.get(t)?.get(`${id}\u0000${region}`) ?? NaN)))
      .sort();
    if (caseIds.length === 0 || seeds.length === 0) continue;
    out.set(
      region,
      seeds.map((s) => caseIds.map((id) => byTrial.get(a.get(s)!)!.get(`${id}\u0000${region}`)! - byTrial.get(b.get(s)!)!.get(`${id}\u0000${region}`)!)),
    );
  }
  // The mean over regions, per seed and case, where every region is present.
  const per = regions.map((r) => out.get(r));
  if (regions.length > 1 && per.every((d) => d !== undefined) && per.every((d) => d!.length === per[0]!.length && d![0]!.length === per[0]![0]!.length)) {
    out.set('mean', per[0]!.map((row, i) => row.map((_, j) => per.reduce((s, d) => s + d![i]![j]!, 0) / per.length)));
  }
  return out;
}

/**
 * Every paired difference behind the ΔDice table, one row per configuration × seed × validation case ×
 * region (written as paired.csv beside the summary): the configuration's Dice, the reference's and the
 * difference.
 */
export function pairedCaseRows(input: ComparisonInput): Row[] {
  const { groups, regions, cases } = input;
  const c = recordedComparison(groups.flatMap((g) => g.rows));
  const { refs } = referenceGroups(groups, c);
  const dice = new Map<string, number>();
  for (const x of cases) dice.set(`${trialKey(x)}\u0000${x.case}\u0000${x.region}`, x.dice);
  const out: Row[] = [];
  for (const g of groups) {
    const ref = pairedReference(g, refs, c.axis);
    if (!ref) continue;
    const trialOf = (rows: Row[], seed: number): string | undefined => {
      const r = rows.find((x) => x.status === 'ok' && x.seed === seed);
      return r ? trialKey(r) : undefined;
    };
    const seeds = [...new Set(g.rows.map((r) => r.seed).filter((s): s is number => typeof s === 'number'))].sort((a, b) => a - b);
    for (const seed of seeds) {
      const ta = trialOf(g.rows, seed);
      const tb = trialOf(ref.rows, seed);
      if (ta === undefined || tb === undefined) continue;
      for (const x of cases) {
        if (trialKey(x) !== ta || !regions.includes(x.region)) continue;
        const b = dice.get(`${tb}\u0000${x.case}\u0000${x.region}`);
        if (b === undefined) continue;
        out.push({ comparison: comparisonLabel(g, ref, c.axis), seed, case: x.case, region: x.region, dice: x.dice, reference_dice: b, difference: x.dice - b, trial: ta, reference_trial: tb });
      }
    }
  }
  return out;
}

/** ΔDice with its interval and p, from a seeds × cases grid (Wilcoxon over cases, seeds averaged). */
export function pairedResult(region: string, d: number[][], c: Pick<RecordedComparison, 'confidence' | 'resamples'>): PairedResult {
  const interval = bootstrapMeanInterval(d, { confidence: c.confidence, resamples: c.resamples, seed: 0 });
  const perCase = d[0]!.map((_, j) => d.reduce((s, row) => s + row[j]!, 0) / d.length);
  return { region, seeds: d.length, cases: d[0]!.length, mean: interval.mean, low: interval.low, high: interval.high, p: wilcoxonSignedRank(perCase).p };
}

/**
 * When each seed's learning curve first reaches its target on `column` (`target(seed)`: the same number
 * for every seed, or the reference's final Dice of that seed); medians over seeds, and the best Dice each
 * curve reached (median over seeds).
 */
export function timeToTarget(g: ComparisonGroup, curves: Row[], column: string, target: (seed: number) => number | undefined): TimeToTarget {
  const hits: { seconds: number; voxels: number; steps: number }[] = [];
  const best: number[] = [];
  for (const r of g.rows.filter((x) => x.status === 'ok')) {
    const goal = typeof r.seed === 'number' ? target(r.seed) : undefined;
    const points = curves.filter((c) => trialKey(c) === trialKey(r)).sort((x, y) => num(x.step) - num(y.step));
    if (points.length === 0 || goal === undefined) continue;
    best.push(Math.max(...points.map((c) => num(c[column])).filter(Number.isFinite)));
    const hit = points.find((c) => num(c[column]) >= goal);
    hits.push(hit ? { seconds: num(hit.train_seconds), voxels: num(hit.voxels_seen), steps: num(hit.step) } : { seconds: Infinity, voxels: Infinity, steps: Infinity });
  }
  const reached = hits.filter((h) => Number.isFinite(h.seconds)).length;
  const med = (k: 'seconds' | 'voxels' | 'steps'): number | null => {
    if (hits.length === 0) return null;
    const m = median(hits.map((h) => h[k])) as number;
    return Number.isFinite(m) ? m : null;
  };
  return { reached, of: hits.length, seconds: med('seconds'), voxels: med('voxels'), steps: med('steps'), best: best.length ? (median(best) as number) : null };
}

/**
 * The learning curves, averaged over seeds point by point (the k-th point of every seed; with curvePoints
 * the points of all strategies fall at the same fractions of the budget).
 */
function curveTable(groups: ComparisonGroup[], curves: Row[], column: string, label: (g: ComparisonGroup) => string): string[] {
  const series = groups
    .map((g) => {
      const perSeed = g.rows
        .filter((r) => r.status === 'ok')
        .map((r) => curves.filter((c) => trialKey(c) === trialKey(r)).sort((x, y) => num(x.step) - num(y.step)))
        .filter((p) => p.length > 0);
      return { g, perSeed };
    })
    .filter((x) => x.perSeed.length > 0);
  if (series.length === 0) return [];
  const points = Math.max(...series.map((x) => Math.min(...x.perSeed.map((p) => p.length))));
  const header = ['configuration', ...Array.from({ length: points }, (_, k) => `point ${k + 1}`)];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`];
  for (const { g, perSeed } of series) {
    const n = Math.min(...perSeed.map((p) => p.length));
    const cells = Array.from({ length: points }, (_, k) => {
      if (k >= n) return '—';
      const mean = (f: (c: Row) => number): number => perSeed.reduce((s, p) => s + f(p[k]!), 0) / perSeed.length;
      return `${mean((c) => num(c[column])).toFixed(3)} at ${mean((c) => num(c.train_seconds)).toFixed(1)} s, ${fmtVoxels(mean((c) => num(c.voxels_seen)))}`;
    });
    lines.push(`| ${label(g)} | ${cells.join(' | ')} |`);
  }
  return lines;
}

const fmtVoxels = (v: number): string => (v >= 1e6 ? `${(v / 1e6).toFixed(1)} M` : v >= 1e3 ? `${(v / 1e3).toFixed(0)} k` : String(v));

/** What was equal across the trials, in words. */
function budgetLines(rows: Row[]): string[] {
  const budgets = [...new Set(rows.map((r) => r.budget).filter((b): b is string => typeof b === 'string' && b !== ''))];
  if (budgets.length === 0) return ['- Budget: not recorded (trials from before budgets were recorded: each ran epochs × stepsPerEpoch steps).'];
  const words = (b: string): string => {
    const [kind, value] = b.split(' ');
    const v = Number(value);
    if (kind === 'voxels') return `equal voxels seen: each trial trains until it has seen ${fmtVoxels(v)} input voxels (${value})`;
    if (kind === 'seconds') return `equal training time: each trial trains for ${value} s of wall time (validation passes excluded)`;
    return `equal steps: each trial runs ${value} optimizer steps`;
  };
  return budgets.length === 1 ? [`- Budget: ${words(budgets[0]!)}.`] : [`- Budgets differ between trials: ${budgets.map(words).join('; ')}.`];
}

/** The comparison sections of summary.md (markdown lines). */
export function renderComparison(input: ComparisonInput): string[] {
  const { groups, regions, cases, curves } = input;
  const allRows = groups.flatMap((g) => g.rows);
  const c = recordedComparison(allRows);
  const axis = c.axis;
  const { reference, refs } = referenceGroups(groups, c);
  const label = (g: ComparisonGroup): string => labelOn(g, axis);
  const contextKey = (g: ComparisonGroup): string => contextOn(g, axis);
  // With one value of the compared axis there is nothing to compare: the budget alone.
  if (new Set(groups.map((g) => JSON.stringify(Object.entries(g.axes).filter(([k]) => k === axis || k.startsWith(`${axis}.`))))).size < 2)
    return ['## Training budget', '', ...budgetLines(allRows), ''];
  const lines: string[] = [`## Comparison with the reference ${axis}`, ''];
  lines.push(...budgetLines(allRows));
  if (!reference) return [...lines, '', 'No trials.', ''];
  lines.push(
    `- Reference: \`${reference}\`${c.reference ? '' : ` (the first ${axis}: the records name none)`}. Each other configuration is paired with the reference configuration that shares its other axes, by seed and validation case.`,
    '',
  );
  if (refs.length === 0) return [...lines, `No trial of the reference ${axis} \`${reference}\` is recorded.`, ''];

  // Paired ΔDice.
  const hasDice = cases.some((x) => regions.includes(x.region) && Number.isFinite(x.dice));
  const pct = Math.round(c.confidence * 100);
  const where = contextWords(groups, axis);
  const named = (g: ComparisonGroup): string => `${label(g)}${where(g)}`;
  const shown = regions.length > 1 ? [...regions, 'mean'] : regions;
  const table: string[] = [];
  const words: string[] = [];
  for (const g of hasDice ? groups : []) {
    const ref = pairedReference(g, refs, axis);
    if (!ref) continue;
    const pair = `${comparisonLabel(g, ref, axis)}${where(g)}`;
    const diffs = pairedDifferences(g, ref, regions, cases);
    if (diffs.size === 0) {
      table.push(`| ${pair} | 0 | 0 | ${shown.map(() => 'no paired ok trials').join(' | ')} |`);
      continue;
    }
    const results = shown.map((r) => (diffs.has(r) ? pairedResult(r, diffs.get(r)!, c) : null));
    const first = results.find((r) => r !== null)!;
    table.push(
      `| ${pair} | ${first.seeds} | ${first.cases} | ${results
        .map((r) => (r ? `${signed(r.mean)} [${signed(r.low)}, ${signed(r.high)}], p = ${Number.isNaN(r.p) ? 'n/a' : r.p < 0.001 ? r.p.toExponential(1) : r.p.toFixed(3)}` : '—'))
        .join(' | ')} |`,
    );
    for (const r of results) {
      if (!r) continue;
      const excludes = r.low > 0 || r.high < 0;
      words.push(
        `- ${pair}, ${r.region}: ΔDice ${signed(r.mean)} [${signed(r.low)}, ${signed(r.high)}]; ` +
          (excludes
            ? `the ${pct}% interval excludes 0: ${r.mean > 0 ? `${label(g)} is better` : `${label(ref)} is better`} on these cases.`
            : `the ${pct}% interval includes 0: no difference shown.`),
      );
    }
  }
  if (!hasDice) {
    lines.push('No validation Dice was recorded (these trials measured memory and time only): there is no ΔDice to pair.', '');
  } else if (table.length === 0) {
    lines.push('No configuration other than the reference has ok trials to pair.', '');
  } else {
    lines.push(`### ΔDice against \`${reference}\` (mean [${pct}% bootstrap CI], Wilcoxon p)`, '');
    const header = ['comparison', 'seeds', 'cases', ...shown.map((r) => `ΔDice ${r}`)];
    lines.push(`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...table, '', ...words, '');
  }

  // Time to target.
  lines.push('### Time to target', '');
  const column = c.metric === 'mean' ? 'dice_mean' : `dice_${c.metric}`;
  const metricName = c.metric === 'mean' ? 'mean Dice over regions' : `Dice ${c.metric}`;
  if (curves.length === 0) {
    lines.push('No learning curves were recorded (set `training.curveEvery` to validate every N steps).', '');
    return lines;
  }
  // The target: comparison.target, else per seed the reference's final Dice of that seed (which the
  // reference reaches by its last point at the latest, so its own time is defined).
  const targetFor = (g: ComparisonGroup) => {
    if (c.target !== null) return () => c.target!;
    const ref = refs.find((r) => contextKey(r) === contextKey(g));
    return (seed: number): number | undefined => {
      const v = num(ref?.rows.find((r) => r.status === 'ok' && r.seed === seed)?.[column]);
      return Number.isFinite(v) ? v : undefined;
    };
  };
  const refFinal = refs.flatMap((g) => g.rows.filter((r) => r.status === 'ok').map((r) => num(r[column]))).filter(Number.isFinite);
  if (c.target === null && refFinal.length === 0) {
    lines.push(`No ok trial of \`${reference}\` gives a final ${metricName} to aim at (set comparison.target).`, '');
    return lines;
  }
  const meanFinal = refFinal.reduce((a, b) => a + b, 0) / Math.max(1, refFinal.length);
  lines.push(
    (c.target !== null
      ? `Target: ${metricName} ≥ ${c.target.toFixed(3)} (comparison.target). `
      : `Target: for each seed, the final ${metricName} of \`${reference}\` with that seed (${meanFinal.toFixed(3)} on average over its seeds). `) +
      'Time is training wall time (validation passes excluded), at the first learning-curve point that reaches the target, so its resolution is the spacing of the points; ' +
      'the median over seeds (a seed that never reaches it counts as never, so the median is "not reached" when half of them do not). ' +
      '"best" is the median over seeds of the highest value the curve reached.',
    '',
  );
  const header = ['configuration', 'reached', 'time (s)', 'voxels seen', 'steps', 'best', `time / ${reference}'s`];
  lines.push(`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`);
  const refTimes = new Map(refs.map((r) => [contextKey(r), timeToTarget(r, curves, column, targetFor(r))]));
  const ratioWords: string[] = [];
  for (const g of groups) {
    const t = timeToTarget(g, curves, column, targetFor(g));
    if (t.of === 0) continue;
    const rt = refTimes.get(contextKey(g));
    const ratio = t.seconds !== null && rt?.seconds ? t.seconds / rt.seconds : null;
    lines.push(
      `| ${named(g)} | ${t.reached} of ${t.of} | ${t.seconds !== null ? t.seconds.toFixed(1) : 'not reached'} | ${t.voxels !== null ? fmtVoxels(t.voxels) : '—'} | ${t.steps ?? '—'} | ${t.best !== null ? t.best.toFixed(3) : '—'} | ${ratio !== null ? `${ratio.toFixed(2)}×` : '—'} |`,
    );
    if (!refs.includes(g) && rt) {
      ratioWords.push(
        t.seconds === null
          ? `- ${named(g)} does not reach the target in most seeds (${t.reached} of ${t.of}; its curves peak at ${t.best?.toFixed(3) ?? '—'}, median over seeds).`
          : rt.seconds === null
            ? `- ${named(g)} reaches it in ${t.seconds.toFixed(1)} s; \`${reference}\` itself does not in most seeds.`
            : `- ${named(g)} reaches it in ${t.seconds.toFixed(1)} s, ${ratio!.toFixed(2)}× the time of \`${reference}\` (${rt.seconds.toFixed(1)} s): ${ratio! < 1 ? `${(1 / ratio!).toFixed(2)}× faster` : `${ratio!.toFixed(2)}× slower`}.`,
      );
    }
  }
  lines.push('', ...ratioWords, '');
  const curveLines = curveTable(groups, curves, column, named);
  if (curveLines.length) lines.push(`### Learning curves (${metricName}, mean over seeds, at each validation point)`, '', ...curveLines, '');
  return lines;
}
