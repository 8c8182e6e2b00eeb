/**
 * NIfTI-1 and NIfTI-2 reading and writing (the format of BraTS, the Medical Segmentation Decathlon and
 * most 3-D medical imaging data). Implements the header layouts of nifti1.h and nifti2.h
 * (https://nifti.nimh.nih.gov/nifti-1, https://nifti.nimh.nih.gov/nifti-2).
 *
 * Why our own header parser rather than nifti-reader-js's: we need exact control over what is read
 * (its `readImage` stops at dims[5], its big-endian NIfTI-2 64-bit integers are mis-decoded from 2^31 up,
 * and its errors do not name the file). nifti-reader-js stays in the tests as the independent reference.
 *
 * Reading: .nii and .nii.gz (gzip detected from the magic bytes, decompressed with node:zlib), both byte
 * orders, NIfTI-1 ('n+1') and NIfTI-2 ('n+2'), datatypes uint8, int8, int16, uint16, int32, uint32,
 * int64, uint64, float32, float64, any number of dimensions (1..7). Voxel values are returned as float32
 * scaled by scl_slope/scl_inter (applied in float64 before rounding to float32, so e.g. an int32 brain
 * mask stored with slope 2^-32 and intercept 0.5 comes out exactly 0/1).
 * Not supported (clear errors): .hdr/.img pairs ('ni1'), ANALYZE 7.5, complex, RGB and float128 data.
 *
 * Writing: NIfTI-1 single files (.nii or .nii.gz) with a header written byte by byte (little endian),
 * copying a source image's geometry so that a prediction overlays its image exactly.
 *
 * Layout convention (core/types.ts): NIfTI stores x fastest, then y, then z, which is row-major
 * [z][y][x]; a volume's shape is [D, H, W] = [nz, ny, nx] and no transpose is needed.
 */
import { readFile, writeFile, rename, mkdir, open, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { gunzip, gzip, gunzipSync, constants as zlibConstants } from 'node:zlib';
import { promisify } from 'node:util';
import type { NiftiGeometry, Shape3, Volume } from '../types.js';

const gunzipAsync = promisify(gunzip);
const gzipAsync = promisify(gzip);

/** A NIfTI problem; the message always starts with the file it concerns. */
export class NiftiError extends Error {
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = 'NiftiError';
  }
}

/** Every header field a reader of this project may need, for both NIfTI versions. */
export interface NiftiHeader {
  version: 1 | 2;
  littleEndian: boolean;
  /** 'n+1', 'n+2', ... without the trailing bytes. */
  magic: string;
  /** dim[1..dim[0]]. */
  dims: number[];
  datatypeCode: number;
  bitpix: number;
  /** pixdim[0..7] (pixdim[0] is qfac). */
  pixDims: number[];
  voxOffset: number;
  sclSlope: number;
  sclInter: number;
  calMin: number;
  calMax: number;
  xyztUnits: number;
  intentCode: number;
  intentName: string;
  description: string;
  qformCode: number;
  sformCode: number;
  quaternB: number;
  quaternC: number;
  quaternD: number;
  qoffsetX: number;
  qoffsetY: number;
  qoffsetZ: number;
  /** srow_x, srow_y, srow_z. */
  srow: [number[], number[], number[]];
}

export interface NiftiImage {
  /** The file it was read from (or a label for in-memory buffers). */
  source: string;
  /** dim[1..dim[0]] (all dimensions, not only the spatial ones). */
  dims: number[];
  /** [nx, ny, nz]: dims[1..3], 1 where the image has fewer dimensions. */
  spatial: [number, number, number];
  datatypeCode: number;
  datatypeName: string;
  /** Every voxel (product of all dims), x fastest, scaled by scl_slope/scl_inter when they apply. */
  data: Float32Array;
  geometry: NiftiGeometry;
  littleEndian: boolean;
  version: 1 | 2;
  sclSlope: number;
  sclInter: number;
  header: NiftiHeader;
}

export type NiftiRawArray =
  | Uint8Array
  | Int8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array;

/** The stored values, unscaled, in their own type (native byte order). */
export interface NiftiRaw {
  source: string;
  header: NiftiHeader;
  raw: NiftiRawArray;
}

interface DatatypeInfo {
  name: string;
  bytes: number;
  make(buffer: ArrayBuffer, byteOffset: number, length: number): NiftiRawArray;
}

const DATATYPES: Record<number, DatatypeInfo> = {
  2: { name: 'uint8', bytes: 1, make: (b, o, n) => new Uint8Array(b, o, n) },
  4: { name: 'int16', bytes: 2, make: (b, o, n) => new Int16Array(b, o, n) },
  8: { name: 'int32', bytes: 4, make: (b, o, n) => new Int32Array(b, o, n) },
  16: { name: 'float32', bytes: 4, make: (b, o, n) => new Float32Array(b, o, n) },
  64: { name: 'float64', bytes: 8, make: (b, o, n) => new Float64Array(b, o, n) },
  256: { name: 'int8', bytes: 1, make: (b, o, n) => new Int8Array(b, o, n) },
  512: { name: 'uint16', bytes: 2, make: (b, o, n) => new Uint16Array(b, o, n) },
  768: { name: 'uint32', bytes: 4, make: (b, o, n) => new Uint32Array(b, o, n) },
  1024: { name: 'int64', bytes: 8, make: (b, o, n) => new BigInt64Array(b, o, n) },
  1280: { name: 'uint64', bytes: 8, make: (b, o, n) => new BigUint64Array(b, o, n) },
};

