/** Inference in one pass over the whole image, which every full-volume strategy shares. */
import type { Network } from '../engine/index.js';
import { extractBox } from '../data/index.js';
import type { InferenceInput, Shape3 } from '../types.js';
import type { WindowPredictor } from './window.js';

/** Probabilities [D, H, W, K] from one pass over the whole image (with the network's context margin around it). */
export function fullVolumeInference(input: InferenceInput, predict: WindowPredictor, net: Network): Promise<Float32Array> {
  const m = net.outputMargin ?? [0, 0, 0];
  if (!m.some(Boolean)) return predict(input.image, input.shape);
  const shape: Shape3 = [input.shape[0] + 2 * m[0], input.shape[1] + 2 * m[1], input.shape[2] + 2 * m[2]];
  return predict(extractBox(input.image, input.shape, input.channels, [-m[0], -m[1], -m[2]], shape), shape);
}
