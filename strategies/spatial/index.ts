/**
 * spatial — spatial partitioning (Hou L. et al., "High resolution medical image analysis with spatial
 * partitioning", 2019, arXiv:1909.03108): the whole (divisor-padded) volume in every step, split along D
 * into `workers` slabs, one per rank (a worker thread standing for one accelerator, with its own memory
 * meter and the trial's device budget). The ranks run the partitioned step (step.ts: halo convolutions,
 * whole-volume instance norm, the loss and the gradient all-reduce, the same step as the single-process
 * one), each applies Adam to its copy of the parameters (the same bits everywhere), and inference is the
 * partitioned forward on the same ranks (no sliding window).
 *
 * The runner drives it through MemoryStrategy.trainer (core/plugins/contracts.ts): it samples, keeps the
 * budgets and the curves, evaluates and records; this strategy's trainer runs the steps on its WorkerGroup
 * (core/parallel). An allocation over the budget on any rank stops the trial as `did-not-fit` with that
 * rank's message (the rank's DeviceOutOfMemoryError, rebuilt here from the RankFailedError); the group
 * ends every thread on such a failure, and `dispose` closes it in any case.
 *
 * Memory figures are per rank (per accelerator): the row's peak_train_bytes, peak_infer_bytes and
 * est_peak_train_bytes are the largest rank's (the estimate: the core estimator on rank 0's slab plus its
 * halo planes; 1.02× the measured peak for unet3d depth 3 at 16³, P = 2); `peak_workers_sum_bytes` is
 * what all ranks held at their peaks together. Every rank holds the whole parameters and Adam's moments.
 * Adam runs after backward on each rank (training.optimizerInBackward does not apply; the same arithmetic).
 * The native kernels' pool is one per process (core/parallel/worker-runtime.ts): with `nativeThreads` ≥ 1
 * the ranks check that it has that many threads (a sweep whose other trials run first then needs
 * VOLSEG_THREADS set to it); 0, the default, takes the pool as it is (the results are the same bits).
 */
import * as tf from '@tensorflow/tfjs-core';
import { fileURLToPath } from 'node:url';
import type { MemoryStrategy, StrategyColumn, StrategyPlugin, StrategyTrainer, TrainerArgs, TrainerBatch } from '../../core/plugins/index.js';
import { defineSettings, formatBytes } from '../../core/config/index.js';
import { fullVolumeSample, fullVolumeShape, type Params } from '../../core/training/index.js';
import { fullVolumeInference } from '../../core/inference/index.js';
import { serializeNetwork, type Network, type Shape, type StepPlan } from '../../core/engine/index.js';
import { DeviceOutOfMemoryError, estimatePeak, type Estimate, type EstimateOptions } from '../../core/memory/index.js';
import { RankFailedError, WorkerGroup, type Collective } from '../../core/parallel/index.js';
import { cropTo, padShapeTo, padTo } from '../../core/data/index.js';
import type { InferenceInput } from '../../core/types.js';
import { joinSlabs, partitionDepth, sliceSlab, type SlabPartition } from './partition.js';
import { SpatialStep } from './step.js';
import type { StepReply } from './worker.js';

const ENTRY = fileURLToPath(new URL('./worker.ts', import.meta.url));

const settings = defineSettings({
  workers: {
    type: 'integer',
    min: 1,
    default: 2,
    description: 'P: ranks (worker threads, one per emulated accelerator), each holding one slab of the volume along D',
  },
  nativeThreads: {
    type: 'integer',
    min: 0,
    default: 0,
    description:
      "threads the process's native kernel pool must have (one pool per process, sized at its first native kernel: set VOLSEG_THREADS to this when other trials run first); 1: each rank computes on its own thread, at equal speed; 0: whatever the pool has (ranks that find it busy compute on their own thread)",
  },
  scratch: {
    type: 'bytes',
    min: 1024,
    default: '16MiB',
    description: "capacity of one collective message between the ranks (halo planes, the gradient all-reduce's chunks), bytes",
  },
});

/** A rank's DeviceOutOfMemoryError, rebuilt in this thread (so the runner records did-not-fit); other errors as they are. */
function rebuild(e: unknown): unknown {
  if (!(e instanceof RankFailedError) || e.workerErrorName !== 'DeviceOutOfMemoryError') return e;
  const d = e.details;
  const num = (k: string): number => (typeof d[k] === 'number' ? (d[k] as number) : NaN);
  const op = typeof d.op === 'string' ? d.op : `rank ${e.rank}`;
  const live = num('live');
  return new DeviceOutOfMemoryError(op.startsWith(`rank ${e.rank}`) ? op : `rank ${e.rank} / ${op}`, num('needed'), num('available'), num('budget'), Number.isFinite(live) ? live : undefined);
}

