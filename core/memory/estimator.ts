/**
 * Predicts a training step's peak device memory from the network, the input shape and the strategy's
 * plan, before anything runs: it replays the executor's schedule on shapes alone (every allocation,
 * alias, save, recompute, swap-out and prefetched swap-in, and every free) with the same reference
 * counting, and adds the kernels' transient buffers that layers declare. Parameters, Adam's two moments
 * and the parameter gradients count too: they are device memory like any other.
 *
 * What it cannot see: a swap's device copy that outlives its last use while the transfer is still on the
 * link (the estimate assumes transfers keep up), and allocator fragmentation on real GPUs.
 */
import { capabilities, type BackendCapabilities } from '../backend/capabilities.js';
import { NETWORK_INPUT, inferShapes, readsOnce, type GraphNode, type Network, type SaveMode, type Shape } from '../engine/graph.js';
import { mergeSegments, type StepPlan } from '../engine/executor.js';

const BYTES = 4;
const count = (s: Shape): number => s.reduce((a, b) => a * b, 1);

export interface Estimate {
  /** Predicted high-water mark of device bytes during a training step (after the first). */
  peak: number;
  /** Where the peak happens, e.g. 'backward / enc1.ctx2.conv'. */
  at: string;
  /** Bytes of parameters, optimizer state, and the step's input and targets. */
  fixed: number;
  /** Bytes moved to host memory in one step (swapping). */
  hostBytes: number;
  /** With `breakdown: true`: what is live at the peak, largest first (label, bytes). */
  breakdown?: { what: string; bytes: number }[];
  /** The high-water mark of each layer step (forward, then backward with its recompute), in order. */
  steps: number[];
}

export interface EstimateOptions {
  /** Optimizer state tensors per parameter (Adam: 2). */
  optimizerSlots?: number;
  /** Output channels of the targets (defaults to the network's). */
  targetChannels?: number;
  /** The loss (its transients scale with the logits); default dice+ce. */
  loss?: 'dice' | 'dice+ce';
  /**
   * The optimizer updates each parameter inside backward, as soon as its gradient is final, instead of
   * after it (the runner's `training.optimizerInBackward`): parameter gradients never pile up.
   */
  optimizerInBackward?: boolean;
  /** What the backend the step runs on can do (default: the active backend's; core/backend/capabilities.ts). */
  capabilities?: BackendCapabilities;
  /** Record what is live at the peak (for diagnosis: `npm run experiment -- <name> --dry-run --explain`). */
  breakdown?: boolean;
}

/**
 * Loss transients as multiples of the logits' size: tf.valueAndGrad of the loss keeps the probabilities,
 * products and log terms of its tape until its gradient is done. Measured with the meter on the cpu
 * backend for the loss in core/loss.ts (test/estimator.test.ts checks whole steps against the meter).
 */
export function lossWorkspace(kind: 'dice' | 'dice+ce', activation: 'sigmoid' | 'softmax', fused = false): number {
  // The fused loss (cpu backend) computes on the backend's own arrays and allocates only the gradient.
  if (fused) return 0;
  if (kind === 'dice') return activation === 'sigmoid' ? 10 : 11;
  return activation === 'sigmoid' ? 24 : 20;
}

interface VBuffer {
  bytes: number;
  refs: number;
  what?: string;
}

