/**
 * synthetic-microct: the project's own generator of microCT-like volumes of insect soft tissue, for the
 * setting of meU-net (Wang, Blackie, Miguel-Aliaga, Bai, "Memory-efficient segmentation of
 * high-resolution volumetric MicroCT images", MIDL 2022, arXiv:2205.15941): one-channel volumes of about
 * 250 M voxels of Drosophila tissue in which thin structures are segmented. No download, any size (a
 * 630³ case is 250.0 M voxels), exactly reproducible.
 *
 * ## What it models (for the README)
 * - One channel, `microct`: X-ray attenuation on an isotropic voxel grid (spacing 1, in voxels: every
 *   length below is in voxels, so a larger volume holds more tissue at the same resolution, as a larger
 *   scan field does, and a model trained on small cases applies to large ones).
 * - A specimen: an ellipsoidal body filling most of the field of view (deformed by a smooth random field),
 *   surrounded by air or mounting medium (background); inside it soft tissue with a smooth texture and
 *   darker fluid-filled cavities, all labelled background.
 * - Tubes (label 1): tracheal trees. Each tree is a trunk that branches dichotomously three times (up to
 *   15 branches), with branch angles of 25–45°, child radius 0.79 × the parent's (Murray's law: two
 *   children carry the parent's r³), lengths shrinking with the generation, and gently curved branches;
 *   a branch ends where it would leave the specimen. Trunk radius up to `tubeRadius` (2.5 voxels by
 *   default), so tubes are 2–5 voxels across; a tube with a radius above 1.5 voxels has a darker lumen
 *   inside a bright wall (the cuticle lining an air-filled trachea), the thinner ones are solid bright
 *   lines.
 * - Sheets (label 2): epithelium-like curved sheets: open caps of ellipsoidal shells (radii 10–40
 *   voxels, a random orientation, the cap cut by a random plane, a wobbling surface), `sheetThickness`
 *   (2.5 voxels by default) thick, bright.
 * - Granules (background): small bright spheres (radius 1.5–4 voxels, as bright as a sheet), yolk- or
 *   urate-like inclusions, that look locally like a tube's cross-section: brightness alone does not
 *   segment the volume, shape does.
 * - Where a tube crosses a sheet the voxel is a tube. Counts are per million voxels (`trees`, `sheets`,
 *   `granules`), so the structures' density does not depend on the size; the tube fraction grows a
 *   little with it (about 0.7% at 128³, 1.5% at 630³), as fewer branches reach the surface of a larger
 *   specimen; sheets are about 1–1.5%.
 * - MicroCT-like contrast: air ≈ 0, soft tissue mid-grey, cavities darker, sheets and tube walls bright;
 *   partial-volume edges (a voxel half inside a structure takes half its intensity); a smooth
 *   multiplicative intensity drift (low-frequency field plus cupping: darker towards each slice's
 *   centre, as beam hardening gives); additive noise; a per-case scanner offset and gain and per-class
 *   contrast jitter.
 * - Normalisation as a microCT pipeline would do it: the air level (the median of the voxels outside the
 *   specimen) maps to 0 and the 99.5th percentile of the specimen's voxels to 1, so the background is
 *   near 0 (noise around it) and the brightest structures near 1.
 *
 * ## What it does not model
 * Real Drosophila anatomy (no organs, muscles, gut or brain: the tissue is a texture, the cavities are
 * blobs), tomographic reconstruction (no ring or streak artefacts, no phase contrast, no Poisson noise:
 * the noise is a sum of four uniforms, a close approximation of a Gaussian with tails cut at 3.5 σ),
 * the point-spread function beyond one voxel of partial volume, tracheal taenidia, tracheoles finer
 * than a voxel, the connection of trees to spiracles, sheets folding onto themselves, and staining
 * variation across a specimen. It exercises memory strategies and whole-volume inference on microCT-like
 * sizes, thin-structure label statistics and contrast; it supports no claim about segmenting real microCT.
 *
 * ## Axes and determinism
 * Volume.shape is [D, H, W] = [z, y, x]; `size` is given in that order. A case depends only on
 * (seed, case index, size): case k is the same whatever `cases` is, and the same size gives the same bytes
 * on every run. Generation rasterises each structure within its bounding box (typed arrays; memory is the
 * image, 4 bytes a voxel, and the label map, 1 byte a voxel), so a 630³ case takes well under a minute.
 */
