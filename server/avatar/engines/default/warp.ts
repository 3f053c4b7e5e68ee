/**
 * The CPU half of the generator: one fused pass over the paste region that does what the tail of
 * models/default/generator.onnx does (bilinear upsampling of the node-resolution grid and mouth fields, the warp of
 * the crop, the mouth composite, the feathered paste over the background and BT.601 I420 conversion), writing
 * straight into the output frame.
 *
 * Why not the graph: on onnxruntime's CPU provider GridSample and Resize at output resolution cost 3-4x this loop
 * (measured: 28 ms vs 7-11 ms for a 304x360 region on a loaded 2-core machine), and they are most of the frame.
 * The whole graph remains the path for GPU providers; a test checks that both agree.
 */
import type { I420Frame } from '../../engine.js';

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

  constructor(s: WarpSetup) {
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

  // Per-row scratch: the fields interpolated vertically at the current row, per node column.
  #rowGrid = new Float32Array(0);
  #rowOv = new Float32Array(0);

  /**
   * Renders the region into `out` (whose other pixels must already hold the background).
   * @param grid node-resolution sampling grid, planar [2, M, M], crop grid units
   * @param overlay node-resolution premultiplied overlay (mouth interior, eyelids), planar [4, M, M] (r, g, b, alpha)
   */
  run(grid: Float32Array, overlay: Float32Array, out: I420Frame): void {
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
