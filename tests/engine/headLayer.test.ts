/**
 * The head as one piece (issue: head motion): the head layer and its plate (headLayer.ts, pure), and the real engine
 * with real ONNX sessions (selfie segmentation, FaceMesh): a driver who rolls the head rolls the whole head region,
 * hair included, and where the head moved away the plate (background) shows, not stretched face or hair.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildHeadLayer, NECK_BOTTOM, pushPullFill } from '../../server/avatar/engines/default/headLayer.js';
import { DefaultEngine, createDefaultVision, type FaceVision } from '../../server/avatar/engines/default/index.js';
import { faceFrame } from '../../server/avatar/engines/default/geometry.js';
import { projectRoot } from '../../server/config.js';
import { createRgb, loadImageRgb, rgbToGray } from '../../server/util/image.js';
import { readVideoFrames } from '../../server/util/video.js';
import type { RgbImage } from '../../server/types/image.js';
import { drivingClip as clip, portraitFile as portrait } from '../../scripts/testData.js';

describe('head layer (pure)', () => {
  it('push-pull fills a hole from the pixels around it', () => {
    const W = 64;
    const H = 48;
    const img = createRgb(W, H);
    const fill = new Uint8Array(W * H);
    const weight = new Float32Array(W * H).fill(1);
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        const i = y * W + x;
        // Left half blue-ish, right half green-ish; a red blob in the middle to be filled.
        const red = Math.hypot(x - 32, y - 24) < 10;
        fill[i] = red ? 1 : 0;
        img.data.set(red ? [250, 0, 0] : x < 32 ? [20, 40, 200] : [30, 200, 40], 3 * i);
      }
    const out = pushPullFill(img, fill, weight);
    let red = 0;
    for (let i = 0; i < W * H; i++) {
      if (!fill[i]) {
        // Known pixels are kept exactly.
        expect([...out.data.subarray(3 * i, 3 * i + 3)]).toEqual([...img.data.subarray(3 * i, 3 * i + 3)]);
        continue;
      }
      red = Math.max(red, out.data[3 * i]!);
    }
    // Nothing of the red blob survives: the hole holds blends of blue and green.
    expect(red).toBeLessThan(60);
    // Left of the hole's centre leans blue, right leans green.
    const at = (x: number): number[] => [...out.data.subarray(3 * (24 * W + x), 3 * (24 * W + x) + 3)];
    expect(at(24)[2]!).toBeGreaterThan(at(24)[1]!);
    expect(at(40)[1]!).toBeGreaterThan(at(40)[2]!);
  });

  it('moves the head whole, fades the motion down the neck and out to the shoulders, fills only where the person may move', () => {
    // A synthetic upright portrait: background gray, a "person" disc (head) on a wide "body" below.
    const W = 256;
    const H = 256;
    const img = createRgb(W, H);
    const S = 64;
    const person = new Float32Array(S * S);
    for (let y = 0; y < S; y++)
      for (let x = 0; x < S; x++) {
        const head = Math.hypot(x - 32, y - 26) < 14;
        const neck = Math.abs(x - 32) < 5 && y >= 38 && y < 48;
        const body = y >= 46;
        person[y * S + x] = head || neck || body ? 1 : 0;
      }
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        const p = person[Math.floor(y / 4) * S + Math.floor(x / 4)]!;
        img.data.set(p ? [200, 150, 120] : [90, 90, 90], 3 * (y * W + x));
      }
    // Face frame: eyes on y = 96, chin at y = 150, jaw 80 px wide.
    const lm = new Float32Array(136);
    for (let i = 0; i < 6; i++) {
      lm[2 * (36 + i)] = 108;
      lm[2 * (36 + i) + 1] = 96;
      lm[2 * (42 + i)] = 148;
      lm[2 * (42 + i) + 1] = 96;
    }
    lm[0] = 88;
    lm[1] = 100;
    lm[32] = 168;
    lm[33] = 100;
    lm[16] = 128;
    lm[17] = 150;
    const f = faceFrame(lm, { ox: 0, oy: 0, ux: 1, uy: 0, width: 1, height: 1, iod: 1 });
    const layer = buildHeadLayer(img, { size: S, data: person }, f);
    expect(layer.segmented).toBe(true);
    const alpha = (x: number, y: number): number => layer.image[4 * (y * W + x) + 3]! / 255;
    const motion = (x: number, y: number): number => layer.motion[y * W + x]!;
    expect(alpha(128, 100)).toBeGreaterThan(0.99); // face
    expect(alpha(128, 60)).toBeGreaterThan(0.99); // top of the head
    expect(alpha(20, 20)).toBe(0); // background
    expect(alpha(30, 240)).toBeGreaterThan(0.99); // shoulder: the person, in the layer
    // The head and everything level with it moves whole; the neck part of the way; the shoulders and below not.
    expect(motion(128, 60)).toBe(1);
    expect(motion(20, 100)).toBe(1);
    const neck = motion(128, Math.round(96 + 1.4 * f.height));
    expect(neck).toBeGreaterThan(0.1);
    expect(neck).toBeLessThan(0.9);
    expect(motion(128, Math.round(96 + (NECK_BOTTOM + 0.05) * f.height))).toBe(0);
    expect(motion(20, 200)).toBe(0); // the shoulder's side, below the chin
    // The plate: the portrait where nothing moves (background, the body below the fade) and background gray where
    // the head was.
    const plate = (x: number, y: number): number[] => [
      ...layer.plate.data.subarray(3 * (y * W + x), 3 * (y * W + x) + 3),
    ];
    expect(plate(20, 20)).toEqual([90, 90, 90]);
    expect(plate(30, 250)).toEqual([200, 150, 120]);
    const head = plate(128, 80);
    expect(Math.abs(head[0]! - 90)).toBeLessThan(25);
    expect(Math.abs(head[1]! - 90)).toBeLessThan(25);
    // The moving box holds the head and stops at the fade's end.
    expect(layer.box[1]).toBeLessThanOrEqual(60);
    expect(layer.box[3]).toBeLessThanOrEqual(Math.ceil(96 + NECK_BOTTOM * f.height) + 1);
  });

  it('without a person mask the layer is the whole picture and the plate the portrait', () => {
    const img = createRgb(32, 32);
    for (let i = 0; i < img.data.length; i++) img.data[i] = (i * 7) % 251;
    const layer = buildHeadLayer(img, null, { ox: 16, oy: 12, ux: 1, uy: 0, width: 12, height: 10, iod: 8 });
    expect(layer.segmented).toBe(false);
    expect(layer.plate.data).toEqual(img.data);
    for (let i = 0; i < 32 * 32; i++) expect(layer.image[4 * i + 3]).toBe(255);
    expect(layer.motion.every((m) => m === 1)).toBe(true);
  });
});

/** `img` rolled by `deg` degrees (clockwise on screen) about (cx, cy), bilinear, edges clamped. */
function rotate(img: RgbImage, deg: number, cx: number, cy: number): RgbImage {
  const out = createRgb(img.width, img.height);
  const a = (deg * Math.PI) / 180;
  const c = Math.cos(a);
  const s = Math.sin(a);
  for (let y = 0; y < img.height; y++)
    for (let x = 0; x < img.width; x++) {
      // Inverse map: where this output pixel comes from.
      const dx = x - cx;
      const dy = y - cy;
      const sx = Math.min(img.width - 1, Math.max(0, cx + c * dx + s * dy));
      const sy = Math.min(img.height - 1, Math.max(0, cy - s * dx + c * dy));
      const ix = Math.min(img.width - 2, Math.floor(sx));
      const iy = Math.min(img.height - 2, Math.floor(sy));
      const fx = sx - ix;
      const fy = sy - iy;
      for (let k = 0; k < 3; k++) {
        const p = (yy: number, xx: number): number => img.data[3 * (yy * img.width + xx) + k]!;
        out.data[3 * (y * img.width + x) + k] =
          p(iy, ix) * (1 - fx) * (1 - fy) +
          p(iy, ix + 1) * fx * (1 - fy) +
          p(iy + 1, ix) * (1 - fx) * fy +
          p(iy + 1, ix + 1) * fx * fy;
      }
    }
  return out;
}

