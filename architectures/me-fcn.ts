/**
 * me-fcn — a memory-efficient fully convolutional network after Chenglong Wang, Masahiro Oda, Kensaku Mori,
 * "Organ Segmentation From Full-size CT Images Using Memory-Efficient FCN" (arXiv:2003.10690, 2020),
 * which reports about 40% of its baseline's GPU memory and about 30% of its parameters.
 * The paper's exact modifications are not public in enough detail to reproduce, so this plugin builds a
 * network from named, well-known techniques that can each be switched on and off, on the topology of
 * `unet3d` (Isensee et al.'s BraTS 2017 U-Net: strided-conv down, residual context modules, upsampling
 * modules, localization modules). With every technique off it IS unet3d: the same nodes and parameters
 * (only its checkpoint segments differ: the head belongs to level 0's decoder segment).
 *
 * Each technique, with its effect on parameters (P) and on measured peak training memory (M: the
 * DeviceMemoryMeter high-water mark of a step plus Adam, cpu backend, 4 → 3 channels), as a fraction of
 * unet3d's at the same input — 32³ / 48³ with depth 3, base 8 and with depth 4, base 16:
 *
 * | technique           | P (d3 b8 / d4 b16) | M d3 b8 32³ / 48³ | M d4 b16 32³ / 48³ |
 * |---------------------|--------------------|-------------------|--------------------|
 * | narrow              | 16.3% / 9.6%       | 56% / 58%         | 39% / 50%          |
 * | separable           | 45.6% / 45.5%      | 128% / 133%       | 102% / 122%        |
 * | inPlaceNorm         | 100%               | 94% / 93%         | 96% / 95%          |
 * | halfPrecisionSaves  | 100%               | 72% / 70%         | 80% / 73%          |
 * | checkpointWidest    | 100%               | 80% / 79%         | 87% / 82%          |
 * | all                 | 8.7% / 5.1%        | 33% / 34%         | 23% / 29%          |
 *
 * - `narrow` — narrower, bottlenecked widths (ResNet's bottleneck, He et al. 2016; ENet, Paszke et al.
 *   2016): widths base·g^l with g = `widthGrowth` (1.5 by default, rounded to even) instead of base·2^l;
 *   each residual context module is a 1×1×1 reduction to `bottleneck` × the width (0.5 by default) and a
 *   3×3×3 back to the width (instead of two full 3×3×3); the upsampling module's convolution is a 1×1×1 at the coarse level, before upsampling;
 *   the localization module is a 1×1×1 reduction of [skip, upsampled] to the level width — computed as
 *   conv(skip) + upsample(conv(coarse)), exactly the same function since nearest upsampling commutes with
 *   a 1×1×1 convolution, so no concatenated or upsampled full-resolution tensor is ever saved — then a
 *   3×3×3; the head reads the level width. P: a large cut (deep levels dominate). M: fewer and thinner
 *   full-resolution tensors, much less parameter and Adam state.
 * - `separable` — factorised 3-D convolutions ("pseudo-3D"/(2+1)D: Qiu et al. 2017, Tran et al. 2018):
 *   every 3×3×3 convolution becomes a [1,3,3] (in→out, carrying the stride) and a [3,1,1] (out→out) with
 *   no normalisation between them. P: 27·in·out → 9·in·out + 3·out². M: it ADDS one saved intermediate
 *   per convolution (the [3,1,1]'s input), so alone it costs memory; it pays where parameters dominate or
 *   with `halfPrecisionSaves`/`checkpointWidest`. (A true depthwise 3-D convolution is not possible with
 *   tfjs-core's kernels: there is no grouped or depthwise Conv3D.)
 * - `inPlaceNorm` — InPlace-ABN (Rota Bulò, Porzi, Kontschieder, CVPR 2018): each InstanceNormAct
 *   (`inPlace: true`) saves its output instead of x̂, so a conv → norm → conv chain keeps one tensor per
 *   pair instead of two. The backward kernel rebuilds x̂ from y element by element, so no x̂ buffer exists
 *   in backward either (on host arrays; elsewhere composite ops rebuild it into transients). P: unchanged.
 *   M: fewer saved tensors.
 * - `halfPrecisionSaves` — tensors saved for backward are stored as IEEE half floats (as mixed-precision
 *   training keeps fp16 activations, Micikevicius et al. 2018): `HalfSaved` wraps every layer that saves,
 *   packs each saved float32 tensor into half bits (round to nearest even, two per int32 element: half
 *   the bytes) in forward and unpacks them before the wrapped layer's backward. Forward values and the
 *   optimiser stay float32; gradients differ by the rounding of the saved values (~1e-3 relative). A
 *   tensor saved by several layers (a normalisation's output and the convolution reading it with
 *   `inPlaceNorm`; a level's output read by the next level and the skip) gets one half copy, held by the
 *   first layer that saved it. P: unchanged. M: saved tensors take half the bytes and activations are
 *   freed after their forward readers. Cost: a JS conversion pass per saved tensor in training; an
 *   inference forward (and a checkpointed segment's first forward) saves nothing and packs nothing, and the
 *   wrapped normalisation still writes over its input there as the plain one does.
 * - `checkpointWidest` — gradient checkpointing (Chen et al. 2016) of the widest, full-resolution level:
 *   the network's `recompute` lists level 0 of both pathways (the decoder's with the head), re-run in
 *   backward (about one extra forward of level 0). P: unchanged. M: level 0's saved tensors live only
 *   while its own backward runs.
 * - `widthMultiplier` — every level's width × m (rounded to an even number ≥ 2), with or without narrow
 *   (MobileNet's width multiplier, Howard et al. 2017). P: about m² (the convolutions are in·out). M: the
 *   activations about m, the parameters and Adam state about m².
 * - `all: true` switches every technique on (whatever the individual flags say); the three numbers
 *   (widthGrowth, bottleneck, widthMultiplier) stay as set.
 *
 * The trade-off between these numbers, memory and Dice is measured by `npm run experiment --
 * architectures-memory` (its Pareto plot, results/architectures-memory/plots/pareto.svg); the README names
 * the configuration that meets the paper's point.
 *
 * Memory accounting: the estimator sees the half-size saves through `HalfSaved.saves` (SavedSpec.extra
 * counts float32 elements: ceil(n/2) for n half values); a layer that reuses an earlier layer's half copy
 * declares nothing for it (the earlier layer holds it until after this one's backward). One case the
 * estimator cannot see: a strategy's own checkpoint segment that ends between a normalisation and the
 * convolution reading it (the convolution then packs a copy of its own: under-estimated by that copy).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import { GraphBuilder, NETWORK_INPUT, Add, ConcatChannels, Conv3d, InstanceNormAct, UpsampleNearest, type BackwardArgs, type BackwardResult, type ForwardArgs, type Layer, type Network, type ParamSpec, type SavedSpec, type SaveMode, type Shape } from '../core/engine/index.js';
import type { NetworkSpec } from '../core/types.js';
import type { Architecture, ArchitecturePlugin } from '../core/plugins/index.js';
import { defineSettings, type SettingsOf } from '../core/config/index.js';
import { capabilities, hasKernel, PACK_HALF, UNPACK_HALF, type BackendCapabilities } from '../core/backend/index.js';

// ---------------------------------------------------------------------------------------------------
// IEEE 754 half precision on typed arrays
// ---------------------------------------------------------------------------------------------------

const elements = (s: Shape): number => s.reduce((a, b) => a * b, 1);

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** One float32's bits to half bits, rounding to nearest, ties to even (overflow → ±Inf, NaN kept quiet). */
function halfFromFloatBits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): value = m · 2^(exp−150), half unit 2^−24, so q = m / 2^(126−exp).
    const s = 14 - e;
    if (s > 24) return sign; // below half the smallest subnormal (float32 subnormals included)
    const m = mant | (exp ? 0x800000 : 0);
    let q = m >>> s;
    const rem = m & ((1 << s) - 1);
    const halfway = 1 << (s - 1);
    if (rem > halfway || (rem === halfway && q & 1)) q++;
    return sign | q; // q may reach 0x400: the smallest normal, encoded correctly by the carry
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // a carry into the exponent is right (up to Inf)
  return h;
}

