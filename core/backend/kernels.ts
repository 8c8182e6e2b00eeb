/**
 * Kernels this project's layers need that tfjs lacks or composes slowly, registered by name into the
 * cpu backend (tfjs's kernel registry is the plugin mechanism: the native addon in core/native
 * re-registers the same names with AVX2 code, and these JavaScript versions are its reference).
 *
 * - VolInstanceNormForward {x, gamma, beta} {epsilon, alpha, withXhat?, inPlace?} -> [y, xhat, invStd]
 *     instance norm over the spatial axes of NDHWC fused with leaky ReLU (alpha = 1: no activation);
 *     withXhat false: [y, invStd] (no x̂ buffer); inPlace: y is written over x (x's own buffer).
 *     Composed from tfjs ops the same thing takes ~10 element-wise kernels and as many 5-D temporaries.
 * - VolInstanceNormBackward {dy, xhat, invStd, gamma, beta} {alpha} -> [dx, dgamma, dbeta]
 * - VolUpsampleNearest3D {x} {factor} -> y ; VolUpsampleNearest3DGrad {dy} {factor} -> dx
 *
 * Gradients are registered too, so the same layers also run under plain `tf.grads` (the baseline that
 * the owned backward pass is compared with).
 */
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core alone registers no gradients (the @tensorflow/tfjs bundle does); the loss and tf.grads need them.
import '@tensorflow/tfjs';
import type { KernelFunc, TensorInfo, NamedAttrMap, GradConfig } from '@tensorflow/tfjs-core';

export const INSTANCE_NORM_FORWARD = 'VolInstanceNormForward';
export const INSTANCE_NORM_BACKWARD = 'VolInstanceNormBackward';
export const UPSAMPLE_NEAREST = 'VolUpsampleNearest3D';
export const UPSAMPLE_NEAREST_GRAD = 'VolUpsampleNearest3DGrad';

interface CpuBackendLike {
  data: { get(dataId: object): { values: unknown } };
  makeTensorInfo(shape: number[], dtype: 'float32', values: Float32Array): TensorInfo;
  incRef(dataId: object): void;
}

/** Attributes of VolInstanceNormForward (withXhat default true, inPlace default false). */
export interface NormForwardAttrs {
  epsilon: number;
  alpha: number;
  withXhat?: boolean;
  inPlace?: boolean;
}

function values(backend: unknown, t: TensorInfo): Float32Array {
  const v = (backend as CpuBackendLike).data.get(t.dataId).values;
  if (!(v instanceof Float32Array)) throw new Error(`kernel input of dtype ${t.dtype}: only float32 is supported`);
  return v;
}

function output(backend: unknown, shape: number[], data: Float32Array): TensorInfo {
  return (backend as CpuBackendLike).makeTensorInfo(shape, 'float32', data);
}

/** An output that is `t`'s own buffer, written in place (one more reference, as tfjs's Reshape does). */
export function sameBuffer(backend: unknown, t: TensorInfo): TensorInfo {
  (backend as CpuBackendLike).incRef(t.dataId);
  return { dataId: t.dataId, shape: t.shape.slice(), dtype: t.dtype };
}

/** Spatial size S and channels C of an NDHWC shape. */
function dims(shape: number[]): { n: number; s: number; c: number } {
  if (shape.length !== 5) throw new Error(`expected a 5-D NDHWC tensor, got shape [${shape}]`);
  return { n: shape[0]!, s: shape[1]! * shape[2]! * shape[3]!, c: shape[4]! };
}

