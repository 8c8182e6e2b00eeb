/**
 * core/config/ — Settings and experiment files: each plugin's settings schema (its type follows from it: SettingsOf)
 * and the experiment YAML files, read, checked and expanded into trials before anything runs.
 * Imports nothing of core/ but types.ts.
 */
export * from './settings.js';
export * from './experiment.js';
export * from './reference.js';
