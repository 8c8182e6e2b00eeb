/**
 * Training-step rows for `npm run bench` (here beside the commands, not in core/, because it builds
 * plugins): one unet3d training step (forward, loss, the owned backward, Adam) per strategy, with its
 * median time and spread over interleaved rounds, its measured peak, and GFLOP/s against the analytic
 * convolution FLOP count (forward, filter gradient, and input gradient where it is computed).
 * The same step in PyTorch (experiments/cli/unet3d_torch.py) is measured in the same run when a python3 with
 * torch is found (e.g. Debian's python3-torch; never a project dependency), so the comparison is on the
 * same machine at the same moment.
 */
import * as tf from '@tensorflow/tfjs-core';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { buildUNet3d } from '../../architectures/unet3d.js';
import { Executor, inferShapes, parameterCount, type StepPlan, type Network } from '../../core/engine/index.js';
import { Adam, initParams, trainingStep, type TrainingSetup } from '../../core/training/index.js';
import { initBackend, nativeStatus } from '../../core/backend/index.js';
import { DeviceMemoryMeter, estimatePeak, type EstimateOptions } from '../../core/memory/index.js';
import { instantiate } from '../../core/plugins/index.js';
import checkpointPlugin from '../../strategies/checkpoint/index.js';
import swapPlugin from '../../strategies/swap/index.js';
import { measuredFmaPeak, median, type BenchOptions, type BenchRow } from './bench-kernels.js';

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

export interface StepConfig {
  edge: number;
  base: number;
  depth: number;
}

/**
 * The benchmarked step's network (unet3d, 4 channels in, 3 sigmoid outputs, residual, slope 0.01) and its
 * batch (one case: a normal image, ~30% foreground per channel): the step rows and the profile of the
 * owned step (bench-profile.ts) time this same step. The caller disposes x and y.
 */
export function benchStep(cfg: StepConfig): { net: Network; inputShape: number[]; x: tf.Tensor; y: tf.Tensor } {
  const net = buildUNet3d({ inChannels: 4, outChannels: 3, activation: 'sigmoid' }, { depth: cfg.depth, baseFilters: cfg.base, residual: true, deepSupervision: false, negativeSlope: 0.01 });
  const inputShape = [1, cfg.edge, cfg.edge, cfg.edge, 4];
  const x = tf.randomNormal(inputShape, 0, 1, 'float32', 1);
  const y = tf.tidy(() => tf.cast(tf.greater(tf.randomUniform([1, cfg.edge, cfg.edge, cfg.edge, 3], 0, 1, 'float32', 2), 0.7), 'float32'));
  return { net, inputShape, x, y };
}

/** One strategy's step in the bench: its plan, and what the row says about it. */
interface StepCase {
  strategy: string;
  plan: StepPlan;
  note: string;
  /** More for the note once every step ran (e.g. the swap link's overlap). */
  after?: (steps: number) => string;
  dispose?: () => Promise<void> | void;
}

