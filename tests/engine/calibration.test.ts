/**
 * Neutral calibration of the expression encoder on real tracked faces: the neutral comes from the most relaxed frames
 * of the first ~2 s (mouth closed, eyes open), not from the first frame, so a performer who starts mid-word or
 * mid-blink gets no constant offset. The tracks come from the engine's own tracker on the test media's driving clips,
 * tracked once in clip order (the tracker smooths over time); the encoder is then fed sequences of those tracks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDefaultVision, type StreamTracker } from '../../server/avatar/engines/default/index.js';
import { ExpressionEncoder, L_CLOSE_L, L_CLOSE_R } from '../../server/avatar/engines/default/expression.js';
import { eyeOpenness, faceFrame, mouthOpenness } from '../../server/avatar/engines/default/geometry.js';
import { readVideoFrames } from '../../server/util/video.js';
import { drivingClip } from '../../scripts/testData.js';
import type { FaceTrack } from '../../server/vision/types.js';
import { cloneTrack } from '../../server/vision/tracker.js';

/** Driving frame interval (integer ms: the same frames always give the same window). */
const FRAME_MS = 33;

/** Tracks the first `count` frames of a clip in order; every frame must have a face. */
async function trackClip(tracker: StreamTracker, clip: string, count: number): Promise<FaceTrack[]> {
  const out: FaceTrack[] = [];
  for await (const f of readVideoFrames(drivingClip(clip), { format: 'gray', maxFrames: count })) {
    const t = tracker.track({ width: f.width, height: f.height, data: f.data }, f.index * FRAME_MS);
    if (!t) throw new Error(`${clip}: no face in frame ${f.index}`);
    out.push(cloneTrack(t));
  }
  return out;
}

/** Feeds `tracks` in order, one every FRAME_MS from `t0`; returns the next timestamp. */
function feed(enc: ExpressionEncoder, tracks: readonly FaceTrack[], t0: number): number {
  let ts = t0;
  for (const t of tracks) {
    enc.update(t, ts);
    ts += FRAME_MS;
  }
  return ts;
}

/** Holds one frame until the smoothed latent has settled; returns a copy of the latent. */
function hold(enc: ExpressionEncoder, track: FaceTrack, t0: number): Float64Array {
  let ts = t0;
  for (let i = 0; i < 45; i++, ts += FRAME_MS) enc.update(track, ts);
  return Float64Array.from(enc.latent);
}

/** The latent's mouth opening: inner lower lip (66) down minus inner upper lip (62) down, in face heights. */
function latentOpening(lat: Float64Array): number {
  return lat[2 * 66 + 1]! - lat[2 * 62 + 1]!;
}

/**
 * An encoder whose neutral is exactly `track` (what the first-frame rule gave): the window sees nothing else. Returns
 * it and the next timestamp.
 */
function firstFrameNeutral(track: FaceTrack): [ExpressionEncoder, number] {
  const enc = new ExpressionEncoder();
  const ts = feed(
    enc,
    Array.from({ length: 75 }, () => track),
    0,
  );
  expect(enc.calibrated).toBe(true);
  expect(maxDistance(enc.neutral, track.landmarks)).toBeLessThan(1e-6);
  return [enc, ts];
}

/** Largest landmark distance (pixels) between two 68-point sets. */
function maxDistance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < 68; i++) m = Math.max(m, Math.hypot(a[2 * i]! - b[2 * i]!, a[2 * i + 1]! - b[2 * i + 1]!));
  return m;
}

