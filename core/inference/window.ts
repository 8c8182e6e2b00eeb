/** Running a trained network on windows of an image (shared by evaluation and `npm run predict`). */
import * as tf from '@tensorflow/tfjs-core';
import type { Executor, StepObserver, Network } from '../engine/index.js';
import { activate, type Params } from '../training/index.js';
import type { Shape3 } from '../types.js';
import { cropTo, padShapeTo, padTo } from '../data/index.js';

/**
 * Runs the network on one window (any shape; the predictor pads it to the network's divisor and crops the
 * output back) and returns probabilities [d, h, w, K].
 */
export type WindowPredictor = (window: Float32Array, shape: Shape3) => Promise<Float32Array>;

/**
 * Runs the network on one input window: the output (window minus the network's margin) is padded to the
 * divisor at the far end, then forward, activation, and the output is cropped back.
 */
export function windowPredictor(executor: Executor, net: Network, params: Params, channels: number, observer?: StepObserver): WindowPredictor {
  const m = net.outputMargin ?? [0, 0, 0];
  return async (window: Float32Array, shape: Shape3) => {
    const outShape = shape.map((n, i) => n - 2 * m[i]!) as Shape3;
    const paddedOut = padShapeTo(outShape, net.divisor);
    const paddedIn = paddedOut.map((n, i) => n + 2 * m[i]!) as Shape3;
    const probs = tf.tidy(() => {
      const x = tf.tensor(padTo(window, shape, channels, paddedIn), [1, ...paddedIn, channels]);
      const logits = executor.forward(x, params, observer);
      return activate(logits, net.activation);
    });
    const out = (await probs.data()) as Float32Array;
    probs.dispose();
    return cropTo(out, paddedOut, net.outChannels, outShape);
  };
}
