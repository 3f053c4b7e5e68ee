/**
 * The expression latent: what the performer does, relative to their own neutral face, normalised for face shape.
 *
 * Per driving frame (a FaceTrack): the landmarks are aligned to the performer's neutral with a similarity fit on
 * rigid points (that fit gives roll, zoom and translation); the residual is split into a rigid yaw/pitch part (fitted
 * with a generic face depth) and the expression displacement of every landmark, expressed in the neutral face's frame
 * in units of its width (x) and height (y). Eyes are measured as openness relative to neutral, gaze as the pupil
 * offset. The latent is smoothed (one-euro filter: still when the performer holds still, quick on real motion) and
 * eases back to neutral when no face is seen. The neutral is auto-calibrated from the most relaxed frames (mouth closed,
 * eyes open, head near its usual pose) of the first ~2 s of frames with a face (see {@link RelaxedNeutral}).
 *
 * `retarget()` maps a latent onto the portrait's landmarks (in its own face frame and sizes, so a wide face drives a
 * narrow one) and applies the head motion with the same generic depth.
 */
import type { FaceTrack } from '../../../vision/types.js';
import type { AvatarSettings } from '../../../types/protocol.js';
import {
  applySimilarity,
  faceFrame,
  mouthOpenness,
  fitSimilarity,
  GENERIC_DEPTH,
  RIGID_POINTS,
  type FaceFrame,
  type Similarity,
} from './geometry.js';

export const N_LANDMARKS = 68;
const P2 = N_LANDMARKS * 2;

/** Latent layout: 136 displacement components, then the scalars below. */
export const L_YAW = P2;
export const L_PITCH = P2 + 1;
export const L_ROLL = P2 + 2;
export const L_ZOOM = P2 + 3; // log scale
export const L_TX = P2 + 4;
export const L_TY = P2 + 5;
export const L_CLOSE_L = P2 + 6; // image-left eye (landmarks 36-41)
export const L_CLOSE_R = P2 + 7; // image-right eye (42-47)
export const L_GAZE_X = P2 + 8;
export const L_GAZE_Y = P2 + 9;
/** Each eye's own part of the gaze (FaceTrack.vergence): the image-left eye looks at gaze + vergence, the other at
 * gaze - vergence. */
export const L_VERGE_X = P2 + 10;
export const L_VERGE_Y = P2 + 11;
export const LATENT_SIZE = P2 + 12;

const DEG = Math.PI / 180;
const Z_RIGID_MEAN = RIGID_POINTS.reduce((s, i) => s + GENERIC_DEPTH[i]!, 0) / RIGID_POINTS.length;

/**
 * Calibration: the performer's neutral face is taken from the most relaxed frames of a window at the start, not from
 * the first frame alone. The first frame alone puts a performer who starts mid-word (or mid-blink) into the neutral: a
 * constant offset on every later frame (the avatar's mouth closed when theirs is open, or parted at rest); a plain
 * average over the first second did the same with the whole word in it.
 *
 * The rule ({@link RelaxedNeutral}), over the first CALIB_MS of frames with a face (at least CALIB_MIN_FRAMES frames,
 * at most CALIB_MAX_FRAMES):
 * - every frame gets a relaxedness cost from the tracker's values, each term relative to the window itself (so it does
 *   not depend on the performer's face shape): the mouth's opening above the most closed mouth seen, each eye's
 *   openness below (blink, squint) or well above (surprise) its median, and the head pose's distance from the median
 *   pose beyond a tolerance (a turned or nodding head is no neutral);
 * - the frames whose cost is within COST_SLACK of the best are equally relaxed; the earliest of them (the anchor) and
 *   the next ones that are close to it (JOIN_MOUTH, JOIN_DEG), at most NEUTRAL_FRAMES, make the neutral. Earliest, not
 *   lowest-cost: a performer who starts relaxed keeps their first frames as the neutral (what a first-frame neutral
 *   gave, and what self-reenactment relies on: the portrait is the clip's first frame), and the chosen set stays put
 *   as more equally relaxed frames come in;
 * - the neutral is their average, each aligned to the first of them on the rigid points (as motion is measured), then
 *   placed at their mean placement (position, roll, scale), so head motion is measured from where the relaxed frames
 *   were; eye openness, gaze and absolute pose are their means.
 *
 * The avatar moves from the first frame: that frame is the provisional neutral (the only frame seen, so the most
 * relaxed). While the window runs the chosen set, and so the neutral, can change; the neutral in use then eases to the
 * new one (NEUTRAL_TAU_MS) rather than switching, because a switch is a step in every latent component that the
 * one-euro filter passes almost whole (fast motion opens its cutoff): a visible jump of the mouth or head. The ease
 * costs only a short lag in that first second; after the window the chosen set is fixed until recalibrate(), and the
 * neutral in use lands exactly on it (snapped once within SNAP_PX), so a performer holding still gets identical frames.
 * recalibrate() runs the same procedure again on the next frames (the same frames give the same neutral), easing from
 * the old neutral instead of jumping.
 */
