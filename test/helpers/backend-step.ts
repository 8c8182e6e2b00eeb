/**
 * One training step per (architecture, strategy) on the backend named by argv[2], written as JSON to
 * argv[3]: the loss, every parameter gradient, the meter's peak (second step, Adam's moments live) and the
 * estimator's. test/webgpu.test.ts runs it once on cpu and once on webgpu (tfjs has one engine per
 * process) and compares. Inputs, targets and parameters come from host-side seeded generators, so both
 * backends start from the same bytes.
 *
 * usage: tsx test/helpers/backend-step.ts <cpu|webgpu> <out.json>
 */
import * as tf from '@tensorflow/tfjs-core';
import { writeFileSync } from 'node:fs';
import { initBackend, type BackendChoice } from '../../core/backend/index.js';
import { Executor, type Network, type StepPlan } from '../../core/engine/index.js';
import { DeviceMemoryMeter, estimatePeak } from '../../core/memory/index.js';
import { Adam, initParams, stepLoss } from '../../core/training/index.js';
import { SeededRng } from '../../core/data/rng.js';
import { resolveSettings } from '../../core/config/index.js';
import { architectures } from '../../architectures/index.js';
import { strategies } from '../../strategies/index.js';
import type { Shape3 } from '../../core/types.js';

/** The networks checked: small, every architecture; me-fcn with every technique but half saves, and with all. */
export const NETWORKS: Record<string, { plugin: string; settings: Record<string, unknown> }> = {
  unet3d: { plugin: 'unet3d', settings: { depth: 3, baseFilters: 4 } },
  'me-fcn': { plugin: 'me-fcn', settings: { depth: 3, baseFilters: 4, narrow: true, separable: true, inPlaceNorm: true, checkpointWidest: true } },
  'me-fcn-all': { plugin: 'me-fcn', settings: { depth: 3, baseFilters: 4, all: true } },
  'meunet-cascade': { plugin: 'meunet-cascade', settings: { patch: 8, stage1Filters: [4, 8], stage2Filters: [4, 8] } },
};
/** The strategies checked; swap with a small threshold so that the tiny network's saves move. */
export const STRATEGIES: Record<string, Record<string, unknown>> = {
  'full-volume': {},
  checkpoint: {},
  swap: { minBytes: 1024 },
};
const CASE: Shape3 = [16, 16, 16];

export interface StepRecord {
  network: string;
  strategy: string;
  loss: number;
  grads: Record<string, number[]>;
  peak: number;
  estimate: number;
  meter: string;
}

function hostNormal(n: number, seed: number): Float32Array {
  const rng = new SeededRng(seed);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = rng.normal();
  return v;
}

async function step(net: Network, plan: StepPlan, shape: Shape3, meter: DeviceMemoryMeter): Promise<Omit<StepRecord, 'network' | 'strategy' | 'meter'>> {
  const params = initParams(net, 5);
  const voxels = shape[0] * shape[1] * shape[2];
  const x = tf.tensor(hostNormal(voxels * net.inChannels, 7), [1, ...shape, net.inChannels], 'float32');
  const y = tf.tensor(
    hostNormal(voxels * net.outChannels, 8).map((v) => (v > 0.5 ? 1 : 0)),
    [1, ...shape, net.outChannels],
    'float32',
  );
  const executor = new Executor(net);
  const optimizer = new Adam({ learningRate: 1e-3 });
  const loss = stepLoss(y, 'dice+ce', net.activation, net);
  // Step 1: the gradients compared (before any update). Step 2: the peak, with Adam's moments live.
  const first = await executor.trainStep(x, params, loss, plan);
  const grads: Record<string, number[]> = {};
  for (const [k, g] of first.grads) grads[k] = Array.from((await g.data()) as Float32Array);
  optimizer.step(params, first.grads);
  meter.ledger.resetPeak();
  optimizer.begin();
  const second = await executor.trainStep(x, params, loss, plan, undefined, (name, g) => optimizer.update(params, name, g));
  const peak = meter.ledger.peak;
  for (const g of second.grads.values()) g.dispose();
  const estimate = estimatePeak(net, [1, ...shape, net.inChannels], plan, { optimizerInBackward: true }).peak;
  tf.dispose([x, y]);
  optimizer.dispose();
  for (const p of params.values()) p.dispose();
  return { loss: first.loss, grads, peak, estimate };
}

async function main(): Promise<void> {
  const [backend, out] = process.argv.slice(2);
  if (!backend || !out) throw new Error('usage: tsx test/helpers/backend-step.ts <cpu|webgpu> <out.json>');
  await initBackend(backend as BackendChoice);
  const meter = new DeviceMemoryMeter().attach();
  const records: StepRecord[] = [];
  for (const [network, n] of Object.entries(NETWORKS)) {
    const arch = architectures.find((a) => a.name === n.plugin)!;
    const net = arch.create(resolveSettings(arch.settings, n.settings, 'architecture.settings'), { baseDir: '.' }).build({ inChannels: 2, outChannels: 3, activation: 'sigmoid' });
    for (const [strategy, settings] of Object.entries(STRATEGIES)) {
      const plugin = strategies.find((s) => s.name === strategy)!;
      const s = plugin.create(resolveSettings(plugin.settings, settings, 'strategy.settings'), { baseDir: '.' });
      const shape = s.trainingShape(CASE, net);
      const plan = s.plan(net, [1, ...shape, net.inChannels], { estimate: { optimizerInBackward: true } });
      records.push({ network, strategy, meter: meter.method, ...(await step(net, plan, shape, meter)) });
      await s.dispose?.();
    }
  }
  meter.detach();
  writeFileSync(out, JSON.stringify(records));
}

await main();