import type { Dataset, SegmentationTask, Shape3, Volume } from '../core/types.js';
import type { DatasetPlugin } from '../core/plugins/index.js';
import { defineSettings, SettingsError, type SettingsOf } from '../core/config/index.js';
import { drawField as drawSmoothField, GeneratedDataset, sampleField, SeededRng, type FieldParams, type SampledField } from '../core/data/index.js';

export const MICROCT_CHANNELS = ['microct'] as const;

/** Mutually exclusive labels: softmax over background, tube and sheet. */
export const MICROCT_TASK: SegmentationTask = {
  kind: 'labels',
  labels: [
    { name: 'tube', value: 1 },
    { name: 'sheet', value: 2 },
  ],
};

/** The smallest edge a case may have (a tree or a sheet needs some room). */
export const MIN_EDGE = 16;

const settings = defineSettings({
  cases: { type: 'integer', description: 'number of cases generated', default: 4, min: 1 },
  size: {
    type: 'shape3',
    description: `volume size in voxels, one edge or [D, H, W] (each at least ${MIN_EDGE}); 630 gives 250.0 M voxels, the size of the paper's volumes`,
    default: 128,
  },
  seed: { type: 'integer', description: 'data seed (independent of the trial seed): same seed, same cases', default: 0 },
  trees: { type: 'number', description: 'tracheal trees per million voxels (each a trunk branching three times: up to 15 branches)', default: 8, min: 0, max: 50 },
  sheets: { type: 'number', description: 'epithelial sheets (open curved shells) per million voxels', default: 1.5, min: 0, max: 20 },
  granules: {
    type: 'number',
    description: "bright granules per million voxels: small spheres (radius 1.5–4 voxels) as bright as the sheets, labelled background, that look locally like a tube's cross-section (0: none)",
    default: 40,
    min: 0,
    max: 500,
  },
  tubeRadius: { type: 'number', description: "largest trunk radius in voxels (branches are thinner: 0.79× their parent's radius per generation, at least 1)", default: 2.5, min: 1, max: 8 },
  sheetThickness: { type: 'number', description: 'mean sheet thickness in voxels (each sheet 0.8–1.2× this)', default: 2.5, min: 1, max: 10 },
  noise: { type: 'number', description: 'noise standard deviation before normalisation, relative to the soft tissue intensity (0.45)', default: 0.06, min: 0, max: 1 },
  drift: { type: 'number', description: 'strength of the smooth multiplicative intensity drift and cupping (0: none; 0.15: about ±15%)', default: 0.15, min: 0, max: 0.9 },
});

export type MicroctSettings = SettingsOf<typeof settings>;
export type MicroctOptions = Omit<MicroctSettings, 'cases'>;

/** One capsule of a tube: the segment a→b ([z, y, x], voxels) with radii ra at a and rb at b. */
export interface TubeCapsule {
  a: [number, number, number];
  b: [number, number, number];
  ra: number;
  rb: number;
}

/** One sheet: an open cap of an ellipsoidal shell. */
export interface SheetShell {
  centre: [number, number, number];
  /** Semi-axes in the shell's own frame, voxels. */
  axes: [number, number, number];
  /** 3×3 row-major: local = rotation · (p − centre). */
  rotation: number[];
  /** Half the thickness, voxels. */
  halfThickness: number;
  /** The cap: local directions whose dot with `capDir` exceeds `capCos` are kept. */
  capDir: [number, number, number];
  capCos: number;
  /** Surface wobble: radius × (1 + amp · sin(k0·u0 + p0) · sin(k1·u1 + p1)) over the unit direction u. */
  wobble: { amp: number; k: [number, number]; phase: [number, number] };
}

/** A bright granule: a sphere labelled background. */
export interface Granule {
  centre: [number, number, number];
  radius: number;
}

/** The structures of one case, in voxel coordinates (for tests and for anyone checking the labels). */
export interface MicroctStructures {
  /** Bright background spheres (distractors). */
  granules: Granule[];
  /** How many tracheal trees were started (their branches are `tubes`). */
  trees: number;
  tubes: TubeCapsule[];
  sheets: SheetShell[];
}

/** A field of at most MAX_TERMS terms (`fieldRow` sums them in one pass): core/data's drawField. */
function drawField(rng: SeededRng, terms: number, fmin: number, fmax: number): FieldParams {
  if (terms > MAX_TERMS) throw new Error(`drawField: at most ${MAX_TERMS} terms, got ${terms}`);
  return drawSmoothField(rng, terms, fmin, fmax);
}

/** The most terms a field may have (`fieldRow` sums them in one pass over the row). */
const MAX_TERMS = 6;

