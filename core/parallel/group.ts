/**
 * A group of P worker threads, one rank each, that run SPMD calls: `call(method, perRank)` runs the
 * exported function `method(arg, ctx)` of one entry module on every rank at once and resolves with every
 * rank's result in rank order. The ranks talk through `ctx.collective` (a SharedMemoryCollective over one
 * SharedArrayBuffer; core/parallel/collective.ts).
 *
 * The entry is a TypeScript module that may import anything in the project (tfjs, core/…). Each worker
 * starts with core/parallel/bootstrap.mjs, which registers tsx's ESM loader in its thread and then imports
 * this file's `serveRank`, which imports the entry: the same under the `tsx` CLI and under vitest.
 * A worker initialises its own tfjs engine (each thread has its own globals, so its own engine, backend
 * and memory meter): core/parallel/worker-runtime.ts, `initWorker`.
 *
 * Failures. If a rank's call throws (or its thread exits), the group aborts the collective, so ranks
 * blocked in it are released, ends every thread, and rejects the call with a RankFailedError naming the
 * rank and carrying its original error (name, message, stack, and its own fields, e.g. a
 * DeviceOutOfMemoryError's op and bytes). The failed rank is the first whose error is not a
 * CollectiveAbortedError (ranks that merely saw the abort wait up to 1 s for it). The group is then
 * closed: a later call rejects at once.
 */
import { Worker, isMainThread, parentPort, workerData as threadWorkerData } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { SharedMemoryCollective, type Collective, type SharedCollectiveInit } from './collective.js';

export interface WorkerGroupOptions {
  /** Number of ranks (worker threads), ≥ 1. */
  size: number;
  /** Absolute path (or file: URL) of the entry module (.ts or .js) whose exported functions `call` runs. */
  entry: string;
  /** The collective's capacity of one message in bytes (SharedMemoryCollective; default 16 MiB). */
  scratchBytes?: number;
  /** Longest a rank waits inside one collective call, in ms (default 120 000). */
  timeoutMs?: number;
  /** Handed to every rank as `ctx.workerData` (structured-cloned). */
  workerData?: unknown;
  /**
   * Threads of the native kernels' pool (core/backend/native). The pool is ONE per process, shared by
   * every thread, and sized once, at the process's first native kernel, from the process's
   * VOLSEG_THREADS (a worker's process.env is a copy the addon does not see). When set, start() sets
   * VOLSEG_THREADS in this process before any worker starts, and `initWorker` checks that the pool
   * has that many threads (it fails when something in this process ran a native kernel earlier).
   * 1 gives P equal ranks: each runs its kernels on its own thread (see worker-runtime.ts).
   */
  nativeThreads?: number;
}

/** What a rank's function gets besides its argument. */
export interface RankContext {
  readonly collective: Collective;
  readonly rank: number;
  readonly size: number;
  readonly workerData: unknown;
}

/** A rank's function in the entry module. */
export type RankFunction<A = unknown, R = unknown> = (arg: A, ctx: RankContext) => R | Promise<R>;

/** A rank's error, as it crossed the thread boundary. */
export interface SerializedError {
  name: string;
  message: string;
  stack?: string;
  /** The error's own enumerable fields whose values are numbers, strings, booleans or null. */
  details: Record<string, string | number | boolean | null>;
}

/** A call (or the group's start) failed on a rank. `cause` is that rank's error rebuilt: same name, message, stack and fields. */
export class RankFailedError extends Error {
  readonly rank: number;
  readonly method: string;
  /** The name of the rank's error, e.g. 'DeviceOutOfMemoryError'. */
  readonly workerErrorName: string;
  /** The message of the rank's error. */
  readonly workerMessage: string;
  readonly details: Record<string, string | number | boolean | null>;
  constructor(rank: number, method: string, error: SerializedError) {
    const cause = Object.assign(new Error(error.message), error.details);
    cause.name = error.name;
    if (error.stack) cause.stack = error.stack;
    super(`rank ${rank} failed in ${method}: ${error.name}: ${error.message}`, { cause });
    this.name = 'RankFailedError';
    this.rank = rank;
    this.method = method;
    this.workerErrorName = error.name;
    this.workerMessage = error.message;
    this.details = error.details;
  }
}

