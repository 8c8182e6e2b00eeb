/**
 * `tsx experiments/cli/bench-webgpu-conv.ts [--repeats N] [--quick] [--record]` (needs XDG_RUNTIME_DIR set)
 *
 * Times tfjs's naive WebGPU 3-D convolution kernels against the project's tiled ones
 * (core/backend/kernels/webgpu/) on the active WebGPU adapter: Conv3D, Conv3DBackpropInputV2 and
 * Conv3DBackpropFilterV2 at 32³ 16→16, 64³ 16→16 and 32³ 32→32 (3×3×3, stride 1, 'same'; --quick: the
 * first only). Each time is wall-clock from the kernel call to its result's `await data()` (the read-back
 * included: tf.time's kernelMs needs the timestamp-query feature, which this device is not created with),
 * the median of N timed runs (default 5) after one untimed warm-up that compiles the shader, naive and
 * tiled runs interleaved so that a change in the machine's load hits both. The table gives the speed-up
 * (naive ÷ tiled median) and the relative difference of the outputs (max |tiled − naive| / max |naive|).
 * `--record` also writes results/bench/webgpu-conv3d.json (machine, adapter, date, rows).
 */
import * as tf from '@tensorflow/tfjs-core';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../../core/backend/index.js';
import { describeMachine } from '../../core/experiment/index.js';
import { parseArgs, usage, UsageError, type FlagSpec } from './args.js';
import { median as mathMedian } from 'mathjs';

const median = (v: number[]): number => Number(mathMedian(v));

/** The tfjs flag the tiled kernels read (core/backend/kernels/webgpu/index.ts, TILED_CONV3D_FLAG). */
const TILED_FLAG = 'VOLSEG_WEBGPU_TILED_CONV3D';

const SPEC: FlagSpec = {
  repeats: { takesValue: true, description: 'timed runs per kernel and mode, after one warm-up (default 5)' },
  quick: { takesValue: false, description: 'only 32³ 16→16' },
  record: { takesValue: false, description: 'also write results/bench/webgpu-conv3d.json' },
  help: { takesValue: false, description: 'this text' },
};

interface Size {
  spatial: number;
  cin: number;
  cout: number;
}

export interface WebgpuConvRow {
  op: string;
  shape: string;
  naiveMs: number;
  tiledMs: number;
  speedup: number;
  naiveMinMs: number;
  tiledMinMs: number;
  /** max |tiled − naive| / max |naive| of the last runs' outputs. */
  relDiff: number;
}

const OPS = ['Conv3D', 'Conv3DBackpropInputV2', 'Conv3DBackpropFilterV2'] as const;


async function timeOnce(run: () => tf.Tensor): Promise<{ ms: number; out: tf.Tensor }> {
  const t0 = performance.now();
  const out = run();
  await out.data();
  return { ms: performance.now() - t0, out };
}

async function benchSize(size: Size, repeats: number, log: (line: string) => void): Promise<WebgpuConvRow[]> {
  const { spatial: s, cin, cout } = size;
  const xShape: [number, number, number, number, number] = [1, s, s, s, cin];
  const wShape: [number, number, number, number, number] = [3, 3, 3, cin, cout];
  const x = tf.randomNormal(xShape, 0, 1, 'float32', 1) as tf.Tensor5D;
  const w = tf.randomNormal(wShape, 0, 1, 'float32', 2) as tf.Tensor5D;
  const dy = tf.randomNormal([1, s, s, s, cout], 0, 1, 'float32', 3) as tf.Tensor5D;
  const runs: Record<(typeof OPS)[number], () => tf.Tensor> = {
    Conv3D: () => tf.conv3d(x, w, 1, 'same'),
    Conv3DBackpropInputV2: () => tf.engine().runKernel('Conv3DBackpropInputV2', { dy, filter: w }, { strides: 1, pad: 'same', inputShape: xShape }) as tf.Tensor,
    Conv3DBackpropFilterV2: () => tf.engine().runKernel('Conv3DBackpropFilterV2', { x, dy }, { strides: 1, pad: 'same', filterShape: wShape }) as tf.Tensor,
  };
  const shape = `1x${s}x${s}x${s}x${cin}->${cout} k3 s1`;
  const rows: WebgpuConvRow[] = [];
  for (const op of OPS) {
    const times: Record<'naive' | 'tiled', number[]> = { naive: [], tiled: [] };
    const last: Partial<Record<'naive' | 'tiled', tf.Tensor>> = {};
    for (let r = 0; r <= repeats; r++)
      for (const mode of ['naive', 'tiled'] as const) {
        tf.env().set(TILED_FLAG, mode === 'tiled');
        const { ms, out } = await timeOnce(runs[op]);
        if (r > 0) times[mode].push(ms);
        last[mode]?.dispose();
        last[mode] = out;
      }
    const [d, m] = await Promise.all([tf.max(tf.abs(tf.sub(last.tiled!, last.naive!))).data(), tf.max(tf.abs(last.naive!)).data()]);
    tf.dispose([last.naive!, last.tiled!]);
    const row: WebgpuConvRow = {
      op,
      shape,
      naiveMs: median(times.naive),
      tiledMs: median(times.tiled),
      speedup: median(times.naive) / median(times.tiled),
      naiveMinMs: Math.min(...times.naive),
      tiledMinMs: Math.min(...times.tiled),
      relDiff: d[0]! / m[0]!,
    };
    log(`${op} ${shape}: naive ${row.naiveMs.toFixed(1)} ms, tiled ${row.tiledMs.toFixed(1)} ms, ×${row.speedup.toFixed(2)}`);
    rows.push(row);
  }
  tf.env().set(TILED_FLAG, true);
  tf.dispose([x, w, dy]);
  return rows;
}

