/**
 * full-volume — the whole (divisor-padded) volume in every step and in one inference pass: the reference
 * every other strategy is compared with. `backward: tape` runs plain `tf.grads`, which keeps every saved
 * tensor and gradient to the end of backward; `owned` (default) frees them as backward goes.
 */
import type { StrategyPlugin } from '../core/types.js';
import type { MemoryStrategy } from '../core/strategy.js';
import { padShapeTo, padTo } from '../core/volume.js';

export function fullVolumeSample(): MemoryStrategy['sample'] {
  return (c, _rng, net) => {
    const shape = padShapeTo(c.shape, net.divisor);
    return {
      image: padTo(c.image, c.shape, c.channels, shape),
      target: padTo(c.target, c.shape, c.outChannels, shape),
      shape,
    };
  };
}

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
      trainingShape: (caseShape, net) => padShapeTo(caseShape, net.divisor),
      sample: fullVolumeSample(),
      plan: () => ({ backward }),
      infer: (input, predict) => predict(input.image, input.shape),
    };
  },
};

export default plugin;
