/**
 * The Node side of the GPU check (experiments/gpu-check/README.md): unet3d trained on tfjs's WebGPU
 * backend (Dawn) with each memory strategy at each size, through the project's own experiment runner, so
 * the real strategies run. One trial per child process (tfjs has one global engine, and a trial that runs
 * past its time limit must be killable without losing the rest): each child loads a one-trial experiment
 * file written here and records into its own results folder; the parent reads that trials.csv and prints
 * one JSON record per trial (`RECORD {...}`), also appended to `<out>/webgpu.jsonl`.
 *
 *   node check.mjs [--sizes 64,128] [--strategies full-volume,checkpoint,swap,patch] [--steps 4]
 *                  [--base 16] [--depth 5] [--backend webgpu] [--trial-timeout 110] [--budget 390] [--out DIR]
 *
 * `--budget` bounds the whole check (seconds): each trial's limit is the smaller of `--trial-timeout` and
 * what is left; a trial past its limit is killed and recorded `timeout`, and a strategy that timed out is
 * not tried at a larger size. Runs from the source (`npx tsx experiments/gpu-check/check.ts`) or from the
 * bundle prepare.sh builds (`node .gpu/app/check.mjs`), which needs only node_modules/webgpu beside it.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { loadExperiment } from '../../core/config/index.js';
import { ExperimentRunner, readTrials } from '../../core/experiment/index.js';
import { initBackend, type BackendChoice } from '../../core/backend/index.js';
import { buildContainer } from '../cli/plugins.js';
import { parseArgs, usage, UsageError, type FlagSpec } from '../cli/args.js';

const FLAGS: FlagSpec = {
  sizes: { takesValue: true, description: 'volume edges, comma-separated (default 64,128)' },
  strategies: { takesValue: true, description: 'strategies, comma-separated (default full-volume,checkpoint,swap,patch)' },
  steps: { takesValue: true, description: 'training steps per trial, the first a warm-up (default 4)' },
  base: { takesValue: true, description: 'unet3d base filters (default 16)' },
  depth: { takesValue: true, description: 'unet3d depth (default 5)' },
  backend: { takesValue: true, description: 'tensor backend (default webgpu)' },
  'trial-timeout': { takesValue: true, description: 'seconds one trial may take (default 110)' },
  budget: { takesValue: true, description: 'seconds the whole check may take (default 390)' },
  out: { takesValue: true, description: 'folder for webgpu.jsonl, webgpu-log.txt and the trials (default: a temp folder)' },
  probe: { takesValue: false, description: '(internal) start the backend, print the adapter, exit' },
  child: { takesValue: true, description: '(internal) run this one-trial experiment file' },
  results: { takesValue: true, description: '(internal) results folder of --child' },
  help: { takesValue: false, description: 'this help' },
};

/** One trial's outcome: the row the table is made from. */
export interface CheckRecord {
  kind: 'webgpu';
  size: number;
  strategy: string;
  backend: string;
  /** The adapter's description (vendor, device, driver) as Dawn reports it. */
  adapter: string;
  status: string;
  step_ms: number | null;
  steps: number | null;
  peak_bytes: number | null;
  /** How the runner measured peak_bytes (trials.csv `meter`, e.g. webgpu-buffers). */
  meter: string | null;
  /** Peak of the backend's buffer pool, released buffers it keeps included, where the runner reports it. */
  pool_peak_bytes: number | null;
  est_peak_bytes: number | null;
  host_peak_bytes: number | null;
  final_loss: number | null;
  input_shape: string | null;
  params: number | null;
  wall_s: number;
}

interface Options {
  sizes: number[];
  strategies: string[];
  steps: number;
  base: number;
  depth: number;
  backend: string;
  trialTimeout: number;
  budget: number;
  out: string;
}

function positive(flag: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const v = Number(text);
  if (!Number.isFinite(v) || v <= 0) throw new UsageError(`--${flag} must be a positive number, got "${text}"`);
  return v;
}

