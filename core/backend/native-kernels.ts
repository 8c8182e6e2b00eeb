/**
 * Native (C++/N-API, AVX2+FMA with a portable fallback, multi-threaded) kernels registered into
 * tfjs's 'cpu' backend under tfjs's own kernel names, with tfjs's semantics:
 *  - Conv3D, Conv3DBackpropInputV2, Conv3DBackpropFilterV2 (register-blocked direct convolution);
 *  - MaxPool3D, AvgPool3D and their gradients;
 *  - the project's VolInstanceNormForward/Backward and VolUpsampleNearest3D/Grad (core/backend/kernels);
 *  - "general" ops that tfjs's cpu backend runs far below memory speed on 5-D volumes: Add, Sub,
 *    Multiply, RealDiv (with broadcasting), LeakyRelu, Relu, Square, Sigmoid, Exp, Log, Sum and
 *    Mean over a contiguous block of axes, Softmax, Slice, SplitV (concat's gradient), Concat,
 *    Transpose, PadV2. These reproduce tfjs's arithmetic (double where tfjs computes in double,
 *    same summation order), so results are bitwise identical in practice. VOLSEG_NATIVE_GENERAL=0
 *    leaves them to tfjs.
 * Anything a native kernel does not cover (other dtypes, dilations > 1, other data formats,
 * non-contiguous reduction axes, ...) is handed to the kernel that was registered before
 * (tfjs's JavaScript kernel, or the project's JavaScript reference for the Vol* kernels).
 *
 * The addon is built by `npm install` (core/backend/native/build.mjs) into
 * core/backend/native/build/Release/volseg_native.node. When it is missing or fails to load, nothing is
 * registered and training uses the JavaScript kernels. `VOLSEG_NO_NATIVE=1` disables it,
 * `VOLSEG_THREADS=n` sets its thread count, `VOLSEG_NATIVE_SIMD` names the code path (`portable`,
 * `avx2-fma`, `avx512vl`, `avx512-zmm`; one the CPU lacks falls back to the best it has below it),
 * `VOLSEG_HUGEPAGES=0` stops it from asking for transparent huge pages on large outputs.
 *
 * Outputs of 1 MiB or more are written into memory recycled by the addon (bufferCache(); see
 * core/backend/native/src/buffers.cc): a fresh typed array of that size is fresh pages, and their
 * page faults cost more than most non-convolution kernels themselves. The memory is V8's to free
 * like any ArrayBuffer's; once freed it waits in a cache for the next outputs. `VOLSEG_BUFFER_CACHE_MB`
 * caps the cache (default 512, 0 turns recycling off), `VOLSEG_BUFFER_MIN_KB` (default 1024) and
 * `VOLSEG_BUFFER_CACHE_AGE_MS` (default 2000: idle memory is unmapped) tune it. Cached memory is
 * resident: process RSS exceeds what it would be without the cache by bufferCache().cachedBytes
 * (at most the cap). An output whose last tensor is disposed, and whose values were never handed out
 * by dataSync()/data(), comes back at the dispose instead of at a GC: it is kept whole for the next
 * output of its size (bufferCache().pooledBytes, at most the cap, beside the cache), so a training step
 * reuses the previous step's buffers and V8 sees no growth of external memory to collect for.
 * `VOLSEG_BUFFER_RELEASE=0` leaves every buffer to V8's GC instead.
 *
 * Order: import the modules that register JavaScript kernels under the same names (tfjs-backend-cpu,
 * core/backend/kernels) BEFORE calling registerNativeKernels(). Calling it again later is cheap and puts
 * the native kernels back on top of anything registered meanwhile (the newcomer becomes the
 * fallback).
 */
import { backend_util, getKernel, registerKernel, slice_util, unregisterKernel, util } from '@tensorflow/tfjs-core';
import type { KernelConfig, KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import type { NormForwardAttrs } from './kernels/index.js';
import { capabilities, capabilitiesChanged } from './capabilities.js';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isMainThread } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';

/**
 * The compiled code paths: AVX-512 with the convolutions on 16-lane zmm vectors (picked where the
 * 512-bit FMA rate is well above the 256-bit one), AVX2+FMA with 32 vector registers (AVX-512VL),
 * with 16, or plain C++.
 */
export type NativeSimd = 'avx512-zmm' | 'avx512vl' | 'avx2-fma' | 'portable';

export interface NativeStatus {
  loaded: boolean;
  /** Why the addon is not in use (not built, failed to load, disabled). */
  reason?: string;
  /** Kernel names registered natively for backend 'cpu'. */
  kernels: string[];
  simd: NativeSimd;
  threads: number;
}

