/**
 * Segmenting new images with a saved model: images are read and preprocessed as the model's dataset reads
 * its cases, inference runs as the model's strategy does (one pass or a sliding window), and one label map
 * per image is written as NIfTI with the image's geometry (dims, pixdim, qform and sform).
 */
import { mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadModel, writeNiftiLabel } from '../io/index.js';
import { Executor } from '../engine/index.js';
import { windowPredictor } from '../inference/index.js';
import { probabilitiesToLabels } from '../evaluation/index.js';
import { disposeParams } from '../training/index.js';
import { instantiate, type PluginCatalog } from '../plugins/index.js';
import { resolveSettings } from '../config/index.js';

export interface PredictionResult {
  id: string;
  file: string;
  shape: number[];
  foreground: number;
  seconds: number;
}

export async function predictImages(
  catalog: PluginCatalog,
  modelPath: string,
  inputPath: string,
  outputDir: string,
  log: (line: string) => void = () => {},
): Promise<PredictionResult[]> {
  const input = resolve(inputPath);
  if (!existsSync(input)) throw new Error(`--input ${input}: no such file or folder`);
  const { manifest, params, dir } = await loadModel(modelPath);
  log(`model ${dir}: ${manifest.architecture.name} from ${manifest.experiment} trial ${manifest.trial}, strategy ${manifest.strategy.name}`);
  const net = instantiate(catalog.architecture(manifest.architecture.name), manifest.architecture.settings, { baseDir: dir }).build(manifest.network);
  const missing = net.params.filter((p) => !params.has(p.qualifiedName)).map((p) => p.qualifiedName);
  if (missing.length)
    throw new Error(`${dir}: the saved weights do not fit ${manifest.architecture.name} as built now (missing ${missing.slice(0, 3).join(', ')}…); retrain the model`);
  const strategy = instantiate(catalog.strategy(manifest.strategy.name), manifest.strategy.settings, { baseDir: dir });
  const datasetPlugin = catalog.dataset(manifest.dataset.name);
  if (!datasetPlugin.predictionInputs)
    throw new Error(`dataset ${manifest.dataset.name} cannot read prediction inputs (models trained on it cannot predict yet)`);
  const inputs = datasetPlugin.predictionInputs(input, resolveSettings(datasetPlugin.settings, manifest.dataset.settings, 'dataset.settings'), manifest.channels);
  if (inputs.length === 0) throw new Error(`${input}: no images found`);
  const output = resolve(outputDir);
  await mkdir(output, { recursive: true });
  const executor = new Executor(net);
  const results: PredictionResult[] = [];
  try {
    for (const item of inputs) {
      const t0 = performance.now();
      const v = await item.load();
      if (!v.geometry) throw new Error(`${item.files.join(', ')}: no NIfTI geometry to write the label map with`);
      const probs = await strategy.infer({ image: v.image, shape: v.shape, channels: v.channels }, windowPredictor(executor, net, params, v.channels), net);
      const labels = probabilitiesToLabels(probs, v.shape, manifest.task, manifest.threshold);
      const file = join(output, `${item.id}.nii.gz`);
      await writeNiftiLabel(file, labels, v.geometry);
      let foreground = 0;
      for (const l of labels) if (l) foreground++;
      const r = { id: item.id, file, shape: v.shape, foreground, seconds: (performance.now() - t0) / 1000 };
      results.push(r);
      log(`  ${item.id}: ${v.shape.join('x')} -> ${file} (${foreground} foreground voxels, ${r.seconds.toFixed(1)} s)`);
    }
  } finally {
    await strategy.dispose?.();
    disposeParams(params);
  }
  return results;
}
