import { describe, expect, it } from 'vitest';
import {
  gaussianImportanceMap,
  IMPORTANCE_MAP_MIN,
  slidingWindowInference,
  windowStarts,
} from '../core/inference/sliding-window.js';
import { SeededRng } from '../core/data/rng.js';
import type { Shape3 } from '../core/types.js';

function randomImage(shape: Shape3, channels: number, seed: number): Float32Array {
  const rng = new SeededRng(seed);
  const a = new Float32Array(shape[0] * shape[1] * shape[2] * channels);
  for (let i = 0; i < a.length; i++) a[i] = rng.next();
  return a;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('windowStarts', () => {
  it('steps by round(roi·(1 − overlap)) and ends flush', () => {
    expect(windowStarts(10, 4, 0.5)).toEqual([0, 2, 4, 6]);
    expect(windowStarts(11, 4, 0.5)).toEqual([0, 2, 4, 6, 7]);
    expect(windowStarts(8, 4, 0)).toEqual([0, 4]);
    expect(windowStarts(9, 4, 0)).toEqual([0, 4, 5]);
    expect(windowStarts(4, 4, 0.5)).toEqual([0]);
    expect(windowStarts(3, 4, 0.5)).toEqual([0]);
    expect(windowStarts(240, 128, 0.5)).toEqual([0, 64, 112]);
    expect(windowStarts(10, 1, 0.9)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]); // stride at least 1
    expect(() => windowStarts(10, 4, 1)).toThrow(/overlap must be in \[0, 1\)/);
  });

  it('covers every voxel for many sizes, rois and overlaps', () => {
    for (let size = 1; size <= 40; size++)
      for (const roi of [1, 2, 3, 5, 8, 16])
        for (const overlap of [0, 0.25, 0.5, 0.75]) {
          const s = windowStarts(size, roi, overlap);
          const padded = Math.max(size, roi);
          const covered = new Uint8Array(padded);
          for (const p of s) {
            expect(p).toBeGreaterThanOrEqual(0);
            expect(p + roi).toBeLessThanOrEqual(padded);
            for (let i = p; i < p + roi; i++) covered[i] = 1;
          }
          expect(covered.every((c) => c === 1)).toBe(true);
          expect(new Set(s).size).toBe(s.length);
        }
  });
});

describe('gaussianImportanceMap', () => {
  it('is symmetric with its peak 1 at the centre and a positive floor', () => {
    const roi: Shape3 = [5, 7, 9];
    const g = gaussianImportanceMap(roi);
    const at = (z: number, y: number, x: number): number => g[(z * 7 + y) * 9 + x]!;
    expect(at(2, 3, 4)).toBeCloseTo(1, 6);
    let max = 0;
    let min = Infinity;
    for (const v of g) {
      max = Math.max(max, v);
      min = Math.min(min, v);
    }
    expect(max).toBe(at(2, 3, 4));
    expect(min).toBeGreaterThanOrEqual(IMPORTANCE_MAP_MIN);
    for (let z = 0; z < 5; z++)
      for (let y = 0; y < 7; y++)
        for (let x = 0; x < 9; x++) {
          expect(at(z, y, x)).toBe(at(4 - z, y, x));
          expect(at(z, y, x)).toBe(at(z, 6 - y, x));
          expect(at(z, y, x)).toBe(at(z, y, 8 - x));
        }
    // With sigma = 0.125·roi the corners fall below the floor and are clamped to it.
    expect(at(0, 0, 0)).toBeCloseTo(IMPORTANCE_MAP_MIN, 9);
    // One-axis value: exp(−x²/(2σ²)) with σ = 0.125·9 = 1.125, x = 1 → along x from the centre.
    expect(at(2, 3, 5)).toBeCloseTo(Math.exp(-1 / (2 * 1.125 ** 2)), 6);
  });

  it('peaks at the two central voxels of an even edge', () => {
    const g = gaussianImportanceMap([1, 1, 8]);
    expect(g[3]).toBeCloseTo(1, 6);
    expect(g[4]).toBe(g[3]);
    expect(g[2]!).toBeLessThan(g[3]!);
  });
});

