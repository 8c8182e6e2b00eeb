/**
 * The paired comparison of summary.md on hand-computed cases: the bootstrap interval (exact bootstrap
 * distributions enumerated by hand), the Wilcoxon p (R's documented example), the pairing of trials by
 * seed and case, time to target on hand-made curves, and the rendered words.
 */
import { describe, it, expect } from 'vitest';
import { parseReference, selects } from '../core/config/reference.js';
import { bootstrapMeanInterval, wilcoxonSignedRank } from '../core/evaluation/statistics.js';
import { pairedDifferences, pairedCaseRows, renderComparison, timeToTarget, type ComparisonGroup, type CaseRecord, type TimeToTarget } from '../core/experiment/comparison.js';

const opts = { confidence: 0.95, resamples: 20_000, seed: 1 };

/** The exact percentile of the bootstrap mean of `x` (one seed), by enumerating all n^n resamples. */
function exactBootstrapQuantile(x: number[], q: number): number {
  const n = x.length;
  const means: number[] = [];
  const idx = new Array<number>(n).fill(0);
  for (let k = 0; k < n ** n; k++) {
    let r = k;
    for (let i = 0; i < n; i++) {
      idx[i] = r % n;
      r = Math.floor(r / n);
    }
    means.push(idx.reduce((s, i) => s + x[i]!, 0) / n);
  }
  means.sort((a, b) => a - b);
  // The same interpolated quantile as mathjs quantileSeq (type 7).
  const h = (means.length - 1) * q;
  const lo = Math.floor(h);
  return means[lo]! + (h - lo) * ((means[lo + 1] ?? means[lo]!) - means[lo]!);
}

describe('bootstrapMeanInterval', () => {
  it('gives a point interval when every difference is the same', () => {
    const r = bootstrapMeanInterval([[0.2, 0.2, 0.2], [0.2, 0.2, 0.2]], opts);
    for (const v of [r.mean, r.low, r.high]) expect(v).toBeCloseTo(0.2, 12);
  });

  it('spans both values for two cases (resample means 0, ½, 1 with probabilities ¼, ½, ¼)', () => {
    const r = bootstrapMeanInterval([[0, 1]], opts);
    expect(r).toEqual({ mean: 0.5, low: 0, high: 1 });
  });

  it('matches the enumerated bootstrap distribution of four cases', () => {
    const x = [0, 0, 1, 3];
    const r = bootstrapMeanInterval([x], opts);
    expect(r.mean).toBe(1);
    // Resample means are multiples of 1/4; the Monte Carlo quantile lands on (or next to) the exact one.
    expect(Math.abs(r.low - exactBootstrapQuantile(x, 0.025))).toBeLessThanOrEqual(0.25);
    expect(Math.abs(r.high - exactBootstrapQuantile(x, 0.975))).toBeLessThanOrEqual(0.25);
    expect(exactBootstrapQuantile(x, 0.025)).toBe(0);
    expect(exactBootstrapQuantile(x, 0.975)).toBe(2.25);
  });

  it('resamples seeds as well as cases: a pure seed effect widens the interval', () => {
    // Seed 1 gains nothing, seed 2 gains 1 on every case: over cases alone the mean would be fixed at ½.
    const r = bootstrapMeanInterval([[0, 0], [1, 1]], opts);
    expect(r).toEqual({ mean: 0.5, low: 0, high: 1 });
  });

  it('is reproducible and refuses ragged or non-finite grids', () => {
    const d = [[0.1, -0.2, 0.3, 0.05], [0.0, 0.1, 0.2, -0.1]];
    expect(bootstrapMeanInterval(d, opts)).toEqual(bootstrapMeanInterval(d, opts));
    expect(() => bootstrapMeanInterval([[1, 2], [3]], opts)).toThrow(/seed row 1 has 1 cases, row 0 has 2/);
    expect(() => bootstrapMeanInterval([[1, NaN]], opts)).toThrow(/finite/);
    expect(() => bootstrapMeanInterval([], opts)).toThrow(/no differences/);
  });
});

