/**
 * Slab geometry of spatial partitioning (Hou et al. 2019): the volume is split along D into P slabs, one
 * per rank, rank 0 holding the first planes. Every activation is split the same way at its own
 * resolution: an activation whose D extent is the input's / f holds, on rank r, the global planes
 * [bounds[r] / f, bounds[r + 1] / f). So every boundary must be a multiple of every such f, i.e. of the
 * network's divisor 2^(levels − 1): strided convolutions and upsampling then stay aligned with the slabs.
 */
import { inferShapes, NETWORK_INPUT, type Network, type Shape } from '../../core/engine/index.js';

export interface SlabPartition {
  /** Planes of the volume along D at full resolution. */
  depth: number;
  /** Number of ranks P. */
  size: number;
  /** Every boundary is a multiple of this (the network's divisor). */
  divisor: number;
  /** P + 1 boundaries at full resolution: bounds[0] = 0, bounds[P] = depth, strictly increasing. */
  bounds: number[];
}

const describe = (depth: number, size: number, divisor: number): string => `a volume of ${depth} planes along D split into P = ${size} slabs (network divisor ${divisor})`;

/**
 * The partition of `depth` planes into `size` slabs whose boundaries are multiples of `divisor`: the even
 * split (the first depth/divisor mod P ranks get one block of `divisor` planes more), or the `bounds` given,
 * validated. Throws an error naming the volume size, P and the divisor when no such split exists.
 */
export function partitionDepth(depth: number, size: number, divisor: number, bounds?: number[]): SlabPartition {
  if (!Number.isInteger(size) || size < 1) throw new Error(`spatial partition: P must be a whole number ≥ 1, got ${size}`);
  if (!Number.isInteger(divisor) || divisor < 1) throw new Error(`spatial partition: the divisor must be a whole number ≥ 1, got ${divisor}`);
  if (!Number.isInteger(depth) || depth < 1) throw new Error(`spatial partition: the volume depth must be a whole number ≥ 1, got ${depth}`);
  const what = describe(depth, size, divisor);
  if (depth % divisor !== 0) throw new Error(`spatial partition: ${what}: ${depth} is not a multiple of the divisor ${divisor}`);
  const blocks = depth / divisor;
  if (bounds === undefined) {
    if (blocks < size)
      throw new Error(
        `spatial partition: ${what}: only ${blocks} blocks of ${divisor} planes, fewer than P; each slab needs at least ${divisor} planes (use P ≤ ${blocks})`,
      );
    const per = Math.floor(blocks / size);
    const extra = blocks % size;
    const b = [0];
    for (let r = 0; r < size; r++) b.push(b[r]! + (per + (r < extra ? 1 : 0)) * divisor);
    return { depth, size, divisor, bounds: b };
  }
  if (!Array.isArray(bounds) || bounds.length !== size + 1) throw new Error(`spatial partition: ${what}: bounds must list P + 1 = ${size + 1} boundaries, got ${JSON.stringify(bounds)}`);
  if (bounds[0] !== 0 || bounds[size] !== depth) throw new Error(`spatial partition: ${what}: bounds must start at 0 and end at ${depth}, got [${bounds}]`);
  for (let r = 0; r < size; r++) {
    if (!(bounds[r + 1]! > bounds[r]!)) throw new Error(`spatial partition: ${what}: bounds must increase strictly (slab ${r} is [${bounds[r]}, ${bounds[r + 1]})), got [${bounds}]`);
  }
  const off = bounds.find((b) => !Number.isInteger(b) || b % divisor !== 0);
  if (off !== undefined)
    throw new Error(
      `spatial partition: ${what}: boundary ${off} is not a multiple of the divisor ${divisor}, so strided convolutions and upsampling would not stay aligned with the slabs (bounds [${bounds}])`,
    );
  return { depth, size, divisor, bounds: [...bounds] };
}