/** What each worker thread receives. */
interface RankWorkerData {
  rank: number;
  size: number;
  entry: string;
  collective: SharedCollectiveInit;
  workerData: unknown;
  nativeThreads: number | null;
}

type ToWorker = { type: 'call'; id: number; method: string; arg: unknown };
type FromWorker =
  | { type: 'ready'; exports: string[] }
  | { type: 'startup-error'; error: SerializedError }
  | { type: 'result'; id: number; value: unknown }
  | { type: 'error'; id: number; error: SerializedError };

/**
 * How long, after a rank's first error was a CollectiveAbortedError, the others have to report the error
 * that caused the abort (a rank's own error ends the call at once).
 */
const GRACE_MS = 1000;

const BOOTSTRAP = fileURLToPath(new URL('./bootstrap.mjs', import.meta.url));

function serialize(e: unknown): SerializedError {
  if (!(e instanceof Error)) return { name: 'Error', message: `non-Error thrown: ${String(e)}`, details: {} };
  const details: SerializedError['details'] = {};
  for (const [k, v] of Object.entries(e)) if (v === null || ['string', 'number', 'boolean'].includes(typeof v)) details[k] = v as string | number | boolean | null;
  delete details.name;
  delete details.message;
  delete details.stack;
  return { name: e.name, message: e.message, ...(e.stack ? { stack: e.stack } : {}), details };
}

interface Pending {
  method: string;
  results: unknown[];
  settled: boolean[];
  remaining: number;
  errors: { rank: number; error: SerializedError }[];
  grace: ReturnType<typeof setTimeout> | null;
  finishing: boolean;
  resolve: (values: unknown[]) => void;
  reject: (e: Error) => void;
}

export class WorkerGroup {
  readonly size: number;
  readonly entry: string;
  private readonly init: SharedCollectiveInit;
  private readonly workers: Worker[] = [];
  private readonly alive: boolean[];
  private readonly exits: Promise<void>[] = [];
  /** The last 'error' event of each thread (an exception outside a call), for its exit message. */
  private readonly lastError: (Error | null)[];
  private pending: Pending | null = null;
  private nextId = 1;
  private closing = false;
  private closedBecause: string | null = null;
  /** The entry's exported names (as rank 0 saw them). */
  private exportNames: string[] = [];

  private constructor(opts: WorkerGroupOptions, entry: string) {
    this.size = opts.size;
    this.entry = entry;
    this.init = SharedMemoryCollective.create({
      size: opts.size,
      ...(opts.scratchBytes !== undefined ? { scratchBytes: opts.scratchBytes } : {}),
      ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
    });
    this.alive = new Array<boolean>(opts.size).fill(false);
    this.lastError = new Array<Error | null>(opts.size).fill(null);
  }

  /** Starts `size` worker threads, each importing `entry`; resolves when every rank has loaded it. */
  static async start(opts: WorkerGroupOptions): Promise<WorkerGroup> {
    if (!Number.isInteger(opts.size) || opts.size < 1) throw new Error(`WorkerGroup.start: size must be a whole number ≥ 1, got ${opts.size}`);
    const entry = opts.entry.startsWith('file:') ? fileURLToPath(opts.entry) : opts.entry;
    if (!isAbsolute(entry)) throw new Error(`WorkerGroup.start: entry must be an absolute path or a file: URL, got "${opts.entry}"`);
    if (!existsSync(entry)) throw new Error(`WorkerGroup.start: entry ${entry} does not exist`);
    if (opts.nativeThreads !== undefined) {
      if (!Number.isInteger(opts.nativeThreads) || opts.nativeThreads < 1 || opts.nativeThreads > 1024)
        throw new Error(`WorkerGroup.start: nativeThreads must be a whole number in [1, 1024], got ${opts.nativeThreads}`);
      // The real environment of the process (the main thread's process.env writes through to it).
      process.env.VOLSEG_THREADS = String(opts.nativeThreads);
    }
    const group = new WorkerGroup(opts, entry);
    const ready = group.begin('(start: loading the entry)');
    for (let rank = 0; rank < opts.size; rank++) {
      const data: RankWorkerData = {
        rank,
        size: opts.size,
        entry,
        collective: group.init,
        workerData: opts.workerData,
        nativeThreads: opts.nativeThreads ?? null,
      };
      group.spawn(rank, data);
    }
    await ready;
    return group;
  }

