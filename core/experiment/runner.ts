/**
 * The experiment runner: for each trial, dataset → strategy (what a step sees, how backward keeps what
 * it needs, how inference runs) → architecture → training with Adam → evaluation → one trial record,
 * appended to results/<experiment>/trials.csv as soon as the trial ends, so a killed sweep loses nothing
 * finished. A trial that exceeds its device-memory budget is recorded `did-not-fit` and the sweep goes on.
 */
import * as tf from '@tensorflow/tfjs-core';
import { join } from 'node:path';
import type { Experiment, TrialConfig } from '../config/experiment.js';
import type { PluginCatalog } from '../plugins/container.js';
import { Executor, type StepObserver } from '../engine/executor.js';
import type { Phase, StepPlan } from '../engine/plan.js';
import { inferShapes, parameterCount, type Network } from '../engine/graph.js';
import { stepLoss, type LossKind } from '../training/loss.js';
import { Adam, initParams, type Params } from '../training/optimizer.js';
import { SeededRng } from '../data/rng.js';
import type { MemoryStrategy, PreparedCase, WindowPredictor } from '../plugins/contracts.js';
import type { Architecture, Dataset, SegmentationTask, Shape3, Volume } from '../types.js';
import { voxels } from '../data/volume.js';
import { evaluateCase, labelsToTargets, outputChannels, probabilitiesToLabels } from '../evaluation/metrics.js';
import { DeviceMemoryMeter, type BufferLedger } from '../memory/meter.js';
import { TrialRecorder, aggregateCaseMetrics, readTrials, regionColumns, writeSummary, type TrialRow } from './results.js';
import { formatBytes } from '../config/settings.js';
import { ProgressBar, formatDuration } from './progress.js';
import { saveModel } from '../io/model-store.js';
import { windowPredictor } from '../inference/window.js';
import { chooseBackend, initBackend, type BackendInfo } from '../backend/backends.js';
import { estimatePeak, type Estimate } from '../memory/estimator.js';

/** Raised when live device bytes exceed the trial's budget; names the step, the operation and the bytes. */
export class DeviceOutOfMemoryError extends Error {
  constructor(
    readonly op: string,
    readonly needed: number,
    readonly available: number,
    readonly budget: number,
  ) {
    super(
      `out of device memory at ${op}: an allocation of ${formatBytes(needed)} with ${formatBytes(available)} of the ${formatBytes(budget)} budget free`,
    );
    this.name = 'DeviceOutOfMemoryError';
  }
}

export interface RunOptions {
  /** results/<experiment> */
  resultsDir: string;
  /** --backend flag (overrides the experiment and VOLSEG_BACKEND). */
  backend?: string;
  /** Print one line per event. */
  log?: (line: string) => void;
}

export interface CaseResult {
  case: string;
  region: string;
  dice: number;
  hd95: number;
}

/** A trial's decisions before training (see ExperimentRunner.planTrial). */
export interface TrialPlan {
  data: LoadedData;
  task: SegmentationTask;
  K: number;
  activation: 'sigmoid' | 'softmax';
  net: Network;
  strategy: MemoryStrategy;
  train: string[];
  validation: string[];
  /** Shape of the first training case, and of the step's input for it. */
  caseShape: Shape3;
  stepShape: Shape3;
  inputShape: number[];
  plan: StepPlan;
  estimate: Estimate;
}

interface LoadedData {
  dataset: Dataset;
  volumes: Map<string, Volume>;
}

const shapeText = (s: number[]): string => s.join('x');

/**
 * Columns every row carries (empty where a strategy has nothing to say), so that trials.csv keeps one
 * header through a sweep that mixes strategies.
 */
export const RUNNER_COLUMNS = [
  'volume_shape',
  'validation_cases',
  'final_loss',
  'recompute_seconds',
  'swap_wait_seconds',
  'swap_out_bytes',
  'swap_in_bytes',
  'swapped_tensors',
  'rss_peak_bytes',
  'meter',
  'model',
  'status_detail',
] as const;