/** The global planes [start, end) rank `rank` holds of an activation whose D extent is depth / `factor`. */
export function slabPlanes(part: SlabPartition, rank: number, factor = 1): { start: number; end: number; planes: number } {
  if (!Number.isInteger(rank) || rank < 0 || rank >= part.size) throw new Error(`spatial partition: rank must be in [0, ${part.size - 1}], got ${rank}`);
  const lo = part.bounds[rank]!;
  const hi = part.bounds[rank + 1]!;
  if (lo % factor !== 0 || hi % factor !== 0)
    throw new Error(`spatial partition: ${describe(part.depth, part.size, part.divisor)}: slab ${rank} [${lo}, ${hi}) is not aligned with a resolution 1/${factor} along D`);
  return { start: lo / factor, end: hi / factor, planes: (hi - lo) / factor };
}

/** Where every node's output lives: its global shape and its resolution factor along D (input D / its D). */
export interface NodeGeometry {
  global: Shape;
  factor: number;
}

/**
 * Every node's global shape and D factor for a global input [N, D, H, W, C], checking that each
 * activation's slabs are whole planes at its resolution (naming the node, the volume size, P and the divisor).
 */
export function networkGeometry(net: Network, inputShape: Shape, part: SlabPartition): Map<string, NodeGeometry> {
  if (inputShape.length !== 5) throw new Error(`spatial partition: the input shape must be [N, D, H, W, C], got [${inputShape}]`);
  if (inputShape[1] !== part.depth) throw new Error(`spatial partition: the input has ${inputShape[1]} planes along D but the partition is of ${part.depth}`);
  const shapes = inferShapes(net, inputShape);
  const geo = new Map<string, NodeGeometry>();
  for (const [name, shape] of shapes) {
    const d = shape[1]!;
    const factor = part.depth / d;
    const ok = Number.isInteger(factor) && part.bounds.every((b) => b % factor === 0);
    if (!ok)
      throw new Error(
        `spatial partition: ${describe(part.depth, part.size, part.divisor)}: ${name === NETWORK_INPUT ? 'the input' : `node "${name}"`} has ${d} planes along D, ` +
          `so the slab boundaries [${part.bounds}] do not fall on its planes (each must be a multiple of ${Number.isInteger(factor) ? factor : `${part.depth}/${d}`}); ` +
          `use a volume and split whose boundaries are multiples of the network's divisor ${net.divisor}`,
      );
    geo.set(name, { global: shape, factor });
  }
  return geo;
}

/** The slab [start, end) of a channels-last volume [N, D, H, W, C] along D, as a new array. */
export function sliceSlab(volume: Float32Array, shape: Shape, start: number, end: number): Float32Array {
  const [n, d, h, w, c] = shape as [number, number, number, number, number];
  if (volume.length !== n * d * h * w * c) throw new Error(`sliceSlab: ${volume.length} values do not make a [${shape}] volume`);
  if (!(start >= 0 && end <= d && start < end)) throw new Error(`sliceSlab: slab [${start}, ${end}) outside D = ${d}`);
  const plane = h * w * c;
  const out = new Float32Array(n * (end - start) * plane);
  for (let b = 0; b < n; b++) out.set(volume.subarray((b * d + start) * plane, (b * d + end) * plane), b * (end - start) * plane);
  return out;
}

/** The volume [N, D, H, W, C] from its slabs in rank order (each [N, planes_r, H, W, C]). */
export function joinSlabs(slabs: Float32Array[], shape: Shape, bounds: number[]): Float32Array {
  const [n, d, h, w, c] = shape as [number, number, number, number, number];
  const plane = h * w * c;
  const out = new Float32Array(n * d * plane);
  slabs.forEach((s, r) => {
    const planes = bounds[r + 1]! - bounds[r]!;
    if (s.length !== n * planes * plane) throw new Error(`joinSlabs: slab ${r} has ${s.length} values, expected ${n * planes * plane}`);
    for (let b = 0; b < n; b++) out.set(s.subarray(b * planes * plane, (b + 1) * planes * plane), (b * d + bounds[r]!) * plane);
  });
  return out;
}
