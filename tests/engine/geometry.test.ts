/**
 * Pure parts of the default engine: similarity fit, TPS solve, polygon rasterization, the expression latent and its
 * retargeting onto a portrait.
 */
import { describe, expect, it } from 'vitest';
import {
  applySimilarity,
  evalTps,
  eyeOpenness,
  fillPolygon,
  fitSimilarity,
  mouthOpenness,
  RIGID_POINTS,
  solveTps,
} from '../../server/avatar/engines/default/geometry.js';
import {
  ExpressionEncoder,
  eyelidPolygons,
  L_CLOSE_L,
  L_ROLL,
  L_YAW,
  LATENT_SIZE,
  retarget,
  type PortraitGeometry,
} from '../../server/avatar/engines/default/expression.js';
import { faceFrame } from '../../server/avatar/engines/default/geometry.js';
import { defaultAvatarSettings } from '../../server/types/protocol.js';
import type { FaceTrack } from '../../server/vision/types.js';

/** A plausible frontal 68-point face (iBUG layout) in a 200 px box at (100, 80). */
function face(): Float32Array {
  const p = new Float32Array(136);
  const set = (i: number, x: number, y: number): void => {
    p[2 * i] = 100 + x * 200;
    p[2 * i + 1] = 80 + y * 200;
  };
  for (let i = 0; i <= 16; i++) {
    const a = Math.PI * (i / 16);
    set(i, 0.5 - 0.48 * Math.cos(a), 0.35 + 0.55 * Math.sin(a));
  }
  for (let i = 0; i < 5; i++) {
    set(17 + i, 0.15 + 0.07 * i, 0.22 - 0.03 * Math.sin((Math.PI * i) / 4));
    set(22 + i, 0.57 + 0.07 * i, 0.22 - 0.03 * Math.sin((Math.PI * (4 - i)) / 4));
  }
  for (let i = 0; i < 4; i++) set(27 + i, 0.5, 0.33 + 0.06 * i);
  for (let i = 0; i < 5; i++) set(31 + i, 0.42 + 0.04 * i, 0.58 + (i === 2 ? 0.01 : 0));
  const eye = (e: number, cx: number): void => {
    set(e, cx - 0.08, 0.35);
    set(e + 1, cx - 0.03, 0.32);
    set(e + 2, cx + 0.03, 0.32);
    set(e + 3, cx + 0.08, 0.35);
    set(e + 4, cx + 0.03, 0.37);
    set(e + 5, cx - 0.03, 0.37);
  };
  eye(36, 0.3);
  eye(42, 0.7);
  const mouth = [
    [0.35, 0.72],
    [0.4, 0.69],
    [0.46, 0.68],
    [0.5, 0.69],
    [0.54, 0.68],
    [0.6, 0.69],
    [0.65, 0.72],
    [0.6, 0.76],
    [0.55, 0.78],
    [0.5, 0.785],
    [0.45, 0.78],
    [0.4, 0.76],
  ];
  mouth.forEach(([x, y], k) => set(48 + k, x!, y!));
  const inner = [
    [0.38, 0.72],
    [0.45, 0.715],
    [0.5, 0.718],
    [0.55, 0.715],
    [0.62, 0.72],
    [0.55, 0.725],
    [0.5, 0.727],
    [0.45, 0.725],
  ];
  inner.forEach(([x, y], k) => set(60 + k, x!, y!));
  return p;
}

function track(lm: Float32Array): FaceTrack {
  return {
    box: { l: 100, t: 80, r: 300, b: 280 },
    landmarks: lm,
    rawLandmarks: new Int32Array(136),
    pose: { yaw: 0, pitch: 0, roll: 0, tx: 0, ty: 0, tz: 500 },
    eyes: { left: eyeOpenness(lm, 36), right: eyeOpenness(lm, 42) },
    mouth: mouthOpenness(lm),
    gaze: { x: 0, y: 0 },
    confidence: 1,
  };
}

