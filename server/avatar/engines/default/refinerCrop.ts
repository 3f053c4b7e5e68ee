/**
 * The refiner's view of a frame: the paste region (where the warp changes pixels) resampled to a small square, and
 * back. One function for training data (server/learned/dataset.ts) and the live engine, so that both see exactly the
 * same pixels.
 */
import type { RgbImage } from '../../../types/image.js';
import { fitSimilarity, type Similarity } from './geometry.js';

/** A rectangle of an image in pixels. */
export interface Region {
  x0: number;
  y0: number;
  w: number;
  h: number;
}

/**
 * Resamples `region` of `img` to size×size RGB (uint8, packed): each output pixel averages k×k bilinear samples,
 * k = ceil(downscale), at most 4, so a large region does not alias. Pixels outside the image are clamped to the edge.
 */
export function sampleRegion(img: RgbImage, region: Region, size: number, out: Uint8Array): Uint8Array {
  if (out.length !== size * size * 3) throw new TypeError('sampleRegion: output buffer must be size*size*3');
  const sx = region.w / size;
  const sy = region.h / size;
  const k = Math.min(4, Math.max(1, Math.ceil(Math.max(sx, sy))));
  const { width: W, height: H, data } = img;
  const kk = k * k;
  for (let v = 0; v < size; v++) {
    for (let u = 0; u < size; u++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let j = 0; j < k; j++) {
        const y = Math.min(H - 1, Math.max(0, region.y0 + (v + (j + 0.5) / k) * sy - 0.5));
        const y0 = Math.floor(y);
        const y1 = Math.min(H - 1, y0 + 1);
        const fy = y - y0;
        for (let i = 0; i < k; i++) {
          const x = Math.min(W - 1, Math.max(0, region.x0 + (u + (i + 0.5) / k) * sx - 0.5));
          const x0 = Math.floor(x);
          const x1 = Math.min(W - 1, x0 + 1);
          const fx = x - x0;
          const p00 = (y0 * W + x0) * 3;
          const p01 = (y0 * W + x1) * 3;
          const p10 = (y1 * W + x0) * 3;
          const p11 = (y1 * W + x1) * 3;
          const w00 = (1 - fx) * (1 - fy);
          const w01 = fx * (1 - fy);
          const w10 = (1 - fx) * fy;
          const w11 = fx * fy;
          r += w00 * data[p00]! + w01 * data[p01]! + w10 * data[p10]! + w11 * data[p11]!;
          g += w00 * data[p00 + 1]! + w01 * data[p01 + 1]! + w10 * data[p10 + 1]! + w11 * data[p11 + 1]!;
          b += w00 * data[p00 + 2]! + w01 * data[p01 + 2]! + w10 * data[p10 + 2]! + w11 * data[p11 + 2]!;
        }
      }
      const o = (v * size + u) * 3;
      out[o] = Math.round(r / kk);
      out[o + 1] = Math.round(g / kk);
      out[o + 2] = Math.round(b / kk);
    }
  }
  return out;
}

/**
 * The aligned source ("source": "aligned" in a refiner pack's manifest): the portrait's region moved per frame by the
 * similarity that carries the portrait's head onto the warp's target head, so that the refiner's reference picture
 * sits where the warp put the face (a zoomed or shifted driver then no longer makes a second, unmoved face show
 * through). The portrait is sampled once into a canvas twice the region's size around the same centre (2R×2R,
 * the same pixel density as the R×R crop: its centre R×R is the region crop itself), and each frame reads the
 * canvas through the similarity's inverse, bilinearly, clamped at the canvas edge (as PyTorch's grid_sample with
 * border padding does in training).
 */
export const CANVAS_SCALE = 2;

/** The canvas's region: `region` grown to CANVAS_SCALE times its size about its centre. */
export function canvasRegion(region: Region): Region {
  const k = (CANVAS_SCALE - 1) / 2;
  return {
    x0: region.x0 - region.w * k,
    y0: region.y0 - region.h * k,
    w: region.w * CANVAS_SCALE,
    h: region.h * CANVAS_SCALE,
  };
}

/** Control points the alignment is fitted on: the rigid head ring (68..79) and the nose bridge and eye corners. */
export const ALIGN_POINTS: readonly number[] = [
  68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 27, 28, 29, 30, 36, 39, 42, 45,
];
const alignSrc = new Float64Array(2 * ALIGN_POINTS.length);
const alignDst = new Float64Array(2 * ALIGN_POINTS.length);
const alignIdx = ALIGN_POINTS.map((_, k) => k);
const alignSim: Similarity = { a: 1, b: 0, tx: 0, ty: 0 };