async function guarded<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw rebuild(e);
  }
}

/** A stand-in collective for planning in this thread (the step's geometry only; it never exchanges). */
function planningCollective(size: number): Collective {
  return { rank: 0, size, exchangeHalos: () => ({ fromBelow: null, fromAbove: null }), allReduceSum: () => {}, barrier: () => {}, bytesSent: 0 };
}

/**
 * The estimated training peak of one rank: the core estimator on the largest slab (rank 0's: the even split
 * gives the first ranks the extra block) plus the halo planes its convolutions keep for backward.
 */
export function estimateRankPeak(net: Network, inputShape: number[], plan: StepPlan, options: EstimateOptions, workers: number): Estimate {
  const part = partitionDepth(inputShape[1]!, workers, net.divisor);
  const planes = part.bounds[1]! - part.bounds[0]!;
  const slab: Shape = [inputShape[0]!, planes, ...inputShape.slice(2)];
  const e = estimatePeak(net, slab, plan, options);
  const halos = workers > 1 ? new SpatialStep(net, part, inputShape, planningCollective(workers)).haloBytes() : 0;
  return {
    ...e,
    peak: e.peak + halos,
    at: `${e.at}, on rank 0's slab of ${planes} planes, + ${formatBytes(halos)} of halos`,
    ...(e.breakdown ? { breakdown: [...e.breakdown, { what: 'halo planes kept for backward', bytes: halos }] } : {}),
  };
}

/** What the strategy's columns report, cumulative over the trial. */
interface Tally {
  steps: number;
  /** Largest per-rank training peak; the largest sum over ranks of their step peaks. */
  peakWorker: number;
  peakSum: number;
  exchangeBytes: number;
}

class SpatialTrainer implements StrategyTrainer {
  private readonly parts = new Map<number, SlabPartition>();
  private current: Params | null = null;
  private closed = false;
  /** The largest rank's inference peak since takeInferencePeak. */
  private inferPeak = 0;

  private constructor(
    private readonly group: WorkerGroup,
    private readonly net: Network,
    private readonly args: TrainerArgs,
    private readonly tally: Tally,
  ) {}

  static async start(args: TrainerArgs, s: { workers: number; nativeThreads: number; scratch: number }, tally: Tally): Promise<SpatialTrainer> {
    const { net } = args;
    if (net.outputMargin && net.outputMargin.some((m) => m !== 0))
      throw new Error(`spatial: network "${net.name}" has an output margin [${net.outputMargin}]; spatial partitioning supports networks without one`);
    // Fails here, in this thread, with the partition's message, before any thread starts.
    partitionDepth(args.inputShape[1]!, s.workers, net.divisor);
    const group = await WorkerGroup.start({ size: s.workers, entry: ENTRY, nativeThreads: s.nativeThreads || undefined, scratchBytes: s.scratch });
    const trainer = new SpatialTrainer(group, net, args, tally);
    try {
      const network = serializeNetwork(net);
      const params: Record<string, Float32Array> = {};
      for (const [k, t] of args.params) params[k] = Float32Array.from(t.dataSync() as Float32Array);
      const init = { network, params, adam: { learningRate: args.training.learningRate }, budget: args.training.deviceMemory ?? null };
      await guarded(() => group.call('init', Array.from({ length: s.workers }, () => init)));
    } catch (e) {
      await trainer.dispose();
      throw e;
    }
    return trainer;
  }

  private partition(depth: number): SlabPartition {
    let p = this.parts.get(depth);
    if (!p) {
      p = partitionDepth(depth, this.group.size, this.net.divisor);
      this.parts.set(depth, p);
    }
    return p;
  }

  async step(b: TrainerBatch): Promise<{ loss: number; seconds: number; peakBytes: number }> {
    const P = this.group.size;
    const part = this.partition(b.shape[0]);
    const xs: Shape = [b.batch, ...b.shape, b.channels];
    const ys: Shape = [b.batch, ...b.shape, b.outChannels];
    const t0 = performance.now();
    const perRank = Array.from({ length: P }, (_, r) => ({
      x: sliceSlab(b.x, xs, part.bounds[r]!, part.bounds[r + 1]!),
      y: sliceSlab(b.y, ys, part.bounds[r]!, part.bounds[r + 1]!),
      volume: b.shape,
      batch: b.batch,
      kind: this.args.training.loss,
      label: `train step ${this.tally.steps + 1}`,
      update: true,
      returnGrads: 'none',
    }));
    const replies = await guarded(() => this.group.call<StepReply>('step', perRank));
    const seconds = (performance.now() - t0) / 1000;
    const peaks = replies.map((r) => r.trainPeak);
    const peakBytes = Math.max(...peaks);
    const t = this.tally;
    t.steps++;
    t.peakWorker = Math.max(t.peakWorker, peakBytes);
    t.peakSum = Math.max(t.peakSum, peaks.reduce((a, v) => a + v, 0));
    t.exchangeBytes += replies.reduce((a, r) => a + r.stats.bytesSent, 0);
    return { loss: replies[0]!.loss, seconds, peakBytes };
  }

