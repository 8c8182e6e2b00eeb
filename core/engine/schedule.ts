/**
 * The step's schedule: one module turns (network, input shape, plan) into the ordered events of a
 * training step — each layer's forward and what it saves where (device, host, or nothing: recomputed),
 * every release of an activation, the recompute of checkpoint segments, swap-outs, prefetches and
 * swap-ins, forward branch parking, the loss, each layer's backward with how its input gradients are
 * summed, the optimizer updates, and the ends of layers. The executor (executor.ts) runs these events on
 * tensors; the estimator (core/memory/estimator.ts) walks the same events on bytes: every event carries
 * its memory effects (`memory`), in the order they happen. Neither re-derives what the other does.
 *
 * To decide (which input a layer may overwrite, which gradient sum may be written in place, when a
 * buffer's last reference goes), the schedule follows every buffer symbolically, with the reference
 * counts the executor's tensors will have: reads still to come, checkpoint holds, saves, the loss's hold
 * on the outputs, and aliases (an output written over its input, a gradient passed on or written over
 * dy, a swap-in served by a copy still on its way out). Where the backend cannot write in place
 * (BackendCapabilities.inPlaceWrites), nothing is planned in place.
 *
 * A forward-only schedule (inference, or the forward under tf.grads) is `forwardSchedule`.
 */
import { NETWORK_INPUT, inferShapes, readsOnce, type Network, type SaveMode, type Shape } from './graph.js';
import { mergeSegments, type ParkSite, type Phase, type SaveSite, type StepPlan } from './plan.js';
import { capabilities, type BackendCapabilities } from '../backend/index.js';

/** Bytes per element: every tensor a step makes is float32. */
export const BYTES_PER_ELEMENT = 4;
const count = (s: Shape): number => s.reduce((a, b) => a * b, 1);
/** Device bytes of a float32 tensor of shape `s`. */
export const bytesOf = (s: Shape): number => count(s) * BYTES_PER_ELEMENT;

/** A memory effect, in device bytes; buffers are numbered within one schedule. */
export type MemoryOp =
  | { op: 'alloc'; buffer: number; bytes: number; what: string }
  | { op: 'free'; buffer: number }
  /** A buffer now holds another value (an output written over its input). */
  | { op: 'relabel'; buffer: number; what: string }
  /** Allocated and freed inside the event (a kernel's temporaries). */
  | { op: 'transient'; bytes: number; what: string }
  /** A layer's parameter gradients appear (bytes > 0), or the optimizer takes them (bytes < 0). */
  | { op: 'parameter-gradients'; bytes: number }
  /** The loss's transients, for logits (and auxiliary outputs) of `outputBytes`; `fused`: the fused loss. */
  | { op: 'loss-workspace'; outputBytes: number; fused: boolean }
  /** Adam's transients while it updates `parameterBytes` of parameters at once. */
  | { op: 'optimizer-workspace'; parameterBytes: number };

export type SchedulePhase = Phase | 'optimizer';

interface EventBase {
  /** For the estimator's "where the peak is": the phase and the node (or 'prefetch X', 'adam X', …). */
  phase: SchedulePhase;
  where: string;
  memory: MemoryOp[];
}

/** How a gradient contribution joins its value's gradient. */
export type Accumulation = 'first' | 'in-place' | 'sum';

/** A layer's forward (in forward, or in the recompute of its checkpoint segment). */
export interface ForwardEvent extends EventBase {
  kind: 'forward';
  phase: 'forward' | 'recompute';
  node: number;
  /** Values read, one per node input. */
  inputs: number[];
  /** The value made. */
  output: number;
  /** References the output starts with (reads to come, checkpoint holds, the loss's), saves aside. */
  holders: number;
  /** Per input: the layer may write its output over it (its last reference, nothing shares it). */
  overwritable: boolean[];
  saveMode: SaveMode;
  /** The saves the layer declares (SavedSpec order), each with its site and whether it goes to the host. */
  saves: { site: SaveSite; host: boolean }[];
  /** Values that lose one reference once the layer ran. */
  release: number[];
}

/**
 * A recomputed node whose output nothing reads again and which saves only inputs: not run; its saves
 * are those inputs.
 */
export interface SaveInputsEvent extends EventBase {
  kind: 'save-inputs';
  node: number;
  /** Values read, one per node input. */
  inputs: number[];
  /** The saved values, in save order. */
  saved: number[];
  release: number[];
}

/** Forward branch swapping: the value leaves the device until its next reader. */
export interface ParkEvent extends EventBase {
  kind: 'park';
  value: number;
  site: ParkSite;
  /** References it drops (the reads still to come; nothing else holds it). */
  references: number;
}

