/**
 * The second landmark network's pure parts (landmarks68.ts: its box from a FaceMesh mesh, eye and mouth measures,
 * mouth shape distances; meshMetrics.ts: the FaceMesh mouth counterparts) on constructed points, and its forward
 * pass (faceLandmark68Net.ts) against face-api's own implementation on real portraits, both on tfjs's CPU backend in
 * this process.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';
import type * as Tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError } from '../../server/errors.js';
import { defaultLandmarkModelDir } from '../../server/quality/faceModels.js';
import {
  FaceLandmark68Net,
  LM68_INPUT_SIZE,
  prepareInput,
  type RgbBytes,
  type Tfjs,
} from '../../server/quality/faceLandmark68Net.js';
import {
  eyeAspectRatio68,
  landmarkBoxFromMesh,
  LM68_MOUTH,
  mouthMotion68,
  mouthOpenness68,
  mouthShapeDistance68,
  motionDistance2d,
  rigidRotation68,
} from '../../server/quality/landmarks68.js';
import {
  alignedMeshDistance,
  MESH_LIPS,
  MESH_POINTS,
  motionDistance3d,
  mouthOpennessMesh,
} from '../../server/quality/meshMetrics.js';
import { interOcularDistance } from '../../server/quality/metrics.js';
import { loadImageRgb } from '../../server/util/image.js';
import { portraitFile } from '../helpers/media.js';

const require = createRequire(import.meta.url);

/**
 * A plausible frontal 68-point face (iBUG layout, image pixels, eyes ~60 px apart), with small deterministic
 * irregularities so that no three points are exactly collinear.
 */
function face68(): Float64Array {
  const p = new Float64Array(136);
  const set = (i: number, x: number, y: number): void => {
    p[2 * i] = x + 0.37 * Math.sin(i * 1.7);
    p[2 * i + 1] = y + 0.29 * Math.cos(i * 2.3);
  };
  for (let i = 0; i <= 16; i++) set(i, 40 + i * 7.5, 120 + 45 * Math.sin((i / 16) * Math.PI)); // jaw
  for (let i = 0; i < 5; i++) set(17 + i, 60 + i * 9, 88 - 4 * Math.sin((i / 4) * Math.PI)); // brows
  for (let i = 0; i < 5; i++) set(22 + i, 124 + i * 9, 88 - 4 * Math.sin((i / 4) * Math.PI));
  for (let i = 0; i < 4; i++) set(27 + i, 100, 100 + i * 10); // nose bridge
  for (let i = 0; i < 5; i++) set(31 + i, 88 + i * 6, 140 + (i === 2 ? 3 : 0)); // nostrils
  // Eyes: corners 30 px apart, lids 5 px from the corner line (EAR 1/3).
  const eye = (f: number, x0: number): void => {
    set(f, x0, 105);
    set(f + 1, x0 + 10, 100);
    set(f + 2, x0 + 20, 100);
    set(f + 3, x0 + 30, 105);
    set(f + 4, x0 + 20, 110);
    set(f + 5, x0 + 10, 110);
  };
  eye(36, 55);
  eye(42, 115);
  // Outer lips 48-59 (corners 48 and 54, 50 px apart), inner lips 60-67, mouth closed.
  const outer: [number, number][] = [
    [75, 165],
    [83, 160],
    [92, 157],
    [100, 158],
    [108, 157],
    [117, 160],
    [125, 165],
    [117, 171],
    [108, 174],
    [100, 175],
    [92, 174],
    [83, 171],
  ];
  outer.forEach(([x, y], k) => set(48 + k, x, y));
  const inner: [number, number][] = [
    [80, 165],
    [90, 164],
    [100, 164],
    [110, 164],
    [120, 165],
    [110, 166],
    [100, 166],
    [90, 166],
  ];
  inner.forEach(([x, y], k) => set(60 + k, x, y));
  return p;
}

/** A 2-D similarity applied to flat x, y points. */
function transform(p: ArrayLike<number>, scale: number, angleDeg: number, tx: number, ty: number): Float64Array {
  const a = (angleDeg * Math.PI) / 180;
  const c = scale * Math.cos(a);
  const s = scale * Math.sin(a);
  const o = new Float64Array(p.length);
  for (let i = 0; i < p.length; i += 2) {
    o[i] = c * p[i]! - s * p[i + 1]! + tx;
    o[i + 1] = s * p[i]! + c * p[i + 1]! + ty;
  }
  return o;
}