export function estimatePeak(net: Network, inputShape: Shape, plan: StepPlan, opts: EstimateOptions = {}): Estimate {
  const shapes = inferShapes(net, inputShape);
  const paramBytes = net.params.reduce((n, p) => n + count(p.shape) * BYTES, 0);
  const slots = opts.optimizerSlots ?? 2;
  const K = opts.targetChannels ?? net.outChannels;
  const logitsShape = shapes.get(net.output)!;
  const targetBytes = count([...logitsShape.slice(0, 4), K]) * BYTES;
  const inputBytes = count(inputShape) * BYTES;

  let live = 0;
  let peak = 0;
  let at = 'start';
  let phase = 'forward';
  let where = '';
  // With opts.breakdown: the live buffers, and a snapshot of them at each new high-water mark.
  const track = opts.breakdown === true;
  const liveSet = new Set<VBuffer>();
  let paramGradBytes = 0;
  let breakdown: { what: string; bytes: number }[] | undefined;
  const snapshot = (transientWhat?: string, transientBytes = 0): void => {
    const sums = new Map<string, number>();
    const add = (what: string, bytes: number): void => void sums.set(what, (sums.get(what) ?? 0) + bytes);
    for (const b of liveSet) add(b.what ?? '?', b.bytes);
    if (paramGradBytes) add('parameter gradients', paramGradBytes);
    if (transientWhat) add(transientWhat, transientBytes);
    breakdown = [...sums].map(([what, bytes]) => ({ what, bytes })).sort((a, b) => b.bytes - a.bytes);
  };
  const steps: number[] = [];
  let stepHigh = 0;
  const grow = (b: number, buf?: VBuffer, transientWhat?: string): void => {
    live += b;
    if (live > stepHigh) stepHigh = live;
    if (track && buf) liveSet.add(buf);
    if (live > peak) {
      peak = live;
      at = `${phase} / ${where}`;
      if (track) snapshot(transientWhat, b);
    }
  };
  const free = (b: VBuffer): void => {
    live -= b.bytes;
    if (track) liveSet.delete(b);
  };
  const alloc = (bytes: number, refs = 1, what?: string): VBuffer => {
    const b = { bytes, refs, what };
    grow(bytes, b);
    return b;
  };
  const release = (b: VBuffer, n = 1): void => {
    b.refs -= n;
    if (b.refs <= 0) free(b);
  };
  const transient = (bytes: number, what = `workspace ${where}`): void => {
    grow(bytes, undefined, what);
    live -= bytes;
  };

  // Parameters and optimizer state exist before the step; the step's input and targets for its duration.
  const fixed = paramBytes * (1 + slots) + inputBytes + targetBytes;
  for (const [what, bytes] of [
    ['parameters', paramBytes],
    ['optimizer state', paramBytes * slots],
    ['input', inputBytes],
    ['targets', targetBytes],
  ] as const)
    alloc(bytes, Infinity, what);
  if (plan.backward === 'tape') return tapeEstimate(net, shapes, fixed, paramBytes, opts);

  const index = new Map(net.nodes.map((n, i) => [n.name, i]));
  const consumers = new Map<string, number>([[NETWORK_INPUT, 0]]);
  for (const n of net.nodes) {
    consumers.set(n.name, 0);
    for (const i of n.inputs) consumers.set(i, consumers.get(i)! + 1);
  }
  const requiresGrad = new Map<string, boolean>([[NETWORK_INPUT, false]]);
  for (const n of net.nodes) requiresGrad.set(n.name, n.layer.params.length > 0 || n.inputs.some((i) => requiresGrad.get(i)));

  const segments = mergeSegments(net.recompute ?? [], plan.recompute ?? []).map((names) => {
    const inside = new Set(names);
    const external = new Set<string>();
    for (const n of names) for (const i of net.nodes[index.get(n)!]!.inputs) if (!inside.has(i)) external.add(i);
    return { nodes: names, external: [...external] };
  });
  const segmentOf = new Map<string, number>();
  segments.forEach((s, k) => s.nodes.forEach((n) => segmentOf.set(n, k)));
  const holds = new Map<string, number>();
  for (const s of segments) for (const e of s.external) holds.set(e, (holds.get(e) ?? 0) + 1);

  const hooks = plan.hooks;
  const caps = opts.capabilities ?? capabilities();
  const inPlace = caps.inPlaceWrites;
  const fusedAdam = caps.fusedAdam;
  // Adam's transient buffers per parameter: none in place, its three new tensors fused, ~10 as tf ops.
  const adamWorkspace = inPlace ? 0 : fusedAdam ? 3 : 10;
  const backwardPos = new Map([...net.nodes].reverse().map((n, i) => [n.name, i]));
  let hostBytes = 0;

  // Swap-outs still on the link: with plan.packLag = L, a tensor packed during layer k (forward k, or
  // backward position p as layer n + p) keeps its device buffer until the end of layer k + L, when the
  // hooks wait for it. Without packLag the transfer is assumed to keep up (freed at once).
  const packLag = plan.packLag ?? -1;
  let tick = 0;
  const inFlight: { b: VBuffer; due: number }[] = [];
  const drainInFlight = (): void => {
    for (let k = inFlight.length - 1; k >= 0; k--)
      if (inFlight[k]!.due <= tick) {
        release(inFlight[k]!.b);
        inFlight.splice(k, 1);
      }
  };

  // Activation buffers by node (the network input is part of `fixed` and never freed here).
  const acts = new Map<string, VBuffer>([[NETWORK_INPUT, { bytes: 0, refs: Infinity }]]);
  /**
   * What each node keeps for backward: device buffers it holds a reference on, packed byte counts, and
   * per packed save the device buffer its swap-out started from (while that is still on the link, a
   * swap-in reuses it: the store's SwapStore.startIn does the same).
   */
  type SavedEntry = { device: VBuffer[]; packed: number[]; packedFrom: (VBuffer | null)[]; mode: SaveMode };
  const saved = new Map<string, SavedEntry>();
  const swapIn = (e: SavedEntry, name: string): VBuffer[] =>
    e.packed.map((bytes, k) => {
      const from = e.packedFrom[k];
      if (from && inFlight.some((f) => f.b === from)) {
        from.refs++;
        return from;
      }
      return alloc(bytes, 1, `swapped in for ${name}`);
    });
  const saveMode = plan.saveMode ?? 'all';

  /**
   * One layer's forward. `lastRead[k]`: input k is read for the last time and nothing else holds it, so
   * a layer with `forwardInPlace` writes its output into that buffer (cpu). `skipIfInputSaves`: a
   * recomputed node whose output nothing reads and which saves only inputs is not run (the executor's
   * savesOnlyInputs); returns null then.
   */
  const forwardNode = (name: string, keep: boolean, inputs: VBuffer[], onDevice: boolean, lastRead: boolean[], skipIfInputSaves = false): VBuffer | null => {
    const node = net.nodes[index.get(name)!]!;
    const inShapes = node.inputs.map((i) => shapes.get(i)!);
    const outBytes = count(shapes.get(name)!) * BYTES;
    const mode: SaveMode = keep ? saveMode : 'none';
    const spec = node.layer.saves(inShapes, mode);
    const entry: SavedEntry = { device: [], packed: [], packedFrom: [], mode };
    where = name;
    if (skipIfInputSaves && spec.inputs.length && !spec.output && !spec.extra.length) {
      for (const i of spec.inputs) {
        inputs[i]!.refs++;
        entry.device.push(inputs[i]!);
      }
      saved.set(name, entry);
      return null;
    }
    const ws = node.layer.workspace?.(inShapes, mode, caps);
    const overwrite = inPlace && node.layer.forwardInPlace === true && lastRead[0] === true && readsOnce(node.inputs, node.inputs[0]!) && node.inputs[0] !== NETWORK_INPUT;
    let out: VBuffer;
    if (overwrite) {
      out = inputs[0]!;
      out.what = `activation ${name}`;
    } else out = alloc(outBytes, 0, `activation ${name}`);
    if (ws?.forward) transient(ws.forward * BYTES);
    let saveIndex = 0;
    const site = () => ({
      node: name,
      layerType: node.layer.type,
      nodeIndex: index.get(name)!,
      saveIndex: saveIndex++,
      backwardPosition: backwardPos.get(name)!,
    });
    const keepTracked = (b: VBuffer, bytes: number): void => {
      if (!keep) return;
      if (onDevice && hooks?.willPack?.(site(), bytes)) {
        entry.packed.push(bytes);
        entry.packedFrom.push(packLag >= 0 ? b : null);
        hostBytes += bytes;
        if (packLag >= 0 && !inFlight.some((f) => f.b === b)) {
          b.refs++;
          inFlight.push({ b, due: tick + packLag });
        }
      } else {
        b.refs++;
        entry.device.push(b);
      }
    };
    for (const i of spec.inputs) keepTracked(inputs[i]!, inputs[i]!.bytes);
    if (spec.output) keepTracked(out, outBytes);
    for (const n of spec.extra) {
      const bytes = n * BYTES;
      if (!keep) {
        transient(bytes);
        continue;
      }
      if (onDevice && hooks?.willPack?.(site(), bytes)) {
        let from: VBuffer | null = null;
        if (packLag >= 0) {
          from = alloc(bytes, 1, `swap-out in flight from ${name}`);
          inFlight.push({ b: from, due: tick + packLag });
        } else transient(bytes);
        entry.packed.push(bytes);
        entry.packedFrom.push(from);
        hostBytes += bytes;
      } else entry.device.push(alloc(bytes, 1, `saved by ${name}`));
    }
    if (keep) saved.set(name, entry);
    return out;
  };

  // ---- forward
  const auxNames = (net.auxOutputs ?? []).map((a) => a.node);
  const held = new Set([net.output, ...auxNames]);
  for (const node of net.nodes) {
    const inputs = node.inputs.map((i) => acts.get(i)!);
    const out = forwardNode(node.name, !segmentOf.has(node.name), inputs, true, inputs.map((b) => b.refs === 1))!;
    out.refs += consumers.get(node.name)! + (holds.get(node.name) ?? 0) + (held.has(node.name) ? 1 : 0);
    acts.set(node.name, out);
    for (const i of inputs) release(i);
    if (out.refs === 0) free(out);
    drainInFlight();
    tick++;
    steps.push(stepHigh);
    stepHigh = live;
  }

  // ---- loss
  phase = 'loss';
  where = 'loss';
  const logitsBytes = count(logitsShape) * BYTES;
  const auxBytes = auxNames.map((n) => count(shapes.get(n)!) * BYTES);
  // The fused loss covers a plain output; auxiliary outputs or a margin take the taped loss.
  const fused = caps.fusedLoss && auxNames.length === 0 && !(net.outputMargin ?? []).some(Boolean);
  transient(lossWorkspace(opts.loss ?? 'dice+ce', net.activation, fused) * (logitsBytes + auxBytes.reduce((a, b) => a + b, 0)));
  const grads = new Map<string, VBuffer>([[net.output, alloc(logitsBytes, 1, `gradient ${net.output}`)]]);
  auxNames.forEach((n, k) => grads.set(n, alloc(auxBytes[k]!, 1, `gradient ${n}`)));
  release(acts.get(net.output)!);
  for (const n of auxNames) release(acts.get(n)!);

  // ---- backward
  phase = 'backward';
  const order = [...net.nodes].reverse();
  const lookahead = plan.prefetchDistance ?? 0;
  const unpacked = new Map<string, VBuffer[]>();
  const prefetch = (pos: number): void => {
    const node = order[pos];
    if (!node) return;
    const e = saved.get(node.name);
    if (e?.packed.length && !unpacked.has(node.name)) {
      where = `prefetch ${node.name}`;
      unpacked.set(node.name, swapIn(e, node.name));
    }
  };
  if (hooks) for (let p = 0; p < lookahead; p++) prefetch(p);
  const recomputed = new Set<number>();
  for (let pos = 0; pos < order.length; pos++) {
    const node = order[pos]!;
    if (hooks) prefetch(pos + lookahead);
    const seg = segmentOf.get(node.name);
    if (seg !== undefined && !recomputed.has(seg)) {
      recomputed.add(seg);
      phase = 'recompute';
      const s = segments[seg]!;
      const inside = new Set(s.nodes);
      const pending = new Map<string, number>();
      for (const n of s.nodes) for (const i of net.nodes[index.get(n)!]!.inputs) if (inside.has(i)) pending.set(i, (pending.get(i) ?? 0) + 1);
      const local = new Map<string, VBuffer>();
      for (const n of s.nodes) {
        const nd = net.nodes[index.get(n)!]!;
        const inputs = nd.inputs.map((i) => (inside.has(i) ? local.get(i)! : acts.get(i)!));
        // A local input read for the last time holds only the segment's reference (refs 1: no save).
        const lastRead = nd.inputs.map((i, k) => inside.has(i) && pending.get(i) === 1 && inputs[k]!.refs === 1);
        const out = forwardNode(n, true, inputs, false, lastRead, !pending.get(n));
        if (out) {
          out.refs += 1; // the segment's own reference while it reads it
          local.set(n, out);
        }
        for (const i of nd.inputs) {
          if (!inside.has(i)) continue;
          const left = pending.get(i)! - 1;
          pending.set(i, left);
          if (left === 0) release(local.get(i)!);
        }
        if (out && !pending.get(n)) release(out);
      }
      // The external inputs were held for the recompute only.
      for (const e of s.external) release(acts.get(e)!);
      phase = 'backward';
    }
    where = node.name;
    const dy = grads.get(node.name);
    grads.delete(node.name);
    const entry = saved.get(node.name) ?? { device: [], packed: [], packedFrom: [], mode: saveMode };
    saved.delete(node.name);
    if (dy && requiresGrad.get(node.name)) {
      const fromHost = unpacked.get(node.name) ?? swapIn(entry, node.name);
      unpacked.delete(node.name);
      const inShapes = node.inputs.map((i) => shapes.get(i)!);
      const ws = node.layer.workspace?.(inShapes, entry.mode, caps);
      // dParams, then dInputs (as Conv3d computes them), all alive together before dy is freed.
      const pBytes = node.layer.params.reduce((n, p) => n + count(p.shape) * BYTES, 0);
      paramGradBytes += pBytes;
      grow(pBytes);
      // A layer that writes its input gradient over dy (where nothing shares dy) allocates nothing for it.
      const overDy = inPlace && node.layer.gradientInPlace === true && dy.refs === 1;
      const dInputs: (VBuffer | null)[] = node.inputs.map((i) => {
        if (!requiresGrad.get(i)) return null;
        if (node.layer.passesGradient || overDy) {
          dy.refs++;
          return dy;
        }
        return alloc(count(shapes.get(i)!) * BYTES, 1, `gradient ${i}`);
      });
      // Saves that only this node still holds (and swapped-in copies) may be overwritten by its backward.
      const overwriting = entry.device.every((b) => b.refs === 1);
      const wsBackward = overwriting ? (ws?.backwardOverwriting ?? ws?.backward) : ws?.backward;
      if (wsBackward) transient(wsBackward * BYTES);
      release(dy);
      for (const b of fromHost) release(b);
      node.inputs.forEach((i, k) => {
        const g = dInputs[k];
        if (!g) return;
        const prev = grads.get(i);
        if (prev && inPlace && prev.refs === 1) {
          release(g); // summed into prev's own buffer
        } else if (prev) {
          const sum = alloc(count(shapes.get(i)!) * BYTES, 1, `gradient ${i}`);
          release(prev);
          release(g);
          grads.set(i, sum);
        } else grads.set(i, g);
      });
      for (const b of entry.device) release(b);
      if (opts.optimizerInBackward && pBytes) {
        // Adam takes this node's parameter gradients now and frees them.
        where = `adam ${node.name}`;
        transient(pBytes * adamWorkspace, 'optimizer workspace');
        paramGradBytes -= pBytes;
        live -= pBytes;
      }
    } else {
      if (dy) release(dy);
      for (const b of entry.device) release(b);
    }
    drainInFlight();
    tick++;
    steps.push(stepHigh);
    stepHigh = live;
  }
  for (const g of grads.values()) release(g);

  // ---- optimizer: Adam updates one parameter at a time (in place on cpu; else the fused cpu update
  // allocates the three new tensors and the tf-op update about ten temporaries).
  if (!opts.optimizerInBackward) {
    phase = 'optimizer';
    where = 'adam';
    const largest = Math.max(0, ...net.params.map((p) => count(p.shape) * BYTES));
    transient(largest * adamWorkspace, 'optimizer workspace');
  }
  return { peak, at, fixed, hostBytes, steps, ...(track ? { breakdown } : {}) };
}

