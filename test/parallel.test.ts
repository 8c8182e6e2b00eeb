/**
 * core/parallel: the worker group and its in-machine collectives (halo exchange, rank-ordered all-reduce,
 * barrier), their errors (a rank that throws or exits, mismatched calls, too-large messages, timeouts),
 * and each rank's own tfjs engine and memory meter. The ranks' functions are in test/fixtures/parallel/.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { RankFailedError, SharedMemoryCollective, WorkerGroup, type WorkerGroupOptions } from '../core/parallel/index.js';

const COLLECTIVE = fileURLToPath(new URL('./fixtures/parallel/collective-rank.ts', import.meta.url));
const TENSOR = fileURLToPath(new URL('./fixtures/parallel/tensor-rank.ts', import.meta.url));
const MIB = 2 ** 20;

const groups: WorkerGroup[] = [];
async function start(opts: Omit<WorkerGroupOptions, 'entry'> & { entry?: string }): Promise<WorkerGroup> {
  const g = await WorkerGroup.start({ entry: COLLECTIVE, ...opts });
  groups.push(g);
  return g;
}
afterEach(async () => {
  await Promise.all(groups.splice(0).map((g) => g.close()));
});

/** What a rank r sends: rank·100 + k, k = 0 … length − 1. */
const plane = (rank: number, length: number): number[] => Array.from({ length }, (_, k) => rank * 100 + k);

/** The rejection of `p` (fails when it resolves), with the time it took. */
async function rejection(p: Promise<unknown>): Promise<{ error: RankFailedError; ms: number }> {
  const t0 = performance.now();
  try {
    await p;
  } catch (e) {
    return { error: e as RankFailedError, ms: performance.now() - t0 };
  }
  throw new Error('expected the call to reject');
}

describe('exchangeHalos', () => {
  for (const P of [2, 3, 4]) {
    it(`P = ${P}: every rank gets exactly its neighbours' planes; the chain's ends get null`, async () => {
      const g = await start({ size: P });
      // Planes to below hold 2 values, planes to above 3: the two directions differ in length.
      const args = Array.from({ length: P }, (_, r) => ({ below: r > 0 ? 2 : null, above: r < P - 1 ? 3 : null }));
      const got = await g.call<{ fromBelow: number[] | null; fromAbove: number[] | null; bytesSent: number }>('halos', args);
      for (let r = 0; r < P; r++) {
        expect(got[r]!.fromBelow).toEqual(r > 0 ? plane(r - 1, 3) : null);
        expect(got[r]!.fromAbove).toEqual(r < P - 1 ? plane(r + 1, 2) : null);
        expect(got[r]!.bytesSent).toBe(4 * ((r > 0 ? 2 : 0) + (r < P - 1 ? 3 : 0)));
      }
      // Both ranks of every boundary passing null is allowed.
      const none = await g.call<{ fromBelow: unknown; fromAbove: unknown }>('halos', args.map(() => ({ below: null, above: null })));
      expect(none.every((x) => x.fromBelow === null && x.fromAbove === null)).toBe(true);
    });
  }

  it('many collectives of every kind in a row reuse the slots correctly', async () => {
    const P = 3;
    const rounds = 200;
    const length = 16;
    const g = await start({ size: P });
    const got = await g.call<number>('mixed', Array.from({ length: P }, () => ({ rounds, length })));
    // What mixed() adds up, computed here: planes (rank + i)·100 + k, all-reduce of (rank + i) over the ranks.
    const expected = Array.from({ length: P }, (_, r) => {
      let s = 0;
      for (let i = 0; i < rounds; i++) {
        if (r > 0) s += (r - 1 + i) * 100 + length; // from below: its plane to above has length + 1 values
        if (r < P - 1) s += (r + 1 + i) * 100 + length - 1;
        s += Array.from({ length: P }, (_, q) => q + i).reduce((a, b) => a + b, 0);
      }
      return s;
    });
    expect(got).toEqual(expected);
  });

  it('one rank passing null where its neighbour sends a plane is an error naming both ranks', async () => {
    const g = await start({ size: 3 });
    const { error } = await rejection(g.call('halos', [{ below: null, above: 2 }, { below: null, above: 2 }, { below: 2, above: null }]));
    expect(error.message).toMatch(/boundary between ranks 0 and 1/);
    expect(error.message).toMatch(/rank 0 sent a plane of 2 values to rank 1 but rank 1 passed null/);
    expect(error.workerErrorName).toBe('CollectiveUsageError');
    expect(g.liveWorkers).toBe(0);
  });

  it('a message larger than the scratch capacity is an error naming the option', async () => {
    const g = await start({ size: 2, scratchBytes: 1024 });
    // 300 float32 values = 1200 bytes > 1024.
    const { error } = await rejection(g.call('halos', [{ below: null, above: 300 }, { below: 10, above: null }]));
    expect(error.message).toMatch(/rank 0's message \(its plane for rank 1\) is 1200 bytes, more than the collective's scratch capacity of 1024 bytes/);
    expect(error.message).toMatch(/raise the scratchBytes option/);
    expect(g.liveWorkers).toBe(0);
  });
});