/** The face with its lower lip (outer 55-59, inner 65-67: 8 of the 20 lip points) pulled down by `frac` × IOD. */
function openMouth(p: Float64Array, frac: number): Float64Array {
  const o = Float64Array.from(p);
  const d = frac * interOcularDistance(p);
  for (const i of [55, 56, 57, 58, 59, 65, 66, 67]) o[2 * i + 1]! += d;
  return o;
}

describe('68-point measures (pure)', () => {
  const base = face68();

  it('eye aspect ratio per eye: 1/3 open, ~0 shut, right = 36-41', () => {
    const e = eyeAspectRatio68(base);
    expect(e.right).toBeCloseTo(1 / 3, 1);
    expect(e.left).toBeCloseTo(1 / 3, 1);
    const shut = Float64Array.from(base);
    for (const i of [37, 38, 40, 41]) shut[2 * i + 1] = 105;
    const s = eyeAspectRatio68(shut);
    expect(s.right).toBeLessThan(0.03);
    expect(s.left).toBeCloseTo(e.left, 12);
    // Scale- and rotation-free.
    const moved = eyeAspectRatio68(transform(base, 2.5, 30, 7, -3));
    expect(moved.right).toBeCloseTo(e.right, 9);
  });

  it('mouth openness: inner-lip gap over mouth width', () => {
    expect(mouthOpenness68(base)).toBeLessThan(0.05);
    const open = Float64Array.from(base);
    for (const i of [65, 66, 67]) open[2 * i + 1]! += 20;
    // Gaps grow by 20 px over a 50 px wide mouth.
    expect(mouthOpenness68(open) - mouthOpenness68(base)).toBeCloseTo(20 / 50, 1);
  });

  it('mouth shape distance: 0 for a moved, turned, scaled copy; the mean lip displacement for an opened mouth', () => {
    const moved = transform(base, 1.4, 15, 30, -12);
    expect(mouthShapeDistance68(moved, base)).toBeLessThan(1e-9);
    // 8 of the 20 lip points move by 0.2 IOD: mean 0.08 IOD, seen upright or on the moved head alike (the rigid
    // points do not move, so the alignment is exact).
    const open = openMouth(base, 0.2);
    expect(mouthShapeDistance68(open, base)).toBeCloseTo(0.08, 9);
    expect(mouthShapeDistance68(transform(open, 1.4, 15, 30, -12), base)).toBeCloseTo(0.08, 9);
  });

  it('mouth motion: pose removed, rotated into the other stream; the same expression on a turned head matches', () => {
    const open = openMouth(base, 0.2);
    const up = mouthMotion68(open, base);
    expect(up.length).toBe(LM68_MOUTH.length * 2);
    expect(motionDistance2d(mouthMotion68(base, base), new Float64Array(40))).toBeLessThan(1e-12);
    expect(motionDistance2d(up, new Float64Array(40))).toBeCloseTo(0.08, 9);
    // Another stream: the same face and expression, rolled by 25 deg, scaled 1.3 and moved.
    const ref2 = transform(base, 1.3, 25, -40, 15);
    const open2 = transform(open, 1.3, 25, -40, 15);
    const rot = rigidRotation68(ref2, base);
    expect(rot).toBeCloseTo((-25 * Math.PI) / 180, 9);
    expect(motionDistance2d(mouthMotion68(open2, ref2, rot), up)).toBeLessThan(1e-9);
    // Without the rotation the motions point different ways.
    expect(motionDistance2d(mouthMotion68(open2, ref2), up)).toBeGreaterThan(0.02);
  });

  it('the face box from a mesh: 1.1x the points wide, centred, from 10% of their height above them to their bottom', () => {
    const mesh = new Float32Array(MESH_POINTS * 3);
    for (let i = 0; i < MESH_POINTS; i++) {
      mesh[3 * i] = 100 + ((i * 37) % 101);
      mesh[3 * i + 1] = 50 + ((i * 53) % 201);
    }
    // The iris points (after 468) are left out even when they lie outside.
    mesh[3 * 470] = 900;
    const [x, y, w, h] = landmarkBoxFromMesh(mesh);
    expect(x).toBeCloseTo(95, 9);
    expect(y).toBeCloseTo(30, 9);
    expect(w).toBeCloseTo(110, 9);
    expect(h).toBeCloseTo(220, 9);
    expect(() => landmarkBoxFromMesh(new Float32Array(30))).toThrow(TypeError);
    expect(() => landmarkBoxFromMesh(new Float32Array(MESH_POINTS * 3))).toThrow(/no extent/);
  });

  it('refuses arrays of the wrong size', () => {
    expect(() => eyeAspectRatio68(new Float32Array(134))).toThrow(/68 points/);
    expect(() => mouthOpenness68(new Float32Array(10))).toThrow(TypeError);
    expect(() => mouthShapeDistance68(base, new Float32Array(10))).toThrow(/truth landmarks/);
    expect(() => motionDistance2d([1, 2], [1, 2, 3, 4])).toThrow(TypeError);
  });
});

