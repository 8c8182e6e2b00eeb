/**
 * The architecture's rules, as npm test enforces them:
 * - dependency-cruiser with .dependency-cruiser.cjs: core/'s folders import only downward and are used
 *   through their index.ts, core/ imports no plugin, no plugin imports another (and the rules are shown to
 *   fire on a fixture tree that breaks each of them);
 * - nothing outside core/backend/ asks tfjs which backend runs (core/backend/capabilities.ts decides);
 * - no plugin casts its settings (their types follow from the schema);
 * - core/'s root holds only the shared types.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DEPCRUISE = join(ROOT, 'node_modules', '.bin', 'depcruise');
const CONFIG = join(ROOT, '.dependency-cruiser.cjs');

interface Violation {
  rule: string;
  from: string;
  to: string;
}

/** dependency-cruiser's violations for `folders` of the tree at `cwd`. */
function violations(cwd: string, folders: string[]): Violation[] {
  let out: string;
  try {
    out = execFileSync(DEPCRUISE, [...folders, '--config', CONFIG, '--output-type', 'json'], { cwd, encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
  } catch (e) {
    // depcruise exits non-zero when it finds violations; its report is still on stdout.
    out = (e as { stdout?: string }).stdout ?? '';
    if (!out) throw e;
  }
  const report = JSON.parse(out) as { summary: { violations: { rule: { name: string }; from: string; to: string }[] } };
  return report.summary.violations.map((v) => ({ rule: v.rule.name, from: v.from, to: v.to }));
}

/** Every .ts file below `dir` (relative to ROOT). */
function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(ROOT, dir))) {
    const p = join(dir, e);
    if (e === 'node_modules' || e === 'build') continue;
    if (statSync(join(ROOT, p)).isDirectory()) out.push(...tsFiles(p));
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

describe('dependency rules (dependency-cruiser)', () => {
  it('hold for the project', () => {
    const found = violations(ROOT, ['core', 'strategies', 'architectures', 'datasets', 'experiments']);
    expect(found.map((v) => `${v.rule}: ${v.from} -> ${v.to}`)).toEqual([]);
  });

  it('fire on a tree that breaks each of them, and only there', () => {
    const fixture = join(ROOT, 'test', 'fixtures', 'dependency-rules');
    const found = violations(fixture, ['core', 'strategies']).sort((a, b) => a.rule.localeCompare(b.rule));
    expect(found).toEqual([
      { rule: 'core-engine-imports-downward', from: 'core/engine/upward.ts', to: 'core/experiment/index.ts' },
      { rule: 'core-folders-used-through-their-index', from: 'core/experiment/deep-import.ts', to: 'core/engine/upward.ts' },
      { rule: 'core-imports-no-plugin', from: 'core/io/reads-plugin.ts', to: 'strategies/alpha.ts' },
      { rule: 'no-plugin-imports-another', from: 'strategies/alpha.ts', to: 'strategies/beta.ts' },
    ]);
  });
});

describe('source rules', () => {
  const sources = ['core', 'strategies', 'architectures', 'datasets', 'experiments'].flatMap(tsFiles);

  it('nothing outside core/backend/ calls tf.getBackend()', () => {
    const calls = sources.filter((f) => !f.startsWith(join('core', 'backend')) && /\bgetBackend\s*\(/.test(readFileSync(join(ROOT, f), 'utf8')));
    expect(calls).toEqual([]);
  });

  it('no plugin casts its settings', () => {
    const plugins = sources.filter((f) => /^(strategies|architectures|datasets)\//.test(f));
    expect(plugins.length).toBeGreaterThan(5);
    const casts = plugins.flatMap((f) =>
      readFileSync(join(ROOT, f), 'utf8')
        .split('\n')
        .map((line, i) => ({ line, at: `${f}:${i + 1}` }))
        .filter(({ line }) => /\bsettings\b[^;]*\sas\s|\bs\.\w+\s+as\s|as\s+unknown\s+as\s+\w*Settings\b/.test(line))
        .map(({ at, line }) => `${at}: ${line.trim()}`),
    );
    expect(casts).toEqual([]);
  });

  it("core/'s root holds only the shared types; everything else lives in a folder", () => {
    const root = readdirSync(join(ROOT, 'core')).filter((e) => statSync(join(ROOT, 'core', e)).isFile());
    expect(root).toEqual(['types.ts']);
  });
});
