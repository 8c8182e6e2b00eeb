/**
 * Runs a Network: inference forward, and a training step that owns its backward pass.
 *
 * The training step frees every activation as soon as its last forward consumer ran, every saved tensor
 * as soon as the layer that saved it finished backward, and every gradient as soon as it was passed on,
 * so the measured peak is what the model needs (tf.grads holds all of them until the whole backward
 * ends). A memory strategy shapes the step through a StepPlan:
 * - `hooks` (like PyTorch's saved_tensors_hooks): decide, for each tensor a layer saves, whether it stays
 *   on the device or is packed elsewhere (host memory) and unpacked in backward, with prefetch
 *   `prefetchDistance` layers ahead of use (TFLMS's `lb`);
 * - `recompute`: checkpoint segments (Chen et al. 2016): forward keeps only the segments' external
 *   inputs, and backward re-runs each segment's forward, saving, just before its backward;
 * - `saveMode`: 'lean' asks layers to keep fewer buffers and recompute cheap values in backward.
 * Everywhere, a layer with `forwardInPlace` writes its output over an input that nothing else needs.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import { NETWORK_INPUT, readsOnce, type GraphNode, type Network, type SaveMode, type Shape } from './graph.js';
import { addInto, sharesStorage } from '../backend/in-place.js';

/** A saved tensor that a hook moved off the device. */
export interface PackedTensor {
  readonly location: 'host';
  readonly bytes: number;
}

export interface SaveSite {
  node: string;
  layerType: string;
  /** Position of the node in forward order. */
  nodeIndex: number;
  /** Index of this tensor among the node's saves. */
  saveIndex: number;
  /** How many backward steps from the end of forward until this tensor is used (0 = first). */
  backwardPosition: number;
}

export interface SavedTensorHooks {
  /**
   * A layer saved `t` in forward. Return 'device' to keep it, or a handle once the hook has taken what it
   * needs (the executor still owns `t` and frees it when forward is done with it; a hook that must keep
   * the device buffer alive until a transfer finishes holds a clone).
   */
  pack(t: Tensor, site: SaveSite): 'device' | PackedTensor;
  /**
   * For the memory estimator, before anything runs: would `pack` move a saved tensor of `bytes` at `site`
   * off the device? Must agree with `pack`.
   */
  willPack?(site: SaveSite, bytes: number): boolean;
  /** Backward needs the tensor now: a device tensor that the executor disposes after use. */
  unpack(p: PackedTensor): Promise<Tensor>;
  /** Backward will need `p` soon: start bringing it back. */
  prefetch?(p: PackedTensor): void;
  /** The executor will not unpack `p` again. */
  release?(p: PackedTensor): void;
  /**
   * Forward branch swapping (TFLMS `swap_branches`): an activation whose next forward reader is
   * `distance` layers away may be parked off the device until then. Return a handle to park it, or null.
   */
  park?(t: Tensor, site: { node: string; distance: number }): PackedTensor | null;
  /** Called between layers so that finished transfers can be completed (and device copies freed). */
  poll?(): void | Promise<void>;
}

export interface StepPlan {
  /**
   * 'owned' (default): this executor's backward, freeing as it goes. 'tape': plain `tf.grads`, which
   * keeps every saved tensor and gradient until the whole backward ends (the baseline).
   */
  backward?: 'owned' | 'tape';
  hooks?: SavedTensorHooks;
  /** Checkpoint segments: each a contiguous run of node names whose forward is re-run in backward. */
  recompute?: string[][];
  /**
   * For the estimator: a packed tensor's device buffer lives until the end of this many further layers
   * (the hooks' `poll` waits for older transfers); undefined: the transfer is assumed to keep up.
   */
  packLag?: number;
  /**
   * Start bringing packed tensors back this many layers before backward uses them (TFLMS `lb`): with 1
   * the transfer overlaps the previous layer's backward; 0 fetches on demand (no overlap, least memory).
   */
  prefetchDistance?: number;
  /**
   * What layers keep for backward (ForwardArgs.saveMode): 'all' (default) or 'lean' (fewer buffers, cheap
   * values recomputed in backward: a normalisation keeps its output, which the next layer saves anyway).
   */
  saveMode?: 'all' | 'lean';
}

