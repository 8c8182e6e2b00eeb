/**
 * The swap strategy's host store: each swapped tensor's host copy, the transfers between device and host,
 * and the device copies while they are wanted. See index.ts for the strategy and the papers.
 *
 * The link between device and host: on a GPU backend (tfjs-node-gpu, webgpu) a swap-out is a real
 * `await t.data()` into host memory (on webgpu a copy into a mappable buffer read back with `mapAsync`) and
 * a swap-in a device tensor whose buffer and upload start when the swap-in is issued (`DirectTransport`,
 * no added delay; core/backend/transfer.ts).
 * Where device memory is host memory (the cpu backend), the link is emulated in real time by host-link.ts
 * (`EmulatedTransport`).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import type { PackedTensor } from '../../core/engine/index.js';
import { capabilities, peekValues, shareNativeOutputs, tensorOnDevice } from '../../core/backend/index.js';
import { HostLink, type HostBuffer, type Transfer } from './host-link.js';

// ------------------------------------------------------------------------------------------------
// Transports: how bytes move between device and host
// ------------------------------------------------------------------------------------------------

/** A device→host copy in progress or done. */
interface OutCopy {
  readonly bytes: number;
  done(): boolean;
}

/** A host→device copy in progress or done. */
interface InCopy {
  done(): boolean;
  /** Until done (blocks on the emulated link; a promise on a real one). */
  wait(): void | Promise<void>;
  /** The device tensor, once done (the emulated link made it when the copy started; a real one, now). */
  take(): Tensor;
  /** Done but not wanted any more: give the device buffer back. */
  discard(): void;
}

interface Transport {
  readonly kind: 'emulated' | 'direct';
  /** Starts copying `t` to the host; `t`'s buffer must stay alive until the copy is done. */
  out(t: Tensor): OutCopy;
  /** Starts copying a host copy back (its device→host copy may still be in flight). */
  in(from: OutCopy, shape: number[]): InCopy;
  /** The host copy is not needed any more, and no transfer reads it. */
  free(c: OutCopy): void;
  /** Between layers: reclaim what finished. */
  sweep(): void;
  /** A swapped-in tensor handed to forward layers: never reuse its buffer (see EmulatedTransport). */
  keep(t: Tensor): void;
  /** A training step starts / ends (SavedTensorHooks.stepStart / stepEnd). */
  stepStart?(): void;
  stepEnd?(): void;
  close(): Promise<void>;
}

/**
 * The cpu backend: the emulated link of host-link.ts. A swapped-in tensor is created on the shared
 * buffer the link writes (no copy on the main thread) when the copy starts, so that the device memory
 * counts from then on, as a GPU's swap-in allocates its destination before the copy; nothing reads it
 * before the copy is done (the store hands it out only then). When the backend freed that tensor's buffer, the
 * shared buffer goes back to the link for the next swap-in of that size (fresh buffers would cost page
 * faults on every transfer). That is safe only if no other tensor views the buffer: the cpu backend's
 * Slice returns a view (subarray) for a contiguous slice. Saved tensors are read by their layer's
 * backward only, which makes new tensors (a layer's backward never returns a view of what it saved), but
 * a parked activation goes back into forward layers, where a slice may keep a view of it: its buffer is
 * never reused (`keep`).
 */
class EmulatedTransport implements Transport {
  readonly kind = 'emulated';
  readonly link: HostLink;
  private readonly backendData: { has(dataId: object): boolean } | null;
  private readonly lent: { dataId: object; data: Float32Array }[] = [];

  /** Whether this link's steps make the native kernels write shareable outputs (see the constructor). */
  private readonly shares: boolean;
  /** Ends the current step's window of shareable outputs; null outside a step. */
  private unshare: (() => void) | null = null;

  constructor(bandwidth: number, latency: number, copy: boolean, outCopy: 'main' | 'worker') {
    this.link = new HostLink({ bandwidth, latency, copy });
    // outCopy 'worker': outputs in SharedArrayBuffers, so that a lane worker copies a swap-out and the main
    // thread does not (as a GPU's copy engine); a source in a plain array is still staged. 'main': the
    // main thread stages every swap-out (on 2 cores the faster of the two; see the swap plugin's setting).
    // The window is open only while this link's own steps run (stepStart/stepEnd): it is process-wide, and
    // open for the link's lifetime it made every other step in the process (a benchmark's owned step)
    // write SharedArrayBuffers too.
    this.shares = copy && outCopy === 'worker';
    const data = (tf.engine().backend as unknown as { data?: { has?: unknown } }).data;
    this.backendData = data && typeof data.has === 'function' ? (data as { has(dataId: object): boolean }) : null;
  }

