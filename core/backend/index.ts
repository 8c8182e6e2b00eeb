/**
 * core/backend/ — The tensor backend: choosing and starting it (backends.ts), what it can do (capabilities.ts: the rest
 * of the framework asks there and never tfjs), the project's kernels registered per backend (kernels/),
 * the native addon's C++ kernels for the cpu backend (native-kernels.ts, native/), in-place writes, and
 * host → device copies that start when issued (transfer.ts).
 */
export * from './backends.js';
export * from './capabilities.js';
export * from './in-place.js';
export * from './transfer.js';
export * from './kernels/index.js';
export * from './kernels/ops.js';
export * from './native-kernels.js';