/** What the alignment needs of the prepared face: control points in grid units and the paste region's grid. */
export interface AlignFace {
  ctrlSource: ArrayLike<number>;
  paste: { w: number; h: number; grid: ArrayLike<number> };
}

/**
 * Grid units (the warp's control points) -> the R×R crop's continuous pixel coordinates (pixel centres at i + 0.5):
 * crop x = (g - g0)·m[0] + m[1], crop y = (g - g1)·m[2] + m[3], written into `m` (no allocation: called per frame).
 */
function gridToCrop(face: AlignFace, R: number, m: Float64Array): Float64Array {
  const g = face.paste.grid;
  const { w, h } = face.paste;
  // Pixel index px = (g - g0) / (g2 - g0) * (w - 1), crop coordinate (px + 0.5) * R / w.
  m[0] = ((w - 1) / (g[2]! - g[0]!)) * (R / w);
  m[1] = (0.5 * R) / w - g[0]! * m[0];
  m[2] = ((h - 1) / (g[3]! - g[1]!)) * (R / h);
  m[3] = (0.5 * R) / h - g[1]! * m[2];
  return m;
}

/** Per-frame scratch of the functions below (the engine renders one frame at a time per thread). */
const cropMap = new Float64Array(4);
const regions = new Float64Array(12);

function setRegion(k: number, cx: number, cy: number, rx: number, ry: number): void {
  regions[4 * k] = cx;
  regions[4 * k + 1] = cy;
  regions[4 * k + 2] = rx;
  regions[4 * k + 3] = ry;
}

/** How far the feature mask's regions fade out, in multiples of their radii. */
const FADE = 1.4;

/**
 * The feature mask of a refiner whose manifest entry says "residual": "features" (R×R, 0..1): where its residual
 * over the warp is kept. Two eye regions (each around the eye and up to the brow: an ellipse 0.9 eye-widths across
 * and 0.75 high, centred a little above the eye) and the mouth (an ellipse 0.75 mouth-widths across, 0.35 high plus
 * half the lip gap), from the warp's target points of this frame; 1 inside each ellipse, fading to 0 at FADE times
 * its radii. Elsewhere the warp's pixels stay as they are (the portrait's own texture, its identity).
 */
export function featureMask(face: AlignFace, ctrl: ArrayLike<number>, R: number, out: Float32Array): Float32Array {
  if (out.length !== R * R) throw new TypeError('featureMask: output buffer must be R*R');
  const m = gridToCrop(face, R, cropMap);
  const px = (i: number): number => ctrl[2 * i]! * m[0]! + m[1]!;
  const py = (i: number): number => ctrl[2 * i + 1]! * m[2]! + m[3]!;
  const dist = (i: number, j: number): number => Math.hypot(px(i) - px(j), py(i) - py(j));
  // regions: (centre x, centre y, radius x, radius y) of the two eyes and the mouth.
  for (let e = 0; e < 2; e++) {
    const from = 36 + 6 * e;
    const ew = Math.max(1, dist(from, from + 3));
    let sx = 0;
    let sy = 0;
    for (let i = from; i < from + 6; i++) {
      sx += px(i);
      sy += py(i);
    }
    setRegion(e, sx / 6, sy / 6 - 0.15 * ew, 0.9 * ew, 0.75 * ew);
  }
  const mw = Math.max(1, dist(48, 54));
  let sx = 0;
  let sy = 0;
  for (let i = 48; i < 68; i++) {
    sx += px(i);
    sy += py(i);
  }
  setRegion(2, sx / 20, sy / 20, 0.75 * mw, 0.35 * mw + dist(62, 66) / 2);
  out.fill(0);
  for (let r = 0; r < 12; r += 4) {
    const ex = regions[r]!;
    const ey = regions[r + 1]!;
    const rx = regions[r + 2]!;
    const ry = regions[r + 3]!;
    const x0 = Math.max(0, Math.floor(ex - FADE * rx));
    const x1 = Math.min(R - 1, Math.ceil(ex + FADE * rx));
    const y0 = Math.max(0, Math.floor(ey - FADE * ry));
    const y1 = Math.min(R - 1, Math.ceil(ey + FADE * ry));
    for (let v = y0; v <= y1; v++) {
      for (let u = x0; u <= x1; u++) {
        const d = Math.hypot((u + 0.5 - ex) / rx, (v + 0.5 - ey) / ry);
        const w = d <= 1 ? 1 : d >= FADE ? 0 : (FADE - d) / (FADE - 1);
        const o = v * R + u;
        if (w > out[o]!) out[o] = w;
      }
    }
  }
  return out;
}

