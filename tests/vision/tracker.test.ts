import { readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { readVideoFrames } from '../../server/util/video.js';
import { resizeGrayBilinear } from '../../server/vision/imageOps.js';
import { ShapePredictor } from '../../server/vision/shapePredictor.js';
import { cloneTrack, FaceTracker } from '../../server/vision/tracker.js';
import type { FaceTrack } from '../../server/vision/types.js';
import type { GrayImage } from '../../server/types/image.js';
import {
  boxOf,
  dlibReference,
  frameName,
  iou,
  landmarkError,
  mediaDir,
  readPgm,
  referenceMissing,
  refDir,
  requireShared,
} from './helpers.js';

let predictor: ShapePredictor;
beforeAll(async () => {
  predictor = await ShapePredictor.load();
});

interface FrameInfo {
  file: string;
  frame_index: number | null;
  scale_x: number;
  scale_y: number;
  offset_x: number;
  offset_y: number;
}
// Every test here compares with dlib's reference landmarks or uses the reference frames.
const noRef = referenceMissing('the tracker tests of tracker.test.ts (all of them use dlib reference data)');
const reference = noRef ? [] : dlibReference();
const frameInfo = noRef
  ? []
  : (JSON.parse(readFileSync(requireShared(path.join(refDir, 'frames.json')), 'utf8')) as { frames: FrameInfo[] })
      .frames;

function noisy(src: GrayImage, seed: number, amp: number): GrayImage {
  let s = seed >>> 0;
  const out: GrayImage = { width: src.width, height: src.height, data: new Uint8Array(src.data.length) };
  for (let i = 0; i < src.data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const n = Math.round(((s >>> 8) / 2 ** 24) * (2 * amp) - amp);
    out.data[i] = Math.max(0, Math.min(255, src.data[i]! + n));
  }
  return out;
}

describe.skipIf(noRef)('FaceTracker on a clip', () => {
  it('woman_speech_head_motion, 190 frames: a face in >= 95% of frames, landmarks match dlib on the reference frames', async () => {
    const tracker = await FaceTracker.create({ predictor });
    const clip = path.join(requireShared(path.join(mediaDir, 'driving')), 'woman_speech_head_motion.mp4');
    let frames = 0;
    let found = 0;
    const kept = new Map<number, FaceTrack>();
    let lastRef: FaceTrack | null = null;
    for await (const f of readVideoFrames(clip, { format: 'gray', maxFrames: 190 })) {
      const t = tracker.track({ width: f.width, height: f.height, data: f.data }, (f.index * 1000) / 25);
      frames++;
      if (t) {
        found++;
        // The tracker hands back its own object every frame (no per-frame allocation).
        if (lastRef) expect(t).toBe(lastRef);
        lastRef = t;
        expect(t.confidence).toBeGreaterThan(0.3);
        if (f.index === 81 || f.index === 180) kept.set(f.index, cloneTrack(t));
      }
    }
    expect(frames).toBe(190);
    expect(found / frames).toBeGreaterThanOrEqual(0.95);
    // Compare with dlib's landmarks on the letterboxed 640x480 reference frames (frames.json maps the coordinates).
    for (const idx of [81, 180]) {
      const t = kept.get(idx);
      expect(t, `frame ${idx}`).toBeDefined();
      const name = `drive-woman_speech_head_motion-f0${idx.toString().padStart(3, '0')}`;
      const info = frameInfo.find((x) => x.file.includes(name))!;
      const ref = reference.find((r) => frameName(r.image) === name)!.faces[0]!.landmarks.flat();
      const mapped = Array.from(t!.rawLandmarks, (v, i) =>
        i % 2 === 0 ? v * info.scale_x + info.offset_x : v * info.scale_y + info.offset_y,
      );
      expect(landmarkError(mapped, ref), name).toBeLessThan(0.06);
    }
    // Frame 81 is a blink.
    expect(kept.get(81)!.eyes.left).toBeLessThan(kept.get(180)!.eyes.left);
  });
});

describe.skipIf(noRef)('FaceTracker stillness, loss and reset', () => {
  it('a still face (the same frame with sensor noise) gives steady landmarks', async () => {
    const tracker = await FaceTracker.create({ predictor });
    const base = readPgm(path.join(refDir, 'frames/drive-woman_speech_head_motion-f0180.pgm'));
    const history: Float32Array[] = [];
    for (let i = 0; i < 60; i++) {
      const t = tracker.track(noisy(base, i + 1, 3), (i * 1000) / 30);
      expect(t).not.toBeNull();
      history.push(Float32Array.from(t!.landmarks));
    }
    // Per-coordinate standard deviation over the last 30 frames, averaged: well under a pixel on a 258 px face.
    const last = history.slice(30);
    let acc = 0;
    for (let j = 0; j < 136; j++) {
      const m = last.reduce((s, h) => s + h[j]!, 0) / last.length;
      acc += Math.sqrt(last.reduce((s, h) => s + (h[j]! - m) ** 2, 0) / last.length);
    }
    expect(acc / 136).toBeLessThan(0.3);
  });

  it('returns null without a face, loses the track when the face goes, re-detects after reset', async () => {
    const tracker = await FaceTracker.create({ predictor });
    const grey: GrayImage = { width: 640, height: 480, data: new Uint8Array(640 * 480).fill(120) };
    expect(tracker.track(grey, 0)).toBeNull();
    expect(tracker.tracking).toBe(false);
    const face = readPgm(path.join(refDir, 'frames/drive-man_mouth_wide_open-f0081.pgm'));
    let t = 33;
    for (let i = 0; i < 5; i++) expect(tracker.track(face, (t += 33))).not.toBeNull();
    expect(tracker.tracking).toBe(true);
    // The face vanishes: the dog frame (no human face; the 12-stage check can still pass on its face now and then).
    // The cascade check (every 4th frame, then every frame after a miss; 3 misses) drops the track within ~0.4 s.
    const bg = readPgm(path.join(refDir, 'frames/portrait-animal_shiba_dog.pgm'));
    let nullAt = -1;
    for (let i = 0; i < 20 && nullAt < 0; i++) if (tracker.track(bg, (t += 33)) === null) nullAt = i;
    expect(nullAt).toBeGreaterThanOrEqual(0);
    expect(nullAt).toBeLessThanOrEqual(12);
    expect(tracker.tracking).toBe(false);
    expect(tracker.track(face, (t += 33))).not.toBeNull();
    expect(tracker.timings.detected).toBe(true);
    expect(tracker.track(face, (t += 33))).not.toBeNull();
    expect(tracker.timings.detected).toBe(false);
    tracker.reset();
    expect(tracker.tracking).toBe(false);
    expect(tracker.track(face, (t += 33))).not.toBeNull();
    expect(tracker.timings.detected).toBe(true);
  });

  it('tiny and huge frames', async () => {
    const tracker = await FaceTracker.create({ predictor });
    expect(tracker.track({ width: 8, height: 8, data: new Uint8Array(64) }, 0)).toBeNull();
    expect(tracker.track({ width: 1, height: 1, data: new Uint8Array(1) }, 10)).toBeNull();
    const src = readPgm(path.join(refDir, 'frames/drive-woman_speech_head_motion-f0180.pgm'));
    const big = resizeGrayBilinear(src, 8000, 6000);
    tracker.reset();
    const t = tracker.track(big, 20);
    expect(t).not.toBeNull();
    const truth = reference
      .find((r) => r.image.includes('woman_speech_head_motion-f0180'))!
      .faces[0]!.box.map((v) => v * 12.5);
    expect(iou(t!.box, boxOf(truth))).toBeGreaterThan(0.5);
  });

  it('a face sliding out of the frame: tracked while visible, null once gone, never a throw', async () => {
    const tracker = await FaceTracker.create({ predictor });
    const src = readPgm(path.join(refDir, 'frames/drive-man_mouth_wide_open-f0135.pgm'));
    const results: (FaceTrack | null)[] = [];
    for (let i = 0; i <= 40; i++) {
      // Shift left by 12 px per frame: the face (x 194..452) leaves the frame around frame 38.
      const shift = 12 * i;
      const img: GrayImage = { width: 640, height: 480, data: new Uint8Array(640 * 480).fill(127) };
      for (let y = 0; y < 480; y++) img.data.set(src.data.subarray(y * 640 + shift, y * 640 + 640), y * 640);
      const t = tracker.track(img, i * 33);
      results.push(t ? cloneTrack(t) : null);
    }
    expect(results.slice(0, 5).every((r) => r !== null)).toBe(true);
    expect(results[40]).toBeNull();
    // While tracked, the box follows the face to the left.
    const boxes = results.filter((r): r is FaceTrack => r !== null).map((r) => r.box.l);
    expect(boxes[boxes.length - 1]!).toBeLessThan(boxes[0]! - 100);
  });
});

describe.skipIf(noRef)('FaceTracker.analyzeImage (still portraits)', () => {
  it('every reference face, close to dlib, and no face on the dog', async () => {
    const tracker = await FaceTracker.create({ predictor });
    for (const r of reference) {
      const img = readPgm(path.join(refDir, r.image));
      const faces = tracker.analyzeImage(img);
      const name = frameName(r.image);
      expect(faces.length, name).toBe(r.faces.length);
      for (const f of r.faces) {
        const got = faces.find((x) => iou(x.box, boxOf(f.box)) > 0.4);
        expect(got, name).toBeDefined();
        expect(landmarkError(got!.landmarks, f.landmarks.flat()), name).toBeLessThan(0.05);
        expect(got!.rawLandmarks.every((v, i) => v === Math.floor(got!.landmarks[i]! + 0.5))).toBe(true);
        expect(got!.confidence).toBeGreaterThan(0);
        expect(Number.isFinite(got!.pose.yaw) && Number.isFinite(got!.gaze.x)).toBe(true);
      }
    }
  });
});
