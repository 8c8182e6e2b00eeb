/**
 * core/data/ — Data on the host: channels-last volumes and their boxes and padding (volume.ts), the seeded random
 * source every plugin draws from (rng.ts), the BraTS task encoding the BraTS-like datasets share, and the
 * dataset a generator makes (generated.ts).
 */
export * from './volume.js';
export * from './rng.js';
export * from './brats-task.js';
export * from './generated.js';
export * from './fields.js';
