/**
 * Native kernels vs references, on random inputs of odd sizes.
 *
 * - tfjs kernels (Conv3D and its backprops, pooling and its gradients, and the general ops:
 *   broadcasting arithmetic, unary ops, Sum/Mean, Softmax, Slice/SplitV/Concat, Transpose, PadV2):
 *   the reference is tfjs's own JavaScript kernel, run through the engine with the native kernels
 *   switched off (setNativeKernelsEnabled(false)); data movement and + - * / are required to match
 *   exactly.
 * - the project's custom kernels (VolInstanceNorm*, VolUpsampleNearest3D*): the reference is a
 *   straightforward double-precision JavaScript implementation of the contract written below,
 *   and also the project's JavaScript kernel (core/backend/kernels) when that file is registered.
 *
 * Error measure, per output tensor: rel = max|a - b| / max(1e-6, max|b|), with a the native
 * result and b the reference; every test requires rel <= 1e-4.
 *
 * Every kernel test runs with both native code paths (AVX2+FMA, when the CPU has it, and portable),
 * and with every native output taken from the addon's output-buffer cache (any size) filled with
 * NaN bytes beforehand, so an output element a kernel leaves unwritten shows as a difference.
 * The whole file is skipped, with the reason in the suite name, when the addon is not built, except where
 * VOLSEG_REQUIRE_NATIVE=1 (CI): there a missing addon fails the suite.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bufferCache,
  bufferRelease,
  copyFloats,
  shareNativeOutputs,
  nativeAddon,
  nativeStatus,
  originalKernel,
  registerNativeKernels,
  setNativeKernelsEnabled,
  setNativeSimd,
  type NativeSimd,
} from '../core/backend/native-kernels.js';

// The project's JavaScript kernels register under the custom names; import them first (when the
// file exists) so the native registration goes on top and they become the fallback/reference.
const kernelsModule = '../core/backend/kernels/index.js';
const hasProjectKernels = existsSync(fileURLToPath(new URL('../core/backend/kernels/index.ts', import.meta.url)));
if (hasProjectKernels) {
  const mod = (await import(/* @vite-ignore */ kernelsModule)) as { registerProjectKernels?: () => void };
  mod.registerProjectKernels?.();
}

await tf.setBackend('cpu');
const status = registerNativeKernels();
const TOL = 1e-4;

type Shape5 = [number, number, number, number, number];

/**
 * max|a - b| / max(1e-6, max|b|) over finite values; equal values (infinities included) and
 * NaN against NaN count as no difference, NaN against a number as an infinite one.
 */
function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < a.length; i++) {
    if (Number.isFinite(b[i])) maxRef = Math.max(maxRef, Math.abs(b[i]));
    if (a[i] === b[i] || (Number.isNaN(a[i]) && Number.isNaN(b[i]))) continue;
    const d = Math.abs(a[i] - b[i]);
    maxDiff = Number.isFinite(d) ? Math.max(maxDiff, d) : Infinity;
  }
  return maxDiff / Math.max(1e-6, maxRef);
}

/** Runs a kernel through the engine and returns its outputs' values and shapes. */
function run(kernel: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown>) {
  const out = tf.engine().runKernel(kernel, inputs as tf.NamedTensorMap, attrs as tf.NamedAttrMap) as
    | tf.Tensor
    | tf.Tensor[];
  const list = Array.isArray(out) ? out : [out];
  const res = list.map((t) => ({ shape: t.shape, dtype: t.dtype, values: t.dataSync() as Float32Array }));
  tf.dispose(list);
  return res;
}

/** Native result vs tfjs's JavaScript kernel (native switched off); returns the worst rel. */
function compareWithTfjs(kernel: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown>): number {
  setNativeKernelsEnabled(false);
  let ref;
  try {
    ref = run(kernel, inputs, attrs);
  } finally {
    setNativeKernelsEnabled(true);
  }
  const got = run(kernel, inputs, attrs);
  expect(got.length).toBe(ref.length);
  let worst = 0;
  for (let i = 0; i < got.length; i++) {
    expect(got[i].shape).toEqual(ref[i].shape);
    expect(got[i].dtype).toBe(ref[i].dtype);
    worst = Math.max(worst, relDiff(got[i].values, ref[i].values));
  }
  return worst;
}

let seed = 12345;
function rand(shape: number[], lo = -1, hi = 1): tf.Tensor {
  return tf.randomUniform(shape, lo, hi, 'float32', seed++);
}

/** The code paths to test: the two AVX-512 ones and AVX2+FMA (where this CPU has them) and portable. */
const simdInfo = status.loaded ? nativeAddon()!.info() : null;
const simdPaths: NativeSimd[] = !simdInfo
  ? []
  : [
      ...(simdInfo.avx512Available ? (['avx512-zmm', 'avx512vl'] as const) : []),
      ...(simdInfo.avx2Available ? (['avx2-fma'] as const) : []),
      'portable',
    ];
/**
 * The code path the addon picks at load: the one VOLSEG_NATIVE_SIMD names where the CPU has it, else the
 * best it has (on AVX-512 CPUs, zmm convolutions only where the load-time probe found 512-bit FMAs faster).
 */
const forcedSimd = process.env.VOLSEG_NATIVE_SIMD as NativeSimd | undefined;
const bestSimd: NativeSimd = simdInfo?.avx512Available ? (simdInfo.zmmFaster ? 'avx512-zmm' : 'avx512vl') : (simdPaths[0] ?? 'portable');
const defaultSimd: NativeSimd = forcedSimd && simdPaths.includes(forcedSimd) ? forcedSimd : bestSimd;

// Where the addon must exist (CI sets VOLSEG_REQUIRE_NATIVE=1: the machine has a compiler), its absence fails.
describe.runIf(process.env.VOLSEG_REQUIRE_NATIVE === '1')('native kernels are required (VOLSEG_REQUIRE_NATIVE=1)', () => {
  it('the addon was built and loads', () => {
    expect(status.loaded, `native kernels not loaded: ${status.reason}`).toBe(true);
  });
});

