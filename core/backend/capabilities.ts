/**
 * What the active tensor backend can do, decided here and nowhere else: the rest of the framework asks
 * `capabilities()` and never tfjs which backend runs. Where the answer changes (the native kernels were
 * registered or switched off), the code that changed it calls `capabilitiesChanged()`.
 */
import * as tf from '@tensorflow/tfjs-core';
import { INSTANCE_NORM_FORWARD } from './kernels/names.js';

export interface BackendCapabilities {
  /** tfjs's name of the active backend ('cpu', 'tensorflow', 'webgpu', …), for records and messages. */
  readonly name: string;
  /**
   * A tensor's values are a host array the backend owns (tfjs's cpu backend): reading them costs no copy,
   * and a fused host-side pass over them allocates nothing on the device.
   */
  readonly hostArrays: boolean;
  /**
   * Buffers that nothing else shares may be written in place instead of allocating anew (gradient sums,
   * Adam's update, a normalisation's output over its input, x̂ rebuilt in a saved buffer): core/backend/in-place.ts.
   */
  readonly inPlaceWrites: boolean;
  /** The loss and its gradient at the logits are computed in one pass over host arrays (core/training/loss.ts). */
  readonly fusedLoss: boolean;
  /** Adam's update is one pass over host arrays: only the new moments and parameter are allocated. */
  readonly fusedAdam: boolean;
  /** The project's kernels (core/backend/kernels) are registered for this backend; elsewhere ops compose tfjs ops. */
  readonly projectKernels: boolean;
  /** The native addon's kernels are registered and enabled (cpu backend). */
  readonly nativeKernels: boolean;
  /**
   * Device memory is host memory (the cpu backend), so a device↔host transfer must be emulated to cost
   * anything (strategies/swap's emulated link); elsewhere transfers are real.
   */
  readonly unifiedMemory: boolean;
  /** Every buffer the backend makes passes through a DataStorage the memory meter can watch (core/memory/meter.ts). */
  readonly dataStorage: boolean;
  /**
   * Device buffers come from a pool that keeps released ones for reuse (tfjs's WebGPU BufferManager): the
   * meter watches it, and what the pool holds is reported apart from what is in use.
   */
  readonly bufferPool: boolean;
}

let nativeKernelsActive = false;
const cache = new Map<string, BackendCapabilities>();

function decide(name: string): BackendCapabilities {
  const cpu = name === 'cpu';
  const backend = tf.findBackend(name) as unknown as {
    data?: { set?: unknown; delete?: unknown; has?: unknown };
    bufferManager?: { acquireBuffer?: unknown; releaseBuffer?: unknown; numBytesAllocated?: unknown };
  } | null;
  const store = backend?.data;
  const pool = backend?.bufferManager;
  return {
    name,
    hostArrays: cpu,
    inPlaceWrites: cpu,
    fusedLoss: cpu,
    fusedAdam: cpu,
    projectKernels: tf.getKernel(INSTANCE_NORM_FORWARD, name) !== undefined,
    nativeKernels: cpu && nativeKernelsActive,
    unifiedMemory: cpu,
    dataStorage: cpu && typeof store?.set === 'function' && typeof store.delete === 'function' && typeof store.has === 'function',
    bufferPool: typeof pool?.acquireBuffer === 'function' && typeof pool.releaseBuffer === 'function' && typeof pool.numBytesAllocated === 'number',
  };
}

/** The capabilities of the active backend (tfjs initialises its default backend on first use). */
export function capabilities(): BackendCapabilities {
  const name = tf.getBackend();
  let c = cache.get(name);
  if (!c) {
    c = decide(name);
    cache.set(name, c);
  }
  return c;
}

/** Kernel registrations changed (project or native kernels): decide again on next use. */
export function capabilitiesChanged(nativeActive?: boolean): void {
  if (nativeActive !== undefined) nativeKernelsActive = nativeActive;
  cache.clear();
}
