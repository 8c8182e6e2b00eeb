/**
 * One trial in a process of its own, started by `npm run worker` (core/queue/worker.ts) for each job: it
 * builds the plugin catalog, runs the trial it is sent over IPC, and sends back its record rows.
 */
import { ExperimentRunner } from '../../core/experiment/index.js';
import { serveTrialProcess } from '../../core/queue/index.js';
import { buildContainer } from './plugins.js';

serveTrialProcess(() => new ExperimentRunner(buildContainer().catalog));
