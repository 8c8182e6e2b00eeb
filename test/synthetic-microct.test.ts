/**
 * The synthetic-microct generator: determinism (same bytes; case k independent of the case count), shapes
 * and channels, label fractions, thin structures (tube voxels near their centre lines, nothing survives an
 * erosion), microCT-like contrast after normalisation, errors that name the setting, and speed.
 */
import { describe, it, expect } from 'vitest';
import plugin, {
  generateMicroctCase,
  microctStructures,
  MICROCT_TASK,
  type MicroctOptions,
  type TubeCapsule,
} from '../datasets/synthetic-microct.js';
import { datasets } from '../datasets/index.js';
import { resolveSettings } from '../core/config/settings.js';
import type { Dataset, Volume } from '../core/types.js';

const OPTS: MicroctOptions = resolveSettings(plugin.settings, { size: 64 }, 'dataset.settings');
const deps = { baseDir: process.cwd() };

function create(settings: Record<string, unknown>): Dataset {
  return plugin.create(resolveSettings(plugin.settings, settings, 'dataset.settings'), deps);
}

const same = (a: ArrayBufferView, b: ArrayBufferView): boolean =>
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

function fractions(v: Volume): number[] {
  const c = [0, 0, 0];
  for (const l of v.label!) c[l]!++;
  return c.map((n) => n / v.label!.length);
}

/** Distance from voxel (z, y, x) to a capsule's centre line, and the capsule's radius there. */
function axisDistance(c: TubeCapsule, p: number[]): { d: number; r: number } {
  const ab = [0, 1, 2].map((i) => c.b[i]! - c.a[i]!);
  const ap = [0, 1, 2].map((i) => p[i]! - c.a[i]!);
  const len2 = ab[0]! ** 2 + ab[1]! ** 2 + ab[2]! ** 2;
  const t = len2 > 0 ? Math.min(1, Math.max(0, (ap[0]! * ab[0]! + ap[1]! * ab[1]! + ap[2]! * ab[2]!) / len2)) : 0;
  return { d: Math.hypot(ap[0]! - t * ab[0]!, ap[1]! - t * ab[1]!, ap[2]! - t * ab[2]!), r: c.ra + t * (c.rb - c.ra) };
}

/** Share of `label`'s voxels whose whole (2h+1)³ box holds that label (what survives an erosion by h). */
function survivesErosion(v: Volume, label: number, h: number): number {
  const [D, H, W] = v.shape;
  const lab = v.label!;
  let n = 0,
    kept = 0;
  for (let z = h; z < D - h; z++)
    for (let y = h; y < H - h; y++)
      for (let x = h; x < W - h; x++) {
        if (lab[(z * H + y) * W + x] !== label) continue;
        n++;
        let all = true;
        for (let dz = -h; dz <= h && all; dz++)
          for (let dy = -h; dy <= h && all; dy++)
            for (let dx = -h; dx <= h && all; dx++) if (lab[((z + dz) * H + y + dy) * W + x + dx] !== label) all = false;
        if (all) kept++;
      }
  return n ? kept / n : 0;
}

function stats(v: Volume, pick: (i: number) => boolean): { n: number; mean: number; sd: number } {
  let n = 0,
    s = 0,
    s2 = 0;
  for (let i = 0; i < v.image.length; i++) {
    if (!pick(i)) continue;
    n++;
    s += v.image[i]!;
    s2 += v.image[i]! ** 2;
  }
  return { n, mean: s / n, sd: Math.sqrt(Math.max(0, s2 / n - (s / n) ** 2)) };
}

const cases = [0, 1, 2, 3].map((k) => generateMicroctCase(k, { ...OPTS, size: [96, 96, 96] }));

