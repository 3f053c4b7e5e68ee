/**
 * The CPU half of the generator: one fused pass over the paste region that does what the tail of
 * models/default/generator.onnx does (bilinear upsampling of the node-resolution grid and mouth fields, the warp of
 * the crop, the mouth composite, the feathered paste over the background and BT.601 I420 conversion), writing
 * straight into the output frame.
 *
 * Why not the graph: on onnxruntime's CPU provider GridSample and Resize at output resolution cost 3-4x this loop
 * (measured: 28 ms vs 7-11 ms for a 304x360 region on a loaded 2-core machine), and they are most of the frame.
 * The whole graph remains the path for GPU providers; a test checks that both agree.
 *
 * Eyelids close by moving, not by paint (setLids): inside each eye the output is read from a remapped position
 * before the warp, so that the skin between the lid crease and the lid's edge stretches down over the eye as a real
 * upper lid does, the lash line (the source's lid margin) travels down with it, and the eyeball below the new edge
 * stays where it is: the iris is hidden by the lid, not squashed or painted over. The edge is anti-aliased over one
 * pixel. Only the CPU path does this; the whole graph still paints closing lids.
 *
 * Irises move inside the eye (setEyes, when the portrait's irises are known): within the portrait's eye opening (a
 * mask in source pixels), a pixel inside the moved iris disc reads the iris from where it was, a pixel of the old
 * iris that the moved one no longer covers reads the sclera beside it, and everything outside the opening is left
 * alone, so the iris is clipped by the lids as a real one is. (Without known irises, the generator's fields shift the
 * whole opening instead.)
 */
import type { I420Frame } from '../../../types/image.js';

/** The portrait's eyes for iris movement: source-pixel eye openings and irises. */
export interface WarpEyes {
  /** Each eye's opening as a polygon of 16 points (image-left eye first), source pixels: x0, y0, ... (64 numbers). */
  eyePoints: ArrayLike<number>;
  /** Iris centre x, y and radius per eye, source pixels (6 numbers). */
  irises: ArrayLike<number>;
}

export interface WarpSetup {
  /** The crop, planar float RGB (sourceRes^2 per plane). */
  source: Float32Array;
  sourceRes: number;
  /** Node resolution of the fields (M x M). */
  nodeRes: number;
  /** Paste region in the output frame (even x0, y0, w, h). */
  x0: number;
  y0: number;
  w: number;
  h: number;
  /** Region background, planar float RGB (w*h per plane). */
  background: Float32Array;
  /** Feathered paste mask (w*h). */
  mask: Float32Array;
  /** The portrait's eyes, for moving the irises (setEyes); absent: no iris movement here. */
  eyes?: WarpEyes;
  /** The head layer (headLayer.ts), for runHead(): the head moves as one piece over the plate. */
  head?: WarpHead;
}

/** The head layer and plate at output size, for {@link FusedWarp.runHead}. */
export interface WarpHead {
  /** Output frame size. */
  width: number;
  height: number;
  /** The portrait at output size, RGBA (alpha: the person's). */
  image: Uint8Array;
  /** Each output pixel's share of the head's motion (0..1, output size). */
  motion: Float32Array;
  /** What is behind the head, RGB at output size. */
  plate: Uint8Array;
  /** Crop grid units to output pixels: x = kx * g + cx, y = ky * g + cy. */
  toImage: readonly [number, number, number, number];
  /** The head's box at rest (output pixels: x0, y0, x1, y1 exclusive). */
  box: readonly [number, number, number, number];
}

/** Numbers per eye in the lid parameters (see {@link eyelidRemap}). */
export const LID_PARAMS = 16;
const LID_ON = 0,
  LID_AX = 1,
  LID_AY = 2,
  LID_UX = 3,
  LID_UY = 4,
  LID_L = 5,
  LID_UA = 6,
  LID_UB = 7,
  LID_LA = 8,
  LID_LB = 9,
  LID_H = 10,
  LID_C = 11,
  LID_X0 = 12,
  LID_Y0 = 13,
  LID_X1 = 14,
  LID_Y1 = 15;

/**
 * The iris disc that moves, and the part of the old one replaced by sclera, in radii of the tracked iris (the Iris
 * network's radius is the coloured iris; its dark limbal ring and a painted or cartoon iris's outline reach further).
 */
const IRIS_DISC = 1.12;
const IRIS_VACATED = 1.3;

/** The band along the lid's margin (lashes) that moves down without stretching, in eye widths. */
const LID_BAND = 0.12;
/** How much taller the opening of a widened eye gets at the widest (closure -0.5), in its neutral heights. */
const LID_WIDEN = 0.25;
/** The stretching skin above the lid: at most this many eye widths, and this fraction of the way to the brow. */
const LID_SKIN_MAX = 0.9;
const LID_SKIN_ROOM = 0.6;
/** How far a closed lid reaches past the lower lid's margin at the eye's middle, in eye widths. */
const LID_OVERLAP = 0.04;
const LID_SMOOTH = 0.16;
/**
 * A closing lid's stretched skin tends to the skin tone under the eye: the skin a real lid uncovers was folded away
 * under the crease, and stretching the visible fold (often in shadow: deep-set eyes, a painted crease) down over the
 * eye paints a dark patch that reads as an open eye. At the crease the portrait's own skin stays; down the lid the
 * tone takes up to LID_TONE of the colour (the rest keeps the lid's texture), in full from closure LID_TONE_FULL.
 */
const LID_TONE = 0.65;
const LID_TONE_FULL = 0.5;

/** A lid curve through the two corners (t = 0, 1) and two inner points: v(t) = t (1 - t) (a + b t). */
function fitLidCurve(t1: number, v1: number, t2: number, v2: number, out: Float64Array, at: number): void {
  // v_k / (t_k (1 - t_k)) = a + b t_k for k = 1, 2.
  const q1 = t1 > 0.02 && t1 < 0.98 ? v1 / (t1 * (1 - t1)) : 0;
  const q2 = t2 > 0.02 && t2 < 0.98 ? v2 / (t2 * (1 - t2)) : 0;
  const dt = t2 - t1;
  const b = Math.abs(dt) > 0.05 ? (q2 - q1) / dt : 0;
  out[at] = q1 - b * t1;
  out[at + 1] = b;
}

/**
 * Lid parameters of one eye (written at `out[at .. at + LID_PARAMS)`), in the paste region's pixels: the eye's six
 * target points (corner, upper, upper, corner, lower, lower as iBUG orders them), the brow's lowest point above it,
 * and the closure `c` (0 open .. 1 closed; negative, down to -0.5: wider than neutral, the upper lid raised; within
 * +/-0.02 the eye is left alone).
 */
