/**
 * The experiment runner: for each trial, dataset → strategy (what a step sees, how backward keeps what
 * it needs, how inference runs) → architecture → training with Adam → evaluation → one trial record,
 * appended to results/<experiment>/trials.csv as soon as the trial ends, so a killed sweep loses nothing
 * finished. A trial that exceeds its device-memory budget is recorded `did-not-fit` and the sweep goes on.
 *
 * A trial is four stages: plan (`planTrial`: network, strategy, split, input shape, the step's plan and
 * its estimated peak; `--dry-run` prints exactly this), train (`trainTrial`, on the shared training loop),
 * evaluate (`evaluateTrial`), record (the row, the per-case rows, the saved model).
 */
import * as tf from '@tensorflow/tfjs-core';
import { createHash } from 'node:crypto';
import { basename, join } from 'node:path';
import { formatBytes, stableStringify, type Experiment, type TrialConfig } from '../config/index.js';
import { instantiate, type PluginCatalog, type MemoryStrategy, type StrategyColumn, type StrategyTrainer } from '../plugins/index.js';
import { Executor, inferShapes, parameterCount, type StepObserver, type Phase, type StepPlan, type Network } from '../engine/index.js';
import { Adam, initParams, medianStepSeconds, train, type Params, type StepReport } from '../training/index.js';
import { SeededRng, voxels } from '../data/index.js';
import type { Dataset, PreparedCase, SegmentationTask, Shape3, Volume } from '../types.js';
import { evaluateCase, labelsToTargets, outputChannels, probabilitiesToLabels } from '../evaluation/index.js';
import { DeviceMemoryMeter, DeviceOutOfMemoryError, estimatePeak, type BufferLedger, type Estimate, type EstimateOptions } from '../memory/index.js';
import { writePlots } from './plots.js';
import { TrialRecorder, aggregateCaseMetrics, describeMachine, readSummaryInputs, readTrials, regionColumns, writeSummary, type CaseRow, type CurveRow, type TrialRow } from './results.js';
import { shardTrials, type Shard } from './shards.js';
import { ProgressBar, formatDuration } from './progress.js';
import { saveModel } from '../io/index.js';
import { windowPredictor, type WindowPredictor } from '../inference/index.js';
import { bufferCache, chooseBackend, initBackend, type BackendInfo } from '../backend/index.js';

/** Raised when live device bytes exceed the trial's budget (defined in core/memory, where the budget is kept). */
export { DeviceOutOfMemoryError };

export interface RunOptions {
  /** results/<experiment> */
  resultsDir: string;
  /** --backend flag (overrides the experiment and VOLSEG_BACKEND). */
  backend?: string;
  /** Print one line per event. */
  log?: (line: string) => void;
  /** Start over: move the old records aside (never deleted) instead of resuming. */
  fresh?: boolean;
  /** Run only the k-th of n deterministic slices of the trials (`--shard k/n`; see shardTrials). */
  shard?: Shard;
}

/** What a sweep has to do: every trial's id, the trials in scope (all, or a shard's), those not recorded yet. */
export interface SweepState {
  ids: Map<number, string>;
  trials: TrialConfig[];
  pending: TrialConfig[];
  /** Recorded trial ids with their status (ok, did-not-fit, failed). */
  recorded: Map<string, string>;
}

/** A trial run on its own, for a queue worker (ExperimentRunner.runOne): its record rows. */
export interface TrialRecords {
  row: TrialRow;
  cases: CaseRow[];
  curves: CurveRow[];
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

/** What training leaves for evaluation and the record. */
interface TrainedTrial {
  /** The parameters the runner trained (stale where a strategy trainer holds them: see currentParams). */
  params: Params;
  executor: Executor;
  /** The strategy's trainer, where it ran the steps (MemoryStrategy.trainer); runTrial disposes it. */
  trainer: StrategyTrainer | null;
}

/** The trial's current parameters: the runner's own, or the strategy trainer's. */
const currentParams = (t: TrainedTrial): Promise<Params> => (t.trainer ? t.trainer.params() : Promise.resolve(t.params));

/** Executor statistics of a step a strategy trainer ran (it reports loss, time and peak only). */
const TRAINER_STATS = { forwardSeconds: 0, backwardSeconds: 0, recomputeSeconds: 0, savedOnDevice: 0, packed: 0 };

const shapeText = (s: number[]): string => s.join('x');

/**
 * Columns every row carries (empty where a trial has nothing to say), so that trials.csv keeps one header
 * through a sweep. Strategies add their own (MemoryStrategy.report); the runner names none of them.
 */
export const RUNNER_COLUMNS = [
  'volume_shape',
  'validation_cases',
  'budget',
  'steps',
  'voxels_seen',
  'curve_seconds',
  'final_loss',
  'recompute_seconds',
  'rss_peak_bytes',
  'pool_peak_train_bytes',
  'meter',
  'model',
  'status_detail',
  'strategy_columns',
] as const;

export class ExperimentRunner {
  private readonly data = new Map<string, LoadedData>();
  private meter: DeviceMemoryMeter | null = null;
  private backendInfo: BackendInfo | null = null;
  /** Every strategy column of the sweep, so each row carries them all (a stable header). */
  private strategyColumns: string[] = [];

