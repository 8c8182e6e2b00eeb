import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { registerProjectKernels } from '../core/backend/kernels/index.js';
import { inferShapes, parameterCount, type Network, type Shape } from '../core/engine/graph.js';
import { padShapeTo } from '../core/data/volume.js';
import { Executor } from '../core/engine/executor.js';
import type { StepPlan } from '../core/engine/plan.js';
import { initParams } from '../core/training/optimizer.js';
import { stepLoss } from '../core/training/loss.js';
import { resolveSettings } from '../core/config/settings.js';
import { DeviceMemoryMeter } from '../core/memory/meter.js';
import { estimatePeak } from '../core/memory/estimator.js';
import { Conv3d } from '../core/engine/layers.js';
import { SeededRng } from '../core/data/rng.js';
import { buildUNet3d } from '../architectures/unet3d.js';
import {
  buildMeFcn,
  meFcnWidths,
  floatToHalfBits,
  halfBitsToFloat,
  HalfSaved,
  packHalf,
  roundToHalf,
  unpackHalf,
  type MeFcnSettings,
} from '../architectures/me-fcn.js';
import { buildMeUNetCascade, cascadeGeometry, cascadeWeightMap, centralHalf, type MeUNetCascadeSettings } from '../architectures/meunet-cascade.js';
import { architectures } from '../architectures/index.js';
import type { Shape3 } from '../core/types.js';

const BRATS: Shape3 = [155, 240, 240];
const spec = (inChannels: number, outChannels: number) => ({ inChannels, outChannels, activation: 'sigmoid' as const });

const meFcn = (over: Partial<MeFcnSettings> = {}): MeFcnSettings => ({
  depth: 3,
  baseFilters: 8,
  negativeSlope: 0.01,
  narrow: false,
  widthGrowth: 1.5,
  bottleneck: 0.5,
  widthMultiplier: 1,
  separable: false,
  inPlaceNorm: false,
  halfPrecisionSaves: false,
  checkpointWidest: false,
  all: false,
  ...over,
});

const cascade = (over: Partial<MeUNetCascadeSettings> = {}): MeUNetCascadeSettings => ({
  patch: [64, 64, 64],
  stage1Filters: [16, 32, 64, 128, 128],
  stage2Filters: [16, 32, 64, 128],
  join: 'post-concat',
  auxWeight: 0.5,
  checkpointStage1: true,
  negativeSlope: 0,
  contextRatio: 1.5,
  ...over,
});

const unet3d = (depth: number, baseFilters: number, inC = 4, outC = 3): Network =>
  buildUNet3d(spec(inC, outC), { depth, baseFilters, residual: true, deepSupervision: false, negativeSlope: 0.01 });

beforeAll(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
  registerProjectKernels();
});

/** A random input and a binary target over the whole input extent (the loss crops and pools it). */
function batch(net: Network, input: Shape3, seed: number): { x: tf.Tensor; y: tf.Tensor } {
  return tf.tidy(() => ({
    x: tf.randomNormal([1, ...input, net.inChannels], 0, 1, 'float32', seed),
    y: tf.cast(tf.greater(tf.randomUniform([1, ...input, net.outChannels], 0, 1, 'float32', seed + 1), 0.6), 'float32'),
  }));
}

async function gradients(net: Network, input: Shape3, plan: StepPlan, seed = 7): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  const params = initParams(net, 3);
  const { x, y } = batch(net, input, seed);
  const r = await new Executor(net).trainStep(x, params, stepLoss(y, 'dice+ce', 'sigmoid', net), plan);
  const grads = new Map<string, Float32Array>();
  for (const [k, g] of r.grads) {
    grads.set(k, g.dataSync() as Float32Array);
    g.dispose();
  }
  for (const t of [x, y, ...params.values()]) t.dispose();
  return { loss: r.loss, grads };
}

/**
 * Relative gradient errors: `global` = ‖a − b‖ / ‖b‖ over all parameters together; `worst` = the largest
 * per-tensor ‖a − b‖ / ‖b‖, each tensor's norm floored at 1e-3 of the largest tensor's.
 */
