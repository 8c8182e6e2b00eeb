/**
 * The plugin contracts: what a dataset, an architecture and a memory strategy plugin provide. A plugin is
 * data (its kind, name, description, citation and settings schema) plus `create`, which receives the
 * settings resolved against that schema (typed from it: `SettingsOf`). The runner knows plugins only
 * through these interfaces and their registered names.
 *
 * A memory strategy decides three things:
 * 1. what the model sees in a training step (`sample`: the whole volume, a crop, a context window…);
 * 2. how the step keeps what backward needs (`plan`: saved-tensor hooks for swapping, recompute
 *    segments for checkpointing, or the plain tape for the baseline);
 * 3. how inference runs (`infer`: one pass over the whole volume, a sliding window, …).
 * A strategy that splits the step over several accelerators (spatial partitioning's ranks) also gives a
 * `trainer`, which runs the steps itself (its workers hold the parameters and apply Adam); the runner
 * still samples, keeps the budgets, the learning curves, the evaluation and the record.
 */
import { resolveSettings, type SettingsOf, type SettingsSchema, type Settings } from '../config/index.js';
import type { Network, StepPlan } from '../engine/index.js';
import type { Estimate, EstimateOptions } from '../memory/index.js';
import type { LossKind, Params } from '../training/index.js';
import type { WindowPredictor } from '../inference/index.js';
import type { Dataset, InferenceInput, NetworkSpec, PluginKind, PredictionInput, PreparedCase, Rng, Shape3, TrainingSample } from '../types.js';

/** What a plugin may use when it is created. */
export interface PluginDeps {
  /** Folder of the experiment file or the working directory; relative data paths resolve against it. */
  baseDir: string;
}

/**
 * A registry holds plugins of many schemas, so the default schema parameter is `any` (a list of
 * `StrategyPlugin`s accepts each plugin whatever its schema); each plugin's own file declares
 * `StrategyPlugin<typeof settings>`, which types its `create` from its schema.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnySchema = any;

export interface Plugin<T, S extends SettingsSchema = AnySchema> {
  readonly kind: PluginKind;
  readonly name: string;
  /** One line for `--list` and error messages. */
  readonly description: string;
  /** Citation of the paper or system the plugin implements. */
  readonly reference?: string;
  /** Every setting, declared once: its type, default, bounds and description. */
  readonly settings: S;
  create(settings: SettingsOf<S>, deps: PluginDeps): T;
  /**
   * The settings as they take effect, where one setting overrides others (e.g. me-fcn's `all: true`
   * switches every technique on whatever its flag says): what a trial record shows. Default: as given.
   */
  effective?(settings: SettingsOf<S>): SettingsOf<S>;
}

export interface DatasetPlugin<S extends SettingsSchema = AnySchema> extends Plugin<Dataset, S> {
  /**
   * The images to segment at `path` (a file, a case folder, or a folder of them), read with the
   * preprocessing this dataset applies to its cases (`settings` as the model was trained with), for
   * `npm run predict`. `channels`: the modalities the model expects, in order.
   */
  predictionInputs?(path: string, settings: SettingsOf<S>, channels: string[]): PredictionInput[];
}

export interface Architecture {
  readonly name: string;
  build(spec: NetworkSpec): Network;
}

export type ArchitecturePlugin<S extends SettingsSchema = AnySchema> = Plugin<Architecture, S>;
export type StrategyPlugin<S extends SettingsSchema = AnySchema> = Plugin<MemoryStrategy, S>;

/** What the runner tells `plan` about the step beyond the network and its input. */
export interface PlanContext {
  /**
   * The options the runner estimates the step's peak with (optimizer state, optimizer in backward, the
   * loss): a strategy that plans with the estimator (checkpoint's search) must use the same.
   */
  estimate?: EstimateOptions;
  /** The trial's device memory budget (training.deviceMemory), bytes, where it has one: a strategy may plan to it. */
  deviceMemory?: number;
}

/** One column a strategy adds to each trial record (trials.csv), with its meaning for the summary's legend. */
export interface StrategyColumn {
  /** The column's name, snake_case, e.g. `swap_out_bytes`. */
  name: string;
  value: number | string | null;
  /** One line saying what the value is (unit included). */
  meaning: string;
}

/** What `MemoryStrategy.trainer` is given: the trial's network, its initial parameters and training settings. */
export interface TrainerArgs {
  net: Network;
  /** The initial parameters (initParams(net, seed)): the trainer copies them; the runner keeps ownership. */
  params: Params;
  seed: number;
  training: {
    learningRate: number;
    loss: LossKind;
    /** Each accelerator's memory budget in bytes (every rank's), or undefined for none. */
    deviceMemory?: number;
  };
  /** The step's input [N, D, H, W, C] (N the batch size), as planned. */
  inputShape: number[];
}

/** One step's batch, channels-last: x [N, D, H, W, channels], y [N, D, H, W, outChannels]. */
export interface TrainerBatch {
  x: Float32Array;
  y: Float32Array;
  /** N, the batch size. */
  batch: number;
  shape: Shape3;
  channels: number;
  outChannels: number;
}

export interface TrainerStepReport {
  loss: number;
  /** Wall-clock seconds of the step (forward, backward, the update; the batch's sending included). */
  seconds: number;
  /** The step's device high-water mark on the accelerator that held the most (the per-accelerator peak), bytes. */
  peakBytes: number;
}

/**
 * Training that a strategy runs itself: each `step` is a forward, backward and Adam update of the trial's
 * parameters wherever the strategy keeps them. A step over the device budget on any accelerator rejects
 * with a DeviceOutOfMemoryError (core/memory), so the trial is recorded `did-not-fit`.
 */
export interface StrategyTrainer {
  step(batch: TrainerBatch): Promise<TrainerStepReport>;
  /** The current parameters (for validation and the saved model); owned by the trainer, valid until the next call or dispose(). */
  params(): Promise<Params>;
  /**
   * The largest per-accelerator device peak of the strategy's inference passes (its `infer` on the
   * trainer's devices) since the last call, bytes, and starts a new one. Where given, the row's
   * peak_infer_bytes is this (the runner's own meter sees none of those devices).
   */
  takeInferencePeak?(): number;
  /** Ends what the trainer started (worker threads); safe to call twice, and after a failure. */
  dispose(): Promise<void>;
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
  /**
   * The step's estimated peak per accelerator, where the strategy splits the step (default: the core
   * estimator, estimatePeak, on the whole step).
   */
  estimate?(net: Network, inputShape: number[], plan: StepPlan, options: EstimateOptions): Estimate;
  /**
   * Runs the trial's training steps itself (see StrategyTrainer), instead of the runner's executor loop.
   * The trainer lives until the trial's evaluation ended; `infer` may use it (e.g. run on its workers).
   */
  trainer?(args: TrainerArgs): Promise<StrategyTrainer>;
  /** The strategy's own columns for the trial record (bytes swapped, …), cumulative over the trial. */
  report?(): StrategyColumn[];
  /** Frees resources (worker threads, host stores). */
  dispose?(): Promise<void> | void;
}

export type { WindowPredictor };

/**
 * Creates a plugin from settings as an experiment (or a saved model) gives them: checked against the
 * plugin's schema and completed with its defaults (again: resolving resolved settings changes nothing).
 */
export function instantiate<T, S extends SettingsSchema>(plugin: Plugin<T, S>, settings: Settings, deps: PluginDeps): T {
  return plugin.create(resolveSettings(plugin.settings, settings, `${plugin.kind}.settings`), deps);
}