export interface PrefetchParkedEvent extends EventBase {
  kind: 'prefetch-parked';
  value: number;
}

/** A parked value comes back for its reader, with `holders` references (the reads still to come). */
export interface UnparkEvent extends EventBase {
  kind: 'unpark';
  value: number;
  holders: number;
}

/** A layer (forward, or backward with its recompute) ended: the hooks' poll runs. */
export interface EndLayerEvent extends EventBase {
  kind: 'end-layer';
}

export interface LossEvent extends EventBase {
  kind: 'loss';
  /** The logits' value, then the auxiliary outputs' (net.auxOutputs order); each loses one reference after. */
  outputs: number[];
  /** How each auxiliary output's gradient joins one already there ('first' where none is). */
  auxAccumulation: Accumulation[];
}

/** Backward will soon need this node's packed saves: start bringing them back. */
export interface PrefetchEvent extends EventBase {
  kind: 'prefetch';
  node: number;
}

/** A checkpoint segment's recompute starts (its forward events follow). */
export interface RecomputeEvent extends EventBase {
  kind: 'recompute';
  segment: number;
}

/** A segment's recompute ended: its external inputs lose the hold kept for it. */
export interface RecomputeEndEvent extends EventBase {
  kind: 'recompute-end';
  segment: number;
  release: number[];
}

export interface BackwardEvent extends EventBase {
  kind: 'backward';
  node: number;
  needInputGrad: boolean[];
  /** Per save (in save order): nothing but this backward reads it again (a swapped-in copy, a last reference). */
  overwritable: boolean[];
  /** dy's buffer is this backward's alone: a layer may write its input gradient into it. */
  dyOverwritable: boolean;
  /** Per input: how its gradient joins (null: no gradient for it). */
  accumulation: (Accumulation | null)[];
}

/** No gradient reaches the node, or none is needed through it: its dy (if any) and saves go. */
export interface SkipBackwardEvent extends EventBase {
  kind: 'skip-backward';
  node: number;
}

/** The optimizer takes the node's parameter gradients, final now (optimizer inside backward). */
export interface UpdateEvent extends EventBase {
  kind: 'update';
  node: number;
}

/** Backward ended: gradients nothing reads go; with the optimizer after backward, its transients. */
export interface FinishEvent extends EventBase {
  kind: 'finish';
}

export type StepEvent =
  | ForwardEvent
  | SaveInputsEvent
  | ParkEvent
  | PrefetchParkedEvent
  | UnparkEvent
  | EndLayerEvent
  | LossEvent
  | PrefetchEvent
  | RecomputeEvent
  | RecomputeEndEvent
  | BackwardEvent
  | SkipBackwardEvent
  | UpdateEvent
  | FinishEvent;

export interface ScheduleOptions {
  /** The optimizer updates each parameter inside backward, as soon as its gradient is final. */
  optimizerInBackward?: boolean;
  /** The backend the step runs on (default: the active one). */
  capabilities?: BackendCapabilities;
}

export interface StepSchedule {
  backward: 'owned';
  net: Network;
  inputShape: Shape;
  /** Output shape of every node (and of NETWORK_INPUT). */
  shapes: Map<string, Shape>;
  /** The checkpoint segments in force (the architecture's and the plan's, merged) and their external inputs. */
  segments: CheckpointSegment[];
  optimizerInBackward: boolean;
  capabilities: BackendCapabilities;
  events: StepEvent[];
  /** Bytes moved to host memory in one step. */
  hostBytes: number;
  /** The value id of the network input (the caller owns it; never freed). */
  inputValue: number;
}

/** The tape baseline: tf.grads runs its own schedule. */
export interface TapeSchedule {
  backward: 'tape';
  net: Network;
  inputShape: Shape;
  shapes: Map<string, Shape>;
}

/** What the graph says about each node: readers, whether a gradient flows through it, positions. */
export interface GraphFacts {
  index: Map<string, number>;
  /** Forward inputs reading each node (counting repeats). */
  consumers: Map<string, number>;
  /** Indices of the nodes that read each node, ascending. */
  readers: Map<string, number[]>;
  /** Whether a node's output depends on a parameter (else backward skips it). */
  requiresGrad: Map<string, boolean>;
  /** How many backward steps from the end of forward until each node's backward runs (0 = first). */
  backwardPos: Map<string, number>;
}

const facts = new WeakMap<Network, GraphFacts>();

