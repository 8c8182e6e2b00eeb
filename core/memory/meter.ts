/**
 * Honest device-memory accounting.
 *
 * Why not `tf.memory().numBytes`: the engine adds size × bytesPerElement for every *tensor* it tracks, so a
 * reshape, a clone or any other tensor that shares its input's buffer (same dataId) is counted again, although
 * no new memory exists. Why not `tf.profile`: it samples bytes between kernels, so the temporaries a kernel
 * allocates and frees inside itself never show, and neither does the true high-water mark.
 *
 * What is measured instead: the high-water mark of the bytes held by DISTINCT live backend buffers, seen at
 * every allocation and every release (`BufferLedger`, fed by `DeviceMemoryMeter`).
 */
import * as tf from '@tensorflow/tfjs-core';
import { capabilities } from '../backend/index.js';
import { formatBytes } from '../config/index.js';

/** Any value that names one buffer: a tfjs dataId (object), or a caller's own number or string. */
export type BufferId = object | number | string;

/** The first allocation that took live bytes above the budget. */
export interface OverflowRecord {
  /** `currentOp` when it happened (e.g. 'train step 3 / forward / enc2.conv1'). */
  op: string;
  /** Bytes that allocation asked for. */
  needed: number;
  /** Budget minus live bytes just before that allocation (0 when already at or above the budget). */
  available: number;
  /** Live bytes just after that allocation, i.e. what the budget would have had to hold. */
  live: number;
  /** The budget in force. */
  budget: number;
}

export interface LedgerSnapshot {
  live: number;
  peak: number;
  peakOp: string;
  count: number;
  hostLive: number;
  hostPeak: number;
  /** Bytes the backend's buffer pool holds, free pooled buffers included (0 where it keeps no pool). */
  pool: number;
  poolPeak: number;
}

interface BufferEntry {
  bytes: number;
  refs: number;
}

function describeId(id: BufferId): string {
  if (typeof id === 'object') {
    const inner = (id as { id?: unknown }).id;
    return inner !== undefined ? `{id: ${String(inner)}}` : 'object';
  }
  return JSON.stringify(id);
}

function checkBytes(where: string, bytes: number): void {
  if (!(Number.isFinite(bytes) && bytes >= 0)) {
    throw new Error(`${where}: bytes must be a finite number ≥ 0, got ${bytes}`);
  }
}

/**
 * Pure accounting of buffers (no tfjs): each buffer is counted once however many tensors reference it.
 *
 * - `allocate(id, bytes)` starts a buffer with one reference; `alias(id)` adds a reference (another tensor
 *   shares the buffer: no bytes); `free(id)` drops one reference and releases the bytes with the last one.
 * - `peak` is the high-water mark of `live` since construction or `resetPeak()`, and `peakOp` the
 *   `currentOp` of the allocation that reached it.
 * - Budget: with `setBudget(bytes)`, the first allocation that takes `live` above it is recorded (never
 *   thrown: the ledger is called from inside tfjs kernels, and throwing there corrupts the engine's state);
 *   the caller checks `takeOverflow()` after a step and reports "did not fit".
 * - Host counters track bytes a strategy moved to host memory (swapping/offloading); they are separate from
 *   the device buffers and do not count towards the budget.
 */
export class BufferLedger {
  /** Set by the caller: the step and operation now running; allocations record it. */
  currentOp = '';

  private readonly buffers = new Map<BufferId, BufferEntry>();
  private liveBytes = 0;
  private peakBytes = 0;
  private peakOpName = '';
  private budgetBytes: number | null = null;
  private overflow: OverflowRecord | null = null;
  private hostLiveBytes = 0;
  private hostPeakBytes = 0;
  private poolBytes = 0;
  private poolPeakBytes = 0;

