import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import type { Tensor } from '@tensorflow/tfjs-core';
import { registerProjectKernels } from '../core/backend/kernels/index.js';
import { nativeStatus, registerNativeKernels } from '../core/backend/native-kernels.js';
import { buildUNet3d, convNormAct } from '../architectures/unet3d.js';
import { initParams, type Params } from '../core/training/optimizer.js';
import { Executor } from '../core/engine/executor.js';
import type { SaveSite, StepPlan } from '../core/engine/plan.js';
import { stepLoss } from '../core/training/loss.js';
import { DeviceMemoryMeter } from '../core/memory/meter.js';
import { GraphBuilder, NETWORK_INPUT, type Network } from '../core/engine/graph.js';
import { Conv3d } from '../core/engine/layers.js';
import { HostLink } from '../strategies/swap/host-link.js';
import { createSwapStrategy, saveSiteTable, type SwapSettings } from '../strategies/swap/index.js';
import swapPlugin from '../strategies/swap/index.js';
import { resolveSettings } from '../core/config/settings.js';
import type { MemoryStrategy } from '../core/plugins/contracts.js';

const unet = (baseFilters: number, depth = 3): Network =>
  buildUNet3d(
    { inChannels: 2, outChannels: 3, activation: 'sigmoid' },
    { depth, baseFilters, residual: true, deepSupervision: false, negativeSlope: 0.01 },
  );

function inputs(shape: number[], seed: number): { x: Tensor; y: Tensor } {
  const [n, d, h, w] = shape as [number, number, number, number];
  const x = tf.randomNormal(shape, 0, 1, 'float32', seed);
  const y = tf.tidy(() => tf.cast(tf.greater(tf.randomUniform([n, d, h, w, 3], 0, 1, 'float32', seed + 1), 0.7), 'float32'));
  return { x, y };
}

async function step(net: Network, params: Params, x: Tensor, y: Tensor, plan: StepPlan = {}) {
  return new Executor(net).trainStep(x, params, stepLoss(y, 'dice+ce', 'sigmoid', net), plan);
}

function maxRelDiff(a: Map<string, Tensor>, b: Map<string, Tensor>): number {
  let worst = 0;
  for (const [k, ga] of a) {
    const gb = b.get(k);
    if (!gb) throw new Error(`gradient ${k} missing`);
    const va = ga.dataSync();
    const vb = gb.dataSync();
    let scale = 0;
    for (let i = 0; i < va.length; i++) scale = Math.max(scale, Math.abs(va[i]!));
    for (let i = 0; i < va.length; i++) worst = Math.max(worst, Math.abs(va[i]! - vb[i]!) / (scale || 1));
  }
  return worst;
}

const disposeGrads = (g: Map<string, Tensor>): void => g.forEach((t) => t.dispose());

/** A strategy's report as column name → value. */
const reportOf = (s: MemoryStrategy): Record<string, number | null> =>
  Object.fromEntries((s.report?.() ?? []).map((c) => [c.name, typeof c.value === 'number' ? c.value : null]));

beforeAll(async () => {
  await tf.setBackend('cpu');
  registerProjectKernels();
  // As a trial runs: the native kernels on top where the addon is built.
  registerNativeKernels();
});