export function graphFacts(net: Network): GraphFacts {
  let f = facts.get(net);
  if (f) return f;
  const index = new Map(net.nodes.map((n, i) => [n.name, i]));
  const consumers = new Map<string, number>([[NETWORK_INPUT, 0]]);
  const readers = new Map<string, number[]>([[NETWORK_INPUT, []]]);
  const requiresGrad = new Map<string, boolean>([[NETWORK_INPUT, false]]);
  net.nodes.forEach((node, k) => {
    consumers.set(node.name, 0);
    readers.set(node.name, []);
    for (const i of node.inputs) {
      consumers.set(i, consumers.get(i)! + 1);
      readers.get(i)!.push(k);
    }
    requiresGrad.set(node.name, node.layer.params.length > 0 || node.inputs.some((i) => requiresGrad.get(i)));
  });
  const backwardPos = new Map([...net.nodes].reverse().map((n, i) => [n.name, i]));
  f = { index, consumers, readers, requiresGrad, backwardPos };
  facts.set(net, f);
  return f;
}

/** A checkpoint segment: its nodes, the inputs it reads from outside, and how often it reads each of its own. */
export interface CheckpointSegment {
  nodes: string[];
  external: string[];
  inside: Set<string>;
  /** Reads, within the segment, of each node's output. */
  reads: Map<string, number>;
}

/** The segments in force for a plan, checked (known nodes, contiguous runs), with their external inputs. */
export function checkpointSegments(net: Network, recompute: string[][]): CheckpointSegment[] {
  const { index } = graphFacts(net);
  return recompute.map((names) => {
    const idx = names.map((n) => {
      const i = index.get(n);
      if (i === undefined) throw new Error(`checkpoint segment names unknown node "${n}"`);
      return i;
    });
    for (let k = 1; k < idx.length; k++)
      if (idx[k] !== idx[k - 1]! + 1) throw new Error(`checkpoint segment [${names.join(', ')}] is not a contiguous run of nodes`);
    const inside = new Set(names);
    const external = new Set<string>();
    const reads = new Map<string, number>();
    for (const n of names)
      for (const i of net.nodes[index.get(n)!]!.inputs) {
        if (inside.has(i)) reads.set(i, (reads.get(i) ?? 0) + 1);
        else external.add(i);
      }
    return { nodes: names, external: [...external], inside, reads };
  });
}

/** A buffer as the schedule follows it: its bytes and the references its tensors hold. */
interface SymbolicBuffer {
  id: number;
  bytes: number;
  refs: number;
}

/** A value (one tensor of the executor's) and the buffer behind it. */
interface Value {
  id: number;
  buffer: SymbolicBuffer;
}

/** What a node keeps for backward, in save order. */
type SavedItem = { device: SymbolicBuffer } | { host: number; from: SymbolicBuffer | null };

/**
 * The schedule of one training step of `net` at `inputShape` under `plan`. A 'tape' plan gets the tape
 * schedule (tf.grads decides its own order).
 */
export function stepSchedule(net: Network, inputShape: Shape, plan: StepPlan, options: ScheduleOptions = {}): StepSchedule | TapeSchedule {
  const shapes = inferShapes(net, inputShape);
  if (plan.backward === 'tape') {
    if (plan.hooks || plan.recompute?.length) throw new Error("a 'tape' step cannot use hooks or recompute segments");
    return { backward: 'tape', net, inputShape, shapes };
  }
  return new StepScheduler(net, inputShape, shapes, plan, options).build();
}

class StepScheduler {
  private readonly events: StepEvent[] = [];
  private memory: MemoryOp[] = [];
  private phase: SchedulePhase = 'forward';
  private where = '';
  private nextBuffer = 0;
  private nextValue = 0;
  private tick = 0;
  private hostBytes = 0;
  private readonly caps: BackendCapabilities;
  private readonly facts: GraphFacts;
  private readonly segments: CheckpointSegment[];
  private readonly segmentOf = new Map<string, number>();
  private readonly holds = new Map<string, number>();
  private readonly saveMode: 'all' | 'lean';
  private readonly packLag: number;
  /** Swap-outs still on the link: with packLag L, a copy started during layer k keeps its buffer to the end of layer k + L. */
  private readonly inFlight: { b: SymbolicBuffer; due: number }[] = [];
  private readonly acts = new Map<string, Value>();
  private readonly saved = new Map<string, { items: SavedItem[]; mode: SaveMode }>();

