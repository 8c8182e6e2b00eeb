/**
 * The layers 3D segmentation networks here are built from, each with a hand-written backward pass
 * (tfjs has no gradient for Conv3DBackpropInputV2, and `tf.batchNorm`'s gradient fails on 5-D tensors).
 * Every layer's forward is made of differentiable tfjs kernels too, so plain `tf.grads` can run the same
 * network as a baseline.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { BackwardArgs, BackwardResult, ForwardArgs, Layer, ParamSpec, SavedSpec, SaveMode, Shape } from './graph.js';
import { exclusiveValues, capabilities, instanceNormAct, instanceNormActBackward, upsampleNearest3d, upsampleNearest3dGrad, type BackendCapabilities } from '../backend/index.js';

const size = (s: Shape): number => s.reduce((a, b) => a * b, 1);

/** Lean saves rebuild a normalisation's x̂ from its output only where every |β| ≤ this·|γ| (see rebuildable). */
export const REBUILD_RATIO = 256;

/** Whether tfjs is recording a gradient tape (inside tf.grads), where kernels must keep their outputs. */
function recordingTape(): boolean {
  return ((tf.engine().state as unknown as { gradientDepth?: number }).gradientDepth ?? 0) > 0;
}

function convOut(n: number, k: number, stride: number, padding: 'same' | 'valid'): number {
  return padding === 'same' ? Math.ceil(n / stride) : Math.floor((n - k) / stride) + 1;
}

export interface Conv3dOptions {
  inChannels: number;
  outChannels: number;
  /** Cube kernel edge (3 for 3×3×3) or [kd, kh, kw] (e.g. [1,3,3] for a factorised convolution). */
  kernel: number | [number, number, number];
  stride?: number;
  bias?: boolean;
  padding?: 'same' | 'valid';
}

/** Zero padding as concatenations, one axis at a time (for backends whose pad cannot take rank 5). */
function padByConcat(x: tf.Tensor, pads: [number, number][]): tf.Tensor {
  let y = x;
  pads.forEach(([before, after], axis) => {
    if (before === 0 && after === 0) return;
    const side = (n: number): tf.Tensor => tf.zeros(y.shape.map((d, k) => (k === axis ? n : d)));
    y = tf.concat([...(before ? [side(before)] : []), y, ...(after ? [side(after)] : [])], axis);
  });
  return y;
}

/**
 * 3-D convolution, NDHWC, filter [kd, kh, kw, in, out]. Saves its input, and lets it go in backward once
 * the filter gradient is made, before the input gradient is allocated.
 */
