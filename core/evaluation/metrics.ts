/**
 * Segmentation metrics (Dice, HD95) and the conversions between label maps, network targets and network
 * outputs.
 *
 * Conventions (quoted by the README and the summary legend; change them here only):
 * - Masks are binary: a voxel is "in" when its value is nonzero.
 * - Volumes are row-major [D, H, W] (index (z*H + y)*W + x); spacing is in mm along [D, H, W].
 * - Dice: 2|P∩R| / (|P| + |R|); both empty → 1, exactly one empty → 0.
 * - HD95: see `hausdorff95` and `HD95_EMPTY_MASK_CONVENTION`.
 */
import type { SegmentationTask, Shape3 } from '../types.js';

/** How Dice treats empty masks. */
export const DICE_EMPTY_MASK_CONVENTION =
  'Dice is 1 when prediction and reference are both empty and 0 when exactly one of them is empty.';

/**
 * How HD95 treats empty masks; the summary legend and the README quote this text. A distance to an empty
 * set is undefined, so a case where exactly one mask is empty gets NaN rather than an arbitrary penalty
 * (such as the volume diagonal or 373.13 mm used by some challenges) that would dominate any mean.
 */
export const HD95_EMPTY_MASK_CONVENTION =
  'HD95 is 0 when prediction and reference are both empty, and undefined when exactly one of them is ' +
  'empty: such a case is recorded as "n/a", excluded from HD95 means and counted separately.';

/** How the 95th percentile is taken. */
export const HD95_PERCENTILE_DEFINITION =
  'HD95 is the 95th percentile of the union of the surface distances pred→ref and ref→pred (MedPy/BraTS ' +
  '`hd95`), with surfaces = mask voxels that have a 6-neighbour outside the mask or lie on the volume border, ' +
  "distances in the data set's spacing unit (mm, or voxels where it has no physical spacing) from an exact " +
  "Euclidean distance transform, and numpy's default percentile (linear interpolation between the two nearest " +
  'ranks).';

function checkVolume(name: string, data: ArrayLike<number>, shape: Shape3): number {
  const [D, H, W] = shape;
  if (![D, H, W].every((n) => Number.isInteger(n) && n > 0)) {
    throw new Error(`${name}: shape must be three positive integers [D, H, W], got ${JSON.stringify(shape)}`);
  }
  const n = D * H * W;
  if (data.length !== n) {
    throw new Error(
      `${name}: expected ${n} voxels for shape [${shape.join(', ')}], got an array of length ${data.length}; ` +
        'pass masks/label maps of the same volume as the shape',
    );
  }
  return n;
}

function checkSpacing(spacing: Shape3): void {
  if (!Array.isArray(spacing) || spacing.length !== 3 || !spacing.every((s) => Number.isFinite(s) && s > 0)) {
    throw new Error(`hausdorff95: spacing must be three positive mm values [sd, sh, sw], got ${JSON.stringify(spacing)}`);
  }
}

/** Dice overlap of two binary masks (nonzero = in); both empty → 1, exactly one empty → 0. */
export function dice(pred: Uint8Array, ref: Uint8Array): number {
  if (pred.length !== ref.length) {
    throw new Error(`dice: prediction has ${pred.length} voxels but reference has ${ref.length}; masks must match`);
  }
  let p = 0;
  let r = 0;
  let both = 0;
  for (let i = 0; i < pred.length; i++) {
    const a = pred[i] !== 0;
    const b = ref[i] !== 0;
    if (a) p++;
    if (b) r++;
    if (a && b) both++;
  }
  if (p + r === 0) return 1;
  return (2 * both) / (p + r);
}

/**
 * numpy's default percentile (`method='linear'`): sort, h = (n−1)·q/100, interpolate linearly between the
 * values at floor(h) and floor(h)+1. `q` in [0, 100]. Sorts `values` in place.
 */
