/**
 * The SVG plots: which ones the records call for, and that they render (Vega in Node, no canvas) with
 * their titles, axes and series.
 */
import { describe, it, expect } from 'vitest';
import { mkdtempSync, readFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { paretoFront, plotSpecs, writePlots } from '../core/experiment/plots.js';

const settings = (label: string, strategy: Record<string, unknown> = { name: 'patch', settings: {} }, deviceMemory?: number) =>
  JSON.stringify({ label, strategy, training: deviceMemory ? { deviceMemory } : {} });

describe('plots from the records', () => {
  it('draws learning curves and Dice against memory for a strategy sweep with curves', async () => {
    const rows = [
      { trial: 0, trial_id: 'ta', strategy: 'patch', seed: 1, status: 'ok', dice_mean: 0.9, peak_train_bytes: 16 * 2 ** 20, volume_shape: '48x48x48', settings: settings('strategy=patch seed=1') },
      { trial: 1, trial_id: 'tb', strategy: 'swap', seed: 1, status: 'ok', dice_mean: 0.7, peak_train_bytes: 32 * 2 ** 20, volume_shape: '48x48x48', settings: settings('strategy=swap seed=1') },
    ];
    const curves = [
      { trial: 0, trial_id: 'ta', step: 10, train_seconds: 1, voxels_seen: 100, dice_mean: 0.5 },
      { trial: 0, trial_id: 'ta', step: 20, train_seconds: 2, voxels_seen: 200, dice_mean: 0.9 },
      { trial: 1, trial_id: 'tb', step: 5, train_seconds: 3, voxels_seen: 200, dice_mean: 0.7 },
    ];
    expect(plotSpecs(rows, curves).map((p) => p.file)).toEqual(['curves.svg', 'dice-memory.svg']);
    const dir = mkdtempSync(join(tmpdir(), 'volseg-plots-'));
    // A stale plot the records no longer call for is removed; other files stay.
    mkdirSync(join(dir, 'plots'));
    writeFileSync(join(dir, 'plots', 'memory.svg'), '<svg/>');
    writeFileSync(join(dir, 'plots', 'notes.txt'), 'mine');
    const files = await writePlots(dir, rows, curves);
    expect(files.map((f) => f.slice(dir.length + 1))).toEqual(['plots/curves.svg', 'plots/dice-memory.svg']);
    expect(existsSync(join(dir, 'plots', 'memory.svg'))).toBe(false);
    expect(existsSync(join(dir, 'plots', 'notes.txt'))).toBe(true);
    const svg = readFileSync(files[0]!, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    for (const text of ['Validation Dice (mean over regions) against training wall time', 'training wall time (s), validation excluded', 'strategy=patch', 'strategy=swap'])
      expect(svg).toContain(text);
    // Deterministic: the same records draw the same bytes.
    await writePlots(dir, rows, curves);
    expect(readFileSync(files[0]!, 'utf8')).toBe(svg);
  });

  it('draws memory against input edge with the budget, and swap step time against lb per link', async () => {
    const budget = 192 * 2 ** 20;
    const rows = [32, 48, 64].flatMap((edge, i) => [
      { trial: 2 * i, strategy: 'full-volume', seed: 1, status: edge > 48 ? 'did-not-fit' : 'ok', peak_train_bytes: edge ** 3 * 800, volume_shape: `${edge}x${edge}x${edge}`, settings: settings(`dataset.settings.size=${edge} strategy=full-volume`, { name: 'full-volume' }, budget), step_seconds: 1 },
      { trial: 2 * i + 1, strategy: 'swap', seed: 1, status: 'ok', peak_train_bytes: edge ** 3 * 300, volume_shape: `${edge}x${edge}x${edge}`, settings: settings(`dataset.settings.size=${edge} strategy=swap`, { name: 'swap', settings: { lb: i, bandwidth: 16e9 } }, budget), step_seconds: 1.1 + i / 10 },
    ]);
    const plots = plotSpecs(rows, []);
    expect(plots.map((p) => p.file)).toEqual(['memory.svg', 'swap.svg']);
    const dir = mkdtempSync(join(tmpdir(), 'volseg-plots-'));
    const [memory, swap] = await writePlots(dir, rows, []);
    const m = readFileSync(memory!, 'utf8');
    for (const text of ['peak training memory (MiB)', 'input edge (voxels)', 'budget 192 MiB', 'did not fit (peak until it stopped)', 'strategy=full-volume']) expect(m).toContain(text);
    expect(m).not.toContain('dataset.settings.size=');
    const s = readFileSync(swap!, 'utf8');
    for (const text of ['16 GB/s', 'median step time (s)', 'plain step (mean of 2): 1.00 s']) expect(s).toContain(text);
  });

  it('finds the Pareto front: cheapest first, each point better than every cheaper one', () => {
    const p = (configuration: string, cost: number, dice: number) => ({ configuration, cost, dice });
    const front = paretoFront([p('a', 4, 0.9), p('b', 1, 0.5), p('c', 2, 0.45), p('d', 2, 0.7), p('e', 3, 0.7), p('f', 5, 0.88)]);
    expect(front.map((x) => x.configuration)).toEqual(['b', 'd', 'a']);
    expect(paretoFront([])).toEqual([]);
  });

  it('draws the trade-off of three configurations against memory and parameters, marking the front', async () => {
    const row = (trial: number, arch: string, seed: number, dice: number, mib: number, params: number) => ({
      trial, trial_id: `t${trial}`, strategy: 'patch', architecture: arch, seed, status: 'ok', dice_mean: dice, peak_train_bytes: mib * 2 ** 20, params,
      settings: settings(`architecture=${arch} seed=${seed}`),
    });
    const rows = [row(0, 'unet3d', 1, 0.9, 4, 140e3), row(1, 'unet3d', 2, 0.8, 4, 140e3), row(2, 'small', 1, 0.82, 1.5, 40e3), row(3, 'worse', 1, 0.5, 2, 60e3)];
    const plots = plotSpecs(rows, []);
    expect(plots.map((p) => p.file)).toEqual(['dice-memory.svg', 'pareto.svg']);
    const dir = mkdtempSync(join(tmpdir(), 'volseg-pareto-'));
    const files = await writePlots(dir, rows, []);
    const svg = readFileSync(files.find((f) => f.endsWith('pareto.svg'))!, 'utf8');
    for (const text of ['peak training memory (MiB, log)', 'parameters (thousands, log)', 'on the Pareto front', 'dominated', 'architecture=small']) expect(svg).toContain(text);
    // Two configurations are not a trade-off sweep.
    expect(plotSpecs(rows.slice(0, 3), []).map((p) => p.file)).toEqual(['dice-memory.svg']);
  });

  it('draws nothing for a single configuration without curves', () => {
    expect(plotSpecs([{ trial: 0, strategy: 'patch', status: 'ok', dice_mean: 0.5, peak_train_bytes: 1, volume_shape: '8x8x8' }], [])).toEqual([]);
  });
});
