/**
 * Trial records (`trials.csv`, `cases.csv`, the learning curves `curves.csv`) and the human-readable
 * `summary.md`.
 *
 * - Each trial is appended to `trials.csv` the moment it finishes (synchronous append), so a crash or a
 *   killed run loses at most the trial in progress.
 * - `summary.md` is derived purely from the records (`regenerateSummary`): every number in it was measured
 *   and recorded by a trial; nothing is typed in by hand.
 *
 * CSV conventions: RFC 4180 (fields with a comma, quote or line break are quoted, quotes doubled), '\n'
 * between records, a header line first. NaN is written as `n/a`, null/absent as an empty field.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'csv-stringify/sync';
import { std, mean } from 'mathjs';
import { formatBytes } from '../config/index.js';
import { DICE_EMPTY_MASK_CONVENTION, HD95_EMPTY_MASK_CONVENTION, HD95_PERCENTILE_DEFINITION } from '../evaluation/index.js';
import type { SegmentationTask } from '../types.js';
import { pairedCaseRows, renderComparison, type ComparisonGroup } from './comparison.js';
import { plotSpecs, writePlots } from './plots.js';

export type TrialValue = string | number | null;

/**
 * One trial (one configuration × one seed). Keys are the columns below (`TRIAL_COLUMN_DOCS` documents each);
 * a column a row does not set is written empty. Per-region columns are named from the task's region/label
 * names: `dice_<name>`, `hd95_<name>`, `hd95_na_<name>` (see `regionColumns`).
 */
export type TrialRow = Record<string, TrialValue>;

/** What each trial column holds; the summary's legend is built from this. */
export const TRIAL_COLUMN_DOCS: Record<string, string> = {
  trial: 'trial index in the expansion of the experiment',
  trial_id: 'identity of the trial: a hash of its resolved configuration and of the data (a resumed sweep skips ids already recorded)',
  experiment: 'experiment name',
  strategy: 'memory strategy plugin',
  architecture: 'network architecture plugin',
  dataset: 'dataset plugin',
  input_shape: 'spatial extent [D×H×W] of one training input as the strategy feeds it to the network',
  seed: 'random seed of the trial (the summary averages over seeds)',
  backend: 'tfjs backend the trial ran on',
  epochs: 'training epochs',
  'dice_<region>': 'mean Dice over the validation cases for that region/label',
  'hd95_<region>': 'mean HD95 over the validation cases where it is defined (n/a cases excluded), in spacing_unit',
  'hd95_na_<region>': 'number of validation cases whose HD95 is n/a (exactly one of prediction/reference empty)',
  dice_mean: 'mean over regions of dice_<region>',
  params: 'trainable parameters of the network',
  peak_train_bytes:
    'measured peak device memory during training (high-water mark of distinct live backend buffers), per accelerator: where a strategy splits the step over several (spatial), the largest one\'s',
  peak_infer_bytes: 'measured peak device memory during inference (same measure, per accelerator)',
  meter: "how device memory was measured: 'cpu-data-storage', 'engine-data-ids' or 'webgpu-buffers' (core/memory/meter.ts)",
  pool_peak_train_bytes: "peak bytes of the backend's buffer pool during training: buffers in use plus the released ones it keeps for reuse (tfjs's WebGPU backend; empty elsewhere)",
  est_peak_train_bytes: "the strategy's estimate of peak training memory, made before running (per accelerator, as peak_train_bytes)",
  host_peak_bytes: 'peak bytes the strategy kept in host memory (swapped/offloaded tensors); 0 when it keeps none',
  rss_peak_bytes: "peak resident memory of the whole process (Node.js RSS, sampled after each step and inference), less the native kernels' cache of freed output memory",
  step_seconds: 'median wall-clock seconds per training step, the first (warm-up) step excluded',
  train_seconds: 'wall-clock seconds of the whole training',
  infer_seconds: 'wall-clock seconds of inference over the validation cases',
  status: "'ok', 'did-not-fit' (the device-memory budget was exceeded) or 'failed: <reason>'",
  settings: 'JSON of the full resolved trial configuration',
  started_at: 'ISO time the trial started',
  machine: 'CPU model, cores, memory and platform of the machine that ran the trial (filled by TrialRecorder)',
  final_loss: 'training loss of the last step',
  recompute_seconds: 'seconds spent recomputing checkpoint segments in backward, summed over the training steps',
  strategy_columns: "JSON: the strategy's own columns (its `report()`) and what each holds; the legend lists them",
  budget: "what the trial's training was limited by: 'steps N', 'voxels N' (input voxels seen) or 'seconds N' (training wall time)",
  steps: 'optimizer steps the trial ran',
  voxels_seen: 'input voxels the training steps saw (batch × the spatial extent of each step input)',
  curve_seconds: 'seconds of the validation passes for the learning curve during training (not in train_seconds)',
  validation_cases: 'number of validation cases',
  spacing_unit: "unit of the data set's voxel spacing, and so of hd95_<region>: 'mm', or 'voxel' for a generator whose grid has no physical size (records without it: mm)",
};

/** What each curves.csv column holds. */
export const CURVE_COLUMN_DOCS: Record<string, string> = {
  trial: 'trial index (as in trials.csv)',
  trial_id: 'trial identity (as in trials.csv)',
  strategy: 'memory strategy plugin',
  seed: 'trial seed',
  step: 'optimizer steps done when the validation ran',
  train_seconds: 'training wall time until then, validation passes excluded',
  voxels_seen: 'input voxels the training steps saw until then',
  loss: 'mean training loss over the steps since the previous point',
  eval_seconds: 'seconds of this validation pass',
  'dice_<region>': 'mean Dice over the validation cases',
  dice_mean: 'mean over regions of dice_<region>',
};