  /** Bytes in live buffers now. */
  get live(): number {
    return this.liveBytes;
  }
  /** High-water mark of `live` since construction or the last `resetPeak()`. */
  get peak(): number {
    return this.peakBytes;
  }
  /** `currentOp` (or the op passed to allocate) when `peak` was reached. */
  get peakOp(): string {
    return this.peakOpName;
  }
  /** Number of live buffers. */
  get count(): number {
    return this.buffers.size;
  }
  get budget(): number | null {
    return this.budgetBytes;
  }
  get hostLive(): number {
    return this.hostLiveBytes;
  }
  get hostPeak(): number {
    return this.hostPeakBytes;
  }
  /**
   * What the backend's buffer pool holds now: buffers in use plus the free ones it keeps for reuse
   * (tfjs's WebGPU BufferManager). `live` counts only the buffers in use; 0 where the backend keeps no pool.
   */
  get pool(): number {
    return this.poolBytes;
  }
  /** High-water mark of `pool` since construction or the last `resetPeak()`. */
  get poolPeak(): number {
    return this.poolPeakBytes;
  }

  /** The pool's size now, as the backend reports it (the meter calls this at every allocation and release). */
  setPool(bytes: number): void {
    checkBytes('BufferLedger.setPool', bytes);
    this.poolBytes = bytes;
    if (bytes > this.poolPeakBytes) this.poolPeakBytes = bytes;
  }

  has(id: BufferId): boolean {
    return this.buffers.has(id);
  }

  /** Bytes of a live buffer, or undefined when it is not live. */
  bytesOf(id: BufferId): number | undefined {
    return this.buffers.get(id)?.bytes;
  }

  /** References held on a live buffer (0 when not live). */
  refsOf(id: BufferId): number {
    return this.buffers.get(id)?.refs ?? 0;
  }

  allocate(id: BufferId, bytes: number, op?: string): void {
    checkBytes('BufferLedger.allocate', bytes);
    if (this.buffers.has(id)) {
      throw new Error(
        `BufferLedger.allocate: buffer ${describeId(id)} is already live (${this.buffers.get(id)!.bytes} bytes); ` +
          'use alias() for another reference to it, or free() it before allocating it again',
      );
    }
    this.buffers.set(id, { bytes, refs: 1 });
    this.grow(bytes, op);
  }

  /** Another reference to a live buffer (a tensor sharing it): no bytes. */
  alias(id: BufferId): void {
    const e = this.buffers.get(id);
    if (!e) throw new Error(`BufferLedger.alias: buffer ${describeId(id)} is not live; allocate() it first`);
    e.refs++;
  }

  /** Drops one reference; the buffer's bytes are released with its last reference. */
  free(id: BufferId): void {
    const e = this.buffers.get(id);
    if (!e) throw new Error(`BufferLedger.free: buffer ${describeId(id)} is not live (freed twice, or never allocated)`);
    if (--e.refs > 0) return;
    this.buffers.delete(id);
    this.liveBytes -= e.bytes;
  }

  /** Changes the size of a live buffer (its contents became known later, or were replaced). */
  resize(id: BufferId, bytes: number, op?: string): void {
    checkBytes('BufferLedger.resize', bytes);
    const e = this.buffers.get(id);
    if (!e) throw new Error(`BufferLedger.resize: buffer ${describeId(id)} is not live; allocate() it first`);
    const delta = bytes - e.bytes;
    e.bytes = bytes;
    if (delta > 0) this.grow(delta, op);
    else this.liveBytes += delta;
  }

  private grow(bytes: number, op: string | undefined): void {
    const before = this.liveBytes;
    const live = before + bytes;
    this.liveBytes = live;
    if (live > this.peakBytes) {
      this.peakBytes = live;
      this.peakOpName = op ?? this.currentOp;
    }
    const budget = this.budgetBytes;
    if (budget !== null && live > budget && this.overflow === null) {
      this.overflow = {
        op: op ?? this.currentOp,
        needed: bytes,
        available: Math.max(0, budget - before),
        live,
        budget,
      };
    }
  }

