/**
 * An emulated host link (device ↔ host memory), for swapping strategies on the cpu backend.
 *
 * On the cpu backend "device" and "host" memory are the same RAM, so a swap would cost nothing and hide
 * nothing. This link makes it cost what a real one does, in real wall-clock time: every transfer takes
 * `latency + bytes / bandwidth` seconds, transfers queue FIFO per direction, and the two directions
 * (device→host and host→device) are two independent lanes, like a full-duplex PCIe or NVLink link.
 * The main thread schedules each transfer on its lane when it is queued (start: now, the end of the
 * lane's previous transfer, and for a swap-in the end of the swap-out it reads; end: start + its time);
 * each lane's `worker_threads` Worker performs the copy between SharedArrayBuffers meanwhile. A transfer
 * is done when its copy is done AND its end time has passed, so the main thread keeps computing while
 * transfers run, and the overlap of transfers with compute, and the stalls where backward waits for a
 * tensor, are wall-clock time, not arithmetic (and a worker woken late does not stretch a transfer).
 *
 * Completion is read from a shared Int32Array of copy flags and the clock, so the main thread can check
 * it between two layers without returning to the event loop (`Transfer.done`), block on it
 * (`Transfer.wait`, Atomics.wait: allowed on Node's main thread), or await it (`Transfer.finished()`).
 *
 * Where the emulation is not exact:
 * - A worker can read only SharedArrayBuffers. While a copying link is open, the native kernels write
 *   their outputs of 64 KiB or more into SharedArrayBuffers (core/backend shareNativeOutputs, from the
 *   swap store), and a swapped-in tensor lives on one: the workers copy those, in both directions. A
 *   source in an ordinary ArrayBuffer (tfjs's own JavaScript kernels' outputs, and every output with
 *   `outCopy: 'main'`) is copied into the host buffer on the main thread first, by the native pool's
 *   threads where the addon is active (`stagingSeconds` in `stats`; a GPU's copy engine would not use
 *   the CPU for this).
 * - A transfer cannot be faster than the worker's memcpy: where `bytes / bandwidth` is shorter than the
 *   copy (very fast links, e.g. 75 GB/s NVLink on a machine that copies at 10 GB/s), the transfer takes
 *   the copy's time; `stats` reports that as `overrunSeconds`.
 * - The lane workers run at the lowest CPU priority (nice 19; `VOLSEG_LINK_NICE` sets another, 0 none),
 *   so that on a machine without spare cores their copies yield to the compute threads.
 * Host buffers are pooled by size (like TFLMS's pinned host allocator), so a step does not allocate them
 * again; `hostLiveBytes`/`hostPeakBytes` count the buffers in use, not the pool. Device buffers of
 * swap-ins come back through `recycle` (like a GPU's caching allocator; not counted as device memory).
 *
 * `copy: false` keeps the timing and drops the copies: the host copy of a swap-out is the source array
 * itself (kept alive after the device tensor was freed) and a swap-in hands that array back. Nothing is
 * moved, so neither this machine's memcpy speed nor the main thread's staging copy shows; only
 * `latency + bytes / bandwidth` per transfer does, on the same FIFO lanes. For large volumes: a 128³
 * unet3d step moves 2.6 GB each way, which a 75 GB/s link does in 35 ms but a 2-core machine copies in
 * about a second on each side.
 *
 * On a GPU backend none of this is used: a real transfer is `await t.data()` (device→host) and
 * `tf.tensor(values)` (host→device); see strategies/swap.ts.
 */
import { Worker } from 'node:worker_threads';
import { copyFloats } from '../../core/backend/index.js';

export interface HostLinkOptions {
  /** Bytes per second, per direction (e.g. 16e9 for PCIe Gen3 ×16, 75e9 for NVLink 2.0). */
  bandwidth: number;
  /** Seconds added to every transfer (set-up, synchronisation). */
  latency: number;
  /**
   * true (default): transfers really copy the bytes (worker threads; see the header). false: only the
   * link's time is emulated: the host copy of a swap-out is the source array itself and a swap-in hands
   * the host array back, no memcpy anywhere. For large volumes, where this machine's memcpy is slower
   * than the link being emulated and the main thread's staging copies would show as step time.
   */
  copy?: boolean;
}

