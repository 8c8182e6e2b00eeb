/**
 * The checkpoint strategy's budget planner (strategies/checkpoint/budget.ts) against an exhaustive search:
 * on a small network with a residual sum, a pooled level and a skip concatenation, every distinct
 * segmentation is estimated, and under three budgets the planner's recompute time is within 5% of the best
 * plan that fits. The estimator and the cost model are the same on both sides: this checks the search.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder, NETWORK_INPUT, Add, ConcatChannels, Conv3d, InstanceNormAct, MaxPool3d, UpsampleNearest, type Network } from '../core/engine/index.js';
import { estimatePeak } from '../core/memory/index.js';
import { instantiate } from '../core/plugins/index.js';
import checkpoint, { forwardSeconds, planForBudget, recomputeSeconds } from '../strategies/checkpoint/index.js';
import { segmentsFrom } from '../strategies/checkpoint/search.js';
import { cpu } from './helpers/step.js';

/** 11 layers: conv-norm twice with a residual sum, a pooled level, and the upsampled level joined with the skip. */
function smallNet(): Network {
  const b = new GraphBuilder();
  const c0 = b.add('c0', new Conv3d({ inChannels: 2, outChannels: 4, kernel: 3 }), [NETWORK_INPUT]);
  const n0 = b.add('n0', new InstanceNormAct({ channels: 4 }), [c0]);
  const c1 = b.add('c1', new Conv3d({ inChannels: 4, outChannels: 4, kernel: 3 }), [n0]);
  const n1 = b.add('n1', new InstanceNormAct({ channels: 4 }), [c1]);
  const sum = b.add('sum', new Add(), [n1, n0]);
  const pool = b.add('pool', new MaxPool3d(2), [sum]);
  const c2 = b.add('c2', new Conv3d({ inChannels: 4, outChannels: 8, kernel: 3 }), [pool]);
  const n2 = b.add('n2', new InstanceNormAct({ channels: 8 }), [c2]);
  const up = b.add('up', new UpsampleNearest(2), [n2]);
  const cat = b.add('cat', new ConcatChannels(), [up, sum]);
  b.add('head', new Conv3d({ inChannels: 12, outChannels: 2, kernel: 1, bias: true }), [cat]);
  return b.build({ name: 'small', description: 'budget-planner test net', inChannels: 2, outChannels: 2, activation: 'softmax', output: 'head', divisor: 2 });
}

const shape = [1, 8, 8, 8, 2];
const estimate = { optimizerSlots: 2, loss: 'dice+ce' as const, optimizerInBackward: false };

/** Every distinct segmentation: each layer kept or in a segment, and a cut or not after each layer. */
function allSegmentations(net: Network): string[][][] {
  const n = net.nodes.length;
  const out = new Map<string, string[][]>();
  const keep = new Array<boolean>(n).fill(false);
  const cut = new Array<boolean>(n).fill(false);
  const visit = (i: number): void => {
    if (i === n) {
      const s = segmentsFrom(net, cut, keep);
      out.set(s.map((x) => x.join(',')).join('|'), s);
      return;
    }
    for (const state of ['keep', 'join', 'cut'] as const) {
      keep[i] = state === 'keep';
      cut[i] = state === 'cut';
      // A cut after a kept layer, or after the last one, is the same plan as no cut.
      if (state === 'cut' && (i === n - 1 || keep[i])) continue;
      visit(i + 1);
    }
  };
  visit(0);
  return [...out.values()];
}

beforeAll(cpu);

describe('checkpoint: planning to a budget', () => {
  it('is within 5% of the exhaustive search’s least recompute under three budgets', () => {
    const net = smallNet();
    const costs = forwardSeconds(net, shape);
    const plans = allSegmentations(net).map((segments) => ({
      segments,
      peak: estimatePeak(net, shape, { recompute: segments, saveMode: 'lean' }, estimate).peak,
      recompute: recomputeSeconds(net, shape, segments, 'lean', costs, estimate),
    }));
    expect(plans.length).toBeGreaterThan(1000);
    const lowest = Math.min(...plans.map((p) => p.peak));
    const none = plans.find((p) => p.segments.length === 0)!;
    expect(none.peak).toBeGreaterThan(lowest * 1.2); // checkpointing has something to trade here
    for (const f of [0.15, 0.4, 0.7]) {
      const budget = lowest + f * (none.peak - lowest);
      const best = Math.min(...plans.filter((p) => p.peak <= budget).map((p) => p.recompute));
      const plan = planForBudget(net, shape, budget, { saveMode: 'lean', estimate, costs });
      expect(plan.fits).toBe(true);
      expect(plan.peak).toBeLessThanOrEqual(budget);
      expect(plan.recomputeSeconds).toBeCloseTo(recomputeSeconds(net, shape, plan.segments, 'lean', costs, estimate), 12);
      expect(plan.recomputeSeconds, `budget ${f}: planner ${plan.recomputeSeconds}, exhaustive best ${best} of ${plans.length} plans`).toBeLessThanOrEqual(best * 1.05 + 1e-12);
    }
  }, 120_000);

  it('needs no recompute where the plain step fits, and gives the lowest peak found where nothing fits', () => {
    const net = smallNet();
    const none = estimatePeak(net, shape, { recompute: [], saveMode: 'lean' }, estimate).peak;
    const roomy = planForBudget(net, shape, none, { estimate });
    expect(roomy).toMatchObject({ segments: [], recomputeSeconds: 0, fits: true });
    const tight = planForBudget(net, shape, 1, { estimate });
    expect(tight.fits).toBe(false);
    expect(tight.peak).toBeLessThan(none);
  });

  it('the plugin plans to training.deviceMemory (split auto) or its own budget, and records the plan', () => {
    const net = smallNet();
    const none = estimatePeak(net, shape, { recompute: [], saveMode: 'lean' }, estimate).peak;
    const lowest = estimatePeak(net, shape, { recompute: [net.nodes.map((n) => n.name)], saveMode: 'lean' }, estimate).peak;
    const budget = Math.round((none + lowest) / 2);
    const s = instantiate(checkpoint, {}, { baseDir: '.' });
    const plan = s.plan(net, shape, { estimate, deviceMemory: budget });
    expect(estimatePeak(net, shape, plan, estimate).peak).toBeLessThanOrEqual(budget * 0.98);
    const report = Object.fromEntries((s.report?.() ?? []).map((c) => [c.name, c.value]));
    expect(report.checkpoint_plan_budget_bytes).toBe(budget);
    expect(report.checkpoint_segments).toBe(plan.recompute!.length);
    expect(typeof report.checkpoint_plan).toBe('string');
    expect(report.checkpoint_recompute_ratio).toBeGreaterThan(0);
    expect(report.checkpoint_recompute_ratio).toBeLessThan(1.5);
    // Without a budget, auto minimises the peak (Chen's plan); 'budget' without one is an error naming the settings.
    const free = instantiate(checkpoint, {}, { baseDir: '.' });
    const least = free.plan(net, shape, { estimate });
    expect(estimatePeak(net, shape, least, estimate).peak).toBeLessThanOrEqual(estimatePeak(net, shape, plan, estimate).peak);
    expect(() => instantiate(checkpoint, { split: 'budget' }, { baseDir: '.' }).plan(net, shape, { estimate })).toThrow(/strategy\.settings\.budget.*training\.deviceMemory/);
  });
});
