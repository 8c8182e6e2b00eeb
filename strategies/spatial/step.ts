/**
 * The partitioned training step of spatial partitioning (Hou et al. 2019, "High resolution medical image
 * analysis with spatial partitioning"), SPMD: every rank runs this on its slab of the volume along D
 * (partition.ts) and talks to the others only through a `Collective` (core/parallel). The result is the
 * single-process owned step's (core/engine Executor.trainStep with stepLoss): the same loss, and every
 * parameter gradient all-reduced so that each rank holds the same bits.
 *
 * Per layer (the core layers unet3d is built from; any other is an error naming it):
 * - Conv3d: forward gathers the halo planes it needs from the neighbouring slabs (zero planes at the
 *   volume's ends, as the padding), pads H and W explicitly as TF's 'same' does (the extra padding after)
 *   and convolves 'valid' along every axis; the halos are kept (as tensors) for backward, which rebuilds the
 *   extended slab, takes the filter gradient as a local partial sum, and splits the extended input
 *   gradient: its halo parts go back to the neighbours and are added into their slabs' edge planes. A
 *   convolution whose D window needs no other plane (1×1×1, or kd ≤ stride) runs as the layer itself.
 * - InstanceNormAct: the statistics of the whole volume, from per-part sums all-reduced in float64 (Σx,
 *   then Σ(x − mean)²: two passes, as the single-process kernel); backward all-reduces Σdx̂ and Σdx̂·x̂;
 *   dγ and dβ are local partial sums. The element arithmetic is that of the kernel the single-process step
 *   runs: float32 as the native one where it is registered, else float64 as VolInstanceNormForward/Backward.
 * - Add, ConcatChannels, UpsampleNearest: local, the layer's own forward and backward.
 * - The loss (core/training/loss.ts's soft Dice + cross-entropy, sigmoid or softmax, with the network's
 *   auxiliary outputs and their weights): per-channel sums all-reduced, the gradient at the logits local.
 * - Parameter gradients: all-reduced once at the end, as one vector (rank order: identical bits everywhere).
 *
 * Small all-reduces (statistics, loss sums) go in float64: each rank's partial sum is split into two
 * float32 halves and placed in its own slot of a P-slot vector, so the float32 all-reduce adds only zeros
 * (exact) and every rank then sums the P parts in float64 in rank order.
 *
 * Memory: as the owned executor, every activation is freed after its last reader, every save after its
 * layer's backward, every gradient once passed on; a normalisation writes its output over its input and
 * its input gradient over dy where nothing else holds them. The halos live as long as the saved input.
 * Runs on host-array backends (tfjs's cpu backend), which a rank has (core/parallel/worker-runtime.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import { Add, ConcatChannels, Conv3d, InstanceNormAct, UpsampleNearest, NETWORK_INPUT, type GraphNode, type Network, type Shape } from '../../core/engine/index.js';
import { capabilities, exclusiveValues, sharesStorage } from '../../core/backend/index.js';
import type { Collective } from '../../core/parallel/index.js';
import { lossFromSums, lossPartialSums, type LossKind, type LossSums } from '../../core/training/index.js';
import { networkGeometry, slabPlanes, type NodeGeometry, type SlabPartition } from './partition.js';

const DEFAULT_MESSAGE_BYTES = 16 * 2 ** 20;

export interface SpatialStepStats {
  forwardSeconds: number;
  lossSeconds: number;
  backwardSeconds: number;
  /** The final all-reduce of the parameter gradients. */
  gradientReduceSeconds: number;
  seconds: number;
  /** Bytes this rank sent: halo planes (forward and backward), small all-reduces (norm and loss sums), the gradient all-reduce. */
  haloBytes: number;
  statsBytes: number;
  gradientBytes: number;
  /** What the collective counted for this step (the sum of the three). */
  bytesSent: number;
  haloExchanges: number;
  allReduces: number;
}

export interface SpatialStepResult {
  loss: number;
  /** Gradient per qualified parameter name, all-reduced (the same bits on every rank); the caller disposes them. */
  grads: Map<string, Tensor>;
  stats: SpatialStepStats;
}

/** How each node runs on a slab. */
type NodePlan =
  | { kind: 'local' }
  | { kind: 'norm'; layer: InstanceNormAct; count: number }
  | {
      kind: 'conv-halo';
      layer: Conv3d;
      kernel: [number, number, number];
      stride: number;
      /** Halo planes before (from rank − 1) and after (from rank + 1) the slab. */
      below: number;
      above: number;
      padH: [number, number];
      padW: [number, number];
    };

interface SavedEntry {
  tensors: Tensor[];
  inputShapes: Shape[];
}

/** TF's padding along one axis: [before, after] ('same' puts the extra one after). */
function tfPads(size: number, k: number, stride: number, padding: 'same' | 'valid'): [number, number] {
  if (padding === 'valid') return [0, 0];
  const out = Math.ceil(size / stride);
  const total = Math.max((out - 1) * stride + k - size, 0);
  const before = Math.floor(total / 2);
  return [before, total - before];
}

const SUPPORTED = 'conv3d, instancenorm-act, add, concat, upsample-nearest';

/** Planes [from, from + count) of each sample of a [N, D, H, W, C] array, as [N, count, H, W, C]. */
function copyPlanes(v: Float32Array, shape: number[], from: number, count: number): Float32Array {
  const [n, d, h, w, c] = shape as [number, number, number, number, number];
  const plane = h * w * c;
  const out = new Float32Array(n * count * plane);
  for (let b = 0; b < n; b++) out.set(v.subarray((b * d + from) * plane, (b * d + from + count) * plane), b * count * plane);
  return out;
}

