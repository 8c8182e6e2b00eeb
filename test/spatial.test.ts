/**
 * strategies/spatial: spatial partitioning's partitioned step (Hou et al. 2019) on P worker threads against
 * the single-process owned step: the halo convolution, the whole-volume instance norm, the loss and every
 * gradient of unet3d, and each rank's memory peak. The network is built here, serialised and sent to the
 * ranks (strategies/spatial imports no architecture). Inputs and targets come from host-side seeded
 * generators; parameters from initParams(net, seed) on every rank.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { WorkerGroup, type Collective } from '../core/parallel/index.js';
import { Conv3d, GraphBuilder, InstanceNormAct, MaxPool3d, NETWORK_INPUT, type Network } from '../core/engine/index.js';
import { deserializeNetwork, serializeNetwork } from '../core/engine/index.js';
import { SeededRng } from '../core/data/index.js';
import { buildUNet3d } from '../architectures/unet3d.js';
import { joinSlabs, networkGeometry, partitionDepth, sliceSlab } from '../strategies/spatial/partition.js';
import { SpatialStep } from '../strategies/spatial/step.js';
import type { StepReply } from '../strategies/spatial/worker.js';

const ENTRY = fileURLToPath(new URL('../strategies/spatial/worker.ts', import.meta.url));
type Grads = Record<string, Float32Array>;
type Shape3 = [number, number, number];

const groups = new Map<number, WorkerGroup>();
beforeAll(async () => {
  // nativeThreads 1: P equal ranks, each running its kernels on its own thread.
  const started = await Promise.all([1, 2, 4].map((size) => WorkerGroup.start({ size, entry: ENTRY, nativeThreads: 1 })));
  started.forEach((g) => groups.set(g.size, g));
});
afterAll(async () => {
  await Promise.all([...groups.values()].map((g) => g.close()));
});
const group = (P: number): WorkerGroup => groups.get(P)!;
const each = <T>(P: number, f: (r: number) => T): T[] => Array.from({ length: P }, (_, r) => f(r));

function normal(n: number, seed: number, mean = 0): Float32Array {
  const rng = new SeededRng(seed);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = mean + rng.normal();
  return v;
}

/** max |a − b| / max |b| over one tensor. */
function relative(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return m === 0 ? d : d / m;
}

function worst(a: Grads, b: Grads): { error: number; param: string } {
  expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
  let error = 0;
  let param = '';
  for (const k of Object.keys(b)) {
    expect(a[k]!.length, k).toBe(b[k]!.length);
    const e = relative(a[k]!, b[k]!);
    if (e > error) [error, param] = [e, k];
  }
  return { error, param };
}

async function init(P: number, net: Network, seed = 5, params?: Grads): Promise<void> {
  const network = serializeNetwork(net);
  await group(P).call('init', each(P, () => ({ network, seed, ...(params ? { params } : {}), adam: { learningRate: 1e-3 } })));
}

/** The partitioned step on P ranks: each gets its slabs of x and y. */
async function spatialStep(P: number, net: Network, x: Float32Array, y: Float32Array, volume: Shape3, extra: Record<string, unknown> = {}): Promise<StepReply[]> {
  const part = partitionDepth(volume[0], P, net.divisor);
  const xs: [number, number, number, number, number] = [1, ...volume, net.inChannels];
  const ys: [number, number, number, number, number] = [1, ...volume, net.outChannels];
  return group(P).call<StepReply>(
    'step',
    each(P, (r) => ({ x: sliceSlab(x, xs, part.bounds[r]!, part.bounds[r + 1]!), y: sliceSlab(y, ys, part.bounds[r]!, part.bounds[r + 1]!), volume, ...extra })),
  );
}

async function spatialForward(P: number, net: Network, x: Float32Array, volume: Shape3, logits = true): Promise<Float32Array> {
  const part = partitionDepth(volume[0], P, net.divisor);
  const xs: [number, number, number, number, number] = [1, ...volume, net.inChannels];
  const got = await group(P).call<{ probs: Float32Array; shape: number[] }>('forward', each(P, (r) => ({ x: sliceSlab(x, xs, part.bounds[r]!, part.bounds[r + 1]!), volume, logits })));
  // Output slabs: D factor of the output against the input.
  const outD = got.reduce((a, g) => a + g.shape[1]!, 0);
  const f = volume[0] / outD;
  const s = got[0]!.shape;
  return joinSlabs(
    got.map((g) => g.probs),
    [1, outD, s[2]!, s[3]!, s[4]!],
    part.bounds.map((b) => b / f),
  );
}

