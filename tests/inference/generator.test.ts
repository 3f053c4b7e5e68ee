/**
 * Numerics of the default pack's generator graphs (real onnxruntime sessions on the committed ONNX files), and the
 * CPU engine's fused warp against the whole graph.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelPack } from '../../server/inference/modelPack.js';
import { Tensor } from '../../server/inference/onnx.js';
import { projectRoot } from '../../server/config.js';
import { fillPolygon, solveTps } from '../../server/avatar/engines/default/geometry.js';
import { FusedWarp } from '../../server/avatar/engines/default/warp.js';
import { createI420 } from '../../server/util/image.js';

const N = 96;
const R = 512;
const M = 128;

/** A spread of control points: a jittered 8x12 lattice (92 points) plus the 4 corners (deterministic). */
function controlPoints(): Float64Array {
  const p = new Float64Array(2 * N);
  let k = 0;
  for (let j = 0; j < 8; j++) {
    for (let i = 0; i < 12 && k < N - 4; i++, k++) {
      p[2 * k] = -0.85 + (1.7 * i) / 11 + 0.03 * Math.sin(7 * k);
      p[2 * k + 1] = -0.85 + (1.7 * j) / 7 + 0.03 * Math.cos(5 * k);
    }
  }
  const corners = [-1, -1, 1, -1, 1, 1, -1, 1];
  for (let c = 0; c < 8; c++) p[2 * (N - 4) + c] = corners[c]!;
  return p;
}

function tps(target: Float64Array, source: Float64Array): Float32Array {
  const coef = new Float32Array(2 * (N + 3));
  solveTps(target, source, N, 1e-6, coef, new Float64Array((N + 3) * (N + 5)));
  return coef;
}

/** Smooth deterministic test picture, planar float RGB. */
function pattern(): Float32Array {
  const s = new Float32Array(3 * R * R);
  for (let y = 0; y < R; y++) {
    for (let x = 0; x < R; x++) {
      const i = y * R + x;
      s[i] = 128 + 100 * Math.sin(x / 9) * Math.cos(y / 13);
      s[R * R + i] = 128 + 90 * Math.cos(x / 17 + y / 11);
      s[2 * R * R + i] = (x + 2 * y) % 256;
    }
  }
  return s;
}

const f32 = (data: Float32Array, dims: number[]): Tensor => new Tensor('float32', data, dims);