/** The strategy-declared columns of the rows (`strategy_columns`), name → meaning, in first-seen order. */
export function strategyColumnDocs(rows: TrialRow[]): Map<string, string> {
  const docs = new Map<string, string>();
  for (const r of rows) {
    if (typeof r.strategy_columns !== 'string' || r.strategy_columns === '') continue;
    try {
      for (const [name, meaning] of Object.entries(JSON.parse(r.strategy_columns) as Record<string, unknown>))
        if (!docs.has(name) && typeof meaning === 'string') docs.set(name, meaning);
    } catch {
      // an unreadable cell documents nothing
    }
  }
  return docs;
}

/** Columns before the per-region metric columns, in order. */
export const TRIAL_LEADING_COLUMNS = [
  'trial',
  'trial_id',
  'experiment',
  'strategy',
  'architecture',
  'dataset',
  'input_shape',
  'seed',
  'backend',
  'epochs',
] as const;

/** Columns after the per-region metric columns, in order. */
export const TRIAL_TRAILING_COLUMNS = [
  'dice_mean',
  'params',
  'peak_train_bytes',
  'peak_infer_bytes',
  'est_peak_train_bytes',
  'host_peak_bytes',
  'step_seconds',
  'train_seconds',
  'infer_seconds',
  'status',
  'settings',
  'started_at',
  'machine',
] as const;

/**
 * The fixed columns, in canonical order. The full header is: TRIAL_LEADING_COLUMNS, then the per-region
 * columns (in the order the row lists them), then TRIAL_TRAILING_COLUMNS, then any other column the row
 * has (in the row's order).
 */
export const TRIAL_COLUMNS: readonly string[] = [...TRIAL_LEADING_COLUMNS, ...TRIAL_TRAILING_COLUMNS];

export const CASE_COLUMNS = ['trial', 'trial_id', 'case', 'region', 'dice', 'hd95'] as const;

/** One point of a trial's learning curve (see CURVE_COLUMN_DOCS). */
export type CurveRow = Record<string, TrialValue>;

/** One validation case × one region of one trial. */
export interface CaseRow {
  trial: string | number;
  /** The trial's identity (absent in records from before resume existed). */
  trial_id?: string;
  case: string;
  region: string;
  dice: number;
  /** NaN when undefined (written as n/a). */
  hd95: number;
}

const FIXED = new Set<string>(TRIAL_COLUMNS);

/** True for `dice_<region>`, `hd95_<region>`, `hd95_na_<region>` (not `dice_mean`). */
export function isRegionColumn(column: string): boolean {
  return (column.startsWith('dice_') && column !== 'dice_mean') || column.startsWith('hd95_');
}

/** Region/label names of a task, in task order. */
export function regionNames(task: SegmentationTask): string[] {
  return task.kind === 'regions' ? task.regions.map((r) => r.name) : task.labels.map((l) => l.name);
}

/** Per-region columns for a task: dice_X, hd95_X, hd95_na_X for each region/label X, in task order. */
export function regionColumns(task: SegmentationTask | string[]): string[] {
  const names = Array.isArray(task) ? task : regionNames(task);
  return names.flatMap((n) => [`dice_${n}`, `hd95_${n}`, `hd95_na_${n}`]);
}

/** Canonical header for a set of column names (see TRIAL_COLUMNS). */
export function canonicalColumns(keys: Iterable<string>): string[] {
  const list = [...new Set(keys)];
  const region = list.filter((k) => isRegionColumn(k));
  const extra = list.filter((k) => !FIXED.has(k) && !isRegionColumn(k));
  return [...TRIAL_LEADING_COLUMNS, ...region, ...TRIAL_TRAILING_COLUMNS, ...extra];
}

/**
 * The per-trial metric columns from per-case results: dice_X = mean Dice over cases; hd95_X = mean HD95 over
 * the cases where it is defined (NaN when none is); hd95_na_X = the number of n/a cases; dice_mean = mean of
 * the dice_X. `perCase[c]` is evaluateCase's output for case c.
 */
export function aggregateCaseMetrics(perCase: { name: string; dice: number; hd95: number }[][]): TrialRow {
  const out: TrialRow = {};
  if (perCase.length === 0) return out;
  const names = perCase[0]!.map((r) => r.name);
  const diceMeans: number[] = [];
  for (const name of names) {
    const dices: number[] = [];
    const hds: number[] = [];
    let na = 0;
    for (const c of perCase) {
      const r = c.find((x) => x.name === name);
      if (!r) throw new Error(`aggregateCaseMetrics: a case has no result for region '${name}'`);
      dices.push(r.dice);
      if (Number.isNaN(r.hd95)) na++;
      else hds.push(r.hd95);
    }
    const d = dices.reduce((a, b) => a + b, 0) / dices.length;
    diceMeans.push(d);
    out[`dice_${name}`] = d;
    out[`hd95_${name}`] = hds.length ? hds.reduce((a, b) => a + b, 0) / hds.length : NaN;
    out[`hd95_na_${name}`] = na;
  }
  out.dice_mean = diceMeans.reduce((a, b) => a + b, 0) / diceMeans.length;
  return out;
}

/** One line describing this machine: CPU model × cores, memory, platform, Node version. */
export function describeMachine(): string {
  const cpus = os.cpus();
  const model = cpus[0]?.model?.trim() || 'unknown CPU';
  const generation = cpuGeneration();
  return `${model}${generation ? ` (${generation})` : ''}, ${cpus.length} cores, ${formatBytes(os.totalmem())} RAM, ${os.platform()} ${os.arch()}, Node ${process.version}`;
}

/**
 * The x86 CPU family and model from /proc/cpuinfo (Linux), e.g. 'family 26 model 2', or null. A VM can
 * name its CPU only 'AMD EPYC', which covers generations whose speeds differ by 2x (Zen 4, family 25;
 * Zen 5, family 26, with full-width 512-bit FMA units).
 */
export function cpuGeneration(cpuinfo?: string): string | null {
  let text = cpuinfo;
  if (text === undefined) {
    try {
      text = fs.readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      return null;
    }
  }
  const family = /^cpu family\s*:\s*(\d+)/m.exec(text)?.[1];
  const model = /^model\s*:\s*(\d+)/m.exec(text)?.[1];
  return family !== undefined && model !== undefined ? `family ${family} model ${model}` : null;
}

