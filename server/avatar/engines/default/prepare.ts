/**
 * Per-portrait work for the default engine (done once in prepare(), never per frame): the face crop, the control
 * points (landmarks, a rigid head ring, fixed anchors on an outer ellipse), the paste region
 * with its feathered mask, the background, and the colours of the procedural mouth interior.
 *
 * Coordinates: "grid" units are the crop's normalised coordinates in [-1, 1] (x right, y down), the generator's
 * convention. The crop is an axis-aligned square around the head in the original portrait.
 */
import type { I420Frame, RgbImage } from '../../../types/image.js';
import type { FaceTrack } from '../../../vision/types.js';
import { buildHeadLayer } from './headLayer.js';
import { rgbToI420 } from '../../../util/image.js';
import { fitRgb, outputDims } from '../size.js';
import { faceFrame, fillPolygon, mouthOpenness, type FaceFrame } from './geometry.js';
import type { PortraitGeometry } from './expression.js';

/** Rigid head-ring points (12) and fixed outer-ellipse anchors (16: dense enough that the flow is ~0 all along
 * the ellipse, where the paste mask fades out, so nothing ghosts there). */
export const N_RING = 12;
export const N_OUTER = 16;
export const N_CTRL = 68 + N_RING + N_OUTER;

export interface PreparedFace extends PortraitGeometry {
  /** Output video size. */
  width: number;
  height: number;
  /**
   * What the head moves over, I420 at output size: the plate (headLayer.ts: where the head was, filled from the
   * background) when the head was segmented, else the portrait itself.
   */
  background: I420Frame;
  /** The portrait itself at output size, I420 (the whole-graph path pastes its region over it). */
  still: I420Frame;
  /**
   * The head layer: the portrait at output size as RGBA (alpha: the head's), the box of its alpha > 0 (output pixels,
   * x0, y0, x1, y1 exclusive), whether it was segmented (false: the whole picture, opaque; the warp's outer anchors
   * stay pinned), and the map from crop grid units to output pixels: x = kx * g + cx, y = ky * g + cy.
   */
  head: {
    image: Uint8Array;
    /** Each output pixel's share of the head's motion (headLayer.ts). */
    motion: Float32Array;
    /** What is behind the head, RGB at output size. */
    plate: Uint8Array;
    box: [number, number, number, number];
    segmented: boolean;
    toImage: [number, number, number, number];
  };
  /** Source positions of all N_CTRL control points (grid units). */
  ctrlSource: Float64Array;
  /** The crop, planar float RGB 0..255, sourceRes^2. */
  source: Float32Array;
  /** Paste region in output pixels (x0, y0, w, h even) and the grid coordinates of its first/last pixel centres. */
  paste: { x0: number; y0: number; w: number; h: number; grid: Float32Array };
  /** Background of the paste region, planar float RGB. */
  pasteBackground: Float32Array;
  /** Feathered paste mask of the region (1 inside the head, 0 at the fixed outer ellipse). */
  pasteMask: Float32Array;
  /** Overlay colours (RGB 0..255 each): mouth dark, teeth, tongue, eyelid skin, lash line. */
  colors: Float32Array;
  /** The portrait's own mouth openness (inner-lip gap / width). */
  mouthOpen: number;
  /** Mean eye half-width and half-height (grid units), for the gaze shift. */
  eyeHalfWidth: number;
  eyeHalfHeight: number;
  /**
   * The portrait's irises (grid units): centre x, y and radius of the image-left eye, then of the image-right eye;
   * null when the tracker gave none or they did not look like irises (then gaze shifts the whole eye opening).
   */
  irises: Float64Array | null;
  /**
   * The eye openings' outlines (grid units), 16 points each (lower lid from the outer corner, then the upper lid
   * back), image-left eye first, when the tracker gave lid contours with the irises; else null.
   */
  eyeOutlines: Float64Array | null;
}

/**
 * Checks irises (portrait pixels: cx, cy, r per eye, image-left eye first) against the 68 points' eyes: each centre
 * inside its eye's corner-to-corner span and not far above or below it, each radius 0.12-0.45 of its eye's width (a
 * tracker that meets a cartoon's eye it cannot read returns something else). Returns them or null.
 */
