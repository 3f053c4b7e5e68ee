/**
 * Image and landmark quality metrics for offline evaluation (the scores that the portrait-animation papers report).
 *
 * Pure functions over typed arrays; no I/O. Images are interleaved 8-bit with `channels` channels (1 = gray, 3 = RGB).
 * - L1: mean absolute difference, in units of the full range (0..1, i.e. divided by 255), over all channels.
 * - PSNR: 10·log10(255² / MSE) in dB over all channels; +Infinity for identical images.
 * - SSIM: Wang et al. 2004 with an 11×11 Gaussian window (σ 1.5), K1 = 0.01, K2 = 0.03, L = 255, computed over the
 *   "valid" region (no padding, as in the reference MATLAB code), on each channel separately and averaged over channels.
 * - AKD: mean Euclidean distance between corresponding landmarks, divided by a normalising distance (the inter-ocular
 *   distance of the reference face, see interOcularDistance).
 * - Pose error: mean absolute difference of yaw, pitch and roll, in degrees.
 */
import { fitSimilarity } from '../avatar/engines/default/geometry.js';
import { landmarkCentre } from '../vision/faceCrop.js';
import type { HeadPose } from '../vision/types.js';

/** An interleaved 8-bit image (RgbImage has channels = 3, GrayImage channels = 1). */
export interface PixelImage {
  width: number;
  height: number;
  data: Uint8Array;
}

function channelsOf(img: PixelImage): number {
  const ch = img.data.length / (img.width * img.height);
  if (!Number.isInteger(ch) || ch < 1) throw new TypeError('image data length is not width*height*channels');
  return ch;
}

function assertSameShape(a: PixelImage, b: PixelImage): number {
  if (a.width !== b.width || a.height !== b.height) {
    throw new TypeError(`image sizes differ: ${a.width}x${a.height} vs ${b.width}x${b.height}`);
  }
  const ch = channelsOf(a);
  if (channelsOf(b) !== ch) throw new TypeError('images have different channel counts');
  return ch;
}

/** Mean absolute difference over all pixels and channels, divided by 255 (0 = identical, 1 = black vs white). */
export function l1(a: PixelImage, b: PixelImage): number {
  assertSameShape(a, b);
  const x = a.data;
  const y = b.data;
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.abs(x[i]! - y[i]!);
  return s / x.length / 255;
}

/** Mean squared error over all pixels and channels, in 8-bit units². */
export function mse(a: PixelImage, b: PixelImage): number {
  assertSameShape(a, b);
  const x = a.data;
  const y = b.data;
  let s = 0;
  for (let i = 0; i < x.length; i++) {
    const d = x[i]! - y[i]!;
    s += d * d;
  }
  return s / x.length;
}

/** Peak signal-to-noise ratio in dB (peak 255); +Infinity when the images are identical. */
export function psnr(a: PixelImage, b: PixelImage): number {
  const m = mse(a, b);
  return m === 0 ? Number.POSITIVE_INFINITY : 10 * Math.log10((255 * 255) / m);
}

const SSIM_WIN = 11;
const SSIM_SIGMA = 1.5;
const SSIM_C1 = (0.01 * 255) ** 2;
const SSIM_C2 = (0.03 * 255) ** 2;

/** The normalised 1-D Gaussian (the 2-D window is its outer product, so filtering is separable). */
const gauss1d: Float64Array = (() => {
  const g = new Float64Array(SSIM_WIN);
  const r = (SSIM_WIN - 1) / 2;
  let sum = 0;
  for (let i = 0; i < SSIM_WIN; i++) {
    g[i] = Math.exp(-((i - r) ** 2) / (2 * SSIM_SIGMA * SSIM_SIGMA));
    sum += g[i]!;
  }
  for (let i = 0; i < SSIM_WIN; i++) g[i]! /= sum;
  return g;
})();

/**
 * Mean SSIM (Gaussian 11×11, σ 1.5, K1 0.01, K2 0.03, L 255, valid region), averaged over channels.
 * For RGB images this is the per-channel SSIM averaged over R, G and B. Both sides must be at least 11×11.
 */
