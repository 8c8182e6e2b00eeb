/**
 * `npm run worker -- --queue redis://host:port [--concurrency 1]`: pulls trials from the queue that
 * `npm run experiment -- <name> --queue redis://host:port` fills, and runs each in a child process of its
 * own (experiments/cli/trial-process.ts), so that a crash or an out-of-memory kill ends the trial, not the
 * worker. Runs on any machine with the project and the data; start as many as the machines allow.
 * Ctrl-C (or SIGTERM) stops it: its running trials go back to the queue at once.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startWorker, QueueError } from '../../core/queue/index.js';
import { parseArgs, usage, UsageError, runCli, type FlagSpec } from './args.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FLAGS: FlagSpec = {
  queue: { takesValue: true, description: 'redis://host:port of the queue (the coordinator\'s --queue)' },
  concurrency: { takesValue: true, description: 'trials run at once, each in its own process (default 1)' },
  'lock-seconds': {
    takesValue: true,
    description: "how long a trial's lock lasts unrenewed (default 30): a worker killed mid-trial loses its trial to another worker after this long",
  },
  models: { takesValue: true, description: "keep the trained models in this folder of this machine (default: the coordinator's models folder when reachable)" },
  backend: { takesValue: true, description: 'cpu | tensorflow | tensorflow-gpu | webgpu | auto (overrides the coordinator\'s, VOLSEG_BACKEND and the file)' },
  help: { takesValue: false, description: 'this help' },
};

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2), FLAGS);
  if (args.flags.has('help')) {
    console.log(usage('npm run worker --', '--queue redis://host:port [options]', FLAGS));
    return 0;
  }
  if (args.positional.length) throw new UsageError(`unexpected argument ${args.positional[0]}: the worker takes trials of every experiment from the queue; give --queue redis://host:port`);
  const url = args.flags.get('queue')?.[0];
  if (!url) throw new UsageError('--queue redis://host:port is required: the Redis server the coordinator enqueues into');
  const concurrency = wholeNumber('concurrency', args.flags.get('concurrency')?.[0] ?? '1', 1);
  const lockSeconds = positive('lock-seconds', args.flags.get('lock-seconds')?.[0] ?? '30');
  const worker = await startWorker({
    url,
    concurrency,
    lockSeconds,
    modelsDir: args.flags.has('models') ? resolve(args.flags.get('models')![0]!) : undefined,
    backend: args.flags.get('backend')?.[0],
    trialProcess: { entry: join(ROOT, 'experiments/cli/trial-process.ts'), execArgv: ['--import', import.meta.resolve('tsx')] },
    projectRoot: ROOT,
  });
  await worker.ready;
  await new Promise<void>((done) => {
    const stop = (sig: string): void => {
      console.log(`${sig}: stopping; running trials go back to the queue`);
      worker.close().then(done, done);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  return 0;
}

function wholeNumber(flag: string, text: string, min: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${flag} ${text}: expected a whole number ≥ ${min}`);
  return n;
}

function positive(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < 1) throw new UsageError(`--${flag} ${text}: expected a number of seconds ≥ 1`);
  return n;
}

runCli(main, [QueueError]);
