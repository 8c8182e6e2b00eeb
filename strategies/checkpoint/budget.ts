/**
 * Checkpoint segments planned to a memory budget: of the plans whose estimated peak fits the budget, the
 * one with the least recompute time (Chen et al. 2016 minimise memory; what a researcher with a fixed
 * accelerator wants is the fastest step that fits: Beaumont et al. 2019, "Optimal checkpointing for
 * heterogeneous chains" (Rotor); PyTorch's memory-budget activation checkpointing).
 *
 * 1. A dynamic program over the chain of layers (forward order), as Rotor's, on an additive stand-in for
 *    the peak: each layer is either kept (its saves stay, as without checkpointing) or in a segment
 *    (its forward re-runs in backward). Kept layers cost their saved bytes; a segment costs the bytes of
 *    the values it reads from outside (held from forward to its recompute) and its layers' forward time
 *    (but its last layer's where that one saves only its inputs: the recompute does not run it). The
 *    state also says whether the layer before is kept, so that a tensor it saves anyway (a lean
 *    normalisation's output, which the next convolution saves or a segment reads) is not counted twice.
 *    For a bound M on the bytes any one segment saves when it is recomputed (Chen's "largest segment"),
 *    the program finds, for every amount of bytes held through the step (in 64 steps), the split with the
 *    least recompute (O(n²·64) per M); a grid of M gives the candidates, least recompute first.
 * 2. Candidates are checked with the memory estimator (core/memory/estimator.ts: the step's own
 *    schedule, within a few percent of the meter), cheapest first, until six fit. It sees what the
 *    stand-in does not: skip
 *    connections, gradients in flight, kernels' workspaces. Its recompute time is read from the same
 *    schedule (the layers that really re-run; a segment's last layer is not run where only its inputs
 *    are wanted).
 *    Where none fits (budgets near the least memory the step can have), the memory-minimising search's
 *    plan (search.ts) is the start.
 * 3. From the best few that fit, a local search keeps any move that fits and lowers the recompute time
 *    (or keeps it and lowers the peak). A move resets one layer's "in a segment" flag and the cuts on both
 *    its sides: it moves a segment's start or end by one layer, joins or splits segments, or takes a layer
 *    out of a segment or puts it in.
 *
 * Recompute time comes from a cost model of each layer's forward: its FLOPs at `flopsPerSecond` plus the
 * bytes it reads and writes at `bytesPerSecond` (defaults near this project's native kernels on a 2-core
 * AMD EPYC: 3×3×3 convolutions at about 130 GFLOP/s, memory-bound layers at about 8 GB/s). Only the
 * ratios between layers choose the plan; the absolute seconds are the prediction recorded with it.
 */
import { stepSchedule, inferShapes, bytesOf, NETWORK_INPUT, type Network, type SaveMode, type Shape, type StepSchedule, type TapeSchedule } from '../../core/engine/index.js';
import { capabilities } from '../../core/backend/index.js';
import { estimateSchedule, type EstimateOptions } from '../../core/memory/index.js';
import { flagsOf, savedBytesPerNode, searchSegments, segmentsFrom } from './search.js';

export interface CostModel {
  /** Sustained FLOP/s of the convolutions. */
  flopsPerSecond: number;
  /** Bytes per second a memory-bound layer reads and writes. */
  bytesPerSecond: number;
}

export const DEFAULT_COST_MODEL: CostModel = { flopsPerSecond: 130e9, bytesPerSecond: 8e9 };

/** Predicted forward seconds of each node at `inputShape`: FLOPs / flopsPerSecond + bytes read and written / bytesPerSecond. */
export function forwardSeconds(net: Network, inputShape: Shape, model: CostModel = DEFAULT_COST_MODEL): number[] {
  const shapes = inferShapes(net, inputShape);
  return net.nodes.map((node) => {
    const inShapes = node.inputs.map((i) => shapes.get(i)!);
    const flops = node.layer.flops?.(inShapes) ?? 0;
    const bytes = inShapes.reduce((n, s) => n + bytesOf(s), bytesOf(shapes.get(node.name)!));
    return flops / model.flopsPerSecond + bytes / model.bytesPerSecond;
  });
}

export interface PlannerOptions {
  saveMode?: 'all' | 'lean';
  /** The options the step's peak is estimated with (the runner's: optimizer state, the loss, …). */
  estimate?: EstimateOptions;
  /** Forward seconds per node (default: forwardSeconds with DEFAULT_COST_MODEL). */
  costs?: number[];
}