/** A full garbage collection (V8's gc, exposed at run time once), so that one case's garbage is not the next one's. */
let gc: (() => void) | undefined;
function collectGarbage(): void {
  if (!gc) {
    v8.setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}

/** A row's state: its own parameters, Adam and executor (so that every case trains the same steps). */
interface CaseState {
  c: StepCase;
  setup: TrainingSetup;
  executor: Executor;
  /** Timed steps, ms, and the round each ran in. */
  times: number[];
  rounds: number[];
  /** For every timed step but the owned row's: the owned step timed just before it. */
  paired: number[];
  /** For every timed step: the mean of an FMA probe just before it and one just after (null without the addon). */
  stepPeaks: (number | null)[];
  peak: number;
}

const MiB = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;

/** Median and spread of step times (ms). */
function summarise(times: number[]): { ms: number; min: number; max: number } {
  return { ms: median(times), min: Math.min(...times), max: Math.max(...times) };
}

/**
 * The step rows: the owned step (full volume), checkpoint planned for a budget of half the owned step's
 * measured peak, checkpoint at its least memory (Chen's plan), and swap with real copies over an emulated
 * 16 GB/s link (lb 1 and 2; swap-outs copied by the main thread, and at lb 1 by a lane worker). Adam runs inside backward in every row (the same arithmetic; parameter
 * gradients do not pile up), as a run short of memory would train.
 *
 * Each case first runs a warm-up step and one with the memory meter attached (the row's measured peak),
 * then the timed steps run in rounds: in each, every other case runs right after an owned step, each
 * timed step after an untimed one of its own case, so that the machine's drift (clock, other load) falls on
 * both steps of a pair alike; each row gives the median and the spread, its ratio to the owned step
 * timed just before it (median over the pairs), and its share of the FMA peak measured around its round
 * and around each step.
 */
async function stepRowsFor(cfg: StepConfig, repeats: number, log: (line: string) => void): Promise<{ rows: BenchRow[]; params: number }> {
  const { net, inputShape, x, y } = benchStep(cfg);
  const estimate: EstimateOptions = { optimizerSlots: 2, loss: 'dice+ce', optimizerInBackward: true };
  const inputBytes = (x.size + y.size) * 4;
  const states: CaseState[] = [];
  const start = async (c: StepCase): Promise<CaseState> => {
    // The meter sees this case's tensors from its parameters on (the batch, made before, is 'fixed' in
    // the estimate too); the peak is the second step's (Adam's moments are made in the first).
    const meter = new DeviceMemoryMeter().attach();
    let setup: TrainingSetup;
    const executor = new Executor(net);
    let peak: number;
    try {
      setup = { net, params: initParams(net, 0), optimizer: new Adam({ learningRate: 1e-3 }), plan: c.plan, loss: 'dice+ce', optimizerInBackward: true };
      await trainingStep(setup, executor, { x, y, owned: false });
      meter.ledger.resetPeak();
      await trainingStep(setup, executor, { x, y, owned: false });
      peak = meter.ledger.peak + inputBytes;
    } finally {
      meter.detach();
    }
    const st: CaseState = { c, setup, executor, times: [], rounds: [], paired: [], stepPeaks: [], peak };
    states.push(st);
    log(`  ${c.strategy}: measured peak ${MiB(st.peak)}${c.note ? `; ${c.note}` : ''}`);
    return st;
  };
  try {
    const owned = await start({ strategy: 'full-volume', plan: {}, note: '' });
    const budget = Math.floor(owned.peak / 2);
    const planned = instantiate(checkpointPlugin, { split: 'budget', budget, margin: 0 }, { baseDir: '.' });
    const plannedPlan = planned.plan(net, inputShape, { estimate });
    const col = Object.fromEntries((planned.report?.() ?? []).map((c) => [c.name, c.value]));
    const plannedPeak = estimatePeak(net, inputShape, plannedPlan, estimate).peak;
    await start({
      strategy: 'checkpoint',
      plan: plannedPlan,
      note: `planned for ${MiB(budget)} (half the owned peak): estimated ${MiB(plannedPeak)}, ${col.checkpoint_segments} segments, predicted recompute ${(Number(col.checkpoint_recompute_ratio) * 100).toFixed(0)}% of a forward`,
    });
    const least = instantiate(checkpointPlugin, { split: 'search' }, { baseDir: '.' });
    await start({ strategy: 'checkpoint', plan: least.plan(net, inputShape, { estimate }), note: 'least memory (split search)' });
    for (const [lb, outCopy] of [[1, 'main'], [2, 'main'], [1, 'worker']] as const) {
      const swap = instantiate(swapPlugin, { lb, bandwidth: '16GB', linkCopies: true, outCopy }, { baseDir: '.' });
      const after = (steps: number): string => {
        const col = Object.fromEntries((swap.report?.() ?? []).map((c) => [c.name, c.value as number | null]));
        const perStep = (v: number | null | undefined): string => (typeof v === 'number' ? `${((1000 * v) / steps).toFixed(0)} ms` : 'n/a');
        return `per step: link ${perStep(col.swap_link_seconds)}, waits ${perStep((col.swap_wait_seconds ?? 0) + (col.swap_out_wait_seconds ?? 0))}, main-thread staging ${perStep(col.swap_staging_seconds)}; overlap ${typeof col.swap_overlap === 'number' ? `${(100 * col.swap_overlap).toFixed(0)}%` : 'n/a'}`;
      };
      await start({ strategy: 'swap', plan: swap.plan(net, inputShape, { estimate }), note: `lb ${lb}, 16 GB/s, copies on, swap-outs copied by the ${outCopy === 'main' ? 'main thread' : 'lane worker'} (outCopy ${outCopy})`, after, dispose: () => swap.dispose?.() });
    }
    // Each round times every other case right after an owned step, so that each pair is a few seconds
    // apart and the machine's drift (on a shared VM it moves by minutes) falls on both alike; round r
    // starts at case r mod n. Each timed step follows an untimed step of the same case, as in a
    // training loop: without it a case followed another's step, with the addon's buffer cache
    // (recycled output memory, unmapped after 2 s idle) holding the other case's sizes, and the owned
    // step, the largest, paid page faults that a training run does not (it came out slower than
    // checkpoint). Before that untimed step a full GC collects what the previous case left: before native
    // outputs came back at dispose (native-kernels.ts) they did so only at a GC, and the owned step's
    // garbage was collected during the next case's steps (swap came out dearer here than in a process of
    // its own); what is still freed only at a GC (values handed out by dataSync, small arrays) is. The
    // round's FMA peak is the mean of a probe before and one after it. Each timed step also has its own:
    // the mean of a short probe just before it (after its untimed step) and one just after. On this
    // kind of shared VM the two vCPUs at times deliver one core's throughput between them for seconds
    // (seen with a standalone loop of the conv micro-kernel on 2 threads: each thread's rate halved),
    // which a probe 25 s away can miss; the probe is registers only, so it leaves the caches as the
    // untimed step left them.
    const others = states.filter((st) => st !== owned);
    const timed = async (st: CaseState, r: number): Promise<number> => {
      collectGarbage();
      await trainingStep(st.setup, st.executor, { x, y, owned: false });
      const before = measuredFmaPeak(0.05);
      const t0 = performance.now();
      await trainingStep(st.setup, st.executor, { x, y, owned: false });
      const ms = performance.now() - t0;
      const after = measuredFmaPeak(0.05);
      st.times.push(ms);
      st.rounds.push(r);
      st.stepPeaks.push(before === null || after === null ? null : (before + after) / 2);
      return ms;
    };
    log(`timing ${others.length} cases in ${repeats} rounds, each step paired with an owned step just before it, the FMA peak measured around each round and each step…`);
    const roundPeaks: (number | null)[] = [];
    for (let r = 0; r < repeats; r++) {
      const before = measuredFmaPeak(0.2);
      for (let k = 0; k < others.length; k++) {
        const st = others[(r + k) % others.length]!;
        const ownedMs = await timed(owned, r);
        await timed(st, r);
        st.paired.push(ownedMs);
      }
      const after = measuredFmaPeak(0.2);
      roundPeaks.push(before === null || after === null ? null : (before + after) / 2);
    }
    log(`  FMA peak around each round: ${roundPeaks.map((p) => (p === null ? 'n/a' : p.toFixed(0))).join(', ')} GFLOP/s`);
    const flops = stepConvFlops(net, inputShape);
    const backend = `cpu+native(${nativeStatus().simd}, ${nativeStatus().threads} threads)`;
    const ownedMs = summarise(owned.times).ms;
    const rows = states.map((st): BenchRow => {
      const t = summarise(st.times);
      const ratio = st === owned ? '' : `${(t.ms / ownedMs).toFixed(2)}× owned; `;
      const pairs = st.paired.map((ownedMs, i) => st.times[i]! / ownedMs);
      const shares = st.times.flatMap((ms, i) => {
        const peak = roundPeaks[st.rounds[i]!];
        return peak ? [flops / (ms * 1e6) / peak] : [];
      });
      const stepShares = st.times.flatMap((ms, i) => {
        const peak = st.stepPeaks[i];
        return peak ? [flops / (ms * 1e6) / peak] : [];
      });
      return {
        name: `unet3d step b${cfg.base} d${cfg.depth}`,
        shape: `1x${cfg.edge}x${cfg.edge}x${cfg.edge}x4`,
        strategy: st.c.strategy,
        backend,
        ms: t.ms,
        gflops: flops / (t.ms * 1e6),
        spreadMs: [t.min, t.max],
        peakBytes: st.peak,
        note: [`${ratio}${st.c.note}`.replace(/; $/, ''), st.c.after?.(2 + 2 * st.times.length)].filter(Boolean).join('; '),
        ...(pairs.length ? { pairedRatio: { median: median(pairs), min: Math.min(...pairs), max: Math.max(...pairs) } } : {}),
        ...(shares.length ? { roundPeakShare: median(shares) } : {}),
        ...(stepShares.length ? { stepPeakShare: median(stepShares) } : {}),
        times: st.times.map((ms) => Math.round(ms * 10) / 10),
        timesRounds: st.rounds,
        ...(st.paired.length ? { pairedOwnedTimes: st.paired.map((ms) => Math.round(ms * 10) / 10) } : {}),
        roundPeaks: roundPeaks.map((p) => (p === null ? null : Math.round(p))),
        stepPeaks: st.stepPeaks.map((p) => (p === null ? null : Math.round(p))),
      };
    });
    return { rows, params: parameterCount(net) };
  } finally {
    for (const st of states) {
      st.setup.optimizer.dispose();
      for (const p of st.setup.params.values()) p.dispose();
      await st.c.dispose?.();
    }
    tf.dispose([x, y]);
  }
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

/** The step the bench's step rows and its profile run: unet3d depth 5 base 16 at 64³ (--quick: depth 4, base 8, 32³). */
export function stepConfig(options: BenchOptions): StepConfig {
  return options.quick ? { edge: 32, base: 8, depth: 4 } : { edge: 64, base: 16, depth: 5 };
}

export async function stepBenchRows(options: BenchOptions): Promise<BenchRow[]> {
  const log = options.log ?? (() => {});
  const cfg = stepConfig(options);
  // Every --repeats round (7 by default, up to 9): the rows' ratios on a shared VM move by ±0.2 over 5.
  const repeats = Math.max(1, Math.min(options.repeats, options.quick ? 3 : 9));
  // The same backend set-up as a trial: project kernels and, when built, the native ones.
  await initBackend('cpu');
  log(`unet3d step b${cfg.base} d${cfg.depth} at ${cfg.edge}³: one metered step per case, then ${repeats} timed rounds`);
  const { rows, params } = await stepRowsFor(cfg, repeats, log);
  const owned = rows[0]!;
  const torch = torchStep(cfg, repeats, availableParallelism());
  if ('reason' in torch) log(`  PyTorch comparison skipped: ${torch.reason}`);
  else {
    if (torch.params !== params) log(`  note: PyTorch model has ${torch.params} parameters, ours ${params}`);
    rows.splice(1, 0, {
      name: owned.name,
      shape: owned.shape,
      strategy: 'full-volume',
      backend: torch.label,
      ms: torch.ms,
      gflops: owned.gflops! * (owned.ms / torch.ms),
      note: `owned step / this = ${(owned.ms / torch.ms).toFixed(2)}`,
    });
  }
  return rows;
}
