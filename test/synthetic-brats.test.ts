/**
 * The synthetic-brats generator: determinism, label scheme and nesting, size variety, per-case
 * independence of the case count, normalisation, contrasts, speed, and the context lesions (mimics and
 * edema fingers, labelled by connection to a tumour core) with the context figures they report.
 */
import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import plugin, { generateSyntheticCase, syntheticCaseId, syntheticContext, type SyntheticOptions } from '../datasets/synthetic-brats.js';
import { resolveSettings } from '../core/config/settings.js';
import type { Dataset, Shape3, Volume } from '../core/types.js';

const OPTS: SyntheticOptions = { seed: 0, size: [48, 48, 48], noise: 0.05, biasField: 0.2, tumourScale: 1 };
const deps = { baseDir: process.cwd() };

function create(settings: Record<string, unknown>): Dataset {
  return plugin.create(resolveSettings(plugin.settings, settings, 'dataset.settings'), deps);
}

const N_CASES = 24;
const cases: Volume[] = Array.from({ length: N_CASES }, (_, k) => generateSyntheticCase(k, OPTS));

function counts(v: Volume): number[] {
  const c = new Array<number>(256).fill(0);
  for (const l of v.label!) c[l]!++;
  return c;
}

/** Faces between a voxel in `from` and a neighbour outside it, tallied by the neighbour's label. */
function boundaryFaces(v: Volume, from: Set<number>): Map<number, number> {
  const [D, H, W] = v.shape;
  const lab = v.label!;
  const out = new Map<number, number>();
  const steps = [1, -1, W, -W, H * W, -H * W];
  for (let z = 1; z < D - 1; z++) {
    for (let y = 1; y < H - 1; y++) {
      for (let x = 1; x < W - 1; x++) {
        const i = (z * H + y) * W + x;
        if (!from.has(lab[i]!)) continue;
        for (const s of steps) {
          const m = lab[i + s]!;
          if (!from.has(m)) out.set(m, (out.get(m) ?? 0) + 1);
        }
      }
    }
  }
  return out;
}

