/**
 * core/engine/ — Networks and their training step: the graph and its layers, the StepPlan a strategy hands in, the
 * step's schedule (its ordered events, with their memory effects), and the executor that runs it.
 */
export * from './graph.js';
export * from './layers.js';
export * from './plan.js';
export * from './schedule.js';
export * from './executor.js';
