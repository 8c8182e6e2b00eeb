/**
 * meunet-cascade — meU-net, the two-stage memory-efficient cascade of Wang, Blackie, Miguel-Aliaga, Bai,
 * "Memory-efficient segmentation of high-resolution volumetric MicroCT images" (MIDL 2022,
 * arXiv:2205.15941), built as ONE network graph so that the ordinary strategies and runner train both
 * stages jointly (no runner special case).
 *
 * Geometry. The network's output is a `patch` (default 64³) and its input is a context window
 * `contextRatio` × the patch (1.5 by default, the paper's: 96³): `outputMargin` = patch·(ratio − 1)/2 per side
 * = (context − patch)/2 (patch/4 at 1.5; ratio 1 gives stage 1 no more than the patch). The patch strategy's `patchSize`
 * is the OUTPUT extent and must equal `patch` (the strategy adds the margin to the crop it reads, and the
 * sliding window reads the margin around each window, zeros outside the volume). Any output extent that is
 * a multiple of `divisor` works (e.g. full-volume training: the padded case plus the margin); the margin
 * stays the one the settings' patch gives.
 *
 * Stage 1 (global, memory-efficient U-Net): AvgPool3d(2) of the whole context, then a U-Net with
 * `stage1Filters` channels per level (16-32-64-128-128: 5 levels), two 3×3×3 conv + norm + ReLU per level,
 * max-pooling down, nearest-neighbour upsampling (no transposed convolution) with concatenated skips. The
 * paper uses batch normalisation; with the batch size 1 of 3-D training this uses instance normalisation
 * (batch norm over one sample is instance norm without the running statistics). Every stage-1 level (each
 * pathway) is a checkpoint segment listed in the network's `recompute` (`checkpointStage1`): its
 * activations are re-run in backward rather than kept. A 1×1×1 head gives stage-1 logits at half
 * resolution over the whole context: an auxiliary output (`auxOutputs: [{ weight: auxWeight, scale: 2 }]`)
 * supervised with the target average-pooled by 2 over the context (core/training/loss.ts `stepLoss`).
 *
 * Stage 2 (local, full resolution): CenterCrop of the input to the patch, then a U-Net of the same block
 * design with `stage2Filters`. Joining the stages (`join`):
 * - 'post-concat' (default; the paper's figure): the stage-1 decoder's last features (half resolution)
 *   are upsampled ×2 (nearest), cropped to the patch and concatenated with stage 2's decoder output
 *   before stage 2's 1×1×1 head;
 * - 'input-channel' (the authors' public notebook): the stage-1 logits, upsampled ×2 and cropped to the
 *   patch, are extra input channels of stage 2.
 * Where the margin is even the crop is taken at half resolution before upsampling (margin/2), which is
 * exactly the same tensor as upsample-then-crop for nearest upsampling and never materialises the
 * full-resolution context of the stage-1 features.
 *
 * Divisor. With L1 stage-1 levels the context must be a multiple of d1 = 2·2^(L1−1) (the average pool and
 * L1−1 max-pools); with L2 stage-2 levels the output must be a multiple of d2 = 2^(L2−1). So that every
 * output extent O that is a multiple of `divisor` gives a valid input O + 2·margin, the build requires
 * 2·margin = patch·(ratio − 1) to be a whole multiple of d1 and sets divisor = max(d1, d2) (both are powers
 * of two). Default: patch 64, ratio 1.5, d1 = 32, d2 = 8 → divisor 32, context 96. A small setting such as
 * patch 16 / context 24 needs stage 1 with at most 3 levels (d1 = 8 divides 8 = 24 − 16).
 *
 * Test-time stitching "with weight 2 in the central half-cube and 1 elsewhere" is `cascadeWeightMap`
 * below, which the network declares as its `windowWeights` (the patch strategy's `blend: network`).
 */
import { GraphBuilder, NETWORK_INPUT, AvgPool3d, CenterCrop, ConcatChannels, Conv3d, InstanceNormAct, MaxPool3d, UpsampleNearest, type Network } from '../core/engine/index.js';
import type { NetworkSpec, Shape3 } from '../core/types.js';
import type { Architecture, ArchitecturePlugin } from '../core/plugins/index.js';
import { defineSettings, toShape3, type SettingsOf } from '../core/config/index.js';