/** A network of one layer on the input. */
function oneLayer(layer: Conv3d | InstanceNormAct, inChannels: number, outChannels: number, divisor = 1): Network {
  const b = new GraphBuilder();
  const out = b.add('layer', layer, [NETWORK_INPUT]);
  return b.build({ name: 'one-layer', description: layer.type, inChannels, outChannels, activation: 'sigmoid', output: out, divisor });
}

const unet = (deepSupervision: boolean): Network =>
  buildUNet3d({ inChannels: 2, outChannels: 3, activation: 'sigmoid' }, { depth: 3, baseFilters: 4, residual: true, deepSupervision, negativeSlope: 0.01 });

describe('geometry, serialisation and validation (main thread)', () => {
  it('splits D evenly into multiples of the divisor and rejects other splits, naming the volume size, P and the divisor', () => {
    expect(partitionDepth(48, 4, 4).bounds).toEqual([0, 12, 24, 36, 48]);
    expect(partitionDepth(40, 3, 4).bounds).toEqual([0, 16, 28, 40]);
    expect(partitionDepth(16, 2, 4, [0, 4, 16]).bounds).toEqual([0, 4, 16]);
    expect(() => partitionDepth(30, 2, 4)).toThrow(/30 planes along D split into P = 2 slabs \(network divisor 4\): 30 is not a multiple of the divisor 4/);
    expect(() => partitionDepth(16, 2, 4, [0, 6, 16])).toThrow(/boundary 6 is not a multiple of the divisor 4/);
    expect(() => partitionDepth(8, 4, 4)).toThrow(/only 2 blocks of 4 planes, fewer than P/);
    // A network whose divisor the partition ignores: node planes off the slab boundaries.
    const net = unet(false);
    const part = partitionDepth(16, 2, 2);
    expect(() => networkGeometry(net, [1, 16, 16, 16, 2], { ...part, bounds: [0, 6, 16] })).toThrow(/node "enc2\.down\.conv" has 4 planes along D/);
  });

  it('serialises a network to plain JSON and back; other layers are errors naming them', () => {
    const net = unet(true);
    const s = serializeNetwork(net);
    const back = deserializeNetwork(JSON.parse(JSON.stringify(s)));
    expect(back.nodes.map((n) => [n.name, n.layer.type, n.inputs])).toEqual(net.nodes.map((n) => [n.name, n.layer.type, n.inputs]));
    expect(back.params).toEqual(net.params);
    expect(back.segments).toEqual(net.segments);
    expect([back.output, back.divisor, back.activation]).toEqual([net.output, net.divisor, net.activation]);
    const odd = { ...net, nodes: [{ name: 'custom', layer: { ...new Conv3d({ inChannels: 2, outChannels: 2, kernel: 3 }), type: 'my-layer' }, inputs: [NETWORK_INPUT] }] } as unknown as Network;
    expect(() => serializeNetwork(odd)).toThrow(/node "custom" is a "my-layer" layer .* not one of the core layers/);
    const bad = { ...s, nodes: [{ name: 'x', layer: { type: 'dropout', options: {} }, inputs: [NETWORK_INPUT] }] } as unknown as typeof s;
    expect(() => deserializeNetwork(bad)).toThrow(/node "x" has layer type "dropout", which is not a core layer/);
  });

  it('rejects layers it does not support and slabs thinner than a halo', () => {
    const fake = (size: number): Collective => ({ rank: 0, size, exchangeHalos: () => ({ fromBelow: null, fromAbove: null }), allReduceSum: () => {}, barrier: () => {}, bytesSent: 0 });
    const b = new GraphBuilder();
    b.add('pool', new MaxPool3d(2), [NETWORK_INPUT]);
    const pooled = b.build({ name: 'pooled', description: '', inChannels: 1, outChannels: 1, activation: 'sigmoid', output: 'pool', divisor: 2 });
    expect(() => new SpatialStep(pooled, partitionDepth(8, 2, 2), [1, 8, 4, 4, 1], fake(2))).toThrow(/node "pool" is a "maxpool3d" layer, which spatial partitioning does not support/);
    const wide = oneLayer(new Conv3d({ inChannels: 1, outChannels: 1, kernel: 5 }), 1, 1);
    expect(() => new SpatialStep(wide, partitionDepth(3, 3, 1), [1, 3, 4, 4, 1], fake(3))).toThrow(
      /node "layer" \(conv3d 5×5×5\) needs halos of 2 plane\(s\) before and 2 after each slab, but slab 0 has only 1 plane\(s\)/,
    );
  });
});