export type Phase = 'forward' | 'loss' | 'backward' | 'recompute' | 'inference';

/** Told before and after each layer; the memory meter names the operation in out-of-memory errors. */
export interface StepObserver {
  beforeOp?(phase: Phase, node: string): void;
  afterOp?(phase: Phase, node: string): void;
}

export interface StepStats {
  forwardSeconds: number;
  backwardSeconds: number;
  recomputeSeconds: number;
  /** Time backward waited for packed tensors to come back (a swap stall). */
  unpackWaitSeconds: number;
  savedOnDevice: number;
  packed: number;
}

export interface StepResult {
  loss: number;
  /**
   * Gradient per qualified parameter name; the caller disposes them. Empty where the step was given
   * `applyGradient`, which took each of them.
   */
  grads: Map<string, Tensor>;
  stats: StepStats;
}

/**
 * The loss's value and its gradients at the logits and at the network's auxiliary outputs (in
 * `net.auxOutputs` order); `tapeLoss` is the scalar for the tape baseline.
 */
export interface LossFunction {
  (logits: Tensor, aux: Tensor[]): { loss: number; dLogits: Tensor; dAux: Tensor[] };
  tapeLoss?: (logits: Tensor, aux: Tensor[]) => tf.Scalar;
}

type SavedEntry = { tensor: Tensor } | { packed: PackedTensor };

const now = (): number => performance.now() / 1000;

export class Executor {
  private readonly index = new Map<string, number>();
  /** For each node name, how many forward inputs read it (counting repeats). */
  private readonly consumerCount = new Map<string, number>();
  /** Whether a node's output depends on a parameter (else backward can skip it). */
  private readonly requiresGrad = new Map<string, boolean>();
  /** For each node name, the indices of the nodes that read it, ascending. */
  private readonly readers = new Map<string, number[]>();

  constructor(readonly net: Network) {
    net.nodes.forEach((n, i) => this.index.set(n.name, i));
    this.consumerCount.set(NETWORK_INPUT, 0);
    this.requiresGrad.set(NETWORK_INPUT, false);
    this.readers.set(NETWORK_INPUT, []);
    for (const [k, node] of net.nodes.entries()) {
      this.consumerCount.set(node.name, 0);
      this.readers.set(node.name, []);
      for (const i of node.inputs) {
        this.consumerCount.set(i, this.consumerCount.get(i)! + 1);
        this.readers.get(i)!.push(k);
      }
      this.requiresGrad.set(node.name, node.layer.params.length > 0 || node.inputs.some((i) => this.requiresGrad.get(i)));
    }
  }

  private paramsOf(node: GraphNode, params: Map<string, Tensor>): Tensor[] {
    return node.layer.params.map((p) => {
      const t = params.get(`${node.name}.${p.name}`);
      if (!t) throw new Error(`missing parameter ${node.name}.${p.name}`);
      return t;
    });
  }

  /** Inference: no saves; each activation freed after its last consumer. Returns the logits. */
  forward(x: Tensor, params: Map<string, Tensor>, observer?: StepObserver): Tensor {
    return this.forwardOutputs(x, params, [this.net.output], observer)[0]!;
  }