// ---------------------------------------------------------------------------------------------------------
// CSV

function formatValue(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') return Number.isNaN(v) ? 'n/a' : String(v);
  if (typeof v === 'string') return v;
  if (typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

/** '' → null; 'n/a' → NaN; a canonical number (String(Number(s)) === s) → number; else the string. */
function parseValue(s: string): TrialValue {
  if (s === '') return null;
  if (s === 'n/a') return NaN;
  const n = Number(s);
  if (!Number.isNaN(n) && String(n) === s) return n;
  return s;
}

/**
 * A record row as the text of its CSV fields, and back: how a queue worker sends rows to the coordinator
 * (JSON has no NaN, which the records write `n/a`). decodeRecord(encodeRecord(r)) writes the same CSV text as r.
 */
export function encodeRecord(row: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(Object.entries(row).filter(([, v]) => v !== undefined).map(([k, v]) => [k, formatValue(v)]));
}

export function decodeRecord(row: Record<string, string>): TrialRow {
  return Object.fromEntries(Object.entries(row).map(([k, v]) => [k, parseValue(v)]));
}

/** RFC 4180 parser: quoted fields may hold commas, doubled quotes and line breaks; accepts \n and \r\n. */
export function parseCsv(text: string): string[][] {
  const records: string[][] = [];
  let field = '';
  let record: string[] = [];
  let i = 0;
  const n = text.length;
  let inQuotes = false;
  let fieldStarted = false;
  while (i < n) {
    const ch = text[i]!;
    if (inQuotes) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        inQuotes = false;
        i++;
        continue;
      }
      field += ch;
      i++;
      continue;
    }
    if (ch === '"' && !fieldStarted) {
      inQuotes = true;
      fieldStarted = true;
      i++;
    } else if (ch === ',') {
      record.push(field);
      field = '';
      fieldStarted = false;
      i++;
    } else if (ch === '\n' || ch === '\r') {
      record.push(field);
      records.push(record);
      record = [];
      field = '';
      fieldStarted = false;
      i += ch === '\r' && text[i + 1] === '\n' ? 2 : 1;
    } else {
      field += ch;
      fieldStarted = true;
      i++;
    }
  }
  if (inQuotes) throw new Error('parseCsv: the text ends inside a quoted field (the file is truncated or corrupt)');
  if (fieldStarted || field !== '' || record.length > 0) {
    record.push(field);
    records.push(record);
  }
  return records;
}

function csvLine(values: string[]): string {
  return stringify([values], { record_delimiter: '\n', eof: true });
}

function readCsvFile(file: string): { header: string[]; rows: string[][] } | null {
  if (!fs.existsSync(file)) return null;
  const text = fs.readFileSync(file, 'utf8');
  if (text.trim() === '') return null;
  const records = parseCsv(text).filter((r) => !(r.length === 1 && r[0] === ''));
  const [header, ...rows] = records;
  return { header: header ?? [], rows };
}

function timestampName(dir: string, stem: string): string {
  const ts = new Date().toISOString().replace(/[:.]/g, '-');
  let name = `${stem}.${ts}.csv`;
  for (let k = 2; fs.existsSync(path.join(dir, name)); k++) name = `${stem}.${ts}-${k}.csv`;
  return name;
}

/**
 * Appends trial, case and curve records to `<dir>/trials.csv`, `cases.csv` and `curves.csv`,
 * synchronously, and keeps them whole across kills (`repair`, `dropAttempts`, `moveAside`). All three
 * follow one header rule (`appendRows`): rows are written with the file's header while it has their
 * columns; a row bringing a new column rewrites the file with the union, its old rows kept and the old
 * file copied aside, so each file always holds every record and the summary can be regenerated from them.
 */
export class TrialRecorder {
  readonly trialsFile: string;
  readonly casesFile: string;

  constructor(readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
    this.trialsFile = path.join(dir, 'trials.csv');
    this.casesFile = path.join(dir, 'cases.csv');
  }

  append(row: TrialRow): void {
    const full: TrialRow = { ...row };
    if (full.machine === undefined) full.machine = describeMachine();
    appendRows(this.trialsFile, [full], canonicalColumns);
  }

  /** Every trial recorded so far in trials.csv (what the summary is built from). */
  readAll(): TrialRow[] {
    return readTrials(this.dir);
  }

  /** Every per-case row recorded so far in cases.csv. */
  readAllCases(): CaseRow[] {
    return readCases(this.dir);
  }

  /** Appends per-case rows to cases.csv (one synchronous write; see `appendRecords`). */
  appendCases(rows: CaseRow[]): void {
    appendRows(this.casesFile, rows as unknown as Record<string, unknown>[], (keys) => [...new Set([...CASE_COLUMNS, ...keys])]);
  }

  /**
   * Appends one learning-curve point to curves.csv (one synchronous write, as soon as it is measured). A file
   * with other columns (another task's regions, an older layout) is kept under a timestamped name.
   */
  appendCurve(row: CurveRow): void {
    this.appendCurves([row]);
  }

  /** Appends learning-curve points to curves.csv in one synchronous write (a trial's, as a queue worker sends them). */
  appendCurves(rows: CurveRow[]): void {
    appendRows(path.join(this.dir, 'curves.csv'), rows, (keys) => keys);
  }

  /**
   * Drops a torn last record (a write cut by a kill: no final line break, an unterminated quote or too few
   * fields) from trials.csv, cases.csv and curves.csv, rewriting the file atomically; returns what it did.
   */
  repair(): string[] {
    const notes: string[] = [];
    for (const name of RECORD_FILES) {
      const file = path.join(this.dir, name);
      if (!fs.existsSync(file)) continue;
      const text = fs.readFileSync(file, 'utf8');
      const keep = completePrefix(text);
      if (keep === text.length) continue;
      writeAtomically(file, text.slice(0, keep));
      notes.push(`${file}: removed a torn last record (${text.length - keep} bytes) left by an interrupted run`);
    }
    return notes;
  }