function portraitGeometry(scaleX: number, scaleY: number): PortraitGeometry {
  const lm = face();
  const g = new Float64Array(136);
  for (let i = 0; i < 68; i++) {
    g[2 * i] = ((lm[2 * i]! - 200) / 400) * scaleX;
    g[2 * i + 1] = ((lm[2 * i + 1]! - 200) / 400) * scaleY;
  }
  const ring = new Float64Array(24);
  for (let k = 0; k < 12; k++) {
    ring[2 * k] = 0.6 * Math.cos((2 * Math.PI * k) / 12);
    ring[2 * k + 1] = 0.7 * Math.sin((2 * Math.PI * k) / 12);
  }
  return {
    landmarks: g,
    frame: faceFrame(g, { ox: 0, oy: 0, ux: 1, uy: 0, width: 1, height: 1, iod: 1 }),
    ring,
    pose: { yaw: 0, pitch: 0, roll: 0 },
  };
}

describe('geometry', () => {
  it('fits a similarity exactly and inverts it', () => {
    const src = face();
    const dst = new Float32Array(136);
    const t = { a: 1.1 * Math.cos(0.2), b: 1.1 * Math.sin(0.2), tx: 13, ty: -7 };
    applySimilarity(t, src, dst);
    const fit = fitSimilarity(src, dst, RIGID_POINTS, { a: 0, b: 0, tx: 0, ty: 0 });
    expect(fit.a).toBeCloseTo(t.a, 5);
    expect(fit.b).toBeCloseTo(t.b, 5);
    expect(fit.tx).toBeCloseTo(t.tx, 3);
    expect(fit.ty).toBeCloseTo(t.ty, 3);
  });

  it('TPS interpolates the control points and reproduces an affine map exactly', () => {
    const n = 30;
    const ctrl = new Float64Array(2 * n);
    const val = new Float64Array(2 * n);
    for (let i = 0; i < n; i++) {
      ctrl[2 * i] = Math.sin(i * 1.7) * 0.8;
      ctrl[2 * i + 1] = Math.cos(i * 2.3) * 0.8;
      val[2 * i] = ctrl[2 * i]! + 0.05 * Math.sin(i);
      val[2 * i + 1] = ctrl[2 * i + 1]! - 0.04 * Math.cos(i);
    }
    const coef = new Float32Array(2 * (n + 3));
    const mat = new Float64Array((n + 3) * (n + 5));
    solveTps(ctrl, val, n, 0, coef, mat);
    for (let i = 0; i < n; i++) {
      const [x, y] = evalTps(ctrl, n, coef, ctrl[2 * i]!, ctrl[2 * i + 1]!);
      expect(Math.abs(x - val[2 * i]!)).toBeLessThan(1e-4);
      expect(Math.abs(y - val[2 * i + 1]!)).toBeLessThan(1e-4);
    }
    for (let i = 0; i < n; i++) {
      val[2 * i] = 0.9 * ctrl[2 * i]! - 0.1 * ctrl[2 * i + 1]! + 0.05;
      val[2 * i + 1] = 0.2 * ctrl[2 * i]! + 1.1 * ctrl[2 * i + 1]! - 0.02;
    }
    solveTps(ctrl, val, n, 0, coef, mat);
    const [x, y] = evalTps(ctrl, n, coef, 0.33, -0.21);
    expect(x).toBeCloseTo(0.9 * 0.33 + 0.1 * 0.21 + 0.05, 4);
    expect(y).toBeCloseTo(0.2 * 0.33 - 1.1 * 0.21 - 0.02, 4);
  });

  it('rasterizes polygons with anti-aliased coverage that sums to the area', () => {
    const m = 64;
    const mask = new Float32Array(m * m);
    const xs = Float64Array.from([10.3, 40.7, 30.2]);
    const ys = Float64Array.from([8.4, 20.1, 50.9]);
    fillPolygon(mask, m, xs, ys, 3, new Float64Array(8));
    const area = Math.abs((xs[1]! - xs[0]!) * (ys[2]! - ys[0]!) - (xs[2]! - xs[0]!) * (ys[1]! - ys[0]!)) / 2;
    const sum = mask.reduce((a, b) => a + b, 0);
    expect(Math.abs(sum - area) / area).toBeLessThan(0.02);
    expect(Math.max(...mask)).toBeLessThanOrEqual(1);
  });
});