function options(flags: Map<string, string[]>): Options {
  const one = (k: string): string | undefined => flags.get(k)?.[0];
  const list = (k: string, d: string): string[] => (one(k) ?? d).split(',').map((s) => s.trim()).filter(Boolean);
  const sizes = list('sizes', '64,128').map((s) => positive('sizes', s, 0));
  return {
    sizes,
    strategies: list('strategies', 'full-volume,checkpoint,swap,patch'),
    steps: Math.max(2, Math.round(positive('steps', one('steps'), 4))),
    base: Math.round(positive('base', one('base'), 16)),
    depth: Math.round(positive('depth', one('depth'), 5)),
    backend: one('backend') ?? 'webgpu',
    trialTimeout: positive('trial-timeout', one('trial-timeout'), 110),
    budget: positive('budget', one('budget'), 390),
    out: resolve(one('out') ?? join(tmpdir(), `volseg-gpu-check-${process.pid}`)),
  };
}

/** The strategy entry of a trial: patches are half the volume edge (at least 8, a multiple of 8). */
function strategyYaml(name: string, size: number): string {
  if (name === 'patch') return `{ name: patch, settings: { patchSize: ${Math.max(8, Math.floor(size / 2 / 8) * 8)} } }`;
  if (name === 'swap') return '{ name: swap, settings: { lb: 1 } }';
  return `{ name: ${name} }`;
}

/** A one-trial experiment: two synthetic cases (one trains), `steps` steps, no evaluation, no model. */
function experimentYaml(o: Options, size: number, strategy: string): string {
  return [
    `name: gpu-check-${size}-${strategy}`,
    `description: unet3d step timing on ${o.backend}, ${size}^3, ${strategy}`,
    `dataset: { name: synthetic-brats, settings: { cases: 2, size: ${size}, seed: 0 } }`,
    `architecture: { name: unet3d, settings: { depth: ${o.depth}, baseFilters: ${o.base} } }`,
    `strategy: ${strategyYaml(strategy, size)}`,
    `training: { epochs: 1, stepsPerEpoch: ${o.steps}, validationFraction: 0.5, evaluate: false, saveModel: false, backend: ${o.backend} }`,
    '',
  ].join('\n');
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : typeof v === 'string' && v !== '' && Number.isFinite(Number(v)) ? Number(v) : null);

/** The trial child running now: a parent stopped by a signal takes it along. */
let current: ReturnType<typeof spawn> | null = null;
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const)
  process.on(sig, () => {
    current?.kill('SIGKILL');
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGHUP' ? 1 : 15));
  });

/** Runs this program again with `args`; kills it (TERM, then KILL) after `limitS` seconds. */
function runSelf(args: string[], limitS: number, log: (chunk: string) => void): Promise<{ code: number | null; timedOut: boolean; output: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    current = child;
    let output = '';
    const take = (b: Buffer): void => {
      const s = b.toString();
      output = (output + s).slice(-20000);
      log(s);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    let timedOut = false;
    const kill = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      setTimeout(() => child.kill('SIGKILL'), 3000).unref();
    }, limitS * 1000);
    child.on('close', (code) => {
      clearTimeout(kill);
      current = null;
      done({ code, timedOut, output });
    });
  });
}

/** The last meaningful line of a child's output (Dawn's limit warnings left out), for a failed record. */
function lastError(output: string): string {
  const lines = output.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('Warning:') && !/^\s*train \[/.test(l));
  const err = [...lines].reverse().find((l) => /error|failed|cannot|not available/i.test(l));
  return (err ?? lines[lines.length - 1] ?? 'no output').slice(0, 300);
}

