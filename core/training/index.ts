/**
 * core/training/ — Training: the losses, parameters and Adam, the training loop every caller shares, and the whole-volume
 * sample the full-volume strategies share.
 */
export * from './loss.js';
export * from './optimizer.js';
export * from './loop.js';
export * from './samples.js';
