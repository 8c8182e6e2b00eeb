/**
 * core/evaluation/ — Evaluation: Dice and HD95 (MedPy/BraTS definitions) per region, and the encodings between label maps,
 * network targets and predicted probabilities, and the paired statistics that compare strategies (bootstrap
 * interval over cases and seeds, Wilcoxon signed-rank).
 */
export * from './metrics.js';
export * from './statistics.js';
