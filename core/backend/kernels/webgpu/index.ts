/**
 * Tiled 3-D convolutions for tfjs's WebGPU backend: Conv3D, Conv3DBackpropInputV2 and
 * Conv3DBackpropFilterV2 are registered for 'webgpu' over tfjs's own, which are naive shaders (one
 * invocation per output element, every operand re-read per multiply-add). Here each invocation computes a
 * register tile, an implicit GEMM with the channel axis as K/N: P outputs along W × N channels, reading each
 * input vec4 once for N channels and each filter vec4 once for P outputs (programs.ts). That is what pays on
 * lavapipe, the CPU Vulkan device this project tests on (Mesa 25.0): it runs 8 invocations per AVX
 * register and turns every buffer read inside a loop into 8 scalar loads with bounds checks, so the reads
 * per multiply-add decide the speed. Workgroup-memory tiles would not cut them (lavapipe scalarises those
 * reads the same way) and a workgroupBarrier made a test loop twice as slow there, so the tiles live in
 * registers. Speed-ups measured: experiments/cli/bench-webgpu-conv.ts, results/bench/webgpu-conv3d.json.
 *
 * Convolutions the tiled programs do not take (dilation ≠ 1, non-float32 operands, more than 2³¹ − 1
 * elements, NCDHW) run the naive kernel each replaced; so does every convolution while the tfjs flag
 * `VOLSEG_WEBGPU_TILED_CONV3D` is false (setTiledConv3d, or `tf.env().set(TILED_CONV3D_FLAG, false)`
 * where this module cannot be imported).
 *
 * Imports nothing from tfjs-backend-webgpu (programs.ts declares the few fields it uses), so the project
 * type-checks and loads without the optional package.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import { conv3dTiled } from './Conv3D.js';
import { conv3dBackpropInputTiled } from './Conv3DBackpropInputV2.js';
import { conv3dBackpropFilterTiled } from './Conv3DBackpropFilterV2.js';

/** The tfjs environment flag that switches the tiled kernels on (default) and off. */
export const TILED_CONV3D_FLAG = 'VOLSEG_WEBGPU_TILED_CONV3D';

const TILED: Record<string, (args: Parameters<KernelFunc>[0]) => TensorInfo | null> = {
  [tf.Conv3D]: (args) => conv3dTiled(args),
  [tf.Conv3DBackpropInputV2]: (args) => conv3dBackpropInputTiled(args),
  [tf.Conv3DBackpropFilterV2]: (args) => conv3dBackpropFilterTiled(args),
};

/** tfjs's own WebGPU KernelConfigs that registerWebgpuConvKernels replaced, by kernel name. */
const originals = new Map<string, KernelConfig>();
/** Calls the tiled programs served, by kernel name. */
const tiledCalls: Record<string, number> = Object.fromEntries(Object.keys(TILED).map((k) => [k, 0]));

let flagReady = false;

/** Registers the flag with tfjs (once per process: another copy of this module may have done it). */
function ensureFlag(): void {
  if (flagReady) return;
  flagReady = true;
  try {
    tf.env().get(TILED_CONV3D_FLAG);
  } catch {
    tf.env().registerFlag(TILED_CONV3D_FLAG, () => true);
  }
}

/** Whether the tiled kernels are used (where they support the convolution). */
export function tiledConv3dEnabled(): boolean {
  ensureFlag();
  return tf.env().getBool(TILED_CONV3D_FLAG);
}

/** Switches between the tiled kernels (true, the default) and tfjs's naive ones, at run time. */
export function setTiledConv3d(on: boolean): void {
  ensureFlag();
  tf.env().set(TILED_CONV3D_FLAG, on);
}

/**
 * Registers the tiled kernels for 'webgpu' in place of tfjs's (once; the originals are kept and run where
 * the tiled ones do not apply). Needs tfjs-backend-webgpu imported first: without its kernels this does nothing.
 */
export function registerWebgpuConvKernels(): void {
  ensureFlag();
  for (const [name, tiled] of Object.entries(TILED)) {
    if (originals.has(name)) continue;
    const original = tf.getKernel(name, 'webgpu');
    if (!original) continue;
    originals.set(name, original);
    tf.unregisterKernel(name, 'webgpu');
    tf.registerKernel({
      ...original,
      kernelFunc: (args) => {
        const out = tiledConv3dEnabled() ? tiled(args) : null;
        if (!out) return original.kernelFunc(args);
        tiledCalls[name]!++;
        return out;
      },
    });
  }
}

/** How many calls of each kernel the tiled programs served (the rest ran tfjs's naive kernels). */
export function tiledConv3dCalls(): Readonly<Record<string, number>> {
  return { ...tiledCalls };
}

/** tfjs's own WebGPU kernel that `name` replaced (undefined before registerWebgpuConvKernels). */
export function originalWebgpuConvKernel(name: string): KernelConfig | undefined {
  return originals.get(name);
}