describe('allReduceSum', () => {
  it('is bit-identical on every rank and equals the rank-ordered float32 sum', async () => {
    const P = 4;
    const n = 257;
    // Values of very different magnitudes, so that the order of the additions changes the result.
    let seed = 12345;
    const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32 - 0.5) * 10 ** Math.floor((seed >>> 8) % 9 - 4);
    const inputs = Array.from({ length: P }, () => Array.from(Float32Array.from({ length: n }, rand)));
    const g = await start({ size: P });
    const bits = await g.call<number[]>('reduce', inputs.map((values) => ({ values })));
    for (let r = 1; r < P; r++) expect(bits[r]).toEqual(bits[0]);
    const ordered = Float32Array.from(inputs[0]!);
    for (let r = 1; r < P; r++) for (let i = 0; i < n; i++) ordered[i]! += inputs[r]![i]!;
    expect(bits[0]).toEqual(Array.from(new Uint32Array(ordered.buffer)));
    // The check is meaningful: summing in reverse order gives other bits somewhere.
    const reversed = Float32Array.from(inputs[P - 1]!);
    for (let r = P - 2; r >= 0; r--) for (let i = 0; i < n; i++) reversed[i]! += inputs[r]![i]!;
    expect(Array.from(new Uint32Array(reversed.buffer))).not.toEqual(bits[0]);
  });

  it('a length mismatch is an error naming the ranks and their lengths', async () => {
    const g = await start({ size: 3 });
    const { error } = await rejection(g.call('reduce', [{ values: [1, 2] }, { values: [1, 2, 3] }, { values: [1, 2] }]));
    expect(error.message).toMatch(/different lengths \(rank 0: 2, rank 1: 3, rank 2: 2\)/);
    expect(g.liveWorkers).toBe(0);
  });
});

