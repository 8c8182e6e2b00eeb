/**
 * checkpoint — gradient checkpointing on the full volume (Chen, Xu, Zhang, Guestrin 2016, "Training Deep
 * Nets with Sublinear Memory Cost", arXiv:1604.06174): forward keeps only each segment's inputs, and
 * backward re-runs a segment's forward (saving, this time) just before its backward. With about √n
 * segments of about √n layers the saved memory is O(√n) for about one extra forward pass.
 *
 * `split: balanced` (default) cuts the layer order into `segments` contiguous runs holding about equal
 * bytes of saved tensors at the step's input shape; `split: levels` uses the architecture's own blocks
 * (one per U-Net level and pathway).
 */
import type { Shape3, StrategyPlugin } from '../core/types.js';
import type { MemoryStrategy } from '../core/strategy.js';
import { inferShapes, type Network, type Shape } from '../core/graph.js';
import { fullVolumeInfer, fullVolumeSample, fullVolumeShape } from './full-volume.js';

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

const plugin: StrategyPlugin = {
  kind: 'strategy',
  name: 'checkpoint',
  description: 'full volume; keep only segment inputs in forward, recompute each segment in backward',
  reference: 'Chen T. et al., Training Deep Nets with Sublinear Memory Cost, 2016 (arXiv:1604.06174)',
  settings: {
    segments: { type: 'integer', min: 0, default: 0, description: 'number of segments; 0 = about √(number of layers)' },
    split: {
      type: 'enum',
      values: ['balanced', 'levels'],
      default: 'balanced',
      description: "'balanced': equal saved bytes per segment; 'levels': the architecture's blocks (U-Net levels)",
    },
  },
  create(settings): MemoryStrategy {
    const split = settings.split as 'balanced' | 'levels';
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