/** Names of the datatypes nifti1.h defines that we do not read, for error messages. */
const UNSUPPORTED_DATATYPES: Record<number, string> = {
  0: 'unknown (DT_UNKNOWN)',
  1: 'binary (1 bit per voxel)',
  32: 'complex64',
  128: 'rgb24',
  1536: 'float128',
  1792: 'complex128',
  2048: 'complex256',
  2304: 'rgba32',
};

export const NIFTI_DATATYPES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(DATATYPES).map(([code, info]) => [code, info.name]),
);

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

function cString(bytes: Uint8Array, start: number, end: number): string {
  let s = '';
  for (let i = start; i < end && bytes[i] !== 0; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}

/**
 * Parses a NIfTI-1 or NIfTI-2 header from the start of `bytes` (decompressed). Throws a NiftiError naming
 * `source` when the bytes are not a single-file NIfTI header.
 */
export function parseNiftiHeader(bytes: Uint8Array, source = '<buffer>'): NiftiHeader {
  if (bytes.length < 348) {
    throw new NiftiError(source, `not a NIfTI file: only ${bytes.length} bytes, a NIfTI header needs at least 348`);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // sizeof_hdr (348 for NIfTI-1, 540 for NIfTI-2) doubles as the byte-order mark.
  const le32 = dv.getInt32(0, true);
  const be32 = dv.getInt32(0, false);
  let version: 1 | 2;
  let le: boolean;
  if (le32 === 348 || be32 === 348) {
    version = 1;
    le = le32 === 348;
  } else if (le32 === 540 || be32 === 540) {
    version = 2;
    le = le32 === 540;
  } else {
    throw new NiftiError(
      source,
      `not a NIfTI file: the first 4 bytes (sizeof_hdr) read ${le32} (little endian) / ${be32} (big endian), expected 348 (NIfTI-1) or 540 (NIfTI-2)`,
    );
  }
  if (version === 2 && bytes.length < 540) {
    throw new NiftiError(source, `truncated NIfTI-2 header: ${bytes.length} bytes, expected 540`);
  }
  const i16 = (o: number) => dv.getInt16(o, le);
  const i32 = (o: number) => dv.getInt32(o, le);
  const f32 = (o: number) => dv.getFloat32(o, le);
  const f64 = (o: number) => dv.getFloat64(o, le);
  const i64 = (o: number, field: string) => {
    const v = dv.getBigInt64(o, le);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new NiftiError(source, `NIfTI-2 field ${field} = ${v} is too large to handle`);
    }
    return Number(v);
  };

  let h: NiftiHeader;
  if (version === 1) {
    const magic = cString(bytes, 344, 348);
    if (magic === 'ni1') {
      throw new NiftiError(source, `is the header of a .hdr/.img pair (magic 'ni1'), which is not supported; convert it to a single .nii/.nii.gz file (e.g. with nibabel or fslchfiletype)`);
    }
    if (magic !== 'n+1') {
      throw new NiftiError(source, `not a NIfTI-1 file: magic is ${JSON.stringify(magic)} rather than 'n+1' (an ANALYZE 7.5 file?)`);
    }
    const ndim = i16(40);
    checkNdim(ndim, source);
    const dims: number[] = [];
    for (let i = 1; i <= ndim; i++) dims.push(i16(40 + 2 * i));
    const pixDims: number[] = [];
    for (let i = 0; i < 8; i++) pixDims.push(f32(76 + 4 * i));
    const srowAt = (o: number) => [f32(o), f32(o + 4), f32(o + 8), f32(o + 12)];
    h = {
      version,
      littleEndian: le,
      magic,
      dims,
      datatypeCode: i16(70),
      bitpix: i16(72),
      pixDims,
      voxOffset: f32(108),
      sclSlope: f32(112),
      sclInter: f32(116),
      calMax: f32(124),
      calMin: f32(128),
      xyztUnits: bytes[123]!,
      intentCode: i16(68),
      intentName: cString(bytes, 328, 344),
      description: cString(bytes, 148, 228),
      qformCode: i16(252),
      sformCode: i16(254),
      quaternB: f32(256),
      quaternC: f32(260),
      quaternD: f32(264),
      qoffsetX: f32(268),
      qoffsetY: f32(272),
      qoffsetZ: f32(276),
      srow: [srowAt(280), srowAt(296), srowAt(312)],
    };
  } else {
    const magic = cString(bytes, 4, 8);
    if (magic === 'ni2') {
      throw new NiftiError(source, `is the header of a NIfTI-2 .hdr/.img pair (magic 'ni2'), which is not supported; convert it to a single .nii/.nii.gz file`);
    }
    if (magic !== 'n+2') {
      throw new NiftiError(source, `not a NIfTI-2 file: magic is ${JSON.stringify(magic)} rather than 'n+2'`);
    }
    const ndim = i64(16, 'dim[0]');
    checkNdim(ndim, source);
    const dims: number[] = [];
    for (let i = 1; i <= ndim; i++) dims.push(i64(16 + 8 * i, `dim[${i}]`));
    const pixDims: number[] = [];
    for (let i = 0; i < 8; i++) pixDims.push(f64(104 + 8 * i));
    const srowAt = (o: number) => [f64(o), f64(o + 8), f64(o + 16), f64(o + 24)];
    h = {
      version,
      littleEndian: le,
      magic,
      dims,
      datatypeCode: i16(12),
      bitpix: i16(14),
      pixDims,
      voxOffset: i64(168, 'vox_offset'),
      sclSlope: f64(176),
      sclInter: f64(184),
      calMax: f64(192),
      calMin: f64(200),
      xyztUnits: i32(500),
      intentCode: i32(504),
      intentName: cString(bytes, 508, 524),
      description: cString(bytes, 240, 320),
      qformCode: i32(344),
      sformCode: i32(348),
      quaternB: f64(352),
      quaternC: f64(360),
      quaternD: f64(368),
      qoffsetX: f64(376),
      qoffsetY: f64(384),
      qoffsetZ: f64(392),
      srow: [srowAt(400), srowAt(432), srowAt(464)],
    };
  }
  h.dims.forEach((d, i) => {
    if (!(d >= 1)) {
      throw new NiftiError(source, `invalid header: dim[${i + 1}] = ${d} (dim[0] = ${h.dims.length}); every used dimension must be ≥ 1`);
    }
  });
  const minOffset = version === 1 ? 348 : 540;
  if (!(h.voxOffset >= minOffset)) {
    throw new NiftiError(source, `invalid header: vox_offset = ${h.voxOffset}, must be at least ${minOffset} in a single-file NIfTI-${version}`);
  }
  return h;
}

function checkNdim(ndim: number, source: string): void {
  if (!(ndim >= 1 && ndim <= 7)) {
    throw new NiftiError(source, `invalid header: dim[0] = ${ndim}, must be 1..7 (a byte-order problem or not a NIfTI file)`);
  }
}

/** Product of all dims (the voxel count), as NIfTI defines it. */
export function voxelCount(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/** The geometry kept with a volume so a label map can be written aligned with its image. */
export function geometryFromHeader(h: NiftiHeader, source?: string): NiftiGeometry {
  const d = (i: number) => h.dims[i] ?? 1;
  const p = (i: number) => h.pixDims[i] ?? 1;
  return {
    dims: [d(0), d(1), d(2)],
    pixDims: [p(1), p(2), p(3)],
    qformCode: h.qformCode,
    sformCode: h.sformCode,
    quaternB: h.quaternB,
    quaternC: h.quaternC,
    quaternD: h.quaternD,
    qoffsetX: h.qoffsetX,
    qoffsetY: h.qoffsetY,
    qoffsetZ: h.qoffsetZ,
    // nifti1.h: qfac is pixdim[0] and must be ±1; 0 (common in old files) means 1.
    qfac: h.pixDims[0]! < 0 ? -1 : 1,
    srow: [h.srow[0].slice(), h.srow[1].slice(), h.srow[2].slice()],
    xyztUnits: h.xyztUnits,
    ...(source !== undefined ? { source } : {}),
  };
}

/** Reads a whole file and gunzips it when it is gzip-compressed (from its magic bytes, not its name). */
export async function readNiftiBytes(path: string): Promise<Uint8Array> {
  let file: Buffer;
  try {
    file = await readFile(path);
  } catch (err) {
    throw new NiftiError(path, `cannot read the file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (!isGzip(file)) return file;
  try {
    return await gunzipAsync(file);
  } catch (err) {
    throw new NiftiError(path, `cannot decompress the gzip data (${(err as Error).message}); the file is truncated or corrupt`);
  }
}

/** Decodes the stored voxel values (unscaled) of a NIfTI held in memory. */
export function decodeNiftiRaw(bytes: Uint8Array, source = '<buffer>'): NiftiRaw {
  const header = parseNiftiHeader(bytes, source);
  const info = DATATYPES[header.datatypeCode];
  if (!info) {
    const known = UNSUPPORTED_DATATYPES[header.datatypeCode];
    throw new NiftiError(
      source,
      `unsupported datatype code ${header.datatypeCode}${known ? ` (${known})` : ''}; supported: ${Object.entries(DATATYPES)
        .map(([c, i]) => `${i.name} (${c})`)
        .join(', ')}`,
    );
  }
  const n = voxelCount(header.dims);
  const need = n * info.bytes;
  const start = header.voxOffset;
  const have = Math.max(0, bytes.length - start);
  if (have < need) {
    throw new NiftiError(
      source,
      `truncated image: dims ${header.dims.join('×')} of ${info.name} need ${need} bytes after vox_offset ${start}, got ${have}`,
    );
  }
  const absolute = bytes.byteOffset + start;
  let raw: NiftiRawArray;
  if (header.littleEndian === HOST_LITTLE_ENDIAN && absolute % info.bytes === 0) {
    // Already aligned and in native order: a view, no copy.
    raw = info.make(bytes.buffer as ArrayBuffer, absolute, n);
  } else {
    // Copy into a fresh (aligned) buffer, swapping bytes when the file's order is not the host's.
    // (Not bytes.slice: on a Node Buffer that is a view, not a copy.)
    const copy = new Uint8Array(need);
    copy.set(bytes.subarray(start, start + need));
    if (header.littleEndian !== HOST_LITTLE_ENDIAN && info.bytes > 1) swapBytes(copy, info.bytes);
    raw = info.make(copy.buffer, 0, n);
  }
  return { source, header, raw };
}

function swapBytes(bytes: Uint8Array, size: number): void {
  for (let i = 0; i < bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a]!;
      bytes[a] = bytes[b]!;
      bytes[b] = t;
    }
  }
}

/** Whether scl_slope/scl_inter apply (nifti1.h: a slope of 0 means "no scaling"). */
export function scalingApplies(slope: number, inter: number): boolean {
  return Number.isFinite(slope) && slope !== 0 && !(slope === 1 && (inter === 0 || !Number.isFinite(inter)));
}

/** Decodes a NIfTI held in memory into float32 voxel values (scaled). */
export function decodeNifti(bytes: Uint8Array, source = '<buffer>'): NiftiImage {
  const { header, raw } = decodeNiftiRaw(bytes, source);
  const n = raw.length;
  const data = new Float32Array(n);
  const slope = header.sclSlope;
  const inter = Number.isFinite(header.sclInter) ? header.sclInter : 0;
  const scale = scalingApplies(slope, inter);
  if (raw instanceof BigInt64Array || raw instanceof BigUint64Array) {
    for (let i = 0; i < n; i++) {
      const v = Number(raw[i]!);
      data[i] = scale ? v * slope + inter : v;
    }
  } else if (scale) {
    // In float64 (JS numbers), rounded once into float32.
    for (let i = 0; i < n; i++) data[i] = raw[i]! * slope + inter;
  } else {
    data.set(raw);
  }
  const d = header.dims;
  return {
    source,
    dims: d.slice(),
    spatial: [d[0] ?? 1, d[1] ?? 1, d[2] ?? 1],
    datatypeCode: header.datatypeCode,
    datatypeName: DATATYPES[header.datatypeCode]!.name,
    data,
    geometry: geometryFromHeader(header, source),
    littleEndian: header.littleEndian,
    version: header.version,
    sclSlope: header.sclSlope,
    sclInter: header.sclInter,
    header,
  };
}

/** Reads a .nii or .nii.gz file: header, geometry and all voxels as scaled float32. */
export async function readNifti(path: string): Promise<NiftiImage> {
  return decodeNifti(await readNiftiBytes(path), path);
}

/** Reads a .nii or .nii.gz file's stored values without scaling or conversion (e.g. for label maps). */
export async function readNiftiRaw(path: string): Promise<NiftiRaw> {
  return decodeNiftiRaw(await readNiftiBytes(path), path);
}

/**
 * Reads only the header, decompressing just the start of a .nii.gz (cheap: for listing shapes of many
 * files without loading them).
 */
export async function readNiftiHeader(path: string): Promise<NiftiHeader> {
  let head: Uint8Array;
  let handle;
  try {
    handle = await open(path, 'r');
    const buf = Buffer.alloc(64 * 1024);
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
    head = buf.subarray(0, bytesRead);
  } catch (err) {
    throw new NiftiError(path, `cannot read the file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  } finally {
    await handle?.close();
  }
  if (isGzip(head)) {
    try {
      // Z_SYNC_FLUSH: return what the partial input decompresses to instead of failing on the cut.
      head = gunzipSync(head, { finishFlush: zlibConstants.Z_SYNC_FLUSH });
    } catch (err) {
      throw new NiftiError(path, `cannot decompress the gzip data (${(err as Error).message})`);
    }
  }
  return parseNiftiHeader(head, path);
}

// ------------------------------------------------------------------------------------------------
// Writing

export type NiftiWritable = Uint8Array | Int16Array | Uint16Array | Int32Array | Float32Array;

const WRITE_CODES: [new (...a: never[]) => NiftiWritable, number, number][] = [
  [Uint8Array, 2, 8],
  [Int16Array, 4, 16],
  [Uint16Array, 512, 16],
  [Int32Array, 8, 32],
  [Float32Array, 16, 32],
];

export interface NiftiWriteOptions {
  description?: string;
  sclSlope?: number;
  sclInter?: number;
  calMin?: number;
  calMax?: number;
  intentCode?: number;
  intentName?: string;
}

/**
 * Encodes a 3-D image as a single-file NIfTI-1 (little endian, vox_offset 352, no extension) with the
 * geometry of its source image. `data` is x fastest: [z][y][x], the layout of Volume without channels.
 */
export function encodeNifti1(
  data: NiftiWritable,
  geometry: NiftiGeometry,
  options: NiftiWriteOptions = {},
  target = '<buffer>',
): Uint8Array {
  const [nx, ny, nz] = geometry.dims;
  for (const [i, d] of geometry.dims.entries()) {
    if (!Number.isInteger(d) || d < 1 || d > 32767) {
      throw new NiftiError(target, `cannot write: geometry dims[${i}] = ${d}; NIfTI-1 needs integers 1..32767`);
    }
  }
  if (data.length !== nx * ny * nz) {
    throw new NiftiError(
      target,
      `cannot write: ${data.length} voxels given but the geometry${geometry.source ? ` (from ${geometry.source})` : ''} is ${nx}×${ny}×${nz} = ${nx * ny * nz}`,
    );
  }
  const entry = WRITE_CODES.find(([ctor]) => data instanceof ctor);
  if (!entry) throw new NiftiError(target, `cannot write a ${data.constructor.name}; use Uint8Array, Int16Array, Uint16Array, Int32Array or Float32Array`);
  const [, datatype, bitpix] = entry;
  const voxOffset = 352;
  const out = new Uint8Array(voxOffset + data.byteLength);
  const dv = new DataView(out.buffer);
  const le = true;
  dv.setInt32(0, 348, le); // sizeof_hdr
  out[38] = 'r'.charCodeAt(0); // regular: ANALYZE legacy, set by most writers
  dv.setInt16(40, 3, le);
  dv.setInt16(42, nx, le);
  dv.setInt16(44, ny, le);
  dv.setInt16(46, nz, le);
  for (let i = 4; i < 8; i++) dv.setInt16(40 + 2 * i, 1, le); // unused dims set to 1, as nifti1_io does
  dv.setInt16(68, options.intentCode ?? 0, le);
  dv.setInt16(70, datatype, le);
  dv.setInt16(72, bitpix, le);
  dv.setFloat32(76, geometry.qfac < 0 ? -1 : 1, le); // pixdim[0] = qfac
  dv.setFloat32(80, geometry.pixDims[0], le);
  dv.setFloat32(84, geometry.pixDims[1], le);
  dv.setFloat32(88, geometry.pixDims[2], le);
  dv.setFloat32(108, voxOffset, le);
  dv.setFloat32(112, options.sclSlope ?? 1, le);
  dv.setFloat32(116, options.sclInter ?? 0, le);
  out[123] = geometry.xyztUnits & 0xff;
  dv.setFloat32(124, options.calMax ?? 0, le);
  dv.setFloat32(128, options.calMin ?? 0, le);
  writeCString(out, 148, 80, options.description ?? 'volseg-memory-bench');
  dv.setInt16(252, geometry.qformCode, le);
  dv.setInt16(254, geometry.sformCode, le);
  dv.setFloat32(256, geometry.quaternB, le);
  dv.setFloat32(260, geometry.quaternC, le);
  dv.setFloat32(264, geometry.quaternD, le);
  dv.setFloat32(268, geometry.qoffsetX, le);
  dv.setFloat32(272, geometry.qoffsetY, le);
  dv.setFloat32(276, geometry.qoffsetZ, le);
  for (let r = 0; r < 3; r++) {
    for (let c = 0; c < 4; c++) dv.setFloat32(280 + 16 * r + 4 * c, geometry.srow[r]?.[c] ?? 0, le);
  }
  writeCString(out, 328, 16, options.intentName ?? '');
  writeCString(out, 344, 4, 'n+1');
  // bytes 348..351: extension flag, all zero (no extension).
  const body = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  out.set(body, voxOffset);
  if (!HOST_LITTLE_ENDIAN && data.BYTES_PER_ELEMENT > 1) swapBytes(out.subarray(voxOffset), data.BYTES_PER_ELEMENT);
  return out;
}

function writeCString(out: Uint8Array, at: number, size: number, s: string): void {
  for (let i = 0; i < Math.min(s.length, size - 1); i++) out[at + i] = s.charCodeAt(i) & 0x7f;
}

/**
 * Writes a NIfTI-1 file (gzip-compressed when the path ends in .gz). Written to a temporary file and
 * renamed, so an interrupted run never leaves a half-written image behind.
 */
export async function writeNifti(
  path: string,
  data: NiftiWritable,
  geometry: NiftiGeometry,
  options: NiftiWriteOptions = {},
): Promise<void> {
  if (!/\.nii(\.gz)?$/i.test(path)) {
    throw new NiftiError(path, `cannot write: the file name must end in .nii or .nii.gz`);
  }
  const encoded = encodeNifti1(data, geometry, options, path);
  const bytes = path.toLowerCase().endsWith('.gz') ? await gzipAsync(encoded) : encoded;
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.partial-${process.pid}-${Math.floor(performance.now() * 1000)}`;
  try {
    await writeFile(tmp, bytes);
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new NiftiError(path, `cannot write the file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
}

/**
 * Writes a uint8 label map aligned with the image whose geometry is given (dims, pixdim with qfac,
 * qform/sform codes, quaternion, offsets, srow rows, units); scl_slope 1, scl_inter 0.
 * `labels` is x fastest ([z][y][x], a Volume's label layout) with length nx*ny*nz.
 */
export async function writeNiftiLabel(path: string, labels: Uint8Array, geometry: NiftiGeometry): Promise<void> {
  const [nx, ny, nz] = geometry.dims;
  if (labels.length !== nx * ny * nz) {
    throw new NiftiError(
      path,
      `cannot write the label map: ${labels.length} labels given but the geometry${geometry.source ? ` of ${geometry.source}` : ''} is ${nx}×${ny}×${nz} = ${nx * ny * nz} voxels (shape [D,H,W] = [${nz},${ny},${nx}])`,
    );
  }
  let max = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i]! > max) max = labels[i]!;
  await writeNifti(path, labels, geometry, {
    description: 'volseg-memory-bench label map',
    sclSlope: 1,
    sclInter: 0,
    calMin: 0,
    calMax: max,
    intentCode: 1002, // NIFTI_INTENT_LABEL
  });
}

// ------------------------------------------------------------------------------------------------
// From NIfTI images to a Volume

/** Number of channels an image contributes: the product of its dims beyond the third (4-D: dim[4]). */
export function channelCount(image: NiftiImage): number {
  return voxelCount(image.dims.slice(3));
}

/**
 * Tolerance, in mm, within which two files of one case count as on the same grid: spacing (pixdim) may
 * differ by this much, and voxel centres placed by the two affines by this much anywhere in the volume.
 * 1e-3 mm (1 µm) is far below the voxel sizes met here (MRI ~1 mm, microCT a few µm and up), so a real
 * misalignment does not pass, yet well above what storing the same geometry twice costs: float32
 * srow/quatern/qoffset fields round at ~6e-8 relative, i.e. ~1e-5 mm at offsets of a few hundred mm, and
 * ~3e-5 mm when a qform is compared with an equivalent sform across a 512-voxel extent. It is about
 * nnU-Net's check (np.isclose, rtol 1e-5) at typical origins of ~100 mm. Datasets expose it as
 * `geometryTolerance`.
 */
export const DEFAULT_GEOMETRY_TOLERANCE = 1e-3;

/** NIfTI's names for the indices of dims 1..7 (i, j, k spatial; t the 4th, u, v, w beyond). */
const INDEX_NAMES = ['i', 'j', 'k', 't', 'u', 'v', 'w'];

/** A flat index into an image's data (x fastest, every dim) as NIfTI's index, e.g. `(i=3, j=4, k=5, t=1)`. */
function niftiIndex(at: number, dims: readonly number[]): string {
  const parts: string[] = [];
  let rest = at;
  const n = Math.max(3, dims.length);
  for (let d = 0; d < n; d++) {
    const size = dims[d] ?? 1;
    parts.push(`${INDEX_NAMES[d]}=${rest % size}`);
    rest = Math.floor(rest / size);
  }
  return `(${parts.join(', ')})`;
}

/**
 * The error for an image holding NaN or ±Inf, `at` being the first such voxel's index into `image.data`:
 * the file, that voxel's NIfTI index (t for the volume of a 4-D file), its value, how many there are and
 * what to do. Counting the rest is a second pass, paid only on the way to the error.
 */
export function nonFiniteError(image: NiftiImage, at: number): NiftiError {
  const data = image.data;
  let count = 0;
  for (let i = at; i < data.length; i++) {
    const x = data[i]!;
    if (x - x !== 0) count++;
  }
  const value = data[at]!;
  const scaled = scalingApplies(image.sclSlope, image.sclInter)
    ? ` after scl_slope ${num(image.sclSlope)} / scl_inter ${num(image.sclInter)}`
    : '';
  const how = count === data.length ? `all ${count} voxels are` : `${count} of ${data.length} voxels are`;
  return new NiftiError(
    image.source,
    `voxel ${niftiIndex(at, image.dims)} is ${value}${scaled} (${how} NaN or ±Inf); the framework does not impute missing values: fix the file, or mask those voxels (set them to 0 or the background value) and save it again`,
  );
}

/** Throws `nonFiniteError` at the first NaN or ±Inf voxel of an image (one read-only pass). */
export function checkFinite(image: NiftiImage): void {
  const data = image.data;
  // x * 0 is 0 for every finite x and NaN for NaN and ±Inf, and NaN stays (see interleaveChannels).
  let finite = 0;
  for (let i = 0; i < data.length; i++) finite += data[i]! * 0;
  if (finite === 0) return;
  let i = 0;
  while (data[i]! - data[i]! === 0) i++;
  throw nonFiniteError(image, i);
}

/**
 * Interleaves co-registered images into the channels-last layout of Volume.image ([D,H,W,C], index
 * ((z*H + y)*W + x)*C + c). NIfTI's x-fastest order is already [z][y][x], so interleaving is the only
 * rearrangement. A 4-D image (e.g. an MSD multi-modal file) contributes dim[4] channels, in order.
 * Throws naming both files when the spatial dims, spacing or affine differ (`checkSameGeometry`, within
 * `tolerance` mm), and naming the file and voxel at the first NaN or ±Inf value (checked in the copy
 * itself: no extra pass over the data; images are checked in order, so the first bad one is named).
 */
export function interleaveChannels(
  images: readonly NiftiImage[],
  tolerance = DEFAULT_GEOMETRY_TOLERANCE,
): { image: Float32Array; shape: Shape3; channels: number } {
  if (images.length === 0) throw new Error('interleaveChannels: no images given');
  const first = images[0]!;
  const [nx, ny, nz] = first.spatial;
  for (const img of images) {
    const [x, y, z] = img.spatial;
    if (x !== nx || y !== ny || z !== nz) {
      throw new NiftiError(
        img.source,
        `spatial dims ${x}×${y}×${z} differ from ${nx}×${ny}×${nz} of ${first.source}; the modalities of a case must be co-registered on the same grid (resample them first)`,
      );
    }
    if (img !== first) checkSameGeometry(first, img, tolerance);
  }
  const perImage = images.map(channelCount);
  const channels = perImage.reduce((a, b) => a + b, 0);
  const nvox = nx * ny * nz;
  const out = new Float32Array(nvox * channels);
  let c0 = 0;
  images.forEach((img, k) => {
    const src = img.data;
    for (let t = 0; t < perImage[k]!; t++) {
      const base = t * nvox;
      const c = c0 + t;
      // x * 0 is 0 for every finite x and NaN for NaN and ±Inf, and NaN stays: one sum, no branch in the
      // copy (a test per voxel costs up to ~1.5× the copy on 250M voxels); the bad voxel is sought after.
      let finite = 0;
      for (let v = 0, o = c; v < nvox; v++, o += channels) {
        const x = src[base + v]!;
        finite += x * 0;
        out[o] = x;
      }
      if (finite !== 0) {
        let v = 0;
        while (v < nvox && src[base + v]! - src[base + v]! === 0) v++;
        throw nonFiniteError(img, base + v);
      }
    }
    c0 += perImage[k]!;
  });
  return { image: out, shape: [nz, ny, nx], channels };
}

export interface LabelConversion {
  /** Raw value -> value (e.g. {3: 1}); keys may be strings as YAML gives them. */
  labelMap?: Readonly<Record<string | number, number>> | ReadonlyMap<number, number>;
  /** Values allowed after mapping (0 is always allowed). */
  allowed: readonly number[];
  /** How to fix an unexpected value, ending the error (default: a labelMap suggestion). */
  hint?: string;
}

/**
 * Converts a label image into uint8 label values, applying `labelMap`, and checks every value against
 * the task's label set. Errors name the file, the value, where it occurs and how to fix it.
 */
export function labelsFromNifti(image: NiftiImage, conv: LabelConversion): Uint8Array {
  const map = new Map<number, number>();
  if (conv.labelMap instanceof Map) for (const [k, v] of conv.labelMap) map.set(k, v);
  else if (conv.labelMap) for (const [k, v] of Object.entries(conv.labelMap)) map.set(Number(k), v);
  const allowed = new Set<number>([0, ...conv.allowed]);
  // Lookup table over 0..255 raw values: -1 = not allowed.
  const lut = new Int16Array(256).fill(-1);
  for (let raw = 0; raw < 256; raw++) {
    const mapped = map.has(raw) ? map.get(raw)! : raw;
    if (allowed.has(mapped)) lut[raw] = mapped;
  }
  const src = image.data;
  const n = image.spatial[0] * image.spatial[1] * image.spatial[2];
  if (src.length !== n) {
    throw new NiftiError(image.source, `a label map must be 3-D, got dims ${image.dims.join('×')}`);
  }
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const v = src[i]!;
    let r = v | 0;
    if (r !== v) {
      // Float label files sometimes carry rounding noise; accept it, reject real fractions.
      r = Math.round(v);
      if (v - v !== 0) {
        throw new NiftiError(image.source, `label map has the value ${v} at voxel ${voxelAt(i, image.spatial)}; NaN and ±Inf are not labels: fix the label file`);
      }
      if (!(Math.abs(v - r) < 1e-3)) {
        throw new NiftiError(image.source, `label map has a non-integer value ${v} at voxel ${voxelAt(i, image.spatial)}; is this really a label file?`);
      }
    }
    const m = r >= 0 && r < 256 ? lut[r]! : -1;
    if (m < 0) {
      const mapped = map.has(r) ? map.get(r)! : r;
      throw new NiftiError(
        image.source,
        `label value ${r}${mapped !== r ? ` (mapped to ${mapped})` : ''} at voxel ${voxelAt(i, image.spatial)} is not one of the task's labels {${[...allowed].sort((a, b) => a - b).join(', ')}}; ${conv.hint ?? 'map it to one of them with the dataset setting labelMap, e.g. labelMap: {3: 1}'}`,
      );
    }
    out[i] = m;
  }
  return out;
}

