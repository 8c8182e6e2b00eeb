/** The registered memory strategies: one line per plugin file. */
import type { StrategyPlugin } from '../core/plugins/index.js';
import fullVolume from './full-volume.js';
import patch from './patch.js';
import checkpoint from './checkpoint/index.js';
import swap from './swap/index.js';
import spatial from './spatial/index.js';

export const strategies: StrategyPlugin[] = [fullVolume, patch, checkpoint, swap, spatial];
