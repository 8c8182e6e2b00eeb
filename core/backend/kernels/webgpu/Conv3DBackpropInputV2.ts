/** Conv3DBackpropInputV2 on tfjs's WebGPU backend, register-tiled (programs.ts); null where tfjs's own kernel must run. */
import { backend_util, type Conv3DBackpropInputV2Attrs, type KernelFunc, type TensorInfo } from '@tensorflow/tfjs-core';
import { Conv3DBackpropInputProgram, tiledUnsupported, type Tile, type WebGPUBackendLike } from './programs.js';

/** Outputs per invocation: 8 along W × 8 channels on wide volumes, 8 × 4 (or 4 × 4) on narrow ones. */
export function inputGradTile(c: backend_util.Conv3DInfo): Tile {
  return c.inWidth >= 32 ? { P: 8, N: 8 } : { P: c.inWidth >= 8 ? 8 : 4, N: 4 };
}

export function conv3dBackpropInputTiled({ inputs, backend, attrs }: Parameters<KernelFunc>[0], tile?: Tile): TensorInfo | null {
  const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
  const { strides, pad, inputShape } = attrs as unknown as Conv3DBackpropInputV2Attrs;
  if (dy.dtype !== 'float32' || filter.dtype !== 'float32') return null;
  const c = backend_util.computeConv3DInfo(inputShape, filter.shape as [number, number, number, number, number], strides, 1, pad);
  if (tiledUnsupported(c) !== null) return null;
  const program = new Conv3DBackpropInputProgram(c, tile ?? inputGradTile(c));
  return (backend as unknown as WebGPUBackendLike).runWebGPUProgram(program, [dy, filter], 'float32', program.uniformData);
}