const CALIB_MS = 2000;
const CALIB_MIN_FRAMES = 15;
/** Storage for the window (2 s at up to 120 fps); the window closes early when it is full. */
const CALIB_MAX_FRAMES = 240;
/** At most this many relaxed frames are averaged into the neutral (tracker noise averages out; ~0.25 s at 30 fps). */
const NEUTRAL_FRAMES = 8;
/** Frames whose cost is within this of the best are equally relaxed. */
const COST_SLACK = 1;
/**
 * Cost terms, each 1 at: a mouth opening (inner-lip gap / mouth width) MOUTH_UNIT above the most closed one; an eye's
 * openness EYE_UNIT (as a fraction of its median) below EYE_LOW of its median (a blink reaches 0.3-0.5 of it), or twice
 * that above EYE_HIGH (eyes wide); a head pose POSE_UNIT_DEG beyond POSE_TOL_DEG from the median pose (a tolerance:
 * the tracker's pitch moves a few degrees with the jaw, and a performer's head is never quite still).
 */
const MOUTH_UNIT = 0.04;
const EYE_LOW = 0.85;
const EYE_HIGH = 1.25;
const EYE_UNIT = 0.1;
const POSE_TOL_DEG = 5;
const POSE_UNIT_DEG = 5;
/**
 * Relaxed frames averaged with the earliest one (the anchor) must be close to it: within JOIN_MOUTH of its mouth
 * opening and JOIN_DEG of its head pose, together (the distances in these units add up to at most 1). Averaging is
 * there for the tracker's noise, not to blend two different relaxed moments (a head turned a few degrees apart, lips
 * closed and lips starting to part): such a blend is neither, and moves a relaxed start's neutral off its first frame.
 */
const JOIN_MOUTH = 0.02;
const JOIN_DEG = 2;
/** Time constant of the neutral in use easing to a new calibrated neutral. */
const NEUTRAL_TAU_MS = 150;
/** The eased neutral is snapped onto the final one when all its landmarks are this close (pixels). */
const SNAP_PX = 0.02;
/** Time constant of the ease back to neutral without a face. */
const NO_FACE_TAU_MS = 300;

/** One-euro filter parameters (latent units are face fractions and radians: all of order 0.01-0.5). */
const MIN_CUTOFF_HZ = 1.5;
const BETA = 25;
const D_CUTOFF_HZ = 1.0;
/** Latent changes below this (face fractions / radians; ~0.1 px on a 500 px face) are ignored. */
const DEAD_BAND = 2e-4;
/** Eye openness over the neutral's at which the lid is shut, and the band around neutral read as neutral (closure). */
const R_SHUT = 0.55;
const CLOSE_BAND = 0.03;
/** Openness over the neutral's beyond the band at which the lid is raised halfway to its highest (closure -0.5 at 1 + CLOSE_BAND + R_WIDE / 2). */
const R_WIDE = 0.6;

function lowpassAlpha(cutoffHz: number, dtS: number): number {
  const tau = 1 / (2 * Math.PI * cutoffHz);
  return 1 / (1 + tau / dtS);
}

/** Inserts `v` into the ascending `sorted[0..n)` (n < capacity). */
function insertSorted(sorted: Float64Array, n: number, v: number): void {
  let i = n;
  while (i > 0 && sorted[i - 1]! > v) {
    sorted[i] = sorted[i - 1]!;
    i--;
  }
  sorted[i] = v;
}

function median(sorted: Float64Array, n: number): number {
  const h = n >> 1;
  return n % 2 === 1 ? sorted[h]! : (sorted[h - 1]! + sorted[h]!) / 2;
}

/** Cost of one eye's openness `open` against its median in the window (0 within EYE_LOW..EYE_HIGH of it). */
function eyeCost(open: number, med: number): number {
  const r = med > 1e-6 ? open / med : 1;
  return Math.max(0, EYE_LOW - r) / EYE_UNIT + Math.max(0, r - EYE_HIGH) / (2 * EYE_UNIT);
}

/**
 * The calibration window (the rule is described at CALIB_MS): keeps the frames with a face of the window, scores them,
 * chooses the relaxed ones and computes their neutral. Preallocated: nothing is allocated per frame.
 */
class RelaxedNeutral {
  /** The neutral of the chosen frames: landmarks (image pixels), eye openness (36-41, 42-47), gaze, pose (degrees). */
  readonly landmarks = new Float64Array(P2);
  readonly eye = new Float64Array(2);
  readonly gaze = new Float64Array(2);
  readonly vergence = new Float64Array(2);
  readonly pose = { yaw: 0, pitch: 0, roll: 0 };
  #n = 0;
  #faceMs = 0;
  #done = false;
  #mouthMin = Infinity;
  readonly #lm = new Float32Array(CALIB_MAX_FRAMES * P2);
  readonly #mouth = new Float64Array(CALIB_MAX_FRAMES);
  readonly #eyeL = new Float64Array(CALIB_MAX_FRAMES);
  readonly #eyeR = new Float64Array(CALIB_MAX_FRAMES);
  readonly #yaw = new Float64Array(CALIB_MAX_FRAMES);
  readonly #pitch = new Float64Array(CALIB_MAX_FRAMES);
  readonly #roll = new Float64Array(CALIB_MAX_FRAMES);
  readonly #gazeX = new Float64Array(CALIB_MAX_FRAMES);
  readonly #gazeY = new Float64Array(CALIB_MAX_FRAMES);
  readonly #vergeX = new Float64Array(CALIB_MAX_FRAMES);
  readonly #vergeY = new Float64Array(CALIB_MAX_FRAMES);
  // Sorted copies, for the medians.
  readonly #sEyeL = new Float64Array(CALIB_MAX_FRAMES);
  readonly #sEyeR = new Float64Array(CALIB_MAX_FRAMES);
  readonly #sYaw = new Float64Array(CALIB_MAX_FRAMES);
  readonly #sPitch = new Float64Array(CALIB_MAX_FRAMES);
  readonly #sRoll = new Float64Array(CALIB_MAX_FRAMES);
  // The chosen frames (window indices, ascending).
  readonly #chosen = new Int32Array(NEUTRAL_FRAMES);
  #chosenCount = 0;
  readonly #ref = new Float64Array(P2);
  readonly #tmp = new Float64Array(P2);
  readonly #sim: Similarity = { a: 1, b: 0, tx: 0, ty: 0 };