describe('synthetic-brats', () => {
  it('is deterministic: same seed, same bytes; another seed, other data', () => {
    const a = generateSyntheticCase(3, OPTS);
    const b = generateSyntheticCase(3, OPTS);
    expect(Buffer.from(a.image.buffer).equals(Buffer.from(b.image.buffer))).toBe(true);
    expect(Buffer.from(a.label!.buffer).equals(Buffer.from(b.label!.buffer))).toBe(true);
    const c = generateSyntheticCase(3, { ...OPTS, seed: 1 });
    expect(Buffer.from(a.image.buffer).equals(Buffer.from(c.image.buffer))).toBe(false);
    expect(Buffer.from(a.label!.buffer).equals(Buffer.from(c.label!.buffer))).toBe(false);
    // Different cases of one seed differ too.
    expect(Buffer.from(a.label!.buffer).equals(Buffer.from(cases[4]!.label!.buffer))).toBe(false);
  });

  it('gives case k the same content whatever the number of cases', async () => {
    const few = create({ cases: 3 });
    const many = create({ cases: 10 });
    expect(few.caseIds()).toEqual(['synthetic-000', 'synthetic-001', 'synthetic-002']);
    expect(many.caseIds().slice(0, 3)).toEqual(few.caseIds());
    const a = await few.load('synthetic-002');
    const b = await many.load('synthetic-002');
    expect(Buffer.from(a.image.buffer).equals(Buffer.from(b.image.buffer))).toBe(true);
    expect(Buffer.from(a.label!.buffer).equals(Buffer.from(b.label!.buffer))).toBe(true);
    await expect(few.load('synthetic-003')).rejects.toThrow(/no case "synthetic-003".*raise dataset\.settings\.cases/);
  });

  it('describes itself as a 4-channel BraTS regions task with every case labelled', () => {
    const ds = create({});
    expect(ds.channels).toEqual(['t1', 't1ce', 't2', 'flair']);
    expect(ds.task).toEqual({
      kind: 'regions',
      regions: [
        { name: 'WT', labels: [1, 2, 4], paint: 2 },
        { name: 'TC', labels: [1, 4], paint: 1 },
        { name: 'ET', labels: [4], paint: 4 },
      ],
    });
    expect(ds.caseIds()).toHaveLength(8);
    expect(ds.labelledCaseIds()).toEqual(ds.caseIds());
  });

  it('uses size as [D, H, W] and builds a matching 1 mm geometry', async () => {
    const v = await create({ size: [20, 30, 40], cases: 1 }).load(syntheticCaseId(0));
    expect(v.shape).toEqual([20, 30, 40]);
    expect(v.channels).toBe(4);
    expect(v.image.length).toBe(20 * 30 * 40 * 4);
    expect(v.label!.length).toBe(20 * 30 * 40);
    expect(v.spacing).toEqual([1, 1, 1]);
    expect(v.geometry!.dims).toEqual([40, 30, 20]); // NIfTI x, y, z = W, H, D
    expect(v.geometry!.sformCode).toBe(1);
    expect(v.geometry!.srow).toEqual([
      [1, 0, 0, -19.5],
      [0, 1, 0, -14.5],
      [0, 0, 1, -9.5],
    ]);
  });

  it('uses only the BraTS labels {0,1,2,4}, each of 1, 2, 4 present in most cases', () => {
    const present = { 1: 0, 2: 0, 4: 0 };
    for (const v of cases) {
      const c = counts(v);
      for (let l = 0; l < 256; l++) if (![0, 1, 2, 4].includes(l)) expect(c[l], `${v.id} label ${l}`).toBe(0);
      for (const l of [1, 2, 4] as const) if (c[l]! > 0) present[l]++;
    }
    expect(present[2]).toBe(N_CASES);
    expect(present[4]).toBe(N_CASES);
    expect(present[1]).toBeGreaterThanOrEqual(0.7 * N_CASES); // ~10% of tumours are drawn without necrosis
  });

  it('nests the sub-regions: necrosis inside the enhancing rim, the core inside edema', () => {
    let coreFaces = 0,
      coreFacesEdema = 0,
      necFaces = 0,
      necFacesRim = 0;
    for (const v of cases) {
      const core = boundaryFaces(v, new Set([1, 4]));
      for (const [m, n] of core) {
        coreFaces += n;
        if (m === 2) coreFacesEdema += n;
      }
      const nec = boundaryFaces(v, new Set([1]));
      for (const [m, n] of nec) {
        necFaces += n;
        if (m === 4) necFacesRim += n;
      }
      // Necrosis never touches edema directly: the rim is always between them.
      expect(nec.get(2) ?? 0, v.id).toBe(0);
    }
    // The only exception to "edema around the core" is where the brain surface clips the tumour.
    expect(coreFacesEdema / coreFaces).toBeGreaterThan(0.95);
    expect(necFacesRim / necFaces).toBeGreaterThan(0.97);
  });

  it('keeps labels inside the head and the background exactly 0', () => {
    for (const v of cases.slice(0, 6)) {
      let background = 0,
        labelledBackground = 0;
      for (let i = 0; i < v.label!.length; i++) {
        const bg = v.image[i * 4] === 0 && v.image[i * 4 + 1] === 0 && v.image[i * 4 + 2] === 0 && v.image[i * 4 + 3] === 0;
        if (bg) {
          background++;
          if (v.label![i]) labelledBackground++;
        }
      }
      expect(labelledBackground, v.id).toBe(0);
      expect(background / v.label!.length).toBeGreaterThan(0.3); // corners and margins of the box
    }
  });

  it('varies tumour size, from small to larger than a typical patch', () => {
    const extents: number[] = [];
    const fractions: number[] = [];
    for (const v of cases) {
      const [D, H, W] = v.shape;
      let lo = [D, H, W],
        hi = [-1, -1, -1],
        n = 0;
      for (let z = 0; z < D; z++)
        for (let y = 0; y < H; y++)
          for (let x = 0; x < W; x++) {
            if (!v.label![(z * H + y) * W + x]) continue;
            n++;
            [z, y, x].forEach((c, a) => {
              lo[a] = Math.min(lo[a]!, c);
              hi[a] = Math.max(hi[a]!, c);
            });
          }
      extents.push(Math.max(...[0, 1, 2].map((a) => (hi[a]! - lo[a]! + 1) / v.shape[a]!)));
      fractions.push(n / v.label!.length);
    }
    expect(Math.max(...fractions) / Math.min(...fractions)).toBeGreaterThan(10);
    expect(Math.min(...extents)).toBeLessThan(0.25);
    expect(Math.max(...extents)).toBeGreaterThan(0.45); // wider than a 24³ patch of a 48³ volume
  });

  it('z-scores each modality inside the head, with BraTS-like contrasts', () => {
    const v = cases[0]!;
    const N = v.label!.length;
    const stats = (m: number, pick: (i: number) => boolean) => {
      let n = 0,
        s = 0,
        s2 = 0;
      for (let i = 0; i < N; i++) {
        if (!pick(i)) continue;
        const x = v.image[i * 4 + m]!;
        n++;
        s += x;
        s2 += x * x;
      }
      return { mean: s / n, sd: Math.sqrt(s2 / n - (s / n) ** 2), n };
    };
    const head = (i: number) => [0, 1, 2, 3].some((m) => v.image[i * 4 + m] !== 0);
    for (let m = 0; m < 4; m++) {
      const st = stats(m, head);
      expect(Math.abs(st.mean)).toBeLessThan(1e-3);
      expect(Math.abs(st.sd - 1)).toBeLessThan(1e-3);
    }
    const T1CE = 1,
      T2 = 2,
      FLAIR = 3;
    const et = (i: number) => v.label![i] === 4;
    const edema = (i: number) => v.label![i] === 2;
    const nec = (i: number) => v.label![i] === 1;
    const healthy = (i: number) => head(i) && v.label![i] === 0;
    expect(stats(T1CE, et).mean).toBeGreaterThan(stats(T1CE, edema).mean + 1); // enhancing rim bright in T1ce
    expect(stats(T1CE, et).mean).toBeGreaterThan(stats(T1CE, nec).mean + 1);
    expect(stats(FLAIR, edema).mean).toBeGreaterThan(stats(FLAIR, healthy).mean + 0.5); // edema bright in FLAIR
    expect(stats(T2, edema).mean).toBeGreaterThan(stats(T2, healthy).mean + 0.5);
  });

  it('generates a 48³ case well under 100 ms', () => {
    generateSyntheticCase(100, OPTS); // warm-up
    const t0 = performance.now();
    for (let k = 0; k < 5; k++) generateSyntheticCase(200 + k, OPTS);
    const ms = (performance.now() - t0) / 5;
    console.log(`synthetic-brats: ${ms.toFixed(1)} ms per 48³ case`);
    expect(ms).toBeLessThan(100);
  });

  it('handles a BraTS-sized grid, [155, 240, 240]', () => {
    const t0 = performance.now();
    const v = generateSyntheticCase(0, { ...OPTS, size: [155, 240, 240] });
    const ms = performance.now() - t0;
    console.log(`synthetic-brats: ${(ms / 1000).toFixed(2)} s for a 240×240×155 case`);
    expect(v.shape).toEqual([155, 240, 240]);
    const c = counts(v);
    expect(c[1]! > 0 && c[2]! > 0 && c[4]! > 0).toBe(true);
    expect(ms).toBeLessThan(10_000);
  });
});