  /** Forward without saves, returning the named nodes' outputs (the caller disposes them). */
  forwardOutputs(x: Tensor, params: Map<string, Tensor>, outputs: string[], observer?: StepObserver, phase: Phase = 'inference'): Tensor[] {
    const pending = new Map(this.consumerCount);
    for (const o of outputs) pending.set(o, (pending.get(o) ?? 0) + 1);
    const acts = new Map<string, Tensor>([[NETWORK_INPUT, x]]);
    // Under tf.grads (the tape baseline) layers run as they are: the tape keeps what kernels save.
    const inference = phase === 'inference';
    for (const node of this.net.nodes) {
      if (!pending.get(node.name)) continue; // feeds nothing that was asked for (e.g. an auxiliary head)
      observer?.beforeOp?.(phase, node.name);
      const inputs = node.inputs.map((i) => acts.get(i)!);
      const extras: Tensor[] = [];
      const overwritable =
        inference && node.layer.forwardInPlace
          ? node.inputs.map(
              (n, k) => n !== NETWORK_INPUT && pending.get(n) === 1 && readsOnce(node.inputs, n) && !sharesStorage(inputs[k]!, acts.values()),
            )
          : undefined;
      const out = node.layer.forward({
        inputs,
        params: this.paramsOf(node, params),
        save: (t) => extras.push(t),
        ...(inference ? { saveMode: 'none' as const, overwritable } : {}),
      });
      for (const t of extras) if (t !== out && !inputs.includes(t)) t.dispose();
      acts.set(node.name, out);
      for (const i of node.inputs) {
        const left = pending.get(i)! - 1;
        pending.set(i, left);
        if (left === 0 && i !== NETWORK_INPUT) acts.get(i)!.dispose();
      }
      observer?.afterOp?.(phase, node.name);
    }
    return outputs.map((o) => acts.get(o)!);
  }