export function plausibleIrises(irises: ArrayLike<number>, landmarks: ArrayLike<number>): Float64Array | null {
  const out = new Float64Array(6);
  for (const [k, e] of [
    [0, 36],
    [1, 42],
  ] as const) {
    const ax = landmarks[2 * e]!,
      ay = landmarks[2 * e + 1]!,
      bx = landmarks[2 * (e + 3)]!,
      by = landmarks[2 * (e + 3) + 1]!;
    const w = Math.hypot(bx - ax, by - ay);
    const cx = irises[3 * k]!,
      cy = irises[3 * k + 1]!,
      r = irises[3 * k + 2]!;
    if (!(w > 0) || !(r >= 0.12 * w && r <= 0.45 * w)) return null;
    const t = ((cx - ax) * (bx - ax) + (cy - ay) * (by - ay)) / (w * w);
    const v = (-(cx - ax) * (by - ay) + (cy - ay) * (bx - ax)) / w;
    if (!(t > 0.15 && t < 0.85) || Math.abs(v) > 0.25 * w) return null;
    out[3 * k] = cx;
    out[3 * k + 1] = cy;
    out[3 * k + 2] = r;
  }
  return out;
}

export interface PrepareOptions {
  outputSize: number;
  sourceRes: number;
}

/** Picks the largest face. */
export function largestFace(faces: readonly FaceTrack[]): FaceTrack | null {
  let best: FaceTrack | null = null;
  let area = -1;
  for (const f of faces) {
    const a = (f.box.r - f.box.l) * (f.box.b - f.box.t);
    if (a > area) {
      area = a;
      best = f;
    }
  }
  return best;
}

/**
 * Builds everything the engine needs for one portrait. `landmarks` are the face's 68 points in the portrait's pixel
 * coordinates.
 */
