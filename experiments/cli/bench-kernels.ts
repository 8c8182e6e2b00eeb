/**
 * Kernel benchmark rows: the conv3d kernels and their backprops, pooling, instance norm,
 * up-sampling and element-wise ops, each timed through tfjs's engine (tf.engine().runKernel) with
 * the native kernels registered ('cpu+native') and, on small shapes, with tfjs's JavaScript
 * kernels ('cpu'). Conv rows report GFLOP/s against the analytic count
 * 2·N·Do·Ho·Wo·Cout·fd·fh·fw·Cin (the same count for each backprop).
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { readFileSync } from 'node:fs';
import { median as mathMedian } from 'mathjs';
import os from 'node:os';
import { nativeAddon, nativeStatus, originalKernel, registerNativeKernels, setNativeKernelsEnabled, type NativeStatus } from '../../core/backend/index.js';

/** One benchmark row (kernel rows have strategy null; training-step rows name their strategy). */
export interface BenchRow {
  name: string;
  shape: string;
  strategy: string | null;
  backend: string;
  /** Median wall time of one call, milliseconds. */
  ms: number;
  /** Achieved GFLOP/s against the analytic FLOP count, or null where no FLOP count applies. */
  gflops: number | null;
  /** Fastest and slowest of the timed repeats, ms (step rows). */
  spreadMs?: [number, number];
  /** Measured device peak of the step, bytes (step rows). */
  peakBytes?: number;
  /** What the row is (the plan, its budget, its ratio to the owned step). */
  note?: string;
  /**
   * Step rows: the median over this row's timed steps of each over the owned step timed just before it,
   * and its range (the machine's drift cancels in each pair). Absent for the owned row itself.
   */
  pairedRatio?: { median: number; min: number; max: number };
  /**
   * Step rows: the median over this row's timed steps of its GFLOP/s over the FMA peak of its round (the
   * mean of a probe before the round and one after: a shared machine's throughput moves during a run;
   * this compares the step with the machine it ran on).
   */
  roundPeakShare?: number;
  /**
   * Step rows: the median over this row's timed steps of its GFLOP/s over the FMA peak measured around that
   * step (the mean of a short probe just before it and one just after).
   */
  stepPeakShare?: number;
  /** Step rows: every timed step, ms, in order (the raw data the median, range and ratios come from). */
  times?: number[];
  /** Step rows: the round of each timed step. */
  timesRounds?: number[];
  /** Step rows but the owned one: the owned step timed just before each of this row's timed steps, ms. */
  pairedOwnedTimes?: number[];
  /** Step rows: the FMA peak measured around each round, GFLOP/s (null without the addon). */
  roundPeaks?: (number | null)[];
  /** Step rows: the FMA peak measured around each timed step, GFLOP/s (null without the addon). */
  stepPeaks?: (number | null)[];
}

export interface BenchOptions {
  /** Timed repeats per row (after warm-up); the median is reported. */
  repeats: number;
  /** Fewer, smaller shapes. */
  quick: boolean;
  /** Progress lines (stderr when stdout carries JSON). */
  log?: (line: string) => void;
}

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  ghz: number;
  /** cores × GHz × 2 FMA units × 8 fp32 lanes (AVX2) × 2 flops per FMA. */
  fmaPeakGflops: number;
  peakFormula: string;
  native: NativeStatus;
}

/**
 * Measured AVX2 FMA throughput of all native pool threads (12 independent FMA chains per
 * thread, ~0.2 s), or null without the addon. On shared/virtual machines this moves with the
 * host's load and turbo clock, so benchmarks print it next to the nominal estimate.
 */
export function measuredFmaPeak(seconds = 0.2): number | null {
  const a = nativeAddon();
  if (!a || !nativeStatus().loaded) return null;
  return a.fmaPeak(seconds);
}

/** The convolution micro-kernel's in-cache ceiling (measuredTileCeiling). */
export interface TileCeiling {
  /** The tile: output positions × vectors of output channels, and the code path. */
  tile: string;
  /** Median over the rounds, GFLOP/s. */
  gflops: number;
  /** Median over the rounds of the tile's GFLOP/s over the FMA peak measured just before and just after it. */
  share: number;
  /** Each round's share. */
  shares: number[];
}