/** A buffer in (emulated) host memory, holding `bytes` bytes. */
export interface HostBuffer {
  readonly bytes: number;
  /** The host bytes as float32 (a view on shared memory). */
  readonly data: Float32Array;
}

export type LinkDirection = 'device-to-host' | 'host-to-device';

export interface HostLinkStats {
  /** Bytes and transfers per direction, counted when a transfer is queued. */
  deviceToHostBytes: number;
  hostToDeviceBytes: number;
  deviceToHostTransfers: number;
  hostToDeviceTransfers: number;
  /** Seconds of emulated transfer time queued on each lane. */
  deviceToHostBusySeconds: number;
  hostToDeviceBusySeconds: number;
  /** Seconds the lane workers spent copying. */
  copySeconds: number;
  /** Seconds the workers' copies ended after their transfers' emulated end (the link was slower than asked). */
  overrunSeconds: number;
  /** Seconds the main thread spent copying non-shared sources into host buffers, and their bytes. */
  stagingSeconds: number;
  stagedBytes: number;
  /** Copies the main thread took over from a late worker while it waited for them, and their seconds. */
  mainThreadCopies: number;
  mainThreadCopySeconds: number;
  /** Host bytes in buffers handed out and not freed; and their high-water mark. */
  hostLiveBytes: number;
  hostPeakBytes: number;
  /** Bytes kept in the pool of free host buffers. */
  pooledBytes: number;
}

/** Number of copy-completion slots; far more than the transfers a step can have in flight at once. */
const SLOTS = 1 << 16;

/** Per-lane counters the worker writes: [copy seconds, overrun seconds, copies]. */
const LANE_STATS = 3;

/**
 * The lane worker (plain JavaScript, evaluated in the worker). A job: `{ id, after, src, srcOffset, dst,
 * dstOffset, bytes, deadline }`. Jobs run in the order they were queued (one FIFO lane); a swap-in whose
 * source is still being copied by the other lane (`after`) waits for that copy. The worker claims the
 * copy (claim slot raised to id + 1), copies, then raises the job's copy flag to id + 1. The transfer is
 * done when its copy is and its emulated time has passed (`deadline`, scheduled by the main thread).
 * Where the main thread must wait for a copy that this thread has not started (on a busy machine a
 * worker may wait several milliseconds for a core), the main thread claims it and copies itself: it
 * would be idle anyway, and the wait then lasts what the transfer does, not what the scheduler does.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
// Lowest CPU priority for this thread (Linux: the nice value is per thread, and pid 0 is the caller).
if (workerData.nice) try { require('node:os').setPriority(0, workerData.nice); } catch {}
const flags = new Int32Array(workerData.flags);
const claims = new Int32Array(workerData.claims);
const listened = new Int32Array(workerData.listened);
const stats = new Float64Array(workerData.stats);
const SLOTS = flags.length;
const clock = () => performance.timeOrigin + performance.now();
function raise(arr, s, value) {
  for (let v = Atomics.load(arr, s); v < value; v = Atomics.load(arr, s)) if (Atomics.compareExchange(arr, s, v, value) === v) return true;
  return false;
}
function waitFor(id) {
  const s = id % SLOTS;
  for (let v = Atomics.load(flags, s); v < id + 1; v = Atomics.load(flags, s)) Atomics.wait(flags, s, v);
}
parentPort.on('message', (job) => {
  const s = job.id % SLOTS;
  if (job.after >= 0) waitFor(job.after);
  // The main thread may have claimed the copy already (it needed the data and this thread was late).
  if (raise(claims, s, job.id + 1)) {
    const t0 = clock();
    new Uint8Array(job.dst, job.dstOffset, job.bytes).set(new Uint8Array(job.src, job.srcOffset, job.bytes));
    const t1 = clock();
    stats[0] += (t1 - t0) / 1000;
    if (t1 > job.deadline) stats[1] += (t1 - job.deadline) / 1000;
    stats[2] += 1;
    raise(flags, s, job.id + 1);
    Atomics.notify(flags, s);
  }
  // A message only where the main thread awaits this copy (it reads the flags otherwise).
  if (Atomics.load(listened, s) >= job.id + 1) parentPort.postMessage(job.id);
});
`;

/** Milliseconds on a clock that the main thread and the workers share. */
const clock = (): number => performance.timeOrigin + performance.now();

