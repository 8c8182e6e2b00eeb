/**
 * Runs a Network: inference forward, and a training step that owns its backward pass.
 *
 * The training step runs its schedule (schedule.ts): the ordered events that the schedule derived from
 * the network, the input shape and the strategy's StepPlan — each layer's forward and where its saves go,
 * every release of an activation, recomputes, swap-outs and swap-ins, the loss, each backward and how
 * its gradients are summed, the optimizer updates. Every activation is freed as soon as its last reader
 * ran, every saved tensor as soon as the layer that saved it finished backward, every gradient as soon
 * as it was passed on, so the measured peak is what the model needs (tf.grads holds all of them until
 * the whole backward ends). The memory estimator walks the same events.
 *
 * The executor owns each tensor through a count of its holders (reads to come, holds, saves): the
 * schedule says when each holder lets go. What the schedule permits in place (an output over its input,
 * a gradient sum into its buffer) the executor does only where that tensor really has no other holder
 * and no other live tensor views its memory.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import { NETWORK_INPUT, type GraphNode, type Network, type SaveMode, type Shape } from './graph.js';
import type { PackedTensor, Phase, SaveSite, StepPlan } from './plan.js';
import { forwardSchedule, stepSchedule, type StepSchedule, type TapeSchedule } from './schedule.js';
import { addInto, sharesStorage, capabilities } from '../backend/index.js';

/** Told before and after each layer; the memory meter names the operation in out-of-memory errors. */
export interface StepObserver {
  beforeOp?(phase: Phase, node: string): void;
  afterOp?(phase: Phase, node: string): void;
}

export interface StepStats {
  forwardSeconds: number;
  backwardSeconds: number;
  recomputeSeconds: number;
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
  /**
   * `loss` is the value, or a scalar tensor the executor reads asynchronously after the step (where a
   * synchronous read is costly or impossible, as on tfjs's WebGPU backend in Node).
   */
  (logits: Tensor, aux: Tensor[]): { loss: number | Tensor; dLogits: Tensor; dAux: Tensor[] };
  tapeLoss?: (logits: Tensor, aux: Tensor[]) => tf.Scalar;
}

type SavedEntry = { tensor: Tensor } | { packed: PackedTensor };

const now = (): number => performance.now() / 1000;

/** Tensors and how many holders each has; a tensor goes when its last holder lets go (never `keep`). */
class Holders {
  private readonly counts = new Map<Tensor, number>();
  constructor(private readonly keep: Tensor) {}
  count(t: Tensor): number {
    return this.counts.get(t) ?? 0;
  }
  has(t: Tensor): boolean {
    return this.counts.has(t);
  }
  hold(t: Tensor, n = 1): void {
    const c = (this.counts.get(t) ?? 0) + n;
    if (c > 0) this.counts.set(t, c);
    else this.drop(t);
  }
  release(t: Tensor): void {
    const left = (this.counts.get(t) ?? 0) - 1;
    if (left > 0) this.counts.set(t, left);
    else this.drop(t);
  }
  private drop(t: Tensor): void {
    this.counts.delete(t);
    if (t !== this.keep) t.dispose();
  }
}

export class Executor {
  /** Schedules by plan, input shape and optimizer placement (a plan's schedule is built once). */
  private readonly schedules = new WeakMap<StepPlan, Map<string, StepSchedule | TapeSchedule>>();

  constructor(readonly net: Network) {}