/** `row` ← scale × the field along x at (z, y), all terms in one pass (missing terms read a zero row). */
function fieldRow(f: SampledField, z: number, y: number, scale: number, row: Float32Array): void {
  const n = f.weight.length;
  const [Z, Y, Xs] = f.axes; // sampled at [z, y, x] coordinates
  const a = new Float64Array(MAX_TERMS);
  const X: Float32Array[] = [];
  for (let k = 0; k < MAX_TERMS; k++) {
    if (k < n) {
      a[k] = scale * f.weight[k]! * Z[k]![z]! * Y[k]![y]!;
      X.push(Xs[k]!);
    } else X.push(Xs[0]!); // weight 0
  }
  const [X0, X1, X2, X3, X4, X5] = X as [Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Float32Array];
  const a0 = a[0]!, a1 = a[1]!, a2 = a[2]!, a3 = a[3]!, a4 = a[4]!, a5 = a[5]!;
  for (let x = 0; x < row.length; x++) row[x] = a0 * X0[x]! + a1 * X1[x]! + a2 * X2[x]! + a3 * X3[x]! + a4 * X4[x]! + a5 * X5[x]!;
}

function unitVector(rng: SeededRng): [number, number, number] {
  const v: [number, number, number] = [rng.normal(), rng.normal(), rng.normal()];
  const n = Math.hypot(...v) || 1;
  return [v[0] / n, v[1] / n, v[2] / n];
}

/** A random rotation (from a uniformly random unit quaternion), 3×3 row-major. */
function randomRotation(rng: SeededRng): number[] {
  let a = rng.normal(),
    b = rng.normal(),
    c = rng.normal(),
    d = rng.normal();
  const n = Math.hypot(a, b, c, d) || 1;
  a /= n;
  b /= n;
  c /= n;
  d /= n;
  return [
    a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c),
    2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b),
    2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d,
  ];
}

/** `v` turned by `angle` about the unit axis `k` (Rodrigues). */
function rotateAbout(v: [number, number, number], k: [number, number, number], angle: number): [number, number, number] {
  const c = Math.cos(angle),
    s = Math.sin(angle);
  const dot = k[0] * v[0] + k[1] * v[1] + k[2] * v[2];
  const cross: [number, number, number] = [k[1] * v[2] - k[2] * v[1], k[2] * v[0] - k[0] * v[2], k[0] * v[1] - k[1] * v[0]];
  return [0, 1, 2].map((i) => v[i]! * c + cross[i]! * s + k[i]! * dot * (1 - c)) as [number, number, number];
}

/** A unit vector perpendicular to the unit vector `v`, at a random angle around it. */
function perpendicular(rng: SeededRng, v: [number, number, number]): [number, number, number] {
  const ref: [number, number, number] = Math.abs(v[0]) < 0.9 ? [1, 0, 0] : [0, 1, 0];
  let p: [number, number, number] = [v[1] * ref[2] - v[2] * ref[1], v[2] * ref[0] - v[0] * ref[2], v[0] * ref[1] - v[1] * ref[0]];
  const n = Math.hypot(...p);
  p = [p[0] / n, p[1] / n, p[2] / n];
  return rotateAbout(p, v, 2 * Math.PI * rng.next());
}

/** Everything random about one case's appearance (its structures are drawn apart: `drawStructures`). */
interface CaseLook {
  body: { centre: [number, number, number]; semi: [number, number, number]; field: FieldParams; amp: number };
  texture: FieldParams;
  cavity: FieldParams;
  driftField: FieldParams;
  /** Intensities before drift, noise, gain and offset. */
  intensity: { tissue: number; cavity: number; sheet: number; wall: number; lumen: number };
  gain: number;
  offset: number;
  noiseSeed: number;
}

const caseRng = (seed: number, index: number): SeededRng => new SeededRng(seed).fork(`synthetic-microct/case/${index}`);

function drawLook(seed: number, index: number): CaseLook {
  const rng = caseRng(seed, index).fork('look');
  const jitter = (v: number): number => v * (1 + 0.06 * Math.max(-2, Math.min(2, rng.normal())));
  return {
    // Centre and semi-axes as fractions of the volume (the field of view is framed on the specimen).
    body: {
      centre: [0.5 + 0.03 * rng.normal(), 0.5 + 0.03 * rng.normal(), 0.5 + 0.03 * rng.normal()],
      semi: [0.46 + 0.03 * rng.next(), 0.46 + 0.03 * rng.next(), 0.46 + 0.03 * rng.next()],
      field: drawField(rng, 4, 0.5, 1.5),
      amp: 0.05 + 0.04 * rng.next(),
    },
    // Voxel units: the tissue's texture and cavities have the same scale at every size.
    texture: drawField(rng, 5, 1 / 24, 1 / 8),
    cavity: drawField(rng, 4, 1 / 90, 1 / 35),
    // Volume units: the drift is smooth over the whole field of view.
    driftField: drawField(rng, 3, 0.3, 1.0),
    intensity: { tissue: jitter(0.45), cavity: jitter(0.18), sheet: jitter(0.82), wall: jitter(0.95), lumen: jitter(0.22) },
    gain: 0.8 + 0.45 * rng.next(),
    offset: 0.05 + 0.1 * rng.next(),
    noiseSeed: (rng.next() * 4294967296) >>> 0 || 1,
  };
}

