/**
 * SVG plots of an experiment's records, beside summary.md in `plots/` and linked from it, drawn with
 * Vega-Lite and rendered to SVG by Vega in Node (no canvas, no browser). Which plots an experiment gets
 * follows from its records:
 * - `curves.svg`: validation Dice against training wall time, per configuration (learning curves);
 * - `memory.svg`: peak training memory against input edge, per configuration, with the device budget;
 * - `swap.svg`: swap's step time against its prefetch distance lb, per link bandwidth;
 * - `dice-memory.svg`: final Dice against peak training memory, per configuration;
 * - `pareto.svg`: where at least three configurations have Dice, peak training memory and parameters: each
 *   configuration's mean Dice over seeds against its mean peak memory and against its parameters, with the
 *   Pareto front (no other configuration has both less of the cost and a higher Dice) joined by a line.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { configurationLabel as series, rowSettings as settings, trialKey } from './labels.js';

type Value = string | number | null;
type Row = Record<string, Value>;

export interface Plot {
  /** File name under plots/. */
  file: string;
  title: string;
  spec: TopLevelSpec;
}

const MiB = 2 ** 20;
const num = (v: Value | undefined): number => (typeof v === 'number' ? v : NaN);

const base = (title: string): Record<string, unknown> => ({
  $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
  title,
  width: 520,
  height: 320,
  config: { font: 'sans-serif', legend: { labelLimit: 0, orient: 'bottom', columns: 1 } },
});

/** `base` for a concatenation of panels (each panel sizes itself). */
const concatBase = (title: string): Record<string, unknown> => {
  const { width: _w, height: _h, ...rest } = base(title);
  return rest;
};

/** One configuration's means: its cost on some axis and its Dice. */
export interface ParetoPoint {
  configuration: string;
  cost: number;
  dice: number;
}

/**
 * The configurations no other beats on both counts (lower or equal cost and higher Dice, or lower cost and
 * equal Dice), cheapest first: the trade-off front of a sweep.
 */
export function paretoFront<T extends ParetoPoint>(points: T[]): T[] {
  const sorted = [...points].sort((a, b) => a.cost - b.cost || b.dice - a.dice);
  const front: T[] = [];
  for (const p of sorted) if (front.length === 0 || p.dice > front[front.length - 1]!.dice) front.push(p);
  return front;
}