/**
 * Least-squares similarity (a, b, tx, ty) from the portrait's control points to the frame's target control points
 * (`ctrl`, grid units as the warp uses them), in the R×R crop's continuous pixel coordinates (pixel centres at
 * i + 0.5): target = [a -b; b a]·source + t. Written into `out` (4 numbers). The identity when the fit degenerates.
 */
export function fitSourceAlignment(
  face: AlignFace,
  ctrl: ArrayLike<number>,
  R: number,
  out: Float64Array,
): Float64Array {
  const m = gridToCrop(face, R, cropMap);
  for (let k = 0; k < ALIGN_POINTS.length; k++) {
    const i = ALIGN_POINTS[k]!;
    alignSrc[2 * k] = face.ctrlSource[2 * i]! * m[0]! + m[1]!;
    alignSrc[2 * k + 1] = face.ctrlSource[2 * i + 1]! * m[2]! + m[3]!;
    alignDst[2 * k] = ctrl[2 * i]! * m[0]! + m[1]!;
    alignDst[2 * k + 1] = ctrl[2 * i + 1]! * m[2]! + m[3]!;
  }
  const { a, b, tx, ty } = fitSimilarity(alignSrc, alignDst, alignIdx, alignSim);
  // A degenerate fit (source points in one place: a shift only) or a collapsing one (scale under 0.1): the identity.
  const ok = a * a + b * b >= 0.01 && Number.isFinite(a + b + tx + ty) && !spreadless(alignSrc);
  out[0] = ok ? a : 1;
  out[1] = ok ? b : 0;
  out[2] = ok ? tx : 0;
  out[3] = ok ? ty : 0;
  return out;
}

/** Whether all points are in one place. */
function spreadless(p: Float64Array): boolean {
  for (let i = 2; i < p.length; i++) if (p[i] !== p[i & 1]) return false;
  return true;
}

/**
 * The aligned source, planar float RGB 0..1 (3·R·R), from the canvas (2R×2R RGB uint8, packed) through the alignment
 * (a, b, tx, ty): output pixel P reads the crop point Q = A⁻¹(P − t), i.e. canvas point Q + R/2, bilinearly.
 */
export function sampleAligned(
  canvas: Uint8Array,
  R: number,
  align: ArrayLike<number>,
  out: Float32Array,
): Float32Array {
  const C = CANVAS_SCALE * R;
  if (canvas.length !== C * C * 3 || out.length !== 3 * R * R) throw new TypeError('sampleAligned: buffer sizes');
  const a = align[0]!;
  const b = align[1]!;
  const d = a * a + b * b;
  // A⁻¹ = [a b; -b a] / d.
  const ia = a / d;
  const ib = b / d;
  const off = ((CANVAS_SCALE - 1) * R) / 2 - 0.5;
  const plane = R * R;
  for (let v = 0; v < R; v++) {
    const py = v + 0.5 - align[3]!;
    for (let u = 0; u < R; u++) {
      const px = u + 0.5 - align[2]!;
      const x = Math.min(C - 1, Math.max(0, ia * px + ib * py + off));
      const y = Math.min(C - 1, Math.max(0, -ib * px + ia * py + off));
      const x0 = Math.floor(x);
      const y0 = Math.floor(y);
      const x1 = Math.min(C - 1, x0 + 1);
      const y1 = Math.min(C - 1, y0 + 1);
      const fx = x - x0;
      const fy = y - y0;
      const p00 = (y0 * C + x0) * 3;
      const p01 = (y0 * C + x1) * 3;
      const p10 = (y1 * C + x0) * 3;
      const p11 = (y1 * C + x1) * 3;
      const w00 = ((1 - fx) * (1 - fy)) / 255;
      const w01 = (fx * (1 - fy)) / 255;
      const w10 = ((1 - fx) * fy) / 255;
      const w11 = (fx * fy) / 255;
      const o = v * R + u;
      for (let ch = 0; ch < 3; ch++) {
        out[ch * plane + o] =
          w00 * canvas[p00 + ch]! + w01 * canvas[p01 + ch]! + w10 * canvas[p10 + ch]! + w11 * canvas[p11 + ch]!;
      }
    }
  }
  return out;
}
