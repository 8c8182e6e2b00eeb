/**
 * The records of `npm run microct-inference` (results/microct-inference/records.json) and the tables made
 * from them: results/microct-inference/summary.md, and the overview that readme-tables.ts's
 * `microct-inference` block shares with it. Kept apart from the command so that the tables need no
 * backend and no plugin.
 */
import { existsSync, readFileSync } from 'node:fs';
import { windowStarts } from '../../core/inference/index.js';

/** One whole-volume inference, as the command measured it. */
export interface MicroctInferenceRecord {
  /** What the record is of (everything but the machine and the measurements): a re-run replaces it. */
  key: string;
  date: string;
  /** describeMachine(): CPU model, cores, RAM, platform, Node. */
  machine: string;
  cpu: { model: string; cores: number; ramBytes: number };
  node: string;
  /** The backend that ran, e.g. 'cpu+native(avx2-fma, 2 threads)'. */
  backend: string;
  /** The command that reproduces this record. */
  command: string;
  dataset: { name: string; settings: Record<string, unknown>; case: string };
  shape: [number, number, number];
  voxels: number;
  architecture: { name: string; settings: Record<string, unknown> };
  params: number;
  /** 'initialisation (seed N)' or the saved model's folder. */
  weights: string;
  inference: {
    /** The output window (the cascade's patch) and the input it reads (patch + 2 × margin). */
    patch: [number, number, number];
    context: [number, number, number];
    overlap: number;
    blend: string;
    windows: number;
  };
  seconds: {
    /** Generating the synthetic case. */
    generate: number;
    /** The whole sliding-window inference (windows read, run, stitched; the final division). */
    inference: number;
    /** Of that, inside the network's window predictor (the input tensor, forward, activation, read-back). */
    network: number;
    /** Probabilities → labels and the Dice count. */
    evaluate: number;
  };
  device: {
    /** --device-memory, bytes (null: no budget). */
    budgetBytes: number | null;
    /** estimateInferencePeak for one window (core/memory/estimator.ts), checked against the budget before starting. */
    estimatedPeakBytes: number;
    estimatedAt: string;
    /** The meter's high-water mark over the whole inference (parameters included): distinct live backend buffers. */
    peakBytes: number;
    peakOp: string;
    parametersBytes: number;
  };
  host: {
    /** The process's resident-set high-water mark at the end (/proc/self/status VmHWM). */
    peakBytes: number;
    /** The same, after the case was generated and before inference started. */
    peakBeforeInferenceBytes: number;
    /** The host arrays the run holds, by what they are (bytes). */
    arrays: { image: number; label: number; probabilities: number; weightSum: number; prediction: number };
  };
  /** Dice per label of the predicted label map against the generator's labels (over the whole volume). */
  dice: Record<string, number>;
  /** Each label's share of the volume's voxels (the generator's labels): random labels at these rates score this Dice. */
  labelFractions: Record<string, number>;
  /** 1-minute load average when the run started and ended (other processes sharing the cores). */
  loadAverage: { start: number; end: number };
}

/** Two device peaks count as equal when they differ by at most this fraction. */
export const DEVICE_PEAK_TOLERANCE = 0.01;

export function readMicroctRecords(file: string): MicroctInferenceRecord[] {
  if (!existsSync(file)) return [];
  const doc = JSON.parse(readFileSync(file, 'utf8')) as { records?: MicroctInferenceRecord[] };
  if (!Array.isArray(doc.records)) throw new Error(`${file}: expected {"records": [...]}, as npm run microct-inference -- --record writes`);
  return doc.records;
}

/** `records` with `r` in place of the record with the same key (or appended), ordered by configuration and size. */
export function upsertRecord(records: MicroctInferenceRecord[], r: MicroctInferenceRecord): MicroctInferenceRecord[] {
  const out = records.filter((x) => x.key !== r.key);
  out.push(r);
  return out.sort((a, b) => configurationOf(a).localeCompare(configurationOf(b)) || a.voxels - b.voxels);
}

/** What two records must share for their device peaks to be compared: all but the volume's size. */
export function configurationOf(r: MicroctInferenceRecord): string {
  return JSON.stringify({
    architecture: r.architecture,
    patch: r.inference.patch,
    overlap: r.inference.overlap,
    blend: r.inference.blend,
    backend: r.backend,
    budget: r.device.budgetBytes,
  });
}

