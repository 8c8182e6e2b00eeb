/**
 * Paired statistics for comparing two strategies on the same validation cases and seeds: a bootstrap
 * confidence interval of the mean difference that resamples cases and seeds, and the Wilcoxon
 * signed-rank test (from @stdlib/stats-wilcoxon: exact below 50 pairs, normal approximation above).
 */
import { quantileSeq } from 'mathjs';
import wilcoxon from '@stdlib/stats-wilcoxon';
import { SeededRng } from '../data/index.js';

export interface BootstrapOptions {
  /** Level of the interval, e.g. 0.95. */
  confidence: number;
  /** Number of resamples. */
  resamples: number;
  /** Seed of the resampling: the same differences give the same interval. */
  seed?: number;
}

export interface Interval {
  /** The mean over every seed and case. */
  mean: number;
  low: number;
  high: number;
}

/**
 * Percentile bootstrap interval of the mean of `d[seed][case]`, a seeds × cases grid of paired
 * differences (every seed validated on the same cases). Each resample draws seeds and cases
 * independently with replacement (a two-way bootstrap, so both the training noise of the seeds and the
 * sampling of the cases widen the interval) and takes the mean over the drawn grid. The bounds are the
 * (1 ∓ confidence) / 2 quantiles of the resampled means (linear interpolation between order statistics,
 * mathjs `quantileSeq`). With one seed this is the ordinary bootstrap over cases.
 */
export function bootstrapMeanInterval(d: readonly (readonly number[])[], options: BootstrapOptions): Interval {
  const S = d.length;
  const C = d[0]?.length ?? 0;
  if (S === 0 || C === 0) throw new Error('bootstrapMeanInterval: no differences (need at least one seed and one case)');
  for (const [s, row] of d.entries()) {
    if (row.length !== C) throw new Error(`bootstrapMeanInterval: seed row ${s} has ${row.length} cases, row 0 has ${C}; the grid must be complete`);
    for (const v of row) if (!Number.isFinite(v)) throw new Error(`bootstrapMeanInterval: seed row ${s} holds ${v}; differences must be finite`);
  }
  const total = d.reduce((sum, row) => sum + row.reduce((a, b) => a + b, 0), 0);
  const rng = new SeededRng(options.seed ?? 0).fork('bootstrap');
  const means = new Float64Array(options.resamples);
  const seeds = new Int32Array(S);
  const cases = new Int32Array(C);
  for (let r = 0; r < options.resamples; r++) {
    for (let i = 0; i < S; i++) seeds[i] = Math.floor(rng.next() * S);
    for (let j = 0; j < C; j++) cases[j] = Math.floor(rng.next() * C);
    let sum = 0;
    for (let i = 0; i < S; i++) {
      const row = d[seeds[i]!]!;
      for (let j = 0; j < C; j++) sum += row[cases[j]!]!;
    }
    means[r] = sum / (S * C);
  }
  const alpha = (1 - options.confidence) / 2;
  const sorted = Array.from(means).sort((a, b) => a - b);
  return {
    mean: total / (S * C),
    low: quantileSeq(sorted, alpha, true) as number,
    high: quantileSeq(sorted, 1 - alpha, true) as number,
  };
}

export interface SignedRank {
  /** Two-sided p; 1 when every difference is 0; NaN with a single difference (no test possible). */
  p: number;
  /** The Wilcoxon statistic (sum of the positive ranks); NaN when every difference is 0. */
  statistic: number;
  /** Number of differences. */
  n: number;
}

/**
 * Two-sided Wilcoxon signed-rank test that the differences are centred on 0 (zero differences dropped,
 * Wilcoxon's method; continuity correction under the normal approximation).
 */
export function wilcoxonSignedRank(differences: readonly number[]): SignedRank {
  const n = differences.length;
  if (n === 0) throw new Error('wilcoxonSignedRank: no differences');
  for (const v of differences) if (!Number.isFinite(v)) throw new Error(`wilcoxonSignedRank: a difference is ${v}; differences must be finite`);
  if (differences.every((v) => v === 0)) return { p: 1, statistic: NaN, n };
  if (differences.filter((v) => v !== 0).length < 2) return { p: NaN, statistic: NaN, n };
  const r = wilcoxon([...differences], { alternative: 'two-sided', zeroMethod: 'wilcox', correction: true });
  return { p: r.pValue, statistic: r.statistic, n };
}