  constructor(private readonly catalog: PluginCatalog) {}

  private get ledger(): BufferLedger {
    return this.meter!.ledger;
  }

  /**
   * Runs the sweep's trials that are not recorded yet. A trial is recorded once its row is in trials.csv
   * (ok, did-not-fit or failed), matched by trial id; its per-case rows and curve points are written
   * before that row, so a trial killed before its row is re-run from the start (what the killed attempt
   * left is dropped). `opts.fresh` moves the old records aside first; `opts.shard` runs one slice.
   */
  async run(exp: Experiment, opts: RunOptions): Promise<TrialRow[]> {
    const log = opts.log ?? ((l: string) => console.log(l));
    const recorder = new TrialRecorder(opts.resultsDir);
    const { ids, pending } = await this.prepareSweep(exp, opts, recorder, log);
    const rows: TrialRow[] = [];
    if (pending.length === 0) {
      await this.writeTables(exp, opts.resultsDir);
      log('every trial is recorded; summary.md regenerated');
      return rows;
    }
    await this.startSession(exp, opts.backend, log);
    // The ETA: each pending trial takes what finished trials of its strategy took (else the mean of all).
    const seconds = new Map<string, number[]>();
    const strategyKey = (t: TrialConfig): string => JSON.stringify(t.strategy);
    try {
      for (const [k, trial] of pending.entries()) {
        log(`trial ${trial.trial + 1}/${exp.trials.length}: ${trial.label}`);
        const t0 = performance.now();
        const id = ids.get(trial.trial)!;
        const { row, cases } = await this.runTrial(exp, trial, join(opts.resultsDir, 'models'), log, (c) => recorder.appendCurve(c), id);
        // The trial's row last: it marks the trial recorded.
        recorder.appendCases(cases.map((c) => ({ trial: trial.trial, trial_id: id, ...c })));
        recorder.append(row);
        rows.push(row);
        await this.writeTables(exp, opts.resultsDir);
        const key = strategyKey(trial);
        seconds.set(key, [...(seconds.get(key) ?? []), (performance.now() - t0) / 1000]);
        const all = [...seconds.values()].flat();
        const mean = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
        const left = pending.slice(k + 1).reduce((sum, t) => sum + mean(seconds.get(strategyKey(t)) ?? all), 0);
        log(
          `  -> ${trialOutcome(row)}` + (k + 1 < pending.length ? `; sweep ETA ${formatDuration(left)} (each strategy's time so far)` : ''),
        );
      }
    } finally {
      this.endSession();
    }
    return rows;
  }

  /**
   * What a sweep (or one shard of it) has left to do, with the records made whole first: `--fresh` moves
   * the old records aside, a torn last record is removed, each trial gets its id, the recorded ones are
   * said and skipped, and case/curve rows that killed attempts of unrecorded trials left are dropped.
   * The local runner and the queue's coordinator both start here.
   */
  async prepareSweep(exp: Experiment, opts: Pick<RunOptions, 'resultsDir' | 'fresh' | 'shard'>, recorder: TrialRecorder, log: (l: string) => void): Promise<SweepState> {
    if (opts.fresh) {
      const moved = recorder.moveAside();
      if (moved.length) log(`--fresh: the old records are kept as ${moved.map((m) => basename(m)).join(', ')}`);
    }
    for (const note of recorder.repair()) log(note);
    const trials = opts.shard ? shardTrials(exp.trials, opts.shard) : exp.trials;
    const ids = new Map<number, string>();
    for (const t of exp.trials) ids.set(t.trial, await this.trialId(exp, t));
    const recorded = await this.recordedIds(exp, readTrials(opts.resultsDir));
    const pending = trials.filter((t) => !recorded.has(ids.get(t.trial)!));
    if (pending.length < trials.length) {
      const statuses = new Map<string, number>();
      for (const t of trials) {
        const st = recorded.get(ids.get(t.trial)!);
        if (st !== undefined) statuses.set(st, (statuses.get(st) ?? 0) + 1);
      }
      log(
        `resuming: ${trials.length - pending.length} of ${trials.length} trials are already recorded in ${recorder.trialsFile} ` +
          `(${[...statuses].map(([k, n]) => `${n} ${k}`).join(', ')}) and are skipped; --fresh starts over`,
      );
    }
    const dropped = recorder.dropAttempts(new Set(pending.map((t) => ids.get(t.trial)!)));
    if (dropped) log(`dropped ${dropped} case/curve rows that interrupted attempts of unrecorded trials left behind`);
    return { ids, trials, pending, recorded };
  }