  /** One training step: forward with saves, loss, and the owned backward pass. */
  async trainStep(
    x: Tensor,
    params: Map<string, Tensor>,
    lossFn: LossFunction,
    plan: StepPlan = {},
    observer?: StepObserver,
    applyGradient?: (name: string, grad: Tensor) => void,
  ): Promise<StepResult> {
    if (plan.backward === 'tape') {
      if (plan.hooks || plan.recompute?.length) throw new Error("a 'tape' step cannot use hooks or recompute segments");
      const result = this.tapeStep(x, params, lossFn, observer);
      if (applyGradient) {
        for (const [name, g] of result.grads) applyGradient(name, g);
        result.grads.clear();
      }
      return result;
    }
    const { nodes } = this.net;
    const hooks = plan.hooks;
    const stats: StepStats = {
      forwardSeconds: 0,
      backwardSeconds: 0,
      recomputeSeconds: 0,
      unpackWaitSeconds: 0,
      savedOnDevice: 0,
      packed: 0,
    };

    // Reference counts per tensor object: pending forward reads + saves + checkpoint holds.
    const refs = new Map<Tensor, number>();
    const inc = (t: Tensor, n = 1): void => void refs.set(t, (refs.get(t) ?? 0) + n);
    const dec = (t: Tensor): void => {
      const left = (refs.get(t) ?? 0) - 1;
      if (left > 0) return void refs.set(t, left);
      refs.delete(t);
      if (t !== x) t.dispose();
    };

    const segments = this.checkSegments(mergeSegments(this.net.recompute ?? [], plan.recompute ?? []));
    const segmentOf = new Map<string, number>();
    segments.forEach((s, k) => s.nodes.forEach((n) => segmentOf.set(n, k)));
    // Checkpoint holds: every segment keeps its external inputs until its backward is done.
    const holds = new Map<string, number>();
    for (const s of segments) for (const e of s.external) holds.set(e, (holds.get(e) ?? 0) + 1);

    const acts = new Map<string, Tensor>();
    const register = (name: string, t: Tensor, extra = 0): void => {
      acts.set(name, t);
      inc(t, (this.consumerCount.get(name) ?? 0) + (holds.get(name) ?? 0) + extra);
    };
    register(NETWORK_INPUT, x);

    const saved = new Map<string, SavedEntry[]>();
    const savedMode = new Map<string, SaveMode>();
    const saveMode = plan.saveMode ?? 'all';
    /** Every tensor the step holds (activations and saves), to rule out views when writing in place. */
    const liveTensors = function* (): Generator<Tensor> {
      yield* acts.values();
      for (const entries of saved.values()) for (const e of entries) if ('tensor' in e) yield e.tensor;
    };
    const inputShapes = new Map<string, Shape[]>();
    const backwardOrder = [...nodes].reverse();
    const backwardPos = new Map(backwardOrder.map((n, i) => [n.name, i]));

    const runForward = (node: GraphNode, i: number, phase: Phase, inputs: Tensor[], keepSaves: boolean, lastRead: boolean[]): Tensor => {
      observer?.beforeOp?.(phase, node.name);
      const toSave: Tensor[] = [];
      const mode: SaveMode = keepSaves ? saveMode : 'none';
      const out = node.layer.forward({
        inputs,
        params: this.paramsOf(node, params),
        save: (t) => void toSave.push(t),
        saveMode: mode,
        // An input this node reads last, that no save or checkpoint holds (never the step's input).
        overwritable: node.layer.forwardInPlace
          ? inputs.map((t, k) => lastRead[k]! && t !== x && readsOnce(node.inputs, node.inputs[k]!) && !sharesStorage(t, liveTensors()))
          : undefined,
      });
      inputShapes.set(node.name, inputs.map((t) => t.shape));
      const entries: SavedEntry[] = [];
      toSave.forEach((t, saveIndex) => {
        const tracked = refs.has(t) || t === out || inputs.includes(t);
        if (!keepSaves) {
          if (!tracked) t.dispose();
          return;
        }
        const where =
          hooks && phase === 'forward'
            ? hooks.pack(t, {
                node: node.name,
                layerType: node.layer.type,
                nodeIndex: i,
                saveIndex,
                backwardPosition: backwardPos.get(node.name)!,
              })
            : 'device';
        if (where === 'device') {
          entries.push({ tensor: t });
          stats.savedOnDevice++;
          // An untracked tensor (x̂, …) is owned from here on; a tracked one gets one more reference.
          if (tracked) inc(t);
          else refs.set(t, 1);
        } else {
          entries.push({ packed: where });
          stats.packed++;
          if (!tracked) t.dispose();
        }
      });
      if (keepSaves) {
        saved.set(node.name, entries);
        savedMode.set(node.name, mode);
      }
      observer?.afterOp?.(phase, node.name);
      return out;
    };
    /**
     * A recomputed node whose output nothing reads again and which saves only (some of) its inputs: its
     * saves are those inputs, so it is not run at all (e.g. a convolution that ends a segment). A layer
     * whose spec lists no saved input is always run (a spec may leave out a tensor shared with another).
     */
    const savesOnlyInputs = (node: GraphNode, inputs: Tensor[]): boolean => {
      const spec = node.layer.saves(inputs.map((t) => t.shape), saveMode);
      if (!spec.inputs.length || spec.output || spec.extra.length) return false;
      inputShapes.set(node.name, inputs.map((t) => t.shape));
      const entries: SavedEntry[] = spec.inputs.map((k) => {
        inc(inputs[k]!);
        stats.savedOnDevice++;
        return { tensor: inputs[k]! };
      });
      saved.set(node.name, entries);
      savedMode.set(node.name, saveMode);
      return true;
    };

    // ---- forward
    const auxNames = (this.net.auxOutputs ?? []).map((a) => a.node);
    const outputHold = new Set([this.net.output, ...auxNames]);
    const pendingReads = new Map(this.consumerCount);
    const readers = this.readers;
    // Branch swapping: activations parked off the device until their next forward reader.
    const parked = new Map<string, { packed: PackedTensor; prefetched: boolean }>();
    const lookaheadFwd = plan.prefetchDistance ?? 0;
    let t0 = now();
    for (let i = 0; i < nodes.length; i++) {
      const node = nodes[i]!;
      // A parked activation comes back `prefetchDistance` layers before its reader (0: when it is read).
      if (parked.size && hooks?.prefetch)
        for (let j = i; j <= Math.min(nodes.length - 1, i + lookaheadFwd - 1); j++)
          for (const n of nodes[j]!.inputs) {
            const p = parked.get(n);
            if (p && !p.prefetched) {
              p.prefetched = true;
              hooks.prefetch(p.packed);
            }
          }
      for (const n of new Set(node.inputs)) {
        const p = parked.get(n);
        if (!p) continue;
        parked.delete(n);
        const w0 = now();
        const t = await hooks!.unpack(p.packed);
        stats.unpackWaitSeconds += now() - w0;
        hooks!.release?.(p.packed);
        acts.set(n, t);
        inc(t, pendingReads.get(n)!);
      }
      const inputs = node.inputs.map((n) => acts.get(n)!);
      const out = runForward(
        node,
        i,
        'forward',
        inputs,
        !segmentOf.has(node.name),
        inputs.map((t) => refs.get(t) === 1),
      );
      register(node.name, out, outputHold.has(node.name) ? 1 : 0);
      for (const n of node.inputs) {
        pendingReads.set(n, pendingReads.get(n)! - 1);
        dec(acts.get(n)!);
      }
      if (hooks?.park)
        for (const n of new Set(node.inputs)) {
          const left = pendingReads.get(n)!;
          const t = acts.get(n)!;
          // Only an activation that nothing else keeps on the device is worth parking.
          if (n === NETWORK_INPUT || left === 0 || refs.get(t) !== left) continue;
          const next = readers.get(n)!.find((k) => k > i)!;
          const packed = hooks.park(t, { node: n, distance: next - i });
          if (!packed) continue;
          parked.set(n, { packed, prefetched: false });
          for (let k = 0; k < left; k++) dec(t);
          acts.delete(n);
        }
      await hooks?.poll?.();
    }
    stats.forwardSeconds = now() - t0;

    // ---- loss
    const logits = acts.get(this.net.output)!;
    const auxTensors = auxNames.map((n) => acts.get(n)!);
    observer?.beforeOp?.('loss', 'loss');
    const { loss, dLogits, dAux } = lossFn(logits, auxTensors);
    observer?.afterOp?.('loss', 'loss');
    dec(logits);
    for (const t of auxTensors) dec(t);

    // ---- backward
    t0 = now();
    // Gradient contributions are summed into the first one where nothing else shares its buffer (cpu).
    const accumulate = (prev: Tensor, g: Tensor): Tensor => {
      if (!refs.has(prev)) return addInto(prev, g);
      const sum = tf.add(prev, g);
      prev.dispose();
      g.dispose();
      return sum;
    };
    const grads = new Map<string, Tensor>([[this.net.output, dLogits]]);
    auxNames.forEach((n, k) => {
      const prev = grads.get(n);
      grads.set(n, prev ? accumulate(prev, dAux[k]!) : dAux[k]!);
    });
    const paramGrads = new Map<string, Tensor>();
    const recomputed = new Set<number>();
    const lookahead = plan.prefetchDistance ?? 0;
    const prefetch = (pos: number): void => {
      const node = backwardOrder[pos];
      if (!node || !hooks?.prefetch) return;
      for (const e of saved.get(node.name) ?? []) if ('packed' in e) hooks.prefetch(e.packed);
    };
    // Node `pos + lookahead`'s packed saves start back as node `pos`'s backward starts: `lookahead`
    // backward layers ahead of their use (0: fetched on demand, when the layer needs them).
    for (let p = 0; p < lookahead; p++) prefetch(p);

    for (let pos = 0; pos < backwardOrder.length; pos++) {
      const node = backwardOrder[pos]!;
      prefetch(pos + lookahead);
      const seg = segmentOf.get(node.name);
      if (seg !== undefined && !recomputed.has(seg)) {
        recomputed.add(seg);
        const r0 = now();
        this.recomputeSegment(segments[seg]!, acts, runForward, savesOnlyInputs, (t) => refs.has(t));
        // The segment's external inputs were held for this recompute only; what its saves need, they hold.
        for (const e of segments[seg]!.external) dec(acts.get(e)!);
        stats.recomputeSeconds += now() - r0;
      }
      const dy = grads.get(node.name);
      grads.delete(node.name);
      const entries = saved.get(node.name) ?? [];
      saved.delete(node.name);
      const forwardMode = savedMode.get(node.name);
      savedMode.delete(node.name);

      if (dy && this.requiresGrad.get(node.name)) {
        const w0 = now();
        const savedTensors = await Promise.all(entries.map((e) => ('tensor' in e ? e.tensor : hooks!.unpack(e.packed))));
        stats.unpackWaitSeconds += now() - w0;
        observer?.beforeOp?.('backward', node.name);
        const { dInputs, dParams } = node.layer.backward({
          dy,
          saved: savedTensors,
          saveMode: forwardMode ?? 'all',
          params: this.paramsOf(node, params),
          inputShapes: inputShapes.get(node.name)!,
          needInputGrad: node.inputs.map((n) => this.requiresGrad.get(n)!),
          // A swapped-in copy, or a device save that only this entry still holds, is freed after this call.
          // (Never the step's input: the caller owns it.)
          overwritable: entries.map((e) => 'packed' in e || (e.tensor !== x && refs.get(e.tensor) === 1)),
        });
        dy.dispose();
        savedTensors.forEach((t, k) => {
          if ('packed' in entries[k]!) t.dispose();
        });
        node.inputs.forEach((n, k) => {
          const g = dInputs[k];
          if (!g) return;
          const prev = grads.get(n);
          grads.set(n, prev ? accumulate(prev, g) : g);
        });
        node.layer.params.forEach((p, k) => {
          const name = `${node.name}.${p.name}`;
          const g = dParams[k]!;
          const prev = paramGrads.get(name);
          paramGrads.set(name, prev ? accumulate(prev, g) : g);
        });
        observer?.afterOp?.('backward', node.name);
      } else {
        dy?.dispose();
      }
      for (const e of entries) {
        if ('tensor' in e) dec(e.tensor);
        else hooks!.release?.(e.packed);
      }
      // Each parameter belongs to one node: its gradient is final once that node's backward is done.
      if (applyGradient)
        for (const p of node.layer.params) {
          const name = `${node.name}.${p.name}`;
          const g = paramGrads.get(name);
          if (!g) continue;
          paramGrads.delete(name);
          applyGradient(name, g);
        }
      await hooks?.poll?.();
    }
    for (const g of grads.values()) g.dispose();
    stats.backwardSeconds = now() - t0 - stats.recomputeSeconds;
    return { loss, grads: paramGrads, stats };
  }

