/**
 * A worker: pulls trials from the queue (BullMQ's Worker), runs each in a child process of its own
 * (trial-process.ts) and returns the child's record rows as the job's result, for the coordinator to record.
 *
 * Locks. BullMQ holds a lock on each active job for `lockSeconds` and renews it every half of that from this
 * process, whose event loop only forwards messages while the child computes, so an hour-long CPU-bound trial
 * keeps its lock (the lock-expiry-under-load of bullmq #2857 and #3078 comes from renewing on the thread that
 * computes). A worker killed with SIGKILL stops renewing: after `lockSeconds` the lock expires, the stalled
 * check that every worker runs (every `lockSeconds`) moves the job back to wait, and another worker runs it
 * from the start. The dead worker's child notices within half a second that its parent is gone and kills
 * itself. A job may stall twice (`maxStalledCount`) before BullMQ fails it, so one unlucky trial survives
 * two dead workers; a worker that loses a lock while alive (lockRenewalFailed) stops that trial's child at
 * once, as its result could no longer be delivered.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { createInterface } from 'node:readline';
import { WaitingError, Worker, type Job } from 'bullmq';
import { TRIAL_QUEUE, checkRedis, connectionOptions, parseRedisUrl } from './connection.js';
import type { TrialJob, TrialJobResult } from './jobs.js';
import type { TrialReply, TrialRequest } from './trial-process.js';

export interface WorkerOptions {
  /** redis://host:port */
  url: string;
  /** Trials run at once (each in its own process). */
  concurrency: number;
  /** BullMQ's lock duration, and the stalled-check interval, in seconds. */
  lockSeconds: number;
  /** Keep models here instead of the folder the coordinator names (a folder this machine has). */
  modelsDir?: string;
  /** The backend for the trials (else the coordinator's, else VOLSEG_BACKEND or the file's). */
  backend?: string;
  /** The child process: the entry that calls serveTrialProcess, with node's flags for it. */
  trialProcess: { entry: string; execArgv: string[] };
  /** This machine's project folder: relative experiment files and the fallback models folder start here. */
  projectRoot: string;
  log?: (line: string) => void;
}

export interface RunningWorker {
  /** Stops taking trials, stops the running ones (their jobs go back to the queue at once) and disconnects. */
  close(): Promise<void>;
  /** Resolves when BullMQ's worker is connected and pulling. */
  ready: Promise<void>;
}

