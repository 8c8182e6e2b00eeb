/**
 * Predicts a training step's peak device memory from the network, the input shape and the strategy's
 * plan, before anything runs: it walks the step's schedule (core/engine/schedule.ts), the same events the
 * executor runs, and adds up their memory effects (every allocation, alias, save, recompute, swap-out and
 * swap-in, and every free), plus the transients that kernels, the loss and the optimizer make.
 * Parameters, Adam's two moments and the parameter gradients count too: they are device memory like any
 * other.
 *
 * What it cannot see: a swap-out that finishes before its allowed window ends (each is booked for the
 * whole window: an upper bound), and allocator fragmentation on real GPUs.
 *
 * `estimateInferencePeak` does the same for one inference window (core/inference/window.ts): the forward
 * without saves that the executor runs, then the output activation.
 */
import { capabilities, type BackendCapabilities } from '../backend/index.js';
import { NETWORK_INPUT, BYTES_PER_ELEMENT as BYTES, bytesOf, forwardSchedule, inferShapes, stepSchedule, type GraphNode, type Network, type Shape, type StepPlan, type MemoryOp, type StepSchedule, type TapeSchedule } from '../engine/index.js';

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
 * backend for the loss in core/training/loss.ts (the tests check whole steps against the meter).
 */
export function lossWorkspace(kind: 'dice' | 'dice+ce', activation: 'sigmoid' | 'softmax', fused = false): number {
  // The fused loss (cpu backend) computes on the backend's own arrays and allocates only the gradient.
  if (fused) return 0;
  if (kind === 'dice') return activation === 'sigmoid' ? 10 : 11;
  return activation === 'sigmoid' ? 24 : 20;
}

/** Adam's transient buffers per parameter element: none in place, its three new tensors fused, ~10 as tf ops. */
function adamWorkspace(caps: BackendCapabilities): number {
  return caps.inPlaceWrites ? 0 : caps.fusedAdam ? 3 : 10;
}

interface Buffer {
  bytes: number;
  what: string;
}

export function estimatePeak(net: Network, inputShape: Shape, plan: StepPlan, opts: EstimateOptions = {}): Estimate {
  const caps = opts.capabilities ?? capabilities();
  return estimateSchedule(stepSchedule(net, inputShape, plan, { optimizerInBackward: opts.optimizerInBackward, capabilities: caps }), { ...opts, capabilities: caps });
}

/**
 * The estimate of a step's schedule already built (by stepSchedule, with the optimizerInBackward and
 * capabilities of `opts`), for a caller that reads the schedule too (checkpoint's planner).
 */
export function estimateSchedule(schedule: StepSchedule | TapeSchedule, opts: EstimateOptions = {}): Estimate {
  const caps = opts.capabilities ?? capabilities();
  const { net, inputShape, shapes } = schedule;
  const paramBytes = net.params.reduce((n, p) => n + bytesOf(p.shape), 0);
  const slots = opts.optimizerSlots ?? 2;
  const K = opts.targetChannels ?? net.outChannels;
  const logitsShape = shapes.get(net.output)!;
  const targetBytes = bytesOf([...logitsShape.slice(0, 4), K]);
  const inputBytes = bytesOf(inputShape);

  let live = 0;
  let peak = 0;
  let at = 'start';
  let phase = 'forward';
  let where = '';
  // With opts.breakdown: the live buffers, and a snapshot of them at each new high-water mark.
  const track = opts.breakdown === true;
  const liveSet = new Set<Buffer>();
  let paramGradBytes = 0;
  let breakdown: { what: string; bytes: number }[] | undefined;
  const snapshot = (transientWhat?: string, transientBytes = 0): void => {
    const sums = new Map<string, number>();
    const add = (what: string, bytes: number): void => void sums.set(what, (sums.get(what) ?? 0) + bytes);
    for (const b of liveSet) add(b.what, b.bytes);
    if (paramGradBytes) add('parameter gradients', paramGradBytes);
    if (transientWhat) add(transientWhat, transientBytes);
    breakdown = [...sums].map(([what, bytes]) => ({ what, bytes })).sort((a, b) => b.bytes - a.bytes);
  };
  const steps: number[] = [];
  let stepHigh = 0;
  const grow = (b: number, buf?: Buffer, transientWhat?: string): void => {
    live += b;
    if (live > stepHigh) stepHigh = live;
    if (track && buf) liveSet.add(buf);
    if (live > peak) {
      peak = live;
      at = `${phase} / ${where}`;
      if (track) snapshot(transientWhat, b);
    }
  };
  const transient = (bytes: number, what: string): void => {
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
    grow(bytes, { bytes, what });
  if (schedule.backward === 'tape') return tapeEstimate(net, shapes, fixed, paramBytes, opts);

  const buffers = new Map<number, Buffer>();
  const apply = (op: MemoryOp): void => {
    switch (op.op) {
      case 'alloc': {
        const b = { bytes: op.bytes, what: op.what };
        buffers.set(op.buffer, b);
        grow(op.bytes, b);
        break;
      }
      case 'free': {
        const b = buffers.get(op.buffer)!;
        live -= b.bytes;
        if (track) liveSet.delete(b);
        break;
      }
      case 'relabel':
        buffers.get(op.buffer)!.what = op.what;
        break;
      case 'transient':
        transient(op.bytes, op.what);
        break;
      case 'parameter-gradients':
        paramGradBytes += op.bytes;
        if (op.bytes > 0) grow(op.bytes);
        else live += op.bytes;
        break;
      case 'loss-workspace':
        transient(lossWorkspace(opts.loss ?? 'dice+ce', net.activation, op.fused) * op.outputBytes, `workspace ${where}`);
        break;
      case 'optimizer-workspace':
        transient(op.parameterBytes * adamWorkspace(caps), 'optimizer workspace');
        break;
    }
  };
  for (const ev of schedule.events) {
    phase = ev.phase;
    where = ev.where;
    for (const op of ev.memory) apply(op);
    if (ev.kind === 'end-layer') {
      steps.push(stepHigh);
      stepHigh = live;
    }
  }
  return { peak, at, fixed, hostBytes: schedule.hostBytes, steps, ...(track ? { breakdown } : {}) };
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
    gradBytes += bytesOf(shapes.get(node.name)!) + (node.layer.tapeExtra?.(inShapes) ?? 0) * BYTES;
  }
  for (const n of savedActs) savedBytes += bytesOf(shapes.get(n)!);
  // A tensor read by several layers keeps each reader's gradient contribution besides their sum
  // (an element-wise sum's contribution is an alias of its gradient and costs nothing).
  const readers = new Map<string, GraphNode[]>();
  for (const node of net.nodes) for (const i of node.inputs) readers.set(i, [...(readers.get(i) ?? []), node]);
  for (const [name, rs] of readers) {
    if (name === NETWORK_INPUT || rs.length < 2) continue;
    gradBytes += rs.filter((r) => !r.layer.passesGradient).length * bytesOf(shapes.get(name)!);
  }
  const auxNames = (net.auxOutputs ?? []).map((a) => a.node);
  const outBytes = [net.output, ...auxNames].reduce((n, o) => n + bytesOf(shapes.get(o)!), 0);
  const loss = lossWorkspace(opts.loss ?? 'dice+ce', net.activation) * outBytes;
  const peak = fixed + savedBytes + gradBytes + paramBytes + loss;
  return { peak, at: 'backward / end of tf.grads', fixed, hostBytes: 0, steps: [peak] };
}

