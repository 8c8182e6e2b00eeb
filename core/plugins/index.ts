/**
 * core/plugins/ — The plugin contracts (dataset, architecture, memory strategy: data plus `create`, registered by name)
 * and the catalog that holds them (inversify).
 */
export * from './contracts.js';
export * from './container.js';