  constructor(
    private readonly net: Network,
    private readonly inputShape: Shape,
    private readonly shapes: Map<string, Shape>,
    private readonly plan: StepPlan,
    private readonly options: ScheduleOptions,
  ) {
    this.caps = options.capabilities ?? capabilities();
    this.facts = graphFacts(net);
    this.segments = checkpointSegments(net, mergeSegments(net.recompute ?? [], plan.recompute ?? []));
    this.segments.forEach((s, k) => s.nodes.forEach((n) => this.segmentOf.set(n, k)));
    for (const s of this.segments) for (const e of s.external) this.holds.set(e, (this.holds.get(e) ?? 0) + 1);
    this.saveMode = plan.saveMode ?? 'all';
    this.packLag = plan.packLag ?? -1;
  }

  // ---- symbolic buffers, and the memory effects they emit

  private alloc(bytes: number, refs: number, what: string): SymbolicBuffer {
    const b = { id: this.nextBuffer++, bytes, refs };
    this.memory.push({ op: 'alloc', buffer: b.id, bytes, what });
    return b;
  }

  private release(b: SymbolicBuffer, n = 1): void {
    b.refs -= n;
    if (b.refs <= 0) this.memory.push({ op: 'free', buffer: b.id });
  }

  private transient(bytes: number, what = `workspace ${this.where}`): void {
    this.memory.push({ op: 'transient', bytes, what });
  }

  private value(buffer: SymbolicBuffer): Value {
    return { id: this.nextValue++, buffer };
  }

  /** Appends an event with the memory effects gathered since the last one. */
  private emit<E extends StepEvent>(event: Omit<E, 'phase' | 'where' | 'memory'> & Partial<Pick<E, 'phase' | 'where'>>): E {
    const e = event as E;
    e.phase ??= this.phase;
    e.where = this.where;
    e.memory = this.memory;
    this.memory = [];
    this.events.push(e);
    return e;
  }

  private drainInFlight(): void {
    for (let k = this.inFlight.length - 1; k >= 0; k--)
      if (this.inFlight[k]!.due <= this.tick) {
        this.release(this.inFlight[k]!.b);
        this.inFlight.splice(k, 1);
      }
  }

  private endLayer(): void {
    this.drainInFlight();
    this.tick++;
    this.emit<EndLayerEvent>({ kind: 'end-layer' });
  }

  /** A copy of `b` leaves for the host: with packLag ≥ 0 its buffer stays until the copy is due. */
  private swapOut(b: SymbolicBuffer): void {
    if (this.packLag >= 0 && !this.inFlight.some((f) => f.b === b)) {
      b.refs++;
      this.inFlight.push({ b, due: this.tick + this.packLag });
    }
  }

  /** A packed tensor comes back: served by its device copy while that is still on its way out (SwapStore.startIn), else a new buffer. */
  private swapIn(bytes: number, from: SymbolicBuffer | null, what: string): SymbolicBuffer {
    if (from && this.inFlight.some((f) => f.b === from)) {
      from.refs++;
      return from;
    }
    return this.alloc(bytes, 1, what);
  }

  // ---- one layer's forward

