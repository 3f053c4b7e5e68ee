import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { eyeOpenness, mouthOpenness } from '../../server/vision/features.js';
import { PupilFinder } from '../../server/vision/gaze.js';
import type { GrayImage } from '../../server/types/image.js';
import { dlibReference, frameName, referenceMissing } from './helpers.js';

const noRef = referenceMissing('the openness tests on dlib reference landmarks (features.test.ts)');
const byName = new Map(
  (noRef ? [] : dlibReference())
    .filter((r) => r.faces.length > 0)
    .map((r) => [frameName(path.basename(r.image)), r.faces[0]!.landmarks.flat()]),
);
const lm = (name: string): number[] => {
  const v = byName.get(name);
  if (!v) throw new Error(`no reference face for ${name}`);
  return v;
};

describe('eye and mouth openness on the reference landmarks', () => {
  it.skipIf(noRef)('closed eyes score well below open eyes', () => {
    const closed = ['drive-man_glasses_cheek_puff_eyes_closed-f0450', 'drive-man_dreadlocks_talking_smile-f0048'];
    const open = [
      'portrait-cartoon_3d_boy',
      'drive-woman_tongue_crossed_eyes_grimace-f0250',
      'portrait-real_child_photo_in_hand',
    ];
    for (const n of closed) {
      expect(eyeOpenness(lm(n), 36), n).toBeLessThan(0.16);
      expect(eyeOpenness(lm(n), 42), n).toBeLessThan(0.16);
    }
    for (const n of open) {
      expect(eyeOpenness(lm(n), 36), n).toBeGreaterThan(0.25);
      expect(eyeOpenness(lm(n), 42), n).toBeGreaterThan(0.25);
    }
  });

  it.skipIf(noRef)('wide-open mouths score high, closed mouths near zero', () => {
    for (const n of ['drive-man_mouth_wide_open-f0081', 'drive-man_mouth_wide_open-f0135'])
      expect(mouthOpenness(lm(n)), n).toBeGreaterThan(0.4);
    for (const n of [
      'portrait-painting_mona_lisa',
      'portrait-painting_black_woman_afro',
      'drive-man_glasses_cheek_puff_eyes_closed-f0225',
    ]) {
      expect(mouthOpenness(lm(n)), n).toBeLessThan(0.08);
    }
  });

  it('degenerate landmarks give 0, not NaN', () => {
    const zeros = new Float64Array(136);
    expect(eyeOpenness(zeros, 36)).toBe(0);
    expect(mouthOpenness(zeros)).toBe(0);
  });
});

describe('PupilFinder', () => {
  /** A synthetic eye: light sclera inside the polygon, a dark iris-sized disc (radius 10, a third of the eye width) at (px, py). */
  function eyeImage(px: number, py: number): { img: GrayImage; lm: Float64Array } {
    const w = 120;
    const h = 80;
    const img: GrayImage = { width: w, height: h, data: new Uint8Array(w * h).fill(90) };
    const lm = new Float64Array(136);
    // Eye 36-41: corners (20,40) and (80,40), lids at y 28 and 52.
    const pts = [
      [20, 40],
      [38, 28],
      [62, 28],
      [80, 40],
      [62, 52],
      [38, 52],
    ];
    pts.forEach(([x, y], i) => {
      lm[2 * (36 + i)] = x!;
      lm[2 * (36 + i) + 1] = y!;
    });
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (y > 28 && y < 52 && x > 20 && x < 80) img.data[y * w + x] = 220;
        if ((x - px) ** 2 + (y - py) ** 2 < 100) img.data[y * w + x] = 20;
      }
    }
    return { img, lm };
  }

  it('finds the pupil and normalises its offset to the eye box', () => {
    const finder = new PupilFinder();
    const out = { x: 0, y: 0, quality: 0 };
    const centre = eyeImage(50, 40);
    finder.find(centre.img, centre.lm, 36, out);
    expect(Math.abs(out.x)).toBeLessThan(0.1);
    expect(Math.abs(out.y)).toBeLessThan(0.15);
    expect(out.quality).toBeGreaterThan(0.5);
    const right = eyeImage(65, 40);
    finder.find(right.img, right.lm, 36, out);
    expect(out.x).toBeGreaterThan(0.35);
    const left = eyeImage(35, 42);
    finder.find(left.img, left.lm, 36, out);
    expect(out.x).toBeLessThan(-0.35);
    expect(out.y).toBeGreaterThan(0);
  });

  it('an eye outside the image or collapsed gives zero quality', () => {
    const finder = new PupilFinder();
    const out = { x: 1, y: 1, quality: 1 };
    const lm = new Float64Array(136).fill(-50);
    finder.find({ width: 10, height: 10, data: new Uint8Array(100) }, lm, 42, out);
    expect(out).toEqual({ x: 0, y: 0, quality: 0 });
  });
});
