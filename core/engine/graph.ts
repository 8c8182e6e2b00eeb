/**
 * A network is a small graph of layers, each with its own forward and backward. Owning the backward
 * pass (rather than recording a tape with `tf.grads`) is what lets a memory strategy decide where each
 * tensor that backward needs lives — on the device, in host memory, or nowhere (recomputed) — and lets
 * the step free every saved tensor and gradient as soon as backward is done with it.
 */
import type { Tensor } from '@tensorflow/tfjs-core';
import type { BackendCapabilities } from '../backend/index.js';

export type Shape = number[];

export interface ParamSpec {
  /** Local name within the layer, e.g. 'filter'. */
  name: string;
  shape: Shape;
  /** 'he': He-normal with fan-in `fanIn`; 'zeros'; 'ones'. */
  init: 'he' | 'zeros' | 'ones';
  fanIn?: number;
}

/**
 * What backward will get of a layer's saves: 'all' (the default), 'lean' (as few saved buffers as the
 * layer can manage, at the price of recomputing cheap values in backward: Chen et al. 2016's "drop the
 * results of low-cost operations"), or 'none' (nothing is kept: an inference forward, or the forward of
 * a checkpointed segment), where a layer may skip making what it would only have saved.
 */
export type SaveMode = 'all' | 'lean' | 'none';

export interface ForwardArgs {
  inputs: Tensor[];
  params: Tensor[];
  /** Default 'all'. */
  saveMode?: SaveMode;
  /**
   * Per input: true where this forward is the input's last reader and nothing else holds it (the
   * executor disposes it after this call), so a layer with `forwardInPlace` may write its output over it.
   */
  overwritable?: boolean[];
  /**
   * Keep `t` for backward. The executor owns saved tensors from then on (a layer never disposes what it
   * saved). A layer saves each tensor at most once; the order of saves is the order `saved` has in backward.
   */
  save(t: Tensor): void;
}

export interface BackwardArgs {
  /** Gradient of the loss with respect to this layer's output (owned by the executor). */
  dy: Tensor;
  /** The save mode forward ran with (default 'all'): what `saved` holds. */
  saveMode?: SaveMode;
  /** What forward saved, in order (owned by the executor). */
  saved: Tensor[];
  params: Tensor[];
  inputShapes: Shape[];
  /** False where the input's gradient is not needed (the network input): return null there. */
  needInputGrad: boolean[];
  /**
   * Per saved tensor: true where nothing but this backward will read it again (the executor disposes it
   * after), so the layer may overwrite its values (e.g. rebuild x̂ in the saved output's buffer).
   */
  overwritable?: boolean[];
  /**
   * True where dy's buffer is this backward's alone (the executor disposes dy after), so a layer with
   * `gradientInPlace` may write its input gradient into it. Default false.
   */
  dyOverwritable?: boolean;
  /**
   * The layer will not read `saved[k]` again in this call: the executor frees it now where nothing else
   * holds it (else when the call returns). Layers with `releasesSavesEarly` call it for every save.
   */
  release?(k: number): void;
}

export interface BackwardResult {
  /**
   * New tensors (never `dy` or a saved tensor itself: use tf.clone for a pass-through; a tensor that
   * shares dy's buffer, made by a kernel that wrote into it, is fine where dy was exclusively owned).
   */
  dInputs: (Tensor | null)[];
  dParams: Tensor[];
}

/**
 * What forward saves, for the memory estimator: indices of inputs, the output, and other shapes, in the
 * order forward saves them (inputs first, then the output, then the extra tensors).
 */
export interface SavedSpec {
  inputs: number[];
  output: boolean;
  /** Tensors created by forward and saved (e.g. x̂ of a normalisation), with their element counts. */
  extra: number[];
}

export interface Layer {
  /** The layer's type, e.g. 'conv3d'; shown in profiles and out-of-memory messages. */
  readonly type: string;
  readonly params: ParamSpec[];
  outputShape(inputShapes: Shape[]): Shape;
  forward(args: ForwardArgs): Tensor;
  backward(args: BackwardArgs): BackwardResult;
  /** What forward saves in `mode` (default 'all'; 'none' saves nothing, whatever this says). */
  saves(inputShapes: Shape[], mode?: SaveMode, caps?: BackendCapabilities): SavedSpec;
  /**
   * Largest transient device buffers (element counts) a layer's kernels allocate beyond its output,
   * for forward (with saves in `mode`) and backward; the estimator adds them at the layer's step.
   */
  workspace?(inputShapes: Shape[], mode?: SaveMode, caps?: BackendCapabilities): {
    forward: number;
    backward: number;
    /** Backward's, where every saved tensor is overwritable (BackwardArgs.overwritable); default `backward`. */
    backwardOverwriting?: number;
  };
  /**
   * Extra elements the tape baseline (tf.grads) keeps for this layer beyond its saves and output gradient
   * (e.g. the zero gradients tfjs makes for a multi-output kernel's unused outputs).
   */
  tapeExtra?(inputShapes: Shape[]): number;
  /**
   * True where forward writes its output into input 0's buffer when `ForwardArgs.overwritable[0]` and
   * nothing else shares that buffer (core/backend/in-place.ts, cpu backend), so the output needs no new buffer.
   */
  readonly forwardInPlace?: boolean;
  /** True where backward hands `dy` itself (an alias, no new buffer) to every input (element-wise sum). */
  readonly passesGradient?: boolean;
  /**
   * True where backward writes its (single) input gradient into dy's buffer when nothing else shares
   * that buffer (core/backend/in-place.ts, cpu backend), so no new buffer is allocated for it.
   */
  readonly gradientInPlace?: boolean;
  /**
   * True where backward is done with its saves once the parameter gradients are made and calls
   * `BackwardArgs.release` for each before it allocates the input gradients (a convolution: dx needs only
   * dy and the filter). The step then frees each save that nothing else holds at that point, so the
   * saved input and the input gradient are never alive together; the schedule (and so the estimator)
   * books it there.
   */
  readonly releasesSavesEarly?: boolean;
  /** Multiply–add count ×2 of forward (for the benchmark's GFLOP/s). */
  flops?(inputShapes: Shape[]): number;
}

