/** The registered architectures: one line per plugin file. */
import type { ArchitecturePlugin } from '../core/types.js';
import unet3d from './unet3d.js';

export const architectures: ArchitecturePlugin[] = [unet3d];