  async params(): Promise<Params> {
    const replies = await guarded(() => this.group.call<{ values: Record<string, Float32Array> | null }>('params', new Array(this.group.size).fill(null)));
    const values = replies[0]!.values!;
    if (this.current) for (const t of this.current.values()) t.dispose();
    this.current = new Map(this.net.params.map((p) => [p.qualifiedName, tf.tensor(values[p.qualifiedName]!, p.shape, 'float32')]));
    return this.current;
  }

  /** Probabilities [D, H, W, K] of a whole image: the partitioned forward on the ranks, on the divisor-padded image. */
  async infer(input: InferenceInput): Promise<Float32Array> {
    const P = this.group.size;
    const padded = padShapeTo(input.shape, this.net.divisor);
    const x = padTo(input.image, input.shape, input.channels, padded);
    const part = this.partition(padded[0]);
    const xs: Shape = [1, ...padded, input.channels];
    const perRank = Array.from({ length: P }, (_, r) => ({ x: sliceSlab(x, xs, part.bounds[r]!, part.bounds[r + 1]!), volume: padded }));
    const got = await guarded(() => this.group.call<{ probs: Float32Array; shape: number[]; peak: number }>('forward', perRank));
    this.inferPeak = Math.max(this.inferPeak, ...got.map((g) => g.peak));
    const K = this.net.outChannels;
    const probs = joinSlabs(
      got.map((g) => g.probs),
      [1, ...padded, K],
      part.bounds,
    );
    return cropTo(probs, padded, K, input.shape);
  }

  takeInferencePeak(): number {
    const p = this.inferPeak;
    this.inferPeak = 0;
    return p;
  }

  async dispose(): Promise<void> {
    if (this.current) for (const t of this.current.values()) t.dispose();
    this.current = null;
    if (this.closed) return;
    this.closed = true;
    await this.group.close();
  }
}

const plugin: StrategyPlugin<typeof settings> = {
  kind: 'strategy',
  name: 'spatial',
  description: 'whole volume per step, split along D over P worker ranks (halo exchange, all-reduced gradients); partitioned inference',
  reference: 'Hou L., Cheng Y., Shazeer N., Parmar N., Li Y., Korfiatis P., Song X., "High resolution medical image analysis with spatial partitioning", 2019 (arXiv:1909.03108)',
  settings,
  create({ workers, nativeThreads, scratch }): MemoryStrategy {
    let active: SpatialTrainer | null = null;
    let tally: Tally = { steps: 0, peakWorker: 0, peakSum: 0, exchangeBytes: 0 };
    const column = (name: string, value: number | null, meaning: string): StrategyColumn => ({ name, value, meaning });
    const measured = (v: number): number | null => (tally.steps > 0 ? v : null);
    return {
      name: 'spatial',
      trainingShape: fullVolumeShape,
      sample: fullVolumeSample,
      plan: () => ({ backward: 'owned' }),
      estimate: (net, inputShape, plan, options) => estimateRankPeak(net, inputShape, plan, options, workers),
      // On the trainer's ranks while it lives; otherwise (a saved model, `npm run predict`) one pass in this thread.
      infer: (input, predict, net) => (active ? active.infer(input) : fullVolumeInference(input, predict, net)),
      async trainer(args) {
        await active?.dispose();
        active = null;
        tally = { steps: 0, peakWorker: 0, peakSum: 0, exchangeBytes: 0 };
        active = await SpatialTrainer.start(args, { workers, nativeThreads, scratch }, tally);
        return active;
      },
      report: () => [
        column('workers', workers, 'spatial: P, the ranks (emulated accelerators) the volume is split over along D'),
        column('peak_worker_bytes', measured(tally.peakWorker), "spatial: the largest rank's training peak, bytes (per accelerator; also the row's peak_train_bytes)"),
        column('peak_workers_sum_bytes', measured(tally.peakSum), "spatial: the sum of the ranks' training peaks in one step (the largest over steps), bytes"),
        column(
          'exchange_bytes_per_step',
          measured(tally.exchangeBytes / Math.max(1, tally.steps)),
          'spatial: bytes all ranks sent per training step (halo planes, norm and loss sums, the gradient all-reduce), mean over steps',
        ),
      ],
      dispose: async () => {
        await active?.dispose();
        active = null;
      },
    };
  },
};

export default plugin;
