/**
 * Bad training and prediction inputs give clear errors, never a silently wrong result: NaN/±Inf voxels
 * (after scl_slope), an image and its label (or two modalities) on different affines or spacings, and
 * files dataset.json lists that are missing. Small NIfTI files in a temp folder, read by the msd and brats
 * plugins, by the runner (the trial's status) and by predictImages (no label map written).
 */
import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, unlinkSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync, gunzipSync } from 'node:zlib';
import * as niftiReader from 'nifti-reader-js';
import msdPlugin from '../datasets/msd.js';
import bratsPlugin from '../datasets/brats.js';
import { resolveSettings } from '../core/config/settings.js';
import { writeNifti, readNifti, geometryAffine, checkFinite, checkSameGrid, decodeNifti, DEFAULT_GEOMETRY_TOLERANCE } from '../core/io/nifti.js';
import { loadExperiment } from '../core/config/experiment.js';
import { ExperimentRunner } from '../core/experiment/runner.js';
import { readTrials } from '../core/experiment/results.js';
import { predictImages } from '../core/experiment/prediction.js';
import { buildContainer } from '../experiments/cli/plugins.js';
import type { DatasetPlugin } from '../core/plugins/contracts.js';
import type { Dataset, NiftiGeometry } from '../core/types.js';
import { cpu } from './helpers/step.js';

beforeAll(cpu);

const [NX, NY, NZ] = [6, 5, 4];
const NVOX = NX * NY * NZ;

/** An oblique-free sform grid (code 2) with a matching qform (code 1), 1.2 × 0.9 × 1.5 mm. */
function geometry(over: Partial<NiftiGeometry> = {}): NiftiGeometry {
  return {
    dims: [NX, NY, NZ],
    pixDims: [1.2, 0.9, 1.5],
    qformCode: 1,
    sformCode: 2,
    quaternB: 0,
    quaternC: 0,
    quaternD: 0,
    qoffsetX: -10,
    qoffsetY: 5,
    qoffsetZ: 3,
    qfac: 1,
    srow: [
      [1.2, 0, 0, -10],
      [0, 0.9, 0, 5],
      [0, 0, 1.5, 3],
    ],
    xyztUnits: 10,
    ...over,
  };
}

/** Flat index of NIfTI voxel (i, j, k). */
const at = (i: number, j: number, k: number) => (k * NY + j) * NX + i;

/** A smooth image with a blob of label 1 (x < 3) and 2 in the middle. */
function images(seed: number): { image: Float32Array; label: Uint8Array } {
  const image = new Float32Array(NVOX);
  const label = new Uint8Array(NVOX);
  for (let k = 0; k < NZ; k++)
    for (let j = 0; j < NY; j++)
      for (let i = 0; i < NX; i++) {
        const inside = (i - 2.5) ** 2 + (j - 2) ** 2 + (k - 1.5) ** 2 < 5;
        label[at(i, j, k)] = inside ? (i < 3 ? 1 : 2) : 0;
        image[at(i, j, k)] = (inside ? 3 : 0) + Math.sin(seed + i * 1.3 + j * 0.7 + k * 0.4) * 0.4;
      }
  return { image, label };
}

/** An MSD task folder with n cases hip_000.. (labels {0,1,2}); returns the file names. */
async function msdFolder(dir: string, n: number): Promise<string[]> {
  const names: string[] = [];
  const training: { image: string; label: string }[] = [];
  for (let c = 0; c < n; c++) {
    const name = `hip_${String(c).padStart(3, '0')}.nii.gz`;
    const { image, label } = images(c);
    await writeNifti(join(dir, 'imagesTr', name), image, geometry());
    await writeNifti(join(dir, 'labelsTr', name), label, geometry());
    training.push({ image: `./imagesTr/${name}`, label: `./labelsTr/${name}` });
    names.push(name);
  }
  writeFileSync(
    join(dir, 'dataset.json'),
    JSON.stringify({ name: 'tiny', modality: { 0: 'MRI' }, labels: { 0: 'background', 1: 'Anterior', 2: 'Posterior' }, training }),
  );
  return names;
}