const instanceNormForward: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, gamma, beta } = inputs as { x: TensorInfo; gamma: TensorInfo; beta: TensorInfo };
  const { epsilon, alpha, withXhat = true, inPlace = false } = attrs as unknown as NormForwardAttrs;
  const xv = values(backend, x);
  const g = values(backend, gamma);
  const b = values(backend, beta);
  const { n, s, c } = dims(x.shape);
  // In place: y overwrites x element by element (each y[i] reads only x[i] and per-channel statistics).
  const y = inPlace ? xv : new Float32Array(xv.length);
  const xhat = withXhat ? new Float32Array(xv.length) : null;
  const invStd = new Float32Array(n * c);
  const mean = new Float64Array(c);
  const m2 = new Float64Array(c);
  for (let b0 = 0; b0 < n; b0++) {
    const base = b0 * s * c;
    mean.fill(0);
    m2.fill(0);
    for (let i = 0; i < s; i++) {
      const o = base + i * c;
      for (let k = 0; k < c; k++) mean[k]! += xv[o + k]!;
    }
    for (let k = 0; k < c; k++) mean[k]! /= s;
    // Two passes: variance from centred values, as single-pass sums lose digits on large volumes.
    for (let i = 0; i < s; i++) {
      const o = base + i * c;
      for (let k = 0; k < c; k++) {
        const d = xv[o + k]! - mean[k]!;
        m2[k]! += d * d;
      }
    }
    for (let k = 0; k < c; k++) invStd[b0 * c + k] = 1 / Math.sqrt(m2[k]! / s + epsilon);
    for (let i = 0; i < s; i++) {
      const o = base + i * c;
      for (let k = 0; k < c; k++) {
        const xh = (xv[o + k]! - mean[k]!) * invStd[b0 * c + k]!;
        if (xhat) xhat[o + k] = xh;
        const z = g[k]! * xh + b[k]!;
        y[o + k] = z >= 0 ? z : alpha * z;
      }
    }
  }
  const yOut = inPlace ? sameBuffer(backend, x) : output(backend, x.shape, y);
  const stats = output(backend, [n, c], invStd);
  return xhat ? [yOut, output(backend, x.shape, xhat), stats] : [yOut, stats];
};

const instanceNormBackward: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, xhat, invStd, gamma, beta } = inputs as Record<string, TensorInfo>;
  const { alpha, inPlace } = attrs as unknown as { alpha: number; inPlace?: boolean };
  const dyv = values(backend, dy!);
  const xh = values(backend, xhat!);
  const inv = values(backend, invStd!);
  const g = values(backend, gamma!);
  const b = values(backend, beta!);
  const { n, s, c } = dims(dy!.shape);
  // In place: dx overwrites dy element by element (each dx[i] reads only dy[i] and per-channel sums).
  const dx = inPlace ? dyv : new Float32Array(dyv.length);
  const dgamma = new Float64Array(c);
  const dbeta = new Float64Array(c);
  const sumD = new Float64Array(c);
  const sumDX = new Float64Array(c);
  for (let b0 = 0; b0 < n; b0++) {
    const base = b0 * s * c;
    sumD.fill(0);
    sumDX.fill(0);
    for (let i = 0; i < s; i++) {
      const o = base + i * c;
      for (let k = 0; k < c; k++) {
        const z = g[k]! * xh[o + k]! + b[k]!;
        const gr = z >= 0 ? dyv[o + k]! : alpha * dyv[o + k]!;
        dgamma[k]! += gr * xh[o + k]!;
        dbeta[k]! += gr;
        const dxh = gr * g[k]!;
        sumD[k]! += dxh;
        sumDX[k]! += dxh * xh[o + k]!;
      }
    }
    for (let k = 0; k < c; k++) {
      sumD[k]! /= s;
      sumDX[k]! /= s;
    }
    for (let i = 0; i < s; i++) {
      const o = base + i * c;
      for (let k = 0; k < c; k++) {
        const z = g[k]! * xh[o + k]! + b[k]!;
        const gr = z >= 0 ? dyv[o + k]! : alpha * dyv[o + k]!;
        dx[o + k] = inv[b0 * c + k]! * (gr * g[k]! - sumD[k]! - xh[o + k]! * sumDX[k]!);
      }
    }
  }
  return [
    inPlace ? sameBuffer(backend, dy!) : output(backend, dy!.shape, dx),
    output(backend, [c], Float32Array.from(dgamma)),
    output(backend, [c], Float32Array.from(dbeta)),
  ];
};

const upsampleNearest: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x } = inputs as { x: TensorInfo };
  const f = (attrs as unknown as { factor: number }).factor;
  const [n, d, h, w, c] = x.shape as [number, number, number, number, number];
  const xv = values(backend, x);
  const D = d * f, H = h * f, W = w * f;
  const y = new Float32Array(n * D * H * W * c);
  for (let b = 0; b < n; b++)
    for (let z = 0; z < D; z++)
      for (let yy = 0; yy < H; yy++) {
        const src = ((b * d + Math.floor(z / f)) * h + Math.floor(yy / f)) * w;
        const dst = ((b * D + z) * H + yy) * W;
        for (let xx = 0; xx < W; xx++) {
          const so = (src + Math.floor(xx / f)) * c;
          const dO = (dst + xx) * c;
          for (let k = 0; k < c; k++) y[dO + k] = xv[so + k]!;
        }
      }
  return output(backend, [n, D, H, W, c], y);
};

