/**
 * core/experiment/ — Running experiments: the runner (plan → train → evaluate → record, one trial record the moment a trial
 * ends), trial records and the summary regenerated from them, merging shards' records, the shards of a sweep, predicting
 * with a saved model, progress.
 */
export * from './runner.js';
export * from './results.js';
export * from './prediction.js';
export * from './progress.js';
export * from './comparison.js';
export * from './plots.js';
export * from './labels.js';
export * from './shards.js';
