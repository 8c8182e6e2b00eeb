/**
 * In-place updates on the cpu backend, where a tensor's values are a Float32Array the backend owns.
 *
 * tfjs tensors are immutable, so `a + b` allocates a third buffer while both inputs are alive; gradient
 * accumulation and the optimizer update do this for every tensor they touch. Where the backend is cpu
 * and no other tensor shares the buffer (the backend's reference count is 1: no clone or reshape of it
 * exists; and its values are a whole ArrayBuffer, not a slice's view), writing into it is safe and
 * allocates nothing, as PyTorch's `grad +=` and its in-place Adam do. Other backends keep the allocating
 * tf-op path. The reverse case, a contiguous slice's view INTO the buffer (its own id, so the reference
 * count does not show it), is for the caller to rule out: `sharesStorage` checks a set of tensors.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import { capabilities } from './capabilities.js';
import { activeAddon } from './native-kernels.js';

interface CpuBackendLike {
  data: { get(dataId: object): { values: unknown } };
  refCount(dataId: object): number;
}

/** The cpu backend's own values of `t` when it is float32 and no other tensor shares its buffer; else null. */
export function exclusiveValues(t: Tensor): Float32Array | null {
  if (t.dtype !== 'float32' || !capabilities().inPlaceWrites || t.isDisposed) return null;
  const backend = tf.backend() as unknown as CpuBackendLike;
  if (typeof backend.refCount !== 'function' || backend.refCount(t.dataId) !== 1) return null;
  const v = backend.data.get(t.dataId).values;
  // A view into a larger buffer (the cpu backend's contiguous slice) shares memory without sharing the id.
  if (!(v instanceof Float32Array) || v.length !== t.size || v.byteOffset !== 0 || v.byteLength !== v.buffer.byteLength) return null;
  return v;
}

/**
 * `t`'s values to read now, not to keep: on host-array backends the backend's own array, which (unlike
 * dataSync's) is not handed out, so its buffer may be recycled as soon as `t` is disposed
 * (native-kernels.ts) and then holds another tensor's values. Anywhere else, dataSync().
 */
export function peekValues(t: Tensor): Float32Array | Int32Array | Uint8Array {
  if (capabilities().hostArrays && !t.isDisposed && t.dtype !== 'string' && t.dtype !== 'complex64') {
    const v = (tf.backend() as unknown as CpuBackendLike).data.get(t.dataId).values;
    if (v instanceof Float32Array || v instanceof Int32Array || v instanceof Uint8Array) return v;
  }
  return t.dataSync() as Float32Array | Int32Array | Uint8Array;
}

/** Whether any of `others` (other than `t` itself) is backed by the same memory as `t` (cpu backend). */
export function sharesStorage(t: Tensor, others: Iterable<Tensor>): boolean {
  if (!capabilities().hostArrays || t.isDisposed) return false;
  const data = (tf.backend() as unknown as CpuBackendLike).data;
  const mine = data.get(t.dataId).values;
  if (!ArrayBuffer.isView(mine)) return false;
  for (const o of others) {
    if (o === t || o.isDisposed || o.dataId === t.dataId) continue;
    const v = data.get(o.dataId).values;
    if (ArrayBuffer.isView(v) && v.buffer === mine.buffer) return true;
  }
  return false;
}

/**
 * `target + g`: written into `target` when it is exclusively owned on the cpu backend (returns `target`),
 * else a new tensor (the caller then disposes `target`). Disposes `g` either way.
 */
export function addInto(target: Tensor, g: Tensor): Tensor {
  if (target.shape.join() !== g.shape.join()) throw new Error(`gradient accumulation: shapes differ [${target.shape}] vs [${g.shape}]`);
  const out = exclusiveValues(target);
  if (out) {
    const gv = peekValues(g) as Float32Array;
    const native = activeAddon();
    // The addon's element-wise add on the pool (the same float32 sums), else this loop.
    if (native) native.binary(0, out, gv, out);
    else for (let i = 0; i < out.length; i++) out[i]! += gv[i]!;
    g.dispose();
    return target;
  }
  const sum = tf.add(target, g);
  target.dispose();
  g.dispose();
  return sum;
}

/**
 * One Adam update written into the parameter's and the moments' arrays: m = β₁m + (1−β₁)g,
 * v = β₂v + (1−β₂)g², p −= stepSize·m/(√(v/c2) + ε), in float64 with m and v rounded when stored. On the
 * addon's pool where its kernels are active (bit-identical: the same double arithmetic), else in JavaScript.
 */
export function adamUpdate(
  p: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  hyper: { stepSize: number; c2: number; beta1: number; beta2: number; epsilon: number },
): void {
  const { stepSize, c2, beta1, beta2, epsilon } = hyper;
  const native = activeAddon();
  if (native) {
    native.adam(p, g, m, v, Float64Array.of(stepSize, c2, beta1, beta2, epsilon));
    return;
  }
  for (let i = 0; i < p.length; i++) {
    const gi = g[i]!;
    const mi = m[i]! * beta1 + gi * (1 - beta1);
    const vi = v[i]! * beta2 + gi * gi * (1 - beta2);
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i]! - (mi * stepSize) / (Math.sqrt(vi / c2) + epsilon);
  }
}
