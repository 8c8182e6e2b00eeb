/**
 * The dependency-injection container (inversify). Plugins are bound by kind under their registered name;
 * the runner and the commands resolve them by name only. core/ imports no plugin: the composition root
 * (experiments/cli/plugins.ts) hands the plugin lists in.
 */
import 'reflect-metadata';
import { Container } from 'inversify';
import type { PluginKind } from '../types.js';
import type { Dataset } from '../types.js';
import type { Architecture, ArchitecturePlugin, DatasetPlugin, MemoryStrategy, Plugin, StrategyPlugin } from './contracts.js';
import type { PluginCatalogView } from '../config/index.js';

export const TOKENS = {
  plugin: {
    dataset: Symbol.for('volseg.DatasetPlugin'),
    architecture: Symbol.for('volseg.ArchitecturePlugin'),
    strategy: Symbol.for('volseg.StrategyPlugin'),
    backend: Symbol.for('volseg.BackendPlugin'),
  } satisfies Record<PluginKind, symbol>,
  catalog: Symbol.for('volseg.PluginCatalog'),
};

const PLURAL: Record<PluginKind, string> = {
  dataset: 'datasets',
  architecture: 'architectures',
  strategy: 'strategies',
  backend: 'backends',
};

export class UnknownPluginError extends Error {
  constructor(kind: PluginKind, name: string, known: string[]) {
    super(`unknown ${kind} "${name}"; registered ${PLURAL[kind]}: ${known.join(', ') || '(none)'}`);
    this.name = 'UnknownPluginError';
  }
}

/** Plugins by kind and name, backed by the container. */
export class PluginCatalog implements PluginCatalogView {
  private readonly registered = new Map<PluginKind, string[]>();

  constructor(private readonly container: Container) {}

  register(plugin: Plugin<unknown>): void {
    const names = this.registered.get(plugin.kind) ?? [];
    if (names.includes(plugin.name))
      throw new Error(`${plugin.kind} "${plugin.name}" is registered twice; plugin names must be unique per kind`);
    names.push(plugin.name);
    this.registered.set(plugin.kind, names);
    this.container.bind(TOKENS.plugin[plugin.kind]).toConstantValue(plugin).whenNamed(plugin.name);
  }

  names(kind: PluginKind): string[] {
    return [...(this.registered.get(kind) ?? [])];
  }

  get<T = unknown>(kind: PluginKind, name: string): Plugin<T> {
    if (!this.names(kind).includes(name)) throw new UnknownPluginError(kind, name, this.names(kind));
    return this.container.get<Plugin<T>>(TOKENS.plugin[kind], { name });
  }

  dataset(name: string): DatasetPlugin {
    return this.get<Dataset>('dataset', name);
  }

  architecture(name: string): ArchitecturePlugin {
    return this.get<Architecture>('architecture', name);
  }

  strategy(name: string): StrategyPlugin {
    return this.get<MemoryStrategy>('strategy', name);
  }

  all(kind: PluginKind): Plugin<unknown>[] {
    return this.names(kind).map((n) => this.get(kind, n));
  }
}

/** A container with the catalog bound and every given plugin registered. */
export function createContainer(plugins: Plugin<unknown>[]): { container: Container; catalog: PluginCatalog } {
  const container = new Container();
  const catalog = new PluginCatalog(container);
  container.bind(TOKENS.catalog).toConstantValue(catalog);
  for (const p of plugins) catalog.register(p);
  return { container, catalog };
}