/** Median of the step times after the first (warm-up) step; the only step if there is one. */
function medianStepSeconds(times: number[]): number {
  const t = times.length > 1 ? times.slice(1) : times;
  const sorted = [...t].sort((a, b) => a - b);
  const m = sorted.length >> 1;
  return sorted.length % 2 ? sorted[m]! : (sorted[m - 1]! + sorted[m]!) / 2;
}

export class ExperimentRunner {
  private readonly data = new Map<string, LoadedData>();
  private meter: DeviceMemoryMeter | null = null;
  private backendInfo: BackendInfo | null = null;

  constructor(private readonly catalog: PluginCatalog) {}

  private get ledger(): BufferLedger {
    return this.meter!.ledger;
  }

  async run(exp: Experiment, opts: RunOptions): Promise<TrialRow[]> {
    const log = opts.log ?? ((l: string) => console.log(l));
    const backendChoice = chooseBackend(opts.backend, exp.trials[0]?.training.backend as string | undefined);
    this.backendInfo = await initBackend(backendChoice);
    log(`backend: ${this.backendInfo.label}${this.backendInfo.nativeKernels ? ` (native kernels: ${this.backendInfo.nativeKernels})` : ''}`);
    this.meter = new DeviceMemoryMeter().attach();
    const recorder = new TrialRecorder(opts.resultsDir);
    const rows: TrialRow[] = [];
    const t0 = performance.now();
    try {
      for (const trial of exp.trials) {
        log(`trial ${trial.trial + 1}/${exp.trials.length}: ${trial.label}`);
        const { row, cases } = await this.runTrial(exp, trial, opts.resultsDir, log);
        recorder.append(row);
        recorder.appendCases(cases.map((c) => ({ trial: trial.trial, ...c })));
        rows.push(row);
        writeSummary(opts.resultsDir, exp.name, readTrials(opts.resultsDir));
        const elapsed = (performance.now() - t0) / 1000;
        const left = (elapsed / rows.length) * (exp.trials.length - rows.length);
        log(
          `  -> ${row.status}; dice_mean ${fmt(row.dice_mean)}; peak train ${fmtBytes(row.peak_train_bytes)}, infer ${fmtBytes(row.peak_infer_bytes)}; step ${fmt(row.step_seconds)} s` +
            (rows.length < exp.trials.length ? `; sweep ETA ${formatDuration(left)}` : ''),
        );
      }
    } finally {
      this.meter.detach();
    }
    return rows;
  }

  private async loadData(trial: TrialConfig, baseDir: string): Promise<LoadedData> {
    const key = JSON.stringify(trial.dataset);
    let loaded = this.data.get(key);
    if (!loaded) {
      const plugin = this.catalog.get<Dataset>('dataset', trial.dataset.name);
      loaded = { dataset: plugin.create(trial.dataset.settings, { baseDir }), volumes: new Map() };
      this.data.set(key, loaded);
    }
    return loaded;
  }

  private async volume(data: LoadedData, id: string): Promise<Volume> {
    let v = data.volumes.get(id);
    if (!v) {
      v = await data.dataset.load(id);
      data.volumes.set(id, v);
    }
    return v;
  }

  /** The train/validation split by case, fixed by the trial seed. */
  static split(ids: string[], seed: number, fraction: number, maxValidation?: number): { train: string[]; validation: string[] } {
    if (ids.length < 2) throw new Error(`the dataset has ${ids.length} labelled case(s); training and validation need at least 2`);
    const order = new SeededRng(seed).fork('split').shuffle([...ids]);
    let nVal = Math.min(ids.length - 1, Math.max(1, Math.round(ids.length * fraction)));
    if (maxValidation !== undefined) nVal = Math.min(nVal, maxValidation);
    return { validation: order.slice(0, nVal).sort(), train: order.slice(nVal).sort() };
  }