/** The addon's interface (core/backend/native/src/addon.cc). Output arrays are allocated by the caller. */
export interface NativeAddon {
  conv3d(x: Float32Array, w: Float32Array, y: Float32Array, params: Int32Array): void;
  conv3dBackpropInput(dy: Float32Array, w: Float32Array, dx: Float32Array, params: Int32Array): void;
  conv3dBackpropFilter(x: Float32Array, dy: Float32Array, dw: Float32Array, params: Int32Array): void;
  pool3d(x: Float32Array, y: Float32Array, params: Int32Array, isAvg: number): void;
  maxPool3dGrad(x: Float32Array, dy: Float32Array, dx: Float32Array, params: Int32Array): void;
  avgPool3dGrad(dy: Float32Array, dx: Float32Array, params: Int32Array): void;
  instanceNormForward(
    x: Float32Array, gamma: Float32Array, beta: Float32Array,
    /** xhat: empty where not wanted; y may be x itself (in place). */
    y: Float32Array, xhat: Float32Array, invStd: Float32Array,
    params: Int32Array, epsilon: number, alpha: number,
  ): void;
  /** params = [N, S, C, fromY]; fromY 1: `xhat` holds the forward's output y (x̂ rebuilt in the kernel). */
  instanceNormBackward(
    dy: Float32Array, xhat: Float32Array, invStd: Float32Array, gamma: Float32Array, beta: Float32Array,
    dx: Float32Array, dgamma: Float32Array, dbeta: Float32Array, params: Int32Array, alpha: number,
  ): void;
  upsampleNearest3d(x: Float32Array, y: Float32Array, params: Int32Array): void;
  upsampleNearest3dGrad(dy: Float32Array, dx: Float32Array, params: Int32Array): void;
  binary(op: number, a: Float32Array, b: Float32Array, out: Float32Array): void;
  leakyRelu(x: Float32Array, alpha: number, out: Float32Array): void;
  /** op 0 add, 1 sub, 2 mul, 3 div; params = [shape x6, aStrides x6, bStrides x6] (elements). */
  binaryBroadcast(op: number, a: Float32Array, b: Float32Array, out: Float32Array, params: Float64Array): void;
  /** op 0 relu, 1 square, 2 sigmoid, 3 exp, 4 log. */
  unary(op: number, x: Float32Array, out: Float32Array): void;
  reduceSum(x: Float32Array, out: Float32Array, outer: number, red: number, inner: number, divisor: number): void;
  softmax(x: Float32Array, out: Float32Array, rows: number, cols: number): void;
  /** params = [shape x6, begin x6, size x6]; src and dst typed arrays of one type. */
  slice(src: ArrayBufferView, dst: ArrayBufferView, params: Float64Array): void;
  concat(inputs: ArrayBufferView[], dst: ArrayBufferView, outer: number): void;
  /** params = [shape x6, srcStrides x6, dstStrides x6, srcOffset, dstOffset] (elements). */
  copyBox(src: ArrayBufferView, dst: ArrayBufferView, params: Float64Array): void;
  /**
   * An ArrayBuffer of exactly `bytes` from the addon's cache of recycled output memory (resident, no page
   * faults; zero-filled only when `zero`), or null (below the cache's minimum size, cache disabled): then
   * allocate normally.
   */
  allocBuffer(bytes: number, zero: boolean, shared?: boolean): ArrayBuffer | SharedArrayBuffer | null;
  /**
   * Detaches an ArrayBuffer that allocBuffer made, its memory going back to the cache now (true); false
   * for any other buffer. Its views read as empty afterwards.
   */
  releaseBuffer(buffer: ArrayBuffer, maxCachedBytes?: number): boolean;
  /** Reads (and with a config, first changes) the output-buffer cache's settings and counters. */
  bufferCache(config?: BufferCacheConfig): BufferCacheStats;
  /** The fused loss's first pass: probabilities into probs; returns [Σp·t (K), Σp (K), Σt (K), Σ cross-entropy]. */
  lossSums(logits: Float32Array, target: Float32Array, probs: Float32Array, channels: number, ce: 0 | 1, softmax: 0 | 1): Float64Array;
  /** The fused loss's second pass: the gradient written over the probabilities in grad. */
  lossGrad(target: Float32Array, grad: Float32Array, channels: number, a: Float64Array, b: Float64Array, ce: 0 | 1, softmax: 0 | 1, count: number, weight: number): void;
  /** One Adam update in place (core/backend/in-place.ts's adamUpdate); hyper = [stepSize, c2, beta1, beta2, epsilon]. */
  adam(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, hyper: Float64Array): void;
  /** Measured FMA throughput (GFLOP/s) of the active code path on all pool threads. */
  fmaPeak(seconds?: number): number;
  /**
   * Measured GFLOP/s of the active code path's convolution micro-kernel on all pool threads, on cached
   * inputs: the tile a 3x3x3 16 -> 16 layer's row interior uses (positions x vectors of lanes channels).
   */
  tilePeak(seconds?: number): { gflops: number; positions: number; vectors: number; lanes: number };
  /**
   * zmmFaster: the load-time probe (one thread) found the 512-bit FMA rate at least 1.5x the 256-bit one
   * (fma512Ratio, 0 without AVX-512), so avx512-zmm is the default.
   */
  info(): { simd: NativeSimd; threads: number; avx2Available: boolean; avx512Available: boolean; zmmFaster: boolean; fma512Ratio: number };
  setSimd(name: NativeSimd): NativeSimd;
}

/** Settings of the addon's output-buffer cache (core/backend/native/src/buffers.cc). */
export interface BufferCacheConfig {
  /** Most bytes of freed chunks kept for reuse (0: no cache, outputs allocated as plain typed arrays). */
  capBytes?: number;
  /** Smaller outputs are plain typed arrays. */
  minBytes?: number;
  /** A cached chunk unused for this long is unmapped at the next allocation or free. */
  maxAgeMs?: number;
  /** Fill every non-zeroed buffer it hands out with NaN bytes (tests: outputs a kernel leaves unwritten show). */
  poison?: boolean;
  /** Unmap every cached chunk now. */
  trim?: boolean;
}

export interface BufferCacheStats {
  enabled: boolean;
  capBytes: number;
  minBytes: number;
  maxAgeMs: number;
  poison: boolean;
  cachedBytes: number;
  peakCachedBytes: number;
  hits: number;
  misses: number;
  hitBytes: number;
  missBytes: number;
  evictedBytes: number;
  /** Bytes of released buffers held whole for the next output of their size (not in cachedBytes). */
  pooledBytes?: number;
}

/** The part of tfjs's MathBackendCPU the kernels use. */
interface CpuBackend {
  data: { get(dataId: object): { values?: unknown } };
  makeTensorInfo(shape: number[], dtype: TensorInfo['dtype'], values: Float32Array | Int32Array | Uint8Array): TensorInfo;
  incRef(dataId: object): void;
}

/** An output that is `t`'s own buffer, written in place (one more reference, as tfjs's Reshape does). */
function sameBuffer(b: CpuBackend, t: TensorInfo): TensorInfo {
  b.incRef(t.dataId);
  return { dataId: t.dataId, shape: t.shape.slice(), dtype: t.dtype };
}

type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };
type Fallback = (args: KernelArgs) => TensorInfo | TensorInfo[];

const ADDON_PATH = fileURLToPath(new URL('./native/build/Release/volseg_native.node', import.meta.url));
const BACKEND = 'cpu';

let addon: NativeAddon | null = null;
let loadError: string | undefined;
let loadTried = false;

function loadAddon(): NativeAddon | null {
  if (loadTried) return addon;
  loadTried = true;
  if (!existsSync(ADDON_PATH)) {
    loadError = `not built (${ADDON_PATH} is missing; run npm install)`;
    return null;
  }
  try {
    const require = createRequire(import.meta.url);
    addon = require(ADDON_PATH) as NativeAddon;
  } catch (err) {
    loadError = `failed to load ${ADDON_PATH}: ${err instanceof Error ? err.message : String(err)}`;
    addon = null;
  }
  return addon;
}

/** The loaded addon, or null (for benchmarks and tests that call it directly). */
export function nativeAddon(): NativeAddon | null {
  if (process.env.VOLSEG_NO_NATIVE === '1') return null;
  return loadAddon();
}

/**
 * The addon where its kernels are active (loaded, registered and enabled on the cpu backend), for the
 * host-array passes beside the kernels (Adam, gradient sums, the fused loss); else null.
 */
export function activeAddon(): NativeAddon | null {
  return capabilities().nativeKernels ? nativeAddon() : null;
}

/**
 * `dst.set(src)`, on the native pool's threads where the addon is active and `src` has 1 MiB or more
 * (rows of 16 KiB, copied in parallel by copyBox); a plain `set` otherwise. For bulk copies on the main
 * thread, such as the emulated host link's staging of swap-outs, where one thread's memcpy would leave the
 * other cores idle. `dst` must have at least src.length elements.
 */
export function copyFloats(dst: Float32Array, src: Float32Array): void {
  if (dst.length < src.length) throw new Error(`copyFloats: destination has ${dst.length} elements, source ${src.length}`);
  const a = src.byteLength >= 1 << 20 ? activeAddon() : null;
  const C = 4096;
  const R = Math.floor(src.length / C);
  if (!a || R === 0) {
    dst.set(src);
    return;
  }
  a.copyBox(src, dst, Float64Array.from([1, 1, 1, 1, R, C, 0, 0, 0, 0, C, 1, 0, 0, 0, 0, C, 1, 0, 0]));
  if (R * C < src.length) dst.set(src.subarray(R * C), R * C);
}

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

class Unsupported extends Error {}

