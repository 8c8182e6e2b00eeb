/**
 * The project's kernels, by name: what tfjs lacks or composes slowly for these networks. Each backend
 * registers its own implementation under the name (core/backend/kernels/cpu/ for tfjs's cpu backend, and
 * the native addon re-registers the same names with C++ code); an op finds no kernel on a backend that
 * registered none and composes tfjs ops instead (core/backend/kernels/ops.ts).
 *
 * - VolInstanceNormForward {x, gamma, beta} {epsilon, alpha, withXhat?, inPlace?} -> [y, xhat, invStd]
 *     instance norm over the spatial axes of NDHWC fused with leaky ReLU (alpha = 1: no activation);
 *     withXhat false: [y, invStd] (no x̂ buffer); inPlace: y is written over x (x's own buffer).
 * - VolInstanceNormBackward {dy, xhat, invStd, gamma, beta} {alpha, inPlace?, fromOutput?} -> [dx, dgamma, dbeta]
 *     inPlace: dx is written over dy (dy's own buffer); fromOutput: the `xhat` input is the forward's
 *     output y (lean saves, in-place normalisation; alpha > 0), and x̂ = (z − β)/γ, z = y ≥ 0 ? y : y/α,
 *     is rebuilt element by element inside the kernel (no x̂ buffer).
 * - VolUpsampleNearest3D {x} {factor} -> y ; VolUpsampleNearest3DGrad {dy} {factor} -> dx
 * - VolPackHalf {x} -> [ceil(n/2)] int32, two binary16 values per element (value 2k in the low half of k);
 *   VolUnpackHalf {packed} {shape} -> float32 of shape. Registered where host arrays are absent (webgpu/);
 *   on host arrays me-fcn packs on the host.
 */
export const INSTANCE_NORM_FORWARD = 'VolInstanceNormForward';
export const INSTANCE_NORM_BACKWARD = 'VolInstanceNormBackward';
export const UPSAMPLE_NEAREST = 'VolUpsampleNearest3D';
export const UPSAMPLE_NEAREST_GRAD = 'VolUpsampleNearest3DGrad';
export const PACK_HALF = 'VolPackHalf';
export const UNPACK_HALF = 'VolUnpackHalf';

/** Attributes of VolInstanceNormForward (withXhat default true, inPlace default false). */
export interface NormForwardAttrs {
  epsilon: number;
  alpha: number;
  withXhat?: boolean;
  inPlace?: boolean;
}

/** Attributes of VolInstanceNormBackward (inPlace and fromOutput default false). */
export interface NormBackwardAttrs {
  alpha: number;
  inPlace?: boolean;
  fromOutput?: boolean;
}
