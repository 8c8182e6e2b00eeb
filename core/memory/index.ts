/**
 * core/memory/ — Device memory: the meter that measures it (distinct live backend buffers, seen at every allocation)
 * and the estimator that predicts a step's peak by walking the step's schedule.
 */
export * from './meter.js';
export * from './estimator.js';
