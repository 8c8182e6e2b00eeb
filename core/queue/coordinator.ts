/**
 * The coordinator (`npm run experiment -- <name> --queue redis://host:port`): puts the sweep's unrecorded
 * trials on the queue, one BullMQ job per trial with the trial id as the job id, and records each result
 * as it arrives. It is the only writer of the results folder (a lock file there says so), and it writes a
 * trial's curve points, per-case rows and trials.csv row with the runner's record writers (TrialRecorder),
 * in the order a local run does, trials.csv last.
 *
 * Exactly once. A trial is recorded when its row is in trials.csv, read at start (as resume reads it) and
 * kept in memory after; results are handled one at a time, and a result for a recorded trial is logged and
 * ignored. After its row is written the coordinator removes the job from Redis: Redis holds the work in
 * flight, the results folder what is done. Killed between the two, a restarted coordinator finds the
 * finished job of a recorded trial, says so and removes it.
 *
 * Restart. A restarted coordinator reads its records, records the results of jobs that finished while it
 * was down (completed jobs stay in Redis until it removes them), and enqueues the trials that are neither
 * recorded nor queued; queued and running ones are left to the workers. Completions arrive through
 * QueueEvents, with a poll of the pending trials' jobs as a safety net (a lost event, a job that vanished
 * from Redis and is enqueued again).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Queue, QueueEvents, type Job } from 'bullmq';
import type { Experiment, TrialConfig } from '../config/index.js';
import { ProgressBar, TrialRecorder, trialOutcome, type ExperimentRunner } from '../experiment/index.js';
import { QueueError, TRIAL_QUEUE, checkRedis, connectionOptions, parseRedisUrl } from './connection.js';
import { decodeResult, trialJob, type TrialJob, type TrialJobResult } from './jobs.js';

export interface CoordinatorOptions {
  /** redis://host:port */
  url: string;
  resultsDir: string;
  /** Where workers put the models (a folder they and the coordinator reach); default <results>/models. */
  modelsDir?: string;
  backend?: string;
  fresh?: boolean;
  /** The project folder, so that workers find an experiment file inside it at their own copy. */
  projectRoot?: string;
  /** Seconds between polls of the pending trials' jobs (completions also arrive as events). */
  pollSeconds?: number;
  log?: (line: string) => void;
}

export interface CoordinatorSummary {
  /** Trials of the sweep recorded at the end. */
  recorded: number;
  /** Recorded by this run, and how many of them failed. */
  recordedNow: number;
  failed: number;
}

type Job_ = Job<TrialJob, TrialJobResult>;

