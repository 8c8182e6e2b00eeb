/**
 * checkpoint — gradient checkpointing on the full volume (Chen, Xu, Zhang, Guestrin 2016, "Training Deep
 * Nets with Sublinear Memory Cost", arXiv:1604.06174): forward keeps only each segment's inputs, and
 * backward re-runs a segment's forward (saving, this time) just before its backward. With about √n
 * segments of about √n layers the saved memory is O(√n) for about one extra forward pass.
 *
 * How the segments are chosen (`split`):
 * - `budget` (what `auto`, the default, does where there is a budget: `budget`, else training.deviceMemory):
 *   the segments with the least predicted recompute time whose estimated peak fits the budget (budget.ts:
 *   a dynamic program over the chain of layers, as Rotor's, checked and refined with the estimator).
 * - `search` (`auto` without a budget): the segments with the lowest estimated peak (search.ts: a local
 *   search with the estimator, core/memory/estimator.ts, as the cost model; Chen et al.'s memory planning).
 * - `balanced`: `segments` contiguous runs holding about equal bytes of saved tensors.
 * - `levels`: the architecture's own blocks (one per U-Net level and pathway).
 * The trial record carries the plan, its budget and its predicted recompute (`report`).
 */
import type { MemoryStrategy, StrategyColumn, StrategyPlugin } from '../../core/plugins/index.js';
import type { Network } from '../../core/engine/index.js';
import type { EstimateOptions } from '../../core/memory/index.js';
import { defineSettings } from '../../core/config/index.js';
import { fullVolumeSample, fullVolumeShape } from '../../core/training/index.js';
import { fullVolumeInference } from '../../core/inference/index.js';
import { balancedSegments, searchSegments } from './search.js';
import { forwardSeconds, planForBudget, recomputeSeconds } from './budget.js';

export { balancedSegments, savedBytesPerNode, searchSegments } from './search.js';
export { chainCandidates, forwardSeconds, planForBudget, recomputeSeconds, DEFAULT_COST_MODEL, type BudgetPlan, type CostModel } from './budget.js';

const settings = defineSettings({
  segments: { type: 'integer', min: 0, default: 0, description: "with split 'balanced': the number of segments; 0 = about √(number of layers)" },
  lean: {
    type: 'boolean',
    default: true,
    description:
      "keep fewer buffers and recompute cheap values in backward (Chen et al.'s dropped low-cost results): a normalisation keeps its output, which the next convolution saves anyway, and rebuilds x̂ from it",
  },
  split: {
    type: 'enum',
    values: ['auto', 'budget', 'search', 'balanced', 'levels'],
    default: 'auto',
    description:
      "'budget': the segments with the least predicted recompute time whose estimated peak fits the budget; 'search': the segments with the lowest estimated peak; 'auto': 'budget' where there is a budget, else 'search'; 'balanced': `segments` runs of equal saved bytes; 'levels': the architecture's blocks",
  },
  budget: {
    type: 'bytes',
    min: 0,
    default: 0,
    description: "the device memory the plan must fit (split 'budget' or 'auto'); 0: training.deviceMemory",
  },
  margin: {
    type: 'number',
    min: 0,
    max: 0.5,
    default: 0.02,
    description: "fraction of the budget the plan leaves free for the estimate's error (the estimator is within a few percent of the meter)",
  },
});

interface Chosen {
  segments: string[][];
  peak: number | null;
  recomputeSeconds: number;
  forwardSeconds: number;
  budget: number | null;
}

const plugin: StrategyPlugin<typeof settings> = {
  kind: 'strategy',
  name: 'checkpoint',
  description: 'full volume; keep only segment inputs in forward, recompute each segment in backward',
  reference: 'Chen T. et al., Training Deep Nets with Sublinear Memory Cost, 2016 (arXiv:1604.06174)',
  settings,
  create({ split, segments: wanted, lean, budget: ownBudget, margin }): MemoryStrategy {
    const saveMode = lean ? 'lean' : 'all';
    const chosen = new Map<string, Chosen>();
    let last: Chosen | null = null;
    const withCost = (net: Network, inputShape: number[], segments: string[][], estimate: EstimateOptions | undefined): Chosen => {
      const costs = forwardSeconds(net, inputShape);
      return { segments, peak: null, budget: null, recomputeSeconds: recomputeSeconds(net, inputShape, segments, saveMode, costs, estimate), forwardSeconds: costs.reduce((a, b) => a + b, 0) };
    };
    return {
      name: 'checkpoint',
      trainingShape: fullVolumeShape,
      sample: fullVolumeSample,
      plan(net, inputShape, context) {
        const deviceBudget = ownBudget > 0 ? ownBudget : (context?.deviceMemory ?? 0);
        const mode = split === 'auto' ? (deviceBudget > 0 ? 'budget' : 'search') : split;
        if (mode === 'budget' && !(deviceBudget > 0))
          throw new Error("strategy checkpoint: split 'budget' needs a budget: set strategy.settings.budget (e.g. 2GiB) or training.deviceMemory");
        const key = `${net.description}|${inputShape.join('x')}|${JSON.stringify(context?.estimate ?? {})}|${deviceBudget}`;
        let c = chosen.get(key);
        if (!c) {
          if (mode === 'budget') {
            const p = planForBudget(net, inputShape, deviceBudget * (1 - margin), { saveMode, estimate: context?.estimate });
            c = { segments: p.segments, peak: p.peak, budget: deviceBudget, recomputeSeconds: p.recomputeSeconds, forwardSeconds: p.forwardSeconds };
          } else {
            const segments =
              mode === 'levels'
                ? net.segments
                : mode === 'search'
                  ? searchSegments(net, inputShape, saveMode, context?.estimate)
                  : balancedSegments(net, inputShape, wanted > 0 ? wanted : Math.max(1, Math.round(Math.sqrt(net.nodes.length))));
            c = withCost(net, inputShape, segments, context?.estimate);
          }
          chosen.set(key, c);
        }
        last = c;
        return { recompute: c.segments, saveMode };
      },
      report(): StrategyColumn[] {
        return [
          { name: 'checkpoint_segments', value: last ? last.segments.length : null, meaning: 'checkpoint segments in the plan (recomputed in backward)' },
          {
            name: 'checkpoint_plan',
            value: last ? last.segments.map((s) => (s.length === 1 ? s[0] : `${s[0]}..${s[s.length - 1]}`)).join(' ') : null,
            meaning: 'the segments, each as its first..last layer, in forward order',
          },
          { name: 'checkpoint_plan_budget_bytes', value: last?.budget ?? null, meaning: 'the budget the plan was made for, bytes (empty: none; the plan minimised the peak)' },
          {
            name: 'checkpoint_recompute_ratio',
            value: last ? last.recomputeSeconds / last.forwardSeconds : null,
            meaning: "predicted recompute as a fraction of one forward pass (the cost model's layer times)",
          },
          { name: 'checkpoint_recompute_seconds', value: last ? last.recomputeSeconds : null, meaning: "predicted seconds of recompute per step (the cost model: FLOPs at 130 GFLOP/s plus bytes at 8 GB/s)" },
        ];
      },
      infer: fullVolumeInference,
    };
  },
};

export default plugin;