/** Sleeps the calling thread until `deadline` (ms on `clock`). */
const nap = new Int32Array(new SharedArrayBuffer(4));
function sleepUntil(deadline: number): void {
  for (let left = deadline - clock(); left > 0; left = deadline - clock()) Atomics.wait(nap, 0, 0, left);
}

/** One queued transfer. */
export class Transfer {
  constructor(
    private readonly link: HostLink,
    readonly id: number,
    readonly direction: LinkDirection,
    readonly bytes: number,
    /** Whether a lane worker copies the bytes (else they were staged when it was queued). */
    readonly copies: boolean,
    /** When the emulated transfer ends (ms on the shared clock). */
    readonly deadline: number,
  ) {}

  /** Whether the transfer has finished (shared memory and the clock: no event loop needed). */
  get done(): boolean {
    return (!this.copies || this.link.isCopied(this.id)) && clock() >= this.deadline;
  }

  /** Blocks the calling thread until the transfer has finished. */
  wait(): void {
    if (this.copies) this.link.waitCopied(this.id);
    sleepUntil(this.deadline);
  }

  /** Resolves when the transfer has finished. */
  async finished(): Promise<void> {
    if (this.copies) await this.link.whenCopied(this.id);
    const left = this.deadline - clock();
    if (left > 0) await new Promise((r) => setTimeout(r, Math.ceil(left)));
    sleepUntil(this.deadline);
  }
}

interface Lane {
  worker: Worker;
  stats: Float64Array;
  /** When the last queued transfer of this lane ends (ms on the shared clock). */
  free: number;
  busySeconds: number;
}

interface Job {
  id: number;
  after: number;
  src: SharedArrayBuffer;
  srcOffset: number;
  dst: SharedArrayBuffer;
  dstOffset: number;
  bytes: number;
  deadline: number;
}

class PooledHostBuffer implements HostBuffer {
  readonly data: Float32Array;
  constructor(
    readonly shared: SharedArrayBuffer,
    readonly bytes: number,
  ) {
    this.data = new Float32Array(shared, 0, bytes >> 2);
  }
}

/** A host copy that is the source array itself (a link that does not copy). */
class AliasHostBuffer implements HostBuffer {
  readonly bytes: number;
  constructor(readonly data: Float32Array) {
    this.bytes = data.byteLength;
  }
}

export class HostLink {
  readonly bandwidth: number;
  readonly latency: number;
  /** Whether transfers copy the bytes (else only their time is emulated). */
  readonly copies: boolean;
  private readonly flags = new Int32Array(new SharedArrayBuffer(4 * SLOTS));
  private readonly claims = new Int32Array(new SharedArrayBuffer(4 * SLOTS));
  /** Copies whose end a promise awaits (the worker then posts a message). */
  private readonly listened = new Int32Array(new SharedArrayBuffer(4 * SLOTS));
  /** Worker copies queued and not yet seen finished, by id (for `drain`, and for copying them here). */
  private readonly pending = new Map<number, Job>();
  private readonly lanes: Record<LinkDirection, Lane>;
  private nextId = 0;
  private readonly waiters = new Map<number, (() => void)[]>();
  private readonly pool = new Map<number, SharedArrayBuffer[]>();
  private readonly devicePool = new Map<number, SharedArrayBuffer[]>();
  private readonly counters = {
    deviceToHostBytes: 0,
    hostToDeviceBytes: 0,
    deviceToHostTransfers: 0,
    hostToDeviceTransfers: 0,
    stagingSeconds: 0,
    stagedBytes: 0,
    mainThreadCopies: 0,
    mainThreadCopySeconds: 0,
    hostLiveBytes: 0,
    hostPeakBytes: 0,
    pooledBytes: 0,
  };
  private closed = false;
  private failure: Error | null = null;