describe('swap strategy: gradients', () => {
  const net = unet(4);
  const params = initParams(net, 7);
  // Small tensors here, so a low minBytes makes swapping reach every level.
  const configs: Partial<SwapSettings>[] = [
    { nTensors: -1, lb: 0 },
    { nTensors: -1, lb: 2 },
    { nTensors: 6, lb: 0 },
    { nTensors: 6, lb: 2, swapBranches: true, branchDistance: 2 },
    { nTensors: -1, lb: 0, swapBranches: true, branchDistance: 2 },
    { nTensors: -1, lb: 2, swapBranches: true, branchDistance: 3, minBytes: 0 },
    { nTensors: -1, lb: 1, swapBranches: true, branchDistance: 2, linkCopies: false },
  ];
  for (const shape of [
    [1, 16, 16, 16, 2],
    [1, 24, 16, 8, 2],
  ]) {
    it(`equals the plain owned step at ${shape.slice(1, 4).join('x')} (nTensors, lb, swapBranches)`, async () => {
      const { x, y } = inputs(shape, 3);
      const ref = await step(net, params, x, y);
      for (const cfg of configs) {
        const s = createSwapStrategy({ minBytes: 2048, ...cfg });
        const r = await step(net, params, x, y, s.plan(net, shape));
        expect(r.loss, JSON.stringify(cfg)).toBe(ref.loss);
        expect(maxRelDiff(ref.grads, r.grads), JSON.stringify(cfg)).toBeLessThanOrEqual(1e-5);
        expect(maxRelDiff(ref.grads, r.grads), JSON.stringify(cfg)).toBe(0);
        expect(r.stats.packed, JSON.stringify(cfg)).toBeGreaterThan(0);
        const rep = reportOf(s);
        expect(rep.swapped_tensors).toBeGreaterThan(0);
        // Each tensor comes back once (parked skips twice): moved, or served by its device copy while its
        // swap-out was still on the link.
        const back = rep.swap_in_bytes! + s.store.counters.reusedBytes;
        if (!cfg.swapBranches) expect(back).toBe(rep.swap_out_bytes);
        else expect(back).toBeGreaterThan(rep.swap_out_bytes!);
        disposeGrads(r.grads);
        await s.dispose!();
      }
      disposeGrads(ref.grads);
      x.dispose();
      y.dispose();
    });
  }

  it('the real-transfer path (t.data() / tf.tensor, used on GPU backends) gives the same gradients', async () => {
    const shape = [1, 16, 16, 16, 2];
    const { x, y } = inputs(shape, 5);
    const ref = await step(net, params, x, y);
    const s = createSwapStrategy({ minBytes: 2048, lb: 1, swapBranches: true, branchDistance: 2 }, { transport: 'direct' });
    const r = await step(net, params, x, y, s.plan(net, shape));
    expect(maxRelDiff(ref.grads, r.grads)).toBe(0);
    expect(s.store.hostLink).toBeNull();
    disposeGrads(ref.grads);
    disposeGrads(r.grads);
    await s.dispose!();
    x.dispose();
    y.dispose();
  });

  it('a tensor saved by two layers is swapped once (in-place normalisation output, also the next conv input)', async () => {
    const b = new GraphBuilder();
    let h = convNormAct(b, 'a', NETWORK_INPUT, 2, 4, { alpha: 0.01, inPlace: true });
    h = convNormAct(b, 'b', h, 4, 4, { alpha: 0.01, inPlace: true });
    const out = b.add('head', new Conv3d({ inChannels: 4, outChannels: 3, kernel: 1, bias: true }), [h]);
    const small = b.build({ name: 'inplace', description: 'in-place norms', inChannels: 2, outChannels: 3, activation: 'sigmoid', output: out, divisor: 1 });
    const p = initParams(small, 3);
    const shape = [1, 16, 16, 16, 2];
    const { x, y } = inputs(shape, 9);
    const ref = await step(small, p, x, y);
    const s = createSwapStrategy({ minBytes: 4096, lb: 1 });
    const r = await step(small, p, x, y, s.plan(small, shape));
    expect(maxRelDiff(ref.grads, r.grads)).toBe(0);
    // Saves ≥ 4 KiB: a.norm's y and b.conv's input (one tensor), b.norm's y and head's input (one tensor);
    // a.conv's input is the network input, which stays.
    expect(r.stats.packed).toBe(4);
    const rep = reportOf(s);
    expect(rep.swapped_tensors).toBe(2);
    const bytes = 16 * 16 * 16 * 4 * 4;
    expect(rep.swap_out_bytes).toBe(2 * bytes);
    expect(rep.swap_in_bytes! + s.store.counters.reusedBytes).toBe(2 * bytes);
    disposeGrads(ref.grads);
    disposeGrads(r.grads);
    await s.dispose!();
    x.dispose();
    y.dispose();
  });
});