describe('default pack generator graphs', () => {
  let pack: ModelPack;
  beforeAll(async () => {
    pack = await ModelPack.load(path.join(projectRoot, 'models', 'default'));
  });
  afterAll(() => pack.close());

  function fieldFeeds(
    ctrl: Float64Array,
    coef: Float32Array,
    region: number[],
    masks = new Float32Array(4 * M * M),
    gaze = [0, 0],
    mouth = [0, 0.5, 1, 0, 0.2, 0, 0.1, 0],
  ) {
    return {
      ctrl: f32(Float32Array.from(ctrl), [1, N, 2]),
      coef: f32(coef, [1, N + 3, 2]),
      masks: f32(masks, [1, 4, M, M]),
      gaze: f32(Float32Array.from(gaze), [1, 2]),
      mouth: f32(Float32Array.from(mouth), [1, 8]),
      colors: f32(Float32Array.from([40, 10, 12, 230, 225, 210, 180, 90, 100, 200, 160, 140, 40, 30, 30]), [1, 5, 3]),
      region: f32(Float32Array.from(region), [1, 4]),
    };
  }

  it('fields: target == source control points give the identity grid', () => {
    const p = controlPoints();
    const region = [-0.5, -0.4, 0.6, 0.7];
    const out = pack.model('fields').run(fieldFeeds(p, tps(p, p), region), { grid: null, overlay: null });
    const grid = out.grid!.data as Float32Array;
    let maxErr = 0;
    for (let j = 0; j < M; j++) {
      for (let i = 0; i < M; i++) {
        const x = region[0]! + ((region[2]! - region[0]!) * i) / (M - 1);
        const y = region[1]! + ((region[3]! - region[1]!) * j) / (M - 1);
        maxErr = Math.max(maxErr, Math.abs(grid[j * M + i]! - x), Math.abs(grid[M * M + j * M + i]! - y));
      }
    }
    expect(maxErr).toBeLessThan(2e-4);
  });

  it('generator: identity control points reproduce the crop', () => {
    const p = controlPoints();
    const src = pattern();
    const W = 64;
    // Output pixel j sits exactly on crop pixel 200 + j.
    const g = (px: number): number => (2 * px + 1) / R - 1;
    const feeds = {
      source: f32(src, [1, 3, R, R]),
      ...fieldFeeds(p, tps(p, p), [g(200), g(200), g(200 + W - 1), g(200 + W - 1)]),
      background: f32(new Float32Array(3 * W * W).fill(7), [1, 3, W, W]),
      paste_mask: f32(new Float32Array(W * W).fill(1), [1, 1, W, W]),
    };
    const out = pack.model('generator').run(feeds, { y: null, uv: null, rgb: null });
    const rgb = out.rgb!.data as Float32Array;
    let maxErr = 0;
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < W; y++) {
        for (let x = 0; x < W; x++) {
          maxErr = Math.max(maxErr, Math.abs(rgb[c * W * W + y * W + x]! - src[c * R * R + (200 + y) * R + 200 + x]!));
        }
      }
    }
    expect(maxErr).toBeLessThan(0.05);
  });

  it('generator: moving one control point moves the feature under it', () => {
    const src = new Float32Array(3 * R * R).fill(20);
    // A bright 8x8 square centred on crop pixel (256, 256) (grid 0.002, 0.002).
    for (let c = 0; c < 3; c++)
      for (let y = 252; y < 260; y++) for (let x = 252; x < 260; x++) src[c * R * R + y * R + x] = 240;
    const p = controlPoints();
    // Put control point 0 on the square's centre, and move it 12 px right and 6 px down in the target.
    p[0] = (2 * 256) / R - 1;
    p[1] = (2 * 256) / R - 1;
    const target = p.slice();
    target[0] = p[0] + (2 * 12) / R;
    target[1] = p[1] + (2 * 6) / R;
    const W = 96;
    const g = (px: number): number => (2 * px + 1) / R - 1;
    const feeds = {
      source: f32(src, [1, 3, R, R]),
      ...fieldFeeds(target, tps(target, p), [g(220), g(220), g(220 + W - 1), g(220 + W - 1)]),
      background: f32(new Float32Array(3 * W * W), [1, 3, W, W]),
      paste_mask: f32(new Float32Array(W * W).fill(1), [1, 1, W, W]),
    };
    const out = pack.model('generator').run(feeds, { y: null, uv: null, rgb: null });
    const rgb = out.rgb!.data as Float32Array;
    let sx = 0,
      sy = 0,
      sw = 0;
    for (let y = 0; y < W; y++) {
      for (let x = 0; x < W; x++) {
        const v = Math.max(0, rgb[y * W + x]! - 20);
        sx += v * x;
        sy += v * y;
        sw += v;
      }
    }
    // Square centre was at region pixel (36, 36) (crop 256 - 220); expect it at about (48, 42).
    expect(sx / sw).toBeGreaterThan(46);
    expect(sx / sw).toBeLessThan(50);
    expect(sy / sw).toBeGreaterThan(40);
    expect(sy / sw).toBeLessThan(44);
  });

  it('the CPU fused warp matches the whole generator graph', () => {
    const p = controlPoints();
    const target = p.slice();
    for (let k = 0; k < N - 4; k++) {
      target[2 * k] = p[2 * k]! + 0.02 * Math.sin(3 * k);
      target[2 * k + 1] = p[2 * k + 1]! + 0.02 * Math.cos(2 * k);
    }
    const src = pattern();
    const x0 = 40,
      y0 = 20,
      W = 200,
      H = 240;
    const region = [-0.6, -0.7, 0.55, 0.65];
    const masks = new Float32Array(4 * M * M);
    const sc = new Float64Array(16);
    // An eye-like and a mouth-like polygon in node units.
    fillPolygon(
      masks,
      M,
      Float64Array.from([40, 50, 60, 70, 60, 50]),
      Float64Array.from([40, 35, 35, 40, 45, 45]),
      6,
      sc,
    );
    fillPolygon(
      masks.subarray(M * M),
      M,
      Float64Array.from([45, 64, 83, 64]),
      Float64Array.from([95, 88, 95, 104]),
      4,
      sc,
    );
    // A closing lid with its lash line over the other eye.
    fillPolygon(
      masks.subarray(2 * M * M),
      M,
      Float64Array.from([70, 80, 90, 90, 80, 70]),
      Float64Array.from([40, 34, 40, 44, 46, 44]),
      6,
      sc,
    );
    fillPolygon(
      masks.subarray(3 * M * M),
      M,
      Float64Array.from([70, 90, 90, 70]),
      Float64Array.from([43, 43, 45, 45]),
      4,
      sc,
    );
    const mouth = [0.0, 0.45, 1, 0, 0.15, -0.4, 0.5, 1];
    const bg = new Float32Array(3 * W * H);
    for (let i = 0; i < bg.length; i++) bg[i] = (i * 37) % 251;
    const pm = new Float32Array(W * H);
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++)
        pm[y * W + x] = Math.min(1, Math.max(0, 1.2 - Math.hypot(x / W - 0.5, y / H - 0.5) * 2.2));
    const fieldsIn = fieldFeeds(target, tps(target, p), region, masks, [0.01, -0.005], mouth);
    const full = pack.model('generator').run(
      {
        source: f32(src, [1, 3, R, R]),
        ...fieldsIn,
        background: f32(bg, [1, 3, H, W]),
        paste_mask: f32(pm, [1, 1, H, W]),
      },
      { y: null, uv: null },
    );
    const fields = pack.model('fields').run(fieldsIn, { grid: null, overlay: null });
    const OW = 320,
      OH = 300;
    const frame = createI420(OW, OH);
    // The frame outside the paste region (and where the mask is 0) holds the background; here: the background too.
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) frame.data[(y0 + y) * OW + x0 + x] = 0;
    const warp = new FusedWarp({ source: src, sourceRes: R, nodeRes: M, x0, y0, w: W, h: H, background: bg, mask: pm });
    warp.run(fields.grid!.data as Float32Array, fields.overlay!.data as Float32Array, frame);
    const yG = full.y!.data as Uint8Array;
    const uvG = full.uv!.data as Uint8Array;
    let maxY = 0,
      sumY = 0,
      n = 0;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        if (pm[y * W + x] === 0) continue;
        const d = Math.abs(frame.data[(y0 + y) * OW + x0 + x]! - yG[y * W + x]!);
        maxY = Math.max(maxY, d);
        sumY += d;
        n++;
      }
    }
    let maxUV = 0;
    const cw = OW / 2;
    for (let y = 0; y < H / 2; y++) {
      for (let x = 0; x < W / 2; x++) {
        const o = 2 * y * W + 2 * x;
        if (pm[o] === 0 && pm[o + 1] === 0 && pm[o + W] === 0 && pm[o + W + 1] === 0) continue;
        const ci = (y0 / 2 + y) * cw + x0 / 2 + x;
        maxUV = Math.max(maxUV, Math.abs(frame.data[OW * OH + ci]! - uvG[y * (W / 2) + x]!));
        maxUV = Math.max(
          maxUV,
          Math.abs(frame.data[OW * OH + cw * (OH / 2) + ci]! - uvG[(W / 2) * (H / 2) + y * (W / 2) + x]!),
        );
      }
    }
    expect(n).toBeGreaterThan(1000);
    // Background rounding to 8 bits and float summation order: a level or two, never more.
    expect(maxY).toBeLessThanOrEqual(2);
    expect(sumY / n).toBeLessThan(0.6);
    expect(maxUV).toBeLessThanOrEqual(2);
  });
});