  /** Worker threads that have not exited. */
  get liveWorkers(): number {
    return this.alive.filter(Boolean).length;
  }

  /** Whether the group is closed (by close(), or after a failure), and why. */
  get closed(): boolean {
    return this.closing;
  }
  get closedReason(): string | null {
    return this.closedBecause;
  }

  /** The entry module's exported names. */
  get exports(): readonly string[] {
    return this.exportNames;
  }

  /**
   * Runs `method(perRank[r], ctx)` of the entry on every rank r at once; resolves with the results in rank
   * order (structured-cloned). One call at a time. On any rank's failure: see the file's header.
   */
  call<R>(method: string, perRank: unknown[]): Promise<R[]> {
    if (this.closing) return Promise.reject(new Error(`WorkerGroup.call(${method}): the group is closed${this.closedBecause ? ` (${this.closedBecause})` : ''}`));
    if (this.pending) return Promise.reject(new Error(`WorkerGroup.call(${method}): call ${this.pending.method} is still running; one call at a time`));
    if (!Array.isArray(perRank) || perRank.length !== this.size)
      return Promise.reject(new Error(`WorkerGroup.call(${method}): perRank must hold one argument per rank (${this.size}), got ${Array.isArray(perRank) ? perRank.length : typeof perRank}`));
    const id = this.nextId++;
    const done = this.begin(method) as Promise<R[]>;
    for (let r = 0; r < this.size; r++) {
      const msg: ToWorker = { type: 'call', id, method, arg: perRank[r] };
      try {
        this.workers[r]!.postMessage(msg);
      } catch (e) {
        this.rankFailed(r, { name: 'DataCloneError', message: `the argument for rank ${r} cannot be sent to its thread: ${(e as Error).message}`, details: {} });
      }
    }
    return done;
  }

  /** Aborts the collective from the main thread: every rank waiting in it, or entering it, throws CollectiveAbortedError. */
  abort(reason: string): void {
    SharedMemoryCollective.abort(this.init, reason);
  }

  /** Ends every thread (a running call is rejected). Resolves when all have exited. */
  async close(): Promise<void> {
    await this.shutdown('closed by close()');
  }

  // ----------------------------------------------------------------------------------------------

  private spawn(rank: number, data: RankWorkerData): void {
    const worker = new Worker(BOOTSTRAP, { workerData: data });
    this.workers[rank] = worker;
    this.alive[rank] = true;
    worker.on('message', (m: FromWorker) => this.onMessage(rank, m));
    worker.on('error', (e: Error) => {
      this.lastError[rank] = e;
    });
    this.exits[rank] = new Promise<void>((resolve) => {
      worker.once('exit', (code: number) => {
        this.alive[rank] = false;
        this.onExit(rank, code);
        resolve();
      });
    });
  }

  private begin(method: string): Promise<unknown[]> {
    for (const w of this.workers) w?.ref();
    return new Promise<unknown[]>((resolve, reject) => {
      this.pending = {
        method,
        results: new Array<unknown>(this.size),
        settled: new Array<boolean>(this.size).fill(false),
        remaining: this.size,
        errors: [],
        grace: null,
        finishing: false,
        resolve,
        reject,
      };
    });
  }

  private onMessage(rank: number, m: FromWorker): void {
    const p = this.pending;
    if (!p || p.settled[rank]) return;
    if (m.type === 'ready') {
      if (rank === 0) this.exportNames = m.exports;
      this.rankDone(rank, undefined);
    } else if (m.type === 'result') this.rankDone(rank, m.value);
    else this.rankFailed(rank, m.error);
  }

  private onExit(rank: number, code: number): void {
    // While closing, every thread is being ended on purpose.
    if (this.closing) return;
    const err = this.lastError[rank];
    const what = err ? `threw outside any call (${err.name}: ${err.message}) and exited` : `exited unexpectedly (exit code ${code})`;
    const p = this.pending;
    if (p && !p.settled[rank]) {
      this.rankFailed(rank, {
        name: err?.name ?? 'WorkerExitError',
        message: `rank ${rank}'s worker thread ${what} during ${p.method}`,
        ...(err?.stack ? { stack: err.stack } : {}),
        details: { exitCode: code },
      });
    } else {
      // Between calls: the group has lost a rank and cannot run SPMD calls any more.
      void this.shutdown(`rank ${rank}'s worker thread ${what} between calls`);
    }
  }