export class Conv3d implements Layer {
  readonly type = 'conv3d';
  readonly releasesSavesEarly = true;
  readonly params: ParamSpec[];
  private readonly k: [number, number, number];
  private readonly stride: number;
  private readonly padding: 'same' | 'valid';
  constructor(readonly opts: Conv3dOptions) {
    this.k = typeof opts.kernel === 'number' ? [opts.kernel, opts.kernel, opts.kernel] : opts.kernel;
    this.stride = opts.stride ?? 1;
    this.padding = opts.padding ?? 'same';
    const fanIn = this.k[0] * this.k[1] * this.k[2] * opts.inChannels;
    this.params = [{ name: 'filter', shape: [...this.k, opts.inChannels, opts.outChannels], init: 'he', fanIn }];
    if (opts.bias) this.params.push({ name: 'bias', shape: [opts.outChannels], init: 'zeros' });
  }
  private get strides(): [number, number, number] {
    return [this.stride, this.stride, this.stride];
  }
  outputShape([x]: Shape[]): Shape {
    if (x![4] !== this.opts.inChannels)
      throw new Error(`conv3d expects ${this.opts.inChannels} input channels, got shape [${x}]`);
    return [
      x![0]!,
      convOut(x![1]!, this.k[0], this.stride, this.padding),
      convOut(x![2]!, this.k[1], this.stride, this.padding),
      convOut(x![3]!, this.k[2], this.stride, this.padding),
      this.opts.outChannels,
    ];
  }
  forward({ inputs: [x], params: [filter, bias], save }: ForwardArgs): tf.Tensor {
    save(x!);
    const y = tf.conv3d(x as tf.Tensor5D, filter as tf.Tensor5D, this.strides, this.padding);
    if (!bias) return y;
    // Off host arrays the bias broadcasts as [1, 1, 1, 1, C]: tfjs's WebGPU shader for a rank-5 + [C]
    // broadcast does not compile ("cannot index type 'vec5'"). Same arithmetic.
    const out = capabilities().hostArrays ? tf.add(y, bias) : tf.tidy(() => tf.add(y, tf.reshape(bias, [1, 1, 1, 1, bias.shape[0]!])));
    y.dispose();
    return out;
  }
  backward({ dy, saved: [x], params: [filter, bias], inputShapes: [xShape], needInputGrad, release }: BackwardArgs): BackwardResult {
    const dFilter = tf.engine().runKernel(
      'Conv3DBackpropFilterV2',
      { x: x!, dy },
      { strides: this.strides, pad: this.padding, filterShape: filter!.shape },
    ) as tf.Tensor;
    const dParams = [dFilter];
    if (bias) dParams.push(tf.sum(dy, [0, 1, 2, 3]));
    // The input gradient needs dy and the filter only: the saved input goes first (releasesSavesEarly).
    release?.(0);
    const dx = needInputGrad[0]
      ? (tf.engine().runKernel(
          'Conv3DBackpropInputV2',
          { dy, filter: filter! },
          { inputShape: xShape!, strides: this.strides, pad: this.padding },
        ) as tf.Tensor)
      : null;
    return { dInputs: [dx], dParams };
  }
  saves(): SavedSpec {
    return { inputs: [0], output: false, extra: [] };
  }
  workspace(inputShapes: Shape[]): { forward: number; backward: number } {
    // With a bias, forward holds the conv output and the biased copy at once.
    return { forward: this.opts.bias ? size(this.outputShape(inputShapes)) : 0, backward: 0 };
  }
  flops([x]: Shape[]): number {
    const out = this.outputShape([x!]);
    return 2 * size(out) * this.k[0] * this.k[1] * this.k[2] * this.opts.inChannels;
  }
}

export interface NormActOptions {
  channels: number;
  /** Leaky ReLU slope (1 = no activation). */
  alpha?: number;
  epsilon?: number;
  /**
   * In-place activated normalisation (Rota Bulò et al. 2018, InPlace-ABN): save only the output and
   * recover x̂ from it in backward, one stored tensor instead of two. Needs gamma ≠ 0 and alpha > 0.
   */
  inPlace?: boolean;
}

/**
 * Instance normalisation (affine) fused with leaky ReLU. Saves x̂ and invStd; or, in place or with lean
 * saves, the output y and invStd (x̂ is rebuilt from y in backward). Forward writes y over its input
 * where the executor allows it (the convolution before it does not save its output).
 */