describe('FaceMesh mouth measures (pure)', () => {
  /** A flat mesh: points on a grid, the mouth corners 40 px apart, the inner lips closed. */
  function mesh(): Float64Array {
    const m = new Float64Array(MESH_POINTS * 3);
    for (let i = 0; i < MESH_POINTS; i++) {
      m[3 * i] = (i % 22) * 10 + 0.1 * Math.sin(i);
      m[3 * i + 1] = Math.floor(i / 22) * 10 + 0.1 * Math.cos(i);
      m[3 * i + 2] = 0.5 * Math.sin(i * 0.7);
    }
    const put = (i: number, x: number, y: number): void => {
      m[3 * i] = x;
      m[3 * i + 1] = y;
    };
    put(61, 80, 150);
    put(291, 120, 150);
    for (const [u, l, x] of [
      [82, 87, 90],
      [13, 14, 100],
      [312, 317, 110],
    ] as const) {
      put(u, x, 150);
      put(l, x, 150);
    }
    return m;
  }

  it('mouth openness from the inner lips: gap over the corner distance', () => {
    const m = mesh();
    expect(mouthOpennessMesh(m)).toBe(0);
    for (const l of [87, 14, 317]) m[3 * l + 1]! += 12;
    expect(mouthOpennessMesh(m)).toBeCloseTo(12 / 40, 12);
    expect(() => mouthOpennessMesh(new Float64Array(468 * 3))).toThrow(/478 points/);
  });

  it('lip-only distances: only the lip points count, the alignment is that of all points', () => {
    const m = mesh();
    const moved = Float64Array.from(m);
    // Move 10 of the 40 lip points by 4 px in y (a small change: the 468-point alignment hardly moves).
    for (const i of MESH_LIPS.slice(0, 10)) moved[3 * i + 1]! += 4;
    const lips = alignedMeshDistance(moved, m, MESH_LIPS);
    const all = alignedMeshDistance(moved, m);
    expect(lips).toBeGreaterThan(5 * all);
    const a = new Float64Array(468 * 3);
    const b = new Float64Array(468 * 3);
    b[3 * 13 + 1] = 2;
    expect(motionDistance3d(a, b, [13, 14])).toBeCloseTo(1, 12);
    expect(motionDistance3d(a, b)).toBeCloseTo(2 / 468, 12);
    expect(() => motionDistance3d(a, b, [500])).toThrow(/out of range/);
  });
});