/** Bytes of one collective message, where the collective says (SharedMemoryCollective's scratchBytes). */
function messageBytes(c: Collective): number {
  const s = (c as { scratchBytes?: unknown }).scratchBytes;
  return typeof s === 'number' && s >= 4 ? s : DEFAULT_MESSAGE_BYTES;
}

/**
 * One rank's partitioned network for one global input shape: validated once (layers, alignment, halo
 * thickness), then `trainStep` and `forward` on this rank's slabs.
 */
export class SpatialStep {
  readonly rank: number;
  readonly size: number;
  readonly geometry: Map<string, NodeGeometry>;
  private readonly plans: NodePlan[];
  private readonly readers = new Map<string, number>();
  private counters = { halo: 0, stats: 0, grad: 0, exchanges: 0, reduces: 0 };
  /**
   * Called before each stage of a step (each node's forward and backward, the loss, the gradient
   * all-reduce) and of an inference forward: a rank's memory meter names the operation with it, and may
   * throw there (e.g. over its budget): the group then aborts the collective the other ranks wait in.
   */
  onStage: ((phase: 'forward' | 'loss' | 'backward' | 'gradient all-reduce' | 'inference', node: string) => void) | null = null;

  constructor(
    readonly net: Network,
    readonly part: SlabPartition,
    /** The global input shape [N, D, H, W, C]. */
    readonly inputShape: Shape,
    readonly collective: Collective,
  ) {
    if (collective.size !== part.size) throw new Error(`spatial step: the collective has ${collective.size} ranks but the partition ${part.size} slabs`);
    this.rank = collective.rank;
    this.size = collective.size;
    if (net.outputMargin && net.outputMargin.some((m) => m !== 0))
      throw new Error(`spatial step: network "${net.name}" has an output margin [${net.outputMargin}]; spatial partitioning supports networks without one`);
    for (const node of net.nodes) {
      const c = (node.layer as object).constructor;
      if (c !== Conv3d && c !== InstanceNormAct && c !== Add && c !== ConcatChannels && c !== UpsampleNearest)
        throw new Error(`spatial step: node "${node.name}" is a "${node.layer.type}" layer, which spatial partitioning does not support (supported: ${SUPPORTED})`);
    }
    this.geometry = networkGeometry(net, inputShape, part);
    this.plans = net.nodes.map((node) => this.planNode(node));
    for (const node of net.nodes) for (const i of node.inputs) this.readers.set(i, (this.readers.get(i) ?? 0) + 1);
  }

  private planNode(node: GraphNode): NodePlan {
    const layer = node.layer;
    if (layer instanceof InstanceNormAct) {
      const g = this.geometry.get(node.name)!.global;
      return { kind: 'norm', layer, count: g[1]! * g[2]! * g[3]! };
    }
    if (!(layer instanceof Conv3d)) return { kind: 'local' };
    const o = layer.opts;
    const kernel: [number, number, number] = typeof o.kernel === 'number' ? [o.kernel, o.kernel, o.kernel] : [...o.kernel];
    const stride = o.stride ?? 1;
    const padding = o.padding ?? 'same';
    const inGeo = this.geometry.get(node.inputs[0]!)!;
    const outGeo = this.geometry.get(node.name)!;
    const what = `a volume of ${this.part.depth} planes along D in P = ${this.size} slabs (network divisor ${this.net.divisor})`;
    if (outGeo.factor !== inGeo.factor * stride)
      throw new Error(
        `spatial step: node "${node.name}" (conv3d ${kernel.join('×')}, stride ${stride}, '${padding}') maps ${inGeo.global[1]} planes to ${outGeo.global[1]} along D, ` +
          `not to ${inGeo.global[1]! / stride}: its output would not stay aligned with the slabs (${what})`,
      );
    const [pb, pa] = tfPads(inGeo.global[1]!, kernel[0], stride, padding);
    const below = pb;
    const above = Math.max(kernel[0] - stride - pb, 0);
    // A single rank holds the whole volume: the layer itself, as the single-process step runs it.
    if (this.size === 1 || (below === 0 && above === 0)) return { kind: 'local' };
    if (padding === 'valid' && (pa !== 0 || above > 0))
      throw new Error(`spatial step: node "${node.name}" ('valid' conv3d ${kernel.join('×')}) would read past the slab along D; unsupported (${what})`);
    for (let q = 0; q < this.size; q++) {
      const planes = slabPlanes(this.part, q, inGeo.factor).planes;
      if (planes < Math.max(below, above))
        throw new Error(
          `spatial step: node "${node.name}" (conv3d ${kernel.join('×')}) needs halos of ${below} plane(s) before and ${above} after each slab, ` +
            `but slab ${q} has only ${planes} plane(s) at that resolution (${what}); use fewer ranks or thicker slabs`,
        );
    }
    const g = inGeo.global;
    return {
      kind: 'conv-halo',
      layer,
      kernel,
      stride,
      below,
      above,
      padH: tfPads(g[2]!, kernel[1], stride, padding),
      padW: tfPads(g[3]!, kernel[2], stride, padding),
    };
  }

  /**
   * Bytes of the halo planes a training step keeps for backward on a rank (every halo convolution's, from
   * both neighbours; at most, since a rank at an end of the volume gets zero planes there): what the
   * partitioned step holds beyond a single-process step on the slab alone (strategies/spatial/index.ts's estimate).
   */
  haloBytes(): number {
    let bytes = 0;
    this.net.nodes.forEach((node, i) => {
      const plan = this.plans[i]!;
      if (plan.kind !== 'conv-halo') return;
      const g = this.geometry.get(node.inputs[0]!)!.global;
      bytes += (plan.below + plan.above) * g[0]! * g[2]! * g[3]! * g[4]! * 4;
    });
    return bytes;
  }

