/**
 * Per-frame face tracking: detection when there is no track, then landmarks from a box derived from the previous
 * frame's landmarks, a periodic cascade check that the face is still there, One Euro smoothing, head pose and
 * expression features.
 *
 * The per-frame path (`track`) is synchronous and allocation-free: it fills and returns one FaceTrack object that
 * belongs to the tracker (copy what you keep; `cloneTrack` does). Not thread-safe: one tracker per stream.
 */
import { FaceDetector, type DetectedFace, type FaceDetectorOptions } from './detector.js';
import { eyeOpenness, mouthOpenness } from './features.js';
import { PupilFinder, type PupilResult } from './gaze.js';
import { OneEuroFilter, type OneEuroParams } from './oneEuro.js';
import { emptyPose, filterPose, PoseSolver } from './pose.js';
import { ShapePredictor } from './shapePredictor.js';
import type { Box, FaceTrack } from './types.js';
import type { GrayImage } from '../types/image.js';

const P = 68;
const D = 2 * P;
/**
 * Largest shape residual (see ShapeGeometry.residual) accepted as a face. On the reference faces it ranges
 * 0.026-0.064 for frontal faces with expressions and 0.109 for the 3/4-profile Vermeer.
 */
const MAX_RESIDUAL = 0.2;

/** Options for FaceTracker.create. */
export interface FaceTrackerOptions {
  /** A loaded shape predictor (default: ShapePredictor.load() of Debian's 68-point model). */
  predictor?: ShapePredictor;
  /** A detector (default: FaceDetector.create(detectorOptions)). */
  detector?: FaceDetector;
  detectorOptions?: FaceDetectorOptions;
  /** Frames between cascade checks that the tracked face is still there (default 4). */
  verifyEvery?: number;
  /** Consecutive failed checks before the track is dropped (default 3). */
  maxMisses?: number;
  /** Landmark smoothing (speeds in face sizes per second). Default { minCutoff: 1.5, beta: 6, dCutoff: 1 }. */
  landmarkFilter?: OneEuroParams;
  /** Pose smoothing (degrees and mm per second). Default { minCutoff: 1.5, beta: 0.05, dCutoff: 1 }. */
  poseFilter?: OneEuroParams;
  /** Gaze smoothing. Default { minCutoff: 2, beta: 1, dCutoff: 1 }. */
  gazeFilter?: OneEuroParams;
  /** Eye and mouth openness smoothing (a fast filter that keeps blinks). Default { minCutoff: 2, beta: 5, dCutoff: 5 }. */
  opennessFilter?: OneEuroParams;
}

/** Stage timings of the last `track` call, in ms. */
export interface TrackTimings {
  detectMs: number;
  landmarksMs: number;
  poseMs: number;
  featuresMs: number;
  totalMs: number;
  /** Whether this frame ran a full-frame detection. */
  detected: boolean;
}

/** Copies a FaceTrack (the tracker reuses its own). */
export function cloneTrack(t: FaceTrack): FaceTrack {
  return {
    box: { ...t.box },
    landmarks: Float32Array.from(t.landmarks),
    rawLandmarks: Int32Array.from(t.rawLandmarks),
    pose: { ...t.pose },
    eyes: { ...t.eyes },
    mouth: t.mouth,
    gaze: { ...t.gaze },
    ...(t.vergence ? { vergence: { ...t.vergence } } : {}),
    confidence: t.confidence,
    ...(t.mesh ? { mesh: Float32Array.from(t.mesh) } : {}),
  };
}

function newTrack(): FaceTrack {
  return {
    box: { l: 0, t: 0, r: 0, b: 0 },
    landmarks: new Float32Array(D),
    rawLandmarks: new Int32Array(D),
    pose: emptyPose(),
    eyes: { left: 0, right: 0 },
    mouth: 0,
    gaze: { x: 0, y: 0 },
    confidence: 0,
  };
}

