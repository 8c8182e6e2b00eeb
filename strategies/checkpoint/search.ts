/**
 * The checkpoint strategy's memory-minimising plans: segments with about equal saved bytes
 * (`balancedSegments`), and a local search for the segmentation with the lowest estimated peak
 * (`searchSegments`, Chen et al.'s memory planning with the estimator as the cost model). The plan
 * representation they share with the budget planner (budget.ts): a cut flag after each node and a keep
 * flag for the nodes left out of every segment.
 */
import { inferShapes, type Network, type SaveMode, type Shape } from '../../core/engine/index.js';
import { estimatePeak, type EstimateOptions } from '../../core/memory/index.js';

/** Bytes each node saves for backward (its saved inputs, output and extras), at `inputShape`, under `saveMode`. */
export function savedBytesPerNode(net: Network, inputShape: Shape, saveMode: SaveMode = 'all'): number[] {
  const shapes = inferShapes(net, inputShape);
  const size = (s: Shape): number => s.reduce((a, b) => a * b, 1);
  return net.nodes.map((node) => {
    const inShapes = node.inputs.map((i) => shapes.get(i)!);
    const spec = node.layer.saves(inShapes, saveMode);
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
export function segmentsFrom(net: Network, cut: boolean[], keep: boolean[]): string[][] {
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

/** The cut and keep flags of a segmentation (the inverse of segmentsFrom). */
export function flagsOf(net: Network, segments: string[][]): { cut: boolean[]; keep: boolean[] } {
  const segOf = new Map<string, string[]>();
  for (const s of segments) for (const name of s) segOf.set(name, s);
  return {
    keep: net.nodes.map((node) => !segOf.has(node.name)),
    cut: net.nodes.map((node, i) => {
      const s = segOf.get(node.name);
      return !s || !net.nodes[i + 1] || s[s.length - 1] === node.name;
    }),
  };
}

/** Lexicographic comparison of two descending step profiles (the peak first, then the next highest steps). */
export function lower(a: number[], b: number[]): boolean {
  for (let k = 0; k < Math.min(a.length, b.length); k++) if (a[k] !== b[k]) return a[k]! < b[k]!;
  return false;
}

/**
 * The segmentation with the lowest estimated peak found by local search. Starting points: the
 * architecture's levels, the balanced splits (1 … 2√n segments) and one segment per layer; from the best
 * few, single moves (toggle a cut, toggle whether a layer is checkpointed at all, shift a cut by one) are
 * kept while they lower the estimate. Ties on the peak go to the plan whose other layer steps are lower
 * (the steps' high-water marks sorted from the top): the peak is a maximum, flat under most single
 * moves, and this lets the search walk across those plateaus. About a thousand estimates (~1 ms each).
 */
export function searchSegments(
  net: Network,
  inputShape: Shape,
  saveMode: 'all' | 'lean' = 'all',
  options: EstimateOptions = {},
): string[][] {
  const n = net.nodes.length;
  const estimateOptions = { ...options, breakdown: false };
  const profile = (segments: string[][]): number[] =>
    estimatePeak(net, inputShape, { recompute: segments, saveMode }, estimateOptions).steps.slice().sort((a, b) => b - a);
  const starts = [net.segments, net.nodes.map((node) => [node.name])];
  for (let k = 1; k <= Math.max(2, Math.round(2 * Math.sqrt(n))); k++) starts.push(balancedSegments(net, inputShape, k));
  const ranked = starts.map((s) => ({ s, p: profile(s) })).sort((a, b) => (lower(a.p, b.p) ? -1 : lower(b.p, a.p) ? 1 : 0));
  let best: { s: string[][]; p: number[] } | null = null;
  for (const start of ranked.slice(0, 3)) {
    const { cut, keep } = flagsOf(net, start.s);
    let current = start.p;
    const tryMove = (apply: () => void, undo: () => void): boolean => {
      apply();
      const p = profile(segmentsFrom(net, cut, keep));
      if (lower(p, current)) {
        current = p;
        return true;
      }
      undo();
      return false;
    };
    for (let round = 0; round < 30; round++) {
      let improved = false;
      for (let i = 0; i < n; i++) {
        for (const flags of [cut, keep]) improved = tryMove(() => void (flags[i] = !flags[i]), () => void (flags[i] = !flags[i])) || improved;
        // Shift a cut to the next node (or back): moves a segment boundary without adding one.
        if (i + 1 < n && cut[i] !== cut[i + 1]) {
          const swap = (): void => void ([cut[i], cut[i + 1]] = [cut[i + 1]!, cut[i]!]);
          improved = tryMove(swap, swap) || improved;
        }
        // Extend the segment before a kept node over it, ending after it or after the node that follows
        // (so that the kept node's output need not be held: e.g. a residual sum and the strided
        // convolution reading it).
        if (i > 0 && keep[i] && !keep[i - 1])
          for (const span of [0, 1]) {
            if (i + span >= n || (span && keep[i + 1])) continue;
            const before = [cut[i - 1]!, keep[i]!, cut[i]!, cut[i + span]!];
            const apply = (): void => {
              cut[i - 1] = false;
              keep[i] = false;
              cut[i] = span === 0;
              cut[i + span] = true;
            };
            const undo = (): void => {
              [cut[i - 1], keep[i], cut[i], cut[i + span]] = before;
            };
            improved = tryMove(apply, undo) || improved;
          }
      }
      if (!improved) break;
    }
    if (!best || lower(current, best.p)) best = { s: segmentsFrom(net, cut, keep), p: current };
  }
  return best!.s;
}