async function parent(o: Options): Promise<number> {
  const start = performance.now();
  const left = (): number => o.budget - (performance.now() - start) / 1000;
  mkdirSync(o.out, { recursive: true });
  const records = join(o.out, 'webgpu.jsonl');
  const logFile = join(o.out, 'webgpu-log.txt');
  writeFileSync(records, '');
  writeFileSync(logFile, '');
  const log = (s: string): void => appendFileSync(logFile, s);
  const say = (s: string): void => {
    console.log(s);
    log(`${s}\n`);
  };
  say(`gpu-check: sizes ${o.sizes.join(',')}; strategies ${o.strategies.join(',')}; unet3d depth ${o.depth} base ${o.base}; ${o.steps} steps (1 warm-up); backend ${o.backend}; trial limit ${o.trialTimeout}s, budget ${o.budget}s; out ${o.out}`);

  // The backend and adapter, in a child of its own (a hang or crash at start-up costs one minute, once).
  const probe = await runSelf(['--probe', '--backend', o.backend], Math.min(90, Math.max(10, left())), log);
  const adapterLine = probe.output.split('\n').find((l) => l.startsWith('ADAPTER '));
  const backendLabel = probe.output.split('\n').find((l) => l.startsWith('BACKEND '))?.slice(8) ?? o.backend;
  const adapter = (() => {
    try {
      const a = JSON.parse(adapterLine?.slice(8) ?? '{}') as Record<string, unknown>;
      return [a.description ?? a.device, a.vendor, a.architecture].filter((v) => v !== undefined && v !== '').join('; ');
    } catch {
      return '';
    }
  })();
  const noBackend = adapterLine === undefined ? `failed: backend did not start${probe.timedOut ? ' (timeout)' : ''}: ${lastError(probe.output)}` : null;
  say(adapterLine ?? `no adapter: ${noBackend}`);

  const timedOutAt = new Map<string, number>();
  let failures = 0;
  // At each size after the first, the strategies run fastest first (by their time at the size before), so
  // that a budget too short for all of them is spent on the ones that finish.
  const lastWall = new Map<string, number>();
  for (const size of [...o.sizes].sort((a, b) => a - b)) {
    const order = [...o.strategies].sort((a, b) => (lastWall.get(a) ?? 0) - (lastWall.get(b) ?? 0));
    for (const strategy of order) {
      const t0 = performance.now();
      const rec: CheckRecord = {
        kind: 'webgpu', size, strategy, backend: backendLabel, adapter, status: 'ok', step_ms: null, steps: null, peak_bytes: null,
        meter: null, pool_peak_bytes: null, est_peak_bytes: null, host_peak_bytes: null, final_loss: null, input_shape: null, params: null, wall_s: 0,
      };
      const limit = Math.min(o.trialTimeout, left());
      if (noBackend) rec.status = noBackend;
      else if (timedOutAt.has(strategy)) rec.status = `skipped: timed out at ${timedOutAt.get(strategy)}^3`;
      else if (limit < 15) rec.status = 'skipped: total time budget spent';
      else {
        const dir = join(o.out, 'trials', `${size}-${strategy}`);
        mkdirSync(dir, { recursive: true });
        const file = join(dir, `gpu-check-${size}-${strategy}.yaml`);
        writeFileSync(file, experimentYaml(o, size, strategy));
        log(`\n===== ${size}^3 ${strategy} (limit ${limit.toFixed(0)}s) =====\n`);
        const r = await runSelf(['--child', file, '--results', join(dir, 'results'), '--backend', o.backend], limit, log);
        const row = (() => {
          try {
            return readTrials(join(dir, 'results'))[0];
          } catch {
            return undefined;
          }
        })();
        // A recorded row means the trial finished (a kill while it wrote its summary does not undo that).
        if (!row && r.timedOut) {
          rec.status = `timeout (${limit.toFixed(0)}s)`;
          timedOutAt.set(strategy, size);
        } else if (!row) rec.status = `failed: exit ${r.code}: ${lastError(r.output)}`;
        else {
          rec.status = String(row.status);
          rec.backend = String(row.backend ?? backendLabel);
          const sec = num(row.step_seconds);
          rec.step_ms = sec === null ? null : sec * 1000;
          rec.steps = num(row.steps);
          rec.peak_bytes = num(row.peak_train_bytes);
          rec.meter = row.meter === null || row.meter === undefined || row.meter === '' ? null : String(row.meter);
          rec.pool_peak_bytes = num(row.pool_peak_train_bytes);
          rec.est_peak_bytes = num(row.est_peak_train_bytes);
          rec.host_peak_bytes = num(row.host_peak_bytes);
          rec.final_loss = num(row.final_loss);
          rec.input_shape = row.input_shape === null || row.input_shape === undefined ? null : String(row.input_shape);
          rec.params = num(row.params);
        }
      }
      if (rec.status !== 'ok') failures++;
      rec.wall_s = (performance.now() - t0) / 1000;
      lastWall.set(strategy, rec.status === 'ok' ? rec.wall_s : Infinity);
      appendFileSync(records, `${JSON.stringify(rec)}\n`);
      console.log(`RECORD ${JSON.stringify(rec)}`);
      say(
        `  ${size}^3 ${strategy.padEnd(12)} ${rec.status}` +
          (rec.step_ms !== null ? `; step ${rec.step_ms.toFixed(1)} ms; peak ${rec.peak_bytes ?? 'n/a'} B; loss ${rec.final_loss?.toFixed(5) ?? 'n/a'}` : '') +
          `; ${rec.wall_s.toFixed(1)}s`,
      );
    }
  }
  say(`gpu-check: done in ${((performance.now() - start) / 1000).toFixed(1)}s; records in ${records}`);
  return noBackend ? 1 : failures === o.sizes.length * o.strategies.length ? 1 : 0;
}

