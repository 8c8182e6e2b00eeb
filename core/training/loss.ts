/**
 * Segmentation losses on logits: soft Dice (Milletari et al. 2016, as nnU-Net computes it over the whole
 * batch) plus optional cross-entropy. Sigmoid outputs (overlapping BraTS regions): Dice per region and
 * binary cross-entropy. Softmax outputs (exclusive labels): Dice over the foreground channels (background
 * excluded, as nnU-Net's default) and categorical cross-entropy.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import { activeAddon, capabilities, peekValues } from '../backend/index.js';
import type { LossFunction } from '../engine/index.js';

export type LossKind = 'dice' | 'dice+ce';

const SMOOTH = 1e-5;

/** The scalar loss for logits [N, D, H, W, K] and targets of the same shape. */
export function segmentationLoss(logits: Tensor, target: Tensor, kind: LossKind, activation: 'sigmoid' | 'softmax'): tf.Scalar {
  return tf.tidy(() => {
    const axes = [0, 1, 2, 3];
    const probs = activation === 'sigmoid' ? tf.sigmoid(logits) : tf.softmax(logits, -1);
    let p = probs;
    let t = target;
    if (activation === 'softmax' && logits.shape[4]! > 1) {
      const k = logits.shape[4]! - 1;
      p = tf.slice(probs, [0, 0, 0, 0, 1], [-1, -1, -1, -1, k]);
      t = tf.slice(target, [0, 0, 0, 0, 1], [-1, -1, -1, -1, k]);
    }
    const inter = tf.sum(tf.mul(p, t), axes);
    const denom = tf.add(tf.sum(p, axes), tf.sum(t, axes));
    const dice = tf.div(tf.add(tf.mul(inter, 2), SMOOTH), tf.add(denom, SMOOTH));
    let loss: Tensor = tf.sub(1, tf.mean(dice));
    if (kind === 'dice+ce') {
      const ce =
        activation === 'sigmoid'
          ? // max(l,0) − l·t + log(1 + e^−|l|): stable binary cross-entropy on logits
            tf.mean(tf.add(tf.sub(tf.relu(logits), tf.mul(logits, target)), tf.log1p(tf.exp(tf.neg(tf.abs(logits))))))
          : tf.neg(tf.mean(tf.sum(tf.mul(target, tf.logSoftmax(logits, -1)), -1)));
      loss = tf.add(loss, ce);
    }
    return loss as tf.Scalar;
  });
}

/** The per-channel sums a soft Dice (+ cross-entropy) loss is made of, over the logits it has seen. */
export interface LossSums {
  /** Σ p·t per channel. */
  inter: Float64Array;
  /** Σ p per channel. */
  prob: Float64Array;
  /** Σ t per channel. */
  target: Float64Array;
  /** Σ of the cross-entropy terms (0 for 'dice'). */
  ce: number;
}

/** The values as a Float32Array for the addon (a tensor cast from bool can hold a Uint8Array). */
function float32(v: Float32Array): Float32Array {
  return v instanceof Float32Array ? v : Float32Array.from(v as ArrayLike<number>);
}

/**
 * The first pass of the fused loss over (a part of) the logits: the sums of `LossSums` in float64, and
 * the probabilities written into `probs` (the gradient's buffer, rewritten by `lossFromSums`). Parts'
 * sums add up to the whole's (spatial partitioning all-reduces them).
 */
export function lossPartialSums(
  logitsArr: Float32Array,
  targetArr: Float32Array,
  channels: number,
  kind: LossKind,
  activation: 'sigmoid' | 'softmax',
  probs: Float32Array,
): LossSums {
  const K = channels;
  const ce = kind === 'dice+ce';
  const native = activeAddon();
  if (native) {
    // The same sums on the addon's pool, over fixed blocks of positions added in block order.
    const r = native.lossSums(float32(logitsArr), float32(targetArr), probs, K, ce ? 1 : 0, activation === 'softmax' ? 1 : 0);
    return { inter: r.slice(0, K), prob: r.slice(K, 2 * K), target: r.slice(2 * K, 3 * K), ce: r[3 * K]! };
  }
  const I = new Float64Array(K);
  const P = new Float64Array(K);
  const T = new Float64Array(K);
  let ceSum = 0;
  if (activation === 'sigmoid') {
    // Position by position, channel by channel: the same order of sums as one flat loop, without a
    // modulo per element.
    for (let o = 0; o < logitsArr.length; o += K) {
      for (let c = 0; c < K; c++) {
        const i = o + c;
        const l = logitsArr[i]!;
        const e = Math.exp(-Math.abs(l));
        // σ(l) from e^−|l| (one exponential for both terms): 1/(1 + e^−l), written so it never overflows.
        const p = l >= 0 ? 1 / (1 + e) : e / (1 + e);
        probs[i] = p;
        const t = targetArr[i]!;
        I[c]! += p * t;
        P[c]! += p;
        T[c]! += t;
        if (ce) ceSum += Math.max(l, 0) - l * t + Math.log1p(e);
      }
    }
    return { inter: I, prob: P, target: T, ce: ceSum };
  }
  // softmax over the channel axis
  for (let v = 0; v < logitsArr.length / K; v++) {
    const o = v * K;
    let max = -Infinity;
    for (let k = 0; k < K; k++) max = Math.max(max, logitsArr[o + k]!);
    let z = 0;
    for (let k = 0; k < K; k++) z += Math.exp(logitsArr[o + k]! - max);
    const logZ = Math.log(z) + max;
    for (let k = 0; k < K; k++) {
      const p = Math.exp(logitsArr[o + k]! - logZ);
      const t = targetArr[o + k]!;
      probs[o + k] = p;
      I[k]! += p * t;
      P[k]! += p;
      T[k]! += t;
      if (ce) ceSum -= t * (logitsArr[o + k]! - logZ);
    }
  }
  return { inter: I, prob: P, target: T, ce: ceSum };
}