describe('partitioned layers against the single-process ones', () => {
  it('halo convolution: plane indices, an all-ones 3×3×3 filter, P = 2, exactly (stride 1 and 2)', async () => {
    const volume: Shape3 = [8, 4, 4];
    const x = new Float32Array(8 * 4 * 4).map((_, i) => Math.floor(i / 16) + 1); // plane d holds d + 1
    const ones = (k: number): Grads => ({ 'layer.filter': new Float32Array(k).fill(1) });
    // Stride 1, 'same': out[d, h, w] = (Σ of the in-volume planes d−1…d+1) · (in-volume neighbours along H) · (along W).
    const conv = oneLayer(new Conv3d({ inChannels: 1, outChannels: 1, kernel: 3 }), 1, 1);
    for (const P of [1, 2]) await init(P, conv, 0, ones(27));
    const single = await spatialForward(1, conv, x, volume);
    const split = await spatialForward(2, conv, x, volume);
    const reference = (await group(1).call<{ values: Float32Array } | null>('referenceForward', [{ x, volume, logits: true }]))[0]!.values;
    const n = (i: number, size: number): number => (i > 0 ? 1 : 0) + 1 + (i < size - 1 ? 1 : 0);
    const hand = new Float32Array(8 * 16);
    for (let d = 0; d < 8; d++)
      for (let h = 0; h < 4; h++)
        for (let w = 0; w < 4; w++) {
          let planes = 0;
          for (let e = d - 1; e <= d + 1; e++) if (e >= 0 && e < 8) planes += e + 1;
          hand[(d * 4 + h) * 4 + w] = planes * n(h, 4) * n(w, 4);
        }
    expect(Array.from(reference)).toEqual(Array.from(hand));
    expect(Array.from(single)).toEqual(Array.from(hand));
    expect(Array.from(split)).toEqual(Array.from(hand));
    // Stride 2 ('same' puts the one padding plane after): output plane o reads planes 2o…2o+2, the last one's
    // third a zero plane; rank 0's last output needs rank 1's first plane.
    const down = oneLayer(new Conv3d({ inChannels: 1, outChannels: 1, kernel: 3, stride: 2 }), 1, 1, 2);
    for (const P of [1, 2]) await init(P, down, 0, ones(27));
    const ref2 = (await group(1).call<{ values: Float32Array } | null>('referenceForward', [{ x, volume, logits: true }]))[0]!.values;
    const split2 = await spatialForward(2, down, x, volume);
    expect(ref2.length).toBe(4 * 2 * 2);
    for (let o = 0; o < 4; o++) {
      let planes = 0;
      for (let e = 2 * o; e <= 2 * o + 2; e++) if (e < 8) planes += e + 1;
      // H, W = 4 → 2 with stride 2: window 0 covers rows 0–2 (3), window 1 rows 2–3 (2).
      expect(Array.from(ref2.subarray(o * 4, o * 4 + 4))).toEqual([planes * 9, planes * 6, planes * 6, planes * 4]);
    }
    expect(Array.from(split2)).toEqual(Array.from(ref2));
  });

  it('whole-volume instance norm at P = 2 and 4 equals the unpartitioned layer (≤ 1e-6)', async () => {
    const volume: Shape3 = [16, 6, 5];
    const C = 3;
    const norm = oneLayer(new InstanceNormAct({ channels: C, alpha: 0.01 }), C, C);
    // Means far from 0 and unequal spreads along D, so that the parts' statistics differ from the whole's.
    const x = normal(16 * 30 * C, 3, 4).map((v, i) => v * (1 + Math.floor(i / (30 * C)) / 4));
    const params: Grads = { 'layer.gamma': Float32Array.from([1.5, -0.7, 0.3]), 'layer.beta': Float32Array.from([0.2, -0.1, 0.05]) };
    for (const P of [1, 2, 4]) await init(P, norm, 0, params);
    const reference = (await group(1).call<{ values: Float32Array } | null>('referenceForward', [{ x, volume, logits: true }]))[0]!.values;
    for (const P of [2, 4]) {
      const got = await spatialForward(P, norm, x, volume);
      expect(relative(got, reference), `P = ${P}`).toBeLessThanOrEqual(1e-6);
    }
  });
});

