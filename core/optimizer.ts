/**
 * Parameters and Adam (Kingma & Ba 2015). Parameters are plain tensors keyed by qualified name
 * (`node.param`), initialised from the trial seed so that a run is reproducible.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import type { Network } from './graph.js';
import { SeededRng } from './rng.js';

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

  /** Updates `params` in place (the map's tensors are replaced) and disposes the gradients. */
  step(params: Params, grads: Map<string, Tensor>): void {
    const { learningRate: lr, beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8 } = this.opts;
    this.t++;
    const c1 = 1 - beta1 ** this.t;
    const c2 = 1 - beta2 ** this.t;
    for (const [name, g] of grads) {
      const p = params.get(name);
      if (!p) throw new Error(`Adam: gradient for unknown parameter ${name}`);
      const m0 = this.m.get(name);
      const v0 = this.v.get(name);
      const [m, v, next] = tf.tidy(() => {
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
    grads.clear();
  }

  dispose(): void {
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose();
    this.m.clear();
    this.v.clear();
  }
}
