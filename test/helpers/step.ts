/** Shared set-up for tests that run training steps: cpu backend, a small unet3d, reproducible inputs. */
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../core/backend/backends.js';
import { buildUNet3d } from '../../architectures/unet3d.js';
import { Executor } from '../../core/engine/executor.js';
import type { StepPlan } from '../../core/engine/plan.js';
import { Adam, initParams, type Params } from '../../core/training/optimizer.js';
import { train } from '../../core/training/loop.js';
import { stepLoss } from '../../core/training/loss.js';
import { DeviceMemoryMeter } from '../../core/memory/meter.js';
import { estimatePeak } from '../../core/memory/estimator.js';
import type { Network } from '../../core/engine/graph.js';

export async function cpu(): Promise<void> {
  await initBackend('cpu');
}

export function smallUNet(depth = 3, baseFilters = 4, inChannels = 2, outChannels = 3): Network {
  return buildUNet3d(
    { inChannels, outChannels, activation: 'sigmoid' },
    { depth, baseFilters, residual: true, deepSupervision: true, negativeSlope: 0.01 },
  );
}

export function batch(net: Network, spatial: [number, number, number], seed = 3): { x: tf.Tensor; y: tf.Tensor } {
  const x = tf.randomNormal([1, ...spatial, net.inChannels], 0, 1, 'float32', seed);
  // step(u − 0.7) rather than cast(u > 0.7): tfjs's WebGPU bool → float32 cast keeps an integer buffer.
  const y = tf.tidy(() => tf.step(tf.sub(tf.randomUniform([1, ...spatial, net.outChannels], 0, 1, 'float32', seed + 1), 0.7), 0));
  return { x, y };
}

/** One training step's gradients, by name. */
export async function gradients(net: Network, params: Params, x: tf.Tensor, y: tf.Tensor, plan: StepPlan): Promise<Map<string, Float32Array>> {
  const r = await new Executor(net).trainStep(x, params, stepLoss(y, 'dice+ce', net.activation, net), plan);
  const out = new Map<string, Float32Array>();
  for (const [k, g] of r.grads) {
    out.set(k, g.dataSync() as Float32Array);
    g.dispose();
  }
  return out;
}

/** max |a − b| / max |b| over all parameters (the worst parameter). */
export function worstRelativeDifference(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  let worst = 0;
  for (const [k, ref] of b) {
    const got = a.get(k);
    if (!got) throw new Error(`no gradient for ${k}`);
    let d = 0;
    let m = 0;
    for (let i = 0; i < ref.length; i++) {
      d = Math.max(d, Math.abs(got[i]! - ref[i]!));
      m = Math.max(m, Math.abs(ref[i]!));
    }
    worst = Math.max(worst, d / Math.max(m, 1e-12));
  }
  if (a.size !== b.size) throw new Error(`gradient sets differ: ${a.size} vs ${b.size}`);
  return worst;
}

/** Peak device bytes of a training step (the second one, after Adam's moments exist), measured. */
export async function measuredPeak(
  meter: DeviceMemoryMeter,
  net: Network,
  spatial: [number, number, number],
  plan: StepPlan,
  opts: { optimizerInBackward?: boolean } = {},
): Promise<number> {
  const params = initParams(net, 1);
  const optimizer = new Adam({ learningRate: 1e-3 });
  const { x, y } = batch(net, spatial);
  let peak = 0;
  await train(
    { net, params, optimizer, plan, loss: 'dice+ce', optimizerInBackward: opts.optimizerInBackward ?? false },
    {
      steps: 2,
      batch: () => ({ x, y, owned: false }),
      beforeStep: () => meter.ledger.resetPeak(),
      afterStep: () => void (peak = meter.ledger.peak),
    },
  );
  x.dispose();
  y.dispose();
  optimizer.dispose();
  for (const p of params.values()) p.dispose();
  return peak;
}

/** The three input sizes the estimator is checked at. */
export const ESTIMATOR_SIZES: [number, number, number][] = [
  [16, 16, 16],
  [24, 24, 24],
  [32, 24, 16],
];

/** A plan's estimated and measured peak at one size (4 input channels), and a message naming both. */
export async function estimateAndMeasure(
  meter: DeviceMemoryMeter,
  net: Network,
  spatial: [number, number, number],
  plan: StepPlan,
  label: string,
  opts: { optimizerInBackward?: boolean } = {},
): Promise<{ ratio: number; message: string }> {
  const measured = await measuredPeak(meter, net, spatial, plan, opts);
  const est = estimatePeak(net, [1, ...spatial, net.inChannels], plan, opts).peak;
  return { ratio: est / measured, message: `${label} at ${spatial.join('x')}: estimated ${est}, measured ${measured}` };
}