  /** This rank's shape of a node's output (or of NETWORK_INPUT). */
  localShape(name: string): Shape {
    const g = this.geometry.get(name);
    if (!g) throw new Error(`spatial step: unknown node "${name}"`);
    const { planes } = slabPlanes(this.part, this.rank, g.factor);
    return [g.global[0]!, planes, g.global[2]!, g.global[3]!, g.global[4]!];
  }

  private paramsOf(node: GraphNode, params: Map<string, Tensor>): Tensor[] {
    return node.layer.params.map((p) => {
      const t = params.get(`${node.name}.${p.name}`);
      if (!t) throw new Error(`spatial step: missing parameter ${node.name}.${p.name}`);
      return t;
    });
  }

  private checkSlab(name: string, t: Tensor, what: string): void {
    const want = this.localShape(name);
    if (t.shape.join() !== want.join()) throw new Error(`spatial step: rank ${this.rank}'s ${what} has shape [${t.shape}], expected its slab [${want}]`);
  }

  // ------------------------------------------------------------------------------------------------
  // Collectives, counted
  // ------------------------------------------------------------------------------------------------

  private exchange(toBelow: Float32Array | null, toAbove: Float32Array | null): { fromBelow: Float32Array | null; fromAbove: Float32Array | null } {
    const r = this.collective.exchangeHalos(this.rank > 0 ? toBelow : null, this.rank < this.size - 1 ? toAbove : null);
    this.counters.halo += 4 * ((this.rank > 0 ? toBelow?.length ?? 0 : 0) + (this.rank < this.size - 1 ? toAbove?.length ?? 0 : 0));
    this.counters.exchanges++;
    return r;
  }

  /**
   * The sum over the ranks of `v`, in float64, identical on every rank: each rank's values go, split into
   * two float32 halves, in its own slot of a P-slot vector; the float32 all-reduce then adds only zeros.
   */
  private allReduceF64(v: Float64Array): Float64Array {
    const n = v.length;
    const P = this.size;
    const buf = new Float32Array(2 * n * P);
    const base = 2 * n * this.rank;
    for (let i = 0; i < n; i++) {
      const hi = Math.fround(v[i]!);
      buf[base + 2 * i] = hi;
      buf[base + 2 * i + 1] = Number.isFinite(hi) ? Math.fround(v[i]! - hi) : 0;
    }
    this.reduceChunks(buf, 'stats');
    const out = new Float64Array(n);
    for (let q = 0; q < P; q++) for (let i = 0; i < n; i++) out[i]! += buf[2 * (q * n + i)]! + buf[2 * (q * n + i) + 1]!;
    return out;
  }

  /** allReduceSum in pieces that fit the collective's message capacity. */
  private reduceChunks(v: Float32Array, what: 'stats' | 'grad'): void {
    const chunk = Math.floor(messageBytes(this.collective) / 4);
    for (let off = 0; off < v.length || off === 0; off += chunk) {
      this.collective.allReduceSum(v.subarray(off, Math.min(off + chunk, v.length)));
      this.counters.reduces++;
      if (v.length === 0) break;
    }
    this.counters[what] += 4 * v.length;
  }

  // ------------------------------------------------------------------------------------------------
  // Conv3d with halos
  // ------------------------------------------------------------------------------------------------

  /** The slab with its halo planes along D (zeros where null) and TF's padding along H and W. */
  private extended(x: Tensor, below: Float32Array | null, above: Float32Array | null, p: Extract<NodePlan, { kind: 'conv-halo' }>): Tensor {
    const [n, d, h, w, c] = x.shape as number[] as [number, number, number, number, number];
    const xv = x.dataSync() as Float32Array;
    const hb = p.below;
    const ha = p.above;
    const De = hb + d + ha;
    const He = h + p.padH[0] + p.padH[1];
    const We = w + p.padW[0] + p.padW[1];
    const plane = h * w * c;
    const row = w * c;
    const out = new Float32Array(n * De * He * We * c);
    const plain = He === h && We === w;
    for (let b = 0; b < n; b++) {
      for (let e = 0; e < De; e++) {
        let src: Float32Array | null;
        let off: number;
        if (e < hb) [src, off] = [below, (b * hb + e) * plane];
        else if (e < hb + d) [src, off] = [xv, (b * d + e - hb) * plane];
        else [src, off] = [above, (b * ha + e - hb - d) * plane];
        if (!src) continue; // the volume's end: zero planes, as the padding
        const dst = (b * De + e) * He * We * c;
        if (plain) out.set(src.subarray(off, off + plane), dst);
        else for (let y = 0; y < h; y++) out.set(src.subarray(off + y * row, off + (y + 1) * row), dst + ((y + p.padH[0]) * We + p.padW[0]) * c);
      }
    }
    return tf.tensor(out, [n, De, He, We, c], 'float32');
  }

  /** Planes [from, from + count) of each sample of a [N, D, H, W, C] array (without H/W padding) as [N, count, h, w, C]. */
  private static planesOf(v: Float32Array, shape: number[], from: number, count: number, h: number, w: number, padTop: number, padLeft: number): Float32Array {
    const [n, D, H, W, c] = shape as [number, number, number, number, number];
    const out = new Float32Array(n * count * h * w * c);
    const row = w * c;
    for (let b = 0; b < n; b++)
      for (let e = 0; e < count; e++) {
        const src = (b * D + from + e) * H * W * c;
        const dst = (b * count + e) * h * w * c;
        if (H === h && W === w) out.set(v.subarray(src, src + h * w * c), dst);
        else for (let y = 0; y < h; y++) out.set(v.subarray(src + ((y + padTop) * W + padLeft) * c, src + ((y + padTop) * W + padLeft) * c + row), dst + y * row);
      }
    return out;
  }