const settings = defineSettings({
  patch: {
    type: 'shape3',
    default: 64,
    description: "output patch [D, H, W] (or one edge); the input is contextRatio × it; set the patch strategy's patchSize to it",
  },
  contextRatio: {
    type: 'number',
    min: 1,
    max: 4,
    default: 1.5,
    description: "stage 1's context edge over the patch edge (1.5: the paper's; 1: no context beyond the patch); patch·(ratio − 1) must be a multiple of stage 1's divisor",
  },
  stage1Filters: { type: 'number[]', default: [16, 32, 64, 128, 128], description: 'stage-1 (global) channels per level' },
  stage2Filters: { type: 'number[]', default: [16, 32, 64, 128], description: 'stage-2 (local) channels per level' },
  join: {
    type: 'enum',
    values: ['post-concat', 'input-channel'],
    default: 'post-concat',
    description: "'post-concat': stage-1 decoder features join before stage 2's head (paper); 'input-channel': stage-1 logits as stage-2 input channels (notebook)",
  },
  auxWeight: { type: 'number', min: 0, default: 0.5, description: "weight of stage 1's half-resolution loss" },
  checkpointStage1: { type: 'boolean', default: true, description: 'recompute every stage-1 level in backward' },
  negativeSlope: { type: 'number', min: 0, max: 1, default: 0, description: 'leaky ReLU slope (0: ReLU, as the paper)' },
});

export type MeUNetCascadeSettings = SettingsOf<typeof settings>;

export interface CascadeGeometry {
  /** Output extent the settings were made for (the patch strategy's patchSize). */
  patch: Shape3;
  /** Network input for that patch: patch + 2·margin = contextRatio × patch. */
  context: Shape3;
  /** outputMargin: patch·(contextRatio − 1)/2 per side. */
  margin: Shape3;
  /** Stage 1's multiple for the context: 2·2^(L1−1). */
  stage1Divisor: number;
  /** Stage 2's multiple for the output: 2^(L2−1). */
  stage2Divisor: number;
  /** The network's divisor: max of the two (powers of two). */
  divisor: number;
}

function checkFilters(name: string, f: unknown): number[] {
  if (!Array.isArray(f) || f.length < 2 || !f.every((v) => Number.isInteger(v) && v >= 1))
    throw new Error(`meunet-cascade: ${name} must list at least 2 positive integer channel counts (one per level), got ${JSON.stringify(f)}`);
  return f as number[];
}

/** Shapes and divisors of a cascade configuration; throws a message saying what to change where invalid. */
export function cascadeGeometry(s: Pick<MeUNetCascadeSettings, 'patch' | 'stage1Filters' | 'stage2Filters'> & { contextRatio?: number }): CascadeGeometry {
  const patch = toShape3(s.patch, 'meunet-cascade patch');
  const ratio = s.contextRatio ?? 1.5;
  if (!(Number.isFinite(ratio) && ratio >= 1)) throw new Error(`meunet-cascade: contextRatio must be a number ≥ 1, got ${ratio}`);
  const L1 = checkFilters('stage1Filters', s.stage1Filters).length;
  const L2 = checkFilters('stage2Filters', s.stage2Filters).length;
  const d1 = 2 * 2 ** (L1 - 1);
  const d2 = 2 ** (L2 - 1);
  const divisor = Math.max(d1, d2);
  const margin = patch.map((p, i) => {
    const axis = 'DHW'[i];
    const extra = p * (ratio - 1); // context − patch = 2·margin
    if (Math.abs(extra - Math.round(extra)) > 1e-9 || Math.round(extra) % d1 !== 0) {
      const step = d1 / p; // ratios whose context adds whole multiples of d1
      const near = [Math.floor((ratio - 1) / step), Math.ceil((ratio - 1) / step)].map((k) => +(1 + k * step).toFixed(6)).filter((r, j, a) => a.indexOf(r) === j);
      throw new Error(
        `meunet-cascade: contextRatio ${ratio} with patch edge ${p} (axis ${axis}) gives a context ${+(p * ratio).toFixed(3)}, ${+extra.toFixed(3)} voxels wider than the patch; ` +
          `that must be a whole multiple of ${d1} (= 2·2^${L1 - 1}, the average pool and ${L1 - 1} max-pools of ${L1} stage-1 levels); ` +
          `use contextRatio ${near.join(' or ')} with this patch, another patch, or fewer stage-1 levels`,
      );
    }
    if (p % divisor !== 0)
      throw new Error(`meunet-cascade: patch edge ${p} (axis ${axis}) must be a multiple of ${divisor} (stage 1's ${L1} levels need ${d1}, stage 2's ${L2} levels ${d2})`);
    return Math.round(extra) / 2;
  }) as Shape3;
  return { patch, margin, context: patch.map((p, i) => p + 2 * margin[i]!) as Shape3, stage1Divisor: d1, stage2Divisor: d2, divisor };
}

