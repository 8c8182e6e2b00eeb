/**
 * Channels-last volume helpers: padding to a network's divisor, cropping back, extracting patches.
 * Layout everywhere: [D, H, W, C] row-major, C fastest.
 */
import type { Shape3 } from '../types.js';

export const voxels = (s: Shape3): number => s[0] * s[1] * s[2];

/** The smallest shape ≥ `shape` whose every edge is a multiple of `divisor`. */
export function padShapeTo(shape: Shape3, divisor: number): Shape3 {
  return shape.map((n) => Math.ceil(n / divisor) * divisor) as Shape3;
}

/**
 * Copies the box [start, start + outShape) of `src` (shape `srcShape`, `channels` per voxel) into a new
 * array; parts of the box outside the source are filled with `fill`. Negative starts are allowed.
 */
export function extractBox(
  src: ArrayLike<number>,
  srcShape: Shape3,
  channels: number,
  start: Shape3,
  outShape: Shape3,
  fill = 0,
): Float32Array {
  const [D, H, W] = srcShape;
  const [od, oh, ow] = outShape;
  const out = new Float32Array(od * oh * ow * channels);
  if (fill !== 0) out.fill(fill);
  const x0 = Math.max(0, -start[2]);
  const x1 = Math.min(ow, W - start[2]);
  if (x1 <= x0) return out;
  const src32 = src as Float32Array;
  for (let z = 0; z < od; z++) {
    const sz = start[0] + z;
    if (sz < 0 || sz >= D) continue;
    for (let y = 0; y < oh; y++) {
      const sy = start[1] + y;
      if (sy < 0 || sy >= H) continue;
      const srcRow = ((sz * H + sy) * W + start[2]) * channels;
      const dstRow = (z * oh + y) * ow * channels;
      if (typeof src32.subarray === 'function') out.set(src32.subarray(srcRow + x0 * channels, srcRow + x1 * channels), dstRow + x0 * channels);
      else for (let i = x0 * channels; i < x1 * channels; i++) out[dstRow + i] = src[srcRow + i]!;
    }
  }
  return out;
}

/** Zero-pads at the far end of each axis to `outShape` (predictions are cropped back with `cropTo`). */
export function padTo(src: Float32Array, shape: Shape3, channels: number, outShape: Shape3): Float32Array {
  if (shape.every((n, i) => n === outShape[i])) return src;
  return extractBox(src, shape, channels, [0, 0, 0], outShape);
}

/** The [0, outShape) corner of `src`: undoes `padTo`. */
export function cropTo(src: Float32Array, shape: Shape3, channels: number, outShape: Shape3): Float32Array {
  if (shape.every((n, i) => n === outShape[i])) return src;
  return extractBox(src, shape, channels, [0, 0, 0], outShape);
}