  /** Removes the case and curve rows of these trial ids (what a killed attempt left before its trial row). */
  dropAttempts(ids: ReadonlySet<string>): number {
    let dropped = 0;
    for (const name of ['cases.csv', 'curves.csv']) {
      const file = path.join(this.dir, name);
      const csv = readCsvFile(file);
      if (!csv) continue;
      const at = csv.header.indexOf('trial_id');
      if (at < 0) continue;
      const rows = csv.rows.filter((r) => !ids.has(r[at] ?? ''));
      if (rows.length === csv.rows.length) continue;
      dropped += csv.rows.length - rows.length;
      writeAtomically(file, csvLine(csv.header) + rows.map((r) => csvLine(r)).join(''));
    }
    return dropped;
  }

  /**
   * Starts over without deleting anything: the records, summary, plots and models are renamed with a
   * timestamp (trials.<time>.csv, models.<time>/, …); returns the new names.
   */
  moveAside(): string[] {
    const ts = new Date().toISOString().replace(/[:.]/g, '-');
    const moved: string[] = [];
    for (const name of fs.existsSync(this.dir) ? fs.readdirSync(this.dir) : []) {
      const m = /^(trials|cases|curves|paired|summary|context[^.]*)\.(csv|md)$|^(models|plots)$/.exec(name);
      if (!m || name.startsWith('context')) continue;
      const stem = m[1] ?? m[3]!;
      const ext = m[2] ? `.${m[2]}` : '';
      let target = `${stem}.${ts}${ext}`;
      for (let k = 2; fs.existsSync(path.join(this.dir, target)); k++) target = `${stem}.${ts}-${k}${ext}`;
      fs.renameSync(path.join(this.dir, name), path.join(this.dir, target));
      moved.push(path.join(this.dir, target));
    }
    return moved;
  }
}

const RECORD_FILES = ['trials.csv', 'cases.csv', 'curves.csv'];

/** What mergeRecords did, per folder. */
export interface MergeReport {
  /** Trials in the merged records. */
  trials: number;
  folders: { dir: string; trials: number; added: number }[];
  /** Trial ids found in more than one folder (the first folder's record is kept). */
  duplicates: string[];
}

/**
 * Joins the records of several results folders of one experiment (the shards of `--shard k/n`, each run on
 * its own) into `into`: every trial once, by trial id (the first folder holding it wins; `into`'s own
 * records come first, so merging again adds only what is new), in expansion order (the `trial` column), with
 * its per-case rows and curve points, as one uninterrupted run would have written them. The records are
 * written through TrialRecorder into a scratch folder and renamed into place, so a kill leaves the old
 * files or the new ones. The summary is for the caller (regenerateTables).
 */
export function mergeRecords(into: string, from: string[]): MergeReport {
  const target = path.resolve(into);
  const sources = [target, ...from.map((d) => path.resolve(d)).filter((d) => d !== target)];
  const kept: { row: TrialRow; source: string }[] = [];
  const seen = new Set<string>();
  const duplicates: string[] = [];
  const folders: MergeReport['folders'] = [];
  const experiments = new Map<string, string>();
  for (const dir of sources) {
    const rows = readTrials(dir);
    let added = 0;
    for (const row of rows) {
      const name = str(row.experiment);
      if (name && !experiments.has(name)) experiments.set(name, dir);
      const id = str(row.trial_id) || `${dir}#${str(row.trial)}`;
      if (seen.has(id)) {
        duplicates.push(id);
        continue;
      }
      seen.add(id);
      kept.push({ row, source: dir });
      added++;
    }
    if (dir !== target || rows.length) folders.push({ dir, trials: rows.length, added });
  }
  if (experiments.size > 1)
    throw new Error(`the folders hold records of different experiments (${[...experiments].map(([e, d]) => `${e} in ${d}`).join('; ')}); merge the shards of one experiment`);
  const index = (r: TrialRow): number => (typeof r.trial === 'number' ? r.trial : Number.POSITIVE_INFINITY);
  kept.sort((a, b) => index(a.row) - index(b.row));
  // Each trial's case and curve rows come from the folder whose trial record was kept.
  const keptIds = new Map(kept.map((k) => [str(k.row.trial_id), k.source]));
  const order = new Map(kept.map((k, i) => [str(k.row.trial_id), i]));
  const fromKept = <R extends { trial_id?: unknown }>(read: (dir: string) => R[]): R[] =>
    sources
      .flatMap((dir) => read(dir).filter((r) => keptIds.get(str(r.trial_id as TrialValue)) === dir))
      .map((r, i) => ({ r, i, at: order.get(str(r.trial_id as TrialValue))! }))
      .sort((a, b) => a.at - b.at || a.i - b.i)
      .map((x) => x.r);
  const cases = fromKept(readCases);
  const curves = fromKept(readCurves);
  const columns = [...new Set(kept.flatMap((k) => Object.keys(k.row)))];
  const scratch = path.join(target, `.merge-${process.pid}`);
  fs.rmSync(scratch, { recursive: true, force: true });
  const recorder = new TrialRecorder(scratch);
  for (const { row } of kept) recorder.append(Object.fromEntries(columns.map((c) => [c, row[c] ?? null])));
  recorder.appendCases(cases);
  recorder.appendCurves(curves);
  for (const name of RECORD_FILES) {
    const file = path.join(scratch, name);
    if (fs.existsSync(file)) fs.renameSync(file, path.join(target, name));
  }
  fs.rmSync(scratch, { recursive: true, force: true });
  return { trials: kept.length, folders, duplicates };
}