function relativeErrors(a: Map<string, Float32Array>, b: Map<string, Float32Array>): { global: number; worst: number } {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  const norm = (v: Float32Array): number => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  const largest = Math.max(...[...b.values()].map(norm));
  expect(largest).toBeGreaterThan(0);
  let worst = 0;
  let num = 0;
  let den = 0;
  for (const [k, gb] of b) {
    const ga = a.get(k)!;
    let d = 0;
    for (let i = 0; i < gb.length; i++) d += (ga[i]! - gb[i]!) ** 2;
    const n = norm(gb);
    num += d;
    den += n * n;
    worst = Math.max(worst, Math.sqrt(d) / Math.max(n, 1e-3 * largest));
  }
  return { global: Math.sqrt(num / den), worst };
}

describe('registration', () => {
  it('registers me-fcn and meunet-cascade next to unet3d', () => {
    const names = architectures.map((a) => a.name);
    expect(names).toEqual(expect.arrayContaining(['unet3d', 'me-fcn', 'meunet-cascade']));
  });
});

describe('shapes at odd sizes', () => {
  /** The runner's rule: the output extent padded to the divisor, the input adds the margin; crop back after. */
  function check(net: Network, volume: Shape3): { padded: Shape3; input: Shape3; shapes: Map<string, Shape> } {
    const m = net.outputMargin ?? [0, 0, 0];
    const padded = padShapeTo(volume, net.divisor);
    padded.forEach((p, i) => {
      expect(p % net.divisor).toBe(0);
      expect(p - volume[i]!).toBeGreaterThanOrEqual(0);
      expect(p - volume[i]!).toBeLessThan(net.divisor); // cropping the output [0, volume) undoes the padding
    });
    const input = padded.map((p, i) => p + 2 * m[i]!) as Shape3;
    const shapes = inferShapes(net, [1, ...input, net.inChannels]); // throws on any impossible layer shape
    expect(shapes.get(net.output)).toEqual([1, ...padded, net.outChannels]);
    for (const a of net.auxOutputs ?? [])
      expect(shapes.get(a.node)).toEqual([1, ...input.map((n) => n / a.scale), net.outChannels]);
    return { padded, input, shapes };
  }

  it('unet3d and me-fcn (each technique, all) pad 240×240×155 to their divisor', () => {
    const nets = [
      unet3d(5, 16),
      buildMeFcn(spec(4, 3), meFcn({ depth: 5, baseFilters: 16 })),
      buildMeFcn(spec(4, 3), meFcn({ depth: 5, baseFilters: 16, narrow: true })),
      buildMeFcn(spec(4, 3), meFcn({ depth: 5, baseFilters: 16, separable: true })),
      buildMeFcn(spec(4, 3), meFcn({ depth: 5, baseFilters: 16, all: true })),
      buildMeFcn(spec(4, 3), meFcn({ depth: 4, baseFilters: 16, narrow: true, widthGrowth: 1.25 })),
    ];
    for (const net of nets) {
      const { padded } = check(net, BRATS);
      expect(padded).toEqual(net.divisor === 16 ? [160, 240, 240] : [160, 240, 240]);
      check(net, [23, 37, 41]);
    }
    expect(nets[1]!.divisor).toBe(16);
    expect(nets[5]!.divisor).toBe(8);
  });

  it('meunet-cascade: context 1.5× the patch, divisor from both stages, margins and aux at half resolution', () => {
    const g = cascadeGeometry(cascade());
    expect(g).toEqual({ patch: [64, 64, 64], context: [96, 96, 96], margin: [16, 16, 16], stage1Divisor: 32, stage2Divisor: 8, divisor: 32 });
    for (const join of ['post-concat', 'input-channel'] as const) {
      const net = buildMeUNetCascade(spec(4, 3), cascade({ join }));
      expect(net.divisor).toBe(32);
      expect(net.outputMargin).toEqual([16, 16, 16]);
      expect(net.auxOutputs).toEqual([{ node: 's1.head', weight: 0.5, scale: 2 }]);
      // The patch itself: 96³ in, 64³ out, stage-1 logits 48³.
      const patch = inferShapes(net, [1, 96, 96, 96, 4]);
      expect(patch.get(net.output)).toEqual([1, 64, 64, 64, 3]);
      expect(patch.get('s1.head')).toEqual([1, 48, 48, 48, 3]);
      expect(patch.get('s1.enc4.conv2.norm')).toEqual([1, 3, 3, 3, 128]); // 96/2/2^4
      // A whole BraTS volume: 155×240×240 → output 160×256×256, input 192×288×288, aux 96×144×144.
      const { padded, input, shapes } = check(net, BRATS);
      expect(padded).toEqual([160, 256, 256]);
      expect(input).toEqual([192, 288, 288]);
      expect(shapes.get('s1.head')).toEqual([1, 96, 144, 144, 3]);
      check(net, [23, 37, 41]);
    }
    // Stage 1's levels are the network's recompute segments; stage 2's are not.
    const net = buildMeUNetCascade(spec(4, 3), cascade());
    expect(net.recompute!.length).toBe(9); // 5 encoder + 4 decoder levels
    expect(net.recompute!.flat().every((n) => n.startsWith('s1.'))).toBe(true);
    expect(net.recompute!.flat()).toContain('s1.head');
    expect(buildMeUNetCascade(spec(4, 3), cascade({ checkpointStage1: false })).recompute).toBeUndefined();
  });

  it('meunet-cascade context ratio: the margin is patch·(ratio − 1)/2, checked against stage 1', () => {
    const small = { patch: [16, 16, 16] as Shape3, stage1Filters: [8, 16, 32], stage2Filters: [8, 16, 32] };
    expect(cascadeGeometry(cascade({ ...small, contextRatio: 2 }))).toMatchObject({ context: [32, 32, 32], margin: [8, 8, 8] });
    expect(cascadeGeometry(cascade({ ...small, contextRatio: 1 }))).toMatchObject({ context: [16, 16, 16], margin: [0, 0, 0] });
    // 16·0.25 = 4 voxels is not a multiple of stage 1's divisor 8: refused, with the ratios that work.
    expect(() => cascadeGeometry(cascade({ ...small, contextRatio: 1.25 }))).toThrow(/contextRatio 1.25 .*whole multiple of 8.*use contextRatio 1 or 1.5/);
    for (const contextRatio of [1, 2]) {
      const net = buildMeUNetCascade(spec(2, 2), cascade({ ...small, contextRatio }));
      const c = 16 * contextRatio;
      expect(inferShapes(net, [1, c, c, c, 2]).get(net.output)).toEqual([1, 16, 16, 16, 2]);
      expect(inferShapes(net, [1, c, c, c, 2]).get('s1.head')).toEqual([1, c / 2, c / 2, c / 2, 2]);
      check(net, [32, 32, 32]);
    }
  });

  it('meunet-cascade small: patch 16 / context 24 needs at most 3 stage-1 levels', () => {
    const small = cascade({ patch: [16, 16, 16], stage1Filters: [8, 16, 32], stage2Filters: [8, 16, 32] });
    expect(cascadeGeometry(small)).toMatchObject({ context: [24, 24, 24], margin: [4, 4, 4], stage1Divisor: 8, stage2Divisor: 4, divisor: 8 });
    const net = buildMeUNetCascade(spec(4, 3), small);
    expect(inferShapes(net, [1, 24, 24, 24, 4]).get(net.output)).toEqual([1, 16, 16, 16, 3]);
    check(net, [32, 32, 32]);
    check(net, BRATS);
    // 5 stage-1 levels need the 8-voxel context margin to be a multiple of 32: refused with the fix.
    expect(() => cascadeGeometry(cascade({ patch: [16, 16, 16] }))).toThrow(/whole multiple of 32.*use contextRatio 1 or 3/);
    expect(() => cascadeGeometry(cascade({ patch: [48, 64, 64] }))).toThrow(/axis D/);
    // Anisotropic patches work per axis.
    const aniso = buildMeUNetCascade(spec(1, 2), cascade({ patch: [64, 128, 128] }));
    expect(inferShapes(aniso, [1, 96, 192, 192, 1]).get(aniso.output)).toEqual([1, 64, 128, 128, 2]);
  });
});

