/** Conv3D on tfjs's WebGPU backend, register-tiled (programs.ts); null where tfjs's own kernel must run. */
import { backend_util, type Conv3DAttrs, type KernelFunc, type TensorInfo } from '@tensorflow/tfjs-core';
import { Conv3DForwardProgram, tiledUnsupported, type Tile, type WebGPUBackendLike } from './programs.js';

/**
 * Outputs per invocation: 16 along W × 4 channels on wide volumes, 8 × 4 (or 4 × 4) on narrow ones, where
 * more would be wasted past the edge and the shader (lavapipe compiles it in about a second) would grow.
 */
export function forwardTile(c: backend_util.Conv3DInfo): Tile {
  return { P: c.outWidth >= 32 ? 16 : c.outWidth >= 8 ? 8 : 4, N: 4 };
}

export function conv3dTiled({ inputs, backend, attrs }: Parameters<KernelFunc>[0], tile?: Tile): TensorInfo | null {
  const { x, filter } = inputs as { x: TensorInfo; filter: TensorInfo };
  const { strides, pad, dilations, dataFormat } = attrs as unknown as Conv3DAttrs;
  if (dataFormat !== undefined && dataFormat !== 'NDHWC') return null;
  if (x.dtype !== 'float32' || filter.dtype !== 'float32') return null;
  const c = backend_util.computeConv3DInfo(
    x.shape as [number, number, number, number, number],
    filter.shape as [number, number, number, number, number],
    strides,
    dilations ?? 1,
    pad,
  );
  if (tiledUnsupported(c) !== null) return null;
  const program = new Conv3DForwardProgram(c, tile ?? forwardTile(c));
  return (backend as unknown as WebGPUBackendLike).runWebGPUProgram(program, [x, filter], 'float32', program.uniformData);
}