/** A point uniformly inside the body's (undeformed) ellipsoid, voxels [z, y, x]. */
function pointInBody(rng: SeededRng, look: CaseLook, shape: Shape3): [number, number, number] {
  const { centre, semi } = look.body;
  for (;;) {
    const u = [2 * rng.next() - 1, 2 * rng.next() - 1, 2 * rng.next() - 1];
    if (u[0]! ** 2 + u[1]! ** 2 + u[2]! ** 2 > 0.85) continue;
    return [0, 1, 2].map((i) => (centre[i]! + semi[i]! * u[i]!) * shape[i]! - 0.5) as [number, number, number];
  }
}

/** Whether the voxel position p [z, y, x] lies inside the body's undeformed ellipsoid. */
function insideBody(look: CaseLook, shape: Shape3, p: readonly number[]): boolean {
  const { centre, semi } = look.body;
  let r2 = 0;
  for (let i = 0; i < 3; i++) r2 += (((p[i]! + 0.5) / shape[i]! - centre[i]!) / semi[i]!) ** 2;
  return r2 < 1;
}

/** The count of a structure kind at this size: `perMillion` per 10⁶ voxels, at least 1 when asked for. */
function countFor(perMillion: number, shape: Shape3): number {
  if (perMillion <= 0) return 0;
  return Math.max(1, Math.round((perMillion * shape[0] * shape[1] * shape[2]) / 1e6));
}

/** Every tube capsule and sheet of case `index` (deterministic from seed, index and size). */
export function microctStructures(index: number, opts: MicroctOptions): MicroctStructures {
  const shape = opts.size;
  const look = drawLook(opts.seed, index);
  const rng = caseRng(opts.seed, index);
  const tubes: TubeCapsule[] = [];
  const t = rng.fork('trees');
  const nTrees = countFor(opts.trees, shape);
  for (let k = 0; k < nTrees; k++) {
    const start = pointInBody(t, look, shape);
    const r0 = Math.max(1, opts.tubeRadius * (0.7 + 0.3 * t.next()));
    const grow = (from: [number, number, number], dir: [number, number, number], r: number, length: number, generation: number): void => {
      // A branch: three sub-segments, each turning a little (a gently curved tube), radius tapering 5%.
      let p = from;
      let d = dir;
      let rr = r;
      for (let s = 0; s < 3; s++) {
        const q: [number, number, number] = [p[0] + (d[0] * length) / 3, p[1] + (d[1] * length) / 3, p[2] + (d[2] * length) / 3];
        // Trees stay inside the specimen: a branch ends where it would leave the body.
        if (!insideBody(look, shape, q)) return;
        const rq = Math.max(1, rr * 0.983);
        tubes.push({ a: p, b: q, ra: rr, rb: rq });
        p = q;
        rr = rq;
        d = rotateAbout(d, perpendicular(t, d), 0.18 * t.normal());
      }
      if (generation >= 3) return;
      // Two children in one plane, on either side of the parent's direction.
      const axis = perpendicular(t, d);
      const rc = Math.max(1, r * 0.79);
      for (const side of [1, -1]) {
        const angle = side * ((25 + 20 * t.next()) * Math.PI) / 180;
        grow(p, rotateAbout(d, axis, angle), rc, length * (0.7 + 0.15 * t.next()), generation + 1);
      }
    };
    grow(start, unitVector(t), r0, r0 * (14 + 8 * t.next()), 0);
  }
  const sheets: SheetShell[] = [];
  const s = rng.fork('sheets');
  const nSheets = countFor(opts.sheets, shape);
  for (let k = 0; k < nSheets; k++) {
    const centre = pointInBody(s, look, shape);
    const R = 10 + 30 * s.next();
    sheets.push({
      centre,
      axes: [R * (0.7 + 0.6 * s.next()), R * (0.7 + 0.6 * s.next()), R * (0.7 + 0.6 * s.next())],
      rotation: randomRotation(s),
      halfThickness: (opts.sheetThickness * (0.8 + 0.4 * s.next())) / 2,
      capDir: unitVector(s),
      capCos: -0.3 + 0.6 * s.next(),
      wobble: { amp: 0.04 + 0.06 * s.next(), k: [2 + 3 * s.next(), 2 + 3 * s.next()], phase: [2 * Math.PI * s.next(), 2 * Math.PI * s.next()] },
    });
  }
  const granules: Granule[] = [];
  const g = rng.fork('granules');
  const nGranules = countFor(opts.granules, shape);
  for (let k = 0; k < nGranules; k++) granules.push({ centre: pointInBody(g, look, shape), radius: 1.5 + 2.5 * g.next() });
  return { trees: nTrees, tubes, sheets, granules };
}

