/** Training samples that several strategies share: the whole case, padded to the network's divisor. */
import type { Network } from '../engine/index.js';
import { extractBox, padShapeTo } from '../data/index.js';
import type { PreparedCase, Rng, Shape3, TrainingSample } from '../types.js';

/** The input extent for a whole case: the divisor-padded volume plus the network's context margin. */
export function fullVolumeShape(caseShape: Shape3, net: Network): Shape3 {
  const m = net.outputMargin ?? [0, 0, 0];
  const padded = padShapeTo(caseShape, net.divisor);
  return [padded[0] + 2 * m[0], padded[1] + 2 * m[1], padded[2] + 2 * m[2]];
}

/** The whole case as one sample (zeros in the padding and the margin). */
export function fullVolumeSample(c: PreparedCase, _rng: Rng, net: Network): TrainingSample {
  const shape = fullVolumeShape(c.shape, net);
  const m = net.outputMargin ?? [0, 0, 0];
  const start: Shape3 = [-m[0], -m[1], -m[2]];
  return {
    image: extractBox(c.image, c.shape, c.channels, start, shape),
    target: extractBox(c.target, c.shape, c.outChannels, start, shape),
    shape,
  };
}
