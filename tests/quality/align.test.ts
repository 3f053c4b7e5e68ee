import { describe, expect, it } from 'vitest';
import { cropToImage, ffhqCrop, imageToCrop, warpCrop } from '../../server/vision/faceCrop.js';

/** An upright face: eye centres at (x0±d/2, y0), mouth corners at (x0±m, y0+e). */
function uprightFace(x0: number, y0: number, d: number, e: number): Float64Array {
  const lm = new Float64Array(136);
  for (let i = 0; i < 68; i++) {
    lm[2 * i] = x0;
    lm[2 * i + 1] = y0 + e / 2;
  }
  for (let k = 0; k < 6; k++) {
    const dx = [-8, -4, 4, 8, 4, -4][k]!;
    const dy = [0, -2, -2, 0, 2, 2][k]!;
    lm[2 * (36 + k)] = x0 - d / 2 + dx;
    lm[2 * (36 + k) + 1] = y0 + dy;
    lm[2 * (42 + k)] = x0 + d / 2 + dx;
    lm[2 * (42 + k) + 1] = y0 + dy;
  }
  lm[96] = x0 - 20;
  lm[97] = y0 + e;
  lm[108] = x0 + 20;
  lm[109] = y0 + e;
  return lm;
}

function rotate(lm: Float64Array, cx: number, cy: number, deg: number): Float64Array {
  const a = (deg * Math.PI) / 180;
  const out = new Float64Array(lm.length);
  for (let i = 0; i < lm.length; i += 2) {
    const x = lm[i]! - cx;
    const y = lm[i + 1]! - cy;
    out[i] = cx + x * Math.cos(a) - y * Math.sin(a);
    out[i + 1] = cy + x * Math.sin(a) + y * Math.cos(a);
  }
  return out;
}

describe('FFHQ face crop', () => {
  it('follows the FFHQ recipe for an upright face: centre below the eyes, side 4x the eye distance', () => {
    // eye distance 60, eye-to-mouth 70: half side = max(60*2, 70*1.8) = 126; centre = eyes + 0.1 * 70 down.
    const crop = ffhqCrop(uprightFace(200, 150, 60, 70), 256);
    const [cx, cy] = cropToImage(crop, 127.5, 127.5);
    expect(cx).toBeCloseTo(200, 9);
    expect(cy).toBeCloseTo(157, 9);
    expect(crop.ax).toBeCloseTo((2 * 126) / 256, 9);
    expect(crop.ay).toBeCloseTo(0, 9);
    expect(crop.by).toBeCloseTo((2 * 126) / 256, 9);
    const [x0, y0] = cropToImage(crop, -0.5, -0.5);
    expect(x0).toBeCloseTo(200 - 126, 9);
    expect(y0).toBeCloseTo(157 - 126, 9);
  });

  it('puts the eyes at the same crop position whatever the roll and scale of the face', () => {
    const a = uprightFace(200, 150, 60, 70);
    const b = rotate(
      a.map((v) => v * 1.5),
      300,
      225,
      25,
    );
    const ca = imageToCrop(ffhqCrop(a), a);
    const cb = imageToCrop(ffhqCrop(b), b);
    for (let i = 0; i < ca.length; i++) expect(cb[i]).toBeCloseTo(ca[i]!, 6);
  });

  it('imageToCrop inverts cropToImage', () => {
    const crop = ffhqCrop(rotate(uprightFace(100, 90, 40, 50), 100, 100, -12), 128);
    const [x, y] = cropToImage(crop, 17, 93);
    const back = imageToCrop(crop, [x, y]);
    expect(back[0]).toBeCloseTo(17, 9);
    expect(back[1]).toBeCloseTo(93, 9);
  });

  it('warpCrop resamples the image: an identity-like crop reproduces the pixels; outside is black', () => {
    const w = 64;
    const h = 64;
    const data = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.set([x * 4, y * 4, 100], (y * w + x) * 3);
    const img = { width: w, height: h, data };
    // Crop pixel (u,v) centre = image pixel (u+10, v+5): ox = 10 - 0.5, oy = 5 - 0.5, unit steps.
    const out = warpCrop(img, { size: 32, ox: 9.5, oy: 4.5, ax: 1, ay: 0, bx: 0, by: 1 });
    for (const [u, v] of [
      [0, 0],
      [31, 31],
      [7, 20],
    ] as const) {
      const o = (v * 32 + u) * 3;
      expect([out.data[o], out.data[o + 1], out.data[o + 2]]).toEqual([(u + 10) * 4, (v + 5) * 4, 100]);
    }
    const shifted = warpCrop(img, { size: 16, ox: 59.5, oy: 0, ax: 1, ay: 0, bx: 0, by: 1 });
    expect(shifted.data[(8 * 16 + 15) * 3 + 2]).toBe(0);
  });
});