  /** Chooses and starts the backend, learns the sweep's strategy columns and attaches the meter. */
  private async startSession(exp: Experiment, backend: string | undefined, log: (l: string) => void, strategyColumns?: string[]): Promise<void> {
    const backendChoice = chooseBackend(backend, exp.trials[0]?.training.backend);
    this.backendInfo = await initBackend(backendChoice);
    log(`backend: ${this.backendInfo.label}${this.backendInfo.nativeKernels ? ` (native kernels: ${this.backendInfo.nativeKernels})` : ''}`);
    this.strategyColumns = strategyColumns ?? (await this.sweepStrategyColumns(exp));
    this.meter = new DeviceMemoryMeter().attach();
  }

  private endSession(): void {
    this.meter?.detach();
  }

  /**
   * One trial on its own, as a queue worker runs it (in a process of its own): the same row, per-case
   * rows and curve points that `run` would record, returned instead of written. `strategyColumns` are the
   * sweep's (sweepStrategyColumns, computed where the whole sweep is known), so the row has the header a
   * local run gives it; `machine` is filled here, where the trial ran.
   */
  async runOne(
    exp: Experiment,
    trial: TrialConfig,
    opts: { id: string; strategyColumns: string[]; modelsDir: string; backend?: string; log?: (l: string) => void },
  ): Promise<TrialRecords> {
    const log = opts.log ?? ((l: string) => console.log(l));
    await this.startSession({ ...exp, trials: [trial] }, opts.backend, log, opts.strategyColumns);
    const curves: CurveRow[] = [];
    try {
      const { row, cases } = await this.runTrial(exp, trial, opts.modelsDir, log, (c) => curves.push(c), opts.id);
      row.machine = describeMachine();
      return { row, cases: cases.map((c) => ({ trial: trial.trial, trial_id: opts.id, ...c })), curves };
    } finally {
      this.endSession();
    }
  }

  /**
   * The row of a trial that ended without a row of its own (its process crashed or ran out of memory):
   * the trial's identifying columns, the sweep's column set, and `status` `failed: <message>`.
   */
  async failedRow(exp: Experiment, trial: TrialConfig, id: string, message: string, strategyColumns: string[]): Promise<TrialRow> {
    const { dataset } = await this.loadData(trial, join(exp.file, '..'));
    const row = this.baseRow(exp, trial, id, null, strategyColumns);
    this.datasetColumns(row, dataset);
    row.status = `failed: ${message}`;
    row.started_at = null;
    return row;
  }

  /** summary.md, paired.csv and the plots, from the records as they stand. */
  async writeTables(exp: Experiment, dir: string): Promise<void> {
    const inputs = readSummaryInputs(dir);
    const rows = readTrials(dir);
    writeSummary(dir, exp.name, rows, inputs);
    await writePlots(dir, rows, inputs.curves ?? []);
  }

  /**
   * A trial's identity: a hash of its resolved dataset, architecture, strategy and training settings and
   * of the data's identity (`Dataset.identity`: file paths, sizes and times; nothing for a generator).
   */
  async trialId(exp: Experiment, trial: TrialConfig): Promise<string> {
    const data = await this.loadData(trial, join(exp.file, '..'));
    return trialIdOf(trial, data.dataset.identity?.());
  }