function cpu(backend: unknown): CpuBackend {
  return backend as CpuBackend;
}

/** The float32 values of a tensor, or throws Unsupported (the caller falls back). */
function f32(backend: CpuBackend, t: TensorInfo | undefined): Float32Array {
  if (!t || t.dtype !== 'float32') throw new Unsupported();
  const values = backend.data.get(t.dataId).values;
  if (!(values instanceof Float32Array) || values.length !== util.sizeFromShape(t.shape) || values.length === 0) {
    throw new Unsupported();
  }
  return values;
}

function req(t: TensorInfo | undefined): TensorInfo {
  if (!t) throw new Unsupported();
  return t;
}

function rank5(t: TensorInfo | undefined): [number, number, number, number, number] {
  if (!t || t.shape.length !== 5) throw new Unsupported();
  return t.shape as [number, number, number, number, number];
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function require1(cond: boolean): void {
  if (!cond) throw new Unsupported();
}

// Outputs at least this large come from the addon's buffer cache (Infinity: cache off or not loaded).
let cacheMinBytes = Infinity;

function syncCacheSettings(stats: BufferCacheStats): BufferCacheStats {
  // Worker threads (spatial partitioning's ranks) allocate plain arrays: with the cache serving them, a
  // test process exited abnormally after its ranks ended in about 1 run in 6 (never with the cache off);
  // the cause is not found. The main thread keeps the cache.
  cacheMinBytes = isMainThread && stats.enabled && stats.capBytes > 0 ? Math.max(1, stats.minBytes) : Infinity;
  poolCapBytes = releaseOnDispose && cacheMinBytes < Infinity ? stats.capBytes : 0;
  poolMaxAgeMs = stats.maxAgeMs;
  poolPoison = stats.poison;
  return stats;
}

/**
 * Reads and (with a config) changes the addon's output-buffer cache; null when the addon is not loaded.
 * Kernel outputs of at least `minBytes` are written into recycled, already resident memory instead of
 * fresh pages (whose page faults cost more than most non-convolution kernels themselves).
 */
export function bufferCache(config?: BufferCacheConfig): BufferCacheStats | null {
  const a = nativeAddon();
  if (!a) return null;
  // Pooled buffers go to the addon's cache first, so that a trim or a smaller cap covers them too.
  if (config?.trim || config?.capBytes !== undefined || config?.maxAgeMs !== undefined) expirePool(Infinity);
  return { ...syncCacheSettings(a.bufferCache(config)), pooledBytes };
}

/**
 * An output of `n` elements like `ctor` for a kernel that writes every element, from the buffer cache
 * when large enough (contents undefined unless `zero`), else a fresh zeroed typed array.
 */
function outArray<T extends Numeric>(a: NativeAddon, ctor: { new (n: number): T; new (b: ArrayBufferLike): T; BYTES_PER_ELEMENT: number }, n: number, zero = false): T {
  const bytes = n * ctor.BYTES_PER_ELEMENT;
  const shared = sharedOutputs > 0 && bytes >= SHARED_MIN_BYTES;
  if (bytes >= cacheMinBytes) {
    const pooled = fromPool(bytes, zero, shared);
    if (pooled) return new ctor(pooled);
    const buf = a.allocBuffer(bytes, zero, shared);
    if (buf) {
      if (releaseOnDispose) lentBuffers.set(buf, 0);
      return new ctor(buf);
    }
  }
  return shared ? new ctor(new SharedArrayBuffer(bytes)) : new ctor(n);
}

// ------------------------------------------------------------------------------------------------
// Buffers back to the cache at dispose
// ------------------------------------------------------------------------------------------------

/**
 * Output buffers from the cache that go back to it as soon as the cpu backend deletes the last entry
 * over them, instead of at V8's next GC: buffer -> how many of the backend's entries view it (a
 * contiguous slice is a view into its source's buffer under another id; a reshape or identity shares
 * the id, which the backend's own reference count covers). Without it every output of a step is
 * "external memory" to V8 until a GC finds it dead: a 64^3 unet3d step started about a dozen
 * Mark-Compacts and twenty scavenges for external memory pressure, and the cache, refilled only at
 * those GCs, missed.
 *
 * A buffer leaves the map, and is then V8's to free as before, once its values are handed out
 * (the backend's readSync, behind dataSync(), data(), arraySync(), print...): its reader may keep them
 * past the tensor's dispose, and a recycled buffer holds the next output's values (a detached one
 * reads as empty). Code of this project that reads a tensor for the moment only uses in-place.ts's
 * peekValues, which does not hand the values out; a view kept from it past the dispose would read
 * another tensor's values.
 * VOLSEG_BUFFER_RELEASE=0 leaves every buffer to V8 (for comparison).
 */
const lentBuffers = new WeakMap<ArrayBufferLike, number>();
const releaseOnDispose = process.env.VOLSEG_BUFFER_RELEASE !== '0';
const trackedBackends = new WeakSet<object>();
/** The bytes handed back at dispose so far (bufferRelease()). */
let releasedBytes = 0;
let releasedCount = 0;

interface StoredEntry {
  values?: unknown;
}
interface EntryMap {
  get(k: object): StoredEntry | undefined;
  has(k: object): boolean;
  set(k: object, v: StoredEntry): unknown;
  delete(k: object): boolean;
}

function viewedBuffer(v: unknown): ArrayBufferLike | null {
  return ArrayBuffer.isView(v) ? v.buffer : null;
}

function holdBuffer(v: unknown): void {
  const buf = viewedBuffer(v);
  const n = buf ? lentBuffers.get(buf) : undefined;
  if (n !== undefined) lentBuffers.set(buf!, n + 1);
}

function dropBuffer(a: NativeAddon, v: unknown): void {
  const buf = viewedBuffer(v);
  const n = buf ? lentBuffers.get(buf) : undefined;
  if (!buf || n === undefined) return;
  if (n > 1) {
    lentBuffers.set(buf, n - 1);
    return;
  }
  lentBuffers.delete(buf);
  // n === 0: the entry was counted nowhere (its values were assigned after the set): leave it to V8.
  if (n !== 1) return;
  const bytes = buf.byteLength;
  releasedBytes += bytes;
  releasedCount++;
  // The pool holds at most the cap; a buffer it cannot take goes to the addon's cache, which is then
  // trimmed to what the pool leaves of the cap.
  const key = poolKey(bytes, buf instanceof SharedArrayBuffer);
  if (pooledBytes + bytes <= poolCapBytes) {
    let list = pool.get(key);
    if (!list) pool.set(key, (list = []));
    list.push({ buf, since: performance.now() });
    pooledBytes += bytes;
  } else if (buf instanceof ArrayBuffer) {
    a.releaseBuffer(buf, Math.max(0, poolCapBytes - pooledBytes));
  } // else a SharedArrayBuffer, which cannot be detached: V8 frees it at a GC, as before
}

/** Pool keys: byte length, negative for SharedArrayBuffers (the outputs of shareNativeOutputs windows). */
function poolKey(bytes: number, shared: boolean): number {
  return shared ? -bytes : bytes;
}

/**
 * Released buffers kept whole for the next output of the same byte length (a step's sizes repeat
 * every step), newest first: reusing the ArrayBuffer itself makes no new backing store, so V8's count
 * of external memory does not grow while a forward pass saves its activations (each such growth of
 * 64 MiB past the last Mark-Compact starts another). The pool holds at most the cache's cap; a buffer
 * over it, idle longer than maxAgeMs (checked at the next allocation), or trimmed goes to the addon's
 * cache (releaseBuffer), which is then trimmed to what the pool leaves of the cap. (Buffers V8 frees at
 * a GC, those handed out, reach the cache under its own cap: pool and cache together can hold more
 * than the cap until the next release or trim.)
 * SharedArrayBuffers (outputs inside a shareNativeOutputs window) pool apart, for shared outputs only;
 * they cannot be detached, so one over the cap or expired is left to V8's GC.
 */
const pool = new Map<number, { buf: ArrayBufferLike; since: number }[]>();
let pooledBytes = 0;
let poolCapBytes = 0;
let poolMaxAgeMs = 2000;
let poolPoison = false;
let poolSweptAt = 0;

function fromPool(bytes: number, zero: boolean, shared: boolean): ArrayBufferLike | null {
  if (pooledBytes === 0) return null;
  const now = performance.now();
  if (now - poolSweptAt > 250) expirePool(now - poolMaxAgeMs);
  const e = pool.get(poolKey(bytes, shared))?.pop();
  if (!e) return null;
  pooledBytes -= bytes;
  lentBuffers.set(e.buf, 0);
  if (zero) new Uint8Array(e.buf).fill(0);
  else if (poolPoison) new Uint8Array(e.buf).fill(0xff);
  return e.buf;
}

/** Hands pooled buffers freed before `before` (performance.now() time; Infinity: all) to the addon's cache. */
function expirePool(before: number): void {
  poolSweptAt = performance.now();
  const a = addon;
  for (const [key, list] of pool) {
    const bytes = Math.abs(key);
    let keep = 0;
    for (const e of list) {
      if (e.since < before && a) {
        pooledBytes -= bytes;
        if (e.buf instanceof ArrayBuffer) a.releaseBuffer(e.buf, Math.max(0, poolCapBytes - pooledBytes));
      } else list[keep++] = e;
    }
    list.length = keep;
    if (keep === 0) pool.delete(key);
  }
}

/**
 * Makes `backend` (tfjs's MathBackendCPU) count its entries per cached buffer and hand the buffer back
 * when the last goes: its DataStorage's inner map is wrapped (so patches of DataStorage's own methods,
 * such as the memory meter's, stay as they are), and readSync marks what it returns as handed out.
 */
function trackBackend(a: NativeAddon, backend: unknown): void {
  if (!releaseOnDispose || typeof backend !== 'object' || backend === null || trackedBackends.has(backend)) return;
  trackedBackends.add(backend);
  if (typeof a.releaseBuffer !== 'function') return;
  const b = backend as { data?: { data?: EntryMap }; readSync?: (dataId: object) => unknown };
  const store = b.data;
  const inner = store?.data;
  const readSync = b.readSync;
  if (!store || !inner || typeof inner.get !== 'function' || typeof inner.set !== 'function' || typeof readSync !== 'function') return;
  const map: EntryMap = {
    get: (k) => inner.get(k),
    has: (k) => inner.has(k),
    set: (k, v) => {
      holdBuffer(v?.values);
      const old = inner.get(k);
      inner.set(k, v);
      if (old) dropBuffer(a, old.values);
      return map;
    },
    delete: (k) => {
      const old = inner.get(k);
      const gone = inner.delete(k);
      if (old) dropBuffer(a, old.values);
      return gone;
    },
  };
  store.data = map;
  b.readSync = function readSyncHandingOut(this: unknown, dataId: object): unknown {
    const buf = viewedBuffer(inner.get(dataId)?.values);
    if (buf) lentBuffers.delete(buf);
    return readSync.call(this, dataId);
  };
}

/** Cache buffers handed back when their last tensor was disposed (rather than at a GC), since start. */
export function bufferRelease(): { enabled: boolean; buffers: number; bytes: number; pooledBytes: number } {
  return { enabled: releaseOnDispose, buffers: releasedCount, bytes: releasedBytes, pooledBytes };
}

/** Holders of shareNativeOutputs(); outputs are SharedArrayBuffers while any holds it. */
let sharedOutputs = 0;
/** Smaller outputs stay plain arrays (a swap leaves tensors under 64 KiB on the device). */
const SHARED_MIN_BYTES = 64 * 1024;

/**
 * While the returned release function has not been called, native kernels write their outputs of 64 KiB
 * or more into SharedArrayBuffers (from the buffer cache where it serves them), which worker threads can
 * read: the emulated host link's swap-outs then copy them off the main thread. Outside such a window the
 * outputs are plain ArrayBuffers (a SharedArrayBuffer posted to a worker is shared, not copied).
 */
export function shareNativeOutputs(): () => void {
  sharedOutputs++;
  let released = false;
  return () => {
    if (released) return;
    released = true;
    sharedOutputs--;
  };
}

function outF32(a: NativeAddon, n: number, zero = false): Float32Array {
  return outArray(a, Float32Array, n, zero);
}

function convParams(info: backend_util.Conv3DInfo): Int32Array {
  require1(info.dilationDepth === 1 && info.dilationHeight === 1 && info.dilationWidth === 1);
  require1(info.dataFormat === 'channelsLast');
  const p = info.padInfo;
  require1(p.front >= 0 && p.top >= 0 && p.left >= 0);
  const v = [
    info.batchSize, info.inDepth, info.inHeight, info.inWidth, info.inChannels,
    info.outDepth, info.outHeight, info.outWidth, info.outChannels,
    info.filterDepth, info.filterHeight, info.filterWidth,
    info.strideDepth, info.strideHeight, info.strideWidth,
    p.front, p.top, p.left,
  ];
  for (let i = 0; i < 15; i++) require1(Number.isInteger(v[i]) && v[i] >= 1);
  return Int32Array.from(v);
}

function poolParams(info: backend_util.Conv3DInfo): Int32Array {
  require1(info.dilationDepth === 1 && info.dilationHeight === 1 && info.dilationWidth === 1);
  const p = info.padInfo;
  require1(p.front >= 0 && p.top >= 0 && p.left >= 0);
  const v = [
    info.batchSize, info.inDepth, info.inHeight, info.inWidth, info.inChannels,
    info.outDepth, info.outHeight, info.outWidth,
    info.effectiveFilterDepth, info.effectiveFilterHeight, info.effectiveFilterWidth,
    info.strideDepth, info.strideHeight, info.strideWidth,
    p.front, p.top, p.left,
  ];
  for (let i = 0; i < 14; i++) require1(Number.isInteger(v[i]) && v[i] >= 1);
  return Int32Array.from(v);
}

function isNdhwc(dataFormat: unknown): boolean {
  return dataFormat === undefined || dataFormat === 'NDHWC';
}

// ------------------------------------------------------------------------------------------------
// Kernel implementations: each returns the result, or throws Unsupported to use the fallback.
// ------------------------------------------------------------------------------------------------

type Impl = (a: NativeAddon, args: KernelArgs) => TensorInfo | TensorInfo[];

const conv3d: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const { x, filter } = inputs;
  const { strides, pad, dilations, dataFormat } = (attrs ?? {}) as Record<string, unknown>;
  require1(isNdhwc(dataFormat));
  const xs = rank5(x), fs = rank5(filter);
  require1(fs[3] === xs[4]);
  const info = backend_util.computeConv3DInfo(xs, fs, strides as number, (dilations ?? 1) as number, pad as 'same');
  const params = convParams(info);
  const xv = f32(b, x), wv = f32(b, filter);
  const out = outF32(a, util.sizeFromShape(info.outShape));
  require1(out.length > 0);
  a.conv3d(xv, wv, out, params);
  return b.makeTensorInfo(info.outShape, 'float32', out);
};

