/**
 * The eyes of the default engine with the FaceMesh + Iris tracker, on real portraits and real clips: a blink reaches
 * the latent in the frame the performer's lid closes (no smoothing lag), a wink closes one eye and leaves the other
 * as it is, and a closed lid is rendered by moving the lid's skin over the eye (the eye box becomes skin, not dark:
 * no iris, no painted polygon).
 */
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DefaultEngine, createDefaultVision, type FaceVision } from '../../server/avatar/engines/default/index.js';
import { ExpressionEncoder, L_CLOSE_L, L_CLOSE_R, L_VERGE_X } from '../../server/avatar/engines/default/expression.js';
import { projectRoot } from '../../server/config.js';
import { createRgb, loadImageRgb, rgbToGray } from '../../server/util/image.js';
import { readVideoFrames } from '../../server/util/video.js';
import type { RgbImage } from '../../server/types/image.js';
import { cloneTrack } from '../../server/vision/tracker.js';
import { defaultAvatarSettings } from '../../server/types/protocol.js';
import { drivingClip, portraitFile } from '../../scripts/testData.js';

async function frames(file: string, count: number): Promise<RgbImage[]> {
  const out: RgbImage[] = [];
  for await (const f of readVideoFrames(file, { format: 'rgb24', maxFrames: count }))
    out.push({ width: f.width, height: f.height, data: f.data });
  return out;
}

/** Eye boxes (x0, y0, x1, y1) of the prepared portrait in output pixels: image-left eye, image-right eye. */
function eyeBoxes(engine: DefaultEngine): [number, number, number, number][] {
  const face = engine.prepared!;
  const g = face.paste.grid;
  const toX = (gx: number): number => face.paste.x0 + ((gx - g[0]!) / (g[2]! - g[0]!)) * (face.paste.w - 1);
  const toY = (gy: number): number => face.paste.y0 + ((gy - g[1]!) / (g[3]! - g[1]!)) * (face.paste.h - 1);
  const lm = face.landmarks;
  return [36, 42].map((e): [number, number, number, number] => {
    const x0 = toX(lm[2 * e]!);
    const x1 = toX(lm[2 * (e + 3)]!);
    const w = x1 - x0;
    const cy = toY((lm[2 * e + 1]! + lm[2 * (e + 3) + 1]!) / 2);
    return [Math.round(x0 + 0.15 * w), Math.round(cy - 0.18 * w), Math.round(x1 - 0.15 * w), Math.round(cy + 0.12 * w)];
  });
}

/** Fraction of dark pixels (luma below 0.45 of the box's 90th percentile: iris, pupil, lash line) in a box. */
function darkFraction(img: RgbImage, [x0, y0, x1, y1]: [number, number, number, number]): number {
  const v: number[] = [];
  for (let y = y0; y < y1; y++)
    for (let x = x0; x < x1; x++) {
      const o = 3 * (y * img.width + x);
      v.push(0.299 * img.data[o]! + 0.587 * img.data[o + 1]! + 0.114 * img.data[o + 2]!);
    }
  const sorted = [...v].sort((a, b) => a - b);
  const bright = sorted[Math.floor(0.9 * (sorted.length - 1))]!;
  return v.filter((l) => l < 0.45 * bright).length / v.length;
}

/** Mean x of the dark pixels (as darkFraction counts them) in a box; NaN when there are none. */
function darkCentroidX(img: RgbImage, [x0, y0, x1, y1]: [number, number, number, number]): number {
  const v: { x: number; l: number }[] = [];
  for (let y = y0; y < y1; y++)
    for (let x = x0; x < x1; x++) {
      const o = 3 * (y * img.width + x);
      v.push({ x, l: 0.299 * img.data[o]! + 0.587 * img.data[o + 1]! + 0.114 * img.data[o + 2]! });
    }
  const sorted = v.map((p) => p.l).sort((a, b) => a - b);
  const bright = sorted[Math.floor(0.9 * (sorted.length - 1))]!;
  const dark = v.filter((p) => p.l < 0.45 * bright);
  return dark.reduce((a, p) => a + p.x, 0) / dark.length;
}