describe('network input (pure)', () => {
  const mean = [122.782, 117.001, 104.298];
  const flat = (w: number, h: number, v: number): RgbBytes => ({
    width: w,
    height: h,
    data: new Uint8Array(w * h * 3).fill(v),
  });
  const n = LM68_INPUT_SIZE;

  it('pads a tall box with black on both sides, centred, and normalises', () => {
    const out = new Float32Array(n * n * 3);
    const crop = prepareInput(flat(300, 300, 200), [50.7, 20, 56.3, 112], out);
    expect(crop).toEqual({ x: 50, y: 20, w: 56, h: 112 });
    // 112 tall: no resize; 56 px of image between 28 px of black on each side.
    const px = (r: number, c: number, ch: number): number => out[(r * n + c) * 3 + ch]!;
    for (let ch = 0; ch < 3; ch++) {
      expect(px(50, 0, ch)).toBeCloseTo(-mean[ch]! / 255, 6);
      expect(px(50, 27, ch)).toBeCloseTo(-mean[ch]! / 255, 6);
      expect(px(50, 28, ch)).toBeCloseTo((200 - mean[ch]!) / 255, 6);
      expect(px(50, 83, ch)).toBeCloseTo((200 - mean[ch]!) / 255, 6);
      expect(px(50, 84, ch)).toBeCloseTo(-mean[ch]! / 255, 6);
    }
  });

  it('clips a box at the image borders, and gives null for a box outside the image', () => {
    const out = new Float32Array(n * n * 3);
    expect(prepareInput(flat(100, 80, 10), [-20, 30, 60, 100], out)).toEqual({ x: 0, y: 30, w: 40, h: 50 });
    expect(prepareInput(flat(100, 80, 10), [120, 10, 30, 30], out)).toBeNull();
    expect(() => prepareInput(flat(100, 80, 10), [0, 0, 10, 10], new Float32Array(5))).toThrow(TypeError);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// The forward pass against face-api's own code.

interface UpstreamPoint {
  x: number;
  y: number;
}
interface UpstreamNet {
  loadFromWeightMap(map: Tf.NamedTensorMap): void;
  detectLandmarks(input: Tf.Tensor3D): Promise<{ positions: UpstreamPoint[] }>;
  dispose(): void;
}
interface FaceApi {
  FaceLandmark68Net: new () => UpstreamNet;
}

/**
 * face-api's Node WASM build, with its `require('@tensorflow/tfjs')` answered by this process's tfjs-core (the union
 * package is not installed), and the chained tensor methods its landmark path calls (`t.as4D()`, `t.sub()`, ...)
 * registered on tfjs-core's Tensor, as the union package would: test-only scaffolding to run the reference code.
 */
function loadUpstream(tf: Tfjs): FaceApi {
  const file = path.join(
    path.dirname(require.resolve('@vladmandic/face-api/package.json')),
    'dist',
    'face-api.node-wasm.js',
  );
  const proto = tf.Tensor.prototype as unknown as Record<string, unknown>;
  const chained: Record<string, (t: Tf.Tensor, ...a: (number | Tf.Tensor)[]) => Tf.Tensor> = {
    as1D: (t) => tf.reshape(t, [-1]),
    as2D: (t, ...a) => tf.reshape(t, a as number[]),
    as3D: (t, ...a) => tf.reshape(t, a as number[]),
    as4D: (t, ...a) => tf.reshape(t, a as number[]),
    mul: (t, b) => tf.mul(t, b),
    sub: (t, b) => tf.sub(t, b),
    div: (t, b) => tf.div(t, b),
  };
  for (const [name, fn] of Object.entries(chained)) {
    proto[name] ??= function (this: Tf.Tensor, ...a: (number | Tf.Tensor)[]) {
      return fn(this, ...a);
    };
  }
  const mod = { exports: {} as FaceApi };
  const req = (id: string): unknown => (id === '@tensorflow/tfjs' ? tf : require(id));
  const run = vm.compileFunction(readFileSync(file, 'utf8'), ['require', 'module', 'exports'], { filename: file }) as (
    r: typeof req,
    m: typeof mod,
    e: FaceApi,
  ) => void;
  run(req, mod, mod.exports);
  return mod.exports;
}

describe('FaceLandmark68Net against face-api', () => {
  let tf: Tfjs;
  let ours: FaceLandmark68Net;
  let theirs: UpstreamNet;
  let manifest: unknown;
  let bin: Buffer;

  beforeAll(async () => {
    tf = require('@tensorflow/tfjs-core') as Tfjs;
    // Quiets tfjs's "install the node backend" notice.
    tf.env().set('IS_TEST', true);
    // The CPU backend (a dependency of tfjs-backend-wasm, so resolved from there).
    createRequire(require.resolve('@tensorflow/tfjs-backend-wasm'))('@tensorflow/tfjs-backend-cpu');
    await tf.setBackend('cpu');
    await tf.ready();
    const dir = defaultLandmarkModelDir();
    manifest = JSON.parse(readFileSync(path.join(dir, 'face_landmark_68_model-weights_manifest.json'), 'utf8'));
    bin = readFileSync(path.join(dir, 'face_landmark_68_model.bin'));
    ours = FaceLandmark68Net.fromWeights(tf, manifest, bin);
    const api = loadUpstream(tf);
    theirs = new api.FaceLandmark68Net();
    const specs = (manifest as { weights: Tf.io.WeightsManifestEntry[] }[])[0]!.weights;
    theirs.loadFromWeightMap(
      tf.io.decodeWeights(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength) as ArrayBuffer, specs),
    );
  });
  afterAll(() => {
    ours?.close();
    theirs?.dispose();
    expect(ours.closed).toBe(true);
  });

  /** face-api's pipeline on a box: slice the clipped, floored box, detectLandmarks, shift by the box corner. */
  async function upstream(img: RgbBytes, box: [number, number, number, number]): Promise<Float64Array> {
    const cx = Math.max(box[0], 0);
    const cy = Math.max(box[1], 0);
    const x = Math.floor(cx);
    const y = Math.floor(cy);
    const w = Math.floor(Math.min(box[0] + box[2] - cx, img.width - cx));
    const h = Math.floor(Math.min(box[1] + box[3] - cy, img.height - cy));
    const image = tf.tensor3d(Int32Array.from(img.data), [img.height, img.width, 3], 'int32');
    const crop = tf.slice3d(image, [y, x, 0], [h, w, 3]);
    try {
      const lm = await theirs.detectLandmarks(crop);
      return Float64Array.from(lm.positions.flatMap((p) => [p.x + x, p.y + y]));
    } finally {
      tf.dispose([image, crop]);
    }
  }

  it('gives face-api`s points (within 0.001 px) on real portraits, for tall, wide, clipped and large boxes', async () => {
    const woman = await loadImageRgb(portraitFile('real_woman_dark_hair.png'));
    const man = await loadImageRgb(portraitFile('real_older_man_glasses.jpg'));
    const cases: [RgbBytes, [number, number, number, number]][] = [
      [woman, [146.4, 67.8, 167.3, 194.9]], // taller than wide (the usual face box)
      [woman, [120, 90, 230, 180]], // wider than tall
      [woman, [-30, 40, 260, 300]], // over the left edge: clipped
      [man, [140, 180, 340, 390]], // a large crop: resized down
    ];
    for (const [img, box] of cases) {
      const a = ours.detect(img, box)!;
      const b = await upstream(img, box);
      let max = 0;
      for (let i = 0; i < 136; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
      expect(max, `box ${box.join(',')}`).toBeLessThan(0.001);
    }
    // A box wholly outside the image has no points.
    expect(ours.detect(woman, [600, 10, 50, 50])).toBeNull();
  });

  it('refuses weights that are not the 68-point net`s, and a closed net', () => {
    const groups = manifest as { paths: string[]; weights: { name: string; shape: number[] }[] }[];
    const renamed = [
      { ...groups[0]!, weights: groups[0]!.weights.map((w, i) => (i === 0 ? { ...w, name: 'other/filters' } : w)) },
    ];
    const err = (() => {
      try {
        FaceLandmark68Net.fromWeights(tf, renamed, bin);
        return null;
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).code).toBe('FACE_MODEL_INVALID');
    expect((err as AppError).message).toContain('dense0/conv0/filters is missing');
    expect(() => FaceLandmark68Net.fromWeights(tf, { weights: [] }, bin)).toThrow(/one weight group/);
    expect(() => FaceLandmark68Net.fromWeights(tf, groups, bin.subarray(0, 1000))).toThrow(AppError);
    const tmp = FaceLandmark68Net.fromWeights(tf, manifest, bin);
    tmp.close();
    tmp.close();
    expect(() => tmp.detect({ width: 2, height: 2, data: new Uint8Array(12) }, [0, 0, 2, 2])).toThrow(/closed/);
  });
});
