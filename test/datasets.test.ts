/**
 * Dataset plugins on real data (the BraTS 2015 sample, the BraTS 2023 unlabelled case, MSD Task04
 * Hippocampus under ../shared/data, skipped when absent) and on small hand-made folders (MSD layout with a
 * 4-D image, nnU-Net channel files, BraTS naming, error messages).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { datasets } from '../datasets/index.js';
import bratsPlugin from '../datasets/brats.js';
import msdPlugin, { findImageFiles } from '../datasets/msd.js';
import { resolveSettings } from '../core/config/settings.js';
import { readNifti, readNiftiHeader, writeNifti } from '../core/io/nifti.js';
import { syntheticGeometry } from '../datasets/synthetic-brats.js';
import type { Dataset, Volume } from '../core/types.js';
import type { DatasetPlugin } from '../core/plugins/contracts.js';
import type { SettingsSchema } from '../core/config/settings.js';

const here = dirname(fileURLToPath(import.meta.url));
const DATA = resolve(here, '../../shared/data');
const BRATS2015 = join(DATA, 'brats2015-sample');
const BRATS2023 = join(DATA, 'brats2023-unlabeled');
const MSD = join(DATA, 'msd-hippocampus');
for (const [name, dir] of [
  ['BraTS 2015', BRATS2015],
  ['BraTS 2023', BRATS2023],
  ['MSD hippocampus', MSD],
] as const) {
  if (!existsSync(dir)) console.warn(`datasets.test: ${name} checks skipped: ${dir} not found (the shared data folder beside the project)`);
}

const projectRoot = resolve(here, '..');

function create(plugin: DatasetPlugin, settings: Record<string, unknown>, baseDir = projectRoot): Dataset {
  return plugin.create(resolveSettings(plugin.settings, settings, 'dataset.settings'), { baseDir });
}

function labelCounts(v: Volume): Map<number, number> {
  const m = new Map<number, number>();
  for (const l of v.label!) m.set(l, (m.get(l) ?? 0) + 1);
  return m;
}

/** Mean and standard deviation of channel c over the voxels where `pick` holds. */
function channelStats(v: Volume, c: number, pick: (i: number) => boolean) {
  let n = 0,
    s = 0,
    s2 = 0;
  const N = v.shape[0] * v.shape[1] * v.shape[2];
  for (let i = 0; i < N; i++) {
    if (!pick(i)) continue;
    const x = v.image[i * v.channels + c]!;
    n++;
    s += x;
    s2 += x * x;
  }
  return { n, mean: s / n, sd: Math.sqrt(s2 / n - (s / n) ** 2) };
}

describe('datasets/index', () => {
  it('registers synthetic-brats, brats, msd and synthetic-microct as dataset plugins with valid defaults', () => {
    expect(datasets.map((d) => d.name)).toEqual(['synthetic-brats', 'brats', 'msd', 'synthetic-microct']);
    for (const d of datasets) {
      expect(d.kind).toBe('dataset');
      expect(d.description.length).toBeGreaterThan(10);
      expect(d.reference).toBeTruthy();
      const schema: SettingsSchema = d.settings;
      for (const [key, spec] of Object.entries(schema)) expect(spec.description, `${d.name}.${key}`).toBeTruthy();
    }
    // Required roots are reported, not guessed.
    expect(() => resolveSettings(bratsPlugin.settings, {}, 'dataset.settings')).toThrow(/dataset\.settings\.root: is required/);
    expect(() => resolveSettings(msdPlugin.settings, {}, 'dataset.settings')).toThrow(/dataset\.settings\.root: is required/);
  });
});

const BRATS2015_SETTINGS = {
  root: '../shared/data/brats2015-sample', // relative to the project root (the baseDir here)
  patterns: {
    flair: 'Flair_subtrMeanDivStd.nii.gz',
    t1c: 'T1c_subtrMeanDivStd.nii.gz',
    seg: 'OTMultiClass.nii.gz',
    mask: 'brainmask.nii.gz',
  },
  labelMap: { 3: 1 },
};