describe('parameter counts by hand', () => {
  it('unet3d and me-fcn without techniques: depth 2, base 4, 1 → 2 channels', () => {
    // widths [4, 8]; conv k³·in·out (no bias), norm 2·C, head 1·in·out + out.
    // enc0: in 27·1·4 + 8, ctx1 27·4·4 + 8, ctx2 27·4·4 + 8                 = 108+8+432+8+432+8 = 996
    // enc1: down 27·4·8 + 16, ctx1 27·8·8 + 16, ctx2 27·8·8 + 16           = 864+16+1728+16+1728+16 = 4368
    // dec0: upconv 27·8·4 + 8, loc1 27·8·8 + 16 (level 0 has no loc2)      = 864+8+1728+16 = 2616
    // head: 8·2 + 2                                                          = 18
    const expected = 996 + 4368 + 2616 + 18;
    expect(expected).toBe(7998);
    expect(parameterCount(unet3d(2, 4, 1, 2))).toBe(expected);
    const plain = buildMeFcn(spec(1, 2), meFcn({ depth: 2, baseFilters: 4 }));
    expect(parameterCount(plain)).toBe(expected);
    expect(plain.params.map((p) => p.qualifiedName)).toEqual(unet3d(2, 4, 1, 2).params.map((p) => p.qualifiedName));
  });

  it('me-fcn narrow, then narrow + separable', () => {
    // narrow widths: 4, 2·round(4·1.5/2) = 6.
    // enc0: in 27·1·4 + 8; ctx1 1·4·2 + 4; ctx2 27·2·4 + 8                 = 108+8+8+4+216+8 = 352
    // enc1: down 27·4·6 + 12; ctx1 1·6·3 + 6; ctx2 27·3·6 + 12             = 648+12+18+6+486+12 = 1182
    // dec0: upconv 1·6·4 + 8; loc1.skip 1·4·4; loc1.up 1·4·4; loc1.norm 8; loc2 27·4·4 + 8
    //                                                                        = 24+8+16+16+8+432+8 = 512
    // head: 4·2 + 2                                                          = 10
    const narrow = 352 + 1182 + 512 + 10;
    expect(narrow).toBe(2056);
    expect(parameterCount(buildMeFcn(spec(1, 2), meFcn({ depth: 2, baseFilters: 4, narrow: true })))).toBe(narrow);
    // separable: each 27·in·out becomes 9·in·out + 3·out·out:
    // enc0.in 108 → 36+48 = 84; enc0.ctx2 216 → 72+48 = 120; enc1.down 648 → 216+108 = 324;
    // enc1.ctx2 486 → 162+108 = 270; dec0.loc2 432 → 144+48 = 192.
    const both = narrow - (108 - 84) - (216 - 120) - (648 - 324) - (486 - 270) - (432 - 192);
    expect(both).toBe(1156);
    expect(parameterCount(buildMeFcn(spec(1, 2), meFcn({ depth: 2, baseFilters: 4, narrow: true, separable: true })))).toBe(both);
    // Techniques that do not change the function's parameters.
    for (const flag of ['inPlaceNorm', 'halfPrecisionSaves', 'checkpointWidest'] as const)
      expect(parameterCount(buildMeFcn(spec(1, 2), meFcn({ depth: 2, baseFilters: 4, [flag]: true })))).toBe(7998);
  });

  it('me-fcn bottleneck ratio and width multiplier', () => {
    // narrow, bottleneck 0.25: widths 4, 6; the context modules reduce to round(4/4) = 1 and round(6/4) = 2.
    // enc0: in 108 + 8; ctx1 1·4·1 + 2; ctx2 27·1·4 + 8                     = 116+6+116 = 238
    // enc1: down 648 + 12; ctx1 1·6·2 + 4; ctx2 27·2·6 + 12                 = 660+16+336 = 1012
    // dec0 and head as narrow: 512 + 10.
    expect(parameterCount(buildMeFcn(spec(1, 2), meFcn({ depth: 2, baseFilters: 4, narrow: true, bottleneck: 0.25 })))).toBe(238 + 1012 + 512 + 10);
    // bottleneck 1: ctx1 1·4·4 + 8 and 27·4·4 + 8 at level 0; 1·6·6 + 12 and 27·6·6 + 12 at level 1.
    const full = 116 + (16 + 8) + (432 + 8) + (660 + (36 + 12) + (972 + 12)) + 512 + 10;
    expect(parameterCount(buildMeFcn(spec(1, 2), meFcn({ depth: 2, baseFilters: 4, narrow: true, bottleneck: 1 })))).toBe(full);
    // Width ×1.5 without narrow: widths 6, 12 (2·round(4·1.5/2), 2·round(4·1.5·2/2)): unet3d with base 6.
    expect(meFcnWidths({ depth: 3, baseFilters: 4, widthGrowth: 1.5, widthMultiplier: 1.5 }, false)).toEqual([6, 12, 24]);
    expect(parameterCount(buildMeFcn(spec(1, 2), meFcn({ depth: 2, baseFilters: 4, widthMultiplier: 1.5 })))).toBe(parameterCount(unet3d(2, 6, 1, 2)));
    // Width ×0.5 with narrow: base·0.5·1.5^l rounded to even, at least 2.
    expect(meFcnWidths({ depth: 4, baseFilters: 8, widthGrowth: 1.5, widthMultiplier: 0.5 }, true)).toEqual([4, 6, 10, 14]);
    expect(meFcnWidths({ depth: 2, baseFilters: 2, widthGrowth: 1.5, widthMultiplier: 0.25 }, true)).toEqual([2, 2]);
  });

  it('meunet-cascade: stages [2, 4] and [2, 4], 1 → 2 channels, both joins', () => {
    // A stage's U-Net: enc0 conv1 27·in·2 + 4, conv2 27·2·2 + 4; enc1 conv1 27·2·4 + 8, conv2 27·4·4 + 8;
    // dec0 conv1 27·(2+4)·2 + 4, conv2 27·2·2 + 4.
    const uNet = (inC: number): number => 27 * inC * 2 + 4 + (108 + 4) + (216 + 8) + (432 + 8) + (324 + 4) + (108 + 4);
    expect(uNet(1)).toBe(1274);
    const stage1 = uNet(1) + (2 * 2 + 2); // + s1.head 1×1×1 2→2 with bias
    // post-concat: head reads [stage-2 features 2, stage-1 features 2] → 2, with bias.
    const post = stage1 + uNet(1) + (4 * 2 + 2);
    expect(post).toBe(2564);
    // input-channel: stage 2 reads 1 + 2 channels; head 2 → 2 with bias.
    const inputChannel = stage1 + uNet(3) + (2 * 2 + 2);
    expect(inputChannel).toBe(2668);
    const tiny = cascade({ patch: [8, 8, 8], stage1Filters: [2, 4], stage2Filters: [2, 4] });
    expect(parameterCount(buildMeUNetCascade(spec(1, 2), tiny))).toBe(post);
    expect(parameterCount(buildMeUNetCascade(spec(1, 2), { ...tiny, join: 'input-channel' }))).toBe(inputChannel);
  });
});

