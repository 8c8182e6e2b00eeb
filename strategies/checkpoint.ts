/**
 * checkpoint — gradient checkpointing on the full volume (Chen, Xu, Zhang, Guestrin 2016, "Training Deep
 * Nets with Sublinear Memory Cost", arXiv:1604.06174): forward keeps only each segment's inputs, and
 * backward re-runs a segment's forward (saving, this time) just before its backward. With about √n
 * segments of about √n layers the saved memory is O(√n) for about one extra forward pass.
 *
 * `split: search` (default) plans the segments for the step's input shape: starting from the best of
 * the balanced splits and the architecture's levels, it toggles single cut points (and whether a layer
 * is checkpointed at all) while the estimator's predicted peak (core/estimator.ts, within a few percent
 * of the meter) goes down: Chen et al.'s memory planning with the estimator as the cost model.
 * `split: balanced` cuts the layer order into `segments` contiguous runs holding about equal bytes of
 * saved tensors; `split: levels` uses the architecture's own blocks (one per U-Net level and pathway).
 */
import type { Shape3, StrategyPlugin } from '../core/types.js';
import type { MemoryStrategy } from '../core/strategy.js';
import { inferShapes, type Network, type Shape } from '../core/graph.js';
import { fullVolumeInfer, fullVolumeSample, fullVolumeShape } from './full-volume.js';
import { estimatePeak } from '../core/estimator.js';

/** Bytes each node saves for backward (its saved inputs, output and extras), at `inputShape`. */
export function savedBytesPerNode(net: Network, inputShape: Shape): number[] {
  const shapes = inferShapes(net, inputShape);
  const size = (s: Shape): number => s.reduce((a, b) => a * b, 1);
  return net.nodes.map((node) => {
    const inShapes = node.inputs.map((i) => shapes.get(i)!);
    const spec = node.layer.saves(inShapes);
    let n = spec.extra.reduce((a, b) => a + b, 0);
    for (const i of spec.inputs) n += size(inShapes[i]!);
    if (spec.output) n += size(shapes.get(node.name)!);
    return 4 * n;
  });
}

/** `k` contiguous runs of nodes with about equal saved bytes each (greedy on the running total). */
export function balancedSegments(net: Network, inputShape: Shape, k: number): string[][] {
  const bytes = savedBytesPerNode(net, inputShape);
  const total = bytes.reduce((a, b) => a + b, 0);
  const segments: string[][] = [];
  let current: string[] = [];
  let acc = 0;
  net.nodes.forEach((node, i) => {
    current.push(node.name);
    acc += bytes[i]!;
    const target = (total * (segments.length + 1)) / k;
    if (acc >= target && segments.length < k - 1) {
      segments.push(current);
      current = [];
    }
  });
  if (current.length) segments.push(current);
  return segments;
}

/** Segments from a cut after each node where `cut[i]`, leaving out the nodes where `keep[i]`. */
function segmentsFrom(net: Network, cut: boolean[], keep: boolean[]): string[][] {
  const out: string[][] = [];
  let current: string[] = [];
  net.nodes.forEach((node, i) => {
    if (keep[i]) {
      if (current.length) out.push(current);
      current = [];
      return;
    }
    current.push(node.name);
    if (cut[i]) {
      out.push(current);
      current = [];
    }
  });
  if (current.length) out.push(current);
  return out;
}

/**
 * The segmentation with the lowest estimated peak found by local search: the best of the balanced splits
 * (1 … 2√n segments) and the levels, then single toggles of a cut or of a layer's checkpointing, kept
 * while they lower the estimate, until none does (a few hundred estimates: well under a second).
 */
export function searchSegments(net: Network, inputShape: Shape): string[][] {
  const cost = (segments: string[][]): number => estimatePeak(net, inputShape, { recompute: segments }).peak;
  const n = net.nodes.length;
  const candidates = [net.segments];
  for (let k = 1; k <= Math.max(2, Math.round(2 * Math.sqrt(n))); k++) candidates.push(balancedSegments(net, inputShape, k));
  let start = candidates[0]!;
  let best = cost(start);
  for (const c of candidates.slice(1)) {
    const p = cost(c);
    if (p < best) [start, best] = [c, p];
  }
  const inStart = new Set(start.flat());
  const keep = net.nodes.map((node) => !inStart.has(node.name));
  const cut = net.nodes.map((node, i) => {
    const s = start.find((seg) => seg.includes(node.name));
    const next = net.nodes[i + 1];
    return !s || !next || s[s.length - 1] === node.name;
  });
  for (let round = 0; round < 20; round++) {
    let improved = false;
    for (let i = 0; i < n; i++)
      for (const flags of [cut, keep]) {
        flags[i] = !flags[i];
        const p = cost(segmentsFrom(net, cut, keep));
        if (p < best) {
          best = p;
          improved = true;
        } else flags[i] = !flags[i];
      }
    if (!improved) break;
  }
  return segmentsFrom(net, cut, keep);
}

const plugin: StrategyPlugin = {
  kind: 'strategy',
  name: 'checkpoint',
  description: 'full volume; keep only segment inputs in forward, recompute each segment in backward',
  reference: 'Chen T. et al., Training Deep Nets with Sublinear Memory Cost, 2016 (arXiv:1604.06174)',
  settings: {
    segments: { type: 'integer', min: 0, default: 0, description: "with split 'balanced': the number of segments; 0 = about √(number of layers)" },
    split: {
      type: 'enum',
      values: ['search', 'balanced', 'levels'],
      default: 'search',
      description: "'search': the segments with the lowest estimated peak; 'balanced': `segments` runs of equal saved bytes; 'levels': the architecture's blocks",
    },
  },
  create(settings): MemoryStrategy {
    const split = settings.split as 'search' | 'balanced' | 'levels';
    const wanted = settings.segments as number;
    const chosen = new Map<string, string[][]>();
    return {
      name: 'checkpoint',
      trainingShape: (caseShape: Shape3, net: Network) => fullVolumeShape(caseShape, net),
      sample: fullVolumeSample(),
      plan(net, inputShape) {
        const key = `${net.description}|${inputShape.join('x')}`;
        let segments = chosen.get(key);
        if (!segments) {
          segments =
            split === 'levels'
              ? net.segments
              : split === 'search'
                ? searchSegments(net, inputShape)
                : balancedSegments(net, inputShape, wanted > 0 ? wanted : Math.max(1, Math.round(Math.sqrt(net.nodes.length))));
          chosen.set(key, segments);
        }
        return { recompute: segments };
      },
      infer: (input, predict, net) => fullVolumeInfer(input, predict, net),
    };
  },
};

export default plugin;
