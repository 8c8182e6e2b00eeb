/**
 * NIfTI reading and writing (core/io/nifti.ts):
 * - every .nii/.nii.gz under ../shared/data (beside the project) is read and checked against values
 *   recorded once with an independent path (nifti-reader-js's header parser and decompression, its
 *   readImage, and a checksum computed separately: /EXPECTED below); headers are also cross-checked live
 *   against nifti-reader-js;
 * - hand-made files cover what the real data does not: big endian, scaling, float64, NIfTI-2, 5-D,
 *   unaligned data, and the errors;
 * - a label map written with writeNiftiLabel reads back with the same geometry and values.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, readdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync, gunzipSync, constants as zlibConstants } from 'node:zlib';
import * as niftiReader from 'nifti-reader-js';
import {
  readNifti,
  readNiftiRaw,
  readNiftiHeader,
  writeNiftiLabel,
  writeNifti,
  volumeFromNifti,
  labelsFromNifti,
  decodeNifti,
  type NiftiImage,
} from '../core/io/nifti.js';
import type { NiftiGeometry } from '../core/types.js';

const here = dirname(fileURLToPath(import.meta.url));
const DATA = resolve(here, '../../shared/data');
const hasData = existsSync(DATA);
if (!hasData) console.warn(`nifti.test: real-data checks skipped: ${DATA} not found (the shared data folder beside the project)`);

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : /\.nii(\.gz)?$/.test(e.name) ? [join(dir, e.name)] : [],
  );
}

/** Order-sensitive checksum of the voxel values (float64 sums of the float32 values). */
function checksum(data: Float32Array): { sum: number; wsum: number; min: number; max: number } {
  let sum = 0,
    wsum = 0,
    min = Infinity,
    max = -Infinity;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    sum += v;
    wsum += v * ((i % 9973) + 1);
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { sum, wsum, min, max };
}

/** Runs `fn` over `items` with at most `limit` in flight (bounded memory: BraTS volumes are 35 MB each). */
async function pool<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

/** The header as nifti-reader-js reads it from the start of the (decompressed) file. */
function referenceHeader(file: string) {
  let bytes: Uint8Array = readFileSync(file).subarray(0, 64 * 1024);
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) bytes = gunzipSync(bytes, { finishFlush: zlibConstants.Z_SYNC_FLUSH });
  return niftiReader.readHeader(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
}

describe.skipIf(!hasData)('every NIfTI file under ../shared/data', () => {
  it('finds exactly the recorded files', () => {
    const found = walk(DATA).map((f) => relative(DATA, f)).sort();
    expect(found).toEqual(EXPECTED.map((e) => e[0]));
  });

  it('reads dims, datatype, scaling and voxel values as the independent reference does', async () => {
    const t0 = performance.now();
    const results = await pool(EXPECTED, 8, async ([rel, dtype, dims, slope, inter, sum, wsum, min, max]) => {
      const file = join(DATA, rel);
      const img = await readNifti(file);
      const c = checksum(img.data);
      expect(img.dims, rel).toEqual(dims);
      expect(img.spatial, rel).toEqual([dims[0], dims[1] ?? 1, dims[2] ?? 1]);
      expect(img.datatypeName, rel).toBe(dtype);
      expect(img.sclSlope, rel).toBe(slope);
      expect(img.sclInter, rel).toBe(inter);
      expect(img.data.length, rel).toBe(dims.reduce((a, b) => a * b, 1));
      expect(c.min, rel).toBe(min);
      expect(c.max, rel).toBe(max);
      expect(Math.abs(c.sum - sum), rel).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(sum)));
      expect(Math.abs(c.wsum - wsum), rel).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(wsum)));

      // Geometry against nifti-reader-js's header.
      const h = referenceHeader(file);
      const g = img.geometry;
      expect(img.littleEndian, rel).toBe(h.littleEndian);
      expect(img.header.voxOffset, rel).toBe(h.vox_offset);
      expect(g.dims, rel).toEqual(h.dims.slice(1, 4));
      expect(g.pixDims, rel).toEqual(h.pixDims.slice(1, 4));
      expect(g.qformCode, rel).toBe(h.qform_code);
      expect(g.sformCode, rel).toBe(h.sform_code);
      expect([g.quaternB, g.quaternC, g.quaternD], rel).toEqual([h.quatern_b, h.quatern_c, h.quatern_d]);
      expect([g.qoffsetX, g.qoffsetY, g.qoffsetZ], rel).toEqual([h.qoffset_x, h.qoffset_y, h.qoffset_z]);
      expect(g.xyztUnits, rel).toBe(h.xyzt_units);
      // nifti-reader-js exposes the srow rows as its affine when the sform is the chosen transform.
      if (h.sform_code > 0 && h.sform_code >= h.qform_code) expect(g.srow, rel).toEqual(h.affine.slice(0, 3));
      const values = /brainmask|OTMultiClass|labelsTr/.test(rel) ? [...new Set(img.data)].sort((a, b) => a - b) : undefined;
      return { rel, dtype, slope, values };
    });
    const ms = performance.now() - t0;
    console.log(`nifti.test: read and checked ${results.length} files in ${(ms / 1000).toFixed(1)} s`);

    // Sanity of the recorded values themselves.
    const masks = results.filter((r) => r.rel.endsWith('brainmask.nii.gz'));
    expect(masks.length).toBe(4);
    for (const m of masks) {
      expect(m.dtype).toBe('int32');
      expect(m.slope).not.toBe(1); // stored with a scale slope: values only make sense scaled
      expect(m.values).toEqual([0, 1]);
    }
    for (const r of results.filter((r) => r.rel.endsWith('OTMultiClass.nii.gz'))) expect(r.values).toEqual([0, 1, 2, 3, 4]);
    for (const r of results.filter((r) => r.rel.includes('labelsTr'))) expect(r.values).toEqual([0, 1, 2]);
    const msdTypes = new Set(results.filter((r) => r.rel.includes('imagesTr')).map((r) => r.dtype));
    expect([...msdTypes].sort()).toEqual(['float32', 'uint8']);
  });

  it('reads a header alone from the start of a .nii.gz', async () => {
    const file = join(DATA, 'brats2023-unlabeled/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz');
    const h = await readNiftiHeader(file);
    expect(h.dims).toEqual([240, 240, 155]);
    expect(h.datatypeCode).toBe(4);
    expect(h.voxOffset).toBe(2880); // this file carries header extensions
  });

  it('writes a label map aligned with a real image', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nifti-test-'));
    try {
      const src = await readNifti(join(DATA, 'msd-hippocampus/imagesTr/hippocampus_003.nii.gz'));
      const labels = new Uint8Array(src.data.length).map((_, i) => i % 3);
      const out = join(dir, 'pred.nii.gz');
      await writeNiftiLabel(out, labels, src.geometry);
      const back = await readNifti(out);
      expect(back.geometry).toEqual({ ...src.geometry, source: out });
      expect(Array.from(back.data)).toEqual(Array.from(labels));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ------------------------------------------------------------------------------------------------
// Hand-made files

interface MakeOptions {
  version?: 1 | 2;
  le?: boolean;
  datatype: number;
  dims: number[];
  values: number[];
  slope?: number;
  inter?: number;
  voxOffset?: number;
  pixdim?: number[];
}

const SIZES: Record<number, number> = { 2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8 };

/** A test-side NIfTI encoder written from nifti1.h / nifti2.h, independent of the library's writer. */
function makeNifti(o: MakeOptions): Uint8Array {
  const version = o.version ?? 1;
  const le = o.le ?? true;
  const hdr = version === 1 ? 348 : 540;
  const size = SIZES[o.datatype]!;
  const vox = o.voxOffset ?? (version === 1 ? 352 : 544);
  const buf = new Uint8Array(vox + o.values.length * size);
  const dv = new DataView(buf.buffer);
  const pix = o.pixdim ?? [1, 1.5, 2, 2.5, 1, 1, 1, 1];
  dv.setInt32(0, hdr, le);
  if (version === 1) {
    dv.setInt16(40, o.dims.length, le);
    o.dims.forEach((d, i) => dv.setInt16(42 + 2 * i, d, le));
    dv.setInt16(70, o.datatype, le);
    dv.setInt16(72, size * 8, le);
    pix.forEach((p, i) => dv.setFloat32(76 + 4 * i, p, le));
    dv.setFloat32(108, vox, le);
    dv.setFloat32(112, o.slope ?? 1, le);
    dv.setFloat32(116, o.inter ?? 0, le);
    buf[123] = 10;
    dv.setInt16(252, 1, le);
    dv.setInt16(254, 2, le);
    dv.setFloat32(256, 0.25, le);
    dv.setFloat32(268, -10, le);
    [1.5, 0, 0, -10, 0, 2, 0, 20, 0, 0, 2.5, 30].forEach((v, i) => dv.setFloat32(280 + 4 * i, v, le));
    buf.set([0x6e, 0x2b, 0x31, 0], 344); // 'n+1\0'
  } else {
    buf.set([0x6e, 0x2b, 0x32, 0, 0x0d, 0x0a, 0x1a, 0x0a], 4); // 'n+2\0\r\n\032\n'
    dv.setInt16(12, o.datatype, le);
    dv.setInt16(14, size * 8, le);
    dv.setBigInt64(16, BigInt(o.dims.length), le);
    o.dims.forEach((d, i) => dv.setBigInt64(24 + 8 * i, BigInt(d), le));
    pix.forEach((p, i) => dv.setFloat64(104 + 8 * i, p, le));
    dv.setBigInt64(168, BigInt(vox), le);
    dv.setFloat64(176, o.slope ?? 1, le);
    dv.setFloat64(184, o.inter ?? 0, le);
    dv.setInt32(344, 1, le);
    dv.setInt32(348, 2, le);
    dv.setFloat64(352, 0.25, le);
    dv.setFloat64(376, -10, le);
    [1.5, 0, 0, -10, 0, 2, 0, 20, 0, 0, 2.5, 30].forEach((v, i) => dv.setFloat64(400 + 8 * i, v, le));
    dv.setInt32(500, 10, le);
  }
  o.values.forEach((v, i) => {
    const at = vox + i * size;
    switch (o.datatype) {
      case 2: dv.setUint8(at, v); break;
      case 256: dv.setInt8(at, v); break;
      case 4: dv.setInt16(at, v, le); break;
      case 512: dv.setUint16(at, v, le); break;
      case 8: dv.setInt32(at, v, le); break;
      case 768: dv.setUint32(at, v, le); break;
      case 16: dv.setFloat32(at, v, le); break;
      case 64: dv.setFloat64(at, v, le); break;
      case 1024: dv.setBigInt64(at, BigInt(v), le); break;
      case 1280: dv.setBigUint64(at, BigInt(v), le); break;
      default: throw new Error(`makeNifti: no writer for datatype ${o.datatype}`);
    }
  });
  return buf;
}

const range = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i));

