import { describe, expect, it } from 'vitest';
import {
  dice,
  evaluateCase,
  hausdorff95,
  labelsToTargets,
  outputChannels,
  percentile,
  probabilitiesToLabels,
  regionMasks,
  squaredDistanceTransform,
  surfaceMask,
} from '../core/evaluation/metrics.js';
import { SeededRng } from '../core/data/rng.js';
import { BRATS_TASK } from '../core/data/brats-task.js';
import type { SegmentationTask, Shape3 } from '../core/types.js';

const BRATS = BRATS_TASK;
const MSD: SegmentationTask = {
  kind: 'labels',
  labels: [
    { name: 'edema', value: 1 },
    { name: 'non-enhancing', value: 2 },
    { name: 'enhancing', value: 3 },
  ],
};

function volume(shape: Shape3, inside: (z: number, y: number, x: number) => boolean): Uint8Array {
  const [D, H, W] = shape;
  const m = new Uint8Array(D * H * W);
  for (let z = 0; z < D; z++)
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) m[(z * H + y) * W + x] = inside(z, y, x) ? 1 : 0;
  return m;
}

/** Surface by definition, checking every 6-neighbour explicitly. */
function bruteSurface(mask: Uint8Array, shape: Shape3): number[][] {
  const [D, H, W] = shape;
  const at = (z: number, y: number, x: number): boolean =>
    z >= 0 && z < D && y >= 0 && y < H && x >= 0 && x < W && mask[(z * H + y) * W + x] !== 0;
  const out: number[][] = [];
  for (let z = 0; z < D; z++)
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        if (!at(z, y, x)) continue;
        const border = z === 0 || y === 0 || x === 0 || z === D - 1 || y === H - 1 || x === W - 1;
        const n = [[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]];
        if (border || n.some(([a, b, c]) => !at(z + a!, y + b!, x + c!))) out.push([z, y, x]);
      }
  return out;
}

function bruteHd95(p: Uint8Array, r: Uint8Array, shape: Shape3, sp: Shape3): number {
  const sp_ = bruteSurface(p, shape);
  const sr = bruteSurface(r, shape);
  const d = (a: number[], b: number[]): number =>
    Math.hypot((a[0]! - b[0]!) * sp[0], (a[1]! - b[1]!) * sp[1], (a[2]! - b[2]!) * sp[2]);
  const all: number[] = [];
  for (const a of sp_) all.push(Math.min(...sr.map((b) => d(a, b))));
  for (const b of sr) all.push(Math.min(...sp_.map((a) => d(a, b))));
  return percentile(all, 95);
}

describe('dice', () => {
  it('is 2|P∩R|/(|P|+|R|) on a hand-counted case', () => {
    const p = Uint8Array.from([1, 1, 1, 0, 0, 0]);
    const r = Uint8Array.from([0, 1, 1, 1, 0, 0]);
    expect(dice(p, r)).toBeCloseTo((2 * 2) / (3 + 3), 12);
    expect(dice(p, p)).toBe(1);
    // Any nonzero value is "in".
    expect(dice(Uint8Array.from([0, 7, 255]), Uint8Array.from([0, 1, 1]))).toBe(1);
  });
  it('follows the empty-mask conventions', () => {
    const empty = new Uint8Array(4);
    expect(dice(empty, empty)).toBe(1);
    expect(dice(Uint8Array.from([0, 1, 0, 0]), empty)).toBe(0);
    expect(dice(empty, Uint8Array.from([0, 1, 0, 0]))).toBe(0);
  });
  it('rejects masks of different sizes', () => {
    expect(() => dice(new Uint8Array(3), new Uint8Array(4))).toThrow(/3 voxels.*4/);
  });
});

describe('percentile', () => {
  it("matches numpy's default linear interpolation", () => {
    // numpy.percentile([1,2,3,4], 95) = 3.85; ([0,10], 50) = 5; ([5], 95) = 5
    expect(percentile([4, 1, 3, 2], 95)).toBeCloseTo(3.85, 12);
    expect(percentile([0, 10], 50)).toBe(5);
    expect(percentile([5], 95)).toBe(5);
    expect(percentile([1, 2, 3, 4], 100)).toBe(4);
    expect(percentile([1, 2, 3, 4], 0)).toBe(1);
  });
});