export function percentile(values: Float64Array | number[], q: number): number {
  if (!(q >= 0 && q <= 100)) throw new Error(`percentile: q must be in [0, 100], got ${q}`);
  const n = values.length;
  if (n === 0) throw new Error('percentile: no values');
  const a = values instanceof Float64Array ? values : Float64Array.from(values);
  a.sort();
  const h = ((n - 1) * q) / 100;
  const lo = Math.floor(h);
  if (lo >= n - 1) return a[n - 1]!;
  return a[lo]! + (h - lo) * (a[lo + 1]! - a[lo]!);
}

/**
 * Felzenszwalb–Huttenlocher 1-D squared distance transform with sample spacing `s` (mm):
 * d[q] = min_p ((q−p)·s)² + f[p], over the n samples f[0..n). Infinite f entries are not parabolas; when all
 * are infinite d stays infinite. `v`, `zz` are scratch arrays of length ≥ n and ≥ n+1.
 */
function edt1d(f: Float64Array, n: number, s: number, d: Float64Array, v: Int32Array, zz: Float64Array): void {
  let k = -1;
  for (let q = 0; q < n; q++) {
    const fq = f[q]!;
    if (fq === Infinity) continue;
    const qs = q * s;
    const cq = fq + qs * qs;
    let sInt = -Infinity;
    while (k >= 0) {
      const vk = v[k]!;
      const vs = vk * s;
      sInt = (cq - (f[vk]! + vs * vs)) / (2 * (qs - vs));
      if (sInt <= zz[k]!) k--;
      else break;
    }
    k++;
    v[k] = q;
    zz[k] = k === 0 ? -Infinity : sInt;
    zz[k + 1] = Infinity;
  }
  if (k < 0) {
    for (let q = 0; q < n; q++) d[q] = Infinity;
    return;
  }
  k = 0;
  for (let q = 0; q < n; q++) {
    const x = q * s;
    while (zz[k + 1]! < x) k++;
    const vk = v[k]!;
    const dx = x - vk * s;
    d[q] = dx * dx + f[vk]!;
  }
}

/**
 * Exact squared Euclidean distance transform in place: on entry `g` holds 0 at feature voxels and Infinity
 * elsewhere (row-major [D, H, W]); on exit the squared distance in mm² to the nearest feature voxel. Separable:
 * one 1-D transform along x, then y, then z — O(N) overall.
 */
function edtInPlace(g: Float64Array, shape: Shape3, spacing: Shape3): void {
  const [D, H, W] = shape;
  const n = Math.max(D, H, W);
  const f = new Float64Array(n);
  const d = new Float64Array(n);
  const v = new Int32Array(n);
  const zz = new Float64Array(n + 1);
  // x: contiguous rows.
  for (let row = 0; row < D * H; row++) {
    const base = row * W;
    for (let x = 0; x < W; x++) f[x] = g[base + x]!;
    edt1d(f, W, spacing[2], d, v, zz);
    for (let x = 0; x < W; x++) g[base + x] = d[x]!;
  }
  // y: stride W.
  if (H > 1) {
    for (let z = 0; z < D; z++) {
      for (let x = 0; x < W; x++) {
        const base = z * H * W + x;
        let allInf = true;
        for (let y = 0; y < H; y++) {
          const val = g[base + y * W]!;
          f[y] = val;
          if (val !== Infinity) allInf = false;
        }
        if (allInf) continue; // why: a column without features stays infinite; skip the work
        edt1d(f, H, spacing[1], d, v, zz);
        for (let y = 0; y < H; y++) g[base + y * W] = d[y]!;
      }
    }
  }
  // z: stride H*W.
  if (D > 1) {
    const plane = H * W;
    for (let i = 0; i < plane; i++) {
      let allInf = true;
      for (let z = 0; z < D; z++) {
        const val = g[z * plane + i]!;
        f[z] = val;
        if (val !== Infinity) allInf = false;
      }
      if (allInf) continue;
      edt1d(f, D, spacing[0], d, v, zz);
      for (let z = 0; z < D; z++) g[z * plane + i] = d[z]!;
    }
  }
}

