/**
 * The MemoryStrategy contract. A strategy decides three things:
 * 1. what the model sees in a training step (`sample`: the whole volume, a crop, a context window…);
 * 2. how the step keeps what backward needs (`plan`: saved-tensor hooks for swapping, recompute
 *    segments for checkpointing, or the plain tape for the baseline);
 * 3. how inference runs (`infer`: one pass over the whole volume, a sliding window, …).
 * The runner knows strategies only through this interface and their registered names.
 */
import type { Network } from '../engine/graph.js';
import type { StepPlan } from '../engine/plan.js';
import type { EstimateOptions } from '../memory/estimator.js';
import type { Rng, Shape3, TrainingSample } from '../types.js';

/** A labelled case ready for training: channels-last image and one target channel per network output. */
export interface PreparedCase {
  id: string;
  image: Float32Array;
  /** [D, H, W, K] targets (regions or one-hot labels). */
  target: Float32Array;
  shape: Shape3;
  channels: number;
  outChannels: number;
  /** Label values per voxel (foreground-biased sampling reads it). */
  label: Uint8Array;
}

/** An image to segment. */
export interface InferenceInput {
  image: Float32Array;
  shape: Shape3;
  channels: number;
}

/**
 * Runs the network on one window (any shape; the runner pads it to the network's divisor and crops the
 * output back) and returns probabilities [d, h, w, K].
 */
export type WindowPredictor = (window: Float32Array, shape: Shape3) => Promise<Float32Array>;

export interface StrategyStepInfo {
  net: Network;
}

/** What the runner tells `plan` about the step beyond the network and its input. */
export interface PlanContext {
  /**
   * The options the runner estimates the step's peak with (optimizer state, optimizer in backward, the
   * loss): a strategy that plans with the estimator (checkpoint's search) must use the same.
   */
  estimate?: EstimateOptions;
}

export interface MemoryStrategy {
  readonly name: string;
  /** The spatial shape of a training step's input for a case of this shape (for estimates and records). */
  trainingShape(caseShape: Shape3, net: Network): Shape3;
  /** What the model sees in one step. */
  sample(c: PreparedCase, rng: Rng, net: Network): TrainingSample;
  /** How the step keeps what backward needs. */
  plan(net: Network, inputShape: number[], context?: PlanContext): StepPlan;
  /** Probabilities [D, H, W, K] for a whole image. */
  infer(input: InferenceInput, predict: WindowPredictor, net: Network): Promise<Float32Array>;
  /** Strategy counters for the trial record (bytes swapped, recompute seconds, …), cumulative. */
  report?(): Record<string, number>;
  /** Frees resources (worker threads, host stores). */
  dispose?(): Promise<void> | void;
}
