/**
 * fpd's network (server/quality/facePerceptual.ts): FaceRes as ONNX with its pinned taps, on real aligned face crops
 * cut as `avatar eval` cuts them, and its refusals of a pin without taps or a stale file.
 */
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError } from '../../server/errors.js';
import { FacePerceptual, pinnedTaps } from '../../server/quality/facePerceptual.js';
import type { RgbImage } from '../../server/types/image.js';
import { loadImageRgb, rgbToGray } from '../../server/util/image.js';
import { ffhqCrop, warpCrop } from '../../server/vision/faceCrop.js';
import { defaultMeshModelDir } from '../../server/vision/mesh/models.js';
import { FaceTracker } from '../../server/vision/tracker.js';
import { portraitFile } from '../helpers/media.js';

/** The aligned 256x256 face crops `avatar eval` scores (FFHQ crop from the dlib landmarks). */
async function evalCrop(tracker: FaceTracker, file: string): Promise<RgbImage> {
  const img = await loadImageRgb(file);
  const face = tracker.track(rgbToGray(img), 0);
  if (!face) throw new Error(`no face found in ${file}`);
  return warpCrop(img, ffhqCrop(face.rawLandmarks, 256));
}

/** A copy of `img` with the rectangle filled with grey (a changed mouth). */
function paint(img: RgbImage, x0: number, y0: number, x1: number, y1: number): RgbImage {
  const data = img.data.slice();
  for (let y = y0; y < y1; y++) data.fill(128, (y * img.width + x0) * 3, (y * img.width + x1) * 3);
  return { width: img.width, height: img.height, data };
}

describe('FacePerceptual (FaceRes taps, fpd)', () => {
  let net: FacePerceptual;
  let a: RgbImage;
  let b: RgbImage;
  let dir: string;

  beforeAll(async () => {
    net = await FacePerceptual.load();
    const tracker = await FaceTracker.create();
    a = await evalCrop(tracker, portraitFile('real_man_obama.jpg'));
    b = await evalCrop(tracker, portraitFile('real_older_man_glasses.jpg'));
    dir = await mkdtemp(path.join(os.tmpdir(), 'fpd-'));
  }, 60_000);

  afterAll(async () => {
    net.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the pinned taps, shallow to deep', () => {
    expect(net.taps).toEqual(pinnedTaps(defaultMeshModelDir(), 'faceres'));
    expect(net.taps).toHaveLength(4);
    expect(net.size).toBe(224);
    const maps = net.features(a);
    expect(maps.map((m) => [m.data.length / m.channels, m.channels])).toEqual([
      [112 * 112, 64],
      [56 * 56, 128],
      [28 * 28, 256],
      [14 * 14, 512],
    ]);
  });

  it('is 0 for the same crop, small for a re-encoded one, larger for a changed mouth, largest for another person', () => {
    expect(net.distance(a, a)).toBe(0);
    const noisy = { ...a, data: a.data.map((v, i) => Math.max(0, Math.min(255, v + ((i * 7919) % 5) - 2))) };
    const dNoise = net.distance(a, noisy);
    // The FFHQ crop's mouth lies around the middle of its lower third.
    const dMouth = net.distance(a, paint(a, 80, 160, 176, 210));
    const dOther = net.distance(a, b);
    expect(dNoise).toBeGreaterThan(0);
    expect(dMouth).toBeGreaterThan(10 * dNoise);
    expect(dOther).toBeGreaterThan(dMouth);
    expect(dOther).toBeLessThan(2);
    expect(net.distance(b, a)).toBeCloseTo(dOther, 6);
    expect(net.stats.runs).toBeGreaterThan(0);
  });

  it('refuses a pin without taps and a file that is not the pinned one', async () => {
    const src = defaultMeshModelDir();
    const sources = JSON.parse(await readFile(path.join(src, 'sources.json'), 'utf8')) as {
      models: Record<string, { taps?: string[]; onnx_sha256: string }>;
    };
    await copyFile(path.join(src, 'faceres.onnx'), path.join(dir, 'faceres.onnx'));
    const { taps, ...untapped } = sources.models.faceres!;
    expect(taps).toHaveLength(4);
    await writeFile(path.join(dir, 'sources.json'), JSON.stringify({ models: { faceres: untapped } }));
    const noTaps = FacePerceptual.load(dir);
    await expect(noTaps).rejects.toThrow(AppError);
    await expect(noTaps).rejects.toThrow(/names no taps/);
    await writeFile(
      path.join(dir, 'sources.json'),
      JSON.stringify({ models: { faceres: { ...sources.models.faceres, onnx_sha256: '0'.repeat(64) } } }),
    );
    await expect(FacePerceptual.load(dir)).rejects.toThrow(/does not match its pinned sha256/);
  });

  it('refuses use after close', async () => {
    const other = await FacePerceptual.load();
    other.close();
    other.close();
    expect(other.closed).toBe(true);
    expect(() => other.features(a)).toThrow(/closed/);
  });
});