  /** The schedule a training step with `plan` at `inputShape` runs. */
  schedule(inputShape: Shape, plan: StepPlan, optimizerInBackward: boolean): StepSchedule | TapeSchedule {
    const caps = capabilities();
    let byKey = this.schedules.get(plan);
    if (!byKey) this.schedules.set(plan, (byKey = new Map()));
    const key = `${inputShape.join('x')}|${optimizerInBackward}`;
    let s = byKey.get(key);
    if (!s || (s.backward === 'owned' && s.capabilities !== caps)) {
      s = stepSchedule(this.net, inputShape, plan, { optimizerInBackward, capabilities: caps });
      byKey.set(key, s);
    }
    return s;
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

  /**
   * Forward without saves, returning the named nodes' outputs (the caller disposes them). `phase`
   * 'inference' lets layers write over inputs they read last; under tf.grads (the tape baseline, phase
   * 'forward') layers run as they are: the tape keeps what kernels save.
   */
  forwardOutputs(x: Tensor, params: Map<string, Tensor>, outputs: string[], observer?: StepObserver, phase: Phase = 'inference'): Tensor[] {
    const inference = phase === 'inference';
    const acts = new Map<string, Tensor>([[NETWORK_INPUT, x]]);
    for (const step of forwardSchedule(this.net, outputs, inference)) {
      const node = this.net.nodes[step.node]!;
      observer?.beforeOp?.(phase, node.name);
      const inputs = node.inputs.map((i) => acts.get(i)!);
      const extras: Tensor[] = [];
      const overwritable =
        inference && node.layer.forwardInPlace ? inputs.map((t, k) => step.overwritable[k]! && !sharesStorage(t, acts.values())) : undefined;
      const out = node.layer.forward({
        inputs,
        params: this.paramsOf(node, params),
        save: (t) => extras.push(t),
        ...(inference ? { saveMode: 'none' as const, overwritable } : {}),
      });
      for (const t of extras) if (t !== out && !inputs.includes(t)) t.dispose();
      acts.set(node.name, out);
      for (const n of step.dead) acts.get(n)!.dispose();
      observer?.afterOp?.(phase, node.name);
    }
    return outputs.map((o) => acts.get(o)!);
  }

  /**
   * One training step: forward with saves, loss, and the owned backward pass, as the step's schedule
   * orders them. With `applyGradient`, each parameter's gradient goes to it as soon as it is final
   * (the optimizer inside backward).
   */
  async trainStep(
    x: Tensor,
    params: Map<string, Tensor>,
    lossFn: LossFunction,
    plan: StepPlan = {},
    observer?: StepObserver,
    applyGradient?: (name: string, grad: Tensor) => void,
  ): Promise<StepResult> {
    const schedule = this.schedule(x.shape, plan, applyGradient !== undefined);
    if (schedule.backward === 'tape') {
      const result = this.tapeStep(x, params, lossFn, observer);
      if (applyGradient) {
        for (const [name, g] of result.grads) applyGradient(name, g);
        result.grads.clear();
      }
      return result;
    }
    plan.hooks?.stepStart?.();
    try {
      return await this.runSchedule(schedule, x, params, lossFn, plan, observer, applyGradient);
    } finally {
      plan.hooks?.stepEnd?.();
    }
  }

  private async runSchedule(
    schedule: StepSchedule,
    x: Tensor,
    params: Map<string, Tensor>,
    lossFn: LossFunction,
    plan: StepPlan,
    observer: StepObserver | undefined,
    applyGradient: ((name: string, grad: Tensor) => void) | undefined,
  ): Promise<StepResult> {
    const { nodes } = this.net;
    const hooks = plan.hooks;
    const stats: StepStats = { forwardSeconds: 0, backwardSeconds: 0, recomputeSeconds: 0, savedOnDevice: 0, packed: 0 };
    const holders = new Holders(x);
    const acts = new Map<number, Tensor>([[schedule.inputValue, x]]);
    const saved = new Map<string, SavedEntry[]>();
    const savedMode = new Map<string, SaveMode>();
    const inputShapes = new Map<string, Shape[]>();
    const parked = new Map<number, PackedTensor>();
    const grads = new Map<string, Tensor>();
    const paramGrads = new Map<string, Tensor>();
    let loss = NaN;
    let lossTensor: Tensor | null = null;
    /** Every tensor the step holds (activations and saves), to rule out views when writing in place. */
    const liveTensors = function* (): Generator<Tensor> {
      yield* acts.values();
      for (const entries of saved.values()) for (const e of entries) if ('tensor' in e) yield e.tensor;
    };
    /** A gradient contribution joins the one already there: in place where the schedule planned it and the buffer is exclusive. */
    const accumulate = (into: Map<string, Tensor>, name: string, g: Tensor, how: 'first' | 'in-place' | 'sum'): void => {
      const prev = into.get(name);
      if (!prev) return void into.set(name, g);
      if (how !== 'sum') return void into.set(name, addInto(prev, g));
      into.set(name, tf.add(prev, g));
      prev.dispose();
      g.dispose();
    };
    const saveMode = plan.saveMode ?? 'all';
    const t0 = now();
    let tBackward = 0;
    let tRecompute = 0;

    for (const ev of schedule.events) {
      switch (ev.kind) {
        case 'forward': {
          const node = nodes[ev.node]!;
          observer?.beforeOp?.(ev.phase, node.name);
          const inputs = ev.inputs.map((v) => acts.get(v)!);
          const toSave: Tensor[] = [];
          const out = node.layer.forward({
            inputs,
            params: this.paramsOf(node, params),
            save: (t) => void toSave.push(t),
            saveMode: ev.saveMode,
            // What the schedule permits, where the tensor really has no other holder and no live tensor views it.
            overwritable: node.layer.forwardInPlace
              ? inputs.map((t, k) => ev.overwritable[k]! && t !== x && holders.count(t) === 1 && !sharesStorage(t, liveTensors()))
              : undefined,
          });
          inputShapes.set(node.name, inputs.map((t) => t.shape));
          const entries: SavedEntry[] = [];
          toSave.forEach((t, k) => {
            const tracked = holders.has(t) || t === out || inputs.includes(t);
            if (ev.saveMode === 'none') {
              if (!tracked) t.dispose();
              return;
            }
            // A save the layer's spec does not declare (a tensor another layer saved too) gets its own site.
            const site: SaveSite = ev.saves[k]?.site ?? {
              node: node.name,
              layerType: node.layer.type,
              nodeIndex: ev.node,
              saveIndex: k,
              backwardPosition: nodes.length - 1 - ev.node,
            };
            const where = hooks && ev.phase === 'forward' ? hooks.pack(t, site) : 'device';
            if (where === 'device') {
              entries.push({ tensor: t });
              stats.savedOnDevice++;
              holders.hold(t);
            } else {
              entries.push({ packed: where });
              stats.packed++;
              if (!tracked) t.dispose();
            }
          });
          if (ev.saveMode !== 'none') {
            saved.set(node.name, entries);
            savedMode.set(node.name, ev.saveMode);
          }
          acts.set(ev.output, out);
          holders.hold(out, ev.holders);
          for (const v of ev.release) holders.release(acts.get(v)!);
          observer?.afterOp?.(ev.phase, node.name);
          break;
        }
        case 'save-inputs': {
          const node = nodes[ev.node]!;
          inputShapes.set(node.name, ev.inputs.map((v) => acts.get(v)!.shape));
          saved.set(
            node.name,
            ev.saved.map((v) => {
              const t = acts.get(v)!;
              holders.hold(t);
              stats.savedOnDevice++;
              return { tensor: t };
            }),
          );
          savedMode.set(node.name, saveMode);
          for (const v of ev.release) holders.release(acts.get(v)!);
          break;
        }
        case 'park': {
          const t = acts.get(ev.value)!;
          const p = hooks!.park!(t, ev.site);
          if (!p) throw new Error(`the swap hooks' park() declined ${ev.site.node} (distance ${ev.site.distance}) although willPark() accepted it`);
          parked.set(ev.value, p);
          for (let k = 0; k < ev.references; k++) holders.release(t);
          acts.delete(ev.value);
          break;
        }
        case 'prefetch-parked':
          hooks!.prefetch!(parked.get(ev.value)!);
          break;
        case 'unpark': {
          const p = parked.get(ev.value)!;
          parked.delete(ev.value);
          const t = await hooks!.unpack(p);
          hooks!.release?.(p);
          acts.set(ev.value, t);
          holders.hold(t, ev.holders);
          break;
        }
        case 'end-layer':
          await hooks?.poll?.();
          break;
        case 'loss': {
          stats.forwardSeconds = now() - t0;
          tBackward = now();
          const [logits, ...aux] = ev.outputs.map((v) => acts.get(v)!);
          observer?.beforeOp?.('loss', 'loss');
          const r = lossFn(logits!, aux);
          if (typeof r.loss === 'number') loss = r.loss;
          else lossTensor = r.loss;
          observer?.afterOp?.('loss', 'loss');
          for (const v of ev.outputs) holders.release(acts.get(v)!);
          grads.set(this.net.output, r.dLogits);
          (this.net.auxOutputs ?? []).forEach((a, k) => accumulate(grads, a.node, r.dAux[k]!, ev.auxAccumulation[k]!));
          break;
        }
        case 'prefetch':
          if (hooks?.prefetch) for (const e of saved.get(nodes[ev.node]!.name) ?? []) if ('packed' in e) hooks.prefetch(e.packed);
          break;
        case 'recompute':
          tRecompute = now();
          break;
        case 'recompute-end':
          for (const v of ev.release) holders.release(acts.get(v)!);
          stats.recomputeSeconds += now() - tRecompute;
          break;
        case 'backward':
        case 'skip-backward': {
          const node = nodes[ev.node]!;
          const dy = grads.get(node.name);
          grads.delete(node.name);
          const entries = saved.get(node.name) ?? [];
          saved.delete(node.name);
          const forwardMode = savedMode.get(node.name) ?? 'all';
          savedMode.delete(node.name);
          // Saves the layer let go of during its backward (Layer.releasesSavesEarly): freed then, not after.
          const released = new Set<number>();
          if (ev.kind === 'backward' && dy) {
            const savedTensors = await Promise.all(entries.map((e) => ('tensor' in e ? e.tensor : hooks!.unpack(e.packed))));
            const releaseSave = (k: number): void => {
              const e = entries[k];
              if (!e || released.has(k)) return;
              released.add(k);
              if ('tensor' in e) holders.release(e.tensor);
              else {
                savedTensors[k]!.dispose();
                hooks!.release?.(e.packed);
              }
            };
            observer?.beforeOp?.('backward', node.name);
            const { dInputs, dParams } = node.layer.backward({
              dy,
              saved: savedTensors,
              saveMode: forwardMode,
              params: this.paramsOf(node, params),
              inputShapes: inputShapes.get(node.name)!,
              needInputGrad: ev.needInputGrad,
              // A swapped-in copy, or a device save that only this entry still holds (never the step's input:
              // the caller owns it), is freed after this call.
              overwritable: entries.map((e, k) => 'packed' in e || ((ev.overwritable[k] ?? true) && e.tensor !== x && holders.count(e.tensor) === 1)),
              dyOverwritable: ev.dyOverwritable,
              release: releaseSave,
            });
            dy.dispose();
            savedTensors.forEach((t, k) => {
              if ('packed' in entries[k]! && !released.has(k)) t.dispose();
            });
            node.inputs.forEach((n, k) => {
              const g = dInputs[k];
              if (!g) return;
              const how = ev.accumulation[k];
              if (how === null || how === undefined) g.dispose(); // a gradient nothing upstream needs
              else accumulate(grads, n, g, how);
            });
            node.layer.params.forEach((p, k) => accumulate(paramGrads, `${node.name}.${p.name}`, dParams[k]!, 'in-place'));
            observer?.afterOp?.('backward', node.name);
          } else dy?.dispose();
          entries.forEach((e, k) => {
            if (released.has(k)) return;
            if ('tensor' in e) holders.release(e.tensor);
            else hooks!.release?.(e.packed);
          });
          break;
        }
        case 'update': {
          // Each parameter belongs to one node: its gradient is final once that node's backward is done.
          for (const p of nodes[ev.node]!.layer.params) {
            const name = `${nodes[ev.node]!.name}.${p.name}`;
            const g = paramGrads.get(name);
            if (!g || !applyGradient) continue;
            paramGrads.delete(name);
            applyGradient(name, g);
          }
          break;
        }
        case 'finish':
          for (const g of grads.values()) g.dispose();
          break;
      }
    }
    stats.backwardSeconds = now() - tBackward - stats.recomputeSeconds;
    if (lossTensor) {
      loss = (await lossTensor.data())[0]!;
      lossTensor.dispose();
    }
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
      savedOnDevice: 0,
      packed: 0,
    };
    return { loss, grads: result, stats };
  }
}