describe('cascade stitching weights', () => {
  it('2 in the central half-cube, 1 elsewhere', () => {
    const w = cascadeWeightMap([8, 8, 8]);
    expect(w.length).toBe(512);
    for (let z = 0; z < 8; z++)
      for (let y = 0; y < 8; y++)
        for (let x = 0; x < 8; x++) {
          const inside = [z, y, x].every((v) => v >= 2 && v < 6);
          expect(w[(z * 8 + y) * 8 + x]).toBe(inside ? 2 : 1);
        }
    expect(w.reduce((a, b) => a + b, 0)).toBe(512 + 64);
    // 64³ patch: the middle 32³.
    const big = cascadeWeightMap([64, 64, 64]);
    expect(big.reduce((a, b) => a + b, 0)).toBe(64 ** 3 + 32 ** 3);
    expect(big[(16 * 64 + 16) * 64 + 16]).toBe(2);
    expect(big[(15 * 64 + 32) * 64 + 32]).toBe(1);
    expect(big[(47 * 64 + 47) * 64 + 47]).toBe(2);
    expect(big[(48 * 64 + 47) * 64 + 47]).toBe(1);
  });

  it('symmetric for odd and anisotropic windows', () => {
    expect(centralHalf(5)).toEqual([1, 4]);
    expect(centralHalf(6)).toEqual([1, 5]);
    expect(centralHalf(2)).toEqual([0, 2]);
    const [d, h, wd] = [5, 6, 7];
    const w = cascadeWeightMap([d, h, wd]);
    for (let z = 0; z < d; z++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < wd; x++) expect(w[(z * h + y) * wd + x]).toBe(w[((d - 1 - z) * h + (h - 1 - y)) * wd + (wd - 1 - x)]);
    expect(cascadeWeightMap([1, 1, 1])).toEqual(new Float32Array([2]));
    expect(() => cascadeWeightMap([0, 4, 4])).toThrow(/positive integer/);
  });
});

