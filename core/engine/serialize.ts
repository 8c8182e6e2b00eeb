/**
 * A Network as plain JSON and back: what crosses a thread (or process) boundary where Layer objects cannot
 * (worker threads get structured clones; a plugin must not import another plugin to rebuild it). Only the
 * core layers (layers.ts) are rebuilt, each from its constructor options; any other layer is an error
 * naming the node and its type, at serialisation (it would not come back) and at deserialisation.
 */
import {
  Add,
  AvgPool3d,
  CenterCrop,
  ConcatChannels,
  Conv3d,
  InstanceNormAct,
  MaxPool3d,
  UpsampleNearest,
  type Conv3dOptions,
  type NormActOptions,
} from './layers.js';
import { NETWORK_INPUT, type GraphNode, type Layer, type Network, type ParamSpec, type QualifiedParam } from './graph.js';

/** One core layer: its type (Layer.type) and its constructor options. */
export type SerializedLayer =
  | { type: 'conv3d'; options: Conv3dOptions }
  | { type: 'instancenorm-act' | 'instancenorm-act-inplace'; options: NormActOptions }
  | { type: 'add'; options: Record<string, never> }
  | { type: 'concat'; options: Record<string, never> }
  | { type: 'upsample-nearest'; options: { factor: number } }
  | { type: 'maxpool3d'; options: { poolSize: number } }
  | { type: 'avgpool3d'; options: { poolSize: number } }
  | { type: 'center-crop'; options: { margin: [number, number, number] } };

export interface SerializedNode {
  name: string;
  layer: SerializedLayer;
  inputs: string[];
}

export interface SerializedNetwork {
  format: 'volseg-network';
  version: 1;
  name: string;
  description: string;
  inChannels: number;
  outChannels: number;
  activation: 'sigmoid' | 'softmax';
  nodes: SerializedNode[];
  output: string;
  divisor: number;
  outputMargin?: [number, number, number];
  auxOutputs?: { node: string; weight: number; scale: number }[];
  /** The parameters as the network listed them (checked against the rebuilt layers' on deserialisation). */
  params: QualifiedParam[];
  segments: string[][];
  recompute?: string[][];
}

export const CORE_LAYER_TYPES = [
  'conv3d',
  'instancenorm-act',
  'instancenorm-act-inplace',
  'add',
  'concat',
  'upsample-nearest',
  'maxpool3d',
  'avgpool3d',
  'center-crop',
] as const;

/** A deep copy of plain data (options objects hold numbers, strings, booleans and arrays of them). */
const plain = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

function serializeLayer(node: GraphNode): SerializedLayer {
  const l: Layer = node.layer;
  const ctor = (l as object).constructor;
  // Exact classes only: a subclass (another module's layer built on a core one) would not come back as itself.
  if (ctor === Conv3d) return { type: 'conv3d', options: plain((l as Conv3d).opts) };
  if (ctor === InstanceNormAct) {
    const n = l as InstanceNormAct;
    return { type: n.opts.inPlace ? 'instancenorm-act-inplace' : 'instancenorm-act', options: plain(n.opts) };
  }
  if (ctor === Add) return { type: 'add', options: {} };
  if (ctor === ConcatChannels) return { type: 'concat', options: {} };
  if (ctor === UpsampleNearest) return { type: 'upsample-nearest', options: { factor: (l as UpsampleNearest).factor } };
  if (ctor === MaxPool3d) return { type: 'maxpool3d', options: { poolSize: (l as MaxPool3d).poolSize } };
  if (ctor === AvgPool3d) return { type: 'avgpool3d', options: { poolSize: (l as AvgPool3d).poolSize } };
  if (ctor === CenterCrop) return { type: 'center-crop', options: { margin: [...(l as CenterCrop).margin] } };
  throw new Error(
    `serializeNetwork: node "${node.name}" is a "${l.type}" layer (${ctor?.name ?? 'unknown class'}), not one of the core layers ` +
      `(${CORE_LAYER_TYPES.join(', ')}); only core layers can be serialised`,
  );
}

/**
 * The network as plain JSON-compatible data. Throws for a layer that is not a core layer (naming the node
 * and its type) and for `windowWeights` (a function), unless `dropWindowWeights` says to leave it out.
 */