describe('swap strategy: willPack agrees with pack', () => {
  it('for every save site of a step, with nTensors -1 and a partial nTensors', async () => {
    const net = unet(4);
    const params = initParams(net, 2);
    const shape = [1, 16, 16, 16, 2];
    const { x, y } = inputs(shape, 11);
    for (const nTensors of [-1, 5]) {
      const s = createSwapStrategy({ nTensors, minBytes: 16 * 1024 });
      const plan = s.plan(net, shape);
      const hooks = plan.hooks!;
      const seen: { site: SaveSite; bytes: number; packed: boolean }[] = [];
      const pack = hooks.pack.bind(hooks);
      hooks.pack = (t, site) => {
        const where = pack(t, site);
        seen.push({ site, bytes: t.size * 4, packed: where !== 'device' });
        return where;
      };
      const r = await step(net, params, x, y, plan);
      expect(seen.length).toBe(r.stats.packed + r.stats.savedOnDevice);
      for (const v of seen) expect(hooks.willPack!(v.site, v.bytes), `${v.site.node}#${v.site.saveIndex}`).toBe(v.packed);
      // The decisions the estimator would see, from the layers' save specs alone.
      const table = saveSiteTable(net, shape, 16 * 1024);
      const predicted = [...table.values()].filter((i) =>
        hooks.willPack!({ node: i.node, layerType: '', nodeIndex: i.nodeIndex, saveIndex: i.saveIndex, backwardPosition: 0 }, i.bytes),
      ).length;
      expect(predicted).toBe(r.stats.packed);
      if (nTensors > 0) expect(reportOf(s).swapped_tensors).toBe(nTensors);
      disposeGrads(r.grads);
      await s.dispose!();
    }
    x.dispose();
    y.dispose();
  });

  it('the plugin resolves its settings (bytes fields, defaults)', () => {
    const s = resolveSettings(swapPlugin.settings, { bandwidth: '75GB', minBytes: '64KiB' }, 'strategy.settings');
    expect(s).toMatchObject({ nTensors: -1, lb: 1, swapBranches: false, branchDistance: 4, bandwidth: 75e9, latency: 10e-6, minBytes: 65536 });
  });
});

describe('swap strategy: device memory', () => {
  let meter: DeviceMemoryMeter;
  beforeAll(() => {
    meter = new DeviceMemoryMeter().attach();
  });
  afterAll(() => meter.detach());

  it('lowers the measured training-step peak, moves as many bytes back as out, and leaks nothing', async () => {
    const net = unet(8);
    const shape = [1, 24, 24, 24, 2];
    const params = initParams(net, 1);
    const { x, y } = inputs(shape, 1);
    const peakOf = async (plan: StepPlan): Promise<{ peak: number; grads: Map<string, Tensor> }> => {
      meter.ledger.resetPeak();
      const base = meter.ledger.live;
      const r = await step(net, params, x, y, plan);
      return { peak: meter.ledger.peak - base, grads: r.grads };
    };
    const owned = await peakOf({});
    const before = tf.memory().numTensors;
    const s = createSwapStrategy({ lb: 1, bandwidth: 16e9, outCopy: 'worker' });
    const swapped = await peakOf(s.plan(net, shape));
    expect(maxRelDiff(owned.grads, swapped.grads)).toBe(0);
    disposeGrads(swapped.grads);
    expect(tf.memory().numTensors).toBe(before);
    expect(swapped.peak).toBeLessThan(0.6 * owned.peak);
    const rep = reportOf(s);
    expect(rep.swap_out_bytes).toBeGreaterThan(0);
    expect(rep.swap_in_bytes! + s.store.counters.reusedBytes).toBe(rep.swap_out_bytes);
    expect(rep.host_peak_bytes).toBeGreaterThan(0);
    expect(s.store.counters.hostLiveBytes).toBe(0);
    // outCopy 'worker': copies off the main thread in both directions: the native kernels' outputs are
    // shareable while the link is open, so the lane workers copy them (with the native kernels, nearly every save).
    const link = s.store.hostLink!.stats;
    if (nativeStatus().loaded) expect(link.stagedBytes, `staged ${link.stagedBytes} of ${link.deviceToHostBytes} bytes swapped out`).toBeLessThan(0.1 * link.deviceToHostBytes);
    expect(rep.swap_overlap).toBeGreaterThanOrEqual(0);
    // ...only during the swap's own steps: with the link still open, other work in the process (here a
    // native Add of 110 KiB) writes plain arrays, which the backend recycles at dispose.
    if (nativeStatus().loaded) {
      const probe = tf.add(x, x);
      const values = (tf.backend() as unknown as { data: { get(id: object): { values: Float32Array } } }).data.get(probe.dataId).values;
      expect(values.byteLength).toBeGreaterThanOrEqual(64 * 1024);
      expect(values.buffer instanceof SharedArrayBuffer).toBe(false);
      probe.dispose();
    }
    await s.dispose!();
    expect(tf.memory().numTensors).toBe(before);
    disposeGrads(owned.grads);
    x.dispose();
    y.dispose();
  });
});

