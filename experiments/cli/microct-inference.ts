/**
 * `npm run microct-inference -- [--size 630] [--size 397] [--device-memory 512MiB] [--record] …`
 *
 * Whole-volume inference of meU-net's cascade on a synthetic microCT volume at the paper's scale (630³ =
 * 250.0 M voxels), within a device-memory budget: one synthetic-microct case is generated at each
 * `--size`, a meunet-cascade is built (or loaded with `--model`), and the patch strategy's sliding window
 * (core/inference/sliding-window.ts, as the experiment runner validates with it) runs one window at a time
 * on the device while the stitched probabilities stay in host memory, as MONAI's
 * `sliding_window_inference(..., device='cpu')` keeps its output on the host.
 *
 * Before anything runs, the estimated peak of one window (estimateInferencePeak, core/memory/estimator.ts)
 * is checked against `--device-memory`; a window that does not fit stops the command with what it needs.
 * The run itself is under that budget too (the memory meter stops at the first allocation above it).
 *
 * Measured: wall time (generation, inference, of which the network, and labelling), the device peak (the
 * DeviceMemoryMeter's high-water mark over the whole inference, parameters included), the host peak
 * (the process's VmHWM), the voxels and the windows, and the Dice of the predicted label map. Each size
 * runs in its own process, so the host peak is that size's. `--record` writes the record into
 * results/microct-inference/records.json (replacing one of the same configuration and size) and
 * regenerates summary.md; `--summary` only regenerates summary.md.
 *
 * Weights: initialised (`--seed`) unless `--model` names a saved meunet-cascade (e.g. the model of
 * `npm run experiment -- microct-cascade`); a window's cost and memory do not depend on the weights.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chooseBackend, initBackend } from '../../core/backend/index.js';
import { SettingsError, formatBytes, parseBytes, resolveSettings, toShape3 } from '../../core/config/index.js';
import { Executor, parameterCount, type Network } from '../../core/engine/index.js';
import { outputChannels, probabilitiesToLabels } from '../../core/evaluation/index.js';
import { describeMachine, ProgressBar } from '../../core/experiment/index.js';
import { windowPredictor, windowStarts } from '../../core/inference/index.js';
import { loadModel } from '../../core/io/index.js';
import { DeviceMemoryMeter, DeviceOutOfMemoryError, estimateInferencePeak } from '../../core/memory/index.js';
import { instantiate, type PluginCatalog } from '../../core/plugins/index.js';
import { initParams, type Params } from '../../core/training/index.js';
import type { Shape3 } from '../../core/types.js';
import { parseArgs, usage, UsageError, runCli, type FlagSpec } from './args.js';
import { buildContainer } from './plugins.js';
import { readMicroctRecords, renderMicroctSummary, upsertRecord, type MicroctInferenceRecord } from './microct-records.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DEFAULT_RESULTS = join(ROOT, 'results', 'microct-inference');

const FLAGS: FlagSpec = {
  size: { takesValue: true, repeatable: true, description: 'volume edge or DxHxW (default 630: 250.0 M voxels); repeat for several sizes, each run in its own process' },
  case: { takesValue: true, description: 'synthetic-microct case index (default 0)' },
  'data-seed': { takesValue: true, description: 'synthetic-microct seed (default 0)' },
  patch: { takesValue: true, description: "the cascade's output window edge or DxHxW (default 64; it reads a 1.5× context)" },
  'stage1-filters': { takesValue: true, description: 'stage-1 channels per level, comma-separated (default 8,16,32,32)' },
  'stage2-filters': { takesValue: true, description: 'stage-2 channels per level, comma-separated (default 8,16,32)' },
  overlap: { takesValue: true, description: 'fraction of a window shared with its neighbour, in [0, 0.95] (default 0.25; 0.5 runs 3.1× the windows)' },
  blend: { takesValue: true, description: "network (meU-net's weight 2 in the central half-cube, the default) | gaussian | constant" },
  'device-memory': { takesValue: true, description: "device budget, e.g. 512MiB (the default), or 'none'" },
  model: { takesValue: true, description: 'a saved meunet-cascade (its folder or model.json) instead of initial weights' },
  seed: { takesValue: true, description: 'seed of the initial weights (default 1; not with --model)' },
  backend: { takesValue: true, description: 'cpu | tensorflow | tensorflow-gpu | webgpu | auto' },
  record: { takesValue: false, description: 'write the record into results/microct-inference/records.json and regenerate summary.md' },
  summary: { takesValue: false, description: 'only regenerate summary.md from records.json' },
  results: { takesValue: true, description: 'folder of records.json and summary.md (default results/microct-inference)' },
  help: { takesValue: false, description: 'this help' },
};
const SYNOPSIS = '[--size 630] [--size 397] [--device-memory 512MiB] [--overlap 0.25] [--model <saved model>] [--record]';

export interface MicroctInferenceOptions {
  size: Shape3;
  caseIndex: number;
  dataSeed: number;
  /** meunet-cascade settings as given (flags), or null to take them from `model`. */
  architecture: { patch: Shape3; stage1Filters: number[]; stage2Filters: number[] } | null;
  overlap: number;
  blend: 'network' | 'gaussian' | 'constant';
  /** Bytes, or null for no budget. */
  deviceMemory: number | null;
  model: string | null;
  seed: number;
  /** The command line that reproduces the run (for the record). */
  command: string;
}