  /**
   * `keep`: the layer saves for backward (false in the forward of a checkpointed node). In phase
   * 'forward' the hooks may pack saves; recomputed saves stay on the device. `lastRead[k]`:
   * input k has no other reference. `skipIfInputSaves`: a recomputed node whose output nothing reads and
   * which saves only inputs is not run (returns null).
   */
  private forwardNode(
    i: number,
    phase: 'forward' | 'recompute',
    keep: boolean,
    inputs: Value[],
    lastRead: boolean[],
    skipIfInputSaves: boolean,
  ): { out: Value | null; event: ForwardEvent | SaveInputsEvent } {
    const node = this.net.nodes[i]!;
    const name = node.name;
    const hooks = this.plan.hooks;
    const onDevice = phase === 'forward';
    const inShapes = node.inputs.map((n) => this.shapes.get(n)!);
    const outBytes = bytesOf(this.shapes.get(name)!);
    const mode: SaveMode = keep ? this.saveMode : 'none';
    const spec = node.layer.saves(inShapes, mode, this.caps);
    const items: SavedItem[] = [];
    this.where = name;
    if (skipIfInputSaves && spec.inputs.length && !spec.output && !spec.extra.length) {
      for (const k of spec.inputs) {
        inputs[k]!.buffer.refs++;
        items.push({ device: inputs[k]!.buffer });
      }
      this.saved.set(name, { items, mode });
      const event = this.emit<SaveInputsEvent>({ kind: 'save-inputs', node: i, inputs: inputs.map((v) => v.id), saved: spec.inputs.map((k) => inputs[k]!.id), release: [] });
      return { out: null, event };
    }
    const ws = node.layer.workspace?.(inShapes, mode, this.caps);
    const overwritable = node.inputs.map(
      (n, k) => this.caps.inPlaceWrites && node.layer.forwardInPlace === true && lastRead[k] === true && readsOnce(node.inputs, n) && n !== NETWORK_INPUT,
    );
    let outBuffer: SymbolicBuffer;
    if (overwritable[0]) {
      outBuffer = inputs[0]!.buffer;
      this.memory.push({ op: 'relabel', buffer: outBuffer.id, what: `activation ${name}` });
    } else outBuffer = this.alloc(outBytes, 0, `activation ${name}`);
    if (ws?.forward) this.transient(ws.forward * BYTES_PER_ELEMENT);
    const saves: { site: SaveSite; host: boolean }[] = [];
    const packs = onDevice && hooks !== undefined;
    if (keep) {
      for (const k of spec.inputs) this.keepSave(i, items, saves, packs, inputs[k]!.buffer.bytes, inputs[k]!.buffer);
      if (spec.output) this.keepSave(i, items, saves, packs, outBytes, outBuffer);
      for (const n of spec.extra) this.keepSave(i, items, saves, packs, n * BYTES_PER_ELEMENT, null);
    } else for (const n of spec.extra) this.transient(n * BYTES_PER_ELEMENT);
    if (keep) this.saved.set(name, { items, mode });
    const out = this.value(outBuffer);
    const event = this.emit<ForwardEvent>({
      kind: 'forward',
      phase,
      node: i,
      inputs: inputs.map((v) => v.id),
      output: out.id,
      holders: 0,
      overwritable,
      saveMode: mode,
      saves,
      release: [],
    });
    return { out, event };
  }

  /**
   * One save of node `i`, in save order: swapped to the host where the hooks say so (its device buffer
   * stays while the copy is on the link), else held on the device. `buffer`: the input or output it
   * saves; null for a tensor the layer makes only to save it (x̂, invStd…), of `bytes`.
   */
  private keepSave(i: number, items: SavedItem[], saves: { site: SaveSite; host: boolean }[], packs: boolean, bytes: number, buffer: SymbolicBuffer | null): void {
    const node = this.net.nodes[i]!;
    const site: SaveSite = { node: node.name, layerType: node.layer.type, nodeIndex: i, saveIndex: saves.length, backwardPosition: this.facts.backwardPos.get(node.name)! };
    const host = packs && this.plan.hooks!.willPack(site, bytes);
    saves.push({ site, host });
    if (host) this.hostBytes += bytes;
    if (buffer && host) {
      items.push({ host: bytes, from: this.packLag >= 0 ? buffer : null });
      this.swapOut(buffer);
    } else if (buffer) {
      buffer.refs++;
      items.push({ device: buffer });
    } else if (host) {
      let from: SymbolicBuffer | null = null;
      if (this.packLag >= 0) {
        from = this.alloc(bytes, 1, `swap-out in flight from ${node.name}`);
        this.inFlight.push({ b: from, due: this.tick + this.packLag });
      } else this.transient(bytes);
      items.push({ host: bytes, from });
    } else items.push({ device: this.alloc(bytes, 1, `saved by ${node.name}`) });
  }

  // ---- the step