/** Starts the backend and prints what it runs on. */
async function probe(backend: string): Promise<number> {
  const info = await initBackend(backend as BackendChoice);
  console.log(`BACKEND ${info.label}`);
  const gpu = (globalThis as { navigator?: { gpu?: { requestAdapter(): Promise<unknown> } } }).navigator?.gpu;
  let adapter: Record<string, unknown> = {};
  if (gpu) {
    const a = (await gpu.requestAdapter()) as { info?: Record<string, unknown>; requestAdapterInfo?: () => Promise<Record<string, unknown>>; limits?: Record<string, number> } | null;
    const i = a?.info ?? (await a?.requestAdapterInfo?.()) ?? {};
    for (const k of ['vendor', 'architecture', 'device', 'description', 'backendType', 'adapterType', 'driver']) if (i[k] !== undefined && i[k] !== '') adapter[k] = i[k];
    if (a?.limits) adapter.maxBufferSize = a.limits.maxBufferSize;
    if (a?.limits) adapter.maxStorageBufferBindingSize = a.limits.maxStorageBufferBindingSize;
  } else adapter = { note: `no navigator.gpu: backend ${info.tfjsBackend}` };
  console.log(`ADAPTER ${JSON.stringify(adapter)}`);
  return 0;
}

/** One trial: the experiment file through the runner, recorded in `results`. */
async function child(file: string, results: string, backend: string): Promise<number> {
  const { catalog } = buildContainer();
  const exp = loadExperiment(file, catalog);
  const runner = new ExperimentRunner(catalog);
  const rows = await runner.run(exp, { resultsDir: results, backend, fresh: true });
  return rows.every((r) => r.status === 'ok') ? 0 : 3;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2), FLAGS);
  if (args.flags.has('help')) {
    console.log(usage('node check.mjs', '[options]', FLAGS));
    return 0;
  }
  const backend = args.flags.get('backend')?.[0] ?? 'webgpu';
  if (args.flags.has('probe')) return probe(backend);
  const file = args.flags.get('child')?.[0];
  if (file !== undefined) {
    const results = args.flags.get('results')?.[0];
    if (!results) throw new UsageError('--child needs --results');
    return child(file, results, backend);
  }
  return parent(options(args.flags));
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`error: ${(e as Error).message ?? e}${process.env.VOLSEG_DEBUG ? `\n${(e as Error).stack}` : ''}`);
    process.exit(2);
  },
);