/** Writes a file through a temporary file and a rename, so a kill leaves the old or the new file. */
function writeAtomically(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

/**
 * The length of the longest prefix of a CSV text made of whole records with the header's field count:
 * what survives of a file whose last write was cut.
 */
export function completePrefix(text: string): number {
  let end = text.length;
  for (;;) {
    if (end === 0) return 0;
    if (text[end - 1] !== '\n') {
      end = text.lastIndexOf('\n', end - 1) + 1;
      continue;
    }
    let records: string[][];
    try {
      records = parseCsv(text.slice(0, end)).filter((r) => !(r.length === 1 && r[0] === ''));
    } catch {
      end = text.lastIndexOf('\n', end - 2) + 1;
      continue;
    }
    const width = records[0]?.length ?? 0;
    if (records.length <= 1 || records[records.length - 1]!.length === width) return end;
    end = text.lastIndexOf('\n', end - 2) + 1;
  }
}

/**
 * Appends records to a CSV file (trials.csv, cases.csv, curves.csv) in one synchronous write, with the
 * file's header when it has every column the rows set (a column a row lacks is left empty). When the rows
 * bring a column the header lacks (e.g. a metric added later), or the file cannot be read, the old file is
 * copied to `<stem>.<timestamp>.csv` (kept untouched, a warning names it) and the file is replaced, in one
 * rename, by one with the columns `order` gives for the union: the old rows (their new columns empty)
 * followed by the new ones, so the file always holds every record. If the old file cannot be parsed, or
 * has rows with a wrong number of fields, the new file holds the new rows only, and the warning says so.
 */
function appendRows(file: string, rows: Record<string, unknown>[], order: (keys: string[]) => string[]): void {
  if (rows.length === 0) return;
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r).filter((k) => r[k] !== undefined)))];
  const body = (header: string[]): string => rows.map((r) => csvLine(header.map((c) => formatValue(r[c])))).join('');
  let existing: { header: string[]; rows: string[][] } | null;
  let unreadable: string | null = null;
  try {
    existing = readCsvFile(file);
  } catch (e) {
    existing = null;
    unreadable = (e as Error).message;
  }
  if (existing && existing.header.length > 0 && keys.every((k) => existing!.header.includes(k))) {
    fs.appendFileSync(file, body(existing.header));
    return;
  }
  if (!existing && !unreadable) {
    const header = order(keys);
    fs.appendFileSync(file, csvLine(header) + body(header));
    return;
  }
  const dir = path.dirname(file);
  const name = path.basename(file);
  const oldHeader = existing?.header ?? [];
  const header = order([...oldHeader, ...keys]);
  const ragged = existing ? existing.rows.filter((r) => r.length !== oldHeader.length).length : 0;
  const carry = existing !== null && ragged === 0;
  const backup = timestampName(dir, path.basename(file, '.csv'));
  let text = csvLine(header);
  if (carry) {
    for (const r of existing!.rows) {
      const byName = new Map(oldHeader.map((c, i) => [c, r[i]!]));
      text += csvLine(header.map((c) => byName.get(c) ?? ''));
    }
  }
  // The old file is copied aside first and then replaced in one rename: a kill at any point leaves a
  // whole file (old or new).
  if (fs.existsSync(file)) fs.copyFileSync(file, path.join(dir, backup));
  writeAtomically(file, text + body(header));
  const added = header.filter((c) => !oldHeader.includes(c));
  console.warn(
    `TrialRecorder: ${file} had a different header (new columns: ${added.join(', ') || 'none'}); ` +
      `the old file is kept as ${path.join(dir, backup)}. ` +
      (carry
        ? `The new ${name} holds its ${existing!.rows.length} rows with the new columns empty, plus the new ${rows.length === 1 ? 'row' : 'rows'}.`
        : `The old file could not be read (${unreadable ?? `${ragged} rows with a wrong number of fields`}); ` +
          `the new ${name} starts with the new ${rows.length === 1 ? 'row' : 'rows'} only.`),
  );
}

/** Reads `<dir>/curves.csv` back (empty array when absent). */
export function readCurves(dir: string): CurveRow[] {
  const csv = readCsvFile(path.join(dir, 'curves.csv'));
  if (!csv) return [];
  return csv.rows.map((r) => Object.fromEntries(csv.header.map((c, j) => [c, parseValue(r[j] ?? '')])));
}

/** What the summary reads besides trials.csv: the per-case rows and the learning curves. */
export function readSummaryInputs(dir: string): Pick<SummaryOptions, 'cases' | 'curves'> {
  return { cases: readCases(dir), curves: readCurves(dir) };
}

/** Reads `<dir>/trials.csv` back (empty array when absent). Values: '' → null, n/a → NaN, numbers → number. */
export function readTrials(dir: string): TrialRow[] {
  const file = path.join(dir, 'trials.csv');
  const csv = readCsvFile(file);
  if (!csv) return [];
  return csv.rows.map((r, i) => {
    if (r.length !== csv.header.length) {
      throw new Error(
        `${file}: record ${i + 2} has ${r.length} fields but the header has ${csv.header.length}; ` +
          'the file was edited or truncated — fix or remove that line',
      );
    }
    const row: TrialRow = {};
    csv.header.forEach((c, j) => (row[c] = parseValue(r[j]!)));
    return row;
  });
}

/** Reads `<dir>/cases.csv` back (empty array when absent). */
export function readCases(dir: string): CaseRow[] {
  const csv = readCsvFile(path.join(dir, 'cases.csv'));
  if (!csv) return [];
  const idx = (c: string): number => csv.header.indexOf(c);
  return csv.rows.map((r) => {
    const num = (c: string): number => {
      const v = parseValue(r[idx(c)] ?? '');
      return typeof v === 'number' ? v : NaN;
    };
    const trial = parseValue(r[idx('trial')] ?? '');
    const id = idx('trial_id') >= 0 ? (r[idx('trial_id')] ?? '') : '';
    return {
      trial: trial === null ? '' : trial,
      ...(id ? { trial_id: id } : {}),
      case: r[idx('case')] ?? '',
      region: r[idx('region')] ?? '',
      dice: num('dice'),
      hd95: num('hd95'),
    };
  });
}

// ---------------------------------------------------------------------------------------------------------
// Summary

export interface SummaryOptions {
  /** Time written in the summary; default now. */
  date?: Date;
  /** Backends to list besides those the rows name. */
  backends?: string[];
  /** Per-case rows (cases.csv): the paired comparison needs them. */
  cases?: CaseRow[];
  /** Learning-curve points (curves.csv): time to target needs them. */
  curves?: CurveRow[];
}

