/** The registered architectures: one line per plugin file. */
import type { ArchitecturePlugin } from '../core/plugins/index.js';
import unet3d from './unet3d.js';
import meFcn from './me-fcn.js';
import meunetCascade from './meunet-cascade.js';

export const architectures: ArchitecturePlugin[] = [unet3d, meFcn, meunetCascade];
