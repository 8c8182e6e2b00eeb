/** VolInstanceNormForward on tfjs's cpu backend, in JavaScript (core/backend/native re-registers it with C++ code when built). */
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import { INSTANCE_NORM_FORWARD, type NormForwardAttrs } from '../names.js';
import { dims, output, sameBuffer, values } from './arrays.js';

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

export const instanceNormForwardConfig: KernelConfig = { kernelName: INSTANCE_NORM_FORWARD, backendName: 'cpu', kernelFunc: instanceNormForward };