describe('wilcoxonSignedRank', () => {
  it("gives R's wilcox.test(x, y, paired = TRUE) on its documented example (V = 40, p = 0.03906)", () => {
    // Hollander & Wolfe (1973), p. 29: depression scale before (x) and after (y) a first therapy visit.
    const x = [1.83, 0.5, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.3];
    const y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29];
    const r = wilcoxonSignedRank(x.map((v, i) => v - y[i]!));
    expect(r.statistic).toBe(40);
    expect(r.p).toBeCloseTo(0.03906, 5);
  });

  it('gives the exact p = 2 / 2^n when every difference has the same sign', () => {
    expect(wilcoxonSignedRank([1, 2, 3, 4, 5, 6, 7, 8]).p).toBeCloseTo(2 / 256, 10);
  });

  it('gives p = 1 for no difference and no p for a single one', () => {
    expect(wilcoxonSignedRank([0, 0, 0]).p).toBe(1);
    expect(wilcoxonSignedRank([0.1]).p).toBeNaN();
  });
});

// Two configurations × two seeds, two validation cases, one region.
const row = (trial: number, strategy: string, seed: number, extra: Record<string, number | string> = {}) => ({
  trial,
  strategy,
  seed,
  status: 'ok',
  settings: JSON.stringify({ comparison: { reference: 'patch', metric: 'mean', confidence: 0.95, resamples: 2000 } }),
  ...extra,
});
const patch: ComparisonGroup = { axes: { strategy: 'patch', input_shape: '8x8x8' }, rows: [row(0, 'patch', 1, { dice_mean: 0.6 }), row(1, 'patch', 2, { dice_mean: 0.7 })] };
const swap: ComparisonGroup = { axes: { strategy: 'swap', input_shape: '16x16x16' }, rows: [row(2, 'swap', 1, { dice_mean: 0.8 }), row(3, 'swap', 2, { dice_mean: 0.9 })] };
const cases: CaseRecord[] = [
  { trial: 0, case: 'a', region: 'WT', dice: 0.5 },
  { trial: 0, case: 'b', region: 'WT', dice: 0.7 },
  { trial: 1, case: 'a', region: 'WT', dice: 0.6 },
  { trial: 1, case: 'b', region: 'WT', dice: 0.8 },
  { trial: 2, case: 'a', region: 'WT', dice: 0.9 },
  { trial: 2, case: 'b', region: 'WT', dice: 0.7 },
  { trial: 3, case: 'a', region: 'WT', dice: 0.7 },
  { trial: 3, case: 'b', region: 'WT', dice: 1.0 },
  // A case only one trial validated on is not paired.
  { trial: 3, case: 'c', region: 'WT', dice: 0.1 },
];

describe('pairing by seed and case', () => {
  it('takes the difference to the reference of the same seed, per case', () => {
    const d = pairedDifferences(swap, patch, ['WT'], cases).get('WT')!;
    expect(d.map((r) => r.map((v) => +v.toFixed(10)))).toEqual([
      [0.4, 0],
      [0.1, 0.2],
    ]);
    const rows = pairedCaseRows({ groups: [patch, swap], regions: ['WT'], cases, curves: [] });
    expect(rows.map((r) => [r.seed, r.case, +(r.difference as number).toFixed(10)])).toEqual([
      [1, 'a', 0.4],
      [1, 'b', 0],
      [2, 'a', 0.1],
      [2, 'b', 0.2],
    ]);
  });

  it('leaves out a seed whose trial did not finish ok', () => {
    const failed: ComparisonGroup = { ...swap, rows: [swap.rows[0]!, { ...swap.rows[1]!, status: 'did-not-fit' }] };
    expect(pairedDifferences(failed, patch, ['WT'], cases).get('WT')!.length).toBe(1);
  });

  it('renders ΔDice [CI] against the reference and says whether the interval excludes 0', () => {
    const text = renderComparison({ groups: [patch, swap], regions: ['WT'], cases, curves: [] }).join('\n');
    // Mean of 0.4, 0, 0.1, 0.2 = 0.175.
    expect(text).toContain('| swap − patch | 2 | 2 | +0.175 [');
    expect(text).toMatch(/swap − patch, WT: ΔDice \+0\.175 \[[+−]\d\.\d{3}, [+−]\d\.\d{3}\]; the 95% interval (excludes 0: swap is better|includes 0: no difference shown)/);
    expect(text).toContain('No learning curves were recorded');
  });

  it('names the other axes that tell two comparisons of the same pair apart', () => {
    const at = (g: ComparisonGroup, size: string, first: number): ComparisonGroup => ({
      axes: { ...g.axes, 'dataset.settings.size': size },
      rows: g.rows.map((r, i) => ({ ...r, trial: first + i })),
    });
    const groups = [at(patch, '[16,16,16]', 0), at(swap, '[16,16,16]', 2), at(patch, '[32,32,32]', 4), at(swap, '[32,32,32]', 6)];
    const moved = [...cases, ...cases.map((c) => ({ ...c, trial: (c.trial as number) + 4 }))];
    const text = renderComparison({ groups, regions: ['WT'], cases: moved, curves: [] }).join('\n');
    expect(text).toContain('| swap − patch at dataset.settings.size=[16,16,16] | 2 | 2 | +0.175 [');
    expect(text).toContain('| swap − patch at dataset.settings.size=[32,32,32] | 2 | 2 | +0.175 [');
  });

  it('says once that there is no ΔDice when no trial recorded a Dice (memory-only sweeps)', () => {
    const text = renderComparison({ groups: [patch, swap], regions: ['WT'], cases: [], curves: [] }).join('\n');
    expect(text).toContain('No validation Dice was recorded');
    expect(text).not.toContain('no paired ok trials');
    expect(text).not.toContain('### ΔDice against');
  });
});

