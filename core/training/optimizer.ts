/**
 * Parameters and Adam (Kingma & Ba 2015). Parameters are plain tensors keyed by qualified name
 * (`node.param`), initialised from the trial seed so that a run is reproducible.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import type { Network } from '../engine/index.js';
import { SeededRng } from '../data/index.js';
import { adamUpdate, exclusiveValues, capabilities, peekValues } from '../backend/index.js';

export type Params = Map<string, Tensor>;

/** He-normal filters (fan-in), ones/zeros for normalisation scales/offsets and biases. */
export function initParams(net: Network, seed: number): Params {
  const rng = new SeededRng(seed).fork('init');
  const params: Params = new Map();
  for (const p of net.params) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(n);
    if (p.init === 'ones') values.fill(1);
    else if (p.init === 'he') {
      const std = Math.sqrt(2 / (p.fanIn ?? n));
      for (let i = 0; i < n; i++) values[i] = rng.normal() * std;
    }
    params.set(p.qualifiedName, tf.tensor(values, p.shape, 'float32'));
  }
  return params;
}

export function disposeParams(params: Params): void {
  for (const t of params.values()) t.dispose();
  params.clear();
}

export interface AdamOptions {
  learningRate: number;
  beta1?: number;
  beta2?: number;
  epsilon?: number;
}

export class Adam {
  private readonly m = new Map<string, Tensor>();
  private readonly v = new Map<string, Tensor>();
  private t = 0;
  constructor(readonly opts: AdamOptions) {}

  /** Updates `params` in place (the map's tensors are replaced or overwritten) and disposes the gradients. */
  step(params: Params, grads: Map<string, Tensor>): void {
    this.begin();
    for (const [name, g] of grads) this.update(params, name, g);
    grads.clear();
  }

  /**
   * Starts a step whose parameters are then updated one at a time with `update`, e.g. from inside the
   * backward pass as each parameter's gradient becomes final (PyTorch's optimizer-in-backward): Adam is
   * element-wise per parameter, so the result is the same as `step` after the whole backward.
   */
  begin(): void {
    this.t++;
  }

  /** Adam's update of one parameter with its gradient `g` (disposed), for the step `begin` started. */
  update(params: Params, name: string, g: Tensor): void {
    if (this.t === 0) throw new Error('Adam.update before begin()');
    const { learningRate: lr, beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8 } = this.opts;
    const c1 = 1 - beta1 ** this.t;
    const c2 = 1 - beta2 ** this.t;
    const p = params.get(name);
    if (!p) throw new Error(`Adam: gradient for unknown parameter ${name}`);
    const m0 = this.m.get(name);
    const v0 = this.v.get(name);
    if (m0 && v0 && adamInPlace(p, g, m0, v0, lr / c1, c2, beta1, beta2, epsilon)) {
      g.dispose();
      return;
    }
    const [m, v, next] = capabilities().fusedAdam ? fusedAdam(p, g, m0, v0, lr / c1, c2, beta1, beta2, epsilon) : tf.tidy(() => {
      const m = m0 ? tf.add(tf.mul(m0, beta1), tf.mul(g, 1 - beta1)) : tf.mul(g, 1 - beta1);
      const v = v0 ? tf.add(tf.mul(v0, beta2), tf.mul(tf.square(g), 1 - beta2)) : tf.mul(tf.square(g), 1 - beta2);
      const update = tf.div(tf.mul(m, lr / c1), tf.add(tf.sqrt(tf.div(v, c2)), epsilon));
      return [m, v, tf.sub(p, update)];
    });
    m0?.dispose();
    v0?.dispose();
    p.dispose();
    g.dispose();
    this.m.set(name, m!);
    this.v.set(name, v!);
    params.set(name, next!);
  }

  dispose(): void {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose();
    this.m.clear();
    this.v.clear();
  }
}

/**
 * The cpu backend's Adam update written into the parameter's and the moments' own arrays (no
 * allocation), when each of them is exclusively owned (core/backend/in-place.ts); false (nothing written) if not.
 * The arithmetic is adamUpdate's (core/backend/in-place.ts), as fusedAdam's.
 */
function adamInPlace(
  p: Tensor,
  g: Tensor,
  m0: Tensor,
  v0: Tensor,
  stepSize: number,
  c2: number,
  beta1: number,
  beta2: number,
  epsilon: number,
): boolean {
  const pv = exclusiveValues(p);
  const mv = exclusiveValues(m0);
  const vv = exclusiveValues(v0);
  if (!pv || !mv || !vv) return false;
  adamUpdate(pv, peekValues(g) as Float32Array, mv, vv, { stepSize, c2, beta1, beta2, epsilon });
  return true;
}

/**
 * One Adam update of one parameter over the cpu backend's arrays: only the new moment and parameter
 * tensors are allocated (the tf-op version makes about ten parameter-sized temporaries, which at small
 * input sizes is the step's peak). The update is adamUpdate's, written into copies of the parameter and
 * the moments (zeros for a first step: 0·β + x is x exactly, so the arithmetic is that of a first step).
 */
function fusedAdam(
  p: Tensor,
  g: Tensor,
  m0: Tensor | undefined,
  v0: Tensor | undefined,
  stepSize: number,
  c2: number,
  beta1: number,
  beta2: number,
  epsilon: number,
): [Tensor, Tensor, Tensor] {
  const next = (peekValues(p) as Float32Array).slice();
  const m = m0 ? (peekValues(m0) as Float32Array).slice() : new Float32Array(next.length);
  const v = v0 ? (peekValues(v0) as Float32Array).slice() : new Float32Array(next.length);
  adamUpdate(next, peekValues(g) as Float32Array, m, v, { stepSize, c2, beta1, beta2, epsilon });
  return [tf.tensor(m, p.shape, 'float32'), tf.tensor(v, p.shape, 'float32'), tf.tensor(next, p.shape, 'float32')];
}