/** float32 values → half bits (round to nearest even). */
export function floatToHalfBits(src: Float32Array, dst: Uint16Array): void {
  if (dst.length < src.length) throw new Error(`floatToHalfBits: destination holds ${dst.length} of ${src.length} values`);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) dst[i] = halfFromFloatBits(bits[i]!);
}

let halfTable: Float32Array | null = null;

/** The float32 value of every half bit pattern (256 KiB, built once). */
function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    let v: number;
    if (exp === 0) v = mant * 2 ** -24;
    else if (exp === 0x1f) v = mant ? NaN : Infinity;
    else v = (1 + mant / 1024) * 2 ** (exp - 15);
    t[h] = sign * v;
  }
  halfTable = t;
  return t;
}

/** Half bits → float32 values (exact). */
export function halfBitsToFloat(src: Uint16Array, dst: Float32Array, count = src.length): void {
  const t = halfToFloatTable();
  for (let i = 0; i < count; i++) dst[i] = t[src[i]!]!;
}

/** A float32 value rounded to half precision and back (for tests and tolerances). */
export function roundToHalf(v: number): number {
  f32Scratch[0] = v;
  return halfToFloatTable()[halfFromFloatBits(u32Scratch[0]!)]!;
}

/** Packs a float32 tensor's values as half bits, two per int32 element: a [ceil(n/2)] int32 tensor. */
export function packHalf(t: Tensor): Tensor {
  if (t.dtype !== 'float32') throw new Error(`packHalf: expected a float32 tensor, got ${t.dtype}`);
  if (!capabilities().hostArrays) {
    // On the device where the backend has the kernel (tfjs's WebGPU: pack2x16float), else a clear error.
    if (hasKernel(PACK_HALF)) return tf.engine().runKernel(PACK_HALF, { x: t }) as Tensor;
    throw new Error(
      `me-fcn halfPrecisionSaves packs saved tensors into half floats on host arrays or with a device kernel, neither of which the ${capabilities().name} backend has (a synchronous read there is not possible); use halfPrecisionSaves: false (and not all: true) on this backend`,
    );
  }
  const values = t.dataSync() as Float32Array;
  const packed = new Int32Array(Math.ceil(values.length / 2));
  floatToHalfBits(values, new Uint16Array(packed.buffer, 0, values.length));
  return tf.tensor(packed, [packed.length], 'int32');
}