  out(t: Tensor): OutCopy & { transfer: Transfer; host: HostBuffer } {
    // The backend's own array (no copy). Staged now on this thread (copies on, a plain array), it is read
    // and not kept: peekValues lets the backend recycle its buffer once the tensor is freed. Where the link
    // keeps it (no copies) or a worker reads it later (shared memory), it is handed out with dataSync, so
    // the backend never recycles it.
    let src = peekValues(t) as Float32Array;
    if (!this.link.copies || src.buffer instanceof SharedArrayBuffer) src = t.dataSync() as Float32Array;
    const { transfer, host } = this.link.startOut(src);
    return { bytes: src.byteLength, transfer, host, done: () => transfer.done };
  }

  in(from: OutCopy, shape: number[]): InCopy {
    const f = from as ReturnType<EmulatedTransport['out']>;
    const { transfer, data } = this.link.startIn(f.host, f.transfer);
    const t = tf.tensor(data, shape, 'float32');
    // Without copies `data` is the host array itself, never pooled: nothing to give back. Otherwise the
    // buffer goes back to the link once the backend freed the tensor (sweep).
    if (this.backendData && this.link.copies) this.lent.push({ dataId: t.dataId, data });
    return {
      done: () => transfer.done,
      wait: () => transfer.wait(),
      take: () => t,
      discard: () => t.dispose(),
    };
  }

  free(c: OutCopy): void {
    this.link.free((c as ReturnType<EmulatedTransport['out']>).host);
  }

  keep(t: Tensor): void {
    const i = this.lent.findIndex((l) => l.dataId === t.dataId);
    if (i >= 0) this.lent.splice(i, 1);
  }

  sweep(): void {
    if (!this.backendData || this.lent.length === 0) return;
    for (let i = this.lent.length - 1; i >= 0; i--) {
      const l = this.lent[i]!;
      if (this.backendData.has(l.dataId)) continue;
      this.link.recycle(l.data);
      this.lent.splice(i, 1);
    }
  }

  stepStart(): void {
    if (this.shares && !this.unshare) this.unshare = shareNativeOutputs();
  }

  stepEnd(): void {
    this.unshare?.();
    this.unshare = null;
  }

  async close(): Promise<void> {
    this.lent.length = 0;
    this.stepEnd();
    await this.link.close();
  }
}

/**
 * A GPU backend (tfjs-node-gpu, webgpu): real transfers, no emulated delay. `t.data()` downloads into
 * host memory asynchronously (the device buffer stays alive through the store's clone until it resolved);
 * a swap-in uploads with `tf.tensor`.
 */
class DirectTransport implements Transport {
  readonly kind = 'direct';

  out(t: Tensor): OutCopy & { host: Float32Array | null; promise: Promise<void>; error: unknown } {
    const c = {
      bytes: t.size * 4,
      host: null as Float32Array | null,
      error: null as unknown,
      finished: false,
      promise: Promise.resolve(),
      done: () => c.finished,
    };
    c.promise = t.data().then(
      (v) => {
        c.host = v as Float32Array;
        c.finished = true;
      },
      (e: unknown) => {
        c.error = e;
        c.finished = true;
      },
    );
    return c;
  }

  in(from: OutCopy, shape: number[]): InCopy {
    const f = from as ReturnType<DirectTransport['out']>;
    // The device copy is allocated and its upload queued as soon as the host copy exists: now, or when
    // the swap-out's read-back (mapAsync) completes. Backward waits only for what is not there yet.
    let device: Tensor | null = null;
    let discarded = false;
    const start = (): void => {
      if (f.error || discarded) return;
      device = tensorOnDevice(f.host!, shape);
    };
    const ready = f.done() ? (start(), Promise.resolve()) : f.promise.then(start);
    return {
      done: () => f.done() && (device !== null || f.error !== null),
      wait: () => (device !== null || f.error ? undefined : ready),
      take: () => {
        if (f.error) throw f.error;
        if (!device) start();
        const t = device!;
        device = null;
        return t;
      },
      discard: () => {
        discarded = true;
        device?.dispose();
        device = null;
      },
    };
  }

  free(c: OutCopy): void {
    (c as ReturnType<DirectTransport['out']>).host = null;
  }

  sweep(): void {}

  keep(): void {}

  async close(): Promise<void> {}
}

// ------------------------------------------------------------------------------------------------
// The host store
// ------------------------------------------------------------------------------------------------

/** One tensor's host copy, and its device copy while one is wanted. */
interface Entry {
  key: object;
  shape: number[];
  bytes: number;
  out: OutCopy;
  /** Alias of the swapped-out buffer, held until the device→host copy finished. */
  clone: Tensor | null;
  /** The store's layer tick when the swap-out started (see SwapStore.endLayer). */
  issued: number;
  inCopy: InCopy | null;
  /** The swapped-in tensor, held while a handle that prefetched it has not unpacked it yet. */
  device: Tensor | null;
  /** Live handles. */
  refs: number;
  /** Handles that prefetched and have not unpacked or released yet. */
  wanted: number;
  /** Unpacks waiting for the swap-in. */
  waiting: number;
  retired: boolean;
}

