/**
 * The default engine end to end on real media: real tracker, real ONNX sessions, real portraits and driving clips
 * from the test media ($AVATAR_TEST_DATA/media, read in place, never copied).
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DefaultEngine, createDefaultVision, type FaceVision } from '../../server/avatar/engines/default/index.js';
import { AppError, InvalidStateError } from '../../server/errors.js';
import { projectRoot } from '../../server/config.js';
import { createRgb, i420ToRgb, loadImageRgb, rgbToI420 } from '../../server/util/image.js';
import { readVideoFrames } from '../../server/util/video.js';
import type { RgbImage } from '../../server/types/image.js';
import { defaultAvatarSettings } from '../../server/types/protocol.js';
import { fitSourceAlignment } from '../../server/avatar/engines/default/refinerCrop.js';
import { drivingClip as clip, portraitFile as portrait } from '../../scripts/testData.js';

async function frames(file: string, count: number): Promise<RgbImage[]> {
  const out: RgbImage[] = [];
  for await (const f of readVideoFrames(file, { format: 'rgb24', maxFrames: count }))
    out.push({ width: f.width, height: f.height, data: f.data });
  return out;
}

/** Mean of the luma-like value (R+G+B)/3 over a box. */
function meanIn(img: RgbImage, x0: number, y0: number, x1: number, y1: number): number {
  let s = 0,
    n = 0;
  for (let y = Math.max(0, y0); y < Math.min(img.height, y1); y++) {
    for (let x = Math.max(0, x0); x < Math.min(img.width, x1); x++) {
      const o = (y * img.width + x) * 3;
      s += (img.data[o]! + img.data[o + 1]! + img.data[o + 2]!) / 3;
      n++;
    }
  }
  return s / n;
}

function meanAbsDiff(a: RgbImage, b: RgbImage, x0 = 0, y0 = 0, x1 = a.width, y1 = a.height): number {
  let s = 0,
    n = 0;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      for (let c = 0; c < 3; c++) {
        const o = (y * a.width + x) * 3 + c;
        s += Math.abs(a.data[o]! - b.data[o]!);
        n++;
      }
    }
  }
  return s / n;
}

function maxAbsDiff(a: RgbImage, b: RgbImage): number {
  let m = 0;
  for (let i = 0; i < a.data.length; i++) m = Math.max(m, Math.abs(a.data[i]! - b.data[i]!));
  return m;
}

