/**
 * swap — IBM Large Model Support (TFLMS) style swapping of saved activations to host memory, on the full
 * volume:
 * - Le T.D., Imai H., Negishi Y., Kawachiya K., "TFLMS: Large Model Support in TensorFlow by Graph
 *   Rewriting", 2018 (arXiv:1807.02037);
 * - Imai H. et al., "Fast and Accurate 3D Medical Image Segmentation with Data-swapping Method", 2018
 *   (arXiv:1812.07816).
 *
 * Forward: each tensor a layer saves for backward (a convolution's input, a normalisation's x̂) is copied
 * to a host store as soon as it is saved, and its device buffer is freed once that copy has finished (and
 * forward no longer reads it). Backward: each is brought back `lb` layers ahead of the layer that needs
 * it, so the transfer overlaps the backward of the layers in between, and freed after that layer's
 * backward. With `swapBranches`, forward also parks activations whose next reader is far away (the
 * U-Net's skip connections, which wait through the whole bottom of the network) and brings them back
 * ahead of that reader. Settings follow TFLMS: `n_tensors` → `nTensors`, `lb`, `swap_branches` →
 * `swapBranches`, `branch_threshold` → `branchDistance`.
 *
 * The link between device and host (store.ts): on a GPU backend (tfjs-node-gpu, webgpu) a swap-out is a
 * real `await t.data()` into host memory and a swap-in `tf.tensor(values)` (`DirectTransport`, no added
 * delay). Where device and host are the same RAM (the cpu backend), the link is emulated in real time by
 * host-link.ts (`EmulatedTransport`): worker threads move the bytes at `bandwidth` with `latency`
 * per transfer, one FIFO lane per direction, so overlap and stalls are real wall-clock time. With
 * `linkCopies: false` the link emulates the transfers' time only and moves nothing (for large volumes,
 * where this machine's memcpy, not the emulated link, would set the pace).
 *
 * Device memory, as the memory meter sees it: a swapped-out tensor's device buffer lives until its
 * transfer to the host finished (the store holds a clone — an alias of the same buffer — until then and
 * disposes it in `poll()`, which the executor calls between layers); a swapped-in tensor's buffer counts
 * from the start of its copy (as a GPU allocates the destination first) until the executor disposes it
 * after use; a tensor wanted back while its swap-out is still on the link is served by that device copy.
 * A tensor saved by two layers, or saved and parked, is copied to the host once (by buffer identity);
 * the host copy is reference-counted and freed when every holder released it.
 */
import { NETWORK_INPUT, inferShapes, type ParkSite, type SavedTensorHooks, type StepPlan, type Network, type Shape, type PackedTensor, type SaveSite } from '../../core/engine/index.js';
import type { MemoryStrategy, StrategyColumn, StrategyPlugin } from '../../core/plugins/index.js';
import { defaultSettings, defineSettings, type SettingsOf } from '../../core/config/index.js';
import { fullVolumeSample, fullVolumeShape } from '../../core/training/index.js';
import { fullVolumeInference } from '../../core/inference/index.js';
import { SwapHandle, SwapStore } from './store.js';

const settings = defineSettings({
  nTensors: {
    type: 'integer',
    min: -1,
    default: -1,
    description: 'how many saved tensors to swap, counted from the input in forward order (TFLMS n_tensors); -1: all',
  },
  lb: {
    type: 'integer',
    min: 0,
    default: 1,
    description: 'swap a tensor back in at least this many layers before its use (TFLMS lb); 0: on demand, when backward needs it (least device memory, no overlap)',
  },
  swapBranches: {
    type: 'boolean',
    default: false,
    description: 'also park, during forward, activations whose next reader is far away (skip connections; TFLMS swap_branches)',
  },
  branchDistance: {
    type: 'integer',
    min: 1,
    default: 4,
    description: 'with swapBranches: park an activation whose next forward reader is at least this many layers later',
  },
  bandwidth: {
    type: 'bytes',
    min: 1,
    default: '16GB',
    description: "host link bandwidth per direction, bytes per second ('16GB': PCIe Gen3 ×16, '75GB': NVLink 2.0); emulated where device memory is host memory",
  },
  latency: {
    type: 'number',
    min: 0,
    default: 10e-6,
    description: 'seconds per transfer on the emulated link',
  },
  minBytes: {
    type: 'bytes',
    min: 0,
    default: '64KiB',
    description: 'saved tensors smaller than this stay on the device (TFLMS ignores tiny tensors)',
  },
  outLag: {
    type: 'integer',
    min: -1,
    default: 1,
    description:
      'a swap-out may overlap this many further layers before the step waits for it; bounds the device memory held by copies still on the link (−1: never wait)',
  },
  outCopy: {
    type: 'enum',
    values: ['main', 'worker'],
    default: 'main',
    description:
      "who copies a swap-out into host memory on the emulated link (swap-ins are always a lane worker's): 'worker', a lane worker (the native kernels then write shareable outputs), as a GPU's copy engine would; 'main', the main thread when the transfer is issued (with the native pool's threads where the addon is active). On a 2-core CPU 'main' was the faster (the lane worker competes with the compute threads for the cores: results/bench, results/tflms-tuning-copies)",
  },
  linkCopies: {
    type: 'boolean',
    default: true,
    description:
      "the emulated link really copies the bytes (worker threads); false: it emulates only the transfers' time (no memcpy; for large volumes, where this machine's memcpy is slower than the emulated link)",
  },
});