// While rasterising, one byte per voxel holds the label (bits 0–1), which structure decides the
// intensity (bit 2: tube) and how deep inside it the voxel is (bits 3–7: depth in eighths of a voxel,
// 0–31; depth = radius + ½ − distance, so ½ at the labelled boundary and 0 half a voxel outside).
const LABEL_MASK = 0b11;
const TUBE_BIT = 0b100;
const DEPTH_SHIFT = 3;
/** Depth (eighths) from which a tube voxel is lumen: 2 voxels inside the labelled boundary's ½. */
const LUMEN_DEPTH = 16;

function writeVoxel(code: Uint8Array, v: number, label: number, tube: boolean, depth: number): void {
  const q = Math.min(31, Math.floor(depth * 8));
  let c = code[v]!;
  const cur = c & LABEL_MASK;
  // A tube voxel stays a tube; a sheet voxel takes the sheet label unless it is a tube already.
  if (label === 1 || (label === 2 && cur === 0)) c = (c & ~LABEL_MASK) | label;
  if (q > c >>> DEPTH_SHIFT) c = (c & LABEL_MASK) | (tube ? TUBE_BIT : 0) | (q << DEPTH_SHIFT);
  code[v] = c;
}

/** The inclusive voxel range [lo, hi] of [centre − half, centre + half] on an axis of n voxels (hi < lo: empty). */
function span(centre: number, half: number, n: number): [number, number] {
  return [Math.max(0, Math.floor(centre - half)), Math.min(n - 1, Math.ceil(centre + half))];
}

function rasteriseTube(code: Uint8Array, [D, H, W]: Shape3, c: TubeCapsule): void {
  const pad = Math.max(c.ra, c.rb) + 1;
  const [z0, z1] = span((c.a[0] + c.b[0]) / 2, Math.abs(c.a[0] - c.b[0]) / 2 + pad, D);
  const [y0, y1] = span((c.a[1] + c.b[1]) / 2, Math.abs(c.a[1] - c.b[1]) / 2 + pad, H);
  const [x0, x1] = span((c.a[2] + c.b[2]) / 2, Math.abs(c.a[2] - c.b[2]) / 2 + pad, W);
  const abz = c.b[0] - c.a[0],
    aby = c.b[1] - c.a[1],
    abx = c.b[2] - c.a[2];
  const len2 = abz * abz + aby * aby + abx * abx;
  const inv = len2 > 0 ? 1 / len2 : 0;
  const dr = c.rb - c.ra;
  for (let z = z0; z <= z1; z++) {
    const pz = z - c.a[0];
    for (let y = y0; y <= y1; y++) {
      const py = y - c.a[1];
      const row = (z * H + y) * W;
      for (let x = x0; x <= x1; x++) {
        const px = x - c.a[2];
        let t = (pz * abz + py * aby + px * abx) * inv;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        const ez = pz - t * abz,
          ey = py - t * aby,
          ex = px - t * abx;
        const r = c.ra + t * dr;
        const lim = r + 0.5;
        const d2 = ez * ez + ey * ey + ex * ex;
        if (d2 >= lim * lim) continue;
        const d = Math.sqrt(d2);
        writeVoxel(code, row + x, d < r ? 1 : 0, true, lim - d);
      }
    }
  }
}

function rasteriseGranule(code: Uint8Array, [D, H, W]: Shape3, g: Granule): void {
  const lim = g.radius + 0.5;
  const [z0, z1] = span(g.centre[0], lim, D);
  const [y0, y1] = span(g.centre[1], lim, H);
  const [x0, x1] = span(g.centre[2], lim, W);
  for (let z = z0; z <= z1; z++)
    for (let y = y0; y <= y1; y++) {
      const row = (z * H + y) * W;
      for (let x = x0; x <= x1; x++) {
        const d = Math.hypot(z - g.centre[0], y - g.centre[1], x - g.centre[2]);
        // Background, with a sheet's intensity.
        if (d < lim) writeVoxel(code, row + x, 0, false, lim - d);
      }
    }
}

