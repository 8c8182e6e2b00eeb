/**
 * Smooth random fields for the synthetic generators (datasets/synthetic-brats.ts, synthetic-microct.ts):
 * a sum of separable products of sinusoids, field(c0, c1, c2) = Σₖ wₖ · Πₐ sin(2π fₖₐ cₐ + φₖₐ), with
 * Σ|wₖ| = 1 so that |field| ≤ 1. The three coordinates are whatever axes the caller passes, in its order;
 * sampled on a grid, each term is three per-axis tables, which the caller combines a row at a time.
 */
import type { SeededRng } from './rng.js';

export interface FieldParams {
  /** Cycles per unit of the caller's coordinates, per term and axis (in the order of `sampleField`'s coords). */
  freq: number[][];
  phase: number[][];
  /** Weights summing to 1 in absolute value, so |field| ≤ 1. */
  weight: number[];
}

/** `terms` terms with frequencies uniform in [fmin, fmax], random phases and signed weights. */
export function drawField(rng: SeededRng, terms: number, fmin: number, fmax: number): FieldParams {
  const freq: number[][] = [];
  const phase: number[][] = [];
  const raw: number[] = [];
  for (let k = 0; k < terms; k++) {
    freq.push([0, 1, 2].map(() => fmin + (fmax - fmin) * rng.next()));
    phase.push([0, 1, 2].map(() => 2 * Math.PI * rng.next()));
    raw.push((0.3 + rng.next()) * (rng.next() < 0.5 ? -1 : 1));
  }
  const total = raw.reduce((a, b) => a + Math.abs(b), 0);
  return { freq, phase, weight: raw.map((w) => w / total) };
}

/** A field sampled on a grid: the weights, and per axis one table of sin values per term. */
export interface SampledField {
  weight: Float64Array;
  /** axes[a][k][i] = sin(2π fₖₐ coords[a][i] + φₖₐ). */
  axes: [Float32Array[], Float32Array[], Float32Array[]];
}

/** The per-axis tables of a field at the grid coordinates `coords` (one array per axis, in the field's order). */
export function sampleField(p: FieldParams, coords: [Float64Array, Float64Array, Float64Array]): SampledField {
  const axis = (k: number, a: number): Float32Array => {
    const c = coords[a]!;
    const out = new Float32Array(c.length);
    const w = 2 * Math.PI * p.freq[k]![a]!;
    const ph = p.phase[k]![a]!;
    for (let i = 0; i < c.length; i++) out[i] = Math.sin(w * c[i]! + ph);
    return out;
  };
  return {
    weight: Float64Array.from(p.weight),
    axes: [p.weight.map((_, k) => axis(k, 0)), p.weight.map((_, k) => axis(k, 1)), p.weight.map((_, k) => axis(k, 2))],
  };
}
