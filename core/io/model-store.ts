/**
 * Saved models: `model.json` (what to rebuild and how to preprocess and infer, nnU-Net's "plans are
 * data") beside `weights.bin` (float32 parameters, little endian, in the manifest's order).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { Tensor } from '@tensorflow/tfjs-core';

/** Parameters by qualified name (`node.param`), as training keeps them. */
type Params = Map<string, Tensor>;
import type { PluginChoice } from '../config/index.js';
import type { NetworkSpec, SegmentationTask } from '../types.js';

export const MODEL_FORMAT = 'volseg-model/1';

export interface ModelManifest {
  format: typeof MODEL_FORMAT;
  experiment: string;
  trial: number;
  createdAt: string;
  architecture: PluginChoice;
  network: NetworkSpec;
  /** Dataset plugin and settings it was trained with (preprocessing is read from its settings). */
  dataset: PluginChoice;
  channels: string[];
  task: SegmentationTask;
  /** The strategy decides how inference runs (one pass or sliding window). */
  strategy: PluginChoice;
  threshold: number;
  weights: { name: string; shape: number[]; offset: number }[];
}

export async function saveModel(dir: string, manifest: Omit<ModelManifest, 'weights' | 'format' | 'createdAt'>, params: Params): Promise<string> {
  await mkdir(dir, { recursive: true });
  const weights: ModelManifest['weights'] = [];
  const chunks: Float32Array[] = [];
  let offset = 0;
  for (const [name, t] of params) {
    // An asynchronous read: a GPU backend cannot read synchronously in Node (tfjs-webgpu needs OffscreenCanvas).
    const data = (await t.data()) as Float32Array;
    weights.push({ name, shape: t.shape, offset });
    chunks.push(data);
    offset += data.length;
  }
  const all = new Float32Array(offset);
  let o = 0;
  for (const c of chunks) {
    all.set(c, o);
    o += c.length;
  }
  const full: ModelManifest = { format: MODEL_FORMAT, createdAt: new Date().toISOString(), ...manifest, weights };
  await writeFile(join(dir, 'weights.bin'), Buffer.from(all.buffer, all.byteOffset, all.byteLength));
  await writeFile(join(dir, 'model.json'), JSON.stringify(full, null, 2));
  return dir;
}

/** Reads a saved model; `path` is its folder or its model.json. */
export async function loadModel(path: string): Promise<{ manifest: ModelManifest; params: Params; dir: string }> {
  const dir = path.endsWith('.json') ? resolve(path, '..') : resolve(path);
  const file = join(dir, 'model.json');
  if (!existsSync(file)) throw new Error(`no saved model at ${path}: expected ${file} (a trial's folder under results/<experiment>/models/)`);
  const manifest = JSON.parse(await readFile(file, 'utf8')) as ModelManifest;
  if (manifest.format !== MODEL_FORMAT)
    throw new Error(`${file}: format "${manifest.format}" is not ${MODEL_FORMAT}; it was saved by another version`);
  const buf = await readFile(join(dir, 'weights.bin'));
  const all = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const params: Params = new Map();
  for (const w of manifest.weights) {
    const n = w.shape.reduce((a, b) => a * b, 1);
    if (w.offset + n > all.length) throw new Error(`${join(dir, 'weights.bin')}: truncated at parameter ${w.name}`);
    params.set(w.name, tf.tensor(all.subarray(w.offset, w.offset + n), w.shape, 'float32'));
  }
  return { manifest, params, dir };
}
