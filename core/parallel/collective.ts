/**
 * The collectives of spatial partitioning (Hou et al. 2019): a volume split into P slabs along D, one per
 * rank, each rank one accelerator. Three calls cover what a partitioned step exchanges:
 * - `exchangeHalos`: a convolution's halo planes, with the two neighbouring slabs;
 * - `allReduceSum`: instance-norm and loss sums over the parts, and the weight gradients (so that every
 *   rank applies the same Adam update);
 * - `barrier`.
 *
 * `SharedMemoryCollective` runs them between the worker threads of one process (core/parallel/group.ts)
 * over one SharedArrayBuffer; its protocol is described above the class.
 *
 * Across machines the same three calls map onto any transport with point-to-point messages and an
 * all-reduce (MPI: MPI_Sendrecv with rank ± 1 for the halos, MPI_Allreduce(MPI_SUM) and MPI_Barrier; NCCL:
 * ncclSend/ncclRecv in one group, ncclAllReduce). What such a transport must add or keep:
 * - the same SPMD contract: every rank calls the same collectives in the same order;
 * - bit-identical all-reduce results on every rank. A ring or tree all-reduce sums in an order that
 *   depends on the rank, so each rank's floating-point result may differ in the last bit; it must either
 *   sum in rank order (reduce to one rank, then broadcast: what this file does, in effect) or broadcast
 *   the one result rank 0 computed, else the ranks' weights drift apart over the steps;
 * - asynchronous sends, or device-to-device copies (NVLink, GPUDirect), so that halo transfers overlap
 *   compute: this in-machine version blocks and copies through host memory;
 * - failure handling: a rank that dies must release the others (MPI_Abort; NCCL's ncclCommAbort), with
 *   timeouts where the transport has none;
 * - `bytesSent` counted as what goes on the wire: a ring all-reduce of n bytes sends 2·(P−1)/P·n per rank,
 *   where this one publishes n once for the others to read.
 */

/** The collective operations of one rank of a group of `size` ranks, rank 0 holding the first slab along D. */
export interface Collective {
  readonly rank: number;
  readonly size: number;
  /**
   * Sends `toBelow` to rank − 1 and `toAbove` to rank + 1, and returns what those two ranks sent this one
   * (fresh arrays, owned by the caller). Rank 0 must pass `toBelow = null` and rank size − 1
   * `toAbove = null`; their missing neighbour's entry comes back null. At an inner boundary the two ranks
   * must both send (any lengths: the two directions may differ) or both pass null; one null against data
   * is an error naming both ranks.
   */
  exchangeHalos(toBelow: Float32Array | null, toAbove: Float32Array | null): { fromBelow: Float32Array | null; fromAbove: Float32Array | null };
  /**
   * Replaces `v` by the element-wise sum of every rank's `v`, summed in rank order 0…size−1 in float32:
   * `s = v₀; s += v₁; …; s += v_{P−1}` with each addition rounded to float32 (what
   * `Float32Array` arithmetic gives), so the result is bit-identical on every rank. Every rank must pass
   * the same length; a mismatch is an error naming the ranks and their lengths.
   */
  allReduceSum(v: Float32Array): void;
  /** Returns once every rank has called it. */
  barrier(): void;
  /** Bytes this rank has published for other ranks: the halo planes it sent and each vector it all-reduced (0 in a group of one). */
  readonly bytesSent: number;
}

/** A collective call ended because the group was aborted (by a rank, by the main thread, or after an error). */
export class CollectiveAbortedError extends Error {
  constructor(
    readonly reason: string,
    readonly rank: number | null,
  ) {
    super(`collective aborted${rank === null ? '' : ` (seen by rank ${rank})`}: ${reason}`);
    this.name = 'CollectiveAbortedError';
  }
}

/** A wait inside a collective call lasted longer than the group's `timeoutMs`. */
export class CollectiveTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CollectiveTimeoutError';
  }
}

/** The ranks called the collectives differently (another call, another length, one null halo against data, a too-large message). */
export class CollectiveUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CollectiveUsageError';
  }
}

