/**
 * unet3d — the 3D U-Net of Isensee et al.'s BraTS 2017 entry ("Brain Tumor Segmentation and Radiomics
 * Survival Prediction: Contribution to the BRATS 2017 Challenge", MICCAI BrainLes 2017, arXiv:1802.10508).
 *
 * Context pathway: per level a 3×3×3 convolution (stride 2 from level 1 on: strided-conv downsampling)
 * followed by a residual context module (two 3×3×3 conv + instance norm + leaky ReLU blocks, summed with
 * the module's input). Localization pathway: per level an upsampling module (nearest ×2 upsampling and a
 * 3×3×3 conv halving the features), concatenation with the context output of that level, and a
 * localization module (3×3×3 conv, then 1×1×1 conv halving the features). Optional deep supervision:
 * 1×1×1 segmentation layers at the two levels above the output, upsampled and summed into the output.
 * Filters: base·2^level. Sigmoid outputs for overlapping regions or softmax for exclusive labels.
 * The dropout of the original context modules is left out (this framework compares memory and time;
 * dropout changes neither and breaks exact gradient comparisons).
 *
 * Checkpoint segments: one per level of each pathway.
 */
import { GraphBuilder, NETWORK_INPUT, Add, ConcatChannels, Conv3d, InstanceNormAct, UpsampleNearest, type Network } from '../core/engine/index.js';
import type { NetworkSpec } from '../core/types.js';
import type { Architecture, ArchitecturePlugin } from '../core/plugins/index.js';
import { defineSettings, type SettingsOf } from '../core/config/index.js';

const settings = defineSettings({
  depth: { type: 'integer', min: 2, max: 7, default: 5, description: 'number of resolution levels' },
  baseFilters: { type: 'integer', min: 1, default: 16, description: 'filters at full resolution; doubled per level' },
  residual: { type: 'boolean', default: true, description: 'residual context modules' },
  deepSupervision: { type: 'boolean', default: false, description: 'add upsampled segmentations from the two levels above the output' },
  negativeSlope: { type: 'number', min: 0, max: 1, default: 0.01, description: 'leaky ReLU slope' },
});

export type UNet3dSettings = SettingsOf<typeof settings>;

/** Conv (no bias: the normalisation's offset makes it redundant) + instance norm + leaky ReLU. */
export function convNormAct(
  b: GraphBuilder,
  name: string,
  input: string,
  inC: number,
  outC: number,
  opts: { kernel?: number; stride?: number; alpha: number; inPlace?: boolean },
): string {
  const conv = b.add(`${name}.conv`, new Conv3d({ inChannels: inC, outChannels: outC, kernel: opts.kernel ?? 3, stride: opts.stride ?? 1 }), [input]);
  return b.add(`${name}.norm`, new InstanceNormAct({ channels: outC, alpha: opts.alpha, inPlace: opts.inPlace }), [conv]);
}

export function buildUNet3d(spec: NetworkSpec, s: UNet3dSettings): Network {
  const b = new GraphBuilder();
  const f = (level: number): number => s.baseFilters * 2 ** level;
  const alpha = s.negativeSlope;
  const skips: string[] = [];
  let h = NETWORK_INPUT;
  for (let l = 0; l < s.depth; l++) {
    h = b.segment(() => {
      const x =
        l === 0
          ? convNormAct(b, 'enc0.in', h, spec.inChannels, f(0), { alpha })
          : convNormAct(b, `enc${l}.down`, h, f(l - 1), f(l), { alpha, stride: 2 });
      let ctx = convNormAct(b, `enc${l}.ctx1`, x, f(l), f(l), { alpha });
      ctx = convNormAct(b, `enc${l}.ctx2`, ctx, f(l), f(l), { alpha });
      return s.residual ? b.add(`enc${l}.sum`, new Add(), [x, ctx]) : ctx;
    });
    skips.push(h);
  }
  const seg: Record<number, string> = {};
  for (let l = s.depth - 2; l >= 0; l--) {
    const below = h;
    const belowC = f(l + 1);
    h = b.segment(() => {
      const up = b.add(`dec${l}.up`, new UpsampleNearest(2), [below]);
      const upConv = convNormAct(b, `dec${l}.upconv`, up, belowC, f(l), { alpha });
      const cat = b.add(`dec${l}.cat`, new ConcatChannels(), [skips[l]!, upConv]);
      const loc = convNormAct(b, `dec${l}.loc1`, cat, 2 * f(l), 2 * f(l), { alpha });
      return l > 0 ? convNormAct(b, `dec${l}.loc2`, loc, 2 * f(l), f(l), { alpha, kernel: 1 }) : loc;
    });
    if (s.deepSupervision && l > 0 && l <= 2)
      seg[l] = b.add(`dec${l}.seg`, new Conv3d({ inChannels: f(l), outChannels: spec.outChannels, kernel: 1, bias: true }), [h]);
  }
  let out = b.add('head', new Conv3d({ inChannels: 2 * f(0), outChannels: spec.outChannels, kernel: 1, bias: true }), [h]);
  if (s.deepSupervision && seg[1]) {
    // Isensee's deep supervision: upsample the coarser segmentation and add it to the finer one.
    let acc = seg[2];
    if (acc) acc = b.add('ds.sum1', new Add(), [seg[1], b.add('ds.up2', new UpsampleNearest(2), [acc])]);
    else acc = seg[1];
    out = b.add('ds.sum0', new Add(), [out, b.add('ds.up1', new UpsampleNearest(2), [acc])]);
  }
  return b.build({
    name: 'unet3d',
    description: `unet3d depth ${s.depth}, base ${s.baseFilters}${s.residual ? ', residual' : ''}${s.deepSupervision ? ', deep supervision' : ''}`,
    inChannels: spec.inChannels,
    outChannels: spec.outChannels,
    activation: spec.activation,
    output: out,
    divisor: 2 ** (s.depth - 1),
  });
}

const plugin: ArchitecturePlugin<typeof settings> = {
  kind: 'architecture',
  name: 'unet3d',
  description: "Isensee et al.'s BraTS 2017 3D U-Net: residual context modules, strided-conv down, upsample+conv up",
  reference: 'Isensee F. et al., Brain Tumor Segmentation and Radiomics Survival Prediction: Contribution to the BRATS 2017 Challenge, 2018 (arXiv:1802.10508)',
  settings,
  create(s): Architecture {
    return { name: 'unet3d', build: (spec) => buildUNet3d(spec, s) };
  },
};

export default plugin;