/** Undoes `packHalf`: a float32 tensor of `shape`. */
export function unpackHalf(p: Tensor, shape: Shape): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (p.dtype !== 'int32' || p.size !== Math.ceil(n / 2))
    throw new Error(`unpackHalf: a packed tensor of ${p.size} ${p.dtype} elements cannot hold [${shape}] (${n} half values)`);
  if (!capabilities().hostArrays) return tf.engine().runKernel(UNPACK_HALF, { packed: p }, { shape: [...shape] }) as Tensor;
  const packed = p.dataSync() as Int32Array;
  const out = new Float32Array(n);
  halfBitsToFloat(new Uint16Array(packed.buffer, packed.byteOffset, n), out, n);
  return tf.tensor(out, shape, 'float32');
}

// ---------------------------------------------------------------------------------------------------
// In-place activated normalisation with a lean backward
// ---------------------------------------------------------------------------------------------------

/**
 * InstanceNormAct with `inPlace: true` (InPlace-ABN: saves its output y and invStd, not x̂; the backward
 * kernel rebuilds x̂ = (lrelu⁻¹(y) − β)/γ as it goes, core/engine/layers.ts), checked for a usable slope.
 */
export class InPlaceNormAct extends InstanceNormAct {
  constructor(opts: { channels: number; alpha: number; epsilon?: number }) {
    super({ ...opts, inPlace: true });
    if (!(this.alpha > 0)) throw new Error(`in-place normalisation needs a leaky ReLU slope > 0, got ${this.alpha}`);
  }
}

// ---------------------------------------------------------------------------------------------------
// HalfSaved: a layer whose saved tensors are kept in half precision
// ---------------------------------------------------------------------------------------------------

/**
 * The half copy made of each float32 tensor, so that a layer saving a tensor that an earlier layer
 * already saved in half (an in-place normalisation's output read by a convolution; a level's output read
 * by the next level's convolution and by the skip's) saves that same copy. A copy the executor has since
 * freed (a checkpointed layer's save, an inference forward's) is made again.
 */
const halfCopies = new WeakMap<Tensor, Tensor>();