function formatTable(rows: WebgpuConvRow[]): string {
  const head = ['kernel', 'shape', 'naive ms', 'tiled ms', 'speed-up', 'naive min', 'tiled min', 'rel diff'];
  const body = rows.map((r) => [
    r.op,
    r.shape,
    r.naiveMs.toFixed(1),
    r.tiledMs.toFixed(1),
    `×${r.speedup.toFixed(2)}`,
    r.naiveMinMs.toFixed(1),
    r.tiledMinMs.toFixed(1),
    r.relDiff.toExponential(1),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  return [line(head), `|${widths.map((w, i) => (i < 2 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`, ...body.map(line)].join('\n');
}

async function main(argv: string[]): Promise<void> {
  const args = parseArgs(argv, SPEC);
  if (args.flags.has('help')) {
    process.stdout.write(`${usage('tsx experiments/cli/bench-webgpu-conv.ts', '[options]', SPEC)}\n`);
    return;
  }
  const repeats = Number(args.flags.get('repeats')?.[0] ?? 5);
  if (!Number.isInteger(repeats) || repeats < 1) throw new UsageError(`--repeats needs a positive integer, got ${args.flags.get('repeats')?.[0]}`);
  const info = await initBackend('webgpu');
  // The tiled kernels register this flag when initBackend('webgpu') installs them.
  try {
    tf.env().get(TILED_FLAG);
  } catch {
    throw new Error(`the tiled WebGPU convolutions are not registered (no tfjs flag ${TILED_FLAG})`);
  }
  const gpu = (globalThis as { navigator?: { gpu?: { requestAdapter(): Promise<{ info?: Record<string, string> } | null> } } }).navigator?.gpu;
  const adapterInfo = (await gpu?.requestAdapter())?.info;
  const adapter = adapterInfo
    ? { vendor: adapterInfo.vendor, architecture: adapterInfo.architecture, device: adapterInfo.device, description: adapterInfo.description }
    : null;
  const log = (line: string): void => void process.stderr.write(`${line}\n`);
  log(`backend: ${info.label}; adapter: ${adapter ? JSON.stringify(adapter) : 'unknown'}`);
  const sizes: Size[] = [{ spatial: 32, cin: 16, cout: 16 }];
  if (!args.flags.has('quick')) sizes.push({ spatial: 64, cin: 16, cout: 16 }, { spatial: 32, cin: 32, cout: 32 });
  const rows: WebgpuConvRow[] = [];
  for (const size of sizes) rows.push(...(await benchSize(size, repeats, log)));
  const table = formatTable(rows);
  process.stdout.write(`${table}\n`);
  if (args.flags.has('record')) {
    const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
    const file = join(root, 'results', 'bench', 'webgpu-conv3d.json');
    mkdirSync(dirname(file), { recursive: true });
    const record = {
      date: new Date().toISOString(),
      machine: { cpuModel: os.cpus()[0]?.model?.trim() ?? 'unknown', cores: os.cpus().length, description: describeMachine() },
      adapter,
      backend: info.label,
      timing: `wall-clock to the result's await data(), median of ${repeats} runs after a warm-up, naive and tiled interleaved`,
      repeats,
      rows,
      table,
    };
    writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`);
    log(`wrote ${file}`);
  }
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = e instanceof UsageError ? 2 : 1;
});