  private convHaloForward(x: Tensor, params: Tensor[], p: Extract<NodePlan, { kind: 'conv-halo' }>, keep: boolean): { y: Tensor; halos: Tensor[] } {
    const [n, d, h, w, c] = x.shape as number[] as [number, number, number, number, number];
    const xv = x.dataSync() as Float32Array;
    const shape = x.shape as number[];
    // The rank below needs this slab's first `above` planes (its after-halo), the rank above its last `below`.
    const toBelow = copyPlanes(xv, shape, 0, p.above);
    const toAbove = copyPlanes(xv, shape, d - p.below, p.below);
    const { fromBelow, fromAbove } = this.exchange(toBelow, toAbove);
    // The halos as tensors at once (the meter sees them): kept for backward, or freed after the convolution.
    const below = fromBelow ? tf.tensor(fromBelow, [n, p.below, h, w, c], 'float32') : null;
    const above = fromAbove ? tf.tensor(fromAbove, [n, p.above, h, w, c], 'float32') : null;
    const ext = this.extended(x, fromBelow, fromAbove, p);
    const halos = [below, above].filter((t): t is Tensor => t !== null);
    if (!keep) tf.dispose(halos);
    const [filter, bias] = params;
    const s = p.stride;
    const conv = tf.conv3d(ext as tf.Tensor5D, filter as tf.Tensor5D, [s, s, s], 'valid');
    ext.dispose();
    let y = conv;
    if (bias) {
      y = tf.add(conv, bias);
      conv.dispose();
    }
    return { y, halos: keep ? halos : [] };
  }

  private convHaloBackward(
    dy: Tensor,
    saved: Tensor[],
    params: Tensor[],
    needInputGrad: boolean,
    p: Extract<NodePlan, { kind: 'conv-halo' }>,
    releaseSaves: () => void,
  ): { dx: Tensor | null; dParams: Tensor[] } {
    const [x, ...halos] = saved;
    const xShape = x!.shape;
    const [n, d, h, w, c] = xShape as number[] as [number, number, number, number, number];
    // The halos kept in forward: the below one exists except on rank 0, the above one except on the last rank.
    let k = 0;
    const below = this.rank > 0 ? (halos[k++]!.dataSync() as Float32Array) : null;
    const above = this.rank < this.size - 1 ? (halos[k++]!.dataSync() as Float32Array) : null;
    const [filter, bias] = params;
    const s = p.stride;
    const strides: [number, number, number] = [s, s, s];
    const ext = this.extended(x!, below, above, p);
    const extShape = ext.shape as number[];
    const dFilter = tf.engine().runKernel('Conv3DBackpropFilterV2', { x: ext, dy }, { strides, pad: 'valid', filterShape: filter!.shape }) as Tensor;
    ext.dispose();
    const dParams = [dFilter];
    if (bias) dParams.push(tf.sum(dy, [0, 1, 2, 3]));
    // As Conv3d's backward (Layer.releasesSavesEarly, which the estimate books): the saves go before dx.
    releaseSaves();
    if (!needInputGrad) return { dx: null, dParams };
    const dExt = tf.engine().runKernel('Conv3DBackpropInputV2', { dy, filter: filter! }, { inputShape: extShape, strides, pad: 'valid' }) as Tensor;
    const dv = dExt.dataSync() as Float32Array;
    const toBelow = this.rank > 0 ? SpatialStep.planesOf(dv, extShape, 0, p.below, h, w, p.padH[0], p.padW[0]) : null;
    const toAbove = this.rank < this.size - 1 ? SpatialStep.planesOf(dv, extShape, p.below + d, p.above, h, w, p.padH[0], p.padW[0]) : null;
    const dxv = SpatialStep.planesOf(dv, extShape, p.below, d, h, w, p.padH[0], p.padW[0]);
    const dx = tf.tensor(dxv, xShape, 'float32'); // made while dExt lives: the meter sees both
    dExt.dispose();
    const { fromBelow, fromAbove } = this.exchange(toBelow, toAbove);
    const plane = h * w * c;
    // From below: the gradient at this slab's first `above` planes; from above: at its last `below` planes.
    for (let b = 0; b < n; b++) {
      if (fromBelow) for (let i = 0, o = b * d * plane, q = b * p.above * plane; i < p.above * plane; i++) dxv[o + i]! += fromBelow[q + i]!;
      if (fromAbove) for (let i = 0, o = (b * d + d - p.below) * plane, q = b * p.below * plane; i < p.below * plane; i++) dxv[o + i]! += fromAbove[q + i]!;
    }
    return { dx, dParams };
  }

  // ------------------------------------------------------------------------------------------------
  // Instance normalisation with global statistics
  // ------------------------------------------------------------------------------------------------

