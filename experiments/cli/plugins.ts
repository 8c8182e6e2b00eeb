/**
 * The composition root: the only place that imports every plugin list and puts them in the container.
 * Adding a plugin means one file in its folder plus one line in that folder's index.ts.
 */
import { architectures } from '../../architectures/index.js';
import { datasets } from '../../datasets/index.js';
import { strategies } from '../../strategies/index.js';
import { createContainer, type Plugin } from '../../core/plugins/index.js';

export function buildContainer() {
  return createContainer([...datasets, ...architectures, ...strategies] as Plugin<unknown>[]);
}
