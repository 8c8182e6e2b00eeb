/**
 * Where the owned training step's time goes, for `npm run bench`: the same unet3d step as the step rows
 * (forward, loss, owned backward, Adam inside backward), run a few times with every cpu kernel timed
 * (wall time per call, summed by kernel name; a GC pause that starts inside a call counts there too),
 * the main thread's garbage-collection pauses (perf_hooks 'gc' entries), and the rest: JavaScript outside
 * any kernel (the executor, the loss's and Adam's calls into the addon, bookkeeping). Convolution kernels
 * also get GFLOP/s from their shapes. This is the record behind "what limits the step"
 * (results/bench/bench.json, `profile`).
 */
import * as tf from '@tensorflow/tfjs-core';
import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { Executor } from '../../core/engine/index.js';
import { Adam, initParams, trainingStep, type TrainingSetup } from '../../core/training/index.js';
import { measuredFmaPeak } from './bench-kernels.js';
import { benchStep, type StepConfig } from './bench-step.js';

export interface KernelTime {
  kernel: string;
  /** Wall time per step, ms. */
  msPerStep: number;
  callsPerStep: number;
  /** Convolutions: achieved GFLOP/s over all their calls; null for the rest. */
  gflops: number | null;
}

export interface StepProfile {
  step: string;
  steps: number;
  /**
   * Per step, ms: the whole step; inside kernels (less any GC pause that started in one); main-thread GC
   * pauses (wherever they started); and the rest.
   */
  wallMs: number;
  kernelMs: number;
  gcMs: number;
  otherMs: number;
  /** The FMA peak measured before and after the profiled steps (mean), GFLOP/s; null without the addon. */
  fmaPeak: number | null;
  kernels: KernelTime[];
  /**
   * The convolutions by layer shape: one entry per (kernel, input shape, filter shape, strides), slowest
   * first, so that the weakest layers can be named. Absent in records made before it was added.
   */
  convShapes?: ConvShapeTime[];
}

export interface ConvShapeTime {
  kernel: string;
  /** The forward's input x as [d, h, w, ci] (batch 1), the filter as [kd, kh, kw, ci, co]. */
  x: number[];
  filter: number[];
  strides: number[];
  msPerStep: number;
  callsPerStep: number;
  gflops: number;
}

const CONV = new Set(['Conv3D', 'Conv3DBackpropInputV2', 'Conv3DBackpropFilterV2']);

/** A convolution call's forward shapes: x (batch dropped), filter and strides, whichever gradient it is. */
function convShape(kernel: string, inputs: Record<string, tf.TensorInfo>, attrs: Record<string, unknown>): { x: number[]; filter: number[]; strides: number[] } {
  const filter = kernel === 'Conv3DBackpropFilterV2' ? (attrs.filterShape as number[]) : [...inputs.filter!.shape];
  const x = kernel === 'Conv3DBackpropInputV2' ? (attrs.inputShape as number[]) : [...inputs.x!.shape];
  const strides = (attrs.strides as number[] | undefined) ?? [1, 1, 1, 1, 1];
  return { x: x.slice(1), filter, strides: strides.length === 5 ? strides.slice(1, 4) : strides };
}

/** 2·(output positions·Co)·k³·Ci of a convolution call: the forward's y, or the gradients' dy. */
function convFlops(kernel: string, filter: number[], inputs: Record<string, tf.TensorInfo>, out: tf.TensorInfo): number {
  const [kd, kh, kw, ci] = filter;
  const y = kernel === 'Conv3D' ? out : inputs.dy!;
  return 2 * y.shape.reduce((a, b) => a * b, 1) * kd! * kh! * kw! * ci!;
}