/**
 * The tape baseline (`tf.grads`): every tensor a kernel saved and every gradient stays until the whole
 * backward pass ends, so the peak is at its end: all saved activations, every node's output gradient,
 * the parameter gradients, and the loss's tape.
 */
function tapeEstimate(net: Network, shapes: Map<string, Shape>, fixed: number, paramBytes: number, opts: EstimateOptions): Estimate {
  let savedBytes = 0;
  let gradBytes = 0;
  const savedActs = new Set<string>();
  for (const node of net.nodes) {
    const inShapes = node.inputs.map((i) => shapes.get(i)!);
    const spec = node.layer.saves(inShapes);
    for (const i of spec.inputs) if (node.inputs[i] !== NETWORK_INPUT) savedActs.add(node.inputs[i]!);
    if (spec.output) savedActs.add(node.name);
    savedBytes += spec.extra.reduce((a, b) => a + b, 0) * BYTES;
    gradBytes += (count(shapes.get(node.name)!) + (node.layer.tapeExtra?.(inShapes) ?? 0)) * BYTES;
  }
  for (const n of savedActs) savedBytes += count(shapes.get(n)!) * BYTES;
  // A tensor read by several layers keeps each reader's gradient contribution besides their sum
  // (an element-wise sum's contribution is an alias of its gradient and costs nothing).
  const readers = new Map<string, GraphNode[]>();
  for (const node of net.nodes) for (const i of node.inputs) readers.set(i, [...(readers.get(i) ?? []), node]);
  for (const [name, rs] of readers) {
    if (name === NETWORK_INPUT || rs.length < 2) continue;
    gradBytes += rs.filter((r) => !r.layer.passesGradient).length * count(shapes.get(name)!) * BYTES;
  }
  const auxNames = (net.auxOutputs ?? []).map((a) => a.node);
  const outBytes = [net.output, ...auxNames].reduce((n, o) => n + count(shapes.get(o)!) * BYTES, 0);
  const loss = lossWorkspace(opts.loss ?? 'dice+ce', net.activation) * outBytes;
  const peak = fixed + savedBytes + gradBytes + paramBytes + loss;
  return { peak, at: 'backward / end of tf.grads', fixed, hostBytes: 0, steps: [peak] };
}