describe('synthetic-brats context lesions (mimics, edema fingers)', () => {
  const sha = (v: Volume): string => createHash('sha256').update(Buffer.from(v.image.buffer)).update(Buffer.from(v.label!.buffer)).digest('hex').slice(0, 16);

  it('with none asked for, gives exactly the data from before they existed', () => {
    // Hashes of image + label bytes generated at commit 8732cee, before mimics and fingers were added.
    const before: [Shape3, number, number, string][] = [
      [[48, 48, 48], 0, 0, '4e224aff16064c46'],
      [[48, 48, 48], 0, 5, '27e73e078a5257e9'],
      [[32, 40, 36], 3, 1, 'c2ae7dc271244da5'],
    ];
    for (const [size, seed, index, hash] of before) {
      expect(sha(generateSyntheticCase(index, { ...OPTS, seed, size })), `${size} seed ${seed} case ${index}`).toBe(hash);
      expect(sha(generateSyntheticCase(index, { ...OPTS, seed, size, mimics: 0, edemaFingers: 0, fingerReach: 1.2 }))).toBe(hash);
    }
  });

  const LESIONS: SyntheticOptions = { ...OPTS, mimics: 5, edemaFingers: 3, fingerReach: 1.0 };

  it('labels an edema-like lesion as edema exactly when a tumour core is connected to it', () => {
    let mimicVoxels = 0;
    for (let k = 0; k < 6; k++) {
      const v = generateSyntheticCase(k, LESIONS);
      const plain = generateSyntheticCase(k, OPTS);
      const [D, H, W] = v.shape;
      const label = v.label!;
      // 6-connected components of the tumour labels: each holds a core voxel (1 or 4).
      const seen = new Uint8Array(label.length);
      let coreless = 0;
      for (let s = 0; s < label.length; s++) {
        if (!label[s] || seen[s]) continue;
        const stack = [s];
        seen[s] = 1;
        let core = false;
        while (stack.length) {
          const i = stack.pop()!;
          if (label[i] === 1 || label[i] === 4) core = true;
          const x = i % W, y = Math.floor(i / W) % H, z = Math.floor(i / (W * H));
          const next = [x > 0 ? i - 1 : -1, x < W - 1 ? i + 1 : -1, y > 0 ? i - W : -1, y < H - 1 ? i + W : -1, z > 0 ? i - W * H : -1, z < D - 1 ? i + W * H : -1];
          for (const n of next) if (n >= 0 && label[n] && !seen[n]) (seen[n] = 1), stack.push(n);
        }
        if (!core) coreless++;
      }
      expect(coreless, `case ${k}: labelled lesions without a core`).toBe(0);
      // The core is the plain case's; mimics are background that looks like edema in FLAIR.
      let coreDiffers = 0;
      for (let i = 0; i < label.length; i++) {
        if ((label[i] === 1 || label[i] === 4) !== (plain.label![i] === 1 || plain.label![i] === 4)) coreDiffers++;
        if (label[i] === 0 && plain.label![i] === 0 && Math.abs(v.image[i * 4 + 3]! - plain.image[i * 4 + 3]!) > 0.5) mimicVoxels++;
      }
      expect(coreDiffers, `case ${k}: core voxels changed`).toBe(0);
    }
    expect(mimicVoxels).toBeGreaterThan(500);
  });

  it('reports how much labelled and mimic volume lies beyond half a patch edge', () => {
    const whole = syntheticContext(1, LESIONS, [48, 48, 48]);
    expect(whole.labelled).toBeGreaterThan(0);
    expect(whole.mimic).toBeGreaterThan(0);
    // A patch as large as the volume sees everything; a tiny one sees almost none of what decides.
    expect([whole.labelledBeyond, whole.mimicBeyond]).toEqual([0, 0]);
    const tiny = syntheticContext(1, LESIONS, [4, 4, 4]);
    expect(tiny.mimicBeyond).toBe(tiny.mimic);
    expect(tiny.labelledBeyond).toBeGreaterThan(0);
    const mid = syntheticContext(1, LESIONS, [16, 16, 16]);
    expect(mid.mimicBeyond).toBeLessThanOrEqual(tiny.mimicBeyond);
    expect(mid.labelledBeyond).toBeLessThanOrEqual(tiny.labelledBeyond);
    // Without lesions, no mimics.
    expect(syntheticContext(1, OPTS, [16, 16, 16]).mimic).toBe(0);
    // Through the plugin, by case id.
    const ds = create({ cases: 2, size: 48, mimics: 5, edemaFingers: 3, fingerReach: 1.0 });
    expect(ds.context!('synthetic-001', [16, 16, 16])).toEqual(mid);
  });
});