  /**
   * y = leakyRelu(γ·x̂ + β) with x̂ from the whole volume's per-sample, per-channel mean and variance
   * (two passes over the parts, each all-reduced in float64). The element arithmetic is that of the kernel
   * the single-process step runs: float32 as the native one (core/backend/native, `inorm_fwd`) where it is
   * registered, else float64 as the JavaScript VolInstanceNormForward. `inPlace` writes y over x (returned as y).
   */
  private normForward(x: Tensor, gamma: Tensor, beta: Tensor, p: Extract<NodePlan, { kind: 'norm' }>, inPlace: boolean, withXhat: boolean): { y: Tensor; xhat: Tensor | null; invStd: Tensor } {
    const [n, , , , c] = x.shape as number[] as [number, number, number, number, number];
    const xv = x.dataSync() as Float32Array;
    const g = gamma.dataSync() as Float32Array;
    const bt = beta.dataSync() as Float32Array;
    const len = xv.length / n; // values per sample
    const count = p.count;
    const f32 = capabilities().nativeKernels;
    const R = Math.fround;
    // Flat loops over each sample's values with a running channel index (channels-last).
    const sums = new Float64Array(n * c);
    for (let b = 0; b < n; b++) {
      const acc = sums.subarray(b * c, (b + 1) * c);
      for (let o = b * len, e = o + len, k = 0; o < e; o++) {
        acc[k]! += xv[o]!;
        if (++k === c) k = 0;
      }
    }
    const mean = this.allReduceF64(sums);
    for (let j = 0; j < n * c; j++) mean[j]! /= count;
    // Two passes: the variance from centred values (as stable as the single-process kernels).
    const m2 = new Float64Array(n * c);
    for (let b = 0; b < n; b++) {
      const acc = m2.subarray(b * c, (b + 1) * c);
      const mu = mean.subarray(b * c, (b + 1) * c);
      for (let o = b * len, e = o + len, k = 0; o < e; o++) {
        const dlt = xv[o]! - mu[k]!;
        acc[k]! += dlt * dlt;
        if (++k === c) k = 0;
      }
    }
    const M2 = this.allReduceF64(m2);
    const eps = f32 ? R(p.layer.epsilon) : p.layer.epsilon;
    const inv = new Float32Array(n * c);
    for (let j = 0; j < n * c; j++) inv[j] = 1 / Math.sqrt(M2[j]! / count + eps);
    const y = inPlace ? xv : new Float32Array(xv.length);
    const xhat = withXhat ? new Float32Array(xv.length) : null;
    const alpha = p.layer.alpha;
    // The mean as a float pair (hi + lo) for the float32 arithmetic.
    const meanHi = Float32Array.from(mean);
    const meanLo = new Float32Array(n * c);
    for (let j = 0; j < n * c; j++) meanLo[j] = mean[j]! - meanHi[j]!;
    const a = R(alpha);
    // The leaky ReLU's slope by lookup (1 where z ≥ 0, α below): the same values as a branch, without its mispredictions.
    const slope = Float64Array.from(f32 ? [a, 1] : [alpha, 1]);
    for (let b = 0; b < n; b++) {
      const hi = meanHi.subarray(b * c, (b + 1) * c);
      const lo = meanLo.subarray(b * c, (b + 1) * c);
      const mu = mean.subarray(b * c, (b + 1) * c);
      const is = inv.subarray(b * c, (b + 1) * c);
      const start = b * len;
      const end = start + len;
      if (f32) {
        // Every element operation rounded to float32, as the native kernel.
        for (let o = start, k = 0; o < end; o++) {
          const h = R(R(R(xv[o]! - hi[k]!) - lo[k]!) * is[k]!);
          if (xhat) xhat[o] = h;
          const z = R(R(g[k]! * h) + bt[k]!);
          y[o] = z * slope[+(z >= 0)]!;
          if (++k === c) k = 0;
        }
      } else {
        for (let o = start, k = 0; o < end; o++) {
          const xh = (xv[o]! - mu[k]!) * is[k]!;
          if (xhat) xhat[o] = xh;
          const z = g[k]! * xh + bt[k]!;
          y[o] = z * slope[+(z >= 0)]!;
          if (++k === c) k = 0;
        }
      }
    }
    return {
      y: inPlace ? x : tf.tensor(y, x.shape, 'float32'),
      xhat: xhat ? tf.tensor(xhat, x.shape, 'float32') : null,
      invStd: tf.tensor(inv, [n, c], 'float32'),
    };
  }

  /**
   * The normalisation's backward with the means of dx̂ and dx̂·x̂ over the whole volume (all-reduced in
   * float64); dγ, dβ are this part's sums. Element arithmetic as normForward's (native `inorm_bwd`, or the
   * JavaScript VolInstanceNormBackward). `inPlace` writes dx over dy (returned as dx).
   */
  private normBackward(dy: Tensor, xhat: Tensor, invStd: Tensor, gamma: Tensor, beta: Tensor, p: Extract<NodePlan, { kind: 'norm' }>, inPlace: boolean): { dx: Tensor; dGamma: Tensor; dBeta: Tensor } {
    const [n, , , , c] = dy.shape as number[] as [number, number, number, number, number];
    const dyv = dy.dataSync() as Float32Array;
    const xh = xhat.dataSync() as Float32Array;
    const inv = invStd.dataSync() as Float32Array;
    const g = gamma.dataSync() as Float32Array;
    const bt = beta.dataSync() as Float32Array;
    const alpha = p.layer.alpha;
    const f32 = capabilities().nativeKernels;
    const R = Math.fround;
    const a = R(alpha);
    const len = dyv.length / n;
    // The leaky ReLU's slope by lookup (as normForward).
    const slope = Float64Array.from(f32 ? [a, 1] : [alpha, 1]);
    const dgamma = new Float64Array(c);
    const dbeta = new Float64Array(c);
    // Per (sample, channel): [Σ g, Σ g·x̂] (native: g = the activation's gradient), or [Σ dx̂, Σ dx̂·x̂]
    // (JavaScript: dx̂ = g·γ), as the kernel the single-process step runs.
    const sums = new Float64Array(2 * n * c);
    for (let b = 0; b < n; b++) {
      const s1 = sums.subarray(b * c, (b + 1) * c);
      const s2 = sums.subarray(n * c + b * c, n * c + (b + 1) * c);
      const start = b * len;
      const end = start + len;
      if (f32) {
        for (let o = start, k = 0; o < end; o++) {
          const h = xh[o]!;
          const z = R(R(g[k]! * h) + bt[k]!);
          const gr = R(dyv[o]! * slope[+(z >= 0)]!);
          s1[k]! += gr;
          s2[k]! += gr * h;
          if (++k === c) k = 0;
        }
        for (let k = 0; k < c; k++) {
          dbeta[k]! += s1[k]!;
          dgamma[k]! += s2[k]!;
        }
      } else {
        for (let o = start, k = 0; o < end; o++) {
          const h = xh[o]!;
          const z = g[k]! * h + bt[k]!;
          const gr = dyv[o]! * slope[+(z >= 0)]!;
          dgamma[k]! += gr * h;
          dbeta[k]! += gr;
          const dxh = gr * g[k]!;
          s1[k]! += dxh;
          s2[k]! += dxh * h;
          if (++k === c) k = 0;
        }
      }
    }
    const tot = this.allReduceF64(sums);
    const dx = inPlace ? dyv : new Float32Array(dyv.length);
    for (let b = 0; b < n; b++) {
      const is = inv.subarray(b * c, (b + 1) * c);
      const start = b * len;
      const end = start + len;
      if (f32) {
        const m1 = new Float32Array(c);
        const m2 = new Float32Array(c);
        for (let k = 0; k < c; k++) {
          m1[k] = (g[k]! * tot[b * c + k]!) / p.count;
          m2[k] = (g[k]! * tot[n * c + b * c + k]!) / p.count;
        }
        for (let o = start, k = 0; o < end; o++) {
          const h = xh[o]!;
          const z = R(R(g[k]! * h) + bt[k]!);
          const gr = R(dyv[o]! * slope[+(z >= 0)]!);
          dx[o] = is[k]! * R(R(R(gr * g[k]!) - m1[k]!) - R(h * m2[k]!));
          if (++k === c) k = 0;
        }
      } else {
        const m1 = new Float64Array(c);
        const m2 = new Float64Array(c);
        for (let k = 0; k < c; k++) {
          m1[k] = tot[b * c + k]! / p.count;
          m2[k] = tot[n * c + b * c + k]! / p.count;
        }
        for (let o = start, k = 0; o < end; o++) {
          const h = xh[o]!;
          const z = g[k]! * h + bt[k]!;
          const gr = dyv[o]! * slope[+(z >= 0)]!;
          dx[o] = is[k]! * (gr * g[k]! - m1[k]! - h * m2[k]!);
          if (++k === c) k = 0;
        }
      }
    }
    return {
      dx: inPlace ? dy : tf.tensor(dx, dy.shape, 'float32'),
      dGamma: tf.tensor(Float32Array.from(dgamma), [c], 'float32'),
      dBeta: tf.tensor(Float32Array.from(dbeta), [c], 'float32'),
    };
  }

