/** The cpu backend's arrays, as its kernels read and write them (shared by the kernels in this folder). */
import type { TensorInfo } from '@tensorflow/tfjs-core';

interface CpuBackendLike {
  data: { get(dataId: object): { values: unknown } };
  makeTensorInfo(shape: number[], dtype: 'float32', values: Float32Array): TensorInfo;
  incRef(dataId: object): void;
}

export function values(backend: unknown, t: TensorInfo): Float32Array {
  const v = (backend as CpuBackendLike).data.get(t.dataId).values;
  if (!(v instanceof Float32Array)) throw new Error(`kernel input of dtype ${t.dtype}: only float32 is supported`);
  return v;
}

export function output(backend: unknown, shape: number[], data: Float32Array): TensorInfo {
  return (backend as CpuBackendLike).makeTensorInfo(shape, 'float32', data);
}

/** An output that is `t`'s own buffer, written in place (one more reference, as tfjs's Reshape does). */
export function sameBuffer(backend: unknown, t: TensorInfo): TensorInfo {
  (backend as CpuBackendLike).incRef(t.dataId);
  return { dataId: t.dataId, shape: t.shape.slice(), dtype: t.dtype };
}

/** Spatial size S and channels C of an NDHWC shape. */
export function dims(shape: number[]): { n: number; s: number; c: number } {
  if (shape.length !== 5) throw new Error(`expected a 5-D NDHWC tensor, got shape [${shape}]`);
  return { n: shape[0]!, s: shape[1]! * shape[2]! * shape[3]!, c: shape[4]! };
}