describe('half precision', () => {
  const bitsOf = (v: number): number => {
    const h = new Uint16Array(1);
    floatToHalfBits(new Float32Array([v]), h);
    return h[0]!;
  };

  it('round to nearest even, subnormals, overflow, infinities and NaN', () => {
    expect(bitsOf(0)).toBe(0);
    expect(bitsOf(-0)).toBe(0x8000);
    expect(bitsOf(1)).toBe(0x3c00);
    expect(bitsOf(-2)).toBe(0xc000);
    expect(bitsOf(65504)).toBe(0x7bff); // largest half
    expect(bitsOf(65519)).toBe(0x7bff); // below the tie
    expect(bitsOf(65520)).toBe(0x7c00); // the tie rounds to even: Inf
    expect(bitsOf(1e9)).toBe(0x7c00);
    expect(bitsOf(-Infinity)).toBe(0xfc00);
    expect(bitsOf(NaN) & 0x7c00).toBe(0x7c00);
    expect(bitsOf(NaN) & 0x3ff).not.toBe(0);
    expect(bitsOf(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(bitsOf(2 ** -25)).toBe(0); // tie with 0: even
    expect(bitsOf(1.5 * 2 ** -25)).toBe(0x0001);
    expect(bitsOf(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 units: even
    expect(bitsOf(2 ** -14)).toBe(0x0400); // smallest normal
    expect(bitsOf(2 ** -14 - 2 ** -25)).toBe(0x0400); // subnormal rounding carries into the exponent
    expect(bitsOf(1e-45)).toBe(0); // a float32 subnormal
    expect(bitsOf(1 + 2 ** -11)).toBe(0x3c00); // tie: even (1)
    expect(bitsOf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie: even (1 + 2^-9)
    expect(bitsOf(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // above the tie
    expect(roundToHalf(0.1)).toBeCloseTo(0.0999755859375, 12);
  });

  it('every finite half value survives half → float → half', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const f = new Float32Array(65536);
    halfBitsToFloat(all, f);
    const back = new Uint16Array(65536);
    floatToHalfBits(f, back);
    for (let h = 0; h < 65536; h++) {
      if ((h & 0x7c00) === 0x7c00 && h & 0x3ff) expect(Number.isNaN(f[h])).toBe(true);
      else expect(back[h]).toBe(h);
    }
  });

  it('packs two per int32 and round-trips tensors within 2^-11 relative (max rel error ~1e-3)', () => {
    const rng = new SeededRng(5);
    const n = 10_001; // odd: the last int32 holds one value
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = (rng.next() < 0.5 ? -1 : 1) * 10 ** (rng.next() * 8 - 4); // 1e-4 … 1e4
    const t = tf.tensor(v, [1, 73, 137, 1, 1]);
    const p = packHalf(t);
    expect(p.dtype).toBe('int32');
    expect(p.size).toBe(5001);
    const back = unpackHalf(p, t.shape);
    expect(back.shape).toEqual(t.shape);
    const b = back.dataSync();
    let worst = 0;
    for (let i = 0; i < n; i++) {
      if (Math.abs(v[i]!) < 2 ** -14) continue; // subnormal halves have absolute, not relative, precision
      worst = Math.max(worst, Math.abs(b[i]! - v[i]!) / Math.abs(v[i]!));
    }
    expect(worst).toBeLessThanOrEqual(2 ** -11);
    expect(worst).toBeGreaterThan(1e-4);
    expect(() => unpackHalf(p, [1, 2, 3])).toThrow(/cannot hold/);
    for (const x of [t, p, back]) x.dispose();
  });

  it('HalfSaved declares half the saved bytes and gives gradients within 1e-2 of the float32 layer', async () => {
    const conv = new Conv3d({ inChannels: 3, outChannels: 4, kernel: 3 });
    const half = new HalfSaved(conv);
    expect(half.saves([[1, 5, 6, 7, 3]])).toEqual({ inputs: [], output: false, extra: [Math.ceil((5 * 6 * 7 * 3) / 2)] });
    expect(new HalfSaved(conv, { sharedInputs: [0] }).saves([[1, 5, 6, 7, 3]]).extra).toEqual([]);
    // Whole networks: the same weights, with and without half-precision saves.
    for (const over of [{ narrow: true }, { inPlaceNorm: true }, { narrow: true, separable: true, inPlaceNorm: true, checkpointWidest: true }]) {
      const s = meFcn({ depth: 2, baseFilters: 4, ...over });
      const a = await gradients(buildMeFcn(spec(2, 2), { ...s, halfPrecisionSaves: true }), [8, 8, 8], {});
      const b = await gradients(buildMeFcn(spec(2, 2), s), [8, 8, 8], {});
      expect(a.loss).toBeCloseTo(b.loss, 6); // forward values are float32 either way
      const err = relativeErrors(a.grads, b.grads);
      expect(err.worst).toBeLessThan(1e-2); // measured ~1e-3: the rounding of the saved values
      expect(err.global).toBeGreaterThan(0); // the saved values really were rounded
    }
  });
});

describe('half precision in inference', () => {
  it('packs nothing: an inference forward allocates exactly what the network without half saves does', () => {
    const s = meFcn({ depth: 3, baseFilters: 4, inPlaceNorm: true });
    const peakOf = (net: Network): { peak: number; int32: number; out: Float32Array } => {
      const params = initParams(net, 7);
      const x = tf.randomNormal([1, 16, 16, 16, 2], 0, 1, 'float32', 3);
      const meter = new DeviceMemoryMeter().attach();
      let int32 = 0;
      const engine = tf.engine() as unknown as { makeTensor: (...a: unknown[]) => tf.Tensor };
      const make = engine.makeTensor.bind(engine);
      engine.makeTensor = (...a: unknown[]) => {
        const t = make(...a);
        if (t.dtype === 'int32') int32++;
        return t;
      };
      try {
        meter.ledger.resetPeak();
        const base = meter.ledger.live;
        const y = new Executor(net).forward(x, params);
        const out = y.dataSync() as Float32Array;
        y.dispose();
        return { peak: meter.ledger.peak - base, int32, out };
      } finally {
        engine.makeTensor = make;
        meter.detach();
        x.dispose();
        for (const t of params.values()) t.dispose();
      }
    };
    peakOf(buildMeFcn(spec(2, 2), s)); // warm-up: first-use constants are not the network's
    const half = peakOf(buildMeFcn(spec(2, 2), { ...s, halfPrecisionSaves: true }));
    const plain = peakOf(buildMeFcn(spec(2, 2), s));
    expect(half.int32).toBe(0); // no packed copy made
    expect(half.peak).toBe(plain.peak);
    expect(half.out).toEqual(plain.out); // forward values are float32 either way
  });
});

describe('owned backward = tf.grads', () => {
  it('me-fcn with every technique but half precision', async () => {
    const s = meFcn({ depth: 3, baseFilters: 4, narrow: true, separable: true, inPlaceNorm: true, checkpointWidest: true });
    const net = buildMeFcn(spec(2, 2), s);
    expect(net.recompute!.length).toBe(2);
    const owned = await gradients(net, [8, 8, 8], {});
    const tape = await gradients(net, [8, 8, 8], { backward: 'tape' });
    expect(owned.loss).toBeCloseTo(tape.loss, 6);
    const err = relativeErrors(owned.grads, tape.grads);
    expect(err.global).toBeLessThanOrEqual(1e-5); // measured ~1e-7
    // The in-place normalisation rebuilds x̂ from its output (float rounding): a small γ sees ~5e-6.
    expect(err.worst).toBeLessThanOrEqual(1e-4);
  });

  it('meunet-cascade at tiny sizes (aux output, margins, checkpointed stage 1), both joins', async () => {
    for (const join of ['post-concat', 'input-channel'] as const) {
      const net = buildMeUNetCascade(spec(2, 2), cascade({ patch: [8, 8, 8], stage1Filters: [3, 4], stage2Filters: [3, 4], join, negativeSlope: 0.01 }));
      const input: Shape3 = [12, 12, 12];
      const owned = await gradients(net, input, {});
      const tape = await gradients(net, input, { backward: 'tape' });
      expect(owned.loss).toBeCloseTo(tape.loss, 6);
      const err = relativeErrors(owned.grads, tape.grads);
      expect(err.global).toBeLessThanOrEqual(1e-5);
      expect(err.worst).toBeLessThanOrEqual(1e-5);
      // Stage 1 learns from both losses.
      const s1 = owned.grads.get('s1.enc0.conv1.conv.filter')!;
      expect(s1.some((v) => v !== 0)).toBe(true);
    }
  });

  it('meunet-cascade with ReLU (slope 0, as the paper) gives the tape gradients under lean saves', async () => {
    // Lean saves keep y and rebuild x̂ only where the slope is > 0: with ReLU the norm keeps x̂ and invStd,
    // and backward must read them in the order forward saved them.
    const net = buildMeUNetCascade(spec(2, 2), cascade({ patch: [8, 8, 8], stage1Filters: [3, 4], stage2Filters: [3, 4] }));
    const input: Shape3 = [12, 12, 12];
    const tape = await gradients(net, input, { backward: 'tape' });
    for (const plan of [{ saveMode: 'lean' as const }, { saveMode: 'lean' as const, recompute: net.recompute }]) {
      const owned = await gradients(net, input, plan);
      expect(owned.loss).toBeCloseTo(tape.loss, 6);
      const err = relativeErrors(owned.grads, tape.grads);
      expect(err.global).toBeLessThanOrEqual(1e-5);
      expect(err.worst).toBeLessThanOrEqual(1e-5);
    }
  });
});

describe('memory', () => {
  it('me-fcn with every technique has a lower measured peak than unet3d at the same input', async () => {
    const input: Shape3 = [24, 24, 24];
    const measure = async (net: Network): Promise<number> => {
      const meter = new DeviceMemoryMeter().attach();
      try {
        const params = initParams(net, 1);
        const { x, y } = batch(net, input, 11);
        const ex = new Executor(net);
        let peak = 0;
        for (let step = 0; step < 2; step++) {
          meter.ledger.resetPeak();
          const r = await ex.trainStep(x, params, stepLoss(y, 'dice+ce', 'sigmoid', net), {});
          peak = meter.ledger.peak;
          for (const g of r.grads.values()) g.dispose();
        }
        for (const t of [x, y, ...params.values()]) t.dispose();
        return peak;
      } finally {
        meter.detach();
      }
    };
    const base = unet3d(3, 8);
    const all = buildMeFcn(spec(4, 3), meFcn({ all: true }));
    const peakBase = await measure(base);
    const peakAll = await measure(all);
    expect(peakAll).toBeLessThan(0.5 * peakBase);
    expect(parameterCount(all)).toBeLessThan(0.35 * parameterCount(base));
    // The estimator sees the half-size saves, the shared half copies and the lean in-place backward.
    const est = estimatePeak(all, [1, ...input, 4], {}, { optimizerSlots: 0 }).peak;
    expect(Math.abs(est / peakAll - 1)).toBeLessThan(0.1);
  });
});

describe('me-fcn effective settings', () => {
  it('records all: true as every technique on (what the summary shows)', async () => {
    const meFcn = (await import('../architectures/me-fcn.js')).default;
    const s = resolveSettings(meFcn.settings, { all: true }, 'architecture.settings');
    expect(meFcn.effective!(s)).toMatchObject({ all: true, narrow: true, separable: true, inPlaceNorm: true, halfPrecisionSaves: true, checkpointWidest: true });
    const one = resolveSettings(meFcn.settings, { narrow: true }, 'architecture.settings');
    expect(meFcn.effective!(one)).toMatchObject({ all: false, narrow: true, separable: false });
  });
});