export class InstanceNormAct implements Layer {
  readonly type: string;
  readonly forwardInPlace = true;
  readonly gradientInPlace = true;
  readonly params: ParamSpec[];
  readonly alpha: number;
  readonly epsilon: number;
  constructor(readonly opts: NormActOptions) {
    this.alpha = opts.alpha ?? 0.01;
    this.epsilon = opts.epsilon ?? 1e-5;
    this.type = opts.inPlace ? 'instancenorm-act-inplace' : 'instancenorm-act';
    this.params = [
      { name: 'gamma', shape: [opts.channels], init: 'ones' },
      { name: 'beta', shape: [opts.channels], init: 'zeros' },
    ];
  }
  outputShape([x]: Shape[]): Shape {
    return [...x!];
  }
  /** Whether forward in `mode` keeps y (x̂ rebuilt in backward) rather than x̂: needs a slope > 0. */
  private keepsOutput(mode: SaveMode): boolean {
    return !!this.opts.inPlace || (mode === 'lean' && this.alpha > 0);
  }
  /**
   * Whether x̂ = (z − β)/γ can be rebuilt from y to float32 accuracy: the rebuild loses about
   * 2⁻²⁴·(|x̂| + |β/γ|), so every channel needs γ ≠ 0 and |β| ≤ REBUILD_RATIO·|γ|.
   */
  private rebuildable(gamma: tf.Tensor, beta: tf.Tensor): boolean {
    // Deciding needs γ and β on the host: free on host-array backends, a synchronous read elsewhere
    // (which tfjs's WebGPU backend cannot do in Node). There the layer keeps x̂ instead.
    if (!capabilities().hostArrays) return false;
    const g = gamma.dataSync() as Float32Array;
    const b = beta.dataSync() as Float32Array;
    for (let k = 0; k < g.length; k++) if (!(Math.abs(b[k]!) <= REBUILD_RATIO * Math.abs(g[k]!))) return false;
    return true;
  }
  forward({ inputs: [x], params: [gamma, beta], save, saveMode = 'all', overwritable }: ForwardArgs): tf.Tensor {
    const none = saveMode === 'none';
    // Lean saves fall back to x̂ where γ is too small to rebuild it; the saves' order tells backward
    // ([y, invStd] when rebuilt, [invStd, x̂] when not). The in-place layer always rebuilds.
    const keepY = !none && this.keepsOutput(saveMode) && (!!this.opts.inPlace || this.rebuildable(gamma!, beta!));
    const inPlace = overwritable?.[0] === true && exclusiveValues(x!) !== null;
    // Under tf.grads (the tape baseline) the kernel's registered gradient reads its x̂ output: make it.
    const withXhat = (!none && !keepY) || recordingTape();
    const [y, xhat, invStd] = instanceNormAct(x!, gamma!, beta!, this.epsilon, this.alpha, { withXhat, inPlace });
    if (xhat && keepY) xhat.dispose();
    if (none) {
      xhat?.dispose();
      invStd.dispose();
      return y;
    }
    if (keepY) {
      save(y);
      save(invStd);
    } else if (saveMode === 'lean') {
      save(invStd);
      save(xhat!);
    } else {
      save(xhat!);
      save(invStd);
    }
    return y;
  }
  /**
   * Backward from what forward saved and invStd (the caller owns both): `saved` is x̂, or with `fromOutput`
   * the output y, from which the kernel rebuilds x̂ element by element (no x̂ buffer where one is
   * registered; composite ops elsewhere). dx is written over dy where the executor allows it
   * (`dyOverwritable`) and nothing else shares dy's buffer.
   */
  backwardFromSaved({ dy, params: [gamma, beta], dyOverwritable }: BackwardArgs, saved: tf.Tensor, invStd: tf.Tensor, fromOutput: boolean): BackwardResult {
    const inPlace = dyOverwritable === true && exclusiveValues(dy) !== null;
    const [dx, dGamma, dBeta] = instanceNormActBackward(dy, saved, invStd, gamma!, beta!, this.alpha, { inPlace, fromOutput });
    return { dInputs: [dx!], dParams: [dGamma!, dBeta!] };
  }

  backward(args: BackwardArgs): BackwardResult {
    const [first, second] = args.saved;
    const mode = args.saveMode ?? 'all';
    // Lean saves that kept x̂ (γ too small to rebuild it, or a slope of 0) come as [invStd, x̂].
    if (first!.rank === 2) return this.backwardFromSaved(args, second!, first!, false);
    return this.backwardFromSaved(args, first!, second!, this.keepsOutput(mode));
  }
  /**
   * Whether forward in `mode` keeps y rather than x̂, as the estimate sees it: on host arrays lean saves
   * are assumed to rebuild x̂ (forward checks γ and β); elsewhere only the in-place layer does.
   */
  private estimatedKeepY(mode: SaveMode, caps: BackendCapabilities): boolean {
    return mode !== 'none' && this.keepsOutput(mode) && (!!this.opts.inPlace || caps.hostArrays);
  }
  saves([x]: Shape[], mode: SaveMode = 'all', caps: BackendCapabilities = capabilities()): SavedSpec {
    // x̂ (or y) plus invStd [N, C].
    if (mode === 'none') return { inputs: [], output: false, extra: [] };
    const stats = x![0]! * x![4]!;
    return this.estimatedKeepY(mode, caps) ? { inputs: [], output: true, extra: [stats] } : { inputs: [], output: false, extra: [size(x!), stats] };
  }
  tapeExtra([x]: Shape[]): number {
    // tf.grads makes zero gradients for the kernel's outputs x̂ and invStd, which nothing downstream reads.
    return size(x!) + x![0]! * x![4]!;
  }
  workspace([x]: Shape[], mode: SaveMode = 'all', caps: BackendCapabilities = capabilities()): { forward: number; backward: number; backwardOverwriting: number } {
    const keepY = this.estimatedKeepY(mode, caps);
    const n = size(x!);
    if (!caps.projectKernels) {
      // The composite (core/backend/kernels/ops.ts) frees each intermediate once the next exists. Forward
      // holds one full-size buffer beyond its outputs, two where x̂ is not kept; backward two beyond dx,
      // and the x̂ it rebuilt from y (made through two transients) where y was kept.
      const forward = (mode === 'none' || keepY ? 2 : 1) * n;
      const backward = (keepY ? 3 : 2) * n;
      return { forward, backward, backwardOverwriting: backward };
    }
    // The project's kernel makes only what is kept (y, and x̂ when saved). Where y is kept, the backward
    // kernel rebuilds x̂ from it element by element: no buffer.
    return { forward: 0, backward: 0, backwardOverwriting: 0 };
  }
}