describe('squaredDistanceTransform', () => {
  it('equals brute force on random masks with anisotropic spacing', () => {
    const rng = new SeededRng(7);
    for (let t = 0; t < 12; t++) {
      const shape: Shape3 = [rng.int(1, 7), rng.int(1, 8), rng.int(1, 9)];
      const sp: Shape3 = [0.5 + 3 * rng.next(), 0.5 + 3 * rng.next(), 0.5 + 3 * rng.next()];
      const density = [0.01, 0.1, 0.4][t % 3]!;
      const f = volume(shape, () => rng.next() < density);
      const g = squaredDistanceTransform(f, shape, sp);
      const [D, H, W] = shape;
      const feats: number[][] = [];
      for (let z = 0; z < D; z++)
        for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) if (f[(z * H + y) * W + x]) feats.push([z, y, x]);
      for (let z = 0; z < D; z++)
        for (let y = 0; y < H; y++)
          for (let x = 0; x < W; x++) {
            let best = Infinity;
            for (const [a, b, c] of feats) {
              const d2 = ((z - a!) * sp[0]) ** 2 + ((y - b!) * sp[1]) ** 2 + ((x - c!) * sp[2]) ** 2;
              if (d2 < best) best = d2;
            }
            const got = g[(z * H + y) * W + x]!;
            if (best === Infinity) expect(got).toBe(Infinity);
            else expect(Math.abs(got - best)).toBeLessThan(1e-9 * Math.max(1, best));
          }
    }
  });
});

describe('surfaceMask', () => {
  it('keeps the shell of a cube and counts the volume border as outside', () => {
    const shape: Shape3 = [5, 5, 5];
    const cube = volume(shape, (z, y, x) => z >= 1 && z <= 3 && y >= 1 && y <= 3 && x >= 1 && x <= 3);
    const s = surfaceMask(cube, shape);
    expect(s.reduce((a, b) => a + b, 0)).toBe(26); // 27 minus the centre
    expect(s[(2 * 5 + 2) * 5 + 2]).toBe(0);
    const full = new Uint8Array(27).fill(1);
    const sf = surfaceMask(full, [3, 3, 3]);
    expect(sf.reduce((a, b) => a + b, 0)).toBe(26); // only the centre touches no border
  });
});