  private observer(label: () => string): StepObserver {
    return {
      beforeOp: (phase: Phase, node: string) => {
        this.ledger.currentOp = `${label()} / ${phase} / ${node}`;
      },
      afterOp: () => {
        const o = this.ledger.takeOverflow();
        if (o) throw new DeviceOutOfMemoryError(o.op, o.needed, o.available, o.budget);
      },
    };
  }

  /**
   * What a trial decides before it trains: the network, the strategy, the split, the step's input shape
   * (from the first training case), the plan and the estimated peak. `--dry-run` prints exactly this.
   * The caller disposes `strategy`.
   */
  async planTrial(exp: Experiment, trial: TrialConfig, opts: { breakdown?: boolean } = {}): Promise<TrialPlan> {
    const tr = trial.training;
    const baseDir = join(exp.file, '..');
    const data = await this.loadData(trial, baseDir);
    const { dataset } = data;
    const task = dataset.task;
    const K = outputChannels(task);
    const activation = task.kind === 'regions' ? 'sigmoid' : 'softmax';
    const arch = this.catalog.get<Architecture>('architecture', trial.architecture.name).create(trial.architecture.settings, { baseDir });
    const net = arch.build({ inChannels: dataset.channels.length, outChannels: K, activation });
    const strategy = this.catalog.get<MemoryStrategy>('strategy', trial.strategy.name).create(trial.strategy.settings, { baseDir });
    try {
      const { train, validation } = ExperimentRunner.split(
        dataset.labelledCaseIds(),
        trial.seed,
        tr.validationFraction as number,
        tr.maxValidationCases as number | undefined,
      );
      const caseShape = (await this.volume(data, train[0]!)).shape;
      const stepShape = strategy.trainingShape(caseShape, net);
      const inputShape = [tr.batchSize as number, ...stepShape, dataset.channels.length];
      inferShapes(net, inputShape); // fails early, with the layer's message, on an impossible shape
      const estimateOptions = {
        optimizerSlots: 2,
        loss: tr.loss as LossKind,
        optimizerInBackward: tr.optimizerInBackward as boolean,
      };
      const plan = strategy.plan(net, inputShape, { estimate: estimateOptions });
      const estimate = estimatePeak(net, inputShape, plan, { ...estimateOptions, breakdown: opts.breakdown });
      return { data, task, K, activation, net, strategy, train, validation, caseShape, stepShape, inputShape, plan, estimate };
    } catch (e) {
      await strategy.dispose?.();
      throw e;
    }
  }

