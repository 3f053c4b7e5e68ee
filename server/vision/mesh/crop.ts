/**
 * Network inputs cut from a colour frame: a square, rotated region of interest resampled (bilinear) into a float
 * NHWC tensor with the network's normalisation, straight from RGB, I420 or gray (no full-frame conversion). Pixels outside
 * the frame read as black, as the MediaPipe graphs pad. Allocation-free: the caller owns the output buffer.
 */
import type { ColorFrame } from '../types.js';

/** A square region of interest: centre, side (pixels) and rotation (radians; the region's x axis in the frame). */
export interface Roi {
  cx: number;
  cy: number;
  side: number;
  angle: number;
}

/**
 * Samples `roi` of `frame` into `out` (size x size x 3, RGB, value * scale + offset). With `flip`, the crop is
 * mirrored left to right (the Iris model sees every eye as a left eye).
 */
export function cropRoi(
  frame: ColorFrame,
  roi: Roi,
  size: number,
  scale: number,
  offset: number,
  out: Float32Array,
  flip = false,
): void {
  const { width: W, height: H, data } = frame;
  const k = roi.side / size;
  const cs = Math.cos(roi.angle) * k;
  const sn = Math.sin(roi.angle) * k;
  const half = size / 2;
  const i420 = frame.format === 'i420';
  const gray = frame.format === 'gray';
  const cw = W >> 1;
  const uOff = W * H;
  const vOff = uOff + cw * (H >> 1);
  let o = 0;
  for (let v = 0; v < size; v++) {
    const dv = v + 0.5 - half;
    for (let u = 0; u < size; u++) {
      const du = (flip ? size - 1 - u : u) + 0.5 - half;
      // Source position, pixel-centre based.
      const sx = roi.cx + cs * du - sn * dv - 0.5;
      const sy = roi.cy + sn * du + cs * dv - 0.5;
      let r = 0,
        g = 0,
        b = 0;
      if (sx > -1 && sy > -1 && sx < W && sy < H) {
        const x0 = Math.floor(sx);
        const y0 = Math.floor(sy);
        const fx = sx - x0;
        const fy = sy - y0;
        for (let t = 0; t < 4; t++) {
          const x = x0 + (t & 1);
          const y = y0 + (t >> 1);
          if (x < 0 || y < 0 || x >= W || y >= H) continue;
          const w = (t & 1 ? fx : 1 - fx) * (t >> 1 ? fy : 1 - fy);
          if (gray) {
            const q = data[y * W + x]!;
            r += w * q;
            g += w * q;
            b += w * q;
          } else if (i420) {
            const c = data[y * W + x]! - 16;
            const ci = (y >> 1) * cw + (x >> 1);
            const du2 = data[uOff + ci]! - 128;
            const dv2 = data[vOff + ci]! - 128;
            r += w * (1.164 * c + 1.596 * dv2);
            g += w * (1.164 * c - 0.392 * du2 - 0.813 * dv2);
            b += w * (1.164 * c + 2.017 * du2);
          } else {
            const p = 3 * (y * W + x);
            r += w * data[p]!;
            g += w * data[p + 1]!;
            b += w * data[p + 2]!;
          }
        }
        if (i420) {
          r = r < 0 ? 0 : r > 255 ? 255 : r;
          g = g < 0 ? 0 : g > 255 ? 255 : g;
          b = b < 0 ? 0 : b > 255 ? 255 : b;
        }
      }
      out[o++] = r * scale + offset;
      out[o++] = g * scale + offset;
      out[o++] = b * scale + offset;
    }
  }
}

/** Maps a point of the crop (crop pixels, size x size) back to the frame (pixels). */
export function roiToFrame(roi: Roi, size: number, u: number, v: number, flip: boolean, out: [number, number]): void {
  const k = roi.side / size;
  const du = (flip ? size - u : u) - size / 2;
  const dv = v - size / 2;
  const cs = Math.cos(roi.angle) * k;
  const sn = Math.sin(roi.angle) * k;
  out[0] = roi.cx + cs * du - sn * dv;
  out[1] = roi.cy + sn * du + cs * dv;
}
