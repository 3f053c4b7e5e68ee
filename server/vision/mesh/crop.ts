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
  const fmt = frame.format;
  const cw = W >> 1;
  const uOff = W * H;
  const vOff = uOff + cw * (H >> 1);
  // Stepping one output pixel moves the source point by (du, dv) below (mirrored: backwards along the row).
  const stepX = flip ? -cs : cs;
  const stepY = flip ? -sn : sn;
  if (fmt === 'i420') {
    cropI420(data, W, H, roi, size, cs, sn, stepX, stepY, flip, scale, offset, out);
    return;
  }
  let o = 0;
  for (let v = 0; v < size; v++) {
    const dv = v + 0.5 - half;
    const du0 = (flip ? size - 1 : 0) + 0.5 - half;
    // Source position of the row's first pixel, pixel-centre based.
    let sx = roi.cx + cs * du0 - sn * dv - 0.5;
    let sy = roi.cy + sn * du0 + cs * dv - 0.5;
    for (let u = 0; u < size; u++, sx += stepX, sy += stepY, o += 3) {
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      if (x0 < -1 || y0 < -1 || x0 >= W || y0 >= H) {
        out[o] = offset;
        out[o + 1] = offset;
        out[o + 2] = offset;
        continue;
      }
      const fx = sx - x0;
      const fy = sy - y0;
      // Taps outside the frame read as black (weight kept, value 0), as the MediaPipe graphs pad.
      const in00 = x0 >= 0 && y0 >= 0;
      const in01 = x0 + 1 < W && y0 >= 0;
      const in10 = x0 >= 0 && y0 + 1 < H;
      const in11 = x0 + 1 < W && y0 + 1 < H;
      const w00 = (1 - fx) * (1 - fy),
        w01 = fx * (1 - fy),
        w10 = (1 - fx) * fy,
        w11 = fx * fy;
      let r: number, g: number, b: number;
      if (fmt === 'rgb' && in00 && in11) {
        // Inside the frame (almost every pixel): no per-tap checks.
        const p = 3 * (y0 * W + x0);
        const q = p + 3 * W;
        r = w00 * data[p]! + w01 * data[p + 3]! + w10 * data[q]! + w11 * data[q + 3]!;
        g = w00 * data[p + 1]! + w01 * data[p + 4]! + w10 * data[q + 1]! + w11 * data[q + 4]!;
        b = w00 * data[p + 2]! + w01 * data[p + 5]! + w10 * data[q + 2]! + w11 * data[q + 5]!;
      } else if (fmt === 'rgb') {
        const p = 3 * (y0 * W + x0);
        const q = p + 3 * W;
        r =
          (in00 ? w00 * data[p]! : 0) +
          (in01 ? w01 * data[p + 3]! : 0) +
          (in10 ? w10 * data[q]! : 0) +
          (in11 ? w11 * data[q + 3]! : 0);
        g =
          (in00 ? w00 * data[p + 1]! : 0) +
          (in01 ? w01 * data[p + 4]! : 0) +
          (in10 ? w10 * data[q + 1]! : 0) +
          (in11 ? w11 * data[q + 4]! : 0);
        b =
          (in00 ? w00 * data[p + 2]! : 0) +
          (in01 ? w01 * data[p + 5]! : 0) +
          (in10 ? w10 * data[q + 2]! : 0) +
          (in11 ? w11 * data[q + 5]! : 0);
      } else {
        const p = y0 * W + x0;
        const q = p + W;
        const yv =
          in00 && in11
            ? w00 * data[p]! + w01 * data[p + 1]! + w10 * data[q]! + w11 * data[q + 1]!
            : (in00 ? w00 * data[p]! : 0) +
              (in01 ? w01 * data[p + 1]! : 0) +
              (in10 ? w10 * data[q]! : 0) +
              (in11 ? w11 * data[q + 1]! : 0);
        if (fmt === 'gray') {
          r = yv;
          g = yv;
          b = yv;
        } else {
          // Luma interpolated, chroma from the nearest half-resolution sample, one conversion (BT.601 limited range).
          const wsum = in00 && in11 ? 1 : (in00 ? w00 : 0) + (in01 ? w01 : 0) + (in10 ? w10 : 0) + (in11 ? w11 : 0);
          const cx = Math.min(cw - 1, Math.max(0, (sx + 0.5) >> 1));
          const cy = Math.min((H >> 1) - 1, Math.max(0, (sy + 0.5) >> 1));
          const ci = cy * cw + cx;
          const c = yv - 16 * wsum;
          const du = data[uOff + ci]! - 128;
          const dv2 = data[vOff + ci]! - 128;
          r = 1.164 * c + 1.596 * dv2 * wsum;
          g = 1.164 * c - (0.392 * du + 0.813 * dv2) * wsum;
          b = 1.164 * c + 2.017 * du * wsum;
          r = r < 0 ? 0 : r > 255 ? 255 : r;
          g = g < 0 ? 0 : g > 255 ? 255 : g;
          b = b < 0 ? 0 : b > 255 ? 255 : b;
        }
      }
      out[o] = r * scale + offset;
      out[o + 1] = g * scale + offset;
      out[o + 2] = b * scale + offset;
    }
  }
}