/** Axes always shown, then those shown only when they vary. */
const SHOWN_AXES = ['strategy', 'architecture', 'input_shape'] as const;
const OPTIONAL_AXES = ['experiment', 'dataset', 'backend', 'epochs'] as const;
/**
 * Settings paths that never define a configuration: they differ between repeats (seeds) of one
 * configuration. `label` is the runner's trial label (e.g. `strategy=patch seed=2`), which repeats the axis
 * values that the structured settings already hold, plus the seed.
 */
export const SUMMARY_IGNORED_SETTINGS = /^label$|(^|\.)(seeds?|trial|trial_?id|started_?at|out(put)?_?dir|results?_?dir)$/i;

function flattenSettings(value: unknown, prefix: string, out: Map<string, string>): void {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flattenSettings(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (prefix) {
    out.set(prefix, JSON.stringify(value));
  }
}

function settingsOf(row: TrialRow): Map<string, string> {
  const out = new Map<string, string>();
  if (typeof row.settings !== 'string' || row.settings === '') return out;
  try {
    flattenSettings(JSON.parse(row.settings), '', out);
  } catch {
    // unparseable settings: no settings axes from this row
  }
  return out;
}

const str = (v: TrialValue | undefined): string => (v === null || v === undefined ? '' : typeof v === 'number' && Number.isNaN(v) ? 'n/a' : String(v));

function md(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function finiteNumbers(rows: TrialRow[], column: string): number[] {
  const out: number[] = [];
  for (const r of rows) {
    const v = r[column];
    if (typeof v === 'number' && Number.isFinite(v)) out.push(v);
  }
  return out;
}

/** mean ± sample std (n − 1) with a formatter; n = 1 → the value alone; fewer values than rows → "(k of n)". */
function stat(values: number[], rowsInGroup: number, fmt: (v: number) => string, fmtStd = fmt): string {
  if (values.length === 0) return '—';
  const m = mean(values) as number;
  let s = fmt(m);
  if (values.length > 1) s += ` ± ${fmtStd(std(values, 'unbiased') as unknown as number)}`;
  if (values.length < rowsInGroup) s += ` (${values.length} of ${rowsInGroup})`;
  return s;
}

/** Bytes as "1.50 GiB ± 12.3 MiB"-style: std in the mean's unit so the two compare at a glance. */
function bytesPair(values: number[], rowsInGroup: number): string {
  if (values.length === 0) return '—';
  const m = mean(values) as number;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(m) >= 1024 ** (i + 1) && i < units.length - 1) i++;
  const f = (v: number): string => (i === 0 ? v.toFixed(0) : (v / 1024 ** i).toFixed(2)) + ` ${units[i]}`;
  return stat(values, rowsInGroup, f);
}

const fmt3 = (v: number): string => v.toFixed(3);
const fmt2 = (v: number): string => v.toFixed(2);
const fmtCount = (v: number): string =>
  Math.abs(v) >= 1e6 ? `${(v / 1e6).toFixed(2)} M` : Math.abs(v) >= 1e3 ? `${(v / 1e3).toFixed(1)} k` : v.toFixed(0);

interface Group {
  key: string;
  axes: Record<string, string>;
  rows: TrialRow[];
}

function comparisonInput(groups: ComparisonGroup[], regions: string[], options: SummaryOptions) {
  return { groups, regions, cases: options.cases ?? [], curves: options.curves ?? [] };
}

/** The configurations of a summary: trials grouped by every axis but the seed. */
function summaryGroups(rows: TrialRow[]): {
  groups: Map<string, Group>;
  axisNames: string[];
  axisValues: (r: TrialRow) => Record<string, string>;
  settingAxes: string[];
} {
  // Axes: the fixed ones, plus each settings leaf that varies among trials sharing the fixed axes.
  const varies = (col: string): boolean => new Set(rows.map((r) => str(r[col]))).size > 1;
  const fixedAxes = [...SHOWN_AXES, ...OPTIONAL_AXES.filter((a) => varies(a))];
  const fixedKey = (r: TrialRow): string => JSON.stringify(fixedAxes.map((a) => str(r[a])));
  const settings = new Map(rows.map((r) => [r, settingsOf(r)]));
  const byFixed = new Map<string, TrialRow[]>();
  for (const r of rows) byFixed.set(fixedKey(r), [...(byFixed.get(fixedKey(r)) ?? []), r]);
  const allPaths = [...new Set(rows.flatMap((r) => [...settings.get(r)!.keys()]))].sort();
  const settingAxes = allPaths.filter(
    (p) =>
      !SUMMARY_IGNORED_SETTINGS.test(p) &&
      [...byFixed.values()].some((g) => new Set(g.map((r) => settings.get(r)!.get(p) ?? '—')).size > 1),
  );
  const axisValues = (r: TrialRow): Record<string, string> => {
    const a: Record<string, string> = {};
    for (const f of fixedAxes) a[f] = str(r[f]);
    for (const p of settingAxes) a[p] = settings.get(r)!.get(p) ?? '—';
    return a;
  };
  const groups = new Map<string, Group>();
  for (const r of rows) {
    const axes = axisValues(r);
    const key = JSON.stringify(axes);
    if (!groups.has(key)) groups.set(key, { key, axes, rows: [] });
    groups.get(key)!.rows.push(r);
  }
  const axisNames = [...fixedAxes, ...settingAxes];
  return { groups, axisNames, axisValues, settingAxes };
}

/**
 * The unit of the rows' HD95 columns, for labels: 'mm' or 'voxels' from their spacing_unit (a record
 * without the column is mm), or both, naming the column, where the rows mix data sets of both.
 */
export function hd95Unit(rows: TrialRow[]): string {
  const units = [...new Set(rows.map((r) => (str(r.spacing_unit) === 'voxel' ? 'voxels' : 'mm')))];
  return units.length === 1 ? units[0]! : 'mm or voxels, see spacing_unit';
}

/** Region names of the rows' dice_<region> columns, in column order. */
export function rowRegions(rows: TrialRow[]): string[] {
  const columns = canonicalColumns(rows.flatMap((r) => Object.keys(r)));
  return [...new Set(columns.filter((c) => c.startsWith('dice_') && c !== 'dice_mean').map((c) => c.slice('dice_'.length)))];
}

/** Renders summary.md's text (pure; see writeSummary). */
export function renderSummary(experimentName: string, rows: TrialRow[], options: SummaryOptions = {}): string {
  const date = options.date ?? new Date();
  const columns = canonicalColumns(rows.flatMap((r) => Object.keys(r)));
  const regions = rowRegions(rows);
  const ok = rows.filter((r) => r.status === 'ok');
  const unit = hd95Unit(ok.length ? ok : rows);
  const notOk = rows.filter((r) => r.status !== 'ok');
  const { groups, axisNames, axisValues, settingAxes } = summaryGroups(rows);

  const lines: string[] = [];
  lines.push(`# ${experimentName} — results`, '');
  lines.push(`- Generated: ${date.toISOString()} (from the records: trials.csv, cases.csv, curves.csv; regenerate with \`npm run tables -- <experiment>\`)`);
  const starts = rows.map((r) => str(r.started_at)).filter((s) => s !== '').sort();
  if (starts.length) {
    const [first, last] = [starts[0]!, starts[starts.length - 1]!];
    lines.push(`- Trials started: ${first === last ? first : `${first} … ${last}`}`);
  }
  const machines = [...new Set(rows.map((r) => str(r.machine)).filter((s) => s !== ''))];
  if (machines.length) for (const m of machines) lines.push(`- Machine: ${m}`);
  else lines.push(`- Machine: not recorded in trials.csv; this summary was written on ${describeMachine()}`);
  const backends = [...new Set([...rows.map((r) => str(r.backend)).filter((s) => s !== ''), ...(options.backends ?? [])])];
  lines.push(`- Backend${backends.length === 1 ? '' : 's'}: ${backends.length ? backends.join(', ') : 'not recorded'}`);
  const counts = new Map<string, number>();
  for (const r of rows) {
    const s = str(r.status) || '(no status)';
    const k = s.startsWith('failed') ? 'failed' : s;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  lines.push(`- Trials: ${rows.length} (${[...counts].map(([k, n]) => `${n} ${k}`).join(', ') || 'none'})`, '');

  // Results table over ok trials.
  lines.push('## Results (mean ± sample std over seeds; status ok only)', '');
  if (ok.length === 0) {
    lines.push('No trial finished with status ok.', '');
  } else {
    const has = (c: string): boolean => ok.some((r) => typeof r[c] === 'number' && Number.isFinite(r[c] as number));
    type Col = { title: string; cell: (g: TrialRow[]) => string };
    const cols: Col[] = [];
    for (const name of regions) cols.push({ title: `Dice ${name}`, cell: (g) => stat(finiteNumbers(g, `dice_${name}`), g.length, fmt3) });
    if (columns.includes('dice_mean')) cols.push({ title: 'Dice mean', cell: (g) => stat(finiteNumbers(g, 'dice_mean'), g.length, fmt3) });
    for (const name of regions) {
      cols.push({
        title: `HD95 ${name} (${unit})`,
        cell: (g) => {
          const vals = finiteNumbers(g, `hd95_${name}`);
          // n/a: cases counted by the trial (hd95_na_X), or whole trials whose HD95 is NaN.
          const naCases = finiteNumbers(g, `hd95_na_${name}`).reduce((a, b) => a + b, 0);
          const naTrials = g.filter((r) => typeof r[`hd95_${name}`] === 'number' && Number.isNaN(r[`hd95_${name}`])).length;
          let s = stat(vals, vals.length, fmt2);
          if (naCases > 0) s += ` (${naCases} n/a case${naCases === 1 ? '' : 's'})`;
          else if (naTrials > 0) s += ` (${naTrials} n/a trial${naTrials === 1 ? '' : 's'})`;
          return s;
        },
      });
    }
    if (has('params')) {
      cols.push({
        title: 'Params',
        cell: (g) => {
          // A count fixed by the architecture: one value when all seeds agree.
          const v = finiteNumbers(g, 'params');
          return v.length === g.length && v.every((x) => x === v[0]) ? fmtCount(v[0]!) : stat(v, g.length, fmtCount);
        },
      });
    }
    cols.push({ title: 'Peak train mem', cell: (g) => bytesPair(finiteNumbers(g, 'peak_train_bytes'), g.length) });
    cols.push({ title: 'Peak infer mem', cell: (g) => bytesPair(finiteNumbers(g, 'peak_infer_bytes'), g.length) });
    if (ok.some((r) => typeof r.host_peak_bytes === 'number' && (r.host_peak_bytes as number) > 0)) {
      cols.push({ title: 'Host peak mem', cell: (g) => bytesPair(finiteNumbers(g, 'host_peak_bytes'), g.length) });
    }
    cols.push({ title: 'Step (s)', cell: (g) => stat(finiteNumbers(g, 'step_seconds'), g.length, fmt2) });
    cols.push({ title: 'Train (s)', cell: (g) => stat(finiteNumbers(g, 'train_seconds'), g.length, fmt2) });
    if (has('infer_seconds')) cols.push({ title: 'Infer (s)', cell: (g) => stat(finiteNumbers(g, 'infer_seconds'), g.length, fmt2) });

    const header = [...axisNames, 'n', ...cols.map((c) => c.title)];
    lines.push(`| ${header.map(md).join(' | ')} |`);
    lines.push(`|${header.map(() => '---').join('|')}|`);
    for (const g of groups.values()) {
      const okRows = g.rows.filter((r) => r.status === 'ok');
      if (okRows.length === 0) continue;
      const cells = [...axisNames.map((a) => g.axes[a] ?? ''), String(okRows.length), ...cols.map((c) => c.cell(okRows))];
      lines.push(`| ${cells.map(md).join(' | ')} |`);
    }
    lines.push('');
  }

  lines.push(...renderComparison(comparisonInput([...groups.values()], regions, options)));
  if ((options.cases ?? []).length) lines.push('Every paired difference (configuration × seed × case × region) is in `paired.csv`, written with this summary.', '');

  const plots = plotSpecs(rows, options.curves ?? []);
  if (plots.length) {
    lines.push('## Plots', '');
    for (const p of plots) lines.push(`![${p.title}](plots/${p.file})`, '');
  }

  // Trials that did not finish ok.
  lines.push('## Trials that did not fit or failed', '');
  if (notOk.length === 0) {
    lines.push('None.', '');
  } else {
    const header = ['trial', ...axisNames, 'seed', 'status', 'est. peak train', 'peak train (until stop)'];
    lines.push(`| ${header.map(md).join(' | ')} |`);
    lines.push(`|${header.map(() => '---').join('|')}|`);
    for (const r of notOk) {
      const axes = axisValues(r);
      const b = (c: string): string => (typeof r[c] === 'number' && Number.isFinite(r[c] as number) ? formatBytes(r[c] as number) : '—');
      const cells = [str(r.trial), ...axisNames.map((a) => axes[a] ?? ''), str(r.seed), str(r.status) || '(no status)', b('est_peak_train_bytes'), b('peak_train_bytes')];
      lines.push(`| ${cells.map(md).join(' | ')} |`);
    }
    lines.push('');
  }

  // Legend.
  lines.push('## Legend', '');
  lines.push(
    `- Rows group trials by ${axisNames.map((a) => `\`${a}\``).join(', ')}; the seed is not an axis: each row is ` +
      'the mean ± sample standard deviation (n − 1 in the denominator, mathjs `std`) over the seeds of one ' +
      'configuration, and `n` counts the trials with status ok. With n = 1 no deviation is shown. ' +
      '"(k of n)" marks a column recorded by only k of the n trials.',
  );
  if (settingAxes.length) {
    lines.push('- Columns named like `strategy.settings.x` are settings (from the `settings` JSON) that differ between configurations sharing strategy, architecture and input shape.');
  }
  lines.push(`- Dice: per region, the mean over validation cases; ${DICE_EMPTY_MASK_CONVENTION}`);
  lines.push(`- HD95 (${unit}): ${HD95_PERCENTILE_DEFINITION} ${HD95_EMPTY_MASK_CONVENTION} "(k n/a cases)" sums these cases over the seeds.`);
  lines.push(
    '- Peak memory: the high-water mark of bytes held by distinct live backend buffers (a reshape or clone ' +
      'sharing a buffer counts once; kernel temporaries count), measured by DeviceMemoryMeter — not ' +
      '`tf.memory().numBytes`, which counts shared buffers once per tensor.',
  );
  lines.push('- Step (s): median wall-clock seconds per training step, the first (warm-up) step excluded; Train (s): the whole training.');
  lines.push(
    `- ΔDice: per validation case, region and seed, the Dice of a configuration minus the reference's (same seed, same case); ` +
      'the mean over seeds and cases, with a percentile bootstrap interval that resamples seeds and cases independently ' +
      '(comparison.resamples draws, fixed seed: the same records give the same interval), and the two-sided Wilcoxon ' +
      'signed-rank p over the cases (each case\'s difference averaged over the seeds; @stdlib/stats-wilcoxon, exact below 50 cases). ' +
      '"mean" is the mean over regions.',
  );
  lines.push('- trials.csv columns:');
  for (const [c, doc] of Object.entries(TRIAL_COLUMN_DOCS)) lines.push(`  - \`${c}\`: ${doc}`);
  if ((options.curves ?? []).length) {
    lines.push('- curves.csv columns:');
    for (const [c, doc] of Object.entries(CURVE_COLUMN_DOCS)) lines.push(`  - \`${c}\`: ${doc}`);
  }
  const own = [...strategyColumnDocs(rows)].filter(([c]) => !(c in TRIAL_COLUMN_DOCS));
  if (own.length) {
    lines.push("- Strategies' own columns (from their `strategy_columns`):");
    for (const [c, doc] of own) lines.push(`  - \`${c}\`: ${doc}`);
  }
  lines.push('');
  return lines.join('\n');
}

