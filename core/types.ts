/**
 * The data every part of the framework shares: volumes, tasks, datasets, samples. The plugin contracts
 * (a dataset plugin, an architecture, a memory strategy) are in core/plugins/contracts.ts. Data flows one way:
 *   Dataset -> MemoryStrategy (what a step sees, how it keeps what backward needs, how inference runs)
 *   -> Architecture (a Network: a graph of layers) -> runner -> results.
 *
 * Conventions used everywhere:
 * - A volume's spatial shape is [D, H, W] = [nz, ny, nx] of the NIfTI file: the NIfTI voxel order
 *   (x fastest) is exactly row-major [z][y][x], so no transpose is ever needed on read or write.
 * - Images are channels-last (NDHWC without the batch axis): index ((z*H + y)*W + x)*C + c.
 * - Tensors given to networks are 5-D [N, D, H, W, C], float32.
 */

export type Shape3 = [number, number, number];

/** The geometry of a NIfTI image, kept so a label map can be written aligned with its image. */
export interface NiftiGeometry {
  /** dims[1..3] of the source file (x, y, z). */
  dims: [number, number, number];
  /** pixdim[1..3] (mm). */
  pixDims: [number, number, number];
  qformCode: number;
  sformCode: number;
  quaternB: number;
  quaternC: number;
  quaternD: number;
  qoffsetX: number;
  qoffsetY: number;
  qoffsetZ: number;
  /** pixdim[0]: the qfac (+1 or -1). */
  qfac: number;
  /** srow_x, srow_y, srow_z: the sform's three rows of four. */
  srow: [number[], number[], number[]];
  /** xyzt_units byte. */
  xyztUnits: number;
  /** Path of the file this geometry came from (for messages). */
  source?: string;
}

/** The unit of a data set's voxel spacing (Dataset.spacingUnit). */
export type SpacingUnit = 'mm' | 'voxel';

/** One case, in memory, after the dataset's own preprocessing (label remapping). */
export interface Volume {
  id: string;
  /** channels-last float32, length D*H*W*channels. */
  image: Float32Array;
  /** [D, H, W]. */
  shape: Shape3;
  channels: number;
  /** Label values (after remapping) per voxel, length D*H*W; absent for unlabelled cases. */
  label?: Uint8Array;
  /** Voxel spacing along [D, H, W], in the dataset's `spacingUnit` (mm unless it says otherwise). */
  spacing: Shape3;
  /** Geometry of the source image, to write predictions aligned with it. */
  geometry?: NiftiGeometry;
}

/**
 * What is segmented. `regions`: overlapping regions, one sigmoid output each (BraTS WT/TC/ET);
 * `labels`: mutually exclusive labels, softmax over background + labels (MSD).
 */
export type SegmentationTask =
  | {
      kind: 'regions';
      /** `paint`: the label written where the region is predicted; regions paint in order, later wins. */
      regions: { name: string; labels: number[]; paint: number }[];
    }
  | { kind: 'labels'; labels: { name: string; value: number }[] };

export interface Dataset {
  readonly name: string;
  readonly task: SegmentationTask;
  /** Modality (channel) names, in channel order. */
  readonly channels: string[];
  /**
   * The unit of its volumes' spacing, and so of every distance measured on them (HD95): 'mm' (absent: mm;
   * NIfTI data sets convert their headers' units to mm), or 'voxel' for a generator whose grid has no
   * physical size.
   */
  readonly spacingUnit?: SpacingUnit;
  /** Ids of every case, in a stable order. */
  caseIds(): string[];
  /** Ids of the cases that have a label map (training/validation use only these). */
  labelledCaseIds(): string[];
  load(id: string): Promise<Volume>;
  /** Cases that were found but cannot be used, with the reason (e.g. an image without a label). */
  readonly skipped?: { id: string; reason: string }[];
  /**
   * How much of a case's label depends on evidence farther than half a patch edge away (only a dataset
   * that knows what decides its labels, such as a generator, can say; `npm run context` prints it).
   */
  context?(id: string, patch: Shape3): ContextFigures;
  /**
   * What identifies the data beyond the dataset's settings (for files: their paths, sizes and modification
   * times), so that a resumed sweep re-runs trials whose data changed. Absent when the settings determine
   * the data (a generator).
   */
  identity?(): string;
}

/** What `Dataset.context` reports for one case and patch extent, in voxels. */
export interface ContextFigures {
  case: string;
  /** Voxels with a foreground label. */
  labelled: number;
  /** Of those, the voxels whose deciding evidence lies outside the patch-sized box centred on them. */
  labelledBeyond: number;
  /** Background voxels that look locally like a foreground label (mimics). */
  mimic: number;
  /** Of those, the voxels whose deciding evidence lies outside the patch-sized box centred on them. */
  mimicBeyond: number;
}

/** A training example as host arrays: the strategy decides its extent (a crop, the whole volume, ...). */
export interface TrainingSample {
  /** channels-last image, [D, H, W, C]. */
  image: Float32Array;
  /** channels-last one-hot / region targets, [D, H, W, K] where K = network output channels. */
  target: Float32Array;
  shape: Shape3;
}

/** A labelled case ready for training: channels-last image and one target channel per network output. */
export interface PreparedCase {
  id: string;
  image: Float32Array;
  /** [D, H, W, K] targets (regions or one-hot labels). */
  target: Float32Array;
  shape: Shape3;
  channels: number;
  outChannels: number;
  /** Label values per voxel (foreground-biased sampling reads it). */
  label: Uint8Array;
}

/** An image to segment. */
export interface InferenceInput {
  image: Float32Array;
  shape: Shape3;
  channels: number;
}

/** Deterministic random source handed to plugins; never use Math.random in training code. */
export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Integer in [lo, hi). */
  int(lo: number, hi: number): number;
  normal(): number;
}

/** One image (or one case's modalities) to segment, read and preprocessed as the dataset's own cases. */
export interface PredictionInput {
  id: string;
  /** The files it is read from (for messages). */
  files: string[];
  load(): Promise<Volume>;
}

/** What a network is built for: its input channels, output channels and output activation. */
export interface NetworkSpec {
  inChannels: number;
  outChannels: number;
  /** sigmoid for overlapping regions, softmax for exclusive labels. */
  activation: 'sigmoid' | 'softmax';
}

/** The kinds of plugin the framework registers by name. */
export type PluginKind = 'dataset' | 'architecture' | 'strategy' | 'backend';