/** A float32 NIfTI-1 of any dimensionality with the given geometry (the library writes 3-D only). */
function niftiBytes(dims: number[], values: Float32Array, g: NiftiGeometry): Buffer {
  const buf = Buffer.alloc(352 + 4 * values.length);
  buf.writeInt32LE(348, 0);
  buf.writeInt16LE(dims.length, 40);
  dims.forEach((d, i) => buf.writeInt16LE(d, 42 + 2 * i));
  buf.writeInt16LE(16, 70);
  buf.writeInt16LE(32, 72);
  buf.writeFloatLE(g.qfac, 76);
  g.pixDims.forEach((p, i) => buf.writeFloatLE(p, 80 + 4 * i));
  buf.writeFloatLE(352, 108);
  buf.writeFloatLE(1, 112);
  buf.writeInt16LE(g.qformCode, 252);
  buf.writeInt16LE(g.sformCode, 254);
  [g.quaternB, g.quaternC, g.quaternD, g.qoffsetX, g.qoffsetY, g.qoffsetZ].forEach((v, i) => buf.writeFloatLE(v, 256 + 4 * i));
  g.srow.forEach((row, r) => row.forEach((v, c) => buf.writeFloatLE(v, 280 + 16 * r + 4 * c)));
  buf.write('n+1\0', 344, 'latin1');
  for (let i = 0; i < values.length; i++) buf.writeFloatLE(values[i]!, 352 + 4 * i);
  return gzipSync(buf);
}

function create(plugin: DatasetPlugin, settings: Record<string, unknown>): Dataset {
  return plugin.create(resolveSettings(plugin.settings, settings, 'dataset.settings'), { baseDir: '/' });
}

const quiet = (): void => {};