const MiB = 2 ** 20;
export function bytesText(v: number): string {
  return v >= 2 ** 30 ? `${(v / 2 ** 30).toFixed(2)} GiB` : `${(v / MiB).toFixed(1)} MiB`;
}
const minutes = (s: number): string => (s >= 120 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(1)} s`);
const shapeText = (s: number[]): string => s.join('×');

/** The comparison of device peaks across the sizes of one configuration, one sentence each. */
export function devicePeakChecks(records: MicroctInferenceRecord[]): { sentence: string; equal: boolean }[] {
  const groups = new Map<string, MicroctInferenceRecord[]>();
  for (const r of records) groups.set(configurationOf(r), [...(groups.get(configurationOf(r)) ?? []), r]);
  const out: { sentence: string; equal: boolean }[] = [];
  for (const g of groups.values()) {
    if (g.length < 2) continue;
    const sorted = [...g].sort((a, b) => a.voxels - b.voxels);
    const small = sorted[0]!;
    const large = sorted[sorted.length - 1]!;
    const peaks = sorted.map((r) => r.device.peakBytes);
    const spread = (Math.max(...peaks) - Math.min(...peaks)) / Math.min(...peaks);
    const equal = spread <= DEVICE_PEAK_TOLERANCE;
    const host = (large.host.peakBytes / small.host.peakBytes).toFixed(1);
    out.push({
      equal,
      sentence:
        `From ${shapeText(small.shape)} (${(small.voxels / 1e6).toFixed(1)} M voxels) to ${shapeText(large.shape)} (${(large.voxels / 1e6).toFixed(1)} M, ` +
        `${(large.voxels / small.voxels).toFixed(1)}× the voxels) the device peak goes from ${bytesText(small.device.peakBytes)} to ${bytesText(large.device.peakBytes)} ` +
        `(${small.device.peakBytes} and ${large.device.peakBytes} bytes): ` +
        (equal
          ? `the same within ${(100 * DEVICE_PEAK_TOLERANCE).toFixed(0)}% (they differ by ${(100 * spread).toFixed(3)}%), so the device peak does not grow with the volume`
          : `**they differ by ${(100 * spread).toFixed(1)}%, more than the ${(100 * DEVICE_PEAK_TOLERANCE).toFixed(0)}% tolerance**`) +
        `; the host peak grows ${host}× (the stitched output is on the host).`,
    });
  }
  return out;
}

/** The table of the records (summary.md and the README block share it). */
export function recordsTable(records: MicroctInferenceRecord[]): string[] {
  const header = ['volume', 'voxels', 'windows', 'inference', 'per window', 'device peak', 'estimated', 'budget', 'host peak', 'Dice tube', 'Dice sheet', 'weights'];
  const rows = records.map((r) => [
    shapeText(r.shape),
    `${(r.voxels / 1e6).toFixed(1)} M`,
    String(r.inference.windows),
    minutes(r.seconds.inference),
    `${((1000 * r.seconds.inference) / r.inference.windows).toFixed(0)} ms`,
    bytesText(r.device.peakBytes),
    bytesText(r.device.estimatedPeakBytes),
    r.device.budgetBytes === null ? '—' : bytesText(r.device.budgetBytes),
    bytesText(r.host.peakBytes),
    r.dice.tube === undefined ? '—' : r.dice.tube.toFixed(3),
    r.dice.sheet === undefined ? '—' : r.dice.sheet.toFixed(3),
    r.weights.startsWith('initialisation') ? r.weights : 'trained (microct-cascade)',
  ]);
  return [`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)];
}

/** Windows a record's volume needs at another overlap (the same patch). */
export function windowsAt(r: MicroctInferenceRecord, overlap: number): number {
  return r.shape.map((n, i) => windowStarts(Math.max(n, r.inference.patch[i]!), r.inference.patch[i]!, overlap).length).reduce((a, b) => a * b, 1);
}

