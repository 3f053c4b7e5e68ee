/**
 * Small gray-image operations for the vision hot path (resize, crop, flip) and overlay drawing on RGB images.
 * Every function takes an optional output image so that per-frame callers reuse their buffers.
 */
import type { GrayImage, RgbImage } from '../types/image.js';
import { resizeBilinear } from '../util/image.js';

/** Allocates a gray image. */
export function allocGray(width: number, height: number): GrayImage {
  return { width, height, data: new Uint8Array(Math.max(0, width * height)) };
}

function ensure(out: GrayImage | undefined, w: number, h: number): GrayImage {
  if (!out) return allocGray(w, h);
  if (out.data.length < w * h) throw new TypeError('output image too small');
  out.width = w;
  out.height = h;
  return out;
}

/**
 * Downscale by exactly 2 (2x2 box average, rounded). Odd trailing rows/columns are dropped: the output is
 * floor(w/2) x floor(h/2), so a point (x, y) in the output maps to (2x + 0.5, 2y + 0.5) in the input.
 */
export function downscale2x(src: GrayImage, out?: GrayImage): GrayImage {
  const dw = src.width >> 1;
  const dh = src.height >> 1;
  const dst = ensure(out, dw, dh);
  const s = src.data;
  const d = dst.data;
  const w = src.width;
  for (let y = 0; y < dh; y++) {
    const r0 = 2 * y * w;
    const r1 = r0 + w;
    const o = y * dw;
    for (let x = 0; x < dw; x++) {
      const i = 2 * x;
      d[o + x] = (s[r0 + i]! + s[r0 + i + 1]! + s[r1 + i]! + s[r1 + i + 1]! + 2) >> 2;
    }
  }
  return dst;
}

/**
 * Area-averaging resize to an arbitrary smaller size (box filter with fractional pixel coverage), for
 * downscales by any ratio; upscales fall back to bilinear. Pixel-centre aligned.
 */
export function resizeGray(src: GrayImage, dw: number, dh: number, out?: GrayImage): GrayImage {
  if (!(dw > 0 && dh > 0)) throw new TypeError('resizeGray: size must be positive');
  const dst = ensure(out, dw, dh);
  const sw = src.width;
  const sh = src.height;
  if (dw > sw || dh > sh) return resizeGrayBilinear(src, dw, dh, dst);
  const fx = sw / dw;
  const fy = sh / dh;
  const s = src.data;
  const d = dst.data;
  for (let y = 0; y < dh; y++) {
    const y0 = y * fy;
    const y1 = y0 + fy;
    const ya = Math.floor(y0);
    const yb = Math.min(sh, Math.ceil(y1));
    for (let x = 0; x < dw; x++) {
      const x0 = x * fx;
      const x1 = x0 + fx;
      const xa = Math.floor(x0);
      const xb = Math.min(sw, Math.ceil(x1));
      let acc = 0;
      for (let yy = ya; yy < yb; yy++) {
        const wy = Math.min(yy + 1, y1) - Math.max(yy, y0);
        const row = yy * sw;
        let racc = 0;
        for (let xx = xa; xx < xb; xx++) racc += s[row + xx]! * (Math.min(xx + 1, x1) - Math.max(xx, x0));
        acc += racc * wy;
      }
      d[y * dw + x] = Math.min(255, (acc / (fx * fy) + 0.5) | 0);
    }
  }
  return dst;
}

/** Bilinear resize (pixel-centre aligned, edge clamp). */
export function resizeGrayBilinear(src: GrayImage, dw: number, dh: number, out?: GrayImage): GrayImage {
  const dst = ensure(out, dw, dh);
  resizeBilinear(src.data, src.width, src.height, dst.data, dw, dh, 1);
  return dst;
}

/**
 * Copies the rectangle (x, y, w, h) of `src` into a w x h image; parts outside the source are filled with `fill`.
 */
export function cropGray(
  src: GrayImage,
  x: number,
  y: number,
  w: number,
  h: number,
  out?: GrayImage,
  fill = 0,
): GrayImage {
  const dst = ensure(out, w, h);
  const d = dst.data;
  const s = src.data;
  for (let yy = 0; yy < h; yy++) {
    const sy = y + yy;
    const o = yy * w;
    if (sy < 0 || sy >= src.height) {
      d.fill(fill, o, o + w);
      continue;
    }
    const xa = Math.max(0, -x);
    const xb = Math.min(w, src.width - x);
    if (xa > 0) d.fill(fill, o, o + Math.min(w, xa));
    if (xb > xa) d.set(s.subarray(sy * src.width + x + xa, sy * src.width + x + xb), o + xa);
    if (xb < w) d.fill(fill, o + Math.max(0, xb), o + w);
  }
  return dst;
}