export function serializeNetwork(net: Network, opts: { dropWindowWeights?: boolean } = {}): SerializedNetwork {
  if (net.windowWeights && !opts.dropWindowWeights)
    throw new Error(
      `serializeNetwork: network "${net.name}" has windowWeights (a function), which cannot be serialised; pass { dropWindowWeights: true } to leave them out`,
    );
  const s: SerializedNetwork = {
    format: 'volseg-network',
    version: 1,
    name: net.name,
    description: net.description,
    inChannels: net.inChannels,
    outChannels: net.outChannels,
    activation: net.activation,
    nodes: net.nodes.map((n) => ({ name: n.name, layer: serializeLayer(n), inputs: [...n.inputs] })),
    output: net.output,
    divisor: net.divisor,
    params: plain(net.params),
    segments: plain(net.segments),
  };
  if (net.outputMargin) s.outputMargin = [...net.outputMargin];
  if (net.auxOutputs) s.auxOutputs = plain(net.auxOutputs);
  if (net.recompute) s.recompute = plain(net.recompute);
  return s;
}

function buildLayer(node: SerializedNode): Layer {
  const { type, options } = node.layer as { type: string; options: unknown };
  switch (type) {
    case 'conv3d':
      return new Conv3d(plain(options as Conv3dOptions));
    case 'instancenorm-act':
    case 'instancenorm-act-inplace': {
      const o = plain(options as NormActOptions);
      const layer = new InstanceNormAct(o);
      if (layer.type !== type) throw new Error(`deserializeNetwork: node "${node.name}" says type "${type}" but its options make a "${layer.type}" layer`);
      return layer;
    }
    case 'add':
      return new Add();
    case 'concat':
      return new ConcatChannels();
    case 'upsample-nearest':
      return new UpsampleNearest((options as { factor: number }).factor);
    case 'maxpool3d':
      return new MaxPool3d((options as { poolSize: number }).poolSize);
    case 'avgpool3d':
      return new AvgPool3d((options as { poolSize: number }).poolSize);
    case 'center-crop':
      return new CenterCrop([...(options as { margin: [number, number, number] }).margin]);
    default:
      throw new Error(
        `deserializeNetwork: node "${node.name}" has layer type "${String(type)}", which is not a core layer (${CORE_LAYER_TYPES.join(', ')})`,
      );
  }
}

const sameSpec = (a: ParamSpec, b: ParamSpec): boolean =>
  a.name === b.name && a.init === b.init && a.fanIn === b.fanIn && a.shape.length === b.shape.length && a.shape.every((v, i) => v === b.shape[i]);

/** Rebuilds a network that serializeNetwork made (core layers only; windowWeights are not restored). */
export function deserializeNetwork(s: SerializedNetwork): Network {
  if (!s || s.format !== 'volseg-network' || s.version !== 1)
    throw new Error(`deserializeNetwork: not a serialised network (format ${JSON.stringify(s?.format)}, version ${JSON.stringify(s?.version)}); expected format "volseg-network", version 1`);
  const names = new Set<string>([NETWORK_INPUT]);
  const nodes: GraphNode[] = s.nodes.map((n) => {
    if (names.has(n.name)) throw new Error(`deserializeNetwork: duplicate node name "${n.name}"`);
    for (const i of n.inputs) if (!names.has(i)) throw new Error(`deserializeNetwork: node "${n.name}" reads "${i}", which no earlier node makes`);
    names.add(n.name);
    return { name: n.name, layer: buildLayer(n), inputs: [...n.inputs] };
  });
  if (!names.has(s.output)) throw new Error(`deserializeNetwork: output node "${s.output}" does not exist`);
  for (const a of s.auxOutputs ?? []) if (!names.has(a.node)) throw new Error(`deserializeNetwork: auxiliary output "${a.node}" does not exist`);
  const params: QualifiedParam[] = [];
  for (const node of nodes) for (const p of node.layer.params) params.push({ ...p, qualifiedName: `${node.name}.${p.name}`, node: node.name });
  const listed = new Map(s.params.map((p) => [p.qualifiedName, p]));
  if (listed.size !== params.length || params.some((p) => !listed.has(p.qualifiedName) || !sameSpec(p, listed.get(p.qualifiedName)!))) {
    const bad = params.find((p) => !listed.has(p.qualifiedName) || !sameSpec(p, listed.get(p.qualifiedName)!));
    throw new Error(
      `deserializeNetwork: the rebuilt layers' parameters differ from the serialised list (${params.length} vs ${listed.size}` +
        `${bad ? `; first mismatch: ${bad.qualifiedName} [${bad.shape}]` : ''})`,
    );
  }
  const net: Network = {
    name: s.name,
    description: s.description,
    inChannels: s.inChannels,
    outChannels: s.outChannels,
    activation: s.activation,
    nodes,
    output: s.output,
    divisor: s.divisor,
    params,
    segments: plain(s.segments),
  };
  if (s.outputMargin) net.outputMargin = [...s.outputMargin];
  if (s.auxOutputs) net.auxOutputs = plain(s.auxOutputs);
  if (s.recompute) net.recompute = plain(s.recompute);
  return net;
}