/** What `estimateInferencePeak` predicts for one window. */
export interface InferenceEstimate {
  /** Predicted high-water mark of device bytes while one window runs (parameters included). */
  peak: number;
  /** Where the peak happens, e.g. 'inference / s2.dec0.conv1.conv'. */
  at: string;
  /** Bytes of the parameters (held for the whole inference, whatever the volume). */
  parameters: number;
  /** Bytes of the window's input tensor [1, d, h, w, C]. */
  input: number;
}

/**
 * The peak device memory of one inference window as `windowPredictor` (core/inference/window.ts) runs it:
 * the parameters, the window's input [1, d, h, w, C] (already padded to the network's divisor), the
 * forward without saves that `Executor.forward` runs (`forwardSchedule`: each activation freed after its
 * last reader, a layer writing over an input it reads last where the backend allows it, each layer's
 * forward workspace), then the output activation (sigmoid or softmax: one buffer of the logits' size
 * while the logits are still held). Nothing of the volume is on the device: a sliding window keeps its
 * stitched output in host memory, so this is the whole inference's device peak for any volume size.
 */
export function estimateInferencePeak(net: Network, inputShape: Shape, opts: { capabilities?: BackendCapabilities } = {}): InferenceEstimate {
  const caps = opts.capabilities ?? capabilities();
  const shapes = inferShapes(net, inputShape);
  const parameters = net.params.reduce((n, p) => n + bytesOf(p.shape), 0);
  const input = bytesOf(inputShape);
  let live = parameters + input;
  let peak = live;
  let at = 'inference / input';
  const grow = (bytes: number, where: string): void => {
    live += bytes;
    if (live > peak) {
      peak = live;
      at = `inference / ${where}`;
    }
  };
  const bytesOfNode = new Map<string, number>();
  for (const step of forwardSchedule(net, [net.output], true, caps)) {
    const node = net.nodes[step.node]!;
    const inShapes = node.inputs.map((n) => shapes.get(n)!);
    const out = bytesOf(shapes.get(node.name)!);
    // An output written over its input takes that input's buffer (the same size for these layers).
    if (step.overwritable[0]) bytesOfNode.set(node.name, bytesOfNode.get(node.inputs[0]!)!);
    else {
      grow(out, node.name);
      bytesOfNode.set(node.name, out);
    }
    const ws = node.layer.workspace?.(inShapes, 'none', caps);
    const extra = node.layer.saves(inShapes, 'none', caps).extra.reduce((a, b) => a + b, 0) + (ws?.forward ?? 0);
    if (extra > 0) {
      grow(extra * BYTES, node.name);
      live -= extra * BYTES;
    }
    for (const d of step.dead) {
      // A buffer handed on in place is freed with its last holder, not with the input it was.
      if (d === node.inputs[0] && step.overwritable[0]) continue;
      live -= bytesOfNode.get(d)!;
    }
  }
  // The activation's output beside the logits (the tidy frees the logits after it).
  grow(bytesOf(shapes.get(net.output)!), `activation (${net.activation})`);
  return { peak, at, parameters, input };
}