export interface PlanEvaluation {
  segments: string[][];
  /** Estimated peak of the step with these segments, bytes. */
  peak: number;
  /** Predicted seconds of forward re-run in backward (the recomputed layers' costs). */
  recomputeSeconds: number;
}

export interface BudgetPlan extends PlanEvaluation {
  budget: number;
  /** Whether `peak` ≤ `budget` (else the plan is the lowest-peak one found, and does not fit). */
  fits: boolean;
  /** Predicted seconds of one forward pass (every node once): the recompute's yardstick. */
  forwardSeconds: number;
  /** Plans estimated while planning. */
  evaluated: number;
}

/** Predicted recompute seconds of a plan: the cost of each layer its schedule re-runs in backward. */
export function recomputeSeconds(net: Network, inputShape: Shape, segments: string[][], saveMode: 'all' | 'lean', costs: number[], estimate: EstimateOptions = {}): number {
  return scheduledRecompute(planSchedule(net, inputShape, segments, saveMode, estimate), costs);
}

/** The step's schedule with these segments, as the estimator builds it for `estimate`. */
function planSchedule(net: Network, inputShape: Shape, segments: string[][], saveMode: 'all' | 'lean', estimate: EstimateOptions): StepSchedule | TapeSchedule {
  return stepSchedule(net, inputShape, { recompute: segments, saveMode }, { optimizerInBackward: estimate.optimizerInBackward, capabilities: estimate.capabilities ?? capabilities() });
}

/** The cost of each layer a schedule re-runs in backward. */
function scheduledRecompute(schedule: StepSchedule | TapeSchedule, costs: number[]): number {
  if (schedule.backward !== 'owned') return 0;
  let s = 0;
  for (const e of schedule.events) if (e.kind === 'forward' && e.phase === 'recompute') s += costs[e.node]!;
  return s;
}

/** Estimates plans (each once), keeping count. */
class Evaluator {
  private readonly cache = new Map<string, PlanEvaluation>();
  constructor(
    private readonly net: Network,
    private readonly inputShape: Shape,
    private readonly saveMode: 'all' | 'lean',
    private readonly costs: number[],
    private readonly estimate: EstimateOptions,
  ) {}

  get count(): number {
    return this.cache.size;
  }

  evaluate(segments: string[][]): PlanEvaluation {
    const key = segments.map((s) => s.join(',')).join('|');
    let e = this.cache.get(key);
    if (!e) {
      // One schedule serves the estimate and the recompute time.
      const schedule = planSchedule(this.net, this.inputShape, segments, this.saveMode, this.estimate);
      e = { segments, peak: estimateSchedule(schedule, { ...this.estimate, breakdown: false }).peak, recomputeSeconds: scheduledRecompute(schedule, this.costs) };
      this.cache.set(key, e);
    }
    return e;
  }
}

/** Plans that fit the local search starts from; candidates estimated at most before it. */
const STARTS = 6;
const MAX_CANDIDATES = 400;

/** Relative tolerance under which two recompute times count as equal. */
const SAME = 1e-9;

/** Whether `a` is the better of two plans that both fit: less recompute, then a lower peak. */
function better(a: PlanEvaluation, b: PlanEvaluation): boolean {
  const tol = SAME * Math.max(a.recomputeSeconds, b.recomputeSeconds, 1e-12);
  if (a.recomputeSeconds < b.recomputeSeconds - tol) return true;
  if (a.recomputeSeconds > b.recomputeSeconds + tol) return false;
  return a.peak < b.peak;
}

/**
 * The dynamic program's candidates, least predicted recompute first: for each bound M on one segment's
 * saved bytes and each amount of bytes held through the step (kept layers' saves, segments' external
 * inputs), the chain's split into kept layers and segments with the least recompute.
 */