const conv3dBackpropInput: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const { dy, filter } = inputs;
  const { strides, pad, inputShape } = (attrs ?? {}) as Record<string, unknown>;
  const ys = rank5(dy), fs = rank5(filter);
  require1(Array.isArray(inputShape) && inputShape.length === 5);
  const inShape = inputShape as [number, number, number, number, number];
  require1(fs[3] === inShape[4] && fs[4] === ys[4]);
  const info = backend_util.computeConv3DInfo(inShape, fs, strides as number, 1, pad as 'same');
  require1(sameShape(info.outShape, ys));
  const params = convParams(info);
  const dyv = f32(b, dy), wv = f32(b, filter);
  const out = outF32(a, util.sizeFromShape(inShape));
  require1(out.length > 0);
  a.conv3dBackpropInput(dyv, wv, out, params);
  return b.makeTensorInfo(inShape.slice(), 'float32', out);
};

const conv3dBackpropFilter: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const { x, dy } = inputs;
  const { strides, pad, filterShape } = (attrs ?? {}) as Record<string, unknown>;
  const xs = rank5(x), ys = rank5(dy);
  require1(Array.isArray(filterShape) && filterShape.length === 5);
  const fs = filterShape as [number, number, number, number, number];
  require1(fs[3] === xs[4] && fs[4] === ys[4]);
  const info = backend_util.computeConv3DInfo(xs, fs, strides as number, 1, pad as 'same');
  require1(sameShape(info.outShape, ys));
  const params = convParams(info);
  const xv = f32(b, x), dyv = f32(b, dy);
  const out = outF32(a, util.sizeFromShape(fs));
  require1(out.length > 0);
  a.conv3dBackpropFilter(xv, dyv, out, params);
  return b.makeTensorInfo(fs.slice(), 'float32', out);
};

