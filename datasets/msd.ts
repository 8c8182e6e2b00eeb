/**
 * msd: a task of the Medical Segmentation Decathlon (Antonelli et al., "The Medical Segmentation
 * Decathlon", Nature Communications 13, 4128, 2022; Simpson et al., arXiv:1902.09063, 2019).
 *
 * Layout: `root/dataset.json` (`labels` {"0": "background", "1": "Anterior", ...}, `modality`
 * {"0": "MRI", ...}, `training` [{image, label}], optionally `test` [paths]), `imagesTr/`, `labelsTr/`,
 * `imagesTs/` (unlabelled). Multi-modal tasks store one 4-D image per case (last dim = modality); the
 * nnU-Net variant with one file per channel (`<case>_0000.nii.gz`, `<case>_0001.nii.gz`, ...) is also read.
 *
 * The task is mutually exclusive labels (softmax over background + labels), named after dataset.json
 * (lower-cased). A case dataset.json lists ("training" or "test") whose image or label file is missing is
 * an error naming the entry (training[3]) and the path, or, with `skipMissing: true`, left out. Images in
 * imagesTr that dataset.json does not list (e.g. `hippocampus_118.nii.gz` in Task04, neither listed nor
 * labelled) are not used. Every case left out is in `skipped` with the reason and named in one console
 * warning when the dataset is opened. Normalisation
 * `zscore`: each channel of each image z-scored over all its voxels (nnU-Net's scheme for MRI).
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import type { Dataset, PredictionInput, SegmentationTask, Volume } from '../core/types.js';
import type { DatasetPlugin } from '../core/plugins/index.js';
import { defineSettings, SettingsError, type SettingsOf } from '../core/config/index.js';
import {
  readNifti,
  labelsFromNifti,
  volumeFromNifti,
  checkSameGrid,
  zscoreChannel,
  channelCount,
  skippedReport,
  fileIdentity,
  NiftiError,
  DEFAULT_GEOMETRY_TOLERANCE,
} from '../core/io/index.js';

const settings = defineSettings({
  root: { type: 'string', description: 'MSD task folder holding dataset.json, imagesTr/, labelsTr/ (relative paths: to the experiment file)', required: true },
  normalize: {
    type: 'enum',
    values: ['zscore', 'none'],
    description: 'zscore: each channel of each image z-scored over all its voxels; none: as stored',
    default: 'zscore',
  },
  skipMissing: {
    type: 'boolean',
    description:
      'false: a case dataset.json lists whose image or label file is missing stops loading, naming the entry (training[3]) and the path; true: such cases are left out and named in a warning',
    default: false,
  },
  geometryTolerance: {
    type: 'number',
    min: 0,
    // 1 µm: see DEFAULT_GEOMETRY_TOLERANCE (core/io/nifti.ts) for why.
    default: DEFAULT_GEOMETRY_TOLERANCE,
    description:
      "mm by which a case's image and label (and nnU-Net channel files) may differ in spacing (pixdim) and in where their affines (sform, else qform) put any voxel; beyond it loading stops naming both files (default 0.001 mm: float32 rounding passes, a real misalignment does not)",
  },
});

type MsdSettings = SettingsOf<typeof settings>;

const NIFTI_NAME = /\.nii(\.gz)?$/i;

/** A case id from a file name: the name without .nii/.nii.gz. */
export function caseIdFromFile(file: string): string {
  return basename(file).replace(NIFTI_NAME, '');
}

function niftiExt(file: string): string {
  return file.toLowerCase().endsWith('.gz') ? '.nii.gz' : '.nii';
}

/**
 * The case id of a file, recognising nnU-Net's per-channel naming: `x_0001.nii.gz` belongs to case `x` when
 * `x_0000.nii.gz` exists beside it; otherwise the id is the plain file name (MSD ids may end in digits).
 */
function channelFileStem(file: string): string {
  const raw = caseIdFromFile(file);
  const m = /^(.*)_\d{4}$/.exec(raw);
  if (m && existsSync(join(dirname(file), `${m[1]}_0000${niftiExt(file)}`))) return m[1]!;
  return raw;
}

function listNifti(folder: string): string[] {
  if (!existsSync(folder)) return [];
  return readdirSync(folder)
    // '._name' files are macOS resource forks shipped in some MSD archives, not images.
    .filter((n) => NIFTI_NAME.test(n) && !n.startsWith('.'))
    .sort()
    .map((n) => join(folder, n));
}