  /** Whether the window has closed (the neutral is final). */
  get done(): boolean {
    return this.#done;
  }

  /** Starts a new window. */
  reset(): void {
    this.#n = 0;
    this.#faceMs = 0;
    this.#done = false;
    this.#mouthMin = Infinity;
    this.#chosenCount = 0;
  }

  /** Adds one frame with a face (`cur`: its landmarks; `dtMs`: time since the previous frame); updates the neutral. */
  add(track: FaceTrack, cur: Float64Array, dtMs: number): void {
    if (this.#done) return;
    const k = this.#n;
    this.#lm.set(cur, k * P2);
    const mouth = mouthOpenness(cur);
    this.#mouth[k] = mouth;
    this.#mouthMin = Math.min(this.#mouthMin, mouth);
    // The tracker's own openness (unsmoothed landmarks or the mesh's lid contours, with a fast filter that keeps
    // blinks): the landmark smoothing would flatten a blink.
    this.#eyeL[k] = track.eyes.left;
    this.#eyeR[k] = track.eyes.right;
    this.#yaw[k] = track.pose.yaw;
    this.#pitch[k] = track.pose.pitch;
    this.#roll[k] = track.pose.roll;
    this.#gazeX[k] = track.gaze.x;
    this.#gazeY[k] = track.gaze.y;
    this.#vergeX[k] = track.vergence?.x ?? 0;
    this.#vergeY[k] = track.vergence?.y ?? 0;
    insertSorted(this.#sEyeL, k, this.#eyeL[k]);
    insertSorted(this.#sEyeR, k, this.#eyeR[k]);
    insertSorted(this.#sYaw, k, track.pose.yaw);
    insertSorted(this.#sPitch, k, track.pose.pitch);
    insertSorted(this.#sRoll, k, track.pose.roll);
    this.#n = k + 1;
    if (k > 0) this.#faceMs += dtMs;
    if (this.#choose()) this.#average();
    if ((this.#faceMs >= CALIB_MS && this.#n >= CALIB_MIN_FRAMES) || this.#n >= CALIB_MAX_FRAMES) this.#done = true;
  }

  /** Scores the window's frames and chooses the relaxed ones; returns whether the choice changed. */
  #choose(): boolean {
    const n = this.#n;
    const eyeL = median(this.#sEyeL, n);
    const eyeR = median(this.#sEyeR, n);
    const yaw = median(this.#sYaw, n);
    const pitch = median(this.#sPitch, n);
    const roll = median(this.#sRoll, n);
    // Costs are recomputed for every frame: the medians move as frames come in. Cheap (n <= CALIB_MAX_FRAMES).
    let best = Infinity;
    for (let i = 0; i < n; i++) best = Math.min(best, this.#cost(i, eyeL, eyeR, yaw, pitch, roll));
    let count = 0;
    let changed = false;
    let anchor = -1;
    for (let i = 0; i < n && count < NEUTRAL_FRAMES; i++) {
      if (this.#cost(i, eyeL, eyeR, yaw, pitch, roll) > best + COST_SLACK) continue;
      if (anchor < 0) anchor = i;
      else if (!this.#joins(i, anchor)) continue;
      if (count >= this.#chosenCount || this.#chosen[count] !== i) changed = true;
      this.#chosen[count++] = i;
    }
    if (count !== this.#chosenCount) changed = true;
    this.#chosenCount = count;
    return changed;
  }

  #cost(i: number, eyeL: number, eyeR: number, yaw: number, pitch: number, roll: number): number {
    const pose = Math.hypot(this.#yaw[i]! - yaw, this.#pitch[i]! - pitch, this.#roll[i]! - roll);
    return (
      (this.#mouth[i]! - this.#mouthMin) / MOUTH_UNIT +
      eyeCost(this.#eyeL[i]!, eyeL) +
      eyeCost(this.#eyeR[i]!, eyeR) +
      Math.max(0, pose - POSE_TOL_DEG) / POSE_UNIT_DEG
    );
  }

  /** Whether frame `i` is close enough to the anchor (the earliest relaxed frame) to be averaged with it. */
  #joins(i: number, anchor: number): boolean {
    const pose = Math.hypot(
      this.#yaw[i]! - this.#yaw[anchor]!,
      this.#pitch[i]! - this.#pitch[anchor]!,
      this.#roll[i]! - this.#roll[anchor]!,
    );
    return Math.abs(this.#mouth[i]! - this.#mouth[anchor]!) / JOIN_MOUTH + pose / JOIN_DEG <= 1;
  }

  #load(i: number, dst: Float64Array): void {
    const o = i * P2;
    for (let j = 0; j < P2; j++) dst[j] = this.#lm[o + j]!;
  }

  /** The neutral of the chosen frames: their mean shape (aligned on the rigid points), at their mean placement. */
  #average(): void {
    const c = this.#chosenCount;
    const out = this.landmarks;
    const tmp = this.#tmp;
    const sim = this.#sim;
    this.#load(this.#chosen[0]!, this.#ref);
    out.set(this.#ref);
    for (let j = 1; j < c; j++) {
      this.#load(this.#chosen[j]!, tmp);
      applySimilarity(fitSimilarity(tmp, this.#ref, RIGID_POINTS, sim), tmp, tmp);
      for (let i = 0; i < P2; i++) out[i] = out[i]! + tmp[i]!;
    }
    for (let i = 0; i < P2; i++) out[i] = out[i]! / c;
    // The mean shape fitted onto each chosen frame, averaged: a similarity is linear in (a, b, tx, ty), so that is the
    // mean shape under the mean of those fits.
    let a = 0,
      b = 0,
      tx = 0,
      ty = 0;
    let eyeL = 0,
      eyeR = 0,
      gx = 0,
      gy = 0,
      vx = 0,
      vy = 0,
      yaw = 0,
      pitch = 0,
      roll = 0;
    for (let j = 0; j < c; j++) {
      const f = this.#chosen[j]!;
      this.#load(f, tmp);
      fitSimilarity(out, tmp, RIGID_POINTS, sim);
      a += sim.a;
      b += sim.b;
      tx += sim.tx;
      ty += sim.ty;
      eyeL += this.#eyeL[f]!;
      eyeR += this.#eyeR[f]!;
      gx += this.#gazeX[f]!;
      gy += this.#gazeY[f]!;
      vx += this.#vergeX[f]!;
      vy += this.#vergeY[f]!;
      yaw += this.#yaw[f]!;
      pitch += this.#pitch[f]!;
      roll += this.#roll[f]!;
    }
    sim.a = a / c;
    sim.b = b / c;
    sim.tx = tx / c;
    sim.ty = ty / c;
    applySimilarity(sim, out, out);
    this.eye[0] = eyeL / c;
    this.eye[1] = eyeR / c;
    this.gaze[0] = gx / c;
    this.gaze[1] = gy / c;
    this.vergence[0] = vx / c;
    this.vergence[1] = vy / c;
    this.pose.yaw = yaw / c;
    this.pose.pitch = pitch / c;
    this.pose.roll = roll / c;
  }
}

/**
 * Turns FaceTracks into a smoothed latent. One per session (it holds the performer's neutral); allocation-free per
 * frame.
 */
export class ExpressionEncoder {
  readonly latent = new Float64Array(LATENT_SIZE);
  /**
   * Whether the calibration window has closed: the neutral is fixed until recalibrate() (the neutral in use may still
   * be easing onto it for a few frames).
   */
  calibrated = false;
  #raw = new Float64Array(LATENT_SIZE);
  #dx = new Float64Array(LATENT_SIZE);
  #lastTs = -1;
  #hasState = false;
  readonly #calib = new RelaxedNeutral();
  // The neutral in use: the calibrated one, or on its way to it (see CALIB_MS).
  #neutral = new Float64Array(P2);
  #neutralEye = new Float64Array(2);
  #neutralGaze = new Float64Array(2);
  #neutralVerge = new Float64Array(2);
  #neutralPose = { yaw: 0, pitch: 0, roll: 0 };
  #neutralMouth = 0;
  /** Whether a neutral is in use (false until the first frame with a face). */
  #hasNeutral = false;
  /** Whether the neutral in use is the final calibrated one (nothing left to do per frame). */
  #settled = false;
  #nf: FaceFrame = { ox: 0, oy: 0, ux: 1, uy: 0, width: 1, height: 1, iod: 1 };
  #sim: Similarity = { a: 1, b: 0, tx: 0, ty: 0 };
  #aligned = new Float64Array(P2);
  #cur = new Float64Array(P2);

  /**
   * Calibrates the neutral again: the next ~2 s of frames with a face are scored and the most relaxed ones become the
   * neutral, as at the start; the neutral in use eases from the old one to the new one.
   */
  recalibrate(): void {
    this.calibrated = false;
    this.#settled = false;
    this.#calib.reset();
  }

  /** The performer's neutral landmarks in use (image pixels of the driving frames; tests and tools, read only). */
  get neutral(): Readonly<Float64Array> {
    return this.#neutral;
  }

  /** The performer's neutral mouth openness (inner-lip gap / mouth width), for retarget(). */
  get neutralMouthOpen(): number {
    return this.#neutralMouth;
  }

  /** The performer's neutral absolute head pose (degrees), for poseMode 'absolute'. */
  get neutralPose(): { yaw: number; pitch: number; roll: number } {
    return this.#neutralPose;
  }

  /** Updates the smoothed latent from one driving frame (`track` null: no face). Returns `latent`. */
  update(track: FaceTrack | null, tsMs: number): Float64Array {
    const dtS = this.#lastTs < 0 ? 1 / 30 : Math.min(0.5, Math.max(1e-3, (tsMs - this.#lastTs) / 1000));
    this.#lastTs = tsMs;
    if (!track) {
      // Ease back to neutral; keep the filter state consistent for when the face comes back.
      const k = Math.exp((-dtS * 1000) / NO_FACE_TAU_MS);
      for (let i = 0; i < LATENT_SIZE; i++) {
        this.latent[i] = this.latent[i]! * k;
        this.#dx[i] = 0;
      }
      return this.latent;
    }
    const lm = track.landmarks;
    for (let i = 0; i < P2; i++) this.#cur[i] = lm[i]!;
    if (!this.#settled) this.#calibrate(track, dtS);
    this.#measure(track);
    this.#filter(dtS);
    return this.latent;
  }

  /** Adds the frame to the calibration window (while it runs) and moves the neutral in use towards its neutral. */
  #calibrate(track: FaceTrack, dtS: number): void {
    const c = this.#calib;
    if (!c.done) {
      c.add(track, this.#cur, dtS * 1000);
      if (c.done) this.calibrated = true;
    }
    const neu = this.#neutral;
    const t = c.landmarks;
    const p = this.#neutralPose;
    if (!this.#hasNeutral) {
      this.#hasNeutral = true;
      this.#adopt();
    } else {
      const w = 1 - Math.exp((-dtS * 1000) / NEUTRAL_TAU_MS);
      let maxDiff = 0;
      for (let i = 0; i < P2; i++) {
        const v = neu[i]! + (t[i]! - neu[i]!) * w;
        neu[i] = v;
        maxDiff = Math.max(maxDiff, Math.abs(t[i]! - v));
      }
      for (let i = 0; i < 2; i++) {
        this.#neutralEye[i] = this.#neutralEye[i]! + (c.eye[i]! - this.#neutralEye[i]!) * w;
        this.#neutralGaze[i] = this.#neutralGaze[i]! + (c.gaze[i]! - this.#neutralGaze[i]!) * w;
        this.#neutralVerge[i] = this.#neutralVerge[i]! + (c.vergence[i]! - this.#neutralVerge[i]!) * w;
      }
      p.yaw += (c.pose.yaw - p.yaw) * w;
      p.pitch += (c.pose.pitch - p.pitch) * w;
      p.roll += (c.pose.roll - p.roll) * w;
      if (c.done && maxDiff < SNAP_PX) this.#adopt();
    }
    faceFrame(neu, this.#nf);
    this.#neutralMouth = mouthOpenness(neu);
  }

  /** Takes the calibration's neutral as it is; once the window has closed, that is the end of calibration. */
  #adopt(): void {
    const c = this.#calib;
    this.#neutral.set(c.landmarks);
    this.#neutralEye.set(c.eye);
    this.#neutralGaze.set(c.gaze);
    this.#neutralVerge.set(c.vergence);
    this.#neutralPose.yaw = c.pose.yaw;
    this.#neutralPose.pitch = c.pose.pitch;
    this.#neutralPose.roll = c.pose.roll;
    this.#settled = c.done;
  }

  #measure(track: FaceTrack): void {
    const raw = this.#raw;
    const cur = this.#cur;
    const neu = this.#neutral;
    const nf = this.#nf;
    // Neutral -> current similarity: the rigid head motion in the image plane.
    const s = fitSimilarity(neu, cur, RIGID_POINTS, this.#sim);
    const scale = Math.hypot(s.a, s.b);
    raw[L_ROLL] = Math.atan2(s.b, s.a);
    raw[L_ZOOM] = Math.log(scale);
    // Face centre motion, in units of the neutral face width (image axes).
    const cx = nf.ox - nf.uy * nf.height * 0.45;
    const cy = nf.oy + nf.ux * nf.height * 0.45;
    raw[L_TX] = (s.a * cx - s.b * cy + s.tx - cx) / nf.width;
    raw[L_TY] = (s.b * cx + s.a * cy + s.ty - cy) / nf.width;
    // Current landmarks in the neutral's frame (inverse similarity, done directly).
    const d = s.a * s.a + s.b * s.b;
    const ia = s.a / d;
    const ib = -s.b / d;
    const al = this.#aligned;
    for (let i = 0; i < P2; i += 2) {
      const x = cur[i]! - s.tx;
      const y = cur[i + 1]! - s.ty;
      al[i] = ia * x - ib * y;
      al[i + 1] = ib * x + ia * y;
    }
    // Displacements in the neutral face frame (x along the eye line, y down the face), in face units.
    const vx = -nf.uy; // face y axis
    const vy = nf.ux;
    for (let i = 0; i < N_LANDMARKS; i++) {
      const ddx = al[2 * i]! - neu[2 * i]!;
      const ddy = al[2 * i + 1]! - neu[2 * i + 1]!;
      raw[2 * i] = (ddx * nf.ux + ddy * nf.uy) / nf.width;
      raw[2 * i + 1] = (ddx * vx + ddy * vy) / nf.height;
    }
    // Rigid yaw/pitch: displacement explained by generic depth (in width units) over the rigid points.
    let sx = 0,
      sy = 0,
      szz = 0;
    for (const i of RIGID_POINTS) {
      const z = GENERIC_DEPTH[i]! - Z_RIGID_MEAN;
      sx += z * raw[2 * i]!;
      sy += z * raw[2 * i + 1]! * (nf.height / nf.width);
      szz += z * z;
    }
    const yaw = sx / szz;
    const pitch = sy / szz;
    raw[L_YAW] = yaw;
    raw[L_PITCH] = pitch;
    for (let i = 0; i < N_LANDMARKS; i++) {
      const z = GENERIC_DEPTH[i]! - Z_RIGID_MEAN;
      raw[2 * i] = raw[2 * i]! - z * yaw;
      raw[2 * i + 1] = raw[2 * i + 1]! - (z * pitch * nf.width) / nf.height;
    }
    // Eyes: closure from openness relative to neutral (0 neutral, 1 closed, < 0 wider than neutral).
    raw[L_CLOSE_L] = closure(track.eyes.left, this.#neutralEye[0]!);
    raw[L_CLOSE_R] = closure(track.eyes.right, this.#neutralEye[1]!);
    raw[L_GAZE_X] = clamp(track.gaze.x - this.#neutralGaze[0]!, -1, 1);
    raw[L_GAZE_Y] = clamp(track.gaze.y - this.#neutralGaze[1]!, -1, 1);
    raw[L_VERGE_X] = track.vergence ? clamp(track.vergence.x - this.#neutralVerge[0]!, -0.6, 0.6) : 0;
    raw[L_VERGE_Y] = track.vergence ? clamp(track.vergence.y - this.#neutralVerge[1]!, -0.6, 0.6) : 0;
  }

  #filter(dtS: number): void {
    const raw = this.#raw;
    const out = this.latent;
    if (!this.#hasState) {
      out.set(raw);
      this.#dx.fill(0);
      this.#hasState = true;
      return;
    }
    const ad = lowpassAlpha(D_CUTOFF_HZ, dtS);
    for (let i = 0; i < LATENT_SIZE; i++) {
      const prev = out[i]!;
      const dx = (raw[i]! - prev) / dtS;
      const edx = this.#dx[i]! + ad * (dx - this.#dx[i]!);
      this.#dx[i] = edx;
      // A dead band: sub-pixel residual creep (the tracker's own smoothing converging) must not change the
      // picture, so a performer holding still gets identical frames.
      if (Math.abs(raw[i]! - prev) < DEAD_BAND) continue;
      // Lid closure passes straight through: the tracker already filtered it with a filter that keeps blinks, and
      // a blink (100-150 ms) must reach closed in the frame the performer's lid does.
      if (i === L_CLOSE_L || i === L_CLOSE_R) {
        out[i] = raw[i]!;
        continue;
      }
      const a = lowpassAlpha(MIN_CUTOFF_HZ + BETA * Math.abs(edx), dtS);
      out[i] = prev + a * (raw[i]! - prev);
    }
  }
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

function closure(open: number, neutral: number): number {
  if (!(neutral > 0.02)) return 0;
  // Closed at R_SHUT of the neutral opening (blinks reach ~0.2-0.3; a wink, whose cheek pushes the lower lid up and
  // whose lids squeeze, measures ~0.5-0.55 when the eye is shut), and in proportion on the way there: a squint, a
  // half-blink, a glance down and the small lid motions of speech all move the lid (a dead zone here flattened
  // everything between 0.85 and 1 of the neutral, so the avatar's lids stood still while the performer's moved). A
  // narrow band at neutral keeps tracker noise off a still lid. Wider than neutral: negative.
  const r = open / neutral;
  if (r < 1 - CLOSE_BAND) return Math.min(1, (1 - CLOSE_BAND - r) / (1 - CLOSE_BAND - R_SHUT));
  if (r > 1 + CLOSE_BAND) return Math.max(-0.5, -(r - 1 - CLOSE_BAND) / R_WIDE);
  return 0;
}

/** The portrait geometry retargeting needs (all in crop grid units). */
export interface PortraitGeometry {
  /** 68 landmarks. */
  landmarks: Float64Array;
  frame: FaceFrame;
  /** Rigid head-ring points (move with the head, not with expression). */
  ring: Float64Array;
  /** The portrait's own absolute head pose (degrees), for poseMode 'absolute'. */
  pose: { yaw: number; pitch: number; roll: number };
}

/** Pairs (upper lid, lower lid) per eye. */
const LIDS: readonly (readonly [number, number])[] = [
  [37, 41],
  [38, 40],
  [43, 47],
  [44, 46],
];
const INNER_LIPS: readonly (readonly [number, number])[] = [
  [61, 67],
  [62, 66],
  [63, 65],
];

/**
 * The inner lips' smallest gap (face heights) in the warp's targets: a portrait whose lips part closes them to this,
 * not to nothing; squeezing the gap flatter makes the thin-plate spline overshoot and fold the lips' inside over
 * itself (a Jacobian determinant below zero between the lips on ~40% of talking frames at 0.004).
 */
const MIN_LIP_GAP = 0.012;

/**
 * Limits on the head motion applied to the portrait, each reached smoothly (softLimit: the motion follows the driver
 * one to one up to 3/4 of the limit, then is damped towards it, never clipped). Roll is rigid (the head layer turns
 * as one piece), so it follows the driver up to ~21 degrees and stops at ~29. Yaw and pitch are shown by the face's
 * depth parallax on a 2D picture: the far cheek folds beyond ~20 degrees of turn, so the portrait gets 0.65 of the
 * performer's turn, one to one up to ~15 degrees of portrait turn, at most 20.
 */
const MAX_ANGLE = 0.35;
/** Fraction of the performer's yaw/pitch given to the portrait. */
const ROTATION_GAIN = 0.65;
const MAX_ROLL = 0.5;
const MAX_SHIFT = 0.15;
/** Leaning in or back: the head scales with the performer's, up to the margin the outer ellipse leaves (prepare.ts). */
const MAX_LOG_ZOOM = 0.15;

/** `v` one to one up to 3/4 of `limit`, then damped smoothly (tanh) towards `limit`; odd in v. */
export function softLimit(v: number, limit: number): number {
  const knee = 0.75 * limit;
  const a = Math.abs(v);
  if (a <= knee) return v;
  const room = limit - knee;
  return Math.sign(v) * (knee + room * Math.tanh((a - knee) / room));
}

/** Lips and chin: which landmarks close the mouth by moving up (lower lip, chin) or down (upper lip). */
const CLOSES_UP = new Set([5, 6, 7, 8, 9, 10, 11, 55, 56, 57, 58, 59, 65, 66, 67]);
const CLOSES_DOWN = new Set([49, 50, 51, 52, 53, 61, 62, 63]);

/**
 * Maps `latent` onto the portrait: writes 68 target landmarks then the ring points into `out` (grid units).
 * `performerPose` is the neutral's absolute pose (used in poseMode 'absolute'); `performerMouthOpen` the neutral's
 * mouth openness: a performer whose neutral has the mouth open (they started mid-word) can close it by more than
 * the portrait's own opening, so the closing part of the lip and chin motion is scaled by portrait / performer
 * opening (the lips would cross and the chin fold into them otherwise). `maxRoll`: the roll limit (radians; a
 * portrait without a head layer, whose warp pins the background around the head, folds beyond ~0.3).
 */
export function retarget(
  geo: PortraitGeometry,
  latent: Float64Array,
  settings: AvatarSettings,
  performerPose: { yaw: number; pitch: number; roll: number },
  out: Float64Array,
  performerMouthOpen = 0,
  maxRoll = MAX_ROLL,
): void {
  const P = geo.landmarks;
  const f = geo.frame;
  const k = settings.expressionStrength;
  const vx = -f.uy;
  const vy = f.ux;
  const lipsOn = settings.lipRetargeting;
  const eyesOn = settings.eyeRetargeting;
  const portraitOpen = mouthOpenness(P);
  const closeGain = performerMouthOpen > portraitOpen ? portraitOpen / performerMouthOpen : 1;
  // 1. Expression displacements in the portrait's frame and sizes.
  for (let i = 0; i < N_LANDMARKS; i++) {
    let ex = latent[2 * i]! * k;
    let ey = latent[2 * i + 1]! * k;
    if (!lipsOn && i >= 48) {
      ex = 0;
      ey = 0;
    }
    if ((ey < 0 && CLOSES_UP.has(i)) || (ey > 0 && CLOSES_DOWN.has(i))) ey *= closeGain;
    const px = ex * f.width;
    const py = ey * f.height;
    out[2 * i] = P[2 * i]! + px * f.ux + py * vx;
    out[2 * i + 1] = P[2 * i + 1]! + px * f.uy + py * vy;
  }
  // 2. Eyes: the whole eye follows its mean displacement; the lids follow the closure (blink, wink, wide eyes).
  for (const [e, ci] of [
    [36, L_CLOSE_L],
    [42, L_CLOSE_R],
  ] as const) {
    let mx = 0,
      my = 0;
    for (let i = e; i < e + 6; i++) {
      mx += out[2 * i]! - P[2 * i]!;
      my += out[2 * i + 1]! - P[2 * i + 1]!;
    }
    mx /= 6;
    my /= 6;
    for (let i = e; i < e + 6; i++) {
      out[2 * i] = P[2 * i]! + mx;
      out[2 * i + 1] = P[2 * i + 1]! + my;
    }
    // Closing lids are painted by the generator (eyelidPolygons); wider-than-neutral eyes raise the upper lid.
    const c = eyesOn ? latent[ci]! * Math.min(1, k) : 0;
    if (c < 0) {
      for (const [u, l] of LIDS) {
        if (u < e || u >= e + 6) continue;
        out[2 * u] = out[2 * u]! + (out[2 * l]! - out[2 * u]!) * c * 0.4;
        out[2 * u + 1] = out[2 * u + 1]! + (out[2 * l + 1]! - out[2 * u + 1]!) * c * 0.4;
      }
    }
  }
  // 3. Lips never cross: keep the lower inner lip at least a hair below the upper one (along the face's y).
  const minGap = MIN_LIP_GAP * f.height;
  for (const [u, l] of INNER_LIPS) {
    const gu = out[2 * u]! * vx + out[2 * u + 1]! * vy;
    const gl = out[2 * l]! * vx + out[2 * l + 1]! * vy;
    if (gl - gu < minGap) {
      const fix = (minGap - (gl - gu)) / 2;
      out[2 * u] = out[2 * u]! - vx * fix;
      out[2 * u + 1] = out[2 * u + 1]! - vy * fix;
      out[2 * l] = out[2 * l]! + vx * fix;
      out[2 * l + 1] = out[2 * l + 1]! + vy * fix;
    }
  }
  // Ring points: start where they are.
  const nRing = geo.ring.length / 2;
  for (let i = 0; i < geo.ring.length; i++) out[P2 + i] = geo.ring[i]!;
  if (!settings.headMotion) return;
  // 4. Head motion about the face centre: yaw/pitch with the generic depth, then zoom and roll, then translation.
  let yaw = latent[L_YAW]!;
  let pitch = latent[L_PITCH]!;
  let roll = latent[L_ROLL]!;
  if (settings.poseMode === 'absolute') {
    // The performer's neutral pose relative to the portrait's own pose, added to the relative motion. The tracker's
    // yaw (> 0: nose to image right) and roll (> 0: clockwise) match this module's signs; its pitch is > 0 with the
    // nose up, while here pitch > 0 moves the nose down.
    yaw += (performerPose.yaw - geo.pose.yaw) * DEG;
    pitch -= (performerPose.pitch - geo.pose.pitch) * DEG;
    roll += (performerPose.roll - geo.pose.roll) * DEG;
  }
  yaw = softLimit(yaw * ROTATION_GAIN, MAX_ANGLE);
  pitch = softLimit(pitch * ROTATION_GAIN, MAX_ANGLE);
  roll = softLimit(roll, maxRoll);
  const zoom = Math.exp(softLimit(latent[L_ZOOM]!, MAX_LOG_ZOOM));
  const tx = softLimit(latent[L_TX]!, MAX_SHIFT) * f.width;
  const ty = softLimit(latent[L_TY]!, MAX_SHIFT) * f.width;
  const cx = f.ox + vx * f.height * 0.45;
  const cy = f.oy + vy * f.height * 0.45;
  const cyaw = Math.cos(yaw),
    syaw = Math.sin(yaw);
  const cpit = Math.cos(pitch),
    spit = Math.sin(pitch);
  const cr = Math.cos(roll) * zoom,
    sr = Math.sin(roll) * zoom;
  const total = N_LANDMARKS + nRing;
  for (let i = 0; i < total; i++) {
    const x = out[2 * i]! - cx;
    const y = out[2 * i + 1]! - cy;
    // Face-frame coordinates.
    let fx = x * f.ux + y * f.uy;
    let fy = x * vx + y * vy;
    const z = i < N_LANDMARKS ? (GENERIC_DEPTH[i]! - Z_RIGID_MEAN) * f.width : 0;
    const fx2 = fx * cyaw + z * syaw;
    const z2 = z * cyaw - fx * syaw;
    fy = fy * cpit + z2 * spit;
    fx = fx2;
    // Back to image axes, then roll/zoom about the centre and translate.
    const ix = fx * f.ux + fy * vx;
    const iy = fx * f.uy + fy * vy;
    out[2 * i] = cx + cr * ix - sr * iy + tx;
    out[2 * i + 1] = cy + sr * ix + cr * iy + ty;
  }
}

/**
 * The closing eyelid of one eye as polygons in the same units as `pts` (the target landmarks): `lid` covers the eye
 * opening from a little above the upper lid down to the lid's edge at closure `c` (0 open, 1 closed), `lash` is a
 * thin dark band along that edge. Writes 6 vertices into lidX/lidY and 4 into lashX/lashY; returns false when the
 * eye is open (nothing to paint).
 */
export function eyelidPolygons(
  pts: Float64Array,
  eye: 36 | 42,
  c: number,
  lidX: Float64Array,
  lidY: Float64Array,
  lashX: Float64Array,
  lashY: Float64Array,
): boolean {
  if (!(c > 0.04)) return false;
  const cc = Math.min(1, c);
  const x = (i: number): number => pts[2 * i]!;
  const y = (i: number): number => pts[2 * i + 1]!;
  const c0 = eye,
    u1 = eye + 1,
    u2 = eye + 2,
    c1 = eye + 3,
    l2 = eye + 4,
    l1 = eye + 5;
  // The lid edge at closure c, per upper-lid point (towards its lower-lid partner, 96% of the way when closed).
  const e1x = x(u1) + (x(l1) - x(u1)) * cc * 0.96;
  const e1y = y(u1) + (y(l1) - y(u1)) * cc * 0.96;
  const e2x = x(u2) + (x(l2) - x(u2)) * cc * 0.96;
  const e2y = y(u2) + (y(l2) - y(u2)) * cc * 0.96;
  // Upper edge: a little above the open lid, so the original lash line is covered too.
  const h = (0.25 * (Math.hypot(x(l1) - x(u1), y(l1) - y(u1)) + Math.hypot(x(l2) - x(u2), y(l2) - y(u2)))) / 2;
  const ex = x(c1) - x(c0);
  const ey = y(c1) - y(c0);
  const el = Math.hypot(ex, ey) || 1;
  // Unit normal pointing up the face (the eye axis runs left to right in the image for both eyes).
  const nx = ey / el;
  const ny = -ex / el;
  lidX[0] = x(c0);
  lidY[0] = y(c0);
  lidX[1] = x(u1) + nx * h;
  lidY[1] = y(u1) + ny * h;
  lidX[2] = x(u2) + nx * h;
  lidY[2] = y(u2) + ny * h;
  lidX[3] = x(c1);
  lidY[3] = y(c1);
  lidX[4] = e2x;
  lidY[4] = e2y;
  lidX[5] = e1x;
  lidY[5] = e1y;
  // Lash band: from the edge up by a fraction of the eye height, widening as the eye closes.
  const t = Math.max(0.6 * h, 0.12 * el) * (0.4 + 0.6 * cc);
  lashX[0] = e1x;
  lashY[0] = e1y;
  lashX[1] = e2x;
  lashY[1] = e2y;
  lashX[2] = e2x + nx * t;
  lashY[2] = e2y + ny * t;
  lashX[3] = e1x + nx * t;
  lashY[3] = e1y + ny * t;
  return true;
}