function poolInfo(shape: [number, number, number, number, number], attrs: Record<string, unknown>) {
  return backend_util.computePool3DInfo(
    shape,
    attrs.filterSize as number,
    attrs.strides as number,
    1,
    attrs.pad as 'same',
    attrs.dimRoundingMode as 'floor' | undefined,
  );
}

function pool3d(isAvg: boolean): Impl {
  return (a, { inputs, backend, attrs }) => {
    const b = cpu(backend);
    const at = (attrs ?? {}) as Record<string, unknown>;
    require1(isNdhwc(at.dataFormat));
    const xs = rank5(inputs.x);
    const info = poolInfo(xs, at);
    const params = poolParams(info);
    const xv = f32(b, inputs.x);
    const out = outF32(a, util.sizeFromShape(info.outShape));
    require1(out.length > 0);
    a.pool3d(xv, out, params, isAvg ? 1 : 0);
    return b.makeTensorInfo(info.outShape, 'float32', out);
  };
}

const maxPool3dGrad: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const at = (attrs ?? {}) as Record<string, unknown>;
  const { dy, input } = inputs;
  const xs = rank5(input);
  const info = poolInfo(xs, at);
  // tfjs encodes the arg-max position as wD*fH*fW + wR*fH + wC; that only means "the arg-max"
  // when fH == fW, so other filters keep tfjs's own kernel (and its exact semantics).
  require1(info.effectiveFilterHeight === info.effectiveFilterWidth);
  require1(sameShape(rank5(dy), info.outShape));
  const params = poolParams(info);
  const xv = f32(b, input), dyv = f32(b, dy);
  const out = outF32(a, util.sizeFromShape(xs));
  a.maxPool3dGrad(xv, dyv, out, params);
  return b.makeTensorInfo(xs.slice(), 'float32', out);
};

const avgPool3dGrad: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const at = (attrs ?? {}) as Record<string, unknown>;
  const { dy, input } = inputs;
  const xs = rank5(input);
  const info = poolInfo(xs, at);
  require1(sameShape(rank5(dy), info.outShape));
  const params = poolParams(info);
  const dyv = f32(b, dy);
  const out = outF32(a, util.sizeFromShape(xs));
  a.avgPool3dGrad(dyv, out, params);
  return b.makeTensorInfo(xs.slice(), 'float32', out);
};

const instanceNormForward: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const x = req(inputs.x), gamma = req(inputs.gamma), beta = req(inputs.beta);
  const { epsilon, alpha, withXhat = true, inPlace = false } = (attrs ?? {}) as Partial<NormForwardAttrs>;
  const [N, D, H, W, C] = rank5(x);
  require1(typeof epsilon === 'number' && typeof alpha === 'number');
  const xv = f32(b, x), gv = f32(b, gamma), bv = f32(b, beta);
  require1(gv.length === C && bv.length === C);
  const S = D * H * W;
  // In place: y is written over x (core/backend/kernels's contract: the caller owns x's buffer exclusively).
  const y = inPlace ? xv : outF32(a, xv.length);
  const xhat = withXhat ? outF32(a, xv.length) : new Float32Array(0);
  const invStd = new Float32Array(N * C);
  a.instanceNormForward(xv, gv, bv, y, xhat, invStd, Int32Array.of(N, S, C), epsilon as number, alpha as number);
  const yOut = inPlace ? sameBuffer(b, x) : b.makeTensorInfo(x.shape.slice(), 'float32', y);
  const stats = b.makeTensorInfo([N, C], 'float32', invStd);
  return withXhat ? [yOut, b.makeTensorInfo(x.shape.slice(), 'float32', xhat), stats] : [yOut, stats];
};

const instanceNormBackward: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const dy = req(inputs.dy), xhat = req(inputs.xhat), invStd = req(inputs.invStd);
  const gamma = req(inputs.gamma), beta = req(inputs.beta);
  const { alpha, inPlace, fromOutput } = (attrs ?? {}) as { alpha?: number; inPlace?: boolean; fromOutput?: boolean };
  require1(typeof alpha === 'number' && (!fromOutput || alpha > 0));
  const [N, D, H, W, C] = rank5(dy);
  require1(sameShape(rank5(xhat), dy.shape));
  const dyv = f32(b, dy), hv = f32(b, xhat), isv = f32(b, invStd), gv = f32(b, gamma), bv = f32(b, beta);
  require1(isv.length === N * C && gv.length === C && bv.length === C);
  const S = D * H * W;
  // In place: the kernel writes dx over dy element by element (core/backend/kernels's contract).
  const dx = inPlace ? dyv : outF32(a, dyv.length), dgamma = new Float32Array(C), dbeta = new Float32Array(C);
  a.instanceNormBackward(dyv, hv, isv, gv, bv, dx, dgamma, dbeta, Int32Array.of(N, S, C, fromOutput ? 1 : 0), alpha as number);
  return [
    inPlace ? sameBuffer(b, dy) : b.makeTensorInfo(dy.shape.slice(), 'float32', dx),
    b.makeTensorInfo(gamma.shape.slice(), 'float32', dgamma),
    b.makeTensorInfo(beta.shape.slice(), 'float32', dbeta),
  ];
};

