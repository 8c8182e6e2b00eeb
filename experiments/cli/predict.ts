/**
 * `npm run predict -- --model <saved model> --input <NIfTI file or folder> --output <folder>`
 *
 * Segments every image at --input with a model saved by a trial (results/<experiment>/models/trial-N-<trial id>):
 * images are read and preprocessed as the model's dataset reads its cases, inference runs as the model's
 * strategy does (one pass or a sliding window), and one label map per image is written as NIfTI with the
 * image's geometry (dims, pixdim, qform and sform), so it opens aligned with its image in any viewer.
 * Inputs: an image file, an MSD task folder (imagesTs/, else imagesTr/), a folder of images, a BraTS case
 * folder or a folder of case folders.
 */
import { chooseBackend, initBackend } from '../../core/backend/index.js';
import { predictImages } from '../../core/experiment/index.js';
import { SettingsError } from '../../core/config/index.js';
import { buildContainer } from './plugins.js';
import { parseArgs, usage, UsageError, runCli, type FlagSpec } from './args.js';

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
  const backend = await initBackend(chooseBackend(args.flags.get('backend')?.[0], undefined));
  console.log(`backend ${backend.label}`);
  const { catalog } = buildContainer();
  const results = await predictImages(
    catalog,
    args.flags.get('model')![0]!,
    args.flags.get('input')![0]!,
    args.flags.get('output')![0]!,
    (line) => console.log(line),
  );
  console.log(`wrote ${results.length} label map(s) to ${args.flags.get('output')![0]!}`);
  return 0;
}

runCli(main, [SettingsError]);