describe('hausdorff95', () => {
  it('is 3 mm for two single voxels one voxel apart along an axis spaced 3 mm', () => {
    const shape: Shape3 = [4, 4, 4];
    const sp: Shape3 = [1, 3, 0.5];
    const p = volume(shape, (z, y, x) => z === 1 && y === 1 && x === 2);
    const r = volume(shape, (z, y, x) => z === 1 && y === 2 && x === 2);
    expect(hausdorff95(p, r, shape, sp)).toBeCloseTo(3, 12);
  });

  it('is 2 mm for a 3×3×3 cube shifted by one voxel along an axis spaced 2 mm', () => {
    // Hand count (A = cube at z 1..3, B = same cube at z 2..4, spacing [2, 1, 1]):
    // A→B: A's bottom layer (9 voxels) is 2 mm from B's bottom face; A's middle layer ring (8) lies on B's
    // bottom face (0); A's top layer: 8 lie on B's middle ring (0), its centre is B's centre (interior), whose
    // nearest B surface voxel is 1 mm away in-plane. B→A is the mirror image. Union of 52 distances:
    // 32 × 0, 2 × 1, 18 × 2; h = 51·0.95 = 48.45 → both ranks 48, 49 are 2 → HD95 = 2 (the maximum is 2 too).
    const shape: Shape3 = [6, 5, 5];
    const sp: Shape3 = [2, 1, 1];
    const inYX = (y: number, x: number): boolean => y >= 1 && y <= 3 && x >= 1 && x <= 3;
    const a = volume(shape, (z, y, x) => z >= 1 && z <= 3 && inYX(y, x));
    const b = volume(shape, (z, y, x) => z >= 2 && z <= 4 && inYX(y, x));
    expect(hausdorff95(a, b, shape, sp)).toBeCloseTo(2, 12);
    expect(hausdorff95(b, a, shape, sp)).toBeCloseTo(2, 12);
    expect(bruteHd95(a, b, shape, sp)).toBeCloseTo(2, 12);
    // Same shift along an axis spaced 1 mm: 1 mm.
    expect(hausdorff95(a, b, shape, [1, 1, 1])).toBeCloseTo(1, 12);
  });

  it('follows the empty-mask conventions: both empty → 0, one empty → NaN', () => {
    const shape: Shape3 = [3, 3, 3];
    const empty = new Uint8Array(27);
    const one = volume(shape, (z, y, x) => z === 1 && y === 1 && x === 1);
    expect(hausdorff95(empty, empty, shape, [1, 1, 1])).toBe(0);
    expect(hausdorff95(one, empty, shape, [1, 1, 1])).toBeNaN();
    expect(hausdorff95(empty, one, shape, [1, 1, 1])).toBeNaN();
    expect(hausdorff95(one, one, shape, [1, 1, 1])).toBe(0);
  });

  it('equals a brute-force MedPy-style computation on random masks', () => {
    const rng = new SeededRng(11);
    for (let t = 0; t < 10; t++) {
      const shape: Shape3 = [rng.int(2, 8), rng.int(2, 9), rng.int(2, 10)];
      const sp: Shape3 = [0.5 + 2 * rng.next(), 0.5 + 2 * rng.next(), 0.5 + 2 * rng.next()];
      const p = volume(shape, () => rng.next() < 0.3);
      const r = volume(shape, () => rng.next() < 0.2);
      if (!p.some((v) => v) || !r.some((v) => v)) continue;
      expect(hausdorff95(p, r, shape, sp)).toBeCloseTo(bruteHd95(p, r, shape, sp), 9);
    }
  });

  it('matches scipy/MedPy on an ellipsoid vs a sphere (reference values computed with scipy 1.17)', () => {
    // Computed with MedPy's algorithm: border = m ^ binary_erosion(m, generate_binary_structure(3, 1)),
    // distance_transform_edt(~border, sampling=spacing), np.percentile(np.hstack(...), 95).
    const shape: Shape3 = [20, 24, 28];
    const sp: Shape3 = [2.5, 1.0, 0.8];
    const pred = volume(shape, (z, y, x) => {
      const a = (z * sp[0] - 22) / 10, b = (y * sp[1] - 11) / 7, c = (x * sp[2] - 10) / 9;
      return a * a + b * b + c * c <= 1;
    });
    const ref = volume(shape, (z, y, x) => {
      const a = z * sp[0] - 25, b = y * sp[1] - 12.5, c = x * sp[2] - 12;
      return a * a + b * b + c * c <= 64;
    });
    expect(pred.reduce((s, v) => s + v, 0)).toBe(1322);
    expect(ref.reduce((s, v) => s + v, 0)).toBe(1060);
    expect(hausdorff95(pred, ref, shape, sp)).toBeCloseTo(4.716990566028302, 9);
    // A slab touching the x = 0 border: its border voxels are surface voxels.
    const ref2 = ref.slice();
    for (let z = 5; z < 9; z++) for (let y = 3; y < 10; y++) for (let x = 0; x < 2; x++) ref2[(z * 24 + y) * 28 + x] = 1;
    expect(hausdorff95(pred, ref2, shape, sp)).toBeCloseTo(4.966071094098364, 9);
  });

  it('runs on a 155×240×240 volume in a few seconds', () => {
    const shape: Shape3 = [155, 240, 240];
    // Worst case for the bounding-box crop: large masks spanning most of the volume.
    const p = volume(shape, (z, y, x) => (z - 77) ** 2 / 70 ** 2 + (y - 120) ** 2 / 110 ** 2 + (x - 118) ** 2 / 112 ** 2 <= 1);
    const r = volume(shape, (z, y, x) => (z - 80) ** 2 / 68 ** 2 + (y - 118) ** 2 / 112 ** 2 + (x - 121) ** 2 / 108 ** 2 <= 1);
    const t0 = performance.now();
    const h = hausdorff95(p, r, shape, [1, 1, 1]);
    const ms = performance.now() - t0;
    expect(h).toBeGreaterThan(0);
    expect(h).toBeLessThan(10);
    expect(ms).toBeLessThan(8000);
  });
});