/**
 * The second pass: the loss from the sums over all `elements` logits (the whole batch, every part), and
 * its gradient at (a part of) the logits, written over the probabilities in `grad`, times `weight`.
 */
export function lossFromSums(
  sums: LossSums,
  elements: number,
  targetArr: Float32Array,
  channels: number,
  kind: LossKind,
  activation: 'sigmoid' | 'softmax',
  grad: Float32Array,
  weight = 1,
): number {
  const K = channels;
  const { inter: I, prob: P, target: T } = sums;
  const ce = kind === 'dice+ce';
  // Dice over every channel (sigmoid), or over the foreground channels (softmax; all when K = 1)
  const first = activation === 'softmax' && K > 1 ? 1 : 0;
  const F = K - first;
  let diceSum = 0;
  const A = new Float64Array(K);
  const B = new Float64Array(K);
  for (let c = first; c < K; c++) {
    const D = P[c]! + T[c]! + SMOOTH;
    diceSum += (2 * I[c]! + SMOOTH) / D;
    // dL/dp = -(1/F)·(2t·D − (2I + ε))/D² = A·t + B
    A[c] = -(2 / D) / F;
    B[c] = (2 * I[c]! + SMOOTH) / (D * D) / F;
  }
  const native = activeAddon();
  if (native) {
    // The cross-entropy's divisor: elements (sigmoid) or positions (softmax).
    const count = activation === 'sigmoid' ? elements : elements / K;
    native.lossGrad(float32(targetArr), grad, K, A, B, ce ? 1 : 0, activation === 'softmax' ? 1 : 0, count, weight);
    return weight * (1 - diceSum / F + (ce ? sums.ce / count : 0));
  }
  if (activation === 'sigmoid') {
    const M = elements;
    for (let o = 0; o < grad.length; o += K)
      for (let c = 0; c < K; c++) {
        const i = o + c;
        const p = grad[i]!;
        const t = targetArr[i]!;
        let g = (A[c]! * t + B[c]!) * p * (1 - p);
        if (ce) g += (p - t) / M;
        grad[i] = weight * g;
      }
    return weight * (1 - diceSum / F + (ce ? sums.ce / M : 0));
  }
  const V = elements / K;
  const g = new Float64Array(K);
  for (let v = 0; v < grad.length / K; v++) {
    const o = v * K;
    // dL/dl_j = p_j (g_j − Σ_k p_k g_k) for Dice; (p_j Σ_k t_k − t_j)/V for cross-entropy
    let pg = 0;
    let tSum = 0;
    for (let k = 0; k < K; k++) {
      g[k] = A[k]! * targetArr[o + k]! + B[k]!;
      pg += grad[o + k]! * g[k]!;
      tSum += targetArr[o + k]!;
    }
    for (let k = 0; k < K; k++) {
      const p = grad[o + k]!;
      let d = p * (g[k]! - pg);
      if (ce) d += (p * tSum - targetArr[o + k]!) / V;
      grad[o + k] = weight * d;
    }
  }
  return weight * (1 - diceSum / F + (ce ? sums.ce / V : 0));
}

/**
 * Loss and gradient at the logits in one pass over host-visible arrays (two: the sums, then the
 * gradient), with the gradients of soft Dice and cross-entropy written out analytically: the device holds
 * the gradient only, where the taped version holds about 20 logits-sized temporaries (the loss can be the
 * step's peak at full resolution). Sums in float64. Same definitions as `segmentationLoss` (checked
 * against it in test/loss.test.ts).
 */