  /** The baseline: forward under tfjs's tape and `tf.grads` for the parameters. */
  private tapeStep(x: Tensor, params: Map<string, Tensor>, lossFn: LossFunction, outer?: StepObserver): StepResult {
    // Nothing may throw through tf.grads: an exception inside it leaves tfjs's tape recording, and every
    // later kernel then keeps its tensors. An observer's error (out of memory) waits until grads return.
    let deferred: unknown = null;
    const guard =
      <A extends unknown[]>(fn?: (...a: A) => void) =>
      (...a: A): void => {
        if (deferred) return;
        try {
          fn?.(...a);
        } catch (e) {
          deferred = e;
        }
      };
    const observer: StepObserver = { beforeOp: guard(outer?.beforeOp?.bind(outer)), afterOp: guard(outer?.afterOp?.bind(outer)) };
    const names = [...params.keys()];
    const t0 = now();
    let loss = NaN;
    let forwardSeconds = 0;
    const outputs = [this.net.output, ...(this.net.auxOutputs ?? []).map((a) => a.node)];
    const grads = tf.grads((...ps: Tensor[]) => {
      const [logits, ...aux] = this.forwardOutputs(
        x,
        new Map(names.map((n, i) => [n, ps[i]!])),
        outputs,
        {
          beforeOp: (_phase, node) => observer?.beforeOp?.('forward', node),
          afterOp: (_phase, node) => observer?.afterOp?.('forward', node),
        },
        'forward',
      );
      forwardSeconds = now() - t0;
      observer?.beforeOp?.('loss', 'loss');
      // The loss on the tape: its value only; tf.grads differentiates through it.
      const value = lossFn.tapeLoss!(logits!, aux);
      loss = value.dataSync()[0]!;
      observer?.afterOp?.('loss', 'loss');
      observer?.beforeOp?.('backward', 'tf.grads');
      return value;
    })(names.map((n) => params.get(n)!));
    observer.afterOp?.('backward', 'tf.grads');
    if (deferred) {
      tf.dispose(grads);
      throw deferred;
    }
    const result = new Map(names.map((n, i) => [n, grads[i]!]));
    const stats: StepStats = {
      forwardSeconds,
      backwardSeconds: now() - t0 - forwardSeconds,
      recomputeSeconds: 0,
      unpackWaitSeconds: 0,
      savedOnDevice: 0,
      packed: 0,
    };
    return { loss, grads: result, stats };
  }