function flag(args: ReturnType<typeof parseArgs>, name: string): string | undefined {
  return args.flags.get(name)?.[0];
}

function integerFlag(args: ReturnType<typeof parseArgs>, name: string, fallback: number, min = 0): number {
  const v = flag(args, name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} ${v}: expected an integer ≥ ${min}`);
  return n;
}

/** '630', '397x397x397' or '[155, 240, 240]' → [D, H, W]. */
export function parseShape(text: string, name: string): Shape3 {
  const parts = text.replace(/^\[|\]$/g, '').split(/[x×,\s]+/).filter((p) => p !== '').map(Number);
  try {
    return toShape3(parts.length === 1 ? parts[0] : parts, `--${name}`);
  } catch {
    throw new UsageError(`--${name} ${text}: expected one positive integer edge or D×H×W, e.g. 630 or 397x397x397`);
  }
}

function parseFilters(text: string, name: string): number[] {
  const f = text.split(/[,\s]+/).filter((p) => p !== '').map(Number);
  if (f.length < 2 || !f.every((n) => Number.isInteger(n) && n >= 1))
    throw new UsageError(`--${name} ${text}: expected at least two positive integer channel counts, comma-separated, e.g. 8,16,32`);
  return f;
}

export function parseOptions(argv: string[]): { sizes: Shape3[]; options: Omit<MicroctInferenceOptions, 'size' | 'command'>; record: boolean; summaryOnly: boolean; results: string; backend?: string; help: boolean } {
  const args = parseArgs(argv, FLAGS);
  if (args.positional.length) throw new UsageError(`unexpected argument ${args.positional[0]}; every option is a --flag\n${usage('npm run microct-inference --', SYNOPSIS, FLAGS)}`);
  const sizes = (args.flags.get('size') ?? ['630']).map((s) => parseShape(s, 'size'));
  const model = flag(args, 'model') ?? null;
  const archFlags = ['patch', 'stage1-filters', 'stage2-filters'].filter((f) => args.flags.has(f));
  if (model && archFlags.length) throw new UsageError(`--${archFlags[0]} cannot be given with --model: the saved model fixes the architecture (${model})`);
  if (model && args.flags.has('seed')) throw new UsageError(`--seed sets initial weights; it cannot be given with --model (${model})`);
  const overlapText = flag(args, 'overlap') ?? '0.25';
  const overlap = Number(overlapText);
  if (!(Number.isFinite(overlap) && overlap >= 0 && overlap <= 0.95)) throw new UsageError(`--overlap ${overlapText}: expected a number in [0, 0.95]`);
  const blend = flag(args, 'blend') ?? 'network';
  if (blend !== 'network' && blend !== 'gaussian' && blend !== 'constant') throw new UsageError(`--blend ${blend}: expected network, gaussian or constant`);
  const dm = flag(args, 'device-memory') ?? '512MiB';
  let deviceMemory: number | null = null;
  if (dm !== 'none') {
    try {
      deviceMemory = parseBytes(dm, '--device-memory');
    } catch {
      throw new UsageError(`--device-memory ${dm}: expected a byte size such as 512MiB, 2GiB or 1000000, or 'none'`);
    }
    if (deviceMemory <= 0) throw new UsageError(`--device-memory ${dm}: must be above 0 (or 'none' for no budget)`);
  }
  return {
    sizes,
    options: {
      caseIndex: integerFlag(args, 'case', 0),
      dataSeed: integerFlag(args, 'data-seed', 0),
      architecture: model
        ? null
        : {
            patch: parseShape(flag(args, 'patch') ?? '64', 'patch'),
            stage1Filters: parseFilters(flag(args, 'stage1-filters') ?? '8,16,32,32', 'stage1-filters'),
            stage2Filters: parseFilters(flag(args, 'stage2-filters') ?? '8,16,32', 'stage2-filters'),
          },
      overlap,
      blend,
      deviceMemory,
      model,
      seed: integerFlag(args, 'seed', 1),
    },
    record: args.flags.has('record'),
    summaryOnly: args.flags.has('summary'),
    results: resolve(flag(args, 'results') ?? DEFAULT_RESULTS),
    backend: flag(args, 'backend'),
    help: args.flags.has('help'),
  };
}

/** The process's resident-set high-water mark, bytes (VmHWM; getrusage's maxrss where /proc is absent). */
export function hostPeakBytes(): number {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS * 1024;
}

/** Re-prefixes a plugin's settings error with the flag that set the value. */
function asFlag(e: unknown, flagOf: Record<string, string>): never {
  if (e instanceof SettingsError) {
    const f = Object.entries(flagOf).find(([path]) => e.path.startsWith(path))?.[1];
    if (f) throw new UsageError(`${f}: ${e.problem}`);
  }
  if (e instanceof Error && flagOf.architecture && /meunet-cascade:/.test(e.message)) throw new UsageError(`${flagOf.architecture}: ${e.message}`);
  throw e;
}

/** Dice per label of `pred` against `ref` (1 where both are empty) and each label's share of `ref`, counted in one pass. */
function labelDice(pred: Uint8Array, ref: Uint8Array, labels: { name: string; value: number }[]): { dice: Record<string, number>; fractions: Record<string, number> } {
  const inter = new Float64Array(256),
    p = new Float64Array(256),
    r = new Float64Array(256);
  for (let i = 0; i < pred.length; i++) {
    const a = pred[i]!,
      b = ref[i]!;
    p[a]++;
    r[b]++;
    if (a === b) inter[a]++;
  }
  const dice: Record<string, number> = {};
  const fractions: Record<string, number> = {};
  for (const l of labels) {
    const den = p[l.value]! + r[l.value]!;
    dice[l.name] = den === 0 ? 1 : (2 * inter[l.value]!) / den;
    fractions[l.name] = r[l.value]! / ref.length;
  }
  return { dice, fractions };
}

/** One whole-volume inference at `o.size`; returns its record (the caller writes it). */
export async function runMicroctInference(catalog: PluginCatalog, o: MicroctInferenceOptions, backendLabel: string, log: (line: string) => void): Promise<MicroctInferenceRecord> {
  const load0 = loadavg()[0]!;
  const meter = new DeviceMemoryMeter();
  meter.attach();
  const ledger = meter.ledger;
  let params: Params | null = null;
  try {
    // The data: one case at the asked size.
    const datasetSettings = { cases: o.caseIndex + 1, size: o.size, seed: o.dataSeed };
    const dataset = (() => {
      try {
        return instantiate(catalog.dataset('synthetic-microct'), datasetSettings, { baseDir: ROOT });
      } catch (e) {
        return asFlag(e, { 'dataset.settings.size': `--size ${o.size.join('x')}`, 'dataset.settings.seed': `--data-seed ${o.dataSeed}`, 'dataset.settings.cases': `--case ${o.caseIndex}` });
      }
    })();
    const caseId = dataset.caseIds()[o.caseIndex]!;
    const task = dataset.task;
    if (task.kind !== 'labels') throw new Error('synthetic-microct: expected a labels task');
    const spec = { inChannels: dataset.channels.length, outChannels: outputChannels(task), activation: 'softmax' as const };

    // The network: the flags' cascade with initial weights, or a saved one.
    let archSettings: Record<string, unknown>;
    let weights: string;
    if (o.model) {
      const m = await loadModel(o.model);
      if (m.manifest.architecture.name !== 'meunet-cascade')
        throw new UsageError(`--model ${o.model}: a ${m.manifest.architecture.name}, not a meunet-cascade; give a model trained by an experiment with the meunet-cascade architecture`);
      if (m.manifest.network.inChannels !== spec.inChannels || m.manifest.network.outChannels !== spec.outChannels)
        throw new UsageError(
          `--model ${o.model}: built for ${m.manifest.network.inChannels} input and ${m.manifest.network.outChannels} output channels; synthetic-microct needs ${spec.inChannels} and ${spec.outChannels} (train it on synthetic-microct)`,
        );
      archSettings = m.manifest.architecture.settings as Record<string, unknown>;
      params = m.params;
      weights = relative(ROOT, m.dir) || m.dir;
    } else {
      archSettings = { ...o.architecture! };
      weights = `initialisation (seed ${o.seed})`;
    }
    const archPlugin = catalog.architecture('meunet-cascade');
    let net: Network;
    try {
      net = instantiate(archPlugin, archSettings, { baseDir: ROOT }).build(spec);
    } catch (e) {
      const given = `${o.model ? `--model ${o.model}` : '--patch/--stage1-filters/--stage2-filters'} (patch ${JSON.stringify(archSettings.patch)}, stage 1 ${JSON.stringify(archSettings.stage1Filters)}, stage 2 ${JSON.stringify(archSettings.stage2Filters)})`;
      return asFlag(e, { 'architecture.settings.patch': '--patch', 'architecture.settings.stage1Filters': '--stage1-filters', 'architecture.settings.stage2Filters': '--stage2-filters', architecture: given });
    }
    const resolvedArch = resolveSettings(archPlugin.settings, archSettings, 'architecture.settings') as Record<string, unknown>;
    const patch = toShape3(resolvedArch.patch, 'architecture.settings.patch');
    const margin = net.outputMargin ?? [0, 0, 0];
    const context = patch.map((p, i) => p + 2 * margin[i]!) as Shape3;

    // Does one window fit? (Before the volume is made: a window that does not fit is a mistake in the flags.)
    const est = estimateInferencePeak(net, [1, ...context, spec.inChannels]);
    log(`one window: ${patch.join('×')} output, ${context.join('×')} input; estimated device peak ${formatBytes(est.peak)} (parameters ${formatBytes(est.parameters)}; at ${est.at})`);
    if (o.deviceMemory !== null && est.peak > o.deviceMemory)
      throw new UsageError(
        `--device-memory ${formatBytes(o.deviceMemory)}: one window does not fit: the cascade on a ${context.join('×')} input needs an estimated ${formatBytes(est.peak)} ` +
          `(${est.peak} bytes, at ${est.at}; parameters ${formatBytes(est.parameters)}); raise --device-memory to at least ${formatBytes(est.peak)}, ` +
          'or use a smaller --patch or fewer --stage1-filters/--stage2-filters channels',
      );

    const inferencePlugin = catalog.strategy('patch');
    const strategy = (() => {
      try {
        return instantiate(inferencePlugin, { patchSize: patch, overlap: o.overlap, blend: o.blend }, { baseDir: ROOT });
      } catch (e) {
        return asFlag(e, { 'strategy.settings.overlap': `--overlap ${o.overlap}`, 'strategy.settings.blend': `--blend ${o.blend}`, 'strategy.settings.patchSize': `--patch ${patch.join('x')}` });
      }
    })();

    const N = o.size[0] * o.size[1] * o.size[2];
    log(`generating synthetic-microct ${caseId} at ${o.size.join('×')} (${(N / 1e6).toFixed(1)} M voxels)…`);
    let t = performance.now();
    const volume = await dataset.load(caseId);
    const generate = (performance.now() - t) / 1000;
    const hostBefore = hostPeakBytes();
    log(`  generated in ${generate.toFixed(1)} s; host peak so far ${formatBytes(hostBefore)}`);

    if (!params) params = initParams(net, o.seed);
    const parametersBytes = [...params.values()].reduce((s, p) => s + p.size * 4, 0);
    const windows = o.size.map((n, i) => windowStarts(Math.max(n, patch[i]!), patch[i]!, o.overlap).length).reduce((a, b) => a * b, 1);
    log(`inference: ${windows} windows (overlap ${o.overlap}, blend ${o.blend}), weights: ${weights}`);

    ledger.setBudget(o.deviceMemory);
    const executor = new Executor(net);
    let done = 0;
    const observer = {
      beforeOp: (phase: string, node: string) => {
        ledger.currentOp = `${phase} / ${node}`;
      },
      afterOp: () => {
        const over = ledger.takeOverflow();
        if (over) throw new DeviceOutOfMemoryError(`window ${done + 1} of ${windows} / ${over.op}`, over.needed, over.available, over.budget, over.live);
      },
    };
    const predict = windowPredictor(executor, net, params, volume.channels, observer);
    const bar = new ProgressBar('  windows', windows, 30);
    let network = 0;
    t = performance.now();
    const probs = await strategy.infer(
      { image: volume.image, shape: volume.shape, channels: volume.channels },
      async (w, shape) => {
        const t0 = performance.now();
        const out = await predict(w, shape);
        network += performance.now() - t0;
        if (++done < windows) bar.update(done);
        return out;
      },
      net,
    );
    const inference = (performance.now() - t) / 1000;
    bar.done();
    const deviceRecord = { peak: ledger.peak, op: ledger.peakOp };
    const hostPeak = hostPeakBytes();
    log(`  ${done} windows in ${inference.toFixed(1)} s (${((1000 * inference) / done).toFixed(0)} ms each; network ${(network / 1000).toFixed(1)} s); device peak ${formatBytes(deviceRecord.peak)}; host peak ${formatBytes(hostPeak)}`);

    t = performance.now();
    const K = spec.outChannels;
    const predicted = probabilitiesToLabels(probs, volume.shape, task);
    const { dice, fractions } = labelDice(predicted, volume.label!, task.labels);
    const evaluate = (performance.now() - t) / 1000;
    log(`  Dice ${Object.entries(dice).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(', ')}`);

    const machine = cpus();
    const record: MicroctInferenceRecord = {
      key: JSON.stringify({ size: o.size, case: o.caseIndex, dataSeed: o.dataSeed, architecture: resolvedArch, weights, overlap: o.overlap, blend: o.blend, budget: o.deviceMemory }),
      date: new Date().toISOString(),
      machine: describeMachine(),
      cpu: { model: machine[0]?.model?.trim() ?? 'unknown CPU', cores: machine.length, ramBytes: totalmem() },
      node: process.version,
      backend: backendLabel,
      command: o.command,
      dataset: { name: 'synthetic-microct', settings: { ...datasetSettings }, case: caseId },
      shape: [...volume.shape] as Shape3,
      voxels: N,
      architecture: { name: 'meunet-cascade', settings: resolvedArch },
      params: parameterCount(net),
      weights,
      inference: { patch, context, overlap: o.overlap, blend: o.blend, windows: done },
      seconds: { generate, inference, network: network / 1000, evaluate },
      device: { budgetBytes: o.deviceMemory, estimatedPeakBytes: est.peak, estimatedAt: est.at, peakBytes: deviceRecord.peak, peakOp: deviceRecord.op, parametersBytes },
      host: {
        peakBytes: hostPeak,
        peakBeforeInferenceBytes: hostBefore,
        arrays: { image: volume.image.byteLength, label: volume.label!.byteLength, probabilities: N * K * 4, weightSum: N * 4, prediction: predicted.byteLength },
      },
      dice,
      labelFractions: fractions,
      loadAverage: { start: load0, end: loadavg()[0]! },
    };
    return record;
  } finally {
    if (params) for (const p of params.values()) p.dispose();
    ledger.setBudget(null);
    meter.detach();
  }
}

export function writeRecord(results: string, record: MicroctInferenceRecord): string[] {
  mkdirSync(results, { recursive: true });
  const file = join(results, 'records.json');
  const records = upsertRecord(readMicroctRecords(file), record);
  writeFileSync(file, `${JSON.stringify({ records }, null, 2)}\n`);
  const summary = join(results, 'summary.md');
  writeFileSync(summary, renderMicroctSummary(records));
  return [file, summary];
}

/** The command line for one size, as the record states it. */
function commandFor(argv: string[], size: Shape3): string {
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--size') i++;
    else if (!a.startsWith('--size=')) rest.push(a);
  }
  const edge = size[0] === size[1] && size[1] === size[2] ? String(size[0]) : size.join('x');
  return ['npm run microct-inference --', '--size', edge, ...rest].join(' ');
}

async function main(argv: string[]): Promise<number> {
  const parsed = parseOptions(argv);
  if (parsed.help) {
    console.log(usage('npm run microct-inference --', SYNOPSIS, FLAGS));
    return 0;
  }
  if (parsed.summaryOnly) {
    const file = join(parsed.results, 'records.json');
    if (!existsSync(file)) throw new UsageError(`--summary: ${file} does not exist; run with --record first`);
    writeFileSync(join(parsed.results, 'summary.md'), renderMicroctSummary(readMicroctRecords(file)));
    console.log(`wrote ${join(parsed.results, 'summary.md')}`);
    return 0;
  }
  if (parsed.sizes.length > 1) {
    // One process per size: the host peak (VmHWM) is a process's high-water mark.
    for (const size of parsed.sizes) {
      const child = [...argv.filter((a, i) => a !== '--size' && argv[i - 1] !== '--size' && !a.startsWith('--size=')), '--size', size.join('x')];
      console.log(`\n== ${size.join('×')} (own process)`);
      const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...child], { stdio: 'inherit' });
      if (r.status !== 0) return r.status ?? 1;
    }
    return 0;
  }
  const size = parsed.sizes[0]!;
  const backend = await initBackend(chooseBackend(parsed.backend, undefined));
  console.log(`backend ${backend.label}; machine ${describeMachine()}`);
  const { catalog } = buildContainer();
  const record = await runMicroctInference(catalog, { ...parsed.options, size, command: commandFor(argv, size) }, backend.label, (l) => console.log(l));
  if (parsed.record) for (const f of writeRecord(parsed.results, record)) console.log(`wrote ${relative(process.cwd(), f) || f}`);
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  runCli(() => main(process.argv.slice(2)), [SettingsError, DeviceOutOfMemoryError]);
}
