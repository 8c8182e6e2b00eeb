/**
 * The invariant every full-volume strategy must keep: the same gradients as the plain step. Plus the
 * memory claims of the owned backward and checkpointing, and the estimator against the meter.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { initParams } from '../core/training/optimizer.js';
import { DeviceMemoryMeter } from '../core/memory/meter.js';
import checkpoint, { balancedSegments } from '../strategies/checkpoint/index.js';
import { Conv3d, type BackwardArgs, type Network } from '../core/engine/index.js';
import { cpu, smallUNet, batch, gradients, worstRelativeDifference, measuredPeak, estimateAndMeasure, ESTIMATOR_SIZES } from './helpers/step.js';

beforeAll(cpu);

describe('owned backward and checkpointing give the plain step gradients', () => {
  for (const spatial of [
    [16, 16, 16],
    [24, 16, 8],
  ] as [number, number, number][]) {
    it(`at ${spatial.join('x')}`, async () => {
      const net = smallUNet();
      const params = initParams(net, 7);
      const { x, y } = batch(net, spatial);
      const before = tf.memory().numTensors;
      const tape = await gradients(net, params, x, y, { backward: 'tape' });
      const owned = await gradients(net, params, x, y, {});
      const plans = {
        levels: { recompute: net.segments },
        balanced: { recompute: balancedSegments(net, [1, ...spatial, 2], 4) },
        search: checkpoint.create({ segments: 0, split: 'search', lean: false, budget: 0, margin: 0 }, { baseDir: '.' }).plan(net, [1, ...spatial, 2]),
      };
      // The owned step uses the fused loss, the tape tfjs's ops: equal up to float32 rounding.
      expect(worstRelativeDifference(owned, tape)).toBeLessThanOrEqual(1e-5);
      for (const [name, plan] of Object.entries(plans)) {
        const g = await gradients(net, params, x, y, plan);
        // Recomputing runs the same kernels on the same inputs: bit-identical to the owned step.
        expect(worstRelativeDifference(g, owned), name).toBe(0);
        expect(worstRelativeDifference(g, tape), name).toBeLessThanOrEqual(1e-5);
      }
      // Lean saves rebuild each normalisation's x̂ from its output: equal up to float32 rounding.
      const lean = {
        'levels, lean': { recompute: net.segments, saveMode: 'lean' as const },
        'search, lean': checkpoint.create({ segments: 0, split: 'search', lean: true, budget: 0, margin: 0 }, { baseDir: '.' }).plan(net, [1, ...spatial, 2]),
      };
      for (const [name, plan] of Object.entries(lean)) {
        const g = await gradients(net, params, x, y, plan);
        expect(worstRelativeDifference(g, owned), name).toBeLessThanOrEqual(1e-5);
        expect(worstRelativeDifference(g, tape), name).toBeLessThanOrEqual(1e-5);
      }
      expect(tf.memory().numTensors).toBe(before);
      x.dispose();
      y.dispose();
    });
  }
});

describe('memory', () => {
  const meter = new DeviceMemoryMeter();
  beforeAll(() => void meter.attach());
  afterAll(() => meter.detach());

  it('the owned backward needs at most 70% of tf.grads, checkpointing less than the owned step', async () => {
    const net = smallUNet(4, 8, 4, 3);
    const spatial: [number, number, number] = [32, 32, 32];
    const shape = [1, ...spatial, 4];
    const tape = await measuredPeak(meter, net, spatial, { backward: 'tape' });
    const owned = await measuredPeak(meter, net, spatial, {});
    const ckpt = await measuredPeak(meter, net, spatial, checkpoint.create({ segments: 0, split: 'search', lean: false, budget: 0, margin: 0 }, { baseDir: '.' }).plan(net, shape));
    const lean = await measuredPeak(meter, net, spatial, checkpoint.create({ segments: 0, split: 'search', lean: true, budget: 0, margin: 0 }, { baseDir: '.' }).plan(net, shape));
    expect(owned / tape).toBeLessThanOrEqual(0.7);
    expect(ckpt / owned).toBeLessThan(0.8);
    expect(lean).toBeLessThan(ckpt);
  });

  it("a convolution lets its saved input go before its input gradient: lower peaks, estimated as measured", async () => {
    // The same network with every convolution keeping its saves to the end of its backward.
    const net = smallUNet(3, 8, 4, 3);
    const late: Network = {
      ...net,
      nodes: net.nodes.map((n) => (n.layer instanceof Conv3d ? { ...n, layer: Object.assign(Object.create(n.layer) as Conv3d, { releasesSavesEarly: false, backward: (a: BackwardArgs) => n.layer.backward({ ...a, release: undefined }) }) } : n)),
    };
    const spatial: [number, number, number] = [24, 24, 24];
    for (const plan of [{}, { recompute: net.segments, saveMode: 'lean' as const }]) {
      const early = await estimateAndMeasure(meter, net, spatial, plan, 'early release');
      const kept = await estimateAndMeasure(meter, late, spatial, plan, 'saves to the end');
      expect(Math.abs(early.ratio - 1), early.message).toBeLessThanOrEqual(0.1);
      expect(Math.abs(kept.ratio - 1), kept.message).toBeLessThanOrEqual(0.1);
      const measured = (m: string): number => Number(/measured (\d+)/.exec(m)![1]);
      expect(measured(early.message), `${early.message}; ${kept.message}`).toBeLessThan(measured(kept.message));
    }
  });

  it('the estimator is within ±10% of the measured peak for each plan at three sizes', async () => {
    const net = smallUNet(3, 8, 4, 3);
    for (const spatial of ESTIMATOR_SIZES) {
      const shape = [1, ...spatial, 4];
      const plans = {
        tape: { backward: 'tape' as const },
        owned: {},
        checkpoint: checkpoint.create({ segments: 0, split: 'search', lean: false, budget: 0, margin: 0 }, { baseDir: '.' }).plan(net, shape),
        'checkpoint, lean': checkpoint.create({ segments: 0, split: 'search', lean: true, budget: 0, margin: 0 }, { baseDir: '.' }).plan(net, shape),
        levels: { recompute: net.segments },
        'levels, lean': { recompute: net.segments, saveMode: 'lean' as const },
      };
      for (const [name, plan] of Object.entries(plans)) {
        const { ratio, message } = await estimateAndMeasure(meter, net, spatial, plan, name);
        expect(Math.abs(ratio - 1), message).toBeLessThanOrEqual(0.1);
      }
    }
  });
});