function rasteriseSheet(code: Uint8Array, [D, H, W]: Shape3, s: SheetShell): void {
  const R = s.rotation;
  const [a0, a1, a2] = s.axes;
  const h = s.halfThickness;
  const reach = 1 + s.wobble.amp;
  // Half-extent along world axis j of the rotated ellipsoid: sqrt(Σ_i (R_ij a_i)²).
  const half = [0, 1, 2].map((j) => Math.hypot(R[j]! * a0, R[3 + j]! * a1, R[6 + j]! * a2) * reach + h + 1);
  const [z0, z1] = span(s.centre[0], half[0]!, D);
  const [y0, y1] = span(s.centre[1], half[1]!, H);
  const [x0, x1] = span(s.centre[2], half[2]!, W);
  const [cd0, cd1, cd2] = s.capDir;
  const { amp, k, phase } = s.wobble;
  const i0 = 1 / a0,
    i1 = 1 / a1,
    i2 = 1 / a2;
  for (let z = z0; z <= z1; z++) {
    const pz = z - s.centre[0];
    for (let y = y0; y <= y1; y++) {
      const py = y - s.centre[1];
      const row = (z * H + y) * W;
      // The local coordinates are affine in x along a row: start and step.
      let l0 = R[0]! * pz + R[1]! * py + R[2]! * (x0 - s.centre[2]);
      let l1 = R[3]! * pz + R[4]! * py + R[5]! * (x0 - s.centre[2]);
      let l2 = R[6]! * pz + R[7]! * py + R[8]! * (x0 - s.centre[2]);
      for (let x = x0; x <= x1; x++, l0 += R[2]!, l1 += R[5]!, l2 += R[8]!) {
        const q0 = l0 * i0,
          q1 = l1 * i1,
          q2 = l2 * i2;
        const rho2 = q0 * q0 + q1 * q1 + q2 * q2;
        if (rho2 < 0.25 || rho2 > 4) continue;
        const rho = Math.sqrt(rho2);
        const u0 = q0 / rho,
          u1 = q1 / rho,
          u2 = q2 / rho;
        if (u0 * cd0 + u1 * cd1 + u2 * cd2 < s.capCos) continue;
        const m = 1 + amp * Math.sin(k[0] * u0 + phase[0]) * Math.sin(k[1] * u1 + phase[1]);
        // Distance to the surface ρ = m: |ρ − m| / |∇ρ|, with |∇ρ| = |(q_i / a_i)| / ρ.
        const g0 = q0 * i0,
          g1 = q1 * i1,
          g2 = q2 * i2;
        const grad = Math.sqrt(g0 * g0 + g1 * g1 + g2 * g2) / rho;
        const d = Math.abs(rho - m) / grad;
        if (d >= h + 0.5) continue;
        writeVoxel(code, row + x, d < h ? 2 : 0, false, h + 0.5 - d);
      }
    }
  }
}

/** Bins of the normalisation histograms: raw intensities in [HIST_LO, HIST_HI). */
const HIST_BINS = 8192;
const HIST_LO = -1;
const HIST_HI = 3;

/** The value below which a fraction `p` of a histogram's counts lie (bin centre). */
function quantile(hist: Float64Array, total: number, p: number): number {
  const target = p * total;
  let acc = 0;
  for (let i = 0; i < hist.length; i++) {
    acc += hist[i]!;
    if (acc >= target) return HIST_LO + ((i + 0.5) * (HIST_HI - HIST_LO)) / HIST_BINS;
  }
  return HIST_HI;
}

/** The per-case constants of `shadeRow`. */
interface ShadeConstants {
  tissue: number;
  cavity: number;
  sheet: number;
  wall: number;
  lumen: number;
  offset: number;
  gain: number;
  cupping: number;
  noiseScale: number;
}

/**
 * One row (fixed z, y) of the image: specimen, tissue or cavity, the structures' partial volume, drift and
 * noise, then the scanner's offset and gain; bins each raw value in the air or the body histogram and
 * leaves only the label in `code`. `yz`: the row's squared body offsets (Infinity: no body in the row).
 * Returns the noise generator's state (xorshift32).
 */