function factorOf(attrs: NamedAttrMap | undefined): number {
  const f = (attrs as { factor?: unknown } | undefined)?.factor;
  require1(typeof f === 'number' && Number.isInteger(f) && f >= 1);
  return f as number;
}

const upsampleNearest3d: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const f = factorOf(attrs);
  const [N, D, H, W, C] = rank5(inputs.x);
  const xv = f32(b, inputs.x);
  const shape = [N, D * f, H * f, W * f, C];
  const out = outF32(a, util.sizeFromShape(shape));
  a.upsampleNearest3d(xv, out, Int32Array.of(N, D, H, W, C, f));
  return b.makeTensorInfo(shape, 'float32', out);
};

const upsampleNearest3dGrad: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const f = factorOf(attrs);
  const [N, Df, Hf, Wf, C] = rank5(inputs.dy);
  require1(Df % f === 0 && Hf % f === 0 && Wf % f === 0);
  const dyv = f32(b, inputs.dy);
  const shape = [N, Df / f, Hf / f, Wf / f, C];
  const out = outF32(a, util.sizeFromShape(shape));
  a.upsampleNearest3dGrad(dyv, out, Int32Array.of(N, Df / f, Hf / f, Wf / f, C, f));
  return b.makeTensorInfo(shape, 'float32', out);
};

/** Pads a shape to 6 dims with leading 1s. */
function pad6(shape: readonly number[]): number[] {
  require1(shape.length <= 6);
  return [...new Array(6 - shape.length).fill(1), ...shape];
}

/** Element strides of `shape` (padded to 6 dims) aligned to `out`, 0 on broadcast dims. */
function broadcastStrides(shape: readonly number[], out: number[]): number[] {
  const s = pad6(shape);
  const strides = new Array(6).fill(0);
  let acc = 1;
  for (let d = 5; d >= 0; d--) {
    strides[d] = s[d] === 1 && out[d] !== 1 ? 0 : acc;
    acc *= s[d];
  }
  return strides;
}

/**
 * float32 Add/Sub/Multiply/RealDiv, with broadcasting (tfjs computes in double and rounds to
 * float32, which for + - * / equals the float32 operation). Other dtypes fall back.
 */
function binary(op: 0 | 1 | 2 | 3): Impl {
  return (a, { inputs, backend }) => {
    const b = cpu(backend);
    const x = req(inputs.a), y = req(inputs.b);
    const xv = f32(b, x), yv = f32(b, y);
    if (sameShape(x.shape, y.shape)) {
      if (op === 3) {
        const out = outF32(a, xv.length);
        const shape = pad6([xv.length]);
        const st = broadcastStrides([xv.length], shape);
        a.binaryBroadcast(op, xv, yv, out, Float64Array.from([...shape, ...st, ...st]));
        return b.makeTensorInfo(x.shape.slice(), 'float32', out);
      }
      const out = outF32(a, xv.length);
      a.binary(op, xv, yv, out);
      return b.makeTensorInfo(x.shape.slice(), 'float32', out);
    }
    const outShape = backend_util.assertAndGetBroadcastShape(x.shape, y.shape);
    const size = util.sizeFromShape(outShape);
    require1(size > 0 && outShape.length <= 6);
    const o6 = pad6(outShape);
    let shape = o6, as = broadcastStrides(x.shape, o6), bs = broadcastStrides(y.shape, o6);
    // Merge adjacent dims that stay contiguous for both operands (fewer, longer rows).
    const dims: [number, number, number][] = [];
    for (let d = 0; d < 6; d++) {
      const last = dims[dims.length - 1];
      if (last && last[1] === as[d] * shape[d] && last[2] === bs[d] * shape[d]) {
        last[0] *= shape[d];
        last[1] = as[d];
        last[2] = bs[d];
      } else {
        dims.push([shape[d], as[d], bs[d]]);
      }
    }
    while (dims.length < 6) dims.unshift([1, 0, 0]);
    shape = dims.map((v) => v[0]);
    as = dims.map((v) => v[1]);
    bs = dims.map((v) => v[2]);
    const out = outF32(a, size);
    a.binaryBroadcast(op, xv, yv, out, Float64Array.from([...shape, ...as, ...bs]));
    return b.makeTensorInfo(outShape, 'float32', out);
  };
}

/** float32 unary ops with tfjs's formulas (see addon: relu, square, sigmoid, exp, log). */
function unary(op: 0 | 1 | 2 | 3 | 4): Impl {
  return (a, { inputs, backend }) => {
    const b = cpu(backend);
    const x = req(inputs.x);
    const xv = f32(b, x);
    const out = outF32(a, xv.length);
    a.unary(op, xv, out);
    return b.makeTensorInfo(x.shape.slice(), 'float32', out);
  };
}

/** float32 Sum / Mean over a contiguous block of axes (tfjs's summation order, in double). */
function reduce(mean: boolean): Impl {
  return (a, { inputs, backend, attrs }) => {
    const b = cpu(backend);
    const x = req(inputs.x);
    const { axis, keepDims } = (attrs ?? {}) as { axis?: number | number[]; keepDims?: boolean };
    const xv = f32(b, x);
    // axis null/undefined means every axis (as in tfjs)
    const axes = util.parseAxisParam((axis ?? null) as number[], x.shape).slice().sort((p, q) => p - q);
    require1(axes.length > 0);
    for (let i = 1; i < axes.length; i++) require1(axes[i] === axes[i - 1] + 1);
    const [outShape, reduceShape] = backend_util.computeOutAndReduceShapes(x.shape, axes);
    const red = util.sizeFromShape(reduceShape);
    const outer = util.sizeFromShape(x.shape.slice(0, axes[0]));
    const inner = util.sizeFromShape(x.shape.slice(axes[axes.length - 1] + 1));
    const out = outF32(a, outer * inner);
    a.reduceSum(xv, out, outer, red, inner, mean ? Math.fround(red) : 0);
    const shape = keepDims ? backend_util.expandShapeToKeepDim(outShape, axes) : outShape;
    return b.makeTensorInfo(shape, 'float32', out);
  };
}

const softmax: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const logits = req(inputs.logits);
  const dim = (attrs as { dim?: number } | undefined)?.dim ?? -1;
  const rank = logits.shape.length;
  require1(rank >= 1 && (dim === -1 || dim === rank - 1));
  const xv = f32(b, logits);
  const cols = logits.shape[rank - 1];
  const out = outF32(a, xv.length);
  a.softmax(xv, out, xv.length / cols, cols);
  return b.makeTensorInfo(logits.shape.slice(), 'float32', out);
};