/** Element-wise sum of two tensors of the same shape (residual connections). Saves nothing. */
export class Add implements Layer {
  readonly type = 'add';
  readonly passesGradient = true;
  readonly params: ParamSpec[] = [];
  outputShape([a, b]: Shape[]): Shape {
    if (a!.join() !== b!.join()) throw new Error(`add: shapes differ [${a}] vs [${b}]`);
    return [...a!];
  }
  forward({ inputs: [a, b] }: ForwardArgs): tf.Tensor {
    return tf.add(a!, b!);
  }
  backward({ dy, needInputGrad }: BackwardArgs): BackwardResult {
    return { dInputs: needInputGrad.map((need) => (need ? tf.clone(dy) : null)), dParams: [] };
  }
  saves(): SavedSpec {
    return { inputs: [], output: false, extra: [] };
  }
}

/** Concatenation along channels (U-Net skip connections). Saves nothing. */
export class ConcatChannels implements Layer {
  readonly type = 'concat';
  readonly params: ParamSpec[] = [];
  outputShape(shapes: Shape[]): Shape {
    const [first] = shapes;
    for (const s of shapes)
      if (s.slice(0, 4).join() !== first!.slice(0, 4).join())
        throw new Error(`concat: spatial shapes differ [${shapes.map((x) => `[${x}]`).join(', ')}]`);
    return [...first!.slice(0, 4), shapes.reduce((c, s) => c + s[4]!, 0)];
  }
  forward({ inputs }: ForwardArgs): tf.Tensor {
    return tf.concat(inputs, 4);
  }
  backward({ dy, inputShapes, needInputGrad }: BackwardArgs): BackwardResult {
    let offset = 0;
    const dInputs = inputShapes.map((s, i) => {
      const c = s[4]!;
      const begin = offset;
      offset += c;
      return needInputGrad[i] ? tf.slice(dy, [0, 0, 0, 0, begin], [-1, -1, -1, -1, c]) : null;
    });
    return { dInputs, dParams: [] };
  }
  saves(): SavedSpec {
    return { inputs: [], output: false, extra: [] };
  }
}

/** Nearest-neighbour upsampling by an integer factor. Saves nothing. */
export class UpsampleNearest implements Layer {
  readonly type = 'upsample-nearest';
  readonly params: ParamSpec[] = [];
  constructor(readonly factor = 2) {}
  outputShape([x]: Shape[]): Shape {
    return [x![0]!, x![1]! * this.factor, x![2]! * this.factor, x![3]! * this.factor, x![4]!];
  }
  forward({ inputs: [x] }: ForwardArgs): tf.Tensor {
    return upsampleNearest3d(x!, this.factor);
  }
  backward({ dy }: BackwardArgs): BackwardResult {
    return { dInputs: [upsampleNearest3dGrad(dy, this.factor)], dParams: [] };
  }
  saves(): SavedSpec {
    return { inputs: [], output: false, extra: [] };
  }
}

