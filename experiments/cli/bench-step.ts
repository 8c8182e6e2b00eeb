/**
 * Training-step rows for `npm run bench` (here beside the commands, not in core/, because it builds
 * plugins): one unet3d training step (forward, loss, the owned backward, Adam) at a given size and strategy, median of repeats after a warm-up step, with GFLOP/s against the
 * analytic convolution FLOP count (forward, filter gradient, and input gradient where it is computed).
 * The same step in PyTorch (experiments/cli/unet3d_torch.py) is measured in the same run when a python3 with
 * torch is found (e.g. Debian's python3-torch; never a project dependency), so the comparison is on the
 * same machine at the same moment.
 */
import * as tf from '@tensorflow/tfjs-core';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';
import { buildUNet3d } from '../../architectures/unet3d.js';
import { inferShapes, parameterCount, type StepPlan, type Network } from '../../core/engine/index.js';
import { Adam, initParams, train } from '../../core/training/index.js';
import { initBackend } from '../../core/backend/index.js';
import { searchSegments } from '../../strategies/checkpoint.js';
import type { BenchOptions, BenchRow } from './bench-kernels.js';

/** Convolution FLOPs of one training step: forward + filter gradient + input gradient (not for the input). */
export function stepConvFlops(net: Network, inputShape: number[]): number {
  const shapes = inferShapes(net, inputShape);
  let flops = 0;
  for (const node of net.nodes) {
    const f = node.layer.flops?.(node.inputs.map((i) => shapes.get(i)!));
    if (!f) continue;
    flops += 2 * f + (node.inputs[0] === 'input' ? 0 : f);
  }
  return flops;
}

interface StepConfig {
  edge: number;
  base: number;
  depth: number;
  strategy: 'full-volume' | 'checkpoint';
}

async function timeStep(cfg: StepConfig, repeats: number): Promise<{ ms: number; gflops: number; params: number }> {
  const net = buildUNet3d({ inChannels: 4, outChannels: 3, activation: 'sigmoid' }, { depth: cfg.depth, baseFilters: cfg.base, residual: true, deepSupervision: false, negativeSlope: 0.01 });
  const inputShape = [1, cfg.edge, cfg.edge, cfg.edge, 4];
  // As the checkpoint strategy plans it by default (lean saves), for this step (Adam after backward).
  const plan: StepPlan = cfg.strategy === 'checkpoint' ? { recompute: searchSegments(net, inputShape, 'lean'), saveMode: 'lean' } : {};
  const params = initParams(net, 0);
  const optimizer = new Adam({ learningRate: 1e-3 });
  const x = tf.randomNormal(inputShape, 0, 1, 'float32', 1);
  const y = tf.tidy(() => tf.cast(tf.greater(tf.randomUniform([1, cfg.edge, cfg.edge, cfg.edge, 3], 0, 1, 'float32', 2), 0.7), 'float32'));
  // A warm-up step, then `repeats` timed ones, on the same batch; Adam after backward.
  const reports = await train(
    { net, params, optimizer, plan, loss: 'dice+ce', optimizerInBackward: false },
    { steps: repeats + 1, batch: () => ({ x, y, owned: false }) },
  );
  const times = reports.slice(1).map((r) => r.seconds * 1000);
  tf.dispose([x, y]);
  optimizer.dispose();
  for (const p of params.values()) p.dispose();
  times.sort((a, b) => a - b);
  const ms = times[times.length >> 1]!;
  return { ms, gflops: stepConvFlops(net, inputShape) / (ms * 1e6), params: parameterCount(net) };
}

/** PyTorch's time for the same step, or the reason there is none. */
export function torchStep(cfg: StepConfig, repeats: number, threads: number): { ms: number; label: string; params: number } | { reason: string } {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'unet3d_torch.py');
  for (const python of [process.env.VOLSEG_TORCH_PYTHON, '/usr/bin/python3', 'python3'].filter(Boolean) as string[]) {
    const r = spawnSync(python, [script, ...[cfg.edge, cfg.edge, cfg.edge, cfg.base, cfg.depth, repeats, threads].map(String)], {
      encoding: 'utf8',
      timeout: 30 * 60 * 1000,
    });
    if (r.status === 0) {
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { ms: number; torch: string; threads: number; mkldnn: boolean; params: number };
      return { ms: out.ms, params: out.params, label: `pytorch ${out.torch} (${out.mkldnn ? 'oneDNN, ' : ''}${out.threads} threads)` };
    }
  }
  return { reason: 'no python3 with torch found (install Debian python3-torch, or set VOLSEG_TORCH_PYTHON)' };
}

export async function stepBenchRows(options: BenchOptions): Promise<BenchRow[]> {
  const log = options.log ?? (() => {});
  const configs: StepConfig[] = options.quick
    ? [{ edge: 32, base: 8, depth: 4, strategy: 'full-volume' }]
    : [
        { edge: 64, base: 16, depth: 5, strategy: 'full-volume' },
        { edge: 64, base: 16, depth: 5, strategy: 'checkpoint' },
      ];
  const repeats = Math.max(1, Math.min(options.repeats, options.quick ? 3 : 5));
  // The same backend set-up as a trial: project kernels and, when built, the native ones.
  const backend = (await initBackend('cpu')).label;
  const rows: BenchRow[] = [];
  for (const cfg of configs) {
    const name = `unet3d step b${cfg.base} d${cfg.depth}`;
    const shape = `1x${cfg.edge}x${cfg.edge}x${cfg.edge}x4`;
    log(`timing ${name} ${shape} ${cfg.strategy} (${repeats} repeats after warm-up)…`);
    const t = await timeStep(cfg, repeats);
    rows.push({ name, shape, strategy: cfg.strategy, backend, ms: t.ms, gflops: t.gflops });
    if (cfg.strategy === 'full-volume') {
      const torch = torchStep(cfg, repeats, availableParallelism());
      if ('reason' in torch) log(`  PyTorch comparison skipped: ${torch.reason}`);
      else {
        if (torch.params !== t.params) log(`  note: PyTorch model has ${torch.params} parameters, ours ${t.params}`);
        rows.push({ name, shape, strategy: 'full-volume', backend: torch.label, ms: torch.ms, gflops: t.gflops * (t.ms / torch.ms) });
      }
    }
  }
  return rows;
}
