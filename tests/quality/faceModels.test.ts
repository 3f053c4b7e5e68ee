/**
 * The independent face models (MediaPipe FaceMesh with iris, HSE FaceRes descriptors from @vladmandic/human) in their
 * real worker pool on real portraits, the file checks that refuse a corrupted model, and the pure mesh maths on the
 * real meshes they return.
 */
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RgbImage } from '../../server/avatar/engine.js';
import { AppError } from '../../server/errors.js';
import { defaultFaceModelDir, FACE_MODEL_FILES, FaceModelPool, verifyFaceModelFiles, type FaceModelFace } from '../../server/quality/faceModels.js';
import {
  alignedMeshDistance,
  applySimilarity3d,
  cosineSimilarity,
  expressionMotion,
  eyeOpenness,
  irisPosition,
  MESH_POINTS,
  meshInterOcular,
  meshPointDistance,
  motionDistance3d,
  pearson,
  similarity3d,
} from '../../server/quality/meshMetrics.js';
import { loadImageRgb } from '../../server/util/image.js';
import { portraitFile } from '../helpers/media.js';

/** A horizontally mirrored copy (the same person, other pixels). */
function mirror(img: RgbImage): RgbImage {
  const out = new Uint8Array(img.data.length);
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const s = (y * img.width + x) * 3;
      const d = (y * img.width + (img.width - 1 - x)) * 3;
      out[d] = img.data[s]!;
      out[d + 1] = img.data[s + 1]!;
      out[d + 2] = img.data[s + 2]!;
    }
  }
  return { width: img.width, height: img.height, data: out };
}

describe('face model files', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'face-models-'));
    for (const m of FACE_MODEL_FILES) await copyFile(path.join(defaultFaceModelDir(), m.file), path.join(dir, m.file));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('the installed package holds every model file with the pinned hash', async () => {
    await expect(verifyFaceModelFiles(defaultFaceModelDir())).resolves.toBeUndefined();
  });

  it('refuses a corrupted model file with a clear error naming it, before any worker starts', async () => {
    const file = path.join(dir, 'facemesh.bin');
    const good = await readFile(file);
    const bad = Buffer.from(good);
    bad[1000] = bad[1000]! ^ 0xff;
    await writeFile(file, bad);
    try {
      const err = await FaceModelPool.create({ modelDir: dir, workers: 1 }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(AppError);
      expect((err as AppError).code).toBe('FACE_MODEL_INVALID');
      expect((err as AppError).message).toContain('facemesh.bin');
      expect((err as AppError).message).toMatch(/corrupted: sha256 [0-9a-f]{64}, expected 3826da64/);
    } finally {
      await writeFile(file, good);
    }
  });

  it('refuses a truncated and a missing model file', async () => {
    const file = path.join(dir, 'faceres.bin');
    const good = await readFile(file);
    await writeFile(file, good.subarray(0, 1000));
    await expect(verifyFaceModelFiles(dir)).rejects.toThrow(/faceres\.bin has 1000 bytes, expected 6978814/);
    await rm(file);
    await expect(verifyFaceModelFiles(dir)).rejects.toThrow(/face model file missing: .*faceres\.bin/);
    await writeFile(file, good);
    await expect(verifyFaceModelFiles(dir)).resolves.toBeUndefined();
  });
});

