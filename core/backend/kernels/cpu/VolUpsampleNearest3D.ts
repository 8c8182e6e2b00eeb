/** VolUpsampleNearest3D on tfjs's cpu backend, in JavaScript (core/backend/native re-registers it with C++ code when built). */
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import { UPSAMPLE_NEAREST } from '../names.js';
import { output, values } from './arrays.js';

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

export const upsampleNearestConfig: KernelConfig = { kernelName: UPSAMPLE_NEAREST, backendName: 'cpu', kernelFunc: upsampleNearest };