/** The plots the records call for (pure: summary.md lists them, `writePlots` draws them). */
export function plotSpecs(rows: Row[], curves: Row[]): Plot[] {
  const plots: Plot[] = [];
  const ok = rows.filter((r) => r.status === 'ok');
  const byKey = new Map(rows.map((r) => [trialKey(r), r]));

  // Learning curves.
  const points = curves
    .map((c) => ({ c, r: byKey.get(trialKey(c)) }))
    .filter((x) => x.r !== undefined && Number.isFinite(num(x.c.dice_mean)))
    .map(({ c, r }) => ({ configuration: series(r!), seed: String(r!.seed), trial: trialKey(c), seconds: num(c.train_seconds), dice: num(c.dice_mean), voxels: num(c.voxels_seen) }));
  if (points.length) {
    const title = 'Validation Dice (mean over regions) against training wall time';
    plots.push({
      file: 'curves.svg',
      title,
      spec: {
        ...base(title),
        data: { values: points },
        mark: { type: 'line', point: true, strokeWidth: 1.5 },
        encoding: {
          x: { field: 'seconds', type: 'quantitative', title: 'training wall time (s), validation excluded' },
          y: { field: 'dice', type: 'quantitative', title: 'validation Dice', scale: { zero: false } },
          color: { field: 'configuration', type: 'nominal', title: 'configuration' },
          detail: { field: 'trial', type: 'nominal' },
        },
      } as TopLevelSpec,
    });
  }

  // Peak training memory against the input edge, where the sweep varies the volume.
  const edge = (r: Row): number => Number(String(r.volume_shape ?? r.input_shape ?? '').split('x')[0]);
  const sized = rows.filter((r) => Number.isFinite(edge(r)) && Number.isFinite(num(r.peak_train_bytes)));
  if (new Set(sized.map(edge)).size >= 2) {
    const values = sized.map((r) => ({
      configuration: series(r, [/(^|\s)dataset\.settings\.size=\S+/g]),
      edge: edge(r),
      mib: num(r.peak_train_bytes) / MiB,
      status: r.status === 'ok' ? 'fits' : r.status === 'did-not-fit' ? 'did not fit (peak until it stopped)' : 'failed',
    }));
    const budgets = [...new Set(rows.map((r) => (settings(r).training as { deviceMemory?: number } | undefined)?.deviceMemory).filter((b): b is number => typeof b === 'number'))];
    const title = 'Peak training memory against input edge';
    const layers: unknown[] = [
      {
        mark: { type: 'line', point: false },
        transform: [{ filter: "datum.status === 'fits'" }],
        encoding: { x: { field: 'edge', type: 'quantitative' }, y: { field: 'mib', type: 'quantitative' }, color: { field: 'configuration', type: 'nominal' } },
      },
      {
        mark: { type: 'point', filled: true, size: 60 },
        encoding: {
          x: { field: 'edge', type: 'quantitative', title: 'input edge (voxels)' },
          y: { field: 'mib', type: 'quantitative', title: 'peak training memory (MiB)', scale: { type: 'log' } },
          color: { field: 'configuration', type: 'nominal', title: 'configuration' },
          shape: { field: 'status', type: 'nominal', title: 'status' },
        },
      },
    ];
    if (budgets.length === 1) {
      layers.push({
        data: { values: [{ mib: budgets[0]! / MiB, text: `budget ${(budgets[0]! / MiB).toFixed(0)} MiB` }] },
        layer: [
          { mark: { type: 'rule', strokeDash: [6, 4], color: 'black' }, encoding: { y: { field: 'mib', type: 'quantitative' } } },
          { mark: { type: 'text', align: 'left', dx: 4, dy: -6, x: 0 }, encoding: { y: { field: 'mib', type: 'quantitative' }, text: { field: 'text' } } },
        ],
      });
    }
    plots.push({ file: 'memory.svg', title, spec: { ...base(title), data: { values }, layer: layers } as TopLevelSpec });
  }

  // Swap's step time against lb, per bandwidth.
  const swap = ok
    .map((r) => ({ r, s: (settings(r).strategy as { name?: string; settings?: Record<string, unknown> } | undefined) ?? {} }))
    .filter(({ r, s }) => s.name === 'swap' && Number.isFinite(num(r.step_seconds)));
  if (new Set(swap.map(({ s }) => String(s.settings?.lb))).size >= 2) {
    const link = (b: unknown): string => (typeof b === 'number' ? `${+(b / 1e9).toPrecision(3)} GB/s` : String(b ?? '?'));
    const values = swap.map(({ r, s }) => ({ lb: Number(s.settings?.lb), bandwidth: link(s.settings?.bandwidth), seconds: num(r.step_seconds) }));
    const plain = ok.filter((r) => r.strategy === 'full-volume').map((r) => num(r.step_seconds)).filter(Number.isFinite);
    const title = "Swap's step time against its prefetch distance lb";
    const layers: unknown[] = [
      {
        mark: { type: 'line', point: { filled: true, size: 60 } },
        encoding: {
          x: { field: 'lb', type: 'ordinal', title: 'lb (layers a swapped tensor is brought back ahead of use)', axis: { labelAngle: 0 } },
          y: { field: 'seconds', type: 'quantitative', title: 'median step time (s)', scale: { zero: false } },
          color: { field: 'bandwidth', type: 'nominal', title: 'host link' },
        },
      },
    ];
    if (plain.length) {
      const m = plain.reduce((a, b) => a + b, 0) / plain.length;
      layers.push({
        data: { values: [{ seconds: m, text: `plain step (mean of ${plain.length}): ${m.toFixed(2)} s` }] },
        layer: [
          { mark: { type: 'rule', strokeDash: [6, 4], color: 'black' }, encoding: { y: { field: 'seconds', type: 'quantitative' } } },
          { mark: { type: 'text', align: 'left', dx: 4, dy: -6, x: 0 }, encoding: { y: { field: 'seconds', type: 'quantitative' }, text: { field: 'text' } } },
        ],
      });
    }
    plots.push({ file: 'swap.svg', title, spec: { ...base(title), data: { values }, layer: layers } as TopLevelSpec });
  }

  // Final Dice against peak training memory, where several configurations have both.
  const scatter = ok
    .filter((r) => Number.isFinite(num(r.dice_mean)) && Number.isFinite(num(r.peak_train_bytes)))
    .map((r) => ({ configuration: series(r), mib: num(r.peak_train_bytes) / MiB, dice: num(r.dice_mean), seed: String(r.seed) }));
  if (new Set(scatter.map((p) => p.configuration)).size >= 2) {
    const title = 'Final validation Dice against peak training memory (one point per seed)';
    plots.push({
      file: 'dice-memory.svg',
      title,
      spec: {
        ...base(title),
        data: { values: scatter },
        mark: { type: 'point', filled: true, size: 70, opacity: 0.8 },
        encoding: {
          x: { field: 'mib', type: 'quantitative', title: 'peak training memory (MiB)', scale: { zero: false } },
          y: { field: 'dice', type: 'quantitative', title: 'validation Dice (mean over regions)', scale: { zero: false } },
          color: { field: 'configuration', type: 'nominal', title: 'configuration' },
          shape: { field: 'configuration', type: 'nominal', title: 'configuration' },
        },
      } as TopLevelSpec,
    });
  }

  // The trade-off: configuration means against peak memory and against parameters, with the Pareto fronts.
  const byConfig = new Map<string, Row[]>();
  for (const r of ok) {
    if (![r.dice_mean, r.peak_train_bytes, r.params].every((v) => Number.isFinite(num(v)))) continue;
    const c = series(r);
    byConfig.set(c, [...(byConfig.get(c) ?? []), r]);
  }
  if (byConfig.size >= 3) {
    const avg = (rs: Row[], k: string): number => rs.reduce((a, r) => a + num(r[k]), 0) / rs.length;
    const means = [...byConfig].map(([configuration, rs]) => ({ configuration, mib: avg(rs, 'peak_train_bytes') / MiB, params: avg(rs, 'params') / 1e3, dice: avg(rs, 'dice_mean'), seeds: rs.length }));
    const panel = (cost: 'mib' | 'params', title: string) => {
      const front = new Set(paretoFront(means.map((m) => ({ ...m, cost: m[cost] }))).map((p) => p.configuration));
      const values = means.map((m) => ({ ...m, cost: m[cost], front: front.has(m.configuration) ? 'on the Pareto front' : 'dominated' }));
      return {
        width: 380,
        height: 300,
        data: { values },
        layer: [
          { transform: [{ filter: "datum.front === 'on the Pareto front'" }], mark: { type: 'line', color: 'black', strokeDash: [4, 3], interpolate: 'step-after' }, encoding: { x: { field: 'cost', type: 'quantitative' }, y: { field: 'dice', type: 'quantitative' } } },
          {
            mark: { type: 'point', filled: true, size: 80 },
            encoding: {
              x: { field: 'cost', type: 'quantitative', title, scale: { type: 'log' } },
              y: { field: 'dice', type: 'quantitative', title: 'validation Dice (mean over regions and seeds)', scale: { zero: false } },
              color: { field: 'configuration', type: 'nominal', title: 'configuration' },
              shape: { field: 'front', type: 'nominal', title: 'Pareto front' },
              tooltip: [{ field: 'configuration' }, { field: 'seeds' }, { field: 'dice', format: '.3f' }, { field: 'cost', format: '.3g' }],
            },
          },
        ],
      };
    };
    const title = 'Dice against peak training memory and parameters (means over seeds; the dashed line is the Pareto front)';
    plots.push({
      file: 'pareto.svg',
      title,
      spec: { ...concatBase(title), hconcat: [panel('mib', 'peak training memory (MiB, log)'), panel('params', 'parameters (thousands, log)')] } as unknown as TopLevelSpec,
    });
  }
  return plots;
}

/** Renders one Vega-Lite spec to SVG text. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Draws the records' plots into `<dir>/plots/` (removing plots the records no longer call for); returns the files. */
export async function writePlots(dir: string, rows: Row[], curves: Row[]): Promise<string[]> {
  const plots = plotSpecs(rows, curves);
  const out = path.join(dir, 'plots');
  const known = new Set(['curves.svg', 'memory.svg', 'swap.svg', 'dice-memory.svg', 'pareto.svg']);
  if (fs.existsSync(out)) for (const f of fs.readdirSync(out)) if (known.has(f) && !plots.some((p) => p.file === f)) fs.rmSync(path.join(out, f));
  if (plots.length === 0) return [];
  fs.mkdirSync(out, { recursive: true });
  const files: string[] = [];
  for (const p of plots) {
    const file = path.join(out, p.file);
    const tmp = `${file}.tmp`;
    fs.writeFileSync(tmp, await renderSvg(p.spec));
    fs.renameSync(tmp, file);
    files.push(file);
  }
  return files;
}