  // ------------------------------------------------------------------------------------------------
  // The loss
  // ------------------------------------------------------------------------------------------------

  /**
   * stepLoss's 'dice' / 'dice+ce' over the whole volume: the main output against the target, each
   * auxiliary output against the target average-pooled by its scale, weighted. core/training/loss.ts's
   * two passes: lossPartialSums on this rank's part, the sums all-reduced in one float64 call, then
   * lossFromSums writes the local gradient.
   */
  private loss(heads: { logits: Tensor; target: Tensor; weight: number; global: Shape }[], kind: LossKind): { loss: number; grads: Tensor[] } {
    const act = this.net.activation;
    const K = Math.max(this.net.outChannels, ...heads.map((hd) => hd.logits.shape[4]!));
    const per = 3 * K + 1;
    const sums = new Float64Array(per * heads.length);
    const scratch: Float32Array[] = [];
    heads.forEach((hd, h) => {
      const l = hd.logits.dataSync() as Float32Array;
      const kk = hd.logits.shape[4]!;
      const grad = new Float32Array(l.length);
      const part = lossPartialSums(l, hd.target.dataSync() as Float32Array, kk, kind, act, grad);
      const o = per * h;
      sums.set(part.inter, o);
      sums.set(part.prob, o + K);
      sums.set(part.target, o + 2 * K);
      sums[o + 3 * K] = part.ce;
      scratch.push(grad);
    });
    const tot = this.allReduceF64(sums);
    let loss = 0;
    const grads = heads.map((hd, h) => {
      const o = per * h;
      const kk = hd.logits.shape[4]!;
      const whole: LossSums = {
        inter: tot.slice(o, o + kk),
        prob: tot.slice(o + K, o + K + kk),
        target: tot.slice(o + 2 * K, o + 2 * K + kk),
        ce: tot[o + 3 * K]!,
      };
      const grad = scratch[h]!;
      const elements = hd.global.reduce((a, b) => a * b, 1);
      loss += lossFromSums(whole, elements, hd.target.dataSync() as Float32Array, kk, kind, act, grad, hd.weight);
      return tf.tensor(grad, hd.logits.shape, 'float32');
    });
    return { loss, grads };
  }

  // ------------------------------------------------------------------------------------------------
  // Forward, loss, backward
  // ------------------------------------------------------------------------------------------------

