/**
 * The WGSL programs behind the tiled 3-D convolutions on tfjs's WebGPU backend (see index.ts for why they
 * look as they do). Each is a plain object of the shape tfjs-backend-webgpu's `WebGPUProgram` has, run with
 * `backend.runWebGPUProgram(program, inputs, dtype, uniformData)`: the package itself is never imported here,
 * so this file type-checks and loads without it.
 *
 * Shapes are channels-last: x [B, D, H, W, Cin], filter [FD, FH, FW, Cin, Cout], y [B, oD, oH, oW, Cout].
 * Channel counts, filter size and strides are baked into the shader (they are in its key); spatial sizes
 * and paddings are uniforms, so one pipeline serves every volume size of a layer.
 */
import type { backend_util, DataType, TensorInfo } from '@tensorflow/tfjs-core';

/** The fields of tfjs-backend-webgpu's WebGPUProgram that these programs set. */
export interface WebGPUProgramLike {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[]; y?: number[]; z?: number[] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  variableNames: string[];
  variableComponents?: number[];
  outputComponent?: number;
  uniforms?: string;
  getUserCode(): string;
}

/** One program-defined uniform, as runWebGPUProgram takes it. */
export interface UniformEntry {
  type: 'int32' | 'float32' | 'uint32';
  data: number[];
}

/** The part of tfjs-backend-webgpu's WebGPUBackend these kernels use. */
export interface WebGPUBackendLike {
  runWebGPUProgram(program: WebGPUProgramLike, inputs: TensorInfo[], outputDtype: DataType, uniforms?: UniformEntry[]): TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
}

/**
 * Register tiling per invocation: P outputs along the W axis (each filter vec4 read once for all P) times
 * N channels (each input vec4 read once for all N), the P·N accumulators in registers. The kernels pick
 * them per volume (Conv3D.ts, Conv3DBackpropInputV2.ts, Conv3DBackpropFilterV2.ts), from timings on
 * lavapipe: larger tiles read less per multiply-add but make bigger shaders, which lavapipe compiles in
 * time that grows faster than their size (a few seconds at 16 × 8).
 */
export interface Tile {
  P: number;
  N: number;
}

/** Invocations per workgroup (lavapipe runs them 8 at a time across AVX lanes). */
export const WORKGROUP = 64;

const vec = (c: number): string => (c === 4 ? 'vec4<f32>' : 'f32');
const lane = (v: string, r: number, c: number): string => (c === 4 ? `${v}.${'xyzw'[r]}` : v);
const int = (data: number[]): UniformEntry => ({ type: 'int32', data });
/** Channels move as vec4 when a count is a multiple of 4, else one float at a time. */
export const width = (channels: number): number => (channels % 4 === 0 ? 4 : 1);

/**
 * The workgroup's linear index from the builtins: tfjs may fold a long 1-D dispatch into 2-D or 3-D
 * (reshapeDispatch), and an index derived only from workgroup ids stays uniform across the workgroup.
 */
const WG_INDEX = `let wg = i32(workgroupId.z * numWorkgroups.x * numWorkgroups.y + workgroupId.y * numWorkgroups.x + workgroupId.x);
      let lid = i32(localIndex);`;

/** A program with a flat dispatch of `workgroups` workgroups of WORKGROUP invocations. */
abstract class FlatProgram implements WebGPUProgramLike {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [WORKGROUP, 1, 1];
  abstract variableNames: string[];
  variableComponents?: number[];
  outputComponent?: number;
  uniforms?: string;
  /** The program-defined uniforms, in the order of `uniforms`. */
  uniformData: UniformEntry[] = [];

  constructor(outputShape: number[], workgroups: number, key: string) {
    this.outputShape = outputShape;
    this.dispatch = [Math.max(1, workgroups), 1, 1];
    this.shaderKey = key;
  }

  abstract getUserCode(): string;
}