describe.skipIf(!existsSync(BRATS2015))('brats on the BraTS 2015 sample', () => {
  it('lists the 4 labelled cases with the two modalities of the patterns, in order', () => {
    const ds = create(bratsPlugin, BRATS2015_SETTINGS);
    expect(ds.channels).toEqual(['flair', 't1c']);
    expect(ds.caseIds()).toEqual(['brats_2013_pat0003_1', 'brats_2013_pat0004_1', 'brats_2013_pat0005_1', 'brats_2013_pat0006_1']);
    expect(ds.labelledCaseIds()).toEqual(ds.caseIds());
    expect(ds.task.kind).toBe('regions');
    expect(ds.skipped).toEqual([]);
  });

  it('loads a case as [155, 240, 240] × 2 channels, label 3 remapped to 1, z-scored in the brain mask', async () => {
    const ds = create(bratsPlugin, BRATS2015_SETTINGS);
    const id = 'brats_2013_pat0003_1';
    const [v, rawSeg, mask] = await Promise.all([
      ds.load(id),
      readNifti(join(BRATS2015, id, 'OTMultiClass.nii.gz')),
      readNifti(join(BRATS2015, id, 'brainmask.nii.gz')),
    ]);
    expect(v.id).toBe(id);
    expect(v.shape).toEqual([155, 240, 240]);
    expect(v.channels).toBe(2);
    expect(v.image.length).toBe(155 * 240 * 240 * 2);
    expect(v.spacing).toEqual([1, 1, 1]);
    expect(v.geometry!.dims).toEqual([240, 240, 155]);

    const raw = new Map<number, number>();
    for (const x of rawSeg.data) raw.set(x, (raw.get(x) ?? 0) + 1);
    const got = labelCounts(v);
    expect([...got.keys()].sort()).toEqual([0, 1, 2, 4]);
    expect(got.get(1)).toBe(raw.get(1)! + raw.get(3)!); // 3 -> 1
    expect(got.get(2)).toBe(raw.get(2));
    expect(got.get(4)).toBe(raw.get(4));

    const inBrain = (i: number) => mask.data[i] !== 0;
    for (let c = 0; c < 2; c++) {
      const s = channelStats(v, c, inBrain);
      expect(Math.abs(s.mean)).toBeLessThan(1e-3);
      expect(Math.abs(s.sd - 1)).toBeLessThan(1e-3);
      // The stored background (-3.16 in this release) becomes 0.
      expect(channelStats(v, c, (i) => !inBrain(i)).sd).toBe(0);
      expect(v.image[c]).toBe(0);
    }
  });

  it('without labelMap, rejects label 3 naming the file and suggesting labelMap', async () => {
    const { labelMap: _drop, ...noMap } = BRATS2015_SETTINGS;
    const ds = create(bratsPlugin, noMap);
    await expect(ds.load('brats_2013_pat0003_1')).rejects.toThrow(/OTMultiClass\.nii\.gz: label value 3 .*labelMap: \{3: 1\}/);
  });

  it('without a mask pattern, normalises over the non-background voxels (corner value)', async () => {
    const { mask: _m, ...patterns } = BRATS2015_SETTINGS.patterns;
    const ds = create(bratsPlugin, { ...BRATS2015_SETTINGS, patterns, cases: ['brats_2013_pat0004_1'] });
    expect(ds.caseIds()).toEqual(['brats_2013_pat0004_1']);
    const v = await ds.load('brats_2013_pat0004_1');
    const fg = (i: number) => v.image[i * 2] !== 0;
    const s = channelStats(v, 0, fg);
    expect(s.n).toBeGreaterThan(1e6);
    expect(Math.abs(s.mean)).toBeLessThan(1e-3);
    expect(Math.abs(s.sd - 1)).toBeLessThan(1e-3);
  });

  it("normalize: 'none' keeps the stored values", async () => {
    const ds = create(bratsPlugin, { ...BRATS2015_SETTINGS, normalize: 'none', cases: ['brats_2013_pat0003_1'] });
    const v = await ds.load('brats_2013_pat0003_1');
    const flair = await readNifti(join(BRATS2015, 'brats_2013_pat0003_1', 'Flair_subtrMeanDivStd.nii.gz'));
    for (const i of [0, 1234567, 4000000, 8927999]) expect(v.image[i * 2]).toBe(flair.data[i]);
  });

  it('reports unknown case names in the cases setting', () => {
    expect(() => create(bratsPlugin, { ...BRATS2015_SETTINGS, cases: ['nope'] })).toThrow(/dataset\.settings\.cases: no case folder "nope"/);
  });
});

