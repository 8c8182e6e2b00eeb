/**
 * core/queue/ — Sweeps across machines on a queue: BullMQ on Redis (Debian's redis-server; never bundled).
 * The coordinator enqueues a sweep's unrecorded trials, one job per trial keyed by its trial id, and is the
 * only writer of the results folder; workers on any machine with the project and the data pull trials and
 * run each in a child process of its own, sending the record rows back. The sweep's local pieces (trial ids,
 * resume, the record writers, the summary) are core/experiment's.
 */
export * from './connection.js';
export * from './jobs.js';
export * from './coordinator.js';
export * from './worker.js';
export * from './trial-process.js';
