/** VolInstanceNormBackward on tfjs's cpu backend, in JavaScript (core/backend/native re-registers it with C++ code when built). */
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import { INSTANCE_NORM_BACKWARD, type NormBackwardAttrs } from '../names.js';
import { dims, output, sameBuffer, values } from './arrays.js';

const instanceNormBackward: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, xhat, invStd, gamma, beta } = inputs as Record<string, TensorInfo>;
  const { alpha, inPlace = false, fromOutput = false } = attrs as unknown as NormBackwardAttrs;
  if (fromOutput && !(alpha > 0)) throw new Error(`${INSTANCE_NORM_BACKWARD}: rebuilding x̂ from the output needs a slope alpha > 0, got ${alpha}`);
  const dyv = values(backend, dy!);
  const inv = values(backend, invStd!);
  const g = values(backend, gamma!);
  const b = values(backend, beta!);
  const { n, s, c } = dims(dy!.shape);
  // fromOutput: the saved tensor is y, and x̂ is rebuilt from it (one pass, into a buffer of this call's).
  const saved = values(backend, xhat!);
  const xh = fromOutput ? xhatFromY(saved, g, b, alpha, c) : saved;
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

/** x̂ = (z − β)/γ with z = y ≥ 0 ? y : y/α (the inverse of the leaky ReLU), channels last. */
function xhatFromY(y: Float32Array, gamma: Float32Array, beta: Float32Array, alpha: number, c: number): Float32Array {
  const out = new Float32Array(y.length);
  for (let i = 0, k = 0; i < y.length; i++, k = k + 1 === c ? 0 : k + 1) {
    const v = y[i]!;
    out[i] = ((v >= 0 ? v : v / alpha) - beta[k]!) / gamma[k]!;
  }
  return out;
}

export const instanceNormBackwardConfig: KernelConfig = { kernelName: INSTANCE_NORM_BACKWARD, backendName: 'cpu', kernelFunc: instanceNormBackward };