export function eyelidRemap(
  px: ArrayLike<number>,
  py: ArrayLike<number>,
  browX: number,
  browY: number,
  c: number,
  out: Float64Array,
  at: number,
): void {
  out.fill(0, at, at + LID_PARAMS);
  if (!(Math.abs(c) > 0.02)) return;
  let ax = px[0]!,
    ay = py[0]!,
    bx = px[3]!,
    by = py[3]!;
  // Upper and lower inner points, ordered from corner A.
  let u1 = 1,
    u2 = 2,
    l1 = 5,
    l2 = 4;
  if (ax > bx) {
    [ax, ay, bx, by] = [bx, by, ax, ay];
    [u1, u2, l1, l2] = [2, 1, 4, 5];
  }
  const L = Math.hypot(bx - ax, by - ay);
  if (!(L > 2)) return;
  const ux = (bx - ax) / L;
  const uy = (by - ay) / L;
  // (s, v): along the eye and across it, down positive (n = (-uy, ux)).
  const s = (i: number): number => ((px[i]! - ax) * ux + (py[i]! - ay) * uy) / L;
  const v = (i: number): number => -(px[i]! - ax) * uy + (py[i]! - ay) * ux;
  fitLidCurve(s(u1), v(u1), s(u2), v(u2), out, at + LID_UA);
  fitLidCurve(s(l1), v(l1), s(l2), v(l2), out, at + LID_LA);
  // Stretching skin above the lid: up to 0.4 of the eye's width, never into the brow.
  const vBrow = -(browX - ax) * uy + (browY - ay) * ux;
  const vTop = Math.min(v(u1), v(u2));
  const room = vTop - vBrow;
  const H = Math.max(0.1 * L, Math.min(LID_SKIN_MAX * L, LID_SKIN_ROOM * room));
  out[at + LID_ON] = 1;
  out[at + LID_AX] = ax;
  out[at + LID_AY] = ay;
  out[at + LID_UX] = ux;
  out[at + LID_UY] = uy;
  out[at + LID_L] = L;
  out[at + LID_H] = H;
  out[at + LID_C] = Math.max(-0.5, Math.min(1, c));
  // Bounding box of the affected pixels: from the crease to the lower lid, corner to corner.
  let vmin = Infinity,
    vmax = -Infinity;
  for (let k = 0; k <= 8; k++) {
    const t = k / 8;
    const w = t * (1 - t);
    const vu = w * (out[at + LID_UA]! + out[at + LID_UB]! * t);
    const vl = w * (out[at + LID_LA]! + out[at + LID_LB]! * t);
    vmin = Math.min(vmin, vu - H);
    vmax = Math.max(vmax, vl + 1);
  }
  const xs = [ax + -uy * vmin, ax + -uy * vmax, bx + -uy * vmin, bx + -uy * vmax];
  const ys = [ay + ux * vmin, ay + ux * vmax, by + ux * vmin, by + ux * vmax];
  out[at + LID_X0] = Math.floor(Math.min(...xs)) - 1;
  out[at + LID_X1] = Math.ceil(Math.max(...xs)) + 1;
  out[at + LID_Y0] = Math.floor(Math.min(...ys)) - 1;
  out[at + LID_Y1] = Math.ceil(Math.max(...ys)) + 1;
}

/**
 * Where the output pixel (x, y) of the region reads from before the warp, given one eye's lid parameters: itself,
 * or (inside the stretching lid) a point higher up the lid. Writes [x', y', eyeball blend] into `out` and returns
 * whether the pixel is remapped. The blend (0..1) is how much of the unremapped eyeball shows at the anti-aliased
 * edge (1 below the edge, 0 on the lid); out[3] is how far down the stretched skin the pixel is (0..1], 0 in the lash band and at the edge.
 */
export function lidSource(p: Float64Array, at: number, x: number, y: number, out: Float64Array): boolean {
  const ax = p[at + LID_AX]!;
  const ay = p[at + LID_AY]!;
  const ux = p[at + LID_UX]!;
  const uy = p[at + LID_UY]!;
  const L = p[at + LID_L]!;
  const dx = x - ax;
  const dy = y - ay;
  const t = (dx * ux + dy * uy) / L;
  if (!(t > 0 && t < 1)) return false;
  const v = -dx * uy + dy * ux;
  const w = t * (1 - t);
  const vu = w * (p[at + LID_UA]! + p[at + LID_UB]! * t);
  const vl = w * (p[at + LID_LA]! + p[at + LID_LB]! * t);
  if (!(vl > vu)) return false;
  const c = p[at + LID_C]!;
  if (c < 0) {
    // Wider than neutral: the lid's margin rises by up to LID_WIDEN of the opening (at c = -0.5), never more than
    // half-way to the crease. The lid's skin above it is compressed towards the crease, the eye's opening below it
    // stretched over the new height (the sclera and iris a little taller: nothing of the eyeball hidden under the lid
    // is known), and the lower lid stays.
    const vc = vu - p[at + LID_H]!;
    const ve = vu + Math.max(-0.5 * (vu - vc), 2 * c * LID_WIDEN * (vl - vu));
    if (v < vc || v > vl) return false;
    const vs =
      v <= ve ? vc + ((v - vc) * (vu - vc)) / Math.max(1e-6, ve - vc) : vu + ((v - ve) * (vl - vu)) / (vl - ve);
    out[0] = ax + ux * t * L - uy * vs;
    out[1] = ay + uy * t * L + ux * vs;
    out[2] = 0;
    out[3] = 0;
    return true;
  }
  // The lid's edge at closure c (closed: a little over the lower lid's margin, which would show as a pale line), and
  // the crease above the open lid. The lash band along the margin moves down as it is; the skin above it stretches.
  const ve = vu + c * (vl - vu + LID_OVERLAP * L * w * 4);
  const vc = vu - p[at + LID_H]!;
  if (v < vc || v > ve + 1) return false;
  let vs: number;
  let blend = 0;
  const band = Math.min(LID_BAND * L, 0.5 * (vu - vc));
  out[3] = 0;
  if (v <= ve - band) {
    vs = vc + ((v - vc) * (vu - band - vc)) / Math.max(1e-6, ve - band - vc);
    // How far down the stretched skin (0 at the crease): the smoothing fades in from the crease.
    out[3] = Math.max(1e-3, (v - vc) / Math.max(1e-6, ve - band - vc));
  } else if (v <= ve) {
    // The lash band, mirrored: the lid's margin on top and the lashes hanging below it, as on a closed eye.
    vs = v - (ve - vu);
  } else {
    // The one-pixel edge: the lid's margin, blended with the eyeball below.
    vs = vu;
    blend = v - ve;
  }
  out[0] = ax + ux * t * L - uy * vs;
  out[1] = ay + uy * t * L + ux * vs;
  out[2] = blend;
  return true;
}

/** Per-portrait tables and buffers for {@link FusedWarp.run}. */
export class FusedWarp {
  readonly #src: Uint8Array;
  readonly #R: number;
  readonly #M: number;
  readonly #x0: number;
  readonly #y0: number;
  readonly #w: number;
  readonly #h: number;
  /** Background as float (so the blend below stays in one number representation). */
  readonly #bg: Float32Array;
  readonly #mask: Float32Array;
  readonly #colIdx: Int32Array;
  readonly #colW: Float32Array;
  readonly #rowIdx: Int32Array;
  readonly #rowW: Float32Array;
  /** Rows of 2x2 blocks that have any mask coverage: [first block, last block] per block row (-1 if none). */
  readonly #span: Int32Array;

  /** The head layer (runHead), when set up with one. */
  readonly #head: WarpHead | null;
  /** This frame's head motion: the inverse map, output pixel -> the head layer's pixel (a, b, c, d, e, f). */
  readonly #inv = new Float64Array([1, 0, 0, 0, 1, 0]);
  /** The processed box of this frame (output pixels, even: x0, y0, x1, y1 exclusive). */
  readonly #box = new Int32Array(4);
  /**
   * The head layer packed one pixel per 32-bit word (r | g << 8 | b << 16 | a << 24), so that runHead's bilinear tap
   * reads 4 words instead of 16 bytes, and the plate likewise with the pixel's reach in the top byte (r | g << 8 | b <<
   * 16 | reach << 24). The reach is the pixel's chessboard distance (capped at 255) to the nearest pixel that the head
   * layer or the paste mask covers (alpha > 0, or paste mask > 0): a pixel read from less far away than that (less 2)
   * reads neither, and shows the plate. Built from the bytes by arithmetic: the packing does not depend on the
   * platform's byte order.
   */
  readonly #headPx: Int32Array;
  readonly #platePx: Int32Array;
  /** Per output row: the first and one past the last pixel whose motion weight is not 0 (0, 0: none). */
  readonly #moveSpan: Int32Array;