/** What the executor holds for a swapped tensor: one per save site (or park). */
export class SwapHandle implements PackedTensor {
  readonly location = 'host' as const;
  wanted = false;
  used = false;
  released = false;
  constructor(
    readonly entry: Entry,
    readonly bytes: number,
    /** A forward branch parked until its next reader (else a saved tensor for backward). */
    readonly parked = false,
  ) {}
}

export interface SwapCounters {
  swapOutBytes: number;
  /** Bytes moved back to the device. */
  swapInBytes: number;
  /** Bytes wanted back while their swap-out was still on the link: the device copy served, nothing moved. */
  reusedBytes: number;
  swappedTensors: number;
  parkedTensors: number;
  hostLiveBytes: number;
  hostPeakBytes: number;
  /** Seconds the step waited in unpack for tensors to come back (a swap stall). */
  waitSeconds: number;
  /** Seconds forward waited for swap-outs to finish (outLag), so that their device copies could go. */
  outWaitSeconds: number;
}

export class SwapStore {
  private transport: Transport | null = null;
  private readonly live = new Map<object, Entry>();
  private readonly outgoing = new Set<Entry>();
  private readonly incoming = new Set<Entry>();
  private readonly retiring = new Set<Entry>();
  /** Layers ended so far (endLayer calls): the age of a swap-out in layers. */
  private tick = 0;
  readonly counters: SwapCounters = {
    swapOutBytes: 0,
    swapInBytes: 0,
    reusedBytes: 0,
    swappedTensors: 0,
    parkedTensors: 0,
    hostLiveBytes: 0,
    hostPeakBytes: 0,
    waitSeconds: 0,
    outWaitSeconds: 0,
  };

  constructor(private readonly opts: { bandwidth: number; latency: number; copy?: boolean; outCopy?: 'main' | 'worker'; transport?: 'auto' | 'emulated' | 'direct' }) {}

  /** The transport, chosen on first use: the emulated link on the cpu backend, real transfers elsewhere. */
  get link(): Transport {
    if (!this.transport) {
      const kind = this.opts.transport && this.opts.transport !== 'auto' ? this.opts.transport : capabilities().unifiedMemory ? 'emulated' : 'direct';
      this.transport = kind === 'emulated' ? new EmulatedTransport(this.opts.bandwidth, this.opts.latency, this.opts.copy ?? true, this.opts.outCopy ?? 'main') : new DirectTransport();
    }
    return this.transport;
  }

  /** The emulated link (its timing statistics), when that is the transport. */
  get hostLink(): HostLink | null {
    return this.transport instanceof EmulatedTransport ? this.transport.link : null;
  }

  /** Starts moving `t` to the host (once per buffer) and returns a handle for one holder. */
  swapOut(t: Tensor, parked = false): SwapHandle {
    let e = this.live.get(t.dataId);
    if (!e) {
      const clone = tf.clone(t);
      const out = this.link.out(clone);
      e = { key: t.dataId, shape: [...t.shape], bytes: out.bytes, out, clone, issued: this.tick, inCopy: null, device: null, refs: 0, wanted: 0, waiting: 0, retired: false };
      this.live.set(t.dataId, e);
      this.outgoing.add(e);
      const c = this.counters;
      c.swapOutBytes += e.bytes;
      c.swappedTensors++;
      c.hostLiveBytes += e.bytes;
      c.hostPeakBytes = Math.max(c.hostPeakBytes, c.hostLiveBytes);
    }
    if (parked) this.counters.parkedTensors++;
    e.refs++;
    return new SwapHandle(e, e.bytes, parked);
  }

  prefetch(h: SwapHandle): void {
    if (h.wanted || h.used || h.released) return;
    const e = h.entry;
    h.wanted = true;
    e.wanted++;
    if (!e.device && !e.inCopy) this.startIn(e);
  }

  async unpack(h: SwapHandle): Promise<Tensor> {
    const t0 = performance.now();
    try {
      return await this.unpackNow(h);
    } finally {
      this.counters.waitSeconds += (performance.now() - t0) / 1000;
    }
  }

  private async unpackNow(h: SwapHandle): Promise<Tensor> {
    if (!(h instanceof SwapHandle)) throw new Error('swap: unpack() was given a handle this store did not make');
    if (h.released) throw new Error('swap: unpack() after release()');
    this.poll();
    const e = h.entry;
    // While this waits, another unpack or a poll may complete the same swap-in (or use and drop it).
    while (!e.device) {
      if (!e.inCopy) this.startIn(e);
      const c = e.inCopy!;
      if (!c.done()) {
        e.waiting++;
        try {
          await c.wait();
        } finally {
          e.waiting--;
        }
      }
      if (e.inCopy === c) this.completeIn(e);
    }
    if (h.parked) this.link.keep(e.device);
    h.used = true;
    if (h.wanted) {
      h.wanted = false;
      e.wanted--;
    }
    if (e.wanted === 0 && e.waiting === 0) {
      // The last holder that wants it takes the tensor itself (no alias to make and drop).
      const t = e.device;
      e.device = null;
      return t;
    }
    return tf.clone(e.device);
  }