/**
 * Exact squared Euclidean distance (mm²) from every voxel to the nearest nonzero voxel of `features`,
 * with anisotropic `spacing` [sd, sh, sw]. Infinity everywhere when `features` is empty.
 */
export function squaredDistanceTransform(features: Uint8Array, shape: Shape3, spacing: Shape3): Float64Array {
  const n = checkVolume('squaredDistanceTransform', features, shape);
  checkSpacing(spacing);
  const g = new Float64Array(n);
  for (let i = 0; i < n; i++) g[i] = features[i] !== 0 ? 0 : Infinity;
  edtInPlace(g, shape, spacing);
  return g;
}

/**
 * Surface voxels of a binary mask: mask voxels with at least one 6-neighbour outside the mask or on the
 * volume border (scipy's binary_erosion with border_value 0, as MedPy does). Returns a 0/1 mask.
 */
export function surfaceMask(mask: Uint8Array, shape: Shape3): Uint8Array {
  checkVolume('surfaceMask', mask, shape);
  const out = new Uint8Array(mask.length);
  const box = boundingBox(mask, shape);
  if (box) markSurface(mask, shape, box, (i) => (out[i] = 1));
  return out;
}

type Box = { z0: number; z1: number; y0: number; y1: number; x0: number; x1: number };

/** Inclusive bounding box of the nonzero voxels of a mask; null when it is empty. */
function boundingBox(mask: Uint8Array, shape: Shape3): Box | null {
  const [D, H, W] = shape;
  let z0 = D, z1 = -1, y0 = H, y1 = -1, x0 = W, x1 = -1;
  for (let z = 0; z < D; z++) {
    for (let y = 0; y < H; y++) {
      const base = (z * H + y) * W;
      for (let x = 0; x < W; x++) {
        if (mask[base + x] === 0) continue;
        if (z < z0) z0 = z;
        if (z > z1) z1 = z;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
      }
    }
  }
  return z1 < 0 ? null : { z0, z1, y0, y1, x0, x1 };
}

/** Calls `emit(fullIndex)` for each surface voxel of `mask`; all of the mask lies inside `box`. */
function markSurface(mask: Uint8Array, shape: Shape3, box: Box, emit: (i: number) => void): void {
  const [D, H, W] = shape;
  const plane = H * W;
  for (let z = box.z0; z <= box.z1; z++) {
    for (let y = box.y0; y <= box.y1; y++) {
      const base = (z * H + y) * W;
      for (let x = box.x0; x <= box.x1; x++) {
        const i = base + x;
        if (mask[i] === 0) continue;
        if (
          z === 0 || z === D - 1 || y === 0 || y === H - 1 || x === 0 || x === W - 1 ||
          mask[i - 1] === 0 || mask[i + 1] === 0 ||
          mask[i - W] === 0 || mask[i + W] === 0 ||
          mask[i - plane] === 0 || mask[i + plane] === 0
        ) {
          emit(i);
        }
      }
    }
  }
}

/**
 * 95th-percentile symmetric Hausdorff distance in mm between two binary masks (nonzero = in), as MedPy's
 * and the BraTS toolkit's `hd95`: the 95th percentile of the union of the distances from each surface voxel
 * of `pred` to the nearest surface voxel of `ref` and from each surface voxel of `ref` to the nearest surface
 * voxel of `pred`. Surface = mask voxels with a 6-neighbour outside the mask or on the volume border.
 * Distances come from an exact Euclidean distance transform (Felzenszwalb–Huttenlocher, separable, with the
 * anisotropic `spacing` [sd, sh, sw] in mm), computed on the bounding box of both masks — exact, since every
 * feature and every query voxel lies in that box. Percentile: numpy's default (linear interpolation).
 *
 * Empty masks: both empty → 0; exactly one empty → NaN (`HD95_EMPTY_MASK_CONVENTION`: reported as "n/a",
 * excluded from means and counted separately).
 */