  build(): StepSchedule {
    const { net, facts } = this;
    const { consumers, readers, requiresGrad, index } = facts;
    const hooks = this.plan.hooks;
    const input = this.value({ id: this.nextBuffer++, bytes: 0, refs: Infinity });
    this.acts.set(NETWORK_INPUT, input);

    // ---- forward
    const auxNames = (net.auxOutputs ?? []).map((a) => a.node);
    const held = new Set([net.output, ...auxNames]);
    const pendingReads = new Map(consumers);
    const lookahead = this.plan.prefetchDistance ?? 0;
    const canPark = hooks?.park !== undefined && hooks.willPark !== undefined;
    const parked = new Map<string, { value: Value; bytes: number; from: SymbolicBuffer | null; back: SymbolicBuffer | null }>();
    const backFromHost = (name: string, p: { bytes: number; from: SymbolicBuffer | null }): SymbolicBuffer =>
      this.swapIn(p.bytes, p.from, `swapped in for ${name}`);
    net.nodes.forEach((node, i) => {
      this.phase = 'forward';
      this.where = node.name;
      // A parked activation comes back `prefetchDistance` layers before its reader (0: when it is read).
      if (parked.size && hooks?.prefetch)
        for (let j = i; j <= Math.min(net.nodes.length - 1, i + lookahead - 1); j++)
          for (const n of net.nodes[j]!.inputs) {
            const p = parked.get(n);
            if (p && !p.back) {
              p.back = backFromHost(n, p);
              this.emit<PrefetchParkedEvent>({ kind: 'prefetch-parked', value: p.value.id });
            }
          }
      for (const n of new Set(node.inputs)) {
        const p = parked.get(n);
        if (!p) continue;
        parked.delete(n);
        const buffer = p.back ?? backFromHost(n, p);
        // The swapped-in tensor's one reference becomes the reads still to come.
        buffer.refs += pendingReads.get(n)! - 1;
        this.acts.set(n, { id: p.value.id, buffer });
        this.emit<UnparkEvent>({ kind: 'unpark', value: p.value.id, holders: pendingReads.get(n)! });
      }
      const inputs = node.inputs.map((n) => this.acts.get(n)!);
      const { out, event } = this.forwardNode(i, 'forward', !this.segmentOf.has(node.name), inputs, inputs.map((v) => v.buffer.refs === 1), false);
      const holders = consumers.get(node.name)! + (this.holds.get(node.name) ?? 0) + (held.has(node.name) ? 1 : 0);
      out!.buffer.refs += holders;
      (event as ForwardEvent).holders = holders;
      this.acts.set(node.name, out!);
      for (const v of inputs) this.release(v.buffer);
      (event as ForwardEvent).release = inputs.map((v) => v.id);
      if (out!.buffer.refs === 0) this.memory.push({ op: 'free', buffer: out!.buffer.id });
      for (const n of node.inputs) pendingReads.set(n, pendingReads.get(n)! - 1);
      if (canPark)
        for (const n of new Set(node.inputs)) {
          const left = pendingReads.get(n)!;
          const v = this.acts.get(n)!;
          // Only an activation that nothing else keeps on the device is worth parking (a copy on its way to
          // the host, held by the hooks, does not count: the executor does not hold it).
          const onTheLink = this.inFlight.filter((f) => f.b === v.buffer).length;
          if (n === NETWORK_INPUT || left === 0 || v.buffer.refs - onTheLink !== left) continue;
          const next = readers.get(n)!.find((k) => k > i)!;
          const site: ParkSite = { node: n, distance: next - i };
          if (!hooks!.willPark!(site, v.buffer.bytes)) continue;
          this.swapOut(v.buffer);
          this.hostBytes += v.buffer.bytes;
          parked.set(n, { value: v, bytes: v.buffer.bytes, from: this.packLag >= 0 ? v.buffer : null, back: null });
          this.release(v.buffer, left);
          this.acts.delete(n);
          this.emit<ParkEvent>({ kind: 'park', value: v.id, site, references: left });
        }
      this.endLayer();
    });

    // ---- loss
    this.phase = 'loss';
    this.where = 'loss';
    const logitsShape = this.shapes.get(net.output)!;
    const logitsBytes = bytesOf(logitsShape);
    const auxBytes = auxNames.map((n) => bytesOf(this.shapes.get(n)!));
    // The fused loss covers a plain output; auxiliary outputs or a margin take the taped loss.
    const fused = this.caps.fusedLoss && auxNames.length === 0 && !(net.outputMargin ?? []).some(Boolean);
    this.memory.push({ op: 'loss-workspace', outputBytes: logitsBytes + auxBytes.reduce((a, b) => a + b, 0), fused });
    const grads = new Map<string, SymbolicBuffer>([[net.output, this.alloc(logitsBytes, 1, `gradient ${net.output}`)]]);
    const auxAccumulation = auxNames.map((n, k): Accumulation => {
      const g = this.alloc(auxBytes[k]!, 1, `gradient ${n}`);
      return this.accumulate(grads, n, g);
    });
    const outputs = [net.output, ...auxNames].map((n) => this.acts.get(n)!);
    for (const v of outputs) this.release(v.buffer);
    this.emit<LossEvent>({ kind: 'loss', outputs: outputs.map((v) => v.id), auxAccumulation });

    // ---- backward
    this.phase = 'backward';
    const order = [...net.nodes].reverse();
    const unpacked = new Map<string, SymbolicBuffer[]>();
    const swapInSaves = (items: SavedItem[], name: string): SymbolicBuffer[] =>
      items.flatMap((it) => ('host' in it ? [this.swapIn(it.host, it.from, `swapped in for ${name}`)] : []));
    const prefetch = (pos: number): void => {
      const node = order[pos];
      if (!node) return;
      const e = this.saved.get(node.name);
      if (e?.items.some((it) => 'host' in it) && !unpacked.has(node.name)) {
        this.where = `prefetch ${node.name}`;
        unpacked.set(node.name, swapInSaves(e.items, node.name));
        this.emit<PrefetchEvent>({ kind: 'prefetch', node: index.get(node.name)! });
      }
    };
    if (hooks) for (let p = 0; p < lookahead; p++) prefetch(p);
    const recomputed = new Set<number>();
    const adamBytes = (node: (typeof order)[number]): number => node.layer.params.reduce((n, p) => n + bytesOf(p.shape), 0);
    for (let pos = 0; pos < order.length; pos++) {
      const node = order[pos]!;
      const i = index.get(node.name)!;
      if (hooks) prefetch(pos + lookahead);
      const seg = this.segmentOf.get(node.name);
      if (seg !== undefined && !recomputed.has(seg)) {
        recomputed.add(seg);
        this.recompute(seg);
        this.phase = 'backward';
      }
      this.where = node.name;
      const dy = grads.get(node.name);
      grads.delete(node.name);
      const entry = this.saved.get(node.name) ?? { items: [], mode: this.saveMode };
      this.saved.delete(node.name);
      const device = entry.items.flatMap((it) => ('device' in it ? [it.device] : []));
      if (dy && requiresGrad.get(node.name)) {
        const fromHost = unpacked.get(node.name) ?? swapInSaves(entry.items, node.name);
        unpacked.delete(node.name);
        const inShapes = node.inputs.map((n) => this.shapes.get(n)!);
        const ws = node.layer.workspace?.(inShapes, entry.mode, this.caps);
        // dParams, then dInputs (as Conv3d computes them), all alive together before dy is freed.
        const pBytes = adamBytes(node);
        this.memory.push({ op: 'parameter-gradients', bytes: pBytes });
        const needInputGrad = node.inputs.map((n) => requiresGrad.get(n)!);
        // A layer that writes its input gradient over dy (where nothing shares dy) allocates nothing for it.
        const dyOverwritable = this.caps.inPlaceWrites && dy.refs === 1;
        const overDy = dyOverwritable && node.layer.gradientInPlace === true;
        // Saves that only this node still holds (and swapped-in copies) may be overwritten by its backward.
        const overwritable = entry.items.map((it) => 'host' in it || it.device.refs === 1);
        const overwriting = device.every((b) => b.refs === 1);
        // A layer done with its saves after its parameter gradients lets them go before its input gradients.
        const early = node.layer.releasesSavesEarly === true;
        if (early) {
          for (const b of fromHost) this.release(b);
          for (const b of device) this.release(b);
        }
        const dInputs: (SymbolicBuffer | null)[] = node.inputs.map((n, k) => {
          if (!needInputGrad[k]) return null;
          if (node.layer.passesGradient || overDy) {
            dy.refs++;
            return dy;
          }
          return this.alloc(bytesOf(this.shapes.get(n)!), 1, `gradient ${n}`);
        });
        const wsBackward = overwriting ? (ws?.backwardOverwriting ?? ws?.backward) : ws?.backward;
        if (wsBackward) this.transient(wsBackward * BYTES_PER_ELEMENT);
        this.release(dy);
        if (!early) for (const b of fromHost) this.release(b);
        const accumulation = node.inputs.map((n, k) => (dInputs[k] ? this.accumulate(grads, n, dInputs[k]!) : null));
        if (!early) for (const b of device) this.release(b);
        this.emit<BackwardEvent>({ kind: 'backward', node: i, needInputGrad, overwritable, dyOverwritable, accumulation });
        if (this.options.optimizerInBackward && pBytes) {
          this.where = `adam ${node.name}`;
          this.memory.push({ op: 'optimizer-workspace', parameterBytes: pBytes });
          this.memory.push({ op: 'parameter-gradients', bytes: -pBytes });
          this.emit<UpdateEvent>({ kind: 'update', node: i });
        }
      } else {
        if (dy) this.release(dy);
        for (const b of unpacked.get(node.name) ?? []) this.release(b);
        unpacked.delete(node.name);
        for (const b of device) this.release(b);
        this.emit<SkipBackwardEvent>({ kind: 'skip-backward', node: i });
      }
      this.endLayer();
    }
    for (const g of grads.values()) this.release(g);
    if (!this.options.optimizerInBackward) {
      // Adam updates one parameter at a time, after backward.
      this.phase = 'optimizer';
      this.where = 'adam';
      this.memory.push({ op: 'optimizer-workspace', parameterBytes: Math.max(0, ...net.params.map((p) => bytesOf(p.shape))) });
    }
    this.emit<FinishEvent>({ kind: 'finish' });
    return {
      backward: 'owned',
      net,
      inputShape: this.inputShape,
      shapes: this.shapes,
      segments: this.segments,
      optimizerInBackward: this.options.optimizerInBackward === true,
      capabilities: this.caps,
      events: this.events,
      hostBytes: this.hostBytes,
      inputValue: input.id,
    };
  }