  /** Starts a new high-water mark (device and host) from what is live now. */
  resetPeak(): void {
    this.peakBytes = this.liveBytes;
    this.peakOpName = this.currentOp;
    this.hostPeakBytes = this.hostLiveBytes;
    this.poolPeakBytes = this.poolBytes;
  }

  /**
   * Runs `fn` outside the peak: the high-water marks after it are those before it (or what is live now,
   * if more), so that a validation pass inside training does not count as training memory. The budget
   * still applies inside `fn`.
   */
  async outsidePeak<T>(fn: () => Promise<T>): Promise<T> {
    const saved = { peak: this.peakBytes, op: this.peakOpName, host: this.hostPeakBytes, pool: this.poolPeakBytes };
    try {
      return await fn();
    } finally {
      if (this.liveBytes > saved.peak) {
        this.peakBytes = this.liveBytes;
        this.peakOpName = this.currentOp;
      } else {
        this.peakBytes = saved.peak;
        this.peakOpName = saved.op;
      }
      this.hostPeakBytes = Math.max(saved.host, this.hostLiveBytes);
      this.poolPeakBytes = Math.max(saved.pool, this.poolBytes);
    }
  }

  /** Device budget in bytes, or null for none. Clears a pending overflow record. */
  setBudget(bytes: number | null): void {
    if (bytes !== null) checkBytes('BufferLedger.setBudget', bytes);
    this.budgetBytes = bytes;
    this.overflow = null;
  }

  /** The first overflow since the last call (or since setBudget), and clears it. */
  takeOverflow(): OverflowRecord | null {
    const o = this.overflow;
    this.overflow = null;
    return o;
  }

  hostAllocate(bytes: number): void {
    checkBytes('BufferLedger.hostAllocate', bytes);
    this.hostLiveBytes += bytes;
    if (this.hostLiveBytes > this.hostPeakBytes) this.hostPeakBytes = this.hostLiveBytes;
  }

  hostFree(bytes: number): void {
    checkBytes('BufferLedger.hostFree', bytes);
    if (bytes > this.hostLiveBytes) {
      throw new Error(
        `BufferLedger.hostFree: freeing ${bytes} bytes but only ${this.hostLiveBytes} host bytes are live; ` +
          'every hostFree must match an earlier hostAllocate',
      );
    }
    this.hostLiveBytes -= bytes;
  }

  snapshot(): LedgerSnapshot {
    return {
      live: this.liveBytes,
      peak: this.peakBytes,
      peakOp: this.peakOpName,
      count: this.buffers.size,
      hostLive: this.hostLiveBytes,
      hostPeak: this.hostPeakBytes,
      pool: this.poolBytes,
      poolPeak: this.poolPeakBytes,
    };
  }
}

/**
 * How a meter sees allocations:
 * - 'cpu-data-storage' (the cpu backend): wraps `set`/`delete` of the backend's DataStorage. Every buffer
 *   the backend creates — including the temporaries a kernel writes and disposes inside itself — passes
 *   through `set`; a reshape/clone/identity only increments the refCount of the same dataId and adds
 *   nothing; `delete` runs exactly when the backend really frees a buffer (refCount reached 0, or a move
 *   to another backend). Bytes = byteLength of the stored values (for string tensors, the sum over the
 *   encoded strings). A simple slice that the cpu backend returns as a view of its input counts its own
 *   byteLength, as a device backend that copies would allocate.
 * - 'engine-data-ids' (any other backend: tfjs-node, webgl, webgpu, ...): wraps the engine's
 *   `trackTensor`/`removeDataId`, so each distinct dataId the engine tracks counts size × bytesPerElement
 *   once. Coarser: temporaries a kernel allocates inside a backend without making an engine tensor are not
 *   seen, and string tensors count 0.
 * - 'webgpu-buffers' (tfjs's WebGPU backend): wraps its BufferManager's `acquireBuffer`/`releaseBuffer`, so
 *   every GPUBuffer in use counts its size once (tensor buffers, a kernel's uniforms) from acquisition to
 *   release, whichever tensors share it; mappable staging buffers (uploads, read-backs) are host-visible
 *   memory and not counted. The free buffers the
 *   manager keeps for reuse are not in use: they are the ledger's `pool` (with those in use), apart.
 */