function voxelAt(i: number, [nx, ny]: [number, number, number]): string {
  const x = i % nx;
  const y = Math.floor(i / nx) % ny;
  const z = Math.floor(i / (nx * ny));
  return `(x=${x}, y=${y}, z=${z})`;
}

/**
 * Millimetres per unit of a header's spatial unit (xyzt_units & 0x07, nifti1.h): 1 metre, 2 mm, 3 micron;
 * 0 (unknown, common in older files) counts as mm, as nibabel and ITK read it.
 */
export function niftiMillimetresPerUnit(xyztUnits: number): number {
  switch (xyztUnits & 0x07) {
    case 1:
      return 1000;
    case 3:
      return 0.001;
    default:
      return 1;
  }
}

/**
 * Builds a Volume from co-registered modality images (channel order = array order) and an optional
 * label map already converted with `labelsFromNifti`. Spacing is [pixdim3, pixdim2, pixdim1] (along
 * D, H, W) in mm, converted from the header's spatial unit (niftiMillimetresPerUnit); the geometry is
 * the first image's. The modalities are checked as `interleaveChannels` does (same grid within
 * `geometryTolerance` mm, no NaN or ±Inf); the label's geometry is the caller's to check
 * (`checkSameGrid`) since only its values arrive here.
 */
export function volumeFromNifti(
  id: string,
  images: readonly NiftiImage[],
  label?: Uint8Array,
  labelSource?: string,
  geometryTolerance = DEFAULT_GEOMETRY_TOLERANCE,
): Volume {
  const { image, shape, channels } = interleaveChannels(images, geometryTolerance);
  const first = images[0]!;
  if (label && label.length !== shape[0] * shape[1] * shape[2]) {
    const [nx, ny, nz] = first.spatial;
    throw new NiftiError(
      labelSource ?? `case ${id}`,
      `label map has ${label.length} voxels but the images (${first.source}) are ${nx}×${ny}×${nz} = ${nx * ny * nz}`,
    );
  }
  const [px, py, pz] = first.geometry.pixDims;
  const mm = niftiMillimetresPerUnit(first.geometry.xyztUnits);
  const spacing: Shape3 = [(Math.abs(pz) || 1) * mm, (Math.abs(py) || 1) * mm, (Math.abs(px) || 1) * mm];
  return { id, image, shape, channels, ...(label ? { label } : {}), spacing, geometry: first.geometry };
}

