/**
 * Updates that write into buffers instead of allocating (cpu backend): gradient sums, Adam's update, and
 * the optimizer run inside backward. Each must give exactly what the allocating path gives, and must
 * refuse a buffer that something else shares.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { addInto, exclusiveValues } from '../core/in-place.js';
import { Adam, initParams, type Params } from '../core/optimizer.js';
import { Executor, type StepPlan } from '../core/executor.js';
import { stepLoss } from '../core/loss.js';
import { DeviceMemoryMeter } from '../core/memory.js';
import checkpoint from '../strategies/checkpoint.js';
import { createSwapStrategy } from '../strategies/swap.js';
import { cpu, smallUNet, batch, estimateAndMeasure, ESTIMATOR_SIZES } from './helpers/step.js';
import type { Network } from '../core/graph.js';

beforeAll(cpu);

describe('in-place gradient sums', () => {
  it('write into an exclusively owned buffer', () => {
    const a = tf.tensor([1, 2, 3]);
    const g = tf.tensor([10, 20, 30]);
    const r = addInto(a, g);
    expect(r).toBe(a);
    expect(Array.from(r.dataSync())).toEqual([11, 22, 33]);
    expect(g.isDisposed).toBe(true);
    r.dispose();
  });

  it('allocate where a clone shares the buffer, leaving the clone untouched', () => {
    const b = tf.tensor([1, 2, 3]);
    const alias = tf.clone(b);
    expect(exclusiveValues(b)).toBeNull();
    const r = addInto(b, tf.tensor([1, 1, 1]));
    expect(r).not.toBe(b);
    expect(b.isDisposed).toBe(true);
    expect(Array.from(alias.dataSync())).toEqual([1, 2, 3]);
    expect(Array.from(r.dataSync())).toEqual([2, 3, 4]);
    tf.dispose([r, alias]);
  });

  it("refuse a contiguous slice (the cpu backend's view into its input's buffer)", () => {
    const big = tf.tensor([1, 2, 3, 4]);
    const view = tf.slice(big, [2], [2]);
    expect(exclusiveValues(view)).toBeNull();
    const r = addInto(view, tf.tensor([5, 5]));
    expect(Array.from(big.dataSync())).toEqual([1, 2, 3, 4]);
    expect(Array.from(r.dataSync())).toEqual([8, 9]);
    tf.dispose([big, r]);
  });
});

/** Parameters after two Adam steps, with Adam after backward or inside it. */
async function train(net: Network, plan: StepPlan, inBackward: boolean): Promise<Map<string, Float32Array>> {
  const params: Params = initParams(net, 5);
  const adam = new Adam({ learningRate: 1e-2 });
  const { x, y } = batch(net, [16, 16, 8]);
  const ex = new Executor(net);
  for (let s = 0; s < 2; s++) {
    const loss = stepLoss(y, 'dice+ce', net.activation, net);
    if (inBackward) {
      adam.begin();
      const r = await ex.trainStep(x, params, loss, plan, undefined, (name, g) => adam.update(params, name, g));
      expect(r.grads.size).toBe(0);
    } else adam.step(params, (await ex.trainStep(x, params, loss, plan)).grads);
  }
  const out = new Map([...params].map(([k, t]) => [k, Float32Array.from(t.dataSync() as Float32Array)]));
  tf.dispose([x, y, ...params.values()]);
  adam.dispose();
  return out;
}

describe('the optimizer inside backward', () => {
  const net = smallUNet(3, 4, 2, 3);
  const shape = [1, 16, 16, 8, 2];
  const plans: Record<string, () => StepPlan> = {
    owned: () => ({}),
    tape: () => ({ backward: 'tape' }),
    checkpoint: () => checkpoint.create({ segments: 0, split: 'search' }, { baseDir: '.' }).plan(net, shape),
    swap: () => createSwapStrategy({ lb: 0, outLag: 0 }).plan(net, shape),
  };
  for (const [name, plan] of Object.entries(plans))
    it(`gives the same parameters as Adam after backward: ${name}`, async () => {
      const before = tf.memory().numTensors;
      const after = await train(net, plan(), false);
      const inside = await train(net, plan(), true);
      for (const [k, v] of after) expect(Array.from(inside.get(k)!), k).toEqual(Array.from(v));
      expect(tf.memory().numTensors).toBe(before);
    });
});

describe('the estimator with the optimizer inside backward and swap-out lag', () => {
  const meter = new DeviceMemoryMeter();
  beforeAll(() => void meter.attach());
  afterAll(() => meter.detach());

  it('is within ±10% of the measured peak at three sizes', async () => {
    const net = smallUNet(3, 8, 4, 3);
    const inBackward = { optimizerInBackward: true };
    for (const spatial of ESTIMATOR_SIZES) {
      const shape = [1, ...spatial, 4];
      const plans: Record<string, () => StepPlan> = {
        owned: () => ({}),
        checkpoint: () => checkpoint.create({ segments: 0, split: 'search' }, { baseDir: '.' }).plan(net, shape),
        'swap lb 0 outLag 0': () => createSwapStrategy({ lb: 0, outLag: 0, minBytes: 0 }).plan(net, shape),
      };
      for (const [name, make] of Object.entries(plans)) {
        const { ratio, message } = await estimateAndMeasure(meter, net, spatial, make(), name, inBackward);
        expect(Math.abs(ratio - 1), message).toBeLessThanOrEqual(0.1);
      }
      // With overlap (lb 1, outLag 1) a transfer that finishes early frees early: the estimate, which
      // books each transfer for its whole allowed window, is an upper bound.
      const overlap = createSwapStrategy({ lb: 1, outLag: 1, minBytes: 0 }).plan(net, shape);
      const { ratio, message } = await estimateAndMeasure(meter, net, spatial, overlap, 'swap lb 1 outLag 1', inBackward);
      expect(ratio, message).toBeGreaterThanOrEqual(0.99);
      expect(ratio, message).toBeLessThanOrEqual(1.2);
    }
  });
});
