/**
 * Reading a folder of BraTS cases (used by the `brats` dataset plugin and by prediction) (Brain Tumor Segmentation challenge; Menze et al., "The Multimodal
 * Brain Tumor Image Segmentation Benchmark (BRATS)", IEEE TMI 2015; Bakas et al., arXiv:1811.02629, 2018;
 * BraTS 2023: Kazerooni et al., arXiv:2305.17033). One sub-folder per case.
 *
 * File naming, resolved per case folder and per modality:
 * - BraTS 2017–2021: `<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`
 * - BraTS 2023:      `<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`
 *   (t1 ≡ t1n, t1ce ≡ t1c, t2 ≡ t2w, flair ≡ t2f: asking for either name finds either naming; .nii too)
 * - anything else through `patterns`: modality -> file name inside the case folder, `{case}` standing for
 *   the folder name; the keys `seg` (ground truth) and `mask` (brain mask used by normalisation) are
 *   special. E.g. the BraTS 2015 release as shipped by DeepMedic:
 *   `{flair: Flair_subtrMeanDivStd.nii.gz, t1c: T1c_subtrMeanDivStd.nii.gz, seg: OTMultiClass.nii.gz,
 *     mask: brainmask.nii.gz}` with `labelMap: {3: 1}`.
 *
 * Labels use the BraTS 2017–2022 scheme {0, 1 necrosis/non-enhancing core, 2 edema, 4 enhancing}; older or
 * newer schemes are mapped with `labelMap` (2015: non-enhancing 3 -> 1; 2023: enhancing 3 -> 4). A case
 * without a label file is unlabelled (inference only).
 *
 * Normalisation `zscore-brain` (the usual BraTS preprocessing, e.g. Isensee et al., nnU-Net 2021): each
 * modality z-scored over the brain, background set to 0. The brain is the `mask` file where given, else
 * the voxels that differ from the modality's background value, read at the corner voxel (0 in BraTS
 * 2017+; the 2015 z-scored release has a constant non-zero background).
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import type { Dataset, PredictionInput, Volume } from '../types.js';
import { SettingsError } from '../config/index.js';
import {
  readNifti,
  labelsFromNifti,
  volumeFromNifti,
  checkSameGrid,
  checkFinite,
  zscoreChannel,
  DEFAULT_GEOMETRY_TOLERANCE,
  type NiftiImage,
} from './nifti.js';
import { BRATS_TASK } from '../data/index.js';

const ALIASES: Record<string, string> = { t1: 't1n', t1n: 't1', t1ce: 't1c', t1c: 't1ce', t2: 't2w', t2w: 't2', flair: 't2f', t2f: 'flair' };
const NAMING_2017 = ['t1', 't1ce', 't2', 'flair'];
const NAMING_2023 = ['t1n', 't1c', 't2w', 't2f'];
const SPECIAL = new Set(['seg', 'mask']);

interface CaseFiles {
  id: string;
  modalities: string[];
  seg?: string;
  mask?: string;
}

/** Candidate file names for a built-in modality (or 'seg') of case `id`. */
function builtInNames(id: string, modality: string): string[] {
  const names = [modality, ...(ALIASES[modality] ? [ALIASES[modality]] : [])];
  const out: string[] = [];
  for (const n of names) for (const sep of ['_', '-']) for (const ext of ['.nii.gz', '.nii']) out.push(`${id}${sep}${n}${ext}`);
  return out;
}

function expand(pattern: string, id: string): string {
  return pattern.split('{case}').join(id);
}

export function parsePatterns(value: unknown): Record<string, string> {
  if (value === undefined) return {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'string' || v.length === 0) {
      throw new SettingsError(`dataset.settings.patterns.${k}`, `expected a file name such as '{case}_${k}.nii.gz', got ${JSON.stringify(v)}`);
    }
    if (!/\.nii(\.gz)?$/i.test(v)) {
      throw new SettingsError(`dataset.settings.patterns.${k}`, `expected a .nii or .nii.gz file name, got ${JSON.stringify(v)}`);
    }
    out[k] = v;
  }
  return out;
}

