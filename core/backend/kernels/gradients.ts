/**
 * Gradients of the project's kernels, so that layers built on them also run under plain `tf.grads` (the
 * baseline the owned backward pass is compared with). tfjs keeps one gradient per kernel name, for every
 * backend.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { GradConfig, NamedAttrMap } from '@tensorflow/tfjs-core';
import { INSTANCE_NORM_BACKWARD, INSTANCE_NORM_FORWARD, UPSAMPLE_NEAREST, UPSAMPLE_NEAREST_GRAD } from './names.js';

export const instanceNormGrad: GradConfig = {
  kernelName: INSTANCE_NORM_FORWARD,
  inputsToSave: ['gamma', 'beta'],
  outputsToSave: [false, true, true],
  gradFunc: (dy, saved, attrs) => {
    const [gamma, beta, xhat, invStd] = saved as tf.Tensor[];
    const dys = dy as tf.Tensor[];
    // One kernel computes all three gradients, but the tape runs each thunk in its own tidy: dgamma and
    // dbeta are kept to outlive the first thunk's scope (tf.grads returns them, so nothing leaks).
    let cached: tf.Tensor[] | null = null;
    const run = (): tf.Tensor[] => {
      if (!cached || cached[0]!.isDisposed) {
        cached = tf
          .engine()
          .runKernel(
            INSTANCE_NORM_BACKWARD,
            { dy: dys[0]!, xhat: xhat!, invStd: invStd!, gamma: gamma!, beta: beta! },
            { alpha: (attrs as { alpha: number }).alpha },
          ) as tf.Tensor[];
        tf.keep(cached[1]!);
        tf.keep(cached[2]!);
      }
      return cached;
    };
    return { x: () => run()[0]!, gamma: () => run()[1]!, beta: () => run()[2]! };
  },
};

export const upsampleGrad: GradConfig = {
  kernelName: UPSAMPLE_NEAREST,
  gradFunc: (dy, _saved, attrs) => ({
    x: () => tf.engine().runKernel(UPSAMPLE_NEAREST_GRAD, { dy: dy as tf.Tensor }, attrs as NamedAttrMap) as tf.Tensor,
  }),
};
