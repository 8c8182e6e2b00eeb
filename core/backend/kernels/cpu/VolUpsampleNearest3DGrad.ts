/** VolUpsampleNearest3DGrad on tfjs's cpu backend, in JavaScript (core/backend/native re-registers it with C++ code when built). */
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import { UPSAMPLE_NEAREST_GRAD } from '../names.js';
import { output, values } from './arrays.js';

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

export const upsampleNearestGradConfig: KernelConfig = { kernelName: UPSAMPLE_NEAREST_GRAD, backendName: 'cpu', kernelFunc: upsampleNearestGrad };
