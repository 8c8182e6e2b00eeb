/**
 * Host → device copies that start now. tfjs's WebGPU backend keeps a new tensor's values on the host and
 * uploads them at the first kernel that reads it; a swap-in issued ahead of use (strategies/swap) must
 * allocate its device buffer and queue the copy when it is issued, as a GPU framework's
 * non-blocking copy does. Elsewhere (the cpu backend, tfjs-node) a tensor is on its device once made.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import { capabilities } from './capabilities.js';

interface DeferredUploadBackend {
  uploadToGPU(dataId: object): void;
}

/** A float32 tensor of `values` whose device copy is allocated and queued now. */
export function tensorOnDevice(values: Float32Array, shape: number[]): Tensor {
  const t = tf.tensor(values, shape, 'float32');
  const backend = tf.backend() as unknown as Partial<DeferredUploadBackend>;
  // The pooled-buffer backend (tfjs's WebGPU) defers uploads; the copy joins its command queue here.
  if (capabilities().bufferPool && typeof backend.uploadToGPU === 'function') backend.uploadToGPU(t.dataId);
  return t;
}