/**
 * The image files to predict on in `folder`: for an MSD task folder (dataset.json, imagesTs/ or imagesTr/)
 * the files of imagesTs/, or of imagesTr/ when there is no imagesTs/; otherwise every .nii/.nii.gz in the
 * folder itself. Sorted absolute paths; hidden files ('._x.nii.gz') are ignored.
 */
export function findImageFiles(folder: string): string[] {
  const dir = resolve(folder);
  let st;
  try {
    st = statSync(dir);
  } catch {
    throw new Error(`${dir}: folder not found`);
  }
  if (!st.isDirectory()) throw new Error(`${dir}: not a folder (give the folder that holds the .nii/.nii.gz images)`);
  const msd = existsSync(join(dir, 'dataset.json')) || existsSync(join(dir, 'imagesTr')) || existsSync(join(dir, 'imagesTs'));
  if (msd) {
    const ts = listNifti(join(dir, 'imagesTs'));
    if (ts.length) return ts;
    const tr = listNifti(join(dir, 'imagesTr'));
    if (tr.length) return tr;
  }
  const files = listNifti(dir);
  if (files.length === 0) {
    throw new Error(`${dir}: no .nii or .nii.gz images${msd ? ' (nor in imagesTs/ or imagesTr/)' : ''}`);
  }
  return files;
}

interface MsdCase {
  id: string;
  /** One 3-D/4-D file, or one file per channel (nnU-Net naming). */
  images: string[];
  label?: string;
}

interface DatasetJson {
  name?: string;
  labels?: Record<string, string>;
  modality?: Record<string, string>;
  training?: { image?: string; label?: string }[];
  test?: (string | { image?: string })[];
}

class MsdTask implements Dataset {
  readonly name = 'msd';
  readonly task: SegmentationTask;
  readonly channels: string[];
  readonly skipped: { id: string; reason: string }[] = [];
  private readonly cases = new Map<string, MsdCase>();
  private readonly labelValues: number[];