export const NETWORK_INPUT = 'input';

export interface GraphNode {
  /** Unique, readable name, e.g. 'enc2.context.conv1'. */
  name: string;
  layer: Layer;
  /** Names of the producing nodes, or NETWORK_INPUT. */
  inputs: string[];
}

export interface QualifiedParam extends ParamSpec {
  /** `${node}.${param}` */
  qualifiedName: string;
  node: string;
}

export interface Network {
  /** The architecture name and a short description of its configuration. */
  name: string;
  description: string;
  inChannels: number;
  outChannels: number;
  activation: 'sigmoid' | 'softmax';
  /** Nodes in a topological order (every node after its inputs). */
  nodes: GraphNode[];
  /** The node whose output is the logits. */
  output: string;
  /** Every spatial input size must be a multiple of this (2^(levels-1) for a U-Net). */
  divisor: number;
  /**
   * Context the network consumes on each side, in input voxels [D, H, W]: the output covers the input
   * minus this margin on every side (0 for a plain U-Net; a cascade's local patch inside its context).
   */
  outputMargin?: [number, number, number];
  /**
   * Extra supervised outputs (deep supervision, a cascade's first stage): each is compared with the
   * step's target average-pooled by `scale` (covering the whole input extent), weighted by `weight`.
   */
  auxOutputs?: { node: string; weight: number; scale: number }[];
  params: QualifiedParam[];
  /**
   * The network's own weights for stitching overlapping output windows at inference, over a window
   * [d, h, w] (row-major, x fastest): meU-net's 2 in the central half-cube, 1 elsewhere. A patch strategy
   * uses them with `blend: network`.
   */
  windowWeights?: (roi: [number, number, number]) => Float32Array;
  /** Natural checkpoint segments (e.g. one per U-Net level): contiguous runs of node names. */
  segments: string[][];
  /**
   * Segments the architecture itself always recomputes in backward (meU-net's checkpointed stages, a
   * memory-efficient FCN's widest level), merged with any strategy's recompute segments.
   */
  recompute?: string[][];
}

/** Whether `name` occurs exactly once among a node's inputs (a layer reading one tensor twice must not overwrite it). */
export function readsOnce(inputs: string[], name: string): boolean {
  return inputs.indexOf(name) === inputs.lastIndexOf(name);
}

export function parameterCount(net: Network): number {
  return net.params.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
}

/** Builds a Network node by node; catches duplicate names and dangling inputs at build time. */
export class GraphBuilder {
  private readonly nodes: GraphNode[] = [];
  private readonly names = new Set<string>([NETWORK_INPUT]);
  private readonly segmentList: string[][] = [];
  private openSegment: string[] | null = null;

  add(name: string, layer: Layer, inputs: string[]): string {
    if (this.names.has(name)) throw new Error(`GraphBuilder: duplicate node name "${name}"`);
    for (const i of inputs) if (!this.names.has(i)) throw new Error(`GraphBuilder: node "${name}" reads unknown node "${i}"`);
    this.names.add(name);
    this.nodes.push({ name, layer, inputs });
    this.openSegment?.push(name);
    return name;
  }

  /** Nodes added inside `body` form one checkpoint segment. */
  segment<T>(body: () => T): T {
    if (this.openSegment) throw new Error('GraphBuilder: segments cannot nest');
    this.openSegment = [];
    try {
      return body();
    } finally {
      if (this.openSegment.length) this.segmentList.push(this.openSegment);
      this.openSegment = null;
    }
  }

  build(meta: Omit<Network, 'nodes' | 'params' | 'segments'>): Network {
    if (!this.names.has(meta.output)) throw new Error(`GraphBuilder: output node "${meta.output}" does not exist`);
    const params: QualifiedParam[] = [];
    for (const node of this.nodes)
      for (const p of node.layer.params) params.push({ ...p, qualifiedName: `${node.name}.${p.name}`, node: node.name });
    return { ...meta, nodes: [...this.nodes], params, segments: this.segmentList.map((s) => [...s]) };
  }
}

/** Shapes of every node's output for an input shape [N, D, H, W, C]. */
export function inferShapes(net: Network, inputShape: Shape): Map<string, Shape> {
  const shapes = new Map<string, Shape>([[NETWORK_INPUT, inputShape]]);
  for (const node of net.nodes) {
    const inShapes = node.inputs.map((i) => shapes.get(i)!);
    shapes.set(node.name, node.layer.outputShape(inShapes));
  }
  return shapes;
}