describe('DefaultEngine', () => {
  let vision: FaceVision;
  let engine: DefaultEngine;
  beforeAll(async () => {
    vision = await createDefaultVision();
    engine = await DefaultEngine.create({ modelPack: path.join(projectRoot, 'models', 'default'), vision });
  });
  afterAll(() => engine.close());

  it.each([
    'real_woman_dark_hair.png',
    'painting_black_woman_afro.png',
    'cartoon_3d_boy.jpg',
    'painting_mona_lisa.jpg',
  ])('prepares %s: a face, output long side 512, even sizes', async (name) => {
    const img = await loadImageRgb(portrait(name));
    const p = await engine.prepare(img);
    expect(p.face).toBe(true);
    expect(Math.max(p.width, p.height)).toBe(512);
    expect(p.width % 2).toBe(0);
    expect(p.height % 2).toBe(0);
    const paste = engine.prepared!.paste;
    expect(paste.w * paste.h).toBeGreaterThan(64 * 64);
    expect(paste.x0 + paste.w).toBeLessThanOrEqual(p.width);
    expect(paste.y0 + paste.h).toBeLessThanOrEqual(p.height);
  });

  it('refuses a portrait without a face with NO_FACE', async () => {
    const gray: RgbImage = { width: 400, height: 300, data: new Uint8Array(400 * 300 * 3).fill(128) };
    await expect(engine.prepare(gray)).rejects.toSatisfy((e: unknown) => e instanceof AppError && e.code === 'NO_FACE');
  });

  it('opens the mouth when the performer does (darker inside the lips), holds still without jitter, eases back without a face, follows settings and recalibrate()', async () => {
    const p = await engine.prepare(await loadImageRgb(portrait('real_woman_dark_hair.png')));
    const face = engine.prepared!;
    // The portrait's mouth centre in output pixels.
    const g = face.paste.grid;
    const toX = (gx: number): number => face.paste.x0 + ((gx - g[0]!) / (g[2]! - g[0]!)) * (face.paste.w - 1);
    const toY = (gy: number): number => face.paste.y0 + ((gy - g[1]!) / (g[3]! - g[1]!)) * (face.paste.h - 1);
    const lm = face.landmarks;
    const mx = toX((lm[2 * 60]! + lm[2 * 64]!) / 2);
    const my = toY((lm[2 * 62 + 1]! + lm[2 * 66 + 1]!) / 2);
    const mw = toX(lm[2 * 64]!) - toX(lm[2 * 60]!);
    const box = [
      Math.round(mx - mw / 4),
      Math.round(my - mw / 10),
      Math.round(mx + mw / 4),
      Math.round(my + mw / 4),
    ] as const;

    // man_mouth_wide_open: neutral at the start, the mouth wide open around frame 135.
    const drive = await frames(clip('man_mouth_wide_open.mp4'), 140);
    const out = createRgb(p.width, p.height);
    // Before any face: the portrait at rest (zero latent).
    const blank: RgbImage = {
      width: drive[0]!.width,
      height: drive[0]!.height,
      data: new Uint8Array(drive[0]!.data.length).fill(90),
    };
    expect(engine.renderRgb(blank, out, -1000).face).toBe(false);
    const rest: RgbImage = { ...out, data: Uint8Array.from(out.data) };
    // At rest the warp is the identity and the crop is pixel-aligned with the output: the portrait, unblurred (the
    // head layer over its plate gives the portrait back; only the soft edge of its mask mixes in the plate).
    expect(face.head.segmented).toBe(true);
    expect(meanAbsDiff(rest, i420ToRgb(face.still))).toBeLessThan(0.3);
    let neutral: RgbImage | null = null;
    let faces = 0;
    for (let i = 0; i < drive.length; i++) {
      const s = engine.renderRgb(drive[i]!, out, i * (1000 / 30));
      if (s.face) faces++;
      if (i === 40) neutral = { ...out, data: Uint8Array.from(out.data) };
    }
    expect(faces).toBeGreaterThan(120);
    const open: RgbImage = { ...out, data: Uint8Array.from(out.data) };
    expect(meanAbsDiff(neutral!, open, box[0], box[1], box[2], box[3])).toBeGreaterThan(10);
    expect(meanIn(open, ...box)).toBeLessThan(meanIn(neutral!, ...box) - 15);
    expect(meanIn(open, ...box)).toBeLessThan(meanIn(rest, ...box) - 15);

    // Holding still: the same driving frame over and over settles to identical output frames.
    const still = drive[40]!;
    const outs: RgbImage[] = [];
    for (let i = 0; i < 60; i++) {
      engine.renderRgb(still, out, (140 + i) * (1000 / 30));
      if (i >= 50) outs.push({ ...out, data: Uint8Array.from(out.data) });
    }
    for (let i = 1; i < outs.length; i++) expect(maxAbsDiff(outs[i - 1]!, outs[i]!)).toBeLessThanOrEqual(1);

    // No face in the driving frame: never black, eases back to the portrait at rest.
    let stats = engine.renderRgb(drive[135]!, out, 200 * (1000 / 30));
    for (let i = 0; i < 75; i++) {
      stats = engine.renderRgb(blank, out, (201 + i) * (1000 / 30));
      expect(meanIn(out, 0, 0, out.width, out.height)).toBeGreaterThan(40);
    }
    expect(stats.face).toBe(false);
    expect(meanAbsDiff(out, rest, box[0], box[1], box[2], box[3])).toBeLessThan(2);

    // Settings: no expression and no head motion leave the portrait at rest whatever the performer does.
    engine.updateSettings({ ...defaultAvatarSettings, expressionStrength: 0, headMotion: false });
    for (let i = 0; i < 10; i++) engine.renderRgb(drive[135 - (i % 3)]!, out, (300 + i) * (1000 / 30));
    expect(meanAbsDiff(out, rest)).toBeLessThan(0.3);
    engine.updateSettings(defaultAvatarSettings);
    engine.renderRgb(drive[135]!, out, 311 * (1000 / 30));
    expect(meanIn(out, ...box)).toBeLessThan(meanIn(rest, ...box) - 15);

    // Recalibrate while the mouth is open: that becomes the neutral, so the portrait's mouth closes again.
    engine.recalibrate();
    for (let i = 0; i < 60; i++) engine.renderRgb(drive[135]!, out, (312 + i) * (1000 / 30));
    expect(meanAbsDiff(out, rest, box[0], box[1], box[2], box[3])).toBeLessThan(3);
  }, 180_000);

  it('the whole-graph path (what a GPU provider runs) renders the same frames as the CPU path', async () => {
    const pack = path.join(projectRoot, 'models', 'default');
    // The whole graph runs portraits without a head layer (a head layer's portrait takes the fields + fused path
    // on any provider): both engines here analyse portraits without the person segmentation.
    const flat: FaceVision = {
      kind: vision.kind,
      readsGray: vision.readsGray,
      analyzeImage: (gray, color) => vision.analyzeImage(gray, color),
      createTracker: () => vision.createTracker(),
    };
    const full = await DefaultEngine.create({ modelPack: pack, vision: flat, fullGraph: true });
    const cpu = await DefaultEngine.create({ modelPack: pack, vision: flat });
    try {
      const img = await loadImageRgb(portrait('painting_black_woman_afro.png'));
      const p = await full.prepare(img);
      await cpu.prepare(img);
      const drive = await frames(clip('young_woman_expressive_wink.mp4'), 40);
      const a = { width: p.width, height: p.height, data: new Uint8Array((p.width * p.height * 3) / 2) };
      const b = { width: p.width, height: p.height, data: new Uint8Array((p.width * p.height * 3) / 2) };
      let maxMean = 0;
      for (let i = 0; i < drive.length; i++) {
        const f = rgbToI420(drive[i]!);
        full.render(f, a, i * 33);
        cpu.render(f, b, i * 33);
        let s = 0;
        for (let k = 0; k < a.data.length; k++) s += Math.abs(a.data[k]! - b.data[k]!);
        maxMean = Math.max(maxMean, s / a.data.length);
      }
      expect(maxMean).toBeLessThan(0.5);
    } finally {
      full.close();
      cpu.close();
    }
  }, 120_000);

  it("the warp's target head carries the refiner's aligned source: a driver that rolls its head rolls it alike", async () => {
    const img = await loadImageRgb(portrait('real_woman_dark_hair.png'));
    const p = await engine.prepare(img);
    expect(engine.lastControl).toBeNull();
    // The performer's neutral is kept across portraits (earlier cases calibrated it on other faces): start over.
    engine.recalibrate();
    // The portrait as its own driver: upright (the neutral), then rolled by 10 degrees about the image centre.
    const rotate = (src: RgbImage, deg: number): RgbImage => {
      const out = createRgb(src.width, src.height);
      const c = Math.cos((deg * Math.PI) / 180);
      const sn = Math.sin((deg * Math.PI) / 180);
      const cx = src.width / 2;
      const cy = src.height / 2;
      for (let y = 0; y < src.height; y++) {
        for (let x = 0; x < src.width; x++) {
          // Output (x, y) reads the source at R^-1 (p - c) + c.
          const sx = Math.round(c * (x - cx) + sn * (y - cy) + cx);
          const sy = Math.round(-sn * (x - cx) + c * (y - cy) + cy);
          if (sx < 0 || sy < 0 || sx >= src.width || sy >= src.height) continue;
          for (let k = 0; k < 3; k++) out.data[(y * src.width + x) * 3 + k] = src.data[(sy * src.width + sx) * 3 + k]!;
        }
      }
      return out;
    };
    const out = createRgb(p.width, p.height);
    const align = new Float64Array(4);
    const angle = (): number => (Math.atan2(align[1]!, align[0]!) * 180) / Math.PI;
    let t = 0;
    for (let i = 0; i < 45; i++) engine.renderRgb(img, out, (t += 33));
    fitSourceAlignment(engine.prepared!, engine.lastControl!, 128, align);
    expect(Math.abs(angle())).toBeLessThan(1.5);
    expect(Math.hypot(align[0]!, align[1]!)).toBeCloseTo(1, 1);
    const rolled = rotate(img, 10);
    for (let i = 0; i < 30; i++) engine.renderRgb(rolled, out, (t += 33));
    fitSourceAlignment(engine.prepared!, engine.lastControl!, 128, align);
    // The same direction as the driver's roll (y down: a positive angle turns clockwise on screen), about as far.
    expect(angle()).toBeGreaterThan(6);
    expect(angle()).toBeLessThan(14);
    expect(Math.hypot(align[0]!, align[1]!)).toBeCloseTo(1, 1);
  });

  it('renders I420 in, I420 out with stage timings, and refuses use after close', async () => {
    const e = await DefaultEngine.create({ modelPack: path.join(projectRoot, 'models', 'default'), vision });
    const p = await e.prepare(await loadImageRgb(portrait('cartoon_3d_boy.jpg')));
    const [f] = await frames(clip('woman_speech_head_motion.mp4'), 1);
    const out = { width: p.width, height: p.height, data: new Uint8Array((p.width * p.height * 3) / 2) };
    const driving = rgbToI420(f!);
    const t0 = performance.now();
    const stats = e.render(driving, out, 0);
    const wallMs = performance.now() - t0;
    expect(stats.face).toBe(true);
    // The stages are timed in ms inside the render: each one a share of its wall time, together no more than it, and
    // the networks (tracker, generator) take measurable time on a real face.
    const stages = (['trackMs', 'latentMs', 'generateMs', 'pasteMs'] as const).map((k) => stats[k]);
    for (const ms of stages) expect(ms).toBeGreaterThanOrEqual(0);
    expect(stages.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(wallMs + 0.1);
    expect(stats.trackMs).toBeGreaterThan(0);
    expect(stats.generateMs).toBeGreaterThan(0);
    expect(out.data.some((v) => v !== 0)).toBe(true);
    expect(() => e.render(rgbToI420(f!), { width: 2, height: 2, data: new Uint8Array(6) }, 1)).toThrow(TypeError);
    e.close();
    e.close();
    expect(e.closed).toBe(true);
    expect(() => e.render(rgbToI420(f!), out, 2)).toThrow(InvalidStateError);
  });
});
