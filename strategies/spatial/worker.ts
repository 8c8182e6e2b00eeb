/**
 * The ranks' entry module for core/parallel's WorkerGroup: each rank holds the network (sent serialised:
 * Layer objects cannot cross threads), its own parameters (the same on every rank) and, optionally, an
 * Adam optimizer, and runs the partitioned step (step.ts) on its slab.
 *
 *   const group = await WorkerGroup.start({ size: P, entry: <this file>, nativeThreads: 1 });
 *   await group.call('init', ranks.map(() => ({ network: serializeNetwork(net), seed: 5 })));
 *   const [r0] = await group.call('step', ranks.map((r) => ({ x: slab r of x, y: slab r of y, volume: [D, H, W] })));
 *
 * Slabs are this rank's planes [bounds[r], bounds[r + 1]) of a channels-last [N, D, H, W, C] volume
 * (partition.ts: `partitionDepth`, `sliceSlab`); without `bounds` the even split of partitionDepth.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import { initWorker, type RankContext } from '../../core/parallel/index.js';
import { Executor, deserializeNetwork, type Network, type SerializedNetwork } from '../../core/engine/index.js';
import { Adam, initParams, stepLoss, type AdamOptions, type LossKind } from '../../core/training/index.js';
import { DeviceOutOfMemoryError, type BufferLedger } from '../../core/memory/index.js';
import { partitionDepth, type SlabPartition } from './partition.js';
import { SpatialStep, type SpatialStepStats } from './step.js';

interface RankState {
  net: Network;
  params: Map<string, Tensor>;
  adam: Adam | null;
  steps: Map<string, SpatialStep>;
}

let state: RankState | null = null;

function need(): RankState {
  if (!state) throw new Error('spatial worker: call init first');
  return state;
}

function setParams(s: RankState, values: Record<string, Float32Array>): void {
  for (const p of s.net.params) {
    const v = values[p.qualifiedName];
    if (!v) throw new Error(`spatial worker: no values for parameter ${p.qualifiedName}`);
    const n = p.shape.reduce((a, b) => a * b, 1);
    if (v.length !== n) throw new Error(`spatial worker: parameter ${p.qualifiedName} needs ${n} values [${p.shape}], got ${v.length}`);
  }
  for (const t of s.params.values()) t.dispose();
  s.params.clear();
  for (const p of s.net.params) s.params.set(p.qualifiedName, tf.tensor(Float32Array.from(values[p.qualifiedName]!), p.shape, 'float32'));
}

export interface InitArgs {
  network: SerializedNetwork;
  /** The native pool's threads this rank expects (default: the group's nativeThreads). */
  nativeThreads?: number;
  /** Parameters: initParams(net, seed) (the same on every rank), or these values. */
  seed?: number;
  params?: Record<string, Float32Array>;
  /** With these options, `step({ update: true })` applies Adam on every rank. */
  adam?: AdamOptions;
  /**
   * This rank's device budget in bytes (its meter's; null or absent: none). A step or forward that goes
   * over it throws a DeviceOutOfMemoryError (op, needed, available, budget, live) at its next stage (the
   * next node, or its end); the group then aborts the collective the other ranks wait in.
   */
  budget?: number | null;
}

/**
 * Names each stage of `st`'s steps on this rank's meter (`<what> / <phase> / <node>`) and stops the step at
 * the first stage after an allocation over the budget (as a real device's allocation would fail there).
 */
function watch(st: SpatialStep, ledger: BufferLedger, rank: number, what: string): void {
  st.onStage = (phase, node) => {
    checkBudget(ledger, rank);
    ledger.currentOp = phase === 'inference' ? `${what} / ${node}` : `${what} / ${phase} / ${node}`;
  };
}

/** Throws the budget's first overflow since the last check, naming this rank. */
function checkBudget(ledger: BufferLedger, rank: number): void {
  const o = ledger.takeOverflow();
  if (o) throw new DeviceOutOfMemoryError(`rank ${rank} / ${o.op || 'step'}`, o.needed, o.available, o.budget, o.live);
}

/** Starts this rank's engine and meter, rebuilds the network and sets its parameters. */
export async function init(arg: InitArgs, ctx: RankContext) {
  const rt = await initWorker(arg.nativeThreads !== undefined ? { threads: arg.nativeThreads } : {});
  if (state) {
    for (const t of state.params.values()) t.dispose();
    state.adam?.dispose();
  }
  rt.meter.ledger.setBudget(arg.budget ?? null);
  const net = deserializeNetwork(arg.network);
  state = { net, params: new Map(), adam: arg.adam ? new Adam(arg.adam) : null, steps: new Map() };
  if (arg.params) setParams(state, arg.params);
  else state.params = initParams(net, arg.seed ?? 0);
  return { rank: ctx.rank, size: ctx.size, backendLabel: rt.backendLabel, nativeThreads: rt.nativeThreads, parameters: net.params.length };
}

