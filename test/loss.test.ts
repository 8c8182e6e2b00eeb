/** The fused loss (cpu) against the taped loss: same value and gradient, for every loss and activation. */
import { describe, it, expect, beforeAll } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { fusedLossAndGradient, segmentationLoss, stepLoss } from '../core/training/loss.js';
import { cpu } from './helpers/step.js';
import { nativeStatus, setNativeKernelsEnabled } from '../core/backend/index.js';

beforeAll(cpu);

describe('fused loss', () => {
  for (const activation of ['sigmoid', 'softmax'] as const)
    for (const kind of ['dice', 'dice+ce'] as const)
      for (const K of activation === 'sigmoid' ? [1, 3] : [2, 3])
        it(`${activation} ${kind} K=${K}`, () => {
          const logits = tf.randomNormal([2, 5, 6, 7, K], 0, 2, 'float32', 11);
          const target = tf.tidy(() =>
            activation === 'sigmoid'
              ? tf.cast(tf.greater(tf.randomUniform([2, 5, 6, 7, K], 0, 1, 'float32', 12), 0.6), 'float32')
              : tf.oneHot(tf.argMax(tf.randomUniform([2, 5, 6, 7, K], 0, 1, 'float32', 13), -1), K).toFloat(),
          );
          const { value, grad } = tf.valueAndGrad((x: tf.Tensor) => segmentationLoss(x, target, kind, activation))(logits);
          const fused = fusedLossAndGradient(logits.dataSync() as Float32Array, target.dataSync() as Float32Array, K, kind, activation);
          expect(fused.loss).toBeCloseTo(value.dataSync()[0]!, 5);
          const g = grad.dataSync();
          let diff = 0;
          let max = 0;
          for (let i = 0; i < g.length; i++) {
            diff = Math.max(diff, Math.abs(g[i]! - fused.grad[i]!));
            max = Math.max(max, Math.abs(g[i]!));
          }
          expect(diff / max).toBeLessThan(1e-5);
          tf.dispose([logits, target, value, grad]);
        });

  // The addon's two passes (blocks of 4096 positions on the pool) against the JavaScript loops: the same
  // double arithmetic summed in another order, so the loss agrees to ~1e-12 and the gradient to float32.
  for (const activation of ['sigmoid', 'softmax'] as const)
    it.skipIf(!nativeStatus().loaded)(`native passes match the JavaScript ones: ${activation}, dice+ce, 3 blocks of positions`, () => {
      const shape = [1, 20, 20, 21, 3];
      const logits = tf.randomNormal(shape, 0, 3, 'float32', 21);
      // (The sigmoid target, cast from bool, holds a Uint8Array, which the native path converts.)
      const target = tf.tidy(() =>
        activation === 'sigmoid'
          ? tf.cast(tf.greater(tf.randomUniform(shape, 0, 1, 'float32', 22), 0.6), 'float32')
          : tf.oneHot(tf.argMax(tf.randomUniform(shape, 0, 1, 'float32', 23), -1), 3).toFloat(),
      );
      const run = () => fusedLossAndGradient(logits.dataSync() as Float32Array, target.dataSync() as Float32Array, 3, 'dice+ce', activation);
      const native = run();
      setNativeKernelsEnabled(false);
      let js;
      try {
        js = run();
      } finally {
        setNativeKernelsEnabled(true);
      }
      expect(Math.abs(native.loss - js.loss) / Math.abs(js.loss)).toBeLessThan(1e-12);
      let diff = 0;
      let max = 0;
      for (let i = 0; i < js.grad.length; i++) {
        diff = Math.max(diff, Math.abs(native.grad[i]! - js.grad[i]!));
        max = Math.max(max, Math.abs(js.grad[i]!));
      }
      expect(diff / max).toBeLessThan(1e-6);
      tf.dispose([logits, target]);
    });

  it('a perfect prediction has near-zero Dice loss and a wrong one near one', () => {
    const t = tf.tensor5d([1, 0, 1, 0], [1, 1, 1, 4, 1]);
    const good = tf.tensor5d([20, -20, 20, -20], [1, 1, 1, 4, 1]);
    const bad = tf.neg(good);
    const loss = (l: tf.Tensor): number => Number(stepLoss(t, 'dice', 'sigmoid')(l, []).loss); // a number on the cpu backend
    expect(loss(good)).toBeLessThan(1e-6);
    expect(loss(bad)).toBeGreaterThan(0.99);
  });
});