  constructor(s: WarpSetup) {
    if (s.eyes) this.#initEyes(s.sourceRes, s.eyes);
    this.#head = s.head ?? null;
    const head = this.#head;
    if (head) {
      const n = head.width * head.height;
      const img = head.image;
      const plate = head.plate;
      this.#headPx = new Int32Array(n);
      this.#platePx = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        this.#headPx[i] = img[4 * i]! | (img[4 * i + 1]! << 8) | (img[4 * i + 2]! << 16) | (img[4 * i + 3]! << 24);
        this.#platePx[i] = plate[3 * i]! | (plate[3 * i + 1]! << 8) | (plate[3 * i + 2]! << 16);
      }
      this.#moveSpan = new Int32Array(2 * head.height);
      for (let y = 0; y < head.height; y++) {
        let x0 = -1,
          x1 = 0;
        for (let x = 0; x < head.width; x++)
          if (head.motion[y * head.width + x] !== 0) {
            if (x0 < 0) x0 = x;
            x1 = x + 1;
          }
        this.#moveSpan[2 * y] = Math.max(0, x0);
        this.#moveSpan[2 * y + 1] = x1;
      }
      // The reach rides in the plate's free top byte: one read serves both.
      const reach = layerReach(head, s);
      for (let i = 0; i < n; i++) this.#platePx[i] = this.#platePx[i]! | (reach[i]! << 24);
      this.setHead([1, 0, 0, 0, 1, 0]);
    } else {
      this.#headPx = new Int32Array(0);
      this.#platePx = new Int32Array(0);
      this.#moveSpan = new Int32Array(0);
    }
    const R = s.sourceRes;
    this.#R = R;
    this.#M = s.nodeRes;
    this.#x0 = s.x0;
    this.#y0 = s.y0;
    this.#w = s.w;
    this.#h = s.h;
    // Interleaved 8-bit copy of the crop: one cache line serves all three channels of a tap.
    const plane = R * R;
    this.#src = new Uint8Array(plane * 3);
    for (let i = 0; i < plane; i++) {
      this.#src[3 * i] = s.source[i]! + 0.5;
      this.#src[3 * i + 1] = s.source[plane + i]! + 0.5;
      this.#src[3 * i + 2] = s.source[2 * plane + i]! + 0.5;
    }
    const n = s.w * s.h;
    this.#bg = new Float32Array(n * 3);
    for (let i = 0; i < n; i++) {
      this.#bg[3 * i] = Math.round(s.background[i]!);
      this.#bg[3 * i + 1] = Math.round(s.background[n + i]!);
      this.#bg[3 * i + 2] = Math.round(s.background[2 * n + i]!);
    }
    this.#mask = s.mask;
    // align_corners=True upsampling from M nodes to w (h) pixels.
    const table = (len: number): [Int32Array, Float32Array] => {
      const idx = new Int32Array(len);
      const wt = new Float32Array(len);
      const M = this.#M;
      for (let i = 0; i < len; i++) {
        const u = len > 1 ? (i * (M - 1)) / (len - 1) : 0;
        let u0 = Math.floor(u);
        if (u0 > M - 2) u0 = M - 2;
        idx[i] = u0;
        wt[i] = u - u0;
      }
      return [idx, wt];
    };
    [this.#colIdx, this.#colW] = table(s.w);
    [this.#rowIdx, this.#rowW] = table(s.h);
    const bw = s.w >> 1;
    const bh = s.h >> 1;
    this.#span = new Int32Array(bh * 2).fill(-1);
    for (let by = 0; by < bh; by++) {
      for (let bx = 0; bx < bw; bx++) {
        const o = 2 * by * s.w + 2 * bx;
        if (s.mask[o]! > 0 || s.mask[o + 1]! > 0 || s.mask[o + s.w]! > 0 || s.mask[o + s.w + 1]! > 0) {
          if (this.#span[2 * by]! < 0) this.#span[2 * by] = bx;
          this.#span[2 * by + 1] = bx;
        }
      }
    }
  }

  /** Source-pixel eye openings (0 none, 1 image-left eye, 2 image-right eye), sourceRes^2; null without irises. */
  #eyeMask: Uint8Array | null = null;
  /** Per eye: iris cx, cy, r (source px). */
  readonly #iris = new Float64Array(6);
  /** Per eye: this frame's iris shift dx, dy (source px), and the eye's output box (region px) x0, y0, x1, y1. */
  readonly #eyeFrame = new Float64Array(12);
  #eyesOn = false;
  readonly #eyePt = new Float64Array(2);

  #initEyes(R: number, eyes: WarpEyes): void {
    const mask = new Uint8Array(R * R);
    const n = eyes.eyePoints.length / 4;
    for (let e = 0; e < 2; e++) {
      const px: number[] = [];
      const py: number[] = [];
      for (let k = 0; k < n; k++) {
        px.push(eyes.eyePoints[2 * n * e + 2 * k]!);
        py.push(eyes.eyePoints[2 * n * e + 2 * k + 1]!);
      }
      const y0 = Math.max(0, Math.floor(Math.min(...py)));
      const y1 = Math.min(R - 1, Math.ceil(Math.max(...py)));
      for (let y = y0; y <= y1; y++) {
        // Even-odd crossings of the row through pixel centres.
        const xs: number[] = [];
        for (let k = 0; k < n; k++) {
          const j = (k + 1) % n;
          const ya = py[k]!,
            yb = py[j]!;
          if (ya <= y !== yb <= y) xs.push(px[k]! + ((y - ya) * (px[j]! - px[k]!)) / (yb - ya));
        }
        xs.sort((a, b) => a - b);
        for (let i = 0; i + 1 < xs.length; i += 2)
          for (let x = Math.max(0, Math.ceil(xs[i]!)); x <= Math.min(R - 1, Math.floor(xs[i + 1]!)); x++)
            mask[y * R + x] = e + 1;
      }
      for (let k = 0; k < 3; k++) this.#iris[3 * e + k] = eyes.irises[3 * e + k]!;
    }
    this.#eyeMask = mask;
  }

  /** Whether this warp moves irises itself (the portrait's irises are known). */
  get movesIrises(): boolean {
    return this.#eyeMask !== null;
  }

  /**
   * The irises' shift for the next frames (source pixels, per eye: dx, dy) and each eye's box in the output region
   * (pixels: x0, y0, x1, y1), outside which no pixel is looked at for iris movement. Copied.
   */
  setEyes(shift: ArrayLike<number>, boxes: ArrayLike<number>): void {
    if (!this.#eyeMask) return;
    const f = this.#eyeFrame;
    let on = false;
    for (let e = 0; e < 2; e++) {
      f[6 * e] = shift[2 * e]!;
      f[6 * e + 1] = shift[2 * e + 1]!;
      for (let k = 0; k < 4; k++) f[6 * e + 2 + k] = boxes[4 * e + k]!;
      if (Math.abs(f[6 * e]!) > 0.05 || Math.abs(f[6 * e + 1]!) > 0.05) on = true;
    }
    this.#eyesOn = on;
  }

  /**
   * Where source pixel (sx, sy), read for region pixel (x, y), is read from once the iris has moved (into #eyePt);
   * false when it is not in an eye opening or nothing changes.
   */
  #eyeSource(x: number, y: number, sx: number, sy: number): boolean {
    const f = this.#eyeFrame;
    const mask = this.#eyeMask!;
    const R = this.#R;
    for (let e = 0; e < 2; e++) {
      const o = 6 * e;
      if (x < f[o + 2]! || x > f[o + 4]! || y < f[o + 3]! || y > f[o + 5]!) continue;
      const m = mask[Math.round(sy) * R + Math.round(sx)];
      if (m !== e + 1) return false;
      const cx = this.#iris[3 * e]!,
        cy = this.#iris[3 * e + 1]!,
        r = this.#iris[3 * e + 2]!;
      const dx = f[o]!,
        dy = f[o + 1]!;
      const out = this.#eyePt;
      // Inside the moved iris (with its dark rim): the iris, from where it was.
      const ri = IRIS_DISC * r;
      if ((sx - cx - dx) ** 2 + (sy - cy - dy) ** 2 < ri * ri) {
        out[0] = sx - dx;
        out[1] = sy - dy;
        return true;
      }
      // Inside the old iris (and its dark rim) only: the sclera beside it, mirrored along the eye across the rim, so
      // that the sclera's shading continues where the iris was; the other side when that leaves the opening.
      const ddy = sy - cy;
      const rr = IRIS_VACATED * r;
      if ((sx - cx) ** 2 + ddy * ddy < rr * rr) {
        const half = Math.sqrt(Math.max(0, rr * rr - ddy * ddy));
        const side = sx >= cx ? 1 : -1;
        const row = Math.round(sy) * R;
        const tag = e + 1;
        // The mirror across the rim on this side, then on the other; near a lid the mirror leaves the opening: then
        // the sclera just outside the rim, on either side.
        for (let k = 0; k < 4; k++) {
          const s = k % 2 === 0 ? side : -side;
          const edge = cx + s * half;
          const nx = k < 2 ? edge + (edge - sx) : cx + s * (half + 1);
          if (nx >= 0 && nx <= R - 1 && mask[row + Math.round(nx)] === tag) {
            out[0] = nx;
            out[1] = sy;
            return true;
          }
        }
      }
      return false;
    }
    return false;
  }

  /**
   * Bilinear RGB of the source at (sx, sy) (source pixels, clamped), into #lidRgb: for the few pixels of the eyes. The
   * main loop in run() keeps the same taps inline: calling this for every pixel of the region measured 15-30 % slower.
   */
  #tap(sx: number, sy: number): void {
    const R = this.#R;
    const src = this.#src;
    sx = sx < 0 ? 0 : sx > R - 1 ? R - 1 : sx;
    sy = sy < 0 ? 0 : sy > R - 1 ? R - 1 : sy;
    let ix = sx | 0;
    let iy = sy | 0;
    if (ix > R - 2) ix = R - 2;
    if (iy > R - 2) iy = R - 2;
    const fx = sx - ix;
    const fy = sy - iy;
    const a = (iy * R + ix) * 3;
    const c = a + R * 3;
    const w00 = (1 - fx) * (1 - fy),
      w01 = fx * (1 - fy),
      w10 = (1 - fx) * fy,
      w11 = fx * fy;
    const out = this.#lidRgb;
    for (let k = 0; k < 3; k++)
      out[k] = src[a + k]! * w00 + src[a + 3 + k]! * w01 + src[c + k]! * w10 + src[c + 3 + k]! * w11;
  }