export function ssim(a: PixelImage, b: PixelImage): number {
  const ch = assertSameShape(a, b);
  const { width: w, height: h } = a;
  if (w < SSIM_WIN || h < SSIM_WIN) throw new TypeError(`ssim needs images of at least ${SSIM_WIN}x${SSIM_WIN}`);
  const ow = w - SSIM_WIN + 1;
  const oh = h - SSIM_WIN + 1;
  const g = gauss1d;
  // Horizontal pass: the five moments (x, y, x², y², xy) filtered along rows, (ow × h) each.
  const hx = new Float64Array(ow * h);
  const hy = new Float64Array(ow * h);
  const hxx = new Float64Array(ow * h);
  const hyy = new Float64Array(ow * h);
  const hxy = new Float64Array(ow * h);
  // Vertical pass accumulators for one output row.
  const mx = new Float64Array(ow);
  const my = new Float64Array(ow);
  const sxx = new Float64Array(ow);
  const syy = new Float64Array(ow);
  const sxy = new Float64Array(ow);
  const A = a.data;
  const B = b.data;
  let total = 0;
  for (let c = 0; c < ch; c++) {
    for (let y = 0; y < h; y++) {
      const row = y * w;
      const orow = y * ow;
      for (let x = 0; x < ow; x++) {
        let s1 = 0;
        let s2 = 0;
        let s3 = 0;
        let s4 = 0;
        let s5 = 0;
        for (let k = 0; k < SSIM_WIN; k++) {
          const i = (row + x + k) * ch + c;
          const p = A[i]!;
          const q = B[i]!;
          const gk = g[k]!;
          s1 += gk * p;
          s2 += gk * q;
          s3 += gk * p * p;
          s4 += gk * q * q;
          s5 += gk * p * q;
        }
        hx[orow + x] = s1;
        hy[orow + x] = s2;
        hxx[orow + x] = s3;
        hyy[orow + x] = s4;
        hxy[orow + x] = s5;
      }
    }
    let sum = 0;
    for (let y = 0; y < oh; y++) {
      mx.fill(0);
      my.fill(0);
      sxx.fill(0);
      syy.fill(0);
      sxy.fill(0);
      for (let k = 0; k < SSIM_WIN; k++) {
        const gk = g[k]!;
        const r = (y + k) * ow;
        for (let x = 0; x < ow; x++) {
          mx[x]! += gk * hx[r + x]!;
          my[x]! += gk * hy[r + x]!;
          sxx[x]! += gk * hxx[r + x]!;
          syy[x]! += gk * hyy[r + x]!;
          sxy[x]! += gk * hxy[r + x]!;
        }
      }
      for (let x = 0; x < ow; x++) {
        const ux = mx[x]!;
        const uy = my[x]!;
        const vx = sxx[x]! - ux * ux;
        const vy = syy[x]! - uy * uy;
        const cxy = sxy[x]! - ux * uy;
        sum += ((2 * ux * uy + SSIM_C1) * (2 * cxy + SSIM_C2)) / ((ux * ux + uy * uy + SSIM_C1) * (vx + vy + SSIM_C2));
      }
    }
    total += sum / (ow * oh);
  }
  return total / ch;
}

/**
 * Inter-ocular distance of a 68-point (iBUG) face: the distance between the two eye centres (mean of points 36-41
 * and of 42-47). Eye centres rather than outer corners, because the corners move with squints and winks.
 */
export function interOcularDistance(lm: ArrayLike<number>): number {
  if (lm.length < 136) throw new TypeError('interOcularDistance needs 68 landmarks');
  const [lx, ly] = landmarkCentre(lm, 36, 42);
  const [rx, ry] = landmarkCentre(lm, 42, 48);
  return Math.hypot(rx - lx, ry - ly);
}