/** 3×3×3 conv (no bias: the normalisation's offset makes it redundant) + instance norm + (leaky) ReLU. */
function convNormAct(b: GraphBuilder, name: string, input: string, inC: number, outC: number, alpha: number): string {
  const conv = b.add(`${name}.conv`, new Conv3d({ inChannels: inC, outChannels: outC, kernel: 3 }), [input]);
  return b.add(`${name}.norm`, new InstanceNormAct({ channels: outC, alpha }), [conv]);
}

/**
 * A plain U-Net under `prefix`: per level two convNormAct, max-pool down, nearest upsampling + skip
 * concatenation up; one checkpoint segment per level and pathway. `entry` adds the nodes that make the
 * U-Net's input (inside the first segment); `exit` adds nodes after the last decoder level (inside its
 * segment) and returns the node to return.
 */
function uNet(
  b: GraphBuilder,
  prefix: string,
  filters: number[],
  alpha: number,
  entry: () => { node: string; channels: number },
  exit: (features: string) => string,
): string {
  const L = filters.length;
  const skips: string[] = [];
  let h = '';
  for (let l = 0; l < L; l++) {
    const below = h;
    h = b.segment(() => {
      let x: string;
      let inC: number;
      if (l === 0) ({ node: x, channels: inC } = entry());
      else {
        x = b.add(`${prefix}.enc${l}.pool`, new MaxPool3d(2), [below]);
        inC = filters[l - 1]!;
      }
      const c1 = convNormAct(b, `${prefix}.enc${l}.conv1`, x, inC, filters[l]!, alpha);
      return convNormAct(b, `${prefix}.enc${l}.conv2`, c1, filters[l]!, filters[l]!, alpha);
    });
    skips.push(h);
  }
  let out = '';
  for (let l = L - 2; l >= 0; l--) {
    const below = h;
    h = b.segment(() => {
      const up = b.add(`${prefix}.dec${l}.up`, new UpsampleNearest(2), [below]);
      const cat = b.add(`${prefix}.dec${l}.cat`, new ConcatChannels(), [skips[l]!, up]);
      const c1 = convNormAct(b, `${prefix}.dec${l}.conv1`, cat, filters[l]! + filters[l + 1]!, filters[l]!, alpha);
      const features = convNormAct(b, `${prefix}.dec${l}.conv2`, c1, filters[l]!, filters[l]!, alpha);
      if (l > 0) return features;
      out = exit(features);
      return features;
    });
  }
  return out;
}