export type MeterMethod = 'cpu-data-storage' | 'engine-data-ids' | 'webgpu-buffers';

const METER_MARK = Symbol.for('volseg.DeviceMemoryMeter');

interface StoredData {
  values?: unknown;
}
interface DataStorageLike {
  set(dataId: object, value: StoredData): void;
  delete(dataId: object): boolean;
  has(dataId: object): boolean;
  [METER_MARK]?: DeviceMemoryMeter;
}
interface TensorLike {
  dataId: object;
  dtype: string;
  size: number;
}
/** WebGPU's GPUBufferUsage.MAP_READ | MAP_WRITE. */
const MAPPABLE = 0x1 | 0x2;

/** The part of tfjs-backend-webgpu's BufferManager the meter wraps (GPUBuffers have a size in bytes). */
interface GpuBufferLike {
  size: number;
  usage: number;
}
interface BufferManagerLike {
  acquireBuffer(size: number, usage: number, mappedAtCreation?: boolean, reuse?: boolean): GpuBufferLike;
  releaseBuffer(buffer: GpuBufferLike, reuse?: boolean): void;
  numUsedBuffers: number;
  numBytesAllocated: number;
  [METER_MARK]?: DeviceMemoryMeter;
}
interface EngineInternals {
  state: { tensorInfo: { has(dataId: object): boolean } };
  trackTensor(a: TensorLike, backend: unknown): void;
  removeDataId(dataId: object, backend: unknown): void;
  [METER_MARK]?: DeviceMemoryMeter;
}

/** Byte length of what a backend stores for one buffer; 0 when it is not (yet) known. */
function byteLengthOf(values: unknown): number {
  if (values == null) return 0;
  if (ArrayBuffer.isView(values)) return values.byteLength;
  if (values instanceof ArrayBuffer) return values.byteLength;
  if (Array.isArray(values)) {
    // string tensors: one encoded Uint8Array per element
    let s = 0;
    for (const v of values) if (ArrayBuffer.isView(v)) s += v.byteLength;
    return s;
  }
  return 0;
}

/** Saved state of a patched property so detach() restores it exactly (own property or inherited). */
interface Patch {
  target: object;
  key: string;
  hadOwn: boolean;
  original: unknown;
}

function patch(target: object, key: string, replacement: unknown, saved: Patch[]): void {
  const hadOwn = Object.prototype.hasOwnProperty.call(target, key);
  saved.push({ target, key, hadOwn, original: (target as Record<string, unknown>)[key] });
  (target as Record<string, unknown>)[key] = replacement;
}

/**
 * Attaches a BufferLedger to the active tfjs backend (see `MeterMethod` for how, per backend).
 *
 * Only buffers allocated after `attach()` are counted: attach before building the model and loading data,
 * or the buffers that already exist are invisible (their later release is ignored too, and counted in
 * `untrackedReleases`). `detach()` restores the patched functions exactly and leaves the ledger as it is.
 */
export class DeviceMemoryMeter {
  readonly ledger: BufferLedger;
  private readonly requested: MeterMethod | 'auto';
  private patches: Patch[] = [];
  private activeMethod: MeterMethod | null = null;
  private backendNameAtAttach = '';
  private untracked = 0;

  constructor(ledger: BufferLedger = new BufferLedger(), options: { method?: MeterMethod | 'auto' } = {}) {
    this.ledger = ledger;
    this.requested = options.method ?? 'auto';
  }

  /** The method in use ('detached' when not attached). */
  get method(): MeterMethod | 'detached' {
    return this.activeMethod ?? 'detached';
  }

  /** Name of the backend the meter was attached to. */
  get backendName(): string {
    return this.backendNameAtAttach;
  }

  get attached(): boolean {
    return this.activeMethod !== null;
  }