  /** Joins a gradient contribution `g` to the one `name` has: written into it where it is the buffer's only reference. */
  private accumulate(grads: Map<string, SymbolicBuffer>, name: string, g: SymbolicBuffer): Accumulation {
    const prev = grads.get(name);
    if (!prev) {
      grads.set(name, g);
      return 'first';
    }
    if (this.caps.inPlaceWrites && prev.refs === 1) {
      this.release(g); // summed into prev's own buffer
      return 'in-place';
    }
    const sum = this.alloc(bytesOf(this.shapes.get(name)!), 1, `gradient ${name}`);
    this.release(prev);
    this.release(g);
    grads.set(name, sum);
    return 'sum';
  }

  /** A checkpoint segment's forward again, from its held external inputs, saving as in a plain step. */
  private recompute(seg: number): void {
    const { net } = this;
    const { index } = this.facts;
    const s = this.segments[seg]!;
    this.phase = 'recompute';
    this.emit<RecomputeEvent>({ kind: 'recompute', segment: seg });
    const { inside } = s;
    const pending = new Map(s.reads);
    const local = new Map<string, Value>();
    for (const n of s.nodes) {
      const i = index.get(n)!;
      const nd = net.nodes[i]!;
      const inputs = nd.inputs.map((x) => (inside.has(x) ? local.get(x)! : this.acts.get(x)!));
      // A local input read for the last time holds only the segment's reference (refs 1: no save).
      const lastRead = nd.inputs.map((x, k) => inside.has(x) && pending.get(x) === 1 && inputs[k]!.buffer.refs === 1);
      const { out, event } = this.forwardNode(i, 'recompute', true, inputs, lastRead, !pending.get(n));
      if (out) {
        // The segment's own reference while it reads it (dropped at once where nothing in it does).
        out.buffer.refs += 1;
        (event as ForwardEvent).holders = pending.get(n) ? 1 : 0;
        local.set(n, out);
      }
      const release: number[] = [];
      for (const x of nd.inputs) {
        if (!inside.has(x)) continue;
        const left = pending.get(x)! - 1;
        pending.set(x, left);
        if (left === 0) {
          this.release(local.get(x)!.buffer);
          release.push(local.get(x)!.id);
        }
      }
      event.release = release;
      if (out && !pending.get(n)) this.release(out.buffer);
    }
    // The external inputs were held for the recompute only.
    const external = s.external.map((e) => this.acts.get(e)!);
    for (const v of external) this.release(v.buffer);
    this.emit<RecomputeEndEvent>({ kind: 'recompute-end', segment: seg, release: external.map((v) => v.id) });
  }
}