export interface HalfSavedOptions {
  /**
   * Input indices that an earlier HalfSaved layer (in node order) already saves: that half copy is reused
   * and held by the earlier layer until after this one's backward, so the saved-bytes spec counts nothing
   * for them. Only the memory estimate depends on this; the reuse itself happens whatever it says.
   */
  sharedInputs?: number[];
}

/**
 * Wraps a layer so that everything it saves is stored as IEEE half floats packed two per int32 element
 * (half the bytes), and unpacked to float32 before the wrapped layer's backward. Forward outputs are the
 * wrapped layer's own (float32); the gradients differ by the rounding of the saved values.
 */
export class HalfSaved implements Layer {
  readonly type: string;
  readonly params: ParamSpec[];
  readonly passesGradient?: boolean;
  readonly gradientInPlace?: boolean;
  readonly forwardInPlace?: boolean;
  private readonly shared: Set<number>;
  /** The shapes of the saved tensors, per input-shape signature (the packed tensors are flat). */
  private readonly savedShapes = new Map<string, Shape[]>();

  constructor(
    readonly inner: Layer,
    opts: HalfSavedOptions = {},
  ) {
    this.type = `half:${inner.type}`;
    this.params = inner.params;
    if (inner.passesGradient) this.passesGradient = true;
    if (inner.gradientInPlace) this.gradientInPlace = true;
    if (inner.forwardInPlace) this.forwardInPlace = true;
    this.shared = new Set(opts.sharedInputs ?? []);
  }

  outputShape(inputShapes: Shape[]): Shape {
    return this.inner.outputShape(inputShapes);
  }

  forward({ inputs, params, save, saveMode, overwritable }: ForwardArgs): Tensor {
    // Nothing kept (inference, a checkpointed forward): the wrapped layer alone, nothing packed.
    if (saveMode === 'none') return this.inner.forward({ inputs, params, save, saveMode, overwritable });
    const got: Tensor[] = [];
    const out = this.inner.forward({ inputs, params, save: (t) => void got.push(t), overwritable });
    const shapes: Shape[] = [];
    for (const t of got) {
      shapes.push([...t.shape]);
      let packed = halfCopies.get(t);
      if (!packed || packed.isDisposed) {
        packed = packHalf(t);
        halfCopies.set(t, packed);
      }
      // A tensor the inner layer made only to save it (x̂, invStd) is not needed once packed.
      if (t !== out && !inputs.includes(t)) t.dispose();
      save(packed);
    }
    this.savedShapes.set(inputs.map((x) => x.shape.join('x')).join(','), shapes);
    return out;
  }

  backward(args: BackwardArgs): BackwardResult {
    const shapes = this.savedShapes.get(args.inputShapes.map((s) => s.join('x')).join(','));
    if (!shapes || shapes.length !== args.saved.length)
      throw new Error(`${this.type}: backward without a matching forward for inputs [${args.inputShapes.map((s) => `[${s}]`).join(', ')}]`);
    if (this.inner instanceof InPlaceNormAct && capabilities().hostArrays) {
      // Unpack y into one float32 tensor, from which the backward kernel rebuilds x̂ as it goes: one
      // full-size float32 tensor in backward.
      const shape = shapes[0]!;
      const n = elements(shape);
      const packed = args.saved[0]!.dataSync() as Int32Array;
      const v = new Float32Array(n);
      halfBitsToFloat(new Uint16Array(packed.buffer, packed.byteOffset, n), v, n);
      const y = tf.tensor(v, shape, 'float32');
      const invStd = unpackHalf(args.saved[1]!, shapes[1]!);
      try {
        return this.inner.backwardFromSaved(args, y, invStd, true);
      } finally {
        y.dispose();
        invStd.dispose();
      }
    }
    const saved = args.saved.map((p, k) => unpackHalf(p, shapes[k]!));
    try {
      // The unpacked copies are this layer's own, freed below: the inner layer may overwrite them.
      // No early release (Layer.releasesSavesEarly): the unpacked copies are freed together, below.
      return this.inner.backward({ ...args, release: undefined, saved, overwritable: saved.map(() => true) });
    } finally {
      for (const t of saved) t.dispose();
    }
  }