/**
 * Conv3D, forward. Invocation: P consecutive outputs along W of one (batch, depth, row) times N output
 * channels; loops over the filter's (kd, kh) rows and, inside, the input channels 4 at a time: per step it
 * reads the (P − 1)·SW + FW input vec4s the row's taps cover (each once for every tap and output that
 * uses it) and FW·4·N/4 filter vec4s (each once for the P outputs), and does FW·4·P·N multiply-adds.
 */
export class Conv3DForwardProgram extends FlatProgram {
  variableNames = ['x', 'W'];
  override uniforms = 'pads : vec3<i32>, wgPerBlock : i32, tilesW : i32, rows : i32,';
  private readonly code: string;

  constructor(c: backend_util.Conv3DInfo, tile: Tile) {
    const { P } = tile;
    const cin = c.inChannels, cout = c.outChannels;
    const CX = width(cin), CW = width(cout);
    const N = Math.min(roundUp(tile.N, CW), roundUp(cout, CW));
    const CIX = cin / CX, COW = cout / CW, NG = N / CW;
    const blocks = Math.ceil(COW / NG);
    const tilesW = Math.ceil(c.outWidth / P);
    const rows = c.batchSize * c.outDepth * c.outHeight;
    const wgPerBlock = Math.ceil((rows * tilesW) / WORKGROUP);
    const [SD, SH, SW] = [c.strideDepth, c.strideHeight, c.strideWidth];
    const [FD, FH, FW] = [c.filterDepth, c.filterHeight, c.filterWidth];
    super(c.outShape, wgPerBlock * blocks, `volsegConv3dTiled_${cin}_${cout}_${FD}${FH}${FW}_${SD}${SH}${SW}_${P}x${N}`);
    this.variableComponents = [CX, CW];
    this.outputComponent = CW;
    this.uniformData = [int([c.padInfo.front, c.padInfo.top, c.padInfo.left]), int([wgPerBlock]), int([tilesW]), int([rows])];

    const T = vec(CW), TX = vec(CX);
    // The input columns one filter row of the P outputs covers: column p·SW + kw serves output p, tap kw.
    const cols = (P - 1) * SW + FW;
    const acc: string[] = [], pos: string[] = [], load: string[] = [], mad: string[] = [], store: string[] = [];
    for (let p = 0; p < P; p++) for (let j = 0; j < NG; j++) acc.push(`var a${p}_${j} = ${T}(0.0);`);
    for (let t = 0; t < cols; t++) {
      pos.push(`let ix${t} = ixb + ${t};
          let v${t} = vzy & (ix${t} >= 0) & (ix${t} < uniforms.xShape.w);
          let xo${t} = select(0, (rowb + ix${t}) * ${CIX}, v${t});`);
      load.push(`let xv${t} = select(${TX}(0.0), x[xo${t} + c], v${t});`);
    }
    for (let kw = 0; kw < FW; kw++)
      for (let r = 0; r < CX; r++)
        for (let j = 0; j < NG; j++) {
          mad.push(`{ let w = W[wo + ${(kw * cin + r) * COW + j}];`);
          for (let p = 0; p < P; p++) mad.push(`  a${p}_${j} = fma(${T}(${lane(`xv${p * SW + kw}`, r, CX)}), w, a${p}_${j});`);
          mad.push('}');
        }
    const partialBlock = blocks * NG !== COW;
    for (let p = 0; p < P; p++) {
      const lines = [];
      for (let j = 0; j < NG; j++) {
        const st = `result[ob + ${p * COW + j}] = a${p}_${j};`;
        lines.push(partialBlock ? `if (cob + ${j} < ${COW}) { ${st} }` : st);
      }
      store.push(`if (ow + ${p} < uniforms.outShape.w) { ${lines.join(' ')} }`);
    }
    this.code = `
    fn main(index : i32) {
      ${WG_INDEX}
      let nb = wg / uniforms.wgPerBlock;
      let t = (wg - nb * uniforms.wgPerBlock) * ${WORKGROUP} + lid;
      let tw = t % uniforms.tilesW;
      let row = t / uniforms.tilesW;
      let oh = row % uniforms.outShape.z;
      let bd = row / uniforms.outShape.z;
      let od = bd % uniforms.outShape.y;
      let b = bd / uniforms.outShape.y;
      let ow = tw * ${P};
      let cob = nb * ${NG};
      let izb = od * ${SD} - uniforms.pads.x;
      let iyb = oh * ${SH} - uniforms.pads.y;
      let ixb = ow * ${SW} - uniforms.pads.z;
      ${acc.join('\n      ')}
      for (var kd = 0; kd < ${FD}; kd++) {
        let iz = izb + kd;
        for (var kh = 0; kh < ${FH}; kh++) {
          let iy = iyb + kh;
          let vzy = (iz >= 0) & (iz < uniforms.xShape.y) & (iy >= 0) & (iy < uniforms.xShape.z);
          let rowb = ((b * uniforms.xShape.y + iz) * uniforms.xShape.z + iy) * uniforms.xShape.w;
          ${pos.join('\n          ')}
          let wrow = (kd * ${FH} + kh) * ${FW * cin};
          for (var c = 0; c < ${CIX}; c++) {
            ${load.join('\n            ')}
            let wo = (wrow + c * ${CX}) * ${COW} + cob;
            ${mad.join('\n            ')}
          }
        }
      }
      if (row < uniforms.rows) {
        let ob = (row * uniforms.outShape.w + ow) * ${COW} + cob;
        ${store.join('\n        ')}
      }
    }`;
  }