export async function startWorker(opts: WorkerOptions): Promise<RunningWorker> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const target = parseRedisUrl(opts.url);
  await checkRedis(target);
  const name = `${hostname()}:${process.pid}`;
  let closing = false;
  const lockMs = Math.round(opts.lockSeconds * 1000);

  // Idle trial processes by backend (a process runs on one backend), and the one running each job.
  const idle = new Map<string, ChildProcess[]>();
  const children = new Map<string, ChildProcess>();
  // Each line a trial process prints, prefixed with the trial it runs.
  const running = new Map<ChildProcess, string>();
  const spawnChild = (): ChildProcess => {
    // A process group of its own: a Ctrl-C meant for the worker does not reach the trial before the worker
    // has put the trial back on the queue (close()).
    const child = fork(opts.trialProcess.entry, [], { execArgv: opts.trialProcess.execArgv, cwd: opts.projectRoot, stdio: ['ignore', 'pipe', 'pipe', 'ipc'], detached: true });
    for (const input of [child.stdout!, child.stderr!]) createInterface({ input }).on('line', (l) => log(`  [${running.get(child) ?? `process ${child.pid}`}] ${l}`));
    child.on('error', (e) => log(`trial process ${child.pid}: ${e.message}`));
    return child;
  };
  const takeChild = (backend: string): { child: ChildProcess; reused: boolean } => {
    const list = idle.get(backend) ?? [];
    while (list.length) {
      const c = list.pop()!;
      if (c.exitCode === null && c.signalCode === null && c.connected) return { child: c, reused: true };
    }
    return { child: spawnChild(), reused: false };
  };

  const processTrial = async (job: Job<TrialJob, TrialJobResult>, token?: string, signal?: AbortSignal): Promise<TrialJobResult> => {
    const data = job.data;
    const { trial } = data;
    const label = `trial ${trial.trial + 1} (${data.trialId}) of ${data.experiment.name}`;
    const models = modelsFolder(data, opts);
    const experimentFile = data.experiment.fileInProject ? join(opts.projectRoot, data.experiment.fileInProject) : data.experiment.file;
    const backend = opts.backend ?? data.backend ?? undefined;
    const poolKey = backend ?? String(trial.training.backend ?? '');
    const { child, reused } = takeChild(poolKey);
    children.set(data.trialId, child);
    log(`${label}: ${trial.label}, started in process ${child.pid}${reused ? ' (reused)' : ''}${job.attemptsStarted > 1 || job.stalledCounter > 0 ? ' (run again: a worker that had it stopped)' : ''}`);
    running.set(child, `trial ${trial.trial + 1}`);
    const abort = (): void => void child.kill('SIGKILL');
    signal?.addEventListener('abort', abort);
    let keep = false;
    // This trial's listeners on a process that may run more trials after it.
    let detach = (): void => {};
    try {
      const reply = await new Promise<TrialReply>((done, fail) => {
        const onExit = (code: number | null, sig: NodeJS.Signals | null): void => {
          const how = sig ? `was killed by ${sig}${sig === 'SIGKILL' ? ' (out of memory, or stopped)' : ''}` : `exited with code ${code}`;
          fail(new Error(`the trial's process ${how} before it finished (worker ${name})`));
        };
        child.once('message', done);
        child.once('exit', onExit);
        detach = () => void child.off('message', done).off('exit', onExit);
        const request: TrialRequest = { job: data, experimentFile, modelsDir: models.dir, backend, worker: name };
        child.send(request);
      });
      if (reply.type === 'error') throw new Error(`${reply.message} (worker ${name})`);
      keep = true;
      const result = reply.result;
      // A model kept where only this machine sees it is named with the machine.
      if (models.local && data.coordinator.host !== hostname() && result.row.model) result.row.model = `${hostname()}:${result.row.model}`;
      log(`${label}: done, ${result.row.status}`);
      return result;
    } catch (e) {
      if (closing) {
        // Stopped with the worker: back to the queue now, for this or another worker (not a failed trial).
        await job.moveToWait(token);
        log(`${label}: stopped with the worker; back on the queue`);
        throw new WaitingError();
      }
      log(`${label}: ${(e as Error).message}`);
      throw e;
    } finally {
      detach();
      signal?.removeEventListener('abort', abort);
      running.delete(child);
      children.delete(data.trialId);
      if (keep && !closing) idle.set(poolKey, [...(idle.get(poolKey) ?? []), child]);
      else if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  };

  const worker = new Worker<TrialJob, TrialJobResult>(TRIAL_QUEUE, processTrial, {
    connection: connectionOptions(target),
    name,
    concurrency: opts.concurrency,
    lockDuration: lockMs,
    stalledInterval: lockMs,
    maxStalledCount: 2,
  });
  worker.on('lockRenewalFailed', (ids: string[]) => {
    for (const id of ids) {
      const child = children.get(id);
      if (!child) continue;
      log(`lost the lock of trial ${id} (the queue gave it to another worker): stopping it here`);
      child.kill('SIGKILL');
    }
  });
  worker.on('error', (e: Error) => log(`queue error: ${e.message}`));
  log(`worker ${name}: pulling trials from ${target.host}:${target.port} (queue ${TRIAL_QUEUE}), ${opts.concurrency} at a time, lock ${opts.lockSeconds} s`);
  return {
    ready: worker.waitUntilReady().then(() => undefined),
    close: async () => {
      closing = true;
      for (const c of [...children.values(), ...[...idle.values()].flat()]) c.kill('SIGKILL');
      await worker.close();
    },
  };
}

/**
 * Where this worker saves a trial's model: its own `--models` folder; else the coordinator's `--models` (a
 * folder the coordinator says the workers share) when this machine can write there; else, on the
 * coordinator's machine, its <results>/models; else results/<experiment>/models in this machine's project
 * folder. A model kept where the coordinator's machine may not see it is named in the record with the host.
 */
function modelsFolder(job: TrialJob, opts: WorkerOptions): { dir: string; local: boolean } {
  const own = { dir: join(opts.projectRoot, 'results', job.experiment.name, 'models'), local: true };
  if (opts.modelsDir) return { dir: opts.modelsDir, local: true };
  if (!job.modelsShared && job.coordinator.host !== hostname()) return own;
  try {
    if (!isAbsolute(job.modelsDir)) throw new Error('relative');
    mkdirSync(job.modelsDir, { recursive: true });
    accessSync(job.modelsDir, constants.W_OK);
    return { dir: job.modelsDir, local: false };
  } catch {
    return own;
  }
}