/** Max pooling, kernel = stride = `size`. Saves its input and output (MaxPool3DGrad needs both). */
export class MaxPool3d implements Layer {
  readonly type = 'maxpool3d';
  readonly params: ParamSpec[] = [];
  constructor(readonly poolSize = 2) {}
  outputShape([x]: Shape[]): Shape {
    const p = this.poolSize;
    return [x![0]!, Math.floor(x![1]! / p), Math.floor(x![2]! / p), Math.floor(x![3]! / p), x![4]!];
  }
  forward({ inputs: [x], save }: ForwardArgs): tf.Tensor {
    const p = this.poolSize;
    const y = tf.maxPool3d(x as tf.Tensor5D, [p, p, p], [p, p, p], 'valid');
    save(x!);
    save(y);
    return y;
  }
  backward({ dy, saved: [x, y] }: BackwardArgs): BackwardResult {
    const p = this.poolSize;
    const dx = tf.engine().runKernel(
      'MaxPool3DGrad',
      { dy, input: x!, output: y! },
      { filterSize: [p, p, p], strides: [p, p, p], pad: 'valid' },
    ) as tf.Tensor;
    return { dInputs: [dx], dParams: [] };
  }
  saves(): SavedSpec {
    return { inputs: [0], output: true, extra: [] };
  }
}

/** Average pooling, kernel = stride = `size` (downsampling an input or a target). Saves nothing. */
export class AvgPool3d implements Layer {
  readonly type = 'avgpool3d';
  readonly params: ParamSpec[] = [];
  constructor(readonly poolSize = 2) {}
  outputShape([x]: Shape[]): Shape {
    const p = this.poolSize;
    return [x![0]!, Math.floor(x![1]! / p), Math.floor(x![2]! / p), Math.floor(x![3]! / p), x![4]!];
  }
  forward({ inputs: [x] }: ForwardArgs): tf.Tensor {
    const p = this.poolSize;
    return tf.avgPool3d(x as tf.Tensor5D, [p, p, p], [p, p, p], 'valid');
  }
  backward({ dy, inputShapes: [xShape], needInputGrad }: BackwardArgs): BackwardResult {
    if (!needInputGrad[0]) return { dInputs: [null], dParams: [] };
    const p = this.poolSize;
    // AvgPool3DGrad reads only the input's shape; a zero-strided broadcast would do, but tfjs wants a tensor.
    const shapeOnly = tf.zeros(xShape!);
    const dx = tf.engine().runKernel(
      'AvgPool3DGrad',
      { dy, input: shapeOnly },
      { filterSize: [p, p, p], strides: [p, p, p], pad: 'valid' },
    ) as tf.Tensor;
    shapeOnly.dispose();
    return { dInputs: [dx], dParams: [] };
  }
  saves(): SavedSpec {
    return { inputs: [], output: false, extra: [] };
  }
}

/** Crops the centre [d, h, w] region of the spatial axes (cascades: the local patch inside a context). */
export class CenterCrop implements Layer {
  readonly type = 'center-crop';
  readonly params: ParamSpec[] = [];
  constructor(readonly margin: [number, number, number]) {}
  outputShape([x]: Shape[]): Shape {
    const [md, mh, mw] = this.margin;
    const out = [x![0]!, x![1]! - 2 * md, x![2]! - 2 * mh, x![3]! - 2 * mw, x![4]!];
    if (out.some((v) => v <= 0)) throw new Error(`center-crop: margin [${this.margin}] too large for [${x}]`);
    return out;
  }
  forward({ inputs: [x] }: ForwardArgs): tf.Tensor {
    const [md, mh, mw] = this.margin;
    const out = this.outputShape([x!.shape]);
    return tf.slice(x!, [0, md, mh, mw, 0], out);
  }
  backward({ dy, inputShapes: [xShape], needInputGrad }: BackwardArgs): BackwardResult {
    if (!needInputGrad[0]) return { dInputs: [null], dParams: [] };
    const [md, mh, mw] = this.margin;
    const s = xShape!;
    const pads: [number, number][] = [
      [0, 0],
      [md, s[1]! - dy.shape[1]! - md],
      [mh, s[2]! - dy.shape[2]! - mh],
      [mw, s[3]! - dy.shape[3]! - mw],
      [0, 0],
    ];
    // tfjs's WebGPU pad shader does not compile for rank 5: off host arrays, zeros are concatenated
    // along each spatial axis instead (the same values).
    const dx = capabilities().hostArrays ? tf.pad(dy, pads) : tf.tidy(() => padByConcat(dy, pads));
    return { dInputs: [dx], dParams: [] };
  }
  saves(): SavedSpec {
    return { inputs: [], output: false, extra: [] };
  }
}