export function preparePortrait(
  rgb: RgbImage,
  landmarks: Float32Array,
  pose: PortraitGeometry['pose'],
  opts: PrepareOptions,
  irises: ArrayLike<number> | null = null,
  eyeOutlines: ArrayLike<number> | null = null,
  person: { size: number; data: Float32Array } | null = null,
): PreparedFace {
  const f = faceFrame(landmarks, { ox: 0, oy: 0, ux: 1, uy: 0, width: 1, height: 1, iod: 1 });
  const vx = -f.uy;
  const vy = f.ux;
  // Head ring in the face frame: from above the forehead to below the chin, a little wider than the jaw. Everything
  // inside it moves with the head; it is kept close to the face so that little background moves along.
  const top = -1.5 * f.iod;
  const bottom = f.height + 0.4 * f.iod;
  const ecY = (top + bottom) / 2;
  const ry = (bottom - top) / 2;
  const rx = 0.5 * f.width * 1.4;
  // The outer ellipse (fixed anchors, where the paste mask ends) stays close to the ring: the band between them is
  // where a 2D warp bends the background, so a narrow band keeps the background static around a moving head (self-
  // reenactment SSIM on woman_speech_head_motion: 0.55 with 1.35/1.25 and a taller ring, 0.63 with these). It must
  // stay wider than the head's largest shift (expression.ts MAX_SHIFT, MAX_LOG_ZOOM) or the warp folds over.
  const rxo = rx * 1.2;
  const ryo = ry * 1.15;
  const ecx = f.ox + vx * ecY;
  const ecy = f.oy + vy * ecY;
  // Crop: a square around the outer ellipse (a circle bound, whatever the face's roll).
  // Output frame: the portrait scaled so that its long side is outputSize.
  const { width, height } = outputDims(rgb.width, rgb.height, opts.outputSize);
  const so = width / rgb.width;
  const R = opts.sourceRes;
  const needed = 2 * Math.max(rxo, ryo) * 1.06;
  // The crop is taken from the output-size picture, pixel for pixel, whenever it fits in R output pixels: then an
  // unmoved part of the face is reproduced exactly (no double resampling blur). Only a head larger than R output
  // pixels is cropped from the original and scaled.
  const aligned = needed * so <= R;
  const side = aligned ? R / so : needed;
  const cx0 = aligned ? Math.round(ecx * so - R / 2) / so : ecx - side / 2;
  const cy0 = aligned ? Math.round(ecy * so - R / 2) / so : ecy - side / 2;
  const toGx = (x: number): number => (2 * (x - cx0)) / side - 1;
  const toGy = (y: number): number => (2 * (y - cy0)) / side - 1;

  const ctrl = new Float64Array(N_CTRL * 2);
  for (let i = 0; i < 68; i++) {
    ctrl[2 * i] = toGx(landmarks[2 * i]!);
    ctrl[2 * i + 1] = toGy(landmarks[2 * i + 1]!);
  }
  const ellipsePoint = (a: number, erx: number, ery: number): [number, number] => {
    const fx = Math.cos(a) * erx;
    const fy = Math.sin(a) * ery;
    return [ecx + fx * f.ux + fy * vx, ecy + fx * f.uy + fy * vy];
  };
  for (let k = 0; k < N_RING; k++) {
    const [x, y] = ellipsePoint((2 * Math.PI * k) / N_RING, rx, ry);
    ctrl[2 * (68 + k)] = toGx(x);
    ctrl[2 * (68 + k) + 1] = toGy(y);
  }
  for (let k = 0; k < N_OUTER; k++) {
    const [x, y] = ellipsePoint((2 * Math.PI * (k + 0.5)) / N_OUTER, rxo, ryo);
    ctrl[2 * (68 + N_RING + k)] = toGx(x);
    ctrl[2 * (68 + N_RING + k) + 1] = toGy(y);
  }

  // The paste region (bbox of the outer ellipse at output scale, even-aligned).
  let minX = Infinity,
    minY = Infinity,
    maxX = -Infinity,
    maxY = -Infinity;
  for (let k = 0; k < 64; k++) {
    const [x, y] = ellipsePoint((2 * Math.PI * k) / 64, rxo, ryo);
    minX = Math.min(minX, x * so);
    maxX = Math.max(maxX, x * so);
    minY = Math.min(minY, y * so);
    maxY = Math.max(maxY, y * so);
  }
  const x0 = Math.max(0, Math.floor(minX / 2) * 2 - 2);
  const y0 = Math.max(0, Math.floor(minY / 2) * 2 - 2);
  const x1 = Math.min(width, Math.ceil(maxX / 2) * 2 + 2);
  const y1 = Math.min(height, Math.ceil(maxY / 2) * 2 + 2);
  const pw = Math.max(2, x1 - x0);
  const ph = Math.max(2, y1 - y0);
  // Output pixel centre (x + 0.5) is at x + 0.5 / so in the original.
  const pasteGrid = new Float32Array([
    toGx((x0 + 0.5) / so),
    toGy((y0 + 0.5) / so),
    toGx((x0 + pw - 0.5) / so),
    toGy((y0 + ph - 0.5) / so),
  ]);

  const full = fitRgb(rgb, width, height);
  const still = rgbToI420(full);
  const outLm = Float32Array.from(landmarks, (v) => (v + 0.5) * so - 0.5);
  const layer = buildHeadLayer(
    full,
    person,
    faceFrame(outLm, { ox: 0, oy: 0, ux: 1, uy: 0, width: 1, height: 1, iod: 1 }),
  );
  const background = layer.segmented ? rgbToI420(layer.plate) : still;
  const kg = (side * so) / 2;
  const pasteBackground = new Float32Array(3 * pw * ph);
  const pasteMask = new Float32Array(pw * ph);
  const plane = pw * ph;
  for (let y = 0; y < ph; y++) {
    for (let x = 0; x < pw; x++) {
      const s = ((y0 + y) * width + x0 + x) * 3;
      const o = y * pw + x;
      pasteBackground[o] = full.data[s]!;
      pasteBackground[plane + o] = full.data[s + 1]!;
      pasteBackground[2 * plane + o] = full.data[s + 2]!;
      // Normalised outer-ellipse radius of this pixel.
      const X = (x0 + x + 0.5) / so - ecx;
      const Y = (y0 + y + 0.5) / so - ecy;
      const fx = (X * f.ux + Y * f.uy) / rxo;
      const fy = (X * vx + Y * vy) / ryo;
      const r = Math.sqrt(fx * fx + fy * fy);
      const t = Math.min(1, Math.max(0, (0.97 - r) / 0.17));
      pasteMask[o] = t * t * (3 - 2 * t);
    }
  }

  const source = aligned ? sampleCrop(full, cx0 * so, cy0 * so, R, R) : sampleCrop(rgb, cx0, cy0, side, R);
  const checked = irises ? plausibleIrises(irises, landmarks) : null;
  const irisGrid = checked
    ? Float64Array.from(
        [0, 1].flatMap((k) => [toGx(checked[3 * k]!), toGy(checked[3 * k + 1]!), (2 * checked[3 * k + 2]!) / side]),
      )
    : null;
  const lm = ctrl.slice(0, 136);
  const frame = faceFrame(lm, { ox: 0, oy: 0, ux: 1, uy: 0, width: 1, height: 1, iod: 1 });
  const colors = overlayColours(source, opts.sourceRes, lm);
  const ehw = (Math.hypot(lm[78]! - lm[72]!, lm[79]! - lm[73]!) + Math.hypot(lm[90]! - lm[84]!, lm[91]! - lm[85]!)) / 4;
  const ehh =
    (Math.hypot(lm[74]! - lm[82]!, lm[75]! - lm[83]!) +
      Math.hypot(lm[76]! - lm[80]!, lm[77]! - lm[81]!) +
      Math.hypot(lm[86]! - lm[94]!, lm[87]! - lm[95]!) +
      Math.hypot(lm[88]! - lm[92]!, lm[89]! - lm[93]!)) /
    8;
  return {
    width,
    height,
    background,
    still,
    head: {
      image: layer.image,
      motion: layer.motion,
      plate: layer.plate.data,
      box: layer.box,
      segmented: layer.segmented,
      toImage: [kg, so * cx0 + kg - 0.5, kg, so * cy0 + kg - 0.5],
    },
    landmarks: lm,
    frame,
    ring: ctrl.slice(136, 136 + 2 * N_RING),
    pose,
    ctrlSource: ctrl,
    source,
    paste: { x0, y0, w: pw, h: ph, grid: pasteGrid },
    pasteBackground,
    pasteMask,
    colors,
    mouthOpen: mouthOpenness(lm),
    eyeHalfWidth: ehw,
    eyeHalfHeight: ehh,
    irises: irisGrid,
    eyeOutlines:
      irisGrid && eyeOutlines ? Float64Array.from(eyeOutlines, (v, i) => (i % 2 === 0 ? toGx(v) : toGy(v))) : null,
  };
}

