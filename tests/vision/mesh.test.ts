/**
 * The FaceMesh + Iris tracker (server/vision/mesh): the pure geometry (68-point mapping, lid openness, iris gaze,
 * BlazeFace decoding) directly, then the real networks (ONNX files converted at set-up, real onnxruntime sessions) on
 * real portraits and clips of the test media: the face found where dlib finds it, the blink frames of a clip, a wink
 * that is one eye, the gaze's sign on a clip that looks one way and then the other, and the refusal of a damaged
 * model file.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError } from '../../server/errors.js';
import { loadImageRgb, resizeRgb, rgbToGray } from '../../server/util/image.js';
import { readVideoFrames } from '../../server/util/video.js';
import { blazeAnchors, decodeBlazeFace } from '../../server/vision/mesh/blazeface.js';
import { cropRoi, roiToFrame } from '../../server/vision/mesh/crop.js';
import {
  EYE_CONTOUR,
  IRIS_LEFT,
  MESH_POINTS,
  MESH_TO_68,
  meshEyeGaze,
  meshEyeOpenness,
  meshTo68,
} from '../../server/vision/mesh/landmarks.js';
import { MeshTracker } from '../../server/vision/mesh/meshTracker.js';
import { defaultMeshModelDir, MeshModels } from '../../server/vision/mesh/models.js';
import { FaceTracker } from '../../server/vision/tracker.js';
import type { ColorFrame } from '../../server/vision/types.js';
import { drivingClip, portraitFile } from '../../scripts/testData.js';

describe('mesh geometry', () => {
  it('maps 68 points from the mesh, averaging the two-index points', () => {
    expect(MESH_TO_68).toHaveLength(68);
    const mesh = new Float32Array(2 * MESH_POINTS);
    for (let i = 0; i < MESH_POINTS; i++) {
      mesh[2 * i] = i;
      mesh[2 * i + 1] = 2 * i;
    }
    const out = new Float32Array(136);
    meshTo68(mesh, out);
    expect(out[2 * 8]).toBe(152); // chin
    expect(out[2 * 3]).toBe((132 + 58) / 2);
    expect(out[2 * 36]).toBe(33); // image-left eye, outer corner
    expect(out[2 * 45 + 1]).toBe(2 * 263);
  });

  /** A synthetic eye: corners at x = 0 and 30 around y = 0, lids at -h (upper) and +h (lower) in the middle. */
  function eye(mesh: Float32Array, which: 'left' | 'right', ox: number, h: number): void {
    const c = EYE_CONTOUR[which];
    c.lower.forEach((idx, k) => {
      const t = k / 8;
      mesh[2 * idx] = ox + 30 * t;
      mesh[2 * idx + 1] = 4 * h * t * (1 - t);
    });
    c.upper.forEach((idx, k) => {
      const t = (k + 1) / 8;
      mesh[2 * idx] = ox + 30 * t;
      mesh[2 * idx + 1] = -4 * h * t * (1 - t);
    });
  }

  it('measures each eye on its own: a closed eye is near 0, an open one near its height over width', () => {
    const mesh = new Float32Array(2 * MESH_POINTS);
    eye(mesh, 'left', 0, 5);
    eye(mesh, 'right', 60, 0.2);
    const open = meshEyeOpenness(mesh, 'left');
    const closed = meshEyeOpenness(mesh, 'right');
    expect(open).toBeGreaterThan(0.25);
    expect(open).toBeLessThan(0.4);
    expect(closed).toBeLessThan(0.03);
  });

  it('gives the iris offset in eye units, positive towards image right and down', () => {
    const mesh = new Float32Array(2 * MESH_POINTS);
    eye(mesh, 'left', 0, 5);
    mesh[2 * IRIS_LEFT] = 15 + 6; // 6 px right of the centre: 0.4 half-widths
    mesh[2 * IRIS_LEFT + 1] = -1.5; // up: -1.5 / (0.3 * 15)
    const g = meshEyeGaze(mesh, 'left', { x: 0, y: 0 });
    expect(g.x).toBeCloseTo(0.4, 5);
    expect(g.y).toBeCloseTo(-1.5 / 4.5, 5);
  });

  it('decodes BlazeFace rows into boxes and suppresses overlaps', () => {
    const anchors = blazeAnchors(256);
    expect(anchors.length / 2).toBe(896);
    const rows = new Float32Array(896 * 17).fill(-10);
    const put = (i: number, logit: number, dx: number, w: number): void => {
      rows[17 * i] = logit;
      rows[17 * i + 1] = dx;
      rows[17 * i + 2] = 0;
      rows[17 * i + 3] = w;
      rows[17 * i + 4] = w;
    };
    put(100, 3, 0, 40);
    put(101, 2, 1, 40); // the same face, weaker: suppressed
    put(700, 1, 0, 20); // another face
    const found = decodeBlazeFace(rows, anchors, 0.5);
    expect(found).toHaveLength(2);
    expect(found[0]!.score).toBeCloseTo(1 / (1 + Math.exp(-3)), 6);
    expect(found[0]!.cx).toBeCloseTo(anchors[200]!, 5);
    expect(found[1]!.w).toBe(20);
  });

  it('crops a rotated region and maps crop points back to the frame', () => {
    // A frame with one bright pixel; a region rotated by 90 degrees puts it where the mapping says.
    const W = 64;
    const frame: ColorFrame = { format: 'gray', width: W, height: W, data: new Uint8Array(W * W) };
    frame.data[20 * W + 40] = 255;
    const roi = { cx: 32, cy: 32, side: 32, angle: Math.PI / 2 };
    const out = new Float32Array(32 * 32 * 3);
    cropRoi(frame, roi, 32, 1, 0, out);
    let best = 0;
    for (let i = 1; i < 32 * 32; i++) if (out[3 * i]! > out[3 * best]!) best = i;
    const pt: [number, number] = [0, 0];
    roiToFrame(roi, 32, (best % 32) + 0.5, Math.floor(best / 32) + 0.5, false, pt);
    expect(Math.hypot(pt[0] - 40.5, pt[1] - 20.5)).toBeLessThan(1);
  });

  it('crops an I420 frame as its per-pixel definition says, inside, across and outside the frame', () => {
    // The definition: bilinear luma (taps outside the frame read as black, their weight kept), chroma from the nearest
    // half-resolution sample, one BT.601 conversion, clamped; regions cross the border, some are mirrored.
    let seed = 3;
    const rand = (): number => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32;
    for (const [W, H] of [
      [96, 64],
      [97, 63],
    ] as const) {
      const cw = W >> 1;
      const ch = H >> 1;
      const data = new Uint8Array(W * H + 2 * cw * ch).map(() => Math.floor(rand() * 256));
      const frame: ColorFrame = { format: 'i420', width: W, height: H, data };
      for (let t = 0; t < 24; t++) {
        const roi = {
          cx: rand() * 1.4 * W - 0.2 * W,
          cy: rand() * 1.4 * H - 0.2 * H,
          side: 4 + rand() * W,
          angle: rand() * 2 - 1,
        };
        const size = 16;
        const flip = t % 3 === 0;
        const out = new Float32Array(size * size * 3);
        cropRoi(frame, roi, size, 1 / 255, -0.5, out, flip);
        let max = 0;
        for (let v = 0; v < size; v++)
          for (let u = 0; u < size; u++) {
            const du = (flip ? size - 1 - u : u) + 0.5 - size / 2;
            const dv = v + 0.5 - size / 2;
            const k = roi.side / size;
            const sx = roi.cx + Math.cos(roi.angle) * k * du - Math.sin(roi.angle) * k * dv - 0.5;
            const sy = roi.cy + Math.sin(roi.angle) * k * du + Math.cos(roi.angle) * k * dv - 0.5;
            const x0 = Math.floor(sx);
            const y0 = Math.floor(sy);
            let rgb = [0, 0, 0];
            if (x0 >= -1 && y0 >= -1 && x0 < W && y0 < H) {
              let yv = 0;
              let wsum = 0;
              for (const [xx, yy, wt] of [
                [x0, y0, (1 - (sx - x0)) * (1 - (sy - y0))],
                [x0 + 1, y0, (sx - x0) * (1 - (sy - y0))],
                [x0, y0 + 1, (1 - (sx - x0)) * (sy - y0)],
                [x0 + 1, y0 + 1, (sx - x0) * (sy - y0)],
              ] as const) {
                if (xx < 0 || yy < 0 || xx >= W || yy >= H) continue;
                yv += wt * data[yy * W + xx]!;
                wsum += wt;
              }
              const ci =
                Math.min(ch - 1, Math.max(0, Math.floor(Math.max(0, sy + 0.5) / 2))) * cw +
                Math.min(cw - 1, Math.max(0, Math.floor(Math.max(0, sx + 0.5) / 2)));
              const c = yv - 16 * wsum;
              const cu = data[W * H + ci]! - 128;
              const cv = data[W * H + cw * ch + ci]! - 128;
              rgb = [
                1.164 * c + 1.596 * cv * wsum,
                1.164 * c - (0.392 * cu + 0.813 * cv) * wsum,
                1.164 * c + 2.017 * cu * wsum,
              ];
              rgb = rgb.map((x) => Math.min(255, Math.max(0, x)));
            }
            for (let j = 0; j < 3; j++)
              max = Math.max(max, Math.abs(out[3 * (v * size + u) + j]! - (rgb[j]! / 255 - 0.5)));
          }
        expect(max).toBeLessThan(1e-5);
      }
    }
  });
});

