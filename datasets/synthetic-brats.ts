/**
 * synthetic-brats: the project's own generator of BraTS-like multi-modal brain tumour volumes, the
 * embedded default data set (no download, any size, exactly reproducible). The label scheme and the
 * WT/TC/ET evaluation regions follow the BraTS challenge (Menze et al., "The Multimodal Brain Tumor Image
 * Segmentation Benchmark (BRATS)", IEEE TMI 2015; Bakas et al., arXiv:1811.02629, 2018); the
 * preprocessing it mimics (co-registered 1 mm grid, z-scored inside the head, background 0) is the
 * common BraTS pipeline (e.g. Isensee et al., nnU-Net, Nature Methods 2021).
 *
 * ## What it models (for the README)
 * - Four co-registered modalities, channels `t1`, `t1ce`, `t2`, `flair`, on a 1 mm grid.
 * - A head: an ellipsoid deformed by a smooth random field (low-frequency sums of separable sinusoids
 *   perturbing the ellipsoidal radius), with nested compartments: scalp, skull, subarachnoid CSF, cortical
 *   grey matter (outer boundary and grey/white boundary each folded by their own higher-frequency field),
 *   white matter, deep grey nuclei, two lateral ventricles and the interhemispheric fissure.
 * - One tumour per case, placed at a random position inside the brain with a random orientation and axis
 *   ratios, its size drawn from a skewed distribution (diameter from ~10% up to ~60% of the volume edge
 *   with tumourScale 1, so it is sometimes larger than a training patch). Nested, irregular sub-regions
 *   with the BraTS labels: necrosis 1 inside an enhancing rim 4 (together the tumour core) inside edema 2
 *   (the whole tumour). Edema always surrounds the core by a margin; the rim is at least about a voxel
 *   thick. Labels are zero outside the brain (the tumour is clipped by the brain surface).
 * - Optional context lesions (`mimics`, `edemaFingers`; none by default, which gives the data of before
 *   they existed, byte for byte), so that some labels depend on evidence beyond a patch, as in real scans:
 *   - lesion mimics: elongated, irregular T2/FLAIR-bright bands (small-vessel white-matter
 *     hyperintensities, post-treatment change) with edema's intensities and texture, placed away from the
 *     tumour, labelled background;
 *   - edema fingers: tubes of edema running from the tumour out along the white matter, `fingerReach`
 *     beyond it, tapering;
 *   - the rule that decides (`applyLesionRule`): an edema-like voxel is edema (2) when its 6-connected
 *     lesion holds a tumour core voxel, background otherwise. Locally a mimic and a finger look the same;
 *     only whether the lesion connects to a core tells them apart. `syntheticContext` reports how much
 *     of each case's labelled and mimic volume lies farther than half a patch edge from that evidence.
 * - Roughly realistic contrasts: CSF dark in T1/T1ce/FLAIR and bright in T2; WM brighter than GM in T1,
 *   darker in T2/FLAIR; the enhancing rim bright in T1ce; edema bright in T2 and FLAIR; necrosis dark in
 *   T1/T1ce, bright in T2. Per-case contrast jitter (scanner variation), a smooth multiplicative bias
 *   field per modality, Gaussian noise, intensity texture inside the tumour.
 * - BraTS-like preprocessing: each modality z-scored over the head, background exactly 0.
 *
 * ## What it does not model
 * MR physics (no T1/T2 relaxation, no Rician noise, no partial-volume blurring: boundaries are hard), real
 * anatomy (no cerebellum, brain stem, sulci as thin CSF-filled folds, vessels or eyes), skull stripping
 * (the scalp and skull are kept, as in unprocessed scans, but are background-labelled), mass effect (the
 * tumour does not push the anatomy), multifocal tumours (the mimics have no core), non-enhancing tumour of the BraTS 2015 scheme,
 * motion and registration errors. It is for exercising memory strategies on realistic shapes, sizes and
 * label statistics, not for claims about clinical segmentation accuracy.
 *
 * ## Axes
 * Volume.shape is [D, H, W] = [z, y, x] and `size` is given in that order: D is inferior→superior,
 * H is posterior→anterior, W is left→right (the geometry is a 1 mm RAS grid centred on the volume).
 * A BraTS-sized volume (NIfTI 240×240×155) is `size: [155, 240, 240]`.
 *
 * ## Determinism
 * A case's content depends only on (seed, case index, size): case k is the same whatever `cases` is,
 * and the same size gives the same bytes on every run. Shapes are defined in size-independent units, so
 * the same case at another size is the same head and tumour resampled (plus fresh noise).
 */
import type { ContextFigures, Dataset, NiftiGeometry, Shape3, Volume } from '../core/types.js';
import type { DatasetPlugin } from '../core/plugins/index.js';
import { defineSettings } from '../core/config/index.js';
import { SeededRng, BRATS_CHANNELS, BRATS_TASK, GeneratedDataset, drawField, sampleField, type FieldParams, type SampledField } from '../core/data/index.js';
import { bratsPredictionInputs } from '../core/io/index.js';

export { BRATS_CHANNELS, BRATS_TASK };