function shadeRow(
  image: Float32Array,
  code: Uint8Array,
  base: number,
  W: number,
  yz: number,
  BX: Float64Array,
  rowBody: Float32Array,
  rowTex: Float32Array,
  rowCav: Float32Array,
  rowDrift: Float32Array,
  rowCup: Float32Array,
  k: ShadeConstants,
  state: number,
  airHist: Float64Array,
  bodyHist: Float64Array,
): number {
  const binScale = HIST_BINS / (HIST_HI - HIST_LO);
  const bodyRow = yz !== Infinity;
  let rng = state | 0;
  for (let x = 0; x < W; x++) {
    const v = base + x;
    let inBody = false;
    let val = 0;
    if (bodyRow) {
      const rb = 1 + rowBody[x]!;
      if (yz + BX[x]! < rb * rb) {
        inBody = true;
        val = rowCav[x]! > 0.3 ? k.cavity : k.tissue * (1 + rowTex[x]!);
      }
    }
    const c = code[v]!;
    const q = c >>> DEPTH_SHIFT;
    if (q > 0) {
      const cover = q >= 8 ? 1 : q / 8;
      const s = (c & TUBE_BIT) !== 0 ? (q >= LUMEN_DEPTH ? k.lumen : k.wall) : k.sheet;
      val += cover * (s - val);
    }
    val *= 1 + rowDrift[x]! + k.cupping * rowCup[x]!;
    rng ^= rng << 13;
    rng ^= rng >>> 17;
    rng ^= rng << 5;
    const noise = ((rng & 255) + ((rng >>> 8) & 255) + ((rng >>> 16) & 255) + (rng >>> 24) - 510) * k.noiseScale;
    const raw = k.offset + k.gain * (val + noise);
    image[v] = raw;
    let bin = Math.floor((raw - HIST_LO) * binScale);
    bin = bin < 0 ? 0 : bin >= HIST_BINS ? HIST_BINS - 1 : bin;
    if (inBody) bodyHist[bin]++;
    else airHist[bin]++;
    code[v] = c & LABEL_MASK;
  }
  return rng;
}

export function microctCaseId(index: number): string {
  return `microct-${String(index).padStart(3, '0')}`;
}

/** Checks what the schema cannot (edges large enough, something to segment); names the field. */
export function checkMicroctOptions(opts: MicroctOptions, path = 'dataset.settings'): void {
  opts.size.forEach((n, i) => {
    if (n < MIN_EDGE)
      throw new SettingsError(`${path}.size`, `edge ${n} (axis ${'DHW'[i]}) is below ${MIN_EDGE} voxels; a tree or a sheet needs at least a ${MIN_EDGE}³ volume`);
  });
  const N = opts.size[0] * opts.size[1] * opts.size[2];
  // Float32Array and the sliding window's output hold at most 2³² − 1 values.
  if (N > 2 ** 32 - 1)
    throw new SettingsError(`${path}.size`, `[${opts.size.join(', ')}] is ${N} voxels, above the 2³² − 1 a typed array holds; use a smaller size`);
  if (opts.trees === 0 && opts.sheets === 0)
    throw new SettingsError(`${path}.trees`, 'trees and sheets are both 0: the cases would have nothing to segment; set trees or sheets above 0');
}