/**
 * What the convolution micro-kernel itself reaches with its data in cache, beside the FMA peak: the tile
 * that the interior of a 3×3×3, 16 → 16 channel layer's rows uses (the layers the 64³ step spends most in)
 * runs on one tile's inputs and filter, repeated (the addon's tilePeak), between two FMA probes, `rounds`
 * times. Its share of the FMA peak is the ceiling the convolutions' own loads and broadcasts set, with no
 * cache misses, zero-padded strips or scheduling; null without the addon.
 */
export function measuredTileCeiling(rounds = 5, seconds = 0.2): TileCeiling | null {
  const a = nativeAddon();
  if (!a || !nativeStatus().loaded) return null;
  const gflops: number[] = [];
  const shares: number[] = [];
  let tile = '';
  for (let r = 0; r < rounds; r++) {
    const before = a.fmaPeak(seconds);
    const t = a.tilePeak(seconds);
    const after = a.fmaPeak(seconds);
    gflops.push(t.gflops);
    shares.push(t.gflops / ((before + after) / 2));
    tile = `${t.positions} positions × ${t.vectors} vector${t.vectors === 1 ? '' : 's'} of ${t.lanes} channels (${nativeStatus().simd})`;
  }
  return { tile, gflops: median(gflops), share: median(shares), shares: shares.map((s) => Math.round(s * 1000) / 1000) };
}

export function machineInfo(): MachineInfo {
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  let ghz = (os.cpus()[0]?.speed ?? 0) / 1000;
  try {
    const text = readFileSync('/proc/cpuinfo', 'utf8');
    const model = /^model name\s*:\s*(.+)$/m.exec(text);
    if (model) cpuModel = model[1].trim();
    const mhz = /^cpu MHz\s*:\s*([\d.]+)$/m.exec(text);
    if (mhz) ghz = Number(mhz[1]) / 1000;
  } catch {
    // not Linux: keep os.cpus()
  }
  const cores = os.cpus().length;
  const fmaPeakGflops = cores * ghz * 2 * 8 * 2;
  return {
    cpuModel,
    cores,
    ghz,
    fmaPeakGflops,
    peakFormula: `${cores} cores × ${ghz.toFixed(2)} GHz (cpu MHz in /proc/cpuinfo) × 2 FMA units × 8 fp32 lanes × 2 flops = ${fmaPeakGflops.toFixed(0)} GFLOP/s`,
    native: nativeStatus(),
  };
}

type Inputs = Record<string, tf.Tensor>;

interface Case {
  name: string;
  shape: string;
  kernel: string;
  inputs: () => Inputs;
  attrs: Record<string, unknown>;
  flops: number | null;
  /** Also time tfjs's JavaScript kernel (small shapes only). */
  js: boolean;
}

/** The median of the timings (mathjs: the mean of the middle two for an even count). */
export const median = (v: number[]): number => Number(mathMedian(v));

function runOnce(kernel: string, inputs: Inputs, attrs: Record<string, unknown>): number {
  const t0 = performance.now();
  const out = tf.engine().runKernel(kernel, inputs as unknown as tf.NamedTensorMap, attrs as tf.NamedAttrMap);
  const t1 = performance.now();
  tf.dispose(out as tf.Tensor | tf.Tensor[]);
  return t1 - t0;
}

function timeCase(c: Case, inputs: Inputs, repeats: number, warmup: number): number {
  for (let i = 0; i < warmup; i++) runOnce(c.kernel, inputs, c.attrs);
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) times.push(runOnce(c.kernel, inputs, c.attrs));
  return median(times);
}

type V3 = [number, number, number];
const fmtShape = (s: number[]) => s.join('x');