export interface SlabArgs {
  /** The volume's global spatial extent [D, H, W]. */
  volume: [number, number, number];
  /** Batch size N (default 1). */
  batch?: number;
  /** P + 1 slab boundaries along D (default: partitionDepth's even split). */
  bounds?: number[];
}

function stepFor(s: RankState, a: SlabArgs, ctx: RankContext): { step: SpatialStep; part: SlabPartition } {
  const [D, H, W] = a.volume;
  const n = a.batch ?? 1;
  const key = `${n}x${D}x${H}x${W}|${a.bounds?.join(',') ?? 'even'}`;
  let step = s.steps.get(key);
  if (!step) {
    const part = partitionDepth(D, ctx.size, s.net.divisor, a.bounds);
    step = new SpatialStep(s.net, part, [n, D, H, W, s.net.inChannels], ctx.collective);
    s.steps.set(key, step);
  }
  return { step, part: step.part };
}

function slabTensor(v: Float32Array, shape: number[], what: string, rank: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (!(v instanceof Float32Array) || v.length !== n) throw new Error(`spatial worker: rank ${rank}'s ${what} must be a Float32Array of ${n} values [${shape}], got ${(v as { length?: number })?.length}`);
  return tf.tensor(v, shape, 'float32');
}

/** FNV-1a over the bits of every tensor of `values`, in the network's parameter order (to check that ranks hold the same). */
function digest(s: RankState, values: Map<string, Tensor> = s.params): string {
  let h = 0x811c9dc5;
  for (const p of s.net.params) {
    const t = values.get(p.qualifiedName);
    if (!t) continue;
    const v = t.dataSync() as Float32Array;
    const u = new Uint32Array(v.buffer, v.byteOffset, v.length);
    for (let i = 0; i < u.length; i++) h = Math.imul(h ^ u[i]!, 16777619) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

export interface StepArgs extends SlabArgs {
  /** This rank's slab of the input [N, planes, H, W, Cin] and of the target [N, planes, H, W, K]. */
  x: Float32Array;
  y: Float32Array;
  /** New parameter values before the step (otherwise the rank's own). */
  params?: Record<string, Float32Array>;
  kind?: LossKind;
  /** Apply Adam (init's `adam` options) with the all-reduced gradients on every rank. */
  update?: boolean;
  /** The step's name on the meter and in a DeviceOutOfMemoryError's op (default 'train step'). */
  label?: string;
  /** Which ranks return the gradients (default 'rank0'). */
  returnGrads?: 'rank0' | 'all' | 'none';
}

export interface StepReply {
  rank: number;
  loss: number;
  grads: Record<string, Float32Array> | null;
  /** This rank's meter: the step's high-water mark (from the live bytes before it) and those live bytes. */
  peak: number;
  /** The high-water mark through the update too (Adam's moments, made at its first step): the training peak. */
  trainPeak: number;
  liveBefore: number;
  peakOp: string;
  stats: SpatialStepStats;
  /** Digests of the all-reduced gradients and of the parameters after the step (after the update, with `update`). */
  gradsDigest: string;
  paramsDigest: string;
  /** Tensors alive on this rank after the step (the parameters, and Adam's moments once it has run). */
  numTensors: number;
}

/** One partitioned training step on every rank (SPMD). */
export async function step(arg: StepArgs, ctx: RankContext): Promise<StepReply> {
  const { meter } = await initWorker();
  const s = need();
  if (arg.params) setParams(s, arg.params);
  const { step: st } = stepFor(s, arg, ctx);
  const xShape = st.localShape('input');
  const x = slabTensor(arg.x, xShape, 'input slab x', ctx.rank);
  const y = slabTensor(arg.y, [...xShape.slice(0, 4), s.net.outChannels], 'target slab y', ctx.rank);
  meter.ledger.resetPeak();
  const liveBefore = meter.ledger.live;
  const label = arg.label ?? 'train step';
  meter.ledger.currentOp = `${label} / input`;
  watch(st, meter.ledger, ctx.rank, label);
  const r = await st.trainStep(x, y, s.params, arg.kind ?? 'dice+ce');
  const peak = meter.ledger.peak;
  const peakOp = meter.ledger.peakOp;
  tf.dispose([x, y]);
  const gradsDigest = digest(s, r.grads);
  const want = arg.returnGrads ?? 'rank0';
  let grads: Record<string, Float32Array> | null = null;
  if (want === 'all' || (want === 'rank0' && ctx.rank === 0)) {
    grads = {};
    for (const [k, g] of r.grads) grads[k] = Float32Array.from(g.dataSync() as Float32Array);
  }
  if (arg.update) {
    if (!s.adam) throw new Error('spatial worker: step({ update: true }) needs init({ adam })');
    meter.ledger.currentOp = `${label} / Adam update`;
    s.adam.step(s.params, r.grads);
  } else for (const g of r.grads.values()) g.dispose();
  const trainPeak = meter.ledger.peak;
  checkBudget(meter.ledger, ctx.rank);
  return { rank: ctx.rank, loss: r.loss, grads, peak, trainPeak, liveBefore, peakOp, stats: r.stats, gradsDigest, paramsDigest: digest(s), numTensors: tf.memory().numTensors };
}

export interface ForwardArgs extends SlabArgs {
  x: Float32Array;
  /** Return the logits instead of the probabilities. */
  logits?: boolean;
}

/** Partitioned inference (SPMD): this rank's slab of the probabilities, [N, planes, H, W, K]. */
export async function forward(arg: ForwardArgs, ctx: RankContext) {
  const { meter } = await initWorker();
  const s = need();
  const { step: st } = stepFor(s, arg, ctx);
  const xShape = st.localShape('input');
  const x = slabTensor(arg.x, xShape, 'input slab x', ctx.rank);
  meter.ledger.resetPeak();
  const liveBefore = meter.ledger.live;
  meter.ledger.currentOp = 'inference / input';
  watch(st, meter.ledger, ctx.rank, 'inference');
  const t0 = performance.now();
  const probs = st.forward(x, s.params, { logits: arg.logits ?? false });
  const seconds = (performance.now() - t0) / 1000;
  const peak = meter.ledger.peak;
  const values = Float32Array.from(probs.dataSync() as Float32Array);
  const shape = probs.shape;
  tf.dispose([x, probs]);
  checkBudget(meter.ledger, ctx.rank);
  return { rank: ctx.rank, probs: values, shape, peak, liveBefore, seconds };
}

/**
 * The single-process reference on rank 0 (the others return null): the owned Executor step with stepLoss
 * on the whole volume, its loss, gradients and meter peak, for comparisons with the partitioned step.
 */
export async function referenceStep(arg: { x: Float32Array; y: Float32Array; volume: [number, number, number]; batch?: number; kind?: LossKind }, ctx: RankContext) {
  const { meter } = await initWorker();
  if (ctx.rank !== 0) return null;
  const s = need();
  const [D, H, W] = arg.volume;
  const n = arg.batch ?? 1;
  const x = slabTensor(arg.x, [n, D, H, W, s.net.inChannels], 'input x', 0);
  const y = slabTensor(arg.y, [n, D, H, W, s.net.outChannels], 'target y', 0);
  meter.ledger.resetPeak();
  const liveBefore = meter.ledger.live;
  const t0 = performance.now();
  const r = await new Executor(s.net).trainStep(x, s.params, stepLoss(y, arg.kind ?? 'dice+ce', s.net.activation, s.net), {});
  const seconds = (performance.now() - t0) / 1000;
  const peak = meter.ledger.peak;
  const grads: Record<string, Float32Array> = {};
  for (const [k, g] of r.grads) {
    grads[k] = Float32Array.from(g.dataSync() as Float32Array);
    g.dispose();
  }
  tf.dispose([x, y]);
  return { loss: r.loss, grads, peak, liveBefore, seconds };
}

/** The single-process inference forward on rank 0 (the others return null): Executor.forward's logits, or their probabilities. */
export async function referenceForward(arg: { x: Float32Array; volume: [number, number, number]; batch?: number; logits?: boolean }, ctx: RankContext) {
  await initWorker();
  if (ctx.rank !== 0) return null;
  const s = need();
  const [D, H, W] = arg.volume;
  const x = slabTensor(arg.x, [arg.batch ?? 1, D, H, W, s.net.inChannels], 'input x', 0);
  const logits = new Executor(s.net).forward(x, s.params);
  const out = arg.logits ? logits : s.net.activation === 'sigmoid' ? tf.sigmoid(logits) : tf.softmax(logits, -1);
  const values = Float32Array.from(out.dataSync() as Float32Array);
  tf.dispose([x, logits, out]);
  return { values, shape: out.shape };
}

/** This rank's parameters' digest, and (rank 0) their values. */
export function params(_arg: unknown, ctx: RankContext) {
  const s = need();
  const values: Record<string, Float32Array> | null = ctx.rank === 0 ? {} : null;
  if (values) for (const [k, t] of s.params) values[k] = Float32Array.from(t.dataSync() as Float32Array);
  return { rank: ctx.rank, digest: digest(s), values };
}