export async function profileStep(cfg: StepConfig, steps: number, log: (line: string) => void): Promise<StepProfile> {
  const { net, x, y } = benchStep(cfg);
  const setup: TrainingSetup = { net, params: initParams(net, 0), optimizer: new Adam({ learningRate: 1e-3 }), plan: {}, loss: 'dice+ce', optimizerInBackward: true };
  const executor = new Executor(net);
  const totals = new Map<string, { ms: number; calls: number }>();
  const byShape = new Map<string, { kernel: string; x: number[]; filter: number[]; strides: number[]; ms: number; calls: number; flops: number }>();
  let timing = false;
  // [start, end] of every timed kernel call, in order: a GC pause can start inside one (an output's
  // allocation), and is then taken out of the kernels' time.
  const calls: number[] = [];
  const restore: (() => void)[] = [];
  for (const k of tf.getKernelsForBackend('cpu')) {
    const f = k.kernelFunc;
    const config = k as { kernelFunc: tf.KernelFunc };
    config.kernelFunc = (args) => {
      if (!timing) return f(args);
      const t0 = performance.now();
      const r = f(args);
      const t1 = performance.now();
      const dt = t1 - t0;
      calls.push(t0, t1);
      const e = totals.get(k.kernelName) ?? { ms: 0, calls: 0 };
      e.ms += dt;
      e.calls++;
      if (CONV.has(k.kernelName)) {
        const inputs = args.inputs as Record<string, tf.TensorInfo>;
        const shape = convShape(k.kernelName, inputs, args.attrs as Record<string, unknown>);
        const key = `${k.kernelName} ${shape.x} ${shape.filter} ${shape.strides}`;
        const s = byShape.get(key) ?? { kernel: k.kernelName, ...shape, ms: 0, calls: 0, flops: 0 };
        s.ms += dt;
        s.calls++;
        s.flops += convFlops(k.kernelName, shape.filter, inputs, (Array.isArray(r) ? r[0] : r) as tf.TensorInfo);
        byShape.set(key, s);
      }
      totals.set(k.kernelName, e);
      return r;
    };
    restore.push(() => void (config.kernelFunc = f));
  }
  const gc: PerformanceEntry[] = [];
  const observer = new PerformanceObserver((list) => gc.push(...list.getEntries()));
  observer.observe({ entryTypes: ['gc'] });
  try {
    for (let i = 0; i < 2; i++) await trainingStep(setup, executor, { x, y, owned: false });
    const p0 = measuredFmaPeak(0.2);
    timing = true;
    const start = performance.now();
    for (let i = 0; i < steps; i++) await trainingStep(setup, executor, { x, y, owned: false });
    const end = performance.now();
    timing = false;
    const p1 = measuredFmaPeak(0.2);
    await new Promise((resolve) => setTimeout(resolve, 50)); // the observer's entries arrive later, on a timer turn of the event loop
    const pauses = gc.filter((e) => e.startTime >= start && e.startTime < end);
    const gcMs = pauses.reduce((a, e) => a + e.duration, 0) / steps;
    let gcInKernels = 0;
    for (const e of pauses)
      for (let i = 0; i < calls.length; i += 2)
        gcInKernels += Math.max(0, Math.min(calls[i + 1]!, e.startTime + e.duration) - Math.max(calls[i]!, e.startTime));
    const wallMs = (end - start) / steps;
    const kernelMs = ([...totals.values()].reduce((a, e) => a + e.ms, 0) - gcInKernels) / steps;
    // A convolution kernel's FLOPs: the sum over its shapes.
    const convFlopsOf = new Map<string, number>();
    for (const s of byShape.values()) convFlopsOf.set(s.kernel, (convFlopsOf.get(s.kernel) ?? 0) + s.flops);
    const kernels = [...totals.entries()]
      .map(([kernel, e]): KernelTime => {
        const flops = convFlopsOf.get(kernel);
        return { kernel, msPerStep: e.ms / steps, callsPerStep: e.calls / steps, gflops: flops ? flops / (e.ms * 1e6) : null };
      })
      .sort((a, b) => b.msPerStep - a.msPerStep);
    const profile: StepProfile = {
      step: `unet3d b${cfg.base} d${cfg.depth}, 1x${cfg.edge}x${cfg.edge}x${cfg.edge}x4, full-volume`,
      steps,
      wallMs,
      kernelMs,
      gcMs,
      otherMs: wallMs - kernelMs - gcMs,
      fmaPeak: p0 === null || p1 === null ? null : (p0 + p1) / 2,
      kernels,
      convShapes: [...byShape.values()]
        .map((e): ConvShapeTime => ({ kernel: e.kernel, x: e.x, filter: e.filter, strides: e.strides, msPerStep: e.ms / steps, callsPerStep: e.calls / steps, gflops: e.flops / (e.ms * 1e6) }))
        .sort((a, b) => b.msPerStep - a.msPerStep),
    };
    log(`  profiled ${steps} owned steps: ${wallMs.toFixed(0)} ms a step, ${kernelMs.toFixed(0)} in kernels, ${gcMs.toFixed(0)} in GC pauses, ${profile.otherMs.toFixed(0)} else`);
    return profile;
  } finally {
    timing = false;
    observer.disconnect();
    for (const r of restore) r();
    setup.optimizer.dispose();
    for (const p of setup.params.values()) p.dispose();
    tf.dispose([x, y]);
  }
}