describe('the partitioned unet3d step gives the single-process step', () => {
  const cases: { volume: Shape3; deepSupervision: boolean; aux?: boolean }[] = [
    { volume: [16, 16, 16], deepSupervision: false },
    { volume: [32, 16, 16], deepSupervision: true },
    // Auxiliary outputs (the loss on a coarser output, the target average-pooled), as other networks have.
    { volume: [16, 16, 16], deepSupervision: true, aux: true },
  ];
  for (const c of cases) {
    it(`${c.volume.join('×')}, deep supervision ${c.deepSupervision}${c.aux ? ', an auxiliary output' : ''}: loss and every gradient ≤ 1e-5 at P = 2 and 4${c.aux ? '' : ', and the inference forward'}`, async () => {
      const net = unet(c.deepSupervision);
      if (c.aux) net.auxOutputs = [{ node: 'dec1.seg', weight: 0.5, scale: 2 }];
      const voxels = c.volume[0] * c.volume[1] * c.volume[2];
      const x = normal(voxels * net.inChannels, 7);
      const y = normal(voxels * net.outChannels, 8).map((v) => (v > 0.5 ? 1 : 0));
      for (const P of [1, 2, 4]) await init(P, net, 5);
      const ref = (await group(1).call<{ loss: number; grads: Grads; peak: number; seconds: number } | null>('referenceStep', [{ x, y, volume: c.volume }]))[0]!;
      const lines = [`${net.description} at ${c.volume.join('×')}${c.aux ? ' + aux' : ''}: single process loss ${ref.loss.toFixed(6)}, ${ref.seconds.toFixed(2)} s`];
      if (!c.aux) {
        // Partitioned inference: the probabilities of the whole volume, slab by slab, as Executor.forward's.
        const probs = (await group(1).call<{ values: Float32Array } | null>('referenceForward', [{ x, volume: c.volume }]))[0]!.values;
        for (const P of [2, 4]) expect(relative(await spatialForward(P, net, x, c.volume, false), probs), `forward at P = ${P}`).toBeLessThanOrEqual(1e-5);
      }
      for (const P of [2, 4]) {
        const got = await spatialStep(P, net, x, y, c.volume, { update: true });
        const { error, param } = worst(got[0]!.grads!, ref.grads);
        const lossError = Math.abs(got[0]!.loss - ref.loss) / Math.abs(ref.loss);
        lines.push(
          `  P = ${P}: loss error ${lossError.toExponential(1)}, worst gradient error ${error.toExponential(2)} (${param}), ` +
            `${got[0]!.stats.seconds.toFixed(2)} s, ${(got[1]!.stats.bytesSent / 1024).toFixed(0)} KiB sent by rank 1 ` +
            `(halos ${(got[1]!.stats.haloBytes / 1024).toFixed(0)}, sums ${(got[1]!.stats.statsBytes / 1024).toFixed(0)}, gradients ${(got[1]!.stats.gradientBytes / 1024).toFixed(0)})`,
        );
        expect(lossError).toBeLessThanOrEqual(1e-5);
        expect(error).toBeLessThanOrEqual(1e-5);
        // Every rank has the same loss, the same gradient bits, and after Adam the same parameters.
        expect(new Set(got.map((g) => g.loss)).size).toBe(1);
        expect(new Set(got.map((g) => g.gradsDigest)).size).toBe(1);
        expect(new Set(got.map((g) => g.paramsDigest)).size).toBe(1);
      }
      console.log(lines.join('\n'));
    });
  }
});

describe('memory', () => {
  it("each rank's peak falls as 1/P: at 32³, P = 2 ≤ 0.6× and P = 4 ≤ 0.35× the P = 1 peak", async () => {
    const volume: Shape3 = [32, 32, 32];
    const net = unet(false);
    const voxels = 32 ** 3;
    const x = normal(voxels * net.inChannels, 11);
    const y = normal(voxels * net.outChannels, 12).map((v) => (v > 0.5 ? 1 : 0));
    for (const P of [1, 2, 4]) await init(P, net, 5);
    const ref = (await group(1).call<{ peak: number } | null>('referenceStep', [{ x, y, volume }]))[0]!;
    const peaks: Record<number, number> = {};
    const lines = [`${net.description} at 32³, per-rank peak (meter, MiB): single-process Executor ${(ref.peak / 2 ** 20).toFixed(2)}`];
    for (const P of [1, 2, 4]) {
      const got = await spatialStep(P, net, x, y, volume, { returnGrads: 'none' });
      peaks[P] = Math.max(...got.map((g) => g.peak));
      // Nothing but the parameters is left on any rank (every activation, save, halo and gradient freed).
      expect(got.map((g) => g.numTensors)).toEqual(each(P, () => net.params.length));
      lines.push(
        `  P = ${P}: ${got.map((g) => (g.peak / 2 ** 20).toFixed(2)).join(' / ')} (max ${(peaks[P]! / peaks[1]!).toFixed(3)}× P = 1), ` +
          `${Math.max(...got.map((g) => g.stats.seconds)).toFixed(2)} s, rank 0 sent ${(got[0]!.stats.bytesSent / 1024).toFixed(0)} KiB`,
      );
    }
    console.log(lines.join('\n'));
    // P = 1 runs each layer as the single-process step does: the same peak.
    expect(peaks[1]).toBe(ref.peak);
    expect(peaks[2]! / peaks[1]!).toBeLessThanOrEqual(0.6);
    expect(peaks[4]! / peaks[1]!).toBeLessThanOrEqual(0.35);
  });
});