const settings = defineSettings({
  cases: { type: 'integer', description: 'number of cases generated', default: 8, min: 1 },
  size: {
    type: 'shape3',
    description: 'volume size in voxels (1 mm), one edge or [D, H, W] = [inferior→superior, posterior→anterior, left→right]; BraTS is [155, 240, 240]',
    default: 48,
  },
  seed: { type: 'integer', description: 'data seed (independent of the trial seed): same seed, same cases', default: 0 },
  noise: { type: 'number', description: 'Gaussian noise standard deviation, relative to the white-matter T1 intensity', default: 0.05, min: 0 },
  biasField: { type: 'number', description: 'strength of the smooth multiplicative bias field (0: none; 0.2: ±20%)', default: 0.2, min: 0, max: 0.9 },
  tumourScale: { type: 'number', description: 'multiplies the tumour size (1: diameters ~10%..60% of the volume edge)', default: 1, min: 0.05, max: 3 },
  mimics: {
    type: 'integer',
    description:
      'lesion mimics per case: elongated T2/FLAIR-bright bands (small-vessel disease, post-treatment change) that look locally like edema but are background, because no tumour core is connected to them (0: none, today\'s data)',
    default: 0,
    min: 0,
    max: 12,
  },
  edemaFingers: {
    type: 'integer',
    description: 'finger-like extensions of the edema along the white matter, reaching fingerReach beyond the tumour (0: none, today\'s data)',
    default: 0,
    min: 0,
    max: 8,
  },
  fingerReach: {
    type: 'number',
    description: "how far the edema fingers reach beyond the tumour, as a fraction of the brain's semi-axes (0.8: most of the way across a hemisphere)",
    default: 0.8,
    min: 0.05,
    max: 1.5,
  },
});

// Tissue classes (internal); 0 is background.
const SCALP = 1,
  SKULL = 2,
  CSF = 3,
  GM = 4,
  WM = 5,
  EDEMA = 6,
  NECROSIS = 7,
  ENHANCING = 8;
const TISSUES = 9;

/**
 * Base intensities per tissue for [t1, t1ce, t2, flair], arbitrary units (WM T1 = 0.75). Ratios follow the
 * usual appearance of 1.5-3 T clinical glioma scans.
 */
const BASE_INTENSITY: number[][] = [
  [0, 0, 0, 0], // background
  [0.95, 0.9, 0.55, 0.7], // scalp (fat: bright in T1)
  [0.12, 0.14, 0.1, 0.1], // skull (cortical bone: dark everywhere)
  [0.2, 0.22, 1.0, 0.12], // CSF (dark T1, bright T2, suppressed in FLAIR)
  [0.55, 0.56, 0.62, 0.58], // grey matter
  [0.75, 0.74, 0.45, 0.46], // white matter
  [0.45, 0.46, 0.88, 0.95], // edema (bright T2 and FLAIR)
  [0.25, 0.3, 0.95, 0.45], // necrosis (dark T1/T1ce, fluid-bright T2)
  [0.6, 1.25, 0.7, 0.72], // enhancing tumour (bright T1ce)
];

/** Fills `row` with the field along x for fixed (y, z), times `scale`. */
function fieldRow(f: SampledField, y: number, z: number, scale: number, row: Float32Array): void {
  const [Xs, Y, Z] = f.axes; // sampled at [x, y, z] coordinates
  row.fill(0);
  for (let k = 0; k < f.weight.length; k++) {
    const a = scale * f.weight[k]! * Y[k]![y]! * Z[k]![z]!;
    const X = Xs[k]!;
    for (let x = 0; x < row.length; x++) row[x] += a * X[x]!;
  }
}

/** Standard-normal quantiles at 2^16 evenly spaced probabilities: fast, deterministic Gaussian noise. */
const NORMAL_TABLE: Float32Array = (() => {
  const n = 1 << 16;
  const t = new Float32Array(n);
  for (let i = 0; i < n; i++) t[i] = inverseNormal((i + 0.5) / n);
  return t;
})();