describe('comparing along the architecture axis', () => {
  // Three architectures under one strategy; the reference is singled out by its settings.
  const arch = (trial: number, name: string, settings: Record<string, unknown>, seed: number) => ({
    trial,
    strategy: 'patch',
    architecture: name,
    seed,
    status: 'ok',
    settings: JSON.stringify({
      architecture: { name, settings },
      comparison: { axis: 'architecture', reference: 'cascade(join=post-concat)', metric: 'mean', confidence: 0.95, resamples: 2000 },
    }),
  });
  const post: ComparisonGroup = { axes: { strategy: 'patch', architecture: 'cascade', 'architecture.settings.join': 'post-concat' }, rows: [arch(0, 'cascade', { join: 'post-concat' }, 1), arch(1, 'cascade', { join: 'post-concat' }, 2)] };
  const input: ComparisonGroup = { axes: { strategy: 'patch', architecture: 'cascade', 'architecture.settings.join': 'input-channel' }, rows: [arch(2, 'cascade', { join: 'input-channel' }, 1), arch(3, 'cascade', { join: 'input-channel' }, 2)] };
  const single: ComparisonGroup = { axes: { strategy: 'patch', architecture: 'unet3d', 'architecture.settings.join': '—' }, rows: [arch(4, 'unet3d', {}, 1), arch(5, 'unet3d', {}, 2)] };
  const dice: CaseRecord[] = [0, 1, 2, 3, 4, 5].flatMap((t) => ['a', 'b'].map((c, j) => ({ trial: t, case: c, region: 'WT', dice: [0.8, 0.7, 0.6, 0.5, 0.4, 0.3][t]! + 0.01 * j })));

  it('pairs every other architecture with the selected reference, by seed and case', () => {
    const rows = pairedCaseRows({ groups: [post, input, single], regions: ['WT'], cases: dice, curves: [] });
    expect([...new Set(rows.map((r) => r.comparison))]).toEqual(['cascade (join=input-channel) − cascade (join=post-concat)', 'unet3d − cascade (join=post-concat)']);
    expect(rows.filter((r) => r.architecture === undefined).map((r) => +(r.difference as number).toFixed(10))).toEqual([-0.2, -0.2, -0.2, -0.2, -0.4, -0.4, -0.4, -0.4]);
    const text = renderComparison({ groups: [post, input, single], regions: ['WT'], cases: dice, curves: [] }).join('\n');
    expect(text).toContain('## Comparison with the reference architecture');
    expect(text).toContain('- Reference: `cascade(join=post-concat)`.');
    expect(text).toContain('| cascade (join=input-channel) − cascade (join=post-concat) | 2 | 2 | −0.200 [');
  });

  it('reads name(key=value) references, and selects by resolved settings', () => {
    expect(parseReference('unet3d')).toEqual({ name: 'unet3d', settings: [] });
    expect(parseReference(' me-fcn(widthMultiplier=0.5, narrow=true) ')).toEqual({ name: 'me-fcn', settings: [['widthMultiplier', '0.5'], ['narrow', 'true']] });
    expect(parseReference('c(filters=[8, 16], join=post-concat)')).toEqual({ name: 'c', settings: [['filters', '[8, 16]'], ['join', 'post-concat']] });
    expect(parseReference('me-fcn(width)')).toBeNull();
    expect(selects(parseReference('c(filters=[8,16])')!, { name: 'c', settings: { filters: [8, 16] } })).toBe(true);
    expect(selects(parseReference('c(join=post-concat)')!, { name: 'c', settings: { join: 'input-channel' } })).toBe(false);
    expect(selects(parseReference('c(missing=1)')!, { name: 'c', settings: {} })).toBe(false);
  });
});