export function chainCandidates(net: Network, inputShape: Shape, saveMode: SaveMode, costs: number[], buckets = 64): string[][][] {
  const n = net.nodes.length;
  const shapes = inferShapes(net, inputShape);
  const index = new Map(net.nodes.map((node, i) => [node.name, i]));
  const specs = net.nodes.map((node) => node.layer.saves(node.inputs.map((v) => shapes.get(v)!), saveMode));
  const outBytes = net.nodes.map((node) => bytesOf(shapes.get(node.name)!));
  // What a kept layer holds: its saved inputs (not the network input: on the device anyway), its output
  // if it saves it, and its extras; and, of that, what the layer before holds too where it is kept and
  // saves its output (a lean normalisation's output, the next convolution's input: one tensor).
  const keptBytes: number[] = [];
  const sharedWithPrevious: number[] = [];
  net.nodes.forEach((node, i) => {
    const spec = specs[i]!;
    let bytes = 4 * spec.extra.reduce((a, b) => a + b, 0) + (spec.output ? outBytes[i]! : 0);
    let shared = 0;
    for (const k of spec.inputs) {
      const v = node.inputs[k]!;
      if (v === NETWORK_INPUT) continue;
      const b = bytesOf(shapes.get(v)!);
      bytes += b;
      if (i > 0 && index.get(v) === i - 1 && specs[i - 1]!.output) shared += b;
    }
    keptBytes.push(bytes);
    sharedWithPrevious.push(shared);
  });
  const saved = savedBytesPerNode(net, inputShape, saveMode);
  const prefix = (v: number[]): number[] => v.reduce<number[]>((acc, x) => (acc.push(acc[acc.length - 1]! + x), acc), [0]);
  const S = prefix(saved);
  const C = prefix(costs);
  // A segment's last layer is not re-run where it saves only its inputs (nothing in the segment reads its
  // output; the schedule's save-inputs event): the segment's cost leaves it out.
  const lastFree = specs.map((spec, i) => (!spec.output && spec.extra.length === 0 ? costs[i]! : 0));
  // held[a][b]: bytes of the distinct values that layers a..b read from before a (not the network input),
  // and of those, the output of layer a-1 (held anyway where a-1 is kept and saves it).
  const held: Float64Array[] = [];
  const heldFromPrevious: Float64Array[] = [];
  for (let a = 0; a < n; a++) {
    const row = new Float64Array(n);
    const fromPrevious = new Float64Array(n);
    const seen = new Set<string>();
    const previous = a > 0 && specs[a - 1]!.output ? net.nodes[a - 1]!.name : null;
    let bytes = 0;
    for (let b = a; b < n; b++) {
      for (const v of net.nodes[b]!.inputs) {
        if (v === NETWORK_INPUT) continue;
        const producer = index.get(v) ?? -1;
        if (producer < a && !seen.has(v)) {
          seen.add(v);
          bytes += bytesOf(shapes.get(v)!);
        }
      }
      row[b] = bytes;
      if (previous && seen.has(previous)) fromPrevious[b] = outBytes[a - 1]!;
    }
    held.push(row);
    heldFromPrevious.push(fromPrevious);
  }
  const total = S[n]!;
  const positive = saved.filter((x) => x > 0);
  const smallest = positive.length ? Math.min(...positive) : 1;
  const bounds = [Infinity];
  for (let k = 0; k < 16; k++) bounds.push(smallest * Math.pow(Math.max(total / smallest, 1), k / 15));
  // The held bytes in `buckets` steps (each addition rounded up). State (j, m, kept): the first j layers
  // holding at most m steps, layer j-1 kept or not; f is its least recompute. Every trade-off between
  // the two is a candidate (a Lagrangian price would find only those on the convex hull).
  let maxHeld = 0;
  for (let a = 0; a < n; a++) maxHeld = Math.max(maxHeld, held[a]![n - 1]!);
  const step = Math.max(1, (keptBytes.reduce((a, b) => a + b, 0) + maxHeld) / buckets);
  const width = buckets + 1;
  const at = (j: number, m: number, kept: number): number => (j * width + m) * 2 + kept;
  const out = new Map<string, { cost: number; segments: string[][] }>();
  const f = new Float64Array((n + 1) * width * 2);
  const from = new Int32Array((n + 1) * width * 2); // segment start, or -1: layer j-1 kept
  const prev = new Int32Array((n + 1) * width * 2); // the state before (its index)
  const relax = (to: number, v: number, start: number, before: number): void => {
    if (v < f[to]!) {
      f[to] = v;
      from[to] = start;
      prev[to] = before;
    }
  };
  for (const M of bounds) {
    f.fill(Infinity);
    f[at(0, 0, 0)] = 0;
    for (let j = 1; j <= n; j++)
      for (const k of [0, 1]) {
        // Layer j-1 kept, after a state whose last layer was kept (k = 1) or not.
        const keepSteps = Math.ceil((keptBytes[j - 1]! - (k ? sharedWithPrevious[j - 1]! : 0)) / step);
        for (let m = keepSteps; m < width; m++) {
          const b = at(j - 1, m - keepSteps, k);
          relax(at(j, m, 1), f[b]!, -1, b);
        }
        // Layers a..j-1 a segment, after a state whose last layer (a-1) was kept or not.
        for (let a = j - 1; a >= 0; a--) {
          if (S[j]! - S[a]! > M) break;
          const cost = C[j]! - C[a]! - lastFree[j - 1]!;
          const heldSteps = Math.ceil((held[a]![j - 1]! - (k ? heldFromPrevious[a]![j - 1]! : 0)) / step);
          for (let m = heldSteps; m < width; m++) {
            const b = at(a, m - heldSteps, k);
            relax(at(j, m, 0), f[b]! + cost, a, b);
          }
        }
      }
    for (let m = 0; m < width; m++)
      for (const k of [0, 1]) {
        const end = at(n, m, k);
        if (!Number.isFinite(f[end]!)) continue;
        const segments: string[][] = [];
        for (let state = end, j = n; j > 0; ) {
          const a = from[state]!;
          if (a >= 0) segments.unshift(net.nodes.slice(a, j).map((node) => node.name));
          j = a >= 0 ? a : j - 1;
          state = prev[state]!;
        }
        const key = segments.map((x) => x.join(',')).join('|');
        if (!out.has(key)) out.set(key, { cost: f[end]!, segments });
      }
  }
  return [...out.values()].sort((a, b) => a.cost - b.cost).map((c) => c.segments);
}

