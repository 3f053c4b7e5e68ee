/**
 * Output sizing shared by the built-in engines: the synthesized video has the portrait's aspect, its long side is
 * config.avatar.outputSize, and both sides are even (I420).
 */
import type { RgbImage } from '../../types/image.js';
import { createRgb, resizeRgb } from '../../util/image.js';

/** Even output dimensions for a picture of w x h scaled so that its long side is `longSide`. */
export function outputDims(w: number, h: number, longSide: number): { width: number; height: number } {
  if (!(w > 0 && h > 0)) throw new TypeError('outputDims: size must be positive');
  const scale = longSide / Math.max(w, h);
  const even = (v: number): number => Math.max(2, Math.round((v * scale) / 2) * 2);
  return { width: even(w), height: even(h) };
}

/**
 * Scales an RGB picture to exactly width x height. Strong downscales first average integer blocks (a box filter),
 * so a 3500 px photo does not alias, then finish with a bilinear resize.
 */
export function fitRgb(src: RgbImage, width: number, height: number): RgbImage {
  let img = src;
  const k = Math.floor(Math.min(src.width / width, src.height / height));
  if (k >= 2) {
    const bw = Math.floor(src.width / k);
    const bh = Math.floor(src.height / k);
    const out = createRgb(bw, bh);
    const n = k * k;
    for (let y = 0; y < bh; y++) {
      for (let x = 0; x < bw; x++) {
        let r = 0;
        let g = 0;
        let b = 0;
        for (let dy = 0; dy < k; dy++) {
          let o = ((y * k + dy) * src.width + x * k) * 3;
          for (let dx = 0; dx < k; dx++, o += 3) {
            r += src.data[o]!;
            g += src.data[o + 1]!;
            b += src.data[o + 2]!;
          }
        }
        const d = (y * bw + x) * 3;
        out.data[d] = (r + (n >> 1)) / n;
        out.data[d + 1] = (g + (n >> 1)) / n;
        out.data[d + 2] = (b + (n >> 1)) / n;
      }
    }
    img = out;
  }
  if (img.width === width && img.height === height) return img;
  return resizeRgb(img, width, height);
}

/** Portraits larger than this (long side) are analysed on a downscaled copy: detection cost, same landmarks. */
export const ANALYSIS_MAX_SIDE = 1024;

/**
 * The picture face analysis runs on: the picture itself, or a copy scaled so that its long side is ANALYSIS_MAX_SIDE
 * (the engine's prepare and the upload face check alike, so an upload's cost is bounded whatever its size).
 */
export function analysisImage(rgb: RgbImage): RgbImage {
  const long = Math.max(rgb.width, rgb.height);
  if (long <= ANALYSIS_MAX_SIDE) return rgb;
  const scale = ANALYSIS_MAX_SIDE / long;
  return fitRgb(rgb, Math.max(1, Math.round(rgb.width * scale)), Math.max(1, Math.round(rgb.height * scale)));
}