  /** Both eyes' lid parameters for the next run() (setLids). */
  readonly #lids = new Float64Array(2 * LID_PARAMS);
  readonly #lidPt = new Float64Array(4);
  readonly #lidRgb = new Float64Array(3);
  /** Per eye: the skin tone under it this frame (r, g, b) and whether it is known (0 not yet, 1 known, 2 none). */
  readonly #lidTone = new Float64Array(6);
  readonly #lidToneState = new Uint8Array(2);
  readonly #toneSamples = new Float64Array(4 * 12);

  /**
   * The lids of the next frames: `params` holds two eyes' parameters from {@link eyelidRemap} (an eye whose first
   * number is 0 is left alone). Copied.
   */
  setLids(params: Float64Array): void {
    this.#lids.set(params.subarray(0, 2 * LID_PARAMS));
  }

  /** The warped source colour at region pixel (x, y) (continuous), into #lidRgb. */
  #sampleAt(grid: Float32Array, x: number, y: number): void {
    const M = this.#M;
    const MM = M * M;
    const R = this.#R;
    let u = (x * (M - 1)) / Math.max(1, this.#w - 1);
    let v = (y * (M - 1)) / Math.max(1, this.#h - 1);
    u = u < 0 ? 0 : u > M - 1 ? M - 1 : u;
    v = v < 0 ? 0 : v > M - 1 ? M - 1 : v;
    let u0 = u | 0;
    let v0 = v | 0;
    if (u0 > M - 2) u0 = M - 2;
    if (v0 > M - 2) v0 = M - 2;
    const fu = u - u0;
    const fv = v - v0;
    const n = v0 * M + u0;
    const w00 = (1 - fu) * (1 - fv),
      w01 = fu * (1 - fv),
      w10 = (1 - fu) * fv,
      w11 = fu * fv;
    const gx = grid[n]! * w00 + grid[n + 1]! * w01 + grid[n + M]! * w10 + grid[n + M + 1]! * w11;
    const m = MM + n;
    const gy = grid[m]! * w00 + grid[m + 1]! * w01 + grid[m + M]! * w10 + grid[m + M + 1]! * w11;
    const halfR = R * 0.5;
    const sx = (gx + 1) * halfR - 0.5;
    const sy = (gy + 1) * halfR - 0.5;
    if (this.#eyesOn && this.#eyeSource(x, y, sx, sy)) this.#tap(this.#eyePt[0]!, this.#eyePt[1]!);
    else this.#tap(sx, sy);
  }

  /**
   * The skin tone under eye `e` this frame (into #lidTone): the warped source along two lines below the lower lid's
   * margin (0.12 and 0.2 eye widths down, 0.25 to 0.75 of the way between the corners), the brighter half by luma
   * averaged (lashes, a dark circle or a shadow are left out).
   */
  #skinTone(grid: Float32Array, e: number): boolean {
    if (this.#lidToneState[e] !== 0) return this.#lidToneState[e] === 1;
    const p = this.#lids;
    const at = e * LID_PARAMS;
    const ax = p[at + LID_AX]!,
      ay = p[at + LID_AY]!,
      ux = p[at + LID_UX]!,
      uy = p[at + LID_UY]!,
      L = p[at + LID_L]!;
    const smp = this.#toneSamples;
    let n = 0;
    for (let k = 0; k < 6; k++) {
      const t = 0.25 + k * 0.1;
      const w = t * (1 - t);
      const vl = w * (p[at + LID_LA]! + p[at + LID_LB]! * t);
      for (let j = 0; j < 2; j++) {
        const v = vl + (j === 0 ? 0.12 : 0.2) * L;
        this.#sampleAt(grid, ax + ux * t * L - uy * v, ay + uy * t * L + ux * v);
        const o = this.#lidRgb;
        smp[4 * n] = 0.299 * o[0]! + 0.587 * o[1]! + 0.114 * o[2]!;
        smp[4 * n + 1] = o[0]!;
        smp[4 * n + 2] = o[1]!;
        smp[4 * n + 3] = o[2]!;
        n++;
      }
    }
    // The brighter half: a partial selection by luma (12 samples).
    let r = 0,
      g = 0,
      b = 0;
    for (let k = 0; k < n / 2; k++) {
      let best = -1;
      for (let j = 0; j < n; j++) if (smp[4 * j]! >= 0 && (best < 0 || smp[4 * j]! > smp[4 * best]!)) best = j;
      r += smp[4 * best + 1]!;
      g += smp[4 * best + 2]!;
      b += smp[4 * best + 3]!;
      smp[4 * best] = -1;
    }
    const tone = this.#lidTone;
    tone[3 * e] = r / (n / 2);
    tone[3 * e + 1] = g / (n / 2);
    tone[3 * e + 2] = b / (n / 2);
    this.#lidToneState[e] = Number.isFinite(r + g + b) ? 1 : 2;
    return this.#lidToneState[e] === 1;
  }

  /**
   * The colour of region pixel (x, y) when a closing lid covers it (into #lidRgb; `r, g, b`: the unremapped
   * colour, for the anti-aliased edge), or false when no lid does.
   */
  #lidColour(grid: Float32Array, x: number, y: number, r: number, g: number, b: number): boolean {
    const p = this.#lids;
    for (let e = 0; e < 2; e++) {
      const at = e * LID_PARAMS;
      if (p[at + LID_ON] === 0) continue;
      if (x < p[at + LID_X0]! || x > p[at + LID_X1]! || y < p[at + LID_Y0]! || y > p[at + LID_Y1]!) continue;
      const q = this.#lidPt;
      if (!lidSource(p, at, x, y, q)) continue;
      if (q[3]! > 0) {
        // Stretched skin: averaged along the eye (5 taps over LID_SMOOTH eye widths), so that lashes and creases
        // stretched down the lid do not turn into streaks.
        const ux = p[at + LID_UX]!,
          uy = p[at + LID_UY]!,
          step = (LID_SMOOTH * p[at + LID_L]!) / 4;
        let r0 = 0,
          g0 = 0,
          b0 = 0;
        for (let k = -2; k <= 2; k++) {
          this.#sampleAt(grid, q[0]! + ux * step * k, q[1]! + uy * step * k);
          r0 += this.#lidRgb[0]!;
          g0 += this.#lidRgb[1]!;
          b0 += this.#lidRgb[2]!;
        }
        this.#sampleAt(grid, q[0]!, q[1]!);
        const f = Math.min(1, q[3]! / 0.4);
        this.#lidRgb[0] = this.#lidRgb[0]! + (r0 / 5 - this.#lidRgb[0]!) * f;
        this.#lidRgb[1] = this.#lidRgb[1]! + (g0 / 5 - this.#lidRgb[1]!) * f;
        this.#lidRgb[2] = this.#lidRgb[2]! + (b0 / 5 - this.#lidRgb[2]!) * f;
        // Down the lid, towards the skin under the eye (LID_TONE): smooth from the crease (q3 0) to the margin (1).
        const c = p[at + LID_C]!;
        if (c > 0) {
          const s3 = q[3]!;
          const wt = LID_TONE * s3 * s3 * (3 - 2 * s3) * Math.min(1, c / LID_TONE_FULL);
          const rr = this.#lidRgb[0],
            gg = this.#lidRgb[1],
            bb = this.#lidRgb[2];
          if (wt > 0 && this.#skinTone(grid, e)) {
            const tone = this.#lidTone;
            this.#lidRgb[0] = rr + (tone[3 * e]! - rr) * wt;
            this.#lidRgb[1] = gg + (tone[3 * e + 1]! - gg) * wt;
            this.#lidRgb[2] = bb + (tone[3 * e + 2]! - bb) * wt;
          }
        }
      } else this.#sampleAt(grid, q[0]!, q[1]!);
      const bl = q[2]!;
      if (bl > 0) {
        const o = this.#lidRgb;
        o[0] = o[0]! + (r - o[0]!) * bl;
        o[1] = o[1]! + (g - o[1]!) * bl;
        o[2] = o[2]! + (b - o[2]!) * bl;
      }
      return true;
    }
    return false;
  }

  readonly #eyeBox = new Float64Array(4);

  /** The union of this frame's eye boxes (lids and irises; region pixels: x0, y0, x1, y1; empty: +/-Infinity). */
  #eyeBounds(): Float64Array {
    const lids = this.#lids;
    const b = this.#eyeBox;
    b[0] = Infinity;
    b[1] = Infinity;
    b[2] = -Infinity;
    b[3] = -Infinity;
    for (let e = 0; e < 2; e++) {
      const at = e * LID_PARAMS;
      if (lids[at + LID_ON] !== 0) {
        b[0] = Math.min(b[0], lids[at + LID_X0]!);
        b[1] = Math.min(b[1], lids[at + LID_Y0]!);
        b[2] = Math.max(b[2], lids[at + LID_X1]!);
        b[3] = Math.max(b[3], lids[at + LID_Y1]!);
      }
      if (this.#eyesOn) {
        const f = this.#eyeFrame;
        b[0] = Math.min(b[0], f[6 * e + 2]!);
        b[1] = Math.min(b[1], f[6 * e + 3]!);
        b[2] = Math.max(b[2], f[6 * e + 4]!);
        b[3] = Math.max(b[3], f[6 * e + 5]!);
      }
    }
    return b;
  }