  /** Releases of buffers that existed before attach() (not counted, so not subtracted either). */
  get untrackedReleases(): number {
    return this.untracked;
  }

  attach(): this {
    if (this.activeMethod) throw new Error(`DeviceMemoryMeter.attach: already attached (${this.activeMethod}); detach() first`);
    const engine = tf.engine();
    const backend = engine.backend as unknown as { data?: unknown };
    const caps = capabilities();
    const name = caps.name;
    const store = backend.data as DataStorageLike | undefined;
    const pool = (backend as { bufferManager?: BufferManagerLike }).bufferManager;
    const storeUsable =
      store != null && typeof store.set === 'function' && typeof store.delete === 'function' && typeof store.has === 'function';
    let method: MeterMethod;
    if (this.requested === 'auto') method = caps.dataStorage && storeUsable ? 'cpu-data-storage' : caps.bufferPool ? 'webgpu-buffers' : 'engine-data-ids';
    else method = this.requested;
    if (method === 'cpu-data-storage') {
      if (!storeUsable) {
        throw new Error(
          `DeviceMemoryMeter.attach: method 'cpu-data-storage' needs a backend with a DataStorage 'data' field ` +
            `(the cpu backend); the active backend '${name}' has none — use method 'engine-data-ids' or 'auto'`,
        );
      }
      this.attachDataStorage(store);
    } else if (method === 'webgpu-buffers') {
      if (!caps.bufferPool || !pool)
        throw new Error(`DeviceMemoryMeter.attach: method 'webgpu-buffers' needs tfjs's WebGPU backend; the active backend '${name}' has no buffer manager — use 'auto'`);
      this.attachBufferManager(pool);
    } else {
      this.attachEngine(engine as unknown as EngineInternals);
    }
    this.activeMethod = method;
    this.backendNameAtAttach = name;
    return this;
  }

  detach(): void {
    // Restore in reverse order so stacked patches unwind correctly.
    for (const p of this.patches.reverse()) {
      if (p.hadOwn) (p.target as Record<string, unknown>)[p.key] = p.original;
      else delete (p.target as Record<string, unknown>)[p.key];
      if (p.key === 'set' || p.key === 'trackTensor' || p.key === 'acquireBuffer') delete (p.target as { [METER_MARK]?: unknown })[METER_MARK];
    }
    this.patches = [];
    this.activeMethod = null;
  }

  private claim(target: { [METER_MARK]?: DeviceMemoryMeter }, what: string): void {
    if (target[METER_MARK] && target[METER_MARK] !== this) {
      throw new Error(`DeviceMemoryMeter.attach: another meter is attached to the ${what}; detach it first`);
    }
    target[METER_MARK] = this;
  }

  private attachDataStorage(store: DataStorageLike): void {
    this.claim(store, 'backend data store');
    const ledger = this.ledger;
    const origSet = store.set;
    const origDelete = store.delete;
    const meter = this;
    patch(
      store,
      'set',
      function set(this: DataStorageLike, dataId: object, value: StoredData): void {
        // A set on a dataId already counted replaces its contents (no new buffer).
        const known = ledger.has(dataId);
        origSet.call(this, dataId, value);
        const values = value?.values;
        if (values == null && value != null && typeof value === 'object') meter.watchValues(value, dataId);
        const bytes = byteLengthOf(values);
        if (known) ledger.resize(dataId, bytes);
        else ledger.allocate(dataId, bytes);
      },
      this.patches,
    );
    patch(
      store,
      'delete',
      function del(this: DataStorageLike, dataId: object): boolean {
        const r = origDelete.call(this, dataId);
        if (ledger.has(dataId)) ledger.free(dataId);
        else meter.untracked++;
        return r;
      },
      this.patches,
    );
  }