export interface SharedCollectiveOptions {
  /** Number of ranks (≥ 1). */
  size: number;
  /**
   * Capacity of one message in bytes (default 16 MiB): one halo plane in one direction, or one
   * all-reduced vector. Each rank owns two such regions (below, above), so the buffer holds
   * 2 · size · scratchBytes (pages are touched only as they are written).
   */
  scratchBytes?: number;
  /** Longest a rank waits inside one call for the others, in ms (default 120 000), before it throws. */
  timeoutMs?: number;
}

/** What a rank needs to join the collective: plain data that a Worker's workerData can carry. */
export interface SharedCollectiveInit {
  readonly buffer: SharedArrayBuffer;
  readonly size: number;
  readonly scratchBytes: number;
  readonly timeoutMs: number;
}

export const DEFAULT_SCRATCH_BYTES = 16 * 2 ** 20;
export const DEFAULT_TIMEOUT_MS = 120_000;

// ------------------------------------------------------------------------------------------------
// Layout of the SharedArrayBuffer (Int32 indices; byte offsets for the data regions)
// ------------------------------------------------------------------------------------------------
/** [0] abort flag (0 / 1), [1] abort claim (the first abort wins), [2] reason bytes, [3] size. */
const ABORT_FLAG = 0;
const ABORT_CLAIM = 1;
const ABORT_LENGTH = 2;
const SIZE_WORD = 3;
const HEADER_INTS = 16;
const REASON_BYTES = 4096;
/** Per rank: [posted op, its kind, length of the "below" message, length of the "above" message, consumed op, unused; 64 bytes, one cache line per rank]. */
const RANK_INTS = 16;
const POSTED = 0;
const KIND = 1;
const LEN_BELOW = 2;
const LEN_ABOVE = 3;
const CONSUMED = 4;
/** Length word of a region that carries null. */
const NULL_LENGTH = -1;
const ALIGN = 64;

const KIND_HALO = 1;
const KIND_REDUCE = 2;
const KIND_BARRIER = 3;
const KIND_END = 4;
const KIND_NAMES: Record<number, string> = { [KIND_HALO]: 'exchangeHalos', [KIND_REDUCE]: 'allReduceSum', [KIND_BARRIER]: 'barrier', [KIND_END]: '(returned from its call)' };

/** Longest single Atomics.wait, so an abort whose notify raced the wait is still seen promptly. */
const WAIT_SLICE_MS = 100;

const roundUp = (n: number, m: number): number => Math.ceil(n / m) * m;
const rankBase = (r: number): number => HEADER_INTS + r * RANK_INTS;
function layout(size: number, scratchBytes: number): { reasonOffset: number; dataOffset: number; regionBytes: number; total: number } {
  const reasonOffset = 4 * (HEADER_INTS + size * RANK_INTS);
  const dataOffset = roundUp(reasonOffset + REASON_BYTES, ALIGN);
  const regionBytes = roundUp(scratchBytes, ALIGN);
  return { reasonOffset, dataOffset, regionBytes, total: dataOffset + 2 * size * regionBytes };
}