  /**
   * The head's motion for the next runHead(): `m` maps the head layer's pixels to the output's (x' = m0 x + m1 y + m2,
   * y' = m3 x + m4 y + m5; output pixels). Its inverse and the moved head's box are kept.
   */
  setHead(m: ArrayLike<number>): void {
    const head = this.#head;
    if (!head) return;
    const [a, b, c, d, e, f] = [m[0]!, m[1]!, m[2]!, m[3]!, m[4]!, m[5]!];
    const det = a * e - b * d;
    if (!(Math.abs(det) > 1e-9) || !Number.isFinite(det)) return;
    const inv = this.#inv;
    inv[0] = e / det;
    inv[1] = -b / det;
    inv[3] = -d / det;
    inv[4] = a / det;
    inv[2] = -((e / det) * c + (-b / det) * f);
    inv[5] = -((-d / det) * c + (a / det) * f);
    const [hx0, hy0, hx1, hy1] = head.box;
    // The moving pixels' box at rest and moved: a pixel that moves by a share of the motion stays within both.
    let x0: number = hx0,
      y0: number = hy0,
      x1: number = hx1,
      y1: number = hy1;
    for (const [x, y] of [
      [hx0, hy0],
      [hx1, hy0],
      [hx0, hy1],
      [hx1, hy1],
    ] as const) {
      const X = a * x + b * y + c;
      const Y = d * x + e * y + f;
      x0 = Math.min(x0, X);
      y0 = Math.min(y0, Y);
      x1 = Math.max(x1, X);
      y1 = Math.max(y1, Y);
    }
    const box = this.#box;
    box[0] = Math.max(0, (Math.floor(x0) - 2) & ~1);
    box[1] = Math.max(0, (Math.floor(y0) - 2) & ~1);
    box[2] = Math.min(head.width, (Math.ceil(x1) + 3) & ~1);
    box[3] = Math.min(head.height, (Math.ceil(y1) + 3) & ~1);
  }

