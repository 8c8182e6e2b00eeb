/**
 * Patch-based (sliding-window) inference over a whole volume, following MONAI's `sliding_window_inference`:
 *
 * - Windows of `roiSize` start every stride = max(1, round(roi·(1 − overlap))) voxels along each axis, and
 *   the last window is placed flush with the end of the axis so every voxel is covered. (MONAI truncates
 *   roi·(1 − overlap) instead of rounding; the two differ only when that product is not an integer.)
 * - An axis shorter than the roi is zero-padded to the roi — split evenly before/after, the extra voxel
 *   after, as MONAI's constant padding — and the output is cropped back to the volume.
 * - Each window's prediction is weighted by an importance map ('gaussian': a separable Gaussian with
 *   sigma = sigmaScale·roi per axis, normalised to a peak of 1 and clamped below at `IMPORTANCE_MAP_MIN` so
 *   border voxels still count; 'constant': all ones), and the output is Σ w·pred / Σ w per voxel.
 *
 * Layouts: the image is channels-last [D, H, W, C]; a patch is [d, h, w, C]; the predictor returns
 * [d, h, w, K]; the output is [D, H, W, K]. Accumulation is in float32, so reassembling a constant-1 field
 * is exact to a few ulp.
 */
import type { Shape3 } from '../types.js';
import { extractBox } from '../data/index.js';

/** Lower bound of the Gaussian importance map (MONAI clamps at max(min(map), 1e-3)). */
export const IMPORTANCE_MAP_MIN = 1e-3;

export interface SlidingWindowVolume {
  /** channels-last float32 [D, H, W, C]. */
  image: Float32Array;
  shape: Shape3;
  channels: number;
}

/** Runs the network on one patch ([d, h, w, C] channels-last) and returns [d, h, w, K]. */
export type PatchPredictor = (patch: Float32Array, patchShape: Shape3) => Promise<Float32Array>;

export interface SlidingWindowOptions {
  /** K, the channels the predictor returns. */
  outChannels: number;
  /** Fraction of a window shared with its neighbour, in [0, 1); default 0.5. */
  overlap?: number;
  /**
   * Window weighting: 'gaussian' (MONAI, default), 'constant', or a map of weights over a window
   * [d, h, w] (row-major, x fastest), e.g. a network's own stitching weights (Network.windowWeights).
   */
  blend?: 'gaussian' | 'constant' | ((roi: Shape3) => Float32Array);
  /** Gaussian sigma as a fraction of the roi edge; default 0.125, as MONAI. */
  sigmaScale?: number;
  /** Windows run one at a time; batching several windows is not supported. */
  batch?: never;
  /**
   * Context the predictor reads around each window, per side [D, H, W] (a network with an output
   * margin): the predictor gets [d + 2m, h + 2m, w + 2m] voxels (zeros outside the volume) and still
   * returns [d, h, w, K]. Default [0, 0, 0].
   */
  inputMargin?: Shape3;
}

function checkPositiveInt(what: string, n: number): void {
  if (!(Number.isInteger(n) && n > 0)) throw new Error(`${what} must be a positive integer, got ${n}`);
}

function checkOverlap(overlap: number): void {
  if (!(overlap >= 0 && overlap < 1)) {
    throw new Error(`sliding window: overlap must be in [0, 1), got ${overlap}`);
  }
}

/**
 * Start offsets of the windows along one axis of length `size` (after padding to at least `roi`):
 * 0, s, 2s, … while the window ends before the axis does, then `size − roi` so the last window is flush
 * with the end. Returns [0] when size ≤ roi.
 */
export function windowStarts(size: number, roi: number, overlap: number): number[] {
  checkPositiveInt('windowStarts: size', size);
  checkPositiveInt('windowStarts: roi', roi);
  checkOverlap(overlap);
  if (size <= roi) return [0];
  const stride = Math.max(1, Math.round(roi * (1 - overlap)));
  const starts: number[] = [];
  for (let p = 0; p + roi < size; p += stride) starts.push(p);
  starts.push(size - roi);
  return starts;
}

/**
 * Separable Gaussian importance map over a window [d, h, w] (row-major): exp(−x²/(2σ²)) per axis with x
 * measured from the window centre ((n − 1)/2) and σ = sigmaScale·n, multiplied over the axes, normalised
 * to a maximum of 1 and clamped below at `IMPORTANCE_MAP_MIN`.
 */
export function gaussianImportanceMap(roi: Shape3, sigmaScale = 0.125): Float32Array {
  roi.forEach((n, i) => checkPositiveInt(`gaussianImportanceMap: roi[${i}]`, n));
  if (!(Number.isFinite(sigmaScale) && sigmaScale > 0)) {
    throw new Error(`gaussianImportanceMap: sigmaScale must be a positive number, got ${sigmaScale}`);
  }
  const axis = (n: number): Float64Array => {
    const g = new Float64Array(n);
    const sigma = sigmaScale * n;
    const c = (n - 1) / 2;
    for (let i = 0; i < n; i++) g[i] = Math.exp(-((i - c) ** 2) / (2 * sigma * sigma));
    return g;
  };
  const [d, h, w] = roi;
  const gz = axis(d);
  const gy = axis(h);
  const gx = axis(w);
  const max = Math.max(...gz) * Math.max(...gy) * Math.max(...gx);
  const out = new Float32Array(d * h * w);
  let i = 0;
  for (let z = 0; z < d; z++)
    for (let y = 0; y < h; y++) {
      const zy = (gz[z]! * gy[y]!) / max;
      for (let x = 0; x < w; x++) out[i++] = Math.max(IMPORTANCE_MAP_MIN, zy * gx[x]!);
    }
  return out;
}

