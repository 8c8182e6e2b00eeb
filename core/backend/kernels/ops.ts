/**
 * The ops the layers call for the project's kernels: each runs the kernel registered under its name for
 * the active backend, or, where that backend registered none, the same function composed of tfjs ops.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NamedAttrMap } from '@tensorflow/tfjs-core';
import { INSTANCE_NORM_BACKWARD, INSTANCE_NORM_FORWARD, UPSAMPLE_NEAREST, UPSAMPLE_NEAREST_GRAD, type NormForwardAttrs } from './names.js';
import { hasKernel } from './index.js';

const leaky = (z: tf.Tensor, alpha: number): tf.Tensor => (alpha === 1 ? z : tf.leakyRelu(z, alpha));

/**
 * A per-channel vector [C] as [1, 1, 1, 1, C] for broadcasting over channels-last volumes: the same
 * arithmetic, and it keeps tfjs's WebGPU backend off its shared-memory broadcast program, whose shader
 * does not compile for rank 5 ("cannot index type 'vec5'").
 */
const perChannel = (v: tf.Tensor): tf.Tensor => (v.rank === 1 ? tf.reshape(v, [1, 1, 1, 1, v.shape[0]!]) : v);

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
  const [y, xhat, invStd] = tf.tidy(() => {
    const { mean, variance } = tf.moments(x, [1, 2, 3], true);
    const invStd = tf.rsqrt(tf.add(variance, epsilon));
    const xhat = tf.mul(tf.sub(x, mean), invStd);
    const y = leaky(tf.add(tf.mul(xhat, perChannel(gamma)), perChannel(beta)), alpha);
    return [y, xhat, tf.reshape(invStd, [x.shape[0]!, x.shape[4]!])];
  });
  if (withXhat) return [y, xhat, invStd];
  xhat.dispose();
  return [y, null, invStd];
}

export function instanceNormActBackward(
  dy: tf.Tensor,
  xhat: tf.Tensor,
  invStd: tf.Tensor,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  alpha: number,
  inPlace = false,
): tf.Tensor[] {
  // inPlace: dx is written into dy's buffer (the caller guarantees nothing else shares it).
  if (hasKernel(INSTANCE_NORM_BACKWARD))
    return tf.engine().runKernel(INSTANCE_NORM_BACKWARD, { dy, xhat, invStd, gamma, beta }, { alpha, inPlace }) as tf.Tensor[];
  return tf.tidy(() => {
    const z = tf.add(tf.mul(xhat, perChannel(gamma)), perChannel(beta));
    // dy where z ≥ 0, α·dy elsewhere, as masks (tfjs's WebGPU Where takes rank ≤ 4); exact either way.
    const m = tf.cast(tf.greaterEqual(z, 0), 'float32');
    const g = alpha === 1 ? dy : tf.add(tf.mul(dy, m), tf.mul(tf.mul(dy, alpha), tf.sub(1, m)));
    const dxhat = tf.mul(g, perChannel(gamma));
    const axes = [1, 2, 3];
    const meanD = tf.mean(dxhat, axes, true);
    const meanDX = tf.mean(tf.mul(dxhat, xhat), axes, true);
    const inv = tf.reshape(invStd, [dy.shape[0]!, 1, 1, 1, dy.shape[4]!]);
    const dx = tf.mul(inv, tf.sub(tf.sub(dxhat, meanD), tf.mul(xhat, meanDX)));
    return [dx, tf.sum(tf.mul(g, xhat), [0, 1, 2, 3]), tf.sum(g, [0, 1, 2, 3])];
  });
}

export function upsampleNearest3d(x: tf.Tensor, factor: number): tf.Tensor {
  if (hasKernel(UPSAMPLE_NEAREST)) return tf.engine().runKernel(UPSAMPLE_NEAREST, { x }, { factor }) as tf.Tensor;
  return tf.tidy(() => {
    const [n, d, h, w, c] = x.shape as number[];
    const f = factor;
    // Repeat along each spatial axis in turn: [n, d, h, w, c] -> [n, d·f, h, w, c] -> …
    let y = tf.reshape(tf.tile(tf.reshape(x, [n!, d!, 1, h! * w! * c!]), [1, 1, f, 1]), [n!, d! * f, h!, w!, c!]);
    y = tf.reshape(tf.tile(tf.reshape(y, [n! * d! * f, h!, 1, w! * c!]), [1, 1, f, 1]), [n!, d! * f, h! * f, w!, c!]);
    return tf.reshape(tf.tile(tf.reshape(y, [n! * d! * f * h! * f, w!, 1, c!]), [1, 1, f, 1]), [n!, d! * f, h! * f, w! * f, c!]);
  });
}

export function upsampleNearest3dGrad(dy: tf.Tensor, factor: number): tf.Tensor {
  if (hasKernel(UPSAMPLE_NEAREST_GRAD)) return tf.engine().runKernel(UPSAMPLE_NEAREST_GRAD, { dy }, { factor }) as tf.Tensor;
  return tf.tidy(() => {
    const [n, D, H, W, c] = dy.shape as number[];
    const f = factor;
    const [d, h, w] = [D! / f, H! / f, W! / f];
    // One spatial axis at a time, each a rank-3 sum (tfjs's WebGPU shaders take rank ≤ 6): W, then H, then D.
    let r = tf.sum(tf.reshape(dy, [n! * D! * H! * w, f, c!]), 1);
    r = tf.sum(tf.reshape(r, [n! * D! * h, f, w * c!]), 1);
    r = tf.sum(tf.reshape(r, [n! * d, f, h * w * c!]), 1);
    return tf.reshape(r, [n!, d, h, w, c!]);
  });
}