  /**
   * Renders the moving head into `out`, whose pixels must already hold the plate. For each output pixel of the moved
   * head's box: where it is in the layer at rest (its share of the inverse head motion); inside the paste region the
   * expression warp (the fields, in the head's own frame, with the eyes' irises and lids) moves that point further,
   * faded out by the paste mask; the head layer is sampled there (bilinear, RGBA), the mouth interior drawn over
   * it, and the result laid over the plate by the layer's alpha.
   * @param grid node-resolution sampling grid, planar [2, M, M], crop grid units (the head's frame)
   * @param overlay node-resolution premultiplied overlay, planar [4, M, M]
   */
  runHead(grid: Float32Array, overlay: Float32Array, out: I420Frame): void {
    const head = this.#head;
    if (!head) throw new Error('FusedWarp.runHead: set up without a head layer');
    this.#lidToneState.fill(0);
    const M = this.#M;
    const MM = M * M;
    const R = this.#R;
    const motion = head.motion;
    const mask = this.#mask;
    const w = this.#w;
    const h = this.#h;
    const W = out.width;
    const H = out.height;
    if (W !== head.width || H !== head.height) throw new TypeError('FusedWarp.runHead: output size mismatch');
    const d = out.data;
    const cw = W >> 1;
    const uOff = W * H;
    const vOff = uOff + cw * (H >> 1);
    const halfR = R * 0.5;
    const [kx, cx, ky, cy] = head.toImage;
    // Crop pixels to output pixels: g = (s + 0.5) * 2 / R - 1.
    const ax = (2 * kx) / R;
    const bxo = kx * (1 / R - 1) + cx;
    const ay = (2 * ky) / R;
    const byo = ky * (1 / R - 1) + cy;
    const inv = this.#inv;
    const i0 = inv[0]!,
      i1 = inv[1]!,
      i2 = inv[2]!,
      i3 = inv[3]!,
      i4 = inv[4]!,
      i5 = inv[5]!;
    const ox = this.#x0;
    const oy = this.#y0;
    const su = (M - 1) / Math.max(1, w - 1);
    const sv = (M - 1) / Math.max(1, h - 1);
    // The overlay's nodes with any alpha (a box in node units): pixels outside it skip the overlay.
    let ou0 = M,
      ov0 = M,
      ou1 = -1,
      ov1 = -1;
    for (let v = 0; v < M; v++)
      for (let u = 0; u < M; u++)
        if (overlay[3 * MM + v * M + u]! > 0) {
          if (u < ou0) ou0 = u;
          if (u > ou1) ou1 = u;
          if (v < ov0) ov0 = v;
          if (v > ov1) ov1 = v;
        }
    const lids = this.#lids;
    const lidsOn = lids[0] !== 0 || lids[LID_PARAMS] !== 0;
    const lidRgb = this.#lidRgb;
    const eyesOn = this.#eyesOn;
    const eyePt = this.#eyePt;
    const eb = this.#eyeBounds();
    const ex0 = eb[0]!,
      ey0 = eb[1]!,
      ex1 = eb[2]!,
      ey1 = eb[3]!;
    const box = this.#box;
    const bx0 = box[0]!,
      by0 = box[1]!,
      bx1 = box[2]!,
      by1 = box[3]!;
    const Wm1 = W - 1;
    const Hm1 = H - 1;
    const px = this.#headPx;
    const pl = this.#platePx;
    const span = this.#moveSpan;
    for (let Y0 = by0; Y0 < by1; Y0 += 2) {
      // Blocks whose four pixels all have motion weight 0 are left as they are (the plate, already in `out`): only
      // the span of the block row's moving pixels is looked at (X0 even; a block from X0 covers X0 and X0 + 1).
      const s0 = Y0 + 1 < H ? Math.min(span[2 * Y0]!, span[2 * Y0 + 2]!) : span[2 * Y0]!;
      const s1 = Y0 + 1 < H ? Math.max(span[2 * Y0 + 1]!, span[2 * Y0 + 3]!) : span[2 * Y0 + 1]!;
      const xa = Math.max(bx0, s0 & ~1);
      const xb = Math.min(bx1, s1);
      for (let X0 = xa; X0 < xb; X0 += 2) {
        let sr = 0,
          sg = 0,
          sb = 0,
          any = 0;
        for (let k = 0; k < 4; k++) {
          const X = X0 + (k & 1);
          const Yp = Y0 + (k >> 1);
          const po = Yp * W + X;
          const pp = pl[po]!;
          const pr = pp & 255;
          const pg = (pp >>> 8) & 255;
          const pb = (pp >>> 16) & 255;
          // Where this pixel is in the layer at rest: its share of the head's motion taken back.
          const mw = motion[po]!;
          if (mw === 0) {
            // A pixel that does not move (below the neck's fade; never in the paste region, which ends above it):
            // the portrait there is the plate, which `out` already holds.
            sr += pr;
            sg += pg;
            sb += pb;
            continue;
          }
          let qx = X + mw * (i0 * X + i1 * Yp + i2 - X);
          let qy = Yp + mw * (i3 * X + i4 * Yp + i5 - Yp);
          const rp = pp >>> 24;
          if (rp > 2) {
            // Read from closer to itself than to the layer and the paste mask (the bilinear taps lie within 1 pixel of
            // (qx, qy), the mask's nearest pixel within 0.5; 1 more for rounding): it reads neither, the plate shows.
            const dx = qx > X ? qx - X : X - qx;
            const dy = qy > Yp ? qy - Yp : Yp - qy;
            if (rp > (dx > dy ? dx : dy) + 2) {
              sr += pr;
              sg += pg;
              sb += pb;
              continue;
            }
          }
          const lx = qx - ox;
          const ly = qy - oy;
          let wr = -1,
            wg = 0,
            wb = 0;
          let tps = false;
          if (lx >= 0 && ly >= 0 && lx <= w - 1 && ly <= h - 1) {
            const pm = mask[((ly + 0.5) | 0) * w + ((lx + 0.5) | 0)]!;
            if (pm > 0) {
              tps = true;
              let u = lx * su;
              let v = ly * sv;
              let u0 = u | 0;
              let v0 = v | 0;
              if (u0 > M - 2) u0 = M - 2;
              if (v0 > M - 2) v0 = M - 2;
              u -= u0;
              v -= v0;
              const n = v0 * M + u0;
              const w00 = (1 - u) * (1 - v),
                w01 = u * (1 - v),
                w10 = (1 - u) * v,
                w11 = u * v;
              const gx = grid[n]! * w00 + grid[n + 1]! * w01 + grid[n + M]! * w10 + grid[n + M + 1]! * w11;
              const gm = MM + n;
              const gy = grid[gm]! * w00 + grid[gm + 1]! * w01 + grid[gm + M]! * w10 + grid[gm + M + 1]! * w11;
              let sx = (gx + 1) * halfR - 0.5;
              let sy = (gy + 1) * halfR - 0.5;
              const nearEye = lx >= ex0 && lx <= ex1 && ly >= ey0 && ly <= ey1;
              if (nearEye && eyesOn && this.#eyeSource(lx, ly, sx, sy)) {
                sx = eyePt[0]!;
                sy = eyePt[1]!;
              }
              if (nearEye && lidsOn) {
                // The lid's colour needs the unremapped colour for its anti-aliased edge: the crop at (sx, sy).
                this.#tap(sx, sy);
                if (this.#lidColour(grid, lx, ly, lidRgb[0]!, lidRgb[1]!, lidRgb[2]!)) {
                  wr = lidRgb[0]!;
                  wg = lidRgb[1]!;
                  wb = lidRgb[2]!;
                }
              }
              // The warped point in output pixels, faded into the rigid motion by the paste mask.
              qx += pm * (ax * sx + bxo - qx);
              qy += pm * (ay * sy + byo - qy);
              if (u0 + 1 >= ou0 && u0 <= ou1 && v0 + 1 >= ov0 && v0 <= ov1) {
                const al =
                  overlay[3 * MM + n]! * w00 +
                  overlay[3 * MM + n + 1]! * w01 +
                  overlay[3 * MM + n + M]! * w10 +
                  overlay[3 * MM + n + M + 1]! * w11;
                if (al > 0) {
                  if (wr < 0) {
                    this.#tapImage(qx, qy);
                    wr = lidRgb[0]!;
                    wg = lidRgb[1]!;
                    wb = lidRgb[2]!;
                  }
                  const mr =
                    overlay[n]! * w00 + overlay[n + 1]! * w01 + overlay[n + M]! * w10 + overlay[n + M + 1]! * w11;
                  const o1 = MM + n;
                  const mg =
                    overlay[o1]! * w00 + overlay[o1 + 1]! * w01 + overlay[o1 + M]! * w10 + overlay[o1 + M + 1]! * w11;
                  const o2 = 2 * MM + n;
                  const mb =
                    overlay[o2]! * w00 + overlay[o2 + 1]! * w01 + overlay[o2 + M]! * w10 + overlay[o2 + M + 1]! * w11;
                  wr = wr * (1 - al) + mr;
                  wg = wg * (1 - al) + mg;
                  wb = wb * (1 - al) + mb;
                }
              }
            }
          }
          // The head layer at (qx, qy): bilinear RGBA, clamped at the frame's border.
          qx = qx < 0 ? 0 : qx > Wm1 ? Wm1 : qx;
          qy = qy < 0 ? 0 : qy > Hm1 ? Hm1 : qy;
          let ix = qx | 0;
          let iy = qy | 0;
          if (ix > W - 2) ix = W - 2;
          if (iy > H - 2) iy = H - 2;
          const fx = qx - ix;
          const fy = qy - iy;
          const a = iy * W + ix;
          const p00 = px[a]!;
          const p01 = px[a + 1]!;
          const p10 = px[a + W]!;
          const p11 = px[a + W + 1]!;
          const w00 = (1 - fx) * (1 - fy),
            w01 = fx * (1 - fy),
            w10 = (1 - fx) * fy,
            w11 = fx * fy;
          const alpha = ((p00 >>> 24) * w00 + (p01 >>> 24) * w01 + (p10 >>> 24) * w10 + (p11 >>> 24) * w11) * (1 / 255);
          if (alpha <= 0 && !tps) {
            sr += pr;
            sg += pg;
            sb += pb;
            continue;
          }
          if (wr < 0) {
            wr = (p00 & 255) * w00 + (p01 & 255) * w01 + (p10 & 255) * w10 + (p11 & 255) * w11;
            wg =
              ((p00 >>> 8) & 255) * w00 +
              ((p01 >>> 8) & 255) * w01 +
              ((p10 >>> 8) & 255) * w10 +
              ((p11 >>> 8) & 255) * w11;
            wb =
              ((p00 >>> 16) & 255) * w00 +
              ((p01 >>> 16) & 255) * w01 +
              ((p10 >>> 16) & 255) * w10 +
              ((p11 >>> 16) & 255) * w11;
          }
          const r = pr + alpha * (wr - pr);
          const g = pg + alpha * (wg - pg);
          const b = pb + alpha * (wb - pb);
          let Yv = (66 * r + 129 * g + 25 * b) / 256 + 16.5;
          Yv = Yv < 0 ? 0 : Yv > 255 ? 255 : Yv;
          d[po] = Yv;
          any = 1;
          sr += r;
          sg += g;
          sb += b;
        }
        if (!any) continue;
        sr *= 0.25;
        sg *= 0.25;
        sb *= 0.25;
        const ci = (Y0 >> 1) * cw + (X0 >> 1);
        let U = (-38 * sr - 74 * sg + 112 * sb) / 256 + 128.5;
        let V = (112 * sr - 94 * sg - 18 * sb) / 256 + 128.5;
        U = U < 0 ? 0 : U > 255 ? 255 : U;
        V = V < 0 ? 0 : V > 255 ? 255 : V;
        d[uOff + ci] = U;
        d[vOff + ci] = V;
      }
    }
  }

