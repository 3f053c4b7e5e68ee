/**
 * FusedWarp.runHead (pure) against a plain per-pixel reference of what it does: the head layer moved by each pixel's
 * share of the head's motion, the expression warp inside the paste mask, the overlay, the blend over the plate by the
 * layer's alpha, and BT.601 I420. runHead reads packed pixels, skips the block rows' still pixels and the pixels read
 * from too far from the layer and the paste mask; none of that may change a value beyond float rounding.
 */
import { describe, expect, it } from 'vitest';
import { FusedWarp, type WarpHead, type WarpSetup } from '../../server/avatar/engines/default/warp.js';
import { createI420 } from '../../server/util/image.js';
import type { I420Frame } from '../../server/types/image.js';

const W = 160;
const H = 144;
const R = 64;
const M = 17;

/** A deterministic pseudo-random sequence in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function makeSetup(): { setup: WarpSetup; head: WarpHead } {
  const rand = rng(7);
  // The head layer: a disc of textured person (soft edge) over a transparent background; motion 1 on the head, fading
  // to 0 over the lower third of the picture.
  const image = new Uint8Array(W * H * 4);
  const motion = new Float32Array(W * H);
  const plate = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      const i = y * W + x;
      const r = Math.hypot(x - 80, y - 60);
      image[4 * i] = (x * 3 + y) & 255;
      image[4 * i + 1] = (x * y) & 255;
      image[4 * i + 2] = Math.floor(rand() * 256);
      image[4 * i + 3] = Math.round(255 * Math.min(1, Math.max(0, (42 - r) / 4)));
      motion[i] = y < 90 ? 1 : y >= 120 ? 0 : (120 - y) / 30;
      plate[3 * i] = 40 + ((x >> 3) & 7) * 10;
      plate[3 * i + 1] = 90;
      plate[3 * i + 2] = Math.floor(rand() * 256);
    }
  const head: WarpHead = {
    width: W,
    height: H,
    image,
    motion,
    plate,
    // Crop grid units [-1, 1] to the paste region's pixels (x0 = 50, y0 = 30, 60 x 60).
    toImage: [30, 79.5, 30, 59.5],
    box: [36, 16, 124, 112],
  };
  const w = 60;
  const h = 60;
  const source = new Float32Array(3 * R * R);
  for (let i = 0; i < source.length; i++) source[i] = Math.floor(rand() * 256);
  const mask = new Float32Array(w * h);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) mask[y * w + x] = Math.min(1, Math.max(0, (26 - Math.hypot(x - 29.5, y - 29.5)) / 6));
  const background = new Float32Array(3 * w * h).fill(128);
  return { setup: { source, sourceRes: R, nodeRes: M, x0: 50, y0: 30, w, h, background, mask, head }, head };
}

/** A warp grid: the identity with a smooth bulge, and an overlay with a patch of alpha (premultiplied colour). */
function fields(): { grid: Float32Array; overlay: Float32Array } {
  const grid = new Float32Array(2 * M * M);
  const overlay = new Float32Array(4 * M * M);
  for (let v = 0; v < M; v++)
    for (let u = 0; u < M; u++) {
      const gx = (2 * u) / (M - 1) - 1;
      const gy = (2 * v) / (M - 1) - 1;
      const b = 0.08 * Math.exp(-4 * (gx * gx + gy * gy));
      grid[v * M + u] = gx * (1 - b);
      grid[M * M + v * M + u] = gy * (1 - b) + 0.03;
      if (u >= 7 && u <= 10 && v >= 10 && v <= 12) {
        const a = 0.6;
        overlay[v * M + u] = 200 * a;
        overlay[M * M + v * M + u] = 30 * a;
        overlay[2 * M * M + v * M + u] = 40 * a;
        overlay[3 * M * M + v * M + u] = a;
      }
    }
  return { grid, overlay };
}

/** The head's motion (layer -> output): a roll of `deg` about (80, 60) and a shift. */
function motionMatrix(deg: number, tx: number, ty: number): number[] {
  const a = (deg * Math.PI) / 180;
  const c = Math.cos(a);
  const s = Math.sin(a);
  return [c, -s, 80 - c * 80 + s * 60 + tx, s, c, 60 - s * 80 - c * 60 + ty];
}

/** Bilinear tap of `n`-channel interleaved `data` (w x h) at (x, y), clamped; channel k. */
function tap(data: ArrayLike<number>, n: number, w: number, h: number, x: number, y: number, k: number): number {
  x = Math.min(w - 1, Math.max(0, x));
  y = Math.min(h - 1, Math.max(0, y));
  const ix = Math.min(w - 2, Math.floor(x));
  const iy = Math.min(h - 2, Math.floor(y));
  const fx = x - ix;
  const fy = y - iy;
  const at = (xx: number, yy: number): number => data[n * (yy * w + xx) + k]!;
  return (
    at(ix, iy) * (1 - fx) * (1 - fy) +
    at(ix + 1, iy) * fx * (1 - fy) +
    at(ix, iy + 1) * (1 - fx) * fy +
    at(ix + 1, iy + 1) * fx * fy
  );
}