/**
 * Resamples the square region (x0, y0, side, side) of `src` to an n x n image: each output pixel averages an
 * s x s grid of nearest-pixel samples over its footprint (s = ceil(side/n), at most 4), a cheap box filter that
 * costs O(n^2 s^2) whatever the region size. Outside the source reads `fill`.
 */
export function sampleRegion(
  src: GrayImage,
  x0: number,
  y0: number,
  side: number,
  n: number,
  out?: GrayImage,
  fill = 127,
): GrayImage {
  const dst = ensure(out, n, n);
  const k = side / n;
  const ss = Math.max(1, Math.min(4, Math.ceil(k)));
  const sub = k / ss;
  const w = src.width;
  const h = src.height;
  const s = src.data;
  const d = dst.data;
  const inv = 1 / (ss * ss);
  for (let j = 0; j < n; j++) {
    for (let i = 0; i < n; i++) {
      let acc = 0;
      for (let v = 0; v < ss; v++) {
        const yy = Math.floor(y0 + j * k + (v + 0.5) * sub);
        const inY = yy >= 0 && yy < h;
        const row = yy * w;
        for (let u = 0; u < ss; u++) {
          const xx = Math.floor(x0 + i * k + (u + 0.5) * sub);
          acc += inY && xx >= 0 && xx < w ? s[row + xx]! : fill;
        }
      }
      d[j * n + i] = (acc * inv + 0.5) | 0;
    }
  }
  return dst;
}

/** Mirror left-right. */
export function flipGrayHorizontal(src: GrayImage, out?: GrayImage): GrayImage {
  const dst = ensure(out, src.width, src.height);
  const w = src.width;
  for (let y = 0; y < src.height; y++) {
    const o = y * w;
    for (let x = 0; x < w; x++) dst.data[o + x] = src.data[o + w - 1 - x]!;
  }
  return dst;
}

// ---------------------------------------------------------------------------------------------------------------
// Overlay drawing (RGB, clipped to the image).

export type Color = readonly [number, number, number];

function plot(img: RgbImage, x: number, y: number, c: Color): void {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) return;
  const o = (y * img.width + x) * 3;
  img.data[o] = c[0];
  img.data[o + 1] = c[1];
  img.data[o + 2] = c[2];
}

/** A line of the given thickness (Bresenham, square brush). */
export function drawLine(img: RgbImage, x0: number, y0: number, x1: number, y1: number, c: Color, thickness = 1): void {
  x0 = Math.round(x0);
  y0 = Math.round(y0);
  x1 = Math.round(x1);
  y1 = Math.round(y1);
  const dx = Math.abs(x1 - x0);
  const dy = -Math.abs(y1 - y0);
  const sx = x0 < x1 ? 1 : -1;
  const sy = y0 < y1 ? 1 : -1;
  let err = dx + dy;
  const r0 = -((thickness - 1) >> 1);
  const r1 = thickness >> 1;
  // Lines from wild coordinates (a lost pose) are bounded by the image diagonal times a margin.
  let guard = 4 * (img.width + img.height) + dx - dy;
  for (;;) {
    for (let oy = r0; oy <= r1; oy++) for (let ox = r0; ox <= r1; ox++) plot(img, x0 + ox, y0 + oy, c);
    if ((x0 === x1 && y0 === y1) || guard-- <= 0) break;
    const e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x0 += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y0 += sy;
    }
  }
}

/** Rectangle outline through inclusive corners. */
export function drawRect(img: RgbImage, l: number, t: number, r: number, b: number, c: Color, thickness = 1): void {
  drawLine(img, l, t, r, t, c, thickness);
  drawLine(img, r, t, r, b, c, thickness);
  drawLine(img, r, b, l, b, c, thickness);
  drawLine(img, l, b, l, t, c, thickness);
}

/** Filled disc. */
export function drawDot(img: RgbImage, cx: number, cy: number, radius: number, c: Color): void {
  const x0 = Math.round(cx);
  const y0 = Math.round(cy);
  const r = Math.max(0, Math.round(radius));
  for (let y = -r; y <= r; y++)
    for (let x = -r; x <= r; x++) if (x * x + y * y <= r * r + r) plot(img, x0 + x, y0 + y, c);
}