/** One node of a forward-only pass: what it reads, what it may overwrite, which inputs are dead after. */
export interface ForwardOnlyStep {
  node: number;
  /** Per input: this node reads it last and only once, and it is not the network input (inference only). */
  overwritable: boolean[];
  /** Node names whose last reader this is (never the network input): free them after the node. */
  dead: string[];
}

/**
 * A forward without saves that yields `outputs`: each activation is freed after its last reader, and in
 * `inference` a layer may write its output over an input it reads last. Nodes that feed nothing asked
 * for are left out.
 */
export function forwardSchedule(net: Network, outputs: string[], inference: boolean, caps: BackendCapabilities = capabilities()): ForwardOnlyStep[] {
  const pending = new Map(graphFacts(net).consumers);
  for (const o of outputs) pending.set(o, (pending.get(o) ?? 0) + 1);
  const steps: ForwardOnlyStep[] = [];
  net.nodes.forEach((node, i) => {
    if (!pending.get(node.name)) return; // feeds nothing that was asked for (e.g. an auxiliary head)
    const overwritable = node.inputs.map(
      (n) => inference && caps.inPlaceWrites && node.layer.forwardInPlace === true && n !== NETWORK_INPUT && pending.get(n) === 1 && readsOnce(node.inputs, n),
    );
    const dead: string[] = [];
    for (const n of node.inputs) {
      const left = pending.get(n)! - 1;
      pending.set(n, left);
      if (left === 0 && n !== NETWORK_INPUT) dead.push(n);
    }
    steps.push({ node: i, overwritable, dead });
  });
  return steps;
}