const upsampleNearestGrad: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy } = inputs as { dy: TensorInfo };
  const f = (attrs as unknown as { factor: number }).factor;
  const [n, D, H, W, c] = dy.shape as [number, number, number, number, number];
  if (D % f || H % f || W % f) throw new Error(`${UPSAMPLE_NEAREST_GRAD}: shape [${dy.shape}] not divisible by ${f}`);
  const d = D / f, h = H / f, w = W / f;
  const dyv = values(backend, dy);
  const dx = new Float32Array(n * d * h * w * c);
  for (let b = 0; b < n; b++)
    for (let z = 0; z < D; z++)
      for (let yy = 0; yy < H; yy++) {
        const dst = ((b * d + Math.floor(z / f)) * h + Math.floor(yy / f)) * w;
        const src = ((b * D + z) * H + yy) * W;
        for (let xx = 0; xx < W; xx++) {
          const dO = (dst + Math.floor(xx / f)) * c;
          const so = (src + xx) * c;
          for (let k = 0; k < c; k++) dx[dO + k]! += dyv[so + k]!;
        }
      }
  return output(backend, [n, d, h, w, c], dx);
};

const instanceNormGrad: GradConfig = {
  kernelName: INSTANCE_NORM_FORWARD,
  inputsToSave: ['gamma', 'beta'],
  outputsToSave: [false, true, true],
  gradFunc: (dy, saved, attrs) => {
    const [gamma, beta, xhat, invStd] = saved as tf.Tensor[];
    const dys = dy as tf.Tensor[];
    // One kernel computes all three gradients, but the tape runs each thunk in its own tidy: dgamma and
    // dbeta are kept to outlive the first thunk's scope (tf.grads returns them, so nothing leaks).
    let cached: tf.Tensor[] | null = null;
    const run = (): tf.Tensor[] => {
      if (!cached || cached[0]!.isDisposed) {
        cached = tf
          .engine()
          .runKernel(
            INSTANCE_NORM_BACKWARD,
            { dy: dys[0]!, xhat: xhat!, invStd: invStd!, gamma: gamma!, beta: beta! },
            { alpha: (attrs as { alpha: number }).alpha },
          ) as tf.Tensor[];
        tf.keep(cached[1]!);
        tf.keep(cached[2]!);
      }
      return cached;
    };
    return { x: () => run()[0]!, gamma: () => run()[1]!, beta: () => run()[2]! };
  },
};

const upsampleGrad: GradConfig = {
  kernelName: UPSAMPLE_NEAREST,
  gradFunc: (dy, _saved, attrs) => ({
    x: () => tf.engine().runKernel(UPSAMPLE_NEAREST_GRAD, { dy: dy as tf.Tensor }, attrs as NamedAttrMap) as tf.Tensor,
  }),
};

let registered = false;

/** Registers the JavaScript kernels for the cpu backend (once). Native kernels may replace them later. */
export function registerProjectKernels(): void {
  if (registered) return;
  registered = true;
  const kernels: [string, KernelFunc][] = [
    [INSTANCE_NORM_FORWARD, instanceNormForward],
    [INSTANCE_NORM_BACKWARD, instanceNormBackward],
    [UPSAMPLE_NEAREST, upsampleNearest],
    [UPSAMPLE_NEAREST_GRAD, upsampleNearestGrad],
  ];
  for (const [kernelName, kernelFunc] of kernels) {
    if (!tf.getKernel(kernelName, 'cpu')) tf.registerKernel({ kernelName, backendName: 'cpu', kernelFunc });
  }
  for (const g of [instanceNormGrad, upsampleGrad]) {
    if (!tf.getGradient(g.kernelName)) tf.registerGradient(g);
  }
}

/** Whether the active backend has this project's kernel (the cpu backend does; others use composites). */
function hasKernel(name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}

const leaky = (z: tf.Tensor, alpha: number): tf.Tensor => (alpha === 1 ? z : tf.leakyRelu(z, alpha));

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
    const y = leaky(tf.add(tf.mul(xhat, gamma), beta), alpha);
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
    const z = tf.add(tf.mul(xhat, gamma), beta);
    const g = alpha === 1 ? dy : tf.where(tf.greaterEqual(z, 0), dy, tf.mul(dy, alpha));
    const dxhat = tf.mul(g, gamma);
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
    const r = tf.reshape(dy, [n!, D! / f, f, H! / f, f, W! / f, f, c!]);
    return tf.sum(r, [2, 4, 6]);
  });
}