/**
 * cropRoi for I420 frames, the live path's format: the same numbers as the general loop (the same taps, weights and
 * conversion, in the same order), with the format's branches hoisted out of the pixel loop and a tap-check-free path
 * for the pixels whose four taps are inside the frame (almost all of them).
 */
function cropI420(
  data: Uint8Array,
  W: number,
  H: number,
  roi: Roi,
  size: number,
  cs: number,
  sn: number,
  stepX: number,
  stepY: number,
  flip: boolean,
  scale: number,
  offset: number,
  out: Float32Array,
): void {
  const half = size / 2;
  const cw = W >> 1;
  const ch = H >> 1;
  const uOff = W * H;
  const vOff = uOff + cw * ch;
  const Wm1 = W - 1;
  const Hm1 = H - 1;
  let o = 0;
  for (let v = 0; v < size; v++) {
    const dv = v + 0.5 - half;
    const du0 = (flip ? size - 1 : 0) + 0.5 - half;
    let sx = roi.cx + cs * du0 - sn * dv - 0.5;
    let sy = roi.cy + sn * du0 + cs * dv - 0.5;
    for (let u = 0; u < size; u++, sx += stepX, sy += stepY, o += 3) {
      let yv: number, wsum: number, cx: number, cy: number;
      // All four taps inside the frame (floor(sx) in 0 .. W - 2): truncation is the floor there.
      if (sx >= 0 && sy >= 0 && sx < Wm1 && sy < Hm1) {
        const x0 = sx | 0;
        const y0 = sy | 0;
        const fx = sx - x0;
        const fy = sy - y0;
        const p = y0 * W + x0;
        const q = p + W;
        yv =
          (1 - fx) * (1 - fy) * data[p]! +
          fx * (1 - fy) * data[p + 1]! +
          (1 - fx) * fy * data[q]! +
          fx * fy * data[q + 1]!;
        wsum = 1;
        // (Clamped only for frames of odd size: sx, sy are >= 0 and below W - 1, H - 1 here.)
        cx = (sx + 0.5) >> 1;
        cy = (sy + 0.5) >> 1;
        if (cx > cw - 1) cx = cw - 1;
        if (cy > ch - 1) cy = ch - 1;
      } else {
        const x0 = Math.floor(sx);
        const y0 = Math.floor(sy);
        if (x0 < -1 || y0 < -1 || x0 >= W || y0 >= H) {
          out[o] = offset;
          out[o + 1] = offset;
          out[o + 2] = offset;
          continue;
        }
        const fx = sx - x0;
        const fy = sy - y0;
        const w00 = (1 - fx) * (1 - fy),
          w01 = fx * (1 - fy),
          w10 = (1 - fx) * fy,
          w11 = fx * fy;
        const p = y0 * W + x0;
        const q = p + W;
        const in00 = x0 >= 0 && y0 >= 0;
        const in01 = x0 + 1 < W && y0 >= 0;
        const in10 = x0 >= 0 && y0 + 1 < H;
        const in11 = x0 + 1 < W && y0 + 1 < H;
        yv =
          (in00 ? w00 * data[p]! : 0) +
          (in01 ? w01 * data[p + 1]! : 0) +
          (in10 ? w10 * data[q]! : 0) +
          (in11 ? w11 * data[q + 1]! : 0);
        wsum = (in00 ? w00 : 0) + (in01 ? w01 : 0) + (in10 ? w10 : 0) + (in11 ? w11 : 0);
        cx = Math.min(cw - 1, Math.max(0, (sx + 0.5) >> 1));
        cy = Math.min(ch - 1, Math.max(0, (sy + 0.5) >> 1));
      }
      const ci = cy * cw + cx;
      const c = yv - 16 * wsum;
      const du = data[uOff + ci]! - 128;
      const dv2 = data[vOff + ci]! - 128;
      let r = 1.164 * c + 1.596 * dv2 * wsum;
      let g = 1.164 * c - (0.392 * du + 0.813 * dv2) * wsum;
      let b = 1.164 * c + 2.017 * du * wsum;
      r = r < 0 ? 0 : r > 255 ? 255 : r;
      g = g < 0 ? 0 : g > 255 ? 255 : g;
      b = b < 0 ? 0 : b > 255 ? 255 : b;
      out[o] = r * scale + offset;
      out[o + 1] = g * scale + offset;
      out[o + 2] = b * scale + offset;
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