type Numeric = Float32Array | Int32Array | Uint8Array;

/** The values of a numeric (non-string, non-complex) tensor, or throws Unsupported. */
function numericValues(backend: CpuBackend, t: TensorInfo): Numeric {
  require1(t.dtype === 'float32' || t.dtype === 'int32' || t.dtype === 'bool');
  const v = backend.data.get(t.dataId).values;
  require1(v instanceof Float32Array || v instanceof Int32Array || v instanceof Uint8Array);
  const values = v as Numeric;
  require1(values.length === util.sizeFromShape(t.shape) && values.length > 0);
  return values;
}

/** An output like `v` (same typed-array type) of n elements that the kernel writes in full (see outArray). */
function allocLike(a: NativeAddon, v: Numeric, n: number, zero = false): Numeric {
  return outArray(a, v.constructor as unknown as Parameters<typeof outArray>[1], n, zero);
}

/** A slice of x as tfjs's sliceImpl would return it: a view when contiguous, else a copy. */
function sliceValues(a: NativeAddon, x: TensorInfo, values: Numeric, begin: number[], size: number[]): Numeric {
  const n = util.sizeFromShape(size);
  if (slice_util.isSliceContinous(x.shape, begin, size)) {
    const off = slice_util.computeFlatOffset(begin, util.computeStrides(x.shape));
    return values.subarray(off, off + n) as Numeric;
  }
  const out = allocLike(a, values, n);
  const begin6 = [...new Array(6 - begin.length).fill(0), ...begin];
  a.slice(values, out, Float64Array.from([...pad6(x.shape), ...begin6, ...pad6(size)]));
  return out;
}

const slice: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const x = req(inputs.x);
  const { begin, size } = (attrs ?? {}) as { begin: number | number[]; size?: number | number[] };
  require1(x.shape.length >= 1 && x.shape.length <= 6);
  const [$begin, $size] = slice_util.parseSliceParams(x, begin, size);
  slice_util.assertParamsValid(x, $begin, $size);
  require1(util.sizeFromShape($size) > 0);
  const values = numericValues(b, x);
  const out = sliceValues(a, x, values, $begin, $size);
  return b.makeTensorInfo($size, x.dtype, out);
};

const splitV: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const x = req(inputs.x);
  const { numOrSizeSplits, axis } = (attrs ?? {}) as { numOrSizeSplits: number | number[]; axis: number };
  require1(x.shape.length >= 1 && x.shape.length <= 6);
  const $axis = util.parseAxisParam(axis, x.shape)[0];
  const splitSizes = backend_util.prepareSplitSize(x, numOrSizeSplits, $axis);
  require1(splitSizes.every((s) => s > 0));
  const values = numericValues(b, x);
  const begin = new Array(x.shape.length).fill(0);
  return splitSizes.map((s) => {
    const size = x.shape.slice();
    size[$axis] = s;
    const info = b.makeTensorInfo(size, x.dtype, sliceValues(a, x, values, begin, size));
    begin[$axis] += s;
    return info;
  });
};

const transpose: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const x = req(inputs.x);
  const perm = (attrs as { perm?: number[] } | undefined)?.perm;
  const rank = x.shape.length;
  require1(Array.isArray(perm) && perm.length === rank && rank >= 1 && rank <= 6);
  const values = numericValues(b, x);
  const newShape = perm!.map((p) => x.shape[p]);
  const xStrides = [...util.computeStrides(x.shape), 1];
  const outStrides = [...util.computeStrides(newShape), 1];
  const lead = 6 - rank;
  const shape = pad6(newShape);
  const ss = [...new Array(lead).fill(0), ...perm!.map((p) => xStrides[p])];
  const ds = [...new Array(lead).fill(0), ...outStrides];
  const out = allocLike(a, values, values.length);
  a.copyBox(values, out, Float64Array.from([...shape, ...ss, ...ds, 0, 0]));
  return b.makeTensorInfo(newShape, x.dtype, out);
};

const padV2: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const x = req(inputs.x);
  const { paddings, constantValue } = (attrs ?? {}) as { paddings?: [number, number][]; constantValue?: number };
  const rank = x.shape.length;
  require1(Array.isArray(paddings) && paddings.length === rank && rank >= 1 && rank <= 6);
  require1(paddings!.every((p) => p[0] >= 0 && p[1] >= 0));
  const values = numericValues(b, x);
  const outShape = paddings!.map((p, i) => p[0] + x.shape[i] + p[1]);
  // Only the interior is copied: the padding must hold the constant (zeros come zeroed).
  const out = allocLike(a, values, util.sizeFromShape(outShape), constantValue === 0);
  if (constantValue !== 0) out.fill(constantValue as number);
  const xStrides = [...util.computeStrides(x.shape), 1];
  const outStrides = [...util.computeStrides(outShape), 1];
  const lead = 6 - rank;
  const dstOffset = paddings!.reduce((acc, p, i) => acc + p[0] * outStrides[i], 0);
  a.copyBox(
    values,
    out,
    Float64Array.from([
      ...pad6(x.shape),
      ...new Array(lead).fill(0), ...xStrides,
      ...new Array(lead).fill(0), ...outStrides,
      0, dstOffset,
    ]),
  );
  return b.makeTensorInfo(outShape, x.dtype, out);
};

const concat: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const list = (Array.isArray(inputs) ? inputs : Object.values(inputs)) as TensorInfo[];
  require1(list.length >= 1);
  const axis = (attrs as { axis?: number } | undefined)?.axis ?? 0;
  const $axis = util.parseAxisParam(axis, list[0].shape)[0];
  const shapes = list.map((t) => t.shape);
  backend_util.assertParamsConsistent(shapes, $axis);
  const outShape = backend_util.computeOutShape(shapes, $axis);
  require1(util.sizeFromShape(outShape) > 0);
  const nonEmpty = list.filter((t) => util.sizeFromShape(t.shape) > 0);
  require1(nonEmpty.length >= 2);
  const dtype = list[0].dtype;
  require1(nonEmpty.every((t) => t.dtype === dtype));
  const values = nonEmpty.map((t) => numericValues(b, t));
  require1(values.every((v) => v.constructor === values[0].constructor));
  const outer = util.sizeFromShape(outShape.slice(0, $axis));
  const out = allocLike(a, values[0], util.sizeFromShape(outShape));
  a.concat(values, out, outer);
  return b.makeTensorInfo(outShape, dtype, out);
};

const leakyRelu: Impl = (a, { inputs, backend, attrs }) => {
  const b = cpu(backend);
  const alpha = (attrs as { alpha?: unknown } | undefined)?.alpha;
  require1(typeof alpha === 'number');
  const x = req(inputs.x);
  const xv = f32(b, x);
  const out = outF32(a, xv.length);
  a.leakyRelu(xv, alpha as number, out);
  return b.makeTensorInfo(x.shape.slice(), 'float32', out);
};

/**
 * The native kernels, by tfjs kernel name. `custom`: a project kernel (core/backend/kernels), which
 * may not have a JavaScript registration yet. `general`: tfjs ops that are not convolutions but
 * that tfjs's cpu backend runs 10-500x slower than memory speed on 5-D volumes (element-wise
 * and broadcasting arithmetic, reductions over spatial axes, softmax, slice/split/concat —
 * concat's gradient is a split —, transpose, pad); env VOLSEG_NATIVE_GENERAL=0 leaves those to
 * tfjs.
 */
