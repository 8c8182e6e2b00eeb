/**
 * core/inference/ — Inference: a network run on one window, one pass over a whole volume, and sliding windows blended by
 * an importance map (MONAI's sliding_window_inference).
 */
export * from './window.js';
export * from './full-volume.js';
export * from './sliding-window.js';