  getUserCode(): string {
    return this.code;
  }
}

/**
 * Conv3DBackpropInputV2: dx[i] = Σ_k dy[(i + pad − k) / s] · W[k]ᵀ over the taps k where that is a whole
 * number inside dy. Invocation: P outputs along W that share their remainder mod the W stride (so they
 * share their valid taps), times N input channels; per filter row and 4 output channels it reads the
 * P + ⌈FW/SW⌉ − 1 dy vec4s the row covers and N filter vec4s per tap (the filter's last axis, Cout, is the
 * reduction here) and does 4·P·N multiply-adds per tap. With stride > 1 only the taps of the invocation's
 * remainder class are visited.
 */
export class Conv3DBackpropInputProgram extends FlatProgram {
  variableNames = ['dy', 'W'];
  override uniforms = 'pads : vec3<i32>, wgPerBlock : i32, tilesW : i32, rows : i32,';
  private readonly code: string;

  constructor(c: backend_util.Conv3DInfo, tile: Tile) {
    const { P } = tile;
    const cin = c.inChannels, cout = c.outChannels;
    const CY = width(cout), CX = width(cin);
    const N = Math.min(roundUp(tile.N, CX), roundUp(cin, CX));
    const COY = cout / CY, CIX = cin / CX, NG = N / CX;
    const blocks = Math.ceil(CIX / NG);
    const [SD, SH, SW] = [c.strideDepth, c.strideHeight, c.strideWidth];
    const [FD, FH, FW] = [c.filterDepth, c.filterHeight, c.filterWidth];
    const tilesW = SW * Math.ceil(Math.ceil(c.inWidth / SW) / P);
    const rows = c.batchSize * c.inDepth * c.inHeight;
    const wgPerBlock = Math.ceil((rows * tilesW) / WORKGROUP);
    super(c.inShape, wgPerBlock * blocks, `volsegConv3dDxTiled_${cin}_${cout}_${FD}${FH}${FW}_${SD}${SH}${SW}_${P}x${N}`);
    this.variableComponents = [CY, CY];
    this.outputComponent = CX;
    this.uniformData = [int([c.padInfo.front, c.padInfo.top, c.padInfo.left]), int([wgPerBlock]), int([tilesW]), int([rows])];

    const T = vec(CX), TY = vec(CY);
    const dot = (a: string, b: string): string => (CY === 4 ? `dot(${a}, ${b})` : `${a} * ${b}`);
    // Along W the P outputs' valid taps are kw = k0 + i·SW, i < nT, and output p, tap i reads dy column
    // base − i + p: P + nT − 1 columns per filter row, each read once for all its taps.
    const nT = Math.ceil(FW / SW), cols = P + nT - 1;
    const acc: string[] = [], pos: string[] = [], load: string[] = [], mad: string[] = [], store: string[] = [];
    for (let p = 0; p < P; p++) for (let j = 0; j < NG; j++) acc.push(`var a${p}_${j} = ${T}(0.0);`);
    for (let t = 0; t < cols; t++) {
      pos.push(`let yw${t} = ywb + ${t};
          let v${t} = vzy & (yw${t} >= 0) & (yw${t} < uniforms.dyShape.w);
          let yo${t} = select(0, (dyrow + yw${t}) * ${COY}, v${t});`);
      load.push(`let d${t} = select(${TY}(0.0), dy[yo${t} + c], v${t});`);
    }
    for (let i = 0; i < nT; i++) {
      pos.push(SW === 1 ? `let wt${i} = (wrow + ${i}) * ${cin * COY};` : `let kw${i} = k0 + ${i * SW}; let tv${i} = kw${i} < ${FW}; let wt${i} = select(0, (wrow + kw${i}) * ${cin * COY}, tv${i});`);
      for (let j = 0; j < NG; j++) {
        mad.push('{');
        for (let e = 0; e < CX; e++) {
          const w = `W[wo${i} + ${(j * CX + e) * COY}]`;
          mad.push(`  let w${e} = ${SW === 1 ? w : `select(${TY}(0.0), ${w}, tv${i})`};`);
        }
        for (let p = 0; p < P; p++) {
          const terms = Array.from({ length: CX }, (_, e) => dot(`d${p - i + nT - 1}`, `w${e}`));
          mad.push(`  a${p}_${j} += ${CX === 4 ? `vec4<f32>(${terms.join(', ')})` : terms[0]};`);
        }
        mad.push('}');
      }
    }
    const wo = Array.from({ length: nT }, (_, i) => `let wo${i} = wt${i} + cib * ${CX * COY} + c;`);
    const partialBlock = blocks * NG !== CIX;
    for (let p = 0; p < P; p++) {
      const lines = [];
      for (let j = 0; j < NG; j++) {
        const st = `result[ob + ${p * SW * CIX + j}] = a${p}_${j};`;
        lines.push(partialBlock ? `if (cib + ${j} < ${CIX}) { ${st} }` : st);
      }
      store.push(`if (xw0 + ${p * SW} < uniforms.outShape.w) { ${lines.join(' ')} }`);
    }
    // Taps of one dimension whose (i + pad − k) is a multiple of the stride; stride 1 keeps the loop uniform.
    const taps = (k: string, F: number, s: number, i: string, pad: string): string =>
      s === 1 ? `for (var ${k} = 0; ${k} < ${F}; ${k}++)` : `for (var ${k} = (${i} + ${pad}) % ${s}; ${k} < ${F}; ${k} += ${s})`;
    const div = (e: string, s: number): string => (s === 1 ? `(${e})` : `(${e}) / ${s}`);
    this.code = `
    fn main(index : i32) {
      ${WG_INDEX}
      let nb = wg / uniforms.wgPerBlock;
      let t = (wg - nb * uniforms.wgPerBlock) * ${WORKGROUP} + lid;
      let tw = t % uniforms.tilesW;
      let row = t / uniforms.tilesW;
      let xh = row % uniforms.outShape.z;
      let bd = row / uniforms.outShape.z;
      let xd = bd % uniforms.outShape.y;
      let b = bd / uniforms.outShape.y;
      let rw = tw % ${SW};
      let q = tw / ${SW};
      let xw0 = rw + q * ${P * SW};
      let cib = nb * ${NG};
      let k0 = ${SW === 1 ? '0' : `(rw + uniforms.pads.z) % ${SW}`};
      let ywb = ${div('rw + uniforms.pads.z - k0', SW)} + q * ${P} - ${nT - 1};
      ${acc.join('\n      ')}
      ${taps('kd', FD, SD, 'xd', 'uniforms.pads.x')} {
        let nd = xd + uniforms.pads.x - kd;
        let yd = ${div('nd', SD)};
        ${taps('kh', FH, SH, 'xh', 'uniforms.pads.y')} {
          let nh = xh + uniforms.pads.y - kh;
          let yh = ${div('nh', SH)};
          let vzy = (nd >= 0) & (yd < uniforms.dyShape.y) & (nh >= 0) & (yh < uniforms.dyShape.z);
          let dyrow = ((b * uniforms.dyShape.y + yd) * uniforms.dyShape.z + yh) * uniforms.dyShape.w;
          let wrow = (kd * ${FH} + kh) * ${FW};
          ${pos.join('\n          ')}
          for (var c = 0; c < ${COY}; c++) {
            ${load.join('\n            ')}
            ${wo.join('\n            ')}
            ${mad.join('\n            ')}
          }
        }
      }
      if (row < uniforms.rows) {
        let ob = (row * uniforms.outShape.w + xw0) * ${CIX} + cib;
        ${store.join('\n        ')}
      }
    }`;
  }