const SPECS: { name: string; impl: Impl; custom?: boolean; general?: boolean }[] = [
  { name: 'Conv3D', impl: conv3d },
  { name: 'Conv3DBackpropInputV2', impl: conv3dBackpropInput },
  { name: 'Conv3DBackpropFilterV2', impl: conv3dBackpropFilter },
  { name: 'MaxPool3D', impl: pool3d(false) },
  { name: 'AvgPool3D', impl: pool3d(true) },
  { name: 'MaxPool3DGrad', impl: maxPool3dGrad },
  { name: 'AvgPool3DGrad', impl: avgPool3dGrad },
  { name: 'VolInstanceNormForward', impl: instanceNormForward, custom: true },
  { name: 'VolInstanceNormBackward', impl: instanceNormBackward, custom: true },
  { name: 'VolUpsampleNearest3D', impl: upsampleNearest3d, custom: true },
  { name: 'VolUpsampleNearest3DGrad', impl: upsampleNearest3dGrad, custom: true },
  { name: 'Add', impl: binary(0), general: true },
  { name: 'Sub', impl: binary(1), general: true },
  { name: 'Multiply', impl: binary(2), general: true },
  { name: 'RealDiv', impl: binary(3), general: true },
  { name: 'LeakyRelu', impl: leakyRelu, general: true },
  { name: 'Relu', impl: unary(0), general: true },
  { name: 'Square', impl: unary(1), general: true },
  { name: 'Sigmoid', impl: unary(2), general: true },
  { name: 'Exp', impl: unary(3), general: true },
  { name: 'Log', impl: unary(4), general: true },
  { name: 'Sum', impl: reduce(false), general: true },
  { name: 'Mean', impl: reduce(true), general: true },
  { name: 'Softmax', impl: softmax, general: true },
  { name: 'Slice', impl: slice, general: true },
  { name: 'SplitV', impl: splitV, general: true },
  { name: 'Concat', impl: concat, general: true },
  { name: 'Transpose', impl: transpose, general: true },
  { name: 'PadV2', impl: padV2, general: true },
];


interface Registration {
  native: KernelFunc;
  /** The kernel registered before ours (tfjs's or the project's JavaScript kernel), if any. */
  original?: KernelConfig;
}

const registrations = new Map<string, Registration>();
let nativeEnabled = true;

function makeKernel(name: string, impl: Impl, a: NativeAddon): KernelFunc {
  const fn = (args: KernelArgs): TensorInfo | TensorInfo[] => {
    if (!trackedBackends.has(args.backend as object)) trackBackend(a, args.backend);
    try {
      return impl(a, args);
    } catch (err) {
      if (!(err instanceof Unsupported)) throw err;
      const original = registrations.get(name)?.original;
      if (!original) {
        throw new Error(`${name}: these inputs are not supported natively and no JavaScript kernel is registered`);
      }
      return (original.kernelFunc as unknown as Fallback)(args);
    }
  };
  return fn as unknown as KernelFunc;
}

function install(name: string, kernelFunc: KernelFunc, from?: KernelConfig): void {
  if (getKernel(name, BACKEND)) unregisterKernel(name, BACKEND);
  const config: KernelConfig = { kernelName: name, backendName: BACKEND, kernelFunc };
  if (from?.setupFunc) config.setupFunc = from.setupFunc;
  if (from?.disposeFunc) config.disposeFunc = from.disposeFunc;
  registerKernel(config);
}

let lastStatus: NativeStatus | null = null;

function status(loaded: boolean, reason?: string): NativeStatus {
  const info = loaded && addon ? addon.info() : undefined;
  lastStatus = {
    loaded,
    ...(reason ? { reason } : {}),
    kernels: loaded ? [...registrations.keys()] : [],
    simd: info?.simd ?? 'portable',
    threads: info?.threads ?? 1,
  };
  return lastStatus;
}

/**
 * Loads the addon (if built) and registers its kernels for backend 'cpu'. Idempotent: kernels
 * already ours are left alone; a kernel someone registered over ours since the last call becomes
 * the fallback and ours goes back on top.
 */
export function registerNativeKernels(): NativeStatus {
  if (process.env.VOLSEG_NO_NATIVE === '1') {
    // Put back whatever an earlier call replaced, so the status and the registry agree.
    for (const [name, reg] of registrations) {
      if (reg.original) install(name, reg.original.kernelFunc, reg.original);
      else if (getKernel(name, BACKEND)?.kernelFunc === reg.native) unregisterKernel(name, BACKEND);
    }
    registrations.clear();
    capabilitiesChanged(false);
    return status(false, 'disabled by VOLSEG_NO_NATIVE=1');
  }
  const a = loadAddon();
  if (!a) {
    capabilitiesChanged(false);
    return status(false, loadError);
  }
  if (typeof a.bufferCache === 'function') syncCacheSettings(a.bufferCache());
  const general = process.env.VOLSEG_NATIVE_GENERAL !== '0';
  for (const spec of SPECS) {
    if (spec.general && !general) continue;
    let reg = registrations.get(spec.name);
    const current = getKernel(spec.name, BACKEND);
    if (reg && current?.kernelFunc === reg.native) continue;
    if (!current && !spec.custom) continue; // a tfjs kernel that the cpu backend lacks: leave it
    if (!reg) {
      reg = { native: makeKernel(spec.name, spec.impl, a) };
      registrations.set(spec.name, reg);
    }
    if (current && current.kernelFunc !== reg.native) reg.original = current;
    if (nativeEnabled) install(spec.name, reg.native, reg.original);
  }
  capabilitiesChanged(nativeEnabled);
  return status(true);
}

/** The state after the last registerNativeKernels() (registers on first use). */
export function nativeStatus(): NativeStatus {
  return lastStatus ?? registerNativeKernels();
}

/**
 * Switches between the native kernels and the ones they replaced (for benchmarks and tests).
 * Custom kernels without a JavaScript registration stay native.
 */
export function setNativeKernelsEnabled(enabled: boolean): void {
  nativeEnabled = enabled;
  for (const [name, reg] of registrations) {
    if (enabled) install(name, reg.native, reg.original);
    else if (reg.original) install(name, reg.original.kernelFunc, reg.original);
  }
  capabilitiesChanged(enabled && registrations.size > 0);
}

/** The kernel a native kernel replaced (tfjs's JavaScript kernel), if any. */
export function originalKernel(name: string): KernelFunc | undefined {
  return registrations.get(name)?.original?.kernelFunc ?? (registrations.has(name) ? undefined : getKernel(name, BACKEND)?.kernelFunc);
}

/** Selects the addon's SIMD code path ('portable' exists for tests). Returns the active one. */
export function setNativeSimd(simd: NativeSimd): NativeSimd {
  const a = nativeAddon();
  if (!a) throw new Error('native kernels are not loaded');
  const active = a.setSimd(simd);
  if (lastStatus) lastStatus.simd = active;
  return active;
}