describe('hand-made NIfTI files', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nifti-test-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const write = (name: string, bytes: Uint8Array) => {
    const p = join(dir, name);
    writeFileSync(p, name.endsWith('.gz') ? gzipSync(bytes) : bytes);
    return p;
  };

  const cases: { name: string; o: MakeOptions; type: string }[] = [
    { name: 'be-int16-scaled.nii.gz', type: 'int16', o: { le: false, datatype: 4, dims: [4, 3, 2], values: range(24, (i) => (i - 12) * 1000), slope: 0.5, inter: -3 } },
    { name: 'be-int16-scaled.nii', type: 'int16', o: { le: false, datatype: 4, dims: [4, 3, 2], values: range(24, (i) => (i - 12) * 1000), slope: 0.5, inter: -3 } },
    { name: 'le-float64-4d.nii.gz', type: 'float64', o: { datatype: 64, dims: [3, 2, 2, 2], values: range(24, (i) => Math.sin(i) * 1e3) } },
    { name: 'be-float64.nii', type: 'float64', o: { le: false, datatype: 64, dims: [5, 1, 2], values: range(10, (i) => 1 / (i + 1)) } },
    { name: 'nifti2-le-float32.nii.gz', type: 'float32', o: { version: 2, datatype: 16, dims: [3, 4, 5], values: range(60, (i) => i * 0.25 - 7) } },
    { name: 'nifti2-be-int32-scaled.nii', type: 'int32', o: { version: 2, le: false, datatype: 8, dims: [2, 3, 4], values: range(24, (i) => (i - 10) * 123456), slope: 2, inter: 1 } },
    { name: 'five-d.nii.gz', type: 'uint16', o: { datatype: 512, dims: [3, 4, 2, 1, 3], values: range(72, (i) => i * 900) } },
    { name: 'int8.nii', type: 'int8', o: { datatype: 256, dims: [4, 4, 1], values: range(16, (i) => i * 16 - 128) } },
    { name: 'uint8.nii', type: 'uint8', o: { datatype: 2, dims: [4, 4, 1], values: range(16, (i) => i * 16) } },
    { name: 'be-uint32.nii', type: 'uint32', o: { le: false, datatype: 768, dims: [2, 2, 2], values: range(8, (i) => 4e9 - i * 1e8) } },
    { name: 'int64.nii', type: 'int64', o: { datatype: 1024, dims: [2, 2, 2], values: range(8, (i) => (i - 4) * 1e12) } },
    { name: 'be-uint64.nii', type: 'uint64', o: { le: false, datatype: 1280, dims: [2, 2, 2], values: range(8, (i) => i * 1e12) } },
    // vox_offset not a multiple of the voxel size: the data cannot be viewed in place.
    { name: 'unaligned-float32.nii', type: 'float32', o: { datatype: 16, dims: [3, 3, 3], values: range(27, (i) => i - 13.5), voxOffset: 353 } },
    { name: 'slope-zero.nii', type: 'int16', o: { datatype: 4, dims: [2, 2, 2], values: range(8, (i) => i), slope: 0, inter: 5 } },
  ];

  for (const { name, o, type } of cases) {
    it(`reads ${name} exactly`, async () => {
      const p = write(name, makeNifti(o));
      const img = await readNifti(p);
      const slope = o.slope ?? 1;
      const inter = o.inter ?? 0;
      const scaled = slope !== 0 && !(slope === 1 && inter === 0);
      expect(img.version).toBe(o.version ?? 1);
      expect(img.littleEndian).toBe(o.le ?? true);
      expect(img.dims).toEqual(o.dims);
      expect(img.datatypeName).toBe(type);
      expect(img.data.length).toBe(o.dims.reduce((a, b) => a * b, 1));
      expect(Array.from(img.data)).toEqual(o.values.map((v) => Math.fround(scaled ? v * slope + inter : v)));
      // Geometry fields (stored as float32 in NIfTI-1, float64 in NIfTI-2: these values are exact in both).
      expect(img.geometry.pixDims).toEqual([1.5, 2, 2.5]);
      expect(img.geometry.qformCode).toBe(1);
      expect(img.geometry.sformCode).toBe(2);
      expect(img.geometry.quaternB).toBe(0.25);
      expect(img.geometry.qoffsetX).toBe(-10);
      expect(img.geometry.srow).toEqual([
        [1.5, 0, 0, -10],
        [0, 2, 0, 20],
        [0, 0, 2.5, 30],
      ]);
      expect(img.geometry.xyztUnits).toBe(10);
      // The raw values keep their stored type.
      const raw = await readNiftiRaw(p);
      expect(raw.header.dims).toEqual(o.dims);
      expect(Array.from(raw.raw, Number)).toEqual(o.values.map((v) => (type === 'float32' ? Math.fround(v) : v)));
    });
  }

  it('5-D: the voxel count is the product of all dims, not only the first five', async () => {
    const dims = [2, 2, 2, 1, 2, 3];
    const p = write('six-d.nii', makeNifti({ datatype: 4, dims, values: range(48, (i) => i) }));
    const img = await readNifti(p);
    expect(img.data.length).toBe(48);
    expect(img.data[47]).toBe(47);
  });

  it('names the file and the problem when a file is not NIfTI', async () => {
    const p = write('noise.nii', new Uint8Array(400).map((_, i) => (i * 7) & 0xff));
    await expect(readNifti(p)).rejects.toThrow(/noise\.nii: not a NIfTI file/);
  });

  it('reports a truncated image with the expected and actual byte counts', async () => {
    const full = makeNifti({ datatype: 16, dims: [4, 4, 4], values: range(64, (i) => i) });
    const p = write('truncated.nii.gz', full.subarray(0, 352 + 100));
    await expect(readNifti(p)).rejects.toThrow(/truncated\.nii\.gz: truncated image: .* need 256 bytes after vox_offset 352, got 100/);
  });

  it('reports a corrupt gzip stream', async () => {
    const gz = gzipSync(makeNifti({ datatype: 2, dims: [8, 8, 8], values: range(512, (i) => i & 0xff) }));
    const p = join(dir, 'cut.nii.gz');
    writeFileSync(p, gz.subarray(0, gz.length - 20));
    await expect(readNifti(p)).rejects.toThrow(/cut\.nii\.gz: cannot decompress/);
  });

  it('reports an unsupported datatype by code and name', async () => {
    const p = write('complex.nii', makeNifti({ datatype: 32, dims: [2, 1, 1], values: [] }));
    await expect(readNifti(p)).rejects.toThrow(/complex\.nii: unsupported datatype code 32 \(complex64\)/);
  });

  it('decodes from a Buffer slice of a pooled buffer (byteOffset ≠ 0)', () => {
    const bytes = makeNifti({ datatype: 4, dims: [2, 2, 1], values: [1, -2, 3, -4] });
    const pooled = new Uint8Array(bytes.length + 3);
    pooled.set(bytes, 3);
    const img = decodeNifti(pooled.subarray(3), 'pooled');
    expect(Array.from(img.data)).toEqual([1, -2, 3, -4]);
  });
});

describe('label maps and volumes', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nifti-label-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const geometry: NiftiGeometry = {
    dims: [5, 4, 3],
    pixDims: [0.8, 0.9, 3],
    qformCode: 1,
    sformCode: 4,
    quaternB: 0,
    quaternC: 1,
    quaternD: 0,
    qoffsetX: 90.5,
    qoffsetY: -126.25,
    qoffsetZ: -72,
    qfac: -1,
    srow: [
      [-0.8, 0, 0, 90.5],
      [0, 0.9, 0, -126.25],
      [0, 0, -3, 12],
    ],
    xyztUnits: 2,
  };

  for (const ext of ['.nii', '.nii.gz']) {
    it(`writes a uint8 label map (${ext}) that reads back with the same geometry and values`, async () => {
      const labels = new Uint8Array(60).map((_, i) => [0, 1, 2, 4][i % 4]!);
      const out = join(dir, `labels${ext}`);
      await writeNiftiLabel(out, labels, geometry);
      const back = await readNifti(out);
      expect(back.version).toBe(1);
      expect(back.datatypeName).toBe('uint8');
      expect(back.dims).toEqual([5, 4, 3]);
      expect(back.sclSlope).toBe(1);
      expect(back.sclInter).toBe(0);
      expect(back.header.voxOffset).toBe(352);
      expect(back.header.magic).toBe('n+1');
      expect(back.header.pixDims[0]).toBe(-1);
      const f = Math.fround;
      expect(back.geometry).toEqual({
        ...geometry,
        pixDims: geometry.pixDims.map(f),
        srow: geometry.srow.map((r) => r.map(f)),
        source: out,
      });
      expect(Array.from(back.data)).toEqual(Array.from(labels));
      // And nifti-reader-js agrees on the header we wrote.
      let bytes: Uint8Array = readFileSync(out);
      if (ext === '.nii.gz') bytes = gunzipSync(bytes);
      const h = niftiReader.readHeader(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
      expect(h.dims.slice(0, 4)).toEqual([3, 5, 4, 3]);
      expect(h.datatypeCode).toBe(2);
      expect(h.vox_offset).toBe(352);
      expect(h.affine.slice(0, 3)).toEqual(geometry.srow.map((r) => r.map(f)));
      expect(h.pixDims[0]).toBe(-1); // qfac
    });
  }

  it('refuses labels whose length does not match the geometry', async () => {
    await expect(writeNiftiLabel(join(dir, 'bad.nii.gz'), new Uint8Array(59), geometry)).rejects.toThrow(
      /bad\.nii\.gz: cannot write the label map: 59 labels given but the geometry .*5×4×3 = 60/,
    );
  });

  it('writes float32 images too', async () => {
    const out = join(dir, 'prob.nii.gz');
    const data = new Float32Array(60).map((_, i) => i / 60);
    await writeNifti(out, data, geometry);
    const back = await readNifti(out);
    expect(back.datatypeName).toBe('float32');
    expect(Array.from(back.data)).toEqual(Array.from(data));
  });

  const image = (source: string, dims: number[], f: (i: number) => number): NiftiImage =>
    decodeNifti(makeNifti({ datatype: 16, dims, values: range(dims.reduce((a, b) => a * b, 1), f) }), source);

  it('interleaves co-registered modalities channels-last; 4-D images give several channels', () => {
    const a = image('a.nii', [3, 2, 2], (i) => i);
    const b = image('b.nii', [3, 2, 2, 2], (i) => 100 + i);
    const v = volumeFromNifti('case', [a, b]);
    expect(v.shape).toEqual([2, 2, 3]);
    expect(v.channels).toBe(3);
    expect(v.spacing).toEqual([2.5, 2, 1.5]);
    // voxel (z=1, y=0, x=2): index (1*2+0)*3+2 = 8
    expect(Array.from(v.image.subarray(8 * 3, 8 * 3 + 3))).toEqual([8, 108, 120]);
  });

  it("gives the spacing in mm from the header's spatial unit (xyzt_units: micron, metre; unknown counts as mm)", () => {
    const withUnits = (units: number): NiftiImage => {
      const bytes = makeNifti({ datatype: 16, dims: [3, 2, 2], values: range(12, (i) => i) });
      bytes[123] = units;
      return decodeNifti(bytes, `units-${units}.nii`);
    };
    expect(volumeFromNifti('case', [withUnits(3 | 8)]).spacing).toEqual([2.5e-3, 2e-3, 1.5e-3]);
    expect(volumeFromNifti('case', [withUnits(1)]).spacing).toEqual([2500, 2000, 1500]);
    expect(volumeFromNifti('case', [withUnits(0)]).spacing).toEqual([2.5, 2, 1.5]);
    expect(volumeFromNifti('case', [withUnits(2)]).spacing).toEqual([2.5, 2, 1.5]);
    // The geometry (for writing predictions) keeps the header's own numbers and unit.
    expect(withUnits(3).geometry.pixDims).toEqual([1.5, 2, 2.5]);
  });

  it('names both files when modalities are not on one grid', () => {
    const a = image('t1.nii', [3, 2, 2], () => 0);
    const b = image('flair.nii', [3, 2, 3], () => 0);
    expect(() => volumeFromNifti('case', [a, b])).toThrow(/flair\.nii: spatial dims 3×2×3 differ from 3×2×2 of t1\.nii/);
  });

  it('maps labels and rejects values outside the task with the file, the value and a fix', () => {
    const seg = image('seg.nii', [2, 2, 1], (i) => [0, 1, 3, 4][i]!);
    expect(Array.from(labelsFromNifti(seg, { allowed: [1, 2, 4], labelMap: { '3': 1 } }))).toEqual([0, 1, 1, 4]);
    expect(() => labelsFromNifti(seg, { allowed: [1, 2, 4] })).toThrow(/seg\.nii: label value 3 at voxel \(x=0, y=1, z=0\) .*labelMap/);
  });
});

