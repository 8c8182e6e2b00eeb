/**
 * Half-precision packing on tfjs's WebGPU backend, for me-fcn's half-precision saves: VolPackHalf turns a
 * float32 tensor of n values into [ceil(n/2)] int32, two IEEE binary16 values per element (value 2k in
 * the low 16 bits of element k, as the host version in architectures/me-fcn.ts lays them out), with
 * WGSL's pack2x16float; VolUnpackHalf undoes it with unpack2x16float. Both are one pass on the device:
 * nothing is read back to the host. The package is never imported (plain program objects, as programs.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import { PACK_HALF, UNPACK_HALF } from '../names.js';
import type { WebGPUBackendLike, WebGPUProgramLike } from './programs.js';

const WORKGROUP = 64;

/** A one-output-element-per-invocation program over `size` outputs (tfjs folds long dispatches itself). */
function flatProgram(outputShape: number[], key: string, body: string): WebGPUProgramLike & { size: boolean } {
  const size = outputShape.reduce((a, b) => a * b, 1);
  return {
    outputShape,
    shaderKey: key,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: [Math.max(1, Math.ceil(size / WORKGROUP)), 1, 1],
    workgroupSize: [WORKGROUP, 1, 1],
    variableNames: ['A'],
    size: true,
    uniforms: 'n : i32,',
    getUserCode: () => `
      fn main(index : i32) {
        if (index < uniforms.size) {
          ${body}
        }
      }`,
  };
}

const packHalf: KernelFunc = ({ inputs, backend }) => {
  const { x } = inputs as { x: TensorInfo };
  if (x.dtype !== 'float32') throw new Error(`${PACK_HALF}: expected float32, got ${x.dtype}`);
  const n = tf.util.sizeFromShape(x.shape);
  // The last element's high half is 0 when n is odd.
  const program = flatProgram(
    [Math.ceil(n / 2)],
    'vol_pack_half',
    `let i = index * 2;
          var b = 0.0;
          if (i + 1 < uniforms.n) { b = A[i + 1]; }
          result[index] = bitcast<i32>(pack2x16float(vec2<f32>(A[i], b)));`,
  );
  return (backend as unknown as WebGPUBackendLike).runWebGPUProgram(program, [x], 'int32', [{ type: 'int32', data: [n] }]);
};

const unpackHalf: KernelFunc = ({ inputs, backend, attrs }) => {
  const { packed } = inputs as { packed: TensorInfo };
  const shape = (attrs as unknown as { shape: number[] }).shape;
  const n = tf.util.sizeFromShape(shape);
  if (packed.dtype !== 'int32' || tf.util.sizeFromShape(packed.shape) !== Math.ceil(n / 2))
    throw new Error(`${UNPACK_HALF}: a packed tensor of ${tf.util.sizeFromShape(packed.shape)} ${packed.dtype} elements cannot hold [${shape}]`);
  const program = flatProgram(
    [...shape],
    'vol_unpack_half',
    `let v = unpack2x16float(bitcast<u32>(A[index / 2]));
          setOutputAtIndex(index, select(v.x, v.y, (index & 1) == 1));`,
  );
  return (backend as unknown as WebGPUBackendLike).runWebGPUProgram(program, [packed], 'float32', [{ type: 'int32', data: [n] }]);
};

export const HALF_KERNELS: readonly KernelConfig[] = [
  { kernelName: PACK_HALF, backendName: 'webgpu', kernelFunc: packHalf },
  { kernelName: UNPACK_HALF, backendName: 'webgpu', kernelFunc: unpackHalf },
];