describe.skipIf(!status.loaded)(
  status.loaded ? 'native kernels' : `native kernels: SKIPPED, addon not available (${status.reason})`,
  () => {
    afterAll(() => {
      setNativeSimd(defaultSimd);
    });

    it('registers idempotently and reports its status', () => {
      const again = registerNativeKernels();
      expect(again.loaded).toBe(true);
      expect(again.kernels).toEqual(status.kernels);
      expect(nativeStatus().kernels).toEqual(status.kernels);
      for (const k of ['Conv3D', 'Conv3DBackpropInputV2', 'Conv3DBackpropFilterV2', 'MaxPool3D', 'MaxPool3DGrad', 'AvgPool3D', 'AvgPool3DGrad', 'VolInstanceNormForward', 'VolInstanceNormBackward', 'VolUpsampleNearest3D', 'VolUpsampleNearest3DGrad']) {
        expect(status.kernels).toContain(k);
      }
      expect(status.simd).toBe(defaultSimd);
      expect(status.threads).toBeGreaterThanOrEqual(1);
      expect(originalKernel('Conv3D')).toBeTypeOf('function');
      // With core/backend/kernels present, its JavaScript kernels are the fallback and the reference.
      if (hasProjectKernels) expect(originalKernel('VolInstanceNormForward')).toBeTypeOf('function');
    });

    it("tilePeak runs each code path's tile of a 16 → 16 layer and reports it (the bench's conv ceiling)", () => {
      const a = nativeAddon()!;
      // The tile channel_blocks and the wide tiles choose for 16 output channels: two 8-lane vectors by 6
      // positions with 16 vector registers, by 12 with 32 (avx512vl); one 16-lane vector by 24 (zmm).
      const expected: Record<NativeSimd, [number, number, number]> = { 'avx512-zmm': [24, 1, 16], avx512vl: [12, 2, 8], 'avx2-fma': [6, 2, 8], portable: [6, 2, 8] };
      try {
        for (const simd of simdPaths) {
          setNativeSimd(simd);
          const t = a.tilePeak(0.01);
          expect([t.positions, t.vectors, t.lanes], simd).toEqual(expected[simd]);
          expect(Number.isFinite(t.gflops) && t.gflops > 0, `${simd}: ${t.gflops}`).toBe(true);
        }
      } finally {
        setNativeSimd(defaultSimd);
      }
    });

    it('VOLSEG_NO_NATIVE=1 puts the JavaScript kernels back; registering again restores native', () => {
      const native = tf.getKernel('Conv3D', 'cpu').kernelFunc;
      process.env.VOLSEG_NO_NATIVE = '1';
      try {
        const off = registerNativeKernels();
        expect(off.loaded).toBe(false);
        expect(off.reason).toMatch(/VOLSEG_NO_NATIVE/);
        expect(tf.getKernel('Conv3D', 'cpu').kernelFunc).not.toBe(native);
      } finally {
        delete process.env.VOLSEG_NO_NATIVE;
      }
      const on = registerNativeKernels();
      expect(on.loaded).toBe(true);
      expect(on.kernels).toEqual(status.kernels);
      expect(tf.getKernel('Conv3D', 'cpu').kernelFunc).not.toBe(originalKernel('Conv3D'));
    });

    for (const simd of simdPaths) {
      describe(`${simd} code path`, () => {
        let cacheBefore: ReturnType<typeof bufferCache>;
        beforeAll(() => {
          setNativeSimd(simd);
          // Every native output from the cache, NaN-filled first (see the header).
          cacheBefore = bufferCache();
          if (cacheBefore?.enabled) bufferCache({ minBytes: 0, poison: true });
        });
        afterAll(() => {
          if (cacheBefore?.enabled) bufferCache({ minBytes: cacheBefore.minBytes, poison: false });
        });

      // ------------------------------------------------------------------------------------------
      // Convolutions
      // ------------------------------------------------------------------------------------------
      interface ConvCase {
        x: Shape5;
        co: number;
        k: [number, number, number];
        s: [number, number, number];
        pad: 'same' | 'valid';
      }
      const convCases: ConvCase[] = [
        { x: [1, 7, 9, 5, 1], co: 3, k: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
        { x: [2, 11, 6, 13, 3], co: 5, k: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
        { x: [1, 7, 9, 5, 5], co: 8, k: [3, 3, 3], s: [2, 2, 2], pad: 'same' },
        { x: [2, 11, 6, 13, 8], co: 17, k: [3, 3, 3], s: [2, 2, 2], pad: 'valid' },
        { x: [1, 9, 7, 11, 17], co: 3, k: [3, 3, 3], s: [1, 1, 1], pad: 'valid' },
        { x: [1, 7, 9, 5, 8], co: 1, k: [1, 1, 1], s: [1, 1, 1], pad: 'same' },
        // Pointwise (1x1x1, stride 1, >= 4096 positions): the filter gradient sums fixed blocks of
        // positions (several here).
        { x: [1, 16, 17, 18, 32], co: 3, k: [1, 1, 1], s: [1, 1, 1], pad: 'same' },
        { x: [2, 12, 13, 14, 20], co: 11, k: [1, 1, 1], s: [1, 1, 1], pad: 'valid' },
        // Pointwise with <= 4 output channels (dot products along ci): partial channel vectors,
        // position counts that are not multiples of 8, more than 4 vectors of input channels.
        { x: [1, 15, 17, 17, 19], co: 4, k: [1, 1, 1], s: [1, 1, 1], pad: 'same' },
        { x: [2, 11, 13, 15, 37], co: 4, k: [1, 1, 1], s: [1, 1, 1], pad: 'valid' },
        { x: [1, 16, 16, 17, 12], co: 2, k: [1, 1, 1], s: [1, 1, 1], pad: 'same' },
        { x: [2, 6, 5, 7, 5], co: 17, k: [1, 1, 1], s: [2, 2, 2], pad: 'valid' },
        { x: [1, 10, 9, 12, 17], co: 24, k: [3, 3, 3], s: [2, 2, 2], pad: 'same' },
        { x: [1, 8, 8, 20, 16], co: 40, k: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
        { x: [1, 5, 9, 7, 3], co: 5, k: [1, 3, 3], s: [1, 2, 1], pad: 'same' },
        { x: [1, 9, 6, 8, 4], co: 6, k: [3, 1, 2], s: [2, 1, 2], pad: 'valid' },
        { x: [1, 6, 7, 9, 2], co: 4, k: [2, 2, 2], s: [2, 2, 2], pad: 'same' },
        // Rows long enough for the widest register tiles (with 32 registers: 12 positions x 2
        // vectors, 9 x 3, 6 x 4; backprop-filter: up to 12 input channels x 2 vectors).
        { x: [1, 4, 5, 29, 16], co: 16, k: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
        { x: [1, 3, 4, 27, 32], co: 24, k: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
        { x: [1, 3, 5, 25, 24], co: 32, k: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
        // Channels in multiples of 16 (the avx512-zmm path's 16-lane blocks: 1 to 4 zmm vectors, and
        // strided), and a pointwise one with >= 4096 positions.
        { x: [1, 4, 5, 29, 48], co: 64, k: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
        { x: [1, 5, 6, 27, 64], co: 16, k: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
        { x: [2, 7, 6, 19, 16], co: 32, k: [3, 3, 3], s: [2, 2, 2], pad: 'same' },
        { x: [1, 16, 16, 17, 32], co: 48, k: [1, 1, 1], s: [1, 1, 1], pad: 'same' },
        // Rows long enough for narrow border blocks around wide interior ones (the zmm path's
        // 1-vector tiles of up to 24 positions, input strides 4, 16 and 32).
        { x: [1, 3, 4, 45, 16], co: 16, k: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
        { x: [1, 3, 3, 41, 4], co: 16, k: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
        { x: [1, 2, 3, 50, 32], co: 16, k: [3, 3, 3], s: [1, 1, 1], pad: 'valid' },
        // Backprop-filter tiles of 13-16 input channels with one vector of output channels (kMaxRC):
        // 16 x 8 and 15 x 5 (masked) on the 8-lane paths, 16 x 16 on the zmm one (above).
        { x: [1, 5, 6, 9, 16], co: 8, k: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
        { x: [1, 4, 6, 11, 15], co: 5, k: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
        // Filters larger than the kernels' L2 budget: weights are processed in several passes.
        { x: [1, 4, 5, 3, 200], co: 136, k: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
      ];

      for (const c of convCases) {
        const label = `${c.x.join('x')} -> ${c.co}, filter ${c.k.join('x')}, strides ${c.s.join(',')}, ${c.pad}`;
        it(`Conv3D and its backprops match tfjs: ${label}`, () => {
          const x = rand(c.x);
          const filter = rand([...c.k, c.x[4], c.co]);
          const y = tf.conv3d(x as tf.Tensor5D, filter as tf.Tensor5D, c.s, c.pad);
          const dy = rand(y.shape);
          const fwd = compareWithTfjs('Conv3D', { x, filter }, { strides: c.s, pad: c.pad, dataFormat: 'NDHWC', dilations: [1, 1, 1] });
          const bin = compareWithTfjs('Conv3DBackpropInputV2', { dy, filter }, { strides: c.s, pad: c.pad, inputShape: c.x });
          const bfl = compareWithTfjs('Conv3DBackpropFilterV2', { x, dy }, { strides: c.s, pad: c.pad, filterShape: filter.shape });
          expect(fwd, 'Conv3D').toBeLessThanOrEqual(TOL);
          expect(bin, 'Conv3DBackpropInputV2').toBeLessThanOrEqual(TOL);
          expect(bfl, 'Conv3DBackpropFilterV2').toBeLessThanOrEqual(TOL);
          tf.dispose([x, filter, y, dy]);
        });
      }

      it('Conv3D falls back to tfjs for dilations > 1', () => {
        const x = rand([1, 9, 8, 7, 3]);
        const filter = rand([3, 3, 3, 3, 4]);
        const rel = compareWithTfjs('Conv3D', { x, filter }, { strides: [1, 1, 1], pad: 'same', dataFormat: 'NDHWC', dilations: [2, 2, 2] });
        expect(rel).toBe(0);
        tf.dispose([x, filter]);
      });

      it('Conv3D and its input gradient on a larger shape (both threads busy; rows in chunks that reuse border strips)', () => {
        const x = rand([2, 12, 14, 16, 16]);
        const filter = rand([3, 3, 3, 16, 32]);
        const rel = compareWithTfjs('Conv3D', { x, filter }, { strides: [1, 1, 1], pad: 'same', dataFormat: 'NDHWC', dilations: [1, 1, 1] });
        expect(rel).toBeLessThanOrEqual(TOL);
        for (const s of [1, 2]) {
          const dy = rand([2, 12 / s, 14 / s, 16 / s, 32]);
          const bin = compareWithTfjs('Conv3DBackpropInputV2', { dy, filter }, { strides: [s, s, s], pad: 'same', inputShape: [2, 12, 14, 16, 16] });
          expect(bin, `stride ${s}`).toBeLessThanOrEqual(TOL);
          dy.dispose();
        }
        tf.dispose([x, filter]);
      });

      // ------------------------------------------------------------------------------------------
      // Pooling
      // ------------------------------------------------------------------------------------------
      interface PoolCase {
        x: Shape5;
        f: [number, number, number];
        s: [number, number, number];
        pad: 'same' | 'valid' | number;
        round?: 'floor' | 'round' | 'ceil';
      }
      const poolCases: PoolCase[] = [
        { x: [1, 7, 9, 5, 3], f: [2, 2, 2], s: [2, 2, 2], pad: 'same' },
        { x: [2, 11, 6, 13, 5], f: [2, 2, 2], s: [2, 2, 2], pad: 'valid' },
        { x: [1, 7, 9, 5, 8], f: [3, 3, 3], s: [2, 2, 2], pad: 'same' },
        { x: [1, 9, 7, 11, 17], f: [3, 3, 3], s: [1, 1, 1], pad: 'same' },
        { x: [2, 6, 5, 7, 1], f: [3, 3, 3], s: [2, 2, 2], pad: 1, round: 'ceil' },
        { x: [1, 8, 7, 6, 4], f: [1, 2, 2], s: [1, 2, 2], pad: 'valid' },
        { x: [1, 7, 8, 9, 3], f: [2, 3, 2], s: [2, 2, 1], pad: 'same' },
      ];
      for (const c of poolCases) {
        const label = `${c.x.join('x')}, filter ${c.f.join('x')}, strides ${c.s.join(',')}, pad ${c.pad}${c.round ? ` ${c.round}` : ''}`;
        it(`MaxPool3D/AvgPool3D and their gradients match tfjs: ${label}`, () => {
          const attrs = { filterSize: c.f, strides: c.s, pad: c.pad, dimRoundingMode: c.round, dataFormat: 'NDHWC' };
          // Random values and, for max pooling, also many ties (small integers): tfjs routes the
          // gradient to the last maximum in scan order.
          for (const ties of [false, true]) {
            const x = ties ? tf.round(rand(c.x, 0, 2)) : rand(c.x);
            const out = tf.maxPool3d(x as tf.Tensor5D, c.f, c.s, c.pad, c.round);
            const dy = rand(out.shape);
            expect(compareWithTfjs('MaxPool3D', { x }, attrs), 'MaxPool3D').toBeLessThanOrEqual(TOL);
            expect(compareWithTfjs('AvgPool3D', { x }, attrs), 'AvgPool3D').toBeLessThanOrEqual(TOL);
            expect(compareWithTfjs('MaxPool3DGrad', { dy, input: x, output: out }, attrs), 'MaxPool3DGrad').toBeLessThanOrEqual(TOL);
            expect(compareWithTfjs('AvgPool3DGrad', { dy, input: x }, attrs), 'AvgPool3DGrad').toBeLessThanOrEqual(TOL);
            tf.dispose([x, out, dy]);
          }
        });
      }

      // ------------------------------------------------------------------------------------------
      // Custom kernels: contract references (double precision)
      // ------------------------------------------------------------------------------------------
      function inormForwardRef(x: Float32Array, shape: Shape5, gamma: Float32Array, beta: Float32Array, epsilon: number, alpha: number) {
        const [N, D, H, W, C] = shape;
        const S = D * H * W;
        const y = new Float64Array(x.length), xhat = new Float64Array(x.length), invStd = new Float64Array(N * C);
        for (let n = 0; n < N; n++) {
          for (let c = 0; c < C; c++) {
            let sum = 0;
            for (let s = 0; s < S; s++) sum += x[(n * S + s) * C + c];
            const mean = sum / S;
            let sq = 0;
            for (let s = 0; s < S; s++) sq += (x[(n * S + s) * C + c] - mean) ** 2;
            const inv = 1 / Math.sqrt(sq / S + epsilon);
            invStd[n * C + c] = inv;
            for (let s = 0; s < S; s++) {
              const i = (n * S + s) * C + c;
              xhat[i] = (x[i] - mean) * inv;
              const z = gamma[c] * xhat[i] + beta[c];
              y[i] = z >= 0 ? z : alpha * z;
            }
          }
        }
        return [y, xhat, invStd];
      }

      function inormBackwardRef(dy: Float32Array, xhat: Float32Array, invStd: Float32Array, gamma: Float32Array, beta: Float32Array, shape: Shape5, alpha: number) {
        const [N, D, H, W, C] = shape;
        const S = D * H * W;
        const dx = new Float64Array(dy.length), dgamma = new Float64Array(C), dbeta = new Float64Array(C);
        const g = new Float64Array(dy.length);
        for (let i = 0; i < dy.length; i++) {
          const c = i % C;
          const z = gamma[c] * xhat[i] + beta[c];
          g[i] = dy[i] * (z >= 0 ? 1 : alpha);
        }
        for (let n = 0; n < N; n++) {
          for (let c = 0; c < C; c++) {
            let m1 = 0, m2 = 0;
            for (let s = 0; s < S; s++) {
              const i = (n * S + s) * C + c;
              m1 += g[i] * gamma[c];
              m2 += g[i] * gamma[c] * xhat[i];
              dgamma[c] += g[i] * xhat[i];
              dbeta[c] += g[i];
            }
            m1 /= S;
            m2 /= S;
            for (let s = 0; s < S; s++) {
              const i = (n * S + s) * C + c;
              dx[i] = invStd[n * C + c] * (g[i] * gamma[c] - m1 - xhat[i] * m2);
            }
          }
        }
        return [dx, dgamma, dbeta];
      }

      function upsampleRef(x: Float32Array, [N, D, H, W, C]: Shape5, f: number): Float64Array {
        const out = new Float64Array(x.length * f ** 3);
        for (let n = 0; n < N; n++)
          for (let d = 0; d < D * f; d++)
            for (let h = 0; h < H * f; h++)
              for (let w = 0; w < W * f; w++)
                for (let c = 0; c < C; c++)
                  out[(((n * D * f + d) * H * f + h) * W * f + w) * C + c] =
                    x[(((n * D + Math.floor(d / f)) * H + Math.floor(h / f)) * W + Math.floor(w / f)) * C + c];
        return out;
      }

      function upsampleGradRef(dy: Float32Array, [N, D, H, W, C]: Shape5, f: number): Float64Array {
        const out = new Float64Array(N * D * H * W * C);
        for (let n = 0; n < N; n++)
          for (let d = 0; d < D * f; d++)
            for (let h = 0; h < H * f; h++)
              for (let w = 0; w < W * f; w++)
                for (let c = 0; c < C; c++)
                  out[(((n * D + Math.floor(d / f)) * H + Math.floor(h / f)) * W + Math.floor(w / f)) * C + c] +=
                    dy[(((n * D * f + d) * H * f + h) * W * f + w) * C + c];
        return out;
      }

      /** Also compares with the project's JavaScript kernel when core/backend/kernels registered one. */
      function compareWithProjectKernel(kernel: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown>) {
        if (!originalKernel(kernel)) return;
        expect(compareWithTfjs(kernel, inputs, attrs), `${kernel} vs core/backend/kernels`).toBeLessThanOrEqual(TOL);
      }

      const normShapes: Shape5[] = [
        [1, 7, 9, 5, 3],
        [2, 6, 5, 7, 8],
        [1, 11, 6, 13, 17],
        [2, 5, 4, 3, 1],
        // xhat of >= 2^20 floats is written with streaming stores
        [1, 32, 32, 32, 32],
      ];
      for (const shape of normShapes) {
        for (const alpha of [1, 0.01]) {
          it(`VolInstanceNormForward/Backward match the contract: ${shape.join('x')}, alpha ${alpha}`, () => {
            const C = shape[4];
            // An offset and scale per channel, so mean/variance are not trivial.
            const x = tf.tidy(() => tf.add(tf.mul(rand(shape), rand([C], 0.5, 3)), rand([C], -2, 2)));
            const gamma = rand([C], 0.5, 1.5), beta = rand([C], -0.3, 0.3);
            const epsilon = 1e-5;
            const fwd = run('VolInstanceNormForward', { x, gamma, beta }, { epsilon, alpha });
            expect(fwd.map((o) => o.shape)).toEqual([shape, shape, [shape[0], C]]);
            const ref = inormForwardRef(x.dataSync() as Float32Array, shape, gamma.dataSync() as Float32Array, beta.dataSync() as Float32Array, epsilon, alpha);
            for (let i = 0; i < 3; i++) expect(relDiff(fwd[i].values, ref[i]), `forward output ${i}`).toBeLessThanOrEqual(TOL);
            compareWithProjectKernel('VolInstanceNormForward', { x, gamma, beta }, { epsilon, alpha });
            // withXhat false: [y, invStd] only; inPlace: y written over x's own buffer. Same values as
            // the full forward, for the native kernel and (native off) core/backend/kernels's.
            for (const native of originalKernel('VolInstanceNormForward') ? [true, false] : [true]) {
              setNativeKernelsEnabled(native);
              try {
                const full = native ? fwd : run('VolInstanceNormForward', { x, gamma, beta }, { epsilon, alpha });
                for (const inPlace of [false, true]) {
                  const own = tf.add(x, 0); // a fresh buffer nothing else shares
                  const out = tf.engine().runKernel('VolInstanceNormForward', { x: own, gamma, beta }, { epsilon, alpha, withXhat: false, inPlace }) as tf.Tensor[];
                  const label = `native ${native}, inPlace ${inPlace}`;
                  expect(out.length, label).toBe(2);
                  if (inPlace) expect(out[0]!.dataId, `${label}: y shares x's buffer`).toBe(own.dataId);
                  else expect(Array.from(own.dataSync()), `${label}: x untouched`).toEqual(Array.from(x.dataSync()));
                  expect(Array.from(out[0]!.dataSync()), `${label}: y`).toEqual(Array.from(full[0]!.values));
                  expect(Array.from(out[1]!.dataSync()), `${label}: invStd`).toEqual(Array.from(full[2]!.values));
                  tf.dispose([own, ...out]);
                }
              } finally {
                setNativeKernelsEnabled(true);
              }
            }

            const dy = rand(shape);
            const xhat = tf.tensor(fwd[1].values, shape);
            const invStd = tf.tensor(fwd[2].values, [shape[0], C]);
            const bwd = run('VolInstanceNormBackward', { dy, xhat, invStd, gamma, beta }, { alpha });
            expect(bwd.map((o) => o.shape)).toEqual([shape, [C], [C]]);
            const bref = inormBackwardRef(dy.dataSync() as Float32Array, fwd[1].values, fwd[2].values, gamma.dataSync() as Float32Array, beta.dataSync() as Float32Array, shape, alpha);
            for (let i = 0; i < 3; i++) expect(relDiff(bwd[i].values, bref[i]), `backward output ${i}`).toBeLessThanOrEqual(TOL);
            compareWithProjectKernel('VolInstanceNormBackward', { dy, xhat, invStd, gamma, beta }, { alpha });
            // inPlace: dx written over dy's own buffer (the output shares dy's dataId), same values,
            // for the native kernel and (native off) core/backend/kernels's.
            for (const native of originalKernel('VolInstanceNormBackward') ? [true, false] : [true]) {
              setNativeKernelsEnabled(native);
              try {
                const own = tf.add(dy, 0); // a fresh buffer nothing else shares
                const [dx, dg, db] = tf.engine().runKernel('VolInstanceNormBackward', { dy: own, xhat, invStd, gamma, beta }, { alpha, inPlace: true }) as tf.Tensor[];
                expect(dx!.dataId, `native ${native}: dx shares dy's buffer`).toBe(own.dataId);
                const outOfPlace = native ? bwd : run('VolInstanceNormBackward', { dy, xhat, invStd, gamma, beta }, { alpha });
                expect(Array.from(dx!.dataSync()), `native ${native}: dx`).toEqual(Array.from(outOfPlace[0]!.values));
                expect(Array.from(dg!.dataSync())).toEqual(Array.from(outOfPlace[1]!.values));
                expect(Array.from(db!.dataSync())).toEqual(Array.from(outOfPlace[2]!.values));
                tf.dispose([own, dx!, dg!, db!]);
              } finally {
                setNativeKernelsEnabled(true);
              }
            }
            // fromOutput: the saved tensor is y, and the kernel rebuilds x̂ from it (lean saves, in-place
            // normalisation): the x̂ path's gradients to float32 rounding, native and JavaScript alike.
            const y = tf.tensor(fwd[0].values, shape);
            const fromY = run('VolInstanceNormBackward', { dy, xhat: y, invStd, gamma, beta }, { alpha, fromOutput: true });
            for (let i = 0; i < 3; i++) expect(relDiff(fromY[i].values, bwd[i].values), `fromOutput: backward output ${i}`).toBeLessThanOrEqual(TOL);
            compareWithProjectKernel('VolInstanceNormBackward', { dy, xhat: y, invStd, gamma, beta }, { alpha, fromOutput: true });
            y.dispose();
            tf.dispose([x, gamma, beta, dy, xhat, invStd]);
          });
        }
      }

      it('VolInstanceNormForward stays accurate for a large mean and an outlying first voxel', () => {
        const shape: Shape5 = [1, 6, 7, 5, 4];
        const base = tf.tidy(() => tf.add(tf.mul(rand(shape), 0.01), 1000));
        // first voxel 0 in every channel: the one-pass shifted sums then shift by 0, not ~1000
        const x = tf.tidy(() => {
          const mask = tf.concat([tf.zeros([1, 1, 1, 1, 4]), tf.ones([1, 6 * 7 * 5 - 1, 1, 1, 4])], 1).reshape(shape);
          return tf.mul(base, mask);
        });
        for (const input of [base, x]) {
          const gamma = tf.ones([4]), beta = tf.zeros([4]);
          const fwd = run('VolInstanceNormForward', { x: input, gamma, beta }, { epsilon: 1e-5, alpha: 1 });
          const ref = inormForwardRef(input.dataSync() as Float32Array, shape, gamma.dataSync() as Float32Array, beta.dataSync() as Float32Array, 1e-5, 1);
          for (let i = 0; i < 3; i++) expect(relDiff(fwd[i].values, ref[i]), `output ${i}`).toBeLessThanOrEqual(TOL);
          tf.dispose([gamma, beta]);
        }
        tf.dispose([base, x]);
      });

      for (const [shape, f] of [[[1, 3, 4, 5, 3], 2], [[2, 2, 3, 2, 5], 3], [[1, 5, 3, 4, 1], 2]] as [Shape5, number][]) {
        it(`VolUpsampleNearest3D and its gradient match the contract: ${shape.join('x')}, factor ${f}`, () => {
          const x = rand(shape);
          const up = run('VolUpsampleNearest3D', { x }, { factor: f });
          expect(up[0].shape).toEqual([shape[0], shape[1] * f, shape[2] * f, shape[3] * f, shape[4]]);
          expect(relDiff(up[0].values, upsampleRef(x.dataSync() as Float32Array, shape, f))).toBeLessThanOrEqual(TOL);
          compareWithProjectKernel('VolUpsampleNearest3D', { x }, { factor: f });
          const dy = rand(up[0].shape);
          const down = run('VolUpsampleNearest3DGrad', { dy }, { factor: f });
          expect(down[0].shape).toEqual(shape);
          expect(relDiff(down[0].values, upsampleGradRef(dy.dataSync() as Float32Array, shape, f))).toBeLessThanOrEqual(TOL);
          compareWithProjectKernel('VolUpsampleNearest3DGrad', { dy }, { factor: f });
          tf.dispose([x, dy]);
        });
      }

      // ------------------------------------------------------------------------------------------
      // General ops (element-wise/broadcasting arithmetic, reductions, softmax, data movement)
      // ------------------------------------------------------------------------------------------
      const registered = () => new Set(nativeStatus().kernels);
      const gshape: Shape5 = [2, 7, 9, 5, 3];

      it('Add/Sub/Multiply/RealDiv match tfjs exactly, with and without broadcasting', () => {
        const a = rand(gshape);
        const others = [rand(gshape), rand([3]), rand([1, 7, 1, 5, 1]), rand([5, 3]), tf.scalar(0.37), rand([2, 1, 9, 1, 3])];
        for (const k of ['Add', 'Sub', 'Multiply', 'RealDiv']) {
          if (!registered().has(k)) continue;
          for (const b of others) {
            expect(compareWithTfjs(k, { a, b }, {}), `${k} ${b.shape}`).toBe(0);
            expect(compareWithTfjs(k, { a: b, b: a }, {}), `${k} ${b.shape} swapped`).toBe(0);
          }
        }
        // int32 falls back to tfjs
        const ai = tf.tensor([1, 2, 3], [3], 'int32'), bi = tf.tensor([4, 5, 6], [3], 'int32');
        expect(Array.from(run('Add', { a: ai, b: bi }, {})[0].values)).toEqual([5, 7, 9]);
        expect(Array.from(run('Multiply', { a: ai, b: bi }, {})[0].values)).toEqual([4, 10, 18]);
        tf.dispose([a, ...others, ai, bi]);
      });

      it('unary ops match tfjs (LeakyRelu, Relu, Square exactly; Sigmoid, Exp, Log)', () => {
        const x = tf.tidy(() => tf.concat([rand([1000], -30, 30), tf.tensor([0, -0, NaN, Infinity, -Infinity, 1e-40])]));
        const pos = tf.tidy(() => tf.concat([rand([1000], 0, 50), tf.tensor([0, 1e-30, -1, NaN, Infinity])]));
        const exact: [string, Record<string, unknown>][] = [['LeakyRelu', { alpha: 0.2 }], ['Relu', {}], ['Square', {}]];
        for (const [k, attrs] of exact) if (registered().has(k)) expect(compareWithTfjs(k, { x }, attrs), k).toBe(0);
        for (const k of ['Sigmoid', 'Exp']) if (registered().has(k)) expect(compareWithTfjs(k, { x }, {}), k).toBeLessThanOrEqual(TOL);
        if (registered().has('Log')) expect(compareWithTfjs('Log', { x: pos }, {}), 'Log').toBeLessThanOrEqual(TOL);
        tf.dispose([x, pos]);
      });

      it('Sum/Mean over axes match tfjs (contiguous axes native, others fall back)', () => {
        const x = rand(gshape, -2, 3);
        const axesList: (number | number[] | null)[] = [[1, 2, 3], [4], [0], [0, 1, 2, 3, 4], null, [2, 3], [1, 3], [-1], [0, 4]];
        for (const k of ['Sum', 'Mean']) {
          if (!registered().has(k)) continue;
          for (const axis of axesList)
            for (const keepDims of [false, true])
              expect(compareWithTfjs(k, { x }, { axis, keepDims }), `${k} ${JSON.stringify(axis)} ${keepDims}`).toBeLessThanOrEqual(TOL);
        }
        tf.dispose(x);
      });

      it('Softmax over the last axis matches tfjs', () => {
        if (!registered().has('Softmax')) return;
        for (const s of [gshape, [4, 1], [3, 17], [1, 5, 4, 3, 8]]) {
          const logits = rand(s, -10, 10);
          expect(compareWithTfjs('Softmax', { logits }, { dim: -1 }), `${s}`).toBeLessThanOrEqual(TOL);
          tf.dispose(logits);
        }
      });

      it('Slice/SplitV/Concat match tfjs exactly (float32, int32, bool)', () => {
        const xs = [rand(gshape), tf.tidy(() => tf.cast(rand(gshape, -50, 50), 'int32')), tf.tidy(() => tf.greater(rand(gshape), 0))];
        const list = (...t: tf.Tensor[]) => t as unknown as Record<string, tf.Tensor>;
        for (const x of xs) {
          if (registered().has('Slice')) {
            const slices: [number[], number[]][] = [
              [[0, 0, 0, 0, 1], [2, 7, 9, 5, 2]],
              [[1, 2, 3, 1, 0], [1, 4, 5, 3, 3]],
              [[1, 0, 0, 0, 0], [1, 7, 9, 5, 3]],
              [[0, 3, 0, 0, 0], [2, 2, 9, 5, 3]],
              [[0, 0, 0, 0, 2], [-1, -1, -1, -1, 1]],
            ];
            for (const [begin, size] of slices) expect(compareWithTfjs('Slice', { x }, { begin, size }), `Slice ${x.dtype} ${begin} ${size}`).toBe(0);
          }
          if (registered().has('SplitV')) {
            expect(compareWithTfjs('SplitV', { x }, { numOrSizeSplits: [1, 2], axis: 4 }), `SplitV ${x.dtype} ch`).toBe(0);
            expect(compareWithTfjs('SplitV', { x }, { numOrSizeSplits: [3, -1], axis: 1 }), `SplitV ${x.dtype} depth`).toBe(0);
            expect(compareWithTfjs('SplitV', { x }, { numOrSizeSplits: 2, axis: 0 }), `SplitV ${x.dtype} batch`).toBe(0);
          }
          if (registered().has('Concat')) {
            const y = tf.tidy(() => tf.reverse(x, 4));
            const z = tf.tidy(() => tf.slice(x, [0, 0, 0, 0, 0], [2, 7, 9, 5, 1]));
            expect(compareWithTfjs('Concat', list(x, y, z), { axis: 4 }), `Concat ${x.dtype} ch`).toBe(0);
            expect(compareWithTfjs('Concat', list(x, y), { axis: 1 }), `Concat ${x.dtype} depth`).toBe(0);
            expect(compareWithTfjs('Concat', list(x, y), { axis: -1 }), `Concat ${x.dtype} -1`).toBe(0);
            tf.dispose([y, z]);
          }
        }
        tf.dispose(xs);
      });

      it('Concat/Slice of volumes of 32 MiB and more (streaming stores) are exact', () => {
        const V = 64 * 64 * 64;
        const a = rand([1, 64, 64, 64, 16]), b = rand([1, 64, 64, 64, 16]);
        const av = a.dataSync(), bv = b.dataSync();
        if (registered().has('Concat')) {
          const out = run('Concat', { 0: a, 1: b } as unknown as Record<string, tf.Tensor>, { axis: 4 })[0];
          expect(out.shape).toEqual([1, 64, 64, 64, 32]);
          let bad = 0;
          for (let v = 0; v < V; v++)
            for (let c = 0; c < 32; c++) if (out.values[v * 32 + c] !== (c < 16 ? av[v * 16 + c] : bv[v * 16 + c - 16])) bad++;
          expect(bad, 'Concat').toBe(0);
        }
        if (registered().has('Slice')) {
          const x = tf.tidy(() => tf.concat([a, b, tf.slice(a, [0, 0, 0, 0, 0], [-1, -1, -1, -1, 8])], 4)); // 40 channels
          const xv = x.dataSync();
          for (const [begin, c] of [[0, 32], [4, 32], [8, 24]] as [number, number][]) {
            const out = run('Slice', { x }, { begin: [0, 0, 0, 0, begin], size: [-1, -1, -1, -1, c] })[0];
            let bad = 0;
            for (let v = 0; v < V; v++) for (let k = 0; k < c; k++) if (out.values[v * c + k] !== xv[v * 40 + begin + k]) bad++;
            expect(bad, `Slice channels ${begin}..${begin + c}`).toBe(0);
          }
          x.dispose();
        }
        tf.dispose([a, b]);
      });

      it('Transpose/PadV2 match tfjs exactly', () => {
        const xs = [rand(gshape), tf.tidy(() => tf.cast(rand(gshape, -50, 50), 'int32'))];
        for (const x of xs) {
          if (registered().has('Transpose'))
            for (const perm of [[0, 4, 1, 2, 3], [0, 2, 3, 4, 1], [4, 3, 2, 1, 0], [0, 1, 3, 2, 4]])
              expect(compareWithTfjs('Transpose', { x }, { perm }), `Transpose ${x.dtype} ${perm}`).toBe(0);
          if (registered().has('PadV2'))
            for (const [paddings, constantValue] of [
              [[[0, 0], [1, 1], [2, 0], [0, 3], [0, 0]], 0],
              [[[1, 0], [0, 0], [1, 1], [1, 1], [2, 1]], 1.5],
            ] as [number[][], number][])
              expect(compareWithTfjs('PadV2', { x }, { paddings, constantValue }), `PadV2 ${x.dtype} ${JSON.stringify(paddings)}`).toBe(0);
        }
        tf.dispose(xs);
      });
      });
    }

    // The zmm convolutions regroup channels into 16-lane vectors and change nothing else: every sum
    // runs in the same order, so their results are avx512vl's bit for bit (a stronger check than the
    // tolerance against tfjs above, and one that catches a wrong lane, mask or stride at once).
    describe.skipIf(!simdInfo?.avx512Available)('avx512-zmm convolutions equal avx512vl bit for bit', () => {
      afterAll(() => {
        setNativeSimd(defaultSimd);
      });
      const cases: { x: Shape5; co: number; k: number; s: number }[] = [
        { x: [1, 5, 6, 30, 16], co: 16, k: 3, s: 1 },
        { x: [1, 4, 5, 27, 32], co: 32, k: 3, s: 1 },
        { x: [1, 4, 4, 26, 48], co: 48, k: 3, s: 1 },
        { x: [1, 4, 4, 13, 64], co: 64, k: 3, s: 1 },
        { x: [1, 3, 3, 9, 128], co: 256, k: 3, s: 1 },
        { x: [2, 8, 7, 21, 16], co: 32, k: 3, s: 2 },
        { x: [1, 6, 5, 23, 24], co: 16, k: 3, s: 1 }, // ci not a multiple of 16: forward zmm, backprop-input ymm
        { x: [1, 5, 6, 22, 16], co: 16, k: 3, s: 2 },
        { x: [1, 16, 16, 20, 32], co: 16, k: 1, s: 1 },
        // Wide 1-vector tiles (input strides 16, 32, 4; a strided backprop-input reads dy of 32)
        // between narrow border blocks.
        { x: [1, 3, 4, 48, 16], co: 16, k: 3, s: 1 },
        { x: [1, 3, 3, 40, 32], co: 16, k: 3, s: 1 },
        { x: [1, 3, 3, 41, 4], co: 16, k: 3, s: 1 },
        { x: [1, 4, 4, 70, 16], co: 32, k: 3, s: 2 },
      ];
      for (const c of cases) {
        it(`${c.x.join('x')} -> ${c.co}, filter ${c.k}, stride ${c.s}`, () => {
          const x = rand(c.x);
          const filter = rand([c.k, c.k, c.k, c.x[4], c.co]);
          const strides = [c.s, c.s, c.s];
          const y = tf.conv3d(x as tf.Tensor5D, filter as tf.Tensor5D, c.s, 'same');
          const dy = rand(y.shape);
          const all = () => [
            ...run('Conv3D', { x, filter }, { strides, pad: 'same', dataFormat: 'NDHWC', dilations: [1, 1, 1] }),
            ...run('Conv3DBackpropInputV2', { dy, filter }, { strides, pad: 'same', inputShape: c.x }),
            ...run('Conv3DBackpropFilterV2', { x, dy }, { strides, pad: 'same', filterShape: filter.shape }),
          ].map((r) => Float32Array.from(r.values));
          expect(setNativeSimd('avx512vl')).toBe('avx512vl');
          const ymm = all();
          expect(setNativeSimd('avx512-zmm')).toBe('avx512-zmm');
          const zmm = all();
          for (let i = 0; i < 3; i++) {
            // Count differing elements rather than toEqual on the arrays (a diff of large arrays hangs).
            let differ = 0;
            for (let j = 0; j < ymm[i]!.length; j++) if (!Object.is(ymm[i]![j], zmm[i]![j])) differ++;
            expect(differ, ['Conv3D', 'Conv3DBackpropInputV2', 'Conv3DBackpropFilterV2'][i]).toBe(0);
            expect(zmm[i]!.length).toBe(ymm[i]!.length);
          }
          tf.dispose([x, filter, y, dy]);
        });
      }
    });

    describe('output-buffer cache', () => {
      // A gc() for this process (V8 frees an ArrayBuffer's memory, and the cache gets it back, at a GC).
      v8.setFlagsFromString('--expose-gc');
      const gc = vm.runInNewContext('gc') as (() => void) | undefined;
      const a = nativeAddon()!;
      let saved: ReturnType<typeof bufferCache>;
      beforeAll(() => {
        saved = bufferCache();
      });
      afterAll(() => {
        if (saved) bufferCache({ capBytes: saved.capBytes, minBytes: saved.minBytes, maxAgeMs: saved.maxAgeMs, poison: false });
      });

      it.skipIf(!bufferCache()?.enabled)('hands out exact-size buffers, zeroed when asked, and takes them back at a GC', async () => {
        bufferCache({ capBytes: 64 << 20, minBytes: 1 << 20, maxAgeMs: 60_000, poison: false, trim: true });
        expect(a.allocBuffer((1 << 20) - 4, true)).toBeNull(); // below minBytes: the caller allocates
        const bytes = (3 << 20) + 12;
        let buf: ArrayBufferLike | null = a.allocBuffer(bytes, true);
        expect(buf).toBeInstanceOf(ArrayBuffer);
        expect(buf!.byteLength).toBe(bytes);
        let view: Float32Array | null = new Float32Array(buf!);
        expect(view.every((v) => v === 0)).toBe(true);
        view.fill(7);
        buf = null;
        view = null;
        expect(gc, "gc() via --expose-gc").toBeTypeOf("function");
        if (!gc) return;
        for (let i = 0; i < 100 && bufferCache()!.cachedBytes < bytes; i++) {
          gc();
          await new Promise((r) => setTimeout(r, 10));
        }
        const s0 = bufferCache()!;
        expect(s0.cachedBytes).toBeGreaterThanOrEqual(bytes);
        // Recycled: zeroed when asked; NaN bytes with poison when not.
        const z = new Float32Array(a.allocBuffer(bytes, true)!);
        expect(bufferCache()!.hits).toBe(s0.hits + 1);
        expect(z.every((v) => v === 0)).toBe(true);
        bufferCache({ poison: true });
        const p = new Float32Array(a.allocBuffer(bytes, false)!);
        expect(p.every((v) => Number.isNaN(v))).toBe(true);
        bufferCache({ poison: false, trim: true });
        expect(bufferCache()!.cachedBytes).toBe(0);
        expect(z.length + p.length).toBeGreaterThan(0);
      });

      it('shareNativeOutputs: outputs of 64 KiB or more live in SharedArrayBuffers (cache on or off), same results, until released', () => {
        const x = rand([1, 24, 24, 24, 32]); // 1.7 MiB outputs: from the cache
        const small = rand([1, 8, 8, 8, 8]); // 16 KiB: plain
        const mid = rand([1, 16, 16, 16, 8]); // 128 KiB: below the cache's minimum, a fresh SharedArrayBuffer
        const g = rand([32], 0.5, 1.5), b = rand([32]);
        const g8 = rand([8], 0.5, 1.5), b8 = rand([8]);
        const norm = (t: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => run('VolInstanceNormForward', { x: t, gamma: gg, beta: bb }, { epsilon: 1e-5, alpha: 0.01 });
        const plain = norm(x, g, b);
        expect(plain[0]!.values.buffer).toBeInstanceOf(ArrayBuffer);
        const release = shareNativeOutputs();
        try {
          for (const capBytes of [saved?.capBytes ?? 0, 0]) {
            bufferCache({ capBytes });
            const shared = norm(x, g, b);
            expect(shared[0]!.values.buffer).toBeInstanceOf(SharedArrayBuffer);
            expect(Array.from(shared[0]!.values)).toEqual(Array.from(plain[0]!.values));
            expect(norm(mid, g8, b8)[0]!.values.buffer).toBeInstanceOf(SharedArrayBuffer);
            expect(norm(small, g8, b8)[0]!.values.buffer).toBeInstanceOf(ArrayBuffer);
          }
        } finally {
          release();
          if (saved) bufferCache({ capBytes: saved.capBytes });
        }
        expect(norm(x, g, b)[0]!.values.buffer).toBeInstanceOf(ArrayBuffer);
        tf.dispose([x, small, mid, g, b, g8, b8]);
      });

      describe('buffers back at dispose', () => {
        const norm = (t: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.engine().runKernel('VolInstanceNormForward', { x: t, gamma: g, beta: b }, { epsilon: 1e-5, alpha: 0.01 }) as tf.Tensor[];
        /** The backend's own array of t (what kernels read), without handing it out as dataSync does. */
        const own = (t: tf.Tensor) => (tf.backend() as unknown as { data: { get(id: object): { values: Float32Array } } }).data.get(t.dataId).values;
        const shape: Shape5 = [1, 24, 24, 24, 32]; // 1.7 MiB outputs: from the cache
        const enabled = !!bufferCache()?.enabled && bufferRelease().enabled;

        it.skipIf(!enabled)('a disposed output is the next same-size output, with no GC in between; trim empties the pool', () => {
          bufferCache({ capBytes: 64 << 20, minBytes: 1 << 20, maxAgeMs: 60_000, poison: false, trim: true });
          const x = rand(shape), g = rand([32], 0.5, 1.5), b = rand([32]);
          const first = norm(x, g, b);
          // The large outputs (y and x̂, 1.7 MiB each; invStd is small).
          const bufs = first.map(own).filter((v) => v.byteLength >= 1 << 20).map((v) => v.buffer);
          expect(bufs.length).toBeGreaterThan(0);
          const before = bufferRelease();
          tf.dispose(first);
          expect(bufferRelease().buffers).toBe(before.buffers + bufs.length);
          expect(bufferCache()!.pooledBytes).toBe(bufs.reduce((n, b) => n + b.byteLength, 0));
          const second = norm(x, g, b);
          const again = second.map(own).filter((v) => v.byteLength >= 1 << 20).map((v) => v.buffer);
          // The same ArrayBuffers (identity, compared as booleans: a failing toBe would print megabytes).
          expect(again.every((buf) => bufs.includes(buf)) && again.length === bufs.length).toBe(true);
          expect(bufferCache()!.pooledBytes).toBe(0);
          tf.dispose(second);
          bufferCache({ trim: true });
          expect(bufferCache()!.pooledBytes).toBe(0);
          expect(bufferCache()!.cachedBytes).toBe(0);
          tf.dispose([x, g, b]);
        });

        it.skipIf(!enabled)('inside a shareNativeOutputs window shared outputs are recycled among themselves, never as plain ones', () => {
          bufferCache({ capBytes: 64 << 20, minBytes: 1 << 20, maxAgeMs: 60_000, poison: false, trim: true });
          const x = rand(shape), g = rand([32], 0.5, 1.5), b = rand([32]);
          const release = shareNativeOutputs();
          let sharedBufs: ArrayBufferLike[];
          try {
            const first = norm(x, g, b);
            sharedBufs = first.map(own).filter((v) => v.byteLength >= 1 << 20).map((v) => v.buffer);
            expect(sharedBufs.length > 0 && sharedBufs.every((buf) => buf instanceof SharedArrayBuffer)).toBe(true);
            tf.dispose(first);
            const second = norm(x, g, b);
            const again = second.map(own).filter((v) => v.byteLength >= 1 << 20).map((v) => v.buffer);
            expect(again.length === sharedBufs.length && again.every((buf) => sharedBufs.includes(buf))).toBe(true);
            tf.dispose(second);
          } finally {
            release();
          }
          const plain = norm(x, g, b);
          expect(plain.some((o) => sharedBufs.includes(own(o).buffer))).toBe(false);
          expect(plain.every((o) => own(o).buffer instanceof ArrayBuffer)).toBe(true);
          tf.dispose(plain);
          bufferCache({ trim: true });
          expect(bufferCache()!.pooledBytes).toBe(0);
          tf.dispose([x, g, b]);
        });

        it.skipIf(!enabled)('values handed out by dataSync() stay valid after dispose and are never reused', () => {
          bufferCache({ capBytes: 64 << 20, minBytes: 1 << 20, maxAgeMs: 60_000, poison: true, trim: true });
          const x = rand(shape), g = rand([32], 0.5, 1.5), b = rand([32]);
          const [y, ...rest] = norm(x, g, b);
          const v = y!.dataSync() as Float32Array;
          const copy = Float32Array.from(v);
          tf.dispose([y!, ...rest]);
          for (let i = 0; i < 3; i++) {
            const outs = norm(x, g, b);
            expect(outs.some((o) => own(o).buffer === v.buffer)).toBe(false);
            tf.dispose(outs);
          }
          expect(v.length).toBe(copy.length);
          expect(v.every((e, i) => Object.is(e, copy[i]))).toBe(true);
          bufferCache({ poison: false, trim: true });
          tf.dispose([x, g, b]);
        });

        it.skipIf(!enabled)('a contiguous slice (a view into its source) keeps the buffer after the source is disposed', () => {
          bufferCache({ capBytes: 64 << 20, minBytes: 1 << 20, maxAgeMs: 60_000, poison: true, trim: true });
          const x = rand(shape), g = rand([32], 0.5, 1.5), b = rand([32]);
          const [y, ...rest] = norm(x, g, b);
          const s = tf.slice(y!, [0, 0, 0, 0, 0], [1, 12, 24, 24, 32]);
          expect(own(s).buffer === own(y!).buffer).toBe(true);
          const expected = Float32Array.from(own(y!).subarray(0, s.size));
          tf.dispose([y!, ...rest]);
          const outs = norm(x, g, b);
          expect(outs.some((o) => own(o).buffer === own(s).buffer)).toBe(false);
          expect(Array.from(own(s)).every((v, i) => Object.is(v, expected[i]))).toBe(true);
          // Disposing the slice, the last entry over the buffer, hands it back.
          const before = bufferRelease().buffers;
          s.dispose();
          expect(bufferRelease().buffers).toBe(before + 1);
          bufferCache({ poison: false, trim: true });
          tf.dispose([...outs, x, g, b]);
        });

        it.skipIf(!enabled)('over the cap a released buffer is detached into the addon cache at once', () => {
          const x = rand(shape), g = rand([32], 0.5, 1.5), b = rand([32]);
          const [y, ...rest] = norm(x, g, b);
          const view = own(y!);
          const bytes = view.byteLength;
          // Room for one such buffer in the pool: the first released one is pooled, later ones are
          // detached, and the addon's cache keeps at most what the pool leaves of the cap.
          const cap = bytes + (bytes >> 1);
          bufferCache({ capBytes: cap, minBytes: 1 << 20, maxAgeMs: 60_000, poison: false, trim: true });
          const [z, ...restZ] = norm(x, g, b);
          tf.dispose([z!, ...restZ]);
          expect(bufferCache()!.pooledBytes).toBe(bytes);
          tf.dispose([y!, ...rest]);
          expect(view.length).toBe(0); // detached: reads as empty, never as another tensor's values
          const after = bufferCache()!;
          expect(after.pooledBytes).toBe(bytes);
          expect(after.pooledBytes! + after.cachedBytes).toBeLessThanOrEqual(cap);
          if (saved) bufferCache({ capBytes: saved.capBytes, maxAgeMs: saved.maxAgeMs, trim: true });
          tf.dispose([x, g, b]);
        });
      });

      it('capBytes 0 turns it off: kernels allocate plain typed arrays, same results', () => {
        const x = rand([1, 24, 24, 24, 32]); // 1.7 MiB outputs
        const g = rand([32], 0.5, 1.5), b = rand([32]);
        const on = run('VolInstanceNormForward', { x, gamma: g, beta: b }, { epsilon: 1e-5, alpha: 0.01 });
        bufferCache({ capBytes: 0 });
        expect(a.allocBuffer(4 << 20, false)).toBeNull();
        const off = run('VolInstanceNormForward', { x, gamma: g, beta: b }, { epsilon: 1e-5, alpha: 0.01 });
        if (saved) bufferCache({ capBytes: saved.capBytes });
        for (let i = 0; i < 3; i++) expect(Array.from(off[i]!.values)).toEqual(Array.from(on[i]!.values));
        tf.dispose([x, g, b]);
      });
    });

    it('the native kernels release the tensors they allocate', () => {
      const x = rand([1, 6, 6, 6, 4]);
      const filter = rand([3, 3, 3, 4, 4]);
      const before = tf.memory().numTensors;
      for (let i = 0; i < 3; i++) tf.dispose(tf.conv3d(x as tf.Tensor5D, filter as tf.Tensor5D, 1, 'same'));
      expect(tf.memory().numTensors).toBe(before);
      tf.dispose([x, filter]);
    });
  },
);

describe('copyFloats (bulk copies on the native pool, e.g. the host link staging swap-outs)', () => {
  it('copies exactly: below 1 MiB, at 1 MiB and more with a tail of rows, into a longer or shared destination; refuses a shorter one', () => {
    for (const n of [1000, 1 << 18, (1 << 18) + 4096 * 3 + 17, 3_000_001]) {
      const src = new Float32Array(n);
      for (let i = 0; i < n; i++) src[i] = (i % 9973) - 0.5 * (i % 7);
      for (const dst of [new Float32Array(n + 5).fill(-7), new Float32Array(new SharedArrayBuffer(4 * n))]) {
        copyFloats(dst, src);
        let differ = 0;
        for (let i = 0; i < n; i++) if (dst[i] !== src[i]) differ++;
        expect(differ, `n = ${n}`).toBe(0);
        // Nothing past the source's length is written.
        for (let i = n; i < dst.length; i++) expect(dst[i]).toBe(-7);
      }
    }
    expect(() => copyFloats(new Float32Array(3), new Float32Array(4))).toThrow(/destination has 3 elements, source 4/);
  });
});
