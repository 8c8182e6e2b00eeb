/**
 * The tiled WebGPU Conv3D, Conv3DBackpropInputV2 and Conv3DBackpropFilterV2 (core/backend/kernels/webgpu/)
 * against tfjs's naive WebGPU kernels, which they replace: forward, both gradients run as kernels and both
 * through tf.grads, each within 1e-5 of the naive result relative to its largest magnitude, over the
 * network's convolutions (3×3×3 'same' stride 1 and 2, 1×1×1), a 'valid' one, channel counts that are not
 * multiples of 4, and a batch of 2. A dilated convolution must fall back to the naive kernel. The largest
 * difference, the 32³ filter gradient's (about 5e-6), is mostly the naive kernel's own rounding: it sums
 * 32768 products in one float32 chain; against a float64 sum the tiled result is within 4e-7, tfjs's 5.6e-6.
 *
 * Where WebGPU cannot run the suite skips and says why, unless VOLSEG_REQUIRE_WEBGPU=1 (CI).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { webgpuSkipReason } from './helpers/webgpu.js';

const why = webgpuSkipReason('webgpu-conv3d.test.ts');

interface Case {
  name: string;
  shape: [number, number, number, number, number];
  k: number;
  cout: number;
  stride: number;
  pad: 'same' | 'valid';
}

const CASES: Case[] = [
  { name: '32³ 16→16 k3 s1 same', shape: [1, 32, 32, 32, 16], k: 3, cout: 16, stride: 1, pad: 'same' },
  { name: '17×9×12 4→3 k3 s1 same', shape: [1, 17, 9, 12, 4], k: 3, cout: 3, stride: 1, pad: 'same' },
  { name: '16³ 8→16 k3 s2 same', shape: [1, 16, 16, 16, 8], k: 3, cout: 16, stride: 2, pad: 'same' },
  { name: '8³ 16→3 k1 s1', shape: [1, 8, 8, 8, 16], k: 1, cout: 3, stride: 1, pad: 'same' },
  { name: '9×10×11 5→6 k3 s1 valid', shape: [1, 9, 10, 11, 5], k: 3, cout: 6, stride: 1, pad: 'valid' },
  { name: '7×9×11 1→2 k3 s2 same', shape: [1, 7, 9, 11, 1], k: 3, cout: 2, stride: 2, pad: 'same' },
  { name: '9×6×7 3→20 k3 s2 valid', shape: [1, 9, 6, 7, 3], k: 3, cout: 20, stride: 2, pad: 'valid' },
  { name: 'batch 2, 6×5×7 8→12 k3 s1 same', shape: [2, 6, 5, 7, 8], k: 3, cout: 12, stride: 1, pad: 'same' },
];

const OUTPUTS = ['forward', 'input gradient (kernel)', 'filter gradient (kernel)', 'input gradient (tf.grads)', 'filter gradient (tf.grads)'];

type Kernels = typeof import('../core/backend/kernels/webgpu/index.js');
let kernels: Kernels;

/** max |a − ref| / max |ref| (0 when both are 0), read asynchronously (no synchronous reads on WebGPU). */
async function relativeError(a: tf.Tensor, ref: tf.Tensor): Promise<number> {
  const [d, m] = await Promise.all([tf.max(tf.abs(tf.sub(a, ref))).data(), tf.max(tf.abs(ref)).data()]);
  return m[0] === 0 ? d[0]! : d[0]! / m[0]!;
}

/** The five outputs of one case with the tiled kernels on or off. */
function outputs(on: boolean, c: Case, x: tf.Tensor5D, w: tf.Tensor5D, dy: tf.Tensor5D): tf.Tensor[] {
  kernels.setTiledConv3d(on);
  const y = tf.conv3d(x, w, c.stride, c.pad);
  const dx = tf.engine().runKernel('Conv3DBackpropInputV2', { dy, filter: w }, { strides: c.stride, pad: c.pad, inputShape: x.shape }) as tf.Tensor;
  const dw = tf.engine().runKernel('Conv3DBackpropFilterV2', { x, dy }, { strides: c.stride, pad: c.pad, filterShape: w.shape }) as tf.Tensor;
  const [gx, gw] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv3d(a as tf.Tensor5D, b as tf.Tensor5D, c.stride, c.pad), dy)))([x, w]);
  return [y, dx, dw, gx!, gw!];
}

describe.skipIf(why !== null)('tiled WebGPU 3-D convolutions match tfjs’s naive kernels', () => {
  beforeAll(async () => {
    const backend = await import('../core/backend/index.js');
    await backend.initBackend('webgpu');
    kernels = await import('../core/backend/kernels/webgpu/index.js');
  });

  afterAll(() => kernels?.setTiledConv3d(true));

  for (const [i, c] of CASES.entries()) {
    it(`${c.name}: every output within 1e-5 relative`, async () => {
      const cin = c.shape[4];
      const x = tf.randomNormal(c.shape, 0, 1, 'float32', 10 + i) as tf.Tensor5D;
      const w = tf.randomNormal([c.k, c.k, c.k, cin, c.cout], 0, 1, 'float32', 20 + i) as tf.Tensor5D;
      const yShape = tf.conv3d(x, w, c.stride, c.pad).shape;
      const dy = tf.randomNormal(yShape, 0, 1, 'float32', 30 + i) as tf.Tensor5D;
      const naive = outputs(false, c, x, w, dy);
      const before = kernels.tiledConv3dCalls();
      const tiled = outputs(true, c, x, w, dy);
      const after = kernels.tiledConv3dCalls();
      // Each tiled kernel ran: the forward twice (conv3d and inside tf.grads), each gradient twice.
      expect(after.Conv3D! - before.Conv3D!).toBe(2);
      expect(after.Conv3DBackpropInputV2! - before.Conv3DBackpropInputV2!).toBe(2);
      expect(after.Conv3DBackpropFilterV2! - before.Conv3DBackpropFilterV2!).toBe(2);
      const errors: Record<string, number> = {};
      for (const [k, out] of OUTPUTS.entries()) {
        expect(tiled[k]!.shape, out).toEqual(naive[k]!.shape);
        errors[out] = await relativeError(tiled[k]!, naive[k]!);
      }
      console.info(`${c.name}: max relative error ${Math.max(...Object.values(errors)).toExponential(2)}`);
      for (const [out, e] of Object.entries(errors)) expect(e, `${c.name} ${out}: relative error ${e}`).toBeLessThan(1e-5);
      tf.dispose([x, w, dy, ...naive, ...tiled]);
    }, 120_000);
  }

  it('a dilated convolution runs tfjs’s naive kernel', async () => {
    const x = tf.randomNormal([1, 6, 6, 6, 4], 0, 1, 'float32', 1) as tf.Tensor5D;
    const w = tf.randomNormal([3, 3, 3, 4, 4], 0, 1, 'float32', 2) as tf.Tensor5D;
    kernels.setTiledConv3d(false);
    const naive = tf.conv3d(x, w, 1, 'same', 'NDHWC', 2);
    kernels.setTiledConv3d(true);
    const before = kernels.tiledConv3dCalls().Conv3D;
    const y = tf.conv3d(x, w, 1, 'same', 'NDHWC', 2);
    expect(kernels.tiledConv3dCalls().Conv3D).toBe(before);
    expect(await relativeError(y, naive)).toBe(0);
    tf.dispose([x, w, naive, y]);
  });
});
