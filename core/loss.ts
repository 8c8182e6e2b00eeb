/**
 * Segmentation losses on logits: soft Dice (Milletari et al. 2016, as nnU-Net computes it over the whole
 * batch) plus optional cross-entropy. Sigmoid outputs (overlapping BraTS regions): Dice per region and
 * binary cross-entropy. Softmax outputs (exclusive labels): Dice over the foreground channels (background
 * excluded, as nnU-Net's default) and categorical cross-entropy.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';
import type { LossFunction } from './executor.js';

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

/** Loss value and its gradient with respect to the logits (the start of the owned backward pass). */
export function lossAndGradient(
  logits: Tensor,
  target: Tensor,
  kind: LossKind,
  activation: 'sigmoid' | 'softmax',
): { loss: number; dLogits: Tensor } {
  const { value, grad } = tf.valueAndGrad((l: Tensor) => segmentationLoss(l, target, kind, activation))(logits);
  const loss = value.dataSync()[0]!;
  value.dispose();
  return { loss, dLogits: grad };
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
    const loss = value.dataSync()[0]!;
    value.dispose();
    return { loss, dLogits: grads[0]!, dAux: grads.slice(1) };
  }) as LossFunction;
  fn.tapeLoss = (logits: Tensor, auxLogits: Tensor[]) => total(logits, auxLogits);
  return fn;
}
