/**
 * patch — train on random crops (128³ by default), foreground-biased as in nnU-Net (a share of crops is
 * centred on a random foreground voxel), and infer by sliding window over the full volume with
 * overlapping windows blended by a Gaussian importance map (MONAI's `sliding_window_inference`).
 * Loses context where an object spans several patches; that is what the comparison measures.
 */
import type { PreparedCase, Rng, Shape3 } from '../core/types.js';
import type { MemoryStrategy, StrategyPlugin } from '../core/plugins/index.js';
import { extractBox } from '../core/data/index.js';
import { slidingWindowInference } from '../core/inference/index.js';
import { defineSettings, SettingsError } from '../core/config/index.js';
import type { Network } from '../core/engine/index.js';

const foregroundIndex = new WeakMap<Uint8Array, Uint32Array>();

/** Voxel indices with a nonzero label (computed once per case). */
function foregroundVoxels(label: Uint8Array): Uint32Array {
  let idx = foregroundIndex.get(label);
  if (!idx) {
    let n = 0;
    for (let i = 0; i < label.length; i++) if (label[i]) n++;
    idx = new Uint32Array(n);
    n = 0;
    for (let i = 0; i < label.length; i++) if (label[i]) idx[n++] = i;
    foregroundIndex.set(label, idx);
  }
  return idx;
}

/** A crop start: centred on a random foreground voxel with probability `fgRatio`, else uniform. */
export function cropStart(c: PreparedCase, patch: Shape3, rng: Rng, fgRatio: number): Shape3 {
  const [D, H, W] = c.shape;
  const fg = foregroundVoxels(c.label);
  // Where the case is smaller than the patch the crop starts before 0 and is zero-padded (centred).
  const range = (n: number, p: number): [number, number] => (n >= p ? [0, n - p] : [Math.floor((n - p) / 2), Math.floor((n - p) / 2)]);
  const rz = range(D, patch[0]);
  const ry = range(H, patch[1]);
  const rx = range(W, patch[2]);
  const clamp = (v: number, [lo, hi]: [number, number]): number => Math.min(hi, Math.max(lo, v));
  if (fg.length > 0 && rng.next() < fgRatio) {
    const v = fg[rng.int(0, fg.length)]!;
    const x = v % W;
    const y = Math.floor(v / W) % H;
    const z = Math.floor(v / (W * H));
    return [clamp(z - (patch[0] >> 1), rz), clamp(y - (patch[1] >> 1), ry), clamp(x - (patch[2] >> 1), rx)];
  }
  return [rng.int(rz[0], rz[1] + 1), rng.int(ry[0], ry[1] + 1), rng.int(rx[0], rx[1] + 1)];
}

function withMargin(patch: Shape3, net: Network): Shape3 {
  const m = net.outputMargin ?? [0, 0, 0];
  return patch.map((n, i) => n + 2 * m[i]!) as Shape3;
}

const settings = defineSettings({
  patchSize: { type: 'shape3', default: 128, description: 'crop [D, H, W] (or one edge); a multiple of the network divisor' },
  foregroundRatio: { type: 'number', min: 0, max: 1, default: 0.33, description: 'share of crops centred on a foreground voxel' },
  overlap: { type: 'number', min: 0, max: 0.95, default: 0.5, description: 'sliding-window overlap between neighbouring windows' },
  blend: {
    type: 'enum',
    values: ['gaussian', 'constant', 'network'],
    default: 'gaussian',
    description:
      "how overlapping windows are weighted: a Gaussian (MONAI), constant, or 'network': the architecture's own stitching weights (meunet-cascade: 2 in the central half-cube, 1 elsewhere)",
  },
  sigmaScale: { type: 'number', min: 0.01, default: 0.125, description: 'Gaussian sigma as a fraction of the window edge' },
});

const plugin: StrategyPlugin<typeof settings> = {
  kind: 'strategy',
  name: 'patch',
  description: 'random foreground-biased crops for training; Gaussian-blended sliding window for inference',
  reference: 'Isensee F. et al., nnU-Net, Nature Methods 2021 (sampling); MONAI sliding_window_inference (inference)',
  settings,
  create({ patchSize: patch, foregroundRatio: fgRatio, overlap, blend, sigmaScale }): MemoryStrategy {
    const checkPatch = (divisor: number): void => {
      patch.forEach((p, i) => {
        if (p % divisor !== 0)
          throw new SettingsError(
            'strategy.settings.patchSize',
            `edge ${p} (axis ${'DHW'[i]}) is not a multiple of the network's divisor ${divisor}; use a multiple such as ${Math.max(divisor, Math.round(p / divisor) * divisor)}`,
          );
      });
    };
    return {
      name: 'patch',
      trainingShape: (_caseShape, net) => {
        checkPatch(net.divisor);
        return withMargin(patch, net);
      },
      sample(c, rng, net) {
        checkPatch(net.divisor);
        // The crop is the network's output; its input reads the margin around it (zeros outside).
        const m = net.outputMargin ?? [0, 0, 0];
        const start = cropStart(c, patch, rng, fgRatio).map((v, i) => v - m[i]!) as Shape3;
        const shape = withMargin(patch, net);
        return {
          image: extractBox(c.image, c.shape, c.channels, start, shape),
          target: extractBox(c.target, c.shape, c.outChannels, start, shape),
          shape,
        };
      },
      plan: () => ({}),
      infer: (input, predict, net) => {
        const weights = net.windowWeights;
        if (blend === 'network' && !weights)
          throw new SettingsError('strategy.settings.blend', `'network': ${net.name} declares no stitching weights of its own; use 'gaussian' or 'constant'`);
        return slidingWindowInference(input, patch, (w, shape) => predict(w, shape), {
          outChannels: net.outChannels,
          overlap,
          blend: blend === 'network' ? weights : blend,
          sigmaScale,
          inputMargin: net.outputMargin,
        });
      },
    };
  },
};

export default plugin;