  constructor(
    private readonly root: string,
    private readonly opts: { normalize: 'zscore' | 'none'; skipMissing: boolean; geometryTolerance: number },
  ) {
    const jsonPath = join(root, 'dataset.json');
    if (!existsSync(jsonPath)) {
      throw new Error(`msd: ${jsonPath} not found; an MSD task folder holds dataset.json, imagesTr/ and labelsTr/ (set dataset.settings.root to that folder)`);
    }
    let meta: DatasetJson;
    try {
      meta = JSON.parse(readFileSync(jsonPath, 'utf8')) as DatasetJson;
    } catch (err) {
      throw new Error(`msd: ${jsonPath} is not valid JSON (${(err as Error).message})`);
    }

    if (!meta.labels || typeof meta.labels !== 'object') {
      throw new Error(`msd: ${jsonPath} has no "labels" object such as {"0": "background", "1": "tumour"}`);
    }
    const labels: { name: string; value: number }[] = [];
    for (const [k, v] of Object.entries(meta.labels)) {
      const value = Number(k);
      if (!Number.isInteger(value) || value < 0 || value > 255) {
        throw new Error(`msd: ${jsonPath}: label key ${JSON.stringify(k)} is not a label value 0..255 (expected {"0": "background", "1": ...})`);
      }
      if (value === 0) continue;
      labels.push({ name: String(v).toLowerCase(), value });
    }
    labels.sort((a, b) => a.value - b.value);
    if (labels.length === 0) throw new Error(`msd: ${jsonPath}: "labels" lists no foreground label`);
    this.task = { kind: 'labels', labels };
    this.labelValues = labels.map((l) => l.value);

    const modality = meta.modality ?? { 0: 'image' };
    this.channels = Object.entries(modality)
      .sort(([a], [b]) => Number(a) - Number(b))
      .map(([, v]) => String(v));

    const trDir = join(root, 'imagesTr');
    const fromJson = (p: string) => resolve(root, p);
    const listed = new Set<string>();
    // Entries of dataset.json whose files are missing: an error below, or skipped with skipMissing.
    const missing: { entry: string; id: string; problem: string }[] = [];
    const notFound = (file: string) => {
      const ext = niftiExt(file);
      return `image file ${file} not found (nor nnU-Net channel files ${file.replace(NIFTI_NAME, '')}_0000${ext}, …)`;
    };
    for (const [i, entry] of (meta.training ?? []).entries()) {
      const where = `training[${i}]`;
      if (!entry?.image) {
        missing.push({ entry: where, id: where, problem: 'has no "image"' });
        continue;
      }
      const id = caseIdFromFile(entry.image);
      listed.add(id);
      const images = this.imageFiles(fromJson(entry.image));
      if (!images) {
        missing.push({ entry: where, id, problem: notFound(fromJson(entry.image)) });
        continue;
      }
      const label = entry.label ? fromJson(entry.label) : join(root, 'labelsTr', basename(fromJson(entry.image)));
      if (!existsSync(label)) {
        missing.push({ entry: where, id, problem: `label file ${label} not found` });
        continue;
      }
      this.cases.set(id, { id, images, label });
    }
    // Images in imagesTr that dataset.json does not list (with or without a label) are not used.
    const seen = new Set<string>();
    for (const file of listNifti(trDir)) {
      const raw = caseIdFromFile(file);
      const id = listed.has(raw) ? raw : channelFileStem(file);
      if (listed.has(id) || seen.has(id)) continue;
      seen.add(id);
      const label = join(root, 'labelsTr', `${id}${niftiExt(file)}`);
      this.skipped.push({
        id,
        reason: existsSync(label)
          ? `in imagesTr but not listed in dataset.json "training" (a label exists: add it to the list to use it)`
          : `in imagesTr without a label in labelsTr and not listed in dataset.json "training"`,
      });
    }
    // Unlabelled test images.
    const tsDir = join(root, 'imagesTs');
    const tsFiles = new Set(listNifti(tsDir));
    for (const [i, t] of (meta.test ?? []).entries()) {
      const where = `test[${i}]`;
      const p = typeof t === 'string' ? t : t?.image;
      if (!p) {
        missing.push({ entry: where, id: where, problem: 'has no image path' });
        continue;
      }
      const files = this.imageFiles(fromJson(p));
      if (!files) missing.push({ entry: where, id: caseIdFromFile(p), problem: notFound(fromJson(p)) });
      else for (const f of files) tsFiles.add(f);
    }
    const tsSeen = new Set<string>();
    for (const file of [...tsFiles].sort()) {
      const id = channelFileStem(file);
      if (tsSeen.has(id)) continue;
      tsSeen.add(id);
      const images = id === caseIdFromFile(file) ? [file] : this.imageFiles(join(dirname(file), `${id}${niftiExt(file)}`)) ?? [file];
      if (this.cases.has(id)) {
        this.skipped.push({ id: `imagesTs/${id}`, reason: `test image ${file} has the same id as a training case; rename it` });
        continue;
      }
      this.cases.set(id, { id, images });
    }
    if (missing.length && !opts.skipMissing) throw missingFilesError(jsonPath, missing);
    for (const m of missing) this.skipped.push({ id: m.id, reason: `dataset.json ${m.entry} ${m.problem} (skipMissing)` });
    if (this.cases.size === 0) {
      const why = this.skipped.slice(0, 3).map((s) => `${s.id}: ${s.reason}`).join('; ');
      throw new Error(`msd: no usable case in ${root}${why ? ` (${why})` : ''}`);
    }
    if (this.skipped.length) console.warn(skippedReport(`msd: ${root}`, this.skipped));
  }

  /** The file(s) of one image: the file itself, or nnU-Net's per-channel `<id>_0000.nii.gz`, `_0001`, ... */
  private imageFiles(file: string): string[] | undefined {
    if (existsSync(file)) return [file];
    const ext = niftiExt(file);
    const stem = file.replace(NIFTI_NAME, '');
    const parts: string[] = [];
    for (let c = 0; existsSync(`${stem}_${String(c).padStart(4, '0')}${ext}`); c++) parts.push(`${stem}_${String(c).padStart(4, '0')}${ext}`);
    return parts.length ? parts : undefined;
  }

  caseIds(): string[] {
    return [...this.cases.keys()];
  }

  labelledCaseIds(): string[] {
    return [...this.cases.values()].filter((c) => c.label).map((c) => c.id);
  }

  identity(): string {
    return fileIdentity(this.root, [join(this.root, 'dataset.json'), ...[...this.cases.values()].flatMap((c) => [...c.images, ...(c.label ? [c.label] : [])])]);
  }

