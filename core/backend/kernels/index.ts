/**
 * The project's kernels, registered by kernel name per backend as tfjs registers its own
 * (`registerKernel({kernelName, backendName, kernelFunc})`): one file per kernel under the backend's folder
 * (cpu/, webgpu/), their gradients in gradients.ts, and the ops that call them in ops.ts. The native addon
 * (core/backend/native-kernels.ts) registers C++ versions under the same names for the cpu backend later.
 */
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core alone registers no gradients (the @tensorflow/tfjs bundle does); the loss and tf.grads need them.
import '@tensorflow/tfjs';
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { instanceNormForwardConfig } from './cpu/VolInstanceNormForward.js';
import { instanceNormBackwardConfig } from './cpu/VolInstanceNormBackward.js';
import { upsampleNearestConfig } from './cpu/VolUpsampleNearest3D.js';
import { upsampleNearestGradConfig } from './cpu/VolUpsampleNearest3DGrad.js';
import { instanceNormGrad, upsampleGrad } from './gradients.js';
import { HALF_KERNELS } from './webgpu/half.js';
import { capabilitiesChanged } from '../capabilities.js';

export * from './names.js';

/** The project's kernels, per backend: a backend missing here runs the ops' tfjs compositions. */
export const PROJECT_KERNELS: readonly KernelConfig[] = [
  instanceNormForwardConfig,
  instanceNormBackwardConfig,
  upsampleNearestConfig,
  upsampleNearestGradConfig,
  ...HALF_KERNELS,
];

let registered = false;

/** Registers the project's kernels and their gradients (once). Native kernels may replace the cpu ones later. */
export function registerProjectKernels(): void {
  if (registered) return;
  registered = true;
  for (const k of PROJECT_KERNELS) if (!tf.getKernel(k.kernelName, k.backendName)) tf.registerKernel(k);
  for (const g of [instanceNormGrad, upsampleGrad]) if (!tf.getGradient(g.kernelName)) tf.registerGradient(g);
  capabilitiesChanged();
}

/** Whether the active backend has a kernel registered under `name`. */
export function hasKernel(name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}