describe('slidingWindowInference', () => {
  const identity = async (patch: Float32Array): Promise<Float32Array> => patch;

  it('reassembles the input exactly with an identity predictor', async () => {
    const cases: { shape: Shape3; roi: Shape3; channels: number }[] = [
      { shape: [9, 11, 13], roi: [4, 5, 6], channels: 2 },
      { shape: [7, 13, 5], roi: [3, 4, 5], channels: 1 },
      // smaller than the roi along one axis (padded, then cropped back)
      { shape: [3, 10, 9], roi: [5, 4, 4], channels: 3 },
      // smaller along every axis
      { shape: [2, 3, 3], roi: [4, 4, 5], channels: 1 },
    ];
    let seed = 1;
    for (const c of cases)
      for (const overlap of [0, 0.25, 0.5])
        for (const blend of ['gaussian', 'constant'] as const) {
          const image = randomImage(c.shape, c.channels, seed++);
          const out = await slidingWindowInference({ image, shape: c.shape, channels: c.channels }, c.roi, identity, {
            outChannels: c.channels,
            overlap,
            blend,
          });
          expect(out.length).toBe(image.length);
          expect(maxAbsDiff(out, image)).toBeLessThanOrEqual(1e-6);
        }
  });

  it('calls the predictor once per window with the right patch, zero-padded outside the volume', async () => {
    const shape: Shape3 = [2, 6, 6];
    const image = new Float32Array(2 * 6 * 6).fill(1);
    const seen: Float32Array[] = [];
    await slidingWindowInference(
      { image, shape, channels: 1 },
      [4, 4, 4],
      async (patch, ps) => {
        expect(ps).toEqual([4, 4, 4]);
        seen.push(patch);
        return patch;
      },
      { outChannels: 1, overlap: 0.5 },
    );
    // D: padded 2 → 4 (1 before, 1 after), one window; H, W: starts [0, 2] → 4 windows.
    expect(seen.length).toBe(4);
    // Padded slices z = 0 and z = 3 of every patch are zero; z = 1, 2 are the volume.
    for (const p of seen) {
      const sum = (z: number): number => p.subarray(z * 16, z * 16 + 16).reduce((a, b) => a + b, 0);
      expect([sum(0), sum(1), sum(2), sum(3)]).toEqual([0, 16, 16, 0]);
    }
  });

  it('blends overlapping windows as Σ w·pred / Σ w', async () => {
    // A predictor that returns a constant per window: with constant blending the result is the average of
    // the windows covering each voxel.
    const shape: Shape3 = [1, 1, 6];
    let call = 0;
    const out = await slidingWindowInference(
      { image: new Float32Array(6), shape, channels: 1 },
      [1, 1, 4],
      async () => new Float32Array(4).fill(call++ === 0 ? 0 : 1),
      { outChannels: 1, overlap: 0.5, blend: 'constant' },
    );
    // windows at x = 0..3 (value 0) and x = 2..5 (value 1)
    expect([...out]).toEqual([0, 0, 0.5, 0.5, 1, 1]);
  });

  it('rejects a predictor that returns the wrong size', async () => {
    await expect(
      slidingWindowInference(
        { image: new Float32Array(8), shape: [2, 2, 2], channels: 1 },
        [2, 2, 2],
        async () => new Float32Array(3),
        { outChannels: 2 },
      ),
    ).rejects.toThrow(/returned 3 values.*8 × 2 = 16/);
  });

  it('handles a BraTS-sized volume in reasonable time', async () => {
    const shape: Shape3 = [155, 240, 240];
    const K = 3;
    const image = new Float32Array(155 * 240 * 240 * 4);
    const t0 = performance.now();
    const out = await slidingWindowInference(
      { image, shape, channels: 4 },
      [128, 128, 128],
      async (patch) => {
        const r = new Float32Array((patch.length / 4) * K);
        r.fill(0.25);
        return r;
      },
      { outChannels: K },
    );
    const ms = performance.now() - t0;
    expect(out.length).toBe(155 * 240 * 240 * K);
    expect(Math.abs(out[12345]! - 0.25)).toBeLessThan(1e-6);
    expect(ms).toBeLessThan(30_000);
  });
});