/**
 * Checks a label (or mask) image against the case's first image, naming both files: the same spatial
 * dims, then the same spacing and affine within `tolerance` mm (`checkSameGeometry`).
 */
export function checkSameGrid(a: NiftiImage, b: NiftiImage, tolerance = DEFAULT_GEOMETRY_TOLERANCE): void {
  const [ax, ay, az] = a.spatial;
  const [bx, by, bz] = b.spatial;
  if (ax !== bx || ay !== by || az !== bz) {
    throw new NiftiError(b.source, `spatial dims ${bx}×${by}×${bz} differ from ${ax}×${ay}×${az} of ${a.source}; images and labels of a case must share one grid`);
  }
  checkSameGeometry(a, b, tolerance);
}

/** A voxel-to-world affine (3 rows of 4, mm) and the header field it came from. */
export interface NiftiAffine {
  rows: [number[], number[], number[]];
  from: 'sform' | 'qform';
}

/**
 * The voxel-to-world affine a geometry states, chosen as nibabel's get_best_affine does: the sform when
 * sform_code > 0, else the qform (quaternion, pixdim and qfac, as nifti1_io's nifti_quatern_to_mat44)
 * when qform_code > 0, else undefined: the file states no orientation (NIfTI's "method 1").
 */
export function geometryAffine(g: NiftiGeometry): NiftiAffine | undefined {
  if (g.sformCode > 0) return { rows: [g.srow[0].slice(0, 4), g.srow[1].slice(0, 4), g.srow[2].slice(0, 4)], from: 'sform' };
  if (g.qformCode <= 0) return undefined;
  let b = g.quaternB;
  let c = g.quaternC;
  let d = g.quaternD;
  let a = 1 - (b * b + c * c + d * d);
  if (a < 1e-7) {
    // A 180° rotation: a = 0 and (b, c, d) renormalised, as nifti1_io does.
    a = 1 / Math.sqrt(b * b + c * c + d * d);
    b *= a;
    c *= a;
    d *= a;
    a = 0;
  } else {
    a = Math.sqrt(a);
  }
  const [px, py, pz] = g.pixDims;
  const xd = px > 0 ? px : 1;
  const yd = py > 0 ? py : 1;
  const zd = (pz > 0 ? pz : 1) * (g.qfac < 0 ? -1 : 1);
  return {
    rows: [
      [(a * a + b * b - c * c - d * d) * xd, 2 * (b * c - a * d) * yd, 2 * (b * d + a * c) * zd, g.qoffsetX],
      [2 * (b * c + a * d) * xd, (a * a + c * c - b * b - d * d) * yd, 2 * (c * d - a * b) * zd, g.qoffsetY],
      [2 * (b * d - a * c) * xd, 2 * (c * d + a * b) * yd, (a * a + d * d - c * c - b * b) * zd, g.qoffsetZ],
    ],
    from: 'qform',
  };
}

