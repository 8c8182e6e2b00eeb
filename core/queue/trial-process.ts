/**
 * The sandbox: a worker runs its trials in child processes (child_process.fork), each receiving a job over
 * IPC, running the trial with a runner of its own (ExperimentRunner.runOne) and sending its record rows
 * back. A crash or an out-of-memory kill ends that process and that trial only; the worker lives on, keeps
 * renewing its other jobs' locks, reports the trial failed and starts a new process for the next one. The
 * worker's event loop stays free for BullMQ's lock renewal while the child computes. A child that finished
 * a trial takes the worker's next one (loading tfjs and the plugins takes seconds; a fresh runner per trial
 * keeps nothing from the last one but the loaded code, as a local sweep does).
 *
 * A child must not outlive its worker: a worker killed with SIGKILL cannot tell it, and its job goes to
 * another worker once the lock expires. The trial's main thread is busy for seconds at a time, so a watchdog
 * thread (its own event loop) checks twice a second that the parent is still the one that started it, and
 * kills the process when it is not.
 */
import { Worker as Thread } from 'node:worker_threads';
import type { ExperimentRunner } from '../experiment/index.js';
import type { Experiment } from '../config/index.js';
import { encodeResult, type TrialJob, type TrialJobResult } from './jobs.js';

/** What the worker sends its child: the job, and where this worker keeps the model. */
export interface TrialRequest {
  job: TrialJob;
  /** The experiment file as this machine sees it (for relative dataset paths). */
  experimentFile: string;
  modelsDir: string;
  backend?: string;
  worker: string;
}

/** What the child sends back. */
export type TrialReply = { type: 'result'; result: TrialJobResult } | { type: 'error'; message: string };

const WATCHDOG = `
const { workerData } = require('node:worker_threads');
setInterval(() => { if (process.ppid !== workerData.parent) process.kill(process.pid, 'SIGKILL'); }, 500);
`;

/**
 * The child's side: runs each TrialRequest it is sent, one at a time, and replies. `makeRunner` builds a
 * runner with the plugin catalog (the composition root lives in experiments/cli, which core does not import).
 */
export function serveTrialProcess(makeRunner: () => ExperimentRunner): void {
  if (!process.send) throw new Error('serveTrialProcess: this process was not started by a worker (no IPC channel); run `npm run worker`');
  new Thread(WATCHDOG, { eval: true, workerData: { parent: process.ppid } }).unref();
  process.on('message', (request: TrialRequest) => {
    run(makeRunner(), request).then(
      (result) => process.send!({ type: 'result', result } satisfies TrialReply),
      (e: unknown) => process.send!({ type: 'error', message: (e as Error).message ?? String(e) } satisfies TrialReply),
    );
  });
  // The worker closes the channel when it stops: nothing more will come.
  process.on('disconnect', () => process.exit(0));
  // A SIGINT or SIGTERM for the whole job (Ctrl-C, scancel) is the worker's to handle: it puts the trial
  // back on the queue and then ends this process. (SIGKILL, an out-of-memory kill, still ends it: a failed trial.)
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => {});
}

async function run(runner: ExperimentRunner, request: TrialRequest): Promise<TrialJobResult> {
  const { job } = request;
  const { fileInProject: _f, ...meta } = job.experiment;
  const exp: Experiment = { ...meta, file: request.experimentFile, trials: [job.trial], raw: null };
  // The trial id hashes the configuration and the data's identity; a worker whose data differ (other file
  // sizes or times) still records under the coordinator's id, and says so.
  const here = await runner.trialId(exp, job.trial);
  if (here !== job.trialId) console.log(`  note: this machine's data identity gives trial id ${here}; the trial is recorded under the coordinator's ${job.trialId}`);
  const records = await runner.runOne(exp, job.trial, { id: job.trialId, strategyColumns: job.strategyColumns, modelsDir: request.modelsDir, backend: request.backend });
  return encodeResult(records, request.worker);
}