describe('synthetic-microct', () => {
  it('is registered, one channel, a labels task (background, tube 1, sheet 2), every case labelled', () => {
    expect(datasets.map((d) => d.name)).toContain('synthetic-microct');
    const ds = create({ cases: 3 });
    expect(ds.channels).toEqual(['microct']);
    expect(ds.task).toEqual(MICROCT_TASK);
    expect(MICROCT_TASK).toEqual({ kind: 'labels', labels: [{ name: 'tube', value: 1 }, { name: 'sheet', value: 2 }] });
    expect(ds.caseIds()).toEqual(['microct-000', 'microct-001', 'microct-002']);
    expect(ds.labelledCaseIds()).toEqual(ds.caseIds());
  });

  it('is deterministic: same seed, same bytes; another seed or case, other data', () => {
    const a = generateMicroctCase(2, OPTS);
    const b = generateMicroctCase(2, OPTS);
    expect(same(a.image, b.image)).toBe(true);
    expect(same(a.label!, b.label!)).toBe(true);
    const c = generateMicroctCase(2, { ...OPTS, seed: 1 });
    expect(same(a.image, c.image)).toBe(false);
    expect(same(a.label!, c.label!)).toBe(false);
    expect(same(a.label!, generateMicroctCase(3, OPTS).label!)).toBe(false);
  });

  it('gives case k the same content whatever the number of cases', async () => {
    const few = create({ cases: 2, size: 48 });
    const many = create({ cases: 7, size: 48 });
    const a = await few.load('microct-001');
    const b = await many.load('microct-001');
    expect(same(a.image, b.image)).toBe(true);
    expect(same(a.label!, b.label!)).toBe(true);
    await expect(few.load('microct-002')).rejects.toThrow(/no case "microct-002".*raise dataset\.settings\.cases/);
  });

  it('takes size as [D, H, W], any size', () => {
    const v = generateMicroctCase(0, { ...OPTS, size: [40, 64, 56] });
    expect(v.shape).toEqual([40, 64, 56]);
    expect(v.channels).toBe(1);
    expect(v.image.length).toBe(40 * 64 * 56);
    expect(v.label!.length).toBe(40 * 64 * 56);
    expect(v.spacing).toEqual([1, 1, 1]);
    // The grid has no physical size: the data set says its spacing (and so HD95) is in voxels.
    expect(create({ cases: 1, size: 16 }).spacingUnit).toBe('voxel');
    expect([...new Set(v.label!)].every((l) => l === 0 || l === 1 || l === 2)).toBe(true);
    expect(v.image.every(Number.isFinite)).toBe(true);
  });

  it('has tubes and sheets in every case, each a small share of the volume', () => {
    for (const v of cases) {
      const [bg, tube, sheet] = fractions(v);
      expect(tube, v.id).toBeGreaterThan(0.001);
      expect(tube, v.id).toBeLessThan(0.05);
      expect(sheet, v.id).toBeGreaterThan(0.001);
      expect(sheet, v.id).toBeLessThan(0.06);
      expect(bg, v.id).toBeGreaterThan(0.9);
    }
  });

  it('scales the number of structures with the volume, not their size', () => {
    const small = microctStructures(0, { ...OPTS, size: [128, 128, 128] });
    const large = microctStructures(0, { ...OPTS, size: [256, 256, 256] });
    // Trees and sheets per million voxels: 8× the voxels, 8× of each (a small specimen ends more
    // branches at its surface, so the capsules grow a little faster than the volume).
    expect(small.trees).toBe(Math.round((OPTS.trees * 128 ** 3) / 1e6));
    expect(large.trees).toBe(Math.round((OPTS.trees * 256 ** 3) / 1e6));
    expect(small.sheets.length).toBe(Math.round((OPTS.sheets * 128 ** 3) / 1e6));
    expect(large.sheets.length).toBe(Math.round((OPTS.sheets * 256 ** 3) / 1e6));
    expect(large.tubes.length / small.tubes.length).toBeGreaterThan(7);
    expect(large.tubes.length / small.tubes.length).toBeLessThan(15);
    for (const s of [small, large]) {
      expect(Math.max(...s.tubes.map((c) => Math.max(c.ra, c.rb)))).toBeLessThanOrEqual(OPTS.tubeRadius);
      expect(Math.min(...s.tubes.map((c) => Math.min(c.ra, c.rb)))).toBeGreaterThanOrEqual(1);
      expect(Math.max(...s.sheets.map((sh) => 2 * sh.halfThickness))).toBeLessThanOrEqual(1.2 * OPTS.sheetThickness + 1e-9);
    }
  });

  it('makes thin tubes: every tube voxel within its radius of a centre line, most within a few voxels', () => {
    const v = cases[0]!;
    const { tubes } = microctStructures(0, { ...OPTS, size: [96, 96, 96] });
    const [, H, W] = v.shape;
    let n = 0,
      within = 0,
      near = 0;
    for (let i = 0; i < v.label!.length; i++) {
      if (v.label![i] !== 1) continue;
      const p = [Math.floor(i / (H * W)), Math.floor(i / W) % H, i % W];
      let best = Infinity,
        inside = false;
      for (const c of tubes) {
        const { d, r } = axisDistance(c, p);
        if (d < best) best = d;
        if (d < r) inside = true;
      }
      n++;
      if (inside) within++;
      if (best <= 3) near++;
    }
    expect(n).toBeGreaterThan(500);
    expect(within).toBe(n);
    expect(near / n).toBeGreaterThan(0.99);
  });

  it('makes thin structures: almost nothing of the tubes or sheets survives an erosion by 2 voxels', () => {
    for (const v of cases.slice(0, 2)) {
      expect(survivesErosion(v, 1, 2), `${v.id} tubes`).toBeLessThan(0.01);
      expect(survivesErosion(v, 2, 2), `${v.id} sheets`).toBeLessThan(0.01);
      // The specimen's tissue, by contrast, is thick.
      expect(survivesErosion(v, 0, 2)).toBeGreaterThan(0.8);
    }
  });

  it('has microCT-like contrast: air near 0, tissue mid-grey, tubes and sheets bright', () => {
    for (const v of cases) {
      const [D, H, W] = v.shape;
      // The corners of the field of view are air (outside the specimen's ellipsoid).
      const corner = (i: number): boolean => {
        const z = Math.floor(i / (H * W)),
          y = Math.floor(i / W) % H,
          x = i % W;
        const e = (c: number, n: number) => Math.min(c, n - 1 - c) < 6;
        return e(z, D) && e(y, H) && e(x, W);
      };
      const air = stats(v, corner);
      const tissue = stats(v, (i) => v.label![i] === 0 && !corner(i) && v.image[i]! > 0.15);
      const tube = stats(v, (i) => v.label![i] === 1);
      const sheet = stats(v, (i) => v.label![i] === 2);
      expect(Math.abs(air.mean), v.id).toBeLessThan(0.03);
      expect(air.sd, v.id).toBeGreaterThan(0.01);
      expect(air.sd, v.id).toBeLessThan(0.15);
      expect(tissue.mean, v.id).toBeGreaterThan(0.3);
      expect(tissue.mean, v.id).toBeLessThan(0.7);
      expect(sheet.mean, v.id).toBeGreaterThan(tissue.mean + 0.2);
      expect(tube.mean, v.id).toBeGreaterThan(tissue.mean + 0.15);
      let max = -Infinity;
      for (const x of v.image) if (x > max) max = x;
      expect(max, v.id).toBeGreaterThan(0.9);
      expect(max, v.id).toBeLessThan(2);
    }
  });

  it('reports bad settings naming the field', () => {
    expect(() => create({ size: 8 })).toThrow(/dataset\.settings\.size: edge 8 \(axis D\) is below 16 voxels/);
    expect(() => create({ size: [64, 64, 12] })).toThrow(/dataset\.settings\.size: edge 12 \(axis W\)/);
    expect(() => create({ size: 'big' })).toThrow(/dataset\.settings\.size: expected a positive integer edge or \[D, H, W\], got "big"/);
    expect(() => create({ trees: 0, sheets: 0 })).toThrow(/dataset\.settings\.trees: trees and sheets are both 0/);
    expect(() => create({ noise: -0.1 })).toThrow(/dataset\.settings\.noise: must be ≥ 0/);
    expect(() => create({ tubeRadius: 20 })).toThrow(/dataset\.settings\.tubeRadius: must be ≤ 8/);
    expect(() => create({ cases: 0 })).toThrow(/dataset\.settings\.cases: must be ≥ 1/);
    expect(() => create({ tubeRadus: 2 })).toThrow(/dataset\.settings\.tubeRadus: unknown setting; known settings: .*tubeRadius/);
  });

  it('generates a 128³ case in well under 2 s (so 630³, 118× the voxels, takes well under a couple of minutes)', () => {
    const t0 = performance.now();
    const v = generateMicroctCase(5, { ...OPTS, size: [128, 128, 128] });
    const s = (performance.now() - t0) / 1000;
    console.log(`synthetic-microct: ${s.toFixed(2)} s for a 128³ case`);
    expect(v.shape).toEqual([128, 128, 128]);
    expect(s).toBeLessThan(2);
  });
});