/** A number for a message: 7 significant digits, float32 noise dropped (0.8999999762 -> 0.9). */
function num(x: number): string {
  return String(Number(x.toPrecision(7)));
}

/**
 * Checks that `b` lies on `a`'s grid (dims are the caller's check): each spacing pixdim[1..3] (as the
 * framework uses it: absolute, 0 read as 1) within `tolerance` mm, and the two affines (`geometryAffine`)
 * placing every voxel centre within `tolerance` mm of each other; the distance of two affine maps is
 * largest at a corner of the grid, so the 8 corners are compared. The affines are compared only when both
 * files state one (a file with qform_code = sform_code = 0 has no orientation to disagree with); which
 * field each comes from does not matter (BraTS 2015's images carry an sform, its labels a qform, equal).
 * Errors name both files, the field, both values and what to do.
 */
export function checkSameGeometry(a: NiftiImage, b: NiftiImage, tolerance = DEFAULT_GEOMETRY_TOLERANCE): void {
  const fix = `resample this file onto the other's grid (nearest-neighbour for a label map), or, if the difference is only rounding, raise the dataset setting geometryTolerance (now ${tolerance} mm)`;
  const spacing = (g: NiftiGeometry, i: number) => Math.abs(g.pixDims[i]!) || 1;
  for (let i = 0; i < 3; i++) {
    const sa = spacing(a.geometry, i);
    const sb = spacing(b.geometry, i);
    // Written so that NaN fails too.
    if (!(Math.abs(sa - sb) <= tolerance)) {
      throw new NiftiError(
        b.source,
        `spacing pixdim[${i + 1}] = ${num(sb)} differs from ${num(sa)} of ${a.source} by ${num(Math.abs(sa - sb))} mm, more than ${tolerance} mm; ${fix}`,
      );
    }
  }
  const A = geometryAffine(a.geometry);
  const B = geometryAffine(b.geometry);
  if (!A || !B) return;
  const [nx, ny, nz] = a.spatial;
  let worst = -1;
  let worstAt: number[] = [0, 0, 0];
  // The largest displacement along each world axis, to show only the rows that disagree.
  const perRow = [0, 0, 0];
  for (const i of [0, nx - 1])
    for (const j of [0, ny - 1])
      for (const k of [0, nz - 1]) {
        let d2 = 0;
        for (let r = 0; r < 3; r++) {
          const ra = A.rows[r]!;
          const rb = B.rows[r]!;
          const delta = (ra[0]! - rb[0]!) * i + (ra[1]! - rb[1]!) * j + (ra[2]! - rb[2]!) * k + (ra[3]! - rb[3]!);
          if (!(Math.abs(delta) <= perRow[r]!)) perRow[r] = Math.abs(delta);
          d2 += delta * delta;
        }
        const dist = Math.sqrt(d2);
        if (!(dist <= worst)) {
          worst = dist;
          worstAt = [i, j, k];
        }
      }
  if (!(worst <= tolerance)) {
    const names = A.from === 'sform' && B.from === 'sform' ? ['srow_x', 'srow_y', 'srow_z'] : ['affine row x', 'affine row y', 'affine row z'];
    const row = (rows: number[][], r: number) => `[${rows[r]!.map(num).join(', ')}]`;
    let differing = [0, 1, 2].filter((r) => !(perRow[r]! <= tolerance));
    if (differing.length === 0) differing = [perRow.indexOf(Math.max(...perRow))];
    const label = (x: NiftiAffine) => (x.from === 'sform' ? 'sform' : 'qform (as a matrix)');
    throw new NiftiError(
      b.source,
      `affine differs from that of ${a.source}: ${differing.map((r) => `${names[r]} ${row(B.rows, r)} vs ${row(A.rows, r)}`).join('; ')} (${label(B)} vs ${label(A)}); voxel (i=${worstAt[0]}, j=${worstAt[1]}, k=${worstAt[2]}) lies ${num(worst)} mm apart in the two, more than ${tolerance} mm; ${fix}`,
    );
  }
}

/**
 * Z-scores one channel of a channels-last image in place over the voxels `select` accepts (all when
 * absent); the others are set to 0 (background stays background, as in BraTS preprocessing).
 */
export function zscoreChannel(
  image: Float32Array,
  channels: number,
  c: number,
  select: (value: number) => boolean = () => true,
): void {
  let n = 0;
  let sum = 0;
  let sumSq = 0;
  for (let i = c; i < image.length; i += channels) {
    const v = image[i]!;
    if (!select(v)) continue;
    n++;
    sum += v;
    sumSq += v * v;
  }
  if (n === 0) return;
  const mean = sum / n;
  const variance = Math.max(0, sumSq / n - mean * mean);
  // A constant channel: centre it, do not divide by ~0.
  const inv = variance > 1e-12 ? 1 / Math.sqrt(variance) : 1;
  for (let i = c; i < image.length; i += channels) {
    const v = image[i]!;
    image[i] = select(v) ? (v - mean) * inv : 0;
  }
}