describe('time to target', () => {
  const curve = (trial: number, points: [number, number, number][]) =>
    points.map(([step, seconds, dice]) => ({ trial, step, train_seconds: seconds, voxels_seen: step * 100, dice_mean: dice }));
  const curves = [
    ...curve(0, [[10, 1, 0.3], [20, 2, 0.6]]),
    ...curve(1, [[10, 1, 0.5], [20, 2, 0.7]]),
    ...curve(2, [[5, 4, 0.66], [10, 8, 0.8]]),
    ...curve(3, [[5, 4, 0.5], [10, 8, 0.9]]),
  ];

  it('is the first curve point at or above the target, the median over seeds', () => {
    const at = (v: number) => () => v;
    const round = (t: TimeToTarget) => ({ ...t, best: t.best === null ? null : +t.best.toFixed(10) });
    // Target 0.65: patch seed 1 never, seed 2 at 2 s, so the median is "not reached".
    expect(round(timeToTarget(patch, curves, 'dice_mean', at(0.65)))).toEqual({ reached: 1, of: 2, seconds: null, voxels: null, steps: null, best: 0.65 });
    expect(round(timeToTarget(swap, curves, 'dice_mean', at(0.65)))).toEqual({ reached: 2, of: 2, seconds: 6, voxels: 750, steps: 7.5, best: 0.85 });
    expect(round(timeToTarget(patch, curves, 'dice_mean', at(0.5)))).toEqual({ reached: 2, of: 2, seconds: 1.5, voxels: 1500, steps: 15, best: 0.65 });
    // Per seed: seed 1 aims at 0.6, seed 2 at 0.7 (the reference's own finals): swap at 4 s and 8 s.
    const perSeed = (seed: number) => (seed === 1 ? 0.6 : 0.7);
    expect(round(timeToTarget(swap, curves, 'dice_mean', perSeed))).toEqual({ reached: 2, of: 2, seconds: 6, voxels: 750, steps: 7.5, best: 0.85 });
    expect(round(timeToTarget(patch, curves, 'dice_mean', perSeed))).toEqual({ reached: 2, of: 2, seconds: 2, voxels: 2000, steps: 20, best: 0.65 });
  });

  it("renders the target (by default the reference's final Dice of the same seed) and the ratio", () => {
    const text = renderComparison({ groups: [patch, swap], regions: ['WT'], cases, curves }).join('\n');
    expect(text).toContain('Target: for each seed, the final mean Dice over regions of `patch` with that seed (0.650 on average over its seeds)');
    expect(text).toContain('| patch | 2 of 2 | 2.0 | 2 k | 20 | 0.650 | 1.00× |');
    expect(text).toContain('| swap | 2 of 2 | 6.0 | 750 | 7.5 | 0.850 | 3.00× |');
    expect(text).toContain('swap reaches it in 6.0 s, 3.00× the time of `patch` (2.0 s): 3.00× slower.');
    expect(text).toContain('| swap | 0.580 at 4.0 s, 500 | 0.850 at 8.0 s, 1 k |');
  });
});