export async function runCoordinator(runner: ExperimentRunner, exp: Experiment, opts: CoordinatorOptions): Promise<CoordinatorSummary> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const target = parseRedisUrl(opts.url);
  await checkRedis(target);
  const release = lockResults(opts.resultsDir);
  const connection = connectionOptions(target);
  const queue = new Queue<TrialJob, TrialJobResult>(TRIAL_QUEUE, { connection });
  const events = new QueueEvents(TRIAL_QUEUE, { connection });
  try {
    const recorder = new TrialRecorder(opts.resultsDir);
    const { ids, trials, pending, recorded: before } = await runner.prepareSweep(exp, opts, recorder, log);
    const strategyColumns = await runner.sweepStrategyColumns(exp);
    const trialById = new Map(trials.map((t) => [ids.get(t.trial)!, t]));
    const recorded = new Set([...trialById.keys()].filter((id) => before.has(id)));
    const waiting = new Set(pending.map((t) => ids.get(t.trial)!));
    const modelsDir = opts.modelsDir ?? join(opts.resultsDir, 'models');
    const jobOf = (t: TrialConfig, id: string): TrialJob =>
      trialJob(exp, t, id, { strategyColumns, modelsDir, modelsShared: opts.modelsDir !== undefined, backend: opts.backend, resultsDir: opts.resultsDir, projectRoot: opts.projectRoot });
    let failed = 0;
    const bar = new ProgressBar('  sweep', trials.length);

    // One result at a time: the check and the write of a trial never interleave with another's.
    let chain: Promise<void> = Promise.resolve();
    const serially = (f: () => Promise<void>): Promise<void> => (chain = chain.then(f, f).catch((e: Error) => log(`  error while recording: ${e.message}`)));

    const record = async (job: Job_, state: string): Promise<void> => {
      const id = job.id!;
      const trial = trialById.get(id);
      if (!trial) return; // another sweep's trial on the same queue
      if (recorded.has(id)) {
        log(`  trial ${trial.trial + 1}/${exp.trials.length} (${id}): a second result${state === 'completed' ? ` (from ${job.returnvalue?.worker ?? job.processedBy ?? 'a worker'})` : ''} ignored: the trial is recorded`);
        await job.remove().catch(() => {});
        return;
      }
      let row;
      let result: ReturnType<typeof decodeResult> | null = null;
      let unreadable = '';
      try {
        if (state === 'completed') result = decodeResult(job.returnvalue);
      } catch (e) {
        unreadable = `its result could not be read (${(e as Error).message}); a worker of another version?`;
      }
      if (result) {
        recorder.appendCurves(result.curves);
        recorder.appendCases(result.cases);
        recorder.append(result.row);
        row = result.row;
        log(`trial ${trial.trial + 1}/${exp.trials.length}: ${trial.label} (from ${job.returnvalue.worker}) -> ${trialOutcome(row)}`);
      } else {
        row = await runner.failedRow(exp, trial, id, unreadable || job.failedReason || 'the job failed without a reason', strategyColumns);
        recorder.append(row);
        log(`trial ${trial.trial + 1}/${exp.trials.length}: ${trial.label} -> ${row.status}`);
      }
      if (String(row.status).startsWith('failed')) failed++;
      recorded.add(id);
      waiting.delete(id);
      await runner.writeTables(exp, opts.resultsDir);
      // Recorded: the job has done its work (a kill before this line leaves it for the next start to remove).
      await job.remove().catch(() => {});
      bar.update(recorded.size, `${waiting.size} queued or running`);
    };

    const collect = (id: string): Promise<void> =>
      serially(async () => {
        const job = (await queue.getJob(id)) as Job_ | undefined;
        if (!job) return;
        const state = await job.getState();
        if (state === 'completed' || state === 'failed') await record(job, state);
      });

    if (opts.fresh) await removeStale(queue, [...waiting], log);
    events.on('completed', ({ jobId }) => void collect(jobId));
    events.on('failed', ({ jobId }) => void collect(jobId));
    await events.waitUntilReady();

    // Results that arrived while no coordinator listened (for recorded trials too: a kill between writing the
    // row and removing the job), then every unrecorded trial that is not in the queue.
    for (const id of trialById.keys()) await collect(id);
    await chain;
    const missing = async (): Promise<string[]> => {
      const out: string[] = [];
      for (const id of waiting) if (!(await queue.getJob(id))) out.push(id);
      return out;
    };
    const toAdd = await missing();
    await queue.addBulk(toAdd.map((id) => ({ name: exp.name, data: jobOf(trialById.get(id)!, id), opts: { jobId: id, removeOnComplete: false, removeOnFail: false } })));
    log(
      `queue ${TRIAL_QUEUE} at ${target.host}:${target.port}: ${trials.length} trial(s), ${recorded.size} recorded, ${toAdd.length} enqueued, ` +
        `${waiting.size - toAdd.length} already queued or running; start workers with: npm run worker -- --queue ${target.shown}`,
    );
    bar.update(recorded.size, `${waiting.size} queued or running`);

    // Until every trial is recorded: events, and a poll that also puts back a job that vanished.
    const pollMs = (opts.pollSeconds ?? 5) * 1000;
    while (waiting.size > 0) {
      await new Promise((r) => setTimeout(r, pollMs));
      for (const id of [...waiting]) await collect(id);
      await chain;
      const gone = await missing();
      if (gone.length) {
        log(`  ${gone.length} pending trial(s) had no job in the queue (removed from Redis?): enqueued again`);
        await queue.addBulk(gone.map((id) => ({ name: exp.name, data: jobOf(trialById.get(id)!, id), opts: { jobId: id, removeOnComplete: false, removeOnFail: false } })));
      }
    }
    await chain;
    bar.done();
    await runner.writeTables(exp, opts.resultsDir);
    const recordedNow = recorded.size - [...trialById.keys()].filter((id) => before.has(id)).length;
    log(`every trial is recorded (${recorded.size}; ${recordedNow} by this run, ${failed} of them failed)`);
    return { recorded: recorded.size, recordedNow, failed };
  } finally {
    await events.close().catch(() => {});
    await queue.close().catch(() => {});
    release();
  }
}

/** `--fresh`: jobs of these trials left from before (finished, failed, queued) are removed; a running one cannot be. */
async function removeStale(queue: Queue<TrialJob, TrialJobResult>, ids: string[], log: (l: string) => void): Promise<void> {
  for (const id of ids) {
    const job = await queue.getJob(id);
    if (!job) continue;
    const state = await job.getState();
    if (state === 'active') log(`  --fresh: trial ${id} is running on a worker since before; its result will be recorded`);
    else await job.remove().catch((e: Error) => log(`  --fresh: could not remove the old job of trial ${id}: ${e.message}`));
  }
}

/**
 * One coordinator per results folder: `<results>/.coordinator.lock` holds the host and pid. A lock of a
 * process that is gone (a killed coordinator) on this host is taken over; one held by a live process, or by
 * another host, is an error that says which and what to do.
 */
function lockResults(dir: string): () => void {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, '.coordinator.lock');
  const me = { host: hostname(), pid: process.pid };
  if (existsSync(file)) {
    let holder: { host?: string; pid?: number } = {};
    try {
      holder = JSON.parse(readFileSync(file, 'utf8')) as typeof holder;
    } catch {
      // a torn lock file holds no one
    }
    const alive = holder.host === me.host && typeof holder.pid === 'number' && holder.pid !== me.pid && isAlive(holder.pid);
    if (alive) throw new QueueError(`another coordinator (pid ${holder.pid}) records into ${dir}; stop it first (one coordinator writes a results folder)`);
    if (holder.host && holder.host !== me.host)
      throw new QueueError(`${file}: a coordinator on ${holder.host} (pid ${holder.pid}) records into ${dir}; stop it, or remove the file if it is not running`);
  }
  writeFileSync(file, JSON.stringify(me));
  return () => rmSync(file, { force: true });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