describe('failures', () => {
  it('a rank that throws while the others wait in a barrier: the call rejects at once, naming it, and every thread exits', async () => {
    const g = await start({ size: 3 });
    let exits = 0;
    for (const w of (g as unknown as { workers: { once(e: string, f: () => void): void }[] }).workers) w.once('exit', () => exits++);
    const arg = { rank: 1, message: 'over budget on rank 1', delayMs: 200 };
    const { error, ms } = await rejection(g.call('throwWhileOthersWait', [arg, arg, arg]));
    expect(error).toBeInstanceOf(RankFailedError);
    expect(error.rank).toBe(1);
    expect(error.message).toMatch(/rank 1/);
    expect(error.message).toContain('over budget on rank 1');
    expect(error.workerErrorName).toBe('Error');
    expect((error.cause as Error).message).toBe('over budget on rank 1');
    expect(ms).toBeLessThan(5000);
    expect(g.liveWorkers).toBe(0);
    expect(exits).toBe(3);
    expect(g.closed).toBe(true);
    await expect(g.call('whoAmI', [0, 0, 0])).rejects.toThrow(/the group is closed \(rank 1 failed/);
  });

  it("a rank's error keeps its name and fields (e.g. a DeviceOutOfMemoryError)", async () => {
    const g = await start({ size: 2, entry: TENSOR });
    const { error } = await rejection(g.call('outOfMemory', [{ rank: 1 }, { rank: 1 }]));
    expect(error.rank).toBe(1);
    expect(error.workerErrorName).toBe('DeviceOutOfMemoryError');
    expect((error.cause as Error).name).toBe('DeviceOutOfMemoryError');
    expect(error.details).toMatchObject({ op: 'forward / conv1', needed: 4096, budget: 1024 });
    expect(g.liveWorkers).toBe(0);
  });

  it('a rank whose thread exits (process.exit) rejects the call with a clear message', async () => {
    const g = await start({ size: 3 });
    const { error, ms } = await rejection(g.call('exitWhileOthersWait', [{ rank: 2 }, { rank: 2 }, { rank: 2 }]));
    expect(error.rank).toBe(2);
    expect(error.message).toMatch(/rank 2's worker thread exited unexpectedly \(exit code 3\) during exitWhileOthersWait/);
    expect(ms).toBeLessThan(5000);
    expect(g.liveWorkers).toBe(0);
  });

  it('ranks that make different calls fail at once instead of hanging', async () => {
    const g = await start({ size: 2 });
    const { error, ms } = await rejection(g.call('returnEarly', [null, null]));
    expect(error.rank).toBe(1);
    expect(error.message).toMatch(/rank 0 returned from its call after 0 collective calls, while rank 1 called barrier as #1/);
    expect(ms).toBeLessThan(5000);
  });

  it('a wait longer than timeoutMs throws a timeout error naming the option', async () => {
    const g = await start({ size: 2, timeoutMs: 300 });
    const arg = { rank: 1, message: 'late', delayMs: 3000 };
    const { error, ms } = await rejection(g.call('throwWhileOthersWait', [arg, arg]));
    expect(error.rank).toBe(0);
    expect(error.workerErrorName).toBe('CollectiveTimeoutError');
    expect(error.message).toMatch(/rank 0 waited 300 ms in barrier \(collective #1\) for rank 1 to enter the same call; raise the timeoutMs option/);
    expect(ms).toBeLessThan(2500);
  });

  it('the main thread can abort the ranks waiting in a collective', async () => {
    const g = await start({ size: 2 });
    const arg = { rank: 1, message: 'never thrown', delayMs: 30_000 };
    const call = g.call('throwWhileOthersWait', [arg, arg]);
    setTimeout(() => g.abort('stopped by the test'), 200);
    const { error, ms } = await rejection(call);
    expect(error.workerErrorName).toBe('CollectiveAbortedError');
    expect(error.message).toContain('stopped by the test');
    expect(ms).toBeLessThan(5000);
    expect(g.liveWorkers).toBe(0);
  });

  it('SharedMemoryCollective.abort keeps the first reason', () => {
    const init = SharedMemoryCollective.create({ size: 2, scratchBytes: 64 });
    expect(SharedMemoryCollective.abortReason(init)).toBeNull();
    SharedMemoryCollective.abort(init, 'first – ünïcode');
    SharedMemoryCollective.abort(init, 'second');
    expect(SharedMemoryCollective.abortReason(init)).toBe('first – ünïcode');
    expect(() => new SharedMemoryCollective(init, 0).barrier()).toThrow(/collective aborted \(seen by rank 0\): first – ünïcode/);
  });
});

describe('each rank has its own tfjs engine and meter', () => {
  it('rank r allocating (r + 1) MiB sees only its own buffer; native kernels run in every rank at once with the same bits', async () => {
    const P = 3;
    // nativeThreads 1: every rank runs its kernels on its own thread (the pool is one per process).
    const g = await start({ size: P, entry: TENSOR, workerData: { test: 'engines' }, nativeThreads: 1 });
    const who = await g.call<{ rank: number; threadId: number; workerData: unknown }>('whoAmI', [0, 0, 0]);
    expect(new Set(who.map((w) => w.threadId)).size).toBe(P);
    expect(who.map((w) => w.workerData)).toEqual([{ test: 'engines' }, { test: 'engines' }, { test: 'engines' }]);
    const info = await g.call<{ backendLabel: string; method: string; nativeThreads: number | null }>('init', [0, 0, 0]);
    for (const i of info) {
      expect(i.backendLabel).toMatch(/^cpu/);
      expect(i.method).toBe('cpu-data-storage');
      // null where the native addon is not built.
      if (i.nativeThreads !== null) expect(i.nativeThreads).toBe(1);
    }
    const got = await g.call<{ peak: number; before: number; live: number; numTensors: number; liveAfter: number }>(
      'allocate',
      Array.from({ length: P }, (_, r) => ({ mib: r + 1 })),
    );
    for (let r = 0; r < P; r++) {
      // Measured while every rank's tensor was alive (between two barriers).
      expect(got[r]!.live - got[r]!.before).toBe((r + 1) * MIB);
      expect(got[r]!.peak - got[r]!.before).toBe((r + 1) * MIB);
      expect(got[r]!.numTensors).toBe(1);
      expect(got[r]!.liveAfter).toBe(got[r]!.before);
    }
    const bits = await g.call<number[]>('conv', Array.from({ length: P }, () => ({ seed: 7, reps: 20 })));
    for (let r = 1; r < P; r++) expect(bits[r]).toEqual(bits[0]);
    // A rank expecting another pool size than the process's fails, saying why.
    if (info[0]!.nativeThreads !== null)
      await expect(g.call('init', [{ threads: 2 }, { threads: 2 }, { threads: 2 }])).rejects.toThrow(/thread pool has 1 threads, not the 2 asked for\. The pool is one per process/);
  });
});