/** The reference: every pixel of the frame, no skipping, the layer read byte by byte. */
function reference(
  setup: WarpSetup,
  head: WarpHead,
  m: number[],
  grid: Float32Array,
  overlay: Float32Array,
): I420Frame {
  const out = createI420(W, H);
  const det = m[0]! * m[4]! - m[1]! * m[3]!;
  const inv = [m[4]! / det, -m[1]! / det, 0, -m[3]! / det, m[0]! / det, 0];
  inv[2] = -(inv[0]! * m[2]! + inv[1]! * m[5]!);
  inv[5] = -(inv[3]! * m[2]! + inv[4]! * m[5]!);
  const [kx, cx, ky, cy] = head.toImage;
  const { w, h, x0, y0 } = setup;
  const rgb = new Float64Array(W * H * 3);
  const written = new Uint8Array(W * H);
  for (let Y = 0; Y < H; Y++)
    for (let X = 0; X < W; X++) {
      const po = Y * W + X;
      const plate = [0, 1, 2].map((k) => head.plate[3 * po + k]!);
      rgb.set(plate, 3 * po);
      const mw = head.motion[po]!;
      if (mw === 0) continue;
      let qx = X + mw * (inv[0]! * X + inv[1]! * Y + inv[2] - X);
      let qy = Y + mw * (inv[3]! * X + inv[4]! * Y + inv[5] - Y);
      let warped: number[] | null = null;
      const lx = qx - x0;
      const ly = qy - y0;
      let tps = false;
      if (lx >= 0 && ly >= 0 && lx <= w - 1 && ly <= h - 1) {
        const pm = setup.mask[Math.floor(ly + 0.5) * w + Math.floor(lx + 0.5)]!;
        if (pm > 0) {
          tps = true;
          const u = (lx * (M - 1)) / (w - 1);
          const v = (ly * (M - 1)) / (h - 1);
          const gx = tap(grid, 1, M, M, u, v, 0);
          const gy = tap(grid.subarray(M * M), 1, M, M, u, v, 0);
          const sx = ((gx + 1) * R) / 2 - 0.5;
          const sy = ((gy + 1) * R) / 2 - 0.5;
          qx += pm * (kx * ((2 * (sx + 0.5)) / R - 1) + cx - qx);
          qy += pm * (ky * ((2 * (sy + 0.5)) / R - 1) + cy - qy);
          const al = tap(overlay.subarray(3 * M * M), 1, M, M, u, v, 0);
          if (al > 0) {
            warped = [0, 1, 2].map(
              (k) =>
                tap(head.image, 4, W, H, qx, qy, k) * (1 - al) + tap(overlay.subarray(k * M * M), 1, M, M, u, v, 0),
            );
          }
        }
      }
      const alpha = tap(head.image, 4, W, H, qx, qy, 3) / 255;
      if (alpha <= 0 && !tps) continue;
      warped ??= [0, 1, 2].map((k) => tap(head.image, 4, W, H, qx, qy, k));
      const c = [0, 1, 2].map((k) => plate[k]! + alpha * (warped[k]! - plate[k]!));
      rgb.set(c, 3 * po);
      written[po] = 1;
      out.data[po] = Math.min(255, Math.max(0, (66 * c[0]! + 129 * c[1]! + 25 * c[2]!) / 256 + 16.5));
    }
  const cw = W >> 1;
  for (let by = 0; by < H >> 1; by++)
    for (let bx = 0; bx < cw; bx++) {
      const px = [0, 1, W, W + 1].map((o) => 2 * by * W + 2 * bx + o);
      if (!px.some((p) => written[p])) continue;
      const [r, g, b] = [0, 1, 2].map((k) => px.reduce((a, p) => a + rgb[3 * p + k]!, 0) / 4);
      const ci = by * cw + bx;
      out.data[W * H + ci] = Math.min(255, Math.max(0, (-38 * r! - 74 * g! + 112 * b!) / 256 + 128.5));
      out.data[W * H + cw * (H >> 1) + ci] = Math.min(255, Math.max(0, (112 * r! - 94 * g! - 18 * b!) / 256 + 128.5));
    }
  return out;
}

describe('FusedWarp.runHead (pure)', () => {
  it('renders what the plain per-pixel reference renders, for still and moving heads', () => {
    const { setup, head } = makeSetup();
    const { grid, overlay } = fields();
    const warp = new FusedWarp(setup);
    for (const [deg, tx, ty] of [
      [0, 0, 0],
      [6, 3, -2],
      [-12, -9, 5],
      [3, 25, 18],
    ] as const) {
      const m = motionMatrix(deg, tx, ty);
      warp.setHead(m);
      const out = createI420(W, H);
      // runHead leaves what it does not draw as it is: the frame holds nothing (0) there, as the reference does.
      warp.runHead(grid, overlay, out);
      const ref = reference(setup, head, m, grid, overlay);
      let max = 0;
      for (let i = 0; i < out.data.length; i++) max = Math.max(max, Math.abs(out.data[i]! - ref.data[i]!));
      // Float rounding only: a value that lands on .5 may round either way.
      expect(max).toBeLessThanOrEqual(1);
      // The head moved: the frame is not the plate everywhere (the test sees the drawn pixels).
      expect(out.data.some((v) => v !== 0)).toBe(true);
    }
  });
});