  saves(inputShapes: Shape[], mode: SaveMode = 'all'): SavedSpec {
    if (mode === 'none') return { inputs: [], output: false, extra: [] };
    const spec = this.inner.saves(inputShapes);
    const half = (n: number): number => Math.ceil(n / 2);
    const extra: number[] = [];
    for (const i of spec.inputs) if (!this.shared.has(i)) extra.push(half(elements(inputShapes[i]!)));
    if (spec.output) extra.push(half(elements(this.inner.outputShape(inputShapes))));
    for (const n of spec.extra) extra.push(half(n));
    return { inputs: [], output: false, extra };
  }

  workspace(inputShapes: Shape[], mode: SaveMode = 'all', caps?: BackendCapabilities): { forward: number; backward: number } {
    if (mode === 'none') return this.inner.workspace?.(inputShapes, 'none', caps) ?? { forward: 0, backward: 0 };
    const ws = this.inner.workspace?.(inputShapes, 'all', caps) ?? { forward: 0, backward: 0 };
    const spec = this.inner.saves(inputShapes);
    let all = spec.extra.reduce((a, b) => a + b, 0);
    for (const i of spec.inputs) all += elements(inputShapes[i]!);
    if (spec.output) all += elements(this.inner.outputShape(inputShapes));
    const forward = ws.forward + spec.extra.reduce((a, b) => a + b, 0);
    // An in-place normalisation unpacks y (and invStd) on host arrays, and the backward kernel rebuilds x̂
    // from y as it goes: nothing more. Elsewhere it unpacks y, then rebuilds x̂ as the inner layer's
    // backward does.
    if (this.inner instanceof InPlaceNormAct && (caps ?? capabilities()).hostArrays) return { forward, backward: all };
    // Forward: the float32 extras exist until packed. Backward: every saved tensor unpacked to float32.
    return { forward, backward: ws.backward + all };
  }

  flops(inputShapes: Shape[]): number {
    return this.inner.flops?.(inputShapes) ?? 0;
  }
}

// ---------------------------------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------------------------------

const settings = defineSettings({
  depth: { type: 'integer', min: 2, max: 7, default: 5, description: 'number of resolution levels' },
  baseFilters: { type: 'integer', min: 1, default: 16, description: 'filters at full resolution' },
  negativeSlope: { type: 'number', min: 0, max: 1, default: 0.01, description: 'leaky ReLU slope (> 0 with inPlaceNorm)' },
  narrow: { type: 'boolean', default: false, description: 'widths grow by widthGrowth per level; bottlenecked context modules (bottleneck ratio) and lean localization modules' },
  widthGrowth: { type: 'number', min: 1, max: 2, default: 1.5, description: 'width factor per level with narrow (unet3d: 2)' },
  bottleneck: { type: 'number', min: 0.05, max: 1, default: 0.5, description: "with narrow, a context module's 1×1×1 reduction keeps this fraction of the level width" },
  widthMultiplier: { type: 'number', min: 0.05, max: 4, default: 1, description: 'every level width × this (rounded to an even number ≥ 2; with or without narrow)' },
  separable: { type: 'boolean', default: false, description: 'factorised 3-D convolutions: [1,3,3] then [3,1,1]' },
  inPlaceNorm: { type: 'boolean', default: false, description: 'InPlace-ABN-style normalisation: save the output, not x̂' },
  halfPrecisionSaves: { type: 'boolean', default: false, description: 'tensors saved for backward stored as half floats' },
  checkpointWidest: { type: 'boolean', default: false, description: 'recompute the full-resolution level in backward' },
  all: { type: 'boolean', default: false, description: 'every technique on (overrides the individual flags)' },
});

export type MeFcnSettings = SettingsOf<typeof settings>;

/** The techniques in force (with `all`, every one). */
export function techniques(s: MeFcnSettings): { narrow: boolean; separable: boolean; inPlaceNorm: boolean; halfPrecisionSaves: boolean; checkpointWidest: boolean } {
  const on = (b: boolean): boolean => s.all || b;
  return {
    narrow: on(s.narrow),
    separable: on(s.separable),
    inPlaceNorm: on(s.inPlaceNorm),
    halfPrecisionSaves: on(s.halfPrecisionSaves),
    checkpointWidest: on(s.checkpointWidest),
  };
}

/**
 * Level widths: base·m·g^l with m = `widthMultiplier` and g = 2, or `widthGrowth` with `narrow`, rounded to
 * an even number (≥ 2); exactly base·2^l (unet3d's) without narrow at m = 1.
 */