/**
 * Sliding-window inference over a whole volume (see the module comment for the conventions).
 * Returns channels-last [D, H, W, outChannels].
 */
export async function slidingWindowInference(
  volume: SlidingWindowVolume,
  roiSize: Shape3,
  predictor: PatchPredictor,
  options: SlidingWindowOptions,
): Promise<Float32Array> {
  const { image, shape, channels: C } = volume;
  const [D, H, W] = shape;
  shape.forEach((n, i) => checkPositiveInt(`slidingWindowInference: volume shape[${i}]`, n));
  roiSize.forEach((n, i) => checkPositiveInt(`slidingWindowInference: roiSize[${i}]`, n));
  checkPositiveInt('slidingWindowInference: channels', C);
  const K = options.outChannels;
  checkPositiveInt('slidingWindowInference: outChannels', K);
  if (image.length !== D * H * W * C) {
    throw new Error(
      `slidingWindowInference: image has ${image.length} values but shape [${shape.join(', ')}] × ${C} channels ` +
        `needs ${D * H * W * C}`,
    );
  }
  const overlap = options.overlap ?? 0.5;
  checkOverlap(overlap);
  const blend = options.blend ?? 'gaussian';
  if (blend !== 'gaussian' && blend !== 'constant' && typeof blend !== 'function') {
    throw new Error(`slidingWindowInference: blend must be 'gaussian', 'constant' or a weight map function, got ${JSON.stringify(blend)}`);
  }
  const [d, h, w] = roiSize;
  const patchVoxels = d * h * w;
  const weights =
    blend === 'gaussian'
      ? gaussianImportanceMap(roiSize, options.sigmaScale ?? 0.125)
      : blend === 'constant'
        ? new Float32Array(patchVoxels).fill(1)
        : blend(roiSize);
  if (weights.length !== patchVoxels)
    throw new Error(`slidingWindowInference: the blend's weight map has ${weights.length} values for a [${roiSize.join(', ')}] window (${patchVoxels} voxels)`);

  // Virtual zero padding: the padded axis has length max(size, roi), with `before` voxels in front.
  const padded = [Math.max(D, d), Math.max(H, h), Math.max(W, w)] as const;
  const before = [Math.floor((padded[0] - D) / 2), Math.floor((padded[1] - H) / 2), Math.floor((padded[2] - W) / 2)] as const;
  const zs = windowStarts(padded[0], d, overlap);
  const ys = windowStarts(padded[1], h, overlap);
  const xs = windowStarts(padded[2], w, overlap);

  const out = new Float32Array(D * H * W * K);
  const wsum = new Float32Array(D * H * W);
  const margin = options.inputMargin ?? [0, 0, 0];
  const inputShape: Shape3 = [d + 2 * margin[0], h + 2 * margin[1], w + 2 * margin[2]];

  for (const sz of zs)
    for (const sy of ys)
      for (const sx of xs) {
        // Volume coordinates of the window's first voxel (may be negative inside padding).
        const oz = sz - before[0];
        const oy = sy - before[1];
        const ox = sx - before[2];
        // Patch x range that falls inside the volume.
        const xa = Math.max(0, -ox);
        const xb = Math.min(w, W - ox);
        // A fresh patch per window (tfjs may wrap the array without copying): the window plus its margin,
        // zeros outside the volume.
        const patch = extractBox(image, shape, C, [oz - margin[0], oy - margin[1], ox - margin[2]], inputShape);
        const pred = await predictor(patch, inputShape);
        if (!(pred instanceof Float32Array) || pred.length !== patchVoxels * K) {
          throw new Error(
            `slidingWindowInference: the predictor returned ${pred instanceof Float32Array ? pred.length + ' values' : String(pred)} ` +
              `for a [${d}, ${h}, ${w}] patch; expected a Float32Array of ${patchVoxels} × ${K} = ${patchVoxels * K} ` +
              '(channels-last [d, h, w, K] with K = outChannels)',
          );
        }
        for (let pz = 0; pz < d; pz++) {
          const vz = oz + pz;
          if (vz < 0 || vz >= D) continue;
          for (let py = 0; py < h; py++) {
            const vy = oy + py;
            if (vy < 0 || vy >= H) continue;
            let p = (pz * h + py) * w + xa;
            let v = (vz * H + vy) * W + ox + xa;
            for (let px = xa; px < xb; px++, p++, v++) {
              const wt = weights[p]!;
              wsum[v] += wt;
              const ob = v * K;
              const pb = p * K;
              for (let k = 0; k < K; k++) out[ob + k] += wt * pred[pb + k]!;
            }
          }
        }
      }

  for (let v = 0; v < wsum.length; v++) {
    const s = wsum[v]!;
    const ob = v * K;
    for (let k = 0; k < K; k++) out[ob + k] = out[ob + k]! / s;
  }
  return out;
}