function formatBytes(b: number): string {
  return b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(2)} MiB (${b} bytes)` : `${b} bytes`;
}

/**
 * The three collectives between the threads of one process, synchronous and blocking, over one
 * SharedArrayBuffer with Atomics.wait / Atomics.notify. Each rank runs in its own worker thread
 * (Atomics.wait blocks the thread; Node allows it on the main thread too, so one rank may also run there).
 *
 * Protocol.
 * - Slots. Each rank r owns a header (posted op number, op kind, two lengths, consumed op number) and two
 *   data regions of `scratchBytes`: region "below" (its halo plane for rank r − 1, also the vector of an
 *   all-reduce) and region "above" (its plane for rank r + 1). Only rank r writes them.
 * - Sequence numbers. Every call is an op, numbered 1, 2, … per rank; under SPMD the numbers agree across
 *   ranks. To post op k, rank r first waits until each rank that read its op k − 1 (its neighbours for a
 *   halo exchange, everybody otherwise) has `consumed ≥ k − 1`, then writes its data and lengths, then
 *   stores its kind and `posted = k` and notifies. A reader of op k waits for `posted ≥ k` of the ranks it
 *   reads, checks `posted == k` and the kind (a different call on another rank is a CollectiveUsageError,
 *   not a hang), copies what it needs, then stores `consumed = k` and notifies. A rank thus never
 *   overwrites a region before its readers are done, and never runs more than one op ahead of them.
 * - Halo exchange: post (both regions), read rank − 1's "above" and rank + 1's "below".
 * - All-reduce: post the vector in "below", read every rank's (its own included) and sum in rank order;
 *   each rank computes the same float32 sums in the same order, hence identical bits.
 * - Barrier: post with no data, wait for every rank's post of the same op. (Any rank posting op k has
 *   entered it; no rank can post op k + 1 before every rank consumed op k.)
 * - End of a call: the group's worker posts an END op, without waiting, when a rank's method returns, so
 *   a rank still waiting in a collective for it fails at once ("rank 0 returned …") instead of timing out.
 * - Abort: the first `abort(reason)` (any rank, or the main thread through `SharedMemoryCollective.abort`)
 *   claims word 1, writes the reason, sets word 0 and notifies every header word. Every wait checks the
 *   flag at least each 100 ms, so any rank waiting in, or entering, a call afterwards throws
 *   CollectiveAbortedError with the reason. A usage error or a timeout on one rank aborts the group too
 *   (the ranks have diverged; nothing can continue).
 * - Timeouts: every wait gives up after `timeoutMs` with a CollectiveTimeoutError (and aborts the group).
 */
export class SharedMemoryCollective implements Collective {
  readonly rank: number;
  readonly size: number;
  readonly scratchBytes: number;
  readonly timeoutMs: number;
  private readonly words: Int32Array;
  private readonly dataOffset: number;
  private readonly regionBytes: number;
  private op = 0;
  /** Ranks that read this rank's last posted op (they must consume it before the next post). */
  private readers: number[] = [];
  private sent = 0;

  /** Allocates the shared buffer for a group; pass the result to each rank's constructor. */
  static create(opts: SharedCollectiveOptions): SharedCollectiveInit {
    const size = opts.size;
    const scratchBytes = opts.scratchBytes ?? DEFAULT_SCRATCH_BYTES;
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isInteger(size) || size < 1) throw new Error(`SharedMemoryCollective: size must be a whole number ≥ 1, got ${size}`);
    if (!Number.isInteger(scratchBytes) || scratchBytes < 4 || scratchBytes > 2 ** 31 - 64)
      throw new Error(`SharedMemoryCollective: scratchBytes must be a whole number of bytes in [4, 2³¹ − 64], got ${scratchBytes}`);
    if (!(timeoutMs > 0)) throw new Error(`SharedMemoryCollective: timeoutMs must be > 0, got ${timeoutMs}`);
    const { total } = layout(size, scratchBytes);
    const buffer = new SharedArrayBuffer(total);
    new Int32Array(buffer)[SIZE_WORD] = size;
    return { buffer, size, scratchBytes, timeoutMs };
  }

  /**
   * Aborts the group from anywhere (the main thread included): every rank waiting in a call, or
   * entering one later, throws CollectiveAbortedError(reason). The first abort's reason is kept.
   */
  static abort(init: SharedCollectiveInit, reason: string): void {
    const words = new Int32Array(init.buffer);
    if (Atomics.compareExchange(words, ABORT_CLAIM, 0, 1) === 0) {
      const { reasonOffset } = layout(init.size, init.scratchBytes);
      const encoded = new TextEncoder().encode(reason);
      let n = Math.min(encoded.length, REASON_BYTES);
      // Never cut a UTF-8 sequence in two.
      while (n < encoded.length && n > 0 && (encoded[n]! & 0xc0) === 0x80) n--;
      new Uint8Array(init.buffer, reasonOffset, REASON_BYTES).set(encoded.subarray(0, n));
      Atomics.store(words, ABORT_LENGTH, n);
      Atomics.store(words, ABORT_FLAG, 1);
    }
    for (let i = 0; i < HEADER_INTS + init.size * RANK_INTS; i++) Atomics.notify(words, i);
  }

  /** The abort reason, or null while the group is not aborted. */
  static abortReason(init: SharedCollectiveInit): string | null {
    const words = new Int32Array(init.buffer);
    if (Atomics.load(words, ABORT_FLAG) === 0) return null;
    const { reasonOffset } = layout(init.size, init.scratchBytes);
    const n = Atomics.load(words, ABORT_LENGTH);
    // A copy: TextDecoder does not read shared memory.
    return new TextDecoder().decode(new Uint8Array(init.buffer, reasonOffset, n).slice());
  }

  constructor(
    private readonly init: SharedCollectiveInit,
    rank: number,
  ) {
    if (!(init.buffer instanceof SharedArrayBuffer)) throw new Error('SharedMemoryCollective: init.buffer must be the SharedArrayBuffer from SharedMemoryCollective.create');
    if (!Number.isInteger(rank) || rank < 0 || rank >= init.size) throw new Error(`SharedMemoryCollective: rank must be in [0, ${init.size - 1}], got ${rank}`);
    const l = layout(init.size, init.scratchBytes);
    if (init.buffer.byteLength !== l.total || new Int32Array(init.buffer)[SIZE_WORD] !== init.size)
      throw new Error('SharedMemoryCollective: the buffer does not match size and scratchBytes (make it with SharedMemoryCollective.create)');
    this.rank = rank;
    this.size = init.size;
    this.scratchBytes = init.scratchBytes;
    this.timeoutMs = init.timeoutMs;
    this.words = new Int32Array(init.buffer);
    this.dataOffset = l.dataOffset;
    this.regionBytes = l.regionBytes;
  }

  get bytesSent(): number {
    return this.sent;
  }

  /** Collective ops this rank has started (every call, END markers included). */
  get opsPosted(): number {
    return this.op;
  }

  /** Aborts the group (see the static `abort`). */
  abort(reason: string): void {
    SharedMemoryCollective.abort(this.init, reason);
  }

  /** The abort reason, or null. */
  get abortReason(): string | null {
    return SharedMemoryCollective.abortReason(this.init);
  }

  exchangeHalos(toBelow: Float32Array | null, toAbove: Float32Array | null): { fromBelow: Float32Array | null; fromAbove: Float32Array | null } {
    const r = this.rank;
    const k = this.begin('exchangeHalos');
    if (r === 0 && toBelow !== null) this.fail(`exchangeHalos: rank 0 has no rank below it; pass toBelow = null (got ${toBelow.length} values)`);
    if (r === this.size - 1 && toAbove !== null)
      this.fail(`exchangeHalos: rank ${r} is the last of ${this.size} ranks and has no rank above it; pass toAbove = null (got ${toAbove.length} values)`);
    this.checkCapacity('exchangeHalos', toBelow, `its plane for rank ${r - 1}`);
    this.checkCapacity('exchangeHalos', toAbove, `its plane for rank ${r + 1}`);
    const neighbours = [r - 1, r + 1].filter((q) => q >= 0 && q < this.size);
    this.post(k, KIND_HALO, toBelow, toAbove, neighbours);
    let fromBelow: Float32Array | null = null;
    let fromAbove: Float32Array | null = null;
    if (r > 0) {
      this.awaitPost(r - 1, k, KIND_HALO, 'exchangeHalos');
      fromBelow = this.read(r - 1, 1);
      this.checkBoundary(k, r - 1, r, fromBelow, toBelow);
    }
    if (r < this.size - 1) {
      this.awaitPost(r + 1, k, KIND_HALO, 'exchangeHalos');
      fromAbove = this.read(r + 1, 0);
      this.checkBoundary(k, r, r + 1, toAbove, fromAbove);
    }
    this.consume(k);
    return { fromBelow, fromAbove };
  }

  allReduceSum(v: Float32Array): void {
    const k = this.begin('allReduceSum');
    if (!(v instanceof Float32Array)) this.fail(`allReduceSum: rank ${this.rank} passed ${Object.prototype.toString.call(v)}; expected a Float32Array`);
    this.checkCapacity('allReduceSum', v, 'its vector');
    const all = this.everyRank();
    this.post(k, KIND_REDUCE, v, null, all);
    const lengths: number[] = [];
    for (const q of all) {
      this.awaitPost(q, k, KIND_REDUCE, 'allReduceSum');
      lengths.push(Atomics.load(this.words, rankBase(q) + LEN_BELOW));
    }
    if (lengths.some((n) => n !== lengths[0])) {
      const listed = lengths.map((n, q) => `rank ${q}: ${n}`).join(', ');
      this.fail(`allReduceSum (collective #${k}): the ranks passed vectors of different lengths (${listed}); every rank must pass the same length`);
    }
    const n = v.length;
    v.set(this.view(0, 0, n));
    for (let q = 1; q < this.size; q++) {
      const s = this.view(q, 0, n);
      for (let i = 0; i < n; i++) v[i]! += s[i]!;
    }
    this.consume(k);
  }

  barrier(): void {
    const k = this.begin('barrier');
    const all = this.everyRank();
    this.post(k, KIND_BARRIER, null, null, all);
    for (const q of all) this.awaitPost(q, k, KIND_BARRIER, 'barrier');
    this.consume(k);
  }

  /**
   * Marks the end of one SPMD call on this rank (core/parallel/group.ts calls it when the rank's method
   * returns): a rank that still waits in a collective for this one then fails at once instead of timing
   * out. Does not wait for the other ranks.
   */
  endCall(): void {
    const k = this.begin('(end of call)');
    this.post(k, KIND_END, null, null, this.everyRank());
    // Nobody reads an END (except to report a mismatch): this rank has consumed it itself, and the next
    // post waits until every rank has posted (and consumed) its own END.
    this.consume(k);
  }

  // ----------------------------------------------------------------------------------------------

  private everyRank(): number[] {
    return Array.from({ length: this.size }, (_, q) => q);
  }

  private begin(what: string): number {
    this.throwIfAborted();
    if (this.op >= 2 ** 31 - 2) this.fail(`${what}: collective op numbers exhausted; start a new group`);
    return ++this.op;
  }

  private throwIfAborted(): void {
    if (Atomics.load(this.words, ABORT_FLAG) !== 0) throw new CollectiveAbortedError(this.abortReason ?? 'aborted', this.rank);
  }

  /** Aborts the group with `message` and throws it as a CollectiveUsageError on this rank. */
  private fail(message: string): never {
    this.throwIfAborted();
    this.abort(message);
    throw new CollectiveUsageError(message);
  }

  private checkCapacity(what: string, data: Float32Array | null, which: string): void {
    if (data && data.byteLength > this.scratchBytes)
      this.fail(
        `${what}: rank ${this.rank}'s message (${which}) is ${formatBytes(data.byteLength)}, more than the collective's scratch capacity of ` +
          `${formatBytes(this.scratchBytes)} per message; raise the scratchBytes option (WorkerGroup.start({ scratchBytes }) or SharedMemoryCollective.create)`,
      );
  }

  /** Blocks until words[index] ≥ `target`, the group aborts, or the timeout passes. Returns the value read. */
  private waitUntil(index: number, target: number, describe: () => string): number {
    const deadline = performance.now() + this.timeoutMs;
    for (;;) {
      const v = Atomics.load(this.words, index);
      if (v >= target) return v;
      this.throwIfAborted();
      const left = deadline - performance.now();
      if (left <= 0) {
        const message = `rank ${this.rank} waited ${this.timeoutMs} ms ${describe()}; raise the timeoutMs option (WorkerGroup.start({ timeoutMs }) or SharedMemoryCollective.create) if the work between two collective calls legitimately takes longer`;
        this.abort(message);
        throw new CollectiveTimeoutError(message);
      }
      Atomics.wait(this.words, index, v, Math.min(left, WAIT_SLICE_MS));
    }
  }

  private post(k: number, kind: number, below: Float32Array | null, above: Float32Array | null, readers: number[]): void {
    for (const q of this.readers)
      if (q !== this.rank)
        this.waitUntil(rankBase(q) + CONSUMED, k - 1, () => `in ${KIND_NAMES[kind]} (collective #${k}) for rank ${q} to finish reading this rank's collective #${k - 1}`);
    const base = rankBase(this.rank);
    this.write(0, below);
    this.write(1, above);
    Atomics.store(this.words, base + LEN_BELOW, below ? below.length : NULL_LENGTH);
    Atomics.store(this.words, base + LEN_ABOVE, above ? above.length : NULL_LENGTH);
    Atomics.store(this.words, base + KIND, kind);
    Atomics.store(this.words, base + POSTED, k);
    Atomics.notify(this.words, base + POSTED);
    this.readers = readers;
  }

  private write(region: 0 | 1, data: Float32Array | null): void {
    if (!data) return;
    this.view(this.rank, region, data.length).set(data);
    // Bytes for other ranks: a group of one publishes for nobody.
    if (this.size > 1) this.sent += data.byteLength;
  }

  private awaitPost(q: number, k: number, kind: number, what: string): void {
    const base = rankBase(q);
    const posted = this.waitUntil(base + POSTED, k, () => `in ${what} (collective #${k}) for rank ${q} to enter the same call`);
    const theirs = Atomics.load(this.words, base + KIND);
    if (posted === k && theirs === kind) return;
    if (posted === k && theirs === KIND_END)
      this.fail(`collective #${k} differs across ranks: rank ${q} returned from its call after ${k - 1} collective calls, while rank ${this.rank} called ${what} as #${k}`);
    if (posted === k)
      this.fail(`collective #${k} differs across ranks: rank ${this.rank} called ${what}, rank ${q} called ${KIND_NAMES[theirs] ?? `kind ${theirs}`}; every rank must make the same calls in the same order`);
    this.fail(`collective #${k} differs across ranks: rank ${this.rank} called ${what} as #${k} while rank ${q} is already at #${posted} (it made other calls); every rank must make the same calls in the same order`);
  }

  private consume(k: number): void {
    const index = rankBase(this.rank) + CONSUMED;
    Atomics.store(this.words, index, k);
    Atomics.notify(this.words, index);
  }

  /** Float32 view of rank q's region (0 below, 1 above). */
  private view(q: number, region: 0 | 1, length: number): Float32Array {
    return new Float32Array(this.words.buffer, this.dataOffset + (2 * q + region) * this.regionBytes, length);
  }

  /** A copy of what rank q posted in a region (null for a null message). */
  private read(q: number, region: 0 | 1): Float32Array | null {
    const n = Atomics.load(this.words, rankBase(q) + (region === 0 ? LEN_BELOW : LEN_ABOVE));
    return n === NULL_LENGTH ? null : this.view(q, region, n).slice();
  }

  /** Both ranks of the boundary between `lower` and `lower + 1` sent, or neither did. */
  private checkBoundary(k: number, lower: number, upper: number, lowerSent: Float32Array | null, upperSent: Float32Array | null): void {
    if ((lowerSent === null) === (upperSent === null)) return;
    const [sender, silent, n] = lowerSent ? [lower, upper, lowerSent.length] : [upper, lower, upperSent!.length];
    this.fail(
      `exchangeHalos (collective #${k}): at the boundary between ranks ${lower} and ${upper}, rank ${sender} sent a plane of ${n} values to rank ${silent} ` +
        `but rank ${silent} passed null for rank ${sender}; the two ranks of an inner boundary must both send or both pass null`,
    );
  }
}
