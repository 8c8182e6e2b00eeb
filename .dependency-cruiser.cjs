/**
 * The architecture's dependency rules, checked by `npm test` (test/architecture.test.ts) with
 * dependency-cruiser: imports in core/ go one way, down the layers below; core/ imports no plugin; no
 * plugin imports another plugin; a core folder is used from outside through its index.ts. Type-only
 * imports count: a layer depends on what it names.
 */
// core/'s folders from the bottom up: a folder may import its own files, core/types.ts and the folders before it.
const LAYERS = ['config', 'data', 'io', 'backend', 'engine', 'memory', 'parallel', 'training', 'inference', 'evaluation', 'plugins', 'experiment', 'queue'];
const PLUGIN_FOLDERS = '(strategies|architectures|datasets)';

const layerRules = LAYERS.slice(0, -1).map((layer, i) => ({
  name: `core-${layer}-imports-downward`,
  severity: 'error',
  comment: `core/${layer}/ may import only core/types.ts and core/{${LAYERS.slice(0, i).join(', ') || 'nothing else'}}: ${LAYERS.slice(i + 1).join(', ')} sit above it`,
  from: { path: `^core/${layer}/` },
  to: { path: `^core/(${LAYERS.slice(i + 1).join('|')})/` },
}));

module.exports = {
  forbidden: [
    ...layerRules,
    {
      name: 'core-types-import-nothing',
      severity: 'error',
      comment: 'core/types.ts holds the shared data types: it imports no core folder',
      from: { path: '^core/types\\.ts$' },
      to: { path: '^core/[^/]+/' },
    },
    {
      name: 'core-imports-no-plugin',
      severity: 'error',
      comment: 'core/ defines the interfaces; plugins and the commands (experiments/) are composed in experiments/cli/plugins.ts',
      from: { path: '^core/' },
      to: { path: `^(${PLUGIN_FOLDERS.slice(1, -1)}|experiments)/` },
    },
    {
      name: 'no-plugin-imports-another',
      severity: 'error',
      comment: "a plugin (a file, or a folder, under strategies/, architectures/ or datasets/) never imports another plugin; what two plugins share belongs in core/. Each folder's index.ts registers them.",
      from: { path: `^${PLUGIN_FOLDERS}/([^/.]+)`, pathNot: `^${PLUGIN_FOLDERS}/index\\.ts$` },
      to: { path: `^${PLUGIN_FOLDERS}/`, pathNot: '^$1/$2(\\.ts$|/)' },
    },
    {
      name: 'core-folders-used-through-their-index',
      severity: 'error',
      comment: "outside a core/ folder, import it through its index.ts (the folder's public part, under its header comment)",
      from: { path: '^(core/[^/]+|strategies|architectures|datasets|experiments)/' },
      to: { path: '^core/[^/]+/.', pathNot: ['^$1/', '^core/[^/]+/index\\.ts$'] },
    },
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'a cycle of imports hides which module depends on which',
      from: { path: '^(core|strategies|architectures|datasets)/' },
      to: { circular: true },
    },
  ],
  options: {
    includeOnly: '^(core|strategies|architectures|datasets|experiments)/',
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