  getUserCode(): string {
    return this.code;
  }
}

/**
 * Conv3DBackpropFilterV2, split over the output rows: dW[k, ci, co] = Σ_o x[o·s − pad + k, ci] · dy[o, co].
 * Invocation: one tap, 4 input channels (1 when Cin is not a multiple of 4) and N output channels, summed
 * over its split's rows of dy: per output voxel it reads one x vec4 and N/4 dy vec4s and does 4·N
 * multiply-adds. `splits` > 1 writes [splits, size] partial sums that Conv3DFilterSumProgram adds up.
 */
export class Conv3DBackpropFilterProgram extends FlatProgram {
  variableNames = ['x', 'dy'];
  override uniforms = 'pads : vec3<i32>, wgPerSplit : i32, rowsPerSplit : i32, rows : i32,';
  private readonly code: string;
  /** Filter elements in units of the output component (the size of one partial sum). */
  readonly units: number;

  constructor(c: backend_util.Conv3DInfo, tile: Tile, splits: number) {
    const cin = c.inChannels, cout = c.outChannels;
    const CX = width(cin), CY = width(cout);
    const N = Math.min(roundUp(tile.N, CY), roundUp(cout, CY));
    const CIX = cin / CX, COY = cout / CY, NG = N / CY;
    const blocks = Math.ceil(COY / NG);
    const [SD, SH, SW] = [c.strideDepth, c.strideHeight, c.strideWidth];
    const [FD, FH, FW] = [c.filterDepth, c.filterHeight, c.filterWidth];
    const nTiles = FD * FH * FW * CIX * blocks;
    const wgPerSplit = Math.ceil(nTiles / WORKGROUP);
    const rows = c.batchSize * c.outDepth * c.outHeight;
    const units = FD * FH * FW * cin * COY;
    super(splits > 1 ? [splits, units * CY] : c.filterShape, wgPerSplit * splits, `volsegConv3dDwTiled_${cin}_${cout}_${FD}${FH}${FW}_${SD}${SH}${SW}_${N}`);
    this.units = units;
    this.variableComponents = [CX, CY];
    this.outputComponent = CY;
    this.uniformData = [int([c.padInfo.front, c.padInfo.top, c.padInfo.left]), int([wgPerSplit]), int([Math.ceil(rows / splits)]), int([rows])];

    const T = vec(CY), TX = vec(CX);
    const acc: string[] = [], load: string[] = [], mad: string[] = [], store: string[] = [];
    for (let r = 0; r < CX; r++) for (let j = 0; j < NG; j++) acc.push(`var a${r}_${j} = ${T}(0.0);`);
    for (let j = 0; j < NG; j++) load.push(`let g${j} = dy[yo + ${j}];`);
    for (let r = 0; r < CX; r++) for (let j = 0; j < NG; j++) mad.push(`a${r}_${j} = fma(${T}(${lane('xv', r, CX)}), g${j}, a${r}_${j});`);
    const partialBlock = blocks * NG !== COY;
    for (let r = 0; r < CX; r++)
      for (let j = 0; j < NG; j++) {
        const st = `result[ob + ${r * COY + j}] = a${r}_${j};`;
        store.push(partialBlock ? `if (cob + ${j} < ${COY}) { ${st} }` : st);
      }
    this.code = `
    fn main(index : i32) {
      ${WG_INDEX}
      let split = wg / uniforms.wgPerSplit;
      let ti = (wg - split * uniforms.wgPerSplit) * ${WORKGROUP} + lid;
      let nb = ti % ${blocks};
      let t2 = ti / ${blocks};
      let cx = t2 % ${CIX};
      let tap = t2 / ${CIX};
      let kw = tap % ${FW};
      let kh = (tap / ${FW}) % ${FH};
      let kd = tap / ${FW * FH};
      let cob = nb * ${NG};
      let r0 = split * uniforms.rowsPerSplit;
      let r1 = min(r0 + uniforms.rowsPerSplit, uniforms.rows);
      ${acc.join('\n      ')}
      for (var row = r0; row < r1; row++) {
        let oh = row % uniforms.dyShape.z;
        let bd = row / uniforms.dyShape.z;
        let od = bd % uniforms.dyShape.y;
        let b = bd / uniforms.dyShape.y;
        let iz = od * ${SD} - uniforms.pads.x + kd;
        let iy = oh * ${SH} - uniforms.pads.y + kh;
        let vzy = (iz >= 0) & (iz < uniforms.xShape.y) & (iy >= 0) & (iy < uniforms.xShape.z);
        let xrow = ((b * uniforms.xShape.y + iz) * uniforms.xShape.z + iy) * uniforms.xShape.w;
        let dyrow = row * uniforms.dyShape.w;
        for (var ow = 0; ow < uniforms.dyShape.w; ow++) {
          let ix = ow * ${SW} - uniforms.pads.z + kw;
          let v = vzy & (ix >= 0) & (ix < uniforms.xShape.w);
          let xv = select(${TX}(0.0), x[select(0, (xrow + ix) * ${CIX} + cx, v)], v);
          let yo = (dyrow + ow) * ${COY} + cob;
          ${load.join('\n          ')}
          ${mad.join('\n          ')}
        }
      }
      if (ti < ${nTiles}) {
        let ob = split * ${units} + (tap * ${cin} + cx * ${CX}) * ${COY} + cob;
        ${store.join('\n        ')}
      }
    }`;
  }