  /**
   * Re-runs a checkpoint segment's forward from its held external inputs, saving as in a plain step.
   * A recomputed activation is dropped as soon as the segment no longer reads it, unless a save holds it.
   */
  private recomputeSegment(
    segment: { nodes: string[]; external: string[] },
    acts: Map<string, Tensor>,
    runForward: (node: GraphNode, i: number, phase: Phase, inputs: Tensor[], keepSaves: boolean, lastRead: boolean[]) => Tensor,
    savesOnlyInputs: (node: GraphNode, inputs: Tensor[]) => boolean,
    isHeld: (t: Tensor) => boolean,
  ): void {
    const inside = new Set(segment.nodes);
    const local = new Map<string, Tensor>();
    const pending = new Map<string, number>();
    for (const name of segment.nodes)
      for (const i of this.net.nodes[this.index.get(name)!]!.inputs)
        if (inside.has(i)) pending.set(i, (pending.get(i) ?? 0) + 1);
    const drop = (t: Tensor): void => {
      if (!isHeld(t)) t.dispose();
    };
    for (const name of segment.nodes) {
      const i = this.index.get(name)!;
      const node = this.net.nodes[i]!;
      const inputs = node.inputs.map((n) => (inside.has(n) ? local.get(n)! : acts.get(n)!));
      let out: Tensor | null = null;
      if (pending.get(name) || !savesOnlyInputs(node, inputs)) {
        // A local input read for the last time and held by no save may be overwritten (external ones are held).
        const lastRead = node.inputs.map((n, k) => inside.has(n) && pending.get(n) === 1 && !isHeld(inputs[k]!));
        out = runForward(node, i, 'recompute', inputs, true, lastRead);
        local.set(name, out);
      }
      for (const n of node.inputs) {
        if (!inside.has(n)) continue;
        const left = pending.get(n)! - 1;
        pending.set(n, left);
        if (left === 0) drop(local.get(n)!);
      }
      if (out && !pending.get(name)) drop(out);
    }
  }

  private checkSegments(recompute: string[][]): { nodes: string[]; external: string[] }[] {
    return recompute.map((names) => {
      const idx = names.map((n) => {
        const i = this.index.get(n);
        if (i === undefined) throw new Error(`checkpoint segment names unknown node "${n}"`);
        return i;
      });
      for (let k = 1; k < idx.length; k++)
        if (idx[k] !== idx[k - 1]! + 1)
          throw new Error(`checkpoint segment [${names.join(', ')}] is not a contiguous run of nodes`);
      const inside = new Set(names);
      const external = new Set<string>();
      for (const n of names) for (const i of this.net.nodes[this.index.get(n)!]!.inputs) if (!inside.has(i)) external.add(i);
      return { nodes: names, external: [...external] };
    });
  }
}

/** The union of two sets of recompute segments; a segment of `a` that overlaps one of `b` yields to `b`. */
export function mergeSegments(a: string[][], b: string[][]): string[][] {
  const taken = new Set(b.flat());
  return [...a.filter((s) => !s.some((n) => taken.has(n))), ...b];
}
