/**
 * The ops the layers call for the project's kernels: each runs the kernel registered under its name for
 * the active backend, or, where that backend registered none, the same function composed of tfjs ops.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NamedAttrMap } from '@tensorflow/tfjs-core';
import { INSTANCE_NORM_BACKWARD, INSTANCE_NORM_FORWARD, UPSAMPLE_NEAREST, UPSAMPLE_NEAREST_GRAD, type NormBackwardAttrs, type NormForwardAttrs } from './names.js';
import { hasKernel } from './index.js';


/**
 * A per-channel vector [C] as [1, 1, 1, 1, C] for broadcasting over channels-last volumes: the same
 * arithmetic, and it keeps tfjs's WebGPU backend off its shared-memory broadcast program, whose shader
 * does not compile for rank 5 ("cannot index type 'vec5'").
 */
const perChannel = (v: tf.Tensor): tf.Tensor => (v.rank === 1 ? tf.reshape(v, [1, 1, 1, 1, v.shape[0]!]) : v);

/**
 * Per-sample, per-channel means over the spatial axes of [N, D, H, W, C], as [N, 1, 1, 1, C]: a batched
 * product with a row of 1/S. tfjs's WebGPU reductions over non-trailing axes first transpose the whole
 * tensor (a full-size copy); the product reads it in place.
 */
function spatialMean(x: tf.Tensor): tf.Tensor {
  const [n, d, h, w, c] = x.shape as number[];
  const s = d! * h! * w!;
  return tf.tidy(() => tf.reshape(tf.matMul(tf.fill([n!, 1, s], 1 / s), tf.reshape(x, [n!, s, c!])), [n!, 1, 1, 1, c!]));
}

/** Per-channel sums over every axis but the last of [N, D, H, W, C], as [C] (the same product). */
function channelSum(x: tf.Tensor): tf.Tensor {
  const c = x.shape[4]!;
  const m = x.size / c;
  return tf.tidy(() => tf.reshape(tf.matMul(tf.ones([1, m]), tf.reshape(x, [m, c])), [c]));
}

/**
 * y = leakyRelu(instanceNorm(x)·gamma + beta): returns [y, xhat, invStd], xhat null with
 * `withXhat: false`. `inPlace` (the caller owns x exclusively) writes y into x's buffer where the backend
 * has the project's kernel; elsewhere it is ignored.
 */
export function instanceNormAct(
  x: tf.Tensor,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  epsilon: number,
  alpha: number,
  opts: { withXhat?: boolean; inPlace?: boolean } = {},
): [tf.Tensor, tf.Tensor | null, tf.Tensor] {
  const withXhat = opts.withXhat ?? true;
  if (hasKernel(INSTANCE_NORM_FORWARD)) {
    const attrs: NormForwardAttrs = { epsilon, alpha, withXhat, inPlace: opts.inPlace ?? false };
    const out = tf.engine().runKernel(INSTANCE_NORM_FORWARD, { x, gamma, beta }, attrs as unknown as NamedAttrMap) as tf.Tensor[];
    return withXhat ? [out[0]!, out[1]!, out[2]!] : [out[0]!, null, out[1]!];
  }
  // The composite frees each intermediate as soon as the next one exists (a tidy would hold them all to
  // its end): beside x, at most two full-size buffers besides its outputs (layers.ts' workspace counts them).
  // The tidy around it frees only the small leftovers (scalars, per-channel views).
  const out = tf.tidy(() => {
    const mean = spatialMean(x);
    const centred = then(tf.sub(x, mean), mean);
    const sq = tf.square(centred);
    const variance = then(spatialMean(sq), sq);
    const inv = then(tf.rsqrt(tf.add(variance, epsilon)), variance);
    const xhat = tf.mul(centred, inv);
    centred.dispose();
    const scaled = tf.mul(xhat, perChannel(gamma));
    const z = then(tf.add(scaled, perChannel(beta)), scaled);
    const y = alpha === 1 ? z : then(tf.leakyRelu(z, alpha), z);
    const invStd = then(tf.reshape(inv, [x.shape[0]!, x.shape[4]!]), inv);
    if (withXhat) return [y, invStd, xhat];
    xhat.dispose();
    return [y, invStd];
  });
  return [out[0]!, out[2] ?? null, out[1]!];
}

/** `next`, once the tensors it was made from are freed. */
function then(next: tf.Tensor, ...done: tf.Tensor[]): tf.Tensor {
  for (const t of done) t.dispose();
  return next;
}

/**
 * The backward of instanceNormAct. `saved` is x̂, or with `fromOutput` the forward's output y (lean saves,
 * in-place normalisation; α > 0), from which x̂ = (z − β)/γ, z = y ≥ 0 ? y : y/α, is rebuilt: inside the
 * kernel where one is registered (no x̂ buffer), else by composite ops freed at the end.
 */