/** Similarity (a, b, tx, ty) fitted from 68 points `p` to `q`, over the eyes, nose and the jaw's top (rigid points). */
function fitSim(p: ArrayLike<number>, q: ArrayLike<number>): [number, number, number, number] {
  const idx = [0, 1, 2, 14, 15, 16, 27, 28, 29, 30, 36, 39, 42, 45];
  let mx = 0,
    my = 0,
    nx = 0,
    ny = 0;
  for (const i of idx) {
    mx += p[2 * i]!;
    my += p[2 * i + 1]!;
    nx += q[2 * i]!;
    ny += q[2 * i + 1]!;
  }
  mx /= idx.length;
  my /= idx.length;
  nx /= idx.length;
  ny /= idx.length;
  let s1 = 0,
    s2 = 0,
    d = 0;
  for (const i of idx) {
    const x = p[2 * i]! - mx;
    const y = p[2 * i + 1]! - my;
    const X = q[2 * i]! - nx;
    const Y = q[2 * i + 1]! - ny;
    s1 += x * X + y * Y;
    s2 += x * Y - y * X;
    d += x * x + y * y;
  }
  const a = s1 / d;
  const b = s2 / d;
  return [a, b, nx - (a * mx - b * my), ny - (b * mx + a * my)];
}

describe('head layer in the engine', () => {
  let vision: FaceVision;
  let engine: DefaultEngine;
  beforeAll(async () => {
    vision = await createDefaultVision();
    engine = await DefaultEngine.create({ modelPack: path.join(projectRoot, 'models', 'default'), vision });
  });
  afterAll(() => engine.close());

  it('a driver who rolls the head rolls the whole head, hair included; the plate shows where the head moved away', async () => {
    const img = await loadImageRgb(portrait('anime_spiky_blond_hair.png'));
    await engine.prepare(img);
    const face = engine.prepared!;
    expect(face.head.segmented).toBe(true);
    const W = face.width;
    const H = face.height;
    const drive: RgbImage[] = [];
    for await (const f of readVideoFrames(clip('woman_wink_frown_surprise.mp4'), { format: 'rgb24', maxFrames: 40 }))
      drive.push({ width: f.width, height: f.height, data: f.data });
    const out = createRgb(W, H);
    // The portrait at rest (no face yet), then calibrate on the upright clip and hold a frame rolled by 14 degrees
    // about its face.
    const rest = createRgb(W, H);
    const blank: RgbImage = {
      width: drive[0]!.width,
      height: drive[0]!.height,
      data: new Uint8Array(drive[0]!.data.length).fill(90),
    };
    engine.renderRgb(blank, rest, -1000);
    for (let i = 0; i < 36; i++) engine.renderRgb(drive[i]!, out, i * 40);
    const d0 = drive[36]!;
    const driverFace = (await vision.analyzeImage(rgbToGray(d0), { format: 'rgb', ...d0 }))[0]!;
    const dcx = driverFace.landmarks[2 * 30]!;
    const dcy = driverFace.landmarks[2 * 30 + 1]!;
    for (let i = 0; i < 10; i++) engine.renderRgb(d0, out, (36 + i) * 40);
    const rolled = rotate(d0, 14, dcx, dcy);
    for (let i = 0; i < 15; i++) engine.renderRgb(rolled, out, (46 + i) * 40);

    // The output's face moved by a similarity (tracked on the output by the same analyser, as a viewer would see).
    const track = async (im: RgbImage): Promise<Float32Array> =>
      (await vision.analyzeImage(rgbToGray(im), { format: 'rgb', ...im }))[0]!.landmarks;
    const [a, b, tx, ty] = fitSim(await track(rest), await track(out));
    const rollDeg = (Math.atan2(b, a) * 180) / Math.PI;
    expect(Math.abs(rollDeg - 14)).toBeLessThan(4);

    // Hair far from the face (alpha 1 at rest, over a face width from the face's centre): where the face's motion
    // takes it, the output shows that hair (the rest frame moved by the same similarity), not the plate.
    const rgbAt = (im: RgbImage, x: number, y: number): number[] => {
      const xi = Math.min(W - 1, Math.max(0, Math.round(x)));
      const yi = Math.min(H - 1, Math.max(0, Math.round(y)));
      return [...im.data.subarray(3 * (yi * W + xi), 3 * (yi * W + xi) + 3)];
    };
    const alphaAt = (x: number, y: number): number => {
      const xi = Math.min(W - 1, Math.max(0, Math.round(x)));
      const yi = Math.min(H - 1, Math.max(0, Math.round(y)));
      return face.head.image[4 * (yi * W + xi) + 3]! / 255;
    };
    const lm = face.landmarks; // grid units
    const [kx, cx, ky, cy] = face.head.toImage;
    const fcx = kx * lm[2 * 30]! + cx;
    const fcy = ky * lm[2 * 30 + 1]! + cy;
    const fw = kx * Math.hypot(lm[32]! - lm[0]!, lm[33]! - lm[1]!);
    let moved = 0,
      stayed = 0,
      hair = 0;
    let uncovered = 0,
      plateLike = 0;
    const inv = 1 / (a * a + b * b);
    for (let y = 0; y < H; y += 2)
      for (let x = 0; x < W; x += 2) {
        if (alphaAt(x, y) >= 0.99 && Math.hypot(x - fcx, y - fcy) > fw && y < fcy) {
          // Hair at rest at (x, y): where the head's motion takes it.
          const X = a * x - b * y + tx;
          const Y = b * x + a * y + ty;
          if (X < 2 || Y < 2 || X > W - 3 || Y > H - 3) continue;
          const o = rgbAt(out, X, Y);
          const r = rgbAt(rest, x, y);
          const st = rgbAt(rest, X, Y);
          moved += Math.abs(o[0]! - r[0]!) + Math.abs(o[1]! - r[1]!) + Math.abs(o[2]! - r[2]!);
          stayed += Math.abs(o[0]! - st[0]!) + Math.abs(o[1]! - st[1]!) + Math.abs(o[2]! - st[2]!);
          hair++;
        }
        // Uncovered: head at rest, and no head pixel moves here (the inverse motion lands outside the head).
        const sx = (a * (x - tx) + b * (y - ty)) * inv;
        const sy = (-b * (x - tx) + a * (y - ty)) * inv;
        if (alphaAt(x, y) >= 0.99 && alphaAt(sx, sy) === 0 && y < fcy) {
          const o = rgbAt(out, x, y);
          const p = [...face.head.plate.subarray(3 * (y * W + x), 3 * (y * W + x) + 3)];
          const r = rgbAt(rest, x, y);
          uncovered++;
          if (Math.abs(o[0]! - p[0]!) + Math.abs(o[1]! - p[1]!) + Math.abs(o[2]! - p[2]!) < 30) plateLike++;
          // The plate there is not the head at rest.
          expect(Math.abs(p[0]! - r[0]!) + Math.abs(p[1]! - r[1]!) + Math.abs(p[2]! - r[2]!)).toBeGreaterThan(0);
        }
      }
    console.log(
      `head roll: output ${rollDeg.toFixed(1)} deg for a 14 deg driver; hair ${hair} px: ${(moved / hair).toFixed(1)} from the moved hair, ${(stayed / hair).toFixed(1)} from what was there; uncovered ${uncovered} px, ${((100 * plateLike) / uncovered).toFixed(0)}% plate`,
    );
    expect(hair).toBeGreaterThan(300);
    // Hair follows the face: the output at the moved place matches the hair at rest far better than what was there.
    expect(moved / hair).toBeLessThan(60);
    expect(moved / hair).toBeLessThan(0.6 * (stayed / hair));
    expect(uncovered).toBeGreaterThan(50);
    expect(plateLike / uncovered).toBeGreaterThan(0.9);
  }, 180_000);
});