describe('eyes (FaceMesh + Iris tracker)', () => {
  let vision: FaceVision;
  let engine: DefaultEngine;
  beforeAll(async () => {
    vision = await createDefaultVision('mesh');
    engine = await DefaultEngine.create({
      modelPack: path.join(projectRoot, 'models', 'default'),
      vision,
      refinerPack: null,
    });
  });
  afterAll(() => engine?.close());
  beforeEach(() => engine.updateSettings({ ...defaultAvatarSettings }));

  it('a blink reaches the latent in the frame the lid closes; a wink is one eye', async () => {
    const rgb = await loadImageRgb(portraitFile('real_woman_dark_hair.png'));
    const track = (await vision.analyzeImage(rgbToGray(rgb), { format: 'rgb', ...rgb }))[0]!;
    const enc = new ExpressionEncoder();
    const t = cloneTrack(track);
    const open = { left: t.eyes.left, right: t.eyes.right };
    let ts = 0;
    for (let i = 0; i < 30; i++) enc.update(t, (ts += 33));
    expect(enc.latent[L_CLOSE_L]).toBe(0);
    // The image-left eye shuts in one frame (a wink): closed in that frame's latent, the other eye untouched.
    t.eyes.left = 0.1 * open.left;
    enc.update(t, (ts += 33));
    expect(enc.latent[L_CLOSE_L]).toBeGreaterThan(0.95);
    expect(enc.latent[L_CLOSE_R]).toBe(0);
    // Open again in the next frame: open in that frame's latent.
    t.eyes.left = open.left;
    enc.update(t, (ts += 33));
    expect(enc.latent[L_CLOSE_L]).toBe(0);
  });

  it('closes the lids over the eyes when the performer blinks: the eye box turns to skin, the other frames keep the iris', async () => {
    const portrait = await loadImageRgb(portraitFile('real_woman_dark_hair.png'));
    const p = await engine.prepare(portrait);
    engine.recalibrate();
    const boxes = eyeBoxes(engine);
    // man_glasses_cheek_puff_eyes_closed.mp4: eyes open at the start, a blink with both eyes shut at frames 12-15.
    const drive = await frames(drivingClip('man_glasses_cheek_puff_eyes_closed.mp4'), 15);
    const out = createRgb(p.width, p.height);
    const dark: number[][] = [];
    drive.forEach((f, i) => {
      engine.renderRgb(f, out, i * 33);
      dark.push(boxes.map((b) => darkFraction(out, b)));
    });
    for (const e of [0, 1]) {
      const openDark = dark[8]![e]!;
      const closedDark = Math.min(dark[13]![e]!, dark[14]![e]!);
      expect(openDark, `eye ${e} open shows its iris`).toBeGreaterThan(0.12);
      expect(closedDark, `eye ${e} closed is skin`).toBeLessThan(0.5 * openDark);
    }
  });

  it("a deep-set eye's closed lid takes the skin's tone under the eye, not the crease's shadow", async () => {
    // man_mouth_wide_open.mp4: deep-set eyes with a shadowed crease; relaxed at the start, both eyes squeezed shut at
    // frames 94-96. Its own first frame is the portrait (the self-reenactment case, where the dark patch was seen).
    const clip = await frames(drivingClip('man_mouth_wide_open.mp4'), 97);
    const p = await engine.prepare(clip[0]!);
    engine.updateSettings({ ...defaultAvatarSettings, headMotion: false });
    engine.recalibrate();
    const boxes = eyeBoxes(engine);
    const meanLuma = (img: RgbImage, [x0, y0, x1, y1]: [number, number, number, number]): number => {
      let s = 0;
      for (let y = y0; y < y1; y++)
        for (let x = x0; x < x1; x++) {
          const o = 3 * (y * img.width + x);
          s += 0.299 * img.data[o]! + 0.587 * img.data[o + 1]! + 0.114 * img.data[o + 2]!;
        }
      return s / ((x1 - x0) * (y1 - y0));
    };
    const out = createRgb(p.width, p.height);
    const drive = [...clip.slice(0, 12), ...clip.slice(88, 97)];
    const eyeL: number[][] = [];
    drive.forEach((f, i) => {
      engine.renderRgb(f, out, i * 33);
      eyeL.push(boxes.map((b) => meanLuma(out, b)));
    });
    expect(engine.latent[L_CLOSE_L]!, 'the squeeze closes the lids').toBeGreaterThan(0.8);
    for (const e of [0, 1]) {
      const [x0, y0, x1, y1] = boxes[e]!;
      const h = y1 - y0;
      // The skin just under the eye (the cheek's top), in the same frame.
      const skin = meanLuma(out, [x0, y1 + Math.round(0.4 * h), x1, y1 + Math.round(1.2 * h)]);
      const closed = eyeL[eyeL.length - 1]![e]!;
      expect(closed, `eye ${e} closed: lid luma ${closed.toFixed(1)} vs skin ${skin.toFixed(1)}`).toBeGreaterThan(
        0.85 * skin,
      );
      expect(closed, `eye ${e} closed is lighter than open`).toBeGreaterThan(eyeL[5]![e]!);
    }
  });

  it('renders a wink as one closed eye and one open eye (no stare on the other side)', async () => {
    const portrait = await loadImageRgb(portraitFile('real_japanese_woman.png'));
    const p = await engine.prepare(portrait);
    // The performer rolls her head while she winks: without head motion the eye boxes stay put.
    engine.updateSettings({ ...defaultAvatarSettings, headMotion: false });
    engine.recalibrate();
    const boxes = eyeBoxes(engine);
    // woman_wink_frown_surprise.mp4: neutral, then the image-right eye winks around frames 9-18.
    const drive = await frames(drivingClip('woman_wink_frown_surprise.mp4'), 16);
    const out = createRgb(p.width, p.height);
    const dark: number[][] = [];
    const closeL: number[] = [];
    const closeR: number[] = [];
    drive.forEach((f, i) => {
      engine.renderRgb(f, out, i * 33);
      dark.push(boxes.map((b) => darkFraction(out, b)));
      closeR.push(engine.latent[L_CLOSE_R]!);
      closeL.push(engine.latent[L_CLOSE_L]!);
    });
    // At the wink's height (frames 10-12): the winking eye closed, the other open (its lids narrow a little as the
    // cheek rises, as the performer's do), never wider.
    for (const i of [10, 11, 12]) {
      expect(closeR[i]).toBeGreaterThan(0.8);
      expect(closeL[i]).toBeGreaterThanOrEqual(0);
      expect(closeL[i]).toBeLessThan(0.4);
      expect(dark[i]![1]!).toBeLessThan(0.5 * dark[2]![1]!);
      expect(dark[i]![0]!).toBeGreaterThan(0.85 * dark[2]![0]!);
    }
  });

  it("one eye turned in: that eye's iris moves, the other stays (not both the same way)", async () => {
    const portrait = await loadImageRgb(portraitFile('real_woman_dark_hair.png'));
    const p = await engine.prepare(portrait);
    engine.updateSettings({ ...defaultAvatarSettings, headMotion: false });
    engine.recalibrate();
    const boxes = eyeBoxes(engine);
    // woman_tongue_crossed_eyes_grimace.mp4: eyes straight at the start; around frames 36-40 the image-left eye turns
    // in towards the nose (about half an eye half-width) while the image-right eye stays.
    const drive = await frames(drivingClip('woman_tongue_crossed_eyes_grimace.mp4'), 41);
    const out = createRgb(p.width, p.height);
    // Calibrate on the first frame held for 3 s: its eyes are the neutral.
    let ts = 0;
    for (let i = 0; i < 90; i++) engine.renderRgb(drive[0]!, out, (ts += 33));
    const rest = boxes.map((b) => darkCentroidX(out, b));
    for (let i = 30; i < 40; i++) engine.renderRgb(drive[i]!, out, (ts += 33));
    expect(engine.latent[L_VERGE_X]!).toBeGreaterThan(0.15);
    const crossed = boxes.map((b) => darkCentroidX(out, b));
    const eyeWidth = boxes[0]![2] - boxes[0]![0];
    // The image-left eye's iris moves right; the image-right eye's moves less than half as far (one shared gaze would
    // move both alike).
    const moved = crossed[0]! - rest[0]!;
    expect(moved).toBeGreaterThan(0.04 * eyeWidth);
    expect(Math.abs(crossed[1]! - rest[1]!)).toBeLessThan(0.5 * moved);
  });
});