describe('FaceModelPool on real portraits', () => {
  let pool: FaceModelPool;
  let woman: RgbImage;
  let faces: { woman: FaceModelFace; womanMirror: FaceModelFace; man: FaceModelFace; dog: FaceModelFace | null };

  beforeAll(async () => {
    pool = await FaceModelPool.create({ workers: 2 });
    woman = await loadImageRgb(portraitFile('real_woman_dark_hair.png'));
    const man = await loadImageRgb(portraitFile('real_older_man_glasses.jpg'));
    const dog = await loadImageRgb(portraitFile('animal_shiba_dog.png'));
    const [w, wm, m, d] = await Promise.all([
      pool.analyze(woman, { descriptor: true }),
      pool.analyze(mirror(woman), { descriptor: true }),
      pool.analyze(man, { descriptor: true }),
      pool.analyze(dog, { descriptor: true }),
    ]);
    faces = { woman: w!, womanMirror: wm!, man: m!, dog: d };
  });
  afterAll(async () => {
    await pool.close();
    expect(pool.closed).toBe(true);
  });

  it('finds the face: 478 points with iris inside the face box, and a 1024-d descriptor', () => {
    const f = faces.woman;
    expect(f).not.toBeNull();
    expect(f.mesh.length).toBe(MESH_POINTS * 3);
    expect(f.descriptor!.length).toBe(1024);
    expect(f.score).toBeGreaterThan(0.5);
    const [bx, by, bw, bh] = f.box;
    for (let i = 0; i < MESH_POINTS; i++) {
      expect(f.mesh[3 * i]!).toBeGreaterThan(bx - 0.2 * bw);
      expect(f.mesh[3 * i]!).toBeLessThan(bx + 1.2 * bw);
      expect(f.mesh[3 * i + 1]!).toBeGreaterThan(by - 0.2 * bh);
      expect(f.mesh[3 * i + 1]!).toBeLessThan(by + 1.2 * bh);
    }
    // A frontal face of a 474 px portrait: eyes ~60-90 px apart, open, looking ahead.
    expect(meshInterOcular(f.mesh)).toBeGreaterThan(50);
    expect(meshInterOcular(f.mesh)).toBeLessThan(110);
    const eyes = eyeOpenness(f.mesh);
    expect(eyes.left).toBeGreaterThan(0.15);
    expect(eyes.right).toBeGreaterThan(0.15);
    const g = irisPosition(f.mesh);
    expect(Math.abs(g.x)).toBeLessThan(0.15);
  });

  it('the same image gives the same result; the same person mirrored is close, other people are far', async () => {
    const again = await pool.analyze(woman, { descriptor: true });
    expect(Array.from(again!.mesh)).toEqual(Array.from(faces.woman.mesh));
    expect(cosineSimilarity(again!.descriptor!, faces.woman.descriptor!)).toBeCloseTo(1, 6);
    const self = cosineSimilarity(faces.woman.descriptor!, faces.womanMirror.descriptor!);
    const other = cosineSimilarity(faces.woman.descriptor!, faces.man.descriptor!);
    expect(self).toBeGreaterThan(0.7);
    expect(other).toBeLessThan(0.6);
    expect(self - other).toBeGreaterThan(0.2);
  });

  it('leaves the descriptor out when not asked for it, and rejects bad images', async () => {
    const f = await pool.analyze(woman, { descriptor: false });
    expect(f!.descriptor).toBeNull();
    await expect(pool.analyze({ width: 10, height: 10, data: new Uint8Array(5) }, { descriptor: false })).rejects.toThrow(TypeError);
  });

  it('finds no face in a flat grey image', async () => {
    const grey: RgbImage = { width: 256, height: 256, data: new Uint8Array(256 * 256 * 3).fill(128) };
    expect(await pool.analyze(grey, { descriptor: true })).toBeNull();
  });

  it('mesh maths on a real mesh: a moved, turned, scaled copy aligns back to ~0; motion of a copy is 0', () => {
    const m = faces.woman.mesh;
    // Rotate by 20 deg about y (a head turn) and 10 deg about z, scale 1.3, shift.
    const a = (20 * Math.PI) / 180;
    const b = (10 * Math.PI) / 180;
    const ry = [Math.cos(a), 0, Math.sin(a), 0, 1, 0, -Math.sin(a), 0, Math.cos(a)];
    const rz = [Math.cos(b), -Math.sin(b), 0, Math.sin(b), Math.cos(b), 0, 0, 0, 1];
    const r = new Float64Array(9);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 3; k++) r[i * 3 + j]! += rz[i * 3 + k]! * ry[k * 3 + j]!;
    const moved = applySimilarity3d({ s: 1.3, r, t: [40, -25, 7] }, m, MESH_POINTS, new Float64Array(MESH_POINTS * 3));
    expect(alignedMeshDistance(moved, m)).toBeLessThan(1e-6);
    expect(meshPointDistance(moved, m, meshInterOcular(m))).toBeGreaterThan(0.2);
    const tf = similarity3d(moved, m);
    expect(tf.s).toBeCloseTo(1 / 1.3, 6);
    expect(motionDistance3d(expressionMotion(moved, moved), expressionMotion(m, m))).toBeLessThan(1e-9);
    // An expression (the lower lip and chin pulled down by 0.2 IOD) seen on the turned, scaled head: its motion,
    // rotated into the upright face's frame, is the upright face's motion; the pose does not count as expression.
    const iod = meshInterOcular(m);
    const open = Float64Array.from(m);
    for (const i of [14, 15, 16, 17, 18, 84, 85, 86, 87, 178, 179, 180, 181, 199, 200, 175, 152]) open[3 * i + 1]! += 0.2 * iod;
    const openMoved = applySimilarity3d({ s: 1.3, r, t: [40, -25, 7] }, open, MESH_POINTS, new Float64Array(MESH_POINTS * 3));
    const upright = expressionMotion(open, m);
    const turned = expressionMotion(openMoved, moved, similarity3d(moved, m).r);
    expect(motionDistance3d(turned, upright)).toBeLessThan(1e-6);
    expect(motionDistance3d(upright, expressionMotion(m, m))).toBeGreaterThan(0.005);
    // The other person's face shape is far from hers even after alignment.
    expect(alignedMeshDistance(faces.man.mesh, m)).toBeGreaterThan(20 * alignedMeshDistance(moved, m) + 0.01);
  });
});

describe('pure helpers', () => {
  it('pearson: 1 for a scaled copy, -1 reversed, null for constant or too short series', () => {
    expect(pearson([1, 2, 3, 4], [2, 4, 6, 8])).toBeCloseTo(1, 12);
    expect(pearson([1, 2, 3, 4], [8, 6, 4, 2])).toBeCloseTo(-1, 12);
    expect(pearson([1, 1, 1, 1], [1, 2, 3, 4])).toBeNull();
    expect(pearson([1, 2], [1, 2])).toBeNull();
    expect(() => pearson([1, 2, 3], [1, 2])).toThrow(TypeError);
  });

  it('cosine similarity: 1, 0, -1, and refuses zero vectors and length mismatches', () => {
    expect(cosineSimilarity([1, 2, 3], [2, 4, 6])).toBeCloseTo(1, 12);
    expect(cosineSimilarity([1, 0], [0, 1])).toBe(0);
    expect(cosineSimilarity([1, 2], [-1, -2])).toBeCloseTo(-1, 12);
    expect(() => cosineSimilarity([0, 0], [1, 1])).toThrow(TypeError);
    expect(() => cosineSimilarity([1], [1, 2])).toThrow(TypeError);
  });

  it('mesh functions refuse arrays of the wrong size', () => {
    expect(() => meshInterOcular(new Float32Array(468 * 3))).toThrow(/478 points/);
    expect(() => eyeOpenness(new Float32Array(10))).toThrow(TypeError);
  });
});