/** Checks a YAML label map ({3: 1}; YAML keys arrive as strings) and returns it as numbers. */
export function parseLabelMap(value: unknown, path = 'dataset.settings.labelMap'): Map<number, number> {
  const map = new Map<number, number>();
  if (value === undefined) return map;
  const isLabel = (n: number) => Number.isInteger(n) && n >= 0 && n <= 255;
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const from = Number(k);
    if (!isLabel(from)) throw new SettingsError(`${path}.${k}`, `keys must be raw label values 0..255, got ${JSON.stringify(k)}`);
    if (typeof v !== 'number' || !isLabel(v)) throw new SettingsError(`${path}.${k}`, `values must be label values 0..255, got ${JSON.stringify(v)}`);
    map.set(from, v);
  }
  return map;
}

/**
 * The warning for cases a dataset found but does not use, one line per case with the reason (at most 50
 * lines, then a count), so that no case leaves the data without a word.
 */
export function skippedReport(where: string, skipped: readonly { id: string; reason: string }[]): string {
  const shown = skipped.slice(0, 50).map((s) => `  ${s.id}: ${s.reason}`);
  const more = skipped.length > shown.length ? [`  … and ${skipped.length - shown.length} more`] : [];
  return [`${where}: ${skipped.length} case(s) found but not used:`, ...shown, ...more].join('\n');
}

/**
 * The identity of a set of data files: a hash of each one's path relative to `root`, size and modification
 * time (what make and rsync compare), so that a changed, added or removed file changes it.
 */
export function fileIdentity(root: string, files: readonly string[]): string {
  const h = createHash('sha256');
  for (const f of [...files].sort()) {
    const st = statSync(f);
    h.update(`${relative(root, f)}\u0000${st.size}\u0000${Math.round(st.mtimeMs)}\n`);
  }
  return h.digest('hex').slice(0, 16);
}

