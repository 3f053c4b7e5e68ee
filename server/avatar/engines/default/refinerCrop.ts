/**
 * The refiner's view of a frame: the paste region (where the warp changes pixels) resampled to a small square, and
 * back. One function for training data (server/learned/dataset.ts) and the live engine, so that both see exactly the
 * same pixels.
 */
import type { RgbImage } from '../../engine.js';

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