export function instanceNormActBackward(
  dy: tf.Tensor,
  saved: tf.Tensor,
  invStd: tf.Tensor,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  alpha: number,
  opts: { inPlace?: boolean; fromOutput?: boolean } = {},
): tf.Tensor[] {
  const { inPlace = false, fromOutput = false } = opts;
  if (fromOutput && !(alpha > 0)) throw new Error(`instance norm backward: rebuilding x̂ from the output needs a leaky ReLU slope > 0, got ${alpha}`);
  // inPlace: dx is written into dy's buffer (the caller guarantees nothing else shares it).
  if (hasKernel(INSTANCE_NORM_BACKWARD)) {
    const attrs: NormBackwardAttrs = { alpha, inPlace, fromOutput };
    return tf.engine().runKernel(INSTANCE_NORM_BACKWARD, { dy, xhat: saved, invStd, gamma, beta }, attrs as unknown as NamedAttrMap) as tf.Tensor[];
  }
  if (!fromOutput) return normBackwardComposite(dy, saved, invStd, gamma, beta, alpha);
  const xhat = xhatFromOutputComposite(saved, gamma, beta, alpha);
  try {
    return normBackwardComposite(dy, xhat, invStd, gamma, beta, alpha);
  } finally {
    xhat.dispose();
  }
}

/** x̂ from y by composite ops: two transients at once (the z and z − β before the division). */
function xhatFromOutputComposite(y: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, alpha: number): tf.Tensor {
  const z = tf.leakyRelu(y, 1 / alpha); // the inverse of leaky ReLU with slope α
  const zb = tf.tidy(() => tf.sub(z, perChannel(beta)));
  z.dispose();
  const xhat = tf.tidy(() => tf.div(zb, perChannel(gamma)));
  zb.dispose();
  return xhat;
}

function normBackwardComposite(dy: tf.Tensor, xhat: tf.Tensor, invStd: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, alpha: number): tf.Tensor[] {
  // dy where z ≥ 0, α·dy where z < 0, as float masks: tfjs's WebGPU Where takes rank ≤ 4, and its
  // bool → float32 cast keeps the integer buffer, which a later transpose's shader rejects. Each
  // intermediate is freed once the next exists: at most three full-size buffers at once, dx among them.
  const [n, c] = [dy.shape[0]!, dy.shape[4]!];
  return tf.tidy(() => {
    let g = dy;
    if (alpha !== 1) {
      const scaled = tf.mul(xhat, perChannel(gamma));
      const z = then(tf.add(scaled, perChannel(beta)), scaled);
      const minusZ = then(tf.neg(z), z);
      const negative = then(tf.step(minusZ, 0), minusZ); // 1 where z < 0, else 0
      const part = then(tf.mul(negative, 1 - alpha), negative);
      const slope = then(tf.sub(1, part), part);
      g = then(tf.mul(dy, slope), slope);
    }
    const dBeta = channelSum(g);
    const gx = tf.mul(g, xhat);
    const dGamma = then(channelSum(gx), gx);
    const dxhat = tf.mul(g, perChannel(gamma));
    if (g !== dy) g.dispose();
    const meanD = spatialMean(dxhat);
    const dxx = tf.mul(dxhat, xhat);
    const meanDX = then(spatialMean(dxx), dxx);
    // dx = invStd·(dxhat − mean(dxhat) − x̂·mean(dxhat·x̂))
    const inv = tf.reshape(invStd, [n, 1, 1, 1, c]);
    const centred = then(tf.sub(dxhat, meanD), dxhat, meanD);
    const proj = then(tf.mul(xhat, meanDX), meanDX);
    const diff = then(tf.sub(centred, proj), centred, proj);
    const dx = then(tf.mul(diff, inv), diff, inv);
    return [dx, dGamma, dBeta];
  });
}

export function upsampleNearest3d(x: tf.Tensor, factor: number): tf.Tensor {
  if (hasKernel(UPSAMPLE_NEAREST)) return tf.engine().runKernel(UPSAMPLE_NEAREST, { x }, { factor }) as tf.Tensor;
  return tf.tidy(() => {
    const [n, d, h, w, c] = x.shape as number[];
    const f = factor;
    // Repeat along each spatial axis in turn: [n, d, h, w, c] -> [n, d·f, h, w, c] -> …, each step's
    // input freed once the next exists.
    const y1 = tf.tile(tf.reshape(x, [n!, d!, 1, h! * w! * c!]), [1, 1, f, 1]);
    const y2 = then(tf.tile(tf.reshape(y1, [n! * d! * f, h!, 1, w! * c!]), [1, 1, f, 1]), y1);
    const y3 = then(tf.tile(tf.reshape(y2, [n! * d! * f * h! * f, w!, 1, c!]), [1, 1, f, 1]), y2);
    return tf.reshape(y3, [n!, d! * f, h! * f, w! * f, c!]);
  });
}

export function upsampleNearest3dGrad(dy: tf.Tensor, factor: number): tf.Tensor {
  if (hasKernel(UPSAMPLE_NEAREST_GRAD)) return tf.engine().runKernel(UPSAMPLE_NEAREST_GRAD, { dy }, { factor }) as tf.Tensor;
  return tf.tidy(() => {
    const [n, D, H, W, c] = dy.shape as number[];
    const f = factor;
    const [d, h, w] = [D! / f, H! / f, W! / f];
    // One spatial axis at a time, each the sum over the middle axis of a rank-3 view (tfjs's WebGPU shaders
    // take rank ≤ 6), as a product with a row of ones (its reduction would transpose a full copy first).
    const ones = tf.ones([1, 1, f]);
    const sumMiddle = (v: tf.Tensor, m: number, k: number): tf.Tensor => tf.reshape(tf.matMul(ones, tf.reshape(v, [m, f, k])), [m, k]);
    let r = sumMiddle(dy, n! * D! * H! * w, c!);
    r = sumMiddle(r, n! * D! * h, w * c!);
    r = sumMiddle(r, n! * d, h * w * c!);
    return tf.reshape(r, [n!, d, h, w, c!]);
  });
}
