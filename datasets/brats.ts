/**
 * brats: a folder of real BraTS cases (Brain Tumor Segmentation challenge; Menze et al., "The Multimodal
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
import { resolve } from 'node:path';
import type { Dataset } from '../core/types.js';
import type { DatasetPlugin } from '../core/plugins/index.js';
import { defineSettings, SettingsError } from '../core/config/index.js';
import { BratsFolder, bratsPredictionInputs, isDir, parseLabelMap, parsePatterns, DEFAULT_GEOMETRY_TOLERANCE } from '../core/io/index.js';

const settings = defineSettings({
  root: { type: 'string', description: 'folder holding one sub-folder per case (relative paths: to the experiment file)', required: true },
  modalities: {
    type: 'string[]',
    description: 'channel order, e.g. [t1, t1ce, t2, flair]; default: the pattern keys, else the naming found in the first case (2017–2021: t1, t1ce, t2, flair; 2023: t1n, t1c, t2w, t2f)',
  },
  patterns: {
    type: 'object',
    description: "file name per modality inside a case folder, {case} = folder name; keys 'seg' (labels) and 'mask' (brain mask) are special, e.g. {flair: 'Flair_subtrMeanDivStd.nii.gz', seg: 'OTMultiClass.nii.gz'}",
  },
  labelMap: { type: 'object', description: 'raw label -> BraTS label, e.g. {3: 1} for BraTS 2015, {3: 4} for BraTS 2023' },
  normalize: {
    type: 'enum',
    values: ['zscore-brain', 'none'],
    description: 'zscore-brain: z-score each modality over the brain (mask file, else non-background voxels), background 0; none: as stored',
    default: 'zscore-brain',
  },
  cases: { type: 'string[]', description: 'use only these case folders (default: all)' },
  geometryTolerance: {
    type: 'number',
    min: 0,
    // 1 µm: see DEFAULT_GEOMETRY_TOLERANCE (core/io/nifti.ts) for why.
    default: DEFAULT_GEOMETRY_TOLERANCE,
    description:
      "mm by which a case's files (modalities, seg, mask) may differ in spacing (pixdim) and in where their affines (sform, else qform) put any voxel; beyond it loading stops naming both files (default 0.001 mm: float32 rounding passes, a real misalignment does not)",
  },
});

/** BraTS 2017–2021 name <-> BraTS 2023 name. */
const plugin: DatasetPlugin<typeof settings> = {
  kind: 'dataset',
  name: 'brats',
  description: 'a folder of real BraTS cases (2017–2021 and 2023 naming built in, other layouts through file patterns)',
  reference: 'Menze et al., IEEE TMI 2015; Bakas et al., arXiv:1811.02629 (2018); Kazerooni et al., arXiv:2305.17033 (BraTS 2023)',
  settings,
  create(s, deps): Dataset {
    const root = resolve(deps.baseDir, s.root);
    if (!isDir(root)) {
      throw new SettingsError('dataset.settings.root', `folder ${root} does not exist (${JSON.stringify(s.root)} resolved against ${deps.baseDir})`);
    }
    return new BratsFolder(root, {
      ...(s.modalities ? { modalities: s.modalities } : {}),
      patterns: parsePatterns(s.patterns),
      labelMap: parseLabelMap(s.labelMap),
      normalize: s.normalize,
      ...(s.cases ? { only: s.cases } : {}),
      geometryTolerance: s.geometryTolerance,
    });
  },
  predictionInputs: bratsPredictionInputs,
};

export default plugin;