async function clipFrames(name: string, from: number, to: number): Promise<ColorFrame[]> {
  const out: ColorFrame[] = [];
  let i = 0;
  for await (const f of readVideoFrames(drivingClip(name), { format: 'rgb24', maxFrames: to + 1 })) {
    if (i++ >= from) out.push({ format: 'rgb', width: f.width, height: f.height, data: f.data });
  }
  return out;
}

describe('MeshTracker on real media', () => {
  let models: MeshModels;
  beforeAll(async () => {
    models = await MeshModels.load();
  });
  afterAll(() => models?.close());

  /** Tracks frames [0, to] of a clip; returns per-frame openness (left, right) and gaze x. */
  async function series(name: string, to: number): Promise<{ l: number[]; r: number[]; gx: number[] }> {
    const t = await MeshTracker.create({ models, fallbackDetector: null });
    const s = { l: [] as number[], r: [] as number[], gx: [] as number[] };
    const frames = await clipFrames(name, 0, to);
    frames.forEach((f, i) => {
      const tr = t.track({ width: f.width, height: f.height, data: new Uint8Array(0) }, (i * 1000) / 30, f);
      expect(tr, `frame ${i} of ${name} has a face`).not.toBeNull();
      s.l.push(tr!.eyes.left);
      s.r.push(tr!.eyes.right);
      s.gx.push(tr!.gaze.x);
    });
    return s;
  }
  const mean = (a: number[], from: number, to: number): number =>
    a.slice(from, to + 1).reduce((x, y) => x + y, 0) / (to - from + 1);

  it('finds the face of a portrait where the dlib tracker does, with lids and irises inside the eyes', async () => {
    const rgb = await loadImageRgb(portraitFile('real_woman_dark_hair.png'));
    const gray = rgbToGray(rgb);
    const mesh = await MeshTracker.create({ models, fallbackDetector: null });
    const faces = mesh.analyzeImage(gray, { format: 'rgb', ...rgb });
    expect(faces).toHaveLength(1);
    const dlib = (await FaceTracker.create()).analyzeImage(gray)[0]!;
    const m = faces[0]!.landmarks;
    const d = dlib.landmarks;
    const iod = Math.hypot(d[2 * 45]! - d[2 * 36]!, d[2 * 45 + 1]! - d[2 * 36 + 1]!);
    // Eyes, brows, nose and mouth (the jaw lines differ by design: dlib's is the visible contour).
    let err = 0;
    for (let i = 17; i < 68; i++) err += Math.hypot(m[2 * i]! - d[2 * i]!, m[2 * i + 1]! - d[2 * i + 1]!);
    expect(err / 51 / iod).toBeLessThan(0.08);
    // Each iris centre lies between its eye's corners.
    const fm = faces[0]!.mesh;
    for (const [e, iris] of [
      ['left', 468],
      ['right', 473],
    ] as const) {
      const a = EYE_CONTOUR[e].lower[0];
      const b = EYE_CONTOUR[e].lower[8];
      const x = fm[2 * iris]!;
      expect(x).toBeGreaterThan(Math.min(fm[2 * a]!, fm[2 * b]!));
      expect(x).toBeLessThan(Math.max(fm[2 * a]!, fm[2 * b]!));
    }
  });

  it('sees a wink as one eye, and both eyes closing as a blink', async () => {
    // woman_wink_frown_surprise.mp4: neutral at the start, the image-right eye winks around frames 9-18 and the
    // image-left eye around 36-45; man_glasses_cheek_puff_eyes_closed.mp4 closes both eyes around 450-500.
    const w = await series('woman_wink_frown_surprise.mp4', 45);
    const l0 = mean(w.l, 0, 3);
    const r0 = mean(w.r, 0, 3);
    expect(mean(w.r, 9, 18)).toBeLessThan(0.65 * r0);
    expect(mean(w.l, 9, 18)).toBeGreaterThan(0.8 * l0);
    expect(mean(w.l, 38, 45)).toBeLessThan(0.6 * l0);
    expect(mean(w.r, 38, 45)).toBeGreaterThan(0.8 * r0);
  });

  it('finds the blink frames of a clip: both eyes closed while the performer blinks, open in between', async () => {
    // man_glasses_cheek_puff_eyes_closed.mp4 blinks twice in its first 60 frames: around frames 11-16 and 38-43.
    const b = await series('man_glasses_cheek_puff_eyes_closed.mp4', 60);
    const l0 = mean(b.l, 0, 8);
    const r0 = mean(b.r, 0, 8);
    const closed = b.l.map((l, i) => l < 0.5 * l0 && b.r[i]! < 0.5 * r0);
    const runs: [number, number][] = [];
    closed.forEach((c, i) => {
      if (!c) return;
      const last = runs[runs.length - 1];
      if (last && last[1] === i - 1) last[1] = i;
      else runs.push([i, i]);
    });
    expect(runs).toHaveLength(2);
    expect(runs[0]![0]).toBeGreaterThanOrEqual(10);
    expect(runs[0]![1]).toBeLessThanOrEqual(17);
    expect(runs[1]![0]).toBeGreaterThanOrEqual(36);
    expect(runs[1]![1]).toBeLessThanOrEqual(45);
    expect(mean(b.l, 24, 33)).toBeGreaterThan(0.85 * l0);
  });

  it('gives the gaze its sign: looking to image left, then to image right', async () => {
    // woman_wink_frown_surprise.mp4: a glance to image left around frames 192-205, to image right around 324-333.
    const g = await series('woman_wink_frown_surprise.mp4', 333);
    const n = mean(g.gx, 168, 186);
    expect(mean(g.gx, 192, 205)).toBeLessThan(n - 0.1);
    expect(mean(g.gx, 324, 333)).toBeGreaterThan(n + 0.15);
  });

  it('analyses at most maxFaces faces of a crowd, and refuses a bad maxFaces', async () => {
    const one = await loadImageRgb(portraitFile('real_japanese_woman.png'));
    const tile = resizeRgb(one, 200, 200);
    // 4 x 4 faces in one picture.
    const crowd = { width: 800, height: 800, data: new Uint8Array(800 * 800 * 3) };
    for (let k = 0; k < 16; k++)
      for (let y = 0; y < 200; y++)
        crowd.data.set(
          tile.data.subarray(y * 600, (y + 1) * 600),
          3 * ((Math.floor(k / 4) * 200 + y) * 800 + (k % 4) * 200),
        );
    const t = await MeshTracker.create({ models, fallbackDetector: null });
    const gray = rgbToGray(crowd);
    const all = t.analyzeImage(gray, { format: 'rgb', ...crowd });
    expect(all.length).toBeGreaterThan(3);
    expect(all.length).toBeLessThanOrEqual(8);
    expect(t.analyzeImage(gray, { format: 'rgb', ...crowd }, 3).length).toBe(3);
    expect(() => t.analyzeImage(gray, { format: 'rgb', ...crowd }, 0)).toThrow(TypeError);
  });

  it('refuses a damaged or missing model file with FACE_MODEL_INVALID, never half loaded', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mesh-models-'));
    try {
      cpSync(defaultMeshModelDir(), dir, { recursive: true });
      const file = path.join(dir, 'iris.onnx');
      const data = readFileSync(file);
      data[data.length >> 1] = data[data.length >> 1]! ^ 0xff;
      writeFileSync(file, data);
      const err = await MeshModels.load(dir).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AppError);
      expect((err as AppError).code).toBe('FACE_MODEL_INVALID');
      expect((err as AppError).message).toMatch(/iris\.onnx.*sha256/);
      rmSync(path.join(dir, 'facemesh.onnx'));
      const missing = await MeshModels.load(dir).catch((e: unknown) => e);
      expect((missing as AppError).code).toBe('FACE_MODEL_INVALID');
      expect((missing as AppError).message).toMatch(/facemesh\.onnx.*setup\.sh/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