export function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export class BratsFolder implements Dataset {
  readonly name = 'brats';
  readonly task = BRATS_TASK;
  readonly channels: string[];
  readonly skipped: { id: string; reason: string }[] = [];
  private readonly cases = new Map<string, CaseFiles>();

  constructor(
    private readonly root: string,
    private readonly opts: {
      modalities?: string[];
      patterns: Record<string, string>;
      labelMap: Map<number, number>;
      normalize: 'zscore-brain' | 'none';
      only?: string[];
      /** mm within which a case's files must agree on spacing and affine (default DEFAULT_GEOMETRY_TOLERANCE). */
      geometryTolerance?: number;
    },
  ) {
    const folders = readdirSync(root, { withFileTypes: true })
      .filter((e) => (e.isDirectory() || (e.isSymbolicLink() && isDir(join(root, e.name)))) && !e.name.startsWith('.'))
      .map((e) => e.name)
      .sort();
    let ids = folders;
    if (opts.only) {
      const missing = opts.only.filter((c) => !folders.includes(c));
      if (missing.length) {
        throw new SettingsError('dataset.settings.cases', `no case folder ${missing.map((m) => JSON.stringify(m)).join(', ')} in ${root}`);
      }
      ids = opts.only;
    }
    if (ids.length === 0) throw new Error(`brats: no case folders in ${root}; expected one sub-folder per case`);
    this.channels = opts.modalities ?? this.defaultModalities(ids);
    if (this.channels.length === 0) throw new SettingsError('dataset.settings.modalities', 'needs at least one modality');
    for (const m of this.channels) {
      if (SPECIAL.has(m)) throw new SettingsError('dataset.settings.modalities', `'${m}' is reserved for the ${m === 'seg' ? 'label' : 'brain mask'} file and cannot be a modality`);
    }
    for (const id of ids) {
      const found = this.resolveCase(id);
      if (typeof found === 'string') this.skipped.push({ id, reason: found });
      else this.cases.set(id, found);
    }
    if (this.cases.size === 0) {
      const why = this.skipped.slice(0, 3).map((s) => `${s.id}: ${s.reason}`).join('; ');
      throw new Error(
        `brats: none of the ${ids.length} case folders in ${root} has all of the modalities ${this.channels.join(', ')} (${why}); set dataset.settings.patterns for other file names, or modalities for a subset`,
      );
    }
    if (this.skipped.length) console.warn(skippedReport(`brats: ${root}`, this.skipped));
  }

  private defaultModalities(ids: string[]): string[] {
    const fromPatterns = Object.keys(this.opts.patterns).filter((k) => !SPECIAL.has(k));
    if (fromPatterns.length) return fromPatterns;
    for (const id of ids) {
      const dir = join(this.root, id);
      const has = (names: string[], sep: string) => names.every((n) => ['.nii.gz', '.nii'].some((e) => existsSync(join(dir, `${id}${sep}${n}${e}`))));
      if (has(NAMING_2023, '-') || has(NAMING_2023, '_')) return [...NAMING_2023];
      if (has(NAMING_2017, '_') || has(NAMING_2017, '-')) return [...NAMING_2017];
    }
    throw new Error(
      `brats: no case folder in ${this.root} follows the BraTS naming (<case>/<case>_{t1,t1ce,t2,flair}.nii.gz or <case>/<case>-{t1n,t1c,t2w,t2f}.nii.gz); set dataset.settings.patterns, e.g. {flair: 'Flair.nii.gz', seg: 'seg.nii.gz'}`,
    );
  }

  /** The files of one case, or the reason it cannot be used. */
  private resolveCase(id: string): CaseFiles | string {
    const dir = join(this.root, id);
    const find = (key: string): { file?: string; tried: string[] } => {
      const pattern = this.opts.patterns[key];
      const tried = pattern ? [expand(pattern, id)] : builtInNames(id, key);
      const hit = tried.find((n) => existsSync(join(dir, n)));
      return hit ? { file: join(dir, hit), tried } : { tried };
    };
    const modalities: string[] = [];
    for (const m of this.channels) {
      const r = find(m);
      if (!r.file) return `missing ${m}: none of ${r.tried.slice(0, 4).join(', ')}${r.tried.length > 4 ? ', …' : ''}`;
      modalities.push(r.file);
    }
    const seg = find('seg').file;
    let mask: string | undefined;
    if (this.opts.patterns.mask) {
      mask = find('mask').file;
      if (!mask) return `missing brain mask ${expand(this.opts.patterns.mask, id)} (patterns.mask)`;
    }
    return { id, modalities, ...(seg ? { seg } : {}), ...(mask ? { mask } : {}) };
  }

  caseIds(): string[] {
    return [...this.cases.keys()];
  }

  /** The files a case is read from. */
  filesOf(id: string): string[] {
    const c = this.cases.get(id)!;
    return [...c.modalities, ...(c.mask ? [c.mask] : [])];
  }

  labelledCaseIds(): string[] {
    return [...this.cases.values()].filter((c) => c.seg).map((c) => c.id);
  }

  identity(): string {
    return fileIdentity(this.root, [...this.cases.values()].flatMap((c) => [...c.modalities, ...(c.mask ? [c.mask] : []), ...(c.seg ? [c.seg] : [])]));
  }

  async load(id: string): Promise<Volume> {
    return this.loadCase(id, true);
  }

  /** A case's modalities (and, with `withLabel`, its label map), preprocessed. */
  async loadCase(id: string, withLabel: boolean): Promise<Volume> {
    const c = this.cases.get(id);
    if (!c) {
      const skip = this.skipped.find((s) => s.id === id);
      throw new Error(`brats: case ${JSON.stringify(id)} ${skip ? `was skipped: ${skip.reason}` : `is not in ${this.root}`}`);
    }
    const [images, seg, mask] = await Promise.all([
      Promise.all(c.modalities.map(readNifti)),
      c.seg && withLabel ? readNifti(c.seg) : undefined,
      c.mask ? readNifti(c.mask) : undefined,
    ]);
    for (const img of images) {
      if (img.data.length !== img.spatial[0] * img.spatial[1] * img.spatial[2]) {
        throw new Error(`${img.source}: expected a 3-D modality image, got dims ${img.dims.join('×')}`);
      }
    }
    const tolerance = this.opts.geometryTolerance ?? DEFAULT_GEOMETRY_TOLERANCE;
    let label: Uint8Array | undefined;
    if (seg) {
      checkSameGrid(images[0]!, seg, tolerance);
      label = labelsFromNifti(seg, {
        labelMap: this.opts.labelMap,
        allowed: [1, 2, 4],
        hint: 'map it with dataset.settings.labelMap: BraTS 2015 uses 3 for non-enhancing tumour (labelMap: {3: 1}), BraTS 2023 uses 3 for enhancing tumour (labelMap: {3: 4})',
      });
    }
    if (mask) {
      checkSameGrid(images[0]!, mask, tolerance);
      checkFinite(mask);
    }
    const volume = volumeFromNifti(id, images, label, label ? c.seg : undefined, tolerance);
    if (this.opts.normalize === 'zscore-brain') normalizeBrain(volume, mask);
    return volume;
  }
}

