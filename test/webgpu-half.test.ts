/**
 * me-fcn's half-precision saves on tfjs's WebGPU backend (core/backend/kernels/webgpu/half.ts): the
 * device packing (WGSL pack2x16float) gives the same bits as the host packing (architectures/me-fcn.ts,
 * round to nearest even), and unpacking gives back the half values exactly. Skips where WebGPU cannot run,
 * unless VOLSEG_REQUIRE_WEBGPU=1 (CI).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { floatToHalfBits, halfBitsToFloat, packHalf, unpackHalf } from '../architectures/me-fcn.js';
import { SeededRng } from '../core/data/rng.js';
import { webgpuSkipReason } from './helpers/webgpu.js';

const why = webgpuSkipReason('webgpu-half.test.ts');

describe.skipIf(why !== null)('half-precision packing on WebGPU equals the host packing', () => {
  beforeAll(async () => {
    const backend = await import('../core/backend/index.js');
    await backend.initBackend('webgpu');
  });

  it('bit for bit over 100001 values (odd count) spanning subnormal to large magnitudes, and back exactly', async () => {
    const n = 100_001;
    const rng = new SeededRng(3);
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = rng.normal() * 10 * Math.exp(rng.normal() * 4);
    v[0] = 0;
    v[1] = -0;
    v[2] = 65504; // the largest half
    v[3] = 2 ** -24; // the smallest subnormal half
    const x = tf.tensor(v);
    const packed = packHalf(x);
    expect(packed.dtype).toBe('int32');
    expect(packed.shape).toEqual([Math.ceil(n / 2)]);
    const got = new Uint16Array(((await packed.data()) as Int32Array).buffer, 0, n);
    const want = new Uint16Array(n);
    floatToHalfBits(v, want);
    let mismatches = 0;
    for (let i = 0; i < n; i++) if (got[i] !== want[i]) mismatches++;
    expect(mismatches).toBe(0);
    const back = (await unpackHalf(packed, [n]).data()) as Float32Array;
    const exact = new Float32Array(n);
    halfBitsToFloat(want, exact, n);
    expect(Array.from(back)).toEqual(Array.from(exact));
  });
});
