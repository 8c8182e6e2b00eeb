/**
 * `npm run predict -- --model <saved model> --input <NIfTI file or folder> --output <folder>`
 *
 * Segments every image at --input with a model saved by a trial (results/<experiment>/models/trial-N):
 * images are read and preprocessed as the model's dataset reads its cases, inference runs as the model's
 * strategy does (one pass or a sliding window), and one label map per image is written as NIfTI with the
 * image's geometry (dims, pixdim, qform and sform), so it opens aligned with its image in any viewer.
 * Inputs: an image file, an MSD task folder (imagesTs/, else imagesTr/), a folder of images, a BraTS case
 * folder or a folder of case folders.
 */
import { mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadModel } from '../../core/model-store.js';
import { chooseBackend, initBackend } from '../../core/backend.js';
import { Executor } from '../../core/executor.js';
import { windowPredictor } from '../../core/inference.js';
import { probabilitiesToLabels } from '../../core/metrics.js';
import { writeNiftiLabel } from '../../core/io/nifti.js';
import { SettingsError } from '../../core/settings.js';
import type { Architecture, DatasetPlugin } from '../../core/types.js';
import type { MemoryStrategy } from '../../core/strategy.js';
import { buildContainer } from './plugins.js';
import { parseArgs, usage, UsageError, type FlagSpec } from './args.js';

const FLAGS: FlagSpec = {
  model: { takesValue: true, description: 'a saved model: its folder or its model.json' },
  input: { takesValue: true, description: 'a NIfTI image, a folder of images, an MSD task folder, or BraTS case folder(s)' },
  output: { takesValue: true, description: 'folder for the label maps (created if missing)' },
  backend: { takesValue: true, description: 'cpu | tensorflow | tensorflow-gpu | webgpu | auto' },
  help: { takesValue: false, description: 'this help' },
};

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2), FLAGS);
  const synopsis = '--model <saved model> --input <file or folder> --output <folder>';
  if (args.flags.has('help')) {
    console.log(usage('npm run predict --', synopsis, FLAGS));
    return 0;
  }
  for (const f of ['model', 'input', 'output'])
    if (!args.flags.has(f)) throw new UsageError(`--${f} is required\n${usage('npm run predict --', synopsis, FLAGS)}`);
  const input = resolve(args.flags.get('input')![0]!);
  if (!existsSync(input)) throw new UsageError(`--input ${input}: no such file or folder`);
  const output = resolve(args.flags.get('output')![0]!);

  const backend = await initBackend(chooseBackend(args.flags.get('backend')?.[0], undefined));
  const { manifest, params, dir } = await loadModel(args.flags.get('model')![0]!);
  console.log(`model ${dir}: ${manifest.architecture.name} from ${manifest.experiment} trial ${manifest.trial}, strategy ${manifest.strategy.name}; backend ${backend.label}`);

  const { catalog } = buildContainer();
  const net = catalog
    .get<Architecture>('architecture', manifest.architecture.name)
    .create(manifest.architecture.settings, { baseDir: dir })
    .build(manifest.network);
  const missing = net.params.filter((p) => !params.has(p.qualifiedName)).map((p) => p.qualifiedName);
  if (missing.length)
    throw new Error(`${dir}: the saved weights do not fit ${manifest.architecture.name} as built now (missing ${missing.slice(0, 3).join(', ')}…); retrain the model`);
  const strategy = catalog.get<MemoryStrategy>('strategy', manifest.strategy.name).create(manifest.strategy.settings, { baseDir: dir });
  const datasetPlugin = catalog.get('dataset', manifest.dataset.name) as DatasetPlugin;
  if (!datasetPlugin.predictionInputs)
    throw new Error(`dataset ${manifest.dataset.name} cannot read prediction inputs; predict supports models trained on ${catalog.names('dataset').join(', ')}`);
  const inputs = datasetPlugin.predictionInputs(input, manifest.dataset.settings, manifest.channels);
  if (inputs.length === 0) throw new Error(`${input}: no images found`);
  await mkdir(output, { recursive: true });
  const executor = new Executor(net);
  for (const item of inputs) {
    const t0 = performance.now();
    const v = await item.load();
    if (!v.geometry) throw new Error(`${item.files.join(', ')}: no NIfTI geometry to write the label map with`);
    const probs = await strategy.infer({ image: v.image, shape: v.shape, channels: v.channels }, windowPredictor(executor, net, params, v.channels), net);
    const labels = probabilitiesToLabels(probs, v.shape, manifest.task, manifest.threshold);
    const file = join(output, `${item.id}.nii.gz`);
    await writeNiftiLabel(file, labels, v.geometry);
    let fg = 0;
    for (const l of labels) if (l) fg++;
    console.log(`  ${item.id}: ${v.shape.join('x')} -> ${file} (${fg} foreground voxels, ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  }
  await strategy.dispose?.();
  console.log(`wrote ${inputs.length} label map(s) to ${output}`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof UsageError || e instanceof SettingsError) console.error(`error: ${(e as Error).message}`);
    else console.error(`error: ${(e as Error).message ?? e}${process.env.VOLSEG_DEBUG ? `\n${(e as Error).stack}` : '\n(set VOLSEG_DEBUG=1 for a stack trace)'}`);
    process.exit(2);
  },
);
