/** The dataset plugins of the framework: one registration line per plugin. */
import type { DatasetPlugin } from '../core/plugins/index.js';
import syntheticBrats from './synthetic-brats.js';
import brats from './brats.js';
import msd from './msd.js';
import syntheticMicroct from './synthetic-microct.js';

export const datasets: DatasetPlugin[] = [syntheticBrats, brats, msd, syntheticMicroct];