export function buildMeUNetCascade(spec: NetworkSpec, s: MeUNetCascadeSettings): Network {
  const g = cascadeGeometry(s);
  const f1 = s.stage1Filters;
  const f2 = s.stage2Filters;
  const K = spec.outChannels;
  const alpha = s.negativeSlope;
  const [md, mh, mw] = g.margin;
  const halfCrop = g.margin.every((m) => m % 2 === 0);
  const b = new GraphBuilder();

  /** A stage-1 tensor at half the context resolution → full resolution, cropped to the patch. */
  const toPatch = (name: string, node: string): string => {
    if (halfCrop) {
      const crop = b.add(`${name}.crop`, new CenterCrop([md / 2, mh / 2, mw / 2]), [node]);
      return b.add(`${name}.up`, new UpsampleNearest(2), [crop]);
    }
    const up = b.add(`${name}.up`, new UpsampleNearest(2), [node]);
    return b.add(`${name}.crop`, new CenterCrop(g.margin), [up]);
  };

  // ---- stage 1: global, half resolution, the whole context
  let s1Features = '';
  const s1Logits = uNet(
    b,
    's1',
    f1,
    alpha,
    () => ({ node: b.add('s1.pool', new AvgPool3d(2), [NETWORK_INPUT]), channels: spec.inChannels }),
    (features) => {
      s1Features = features;
      return b.add('s1.head', new Conv3d({ inChannels: f1[0]!, outChannels: K, kernel: 1, bias: true }), [features]);
    },
  );

  // ---- stage 2: local, full resolution, the patch
  const output = uNet(
    b,
    's2',
    f2,
    alpha,
    () => {
      const crop = b.add('s2.crop', new CenterCrop(g.margin), [NETWORK_INPUT]);
      if (s.join !== 'input-channel') return { node: crop, channels: spec.inChannels };
      const logits = toPatch('join.logits', s1Logits);
      return { node: b.add('s2.input', new ConcatChannels(), [crop, logits]), channels: spec.inChannels + K };
    },
    (features) => {
      let x = features;
      let c = f2[0]!;
      if (s.join === 'post-concat') {
        const s1 = toPatch('join.features', s1Features);
        x = b.add('join.cat', new ConcatChannels(), [features, s1]);
        c += f1[0]!;
      }
      return b.add('head', new Conv3d({ inChannels: c, outChannels: K, kernel: 1, bias: true }), [x]);
    },
  );

  const net = b.build({
    name: 'meunet-cascade',
    windowWeights: cascadeWeightMap,
    description:
      `meU-net cascade, patch ${g.patch.join('x')} in context ${g.context.join('x')} (×${s.contextRatio}); stage 1 [${f1.join(', ')}] at half resolution` +
      `${s.checkpointStage1 ? ' (checkpointed)' : ''}, stage 2 [${f2.join(', ')}]; join ${s.join}`,
    inChannels: spec.inChannels,
    outChannels: K,
    activation: spec.activation,
    output,
    divisor: g.divisor,
    outputMargin: g.margin,
    auxOutputs: [{ node: s1Logits, weight: s.auxWeight, scale: 2 }],
  });
  if (s.checkpointStage1) net.recompute = net.segments.filter((seg) => seg[0]!.startsWith('s1.')).map((seg) => [...seg]);
  return net;
}

// meU-net's test-time stitching (Wang, Blackie, Miguel-Aliaga, Bai, MIDL 2022): output patches are blended
// "with weight 2 in the central half-cube and 1 elsewhere": voxels in the middle half of a window along
// every axis, where the patch saw the most context, count twice.

/** The central half of an axis of length n: [lo, n − lo) with lo = floor(n/4) (exactly n/2 voxels when 4 | n). */
export function centralHalf(n: number): [number, number] {
  const lo = Math.floor(n / 4);
  return [lo, n - lo];
}

/**
 * Weights over a window [d, h, w] (row-major, x fastest): 2 inside the central half-cube — the middle half
 * along each axis, [floor(n/4), n − floor(n/4)), symmetric and exactly half when the edge is a multiple of
 * 4 — and 1 elsewhere.
 */
export function cascadeWeightMap(roi: Shape3): Float32Array {
  roi.forEach((n, i) => {
    if (!(Number.isInteger(n) && n > 0)) throw new Error(`cascadeWeightMap: roi[${i}] must be a positive integer, got ${n}`);
  });
  const [d, h, w] = roi;
  const [z0, z1] = centralHalf(d);
  const [y0, y1] = centralHalf(h);
  const [x0, x1] = centralHalf(w);
  const out = new Float32Array(d * h * w).fill(1);
  for (let z = z0; z < z1; z++)
    for (let y = y0; y < y1; y++) {
      const row = (z * h + y) * w;
      out.fill(2, row + x0, row + x1);
    }
  return out;
}

const plugin: ArchitecturePlugin<typeof settings> = {
  kind: 'architecture',
  name: 'meunet-cascade',
  description: 'meU-net: checkpointed half-resolution global U-Net on a 1.5× context + full-resolution local U-Net on the patch, trained jointly',
  reference:
    'Wang Y., Blackie L., Miguel-Aliaga I., Bai W., Memory-efficient segmentation of high-resolution volumetric MicroCT images, MIDL 2022 (arXiv:2205.15941)',
  settings,
  create(s): Architecture {
    cascadeGeometry(s); // a bad patch/filters combination fails when the experiment is checked
    return { name: 'meunet-cascade', build: (spec) => buildMeUNetCascade(spec, s) };
  },
};

export default plugin;
