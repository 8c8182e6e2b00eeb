/**
 * A StepPlan: how a memory strategy shapes one training step. The schedule (schedule.ts) turns a network,
 * an input shape and a plan into the step's ordered events; the executor runs them and the estimator
 * walks them.
 * - `hooks` (like PyTorch's saved_tensors_hooks): for each tensor a layer saves, whether it stays on the
 *   device or is packed elsewhere (host memory) and unpacked in backward, prefetched `prefetchDistance`
 *   layers ahead of use (TFLMS's `lb`);
 * - `recompute`: checkpoint segments (Chen et al. 2016): forward keeps only the segments' external
 *   inputs, and backward re-runs each segment's forward, saving, just before its backward;
 * - `saveMode`: 'lean' asks layers to keep fewer buffers and recompute cheap values in backward.
 */
import type { Tensor } from '@tensorflow/tfjs-core';

/** A saved tensor that a hook moved off the device. */
export interface PackedTensor {
  readonly location: 'host';
  readonly bytes: number;
}

export interface SaveSite {
  node: string;
  layerType: string;
  /** Position of the node in forward order. */
  nodeIndex: number;
  /** Index of this tensor among the node's saves. */
  saveIndex: number;
  /** How many backward steps from the end of forward until this tensor is used (0 = first). */
  backwardPosition: number;
}

/** Where a forward activation waits for its next reader (TFLMS swap_branches). */
export interface ParkSite {
  /** The activation's node. */
  node: string;
  /** Layers from the one that read it last to the one that reads it next. */
  distance: number;
}

export interface SavedTensorHooks {
  /**
   * Before anything runs: does `pack` move a saved tensor of `bytes` at `site` off the device? The
   * schedule plans the step with this answer, so it must agree with `pack` (the executor checks).
   */
  willPack(site: SaveSite, bytes: number): boolean;
  /**
   * A layer saved `t` in forward. Return 'device' to keep it, or a handle once the hook has taken what it
   * needs (the executor still owns `t` and frees it when forward is done with it; a hook that must keep
   * the device buffer alive until a transfer finishes holds a clone).
   */
  pack(t: Tensor, site: SaveSite): 'device' | PackedTensor;
  /** Backward needs the tensor now: a device tensor that the executor disposes after use. */
  unpack(p: PackedTensor): Promise<Tensor>;
  /** Backward will need `p` soon: start bringing it back. */
  prefetch?(p: PackedTensor): void;
  /** The executor will not unpack `p` again. */
  release?(p: PackedTensor): void;
  /**
   * Forward branch swapping (TFLMS `swap_branches`), before anything runs: is an activation of `bytes`
   * whose next forward reader is `site.distance` layers away parked off the device until then? Must
   * agree with `park`.
   */
  willPark?(site: ParkSite, bytes: number): boolean;
  /** Parks `t` (the schedule decided so with `willPark`): the handle its next reader unpacks. */
  park?(t: Tensor, site: ParkSite): PackedTensor | null;
  /** Called between layers so that finished transfers can be completed (and device copies freed). */
  poll?(): void | Promise<void>;
  /**
   * Called when a training step starts, and when it ends (failed or not): for what a strategy changes
   * only while its own steps run (the emulated link's shareable outputs), so that other steps in the
   * same process run as they would without it.
   */
  stepStart?(): void;
  stepEnd?(): void;
}

export interface StepPlan {
  /**
   * 'owned' (default): this framework's backward, freeing as it goes. 'tape': plain `tf.grads`, which
   * keeps every saved tensor and gradient until the whole backward ends (the baseline).
   */
  backward?: 'owned' | 'tape';
  hooks?: SavedTensorHooks;
  /** Checkpoint segments: each a contiguous run of node names whose forward is re-run in backward. */
  recompute?: string[][];
  /**
   * A packed tensor's device buffer lives until the end of this many further layers (the hooks' `poll`
   * waits for older transfers); undefined: the transfer is assumed to keep up.
   */
  packLag?: number;
  /**
   * Start bringing packed tensors back this many layers before backward uses them (TFLMS `lb`): with 1
   * the transfer overlaps the previous layer's backward; 0 fetches on demand (no overlap, least memory).
   */
  prefetchDistance?: number;
  /**
   * What layers keep for backward (ForwardArgs.saveMode): 'all' (default) or 'lean' (fewer buffers, cheap
   * values recomputed in backward: a normalisation keeps its output, which the next layer saves anyway).
   */
  saveMode?: 'all' | 'lean';
}

export type Phase = 'forward' | 'loss' | 'backward' | 'recompute' | 'inference';

/** The union of two sets of recompute segments; a segment of `a` that overlaps one of `b` yields to `b`. */
export function mergeSegments(a: string[][], b: string[][]): string[][] {
  const taken = new Set(b.flat());
  return [...a.filter((s) => !s.some((n) => taken.has(n))), ...b];
}