/** One sentence per record: generation, where the inference time goes, the host bytes per voxel, the labels' shares. */
export function recordNotes(records: MicroctInferenceRecord[]): string[] {
  return records.map((r) => {
    const pct = (v: number): string => `${(100 * v).toFixed(2)}%`;
    const shares = Object.entries(r.labelFractions ?? {}).map(([k, v]) => `${k}s ${pct(v)}`).join(', ');
    const other = r.inference.overlap === 0.5 ? 0.25 : 0.5;
    return (
      `${shapeText(r.shape)}: generated in ${r.seconds.generate.toFixed(1)} s; of the ${minutes(r.seconds.inference)} of inference the network took ${((100 * r.seconds.network) / r.seconds.inference).toFixed(0)}% ` +
      `(the rest: reading and stitching windows); the host arrays hold ${(Object.values(r.host.arrays).reduce((a, b) => a + b, 0) / r.voxels).toFixed(0)} bytes a voxel ` +
      `(image, labels, stitched probabilities, weight sums, prediction), the process's peak ${(r.host.peakBytes / r.voxels).toFixed(1)}; ${shares} of the voxels; ` +
      `overlap ${other} would take ${windowsAt(r, other)} windows instead of ${r.inference.windows}; load average ${r.loadAverage.start.toFixed(1)} → ${r.loadAverage.end.toFixed(1)} on ${r.cpu.cores} cores.`
    );
  });
}

/** The lines every table of the records opens with: the machines and the configuration. */
export function recordsPreamble(records: MicroctInferenceRecord[]): string[] {
  const machines = [...new Set(records.map((r) => `${r.machine}, ${r.backend}`))].join('; ');
  const configs = [...new Set(records.map((r) => `${r.architecture.name} ${JSON.stringify(r.architecture.settings)}, ${r.params} parameters; ${shapeText(r.inference.patch)} windows reading ${shapeText(r.inference.context)}, overlap ${r.inference.overlap}, blend ${r.inference.blend}`))];
  return [`Machine: ${machines}.`, `Network and windows: ${configs.join('; ')}.`];
}

/** What summary.md and the README block both show: the machine and configuration, the table, the checks and notes. */
export function recordsOverview(records: MicroctInferenceRecord[]): string[] {
  return [
    ...recordsPreamble(records),
    '',
    ...recordsTable(records),
    '',
    ...devicePeakChecks(records).map((c) => `- ${c.sentence}`),
    ...recordNotes(records).map((n) => `- ${n}`),
  ];
}

/** results/microct-inference/summary.md, from the records alone. */
export function renderMicroctSummary(records: MicroctInferenceRecord[]): string {
  const lines = [
    '# Whole-volume cascade inference on synthetic microCT',
    '',
    'Generated from `records.json` by `npm run microct-inference -- --summary` (each record by the command in it).',
    'The sliding window keeps its stitched output in host memory and runs one window at a time on the device',
    '(MONAI `sliding_window_inference` with `device=cpu`): the device holds the parameters and one window.',
    '',
    ...recordsOverview(records),
    '',
    '## Each run',
    '',
  ];
  for (const r of records) {
    lines.push(
      `### ${shapeText(r.shape)}`,
      '',
      `- Command: \`${r.command}\``,
      `- Date: ${r.date}; load average (1 min) ${r.loadAverage.start.toFixed(2)} at the start, ${r.loadAverage.end.toFixed(2)} at the end`,
      `- Data: ${r.dataset.name} case ${r.dataset.case}, settings ${JSON.stringify(r.dataset.settings)}`,
      `- Weights: ${r.weights}`,
      `- Times: generation ${minutes(r.seconds.generate)}; inference ${minutes(r.seconds.inference)} (network ${minutes(r.seconds.network)}, ` +
        `reading and stitching windows ${minutes(r.seconds.inference - r.seconds.network)}); labels and Dice ${minutes(r.seconds.evaluate)}`,
      `- Device: peak ${r.device.peakBytes} bytes (${bytesText(r.device.peakBytes)}) at ${r.device.peakOp || '—'}; estimated ${r.device.estimatedPeakBytes} bytes at ${r.device.estimatedAt}; ` +
        `parameters ${bytesText(r.device.parametersBytes)}; budget ${r.device.budgetBytes === null ? 'none' : bytesText(r.device.budgetBytes)}`,
      `- Host: peak resident ${bytesText(r.host.peakBytes)} (${bytesText(r.host.peakBeforeInferenceBytes)} before inference); arrays: image ${bytesText(r.host.arrays.image)}, ` +
        `labels ${bytesText(r.host.arrays.label)}, stitched probabilities ${bytesText(r.host.arrays.probabilities)}, weight sums ${bytesText(r.host.arrays.weightSum)}, ` +
        `predicted labels ${bytesText(r.host.arrays.prediction)}`,
      `- Dice over the whole volume: ${Object.entries(r.dice).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(', ')}`,
      '',
    );
  }
  return `${lines.join('\n')}`;
}