  getUserCode(): string {
    return this.code;
  }
}

/** Adds up the [splits, size] partial filter gradients into the filter's shape. */
export class Conv3DFilterSumProgram extends FlatProgram {
  variableNames = ['part'];
  override uniforms = 'splits : i32, units : i32,';
  private readonly code: string;

  constructor(filterShape: number[], units: number, component: number, splits: number) {
    super(filterShape, Math.ceil(units / WORKGROUP), `volsegConv3dDwSum_${component}`);
    this.variableComponents = [component];
    this.outputComponent = component;
    this.uniformData = [int([splits]), int([units])];
    this.code = `
    fn main(index : i32) {
      ${WG_INDEX}
      let i = wg * ${WORKGROUP} + lid;
      if (i < uniforms.units) {
        var s = ${vec(component)}(0.0);
        for (var k = 0; k < uniforms.splits; k++) { s += part[k * uniforms.units + i]; }
        result[i] = s;
      }
    }`;
  }

  getUserCode(): string {
    return this.code;
  }
}

/** Largest element count of any operand: the shaders index with i32. */
const MAX_ELEMENTS = 2 ** 31 - 1;

/** Why the tiled programs do not take `c`, or null when they do (dilation 1, i32-addressable sizes). */
export function tiledUnsupported(c: backend_util.Conv3DInfo): string | null {
  if (c.dilationDepth !== 1 || c.dilationHeight !== 1 || c.dilationWidth !== 1) return 'dilation ≠ 1';
  const size = (s: number[]): number => s.reduce((a, b) => a * b, 1);
  if (Math.max(size(c.inShape), size(c.outShape), size(c.filterShape)) > MAX_ELEMENTS) return 'more than 2³¹ − 1 elements';
  return null;
}

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}