  private rankDone(rank: number, value: unknown): void {
    const p = this.pending!;
    p.settled[rank] = true;
    p.results[rank] = value;
    p.remaining--;
    this.maybeFinish();
  }

  private rankFailed(rank: number, error: SerializedError): void {
    const p = this.pending!;
    if (p.settled[rank]) return;
    p.settled[rank] = true;
    p.remaining--;
    p.errors.push({ rank, error });
    // Release the ranks blocked in a collective.
    if (p.errors.length === 1) this.abort(`rank ${rank} failed in ${p.method}: ${error.name}: ${error.message}`);
    if (error.name !== 'CollectiveAbortedError') {
      // The cause: end the call now.
      void this.finishFailure();
      return;
    }
    // This rank only saw an abort: give the others a moment to report its cause.
    if (!p.grace) p.grace = setTimeout(() => void this.finishFailure(), GRACE_MS);
    this.maybeFinish();
  }

  private maybeFinish(): void {
    const p = this.pending!;
    if (p.remaining > 0) return;
    if (p.errors.length > 0) {
      void this.finishFailure();
      return;
    }
    this.pending = null;
    if (!this.closing) for (const w of this.workers) w.unref();
    p.resolve(p.results);
  }

  private async finishFailure(): Promise<void> {
    const p = this.pending;
    if (!p || p.finishing) return;
    p.finishing = true;
    if (p.grace) clearTimeout(p.grace);
    const first = p.errors.find((e) => e.error.name !== 'CollectiveAbortedError') ?? p.errors[0]!;
    const error = new RankFailedError(first.rank, p.method, first.error);
    await this.shutdown(error.message);
    p.reject(error);
  }

  private async shutdown(reason: string): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      this.closedBecause = reason;
      this.abort(`the group is closing: ${reason}`);
    }
    const p = this.pending;
    await Promise.all(this.workers.map((w) => w.terminate()));
    await Promise.all(this.exits);
    if (p && !p.finishing) {
      p.finishing = true;
      if (p.grace) clearTimeout(p.grace);
      p.reject(new Error(`WorkerGroup: ${p.method} did not finish: the group was closed (${reason})`));
    }
    this.pending = null;
  }
}

// ------------------------------------------------------------------------------------------------
// The worker side (run by bootstrap.mjs in each rank's thread)
// ------------------------------------------------------------------------------------------------

/** Serves one rank: loads the entry, then runs the calls the main thread sends. */
export async function serveRank(): Promise<void> {
  if (isMainThread || !parentPort) throw new Error('serveRank runs in a worker thread started by WorkerGroup');
  const port = parentPort;
  const data = threadWorkerData as RankWorkerData;
  const send = (m: FromWorker): void => port.postMessage(m);
  let mod: Record<string, unknown>;
  let collective: SharedMemoryCollective;
  try {
    collective = new SharedMemoryCollective(data.collective, data.rank);
    mod = (await import(pathToFileURL(data.entry).href)) as Record<string, unknown>;
  } catch (e) {
    send({ type: 'startup-error', error: serialize(e) });
    return;
  }
  const ctx: RankContext = { collective, rank: data.rank, size: data.size, workerData: data.workerData };
  port.on('message', (m: ToWorker) => {
    if (m.type !== 'call') return;
    void (async () => {
      let value: unknown;
      try {
        const fn = mod[m.method];
        if (typeof fn !== 'function') {
          const names = Object.keys(mod).filter((k) => typeof mod[k] === 'function');
          throw new Error(`the entry ${data.entry} exports no function "${m.method}" (its functions: ${names.join(', ') || 'none'})`);
        }
        value = await (fn as RankFunction)(m.arg, ctx);
        collective.endCall();
      } catch (e) {
        send({ type: 'error', id: m.id, error: serialize(e) });
        return;
      }
      try {
        send({ type: 'result', id: m.id, value });
      } catch (e) {
        send({ type: 'error', id: m.id, error: { name: 'DataCloneError', message: `the result of ${m.method} cannot be sent to the main thread: ${(e as Error).message}`, details: {} } });
      }
    })();
  });
  send({ type: 'ready', exports: Object.keys(mod) });
}