function convCases(n: number, sp: V3, ci: number, co: number, k: number, stride: number, js: boolean): Case[] {
  const pad = 'same';
  const xShape: [number, number, number, number, number] = [n, ...sp, ci];
  const wShape: [number, number, number, number, number] = [k, k, k, ci, co];
  const out = sp.map((d) => Math.ceil(d / stride)) as V3;
  const yShape: [number, number, number, number, number] = [n, ...out, co];
  const flops = 2 * n * out[0] * out[1] * out[2] * co * k * k * k * ci;
  const label = `${fmtShape([n, ...sp])}x${ci}->${co} k${k} s${stride}`;
  const rnd = (s: number[]) => tf.randomUniform(s, -1, 1, 'float32');
  return [
    {
      name: 'Conv3D',
      shape: label,
      kernel: 'Conv3D',
      inputs: () => ({ x: rnd(xShape), filter: rnd(wShape) }),
      attrs: { strides: [stride, stride, stride], pad, dataFormat: 'NDHWC', dilations: [1, 1, 1] },
      flops,
      js,
    },
    {
      name: 'Conv3DBackpropInputV2',
      shape: label,
      kernel: 'Conv3DBackpropInputV2',
      inputs: () => ({ dy: rnd(yShape), filter: rnd(wShape) }),
      attrs: { strides: [stride, stride, stride], pad, inputShape: xShape },
      flops,
      js,
    },
    {
      name: 'Conv3DBackpropFilterV2',
      shape: label,
      kernel: 'Conv3DBackpropFilterV2',
      inputs: () => ({ x: rnd(xShape), dy: rnd(yShape) }),
      attrs: { strides: [stride, stride, stride], pad, filterShape: wShape },
      flops,
      js,
    },
  ];
}

function otherCases(n: number, sp: V3, c: number, js: boolean): Case[] {
  const xShape = [n, ...sp, c];
  const half = sp.map((d) => Math.ceil(d / 2));
  const yShape = [n, ...half, c];
  const label = fmtShape(xShape);
  const rnd = (s: number[]) => tf.randomUniform(s, -1, 1, 'float32');
  const poolAttrs = { filterSize: [2, 2, 2], strides: [2, 2, 2], pad: 'same', dimRoundingMode: undefined, dataFormat: 'NDHWC' };
  const cases: Case[] = [
    { name: 'MaxPool3D 2x2x2 s2', shape: label, kernel: 'MaxPool3D', inputs: () => ({ x: rnd(xShape) }), attrs: poolAttrs, flops: null, js },
    {
      name: 'MaxPool3DGrad 2x2x2 s2', shape: label, kernel: 'MaxPool3DGrad',
      inputs: () => {
        const input = rnd(xShape);
        return { dy: rnd(yShape), input, output: tf.maxPool3d(input as tf.Tensor5D, 2, 2, 'same') };
      },
      attrs: poolAttrs, flops: null, js,
    },
    { name: 'AvgPool3D 2x2x2 s2', shape: label, kernel: 'AvgPool3D', inputs: () => ({ x: rnd(xShape) }), attrs: poolAttrs, flops: null, js },
    { name: 'AvgPool3DGrad 2x2x2 s2', shape: label, kernel: 'AvgPool3DGrad', inputs: () => ({ dy: rnd(yShape), input: rnd(xShape) }), attrs: poolAttrs, flops: null, js },
    {
      name: 'VolInstanceNormForward', shape: label, kernel: 'VolInstanceNormForward',
      inputs: () => ({ x: rnd(xShape), gamma: rnd([c]), beta: rnd([c]) }),
      attrs: { epsilon: 1e-5, alpha: 0.01 }, flops: null, js,
    },
    {
      name: 'VolInstanceNormBackward', shape: label, kernel: 'VolInstanceNormBackward',
      inputs: () => ({ dy: rnd(xShape), xhat: rnd(xShape), invStd: rnd([n, c]), gamma: rnd([c]), beta: rnd([c]) }),
      attrs: { alpha: 0.01 }, flops: null, js,
    },
    {
      name: 'VolUpsampleNearest3D x2', shape: fmtShape(yShape), kernel: 'VolUpsampleNearest3D',
      inputs: () => ({ x: rnd(yShape) }), attrs: { factor: 2 }, flops: null, js,
    },
    {
      name: 'VolUpsampleNearest3DGrad x2', shape: fmtShape(yShape), kernel: 'VolUpsampleNearest3DGrad',
      inputs: () => ({ dy: rnd([n, ...half.map((d) => d * 2), c]) }), attrs: { factor: 2 }, flops: null, js,
    },
    { name: 'Add', shape: label, kernel: 'Add', inputs: () => ({ a: rnd(xShape), b: rnd(xShape) }), attrs: {}, flops: null, js },
    { name: 'Multiply', shape: label, kernel: 'Multiply', inputs: () => ({ a: rnd(xShape), b: rnd(xShape) }), attrs: {}, flops: null, js },
    { name: 'LeakyRelu', shape: label, kernel: 'LeakyRelu', inputs: () => ({ x: rnd(xShape) }), attrs: { alpha: 0.01 }, flops: null, js },
    {
      name: 'Add (bias, broadcast)', shape: `${label} + ${c}`, kernel: 'Add',
      inputs: () => ({ a: rnd(xShape), b: rnd([c]) }), attrs: {}, flops: null, js,
    },
    {
      name: 'Concat (channels)', shape: `2 x ${label}`, kernel: 'Concat',
      inputs: () => [rnd(xShape), rnd(xShape)] as unknown as Inputs, attrs: { axis: 4 }, flops: null, js,
    },
    {
      name: 'SplitV (channels, concat grad)', shape: fmtShape([n, ...sp, 2 * c]), kernel: 'SplitV',
      inputs: () => ({ x: rnd([n, ...sp, 2 * c]) }), attrs: { numOrSizeSplits: [c, c], axis: 4 }, flops: null, js,
    },
    {
      name: 'Sum (over space)', shape: label, kernel: 'Sum',
      inputs: () => ({ x: rnd(xShape) }), attrs: { axis: [1, 2, 3], keepDims: false }, flops: null, js,
    },
    {
      name: 'Softmax (channels)', shape: label, kernel: 'Softmax',
      inputs: () => ({ logits: rnd(xShape) }), attrs: { dim: -1 }, flops: null, js,
    },
  ];
  return cases;
}

