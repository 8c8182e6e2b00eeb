/**
 * core/evaluation/ — Evaluation: Dice and HD95 (MedPy/BraTS definitions) per region, and the encodings between label maps,
 * network targets and predicted probabilities.
 */
export * from './metrics.js';