  async load(id: string): Promise<Volume> {
    const c = this.cases.get(id);
    if (!c) {
      const skip = this.skipped.find((s) => s.id === id);
      throw new Error(`msd: case ${JSON.stringify(id)} ${skip ? `was skipped: ${skip.reason}` : `is not in ${this.root}`}`);
    }
    const tolerance = this.opts.geometryTolerance;
    const [images, labelImage] = await Promise.all([Promise.all(c.images.map(readNifti)), c.label ? readNifti(c.label) : undefined]);
    const channels = images.reduce((n, img) => n + channelCount(img), 0);
    if (channels !== this.channels.length) {
      throw new NiftiError(
        c.images.join(', '),
        `has ${channels} channel(s) (dims ${images.map((i) => i.dims.join('×')).join(', ')}) but dataset.json "modality" lists ${this.channels.length} (${this.channels.join(', ')})`,
      );
    }
    let label: Uint8Array | undefined;
    if (labelImage) {
      checkSameGrid(images[0]!, labelImage, tolerance);
      label = labelsFromNifti(labelImage, {
        allowed: this.labelValues,
        hint: `dataset.json "labels" lists ${this.labelValues.join(', ')}; fix the label file or dataset.json`,
      });
    }
    const volume = volumeFromNifti(id, images, label, c.label, tolerance);
    return normalizeVolume(volume, this.opts.normalize);
  }
}

/**
 * The error for dataset.json entries whose files are missing: its first line names the first entry, the
 * path and the fixes (a trial's status keeps only the first line); the others follow, at most 10.
 */
function missingFilesError(jsonPath: string, missing: readonly { entry: string; id: string; problem: string }[]): Error {
  const name = (m: (typeof missing)[number]) => `${m.entry}${m.id !== m.entry ? ` (${m.id})` : ''} ${m.problem}`;
  const [first, ...rest] = missing;
  const more = rest.length ? ` (and ${rest.length} more entr${rest.length === 1 ? 'y' : 'ies'}, below)` : '';
  const lines = [
    `msd: ${jsonPath}: ${name(first!)}${more}; restore the file, remove the entry from dataset.json, or set dataset.settings.skipMissing: true to leave such cases out (they are then named in a warning)`,
    ...rest.slice(0, 10).map((m) => `  also ${name(m)}`),
    ...(rest.length > 10 ? [`  … and ${rest.length - 10} more`] : []),
  ];
  return new Error(lines.join('\n'));
}

/** The dataset's intensity preprocessing, shared by training cases and prediction inputs. */
function normalizeVolume(volume: Volume, normalize: 'zscore' | 'none'): Volume {
  if (normalize === 'zscore') for (let ch = 0; ch < volume.channels; ch++) zscoreChannel(volume.image, volume.channels, ch);
  return volume;
}

/** Images at `path` (a file, an MSD task folder or a folder of images), read as the training cases are. */
export function msdPredictionInputs(path: string, settings: MsdSettings, channels: string[]): PredictionInput[] {
  const p = resolve(path);
  const files = statSync(p, { throwIfNoEntry: false })?.isFile() ? [p] : findImageFiles(p);
  return files.map((file) => {
    const id = caseIdFromFile(file);
    return {
      id,
      files: [file],
      load: async () => {
        const image = await readNifti(file);
        const n = channelCount(image);
        if (n !== channels.length)
          throw new NiftiError(file, `has ${n} channel(s) (dims ${image.dims.join('×')}) but the model expects ${channels.length} (${channels.join(', ')})`);
        return normalizeVolume(volumeFromNifti(id, [image], undefined, undefined, settings.geometryTolerance), settings.normalize);
      },
    };
  });
}

const plugin: DatasetPlugin<typeof settings> = {
  kind: 'dataset',
  name: 'msd',
  description: 'a Medical Segmentation Decathlon task folder (dataset.json, imagesTr/, labelsTr/, imagesTs/)',
  reference: 'Antonelli et al., The Medical Segmentation Decathlon, Nature Communications 13, 4128 (2022)',
  settings,
  create(s, deps): Dataset {
    const root = resolve(deps.baseDir, s.root);
    let ok = false;
    try {
      ok = statSync(root).isDirectory();
    } catch {
      ok = false;
    }
    if (!ok) {
      throw new SettingsError('dataset.settings.root', `folder ${root} does not exist (${JSON.stringify(s.root)} resolved against ${deps.baseDir})`);
    }
    return new MsdTask(root, { normalize: s.normalize, skipMissing: s.skipMissing, geometryTolerance: s.geometryTolerance });
  },
  predictionInputs: msdPredictionInputs,
};

export default plugin;