  /**
   * The values of a stored buffer are null at `set` (e.g. makeTensorInfo without values, filled later by a
   * kernel): turn `values` into an accessor so the bytes are counted when they are assigned.
   */
  private watchValues(record: StoredData, dataId: object): void {
    const ledger = this.ledger;
    let current: unknown = record.values;
    Object.defineProperty(record, 'values', {
      configurable: true,
      enumerable: true,
      get: () => current,
      set: (v: unknown) => {
        current = v;
        if (this.activeMethod && ledger.has(dataId)) ledger.resize(dataId, byteLengthOf(v));
      },
    });
  }

  private attachBufferManager(manager: BufferManagerLike): void {
    this.claim(manager, 'WebGPU buffer manager');
    const ledger = this.ledger;
    const origAcquire = manager.acquireBuffer;
    const origRelease = manager.releaseBuffer;
    const meter = this;
    ledger.setPool(manager.numBytesAllocated);
    patch(
      manager,
      'acquireBuffer',
      function acquireBuffer(this: BufferManagerLike, size: number, usage: number, mappedAtCreation?: boolean, reuse?: boolean): GpuBufferLike {
        const buffer = origAcquire.call(this, size, usage, mappedAtCreation, reuse);
        // Mappable staging buffers (uploads, read-backs) live in host-visible memory, not in the GPU's.
        if ((usage & MAPPABLE) === 0) ledger.allocate(buffer, buffer.size);
        ledger.setPool(this.numBytesAllocated);
        return buffer;
      },
      this.patches,
    );
    patch(
      manager,
      'releaseBuffer',
      function releaseBuffer(this: BufferManagerLike, buffer: GpuBufferLike, reuse?: boolean): void {
        // The manager ignores some releases (before its first pooled acquisition): count what it released.
        const used = this.numUsedBuffers;
        origRelease.call(this, buffer, reuse);
        if (this.numUsedBuffers < used) {
          if (ledger.has(buffer)) ledger.free(buffer);
          else if ((buffer.usage & MAPPABLE) === 0) meter.untracked++;
        }
        ledger.setPool(this.numBytesAllocated);
      },
      this.patches,
    );
  }

  private attachEngine(engine: EngineInternals): void {
    this.claim(engine, 'tfjs engine');
    const ledger = this.ledger;
    const origTrack = engine.trackTensor;
    const origRemove = engine.removeDataId;
    const meter = this;
    patch(
      engine,
      'trackTensor',
      function trackTensor(this: EngineInternals, a: TensorLike, backend: unknown): void {
        const isNew = !this.state.tensorInfo.has(a.dataId);
        origTrack.call(this, a, backend);
        if (isNew && !ledger.has(a.dataId)) {
          // complex64 bytes live in their real/imag component tensors; strings are not sized here.
          const bytes = a.dtype === 'complex64' || a.dtype === 'string' ? 0 : a.size * tf.util.bytesPerElement(a.dtype as tf.DataType);
          ledger.allocate(a.dataId, bytes);
        }
      },
      this.patches,
    );
    patch(
      engine,
      'removeDataId',
      function removeDataId(this: EngineInternals, dataId: object, backend: unknown): void {
        const had = this.state.tensorInfo.has(dataId);
        origRemove.call(this, dataId, backend);
        if (!had || this.state.tensorInfo.has(dataId)) return; // nothing removed (another backend owns it)
        if (ledger.has(dataId)) ledger.free(dataId);
        else meter.untracked++;
      },
      this.patches,
    );
  }
}

/**
 * Raised when live device bytes exceed the trial's budget; names the step, the operation and the bytes.
 * `live`: what the meter held when it stopped, where that is not this thread's ledger (a worker rank's).
 */
export class DeviceOutOfMemoryError extends Error {
  constructor(
    readonly op: string,
    readonly needed: number,
    readonly available: number,
    readonly budget: number,
    readonly live?: number,
  ) {
    super(
      `out of device memory at ${op}: an allocation of ${formatBytes(needed)} with ${formatBytes(available)} of the ${formatBytes(budget)} budget free`,
    );
    this.name = 'DeviceOutOfMemoryError';
  }
}