/**
 * Z-scores each channel over the brain (mask, else non-background voxels); background becomes 0. The mask
 * is already checked against the case's grid.
 */
function normalizeBrain(volume: Volume, mask?: NiftiImage): void {
  const C = volume.channels;
  if (mask) {
    const inBrain = mask.data;
    // Mark non-brain voxels NaN so the selection below is one test, then z-score over the rest.
    for (let v = 0; v < inBrain.length; v++) if (!inBrain[v]) for (let c = 0; c < C; c++) volume.image[v * C + c] = NaN;
    for (let c = 0; c < C; c++) zscoreChannel(volume.image, C, c, (x) => !Number.isNaN(x));
    return;
  }
  for (let c = 0; c < C; c++) {
    const background = volume.image[c]!; // the corner voxel
    zscoreChannel(volume.image, C, c, (x) => x !== background);
  }
}

/**
 * Cases at `path` (one case folder, or a folder of case folders) with the model's modalities, read and
 * normalised as training cases are. The trained file patterns are used where they match; otherwise the
 * built-in BraTS naming (so a model trained on one year's naming segments another year's cases).
 */
export interface BratsReading {
  /** File name per modality (and 'seg', 'mask'), `{case}` for the folder name; unchecked (see parsePatterns). */
  patterns?: unknown;
  /** Raw label -> BraTS label; unchecked (see parseLabelMap). */
  labelMap?: unknown;
  normalize?: 'zscore-brain' | 'none';
  /** mm within which a case's files must agree on spacing and affine. */
  geometryTolerance?: number;
}

export function bratsPredictionInputs(path: string, settings: BratsReading, channels: string[]): PredictionInput[] {
  const p = resolve(path);
  if (!isDir(p)) throw new Error(`${p}: expected a BraTS case folder or a folder of case folders`);
  const isCase = readdirSync(p).some((f) => /\.nii(\.gz)?$/i.test(f));
  const root = isCase ? dirname(p) : p;
  const only = isCase ? [basename(p)] : undefined;
  const make = (patterns: Record<string, string>): BratsFolder =>
    new BratsFolder(root, {
      modalities: channels,
      patterns,
      labelMap: parseLabelMap(settings.labelMap),
      normalize: settings.normalize ?? 'zscore-brain',
      ...(only ? { only } : {}),
      ...(settings.geometryTolerance !== undefined ? { geometryTolerance: settings.geometryTolerance } : {}),
    });
  let folder: BratsFolder;
  try {
    folder = make(parsePatterns(settings.patterns));
  } catch (e) {
    if (!settings.patterns) throw e;
    folder = make({});
  }
  return folder.caseIds().map((id) => ({ id, files: folder.filesOf(id), load: () => folder.loadCase(id, false) }));
}