describe('emulated host link', () => {
  const MiB64 = 64 * 2 ** 20;
  let link: HostLink;
  beforeAll(() => {
    link = new HostLink({ bandwidth: 1e9, latency: 10e-6 });
  });
  afterAll(async () => link.close());

  it('takes latency + bytes / bandwidth of wall-clock time, copies the bytes, and lanes run full duplex', async () => {
    const src = new Float32Array(new SharedArrayBuffer(MiB64));
    for (let i = 0; i < src.length; i += 4099) src[i] = i;
    // Warm the pools (first-touch page faults are not the link's time).
    const warm = await link.swapOut(src);
    link.recycle(await link.swapIn(warm));

    let t0 = performance.now();
    const host = await link.swapOut(src);
    const outMs = performance.now() - t0;
    expect(outMs).toBeGreaterThanOrEqual(60);
    expect(host.data[4099 * 7]).toBe(4099 * 7);

    t0 = performance.now();
    const back = await link.swapIn(host);
    const inMs = performance.now() - t0;
    expect(inMs).toBeGreaterThanOrEqual(60);
    expect(back[4099 * 11]).toBe(4099 * 11);
    link.recycle(back);

    // One transfer each way at once: about as long as one (independent lanes).
    t0 = performance.now();
    const [, d] = await Promise.all([link.swapOut(src), link.swapIn(warm)]);
    const bothMs = performance.now() - t0;
    link.recycle(d);
    expect(bothMs).toBeGreaterThanOrEqual(60);
    expect(bothMs).toBeLessThan(1.5 * Math.max(outMs, inMs));

    // Two the same way: one after the other (a FIFO lane).
    t0 = performance.now();
    await Promise.all([link.swapOut(src), link.swapOut(src)]);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(2 * 60);

    // A link that emulates only the time takes the same time, and hands the same bytes back.
    const timing = new HostLink({ bandwidth: 1e9, latency: 10e-6, copy: false });
    try {
      t0 = performance.now();
      const h = await timing.swapOut(src);
      const [, d2] = await Promise.all([timing.swapOut(src), timing.swapIn(h)]);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(2 * 60);
      expect(performance.now() - t0).toBeLessThan(3 * Math.max(outMs, inMs));
      // Nothing is copied: the host copy is the source array itself, and the swap-in hands it back.
      expect(h.data).toBe(src);
      expect(d2).toBe(src);
    } finally {
      await timing.close();
    }

    // A swap-in queued behind the swap-out it reads starts when that one ended.
    t0 = performance.now();
    const out = link.startOut(src);
    const inn = link.startIn(out.host, out.transfer);
    expect(inn.transfer.done).toBe(false);
    inn.transfer.wait();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(2 * 60);
    expect(inn.data[4099 * 3]).toBe(4099 * 3);
  });
});