/**
 * Box <-> landmark geometry against the predictor's mean shape (its initial_shape, in box-normalised
 * coordinates): the box that maps the mean shape best onto a set of landmarks is the box the predictor would
 * expect for that face (translation + rotation-invariant scale), and the residual after a similarity alignment
 * tells how face-like a landmark set is.
 */
export class ShapeGeometry {
  readonly #mx: number;
  readonly #my: number;
  readonly #mc: Float64Array;
  readonly #mss: number;

  constructor(meanShape: Float32Array) {
    let mx = 0;
    let my = 0;
    for (let i = 0; i < P; i++) {
      mx += meanShape[2 * i]!;
      my += meanShape[2 * i + 1]!;
    }
    mx /= P;
    my /= P;
    const mc = new Float64Array(D);
    let ss = 0;
    for (let i = 0; i < P; i++) {
      mc[2 * i] = meanShape[2 * i]! - mx;
      mc[2 * i + 1] = meanShape[2 * i + 1]! - my;
      ss += mc[2 * i]! ** 2 + mc[2 * i + 1]! ** 2;
    }
    this.#mx = mx;
    this.#my = my;
    this.#mc = mc;
    this.#mss = ss;
  }

  /** The dlib-like box for these landmarks (float corners; side = r - l = b - t). */
  boxFor(p: ArrayLike<number>, out: Box): Box {
    let px = 0;
    let py = 0;
    for (let i = 0; i < P; i++) {
      px += p[2 * i]!;
      py += p[2 * i + 1]!;
    }
    px /= P;
    py /= P;
    let ss = 0;
    for (let i = 0; i < P; i++) ss += (p[2 * i]! - px) ** 2 + (p[2 * i + 1]! - py) ** 2;
    const side = Math.sqrt(ss / this.#mss);
    out.l = px - side * this.#mx;
    out.t = py - side * this.#my;
    out.r = out.l + side;
    out.b = out.t + side;
    return out;
  }

  /**
   * RMS distance between the landmarks and the similarity-aligned mean shape, over the aligned scale
   * (0 = exactly the mean face; real faces with expressions are ~0.02-0.06).
   */
  residual(p: ArrayLike<number>): number {
    let px = 0;
    let py = 0;
    for (let i = 0; i < P; i++) {
      px += p[2 * i]!;
      py += p[2 * i + 1]!;
    }
    px /= P;
    py /= P;
    const mc = this.#mc;
    let a = 0;
    let b = 0;
    let pss = 0;
    for (let i = 0; i < P; i++) {
      const x = p[2 * i]! - px;
      const y = p[2 * i + 1]! - py;
      const u = mc[2 * i]!;
      const v = mc[2 * i + 1]!;
      a += u * x + v * y;
      b += u * y - v * x;
      pss += x * x + y * y;
    }
    a /= this.#mss;
    b /= this.#mss;
    const scale = Math.hypot(a, b);
    if (!(scale > 0)) return Infinity;
    // Residual of the least-squares similarity fit: pss - scale^2 * mss.
    const res = Math.max(0, pss - scale * scale * this.#mss);
    return Math.sqrt(res / P) / scale;
  }
}

/** Face tracker for one video stream. */
export class FaceTracker {
  readonly predictor: ShapePredictor;
  readonly detector: FaceDetector;
  readonly geometry: ShapeGeometry;
  /** Timings of the last track() call. */
  readonly timings: TrackTimings = {
    detectMs: 0,
    landmarksMs: 0,
    poseMs: 0,
    featuresMs: 0,
    totalMs: 0,
    detected: false,
  };

  readonly #verifyEvery: number;
  readonly #maxMisses: number;
  readonly #lmFilter: OneEuroFilter;
  readonly #poseFilter: OneEuroFilter;
  readonly #gazeFilter: OneEuroFilter;
  readonly #pose = new PoseSolver();
  readonly #pupil = new PupilFinder();
  readonly #pupilL: PupilResult = { x: 0, y: 0, quality: 0 };
  readonly #pupilR: PupilResult = { x: 0, y: 0, quality: 0 };
  readonly #track = newTrack();
  readonly #rawF = new Float32Array(D);
  readonly #box: Box = { l: 0, t: 0, r: 0, b: 0 };
  readonly #fit: Box = { l: 0, t: 0, r: 0, b: 0 };
  readonly #poseVec = new Float64Array(6);
  readonly #gazeVec = new Float64Array(2);
  readonly #openVec = new Float64Array(3);
  readonly #openFilter: OneEuroFilter;
  #active = false;
  #sinceVerify = 0;
  #misses = 0;
  #score = 0;

  private constructor(predictor: ShapePredictor, detector: FaceDetector, opts: FaceTrackerOptions) {
    this.predictor = predictor;
    this.detector = detector;
    this.geometry = new ShapeGeometry(predictor.toShared().initialShape);
    if (predictor.parts !== P) throw new TypeError(`FaceTracker needs a 68-point predictor, got ${predictor.parts}`);
    this.#verifyEvery = Math.max(1, opts.verifyEvery ?? 4);
    this.#maxMisses = Math.max(1, opts.maxMisses ?? 3);
    this.#lmFilter = new OneEuroFilter(D, opts.landmarkFilter ?? { minCutoff: 1.5, beta: 6, dCutoff: 1 });
    this.#poseFilter = new OneEuroFilter(6, opts.poseFilter ?? { minCutoff: 1.5, beta: 0.05, dCutoff: 1 });
    this.#gazeFilter = new OneEuroFilter(2, opts.gazeFilter ?? { minCutoff: 2, beta: 1, dCutoff: 1 });
    this.#openFilter = new OneEuroFilter(3, opts.opennessFilter ?? { minCutoff: 2, beta: 5, dCutoff: 5 });
  }

  /** Loads what is not given (the 68-point model parse is cached per process). */
  static async create(opts: FaceTrackerOptions = {}): Promise<FaceTracker> {
    const [predictor, detector] = await Promise.all([
      opts.predictor ?? ShapePredictor.load(),
      opts.detector ?? FaceDetector.create(opts.detectorOptions),
    ]);
    return new FaceTracker(predictor, detector, opts);
  }

  /** Whether a face is being tracked. */
  get tracking(): boolean {
    return this.#active;
  }

  /** Drops the track and the smoothing history: the next frame starts with a detection. */
  reset(): void {
    this.#active = false;
    this.#misses = 0;
    this.#sinceVerify = 0;
    this.#lmFilter.reset();
    this.#poseFilter.reset();
    this.#gazeFilter.reset();
    this.#openFilter.reset();
    this.#pose.reset();
  }

  /**
   * Tracks the face in one frame. Returns the tracker's own FaceTrack (overwritten by the next call) or null when
   * there is no face. `timestampMs` drives the smoothing (frame times, not wall time).
   */
  track(img: GrayImage, timestampMs: number): FaceTrack | null {
    const t0 = performance.now();
    const tm = this.timings;
    tm.detectMs = 0;
    tm.detected = false;
    tm.landmarksMs = 0;
    tm.poseMs = 0;
    tm.featuresMs = 0;
    if (img.width < 2 || img.height < 2) {
      this.reset();
      tm.totalMs = performance.now() - t0;
      return null;
    }
    if (!this.#active && !this.#acquire(img)) {
      tm.totalMs = performance.now() - t0;
      return null;
    }
    let tl = performance.now();
    this.predictor.predictFloat(img, this.#box, this.#rawF);
    tm.landmarksMs += performance.now() - tl;

    // Still a face? A cheap shape test every frame, the cascade around the box every few frames.
    let ok = this.#plausible(img);
    if (ok && ++this.#sinceVerify >= this.#verifyEvery) {
      this.#sinceVerify = 0;
      const td = performance.now();
      const hits = this.detector.verify(img, this.#box);
      tm.detectMs += performance.now() - td;
      if (hits > 0) {
        this.#misses = 0;
        // verify() stops at 4 passing windows: a frontal face reaches 4, a turned or dim one fewer.
        this.#score = Math.min(1, hits / 4);
      } else if (++this.#misses >= this.#maxMisses) ok = false;
      // After a miss, check again on the next frame: a face that left is dropped within maxMisses frames.
      else this.#sinceVerify = this.#verifyEvery - 1;
    }
    if (!ok) {
      this.reset();
      if (!this.#acquire(img)) {
        tm.totalMs = performance.now() - t0;
        return null;
      }
      tl = performance.now();
      this.predictor.predictFloat(img, this.#box, this.#rawF);
      tm.landmarksMs += performance.now() - tl;
      if (!this.#plausible(img)) {
        this.reset();
        tm.totalMs = performance.now() - t0;
        return null;
      }
    }
    const out = this.#finish(img, timestampMs, true);
    // The next frame's box: fitted to this frame's raw landmarks, kept when it barely moved (hysteresis), so a
    // still face gets the same box and therefore the same landmarks.
    this.geometry.boxFor(this.#rawF, this.#fit);
    const side = this.#box.r - this.#box.l;
    const f = this.#fit;
    const moved =
      Math.abs((f.l + f.r - this.#box.l - this.#box.r) / 2) > 0.02 * side ||
      Math.abs((f.t + f.b - this.#box.t - this.#box.b) / 2) > 0.02 * side ||
      Math.abs(f.r - f.l - side) > 0.03 * side;
    if (moved) roundBox(f, this.#box);
    tm.totalMs = performance.now() - t0;
    return out;
  }

  /**
   * All faces of a still image (thorough detection, one box refinement from the landmarks, no smoothing).
   * Sorted by detection score, highest first. Allocates its results; not for the per-frame path.
   */
  analyzeImage(img: GrayImage): FaceTrack[] {
    const faces = this.detector.detect(img, { thorough: true });
    const out: FaceTrack[] = [];
    const pose = new PoseSolver();
    const raw = new Float32Array(D);
    const box: Box = { l: 0, t: 0, r: 0, b: 0 };
    const fit: Box = { l: 0, t: 0, r: 0, b: 0 };
    for (const face of faces) {
      box.l = face.box.l;
      box.t = face.box.t;
      box.r = face.box.r;
      box.b = face.box.b;
      this.predictor.predictFloat(img, box, raw);
      // The cascade box only approximates the HOG box the model was trained on: refit once from the landmarks.
      roundBox(this.geometry.boxFor(raw, fit), box);
      this.predictor.predictFloat(img, box, raw);
      const t = newTrack();
      t.box = { ...box };
      for (let i = 0; i < D; i++) {
        t.landmarks[i] = raw[i]!;
        t.rawLandmarks[i] = Math.floor(raw[i]! + 0.5);
      }
      pose.reset();
      pose.solve(t.landmarks, img.width, img.height, t.pose);
      this.#features(img, t, false, 0, raw);
      t.confidence = this.#confidence(face.score, raw);
      out.push(t);
    }
    // Overlapping detections of one face (the refit can pull two boxes together): keep the better one.
    return out.filter((t, i) => !out.some((u, j) => j < i && iou(u.box, t.box) > 0.5));
  }

  #acquire(img: GrayImage): boolean {
    const td = performance.now();
    const faces: DetectedFace[] = this.detector.detect(img);
    this.timings.detectMs += performance.now() - td;
    this.timings.detected = true;
    const best = faces[0];
    if (!best) return false;
    roundBox(best.box, this.#box);
    this.#score = best.score;
    this.#active = true;
    this.#misses = 0;
    this.#sinceVerify = 0;
    this.#lmFilter.reset();
    this.#poseFilter.reset();
    this.#gazeFilter.reset();
    this.#openFilter.reset();
    this.#pose.reset();
    return true;
  }

  /** The landmarks look like a face of a sensible size that overlaps the frame. */
  #plausible(img: GrayImage): boolean {
    const r = this.#rawF;
    const fit = this.geometry.boxFor(r, this.#fit);
    const side = fit.r - fit.l;
    if (!(side >= 12)) return false;
    const cx = (fit.l + fit.r) / 2;
    const cy = (fit.t + fit.b) / 2;
    if (cx < 0 || cy < 0 || cx >= img.width || cy >= img.height) return false;
    return this.geometry.residual(r) < MAX_RESIDUAL;
  }

  #finish(img: GrayImage, timestampMs: number, smooth: boolean): FaceTrack {
    const out = this.#track;
    const raw = this.#rawF;
    const side = this.#box.r - this.#box.l;
    for (let i = 0; i < D; i++) out.rawLandmarks[i] = Math.floor(raw[i]! + 0.5);
    if (smooth) this.#lmFilter.filter(raw, timestampMs, out.landmarks, Math.max(1, side));
    else out.landmarks.set(raw);
    out.box.l = this.#box.l;
    out.box.t = this.#box.t;
    out.box.r = this.#box.r;
    out.box.b = this.#box.b;
    const tp = performance.now();
    this.#pose.solve(out.landmarks, img.width, img.height, out.pose);
    if (smooth) filterPose(this.#poseFilter, out.pose, timestampMs, this.#poseVec);
    const tf = performance.now();
    this.timings.poseMs += tf - tp;
    this.#features(img, out, smooth, timestampMs, raw);
    out.confidence = this.#confidence(this.#score, raw);
    this.timings.featuresMs += performance.now() - tf;
    return out;
  }

  #features(img: GrayImage, t: FaceTrack, smooth: boolean, timestampMs: number, raw: ArrayLike<number>): void {
    const p = t.landmarks;
    // Openness from the unsmoothed landmarks with a fast filter of its own: the landmark filter would flatten a
    // blink (3-4 frames).
    const ov = this.#openVec;
    ov[0] = eyeOpenness(raw, 36);
    ov[1] = eyeOpenness(raw, 42);
    ov[2] = mouthOpenness(raw);
    if (smooth) this.#openFilter.filter(ov, timestampMs, ov);
    t.eyes.left = ov[0]!;
    t.eyes.right = ov[1]!;
    t.mouth = ov[2]!;
    const l = this.#pupil.find(img, p, 36, this.#pupilL);
    const r = this.#pupil.find(img, p, 42, this.#pupilR);
    // Weight each eye by its pupil contrast and openness: a closed or glaring eye says little about gaze.
    const wl = l.quality * Math.min(1, t.eyes.left / 0.2);
    const wr = r.quality * Math.min(1, t.eyes.right / 0.2);
    const g = this.#gazeVec;
    if (wl + wr > 0.05) {
      g[0] = (l.x * wl + r.x * wr) / (wl + wr);
      g[1] = (l.y * wl + r.y * wr) / (wl + wr);
    } else if (!smooth) {
      g[0] = 0;
      g[1] = 0;
    }
    // (With smoothing and no usable pupil, the previous gaze is held.)
    if (smooth) this.#gazeFilter.filter(g, timestampMs, g);
    t.gaze.x = g[0]!;
    t.gaze.y = g[1]!;
  }

  /** Detection/verification score, lowered for unusual shapes (residual ~0.03-0.06 is typical). */
  #confidence(score: number, raw: Float32Array): number {
    const res = this.geometry.residual(raw);
    const shape = Math.max(0, Math.min(1, (MAX_RESIDUAL - res) / (MAX_RESIDUAL - 0.06)));
    return Math.max(0, Math.min(1, 0.3 + 0.7 * score)) * shape;
  }
}

function roundBox(src: Box, dst: Box): void {
  dst.l = Math.round(src.l);
  dst.t = Math.round(src.t);
  const side = Math.max(1, Math.round(src.r - src.l));
  dst.r = dst.l + side;
  dst.b = dst.t + side;
}

function iou(a: Box, b: Box): number {
  const ix = Math.max(0, Math.min(a.r, b.r) - Math.max(a.l, b.l));
  const iy = Math.max(0, Math.min(a.b, b.b) - Math.max(a.t, b.t));
  const i = ix * iy;
  const u = (a.r - a.l) * (a.b - a.t) + (b.r - b.l) * (b.b - b.t) - i;
  return u > 0 ? i / u : 0;
}