let root = '';
let n = 0;
/** A fresh folder under the test's temp root. */
function fresh(name: string): string {
  const d = join(root, `${name}-${n++}`);
  mkdirSync(d, { recursive: true });
  return d;
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'volseg-bad-inputs-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('NaN and ±Inf voxels', () => {
  it('msd: names the file, the first bad voxel (i, j, k), the value and the count, and what to do', async () => {
    const dir = fresh('msd-nan');
    const [, name] = await msdFolder(dir, 3);
    const { image } = images(1);
    image[at(3, 2, 1)] = NaN;
    image[at(5, 4, 3)] = -Infinity;
    await writeNifti(join(dir, 'imagesTr', name!), image, geometry());
    const ds = create(msdPlugin, { root: dir });
    await expect(ds.load('hip_000')).resolves.toBeTruthy();
    await expect(ds.load('hip_001')).rejects.toThrow(
      /imagesTr\/hip_001\.nii\.gz: voxel \(i=3, j=2, k=1\) is NaN \(2 of 120 voxels are NaN or ±Inf\); the framework does not impute missing values: fix the file, or mask those voxels/,
    );
  });

  it('msd: a 4-D image names the volume index t of the bad voxel', async () => {
    const dir = fresh('msd-4d');
    const values = new Float32Array(NVOX * 2).map((_, i) => i % 7);
    values[NVOX + at(2, 1, 0)] = Infinity;
    mkdirSync(join(dir, 'imagesTr'), { recursive: true });
    writeFileSync(join(dir, 'imagesTr', 'mm_001.nii.gz'), niftiBytes([NX, NY, NZ, 2], values, geometry()));
    await writeNifti(join(dir, 'labelsTr', 'mm_001.nii.gz'), images(0).label, geometry());
    writeFileSync(
      join(dir, 'dataset.json'),
      JSON.stringify({ modality: { 0: 'FLAIR', 1: 'T1w' }, labels: { 0: 'background', 1: 'a', 2: 'b' }, training: [{ image: './imagesTr/mm_001.nii.gz', label: './labelsTr/mm_001.nii.gz' }] }),
    );
    await expect(create(msdPlugin, { root: dir }).load('mm_001')).rejects.toThrow(/mm_001\.nii\.gz: voxel \(i=2, j=1, k=0, t=1\) is Infinity \(1 of 240 voxels/);
  });

  it('checks after scl_slope: finite stored values that scale past float32 are reported as such', async () => {
    const dir = fresh('slope');
    const stored = new Int16Array(NVOX).fill(1);
    stored[at(1, 0, 0)] = 4; // 4 × 1e38 overflows float32
    const file = join(dir, 'scaled.nii.gz');
    await writeNifti(file, stored, geometry(), { sclSlope: 1e38, sclInter: 0 });
    const img = await readNifti(file);
    expect(img.data[0]).toBeCloseTo(1e38, -33);
    expect(() => checkFinite(img)).toThrow(/scaled\.nii\.gz: voxel \(i=1, j=0, k=0\) is Infinity after scl_slope 1e\+38 \/ scl_inter 0 \(1 of 120/);
  });

  it('brats folder: a modality or a brain mask with NaN is named', async () => {
    const dir = fresh('brats-nan');
    const c = 'BraTS2021_00001';
    const { image, label } = images(0);
    for (const m of ['t1', 't1ce', 't2', 'flair']) await writeNifti(join(dir, c, `${c}_${m}.nii.gz`), image, geometry());
    await writeNifti(join(dir, c, `${c}_seg.nii.gz`), label.map((l) => (l === 2 ? 4 : l)), geometry());
    const bad = image.slice();
    bad[at(0, 4, 2)] = NaN;
    await writeNifti(join(dir, c, `${c}_t2.nii.gz`), bad, geometry());
    await expect(create(bratsPlugin, { root: dir }).load(c)).rejects.toThrow(/BraTS2021_00001_t2\.nii\.gz: voxel \(i=0, j=4, k=2\) is NaN \(1 of 120/);
    await writeNifti(join(dir, c, `${c}_t2.nii.gz`), image, geometry());
    const mask = new Float32Array(NVOX).fill(1);
    mask[at(5, 0, 0)] = NaN;
    await writeNifti(join(dir, c, 'mask.nii.gz'), mask, geometry());
    const patterns = { t1: '{case}_t1.nii.gz', t2: '{case}_t2.nii.gz', seg: '{case}_seg.nii.gz', mask: 'mask.nii.gz' };
    await expect(create(bratsPlugin, { root: dir, patterns }).load(c)).rejects.toThrow(/mask\.nii\.gz: voxel \(i=5, j=0, k=0\) is NaN/);
  });

  it('a NaN in a label file is named as such', async () => {
    const dir = fresh('label-nan');
    await msdFolder(dir, 1);
    const label = new Float32Array(images(0).label);
    label[at(2, 2, 2)] = NaN;
    await writeNifti(join(dir, 'labelsTr', 'hip_000.nii.gz'), label, geometry());
    await expect(create(msdPlugin, { root: dir }).load('hip_000')).rejects.toThrow(
      /labelsTr\/hip_000\.nii\.gz: label map has the value NaN at voxel \(x=2, y=2, z=2\); NaN and ±Inf are not labels/,
    );
  });
});

describe('an image and its label (or two modalities) on different grids', () => {
  it('msd: a label whose sform is shifted names both files, the rows, both values and the distance', async () => {
    const dir = fresh('msd-affine');
    await msdFolder(dir, 2);
    const shifted = geometry({ srow: [[1.2, 0, 0, -9.5], [0, 0.9, 0, 5], [0, 0, 1.5, 3]] });
    await writeNifti(join(dir, 'labelsTr', 'hip_001.nii.gz'), images(1).label, shifted);
    await expect(create(msdPlugin, { root: dir }).load('hip_001')).rejects.toThrow(
      /labelsTr\/hip_001\.nii\.gz: affine differs from that of \S*imagesTr\/hip_001\.nii\.gz: srow_x \[1\.2, 0, 0, -9\.5\] vs \[1\.2, 0, 0, -10\] \(sform vs sform\); voxel \(i=0, j=0, k=0\) lies 0\.5 mm apart in the two, more than 0\.001 mm; resample .*raise the dataset setting geometryTolerance/,
    );
    // A tolerance above the shift accepts it (for files whose difference is known to be rounding).
    await expect(create(msdPlugin, { root: dir, geometryTolerance: 0.6 }).load('hip_001')).resolves.toBeTruthy();
    // A rotation shows at the far corner, not at the origin.
    const tilted = geometry({ srow: [[1.2, 0, 0.01, -10], [0, 0.9, 0, 5], [0, 0, 1.5, 3]] });
    await writeNifti(join(dir, 'labelsTr', 'hip_001.nii.gz'), images(1).label, tilted);
    await expect(create(msdPlugin, { root: dir }).load('hip_001')).rejects.toThrow(/srow_x \[1\.2, 0, 0\.01, -10\] vs \[1\.2, 0, 0, -10\] .*voxel \(i=\d, j=\d, k=3\) lies 0\.03 mm apart/);
  });

  it('msd: a label with another spacing names pixdim and both values', async () => {
    const dir = fresh('msd-pixdim');
    await msdFolder(dir, 1);
    // Same affine (sform), but the header's spacing says otherwise.
    await writeNifti(join(dir, 'labelsTr', 'hip_000.nii.gz'), images(0).label, geometry({ pixDims: [1.2, 1, 1.5] }));
    await expect(create(msdPlugin, { root: dir }).load('hip_000')).rejects.toThrow(
      /labelsTr\/hip_000\.nii\.gz: spacing pixdim\[2\] = 1 differs from 0\.9 of \S*imagesTr\/hip_000\.nii\.gz by 0\.1 mm, more than 0\.001 mm/,
    );
  });

  it('msd: nnU-Net channel files of one case on different affines name both files', async () => {
    const dir = fresh('msd-channels');
    const { image, label } = images(0);
    await writeNifti(join(dir, 'imagesTr', 'p_001_0000.nii.gz'), image, geometry());
    await writeNifti(join(dir, 'imagesTr', 'p_001_0001.nii.gz'), image, geometry({ srow: [[1.2, 0, 0, -10], [0, 0.9, 0, 7], [0, 0, 1.5, 3]] }));
    await writeNifti(join(dir, 'labelsTr', 'p_001.nii.gz'), label, geometry());
    writeFileSync(
      join(dir, 'dataset.json'),
      JSON.stringify({ modality: { 0: 'CT', 1: 'PET' }, labels: { 0: 'background', 1: 'a', 2: 'b' }, training: [{ image: './imagesTr/p_001.nii.gz', label: './labelsTr/p_001.nii.gz' }] }),
    );
    await expect(create(msdPlugin, { root: dir }).load('p_001')).rejects.toThrow(
      /p_001_0001\.nii\.gz: affine differs from that of \S*p_001_0000\.nii\.gz: srow_y \[0, 0\.9, 0, 7\] vs \[0, 0\.9, 0, 5\] .*2 mm apart/,
    );
  });

  it('brats: an oblique qform-only seg equal to the images\' sform loads (the codes may differ); a shifted one does not', async () => {
    const dir = fresh('brats-qform');
    const c = 'case1';
    // A rotation of ~20° about an oblique axis, qfac -1: the images store it as an sform (float32-rounded).
    const [b, cc, d] = [0.1, -0.15, 0.08];
    const qonly = geometry({ sformCode: 0, qformCode: 2, quaternB: b, quaternC: cc, quaternD: d, qfac: -1, qoffsetX: 90.25, qoffsetY: -126.5, qoffsetZ: -72 });
    const asSform = geometry({ ...qonly, sformCode: 1, qformCode: 0, srow: geometryAffine(qonly)!.rows });
    const { image, label } = images(0);
    for (const m of ['t1', 't1ce', 't2', 'flair']) await writeNifti(join(dir, c, `${c}_${m}.nii.gz`), image, asSform);
    await writeNifti(join(dir, c, `${c}_seg.nii.gz`), label, qonly);
    // Our quaternion-to-matrix agrees with nifti-reader-js's on the file as written.
    const bytes = gunzipSync(readFileSync(join(dir, c, `${c}_seg.nii.gz`)));
    const h = niftiReader.readHeader(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer) as unknown as {
      getQformMat(): number[][];
    };
    const ours = geometryAffine((await readNifti(join(dir, c, `${c}_seg.nii.gz`))).geometry)!;
    const ref = h.getQformMat();
    for (let r = 0; r < 3; r++) for (let k = 0; k < 4; k++) expect(ours.rows[r]![k]!).toBeCloseTo(ref[r]![k]!, 5);
    const v = await create(bratsPlugin, { root: dir }).load(c);
    expect(v.label).toBeTruthy();
    // Shifted by 0.01 mm along z: beyond the default tolerance, named with the qform as a matrix.
    await writeNifti(join(dir, c, `${c}_seg.nii.gz`), label, { ...qonly, qoffsetZ: -72.01 });
    await expect(create(bratsPlugin, { root: dir }).load(c)).rejects.toThrow(
      /case1_seg\.nii\.gz: affine differs from that of \S*case1_t1\.nii\.gz: affine row z \[[^\]]*, -72\.01\] vs \[.*, -72\] \(qform \(as a matrix\) vs sform\); voxel \(i=\d, j=\d, k=\d\) lies 0\.0100\d* mm apart/,
    );
    await expect(create(bratsPlugin, { root: dir, geometryTolerance: 0.02 }).load(c)).resolves.toBeTruthy();
  });

  it('a file without qform or sform has no orientation to compare; its dims and spacing still are', () => {
    const a = decodeNifti(gunzipSync(niftiBytes([NX, NY, NZ], new Float32Array(NVOX), geometry())), 'a.nii');
    const none = decodeNifti(gunzipSync(niftiBytes([NX, NY, NZ], new Float32Array(NVOX), geometry({ qformCode: 0, sformCode: 0 }))), 'b.nii');
    expect(geometryAffine(none.geometry)).toBeUndefined();
    expect(() => checkSameGrid(a, none)).not.toThrow();
    const other = decodeNifti(gunzipSync(niftiBytes([NX, NY, NZ], new Float32Array(NVOX), geometry({ qformCode: 0, sformCode: 0, pixDims: [1.2, 0.9, 2] }))), 'c.nii');
    expect(() => checkSameGrid(a, other)).toThrow(/c\.nii: spacing pixdim\[3\] = 2 differs from 1\.5 of a\.nii/);
  });

  it('the tolerance is a validated setting of both plugins, default DEFAULT_GEOMETRY_TOLERANCE', () => {
    expect(DEFAULT_GEOMETRY_TOLERANCE).toBe(1e-3);
    for (const p of [msdPlugin, bratsPlugin] as DatasetPlugin[]) {
      expect(resolveSettings(p.settings, { root: 'x' }, 'dataset.settings').geometryTolerance).toBe(1e-3);
      expect(() => resolveSettings(p.settings, { root: 'x', geometryTolerance: -1 }, 'dataset.settings')).toThrow(/dataset\.settings\.geometryTolerance: must be ≥ 0/);
    }
  });
});

describe('files dataset.json lists that are missing', () => {
  it('an error names the entry, the path and the fixes; skipMissing leaves the cases out with one warning naming them', async () => {
    const dir = fresh('msd-missing');
    await msdFolder(dir, 4);
    unlinkSync(join(dir, 'labelsTr', 'hip_001.nii.gz'));
    unlinkSync(join(dir, 'imagesTr', 'hip_003.nii.gz'));
    expect(() => create(msdPlugin, { root: dir })).toThrow(
      /^msd: \S*dataset\.json: training\[1\] \(hip_001\) label file \S*labelsTr\/hip_001\.nii\.gz not found \(and 1 more entry, below\); restore the file, remove the entry from dataset\.json, or set dataset\.settings\.skipMissing: true.*\n {2}also training\[3\] \(hip_003\) image file \S*imagesTr\/hip_003\.nii\.gz not found/,
    );
    // An image in imagesTr that dataset.json does not list: not used, but named.
    await writeNifti(join(dir, 'imagesTr', 'hip_009.nii.gz'), images(9).image, geometry());
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const ds = create(msdPlugin, { root: dir, skipMissing: true });
      expect(ds.caseIds()).toEqual(['hip_000', 'hip_002']);
      expect(warn).toHaveBeenCalledTimes(1);
      const text = String(warn.mock.calls[0]![0]);
      expect(text).toMatch(/3 case\(s\) found but not used/);
      expect(text).toMatch(/hip_001: dataset\.json training\[1\] label file \S*hip_001\.nii\.gz not found \(skipMissing\)/);
      expect(text).toMatch(/hip_003: dataset\.json training\[3\] image file \S*hip_003\.nii\.gz not found/);
      expect(text).toMatch(/hip_009: in imagesTr without a label in labelsTr and not listed in dataset\.json "training"/);
      await expect(ds.load('hip_001')).rejects.toThrow(/"hip_001" was skipped: dataset\.json training\[1\] label file/);
    } finally {
      warn.mockRestore();
    }
  });

  it('an entry without "image" and a missing test image are errors too', async () => {
    const dir = fresh('msd-entries');
    await msdFolder(dir, 2);
    const meta = JSON.parse(readFileSync(join(dir, 'dataset.json'), 'utf8'));
    meta.training.push({ label: './labelsTr/hip_000.nii.gz' });
    meta.test = ['./imagesTs/t_001.nii.gz'];
    writeFileSync(join(dir, 'dataset.json'), JSON.stringify(meta));
    expect(() => create(msdPlugin, { root: dir })).toThrow(/training\[2\] has no "image" \(and 1 more entry, below\).*\n {2}also test\[0\] \(t_001\) image file \S*imagesTs\/t_001\.nii\.gz not found/);
  });
});