/** Generates case `index`: image (one channel) and labels (0 background, 1 tube, 2 sheet). */
export function generateMicroctCase(index: number, opts: MicroctOptions): Volume {
  checkMicroctOptions(opts);
  const shape = opts.size;
  const [D, H, W] = shape;
  const N = D * H * W;
  const look = drawLook(opts.seed, index);
  const { tubes, sheets, granules } = microctStructures(index, opts);

  // Structures first, each within its bounding box, into the one byte per voxel of the label map.
  const code = new Uint8Array(N);
  for (const g of granules) rasteriseGranule(code, shape, g);
  for (const s of sheets) rasteriseSheet(code, shape, s);
  for (const c of tubes) rasteriseTube(code, shape, c);

  // Then every voxel once: specimen, tissue, structures, drift, noise; histograms for the normalisation.
  const image = new Float32Array(N);
  const coordsVoxel: [Float64Array, Float64Array, Float64Array] = [Float64Array.from({ length: D }, (_, i) => i), Float64Array.from({ length: H }, (_, i) => i), Float64Array.from({ length: W }, (_, i) => i)];
  const coordsUnit: [Float64Array, Float64Array, Float64Array] = [
    Float64Array.from({ length: D }, (_, i) => (i + 0.5) / D),
    Float64Array.from({ length: H }, (_, i) => (i + 0.5) / H),
    Float64Array.from({ length: W }, (_, i) => (i + 0.5) / W),
  ];
  const bodyF = sampleField(look.body.field, coordsUnit);
  const texF = sampleField(look.texture, coordsVoxel);
  const cavF = sampleField(look.cavity, coordsVoxel);
  const driftF = sampleField(look.driftField, coordsUnit);
  const rowBody = new Float32Array(W);
  const rowTex = new Float32Array(W);
  const rowCav = new Float32Array(W);
  const rowDrift = new Float32Array(W);
  // Body ellipsoid: per-axis squared normalised offsets.
  const sq = (n: number, c: number, a: number): Float64Array => Float64Array.from({ length: n }, (_, i) => (((i + 0.5) / n - c) / a) ** 2);
  const BZ = sq(D, look.body.centre[0], look.body.semi[0]);
  const BY = sq(H, look.body.centre[1], look.body.semi[1]);
  const BX = sq(W, look.body.centre[2], look.body.semi[2]);
  // Cupping: darker towards the centre of each axial (y, x) slice.
  const CY = Float64Array.from({ length: H }, (_, i) => (((i + 0.5) / H - 0.5) * 2) ** 2);
  const CX = Float64Array.from({ length: W }, (_, i) => (((i + 0.5) / W - 0.5) * 2) ** 2);
  const I = look.intensity;
  const drift = opts.drift;
  // Sum of four uniform bytes: mean 510, sd sqrt(4 · (256² − 1) / 12).
  const noiseScale = (opts.noise * 0.45) / Math.sqrt((4 * (256 * 256 - 1)) / 12);
  const airHist = new Float64Array(HIST_BINS);
  const bodyHist = new Float64Array(HIST_BINS);
  const bodyReach = (1 + look.body.amp) ** 2;

  const shade: ShadeConstants = {
    tissue: I.tissue,
    cavity: I.cavity,
    sheet: I.sheet,
    wall: I.wall,
    lumen: I.lumen,
    offset: look.offset,
    gain: look.gain,
    cupping: 0.4 * drift,
    noiseScale,
  };
  const rowCup = new Float32Array(W);
  let rng = look.noiseSeed | 0;
  for (let z = 0; z < D; z++) {
    for (let y = 0; y < H; y++) {
      const yz = BY[y]! + BZ[z]!;
      const bodyRow = yz < bodyReach;
      if (bodyRow) {
        fieldRow(bodyF, z, y, look.body.amp, rowBody);
        fieldRow(texF, z, y, 0.1, rowTex);
        fieldRow(cavF, z, y, 1, rowCav);
      }
      fieldRow(driftF, z, y, 0.6 * drift, rowDrift);
      // Cupping: −0.4·drift at a slice's centre, rising towards its corners.
      const cupY = CY[y]!;
      for (let x = 0; x < W; x++) rowCup[x] = 0.5 * (cupY + CX[x]!) - 1;
      rng = shadeRow(image, code, (z * H + y) * W, W, bodyRow ? yz : Infinity, BX, rowBody, rowTex, rowCav, rowDrift, rowCup, shade, rng, airHist, bodyHist);
    }
  }
  let nAir = 0,
    nBody = 0;
  for (let i = 0; i < HIST_BINS; i++) {
    nAir += airHist[i]!;
    nBody += bodyHist[i]!;
  }

  // Air level → 0, the specimen's 99.5th percentile → 1.
  const air = nAir > 0 ? quantile(airHist, nAir, 0.5) : look.offset;
  const top = nBody > 0 ? quantile(bodyHist, nBody, 0.995) : air + look.gain;
  const scale = 1 / Math.max(top - air, 1e-6);
  for (let v = 0; v < N; v++) image[v] = (image[v]! - air) * scale;

  return { id: microctCaseId(index), image, shape: [D, H, W], channels: 1, label: code, spacing: [1, 1, 1] };
}

const plugin: DatasetPlugin<typeof settings> = {
  kind: 'dataset',
  name: 'synthetic-microct',
  description:
    'built-in microCT-like generator: one channel of insect soft tissue with branching tracheal tubes (label 1) and thin epithelial sheets (label 2), any size (630³ = 250 M voxels), reproducible',
  reference:
    'setting of Wang Y., Blackie L., Miguel-Aliaga I., Bai W., Memory-efficient segmentation of high-resolution volumetric MicroCT images, MIDL 2022 (arXiv:2205.15941); generator: this project',
  settings,
  create({ cases, ...options }): Dataset {
    checkMicroctOptions(options);
    return new GeneratedDataset('synthetic-microct', MICROCT_TASK, MICROCT_CHANNELS, cases, microctCaseId, (index) => generateMicroctCase(index, options), 'voxel');
  },
};

export default plugin;