/** Acklam's rational approximation of the standard normal quantile (relative error < 1.2e-9). */
function inverseNormal(p: number): number {
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  }
  if (p > 1 - lo) return -inverseNormal(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return ((((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q) /
    (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1);
}

/** Everything random about one case, drawn before the size is looked at (so it is size-independent). */
interface CaseParams {
  head: [number, number, number]; // head semi-axes, fraction of each half-extent
  headField: FieldParams;
  headAmp: number;
  cortexField: FieldParams;
  wmField: FieldParams;
  wmRadius: number;
  ventricleScale: number;
  contrast: number[][]; // per tissue, per modality multiplier
  bias: FieldParams[];
  tumour: {
    centre: [number, number, number]; // fraction of the brain semi-axes
    rWt: number; // normalised units (1 = half the largest edge)
    coreFrac: number;
    necFrac: number; // 0: no necrosis
    rotation: number[]; // 3x3 row-major
    axes: [number, number, number];
    wtField: FieldParams;
    coreField: FieldParams;
    necField: FieldParams;
    texture: FieldParams;
  };
  noiseSeed: number;
  lesions: LesionParams;
}

/**
 * A tube along a polyline: lesion mimics and edema fingers. Points are fractions of the brain's semi-axes
 * (as the tumour centre is), radii fractions of a reference radius fixed when the case is generated.
 */
interface Polyline {
  points: [number, number, number][];
  radius: number[];
}

/** The context-dependent lesions of one case (none unless `mimics` / `edemaFingers` ask for them). */
interface LesionParams {
  mimics: Polyline[];
  fingers: Polyline[];
  /** Irregular radius (|field| ≤ 1) and intensity texture of the fingers and mimics. */
  shape: FieldParams | null;
  texture: FieldParams | null;
}

export interface LesionOptions {
  mimics: number;
  edemaFingers: number;
  fingerReach: number;
}

/** Shortest distance from p to the segment a→b, and where along it (t in [0, 1]). */
function segmentDistance(p: readonly number[], a: readonly number[], b: readonly number[]): { d: number; t: number } {
  const ab = [b[0]! - a[0]!, b[1]! - a[1]!, b[2]! - a[2]!];
  const ap = [p[0]! - a[0]!, p[1]! - a[1]!, p[2]! - a[2]!];
  const len2 = ab[0]! * ab[0]! + ab[1]! * ab[1]! + ab[2]! * ab[2]!;
  const t = len2 > 0 ? Math.min(1, Math.max(0, (ap[0]! * ab[0]! + ap[1]! * ab[1]! + ap[2]! * ab[2]!) / len2)) : 0;
  return { d: Math.hypot(ap[0]! - t * ab[0]!, ap[1]! - t * ab[1]!, ap[2]! - t * ab[2]!), t };
}

/** Shortest distance between two polylines, sampled along the first (fraction units; for placement only). */
function polylineGap(a: Polyline, b: Polyline): number {
  let best = Infinity;
  for (let i = 0; i + 1 < a.points.length; i++) {
    for (let k = 0; k <= 8; k++) {
      const t = k / 8;
      const p = a.points[i]!.map((v, j) => v + t * (a.points[i + 1]![j]! - v));
      for (let m = 0; m + 1 < b.points.length; m++) best = Math.min(best, segmentDistance(p, b.points[m]!, b.points[m + 1]!).d);
    }
  }
  return best;
}

/** A wandering polyline of `segments` steps from `start`, total length `length`, turning gently. */
function wander(rng: SeededRng, start: [number, number, number], length: number, segments: number): [number, number, number][] {
  let dir = [rng.normal(), rng.normal(), rng.normal()];
  const points: [number, number, number][] = [start];
  for (let k = 0; k < segments; k++) {
    if (k > 0) dir = dir.map((v) => v + 0.6 * rng.normal());
    const n = Math.hypot(dir[0]!, dir[1]!, dir[2]!) || 1;
    dir = dir.map((v) => v / n);
    const last = points[points.length - 1]!;
    points.push([0, 1, 2].map((j) => last[j]! + (dir[j]! * length) / segments) as [number, number, number]);
  }
  return points;
}

/**
 * Edema fingers start at the tumour centre and run out past the tumour; mimics are placed away from the
 * tumour and its fingers (a mimic that still touches them is edema by the labelling rule, see
 * `applyLesionRule`). Drawn from their own streams, so with none asked for the case is unchanged.
 */
function drawLesions(rng: SeededRng, tumour: CaseParams['tumour'], opts: LesionOptions): LesionParams {
  if (opts.mimics === 0 && opts.edemaFingers === 0) return { mimics: [], fingers: [], shape: null, texture: null };
  // Fraction units ≈ normalised units / 0.6 (the brain's semi-axes are about 0.57..0.71 of the half edge).
  const toFraction = 1 / 0.6;
  // The tumour's outer edge from its centre, fraction units (its deformation field included).
  const tumourExtent = tumour.rWt * Math.max(...tumour.axes) * 1.35 * toFraction;
  const f = rng.fork('fingers');
  const fingers: Polyline[] = [];
  const c = tumour.centre;
  for (let k = 0; k < opts.edemaFingers; k++) {
    // Out from the tumour centre in a random direction, kept inside the brain (fraction radius ≤ 0.8),
    // bending gently on the way: edema spreading along the white matter.
    let dx = f.normal(),
      dy = f.normal(),
      dz = f.normal();
    const dn = Math.hypot(dx, dy, dz) || 1;
    const length = tumourExtent + opts.fingerReach * (0.75 + 0.25 * f.next());
    let end = [c[0] + (dx / dn) * length, c[1] + (dy / dn) * length, c[2] + (dz / dn) * length];
    const en = Math.hypot(end[0]!, end[1]!, end[2]!);
    if (en > 0.8) end = end.map((v) => (v * 0.8) / en);
    const points: [number, number, number][] = [[c[0], c[1], c[2]]];
    for (const t of [1 / 3, 2 / 3]) points.push([0, 1, 2].map((j) => c[j]! + t * (end[j]! - c[j]!) + 0.06 * f.normal()) as [number, number, number]);
    points.push(end as [number, number, number]);
    // Radii relative to the core radius, tapering to the tip.
    fingers.push({ points, radius: [0.6, 0.5, 0.42, 0.34].map((r) => r * (0.85 + 0.3 * f.next())) });
  }
  const m = rng.fork('mimics');
  const mimics: Polyline[] = [];
  for (let k = 0; k < opts.mimics; k++) {
    for (let attempt = 0; attempt < 30; attempt++) {
      let dx = m.normal(),
        dy = m.normal(),
        dz = m.normal();
      const dn = Math.hypot(dx, dy, dz) || 1;
      const radial = 0.7 * Math.sqrt(m.next());
      const start: [number, number, number] = [(dx / dn) * radial, (dy / dn) * radial, (dz / dn) * radial];
      const length = 0.8 + 0.6 * m.next();
      // Radii in normalised units (1 = half the largest edge): 1.2..2.2 voxels at 48³, 5..9 at 192³.
      const base = 0.05 + 0.04 * m.next();
      const candidate: Polyline = { points: wander(m, start, length, 3), radius: [1, 0.9, 0.8, 0.7].map((r) => r * base) };
      const centre: Polyline = { points: [[...tumour.centre], [...tumour.centre]], radius: [0, 0] };
      const clear = polylineGap(candidate, centre) > tumourExtent + 0.15 && fingers.every((g) => polylineGap(candidate, g) > 0.25);
      if (clear) {
        mimics.push(candidate);
        break;
      }
    }
  }
  return { mimics, fingers, shape: drawField(rng.fork('lesion-shape'), 4, 1.5, 4), texture: drawField(rng.fork('lesion-texture'), 3, 1.0, 2.5) };
}

function drawCase(seed: number, index: number, tumourScale: number, lesionOpts: LesionOptions = NO_LESIONS): CaseParams {
  const rng = new SeededRng(seed).fork(`synthetic-brats/case/${index}`);
  const g = rng.fork('anatomy');
  // Left-right narrower than anterior-posterior, as a head is (about 150 × 190 mm on a BraTS grid).
  const head: [number, number, number] = [0.68 * (1 + 0.04 * g.normal()), 0.84 * (1 + 0.03 * g.normal()), 0.84 * (1 + 0.03 * g.normal())];
  const headField = drawField(g, 3, 0.15, 0.5);
  const headAmp = 0.03 + 0.02 * g.next();
  const cortexField = drawField(g, 4, 2, 4);
  const wmField = drawField(g, 6, 2.5, 6);
  const wmRadius = 0.68 + 0.04 * g.next();
  const ventricleScale = 0.7 + 0.7 * g.next();
  const cr = rng.fork('contrast');
  const contrast: number[][] = [];
  for (let t = 0; t < TISSUES; t++) {
    contrast.push([0, 1, 2, 3].map(() => Math.min(1.2, Math.max(0.8, 1 + 0.05 * cr.normal()))));
  }
  const br = rng.fork('bias');
  const bias = [0, 1, 2, 3].map(() => drawField(br, 3, 0.1, 0.45));

  const t = rng.fork('tumour');
  // Direction uniform on the sphere, radius fraction biased towards the middle of the brain.
  let dx = t.normal(),
    dy = t.normal(),
    dz = t.normal();
  const dn = Math.hypot(dx, dy, dz) || 1;
  dx /= dn;
  dy /= dn;
  dz /= dn;
  const radial = 0.6 * Math.sqrt(t.next());
  // Skewed size: mostly small-to-medium, sometimes very large (diameter up to ~60% of the edge).
  const u = t.next();
  const rWt = tumourScale * (0.1 + 0.4 * u ** 1.5);
  const coreFrac = 0.4 + 0.35 * t.next();
  const necFrac = t.next() < 0.1 ? 0 : 0.45 + 0.4 * t.next();
  // Random rotation from a random unit quaternion.
  let qa = t.normal(),
    qb = t.normal(),
    qc = t.normal(),
    qd = t.normal();
  const qn = Math.hypot(qa, qb, qc, qd) || 1;
  qa /= qn;
  qb /= qn;
  qc /= qn;
  qd /= qn;
  const rotation = [
    qa * qa + qb * qb - qc * qc - qd * qd, 2 * (qb * qc - qa * qd), 2 * (qb * qd + qa * qc),
    2 * (qb * qc + qa * qd), qa * qa - qb * qb + qc * qc - qd * qd, 2 * (qc * qd - qa * qb),
    2 * (qb * qd - qa * qc), 2 * (qc * qd + qa * qb), qa * qa - qb * qb - qc * qc + qd * qd,
  ];
  const axes: [number, number, number] = [0.75 + 0.5 * t.next(), 0.75 + 0.5 * t.next(), 0.75 + 0.5 * t.next()];
  const tumour = {
    centre: [dx * radial, dy * radial, dz * radial] as [number, number, number],
    rWt,
    coreFrac,
    necFrac,
    rotation,
    axes,
    wtField: drawField(t, 5, 0.4, 1.2),
    coreField: drawField(t, 4, 0.4, 1.0),
    necField: drawField(t, 3, 0.5, 1.2),
    texture: drawField(t, 3, 1.0, 2.5),
  };
  const noiseSeed = (rng.fork('noise').next() * 4294967296) >>> 0 || 1;
  const lesions = drawLesions(rng.fork('lesions'), tumour, lesionOpts);
  return { head, headField, headAmp, cortexField, wmField, wmRadius, ventricleScale, contrast, bias, tumour, noiseSeed, lesions };
}

const NO_LESIONS: LesionOptions = { mimics: 0, edemaFingers: 0, fingerReach: 0.8 };

/** A 1 mm RAS grid centred on the volume (qform and sform both set), so predictions can be written as NIfTI. */
export function syntheticGeometry([D, H, W]: Shape3): NiftiGeometry {
  const ox = -(W - 1) / 2;
  const oy = -(H - 1) / 2;
  const oz = -(D - 1) / 2;
  return {
    dims: [W, H, D],
    pixDims: [1, 1, 1],
    qformCode: 1,
    sformCode: 1,
    quaternB: 0,
    quaternC: 0,
    quaternD: 0,
    qoffsetX: ox,
    qoffsetY: oy,
    qoffsetZ: oz,
    qfac: 1,
    srow: [
      [1, 0, 0, ox],
      [0, 1, 0, oy],
      [0, 0, 1, oz],
    ],
    xyztUnits: 2, // NIFTI_UNITS_MM
    source: 'synthetic-brats',
  };
}

export interface SyntheticOptions {
  seed: number;
  size: Shape3;
  noise: number;
  biasField: number;
  tumourScale: number;
  /** Lesion mimics per case (default 0). */
  mimics?: number;
  /** Edema fingers per case (default 0). */
  edemaFingers?: number;
  /** Their reach beyond the tumour, fraction of the brain's semi-axes (default 0.8). */
  fingerReach?: number;
}

export function syntheticCaseId(index: number): string {
  return `synthetic-${String(index).padStart(3, '0')}`;
}

/**
 * Generates case `index`: one pass over the voxels (per-axis terms precomputed, fields combined per row),
 * then a z-scoring pass. About 10 ms for 48³, 0.5 s for 192³, under 1 s for 240×240×155 on one core.
 */
export function generateSyntheticCase(index: number, opts: SyntheticOptions): Volume {
  return generate(index, opts).volume;
}

/** A case plus its lesion map: 1 where a voxel looks like edema (tumour edema, fingers, mimics), 2 in the core. */
function generate(index: number, opts: SyntheticOptions): { volume: Volume; lesion: Uint8Array } {
  const [D, H, W] = opts.size;
  const lesionOpts: LesionOptions = {
    mimics: opts.mimics ?? 0,
    edemaFingers: opts.edemaFingers ?? 0,
    fingerReach: opts.fingerReach ?? NO_LESIONS.fingerReach,
  };
  const P = drawCase(opts.seed, index, opts.tumourScale, lesionOpts);
  const C = 4;
  const N = D * H * W;
  const image = new Float32Array(N * C);
  const label = new Uint8Array(N);
  const inHead = new Uint8Array(N);

  // Normalised physical coordinates: isotropic (1 unit = half the largest edge), so shapes keep their
  // proportions in mm on anisotropic grids.
  const s = Math.max(D, H, W) / 2;
  const voxel = 1 / s;
  const coords = (n: number) => Float64Array.from({ length: n }, (_, i) => (i - (n - 1) / 2) / s);
  const cx = coords(W);
  const cy = coords(H);
  const cz = coords(D);
  // Head semi-axes in normalised units.
  const ax = P.head[0] * ((W / 2) / s);
  const ay = P.head[1] * ((H / 2) / s);
  const az = P.head[2] * ((D / 2) / s);
  const X2 = cx.map((v) => (v / ax) ** 2);
  const Y2 = cy.map((v) => (v / ay) ** 2);
  const Z2 = cz.map((v) => (v / az) ** 2);
  // Shell radii on the head's ellipsoidal scale (1 = scalp surface).
  const R_SKULL = 0.94;
  const R_CSF = 0.885;
  const R_BRAIN = 0.845;
  const R_WM = P.wmRadius;

  const headF = sampleField(P.headField, [cx, cy, cz]);
  const cortexF = sampleField(P.cortexField, [cx, cy, cz]);
  const wmF = sampleField(P.wmField, [cx, cy, cz]);
  const biasF = P.bias.map((b) => sampleField(b, [cx, cy, cz]));

  // Lateral ventricles: two ellipsoids either side of the midline, above the centre.
  const vs = P.ventricleScale;
  const vent = [-1, 1].map((side) => ({
    c: [side * 0.1 * ax, -0.05 * ay, 0.12 * az],
    a: [0.06 * ax * vs, 0.32 * ay * Math.sqrt(vs), 0.14 * az * vs],
  }));
  // Deep grey nuclei (thalamus / basal ganglia), lateral to and below the ventricles.
  const deep = [-1, 1].map((side) => ({ c: [side * 0.24 * ax, 0.02 * ay, -0.05 * az], a: [0.1 * ax, 0.17 * ay, 0.13 * az] }));
  const fissureHalfWidth = Math.max(0.6 * voxel, 0.008);

  // Tumour, in normalised units, its centre a fraction of the brain semi-axes.
  const T = P.tumour;
  const bx = ax * R_BRAIN,
    by = ay * R_BRAIN,
    bz = az * R_BRAIN;
  const tc = [T.centre[0] * bx, T.centre[1] * by, T.centre[2] * bz];
  // Floors in voxels keep every sub-region resolvable on small grids (e.g. 48³).
  const rWt = Math.max(T.rWt, 4 * voxel);
  const rCore = Math.max(rWt * T.coreFrac, 2.5 * voxel);
  const rNec = rCore * T.necFrac;
  // A one-voxel step moves the tumour distance by up to voxel / (smallest axis ratio): margins in voxels
  // are scaled by it so that nesting holds between neighbouring voxels, not only in the continuum.
  const step = voxel / Math.min(...T.axes);
  const margin = Math.max(2 * step, 0.15 * rCore); // edema beyond the core, always
  const rim = Math.max(1.5 * step, 0.12 * rCore); // enhancing rim between necrosis and edema
  const invAxes = T.axes.map((a) => 1 / a);
  const reach = Math.max(rWt * 1.35, rCore * 1.2 + margin) / Math.min(...T.axes) + voxel;
  const box = (c: number, coordsArr: Float64Array) => {
    let lo = coordsArr.length,
      hi = -1;
    for (let i = 0; i < coordsArr.length; i++) {
      if (Math.abs(coordsArr[i]! - c) <= reach) {
        lo = Math.min(lo, i);
        hi = Math.max(hi, i);
      }
    }
    return [lo, hi];
  };
  const [x0, x1] = box(tc[0]!, cx);
  const [y0, y1] = box(tc[1]!, cy);
  const [z0, z1] = box(tc[2]!, cz);
  // Tumour fields vary on the tumour's own scale.
  const local = (arr: Float64Array, c: number) => arr.map((v) => (v - c) / Math.max(rWt, 4 * voxel));
  const lx = local(cx, tc[0]!),
    ly = local(cy, tc[1]!),
    lz = local(cz, tc[2]!);
  const wtF = sampleField(T.wtField, [lx, ly, lz]);
  const coreF = sampleField(T.coreField, [lx, ly, lz]);
  const necF = sampleField(T.necField, [lx, ly, lz]);
  const texF = sampleField(T.texture, [lx, ly, lz]);
  const R = T.rotation;

  // Edema fingers and lesion mimics: tubes in normalised coordinates, each with its voxel box.
  const lesion = new Uint8Array(N);
  // At least 1.5 voxels, so that a tube (radius wobbling by ±20%) stays 6-connected on the grid.
  const minRadius = 1.5 * voxel;
  const tubes = [
    ...P.lesions.fingers.map((f) => ({ f, finger: true })),
    ...P.lesions.mimics.map((f) => ({ f, finger: false })),
  ].map(({ f, finger }) => {
    const pts = f.points.map((q) => [q[0] * bx, q[1] * by, q[2] * bz]);
    // Finger radii are fractions of the core radius (so they keep the tumour's proportions); mimics' absolute.
    const radius = f.radius.map((r) => Math.max(finger ? r * rCore : r, minRadius));
    const pad = Math.max(...radius) * 1.35 + voxel;
    const range = (j: number, arr: Float64Array): [number, number] => {
      const lo = Math.min(...pts.map((q) => q[j]!)) - pad;
      const hi = Math.max(...pts.map((q) => q[j]!)) + pad;
      let a = arr.length,
        b = -1;
      for (let i = 0; i < arr.length; i++) {
        if (arr[i]! >= lo && arr[i]! <= hi) {
          a = Math.min(a, i);
          b = Math.max(b, i);
        }
      }
      return [a, b];
    };
    return { pts, radius, finger, x: range(0, cx), y: range(1, cy), z: range(2, cz) };
  });
  const lesionsOn = tubes.length > 0;
  const lesionShapeF = P.lesions.shape ? sampleField(P.lesions.shape, [cx, cy, cz]) : null;
  const lesionTexF = P.lesions.texture ? sampleField(P.lesions.texture, [cx, cy, cz]) : null;
  const rowShape = new Float32Array(W);
  const rowLesionTex = new Float32Array(W);
  /** Inside tube t at (px, py, pz), its radius modulated by the shape field. */
  const insideTube = (t: (typeof tubes)[number], p: number[], wobble: number): boolean => {
    for (let i = 0; i + 1 < t.pts.length; i++) {
      const { d, t: u } = segmentDistance(p, t.pts[i]!, t.pts[i + 1]!);
      const r = t.radius[i]! + u * (t.radius[i + 1]! - t.radius[i]!);
      if (d < r * (1 + wobble)) return true;
    }
    return false;
  };

  const intensity = BASE_INTENSITY.map((row, t) => row.map((v, m) => v * P.contrast[t]![m]!));
  const noiseSd = opts.noise * BASE_INTENSITY[WM]![0]!;
  const biasStrength = opts.biasField;

  const rowHead = new Float32Array(W);
  const rowCortex = new Float32Array(W);
  const rowWm = new Float32Array(W);
  const rowBias = [0, 1, 2, 3].map(() => new Float32Array(W));
  const rowWt = new Float32Array(W);
  const rowCore = new Float32Array(W);
  const rowNec = new Float32Array(W);
  const rowTex = new Float32Array(W);
  let rngState = P.noiseSeed;

  for (let z = 0; z < D; z++) {
    const pz = cz[z]!;
    for (let y = 0; y < H; y++) {
      const py = cy[y]!;
      const yz2 = Y2[y]! + Z2[z]!;
      // Rows entirely outside the head (plus the largest deformation) hold background only.
      if (yz2 > (1 + P.headAmp + 0.02) ** 2) continue;
      fieldRow(headF, y, z, P.headAmp, rowHead);
      fieldRow(cortexF, y, z, 0.018, rowCortex);
      fieldRow(wmF, y, z, 0.1, rowWm);
      for (let m = 0; m < C; m++) fieldRow(biasF[m]!, y, z, biasStrength, rowBias[m]!);
      const tumourRow = y >= y0! && y <= y1! && z >= z0! && z <= z1!;
      if (tumourRow) {
        fieldRow(wtF, y, z, 0.35, rowWt);
        fieldRow(coreF, y, z, 0.2, rowCore);
        fieldRow(necF, y, z, 0.25, rowNec);
        fieldRow(texF, y, z, 0.12, rowTex);
      }
      const activeTubes = lesionsOn ? tubes.filter((t) => y >= t.y[0] && y <= t.y[1] && z >= t.z[0] && z <= t.z[1]) : [];
      if (activeTubes.length) {
        fieldRow(lesionShapeF!, y, z, 1, rowShape);
        fieldRow(lesionTexF!, y, z, 0.12, rowLesionTex);
      }
      const rowBase = (z * H + y) * W;
      for (let x = 0; x < W; x++) {
        const rho = Math.sqrt(X2[x]! + yz2) + rowHead[x]!;
        if (rho >= 1) continue;
        const v = rowBase + x;
        inHead[v] = 1;
        const px = cx[x]!;
        let tissue: number;
        let brain = false;
        if (rho >= R_SKULL) tissue = SCALP;
        else if (rho >= R_CSF) tissue = SKULL;
        else if (rho >= R_BRAIN + rowCortex[x]!) tissue = CSF;
        else {
          brain = true;
          tissue = rho < R_WM + rowWm[x]! ? WM : GM;
          // Interhemispheric fissure: a thin CSF sheet in the upper cortex.
          if (Math.abs(px) < fissureHalfWidth && pz > -0.1 * az && rho > R_WM * 0.8) tissue = CSF;
          if (tissue === WM) {
            for (const n of deep) {
              const q = ((px - n.c[0]!) / n.a[0]!) ** 2 + ((py - n.c[1]!) / n.a[1]!) ** 2 + ((pz - n.c[2]!) / n.a[2]!) ** 2;
              if (q < 1) tissue = GM;
            }
          }
          for (const n of vent) {
            const q = ((px - n.c[0]!) / n.a[0]!) ** 2 + ((py - n.c[1]!) / n.a[1]!) ** 2 + ((pz - n.c[2]!) / n.a[2]!) ** 2;
            if (q < 1 + 0.3 * rowWm[x]!) tissue = CSF;
          }
        }
        let blendTissue = -1;
        let tex = 1;
        if (brain && tumourRow && x >= x0! && x <= x1!) {
          const ux = px - tc[0]!,
            uy = py - tc[1]!,
            uz = pz - tc[2]!;
          const lx2 = (R[0]! * ux + R[1]! * uy + R[2]! * uz) * invAxes[0]!;
          const ly2 = (R[3]! * ux + R[4]! * uy + R[5]! * uz) * invAxes[1]!;
          const lz2 = (R[6]! * ux + R[7]! * uy + R[8]! * uz) * invAxes[2]!;
          const d = Math.sqrt(lx2 * lx2 + ly2 * ly2 + lz2 * lz2);
          const rc = rCore * (1 + rowCore[x]!);
          // Nesting by construction: necrosis ⊂ core minus a rim, core + margin ⊂ edema.
          const rw = Math.max(rWt * (1 + rowWt[x]!), rc + margin);
          if (d < rw) {
            const rn = rNec > 0 ? Math.min(rNec * (1 + rowNec[x]!), rc - rim) : 0;
            tex = 1 + rowTex[x]!;
            if (d < rn) {
              label[v] = 1;
              tissue = NECROSIS;
            } else if (d < rc) {
              label[v] = 4;
              tissue = ENHANCING;
            } else {
              label[v] = 2;
              // Edema infiltrates the tissue it is in: the underlying contrast partly shows through.
              blendTissue = tissue;
              tissue = EDEMA;
            }
          }
        }
        if (lesionsOn && label[v] !== 0) lesion[v] = label[v] === 2 ? 1 : 2;
        if (brain && label[v] === 0 && activeTubes.length) {
          const p = [px, py, pz];
          let hit: boolean | null = null; // true: a finger, false: a mimic
          for (const t of activeTubes) {
            if (x < t.x[0] || x > t.x[1] || (hit === true && !t.finger)) continue;
            if (insideTube(t, p, 0.2 * rowShape[x]!)) hit = hit === true || t.finger;
          }
          if (hit !== null) {
            // Looks like edema whatever it is: the rule (applyLesionRule) decides the label.
            lesion[v] = 1;
            if (hit) label[v] = 2;
            tex = 1 + rowLesionTex[x]!;
            blendTissue = tissue;
            tissue = EDEMA;
          }
        }
        const base = intensity[tissue]!;
        const under = blendTissue >= 0 ? intensity[blendTissue]! : null;
        const o = v * C;
        for (let m = 0; m < C; m++) {
          let val = under ? 0.65 * base[m]! + 0.35 * under[m]! : base[m]!;
          val *= tex * (1 + rowBias[m]![x]!);
          // xorshift32 picks a quantile of the normal table.
          rngState ^= rngState << 13;
          rngState ^= rngState >>> 17;
          rngState ^= rngState << 5;
          image[o + m] = val + noiseSd * NORMAL_TABLE[(rngState >>> 16) & 0xffff]!;
        }
      }
    }
  }

  if (lesionsOn) applyLesionRule(label, lesion, [D, H, W]);

  // BraTS-like normalisation: z-score each modality over the head, background exactly 0.
  for (let m = 0; m < C; m++) {
    let n = 0,
      sum = 0,
      sumSq = 0;
    for (let v = 0; v < N; v++) {
      if (!inHead[v]) continue;
      const val = image[v * C + m]!;
      n++;
      sum += val;
      sumSq += val * val;
    }
    if (n === 0) continue;
    const mean = sum / n;
    const sd = Math.sqrt(Math.max(sumSq / n - mean * mean, 1e-12));
    for (let v = 0; v < N; v++) {
      if (inHead[v]) image[v * C + m] = (image[v * C + m]! - mean) / sd;
    }
  }

  const volume: Volume = {
    id: syntheticCaseId(index),
    image,
    shape: [D, H, W],
    channels: C,
    label,
    spacing: [1, 1, 1],
    geometry: syntheticGeometry([D, H, W]),
  };
  return { volume, lesion };
}

/** 6-connected components of `mask != 0`: a component id per voxel (0 outside) and the count. */
function components(mask: Uint8Array, [D, H, W]: Shape3): { id: Int32Array; count: number } {
  const id = new Int32Array(mask.length);
  const queue = new Int32Array(mask.length);
  let count = 0;
  for (let s = 0; s < mask.length; s++) {
    if (!mask[s] || id[s]) continue;
    count++;
    let head = 0,
      tail = 0;
    queue[tail++] = s;
    id[s] = count;
    while (head < tail) {
      const v = queue[head++]!;
      const x = v % W,
        y = Math.floor(v / W) % H,
        z = Math.floor(v / (W * H));
      const visit = (u: number): void => {
        if (mask[u] && !id[u]) {
          id[u] = count;
          queue[tail++] = u;
        }
      };
      if (x > 0) visit(v - 1);
      if (x < W - 1) visit(v + 1);
      if (y > 0) visit(v - W);
      if (y < H - 1) visit(v + W);
      if (z > 0) visit(v - W * H);
      if (z < D - 1) visit(v + W * H);
    }
  }
  return { id, count };
}

/**
 * The labelling rule of the context lesions, applied exactly: an edema-like voxel (lesion 1) is edema
 * (label 2) when its 6-connected lesion (edema-like or core voxels) holds a tumour core voxel, and
 * background otherwise. So a mimic touching the tumour is edema, and a finger piece cut off by the brain
 * surface is background: the label is decided by connection to a core, never by the voxel's look.
 */
function applyLesionRule(label: Uint8Array, lesion: Uint8Array, shape: Shape3): void {
  const { id, count } = components(lesion, shape);
  const hasCore = new Uint8Array(count + 1);
  for (let v = 0; v < lesion.length; v++) if (lesion[v] === 2) hasCore[id[v]!] = 1;
  for (let v = 0; v < lesion.length; v++) if (lesion[v] === 1) label[v] = hasCore[id[v]!] ? 2 : 0;
}

/** Per axis: 1 where some voxel of `mask` lies within ±h[axis] (a box dilation, separable). */
function boxDilate(mask: Uint8Array, [D, H, W]: Shape3, h: Shape3): Uint8Array {
  let cur = mask;
  const dims = [D, H, W];
  const strides = [H * W, W, 1];
  for (let a = 0; a < 3; a++) {
    const n = dims[a]!;
    const stride = strides[a]!;
    const out = new Uint8Array(mask.length);
    const prefix = new Int32Array(n + 1);
    for (let base = 0; base < mask.length; base++) {
      // Visit each line once, from its first voxel (the one whose coordinate along axis a is 0).
      if (Math.floor(base / stride) % n !== 0) continue;
      for (let i = 0; i < n; i++) prefix[i + 1] = prefix[i]! + cur[base + i * stride]!;
      for (let i = 0; i < n; i++) {
        const lo = Math.max(0, i - h[a]!);
        const hi = Math.min(n, i + h[a]! + 1);
        out[base + i * stride] = prefix[hi]! - prefix[lo]! > 0 ? 1 : 0;
      }
    }
    cur = out;
  }
  return cur;
}

/**
 * How much of case `index`'s labelled and mimic volume lies farther than half a patch edge from the
 * evidence that decides its label, for a patch of extent `patch` [D, H, W]:
 * - necrosis and enhancing tumour are decided by their own intensities (distance 0);
 * - an edema voxel is edema because a tumour core is connected to it: it counts when no core voxel lies in
 *   the patch-sized box centred on it;
 * - a mimic voxel is background because its lesion ends without a core: it counts when its lesion
 *   (6-connected) reaches outside the patch-sized box centred on it.
 * With neither mimics nor fingers every edema voxel still counts when its core is far (large tumours).
 */
export function syntheticContext(index: number, opts: SyntheticOptions, patch: Shape3): ContextFigures {
  const { volume, lesion } = generate(index, opts);
  const shape = volume.shape;
  const label = volume.label!;
  const N = label.length;
  const h: Shape3 = [Math.floor(patch[0] / 2), Math.floor(patch[1] / 2), Math.floor(patch[2] / 2)];
  const core = new Uint8Array(N);
  for (let v = 0; v < N; v++) core[v] = label[v] === 1 || label[v] === 4 ? 1 : 0;
  const nearCore = boxDilate(core, shape, h);
  let labelled = 0,
    labelledBeyond = 0;
  for (let v = 0; v < N; v++) {
    if (label[v] === 0) continue;
    labelled++;
    if (label[v] === 2 && !nearCore[v]) labelledBeyond++;
  }
  const mimicMask = new Uint8Array(N);
  for (let v = 0; v < N; v++) mimicMask[v] = lesion[v] === 1 && label[v] === 0 ? 1 : 0;
  const { id, count } = components(mimicMask, shape);
  const [, H, W] = shape;
  const lo = new Int32Array((count + 1) * 3).fill(2 ** 30);
  const hi = new Int32Array((count + 1) * 3).fill(-1);
  const coord = (v: number): [number, number, number] => [Math.floor(v / (H * W)), Math.floor(v / W) % H, v % W];
  for (let v = 0; v < N; v++) {
    const c = id[v]!;
    if (!c) continue;
    const q = coord(v);
    for (let a = 0; a < 3; a++) {
      lo[c * 3 + a] = Math.min(lo[c * 3 + a]!, q[a]!);
      hi[c * 3 + a] = Math.max(hi[c * 3 + a]!, q[a]!);
    }
  }
  let mimic = 0,
    mimicBeyond = 0;
  for (let v = 0; v < N; v++) {
    const c = id[v]!;
    if (!c) continue;
    mimic++;
    const q = coord(v);
    let beyond = false;
    for (let a = 0; a < 3; a++) if (q[a]! - lo[c * 3 + a]! > h[a]! || hi[c * 3 + a]! - q[a]! > h[a]!) beyond = true;
    if (beyond) mimicBeyond++;
  }
  return { case: volume.id, labelled, labelledBeyond, mimic, mimicBeyond };
}

class SyntheticBrats extends GeneratedDataset {
  constructor(
    count: number,
    private readonly opts: SyntheticOptions,
  ) {
    super('synthetic-brats', BRATS_TASK, BRATS_CHANNELS, count, syntheticCaseId, (index) => generateSyntheticCase(index, opts));
  }

  context(id: string, patch: Shape3): ContextFigures {
    return syntheticContext(this.index(id), this.opts, patch);
  }
}

const plugin: DatasetPlugin<typeof settings> = {
  kind: 'dataset',
  name: 'synthetic-brats',
  description: 'built-in BraTS-like generator: 4 MR modalities of a brain with a nested tumour (labels 0/1/2/4), optional lesion mimics and edema fingers that need context, any size, reproducible',
  reference: 'BraTS label scheme and regions: Menze et al., IEEE TMI 2015; Bakas et al., arXiv:1811.02629 (generator: this project)',
  settings,
  create({ cases, ...options }): Dataset {
    return new SyntheticBrats(cases, options);
  },
  // A model trained on the synthetic data segments real BraTS cases (its modalities are BraTS's),
  // z-scored inside the brain as the generator's images are.
  predictionInputs: (path, _settings, channels) => bratsPredictionInputs(path, { normalize: 'zscore-brain' }, channels),
};

export default plugin;