/** The swap strategy's settings, from its schema. */
export type SwapSettings = SettingsOf<typeof settings>;

export const SWAP_DEFAULTS: SwapSettings = defaultSettings(settings, 'strategy.settings');

// ------------------------------------------------------------------------------------------------
// Which saves are swapped: a pure function of the save site and its bytes (so the estimator can ask)
// ------------------------------------------------------------------------------------------------

export interface SaveSiteInfo {
  node: string;
  nodeIndex: number;
  saveIndex: number;
  /** Which tensor it is: `act:<node>` for an activation (a node's output or the network input), else `extra:<node>:<i>`. */
  tensor: string;
  bytes: number;
  /** The network input: the caller owns it and keeps it on the device, so swapping it would free nothing. */
  networkInput: boolean;
  /** Position of the tensor among the swap candidates (≥ minBytes, not the input) in forward order; -1 if none. */
  rank: number;
}

const siteKey = (nodeIndex: number, saveIndex: number): string => `${nodeIndex}:${saveIndex}`;

/**
 * Every save site of a training step at `inputShape`, in forward order, from the layers' `saves()` (the
 * order the executor and the estimator number saves: inputs, then the output, then extra tensors).
 * A tensor saved by several layers has one rank.
 */
export function saveSiteTable(net: Network, inputShape: Shape, minBytes: number): Map<string, SaveSiteInfo> {
  const shapes = inferShapes(net, inputShape);
  const count = (s: Shape): number => s.reduce((a, b) => a * b, 1);
  const table = new Map<string, SaveSiteInfo>();
  const ranks = new Map<string, number>();
  net.nodes.forEach((node, nodeIndex) => {
    const inShapes = node.inputs.map((i) => shapes.get(i)!);
    const spec = node.layer.saves(inShapes);
    let saveIndex = 0;
    const add = (tensor: string, bytes: number, networkInput: boolean): void => {
      let rank = -1;
      if (!networkInput && bytes >= minBytes) {
        if (!ranks.has(tensor)) ranks.set(tensor, ranks.size);
        rank = ranks.get(tensor)!;
      }
      table.set(siteKey(nodeIndex, saveIndex), { node: node.name, nodeIndex, saveIndex, tensor, bytes, networkInput, rank });
      saveIndex++;
    };
    for (const i of spec.inputs) add(`act:${node.inputs[i]}`, count(inShapes[i]!) * 4, node.inputs[i] === NETWORK_INPUT);
    if (spec.output) add(`act:${node.name}`, count(shapes.get(node.name)!) * 4, false);
    spec.extra.forEach((n, k) => add(`extra:${node.name}:${k}`, n * 4, false));
  });
  return table;
}

/**
 * The swap decision for one save: swapped when it is at least `minBytes`, is not the network input, and
 * its tensor is among the first `nTensors` candidates (all when -1). Ranks come from the table of the
 * plan's input shape; a step at another shape uses the same ranks (a site missing from the table is
 * swapped only with nTensors -1).
 */
export function swapDecision(table: Map<string, SaveSiteInfo>, s: Pick<SwapSettings, 'nTensors' | 'minBytes'>) {
  return (site: Pick<SaveSite, 'nodeIndex' | 'saveIndex'>, bytes: number): boolean => {
    const info = table.get(siteKey(site.nodeIndex, site.saveIndex));
    if (info?.networkInput) return false;
    if (bytes < s.minBytes) return false;
    if (s.nTensors < 0) return true;
    const rank = info && info.rank >= 0 ? info.rank : Infinity;
    return rank < s.nTensors;
  };
}

// ------------------------------------------------------------------------------------------------
// The hooks and the plugin
// ------------------------------------------------------------------------------------------------