/** The kernel rows. Registers the native kernels if they are not yet. */
export async function kernelBenchRows(opts: BenchOptions): Promise<BenchRow[]> {
  const log = opts.log ?? (() => {});
  await tf.setBackend('cpu');
  await tf.ready();
  const status = registerNativeKernels();
  if (!status.loaded) log(`native kernels not loaded (${status.reason}); timing tfjs's JavaScript kernels only`);

  const cases: Case[] = [];
  if (opts.quick) {
    cases.push(...convCases(1, [32, 32, 32], 16, 16, 3, 1, false));
    cases.push(...convCases(1, [16, 16, 16], 32, 32, 3, 1, false));
    cases.push(...convCases(1, [12, 12, 12], 8, 8, 3, 1, true));
    cases.push(...otherCases(1, [32, 32, 32], 16, false));
    cases.push(...otherCases(1, [16, 16, 16], 8, true));
  } else {
    cases.push(...convCases(1, [64, 64, 64], 16, 16, 3, 1, false));
    cases.push(...convCases(1, [32, 32, 32], 32, 32, 3, 1, false));
    cases.push(...convCases(1, [16, 16, 16], 64, 64, 3, 1, false));
    cases.push(...convCases(1, [8, 8, 8], 128, 128, 3, 1, false));
    cases.push(...convCases(1, [8, 8, 8], 320, 320, 3, 1, false));
    cases.push(...convCases(1, [64, 64, 64], 4, 16, 3, 1, false));
    cases.push(...convCases(1, [64, 64, 64], 16, 32, 3, 2, false));
    cases.push(...convCases(1, [64, 64, 64], 16, 3, 1, 1, false));
    cases.push(...convCases(2, [16, 16, 16], 16, 16, 3, 1, true));
    cases.push(...convCases(1, [16, 16, 16], 16, 32, 3, 2, true));
    cases.push(...otherCases(1, [64, 64, 64], 16, false));
    cases.push(...otherCases(1, [32, 32, 32], 16, true));
  }

  const rows: BenchRow[] = [];
  const repeats = Math.max(1, opts.repeats);
  for (const c of cases) {
    const inputs = tf.tidy(() => c.inputs());
    const backends: { label: string; native: boolean }[] = [];
    if (status.loaded && status.kernels.includes(c.kernel)) backends.push({ label: 'cpu+native', native: true });
    const hasJs = !status.loaded || !status.kernels.includes(c.kernel) || originalKernel(c.kernel) !== undefined;
    if ((c.js || !status.loaded) && hasJs) backends.push({ label: 'cpu', native: false });
    for (const b of backends) {
      if (status.loaded) setNativeKernelsEnabled(b.native);
      try {
        // JavaScript kernels are slow: fewer repeats there.
        const ms = b.native ? timeCase(c, inputs, repeats, 2) : timeCase(c, inputs, Math.min(repeats, 3), 1);
        const row: BenchRow = {
          name: c.name,
          shape: c.shape,
          strategy: null,
          backend: b.label,
          ms,
          gflops: c.flops === null ? null : c.flops / (ms * 1e6),
        };
        rows.push(row);
        log(formatRow(row));
      } finally {
        if (status.loaded) setNativeKernelsEnabled(true);
      }
    }
    tf.dispose(Object.values(inputs));
  }
  return rows;
}