type Expected = [path: string, datatype: string, dims: number[], sclSlope: number, sclInter: number, sum: number, weightedSum: number, min: number, max: number];

/**
 * Recorded once with nifti-reader-js 0.8 (readHeader, decompress, readImage), values scaled in float64
 * then rounded to float32, checksums as in `checksum` above. Re-record only when the data changes.
 */
const EXPECTED: Expected[] = [
  ["brats2015-sample/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz", 'float32', [240,240,155], 1, 0, -22864254.22033496, -114018214792.35092, -3.1607306003570557, 8.377274513244629],
  ["brats2015-sample/brats_2013_pat0003_1/OTMultiClass.nii.gz", 'float32', [240,240,155], 1, 0, 392266, 1956264012, 0, 4],
  ["brats2015-sample/brats_2013_pat0003_1/T1c_subtrMeanDivStd.nii.gz", 'float32', [240,240,155], 1, 0, -19639608.844917547, -97939999932.80827, -2.7474350929260254, 13.623075485229492],
  ["brats2015-sample/brats_2013_pat0003_1/brainmask.nii.gz", 'int32', [240,240,155], 2.3283064365386963e-10, 0.5, 1690470, 8427927335, 0, 1],
  ["brats2015-sample/brats_2013_pat0004_1/Flair_subtrMeanDivStd.nii.gz", 'float32', [240,240,155], 1, 0, -41048284.229575895, -204671606624.88104, -5.342541217803955, 11.436814308166504],
  ["brats2015-sample/brats_2013_pat0004_1/OTMultiClass.nii.gz", 'float32', [240,240,155], 1, 0, 308723, 1537254216, 0, 4],
  ["brats2015-sample/brats_2013_pat0004_1/T1c_subtrMeanDivStd.nii.gz", 'float32', [240,240,155], 1, 0, -47559321.09791562, -237126085473.0757, -6.152362823486328, 10.746721267700195],
  ["brats2015-sample/brats_2013_pat0004_1/brainmask.nii.gz", 'int32', [240,240,155], 2.3283064365386963e-10, 0.5, 1245191, 6209555357, 0, 1],
  ["brats2015-sample/brats_2013_pat0005_1/Flair_subtrMeanDivStd.nii.gz", 'float32', [240,240,155], 1, 0, -26602269.676627573, -132645786150.47566, -3.552661657333374, 8.676820755004883],
  ["brats2015-sample/brats_2013_pat0005_1/OTMultiClass.nii.gz", 'float32', [240,240,155], 1, 0, 178924, 892370189, 0, 4],
  ["brats2015-sample/brats_2013_pat0005_1/T1c_subtrMeanDivStd.nii.gz", 'float32', [240,240,155], 1, 0, -25743065.757044736, -128351232794.22768, -3.459571361541748, 11.90349006652832],
  ["brats2015-sample/brats_2013_pat0005_1/brainmask.nii.gz", 'int32', [240,240,155], 2.3283064365386963e-10, 0.5, 1523743, 7602177114, 0, 1],
  ["brats2015-sample/brats_2013_pat0006_1/Flair_subtrMeanDivStd.nii.gz", 'float32', [240,240,155], 1, 0, -29866526.857368283, -148902674855.4032, -3.7994637489318848, 4.891417980194092],
  ["brats2015-sample/brats_2013_pat0006_1/OTMultiClass.nii.gz", 'float32', [240,240,155], 1, 0, 501908, 2505013523, 0, 4],
  ["brats2015-sample/brats_2013_pat0006_1/T1c_subtrMeanDivStd.nii.gz", 'float32', [240,240,155], 1, 0, -44218787.36661101, -220462756084.04843, -5.61391019821167, 12.992258071899414],
  ["brats2015-sample/brats_2013_pat0006_1/brainmask.nii.gz", 'int32', [240,240,155], 2.3283064365386963e-10, 0.5, 1084095, 5408599667, 0, 1],
  ["brats2023-unlabeled/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1c.nii.gz", 'int16', [240,240,155], 1, 0, 4911930402, 24491882778046, 0, 15462],
  ["brats2023-unlabeled/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t1n.nii.gz", 'int16', [240,240,155], 1, 0, 1556285622, 7759961900699, 0, 2921],
  ["brats2023-unlabeled/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2f.nii.gz", 'int16', [240,240,155], 1, 0, 1688412965, 8417520087725, 0, 3119],
  ["brats2023-unlabeled/BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2w.nii.gz", 'int16', [240,240,155], 1, 0, 1138999067, 5679506757979, 0, 3689],
  ["msd-hippocampus/imagesTr/hippocampus_003.nii.gz", 'float32', [34,52,35], 1, 0, 29866089.86869049, 145666175744.01166, 0, 2776.880126953125],
  ["msd-hippocampus/imagesTr/hippocampus_004.nii.gz", 'float32', [36,52,38], 1, 0, 32283542.735387802, 159195179548.7746, 0, 2252.49072265625],
  ["msd-hippocampus/imagesTr/hippocampus_006.nii.gz", 'float32', [35,52,34], 1, 0, 43563274.95473862, 213526756623.25153, 0, 3845.227783203125],
  ["msd-hippocampus/imagesTr/hippocampus_008.nii.gz", 'float32', [36,48,40], 1, 0, 37138719.38647127, 184317728844.81915, 0, 3108.34912109375],
  ["msd-hippocampus/imagesTr/hippocampus_011.nii.gz", 'float32', [36,50,31], 1, 0, 30889206.755447388, 147402690812.2099, 0, 1728.1971435546875],
  ["msd-hippocampus/imagesTr/hippocampus_014.nii.gz", 'float32', [39,50,40], 1, 0, 39692945.75586128, 194626195423.54785, 0, 2302.77783203125],
  ["msd-hippocampus/imagesTr/hippocampus_017.nii.gz", 'float32', [35,48,32], 1, 0, 27162965.445215225, 130378618857.85063, 0, 1045.75048828125],
  ["msd-hippocampus/imagesTr/hippocampus_019.nii.gz", 'float32', [36,47,41], 1, 0, 51877199.10291195, 258690747962.21487, 0, 3264.88720703125],
  ["msd-hippocampus/imagesTr/hippocampus_020.nii.gz", 'float32', [36,46,43], 1, 0, 51599638.86939716, 254959203927.45517, 0, 4215.65087890625],
  ["msd-hippocampus/imagesTr/hippocampus_024.nii.gz", 'float32', [38,52,33], 1, 0, 46318185.04326916, 222996388437.68442, 0, 3696.773681640625],
  ["msd-hippocampus/imagesTr/hippocampus_025.nii.gz", 'float32', [35,48,35], 1, 0, 30196227.09130764, 149860272219.34024, 0, 2510.9287109375],
  ["msd-hippocampus/imagesTr/hippocampus_026.nii.gz", 'float32', [36,50,36], 1, 0, 32462048.730137825, 156238468804.4161, 0, 2670.5478515625],
  ["msd-hippocampus/imagesTr/hippocampus_034.nii.gz", 'uint8', [36,49,40], 1, 0, 4601269, 22793550338, 2, 255],
  ["msd-hippocampus/imagesTr/hippocampus_035.nii.gz", 'float32', [35,47,37], 1, 0, 39562008.87994385, 194698685175.77295, 0, 2457.139892578125],
  ["msd-hippocampus/imagesTr/hippocampus_036.nii.gz", 'float32', [36,47,39], 1, 0, 43509691.67525482, 210868826881.3193, 0, 3484.540771484375],
  ["msd-hippocampus/imagesTr/hippocampus_038.nii.gz", 'float32', [37,51,35], 1, 0, 23845340.97327757, 115092340820.57465, 0, 1449.8988037109375],
  ["msd-hippocampus/imagesTr/hippocampus_039.nii.gz", 'float32', [34,53,34], 1, 0, 37462588.99057484, 183598083250.82016, 0, 3198.350341796875],
  ["msd-hippocampus/imagesTr/hippocampus_040.nii.gz", 'float32', [36,52,37], 1, 0, 42052813.58665657, 208694729076.38367, 0, 3329.90185546875],
  ["msd-hippocampus/imagesTr/hippocampus_042.nii.gz", 'float32', [37,52,34], 1, 0, 30276530.399606705, 146133750083.5376, 0, 1479.444091796875],
  ["msd-hippocampus/imagesTr/hippocampus_044.nii.gz", 'float32', [38,48,33], 1, 0, 10775892845.195312, 54084473122334.664, 0, 358214.65625],
  ["msd-hippocampus/imagesTr/hippocampus_045.nii.gz", 'float32', [36,48,37], 1, 0, 32943660.48282814, 158232382659.73755, 0, 1048.66943359375],
  ["msd-hippocampus/imagesTr/hippocampus_048.nii.gz", 'float32', [38,52,29], 1, 0, 37683536.036019325, 181536148311.37488, 0, 2711.94091796875],
  ["msd-hippocampus/imagesTr/hippocampus_049.nii.gz", 'float32', [35,51,36], 1, 0, 49169627.35062218, 236399908262.0502, 0, 3000.2294921875],
  ["msd-hippocampus/imagesTr/hippocampus_050.nii.gz", 'float32', [38,49,38], 1, 0, 51041597.46845913, 253013181469.52917, 0, 4375.3349609375],
  ["msd-hippocampus/imagesTr/hippocampus_052.nii.gz", 'float32', [34,52,40], 1, 0, 38222784.29373026, 188511247274.01254, 0, 3305.801513671875],
  ["msd-hippocampus/imagesTr/hippocampus_053.nii.gz", 'float32', [37,51,35], 1, 0, 48536504.22802782, 234694013234.7773, 0, 3659.8369140625],
  ["msd-hippocampus/imagesTr/hippocampus_056.nii.gz", 'float32', [41,47,42], 1, 0, 57732197.408296585, 286596032692.21234, 0, 5335.14501953125],
  ["msd-hippocampus/imagesTr/hippocampus_058.nii.gz", 'float32', [34,53,36], 1, 0, 26159800.094569206, 125908496022.19281, 0, 1179.4508056640625],
  ["msd-hippocampus/imagesTr/hippocampus_060.nii.gz", 'float32', [39,52,31], 1, 0, 23989537.158863068, 116694900270.94026, 0, 1282.4251708984375],
  ["msd-hippocampus/imagesTr/hippocampus_064.nii.gz", 'float32', [35,53,35], 1, 0, 28915696.08294916, 139293362807.31973, 0, 1216.5098876953125],
  ["msd-hippocampus/imagesTr/hippocampus_067.nii.gz", 'float32', [36,42,41], 1, 0, 34541030.090171814, 168082360827.9711, 0, 1695.261962890625],
  ["msd-hippocampus/imagesTr/hippocampus_068.nii.gz", 'float32', [36,40,43], 1, 0, 34146027.31741333, 166597948952.2704, 0, 2253.6220703125],
  ["msd-hippocampus/imagesTr/hippocampus_070.nii.gz", 'uint8', [37,50,38], 1, 0, 5260520, 26106219762, 3, 255],
  ["msd-hippocampus/imagesTr/hippocampus_075.nii.gz", 'uint8', [32,47,41], 1, 0, 3722173, 18135160927, 1, 127],
  ["msd-hippocampus/imagesTr/hippocampus_077.nii.gz", 'float32', [35,47,45], 1, 0, 32778869.10854149, 157699454353.9412, 0, 937.0574340820312],
  ["msd-hippocampus/imagesTr/hippocampus_083.nii.gz", 'float32', [33,52,37], 1, 0, 33416392.753240585, 160464173155.2497, 0, 1796.2095947265625],
  ["msd-hippocampus/imagesTr/hippocampus_087.nii.gz", 'uint8', [35,55,32], 1, 0, 3962137, 19471521331, 2, 180],
  ["msd-hippocampus/imagesTr/hippocampus_088.nii.gz", 'uint8', [40,52,35], 1, 0, 4494988, 21878854395, 1, 247],
  ["msd-hippocampus/imagesTr/hippocampus_089.nii.gz", 'float32', [34,51,38], 1, 0, 35378319.40156937, 170836314882.71313, 0, 2016.725341796875],
  ["msd-hippocampus/imagesTr/hippocampus_091.nii.gz", 'float32', [36,51,29], 1, 0, 21759708.34355879, 103636863886.00235, 0, 853.33349609375],
  ["msd-hippocampus/imagesTr/hippocampus_092.nii.gz", 'float32', [38,49,28], 1, 0, 20637085.555387497, 99852923664.7769, 0, 2178.844970703125],
  ["msd-hippocampus/imagesTr/hippocampus_093.nii.gz", 'float32', [34,53,37], 1, 0, 41763527.94110966, 202029984162.85352, 0, 1720.5361328125],
  ["msd-hippocampus/imagesTr/hippocampus_095.nii.gz", 'float32', [34,49,39], 1, 0, 30850264.264389038, 149169755135.97876, 0, 1972.4071044921875],
  ["msd-hippocampus/imagesTr/hippocampus_096.nii.gz", 'float32', [34,47,39], 1, 0, 28102452.782684326, 136835523134.32434, 0, 1631.84765625],
  ["msd-hippocampus/imagesTr/hippocampus_097.nii.gz", 'float32', [37,48,34], 1, 0, 28757970.542342663, 143123952175.49875, 0, 2011.3023681640625],
  ["msd-hippocampus/imagesTr/hippocampus_099.nii.gz", 'float32', [33,52,27], 1, 0, 25724292.17479086, 122708638963.05128, 0, 1197.227783203125],
  ["msd-hippocampus/imagesTr/hippocampus_101.nii.gz", 'float32', [36,52,32], 1, 0, 29638164.267395973, 148379191812.65854, 0, 2260.95166015625],
  ["msd-hippocampus/imagesTr/hippocampus_102.nii.gz", 'float32', [36,55,32], 1, 0, 29730682.09107685, 143331181901.43463, 0, 2318.9248046875],
  ["msd-hippocampus/imagesTr/hippocampus_105.nii.gz", 'float32', [33,47,37], 1, 0, 30582924.26363945, 147472834868.10278, 0, 1695.5516357421875],
  ["msd-hippocampus/imagesTr/hippocampus_106.nii.gz", 'float32', [34,46,38], 1, 0, 31277029.52943468, 155433576994.24844, 0, 3502.652587890625],
  ["msd-hippocampus/imagesTr/hippocampus_107.nii.gz", 'float32', [35,55,34], 1, 0, 34670006.814036846, 166999494416.30942, 0, 2533.714111328125],
  ["msd-hippocampus/imagesTr/hippocampus_109.nii.gz", 'uint8', [36,49,36], 1, 0, 4169648, 20003148448, 1, 122],
  ["msd-hippocampus/imagesTr/hippocampus_114.nii.gz", 'uint8', [38,50,39], 1, 0, 4527090, 21889209929, 2, 253],
  ["msd-hippocampus/imagesTr/hippocampus_118.nii.gz", 'uint8', [37,52,33], 1, 0, 3711864, 18055563206, 1, 168],
  ["msd-hippocampus/imagesTr/hippocampus_124.nii.gz", 'uint8', [35,55,41], 1, 0, 5620239, 27872623467, 4, 249],
  ["msd-hippocampus/imagesTr/hippocampus_125.nii.gz", 'uint8', [43,42,39], 1, 0, 4835505, 24043088043, 2, 254],
  ["msd-hippocampus/imagesTr/hippocampus_126.nii.gz", 'uint8', [39,44,43], 1, 0, 5024228, 24342389065, 1, 255],
  ["msd-hippocampus/imagesTr/hippocampus_130.nii.gz", 'uint8', [35,49,40], 1, 0, 4217765, 20784966765, 3, 195],
  ["msd-hippocampus/imagesTr/hippocampus_132.nii.gz", 'uint8', [36,50,40], 1, 0, 4141335, 20206806954, 2, 254],
  ["msd-hippocampus/imagesTr/hippocampus_133.nii.gz", 'uint8', [39,41,42], 1, 0, 4024960, 19568162262, 2, 197],
  ["msd-hippocampus/imagesTr/hippocampus_136.nii.gz", 'float32', [34,49,41], 1, 0, 14530758920.213867, 71729704062373.89, 0, 638080.6875],
  ["msd-hippocampus/imagesTr/hippocampus_138.nii.gz", 'float32', [32,46,42], 1, 0, 12380827003.603516, 60453092912462.555, 0, 907688.375],
  ["msd-hippocampus/imagesTr/hippocampus_141.nii.gz", 'uint8', [33,44,42], 1, 0, 3499132, 17301104701, 2, 158],
  ["msd-hippocampus/imagesTr/hippocampus_143.nii.gz", 'uint8', [32,45,41], 1, 0, 3231830, 16056576788, 2, 167],
  ["msd-hippocampus/imagesTr/hippocampus_144.nii.gz", 'uint8', [34,45,43], 1, 0, 3523986, 16939728318, 1, 226],
  ["msd-hippocampus/imagesTr/hippocampus_145.nii.gz", 'float32', [36,53,33], 1, 0, 12499510114.976318, 60613164767537.83, 0, 890791.1875],
  ["msd-hippocampus/imagesTr/hippocampus_148.nii.gz", 'uint8', [34,48,32], 1, 0, 2548217, 12299764797, 0, 144],
  ["msd-hippocampus/imagesTr/hippocampus_149.nii.gz", 'uint8', [33,49,32], 1, 0, 3355268, 16280853233, 2, 253],
  ["msd-hippocampus/imagesTr/hippocampus_150.nii.gz", 'uint8', [37,49,34], 1, 0, 3814515, 18695549977, 1, 249],
  ["msd-hippocampus/imagesTr/hippocampus_154.nii.gz", 'uint8', [35,46,42], 1, 0, 3953012, 19318390228, 2, 218],
  ["msd-hippocampus/imagesTr/hippocampus_155.nii.gz", 'float32', [34,53,37], 1, 0, 13925677533.001465, 67051501979266.45, 0, 730528.75],
  ["msd-hippocampus/imagesTr/hippocampus_156.nii.gz", 'float32', [36,52,36], 1, 0, 13873910524.597168, 67211009651819.2, 0, 723826.625],
  ["msd-hippocampus/imagesTr/hippocampus_158.nii.gz", 'float32', [38,52,36], 1, 0, 34694982.90686989, 170631539055.18683, 0, 3137.09130859375],
  ["msd-hippocampus/imagesTr/hippocampus_160.nii.gz", 'float32', [34,51,26], 1, 0, 8853531079.820312, 41865929613886.97, 0, 1012757.75],
  ["msd-hippocampus/imagesTr/hippocampus_161.nii.gz", 'uint8', [35,51,36], 1, 0, 3740480, 17996042342, 1, 249],
  ["msd-hippocampus/imagesTr/hippocampus_163.nii.gz", 'uint8', [36,47,44], 1, 0, 4813607, 23120585529, 0, 152],
  ["msd-hippocampus/imagesTr/hippocampus_164.nii.gz", 'uint8', [41,48,47], 1, 0, 5804793, 28202834817, 2, 187],
  ["msd-hippocampus/imagesTr/hippocampus_165.nii.gz", 'uint8', [34,49,29], 1, 0, 2905328, 14235819854, 1, 187],
  ["msd-hippocampus/imagesTr/hippocampus_169.nii.gz", 'float32', [36,45,39], 1, 0, 14657755835.788818, 70952609060635.9, 0, 965799],
  ["msd-hippocampus/imagesTr/hippocampus_170.nii.gz", 'float32', [34,48,40], 1, 0, 15192357992.752686, 72935069658246.84, 0, 1144765],
  ["msd-hippocampus/imagesTr/hippocampus_171.nii.gz", 'uint8', [35,56,28], 1, 0, 3334070, 15929930951, 2, 125],
  ["msd-hippocampus/imagesTr/hippocampus_173.nii.gz", 'uint8', [35,53,32], 1, 0, 3593734, 17870574982, 2, 252],
  ["msd-hippocampus/imagesTr/hippocampus_174.nii.gz", 'uint8', [37,55,34], 1, 0, 4105309, 20496349494, 1, 255],
  ["msd-hippocampus/imagesTr/hippocampus_175.nii.gz", 'float32', [33,47,35], 1, 0, 21682706.60966444, 103228504757.14883, 0, 1719.46630859375],
  ["msd-hippocampus/imagesTr/hippocampus_177.nii.gz", 'uint8', [33,44,40], 1, 0, 3804929, 18573612790, 2, 175],
  ["msd-hippocampus/imagesTr/hippocampus_178.nii.gz", 'uint8', [35,44,41], 1, 0, 4300856, 20735886759, 1, 255],
  ["msd-hippocampus/imagesTr/hippocampus_180.nii.gz", 'float32', [37,45,36], 1, 0, 14137718140.476562, 71098837220442.38, 0, 873765.75],
  ["msd-hippocampus/imagesTr/hippocampus_184.nii.gz", 'float32', [37,51,33], 1, 0, 15973889012.34253, 77845930525452.66, 0, 1238179.5],
  ["msd-hippocampus/imagesTr/hippocampus_185.nii.gz", 'float32', [35,49,33], 1, 0, 11365492117.408203, 54595652422363.22, 0, 943558.375],
  ["msd-hippocampus/imagesTr/hippocampus_188.nii.gz", 'float32', [37,54,36], 1, 0, 17726630394.33008, 86430881241523.53, 0, 518991.0625],
  ["msd-hippocampus/imagesTr/hippocampus_190.nii.gz", 'float32', [37,52,30], 1, 0, 14973880779.638428, 73442341383632.28, 0, 1165785.875],
  ["msd-hippocampus/imagesTr/hippocampus_193.nii.gz", 'float32', [33,50,29], 1, 0, 12156725682.79834, 58772018092802.59, 0, 625263.75],
  ["msd-hippocampus/imagesTr/hippocampus_194.nii.gz", 'float32', [35,50,30], 1, 0, 12819742421.800293, 61513365035678.734, 0, 560581.3125],
  ["msd-hippocampus/imagesTr/hippocampus_197.nii.gz", 'uint8', [38,51,31], 1, 0, 3748849, 18771208011, 1, 145],
  ["msd-hippocampus/imagesTr/hippocampus_199.nii.gz", 'float32', [37,52,26], 1, 0, 11957302575.46875, 60311160946434.28, 0, 548772.625],
  ["msd-hippocampus/imagesTr/hippocampus_203.nii.gz", 'float32', [34,49,38], 1, 0, 14366500816.054688, 69698798905328.055, 0, 963321.0625],
  ["msd-hippocampus/imagesTr/hippocampus_205.nii.gz", 'float32', [32,47,32], 1, 0, 13015031386.750244, 63565529203647.625, 0, 1432837.375],
  ["msd-hippocampus/imagesTr/hippocampus_207.nii.gz", 'float32', [35,53,33], 1, 0, 15653981962.8125, 76816997119710.62, 0, 544567],
  ["msd-hippocampus/imagesTr/hippocampus_210.nii.gz", 'float32', [34,48,40], 1, 0, 18246570974.592773, 87502039253673.34, 0, 1704295.25],
  ["msd-hippocampus/imagesTr/hippocampus_215.nii.gz", 'float32', [35,49,33], 1, 0, 11602657017.277344, 55701254381642.52, 0, 437079.4375],
  ["msd-hippocampus/imagesTr/hippocampus_216.nii.gz", 'float32', [32,49,36], 1, 0, 11357266793.544678, 54537143916424.28, 0, 537702],
  ["msd-hippocampus/imagesTr/hippocampus_217.nii.gz", 'float32', [38,53,27], 1, 0, 15192209732.915527, 73041045787118.72, 0, 564939.25],
  ["msd-hippocampus/imagesTr/hippocampus_220.nii.gz", 'uint8', [39,45,40], 1, 0, 4492724, 22447191669, 1, 199],
  ["msd-hippocampus/imagesTr/hippocampus_221.nii.gz", 'uint8', [32,48,34], 1, 0, 2852961, 13740071865, 2, 127],
  ["msd-hippocampus/imagesTr/hippocampus_222.nii.gz", 'uint8', [34,49,36], 1, 0, 3357983, 17094178582, 3, 136],
  ["msd-hippocampus/imagesTr/hippocampus_224.nii.gz", 'float32', [37,48,37], 1, 0, 44335678.778240204, 213711257135.10452, 0, 2882.640380859375],
  ["msd-hippocampus/imagesTr/hippocampus_225.nii.gz", 'float32', [33,53,26], 1, 0, 25424764.96857834, 120551091422.40993, 0, 1860.8719482421875],
  ["msd-hippocampus/imagesTr/hippocampus_226.nii.gz", 'float32', [32,51,28], 1, 0, 25650925.079143524, 122164726665.07135, 0, 2045.35498046875],
  ["msd-hippocampus/imagesTr/hippocampus_228.nii.gz", 'float32', [37,48,36], 1, 0, 36592580.65367317, 175640810006.83655, 0, 2109.20556640625],
  ["msd-hippocampus/imagesTr/hippocampus_229.nii.gz", 'float32', [33,50,35], 1, 0, 26790133.07406807, 130448050799.98392, 0, 1944.87841796875],
  ["msd-hippocampus/imagesTr/hippocampus_230.nii.gz", 'float32', [34,49,37], 1, 0, 27985547.19491768, 137728065672.71182, 0, 1458.6588134765625],
  ["msd-hippocampus/imagesTr/hippocampus_232.nii.gz", 'float32', [36,44,43], 1, 0, 31319308.82441473, 153816969670.87003, 0, 1368.2801513671875],
  ["msd-hippocampus/imagesTr/hippocampus_233.nii.gz", 'float32', [33,51,37], 1, 0, 36264355.47147274, 176965883934.3815, 0, 3079.072021484375],
  ["msd-hippocampus/imagesTr/hippocampus_234.nii.gz", 'float32', [38,49,36], 1, 0, 37923852.1178956, 184337050246.1985, 0, 2632.6064453125],
  ["msd-hippocampus/imagesTr/hippocampus_236.nii.gz", 'float32', [37,57,35], 1, 0, 27113109.980320454, 131696163348.42819, 0, 925.2974853515625],
  ["msd-hippocampus/imagesTr/hippocampus_238.nii.gz", 'float32', [37,56,36], 1, 0, 41758639.28706503, 201318450123.73178, 0, 2345.961669921875],
  ["msd-hippocampus/imagesTr/hippocampus_242.nii.gz", 'uint8', [38,52,34], 1, 0, 4355954, 21149503034, 3, 244],
  ["msd-hippocampus/imagesTr/hippocampus_244.nii.gz", 'float32', [38,53,30], 1, 0, 28654687.29049301, 143628436887.55453, 0, 2270.8486328125],
  ["msd-hippocampus/imagesTr/hippocampus_245.nii.gz", 'float32', [35,48,42], 1, 0, 46362430.054888725, 231032852185.81622, 0, 2936.34423828125],
  ["msd-hippocampus/imagesTr/hippocampus_248.nii.gz", 'float32', [36,50,38], 1, 0, 33500200.27521324, 164959484972.36792, 0, 1789.793212890625],
  ["msd-hippocampus/imagesTr/hippocampus_250.nii.gz", 'float32', [35,51,36], 1, 0, 38045335.65950775, 182785724869.87485, 0, 2818.018310546875],
  ["msd-hippocampus/imagesTr/hippocampus_251.nii.gz", 'uint8', [36,58,28], 1, 0, 3868874, 19039338423, 2, 188],
  ["msd-hippocampus/imagesTr/hippocampus_252.nii.gz", 'uint8', [37,55,26], 1, 0, 3298674, 15956713499, 1, 160],
  ["msd-hippocampus/imagesTr/hippocampus_257.nii.gz", 'float32', [34,51,33], 1, 0, 21303973.62234497, 102936954929.25232, 0, 1205.1490478515625],
  ["msd-hippocampus/imagesTr/hippocampus_259.nii.gz", 'float32', [33,51,28], 1, 0, 23125493.766108036, 111710602916.99654, 0, 1124.77490234375],
  ["msd-hippocampus/imagesTr/hippocampus_260.nii.gz", 'float32', [35,53,29], 1, 0, 25448896.05572033, 121555436472.11995, 0, 1010.001953125],
  ["msd-hippocampus/imagesTr/hippocampus_263.nii.gz", 'uint8', [36,51,35], 1, 0, 4630689, 22292280415, 3, 164],
  ["msd-hippocampus/imagesTr/hippocampus_264.nii.gz", 'uint8', [38,51,37], 1, 0, 5089795, 24990470676, 3, 205],
  ["msd-hippocampus/imagesTr/hippocampus_265.nii.gz", 'float32', [31,54,34], 1, 0, 28974851.68858528, 140961727466.36008, 0, 2007.8165283203125],
  ["msd-hippocampus/imagesTr/hippocampus_269.nii.gz", 'float32', [35,49,37], 1, 0, 48324150.40597439, 233102172697.8519, 0, 2987.561767578125],
  ["msd-hippocampus/imagesTr/hippocampus_274.nii.gz", 'float32', [35,40,40], 1, 0, 24338983.214242935, 116218942176.39429, 0, 2733.372802734375],
  ["msd-hippocampus/imagesTr/hippocampus_276.nii.gz", 'float32', [35,50,33], 1, 0, 31906684.112426758, 155514197901.25012, 0, 2740.70751953125],
  ["msd-hippocampus/imagesTr/hippocampus_279.nii.gz", 'float32', [34,50,32], 1, 0, 21420187.849147797, 102709421678.39911, 0, 1374.9739990234375],
  ["msd-hippocampus/imagesTr/hippocampus_280.nii.gz", 'float32', [37,47,32], 1, 0, 22006508.295485497, 105800711674.29839, 0, 1929.3114013671875],
  ["msd-hippocampus/imagesTr/hippocampus_282.nii.gz", 'float32', [37,52,32], 1, 0, 25771068.574156284, 126541541171.52988, 0, 2793.441162109375],
  ["msd-hippocampus/imagesTr/hippocampus_287.nii.gz", 'float32', [37,50,39], 1, 0, 40610181.3156662, 197990800314.28006, 0, 1389.0240478515625],
  ["msd-hippocampus/imagesTr/hippocampus_288.nii.gz", 'float32', [38,50,42], 1, 0, 43035168.736515045, 215505050210.93808, 0, 3549.02001953125],
  ["msd-hippocampus/imagesTr/hippocampus_289.nii.gz", 'float32', [35,49,36], 1, 0, 25366709.457016945, 123664776974.39574, 0, 1370.0418701171875],
  ["msd-hippocampus/imagesTr/hippocampus_292.nii.gz", 'float32', [38,52,33], 1, 0, 25231205.02693081, 121573354706.28482, 0, 1924.4747314453125],
  ["msd-hippocampus/imagesTr/hippocampus_294.nii.gz", 'float32', [35,44,44], 1, 0, 31397632.334747314, 153390873452.76834, 0, 2044.572998046875],
  ["msd-hippocampus/imagesTr/hippocampus_295.nii.gz", 'float32', [35,53,36], 1, 0, 31675488.135754585, 153008727425.38977, 0, 1942.526123046875],
  ["msd-hippocampus/imagesTr/hippocampus_297.nii.gz", 'float32', [34,51,30], 1, 0, 22955200.17840767, 111603474565.36412, 0, 1844.3236083984375],
  ["msd-hippocampus/imagesTr/hippocampus_298.nii.gz", 'float32', [37,50,33], 1, 0, 24948989.43006611, 122955219965.9544, 0, 2679.489013671875],
  ["msd-hippocampus/imagesTr/hippocampus_299.nii.gz", 'float32', [32,54,34], 1, 0, 41654837.416332245, 206863120312.72058, 0, 1538.503662109375],
  ["msd-hippocampus/imagesTr/hippocampus_301.nii.gz", 'float32', [31,50,36], 1, 0, 30458443.94125843, 145881189172.1493, 0, 3495.23046875],
  ["msd-hippocampus/imagesTr/hippocampus_302.nii.gz", 'float32', [35,46,39], 1, 0, 33224820.158239365, 160736200627.51962, 0, 3196.003173828125],
  ["msd-hippocampus/imagesTr/hippocampus_303.nii.gz", 'float32', [35,48,38], 1, 0, 34732294.47846174, 167871091627.67413, 0, 2559.06005859375],
  ["msd-hippocampus/imagesTr/hippocampus_305.nii.gz", 'float32', [34,49,30], 1, 0, 25407982.132526398, 127062812596.44447, 0, 2200.160400390625],
  ["msd-hippocampus/imagesTr/hippocampus_308.nii.gz", 'uint8', [38,48,40], 1, 0, 4604050, 22287274499, 2, 255],
  ["msd-hippocampus/imagesTr/hippocampus_309.nii.gz", 'float32', [34,52,38], 1, 0, 43230197.77712822, 209187846263.66562, 0, 4261.609375],
  ["msd-hippocampus/imagesTr/hippocampus_311.nii.gz", 'float32', [37,49,37], 1, 0, 28998170.75185871, 140188668877.42883, 0, 2256.28662109375],
  ["msd-hippocampus/imagesTr/hippocampus_314.nii.gz", 'float32', [37,53,33], 1, 0, 19149002.91862297, 91800618230.58296, 0, 893.3036499023438],
  ["msd-hippocampus/imagesTr/hippocampus_316.nii.gz", 'float32', [37,51,33], 1, 0, 21882050.049549103, 106681637958.23648, 0, 1493.7659912109375],
  ["msd-hippocampus/imagesTr/hippocampus_318.nii.gz", 'float32', [37,51,33], 1, 0, 40675637.98821354, 197926827365.6126, 0, 3840.705810546875],
  ["msd-hippocampus/imagesTr/hippocampus_319.nii.gz", 'uint8', [33,48,34], 1, 0, 2710475, 13004349431, 1, 113],
  ["msd-hippocampus/imagesTr/hippocampus_320.nii.gz", 'uint8', [33,47,34], 1, 0, 2705119, 13083449337, 1, 121],
  ["msd-hippocampus/imagesTr/hippocampus_322.nii.gz", 'float32', [38,47,37], 1, 0, 27472824.901714325, 132746917757.6462, 0, 2467.62744140625],
  ["msd-hippocampus/imagesTr/hippocampus_325.nii.gz", 'float32', [35,51,40], 1, 0, 41924397.84341431, 207165231342.91443, 0, 4479.1904296875],
  ["msd-hippocampus/imagesTr/hippocampus_326.nii.gz", 'float32', [36,49,41], 1, 0, 42351306.439453125, 206032185156.90012, 0, 4573.6552734375],
  ["msd-hippocampus/imagesTr/hippocampus_328.nii.gz", 'float32', [38,54,30], 1, 0, 12443740326.332764, 60757052662465.6, 0, 550985.875],
  ["msd-hippocampus/imagesTr/hippocampus_329.nii.gz", 'float32', [34,53,32], 1, 0, 27765966.4153471, 135540528961.73543, 0, 3290.0302734375],
  ["msd-hippocampus/imagesTr/hippocampus_330.nii.gz", 'float32', [35,55,33], 1, 0, 29851696.622447014, 144926652502.18597, 0, 3099.303955078125],
  ["msd-hippocampus/imagesTr/hippocampus_332.nii.gz", 'float32', [35,52,33], 1, 0, 23944672.681362152, 119985699440.52975, 0, 1131.691162109375],
  ["msd-hippocampus/imagesTr/hippocampus_333.nii.gz", 'float32', [33,46,38], 1, 0, 30631824.662224293, 148341286132.28964, 0, 1931.1337890625],
  ["msd-hippocampus/imagesTr/hippocampus_334.nii.gz", 'float32', [34,47,36], 1, 0, 29574433.629904747, 143483856079.93182, 0, 2482.150634765625],
  ["msd-hippocampus/imagesTr/hippocampus_336.nii.gz", 'float32', [34,47,43], 1, 0, 35177384.49736929, 173291256527.38544, 0, 1150.81396484375],
  ["msd-hippocampus/imagesTr/hippocampus_337.nii.gz", 'float32', [33,44,41], 1, 0, 26241876.95123291, 130983944772.77193, 0, 1729.399169921875],
  ["msd-hippocampus/imagesTr/hippocampus_338.nii.gz", 'float32', [37,43,43], 1, 0, 29572753.6947093, 145829178302.5288, 0, 1951.462158203125],
  ["msd-hippocampus/imagesTr/hippocampus_341.nii.gz", 'float32', [34,48,35], 1, 0, 31823805.571380615, 153371123948.94855, 0, 2066.65625],
  ["msd-hippocampus/imagesTr/hippocampus_343.nii.gz", 'float32', [32,45,38], 1, 0, 26228344.162168026, 125791402262.96375, 0, 1009.31005859375],
  ["msd-hippocampus/imagesTr/hippocampus_345.nii.gz", 'float32', [32,49,30], 1, 0, 24461143.523605347, 117194213586.16292, 0, 1779.791259765625],
  ["msd-hippocampus/imagesTr/hippocampus_350.nii.gz", 'float32', [35,49,34], 1, 0, 35981551.05877638, 175960378775.28613, 0, 1772.9993896484375],
  ["msd-hippocampus/imagesTr/hippocampus_351.nii.gz", 'uint8', [35,51,35], 1, 0, 3402579, 16527346536, 1, 228],
  ["msd-hippocampus/imagesTr/hippocampus_352.nii.gz", 'uint8', [38,51,35], 1, 0, 3599037, 17660633071, 1, 254],
  ["msd-hippocampus/imagesTr/hippocampus_354.nii.gz", 'float32', [36,50,32], 1, 0, 25178382.531175613, 122519703043.09117, 0, 1892.1361083984375],
  ["msd-hippocampus/imagesTr/hippocampus_355.nii.gz", 'float32', [33,47,38], 1, 0, 41759848.420698166, 207955148915.95642, 0, 4418.82080078125],
  ["msd-hippocampus/imagesTr/hippocampus_356.nii.gz", 'float32', [36,51,37], 1, 0, 46746350.880717754, 228165705624.2173, 0, 3789.675537109375],
  ["msd-hippocampus/imagesTr/hippocampus_359.nii.gz", 'float32', [35,49,35], 1, 0, 22497590.750773907, 112414320134.37675, 0, 1702.1488037109375],
  ["msd-hippocampus/imagesTr/hippocampus_360.nii.gz", 'float32', [34,49,37], 1, 0, 22208080.397545815, 109253018202.50522, 0, 2272.75537109375],
  ["msd-hippocampus/imagesTr/hippocampus_361.nii.gz", 'float32', [36,50,33], 1, 0, 31996452.707191467, 159444383199.49365, 0, 3027.782470703125],
  ["msd-hippocampus/imagesTr/hippocampus_366.nii.gz", 'float32', [37,47,34], 1, 0, 44425666.06435776, 222277178680.85547, 0, 3680.4052734375],
  ["msd-hippocampus/imagesTr/hippocampus_367.nii.gz", 'float32', [36,57,37], 1, 0, 45270074.04115963, 218526161824.3272, 0, 1932.4031982421875],
  ["msd-hippocampus/imagesTr/hippocampus_368.nii.gz", 'float32', [38,55,40], 1, 0, 49151856.11287308, 239775270015.61343, 0, 3351.12939453125],
  ["msd-hippocampus/imagesTr/hippocampus_372.nii.gz", 'float32', [36,50,34], 1, 0, 33317786.63439274, 163602850804.97382, 0, 1689.751220703125],
  ["msd-hippocampus/imagesTr/hippocampus_373.nii.gz", 'float32', [34,49,35], 1, 0, 26321568.780264378, 130135495982.09291, 0, 1624.7373046875],
  ["msd-hippocampus/imagesTr/hippocampus_374.nii.gz", 'float32', [38,48,39], 1, 0, 31066987.888586044, 152607176973.72205, 0, 2037.368896484375],
  ["msd-hippocampus/imagesTr/hippocampus_376.nii.gz", 'float32', [35,55,37], 1, 0, 34048481.368434906, 168394696918.77332, 0, 1482.8831787109375],
  ["msd-hippocampus/imagesTr/hippocampus_378.nii.gz", 'float32', [35,52,34], 1, 0, 28006235.627840042, 136792990022.74194, 0, 2176.65380859375],
  ["msd-hippocampus/imagesTr/hippocampus_380.nii.gz", 'float32', [35,46,42], 1, 0, 39449471.83490467, 192162608368.659, 0, 2882.357666015625],
  ["msd-hippocampus/imagesTr/hippocampus_383.nii.gz", 'float32', [33,55,29], 1, 0, 27283886.526203156, 131176174480.40483, 0, 1074.7081298828125],
  ["msd-hippocampus/imagesTr/hippocampus_385.nii.gz", 'float32', [35,48,40], 1, 0, 41688316.31217098, 203776979598.42203, 0, 2360.2392578125],
  ["msd-hippocampus/imagesTr/hippocampus_386.nii.gz", 'float32', [37,45,40], 1, 0, 39091164.54576874, 189918920841.32233, 0, 2957.240966796875],
  ["msd-hippocampus/imagesTr/hippocampus_389.nii.gz", 'float32', [34,49,32], 1, 0, 27336195.533670425, 132118092560.6831, 0, 1029.054443359375],
  ["msd-hippocampus/imagesTr/hippocampus_390.nii.gz", 'float32', [38,51,33], 1, 0, 33023915.043188095, 159579095165.4386, 0, 2582.343994140625],
  ["msd-hippocampus/imagesTr/hippocampus_393.nii.gz", 'float32', [36,51,31], 1, 0, 33474032.551879883, 161018813995.4497, 0, 1630.4666748046875],
  ["msd-hippocampus/labelsTr/hippocampus_003.nii.gz", 'float32', [34,52,35], 1, 0, 5156, 26202394, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_004.nii.gz", 'uint8', [36,52,38], 1, 0, 5564, 27847690, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_006.nii.gz", 'uint8', [35,52,34], 1, 0, 6212, 31388430, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_008.nii.gz", 'uint8', [36,48,40], 1, 0, 4771, 21733990, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_011.nii.gz", 'uint8', [36,50,31], 1, 0, 5000, 25677090, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_014.nii.gz", 'uint8', [39,50,40], 1, 0, 5227, 26532455, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_017.nii.gz", 'uint8', [35,48,32], 1, 0, 4821, 25017327, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_019.nii.gz", 'uint8', [36,47,41], 1, 0, 4824, 25861267, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_020.nii.gz", 'uint8', [36,46,43], 1, 0, 5076, 24512865, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_024.nii.gz", 'uint8', [38,52,33], 1, 0, 6049, 29498674, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_025.nii.gz", 'uint8', [35,48,35], 1, 0, 4756, 24938419, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_026.nii.gz", 'uint8', [36,50,36], 1, 0, 5393, 27168406, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_034.nii.gz", 'uint8', [36,49,40], 1, 0, 4920, 25043473, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_035.nii.gz", 'uint8', [35,47,37], 1, 0, 5033, 24948867, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_036.nii.gz", 'uint8', [36,47,39], 1, 0, 5169, 27583875, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_038.nii.gz", 'uint8', [37,51,35], 1, 0, 5279, 25954602, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_039.nii.gz", 'uint8', [34,53,34], 1, 0, 5278, 26877190, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_040.nii.gz", 'uint8', [36,52,37], 1, 0, 4984, 25019493, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_042.nii.gz", 'uint8', [37,52,34], 1, 0, 5823, 29310134, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_044.nii.gz", 'uint8', [38,48,33], 1, 0, 4748, 23800590, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_045.nii.gz", 'uint8', [36,48,37], 1, 0, 4490, 20028962, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_048.nii.gz", 'uint8', [38,52,29], 1, 0, 4587, 22504496, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_049.nii.gz", 'uint8', [35,51,36], 1, 0, 5548, 29005088, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_050.nii.gz", 'uint8', [38,49,38], 1, 0, 5639, 28520371, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_052.nii.gz", 'uint8', [34,52,40], 1, 0, 4875, 25119882, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_053.nii.gz", 'uint8', [37,51,35], 1, 0, 5388, 27079869, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_056.nii.gz", 'uint8', [41,47,42], 1, 0, 5501, 26939103, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_058.nii.gz", 'uint8', [34,53,36], 1, 0, 4920, 25502429, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_060.nii.gz", 'uint8', [39,52,31], 1, 0, 5092, 27030114, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_064.nii.gz", 'uint8', [35,53,35], 1, 0, 5276, 26482716, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_067.nii.gz", 'uint8', [36,42,41], 1, 0, 4101, 21330094, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_068.nii.gz", 'uint8', [36,40,43], 1, 0, 4267, 22424137, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_070.nii.gz", 'uint8', [37,50,38], 1, 0, 5005, 25161348, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_075.nii.gz", 'uint8', [32,47,41], 1, 0, 4874, 24800720, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_077.nii.gz", 'uint8', [35,47,45], 1, 0, 5452, 26931709, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_083.nii.gz", 'uint8', [33,52,37], 1, 0, 5092, 24828926, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_087.nii.gz", 'uint8', [35,55,32], 1, 0, 5481, 26771551, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_088.nii.gz", 'uint8', [40,52,35], 1, 0, 5646, 24807292, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_089.nii.gz", 'uint8', [34,51,38], 1, 0, 5647, 25489238, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_091.nii.gz", 'uint8', [36,51,29], 1, 0, 4733, 24609156, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_092.nii.gz", 'uint8', [38,49,28], 1, 0, 4796, 23679770, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_093.nii.gz", 'uint8', [34,53,37], 1, 0, 5722, 28140525, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_095.nii.gz", 'uint8', [34,49,39], 1, 0, 5379, 26471364, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_096.nii.gz", 'uint8', [34,47,39], 1, 0, 4790, 23071721, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_097.nii.gz", 'uint8', [37,48,34], 1, 0, 4152, 21391279, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_099.nii.gz", 'uint8', [33,52,27], 1, 0, 3818, 19269496, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_101.nii.gz", 'uint8', [36,52,32], 1, 0, 5300, 27175274, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_102.nii.gz", 'uint8', [36,55,32], 1, 0, 5621, 26957726, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_105.nii.gz", 'uint8', [33,47,37], 1, 0, 4488, 22211648, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_106.nii.gz", 'uint8', [34,46,38], 1, 0, 4472, 22292842, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_107.nii.gz", 'uint8', [35,55,34], 1, 0, 5981, 29948036, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_109.nii.gz", 'uint8', [36,49,36], 1, 0, 4849, 24774351, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_114.nii.gz", 'uint8', [38,50,39], 1, 0, 4949, 24536790, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_124.nii.gz", 'uint8', [35,55,41], 1, 0, 4668, 23016027, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_125.nii.gz", 'uint8', [43,42,39], 1, 0, 3795, 18333267, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_126.nii.gz", 'uint8', [39,44,43], 1, 0, 4640, 20758822, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_130.nii.gz", 'uint8', [35,49,40], 1, 0, 4865, 22713084, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_132.nii.gz", 'uint8', [36,50,40], 1, 0, 4930, 24420296, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_133.nii.gz", 'uint8', [39,41,42], 1, 0, 4919, 24674562, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_136.nii.gz", 'uint8', [34,49,41], 1, 0, 4181, 20755144, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_138.nii.gz", 'uint8', [32,46,42], 1, 0, 3897, 17586228, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_141.nii.gz", 'uint8', [33,44,42], 1, 0, 4193, 22287958, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_143.nii.gz", 'uint8', [32,45,41], 1, 0, 3601, 18623709, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_144.nii.gz", 'uint8', [34,45,43], 1, 0, 3715, 18821925, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_145.nii.gz", 'uint8', [36,53,33], 1, 0, 4998, 24735100, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_148.nii.gz", 'uint8', [34,48,32], 1, 0, 4201, 20767465, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_149.nii.gz", 'uint8', [33,49,32], 1, 0, 4666, 22887767, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_150.nii.gz", 'uint8', [37,49,34], 1, 0, 4571, 23912969, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_154.nii.gz", 'uint8', [35,46,42], 1, 0, 4915, 24400561, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_155.nii.gz", 'uint8', [34,53,37], 1, 0, 5064, 24970518, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_156.nii.gz", 'uint8', [36,52,36], 1, 0, 5098, 25568786, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_158.nii.gz", 'uint8', [38,52,36], 1, 0, 4950, 24318371, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_160.nii.gz", 'uint8', [34,51,26], 1, 0, 4610, 22993437, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_161.nii.gz", 'uint8', [35,51,36], 1, 0, 5659, 29711648, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_163.nii.gz", 'uint8', [36,47,44], 1, 0, 5437, 29327794, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_164.nii.gz", 'uint8', [41,48,47], 1, 0, 6038, 29618447, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_165.nii.gz", 'uint8', [34,49,29], 1, 0, 4502, 22003226, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_169.nii.gz", 'uint8', [36,45,39], 1, 0, 4355, 21495478, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_170.nii.gz", 'uint8', [34,48,40], 1, 0, 4429, 21419436, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_171.nii.gz", 'uint8', [35,56,28], 1, 0, 5499, 26460508, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_173.nii.gz", 'uint8', [35,53,32], 1, 0, 5575, 28060930, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_174.nii.gz", 'uint8', [37,55,34], 1, 0, 6100, 32658809, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_175.nii.gz", 'uint8', [33,47,35], 1, 0, 3903, 20064721, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_177.nii.gz", 'uint8', [33,44,40], 1, 0, 4132, 21952815, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_178.nii.gz", 'uint8', [35,44,41], 1, 0, 4204, 21427759, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_180.nii.gz", 'uint8', [37,45,36], 1, 0, 3959, 19785219, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_184.nii.gz", 'uint8', [37,51,33], 1, 0, 5262, 25807824, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_185.nii.gz", 'uint8', [35,49,33], 1, 0, 4385, 22420937, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_188.nii.gz", 'uint8', [37,54,36], 1, 0, 5302, 26827710, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_190.nii.gz", 'uint8', [37,52,30], 1, 0, 4953, 24158627, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_193.nii.gz", 'uint8', [33,50,29], 1, 0, 4065, 18993606, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_194.nii.gz", 'uint8', [35,50,30], 1, 0, 4427, 20196054, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_197.nii.gz", 'uint8', [38,51,31], 1, 0, 4970, 25346390, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_199.nii.gz", 'uint8', [37,52,26], 1, 0, 3982, 19339957, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_203.nii.gz", 'uint8', [34,49,38], 1, 0, 4128, 20582000, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_205.nii.gz", 'uint8', [32,47,32], 1, 0, 4094, 19011620, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_207.nii.gz", 'uint8', [35,53,33], 1, 0, 6161, 30507972, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_210.nii.gz", 'uint8', [34,48,40], 1, 0, 4349, 21181015, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_215.nii.gz", 'uint8', [35,49,33], 1, 0, 5066, 26801830, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_216.nii.gz", 'uint8', [32,49,36], 1, 0, 5002, 24912771, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_217.nii.gz", 'uint8', [38,53,27], 1, 0, 4184, 22180185, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_220.nii.gz", 'uint8', [39,45,40], 1, 0, 4010, 20081214, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_221.nii.gz", 'uint8', [32,48,34], 1, 0, 3703, 19098184, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_222.nii.gz", 'uint8', [34,49,36], 1, 0, 3677, 18489814, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_224.nii.gz", 'uint8', [37,48,37], 1, 0, 5607, 28437699, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_225.nii.gz", 'uint8', [33,53,26], 1, 0, 3831, 18019005, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_226.nii.gz", 'uint8', [32,51,28], 1, 0, 3728, 17815242, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_228.nii.gz", 'uint8', [37,48,36], 1, 0, 5309, 27336539, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_229.nii.gz", 'uint8', [33,50,35], 1, 0, 4896, 24130920, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_230.nii.gz", 'uint8', [34,49,37], 1, 0, 4774, 24386449, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_232.nii.gz", 'uint8', [36,44,43], 1, 0, 4212, 20598547, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_233.nii.gz", 'uint8', [33,51,37], 1, 0, 4741, 25256492, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_234.nii.gz", 'uint8', [38,49,36], 1, 0, 4883, 24458989, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_236.nii.gz", 'uint8', [37,57,35], 1, 0, 4583, 22176380, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_238.nii.gz", 'uint8', [37,56,36], 1, 0, 5672, 25069565, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_242.nii.gz", 'uint8', [38,52,34], 1, 0, 6289, 30346259, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_244.nii.gz", 'uint8', [38,53,30], 1, 0, 4719, 23958905, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_245.nii.gz", 'uint8', [35,48,42], 1, 0, 5020, 27059100, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_248.nii.gz", 'uint8', [36,50,38], 1, 0, 4989, 24899079, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_250.nii.gz", 'uint8', [35,51,36], 1, 0, 4963, 25568593, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_251.nii.gz", 'uint8', [36,58,28], 1, 0, 4929, 22957198, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_252.nii.gz", 'uint8', [37,55,26], 1, 0, 5090, 27222649, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_257.nii.gz", 'uint8', [34,51,33], 1, 0, 4538, 20468782, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_259.nii.gz", 'uint8', [33,51,28], 1, 0, 4502, 22936319, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_260.nii.gz", 'uint8', [35,53,29], 1, 0, 4815, 24463090, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_263.nii.gz", 'uint8', [36,51,35], 1, 0, 5421, 26476830, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_264.nii.gz", 'uint8', [38,51,37], 1, 0, 5750, 28376667, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_265.nii.gz", 'uint8', [31,54,34], 1, 0, 4763, 23920027, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_269.nii.gz", 'uint8', [35,49,37], 1, 0, 5153, 25028064, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_274.nii.gz", 'uint8', [35,40,40], 1, 0, 3839, 19081019, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_276.nii.gz", 'uint8', [35,50,33], 1, 0, 5230, 24196897, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_279.nii.gz", 'uint8', [34,50,32], 1, 0, 3503, 18562169, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_280.nii.gz", 'uint8', [37,47,32], 1, 0, 3859, 17684083, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_282.nii.gz", 'uint8', [37,52,32], 1, 0, 3699, 18869423, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_287.nii.gz", 'uint8', [37,50,39], 1, 0, 5634, 28318248, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_288.nii.gz", 'uint8', [38,50,42], 1, 0, 5840, 29116261, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_289.nii.gz", 'uint8', [35,49,36], 1, 0, 4194, 21860814, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_292.nii.gz", 'uint8', [38,52,33], 1, 0, 5047, 24501075, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_294.nii.gz", 'uint8', [35,44,44], 1, 0, 4750, 23637124, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_295.nii.gz", 'uint8', [35,53,36], 1, 0, 5349, 26108835, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_297.nii.gz", 'uint8', [34,51,30], 1, 0, 4021, 19271079, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_298.nii.gz", 'uint8', [37,50,33], 1, 0, 3916, 19202781, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_299.nii.gz", 'uint8', [32,54,34], 1, 0, 4887, 23401549, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_301.nii.gz", 'uint8', [31,50,36], 1, 0, 5325, 26237361, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_302.nii.gz", 'uint8', [35,46,39], 1, 0, 5503, 27345398, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_303.nii.gz", 'uint8', [35,48,38], 1, 0, 4830, 25066015, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_305.nii.gz", 'uint8', [34,49,30], 1, 0, 4409, 21546128, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_308.nii.gz", 'uint8', [38,48,40], 1, 0, 5297, 26843078, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_309.nii.gz", 'uint8', [34,52,38], 1, 0, 5442, 28007469, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_311.nii.gz", 'uint8', [37,49,37], 1, 0, 4837, 24739949, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_314.nii.gz", 'uint8', [37,53,33], 1, 0, 4189, 20617544, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_316.nii.gz", 'uint8', [37,51,33], 1, 0, 4610, 23031550, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_318.nii.gz", 'uint8', [37,51,33], 1, 0, 5003, 24230495, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_319.nii.gz", 'uint8', [33,48,34], 1, 0, 3464, 17062369, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_320.nii.gz", 'uint8', [33,47,34], 1, 0, 3848, 19538166, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_322.nii.gz", 'uint8', [38,47,37], 1, 0, 4921, 25188031, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_325.nii.gz", 'uint8', [35,51,40], 1, 0, 5770, 28847688, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_326.nii.gz", 'uint8', [36,49,41], 1, 0, 5831, 30817876, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_328.nii.gz", 'uint8', [38,54,30], 1, 0, 5543, 29069068, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_329.nii.gz", 'uint8', [34,53,32], 1, 0, 5413, 27725774, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_330.nii.gz", 'uint8', [35,55,33], 1, 0, 5762, 28508538, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_332.nii.gz", 'uint8', [35,52,33], 1, 0, 4851, 24780698, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_333.nii.gz", 'uint8', [33,46,38], 1, 0, 4078, 21174274, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_334.nii.gz", 'uint8', [34,47,36], 1, 0, 4114, 20312903, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_336.nii.gz", 'uint8', [34,47,43], 1, 0, 3888, 19523674, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_337.nii.gz", 'uint8', [33,44,41], 1, 0, 4955, 26304990, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_338.nii.gz", 'uint8', [37,43,43], 1, 0, 5239, 26042973, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_341.nii.gz", 'uint8', [34,48,35], 1, 0, 3845, 19904291, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_343.nii.gz", 'uint8', [32,45,38], 1, 0, 4169, 21431419, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_345.nii.gz", 'uint8', [32,49,30], 1, 0, 4275, 20207045, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_350.nii.gz", 'uint8', [35,49,34], 1, 0, 4409, 23728098, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_351.nii.gz", 'uint8', [35,51,35], 1, 0, 5626, 28732235, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_352.nii.gz", 'uint8', [38,51,35], 1, 0, 5392, 26835229, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_354.nii.gz", 'uint8', [36,50,32], 1, 0, 4295, 22361827, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_355.nii.gz", 'uint8', [33,47,38], 1, 0, 4851, 24270739, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_356.nii.gz", 'uint8', [36,51,37], 1, 0, 5129, 25108044, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_359.nii.gz", 'uint8', [35,49,35], 1, 0, 4006, 20937866, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_360.nii.gz", 'uint8', [34,49,37], 1, 0, 4564, 22600106, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_361.nii.gz", 'uint8', [36,50,33], 1, 0, 4477, 23200398, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_366.nii.gz", 'uint8', [37,47,34], 1, 0, 5476, 25281860, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_367.nii.gz", 'uint8', [36,57,37], 1, 0, 6090, 30978559, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_368.nii.gz", 'uint8', [38,55,40], 1, 0, 6209, 29246701, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_372.nii.gz", 'uint8', [36,50,34], 1, 0, 5215, 26807743, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_373.nii.gz", 'uint8', [34,49,35], 1, 0, 5496, 27398866, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_374.nii.gz", 'uint8', [38,48,39], 1, 0, 5631, 27716363, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_376.nii.gz", 'uint8', [35,55,37], 1, 0, 5537, 26624102, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_378.nii.gz", 'uint8', [35,52,34], 1, 0, 4334, 22553896, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_380.nii.gz", 'uint8', [35,46,42], 1, 0, 5140, 25482551, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_383.nii.gz", 'uint8', [33,55,29], 1, 0, 5063, 25809489, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_385.nii.gz", 'uint8', [35,48,40], 1, 0, 4681, 25168397, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_386.nii.gz", 'uint8', [37,45,40], 1, 0, 4457, 22424885, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_389.nii.gz", 'uint8', [34,49,32], 1, 0, 4131, 20105240, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_390.nii.gz", 'uint8', [38,51,33], 1, 0, 4618, 23002587, 0, 2],
  ["msd-hippocampus/labelsTr/hippocampus_393.nii.gz", 'uint8', [36,51,31], 1, 0, 5500, 28245567, 0, 2],
];
