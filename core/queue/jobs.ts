/**
 * What travels through the queue. A job is one trial, its id the trial id (the hash of its resolved
 * configuration and data, core/experiment/runner.ts), so adding a trial twice is one job (BullMQ ignores an
 * id it holds). The job carries the resolved trial, not the experiment file, so a worker needs the project
 * and the data but not the coordinator's copy of the YAML or its `--set` overrides. A result carries the
 * trial's record rows as the text of their CSV fields (encodeRecord: JSON has no NaN), which the
 * coordinator, the only writer of the results folder, appends as a local run would.
 */
import { hostname } from 'node:os';
import { isAbsolute, relative } from 'node:path';
import type { Experiment, TrialConfig } from '../config/index.js';
import { decodeRecord, encodeRecord, type CaseRow, type CurveRow, type TrialRecords, type TrialRow } from '../experiment/index.js';

export interface TrialJob {
  /** The experiment without its trials: what a trial's record names and where its relative paths start. */
  experiment: Omit<Experiment, 'trials' | 'raw'> & {
    /** The experiment file relative to the coordinator's project folder (null when outside it). */
    fileInProject: string | null;
  };
  trial: TrialConfig;
  trialId: string;
  /** The sweep's strategy columns, so the row has a local run's header. */
  strategyColumns: string[];
  /** Where the model goes: the coordinator's `--models` (a folder it says the workers share), else its <results>/models. */
  modelsDir: string;
  /** True when modelsDir came from `--models`: a worker on another machine writes there too. */
  modelsShared: boolean;
  /** The coordinator's `--backend`, if given (a worker's own `--backend` wins). */
  backend: string | null;
  coordinator: { host: string; resultsDir: string };
}

export interface TrialJobResult {
  row: Record<string, string>;
  cases: Record<string, string>[];
  curves: Record<string, string>[];
  /** `host:pid` of the worker that ran it. */
  worker: string;
}

/** The job of one trial. */
export function trialJob(
  exp: Experiment,
  trial: TrialConfig,
  trialId: string,
  opts: { strategyColumns: string[]; modelsDir: string; modelsShared?: boolean; backend?: string; resultsDir: string; projectRoot?: string },
): TrialJob {
  const { trials: _trials, raw: _raw, ...experiment } = exp;
  const inProject = opts.projectRoot ? relative(opts.projectRoot, exp.file) : null;
  return {
    experiment: { ...experiment, fileInProject: inProject && !inProject.startsWith('..') && !isAbsolute(inProject) ? inProject : null },
    trial,
    trialId,
    strategyColumns: opts.strategyColumns,
    modelsDir: opts.modelsDir,
    modelsShared: opts.modelsShared ?? false,
    backend: opts.backend ?? null,
    coordinator: { host: hostname(), resultsDir: opts.resultsDir },
  };
}

export function encodeResult(records: TrialRecords, worker: string): TrialJobResult {
  return { row: encodeRecord(records.row), cases: records.cases.map((c) => encodeRecord(c as unknown as Record<string, unknown>)), curves: records.curves.map(encodeRecord), worker };
}

export function decodeResult(result: TrialJobResult): { row: TrialRow; cases: CaseRow[]; curves: CurveRow[] } {
  return { row: decodeRecord(result.row), cases: result.cases.map((c) => decodeRecord(c) as unknown as CaseRow), curves: result.curves.map(decodeRecord) };
}
