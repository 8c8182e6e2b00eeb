/**
 * core/parallel/ — Ranks for spatial partitioning: the collectives (collective.ts: halo exchange between
 * neighbouring slabs, a rank-ordered all-reduce, a barrier; SharedMemoryCollective between threads), the
 * worker group that runs SPMD calls on P worker threads (group.ts, started through bootstrap.mjs), and a
 * rank's own tfjs engine and memory meter (worker-runtime.ts, imported by the ranks' entry modules).
 */
export * from './collective.js';
export * from './group.js';
export * from './worker-runtime.js';