export function meFcnWidths(s: Pick<MeFcnSettings, 'depth' | 'baseFilters' | 'widthGrowth'> & { widthMultiplier?: number }, narrow: boolean): number[] {
  const m = s.widthMultiplier ?? 1;
  return Array.from({ length: s.depth }, (_, l) => {
    if (!narrow && m === 1) return s.baseFilters * 2 ** l;
    return Math.max(2, 2 * Math.round((s.baseFilters * m * (narrow ? s.widthGrowth : 2) ** l) / 2));
  });
}

/** The width of a narrow context module's 1×1×1 reduction for a level of width f. */
export const bottleneckWidth = (f: number, ratio: number): number => Math.max(1, Math.round(f * ratio));

export function buildMeFcn(spec: NetworkSpec, s: MeFcnSettings): Network {
  const t = techniques(s);
  if (s.depth < 2) throw new Error(`me-fcn: depth must be at least 2, got ${s.depth}`);
  if (t.inPlaceNorm && !(s.negativeSlope > 0))
    throw new Error(`me-fcn: inPlaceNorm needs a leaky ReLU slope > 0 to invert the activation (negativeSlope is ${s.negativeSlope})`);
  const b = new GraphBuilder();
  const f = meFcnWidths(s, t.narrow);
  const alpha = s.negativeSlope;
  /**
   * Nodes whose output an earlier HalfSaved layer already keeps in half (a convolution saving its input,
   * an in-place normalisation saving its output): later readers reuse that copy, which the earlier layer
   * holds until its own backward, after theirs.
   */
  const halfHeld = new Set<string>();

  const convLayer = (name: string, input: string, opts: ConstructorParameters<typeof Conv3d>[0]): string => {
    const conv = new Conv3d(opts);
    if (!t.halfPrecisionSaves) return b.add(name, conv, [input]);
    const node = b.add(name, new HalfSaved(conv, { sharedInputs: halfHeld.has(input) ? [0] : [] }), [input]);
    halfHeld.add(input);
    return node;
  };
  const conv = (name: string, input: string, inC: number, outC: number, kernel: number, stride = 1, bias = false): string => {
    if (kernel === 3 && t.separable) {
      const a = convLayer(`${name}.conv`, input, { inChannels: inC, outChannels: outC, kernel: [1, 3, 3], stride });
      return convLayer(`${name}.convd`, a, { inChannels: outC, outChannels: outC, kernel: [3, 1, 1], bias });
    }
    return convLayer(`${name}.conv`, input, { inChannels: inC, outChannels: outC, kernel, stride, bias });
  };
  const norm = (name: string, input: string, channels: number): string => {
    if (!t.inPlaceNorm) {
      const layer = new InstanceNormAct({ channels, alpha });
      return b.add(name, t.halfPrecisionSaves ? new HalfSaved(layer) : layer, [input]);
    }
    const layer = new InPlaceNormAct({ channels, alpha });
    if (!t.halfPrecisionSaves) return b.add(name, layer, [input]);
    const node = b.add(name, new HalfSaved(layer), [input]);
    halfHeld.add(node);
    return node;
  };
  const convNormAct = (name: string, input: string, inC: number, outC: number, kernel = 3, stride = 1): string =>
    norm(`${name}.norm`, conv(name, input, inC, outC, kernel, stride), outC);

  // ---- context pathway: per level a (strided) convolution and a residual context module
  const skips: string[] = [];
  let h = NETWORK_INPUT;
  for (let l = 0; l < s.depth; l++) {
    const input = h;
    h = b.segment(() => {
      const x = l === 0 ? convNormAct('enc0.in', input, spec.inChannels, f[0]!) : convNormAct(`enc${l}.down`, input, f[l - 1]!, f[l]!, 3, 2);
      let ctx: string;
      if (t.narrow) {
        // Bottleneck: 1×1×1 to `bottleneck` of the width, 3×3×3 back to the width.
        const mid = bottleneckWidth(f[l]!, s.bottleneck);
        ctx = convNormAct(`enc${l}.ctx1`, x, f[l]!, mid, 1);
        ctx = convNormAct(`enc${l}.ctx2`, ctx, mid, f[l]!, 3);
      } else {
        ctx = convNormAct(`enc${l}.ctx1`, x, f[l]!, f[l]!);
        ctx = convNormAct(`enc${l}.ctx2`, ctx, f[l]!, f[l]!);
      }
      return b.add(`enc${l}.sum`, new Add(), [x, ctx]);
    });
    skips.push(h);
  }

  // ---- localization pathway (the head joins level 0's segment)
  let out = '';
  for (let l = s.depth - 2; l >= 0; l--) {
    const below = h;
    h = b.segment(() => {
      let level: string;
      if (t.narrow) {
        // Upsampling module at the coarse level (1×1×1 to the level width), then the localization
        // module's 1×1×1 reduction of [skip, upsampled] written as conv(skip) + upsample(conv(coarse)):
        // the same function as a 1×1×1 convolution of the concatenation (nearest upsampling commutes with
        // 1×1×1 convolutions), without any concatenated or upsampled tensor being saved.
        const red = convNormAct(`dec${l}.upconv`, below, f[l + 1]!, f[l]!, 1);
        const fromSkip = conv(`dec${l}.loc1.skip`, skips[l]!, f[l]!, f[l]!, 1);
        const fromUp = conv(`dec${l}.loc1.up`, red, f[l]!, f[l]!, 1);
        const up = b.add(`dec${l}.up`, new UpsampleNearest(2), [fromUp]);
        const sum = b.add(`dec${l}.loc1.sum`, new Add(), [fromSkip, up]);
        level = convNormAct(`dec${l}.loc2`, norm(`dec${l}.loc1.norm`, sum, f[l]!), f[l]!, f[l]!, 3);
      } else {
        const up = b.add(`dec${l}.up`, new UpsampleNearest(2), [below]);
        const upConv = convNormAct(`dec${l}.upconv`, up, f[l + 1]!, f[l]!);
        const cat = b.add(`dec${l}.cat`, new ConcatChannels(), [skips[l]!, upConv]);
        const loc = convNormAct(`dec${l}.loc1`, cat, 2 * f[l]!, 2 * f[l]!);
        level = l > 0 ? convNormAct(`dec${l}.loc2`, loc, 2 * f[l]!, f[l]!, 1) : loc;
      }
      if (l > 0) return level;
      out = convLayer('head', level, { inChannels: t.narrow ? f[0]! : 2 * f[0]!, outChannels: spec.outChannels, kernel: 1, bias: true });
      return out;
    });
  }

  const net = b.build({
    name: 'me-fcn',
    description: describe(s),
    inChannels: spec.inChannels,
    outChannels: spec.outChannels,
    activation: spec.activation,
    output: out,
    divisor: 2 ** (s.depth - 1),
  });
  if (t.checkpointWidest) {
    // Level 0 of both pathways: the encoder's first segment and the decoder's last (with the head).
    net.recompute = net.segments.filter((seg) => seg[0]!.startsWith('enc0.') || seg[0]!.startsWith('dec0.')).map((seg) => [...seg]);
  }
  return net;
}