  /** Bilinear RGB of the head layer at output pixel (x, y) (clamped), into #lidRgb. */
  #tapImage(x: number, y: number): void {
    const head = this.#head!;
    const W = head.width;
    const H = head.height;
    const img = head.image;
    x = x < 0 ? 0 : x > W - 1 ? W - 1 : x;
    y = y < 0 ? 0 : y > H - 1 ? H - 1 : y;
    let ix = x | 0;
    let iy = y | 0;
    if (ix > W - 2) ix = W - 2;
    if (iy > H - 2) iy = H - 2;
    const fx = x - ix;
    const fy = y - iy;
    const a = (iy * W + ix) * 4;
    const c = a + W * 4;
    const out = this.#lidRgb;
    for (let k = 0; k < 3; k++)
      out[k] =
        img[a + k]! * (1 - fx) * (1 - fy) +
        img[a + 4 + k]! * fx * (1 - fy) +
        img[c + k]! * (1 - fx) * fy +
        img[c + 4 + k]! * fx * fy;
  }

  // Per-row scratch: the fields interpolated vertically at the current row, per node column.
  #rowGrid = new Float32Array(0);
  #rowOv = new Float32Array(0);

  /**
   * Renders the region into `out` (whose other pixels must already hold the background).
   * @param grid node-resolution sampling grid, planar [2, M, M], crop grid units
   * @param overlay node-resolution premultiplied overlay (mouth interior, eyelids), planar [4, M, M] (r, g, b, alpha)
   */
  run(grid: Float32Array, overlay: Float32Array, out: I420Frame): void {
    this.#lidToneState.fill(0);
    const M = this.#M;
    const MM = M * M;
    const R = this.#R;
    const src = this.#src;
    const bg = this.#bg;
    const mask = this.#mask;
    const w = this.#w;
    const W = out.width;
    const H = out.height;
    const d = out.data;
    const cw = W >> 1;
    const uOff = W * H;
    const vOff = uOff + cw * (H >> 1);
    const halfR = R * 0.5;
    const bh = this.#h >> 1;
    if (this.#rowGrid.length !== 4 * M) {
      this.#rowGrid = new Float32Array(4 * M);
      this.#rowOv = new Float32Array(8 * M);
    }
    // Two rows (the 2x2 chroma block's) of vertically interpolated fields: [gx | gy] and [r | g | b | a] per row.
    const rg = this.#rowGrid;
    const ro = this.#rowOv;
    const colIdx = this.#colIdx;
    const colW = this.#colW;
    const rowIdx = this.#rowIdx;
    const rowW = this.#rowW;
    const span = this.#span;
    const ox = this.#x0;
    const oy = this.#y0;
    const lids = this.#lids;
    const lidsOn = lids[0] !== 0 || lids[LID_PARAMS] !== 0;
    const lidRgb = this.#lidRgb;
    const eyesOn = this.#eyesOn;
    const eyePt = this.#eyePt;
    // The union of the eyes' boxes (lids and irises): pixels outside it skip both checks without a call.
    const eb = this.#eyeBounds();
    const ex0 = eb[0]!,
      ey0 = eb[1]!,
      ex1 = eb[2]!,
      ey1 = eb[3]!;
    for (let by = 0; by < bh; by++) {
      const bx0 = span[2 * by]!;
      if (bx0 < 0) continue;
      const bx1 = span[2 * by + 1]!;
      const u0 = colIdx[2 * bx0]!;
      const u1 = Math.min(M - 1, colIdx[2 * bx1 + 1]! + 1);
      let rowHasOv = 0;
      for (let k = 0; k < 2; k++) {
        const y = 2 * by + k;
        const fv = rowW[y]!;
        const n0 = rowIdx[y]! * M;
        const n1 = n0 + M;
        const g0 = 2 * k * M;
        const o0 = 4 * k * M;
        for (let u = u0; u <= u1; u++) {
          rg[g0 + u] = grid[n0 + u]! + (grid[n1 + u]! - grid[n0 + u]!) * fv;
          rg[g0 + M + u] = grid[MM + n0 + u]! + (grid[MM + n1 + u]! - grid[MM + n0 + u]!) * fv;
          const a0 = overlay[3 * MM + n0 + u]!;
          const a1 = overlay[3 * MM + n1 + u]!;
          if (a0 > 0 || a1 > 0) {
            rowHasOv = 1;
            ro[o0 + u] = overlay[n0 + u]! + (overlay[n1 + u]! - overlay[n0 + u]!) * fv;
            ro[o0 + M + u] = overlay[MM + n0 + u]! + (overlay[MM + n1 + u]! - overlay[MM + n0 + u]!) * fv;
            ro[o0 + 2 * M + u] =
              overlay[2 * MM + n0 + u]! + (overlay[2 * MM + n1 + u]! - overlay[2 * MM + n0 + u]!) * fv;
            ro[o0 + 3 * M + u] = a0 + (a1 - a0) * fv;
          } else {
            // Premultiplied: no alpha, no colour (a neighbour column may still interpolate towards this one).
            ro[o0 + u] = 0;
            ro[o0 + M + u] = 0;
            ro[o0 + 2 * M + u] = 0;
            ro[o0 + 3 * M + u] = 0;
          }
        }
      }
      for (let bx = bx0; bx <= bx1; bx++) {
        let sr = 0,
          sg = 0,
          sb = 0;
        for (let k = 0; k < 4; k++) {
          const ky = k >> 1;
          const y = 2 * by + ky;
          const x = 2 * bx + (k & 1);
          const p = y * w + x;
          const pm = mask[p]!;
          let r = bg[3 * p]!,
            g = bg[3 * p + 1]!,
            b = bg[3 * p + 2]!;
          if (pm > 0) {
            const fu = colW[x]!;
            const u = colIdx[x]!;
            const g0 = 2 * ky * M + u;
            const gx = rg[g0]! + (rg[g0 + 1]! - rg[g0]!) * fu;
            const gy = rg[g0 + M]! + (rg[g0 + M + 1]! - rg[g0 + M]!) * fu;
            // GridSample, align_corners=False, padding 'border'.
            let sx = (gx + 1) * halfR - 0.5;
            let sy = (gy + 1) * halfR - 0.5;
            const nearEye = x >= ex0 && x <= ex1 && y >= ey0 && y <= ey1;
            if (nearEye && eyesOn && this.#eyeSource(x, y, sx, sy)) {
              sx = eyePt[0]!;
              sy = eyePt[1]!;
            }
            sx = sx < 0 ? 0 : sx > R - 1 ? R - 1 : sx;
            sy = sy < 0 ? 0 : sy > R - 1 ? R - 1 : sy;
            let ix = sx | 0;
            let iy = sy | 0;
            if (ix > R - 2) ix = R - 2;
            if (iy > R - 2) iy = R - 2;
            const fx = sx - ix;
            const fy = sy - iy;
            const a = (iy * R + ix) * 3;
            const c = a + R * 3;
            const w00 = (1 - fx) * (1 - fy),
              w01 = fx * (1 - fy),
              w10 = (1 - fx) * fy,
              w11 = fx * fy;
            let wr = src[a]! * w00 + src[a + 3]! * w01 + src[c]! * w10 + src[c + 3]! * w11;
            let wg = src[a + 1]! * w00 + src[a + 4]! * w01 + src[c + 1]! * w10 + src[c + 4]! * w11;
            let wb = src[a + 2]! * w00 + src[a + 5]! * w01 + src[c + 2]! * w10 + src[c + 5]! * w11;
            if (nearEye && lidsOn && this.#lidColour(grid, x, y, wr, wg, wb)) {
              wr = lidRgb[0]!;
              wg = lidRgb[1]!;
              wb = lidRgb[2]!;
            }
            if (rowHasOv) {
              const o = 4 * ky * M + u;
              const a0 = ro[o + 3 * M]!;
              const a1 = ro[o + 3 * M + 1]!;
              if (a0 > 0 || a1 > 0) {
                const al = a0 + (a1 - a0) * fu;
                const mr = ro[o]! + (ro[o + 1]! - ro[o]!) * fu;
                const mg = ro[o + M]! + (ro[o + M + 1]! - ro[o + M]!) * fu;
                const mb = ro[o + 2 * M]! + (ro[o + 2 * M + 1]! - ro[o + 2 * M]!) * fu;
                wr = wr * (1 - al) + mr;
                wg = wg * (1 - al) + mg;
                wb = wb * (1 - al) + mb;
              }
            }
            r = r + pm * (wr - r);
            g = g + pm * (wg - g);
            b = b + pm * (wb - b);
            let Y = (66 * r + 129 * g + 25 * b) / 256 + 16.5;
            Y = Y < 0 ? 0 : Y > 255 ? 255 : Y;
            d[(oy + y) * W + ox + x] = Y;
          }
          sr += r;
          sg += g;
          sb += b;
        }
        sr *= 0.25;
        sg *= 0.25;
        sb *= 0.25;
        const ci = ((oy >> 1) + by) * cw + (ox >> 1) + bx;
        let U = (-38 * sr - 74 * sg + 112 * sb) / 256 + 128.5;
        let V = (112 * sr - 94 * sg - 18 * sb) / 256 + 128.5;
        U = U < 0 ? 0 : U > 255 ? 255 : U;
        V = V < 0 ? 0 : V > 255 ? 255 : V;
        d[uOff + ci] = U;
        d[vOff + ci] = V;
      }
    }
  }
}

