/**
 * A rank's own tfjs engine. Each worker thread has its own JavaScript globals, hence its own tfjs engine,
 * backend, kernel registry and tensors; `initWorker` starts the cpu backend there (with the native
 * kernels, core/backend/native, when built) and attaches a DeviceMemoryMeter, so each rank has its own
 * ledger and budget, as each accelerator has its own memory.
 *
 * The native addon in several threads (checked with 1-4 ranks running Conv3D forward and its filter
 * gradient at once, results compared bit for bit with a single thread's):
 * - It loads in every worker (Node-API addons are context-aware) and is safe to call from several at once.
 * - Its thread pool (native/src/pool.cc) is ONE per process, shared by every thread: created at the
 *   process's first native kernel, sized then from the process's VOLSEG_THREADS (native code reads the
 *   real environment; a worker's process.env is a copy it never sees), else the core count. Only one
 *   kernel at a time runs on the pool: a kernel that finds it busy runs on its calling thread alone
 *   (pool.cc's try_to_lock). So with P ranks in kernels at once, one rank gets the pool and the others
 *   run single-threaded: T + P − 1 busy threads for a pool of T, and ranks of unequal speed.
 * - Results do not depend on who got the pool: kernels split their work by the pool's size, never by
 *   the threads that joined, so every rank gets the same bits as a single thread would.
 * - Process-wide too: the SIMD code path. Each thread's load of the addon sets it again from
 *   VOLSEG_NATIVE_SIMD, and `setSimd` from one rank switches every rank.
 * Hence `threads`: WorkerGroup.start({ nativeThreads }) sets VOLSEG_THREADS for the process before the
 * ranks start, and initWorker checks that the pool has that many threads (it fails, saying why, where
 * something in the process ran a native kernel earlier and fixed another size). nativeThreads = 1 makes
 * the P ranks equal: each runs its kernels on its own thread, P busy threads in all.
 */
import { isMainThread, workerData } from 'node:worker_threads';
import { initBackend, nativeAddon, type BackendInfo } from '../backend/index.js';
import { DeviceMemoryMeter } from '../memory/index.js';

export interface WorkerRuntimeOptions {
  /** The tensor backend of this rank; only the cpu backend for now. */
  backend?: 'cpu';
  /**
   * The native pool's thread count this rank expects (default: the group's `nativeThreads`, if it set
   * one). The pool is per process (see above), so this checks, it cannot set: a mismatch throws.
   */
  threads?: number;
}

export interface WorkerRuntime {
  /** This rank's meter, attached to its engine's backend (its ledger holds only this rank's buffers). */
  meter: DeviceMemoryMeter;
  /** What runs, for records, e.g. 'cpu+native(avx2-fma, 1 threads)'. */
  backendLabel: string;
  backend: BackendInfo;
  /** Threads of the process's native pool, or null without the native kernels. */
  nativeThreads: number | null;
}

let runtime: WorkerRuntime | null = null;

/** The group's nativeThreads, when this thread is a rank of a WorkerGroup that set it. */
function groupThreads(): number | undefined {
  if (isMainThread) return undefined;
  const n = (workerData as { nativeThreads?: unknown } | null)?.nativeThreads;
  return typeof n === 'number' ? n : undefined;
}

/**
 * Starts this thread's tfjs engine on the cpu backend and attaches a DeviceMemoryMeter to it. Call it
 * once per rank before making tensors (the meter counts only buffers made after it); a second call
 * returns the same runtime.
 */
export async function initWorker(opts: WorkerRuntimeOptions = {}): Promise<WorkerRuntime> {
  const backend = opts.backend ?? 'cpu';
  if (backend !== 'cpu') throw new Error(`initWorker: backend "${String(backend)}" is not supported; a rank runs on the cpu backend`);
  const wanted = opts.threads ?? groupThreads();
  if (wanted !== undefined && (!Number.isInteger(wanted) || wanted < 1)) throw new Error(`initWorker: threads must be a whole number ≥ 1, got ${wanted}`);
  if (!runtime) {
    const info = await initBackend('cpu');
    const addon = info.nativeKernels.startsWith('not ') ? null : nativeAddon();
    const meter = new DeviceMemoryMeter().attach();
    runtime = { meter, backendLabel: info.label, backend: info, nativeThreads: addon ? addon.info().threads : null };
  }
  if (wanted !== undefined && runtime.nativeThreads !== null && runtime.nativeThreads !== wanted) {
    throw new Error(
      `initWorker: the native kernels' thread pool has ${runtime.nativeThreads} threads, not the ${wanted} asked for. The pool is one per process, ` +
        `sized at the process's first native kernel from VOLSEG_THREADS as it was then: pass nativeThreads to WorkerGroup.start before anything ` +
        `in this process runs a native kernel, or start the process with VOLSEG_THREADS=${wanted}`,
    );
  }
  return runtime;
}