export function fusedLossAndGradient(
  logitsArr: Float32Array,
  targetArr: Float32Array,
  channels: number,
  kind: LossKind,
  activation: 'sigmoid' | 'softmax',
): { loss: number; grad: Float32Array } {
  const grad = new Float32Array(logitsArr.length);
  // A target cast from bool holds a Uint8Array: converted once here for both passes, not in each.
  const target = float32(targetArr);
  const sums = lossPartialSums(logitsArr, target, channels, kind, activation, grad);
  return { loss: lossFromSums(sums, logitsArr.length, target, channels, kind, activation, grad), grad };
}

/** Loss value and its gradient with respect to the logits (the start of the owned backward pass). */
export function lossAndGradient(
  logits: Tensor,
  target: Tensor,
  kind: LossKind,
  activation: 'sigmoid' | 'softmax',
): { loss: number | Tensor; dLogits: Tensor } {
  if (capabilities().fusedLoss) {
    // The backend's own host arrays, read now: no copies, no device temporaries.
    const { loss, grad } = fusedLossAndGradient(
      peekValues(logits) as Float32Array,
      peekValues(target) as Float32Array,
      logits.shape[logits.rank - 1]!,
      kind,
      activation,
    );
    return { loss, dLogits: tf.tensor(grad, logits.shape, 'float32') };
  }
  const { value, grad } = tf.valueAndGrad((l: Tensor) => segmentationLoss(l, target, kind, activation))(logits);
  return { loss: readLoss(value), dLogits: grad };
}

/**
 * The loss value: read now on host-array backends (free), else left as a scalar tensor that the executor
 * reads asynchronously after the step (a synchronous read is impossible on tfjs's WebGPU backend in Node).
 */
function readLoss(value: Tensor): number | Tensor {
  if (!capabilities().hostArrays) return value;
  const loss = value.dataSync()[0]!;
  value.dispose();
  return loss;
}

/** Output activation applied to logits for inference. */
export function activate(logits: Tensor, activation: 'sigmoid' | 'softmax'): Tensor {
  return activation === 'sigmoid' ? tf.sigmoid(logits) : tf.softmax(logits, -1);
}

/** What of a network the loss needs: its output margin and auxiliary outputs. */
export interface LossTargets {
  outputMargin?: [number, number, number];
  auxOutputs?: { node: string; weight: number; scale: number }[];
}

/**
 * The executor's loss callback for one step. `target` covers the step's whole input extent: the main
 * output is compared with its centre (minus the network's output margin), each auxiliary output with the
 * target average-pooled by its scale (soft targets at the coarser resolution).
 */
export function stepLoss(target: Tensor, kind: LossKind, activation: 'sigmoid' | 'softmax', net: LossTargets = {}): LossFunction {
  const [md, mh, mw] = net.outputMargin ?? [0, 0, 0];
  const aux = net.auxOutputs ?? [];
  const targets = (): { main: Tensor; aux: Tensor[] } => {
    const main =
      md || mh || mw
        ? tf.slice(target, [0, md, mh, mw, 0], [-1, target.shape[1]! - 2 * md, target.shape[2]! - 2 * mh, target.shape[3]! - 2 * mw, -1])
        : target;
    return {
      main,
      aux: aux.map((a) => (a.scale === 1 ? target : tf.avgPool3d(target as tf.Tensor5D, a.scale, a.scale, 'valid'))),
    };
  };
  const total = (logits: Tensor, auxLogits: Tensor[]): tf.Scalar =>
    tf.tidy(() => {
      const t = targets();
      let l: Tensor = segmentationLoss(logits, t.main, kind, activation);
      aux.forEach((a, k) => {
        l = tf.add(l, tf.mul(segmentationLoss(auxLogits[k]!, t.aux[k]!, kind, activation), a.weight));
      });
      return l as tf.Scalar;
    });
  const fn = ((logits: Tensor, auxLogits: Tensor[]) => {
    if (aux.length === 0 && !(md || mh || mw)) {
      const { loss, dLogits } = lossAndGradient(logits, target, kind, activation);
      return { loss, dLogits, dAux: [] };
    }
    const { value, grads } = tf.valueAndGrads((...xs: Tensor[]) => total(xs[0]!, xs.slice(1)))([logits, ...auxLogits]);
    return { loss: readLoss(value), dLogits: grads[0]!, dAux: grads.slice(1) };
  }) as LossFunction;
  fn.tapeLoss = (logits: Tensor, auxLogits: Tensor[]) => total(logits, auxLogits);
  return fn;
}