/**
 * Samples the square crop (cx0, cy0, side) of `rgb` at res x res into planar float RGB, averaging k x k bilinear
 * taps per pixel when the crop is downscaled (no aliasing from a 3500 px photo), clamping at the image border.
 */
export function sampleCrop(rgb: RgbImage, cx0: number, cy0: number, side: number, res: number): Float32Array {
  const out = new Float32Array(3 * res * res);
  const step = side / res;
  const k = Math.min(8, Math.max(1, Math.ceil(step)));
  const { width: w, height: h, data } = rgb;
  const plane = res * res;
  const inv = 1 / (k * k);
  for (let j = 0; j < res; j++) {
    for (let i = 0; i < res; i++) {
      let r = 0,
        g = 0,
        b = 0;
      for (let sj = 0; sj < k; sj++) {
        let y = cy0 + (j + (sj + 0.5) / k) * step - 0.5;
        y = y < 0 ? 0 : y > h - 1 ? h - 1 : y;
        const yi = Math.min(h - 2, Math.floor(y));
        const fy = h > 1 ? y - yi : 0;
        for (let si = 0; si < k; si++) {
          let x = cx0 + (i + (si + 0.5) / k) * step - 0.5;
          x = x < 0 ? 0 : x > w - 1 ? w - 1 : x;
          const xi = Math.min(w - 2, Math.floor(x));
          const fx = w > 1 ? x - xi : 0;
          const a = (Math.max(0, yi) * w + Math.max(0, xi)) * 3;
          const bq = a + 3;
          const c = a + w * 3;
          const d = c + 3;
          const w00 = (1 - fx) * (1 - fy),
            w01 = fx * (1 - fy),
            w10 = (1 - fx) * fy,
            w11 = fx * fy;
          r += data[a]! * w00 + data[bq]! * w01 + data[c]! * w10 + data[d]! * w11;
          g += data[a + 1]! * w00 + data[bq + 1]! * w01 + data[c + 1]! * w10 + data[d + 1]! * w11;
          b += data[a + 2]! * w00 + data[bq + 2]! * w01 + data[c + 2]! * w10 + data[d + 2]! * w11;
        }
      }
      const o = j * res + i;
      out[o] = r * inv;
      out[plane + o] = g * inv;
      out[2 * plane + o] = b * inv;
    }
  }
  return out;
}

/**
 * Colours of the procedural mouth interior and the painted eyelids, tinted from the portrait: the lips' mean colour (between the outer and
 * inner lip contours) gives the dark cavity and the tongue; the face's brightness dims the teeth; a grey portrait
 * (black-and-white photo) gets grey colours.
 */
