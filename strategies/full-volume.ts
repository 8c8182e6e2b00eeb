/**
 * full-volume — the whole (divisor-padded) volume in every step and in one inference pass: the reference
 * every other strategy is compared with. `backward: tape` runs plain `tf.grads`, which keeps every saved
 * tensor and gradient to the end of backward; `owned` (default) frees them as backward goes.
 */
import type { StrategyPlugin } from '../core/types.js';
import type { MemoryStrategy } from '../core/plugins/contracts.js';
import { extractBox, padShapeTo } from '../core/data/volume.js';
import type { Network } from '../core/engine/graph.js';
import type { Shape3 } from '../core/types.js';

/** The input extent for a whole case: the divisor-padded volume plus the network's context margin. */
export function fullVolumeShape(caseShape: Shape3, net: Network): Shape3 {
  const m = net.outputMargin ?? [0, 0, 0];
  return padShapeTo(caseShape, net.divisor).map((n, i) => n + 2 * m[i]!) as Shape3;
}

/** The whole case as one sample (zeros in the padding and the margin). */
export function fullVolumeSample(): MemoryStrategy['sample'] {
  return (c, _rng, net) => {
    const shape = fullVolumeShape(c.shape, net);
    const m = net.outputMargin ?? [0, 0, 0];
    const start = m.map((v) => -v) as Shape3;
    return {
      image: extractBox(c.image, c.shape, c.channels, start, shape),
      target: extractBox(c.target, c.shape, c.outChannels, start, shape),
      shape,
    };
  };
}

/** One inference pass over the whole image (with the network's context margin around it). */
export const fullVolumeInfer: MemoryStrategy['infer'] = (input, predict, net) => {
  const m = net.outputMargin ?? [0, 0, 0];
  if (!m.some(Boolean)) return predict(input.image, input.shape);
  const shape = input.shape.map((n, i) => n + 2 * m[i]!) as Shape3;
  return predict(extractBox(input.image, input.shape, input.channels, m.map((v) => -v) as Shape3, shape), shape);
};

const plugin: StrategyPlugin = {
  kind: 'strategy',
  name: 'full-volume',
  description: 'whole volume per step; one inference pass over the whole volume',
  settings: {
    backward: {
      type: 'enum',
      values: ['owned', 'tape'],
      default: 'owned',
      description: "'owned': the framework's backward that frees as it goes; 'tape': plain tf.grads (baseline)",
    },
  },
  create(settings): MemoryStrategy {
    const backward = settings.backward as 'owned' | 'tape';
    return {
      name: 'full-volume',
      trainingShape: fullVolumeShape,
      sample: fullVolumeSample(),
      plan: () => ({ backward }),
      infer: fullVolumeInfer,
    };
  },
};

export default plugin;