describe('label conversions', () => {
  it('builds region and label masks', () => {
    const labels = Uint8Array.from([0, 1, 2, 4, 4]);
    const m = regionMasks(labels, BRATS);
    expect(m.map((r) => r.name)).toEqual(['WT', 'TC', 'ET']);
    expect([...m[0]!.mask]).toEqual([0, 1, 1, 1, 1]);
    expect([...m[1]!.mask]).toEqual([0, 1, 0, 1, 1]);
    expect([...m[2]!.mask]).toEqual([0, 0, 0, 1, 1]);
    const l = regionMasks(Uint8Array.from([0, 1, 2, 3, 3]), MSD);
    expect([...l[2]!.mask]).toEqual([0, 0, 0, 1, 1]);
  });

  it('round-trips regions: labels → targets → painted labels', () => {
    const labels = Uint8Array.from([0, 1, 2, 4, 0, 2, 1, 4]);
    const t = labelsToTargets(labels, BRATS, labels.length);
    expect(outputChannels(BRATS)).toBe(3);
    expect([...t.subarray(3 * 3, 3 * 3 + 3)]).toEqual([1, 1, 1]); // label 4 is in WT, TC, ET
    expect([...t.subarray(1 * 3, 1 * 3 + 3)]).toEqual([1, 1, 0]); // label 1: WT, TC
    const back = probabilitiesToLabels(t, [2, 2, 2], BRATS);
    expect([...back]).toEqual([...labels]);
  });

  it('round-trips exclusive labels through one-hot and argmax', () => {
    const labels = Uint8Array.from([0, 1, 2, 3, 3, 0]);
    const t = labelsToTargets(labels, MSD, 6);
    expect(t.length).toBe(6 * 4);
    expect([...t.subarray(4 * 2, 4 * 3)]).toEqual([0, 0, 1, 0]);
    expect([...probabilitiesToLabels(t, [1, 2, 3], MSD)]).toEqual([...labels]);
  });

  it('thresholds sigmoid outputs and lets later regions win', () => {
    // voxel 0: only WT > 0.5 → 2; voxel 1: WT and ET → ET's paint 4 (later wins); voxel 2: exactly 0.5 → 0.
    const probs = Float32Array.from([0.9, 0.2, 0.1, 0.8, 0.3, 0.7, 0.5, 0.5, 0.5]);
    expect([...probabilitiesToLabels(probs, [1, 1, 3], BRATS)]).toEqual([2, 4, 0]);
    expect([...probabilitiesToLabels(probs, [1, 1, 3], BRATS, 0.45)]).toEqual([2, 4, 4]);
  });

  it('rejects unknown labels and wrong sizes with a message naming the value', () => {
    expect(() => labelsToTargets(Uint8Array.from([0, 5]), MSD, 2)).toThrow(/label 5/);
    expect(() => probabilitiesToLabels(new Float32Array(5), [1, 1, 2], MSD)).toThrow(/expected 2×4 = 8/);
  });

  it('evaluates a case per region', () => {
    const shape: Shape3 = [1, 2, 4];
    const ref = Uint8Array.from([0, 1, 2, 4, 0, 0, 0, 0]);
    const pred = Uint8Array.from([0, 1, 2, 4, 0, 0, 0, 0]);
    const res = evaluateCase(pred, ref, BRATS, shape, [1, 1, 1]);
    expect(res.map((r) => r.name)).toEqual(['WT', 'TC', 'ET']);
    expect(res.every((r) => r.dice === 1 && r.hd95 === 0)).toBe(true);
    const none = evaluateCase(new Uint8Array(8), ref, BRATS, shape, [1, 1, 1]);
    expect(none.every((r) => r.dice === 0 && Number.isNaN(r.hd95))).toBe(true);
  });
});