/** The iBUG 68-point regions, [first, end) point indices. */
export const LANDMARK_REGIONS = {
  jaw: [0, 17],
  brows: [17, 27],
  nose: [27, 36],
  eyes: [36, 48],
  mouth: [48, 68],
} as const satisfies Record<string, readonly [number, number]>;
export type LandmarkRegion = keyof typeof LANDMARK_REGIONS;

/**
 * Mean Euclidean distance between corresponding points of two flat landmark arrays (same length), over points
 * [from, to) (default all).
 */
export function meanPointDistance(a: ArrayLike<number>, b: ArrayLike<number>, from = 0, to = a.length / 2): number {
  if (a.length !== b.length || a.length % 2 || a.length === 0) throw new TypeError('landmark arrays differ in length');
  if (!(from >= 0 && to <= a.length / 2 && to > from)) throw new TypeError('meanPointDistance: bad point range');
  let s = 0;
  for (let i = 2 * from; i < 2 * to; i += 2) s += Math.hypot(a[i]! - b[i]!, a[i + 1]! - b[i + 1]!);
  return s / (to - from);
}

/**
 * Mean point distance after the best similarity alignment (least-squares rotation, uniform scale and translation) of
 * `a` onto `b`: what is left is the difference in shape (expression), not in head position, size or roll.
 */
export function alignedPointDistance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length || a.length % 2 || a.length === 0) throw new TypeError('landmark arrays differ in length');
  const n = a.length / 2;
  let spread = 0;
  for (let i = 1; i < n; i++) spread += Math.abs(a[2 * i]! - a[0]!) + Math.abs(a[2 * i + 1]! - a[1]!);
  if (!(spread > 0)) throw new TypeError('alignedPointDistance: degenerate landmarks');
  const { a: c, b: s, tx, ty } = fitSimilarity(a, b, [...Array(n).keys()], { a: 1, b: 0, tx: 0, ty: 0 });
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const px = a[2 * i]!;
    const py = a[2 * i + 1]!;
    sum += Math.hypot(c * px - s * py + tx - b[2 * i]!, s * px + c * py + ty - b[2 * i + 1]!);
  }
  return sum / n;
}

/**
 * Average keypoint distance: mean landmark distance between `output` and `truth`, divided by `norm`
 * (default: the inter-ocular distance of `truth`).
 */
export function akd(output: ArrayLike<number>, truth: ArrayLike<number>, norm?: number): number {
  const d = norm ?? interOcularDistance(truth);
  if (!(d > 0)) throw new TypeError('akd: the normalising distance must be positive');
  return meanPointDistance(output, truth) / d;
}

/**
 * Landmark motion relative to a reference frame, normalised by the reference's inter-ocular distance:
 * (lm - ref) / iod(ref). Used to compare the motion of two different faces (cross-reenactment).
 */
export function relativeMotion(lm: ArrayLike<number>, ref: ArrayLike<number>, out?: Float64Array): Float64Array {
  if (lm.length !== ref.length) throw new TypeError('landmark arrays differ in length');
  const d = interOcularDistance(ref);
  if (!(d > 0)) throw new TypeError('relativeMotion: degenerate reference face');
  const o = out ?? new Float64Array(lm.length);
  for (let i = 0; i < lm.length; i++) o[i] = (lm[i]! - ref[i]!) / d;
  return o;
}

/** The smallest signed difference a-b of two angles in degrees, in (-180, 180]. */
export function angleDiff(a: number, b: number): number {
  let d = (a - b) % 360;
  if (d > 180) d -= 360;
  if (d <= -180) d += 360;
  return d;
}

/** Head pose error: mean of |Δyaw|, |Δpitch|, |Δroll| in degrees. */
export function poseErrorDeg(
  a: Pick<HeadPose, 'yaw' | 'pitch' | 'roll'>,
  b: Pick<HeadPose, 'yaw' | 'pitch' | 'roll'>,
): number {
  return (
    (Math.abs(angleDiff(a.yaw, b.yaw)) + Math.abs(angleDiff(a.pitch, b.pitch)) + Math.abs(angleDiff(a.roll, b.roll))) /
    3
  );
}