  /**
   * One partitioned training step on this rank's slabs: `x` [N, planes, H, W, Cin] and `target`
   * [N, planes, H, W, K] (this rank's planes of the input and of the target), `params` (the same on every
   * rank). Every rank must call it at once (SPMD). Returns the loss and the all-reduced gradients.
   */
  async trainStep(x: Tensor, target: Tensor, params: Map<string, Tensor>, kind: LossKind = 'dice+ce'): Promise<SpatialStepResult> {
    if (!capabilities().hostArrays) throw new Error(`spatial step: needs a host-array backend (tfjs's cpu backend); the active one is ${capabilities().name}`);
    this.checkSlab(NETWORK_INPUT, x, 'input');
    if (target.shape.slice(0, 4).join() !== x.shape.slice(0, 4).join())
      throw new Error(`spatial step: rank ${this.rank}'s target has shape [${target.shape}], not the input slab's planes [${x.shape.slice(0, 4)}, K]`);
    const t0 = performance.now();
    const bytes0 = this.collective.bytesSent;
    this.counters = { halo: 0, stats: 0, grad: 0, exchanges: 0, reduces: 0 };
    const { nodes } = this.net;
    const aux = this.net.auxOutputs ?? [];
    const headNodes = [this.net.output, ...aux.map((a) => a.node)];
    const holders = new Map<Tensor, number>();
    const acts = new Map<string, Tensor>([[NETWORK_INPUT, x]]);
    const saved = new Map<string, SavedEntry>();
    const live = function* (): Generator<Tensor> {
      yield* holders.keys();
    };
    const hold = (t: Tensor, k = 1): void => {
      const c = (holders.get(t) ?? 0) + k;
      if (c > 0) holders.set(t, c);
      else release(t, 0);
    };
    const release = (t: Tensor, by = 1): void => {
      const c = (holders.get(t) ?? 0) - by;
      if (c > 0) return void holders.set(t, c);
      holders.delete(t);
      if (t !== x && !t.isDisposed) t.dispose();
    };
    const readers = new Map(this.readers);
    for (const h of headNodes) readers.set(h, (readers.get(h) ?? 0) + 1);
    hold(x, readers.get(NETWORK_INPUT) ?? 0);

    // Forward with saves.
    nodes.forEach((node, i) => {
      this.onStage?.('forward', node.name);
      const plan = this.plans[i]!;
      const inputs = node.inputs.map((n) => acts.get(n)!);
      const ps = this.paramsOf(node, params);
      const saves: Tensor[] = [];
      let out: Tensor;
      if (plan.kind === 'conv-halo') {
        const { y, halos } = this.convHaloForward(inputs[0]!, ps, plan, true);
        out = y;
        saves.push(inputs[0]!, ...halos);
      } else if (plan.kind === 'norm') {
        const xin = inputs[0]!;
        const inPlace = xin !== x && holders.get(xin) === 1 && exclusiveValues(xin) !== null && !sharesStorage(xin, live());
        const r = this.normForward(xin, ps[0]!, ps[1]!, plan, inPlace, true);
        out = r.y;
        saves.push(r.xhat!, r.invStd);
      } else {
        out = node.layer.forward({ inputs, params: ps, save: (t) => void saves.push(t), saveMode: 'all' });
      }
      // Saves hold their tensors (an input's, or their own); the output is held by its readers.
      for (const t of saves) hold(t);
      saved.set(node.name, { tensors: saves, inputShapes: inputs.map((t) => t.shape) });
      acts.set(node.name, out);
      hold(out, readers.get(node.name) ?? 0);
      if (!holders.has(out) && !out.isDisposed) out.dispose();
      for (const t of inputs) release(t);
    });
    const tLoss = performance.now();
    this.onStage?.('loss', this.net.output);

    // The loss: the main output against the target, each auxiliary one against the target pooled by its scale.
    const headTargets = aux.map((a) => {
      if (a.scale === 1) return target;
      const planes = target.shape[1]!;
      if (planes % a.scale !== 0) throw new Error(`spatial step: auxiliary output "${a.node}" pools the target by ${a.scale}, but rank ${this.rank}'s slab has ${planes} planes`);
      return tf.avgPool3d(target as tf.Tensor5D, a.scale, a.scale, 'valid') as Tensor;
    });
    const heads = headNodes.map((name, k) => {
      const logits = acts.get(name)!;
      const tgt = k === 0 ? target : headTargets[k - 1]!;
      if (tgt.shape.join() !== logits.shape.join())
        throw new Error(`spatial step: rank ${this.rank}'s target for "${name}" has shape [${tgt.shape}], its logits [${logits.shape}]`);
      return { logits, target: tgt, weight: k === 0 ? 1 : aux[k - 1]!.weight, global: this.geometry.get(name)!.global };
    });
    const { loss, grads: headGrads } = this.loss(heads, kind);
    for (const t of headTargets) if (t !== target) t.dispose();
    for (const h of headNodes) release(acts.get(h)!);
    acts.clear();
    const grads = new Map<string, Tensor>();
    const accumulate = (into: Map<string, Tensor>, name: string, g: Tensor): void => {
      const prev = into.get(name);
      if (!prev) return void into.set(name, g);
      const own = exclusiveValues(prev);
      if (own && prev !== g && !sharesStorage(prev, [g, ...live(), ...into.values()])) {
        const gv = g.dataSync() as Float32Array;
        for (let i = 0; i < own.length; i++) own[i]! += gv[i]!;
        g.dispose();
        return;
      }
      into.set(name, tf.add(prev, g));
      prev.dispose();
      g.dispose();
    };
    headNodes.forEach((h, k) => accumulate(grads, h, headGrads[k]!));
    const tBackward = performance.now();

    // The owned backward, in reverse order.
    const paramGrads = new Map<string, Tensor>();
    for (let i = nodes.length - 1; i >= 0; i--) {
      const node = nodes[i]!;
      this.onStage?.('backward', node.name);
      const plan = this.plans[i]!;
      const entry = saved.get(node.name)!;
      saved.delete(node.name);
      const dy = grads.get(node.name);
      grads.delete(node.name);
      // Saves a backward let go of before it returned (Layer.releasesSavesEarly), as the executor does.
      const released = new Set<number>();
      const releaseSave = (k: number): void => {
        if (released.has(k) || !entry.tensors[k]) return;
        released.add(k);
        release(entry.tensors[k]!);
      };
      const releaseSaves = (): void => entry.tensors.forEach((_, k) => releaseSave(k));
      if (dy) {
        const ps = this.paramsOf(node, params);
        const needInputGrad = node.inputs.map((n) => n !== NETWORK_INPUT);
        let dInputs: (Tensor | null)[];
        let dParams: Tensor[];
        if (plan.kind === 'conv-halo') {
          const r = this.convHaloBackward(dy, entry.tensors, ps, needInputGrad[0]!, plan, releaseSaves);
          dInputs = [r.dx];
          dParams = r.dParams;
        } else if (plan.kind === 'norm') {
          const [xhat, invStd] = entry.tensors;
          const inPlace = exclusiveValues(dy) !== null && !sharesStorage(dy, [...live(), ...grads.values()]);
          const r = this.normBackward(dy, xhat!, invStd!, ps[0]!, ps[1]!, plan, inPlace);
          dInputs = [r.dx];
          dParams = [r.dGamma, r.dBeta];
        } else {
          const r = node.layer.backward({ dy, saved: entry.tensors, saveMode: 'all', params: ps, inputShapes: entry.inputShapes, needInputGrad, release: releaseSave });
          dInputs = r.dInputs;
          dParams = r.dParams;
        }
        if (!dInputs.includes(dy)) dy.dispose();
        node.inputs.forEach((n, k) => {
          const g = dInputs[k];
          if (!g) return;
          if (n === NETWORK_INPUT) g.dispose();
          else accumulate(grads, n, g);
        });
        node.layer.params.forEach((p, k) => accumulate(paramGrads, `${node.name}.${p.name}`, dParams[k]!));
      }
      releaseSaves();
    }
    for (const g of grads.values()) g.dispose();
    for (const t of [...holders.keys()]) if (t !== x) release(t, holders.get(t)!);
    const tReduce = performance.now();
    this.onStage?.('gradient all-reduce', 'parameters');

    // Every parameter gradient in one vector, all-reduced (rank order: the same bits on every rank).
    const names = this.net.params.map((p) => p.qualifiedName).filter((n) => paramGrads.has(n));
    const total = names.reduce((a, n) => a + paramGrads.get(n)!.size, 0);
    const flatT = tf.tensor(new Float32Array(total), [total], 'float32');
    const flat = flatT.dataSync() as Float32Array;
    let off = 0;
    for (const n of names) {
      const g = paramGrads.get(n)!;
      flat.set(g.dataSync() as Float32Array, off);
      off += g.size;
      g.dispose();
    }
    this.reduceChunks(flat, 'grad');
    const out = new Map<string, Tensor>();
    off = 0;
    for (const n of names) {
      const shape = this.net.params.find((p) => p.qualifiedName === n)!.shape;
      const size = shape.reduce((a, b) => a * b, 1);
      out.set(n, tf.tensor(flat.slice(off, off + size), shape, 'float32'));
      off += size;
    }
    flatT.dispose();
    const tEnd = performance.now();
    return {
      loss,
      grads: out,
      stats: {
        forwardSeconds: (tLoss - t0) / 1000,
        lossSeconds: (tBackward - tLoss) / 1000,
        backwardSeconds: (tReduce - tBackward) / 1000,
        gradientReduceSeconds: (tEnd - tReduce) / 1000,
        seconds: (tEnd - t0) / 1000,
        haloBytes: this.counters.halo,
        statsBytes: this.counters.stats,
        gradientBytes: this.counters.grad,
        bytesSent: this.collective.bytesSent - bytes0,
        haloExchanges: this.counters.exchanges,
        allReduces: this.counters.reduces,
      },
    };
  }