/**
 * Each output pixel's chessboard distance (capped at 255) to the nearest pixel of the head layer (alpha > 0) or of
 * the paste mask (> 0): two passes of the 8-neighbour distance transform, which is exact for this metric.
 */
function layerReach(head: WarpHead, s: WarpSetup): Uint8Array {
  const W = head.width;
  const H = head.height;
  const d = new Uint8Array(W * H).fill(255);
  for (let i = 0; i < W * H; i++) if (head.image[4 * i + 3]! > 0) d[i] = 0;
  for (let y = 0; y < s.h; y++)
    for (let x = 0; x < s.w; x++) {
      const X = s.x0 + x;
      const Y = s.y0 + y;
      if (s.mask[y * s.w + x]! > 0 && X >= 0 && Y >= 0 && X < W && Y < H) d[Y * W + X] = 0;
    }
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      const i = y * W + x;
      let v = d[i]!;
      if (x > 0) v = Math.min(v, d[i - 1]! + 1);
      if (y > 0) {
        v = Math.min(v, d[i - W]! + 1);
        if (x > 0) v = Math.min(v, d[i - W - 1]! + 1);
        if (x < W - 1) v = Math.min(v, d[i - W + 1]! + 1);
      }
      d[i] = v;
    }
  for (let y = H - 1; y >= 0; y--)
    for (let x = W - 1; x >= 0; x--) {
      const i = y * W + x;
      let v = d[i]!;
      if (x < W - 1) v = Math.min(v, d[i + 1]! + 1);
      if (y < H - 1) {
        v = Math.min(v, d[i + W]! + 1);
        if (x < W - 1) v = Math.min(v, d[i + W + 1]! + 1);
        if (x > 0) v = Math.min(v, d[i + W - 1]! + 1);
      }
      d[i] = v;
    }
  return d;
}