/** Pose change from a reference pose (yaw, pitch, roll differences in degrees). */
export function poseDelta(
  p: Pick<HeadPose, 'yaw' | 'pitch' | 'roll'>,
  ref: Pick<HeadPose, 'yaw' | 'pitch' | 'roll'>,
): {
  yaw: number;
  pitch: number;
  roll: number;
} {
  return { yaw: angleDiff(p.yaw, ref.yaw), pitch: angleDiff(p.pitch, ref.pitch), roll: angleDiff(p.roll, ref.roll) };
}

/** Running mean that ignores nothing silently: callers count what they skip. Returns null when empty. */
export class Mean {
  #sum = 0;
  #n = 0;
  add(v: number): void {
    this.#sum += v;
    this.#n++;
  }
  get count(): number {
    return this.#n;
  }
  get value(): number | null {
    return this.#n ? this.#sum / this.#n : null;
  }
}

/** An axis-aligned pixel box [x0, x1) × [y0, y1). */
export interface PixelBox {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

/** Padding of the region boxes, as a fraction of the region's width. */
export const REGION_PAD = { mouth: 0.25, eye: 0.3 } as const;

function paddedBox(lm: ArrayLike<number>, from: number, to: number, pad: number, size: number): PixelBox {
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (let i = from; i < to; i++) {
    x0 = Math.min(x0, lm[2 * i]!);
    x1 = Math.max(x1, lm[2 * i]!);
    y0 = Math.min(y0, lm[2 * i + 1]!);
    y1 = Math.max(y1, lm[2 * i + 1]!);
  }
  const p = Math.max(2, (x1 - x0) * pad);
  const clamp = (v: number): number => Math.max(0, Math.min(size, v));
  return {
    x0: clamp(Math.floor(x0 - p)),
    y0: clamp(Math.floor(y0 - p)),
    x1: clamp(Math.ceil(x1 + p) + 1),
    y1: clamp(Math.ceil(y1 + p) + 1),
  };
}

/**
 * The mouth and eye regions of an aligned crop, from 68 landmarks already in crop pixel coordinates (imageToCrop):
 * the bounding box of the mouth points 48-67 padded by 25% of the mouth width, and of each eye's points (36-41,
 * 42-47) padded by 30% of that eye's width, clipped to the crop.
 */
export function faceRegionBoxes(lmCrop: ArrayLike<number>, size: number): { mouth: PixelBox[]; eyes: PixelBox[] } {
  if (lmCrop.length < 136) throw new TypeError('faceRegionBoxes needs 68 landmarks');
  return {
    mouth: [paddedBox(lmCrop, 48, 68, REGION_PAD.mouth, size)],
    eyes: [paddedBox(lmCrop, 36, 42, REGION_PAD.eye, size), paddedBox(lmCrop, 42, 48, REGION_PAD.eye, size)],
  };
}

/**
 * Mean |a-b| / 255 over the pixels (all channels) inside the union of `boxes` (a pixel in two boxes counts once); null when the
 * boxes are empty.
 */
export function regionL1(a: PixelImage, b: PixelImage, boxes: PixelBox[]): number | null {
  const ch = assertSameShape(a, b);
  const w = a.width;
  let s = 0;
  let n = 0;
  for (let y = 0; y < a.height; y++) {
    for (let x = 0; x < w; x++) {
      if (!boxes.some((r) => x >= r.x0 && x < r.x1 && y >= r.y0 && y < r.y1)) continue;
      const p = (y * w + x) * ch;
      for (let c = 0; c < ch; c++) s += Math.abs(a.data[p + c]! - b.data[p + c]!);
      n += ch;
    }
  }
  return n ? s / n / 255 : null;
}

/**
 * Laplacian energy: the variance of the 3×3 Laplacian (4-neighbour kernel [0 1 0; 1 -4 1; 0 1 0], OpenCV's default)
 * of the grey image (mean of the channels, not rounded) over the pixels inside the union of `boxes` (default: the
 * whole image) whose eight neighbours are inside the image. A blur lowers it, detail and noise raise it. null when no
 * pixel qualifies.
 */
export function laplacianEnergy(img: PixelImage, boxes?: PixelBox[]): number | null {
  const ch = channelsOf(img);
  const { width: w, height: h } = img;
  const grey = new Float64Array(w * h);
  for (let i = 0, p = 0; i < grey.length; i++, p += ch) {
    let s = 0;
    for (let c = 0; c < ch; c++) s += img.data[p + c]!;
    grey[i] = s / ch;
  }
  const inside = (x: number, y: number): boolean =>
    !boxes || boxes.some((r) => x >= r.x0 && x < r.x1 && y >= r.y0 && y < r.y1);
  let sum = 0;
  let sum2 = 0;
  let n = 0;
  for (let y = 1; y < h - 1; y++) {
    for (let x = 1; x < w - 1; x++) {
      if (!inside(x, y)) continue;
      const i = y * w + x;
      const v = grey[i - w]! + grey[i + w]! + grey[i - 1]! + grey[i + 1]! - 4 * grey[i]!;
      sum += v;
      sum2 += v * v;
      n++;
    }
  }
  if (!n) return null;
  const mean = sum / n;
  return Math.max(0, sum2 / n - mean * mean);
}

/**
 * Sharpness of `output` relative to `truth` over the same boxes: laplacianEnergy(output) / laplacianEnergy(truth).
 * 1 is as sharp as the truth, below 1 blurred, above 1 more detail (or noise) than the truth. null when the boxes hold
 * no pixel or the truth is flat there.
 */
export function sharpnessRatio(output: PixelImage, truth: PixelImage, boxes?: PixelBox[]): number | null {
  assertSameShape(output, truth);
  const t = laplacianEnergy(truth, boxes);
  const o = laplacianEnergy(output, boxes);
  return t === null || o === null || !(t > 0) ? null : o / t;
}

/** One activation map, NHWC with a batch of one: `data` holds height × width × channels values. */
export interface ActivationMap {
  data: Float32Array;
  channels: number;
}

/** LPIPS's epsilon in the channel normalisation. */
const FPD_EPS = 1e-10;

/**
 * Perceptual distance between two stacks of activation maps of the same network (the same taps in the same order),
 * as LPIPS computes it with unit weights: at every spatial position each map's channel vector is scaled to unit
 * length (x / (|x| + 1e-10)), the squared Euclidean distance between the two unit vectors is taken (summed over the
 * channels), averaged over the positions, and the taps' values are averaged. 0 for identical activations; for
 * non-negative activations (after a ReLU) each tap's value lies in [0, 2].
 */
export function perceptualDistance(a: readonly ActivationMap[], b: readonly ActivationMap[]): number {
  if (a.length !== b.length || a.length === 0) throw new TypeError('perceptualDistance: tap lists differ or are empty');
  let total = 0;
  for (let t = 0; t < a.length; t++) {
    const x = a[t]!;
    const y = b[t]!;
    const c = x.channels;
    if (y.channels !== c || x.data.length !== y.data.length || c < 1 || x.data.length % c)
      throw new TypeError(`perceptualDistance: tap ${t} has different shapes`);
    const positions = x.data.length / c;
    let sum = 0;
    for (let p = 0, o = 0; p < positions; p++, o += c) {
      let nx = 0;
      let ny = 0;
      for (let k = 0; k < c; k++) {
        nx += x.data[o + k]! * x.data[o + k]!;
        ny += y.data[o + k]! * y.data[o + k]!;
      }
      const sx = 1 / (Math.sqrt(nx) + FPD_EPS);
      const sy = 1 / (Math.sqrt(ny) + FPD_EPS);
      let d = 0;
      for (let k = 0; k < c; k++) {
        const v = x.data[o + k]! * sx - y.data[o + k]! * sy;
        d += v * v;
      }
      sum += d;
    }
    total += sum / positions;
  }
  return total / a.length;
}