describe('expression latent', () => {
  it('holding still gives a zero, constant latent', () => {
    const enc = new ExpressionEncoder();
    const lm = face();
    let last: Float64Array = new Float64Array(LATENT_SIZE);
    // Calibration takes ~2 s of frames with a face.
    for (let f = 0; f < 75; f++) last = Float64Array.from(enc.update(track(lm), f * 33));
    expect(enc.calibrated).toBe(true);
    expect(Math.max(...last.map(Math.abs))).toBeLessThan(1e-6);
  });

  it('separates head roll from expression, and measures an opening mouth and a blink', () => {
    const enc = new ExpressionEncoder();
    const lm = face();
    for (let f = 0; f < 40; f++) enc.update(track(lm), f * 33);
    // The same face rotated by 0.15 rad about its centre: roll, no expression.
    const rolled = new Float32Array(136);
    const c = Math.cos(0.15),
      s = Math.sin(0.15);
    applySimilarity({ a: c, b: s, tx: 200 - (c * 200 - s * 180), ty: 180 - (s * 200 + c * 180) }, lm, rolled);
    let lat: Float64Array = enc.latent;
    for (let f = 40; f < 80; f++) lat = enc.update(track(rolled), f * 33);
    expect(lat[L_ROLL]!).toBeCloseTo(0.15, 2);
    expect(Math.abs(lat[L_YAW]!)).toBeLessThan(0.01);
    for (let i = 0; i < 136; i++) expect(Math.abs(lat[i]!)).toBeLessThan(0.01);
    // Mouth open: lower lip and chin down; left eye shut.
    const open = Float32Array.from(lm);
    for (const i of [65, 66, 67, 55, 56, 57, 58, 59, 7, 8, 9]) open[2 * i + 1] = open[2 * i + 1]! + 24;
    open[2 * 37 + 1] = open[2 * 41 + 1]!;
    open[2 * 38 + 1] = open[2 * 40 + 1]!;
    for (let f = 80; f < 120; f++) lat = enc.update(track(open), f * 33);
    expect(lat[2 * 66 + 1]!).toBeGreaterThan(0.1);
    expect(lat[L_CLOSE_L]!).toBeGreaterThan(0.9);
  });

  it('retargets in the portrait face units (a wide performer drives a narrow portrait)', () => {
    const latent = new Float64Array(LATENT_SIZE);
    latent[2 * 66 + 1] = 0.1; // lower inner lip down by 10% of the face height
    latent[2 * 48] = -0.05; // mouth corner out by 5% of the face width
    const settings = { ...defaultAvatarSettings, headMotion: false };
    const narrow = portraitGeometry(0.6, 1);
    const out = new Float64Array(136 + 24);
    retarget(narrow, latent, settings, { yaw: 0, pitch: 0, roll: 0 }, out);
    const f = narrow.frame;
    expect(out[2 * 66 + 1]! - narrow.landmarks[2 * 66 + 1]!).toBeCloseTo(0.1 * f.height, 4);
    expect(out[2 * 48]! - narrow.landmarks[2 * 48]!).toBeCloseTo(-0.05 * f.width, 4);
    // Lip retargeting off: the mouth stays.
    retarget(narrow, latent, { ...settings, lipRetargeting: false }, { yaw: 0, pitch: 0, roll: 0 }, out);
    expect(out[2 * 66 + 1]!).toBeCloseTo(narrow.landmarks[2 * 66 + 1]!, 6);
  });

  it('paints an eyelid only when the eye closes', () => {
    const g = portraitGeometry(1, 1).landmarks;
    const lx = new Float64Array(6),
      ly = new Float64Array(6),
      sx = new Float64Array(4),
      sy = new Float64Array(4);
    expect(eyelidPolygons(g, 36, 0, lx, ly, sx, sy)).toBe(false);
    expect(eyelidPolygons(g, 36, 1, lx, ly, sx, sy)).toBe(true);
    // Closed: the lid edge reaches the lower lid; its top is above the upper lid.
    expect(ly[5]!).toBeGreaterThan(g[2 * 37 + 1]! + 0.9 * (g[2 * 41 + 1]! - g[2 * 37 + 1]!));
    expect(ly[1]!).toBeLessThan(g[2 * 37 + 1]!);
  });
});