export function formatRow(r: BenchRow): string {
  const g = r.gflops === null ? '' : `${r.gflops.toFixed(1)} GFLOP/s`;
  return `${r.name.padEnd(30)} ${r.shape.padEnd(26)} ${(r.strategy ?? '-').padEnd(12)} ${r.backend.padEnd(11)} ${r.ms.toFixed(2).padStart(10)} ms  ${g}`;
}

/** A plain-text table of rows (with % of the FMA peak for rows that have GFLOP/s). */
export function formatTable(rows: BenchRow[], peakGflops?: number): string {
  const head = ['name', 'shape', 'strategy', 'backend', 'ms', 'GFLOP/s', '% peak'];
  const body = rows.map((r) => [
    r.name,
    r.shape,
    r.strategy ?? '-',
    r.backend,
    r.ms.toFixed(2),
    r.gflops === null ? '-' : r.gflops.toFixed(1),
    r.gflops === null || !peakGflops ? '-' : `${((100 * r.gflops) / peakGflops).toFixed(0)}%`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const right = new Set([4, 5, 6]);
  const line = (cells: string[]) =>
    cells.map((c, i) => (right.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ');
  const table = [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)];
  // The step rows' spread, measured peak and what each is, below the table.
  const steps = rows.filter((r) => r.strategy !== null && (r.spreadMs || r.peakBytes !== undefined || r.note));
  if (steps.length) {
    table.push('', 'step rows:');
    for (const r of steps) {
      const parts = [
        r.spreadMs ? `${r.spreadMs[0].toFixed(0)}–${r.spreadMs[1].toFixed(0)} ms` : null,
        r.peakBytes !== undefined ? `peak ${(r.peakBytes / 2 ** 20).toFixed(1)} MiB` : null,
        r.note ?? null,
        r.roundPeakShare !== undefined ? `${(100 * r.roundPeakShare).toFixed(0)}% of its round's FMA peak (median)` : null,
        r.stepPeakShare !== undefined ? `${(100 * r.stepPeakShare).toFixed(0)}% of the FMA peak around each step (median)` : null,
        r.pairedRatio ? `paired: ${r.pairedRatio.median.toFixed(2)}× the owned step before it [${r.pairedRatio.min.toFixed(2)}, ${r.pairedRatio.max.toFixed(2)}]` : null,
      ].filter(Boolean);
      table.push(`- ${r.strategy}, ${r.backend}: ${r.ms.toFixed(0)} ms (${parts.join('; ')})`);
    }
  }
  return table.join('\n');
}