  release(h: SwapHandle): void {
    if (h.released) return;
    h.released = true;
    const e = h.entry;
    if (h.wanted) {
      h.wanted = false;
      e.wanted--;
    }
    this.dropDeviceIfUnwanted(e);
    if (--e.refs === 0) {
      if (this.live.get(e.key) === e) this.live.delete(e.key);
      e.retired = true;
      this.retiring.add(e);
      this.tryFree(e);
    }
  }

  /** Completes finished transfers: frees swapped-out device buffers, creates swapped-in tensors. */
  poll(): void {
    if (!this.transport) return;
    for (const e of this.outgoing) {
      if (!e.out.done()) continue;
      e.clone?.dispose();
      e.clone = null;
      this.outgoing.delete(e);
      this.tryFree(e);
    }
    for (const e of this.incoming) {
      if (!e.inCopy!.done()) continue;
      if (e.wanted > 0 || e.waiting > 0) this.completeIn(e);
      else {
        e.inCopy!.discard();
        e.inCopy = null;
        this.incoming.delete(e);
        this.tryFree(e);
      }
    }
    this.transport.sweep();
  }

  /** A training step starts: the transport may set up what only its steps need. */
  stepStart(): void {
    this.link.stepStart?.();
  }

  /** A training step ended (failed or not). */
  stepEnd(): void {
    this.transport?.stepEnd?.();
  }

  /**
   * The executor finished a layer: completes finished transfers and, with `outLag` ≥ 0, waits for every
   * swap-out started more than `outLag` layers ago, so at most the saves of the last `outLag` + 1 layers
   * hold device memory while their copies are on the link (−1: never waits; a slow link then lets
   * forward's device copies pile up).
   */
  async endLayer(outLag: number): Promise<void> {
    this.poll();
    if (outLag >= 0) {
      const due = [...this.outgoing].filter((e) => e.issued <= this.tick - outLag);
      if (due.length) {
        const t0 = performance.now();
        for (const e of due) await this.waitOut(e);
        this.counters.outWaitSeconds += (performance.now() - t0) / 1000;
        this.poll();
      }
    }
    this.tick++;
  }

  private async waitOut(e: Entry): Promise<void> {
    const c = e.out;
    if (c.done()) return;
    if (this.transport instanceof DirectTransport) await (c as ReturnType<DirectTransport['out']>).promise;
    else (c as ReturnType<EmulatedTransport['out']>).transfer.wait();
  }

  /** Waits for every transfer in flight, then completes them. */
  async settle(): Promise<void> {
    for (const e of [...this.outgoing]) await this.waitOut(e);
    for (const e of [...this.incoming]) if (!e.inCopy!.done()) await e.inCopy!.wait();
    this.poll();
  }

  /** Frees everything (after a failed step too) and stops the link. */
  async dispose(): Promise<void> {
    if (!this.transport) return;
    await this.settle();
    for (const e of [...this.live.values(), ...this.retiring]) {
      e.clone?.dispose();
      e.device?.dispose();
      e.clone = null;
      e.device = null;
    }
    this.live.clear();
    this.retiring.clear();
    this.counters.hostLiveBytes = 0;
    await this.transport.close();
    this.transport = null;
  }

  private startIn(e: Entry): void {
    // Still on its way out (the store's clone holds the device buffer): use that buffer, no transfer.
    if (e.clone) {
      e.device = tf.clone(e.clone);
      this.counters.reusedBytes += e.bytes;
      return;
    }
    e.inCopy = this.link.in(e.out, e.shape);
    this.incoming.add(e);
    this.counters.swapInBytes += e.bytes;
  }

  private completeIn(e: Entry): void {
    const c = e.inCopy!;
    e.inCopy = null;
    this.incoming.delete(e);
    e.device = c.take();
    this.tryFree(e);
  }

  private dropDeviceIfUnwanted(e: Entry): void {
    if (e.wanted === 0 && e.waiting === 0 && e.device) {
      e.device.dispose();
      e.device = null;
    }
  }

  /** A retired entry's host copy goes once no transfer touches it. */
  private tryFree(e: Entry): void {
    if (!e.retired || e.clone || e.inCopy || !this.retiring.has(e)) return;
    this.retiring.delete(e);
    this.link.free(e.out);
    this.counters.hostLiveBytes -= e.bytes;
  }
}