export function hausdorff95(pred: Uint8Array, ref: Uint8Array, shape: Shape3, spacing: Shape3): number {
  checkVolume('hausdorff95 (prediction)', pred, shape);
  checkVolume('hausdorff95 (reference)', ref, shape);
  checkSpacing(spacing);
  const [, H, W] = shape;
  const boxP = boundingBox(pred, shape);
  const boxR = boundingBox(ref, shape);
  if (!boxP && !boxR) return 0;
  if (!boxP || !boxR) return NaN;
  const box: Box = {
    z0: Math.min(boxP.z0, boxR.z0), z1: Math.max(boxP.z1, boxR.z1),
    y0: Math.min(boxP.y0, boxR.y0), y1: Math.max(boxP.y1, boxR.y1),
    x0: Math.min(boxP.x0, boxR.x0), x1: Math.max(boxP.x1, boxR.x1),
  };
  const bd = box.z1 - box.z0 + 1;
  const bh = box.y1 - box.y0 + 1;
  const bw = box.x1 - box.x0 + 1;
  // Surface voxels as indices into the box.
  const toBox = (i: number): number => {
    const x = i % W;
    const zy = (i - x) / W;
    const y = zy % H;
    const z = (zy - y) / H;
    return ((z - box.z0) * bh + (y - box.y0)) * bw + (x - box.x0);
  };
  const surfP: number[] = [];
  const surfR: number[] = [];
  markSurface(pred, shape, boxP, (i) => surfP.push(toBox(i)));
  markSurface(ref, shape, boxR, (i) => surfR.push(toBox(i)));

  const boxShape: Shape3 = [bd, bh, bw];
  const g = new Float64Array(bd * bh * bw);
  const distances = new Float64Array(surfP.length + surfR.length);
  let k = 0;
  // pred surface → nearest ref surface.
  g.fill(Infinity);
  for (const i of surfR) g[i] = 0;
  edtInPlace(g, boxShape, spacing);
  for (const i of surfP) distances[k++] = Math.sqrt(g[i]!);
  // ref surface → nearest pred surface.
  g.fill(Infinity);
  for (const i of surfP) g[i] = 0;
  edtInPlace(g, boxShape, spacing);
  for (const i of surfR) distances[k++] = Math.sqrt(g[i]!);
  return percentile(distances, 95);
}

/** Binary masks per region (`regions`: label ∈ region.labels) or per label (`labels`: label === value). */
export function regionMasks(labels: Uint8Array, task: SegmentationTask): { name: string; mask: Uint8Array }[] {
  const n = labels.length;
  if (task.kind === 'regions') {
    return task.regions.map((region) => {
      const inRegion = new Uint8Array(256);
      for (const l of region.labels) inRegion[l] = 1;
      const mask = new Uint8Array(n);
      for (let i = 0; i < n; i++) mask[i] = inRegion[labels[i]!]!;
      return { name: region.name, mask };
    });
  }
  return task.labels.map((label) => {
    const mask = new Uint8Array(n);
    const value = label.value;
    for (let i = 0; i < n; i++) mask[i] = labels[i] === value ? 1 : 0;
    return { name: label.name, mask };
  });
}

/** Dice and HD95 per region/label of the task, in task order. */
export function evaluateCase(
  pred: Uint8Array,
  ref: Uint8Array,
  task: SegmentationTask,
  shape: Shape3,
  spacing: Shape3,
): { name: string; dice: number; hd95: number }[] {
  checkVolume('evaluateCase (prediction)', pred, shape);
  checkVolume('evaluateCase (reference)', ref, shape);
  checkSpacing(spacing);
  const p = regionMasks(pred, task);
  const r = regionMasks(ref, task);
  return p.map((pm, i) => ({
    name: pm.name,
    dice: dice(pm.mask, r[i]!.mask),
    hd95: hausdorff95(pm.mask, r[i]!.mask, shape, spacing),
  }));
}

