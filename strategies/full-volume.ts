/**
 * full-volume — the whole (divisor-padded) volume in every step and in one inference pass: the reference
 * every other strategy is compared with. `backward: tape` runs plain `tf.grads`, which keeps every saved
 * tensor and gradient to the end of backward; `owned` (default) frees them as backward goes.
 */
import type { MemoryStrategy, StrategyPlugin } from '../core/plugins/index.js';
import { defineSettings } from '../core/config/index.js';
import { fullVolumeSample, fullVolumeShape } from '../core/training/index.js';
import { fullVolumeInference } from '../core/inference/index.js';

const settings = defineSettings({
  backward: {
    type: 'enum',
    values: ['owned', 'tape'],
    default: 'owned',
    description: "'owned': the framework's backward that frees as it goes; 'tape': plain tf.grads (baseline)",
  },
});

const plugin: StrategyPlugin<typeof settings> = {
  kind: 'strategy',
  name: 'full-volume',
  description: 'whole volume per step; one inference pass over the whole volume',
  settings,
  create({ backward }): MemoryStrategy {
    return {
      name: 'full-volume',
      trainingShape: fullVolumeShape,
      sample: fullVolumeSample,
      plan: () => ({ backward }),
      infer: fullVolumeInference,
    };
  },
};

export default plugin;
