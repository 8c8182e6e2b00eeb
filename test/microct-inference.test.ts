/**
 * Whole-volume cascade inference within a device budget (experiments/cli/microct-inference.ts): the
 * inference estimate equals the meter's peak of a window, the device peak of a whole-volume run does not
 * grow with the volume (the stitched output is on the host), a window over the budget is refused before
 * anything runs, bad flags name the flag, and the records' tables say whether the peaks agree.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { initBackend } from '../core/backend/index.js';
import { Executor } from '../core/engine/index.js';
import { windowPredictor } from '../core/inference/index.js';
import { DeviceMemoryMeter, estimateInferencePeak } from '../core/memory/index.js';
import { instantiate, type PluginCatalog } from '../core/plugins/index.js';
import { initParams } from '../core/training/index.js';
import type { Shape3 } from '../core/types.js';
import { buildContainer } from '../experiments/cli/plugins.js';
import { parseOptions, runMicroctInference, type MicroctInferenceOptions } from '../experiments/cli/microct-inference.js';
import { devicePeakChecks, renderMicroctSummary, upsertRecord } from '../experiments/cli/microct-records.js';

let catalog: PluginCatalog;
let backend = '';

beforeAll(async () => {
  backend = (await initBackend('cpu')).label;
  catalog = buildContainer().catalog;
});

const SMALL = { patch: [32, 32, 32] as Shape3, stage1Filters: [4, 8, 8], stage2Filters: [4, 8] };

function options(size: number, over: Partial<MicroctInferenceOptions> = {}): MicroctInferenceOptions {
  return { size: [size, size, size], caseIndex: 0, dataSeed: 0, architecture: SMALL, overlap: 0.25, blend: 'network', deviceMemory: 64 * 2 ** 20, model: null, seed: 1, command: 'test', ...over };
}

describe('estimateInferencePeak', () => {
  it("equals the meter's peak of one window (parameters, input, forward, activation)", async () => {
    const cases: [string, Record<string, unknown>, { inChannels: number; outChannels: number; activation: 'softmax' | 'sigmoid' }, Shape3][] = [
      ['meunet-cascade', { patch: 32, stage1Filters: [8, 16, 32], stage2Filters: [8, 16, 32] }, { inChannels: 1, outChannels: 3, activation: 'softmax' }, [48, 48, 48]],
      ['meunet-cascade', { patch: 32, stage1Filters: [4, 8, 8], stage2Filters: [4, 8], join: 'input-channel' }, { inChannels: 2, outChannels: 2, activation: 'sigmoid' }, [48, 48, 48]],
      ['unet3d', { depth: 3, baseFilters: 8 }, { inChannels: 4, outChannels: 3, activation: 'sigmoid' }, [32, 32, 32]],
    ];
    for (const [name, settings, spec, shape] of cases) {
      const meter = new DeviceMemoryMeter().attach();
      try {
        const net = instantiate(catalog.architecture(name), settings, { baseDir: '.' }).build(spec);
        const params = initParams(net, 1);
        const predict = windowPredictor(new Executor(net), net, params, spec.inChannels);
        const window = new Float32Array(shape[0] * shape[1] * shape[2] * spec.inChannels).map((_, i) => Math.sin(i));
        await predict(window, shape);
        meter.ledger.resetPeak();
        await predict(window, shape);
        expect(estimateInferencePeak(net, [1, ...shape, spec.inChannels]).peak, `${name} ${JSON.stringify(settings)}`).toBe(meter.ledger.peak);
        for (const p of params.values()) p.dispose();
      } finally {
        meter.detach();
      }
    }
  });
});

describe('microct-inference', () => {
  it('keeps the device peak flat as the volume grows (8× the voxels: the same peak), and records it', async () => {
    const log = (): void => undefined;
    const small = await runMicroctInference(catalog, options(40), backend, log);
    const large = await runMicroctInference(catalog, options(80), backend, log);
    expect(small.voxels).toBe(40 ** 3);
    expect(large.voxels).toBe(80 ** 3);
    // 40: windows at 0, 8 per axis (stride 24, the last flush); 80: 0, 24, 48.
    expect(small.inference.windows).toBe(8);
    expect(large.inference.windows).toBe(27);
    expect(large.inference.context).toEqual([48, 48, 48]);
    expect(large.device.peakBytes).toBe(small.device.peakBytes);
    // The whole inference's peak is one window's: parameters and the window, as estimated.
    expect(large.device.peakBytes).toBe(large.device.estimatedPeakBytes);
    expect(large.host.arrays.probabilities).toBe(80 ** 3 * 3 * 4);
    expect(Object.keys(large.dice)).toEqual(['tube', 'sheet']);
    expect(large.weights).toBe('initialisation (seed 1)');
    const checks = devicePeakChecks(upsertRecord([small], large));
    expect(checks).toHaveLength(1);
    expect(checks[0]!.equal).toBe(true);
    expect(checks[0]!.sentence).toMatch(/does not grow with the volume/);
    const summary = renderMicroctSummary([small, large]);
    expect(summary).toMatch(/\| 80×80×80 \| 0\.5 M \| 27 \|/);
    // A re-run of the same configuration and size replaces its record.
    expect(upsertRecord([small, large], { ...large, date: 'later' })).toHaveLength(2);
  }, 120_000);

  it('refuses a window over the device budget before generating anything, saying what it needs', async () => {
    await expect(runMicroctInference(catalog, options(40, { deviceMemory: 2 ** 20 }), backend, () => undefined)).rejects.toThrow(
      /--device-memory 1\.00 MiB: one window does not fit: the cascade on a 48×48×48 input needs an estimated [\d.]+ MiB .*raise --device-memory to at least/,
    );
  });

  it('names the flag of a bad value', async () => {
    expect(() => parseOptions(['--size', 'huge'])).toThrow(/--size huge: expected one positive integer edge or D×H×W/);
    expect(() => parseOptions(['--overlap', '1'])).toThrow(/--overlap 1: expected a number in \[0, 0\.95\]/);
    expect(() => parseOptions(['--device-memory', 'lots'])).toThrow(/--device-memory lots: expected a byte size/);
    expect(() => parseOptions(['--blend', 'max'])).toThrow(/--blend max: expected network, gaussian or constant/);
    expect(() => parseOptions(['--stage1-filters', '8'])).toThrow(/--stage1-filters 8: expected at least two/);
    expect(() => parseOptions(['--model', 'x', '--patch', '32'])).toThrow(/--patch cannot be given with --model/);
    expect(() => parseOptions(['--sise', '40'])).toThrow(/unknown option --sise/);
    expect(parseOptions(['--size', '397', '--size', '400x500x600']).sizes).toEqual([
      [397, 397, 397],
      [400, 500, 600],
    ]);
    await expect(runMicroctInference(catalog, options(8), backend, () => undefined)).rejects.toThrow(/--size 8x8x8: edge 8 \(axis D\) is below 16 voxels/);
    await expect(runMicroctInference(catalog, options(40, { architecture: { ...SMALL, patch: [40, 40, 40] } }), backend, () => undefined)).rejects.toThrow(
      /--patch\/--stage1-filters\/--stage2-filters \(patch \[40,40,40\].*meunet-cascade:/,
    );
  });
});

