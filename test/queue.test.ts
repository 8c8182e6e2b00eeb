/**
 * Sweeps across machines on a real Redis (Debian's redis-server on a free loopback port; the suite skips
 * where it is not installed, and fails instead under VOLSEG_REQUIRE_REDIS=1, as in CI): the coordinator
 * (`npm run experiment -- <name> --queue`) and workers (`npm run worker`) as child processes, as a person
 * starts them. One worker is killed with SIGKILL mid-trial and its trial goes to the other once the lock
 * expires; the coordinator is killed with SIGKILL and restarted; every trial is recorded exactly once with
 * the records of a local run (dice and final_loss exactly equal, as the CSV holds them; trials.csv in the
 * order the trials finished, the local run's in expansion order). A trial whose
 * process is killed (as the OOM killer would) is recorded failed and the worker goes on.
 */
import { describe, it, expect } from 'vitest';
import { mkdtempSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { readTrials } from '../core/experiment/results.js';
import { ExperimentRunner } from '../core/experiment/runner.js';
import { loadExperiment } from '../core/config/experiment.js';
import { TRIAL_QUEUE, trialJob } from '../core/queue/index.js';
import { buildContainer } from '../experiments/cli/plugins.js';
import { redisSkipReason, startRedis } from './helpers/redis.js';
import { Command, ROOT, SWEEP, expectSameRecords, run } from './helpers/sweeps.js';

const EXPERIMENT = 'experiments/cli/experiment.ts';
const WORKER = 'experiments/cli/worker.ts';
const why = redisSkipReason('queue.test.ts');

/** Whether a process runs (a zombie, dead but not reaped, does not). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function eventually(ok: () => boolean, timeoutMs: number): Promise<boolean> {
  for (const t0 = performance.now(); performance.now() - t0 < timeoutMs; await new Promise((r) => setTimeout(r, 100))) if (ok()) return true;
  return ok();
}

describe.skipIf(why !== null)('a sweep on the queue', () => {
  it('2 workers, one killed mid-trial, the coordinator killed and restarted: every trial recorded once, as a local run', async () => {
    const redis = await startRedis();
    const workers: Command[] = [];
    try {
      const dir = mkdtempSync(join(tmpdir(), 'volseg-queue-'));
      const reference = join(dir, 'local');
      let t0 = performance.now();
      const local = await run(EXPERIMENT, [SWEEP, '--results', reference]);
      expect(local.code, local.out).toBe(0);
      const localMs = performance.now() - t0;

      t0 = performance.now();
      const queued = join(dir, 'queued');
      const coordinatorArgs = [SWEEP, '--queue', redis.url, '--results', queued];
      let coordinator = new Command(EXPERIMENT, coordinatorArgs);
      const workerArgs = ['--queue', redis.url, '--lock-seconds', '3'];
      const [a, b] = [new Command(WORKER, workerArgs), new Command(WORKER, workerArgs)];
      workers.push(a, b);

      // Worker a: killed with SIGKILL in the middle of a trial's training (after epoch 1 of 2 of its first).
      const startedLine = /trial \d+ \((t[0-9a-f]+)\) of sweep-tiny: .*, started in process (\d+)/g;
      const started = await a.waitFor(new RegExp(startedLine.source), 90_000, 0);
      await a.waitFor(/\]\s+epoch 1\/2/, 60_000, started.index);
      await a.kill('SIGKILL'); // resolves once the process closed its output
      // The trial it was killed in: the last one it started. A tiny trial can finish between the epoch line
      // and the kill, and the worker then had the next one.
      const [, lostId, childPid] = [...a.out.matchAll(startedLine)].at(-1)!;
      expect(a.out, `worker a finished ${lostId}, the trial it was killed in`).not.toMatch(new RegExp(`\\(${lostId}\\) of sweep-tiny: done`));
      // Its trial's process sees its parent gone and ends itself.
      expect(await eventually(() => !alive(Number(childPid)), 5000), `the killed worker's trial process ${childPid} still runs`).toBe(true);

      // The coordinator: killed once it has recorded a trial; restarted after worker b finished another meanwhile.
      await coordinator.waitFor(/^trial \d\/6: .* -> ok/m, 90_000, 0);
      await coordinator.kill('SIGKILL');
      const doneMeanwhile = await b.waitFor(/trial (\d+) \((t[0-9a-f]+)\) of sweep-tiny: done, ok/, 90_000);
      const firstRun = coordinator.out;
      coordinator = new Command(EXPERIMENT, coordinatorArgs);
      const end = await coordinator.exited;
      expect(end.code, coordinator.out).toBe(0);
      const queueMs = performance.now() - t0;
      console.log(`local run ${Math.round(localMs)} ms; queue run (kills included) ${Math.round(queueMs)} ms`);

      // The restart enqueued nothing new, and recorded what finished while no coordinator ran.
      expect(coordinator.out).toMatch(/: 6 trial\(s\), \d recorded, 0 enqueued, /);
      expect(coordinator.out).toMatch(new RegExp(`^trial ${doneMeanwhile[1]}/6: `, 'm'));
      expect(firstRun).not.toMatch(new RegExp(`^trial ${doneMeanwhile[1]}/6: `, 'm'));
      // The killed worker's trial was run again, from the start, by the other worker.
      expect(b.out).toMatch(new RegExp(`\\(${lostId}\\) of sweep-tiny: .*started in process \\d+( \\(reused\\))? \\(run again`));
      expect(b.out).toMatch(new RegExp(`\\(${lostId}\\) of sweep-tiny: done, ok`));

      // Exactly once, with the local run's numbers.
      const rows = readTrials(queued);
      expect(rows.length).toBe(6);
      expect(new Set(rows.map((r) => r.trial_id)).size).toBe(6);
      expectSameRecords(queued, reference, { anyOrder: true });
      for (const r of rows) expect(existsSync(join(String(r.model), 'model.json')), String(r.model)).toBe(true);
      expect(readFileSync(join(queued, 'summary.md'), 'utf8')).toContain('Trials: 6 (6 ok)');

      // A second result for a recorded trial (the trial enqueued again by hand, run by worker b): a coordinator
      // started later says it ignores it, removes the job, and the records stay as they were.
      const { catalog } = buildContainer();
      const exp = loadExperiment(SWEEP, catalog);
      const runner = new ExperimentRunner(catalog);
      const trial = exp.trials[0]!;
      const id = await runner.trialId(exp, trial);
      const queue = new Queue(TRIAL_QUEUE, { connection: { url: redis.url } });
      const job = trialJob(exp, trial, id, { strategyColumns: await runner.sweepStrategyColumns(exp), modelsDir: join(dir, 'again'), resultsDir: queued, projectRoot: ROOT });
      const from = b.out.length;
      await queue.add(exp.name, job, { jobId: id });
      await b.waitFor(new RegExp(`\\(${id}\\) of sweep-tiny: done, ok`), 60_000, from);
      const again = await run(EXPERIMENT, coordinatorArgs);
      expect(again.code, again.out).toBe(0);
      expect(again.out).toMatch(new RegExp(`trial 1/6 \\(${id}\\): a second result \\(from [^)]+\\) ignored: the trial is recorded`));
      expect(await queue.getJob(id)).toBeUndefined();
      await queue.close();
      expect(readTrials(queued).length).toBe(6);
      expectSameRecords(queued, reference, { anyOrder: true });
    } finally {
      await Promise.all(workers.map((w) => w.kill('SIGKILL')));
      await redis.stop();
    }
  }, 240_000);

  it('a trial whose process is killed (as by the OOM killer) is recorded failed, and the worker goes on', async () => {
    const redis = await startRedis();
    const worker = new Command(WORKER, ['--queue', redis.url, '--lock-seconds', '3']);
    try {
      const results = join(mkdtempSync(join(tmpdir(), 'volseg-queue-crash-')), 'results');
      const coordinator = new Command(EXPERIMENT, [SWEEP, '--queue', redis.url, '--results', results, '--set', 'axes.seed=[1]']);
      const m = await worker.waitFor(/trial (\d+) \((t[0-9a-f]+)\) of sweep-tiny: .*, started in process (\d+)/, 90_000, 0);
      process.kill(Number(m[3]), 'SIGKILL');
      const end = await coordinator.exited;
      expect(end.code, coordinator.out).toBe(0);
      const rows = readTrials(results);
      expect(rows.map((r) => r.trial_id).sort()).toHaveLength(2);
      const killed = rows.find((r) => r.trial_id === m[2])!;
      expect(String(killed.status)).toMatch(/^failed: the trial's process was killed by SIGKILL \(out of memory, or stopped\) before it finished \(worker [^)]+\)$/);
      expect(rows.find((r) => r.trial_id !== m[2])!.status).toBe('ok');
      expect(worker.child.exitCode, 'the worker survives its trial').toBeNull();
      expect(readFileSync(join(results, 'summary.md'), 'utf8')).toMatch(/Trials: 2 \((1 ok, 1 failed|1 failed, 1 ok)\)/);
    } finally {
      await worker.kill('SIGKILL');
      await redis.stop();
    }
  }, 120_000);
});