  async runTrial(
    exp: Experiment,
    trial: TrialConfig,
    resultsDir: string,
    log: (l: string) => void,
  ): Promise<{ row: TrialRow; cases: CaseResult[] }> {
    const tr = trial.training;
    const startedAt = new Date().toISOString();
    const row: TrialRow = {
      trial: trial.trial,
      experiment: exp.name,
      strategy: trial.strategy.name,
      architecture: trial.architecture.name,
      dataset: trial.dataset.name,
      input_shape: null,
      seed: trial.seed,
      backend: this.backendInfo!.label,
      epochs: tr.epochs as number,
      status: 'ok',
      settings: JSON.stringify({
        label: trial.label,
        dataset: trial.dataset,
        architecture: trial.architecture,
        strategy: trial.strategy,
        training: tr,
        profile: exp.profile ?? null,
      }),
      started_at: startedAt,
      ...Object.fromEntries(RUNNER_COLUMNS.map((c) => [c, null])),
    };
    const cases: CaseResult[] = [];
    let strategy: MemoryStrategy | null = null;
    let adam: Adam | null = null;
    const hostPeak = { rss: process.memoryUsage().rss };
    const sampleHost = (): void => {
      hostPeak.rss = Math.max(hostPeak.rss, process.memoryUsage().rss);
    };
    tf.engine().startScope();
    try {
      // Every row of an experiment has the task's metric columns, empty where a trial has no value.
      const { dataset } = await this.loadData(trial, join(exp.file, '..'));
      for (const c of regionColumns(dataset.task)) row[c] ??= null;
      const p = await this.planTrial(exp, trial);
      strategy = p.strategy;
      const { data, task, K, activation, net, train, validation, plan } = p;
      row.params = parameterCount(net);
      row.volume_shape = shapeText(p.caseShape);
      row.input_shape = shapeText(p.stepShape);
      row.est_peak_train_bytes = p.estimate.peak;
      const batch = tr.batchSize as number;
      const prepared = new Map<string, PreparedCase>();
      const prepare = async (id: string): Promise<PreparedCase> => {
        let p = prepared.get(id);
        if (!p) {
          const v = await this.volume(data, id);
          if (!v.label) throw new Error(`case ${id} of dataset ${dataset.name} has no label map`);
          p = {
            id,
            image: v.image,
            target: labelsToTargets(v.label, task, voxels(v.shape)),
            shape: v.shape,
            channels: v.channels,
            outChannels: K,
            label: v.label,
          };
          prepared.set(id, p);
        }
        return p;
      };

      // ---- training
      const rng = new SeededRng(trial.seed);
      const sampleRng = rng.fork('samples');
      const caseRng = rng.fork('cases');
      const params = initParams(net, trial.seed);
      adam = new Adam({ learningRate: tr.learningRate as number });
      const executor = new Executor(net);
      const budget = (tr.deviceMemory as number | undefined) ?? null;
      this.ledger.setBudget(budget);
      this.ledger.takeOverflow();
      this.ledger.resetPeak();
      const epochs = tr.epochs as number;
      const stepsPerEpoch = tr.stepsPerEpoch as number;
      const total = epochs * stepsPerEpoch;
      const bar = new ProgressBar(`  train`, total);
      const stepTimes: number[] = [];
      let step = 0;
      let order: string[] = [];
      let lastLoss = NaN;
      const stats = { recompute: 0, wait: 0 };
      const observer = this.observer(() => `train step ${step + 1}`);
      const trainStart = performance.now();
      for (let epoch = 0; epoch < epochs; epoch++) {
        let epochLoss = 0;
        for (let s = 0; s < stepsPerEpoch; s++) {
          const samples = [];
          for (let b = 0; b < batch; b++) {
            if (order.length === 0) order = caseRng.shuffle([...train]);
            samples.push(strategy.sample(await prepare(order.pop()!), sampleRng, net));
          }
          const t0 = performance.now();
          const shape = samples[0]!.shape;
          if (samples.some((x) => shapeText(x.shape) !== shapeText(shape)))
            throw new Error(`batchSize ${batch}: the samples of one step differ in shape; use batchSize 1 or a patch strategy`);
          const x = tf.tensor(concat(samples.map((x) => x.image)), [batch, ...shape, dataset.channels.length]);
          const y = tf.tensor(concat(samples.map((x) => x.target)), [batch, ...shape, K]);
          const loss = stepLoss(y, tr.loss as LossKind, activation, net);
          let result;
          if (tr.optimizerInBackward) {
            const opt = adam;
            opt.begin();
            result = await executor.trainStep(x, params, loss, plan, observer, (name, g) => opt.update(params, name, g));
          } else {
            result = await executor.trainStep(x, params, loss, plan, observer);
            adam.step(params, result.grads);
          }
          x.dispose();
          y.dispose();
          stepTimes.push((performance.now() - t0) / 1000);
          stats.recompute += result.stats.recomputeSeconds;
          stats.wait += result.stats.unpackWaitSeconds;
          lastLoss = result.loss;
          epochLoss += result.loss;
          sampleHost();
          step++;
          bar.update(step, `loss ${result.loss.toFixed(4)}`);
        }
        if (epoch === epochs - 1 || (epoch + 1) % Math.max(1, Math.ceil(epochs / 5)) === 0)
          log(`  epoch ${epoch + 1}/${epochs}: mean loss ${(epochLoss / stepsPerEpoch).toFixed(4)}`);
      }
      bar.done();
      row.train_seconds = (performance.now() - trainStart) / 1000;
      row.step_seconds = medianStepSeconds(stepTimes);
      row.peak_train_bytes = this.ledger.peak;
      row.final_loss = lastLoss;
      row.recompute_seconds = stats.recompute;
      row.swap_wait_seconds = stats.wait;
      const report = strategy.report?.() ?? {};
      for (const [k, v] of Object.entries(report)) if (k !== 'swap_host_peak_bytes') row[k] = v;
      row.host_peak_bytes = report.swap_host_peak_bytes ?? 0;
      row.meter = this.meter!.method;

      // ---- evaluation
      if (tr.evaluate) {
        this.ledger.resetPeak();
        const inferStart = performance.now();
        const perCase: { name: string; dice: number; hd95: number }[][] = [];
        for (const id of validation) {
          const v = await this.volume(data, id);
          const predict = this.predictor(executor, net, params, v.channels, () => `inference ${id}`);
          const probs = await strategy.infer({ image: v.image, shape: v.shape, channels: v.channels }, predict, net);
          sampleHost();
          const labels = probabilitiesToLabels(probs, v.shape, task, tr.threshold as number);
          const result = evaluateCase(labels, v.label!, task, v.shape, v.spacing);
          perCase.push(result);
          for (const r of result) cases.push({ case: id, region: r.name, dice: r.dice, hd95: r.hd95 });
        }
        row.infer_seconds = (performance.now() - inferStart) / 1000;
        row.peak_infer_bytes = this.ledger.peak;
        row.validation_cases = validation.length;
        Object.assign(row, aggregateCaseMetrics(perCase));
      }

      if (tr.saveModel) {
        const dir = join(resultsDir, 'models', `trial-${trial.trial}`);
        await saveModel(
          dir,
          {
            experiment: exp.name,
            trial: trial.trial,
            architecture: trial.architecture,
            network: { inChannels: dataset.channels.length, outChannels: K, activation },
            dataset: trial.dataset,
            channels: dataset.channels,
            task,
            strategy: trial.strategy,
            threshold: tr.threshold as number,
          },
          params,
        );
        row.model = dir;
      }
    } catch (e) {
      if (e instanceof DeviceOutOfMemoryError) {
        row.status = 'did-not-fit';
        // What it held when it stopped (above the budget), in the column of the phase that stopped.
        row[row.train_seconds === undefined ? 'peak_train_bytes' : 'peak_infer_bytes'] = this.ledger.peak;
        row.status_detail = e.message;
        log(`  did not fit: ${e.message}`);
      } else {
        const msg = (e as Error).message ?? String(e);
        row.status = `failed: ${msg.split('\n')[0]}`;
        log(`  failed: ${msg}`);
        if (process.env.VOLSEG_DEBUG) console.error(e);
      }
    } finally {
      this.ledger.setBudget(null);
      this.ledger.takeOverflow();
      adam?.dispose();
      await strategy?.dispose?.();
      // Everything the trial made (params, and whatever a failed step left) goes with the scope.
      tf.engine().endScope();
      row.rss_peak_bytes = hostPeak.rss;
    }
    return { row, cases };
  }

  private predictor(executor: Executor, net: Network, params: Params, channels: number, label: () => string): WindowPredictor {
    return windowPredictor(executor, net, params, channels, this.observer(label));
  }
}

function concat(parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function fmt(v: unknown): string {
  return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(3) : 'n/a';
}

function fmtBytes(v: unknown): string {
  return typeof v === 'number' && Number.isFinite(v) ? formatBytes(v) : 'n/a';
}
