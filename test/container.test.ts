/** Plugins are found by name; unknown names list the registered ones; a name registers once. */
import { describe, it, expect } from 'vitest';
import { buildContainer } from '../experiments/cli/plugins.js';
import { createContainer } from '../core/plugins/container.js';
import fullVolume from '../strategies/full-volume.js';

describe('plugin catalog', () => {
  it('resolves every registered plugin by name through the container', () => {
    const { catalog } = buildContainer();
    expect(catalog.names('strategy')).toEqual(expect.arrayContaining(['full-volume', 'patch', 'checkpoint']));
    expect(catalog.names('dataset')).toEqual(expect.arrayContaining(['synthetic-brats', 'brats', 'msd']));
    expect(catalog.names('architecture')).toContain('unet3d');
    for (const kind of ['strategy', 'dataset', 'architecture'] as const)
      for (const name of catalog.names(kind)) expect(catalog.get(kind, name).name).toBe(name);
  });

  it('an unknown name fails with the list of registered names', () => {
    const { catalog } = buildContainer();
    expect(() => catalog.get('strategy', 'pach')).toThrow(/unknown strategy "pach"; registered strategies: full-volume, patch/);
  });

  it('a name registers once', () => {
    expect(() => createContainer([fullVolume, fullVolume] as never)).toThrow(/strategy "full-volume" is registered twice/);
  });
});