describe('neutral calibration on real tracked faces', () => {
  let tracker: StreamTracker;
  /** man_mouth_wide_open: relaxed 0-60, mouth wide open ~68-92, closed 101-112 and 160-215. */
  let mouth: FaceTrack[];
  /** man_glasses_cheek_puff_eyes_closed: mouth closed throughout, blinks at ~12-19 and ~38-47, eyes open between. */
  let blink: FaceTrack[];

  beforeAll(async () => {
    const vision = await createDefaultVision();
    tracker = await vision.createTracker();
    mouth = await trackClip(tracker, 'man_mouth_wide_open.mp4', 216);
    tracker.close?.();
    tracker = await vision.createTracker();
    blink = await trackClip(tracker, 'man_glasses_cheek_puff_eyes_closed.mp4', 121);
  }, 170_000);
  afterAll(() => tracker.close?.());

  it('a performer who starts with the mouth wide open: closed is neutral, open is open (a first-frame neutral is off by the whole opening)', () => {
    const start = mouth.slice(70); // mouth wide open until ~95, then closed, a second word at ~113-157, closed again
    const first = start[0]!;
    const closed = mouth[106]!;
    const open = mouth[85]!;
    expect(mouthOpenness(first.landmarks)).toBeGreaterThan(0.5);
    expect(mouthOpenness(closed.landmarks)).toBeLessThan(0.03);

    const enc = new ExpressionEncoder();
    // The avatar moves from the first frame: the first frame is the provisional neutral.
    enc.update(first, 0);
    expect(enc.calibrated).toBe(false);
    expect(Math.max(...enc.latent.map(Math.abs))).toBeLessThan(1e-9);
    // While the neutral switches to the relaxed frames it eases there: no frame moves it by more than a fraction of
    // the whole change.
    const total = maxDistance(first.landmarks, closed.landmarks);
    const prev = Float64Array.from(enc.neutral);
    let maxStep = 0;
    let ts = FRAME_MS;
    for (const t of start.slice(1)) {
      enc.update(t, ts);
      ts += FRAME_MS;
      maxStep = Math.max(maxStep, maxDistance(prev, enc.neutral));
      prev.set(enc.neutral);
    }
    expect(enc.calibrated).toBe(true);
    expect(total).toBeGreaterThan(30);
    expect(maxStep).toBeLessThan(0.3 * total);
    // Relaxed: within the rule's band (0.04) of the most closed mouth seen (0.007); the first frame was at 0.74.
    expect(enc.neutralMouthOpen).toBeLessThan(0.04);

    const latClosed = latentOpening(hold(enc, closed, ts));
    const latOpen = latentOpening(hold(enc, open, ts + 45 * FRAME_MS));
    // What the first-frame neutral gives for the closed mouth: far below zero (the avatar's mouth pressed shut).
    const [base, bts] = firstFrameNeutral(first);
    const firstFrameClosed = latentOpening(hold(base, closed, bts));
    expect(firstFrameClosed).toBeLessThan(-0.1);
    // Closed reads as neutral, to a small fraction of the first-frame offset (the neutral's lips may be barely parted).
    expect(Math.abs(latClosed)).toBeLessThan(0.03);
    expect(latClosed - firstFrameClosed).toBeGreaterThan(0.1);
    expect(latOpen).toBeGreaterThan(0.1);
  });

  it('a blink in the first frames is not taken as the neutral eye openness', () => {
    const start = blink.slice(14); // mid-blink, eyes open from ~21, a second blink at ~38-47
    const first = start[0]!;
    const open = blink[60]!;
    const shut = blink[42]!;
    const eyes = (t: FaceTrack): number => (eyeOpenness(t.landmarks, 36) + eyeOpenness(t.landmarks, 42)) / 2;
    // A first-frame neutral would read the open eyes as twice as wide as neutral, and the blink as barely closed.
    expect(eyes(first)).toBeLessThan(0.6 * eyes(open));
    expect(eyes(shut)).toBeGreaterThan(0.75 * eyes(first));

    const enc = new ExpressionEncoder();
    const ts = feed(enc, start, 0);
    expect(enc.calibrated).toBe(true);
    const latOpen = hold(enc, open, ts);
    const latShut = hold(enc, shut, ts + 45 * FRAME_MS);
    // Open reads as (nearly) neutral: a blink taken as the neutral would read it as wide (-0.5). Closure is
    // proportional to the lid's motion, so an open frame a little below the relaxed frames' mean reads a little closed.
    for (const c of [L_CLOSE_L, L_CLOSE_R]) {
      expect(Math.abs(latOpen[c]!)).toBeLessThan(0.15);
      expect(latShut[c]!).toBeGreaterThan(0.5);
    }
  });

  it('recalibrate() restarts the window: the same frames give the same neutral', () => {
    const seq = mouth.slice(70);
    const fresh = new ExpressionEncoder();
    feed(fresh, seq, 0);
    expect(fresh.calibrated).toBe(true);

    const enc = new ExpressionEncoder();
    const ts = feed(enc, mouth.slice(0, 80), 0); // calibrated on the relaxed start, then mouth open
    expect(enc.calibrated).toBe(true);
    const before = Float64Array.from(enc.neutral);
    enc.recalibrate();
    expect(enc.calibrated).toBe(false);
    // The first frame after recalibrate() (mouth wide open) is the provisional neutral, eased to, not jumped to.
    enc.update(seq[0]!, ts);
    const step = maxDistance(before, enc.neutral);
    expect(step).toBeGreaterThan(0);
    expect(step).toBeLessThan(0.3 * maxDistance(before, seq[0]!.landmarks));
    feed(enc, seq.slice(1), ts + FRAME_MS);
    expect(enc.calibrated).toBe(true);
    expect(maxDistance(enc.neutral, fresh.neutral)).toBeLessThan(1e-6);
    expect(enc.neutralMouthOpen).toBeCloseTo(fresh.neutralMouthOpen, 9);
    expect(enc.neutralPose).toEqual(fresh.neutralPose);
  });

  it('a relaxed start behaves as before: the neutral is close to the first frame', () => {
    const first = mouth[0]!;
    const f = faceFrame(first.landmarks, { ox: 0, oy: 0, ux: 1, uy: 0, width: 1, height: 1, iod: 1 });
    const enc = new ExpressionEncoder();
    const ts = feed(enc, mouth.slice(0, 100), 0);
    expect(enc.calibrated).toBe(true);
    expect(maxDistance(enc.neutral, first.landmarks)).toBeLessThan(0.015 * f.width);
    expect(Math.abs(enc.neutralMouthOpen - mouthOpenness(first.landmarks))).toBeLessThan(0.01);
    // The first frame reads as (almost) neutral; the open mouth as it does against a first-frame neutral.
    const latFirst = hold(enc, first, ts);
    expect(Math.abs(latentOpening(latFirst))).toBeLessThan(0.005);
    for (const c of [L_CLOSE_L, L_CLOSE_R]) expect(Math.abs(latFirst[c]!)).toBeLessThan(0.05);
    const open = mouth[85]!;
    const latOpen = latentOpening(hold(enc, open, ts + 45 * FRAME_MS));
    const [base, bts] = firstFrameNeutral(first);
    const firstFrameOpen = latentOpening(hold(base, open, bts));
    expect(firstFrameOpen).toBeGreaterThan(0.15); // wide open: ~0.2 with either tracker (dlib 0.21, FaceMesh 0.197)
    expect(Math.abs(latOpen - firstFrameOpen)).toBeLessThan(0.01);
  });
});