/**
 * The segmentation with the least predicted recompute time whose estimated peak is ≤ `budget` (see the
 * file's header). Where none of the plans tried fits, the lowest-peak one, with `fits: false`.
 */
export function planForBudget(net: Network, inputShape: Shape, budget: number, options: PlannerOptions = {}): BudgetPlan {
  const saveMode = options.saveMode ?? 'lean';
  const costs = options.costs ?? forwardSeconds(net, inputShape);
  if (costs.length !== net.nodes.length) throw new Error(`planForBudget: ${costs.length} costs for ${net.nodes.length} layers`);
  const evaluator = new Evaluator(net, inputShape, saveMode, costs, options.estimate ?? {});
  const forward = costs.reduce((a, b) => a + b, 0);
  const done = (e: PlanEvaluation): BudgetPlan => ({ ...e, budget, fits: e.peak <= budget, forwardSeconds: forward, evaluated: evaluator.count });

  const none = evaluator.evaluate([]);
  if (none.peak <= budget) return done(none);

  // The candidates least recompute first, until enough fit (or a few hundred were estimated).
  const evaluated: PlanEvaluation[] = [net.segments, net.nodes.map((node) => [node.name])].map((s) => evaluator.evaluate(s));
  let fitting = evaluated.filter((e) => e.peak <= budget);
  for (const s of chainCandidates(net, inputShape, saveMode, costs)) {
    if (fitting.length >= STARTS || evaluator.count >= MAX_CANDIDATES) break;
    const e = evaluator.evaluate(s);
    evaluated.push(e);
    if (e.peak <= budget) fitting.push(e);
  }
  if (fitting.length === 0) {
    // Near the least memory the step can have, the stand-in is too coarse: start from the memory-minimising
    // search's plan (search.ts) and trade its recompute back while it fits.
    const lowest = evaluator.evaluate(searchSegments(net, inputShape, saveMode, options.estimate));
    if (lowest.peak > budget) return done([lowest, ...evaluated].reduce((a, b) => (b.peak < a.peak ? b : a)));
    fitting = [lowest];
  }
  fitting.sort((a, b) => (better(a, b) ? -1 : better(b, a) ? 1 : 0));

  let best = fitting[0]!;
  const n = net.nodes.length;
  for (const start of fitting.slice(0, STARTS)) {
    const { cut, keep } = flagsOf(net, start.segments);
    let current = start;
    const tryMove = (apply: () => void, undo: () => void): boolean => {
      apply();
      const e = evaluator.evaluate(segmentsFrom(net, cut, keep));
      if (e.peak <= budget && better(e, current)) {
        current = e;
        return true;
      }
      undo();
      return false;
    };
    for (let round = 0; round < 20; round++) {
      let improved = false;
      for (let i = 0; i < n; i++) {
        // Every setting of layer i's keep flag and the cuts on both its sides: moves a segment's end or
        // start by one layer, joins or splits two segments, takes a layer out of a segment or puts it in.
        const before = [keep[i]!, i > 0 ? cut[i - 1]! : false, cut[i]!];
        const set = ([k, left, right]: boolean[]): void => {
          keep[i] = k!;
          if (i > 0) cut[i - 1] = left!;
          cut[i] = right!;
        };
        for (let m = 0; m < 8; m++) {
          const next = [(m & 1) !== 0, (m & 2) !== 0, (m & 4) !== 0];
          if ((i === 0 && next[1]) || next.every((v, k) => v === before[k])) continue;
          if (tryMove(() => set(next), () => set(before))) {
            improved = true;
            before.splice(0, 3, ...next);
          }
        }
      }
      if (!improved) break;
    }
    if (better(current, best)) best = current;
  }
  return done(best);
}