  constructor(opts: HostLinkOptions) {
    if (!(opts.bandwidth > 0)) throw new Error(`HostLink: bandwidth must be > 0 bytes/s, got ${opts.bandwidth}`);
    if (!(opts.latency >= 0)) throw new Error(`HostLink: latency must be ≥ 0 s, got ${opts.latency}`);
    this.bandwidth = opts.bandwidth;
    this.latency = opts.latency;
    this.copies = opts.copy ?? true;
    const lane = (): Lane => {
      const stats = new Float64Array(new SharedArrayBuffer(8 * LANE_STATS));
      const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { nice: Number(process.env.VOLSEG_LINK_NICE ?? 19), flags: this.flags.buffer, claims: this.claims.buffer, listened: this.listened.buffer, stats: stats.buffer } });
      worker.on('message', (id: number) => this.settle(id));
      worker.on('error', (e) => {
        this.failure = e;
      });
      // Idle lanes do not keep the process alive; a pending `finished()` does (see whenCopied).
      worker.unref();
      return { worker, stats, free: 0, busySeconds: 0 };
    };
    this.lanes = { 'device-to-host': lane(), 'host-to-device': lane() };
  }

  /** Seconds one transfer of `bytes` takes on this link. */
  transferSeconds(bytes: number): number {
    return this.latency + bytes / this.bandwidth;
  }

  /**
   * Queues a device→host transfer of `src` into a new host buffer. Returns at once; the host buffer's
   * contents are valid when the transfer is done. `src` must stay unchanged until then.
   */
  startOut(src: Float32Array): { transfer: Transfer; host: HostBuffer } {
    if (!this.copies) {
      const host = new AliasHostBuffer(src);
      this.countHost(host.bytes);
      return { transfer: this.enqueue('device-to-host', host.bytes, null, null), host };
    }
    const host = this.allocate(src.byteLength) as PooledHostBuffer;
    const shared = src.buffer instanceof SharedArrayBuffer ? src.buffer : null;
    if (!shared) {
      // A worker cannot read an ordinary ArrayBuffer: stage it on this thread (see the file's header),
      // with the native pool's threads where the addon is active (they are idle meanwhile).
      const t0 = performance.now();
      copyFloats(host.data, src);
      this.counters.stagingSeconds += (performance.now() - t0) / 1000;
      this.counters.stagedBytes += src.byteLength;
    }
    const transfer = this.enqueue('device-to-host', src.byteLength, null, shared && { src: shared, srcOffset: src.byteOffset, dst: host.shared, dstOffset: 0 });
    return { transfer, host };
  }

  /**
   * Queues a host→device transfer of `host` into a new device buffer (shared memory, so that the worker
   * can write it; a tensor can be made on it without a copy). `after`: the device→host transfer that
   * fills `host`, when it may still be on the link (this one starts when that one ended).
   */
  startIn(host: HostBuffer, after?: Transfer | null): { transfer: Transfer; data: Float32Array } {
    if (host instanceof AliasHostBuffer) return { transfer: this.enqueue('host-to-device', host.bytes, after ?? null, null), data: host.data };
    // A device buffer given back by `recycle` (a GPU allocator reuses freed blocks too): a fresh one
    // costs page faults on first touch that would slow the emulated link below its bandwidth.
    const dst = this.devicePool.get(host.bytes)?.pop() ?? new SharedArrayBuffer(host.bytes);
    const src = host as PooledHostBuffer;
    const transfer = this.enqueue('host-to-device', host.bytes, after ?? null, { src: src.shared, srcOffset: 0, dst, dstOffset: 0 });
    return { transfer, data: new Float32Array(dst) };
  }

  /**
   * Gives back a device buffer that `startIn` returned, once nothing reads it any more (its tensor's
   * backend buffer was freed), for a later swap-in of the same size.
   */
  recycle(data: Float32Array): void {
    if (!(data.buffer instanceof SharedArrayBuffer) || data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength) return;
    const list = this.devicePool.get(data.byteLength) ?? [];
    list.push(data.buffer);
    this.devicePool.set(data.byteLength, list);
  }

  /** Device→host: resolves with the host buffer when the transfer is done. */
  async swapOut(src: Float32Array): Promise<HostBuffer> {
    const { transfer, host } = this.startOut(src);
    await transfer.finished();
    return host;
  }

  /** Host→device: resolves with the device copy when the transfer is done. */
  async swapIn(buf: HostBuffer): Promise<Float32Array> {
    const { transfer, data } = this.startIn(buf);
    await transfer.finished();
    return data;
  }

  /** A host buffer of `bytes` (from the pool when one of that size is free). */
  allocate(bytes: number): HostBuffer {
    if (bytes % 4 !== 0) throw new Error(`HostLink: a host buffer holds float32 values; ${bytes} bytes is not a multiple of 4`);
    let shared = this.pool.get(bytes)?.pop();
    if (shared) this.counters.pooledBytes -= bytes;
    else shared = new SharedArrayBuffer(bytes);
    this.countHost(bytes);
    return new PooledHostBuffer(shared, bytes);
  }

  private countHost(bytes: number): void {
    this.counters.hostLiveBytes += bytes;
    this.counters.hostPeakBytes = Math.max(this.counters.hostPeakBytes, this.counters.hostLiveBytes);
  }

  /** Returns a host buffer to the pool. No transfer may still read or write it. */
  free(buf: HostBuffer): void {
    if (buf instanceof AliasHostBuffer) {
      this.counters.hostLiveBytes -= buf.bytes;
      return;
    }
    const b = buf as PooledHostBuffer;
    const list = this.pool.get(b.bytes) ?? [];
    list.push(b.shared);
    this.pool.set(b.bytes, list);
    this.counters.hostLiveBytes -= b.bytes;
    this.counters.pooledBytes += b.bytes;
  }

  /** Drops the pools of free host and device buffers. */
  trimPool(): void {
    this.pool.clear();
    this.devicePool.clear();
    this.counters.pooledBytes = 0;
  }

  get stats(): HostLinkStats {
    const out = this.lanes['device-to-host'];
    const inn = this.lanes['host-to-device'];
    return {
      ...this.counters,
      deviceToHostBusySeconds: out.busySeconds,
      hostToDeviceBusySeconds: inn.busySeconds,
      copySeconds: out.stats[0]! + inn.stats[0]!,
      overrunSeconds: out.stats[1]! + inn.stats[1]!,
    };
  }

  /** Whether the copy of transfer `id` has finished. */
  isCopied(id: number): boolean {
    if (Atomics.load(this.flags, id % SLOTS) < id + 1) return false;
    this.pending.delete(id);
    return true;
  }

  /**
   * Blocks until the copy of transfer `id` has finished; copies it on this thread when its worker has
   * not started it yet (see WORKER_SOURCE).
   */
  waitCopied(id: number): void {
    const s = id % SLOTS;
    if (this.isCopied(id)) return;
    const job = this.pending.get(id);
    if (job && this.claim(s, id)) {
      if (job.after >= 0) this.waitCopied(job.after);
      const t0 = performance.now();
      new Uint8Array(job.dst, job.dstOffset, job.bytes).set(new Uint8Array(job.src, job.srcOffset, job.bytes));
      this.counters.mainThreadCopies++;
      this.counters.mainThreadCopySeconds += (performance.now() - t0) / 1000;
      this.raise(this.flags, s, id + 1);
      Atomics.notify(this.flags, s);
      this.pending.delete(id);
      this.settle(id);
      return;
    }
    for (let v = Atomics.load(this.flags, s); v < id + 1; v = Atomics.load(this.flags, s)) {
      if (this.failure) throw new Error(`HostLink: a lane failed: ${this.failure.message}`);
      if (this.closed) throw new Error('HostLink: closed while a transfer was waited for');
      Atomics.wait(this.flags, s, v, 1000);
    }
  }

  private claim(slot: number, id: number): boolean {
    return this.raise(this.claims, slot, id + 1);
  }

  /** Raises a slot to `value` unless it is there already; true when this call raised it. */
  private raise(arr: Int32Array, slot: number, value: number): boolean {
    for (let v = Atomics.load(arr, slot); v < value; v = Atomics.load(arr, slot)) if (Atomics.compareExchange(arr, slot, v, value) === v) return true;
    return false;
  }

  /** Resolves when the copy of transfer `id` has finished. */
  whenCopied(id: number): Promise<void> {
    if (this.isCopied(id)) return Promise.resolve();
    if (this.closed) return Promise.reject(new Error('HostLink: closed'));
    const s = id % SLOTS;
    this.raise(this.listened, s, id + 1);
    // The worker checks `listened` after raising the copy flag, this thread the flag after `listened`:
    // one of the two sees the other.
    if (this.isCopied(id)) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.waiters.get(id) ?? [];
      list.push(resolve);
      this.waiters.set(id, list);
      if (this.waiters.size === 1) for (const l of Object.values(this.lanes)) l.worker.ref();
    });
  }

  /** Blocks until every queued transfer has finished. */
  drain(): void {
    for (const id of [...this.pending.keys()].sort((a, b) => a - b)) this.waitCopied(id);
    this.pending.clear();
    sleepUntil(Math.max(this.lanes['device-to-host'].free, this.lanes['host-to-device'].free));
  }

  /** Terminates the lanes (after the queued transfers finished) and drops the pools. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.drain();
    this.closed = true;
    for (const [id, list] of this.waiters) {
      this.waiters.delete(id);
      for (const r of list) r();
    }
    await Promise.all(Object.values(this.lanes).map((l) => l.worker.terminate()));
    this.trimPool();
  }

  private settle(id: number): void {
    this.pending.delete(id);
    const list = this.waiters.get(id);
    if (!list) return;
    this.waiters.delete(id);
    if (this.waiters.size === 0) for (const l of Object.values(this.lanes)) l.worker.unref();
    for (const r of list) r();
  }

  /**
   * Schedules a transfer on its lane: it starts when it is queued, when the lane's previous transfer
   * ended (FIFO) and when `after` ended, and takes `transferSeconds(bytes)`.
   */
  private enqueue(
    direction: LinkDirection,
    bytes: number,
    after: Transfer | null,
    copy: { src: SharedArrayBuffer; srcOffset: number; dst: SharedArrayBuffer; dstOffset: number } | null,
  ): Transfer {
    if (this.closed) throw new Error('HostLink: closed');
    if (this.failure) throw new Error(`HostLink: a lane failed: ${this.failure.message}`);
    const id = this.nextId++;
    if (id >= 2 ** 31 - 2) throw new Error('HostLink: transfer ids exhausted; create a new link');
    const lane = this.lanes[direction];
    const seconds = this.transferSeconds(bytes);
    const start = Math.max(clock(), lane.free, after ? after.deadline : 0);
    const deadline = start + seconds * 1000;
    lane.free = deadline;
    lane.busySeconds += seconds;
    if (direction === 'device-to-host') {
      this.counters.deviceToHostBytes += bytes;
      this.counters.deviceToHostTransfers++;
    } else {
      this.counters.hostToDeviceBytes += bytes;
      this.counters.hostToDeviceTransfers++;
    }
    if (copy) {
      // The worker waits for `after`'s copy only when that one is a worker copy still under way.
      const waitFor = after && after.copies && !this.isCopied(after.id) ? after.id : -1;
      const job: Job = { id, after: waitFor, bytes, deadline, ...copy };
      this.pending.set(id, job);
      lane.worker.postMessage(job);
    }
    return new Transfer(this, id, direction, bytes, copy !== null, deadline);
  }
}