  /**
   * The trial ids recorded in these rows, with their status. Rows from before ids existed get theirs from
   * their settings, with the data identity of the same dataset in this experiment.
   */
  private async recordedIds(exp: Experiment, rows: TrialRow[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const identities = new Map<string, string | undefined>();
    for (const t of exp.trials) {
      const key = JSON.stringify(t.dataset);
      if (!identities.has(key)) identities.set(key, (await this.loadData(t, join(exp.file, '..'))).dataset.identity?.());
    }
    for (const r of rows) {
      const status = String(r.status ?? '').startsWith('failed') ? 'failed' : String(r.status ?? '');
      if (typeof r.trial_id === 'string' && r.trial_id !== '') {
        out.set(r.trial_id, status);
        continue;
      }
      try {
        const s = JSON.parse(String(r.settings)) as Pick<TrialConfig, 'dataset' | 'architecture' | 'strategy' | 'training'>;
        const key = JSON.stringify(s.dataset);
        if (identities.has(key)) out.set(trialIdOf(s, identities.get(key)), status);
      } catch {
        // a row without readable settings cannot be matched: its trial is run again
      }
    }
    return out;
  }

  /** The names of the columns the sweep's strategies report (each strategy made once and disposed). */
  async sweepStrategyColumns(exp: Experiment): Promise<string[]> {
    const names: string[] = [];
    const seen = new Set<string>();
    for (const t of exp.trials) {
      const key = JSON.stringify(t.strategy);
      if (seen.has(key)) continue;
      seen.add(key);
      const s = instantiate(this.catalog.strategy(t.strategy.name), t.strategy.settings, { baseDir: join(exp.file, '..') });
      try {
        for (const c of s.report?.() ?? []) if (!names.includes(c.name)) names.push(c.name);
      } finally {
        await s.dispose?.();
      }
    }
    return names;
  }

  private async loadData(trial: TrialConfig, baseDir: string): Promise<LoadedData> {
    const key = JSON.stringify(trial.dataset);
    let loaded = this.data.get(key);
    if (!loaded) {
      loaded = { dataset: instantiate(this.catalog.dataset(trial.dataset.name), trial.dataset.settings, { baseDir }), volumes: new Map() };
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

  /**
   * The train/validation split by case, fixed by `seed` (training.splitSeed, not the trial seed: every
   * trial of a sweep with the same cases validates on the same ones).
   */
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
   * Plan: what a trial decides before it trains: the network, the strategy, the split, the step's input
   * shape (from the first training case), the plan and the estimated peak. `--dry-run` prints exactly
   * this. The caller disposes `strategy`.
   */
  async planTrial(exp: Experiment, trial: TrialConfig, opts: { breakdown?: boolean } = {}): Promise<TrialPlan> {
    const tr = trial.training;
    const baseDir = join(exp.file, '..');
    const data = await this.loadData(trial, baseDir);
    const { dataset } = data;
    const task = dataset.task;
    const K = outputChannels(task);
    const activation = task.kind === 'regions' ? 'sigmoid' : 'softmax';
    const arch = instantiate(this.catalog.architecture(trial.architecture.name), trial.architecture.settings, { baseDir });
    const net = arch.build({ inChannels: dataset.channels.length, outChannels: K, activation });
    const strategy = instantiate(this.catalog.strategy(trial.strategy.name), trial.strategy.settings, { baseDir });
    try {
      const { train, validation } = ExperimentRunner.split(dataset.labelledCaseIds(), tr.splitSeed, tr.validationFraction, tr.maxValidationCases);
      const caseShape = (await this.volume(data, train[0]!)).shape;
      const stepShape = strategy.trainingShape(caseShape, net);
      const inputShape = [tr.batchSize, ...stepShape, dataset.channels.length];
      inferShapes(net, inputShape); // fails early, with the layer's message, on an impossible shape
      const estimateOptions: EstimateOptions = { optimizerSlots: 2, loss: tr.loss, optimizerInBackward: tr.optimizerInBackward };
      const plan = strategy.plan(net, inputShape, { estimate: estimateOptions, deviceMemory: tr.deviceMemory });
      // Per accelerator: a strategy that splits the step estimates one part (MemoryStrategy.estimate).
      const options = { ...estimateOptions, breakdown: opts.breakdown };
      const estimate = strategy.estimate ? strategy.estimate(net, inputShape, plan, options) : estimatePeak(net, inputShape, plan, options);
      return { data, task, K, activation, net, strategy, train, validation, caseShape, stepShape, inputShape, plan, estimate };
    } catch (e) {
      await strategy.dispose?.();
      throw e;
    }
  }

  /** The trial's parameters and executor, and the strategy's trainer where it runs the steps (runTrial disposes it). */
  private async startTraining(p: TrialPlan, trial: TrialConfig): Promise<TrainedTrial> {
    const tr = trial.training;
    const params = initParams(p.net, trial.seed);
    const trainer = p.strategy.trainer
      ? await p.strategy.trainer({ net: p.net, params, seed: trial.seed, training: { learningRate: tr.learningRate, loss: tr.loss, deviceMemory: tr.deviceMemory }, inputShape: p.inputShape })
      : null;
    return { params, executor: new Executor(p.net), trainer };
  }

  /**
   * Train: steps on the shared training loop, each on what the strategy samples, under the trial's device
   * budget, until the trial's budget (steps, voxels seen or training seconds) is reached. With
   * training.curveEvery (every N steps) or curvePoints (evenly through the budget), the validation cases
   * are evaluated (outside the training time and the training peak) and a learning-curve row is written.
   * Fills the row's training columns. A strategy with a trainer (MemoryStrategy.trainer) runs the steps
   * itself; sampling, budgets, curves and the record are the same, and the row's peak is the largest
   * per-accelerator peak it reports.
   */
  private async trainTrial(
    p: TrialPlan,
    trial: TrialConfig,
    row: TrialRow,
    log: (l: string) => void,
    onHost: () => void,
    optimizer: Adam,
    curve: CurveWriter,
    trained: TrainedTrial,
  ): Promise<void> {
    const tr = trial.training;
    const { data, task, K, net, strategy, plan } = p;
    const { dataset } = data;
    const { params, executor, trainer } = trained;
    const prepared = new Map<string, PreparedCase>();
    const prepare = async (id: string): Promise<PreparedCase> => {
      let c = prepared.get(id);
      if (!c) {
        const v = await this.volume(data, id);
        if (!v.label) throw new Error(`case ${id} of dataset ${dataset.name} has no label map`);
        c = { id, image: v.image, target: labelsToTargets(v.label, task, voxels(v.shape)), shape: v.shape, channels: v.channels, outChannels: K, label: v.label };
        prepared.set(id, c);
      }
      return c;
    };
    const rng = new SeededRng(trial.seed);
    const sampleRng = rng.fork('samples');
    const caseRng = rng.fork('cases');
    this.ledger.setBudget(tr.deviceMemory ?? null);
    this.ledger.takeOverflow();
    this.ledger.resetPeak();
    const { epochs, stepsPerEpoch, batchSize: batch } = tr;
    const maxSteps = tr.budget === 'steps' ? epochs * stepsPerEpoch : Infinity;
    const expectedSteps = tr.budget === 'voxels' ? Math.ceil(tr.budgetVoxels! / (batch * voxels(p.stepShape))) : maxSteps;
    const bar = new ProgressBar(`  train`, Number.isFinite(expectedSteps) ? expectedSteps : 0);
    let order: string[] = [];
    let epochLoss = 0;
    let voxelsSeen = 0;
    const trainStart = performance.now();
    let evalSeconds = 0;
    const trainingSeconds = (): number => (performance.now() - trainStart) / 1000 - evalSeconds;
    const done = (r: StepReport): boolean =>
      r.step + 1 >= maxSteps ||
      (tr.budget === 'voxels' && voxelsSeen >= tr.budgetVoxels!) ||
      (tr.budget === 'seconds' && trainingSeconds() >= tr.budgetSeconds!);
    // Learning-curve points: every curveEvery steps, or curvePoints evenly through the budget.
    const budgetTotal = tr.budget === 'voxels' ? tr.budgetVoxels! : tr.budget === 'seconds' ? tr.budgetSeconds! : epochs * stepsPerEpoch;
    let nextPoint = 1;
    let lastStep = false;
    const curveDue = (r: StepReport): boolean => {
      if (tr.curveEvery > 0) return (r.step + 1) % tr.curveEvery === 0;
      if (tr.curvePoints <= 1) return false;
      const progress = tr.budget === 'voxels' ? voxelsSeen : tr.budget === 'seconds' ? trainingSeconds() : r.step + 1;
      if (progress < (budgetTotal * nextPoint) / tr.curvePoints) return false;
      while (nextPoint < tr.curvePoints && progress >= (budgetTotal * nextPoint) / tr.curvePoints) nextPoint++;
      return true;
    };
    // One step's batch, as host arrays: what the strategy samples from the next cases.
    const nextBatch = async (): Promise<{ x: Float32Array; y: Float32Array; shape: Shape3 }> => {
      const samples = [];
      for (let b = 0; b < batch; b++) {
        if (order.length === 0) order = caseRng.shuffle([...p.train]);
        samples.push(strategy.sample(await prepare(order.pop()!), sampleRng, net));
      }
      const shape = samples[0]!.shape;
      if (samples.some((x) => shapeText(x.shape) !== shapeText(shape)))
        throw new Error(`batchSize ${batch}: the samples of one step differ in shape; use batchSize 1 or a patch strategy`);
      voxelsSeen += batch * voxels(shape);
      return { x: concat(samples.map((x) => x.image)), y: concat(samples.map((x) => x.target)), shape };
    };
    const afterStep = async (r: StepReport): Promise<void> => {
      onHost();
      epochLoss += r.loss;
      curve.loss(r.loss);
      bar.update(r.step + 1, `loss ${r.loss.toFixed(4)}`);
      // Decided once per step, before any validation pass, so that `stop` agrees with it.
      const last = (lastStep = done(r));
      if (!last && curveDue(r)) {
        const t0 = performance.now();
        // A validation pass: outside the training peak, still under the budget.
        const v = await this.ledger.outsidePeak(() => this.validate(p, trial, trained, () => {}));
        evalSeconds += (performance.now() - t0) / 1000;
        curve.point(r.step + 1, trainingSeconds(), voxelsSeen, v.seconds, v.perCase);
      }
      if ((r.step + 1) % stepsPerEpoch !== 0) return;
      const epoch = Math.floor(r.step / stepsPerEpoch);
      // Epochs are a logging unit under a voxel or time budget: about five lines per trial.
      const shownEpochs = Number.isFinite(expectedSteps) ? Math.ceil(expectedSteps / stepsPerEpoch) : epochs;
      if (epoch === shownEpochs - 1 || (epoch + 1) % Math.max(1, Math.ceil(shownEpochs / 5)) === 0)
        log(`  epoch ${epoch + 1}/${shownEpochs}: mean loss ${(epochLoss / stepsPerEpoch).toFixed(4)}`);
      epochLoss = 0;
    };
    let reports: StepReport[];
    let trainerPeak = 0;
    if (trainer) {
      // The strategy runs each step (its workers hold the parameters); the same budgets, curve and progress.
      reports = [];
      for (let step = 0; step < maxSteps; step++) {
        const b = await nextBatch();
        const t = await trainer.step({ x: b.x, y: b.y, batch, shape: b.shape, channels: dataset.channels.length, outChannels: K });
        trainerPeak = Math.max(trainerPeak, t.peakBytes);
        const report: StepReport = { step, loss: t.loss, seconds: t.seconds, stats: { ...TRAINER_STATS } };
        reports.push(report);
        await afterStep(report);
        if (lastStep) break;
      }
    } else {
      reports = await train(
        { net, params, optimizer, plan, loss: tr.loss, optimizerInBackward: tr.optimizerInBackward, executor },
        {
          steps: maxSteps,
          batch: async () => {
            const b = await nextBatch();
            return { x: tf.tensor(b.x, [batch, ...b.shape, dataset.channels.length]), y: tf.tensor(b.y, [batch, ...b.shape, K]) };
          },
          observer: (step) => this.observer(() => `train step ${step + 1}`),
          afterStep,
          stop: () => lastStep,
        },
      );
    }
    bar.done('', reports.length);
    row.train_seconds = trainingSeconds();
    row.curve_seconds = evalSeconds;
    row.step_seconds = medianStepSeconds(reports);
    // Per accelerator: a trainer's largest rank peak (the main thread holds no step).
    row.peak_train_bytes = trainer ? trainerPeak : this.ledger.peak;
    if (this.meter!.method === 'webgpu-buffers') row.pool_peak_train_bytes = this.ledger.poolPeak;
    row.final_loss = reports[reports.length - 1]?.loss ?? NaN;
    row.recompute_seconds = reports.reduce((s, r) => s + r.stats.recomputeSeconds, 0);
    row.steps = reports.length;
    row.voxels_seen = voxelsSeen;
    curve.end(reports.length, row.train_seconds, voxelsSeen);
  }

  /** Inference as the strategy runs it on each validation case; Dice and HD95 per region and case. */
  private async validate(
    p: TrialPlan,
    trial: TrialConfig,
    trained: TrainedTrial,
    onHost: () => void,
  ): Promise<{ perCase: { name: string; dice: number; hd95: number }[][]; cases: CaseResult[]; seconds: number }> {
    const { data, task, net, strategy, validation } = p;
    const cases: CaseResult[] = [];
    const t0 = performance.now();
    const perCase: { name: string; dice: number; hd95: number }[][] = [];
    for (const id of validation) {
      const v = await this.volume(data, id);
      const predict = this.predictor(trained.executor, net, await currentParams(trained), v.channels, () => `inference ${id}`);
      const probs = await strategy.infer({ image: v.image, shape: v.shape, channels: v.channels }, predict, net);
      onHost();
      const labels = probabilitiesToLabels(probs, v.shape, task, trial.training.threshold);
      const result = evaluateCase(labels, v.label!, task, v.shape, v.spacing);
      perCase.push(result);
      for (const r of result) cases.push({ case: id, region: r.name, dice: r.dice, hd95: r.hd95 });
    }
    return { perCase, cases, seconds: (performance.now() - t0) / 1000 };
  }

  /** Evaluate: the final validation pass (the learning curve's last point), measured on its own. */
  private async evaluateTrial(p: TrialPlan, trial: TrialConfig, trained: TrainedTrial, row: TrialRow, onHost: () => void, curve: CurveWriter): Promise<CaseResult[]> {
    this.ledger.resetPeak();
    const takePeak = trained.trainer?.takeInferencePeak?.bind(trained.trainer);
    takePeak?.();
    const v = await this.validate(p, trial, trained, onHost);
    row.infer_seconds = v.seconds;
    // Per accelerator: where a trainer's devices ran inference, their largest peak.
    row.peak_infer_bytes = takePeak ? takePeak() : this.ledger.peak;
    row.validation_cases = p.validation.length;
    Object.assign(row, aggregateCaseMetrics(v.perCase));
    curve.final(v.seconds, v.perCase);
    return v.cases;
  }

  /** Record: the strategy's own columns (with their meanings, for the summary's legend). */
  private recordStrategy(strategy: MemoryStrategy, row: TrialRow): void {
    const columns: StrategyColumn[] = strategy.report?.() ?? [];
    for (const c of columns) row[c.name] = c.value;
    if (columns.length) row.strategy_columns = JSON.stringify(Object.fromEntries(columns.map((c) => [c.name, c.meaning])));
  }

  /** Record: the trained weights and the plan to rebuild them. */
  private async recordModel(exp: Experiment, trial: TrialConfig, p: TrialPlan, params: Params, modelsDir: string, row: TrialRow): Promise<void> {
    const dir = join(modelsDir, `trial-${trial.trial}-${row.trial_id}`);
    await saveModel(
      dir,
      {
        experiment: exp.name,
        trial: trial.trial,
        architecture: trial.architecture,
        network: { inChannels: p.data.dataset.channels.length, outChannels: p.K, activation: p.activation },
        dataset: trial.dataset,
        channels: p.data.dataset.channels,
        task: p.task,
        strategy: trial.strategy,
        threshold: trial.training.threshold,
      },
      params,
    );
    row.model = dir;
  }

  /** One trial: plan → train → evaluate → record; never throws (a failure is the row's status). The model goes under `modelsDir`. */
  async runTrial(
    exp: Experiment,
    trial: TrialConfig,
    modelsDir: string,
    log: (l: string) => void,
    onCurve: (row: CurveRow) => void = () => {},
    id?: string,
  ): Promise<{ row: TrialRow; cases: CaseResult[] }> {
    const tr = trial.training;
    const row = this.baseRow(exp, trial, id ?? (await this.trialId(exp, trial)), this.backendInfo!.label, this.strategyColumns);
    let cases: CaseResult[] = [];
    let strategy: MemoryStrategy | null = null;
    let trained: TrainedTrial | null = null;
    // The optimizer (its state holds nothing until the first step) lives until the trial ends.
    const optimizer = new Adam({ learningRate: tr.learningRate });
    // The native kernels' cache of freed output memory is resident but holds no tensor: not counted.
    const rss = (): number => process.memoryUsage().rss - (bufferCache()?.cachedBytes ?? 0);
    const hostPeak = { rss: rss() };
    const onHost = (): void => {
      hostPeak.rss = Math.max(hostPeak.rss, rss());
    };
    tf.engine().startScope();
    try {
      // Every row of an experiment has the task's metric columns, empty where a trial has no value.
      const { dataset } = await this.loadData(trial, join(exp.file, '..'));
      this.datasetColumns(row, dataset);
      const p = await this.planTrial(exp, trial);
      strategy = p.strategy;
      row.params = parameterCount(p.net);
      row.volume_shape = shapeText(p.caseShape);
      row.input_shape = shapeText(p.stepShape);
      row.est_peak_train_bytes = p.estimate.peak;
      row.budget = budgetText(tr);
      const curve = new CurveWriter(trial, String(row.trial_id), tr.curveEvery > 0 || tr.curvePoints > 0 ? onCurve : null);
      // The meter is named before training: a did-not-fit row's peak is its measurement too.
      row.meter = this.meter!.method;
      trained = await this.startTraining(p, trial);
      await this.trainTrial(p, trial, row, log, onHost, optimizer, curve, trained);
      this.recordStrategy(strategy, row);
      if (tr.evaluate) cases = await this.evaluateTrial(p, trial, trained, row, onHost, curve);
      if (tr.saveModel) await this.recordModel(exp, trial, p, await currentParams(trained), modelsDir, row);
    } catch (e) {
      if (e instanceof DeviceOutOfMemoryError) {
        row.status = 'did-not-fit';
        // What it held when it stopped (above the budget), in the column of the phase that stopped.
        // (A worker rank's error carries its own ledger's bytes: `live`.)
        row[row.train_seconds === undefined ? 'peak_train_bytes' : 'peak_infer_bytes'] = e.live ?? this.ledger.peak;
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
      optimizer.dispose();
      await trained?.trainer?.dispose();
      await strategy?.dispose?.();
      // Everything the trial made (params, and whatever a failed step left) goes with the scope.
      tf.engine().endScope();
      row.rss_peak_bytes = hostPeak.rss;
    }
    return { row, cases };
  }

  /** The columns the data set gives every row: the task's metric columns (empty until measured) and the unit of its spacing (HD95's). */
  private datasetColumns(row: TrialRow, dataset: Dataset): void {
    for (const c of regionColumns(dataset.task)) row[c] ??= null;
    row.spacing_unit = dataset.spacingUnit ?? 'mm';
  }

  /** A trial's row before it runs: what identifies it, its settings as they take effect, every column of the sweep (empty). */
  private baseRow(exp: Experiment, trial: TrialConfig, id: string, backend: string | null, strategyColumns: string[]): TrialRow {
    const tr = trial.training;
    return {
      trial: trial.trial,
      trial_id: id,
      experiment: exp.name,
      strategy: trial.strategy.name,
      architecture: trial.architecture.name,
      dataset: trial.dataset.name,
      input_shape: null,
      seed: trial.seed,
      backend,
      epochs: tr.epochs,
      status: 'ok',
      settings: JSON.stringify({
        label: trial.label,
        // Each plugin's settings as they take effect (Plugin.effective), e.g. me-fcn's `all` as its flags.
        dataset: effectiveChoice(this.catalog.dataset(trial.dataset.name), trial.dataset),
        architecture: effectiveChoice(this.catalog.architecture(trial.architecture.name), trial.architecture),
        strategy: effectiveChoice(this.catalog.strategy(trial.strategy.name), trial.strategy),
        training: tr,
        comparison: exp.comparison,
        profile: exp.profile ?? null,
      }),
      started_at: new Date().toISOString(),
      host_peak_bytes: 0,
      ...Object.fromEntries([...RUNNER_COLUMNS, ...strategyColumns].map((c) => [c, null])),
    };
  }

  private predictor(executor: Executor, net: Network, params: Params, channels: number, label: () => string): WindowPredictor {
    return windowPredictor(executor, net, params, channels, this.observer(label));
  }
}

/** A trial's outcome in one line: status, mean Dice, peaks and step time. */
export function trialOutcome(row: TrialRow): string {
  return `${row.status}; dice_mean ${fmt(row.dice_mean)}; peak train ${fmtBytes(row.peak_train_bytes)}, infer ${fmtBytes(row.peak_infer_bytes)}; step ${fmt(row.step_seconds)} s`;
}

/** A plugin choice with its settings as they take effect. */
function effectiveChoice(plugin: { effective?(s: never): unknown }, choice: { name: string; settings: Record<string, unknown> }): { name: string; settings: unknown } {
  return { name: choice.name, settings: plugin.effective ? (plugin.effective as (s: unknown) => unknown)(choice.settings) : choice.settings };
}

/** `t` and 15 hex digits of the hash of a trial's resolved configuration and its data's identity. */
export function trialIdOf(t: Pick<TrialConfig, 'dataset' | 'architecture' | 'strategy' | 'training'>, data: string | undefined): string {
  const text = stableStringify({ dataset: t.dataset, architecture: t.architecture, strategy: t.strategy, training: t.training, data: data ?? null });
  return `t${createHash('sha256').update(text).digest('hex').slice(0, 15)}`;
}

/** What a trial's budget is, as the summary shows it: `steps 160`, `voxels 1.77e7`, `seconds 60`. */
function budgetText(tr: TrialConfig['training']): string {
  if (tr.budget === 'voxels') return `voxels ${tr.budgetVoxels}`;
  if (tr.budget === 'seconds') return `seconds ${tr.budgetSeconds}`;
  return `steps ${tr.epochs * tr.stepsPerEpoch}`;
}

/**
 * The learning curve of one trial: each point is written (curves.csv) as soon as it is measured. The
 * loss of a point is the mean training loss over the steps since the previous point; the last point is
 * the final evaluation, so it is never evaluated twice.
 */
class CurveWriter {
  private losses: number[] = [];
  private end_: { step: number; seconds: number; voxels: number } | null = null;

  constructor(
    private readonly trial: TrialConfig,
    private readonly id: string,
    private readonly write: ((row: CurveRow) => void) | null,
  ) {}

  loss(value: number): void {
    this.losses.push(value);
  }

  point(step: number, trainSeconds: number, voxelsSeen: number, evalSeconds: number, perCase: { name: string; dice: number; hd95: number }[][]): void {
    if (!this.write) return;
    const m = aggregateCaseMetrics(perCase);
    const dice = Object.fromEntries(Object.entries(m).filter(([k]) => k.startsWith('dice_')));
    const loss = this.losses.length ? this.losses.reduce((a, b) => a + b, 0) / this.losses.length : NaN;
    this.losses = [];
    this.write({
      trial: this.trial.trial,
      trial_id: this.id,
      strategy: this.trial.strategy.name,
      seed: this.trial.seed,
      step,
      train_seconds: trainSeconds,
      voxels_seen: voxelsSeen,
      loss,
      eval_seconds: evalSeconds,
      ...dice,
    });
  }

  /** Training ended after `step` steps (the final evaluation, if any, is the last point). */
  end(step: number, trainSeconds: number, voxelsSeen: number): void {
    this.end_ = { step, seconds: trainSeconds, voxels: voxelsSeen };
  }

  final(evalSeconds: number, perCase: { name: string; dice: number; hd95: number }[][]): void {
    if (this.end_) this.point(this.end_.step, this.end_.seconds, this.end_.voxels, evalSeconds, perCase);
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