/** Number of network output channels for a task: regions → one per region; labels → background + labels. */
export function outputChannels(task: SegmentationTask): number {
  return task.kind === 'regions' ? task.regions.length : 1 + task.labels.length;
}

/**
 * Network output (channels-last [D, H, W, K]) → label map.
 * - `regions` (sigmoid, K = number of regions): each region whose probability is > `threshold` paints its
 *   `paint` value, in task order, so a later region overwrites an earlier one (BraTS: WT→2, TC→1, ET→4).
 * - `labels` (softmax, K = 1 + number of labels, channel 0 = background): argmax; channel k > 0 maps to
 *   `labels[k−1].value`, channel 0 to 0. Ties go to the lower channel. `threshold` is not used.
 */
export function probabilitiesToLabels(
  probs: Float32Array,
  shape: Shape3,
  task: SegmentationTask,
  threshold = 0.5,
): Uint8Array {
  const [D, H, W] = shape;
  const voxels = D * H * W;
  const K = outputChannels(task);
  if (probs.length !== voxels * K) {
    throw new Error(
      `probabilitiesToLabels: expected ${voxels}×${K} = ${voxels * K} values for shape [${shape.join(', ')}] and ` +
        `${K} output channels (${task.kind}), got ${probs.length}`,
    );
  }
  const out = new Uint8Array(voxels);
  if (task.kind === 'regions') {
    const paints = task.regions.map((r) => r.paint);
    for (let i = 0; i < voxels; i++) {
      const base = i * K;
      let v = 0;
      for (let k = 0; k < K; k++) if (probs[base + k]! > threshold) v = paints[k]!;
      out[i] = v;
    }
    return out;
  }
  const values = [0, ...task.labels.map((l) => l.value)];
  for (let i = 0; i < voxels; i++) {
    const base = i * K;
    let best = 0;
    let bestP = probs[base]!;
    for (let k = 1; k < K; k++) {
      const p = probs[base + k]!;
      if (p > bestP) {
        bestP = p;
        best = k;
      }
    }
    out[i] = values[best]!;
  }
  return out;
}

/**
 * Label map → training targets, channels-last [voxels, K].
 * - `regions`: K = number of regions, 1 where the label is in the region's labels (a label in no region is
 *   background for every channel).
 * - `labels`: K = 1 + number of labels, one-hot with channel 0 = background (label 0). A nonzero label that
 *   the task does not list is an error: it means the dataset's label remapping is wrong.
 */
export function labelsToTargets(labels: Uint8Array, task: SegmentationTask, voxels: number): Float32Array {
  if (labels.length !== voxels) {
    throw new Error(`labelsToTargets: label map has ${labels.length} voxels but ${voxels} were expected`);
  }
  const K = outputChannels(task);
  const out = new Float32Array(voxels * K);
  if (task.kind === 'regions') {
    // lut[label * K + k] = 1 when label ∈ region k.
    const lut = new Uint8Array(256 * K);
    task.regions.forEach((r, k) => {
      for (const l of r.labels) lut[l * K + k] = 1;
    });
    for (let i = 0; i < voxels; i++) {
      const lb = labels[i]! * K;
      const ob = i * K;
      for (let k = 0; k < K; k++) out[ob + k] = lut[lb + k]!;
    }
    return out;
  }
  const channelOf = new Int16Array(256).fill(-1);
  channelOf[0] = 0;
  task.labels.forEach((l, k) => (channelOf[l.value] = k + 1));
  for (let i = 0; i < voxels; i++) {
    const c = channelOf[labels[i]!]!;
    if (c < 0) {
      throw new Error(
        `labelsToTargets: voxel ${i} has label ${labels[i]}, which the task does not list ` +
          `(known: 0 = background, ${task.labels.map((l) => `${l.value} = ${l.name}`).join(', ')}); ` +
          "check the dataset's label remapping",
      );
    }
    out[i * K + c] = 1;
  }
  return out;
}