describe.skipIf(!existsSync(BRATS2023))('brats on the BraTS 2023 unlabelled case', () => {
  it('detects the 2023 naming; the case is unlabelled', async () => {
    const ds = create(bratsPlugin, { root: BRATS2023 });
    expect(ds.channels).toEqual(['t1n', 't1c', 't2w', 't2f']);
    expect(ds.caseIds()).toEqual(['BraTS-GLI-00001-000']);
    expect(ds.labelledCaseIds()).toEqual([]);
    const v = await ds.load('BraTS-GLI-00001-000');
    expect(v.shape).toEqual([155, 240, 240]);
    expect(v.channels).toBe(4);
    expect(v.label).toBeUndefined();
  });

  it('finds 2023 files under the 2017–2021 modality names too', () => {
    const ds = create(bratsPlugin, { root: BRATS2023, modalities: ['flair', 't1ce'] });
    expect(ds.channels).toEqual(['flair', 't1ce']);
    expect(ds.caseIds()).toEqual(['BraTS-GLI-00001-000']);
  });
});

describe.skipIf(!existsSync(MSD))('msd on Task04 Hippocampus', () => {
  it('reads dataset.json: labels task, one MRI channel, 194 labelled cases, hippocampus_118 skipped', () => {
    const ds = create(msdPlugin, { root: MSD });
    expect(ds.task).toEqual({
      kind: 'labels',
      labels: [
        { name: 'anterior', value: 1 },
        { name: 'posterior', value: 2 },
      ],
    });
    expect(ds.channels).toEqual(['MRI']);
    expect(ds.labelledCaseIds()).toHaveLength(194);
    expect(ds.caseIds()).toHaveLength(194);
    expect(ds.caseIds()).not.toContain('hippocampus_118');
    expect(ds.skipped).toHaveLength(1);
    expect(ds.skipped![0]!.id).toBe('hippocampus_118');
    expect(ds.skipped![0]!.reason).toMatch(/without a label in labelsTr/);
  });

  it('loads uint8 and float32 images alike, z-scored, with labels {0,1,2}', async () => {
    const ds = create(msdPlugin, { root: MSD });
    const types = new Map<string, string>();
    await Promise.all(
      ds.caseIds().map(async (id) => {
        const h = await readNiftiHeader(join(MSD, 'imagesTr', `${id}.nii.gz`));
        types.set(id, h.datatypeCode === 2 ? 'uint8' : h.datatypeCode === 16 ? 'float32' : String(h.datatypeCode));
      }),
    );
    expect(new Set(types.values())).toEqual(new Set(['uint8', 'float32']));
    const t0 = performance.now();
    const volumes = await Promise.all(ds.caseIds().map((id) => ds.load(id)));
    console.log(`datasets.test: loaded the 194 hippocampus cases in ${(performance.now() - t0).toFixed(0)} ms`);
    for (const v of volumes) {
      const [D, H, W] = v.shape;
      expect(v.channels).toBe(1);
      expect(v.image.length).toBe(D * H * W);
      expect(v.label!.length).toBe(D * H * W);
      const c = labelCounts(v);
      expect([...c.keys()].every((l) => l <= 2), v.id).toBe(true);
      expect(c.get(1) && c.get(2), v.id).toBeTruthy();
      const s = channelStats(v, 0, () => true);
      expect(Math.abs(s.mean), v.id).toBeLessThan(1e-3);
      expect(Math.abs(s.sd - 1), v.id).toBeLessThan(1e-3);
    }
    const byType = (t: string) => volumes.find((v) => types.get(v.id) === t)!;
    expect(byType('uint8').shape.length).toBe(3);
    expect(byType('float32').shape.length).toBe(3);
    await expect(ds.load('hippocampus_118')).rejects.toThrow(/hippocampus_118" was skipped/);
  });

  it('findImageFiles lists imagesTr of a task folder without imagesTs', () => {
    const files = findImageFiles(MSD);
    expect(files).toHaveLength(195); // hippocampus_118 included: prediction needs no label
    expect(files[0]).toBe(join(MSD, 'imagesTr', 'hippocampus_003.nii.gz'));
  });
});

// ------------------------------------------------------------------------------------------------
// Hand-made folders

/** A float32 NIfTI-1 of any dimensionality (little endian), independent of the library's writer. */
function niftiBytes(dims: number[], values: (i: number) => number): Buffer {
  const n = dims.reduce((a, b) => a * b, 1);
  const buf = Buffer.alloc(352 + 4 * n);
  buf.writeInt32LE(348, 0);
  buf.writeInt16LE(dims.length, 40);
  dims.forEach((d, i) => buf.writeInt16LE(d, 42 + 2 * i));
  buf.writeInt16LE(16, 70);
  buf.writeInt16LE(32, 72);
  for (let i = 0; i < 8; i++) buf.writeFloatLE(1, 76 + 4 * i);
  buf.writeFloatLE(352, 108);
  buf.writeFloatLE(1, 112);
  buf.write('n+1\0', 344, 'latin1');
  for (let i = 0; i < n; i++) buf.writeFloatLE(values(i), 352 + 4 * i);
  return gzipSync(buf);
}

describe('hand-made dataset folders', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'datasets-test-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const put = (rel: string, bytes: Buffer | string) => {
    const p = join(dir, rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, bytes);
  };

  it('msd: a 4-D multi-modal image becomes channels; imagesTs cases are unlabelled', async () => {
    put(
      'Task99/dataset.json',
      JSON.stringify({
        name: 'Toy',
        modality: { 0: 'FLAIR', 1: 'T1w' },
        labels: { 0: 'background', 1: 'Edema', 2: 'Tumour Core' },
        training: [{ image: './imagesTr/toy_001.nii.gz', label: './labelsTr/toy_001.nii.gz' }],
        test: ['./imagesTs/toy_101.nii.gz'],
      }),
    );
    put('Task99/imagesTr/toy_001.nii.gz', niftiBytes([4, 3, 2, 2], (i) => (i < 24 ? 10 + i : 100 + i)));
    put('Task99/labelsTr/toy_001.nii.gz', niftiBytes([4, 3, 2], (i) => i % 3));
    put('Task99/imagesTs/toy_101.nii.gz', niftiBytes([4, 3, 2, 2], (i) => i));
    put('Task99/imagesTr/._toy_001.nii.gz', 'macOS resource fork, not an image');
    const ds = create(msdPlugin, { root: 'Task99', normalize: 'none' }, dir);
    expect(ds.channels).toEqual(['FLAIR', 'T1w']);
    expect(ds.task).toEqual({
      kind: 'labels',
      labels: [
        { name: 'edema', value: 1 },
        { name: 'tumour core', value: 2 },
      ],
    });
    expect(ds.caseIds()).toEqual(['toy_001', 'toy_101']);
    expect(ds.labelledCaseIds()).toEqual(['toy_001']);
    expect(ds.skipped).toEqual([]);
    const v = await ds.load('toy_001');
    expect(v.shape).toEqual([2, 3, 4]);
    expect(v.channels).toBe(2);
    expect(Array.from(v.image.subarray(0, 4))).toEqual([10, 124, 11, 125]);
    expect(Array.from(v.label!.subarray(0, 4))).toEqual([0, 1, 2, 0]);
    const t = await ds.load('toy_101');
    expect(t.label).toBeUndefined();
    expect(findImageFiles(join(dir, 'Task99'))).toEqual([join(dir, 'Task99/imagesTs/toy_101.nii.gz')]);
  });

  it('msd: nnU-Net per-channel files, and a label outside dataset.json named with the file', async () => {
    put(
      'Task98/dataset.json',
      JSON.stringify({
        modality: { 0: 'CT', 1: 'PET' },
        labels: { 0: 'background', 1: 'lesion' },
        training: [{ image: './imagesTr/p_001.nii.gz', label: './labelsTr/p_001.nii.gz' }],
      }),
    );
    put('Task98/imagesTr/p_001_0000.nii.gz', niftiBytes([2, 2, 2], () => 1));
    put('Task98/imagesTr/p_001_0001.nii.gz', niftiBytes([2, 2, 2], () => 2));
    put('Task98/labelsTr/p_001.nii.gz', niftiBytes([2, 2, 2], (i) => (i === 5 ? 7 : 1)));
    const ds = create(msdPlugin, { root: join(dir, 'Task98'), normalize: 'none' });
    expect(ds.caseIds()).toEqual(['p_001']);
    await expect(ds.load('p_001')).rejects.toThrow(/p_001\.nii\.gz: label value 7 at voxel \(x=1, y=0, z=1\) is not one of the task's labels \{0, 1\}/);
  });

  it('msd: a clear error when dataset.json is missing', () => {
    mkdirSync(join(dir, 'NotMsd'), { recursive: true });
    expect(() => create(msdPlugin, { root: join(dir, 'NotMsd') })).toThrow(/NotMsd\/dataset\.json not found/);
    expect(() => create(msdPlugin, { root: join(dir, 'Missing') })).toThrow(/dataset\.settings\.root: folder .*Missing does not exist/);
  });

  it('brats: 2017–2021 naming; a case missing a modality is skipped, one without seg is unlabelled', async () => {
    const mods = ['t1', 't1ce', 't2', 'flair'];
    for (const c of ['BraTS2021_00001', 'BraTS2021_00002', 'BraTS2021_00003']) {
      for (const [k, m] of mods.entries()) {
        if (c.endsWith('3') && m === 't2') continue;
        put(`b21/${c}/${c}_${m}.nii.gz`, niftiBytes([3, 3, 2], (i) => (i === 0 ? 0 : k + 1 + i)));
      }
      if (c.endsWith('1')) put(`b21/${c}/${c}_seg.nii.gz`, niftiBytes([3, 3, 2], (i) => [0, 1, 2, 4][i % 4]!));
    }
    const ds = create(bratsPlugin, { root: join(dir, 'b21') });
    expect(ds.channels).toEqual(mods);
    expect(ds.caseIds()).toEqual(['BraTS2021_00001', 'BraTS2021_00002']);
    expect(ds.labelledCaseIds()).toEqual(['BraTS2021_00001']);
    expect(ds.skipped).toHaveLength(1);
    expect(ds.skipped![0]!.id).toBe('BraTS2021_00003');
    expect(ds.skipped![0]!.reason).toMatch(/missing t2: none of BraTS2021_00003_t2\.nii\.gz/);
    const v = await ds.load('BraTS2021_00001');
    expect(v.shape).toEqual([2, 3, 3]);
    expect(v.channels).toBe(4);
    expect(Array.from(v.label!.subarray(0, 4))).toEqual([0, 1, 2, 4]);
    expect(v.image[0]).toBe(0); // background stays 0
    expect((await ds.load('BraTS2021_00002')).label).toBeUndefined();
  });

  it('brats: a folder without BraTS naming asks for patterns', () => {
    put('plain/case1/image.nii.gz', niftiBytes([2, 2, 2], () => 1));
    expect(() => create(bratsPlugin, { root: join(dir, 'plain') })).toThrow(/set dataset\.settings\.patterns/);
    const ds = create(bratsPlugin, { root: join(dir, 'plain'), patterns: { t1: 'image.nii.gz' } });
    expect(ds.channels).toEqual(['t1']);
    expect(() => create(bratsPlugin, { root: join(dir, 'plain'), patterns: { t1: 'image.png' } })).toThrow(/dataset\.settings\.patterns\.t1: expected a \.nii/);
    expect(() => create(bratsPlugin, { root: join(dir, 'plain'), patterns: { t1: 'image.nii.gz' }, labelMap: { x: 1 } })).toThrow(/dataset\.settings\.labelMap\.x/);
  });

  it('findImageFiles: a plain folder of .nii/.nii.gz, sorted, and a clear error when empty or missing', () => {
    put('pred/b.nii.gz', niftiBytes([1, 1, 1], () => 0));
    put('pred/a.nii', niftiBytes([1, 1, 1], () => 0));
    put('pred/notes.txt', 'x');
    expect(findImageFiles(join(dir, 'pred'))).toEqual([join(dir, 'pred/a.nii'), join(dir, 'pred/b.nii.gz')]);
    mkdirSync(join(dir, 'empty'), { recursive: true });
    expect(() => findImageFiles(join(dir, 'empty'))).toThrow(/empty: no \.nii or \.nii\.gz images/);
    expect(() => findImageFiles(join(dir, 'absent'))).toThrow(/absent: folder not found/);
  });

  it('a synthetic case written as NIfTI reads back on its grid', async () => {
    const geometry = syntheticGeometry([5, 6, 7]);
    const labels = new Uint8Array(5 * 6 * 7).map((_, i) => (i % 5 === 0 ? 4 : 0));
    const out = join(dir, 'synthetic-pred.nii.gz');
    await writeNifti(out, labels, geometry);
    const back = await readNifti(out);
    expect(back.spatial).toEqual([7, 6, 5]);
    expect(back.geometry.srow).toEqual(geometry.srow);
  });
});