/** Writes `<dir>/summary.md` from the rows; returns its path. */
export function writeSummary(dir: string, experimentName: string, rows: TrialRow[], options: SummaryOptions = {}): string {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'summary.md');
  fs.writeFileSync(file, renderSummary(experimentName, rows, options));
  if ((options.cases ?? []).length) {
    const paired = pairedCaseRows(comparisonInput([...summaryGroups(rows).groups.values()], rowRegions(rows), options));
    const header = ['comparison', 'seed', 'case', 'region', 'dice', 'reference_dice', 'difference', 'trial', 'reference_trial'];
    fs.writeFileSync(path.join(dir, 'paired.csv'), csvLine(header) + paired.map((r) => csvLine(header.map((c) => formatValue(r[c])))).join(''));
  }
  return file;
}

/** Rewrites summary.md, paired.csv and the plots from the records alone; returns the files written. */
export async function regenerateTables(dir: string, options: SummaryOptions = {}): Promise<string[]> {
  const summary = regenerateSummary(dir, options);
  return [summary, ...(await writePlots(dir, readTrials(dir), readCurves(dir)))];
}

/** Rewrites `<dir>/summary.md` from the records alone (trials.csv, cases.csv, curves.csv); returns its path. */
export function regenerateSummary(dir: string, options: SummaryOptions = {}): string {
  options = { ...readSummaryInputs(dir), ...options };
  const rows = readTrials(dir);
  if (rows.length === 0) {
    throw new Error(`regenerateSummary: ${path.join(dir, 'trials.csv')} is missing or has no trials; run the experiment first`);
  }
  const names = [...new Set(rows.map((r) => str(r.experiment)).filter((s) => s !== ''))];
  const name = names.length ? names.join(', ') : path.basename(path.resolve(dir));
  return writeSummary(dir, name, rows, options);
}