  /**
   * Partitioned inference: this rank's slab of the output probabilities (sigmoid or softmax of the logits;
   * the logits themselves with `logits`), [N, planes, H, W, K]; nothing saved, every activation freed after
   * its last reader. SPMD.
   */
  forward(x: Tensor, params: Map<string, Tensor>, opts: { logits?: boolean } = {}): Tensor {
    if (!capabilities().hostArrays) throw new Error(`spatial forward: needs a host-array backend (tfjs's cpu backend); the active one is ${capabilities().name}`);
    this.checkSlab(NETWORK_INPUT, x, 'input');
    const holders = new Map<Tensor, number>();
    const acts = new Map<string, Tensor>([[NETWORK_INPUT, x]]);
    const readers = new Map(this.readers);
    readers.set(this.net.output, (readers.get(this.net.output) ?? 0) + 1);
    const release = (t: Tensor): void => {
      const c = (holders.get(t) ?? 0) - 1;
      if (c > 0) return void holders.set(t, c);
      holders.delete(t);
      if (t !== x && !t.isDisposed) t.dispose();
    };
    holders.set(x, readers.get(NETWORK_INPUT) ?? 0);
    this.net.nodes.forEach((node, i) => {
      this.onStage?.('inference', node.name);
      const plan = this.plans[i]!;
      const inputs = node.inputs.map((n) => acts.get(n)!);
      const ps = this.paramsOf(node, params);
      let out: Tensor;
      if (plan.kind === 'conv-halo') out = this.convHaloForward(inputs[0]!, ps, plan, false).y;
      else if (plan.kind === 'norm') {
        const xin = inputs[0]!;
        const inPlace = xin !== x && holders.get(xin) === 1 && exclusiveValues(xin) !== null && !sharesStorage(xin, holders.keys());
        const r = this.normForward(xin, ps[0]!, ps[1]!, plan, inPlace, false);
        r.invStd.dispose();
        out = r.y;
      } else {
        const extras: Tensor[] = [];
        out = node.layer.forward({ inputs, params: ps, save: (t) => void extras.push(t), saveMode: 'none' });
        for (const t of extras) if (t !== out && !inputs.includes(t)) t.dispose();
      }
      acts.set(node.name, out);
      const r = readers.get(node.name) ?? 0;
      if (r > 0) holders.set(out, (holders.get(out) ?? 0) + r);
      for (const t of inputs) release(t);
      if (!holders.has(out) && !out.isDisposed) out.dispose();
    });
    const logits = acts.get(this.net.output)!;
    if (opts.logits) return logits;
    const probs = this.net.activation === 'sigmoid' ? tf.sigmoid(logits) : tf.softmax(logits, -1);
    release(logits);
    return probs;
  }
}
