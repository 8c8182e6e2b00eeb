/**
 * core/engine/ — Networks and their training step: the graph and its layers, the StepPlan a strategy hands in, the
 * step's schedule (its ordered events, with their memory effects), the executor that runs it, and a network
 * as plain JSON (serialize.ts) for worker threads.
 */
export * from './graph.js';
export * from './layers.js';
export * from './plan.js';
export * from './schedule.js';
export * from './executor.js';
export * from './serialize.js';