/** The executor's saved-tensor hooks for one plan (network and input shape), on a shared store. */
export function swapHooks(store: SwapStore, net: Network, inputShape: Shape, s: SwapSettings): SavedTensorHooks {
  const decide = swapDecision(saveSiteTable(net, inputShape, s.minBytes), s);
  const handle = (p: PackedTensor): SwapHandle => {
    if (!(p instanceof SwapHandle)) throw new Error('swap: a packed tensor that the swap store did not make');
    return p;
  };
  const hooks: SavedTensorHooks = {
    // Swapping handles float32 (every saved activation here); anything else stays on the device.
    pack: (t, site) => (t.dtype === 'float32' && decide(site, t.size * 4) ? store.swapOut(t) : 'device'),
    willPack: (site, bytes) => decide(site, bytes),
    unpack: (p) => store.unpack(handle(p)),
    prefetch: (p) => store.prefetch(handle(p)),
    release: (p) => store.release(handle(p)),
    poll: () => store.endLayer(s.outLag),
    stepStart: () => store.stepStart(),
    stepEnd: () => store.stepEnd(),
  };
  if (s.swapBranches) {
    const parks = (site: ParkSite, bytes: number): boolean => site.distance >= s.branchDistance && bytes >= s.minBytes;
    hooks.willPark = parks;
    hooks.park = (t, site) => (t.dtype === 'float32' && parks(site, t.size * 4) ? store.swapOut(t, true) : null);
  }
  return hooks;
}

/**
 * How much of the link's time the step hid (the emulated link's statistics; empty columns on a real one):
 * the seconds transfers kept each lane busy, the seconds the main thread spent on the swap (waiting for
 * swap-ins and swap-outs, and copying sources a lane worker cannot read), and the overlap, 1 − main-thread
 * seconds / link seconds (1: every transfer hidden behind compute).
 */
function linkColumns(store: SwapStore): StrategyColumn[] {
  const link = store.hostLink?.stats ?? null;
  const busy = link ? link.deviceToHostBusySeconds + link.hostToDeviceBusySeconds : null;
  const main = link ? store.counters.waitSeconds + store.counters.outWaitSeconds + link.stagingSeconds : null;
  return [
    { name: 'swap_out_wait_seconds', value: store.counters.outWaitSeconds, meaning: 'seconds forward waited for swap-outs to finish (outLag) over the trial' },
    { name: 'swap_link_seconds', value: busy, meaning: 'seconds of transfers on the emulated link over the trial, both directions (empty on a real link)' },
    { name: 'swap_staging_seconds', value: link ? link.stagingSeconds : null, meaning: "seconds the main thread copied swap-out sources a lane worker cannot read (non-shared arrays) over the trial" },
    {
      name: 'swap_overlap',
      value: busy && main !== null ? Math.max(0, 1 - main / busy) : null,
      meaning: "1 − (swap waits + main-thread staging) / link seconds: the share of the link's time hidden behind compute (emulated link)",
    },
  ];
}

/** The swap strategy, for code that builds it without an experiment file (tests, benchmarks). */
export function createSwapStrategy(
  settings: Partial<SwapSettings> = {},
  opts: { transport?: 'auto' | 'emulated' | 'direct' } = {},
): MemoryStrategy & { readonly store: SwapStore } {
  const s: SwapSettings = { ...SWAP_DEFAULTS, ...settings };
  const store = new SwapStore({ bandwidth: s.bandwidth, latency: s.latency, copy: s.linkCopies, outCopy: s.outCopy, transport: opts.transport ?? 'auto' });
  return {
    name: 'swap',
    store,
    trainingShape: fullVolumeShape,
    sample: fullVolumeSample,
    plan: (net, inputShape): StepPlan => {
      // The link opens now, not at the first swap-out (its workers start); on the cpu backend its steps
      // make the native kernels' outputs shareable from the first layer on (store.ts, stepStart).
      void store.link;
      return { hooks: swapHooks(store, net, inputShape, s), prefetchDistance: s.lb, packLag: s.outLag };
    },
    // One forward pass over the whole volume saves nothing, so nothing is swapped.
    infer: fullVolumeInference,
    report: () => [
      { name: 'swap_out_bytes', value: store.counters.swapOutBytes, meaning: 'bytes copied device → host over the trial (each swapped tensor once per step)' },
      { name: 'swap_in_bytes', value: store.counters.swapInBytes, meaning: 'bytes copied host → device over the trial (a copy still on its way out serves without a transfer)' },
      { name: 'swapped_tensors', value: store.counters.swappedTensors, meaning: 'tensors swapped out over the trial' },
      { name: 'swap_wait_seconds', value: store.counters.waitSeconds, meaning: 'seconds training waited for tensors to come back from the host (swap stalls)' },
      { name: 'host_peak_bytes', value: store.counters.hostPeakBytes, meaning: 'peak bytes the store kept in host memory' },
      ...linkColumns(store),
    ],
    dispose: () => store.dispose(),
  };
}

const plugin: StrategyPlugin<typeof settings> = {
  kind: 'strategy',
  name: 'swap',
  description: 'whole volume per step; saved activations swapped to host memory in forward and back ahead of use in backward (TFLMS)',
  reference:
    'Le T.D. et al., TFLMS: Large Model Support in TensorFlow by Graph Rewriting, 2018 (arXiv:1807.02037); Imai H. et al., Fast and Accurate 3D Medical Image Segmentation with Data-swapping Method, 2018 (arXiv:1812.07816)',
  settings,
  create: (s) => createSwapStrategy(s),
};

export default plugin;
