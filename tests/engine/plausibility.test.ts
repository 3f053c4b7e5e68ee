/**
 * Implausible tracking eases out: the guard's rules on real tracked faces (a real face passes; points out of a face's
 * order, a face larger than the frame, one beyond its edge and a jump across the frame do not; a jump that stays is
 * followed), and the engine on a real clip cut to an extreme close-up: the avatar stops following and eases towards
 * neutral, with the reason in its stats.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DefaultEngine, createDefaultVision, type FaceVision } from '../../server/avatar/engines/default/index.js';
import { faceShapeOk, TrackGuard } from '../../server/avatar/engines/default/plausibility.js';
import { projectRoot } from '../../server/config.js';
import { createRgb, loadImageRgb, resizeRgb, rgbToGray } from '../../server/util/image.js';
import { readVideoFrames } from '../../server/util/video.js';
import type { RgbImage } from '../../server/types/image.js';
import { cloneTrack } from '../../server/vision/tracker.js';
import type { FaceTrack } from '../../server/vision/types.js';
import { drivingClip, portraitFile } from '../../scripts/testData.js';

let vision: FaceVision;
let face: FaceTrack;
let size: { width: number; height: number };
beforeAll(async () => {
  vision = await createDefaultVision('mesh');
  const rgb = await loadImageRgb(portraitFile('real_woman_dark_hair.png'));
  face = cloneTrack((await vision.analyzeImage(rgbToGray(rgb), { format: 'rgb', ...rgb }))[0]!);
  size = { width: rgb.width, height: rgb.height };
});

function moved(t: FaceTrack, dx: number, dy: number, scale = 1): FaceTrack {
  const c = cloneTrack(t);
  for (let i = 0; i < 68; i++) {
    c.landmarks[2 * i] = t.landmarks[2 * i]! * scale + dx;
    c.landmarks[2 * i + 1] = t.landmarks[2 * i + 1]! * scale + dy;
    c.rawLandmarks[2 * i] = Math.round(c.landmarks[2 * i]!);
    c.rawLandmarks[2 * i + 1] = Math.round(c.landmarks[2 * i + 1]!);
  }
  return c;
}

describe('TrackGuard', () => {
  it('follows a real face and refuses points in no face order', () => {
    expect(faceShapeOk(face.landmarks)).toBe(true);
    expect(faceShapeOk(face.rawLandmarks)).toBe(true);
    const g = new TrackGuard();
    expect(g.check(face, size.width, size.height)).toBeNull();
    expect(g.check(null, size.width, size.height)).toBe('lost');
    // The mouth above the nose: no face.
    const upside = cloneTrack(face);
    for (let i = 48; i < 68; i++) upside.rawLandmarks[2 * i + 1] = Math.round(face.landmarks[2 * 27 + 1]! - 5);
    expect(g.check(upside, size.width, size.height)).toBe('not-a-face');
  });

  it('calls a face larger than the frame, or reaching beyond its edge, too close', () => {
    const g = new TrackGuard();
    expect(g.check(moved(face, 0, 0, 3), size.width, size.height)).toBe('too-close');
    expect(g.check(moved(face, 0.5 * size.width, 0), size.width, size.height)).toBe('too-close');
  });

  it('does not follow a jump across the frame until the face stays there', () => {
    const g = new TrackGuard();
    const small = moved(face, 0, 0, 0.4);
    expect(g.check(small, size.width, size.height)).toBeNull();
    const far = moved(small, 0.5 * size.width, 0.3 * size.height);
    expect(g.check(far, size.width, size.height)).toBe('jump');
    expect(g.check(far, size.width, size.height)).toBe('jump');
    expect(g.check(far, size.width, size.height)).toBeNull();
  });
});

describe('the engine eases out of an implausible track', () => {
  let engine: DefaultEngine;
  beforeAll(async () => {
    engine = await DefaultEngine.create({
      modelPack: path.join(projectRoot, 'models', 'default'),
      vision,
      refinerPack: null,
    });
  });
  afterAll(() => engine?.close());

  it('an extreme close-up of the performer: not followed, the avatar eases towards neutral, the stats say why', async () => {
    const p = await engine.prepare(await loadImageRgb(portraitFile('real_woman_dark_hair.png')));
    const out = createRgb(p.width, p.height);
    // man_mouth_wide_open.mp4: neutral at the start, the mouth wide open around frame 135.
    const frames: RgbImage[] = [];
    for await (const f of readVideoFrames(drivingClip('man_mouth_wide_open.mp4'), { format: 'rgb24', maxFrames: 136 }))
      frames.push({ width: f.width, height: f.height, data: f.data });
    let t = 0;
    for (const f of frames) engine.renderRgb(f, out, (t += 33));
    const open = Math.hypot(...Array.from(engine.latent.subarray(0, 136)));
    expect(open).toBeGreaterThan(0.05);
    // The same open mouth, 3x closer: the middle third of the frame blown up to the whole frame.
    const f = frames[135]!;
    const cw = Math.round(f.width / 3),
      ch = Math.round(f.height / 3);
    const crop: RgbImage = { width: cw, height: ch, data: new Uint8Array(cw * ch * 3) };
    for (let y = 0; y < ch; y++)
      for (let x = 0; x < cw; x++)
        for (let k = 0; k < 3; k++) crop.data[3 * (y * cw + x) + k] = f.data[3 * ((y + ch) * f.width + x + cw) + k]!;
    const close = resizeRgb(crop, f.width, f.height);
    const issues: string[] = [];
    for (let i = 0; i < 30; i++) {
      const s = engine.renderRgb(close, out, (t += 33));
      issues.push(s.faceIssue ?? 'followed');
    }
    // The tracker needs a frame or two to grow its region onto the close-up; from then on nothing is followed.
    expect(issues.slice(2).filter((i) => i !== 'too-close' && i !== 'lost' && i !== 'not-a-face')).toEqual([]);
    expect(Math.hypot(...Array.from(engine.latent.subarray(0, 136)))).toBeLessThan(0.2 * open);
  });
});
