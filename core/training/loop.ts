/**
 * The training loop, one for every caller (the experiment runner, the step benchmark, the tests): each
 * step runs forward, the loss, the backward pass the plan asks for (the owned one, or tf.grads) and Adam,
 * either inside backward as each parameter's gradient becomes final or after backward.
 */
import type { Tensor } from '@tensorflow/tfjs-core';
import { Executor, type StepObserver, type StepStats, type Network, type StepPlan } from '../engine/index.js';
import { stepLoss, type LossKind } from './loss.js';
import type { Adam, Params } from './optimizer.js';

/** What one step trains on: the input [N, D, H, W, C] and the targets [N, D, H, W, K]. */
export interface StepBatch {
  x: Tensor;
  y: Tensor;
  /** The loop disposes x and y after the step (default true; false for a batch reused every step). */
  owned?: boolean;
}

/** The step that the loop repeats. */
export interface TrainingSetup {
  net: Network;
  params: Params;
  optimizer: Adam;
  plan: StepPlan;
  loss: LossKind;
  /** Adam updates each parameter inside backward, as soon as its gradient is final (same arithmetic). */
  optimizerInBackward: boolean;
  /** The executor to run on (default: a new one for `net`; one executor keeps its schedules). */
  executor?: Executor;
}

export interface StepReport {
  /** 0-based. */
  step: number;
  loss: number;
  /** Wall-clock seconds of the step (forward, backward, optimizer), the batch's making excluded. */
  seconds: number;
  stats: StepStats;
}

export interface TrainingRun {
  /** The most steps to run (Infinity: until `stop` says so). */
  steps: number;
  /** After each step: true ends training there (a voxel or time budget reached). */
  stop?(report: StepReport): boolean;
  /** The batch of step `step`. */
  batch(step: number): StepBatch | Promise<StepBatch>;
  /** The observer of step `step` (the memory meter names the operation with it). */
  observer?(step: number): StepObserver | undefined;
  /** Just before step `step` runs (its batch is made). */
  beforeStep?(step: number): void;
  /** After each step; a returned promise is awaited before the next (e.g. a validation pass). */
  afterStep?(report: StepReport): void | Promise<void>;
}

/** One training step: the batch's loss, gradients, and Adam's update of `setup.params`. */
export async function trainingStep(setup: TrainingSetup, executor: Executor, batch: StepBatch, observer?: StepObserver): Promise<{ loss: number; stats: StepStats }> {
  const { net, params, optimizer, plan } = setup;
  const loss = stepLoss(batch.y, setup.loss, net.activation, net);
  if (setup.optimizerInBackward) {
    optimizer.begin();
    const r = await executor.trainStep(batch.x, params, loss, plan, observer, (name, g) => optimizer.update(params, name, g));
    return { loss: r.loss, stats: r.stats };
  }
  const r = await executor.trainStep(batch.x, params, loss, plan, observer);
  optimizer.step(params, r.grads);
  return { loss: r.loss, stats: r.stats };
}

/** Runs training steps until `run.steps` or `run.stop`; returns every step's report. */
export async function train(setup: TrainingSetup, run: TrainingRun): Promise<StepReport[]> {
  const executor = setup.executor ?? new Executor(setup.net);
  const reports: StepReport[] = [];
  for (let step = 0; step < run.steps; step++) {
    const batch = await run.batch(step);
    run.beforeStep?.(step);
    const t0 = performance.now();
    try {
      const r = await trainingStep(setup, executor, batch, run.observer?.(step));
      const report = { step, loss: r.loss, seconds: (performance.now() - t0) / 1000, stats: r.stats };
      reports.push(report);
    } finally {
      if (batch.owned !== false) {
        batch.x.dispose();
        batch.y.dispose();
      }
    }
    const last = reports[reports.length - 1]!;
    await run.afterStep?.(last);
    if (run.stop?.(last)) break;
  }
  return reports;
}

/** Median of the step times after the first (warm-up) step; the only step if there is one. */
export function medianStepSeconds(reports: StepReport[]): number {
  const t = (reports.length > 1 ? reports.slice(1) : reports).map((r) => r.seconds).sort((a, b) => a - b);
  const m = t.length >> 1;
  return t.length % 2 ? t[m]! : (t[m - 1]! + t[m]!) / 2;
}