describe('through the runner and predict', () => {
  it('a NaN training image fails the trial, naming the file; an all-NaN image fails predict and writes nothing', async () => {
    const dir = fresh('runner');
    const good = join(dir, 'good');
    const bad = join(dir, 'bad');
    await msdFolder(good, 4);
    const [, , name] = await msdFolder(bad, 4);
    const { image } = images(2);
    image[at(4, 3, 2)] = NaN;
    await writeNifti(join(bad, 'imagesTr', name!), image, geometry());
    // 3 training cases, 3 steps (an epoch visits each once) and 1 validation case: every case is read.
    const experiment = (exp: string, data: string) => {
      const file = join(dir, `${exp}.yaml`);
      writeFileSync(
        file,
        `name: ${exp}
description: bad inputs
dataset: { name: msd, settings: { root: ${JSON.stringify(data)} } }
architecture: { name: unet3d, settings: { depth: 2, baseFilters: 2 } }
strategy: { name: full-volume }
training: { epochs: 1, stepsPerEpoch: 3, validationFraction: 0.25 }
`,
      );
      return file;
    };
    const { catalog } = buildContainer();
    const results = join(dir, 'results-bad');
    await new ExperimentRunner(catalog).run(loadExperiment(experiment('nan', bad), catalog), { resultsDir: results, log: quiet });
    const [row] = readTrials(results);
    expect(row!.status).not.toBe('ok');
    expect(String(row!.status)).toMatch(/^failed: .*imagesTr\/hip_002\.nii\.gz: voxel \(i=4, j=3, k=2\) is NaN/);

    const okResults = join(dir, 'results-good');
    await new ExperimentRunner(catalog).run(loadExperiment(experiment('good', good), catalog), { resultsDir: okResults, log: quiet });
    const [okRow] = readTrials(okResults);
    expect(okRow!.status).toBe('ok');
    const inputs = join(dir, 'to-predict');
    await writeNifti(join(inputs, 'empty.nii.gz'), new Float32Array(NVOX).fill(NaN), geometry());
    const out = join(dir, 'predictions');
    await expect(predictImages(catalog, String(okRow!.model), inputs, out)).rejects.toThrow(
      /to-predict\/empty\.nii\.gz: voxel \(i=0, j=0, k=0\) is NaN \(all 120 voxels are NaN or ±Inf\)/,
    );
    expect(existsSync(join(out, 'empty.nii.gz'))).toBe(false);
    expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);
  });
});
