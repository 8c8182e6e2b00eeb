/**
 * Conv3DBackpropFilterV2 on tfjs's WebGPU backend, register-tiled (programs.ts); null where tfjs's own
 * kernel must run. The filter has few elements, so the invocations (one per tile of it) are few: the rows
 * of dy are split among up to TARGET_INVOCATIONS / tiles groups of invocations, whose partial sums a second
 * program adds up. Those partial sums are memory the step's estimate does not count, so they are held to
 * an eighth of dy's size (none at all on small layers: one split, no second program).
 */
import { backend_util, type Conv3DBackpropFilterV2Attrs, type KernelFunc, type TensorInfo } from '@tensorflow/tfjs-core';
import { Conv3DBackpropFilterProgram, Conv3DFilterSumProgram, WORKGROUP, width, tiledUnsupported, type Tile, type WebGPUBackendLike } from './programs.js';

/** One tap × 4 input × 16 output channels per invocation (P is unused here). */
export const FILTER_GRAD_TILE: Tile = { P: 1, N: 16 };
/** About this many invocations in all, where the partial sums' memory allows. */
const TARGET_INVOCATIONS = 8192;
/** The partial sums take at most this fraction of dy's bytes. */
const PARTIAL_FRACTION = 1 / 8;

/** `splitsOverride` fixes the number of row splits (for tuning); by default TARGET_INVOCATIONS and PARTIAL_FRACTION set it. */
export function conv3dBackpropFilterTiled({ inputs, backend, attrs }: Parameters<KernelFunc>[0], tile: Tile = FILTER_GRAD_TILE, splitsOverride?: number): TensorInfo | null {
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const { strides, pad, filterShape } = attrs as unknown as Conv3DBackpropFilterV2Attrs;
  if (x.dtype !== 'float32' || dy.dtype !== 'float32') return null;
  const c = backend_util.computeConv3DInfo(x.shape as [number, number, number, number, number], filterShape, strides, 1, pad);
  if (tiledUnsupported(c) !== null) return null;
  const gpu = backend as unknown as WebGPUBackendLike;
  const rows = c.batchSize * c.outDepth * c.outHeight;
  const probe = new Conv3DBackpropFilterProgram(c, tile, 1);
  const perSplit = probe.dispatch[0] * WORKGROUP;
  const dySize = dy.shape.reduce((a, b) => a * b, 1);
  const byMemory = Math.floor((dySize * PARTIAL_FRACTION) / (probe.units * width(c.outChannels)));
  const splits = splitsOverride ?? Math.max(1, Math.min(rows, byMemory, Math.round(TARGET_INVOCATIONS / perSplit)));
  if (splits === 1) return gpu.runWebGPUProgram(probe, [x, dy], 'float32', probe.uniformData);
  const program = new Conv3DBackpropFilterProgram(c, tile, splits);
  const part = gpu.runWebGPUProgram(program, [x, dy], 'float32', program.uniformData);
  const sum = new Conv3DFilterSumProgram(c.filterShape, program.units, width(c.outChannels), splits);
  const out = gpu.runWebGPUProgram(sum, [part], 'float32', sum.uniformData);
  gpu.disposeData(part.dataId);
  return out;
}