function overlayColours(source: Float32Array, res: number, lm: Float64Array): Float32Array {
  const toNode = (g: number): number => ((g + 1) * res - 1) / 2;
  const xs = new Float64Array(12);
  const ys = new Float64Array(12);
  const scratch = new Float64Array(32);
  const outer = new Float32Array(res * res);
  const inner = new Float32Array(res * res);
  for (let k = 0; k < 12; k++) {
    xs[k] = toNode(lm[2 * (48 + k)]!);
    ys[k] = toNode(lm[2 * (48 + k) + 1]!);
  }
  fillPolygon(outer, res, xs, ys, 12, scratch);
  for (let k = 0; k < 8; k++) {
    xs[k] = toNode(lm[2 * (60 + k)]!);
    ys[k] = toNode(lm[2 * (60 + k) + 1]!);
  }
  fillPolygon(inner, res, xs, ys, 8, scratch);
  // Skin: the cheeks/nose area between the eyes and the mouth.
  const skin = new Float32Array(res * res);
  const skinPts = [1, 29, 15, 54, 33, 48];
  for (let k = 0; k < skinPts.length; k++) {
    xs[k] = toNode(lm[2 * skinPts[k]!]!);
    ys[k] = toNode(lm[2 * skinPts[k]! + 1]!);
  }
  fillPolygon(skin, res, xs, ys, skinPts.length, scratch);
  // Eyelid skin: the band between the upper lids and the brows, away from both (lashes, brow hair).
  const lids = new Float32Array(res * res);
  for (const [eye, brow] of [
    [36, 17],
    [42, 22],
  ] as const) {
    const lidTop = [eye, eye + 1, eye + 2, eye + 3];
    for (let k = 0; k < 4; k++) {
      const li = lidTop[k]!;
      const bi = brow + Math.min(4, Math.round((k * 4) / 3));
      const lx = lm[2 * li]!,
        ly = lm[2 * li + 1]!,
        bx = lm[2 * bi]!,
        by = lm[2 * bi + 1]!;
      xs[k] = toNode(lx + 0.3 * (bx - lx));
      ys[k] = toNode(ly + 0.3 * (by - ly));
      xs[7 - k] = toNode(lx + 0.65 * (bx - lx));
      ys[7 - k] = toNode(ly + 0.65 * (by - ly));
    }
    fillPolygon(lids, res, xs, ys, 8, scratch);
  }
  const plane = res * res;
  let lr = 0,
    lg = 0,
    lb = 0,
    kr = 0,
    kg = 0,
    kb = 0,
    er = 0,
    eg = 0,
    eb = 0;
  let lw = 0,
    sw = 0,
    sat = 0,
    ew = 0;
  for (let i = 0; i < plane; i++) {
    const wl = outer[i]! * (1 - inner[i]!);
    const ws = skin[i]!;
    const r = source[i]!,
      g = source[plane + i]!,
      b = source[2 * plane + i]!;
    if (wl > 0) {
      lr += r * wl;
      lg += g * wl;
      lb += b * wl;
      lw += wl;
    }
    const we = lids[i]!;
    if (we > 0) {
      er += r * we;
      eg += g * we;
      eb += b * we;
      ew += we;
    }
    if (ws > 0) {
      kr += r * ws;
      kg += g * ws;
      kb += b * ws;
      sat += (Math.abs(r - g) + Math.abs(g - b)) * ws;
      sw += ws;
    }
  }
  const L = lw > 0 ? [lr / lw, lg / lw, lb / lw] : [150, 80, 80];
  const S = sw > 0 ? [kr / sw, kg / sw, kb / sw] : [170, 140, 120];
  const grey = sw > 0 && sat / sw < 6;
  const skinLum = 0.299 * S[0]! + 0.587 * S[1]! + 0.114 * S[2]!;
  const bright = Math.min(1.0, Math.max(0.5, skinLum / 170));
  let dark = [L[0]! * 0.3 + 8, L[1]! * 0.18 + 4, L[2]! * 0.2 + 5];
  let teeth = [236 * bright, 230 * bright, 214 * bright];
  let tongue = [0.5 * L[0]! + 0.5 * 196, 0.5 * L[1]! + 0.5 * 92, 0.5 * L[2]! + 0.5 * 102].map(
    (v) => v * (0.6 + 0.4 * bright),
  );
  // A closed lid is a little darker than the skin above the eye (it is in the eye socket's shade).
  let lid = (ew > 0 ? [er / ew, eg / ew, eb / ew] : S).map((v) => v * 0.93);
  let lash = lid.map((v) => v * 0.3);
  if (grey) {
    const lum = (c: number[]): number[] => {
      const y = 0.299 * c[0]! + 0.587 * c[1]! + 0.114 * c[2]!;
      return [y, y, y];
    };
    dark = lum(dark);
    teeth = lum(teeth);
    tongue = lum(tongue);
    lid = lum(lid);
    lash = lum(lash);
  }
  return new Float32Array([...dark, ...teeth, ...tongue, ...lid, ...lash]);
}

/** The face frame of the prepared landmarks (re-exported for tests). */
export type { FaceFrame };