function describe(s: MeFcnSettings): string {
  const t = techniques(s);
  const on = Object.entries(t)
    .filter(([, v]) => v)
    .map(([k]) => (k === 'narrow' ? `narrow ×${s.widthGrowth} per level, bottleneck ${s.bottleneck}` : k));
  const width = s.widthMultiplier === 1 ? '' : `, width ×${s.widthMultiplier}`;
  return `me-fcn depth ${s.depth}, base ${s.baseFilters}${width}; ${on.length ? on.join(', ') : width ? 'no other technique' : 'no technique (= unet3d)'}`;
}

const plugin: ArchitecturePlugin<typeof settings> = {
  kind: 'architecture',
  name: 'me-fcn',
  description: 'memory-efficient FCN on the unet3d topology: narrow/bottleneck widths, separable convs, in-place norm, half-precision saves, checkpointed widest level',
  reference: 'Wang C., Oda M., Mori K., Organ Segmentation From Full-size CT Images Using Memory-Efficient FCN, 2020 (arXiv:2003.10690)',
  settings,
  // With `all`, the record shows every technique on, as it is.
  effective: (s) => ({ ...s, ...techniques(s) }),
  create(s): Architecture {
    return { name: 'me-fcn', build: (spec) => buildMeFcn(spec, s) };
  },
};

export default plugin;
