/**
 * The expression latent: what the performer does, relative to their own neutral face, normalised for face shape.
 *
 * Per driving frame (a FaceTrack): the landmarks are aligned to the performer's neutral with a similarity fit on
 * rigid points (that fit gives roll, zoom and translation); the residual is split into a rigid yaw/pitch part (fitted
 * with a generic face depth) and the expression displacement of every landmark, expressed in the neutral face's frame
 * in units of its width (x) and height (y). Eyes are measured as openness relative to neutral, gaze as the pupil
 * offset. The latent is smoothed (one-euro filter: still when the performer holds still, quick on real motion) and
 * eases back to neutral when no face is seen. The neutral is auto-calibrated over the first ~1 s of frames with a face.
 *
 * `retarget()` maps a latent onto the portrait's landmarks (in its own face frame and sizes, so a wide face drives a
 * narrow one) and applies the head motion with the same generic depth.
 */
import type { FaceTrack } from '../../../vision/types.js';
import type { AvatarSettings } from '../../../signaling/protocol.js';
import {
  applySimilarity,
  eyeOpenness,
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
export const LATENT_SIZE = P2 + 10;

const DEG = Math.PI / 180;
const Z_RIGID_MEAN = RIGID_POINTS.reduce((s, i) => s + GENERIC_DEPTH[i]!, 0) / RIGID_POINTS.length;

/**
 * Calibration: frames with a face, and how long, before the neutral is fixed. The neutral is the first frame with a
 * face (motion relative to the performer's first frame, as LivePortrait's relative mode): averaging over a second
 * put a performer who starts mid-word (or mid-laugh) into the neutral, a constant offset on every later frame; and
 * when the portrait is the performer's own first frame (self-reenactment) the reference is then exactly it.
 */
const CALIB_MIN_FRAMES = 1;
const CALIB_MS = 0;
/** Time constant of the ease back to neutral without a face. */
const NO_FACE_TAU_MS = 300;

/** One-euro filter parameters (latent units are face fractions and radians: all of order 0.01-0.5). */
const MIN_CUTOFF_HZ = 1.5;
const BETA = 25;
const D_CUTOFF_HZ = 1.0;
/** Latent changes below this (face fractions / radians; ~0.1 px on a 500 px face) are ignored. */
const DEAD_BAND = 2e-4;

function lowpassAlpha(cutoffHz: number, dtS: number): number {
  const tau = 1 / (2 * Math.PI * cutoffHz);
  return 1 / (1 + tau / dtS);
}

/**
 * Turns FaceTracks into a smoothed latent. One per session (it holds the performer's neutral); allocation-free per
 * frame.
 */
export class ExpressionEncoder {
  readonly latent = new Float64Array(LATENT_SIZE);
  /** Whether the neutral is calibrated (fixed). */
  calibrated = false;
  #raw = new Float64Array(LATENT_SIZE);
  #dx = new Float64Array(LATENT_SIZE);
  #lastTs = -1;
  #hasState = false;
  // Neutral accumulation (aligned to the first calibration frame).
  #neutralSum = new Float64Array(P2);
  #neutral = new Float64Array(P2);
  #neutralCount = 0;
  #calibStartTs = 0;
  #neutralEye = [0, 0];
  #neutralGaze = [0, 0];
  #neutralPose = { yaw: 0, pitch: 0, roll: 0 };
  #neutralMouth = 0;
  #nf: FaceFrame = { ox: 0, oy: 0, ux: 1, uy: 0, width: 1, height: 1, iod: 1 };
  #sim: Similarity = { a: 1, b: 0, tx: 0, ty: 0 };
  #aligned = new Float64Array(P2);
  #cur = new Float64Array(P2);

  /** Forgets the neutral: the next ~1 s of frames with a face calibrate it again. */
  recalibrate(): void {
    this.calibrated = false;
    this.#neutralCount = 0;
    this.#neutralSum.fill(0);
    this.#neutralEye = [0, 0];
    this.#neutralGaze = [0, 0];
    this.#neutralPose = { yaw: 0, pitch: 0, roll: 0 };
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
    if (!this.calibrated) this.#addNeutral(track, tsMs);
    this.#measure(track);
    this.#filter(dtS);
    return this.latent;
  }

  #addNeutral(track: FaceTrack, tsMs: number): void {
    const cur = this.#cur;
    if (this.#neutralCount === 0) {
      this.#calibStartTs = tsMs;
      this.#aligned.set(cur);
    } else {
      fitSimilarity(cur, this.#neutral, RIGID_POINTS, this.#sim);
      applySimilarity(this.#sim, cur, this.#aligned);
    }
    const n = ++this.#neutralCount;
    for (let i = 0; i < P2; i++) {
      this.#neutralSum[i] = this.#neutralSum[i]! + this.#aligned[i]!;
      this.#neutral[i] = this.#neutralSum[i]! / n;
    }
    const w = 1 / n;
    this.#neutralEye[0] = this.#neutralEye[0]! + (eyeOpenness(cur, 36) - this.#neutralEye[0]!) * w;
    this.#neutralEye[1] = this.#neutralEye[1]! + (eyeOpenness(cur, 42) - this.#neutralEye[1]!) * w;
    this.#neutralGaze[0] = this.#neutralGaze[0]! + (track.gaze.x - this.#neutralGaze[0]!) * w;
    this.#neutralGaze[1] = this.#neutralGaze[1]! + (track.gaze.y - this.#neutralGaze[1]!) * w;
    const p = this.#neutralPose;
    p.yaw += (track.pose.yaw - p.yaw) * w;
    p.pitch += (track.pose.pitch - p.pitch) * w;
    p.roll += (track.pose.roll - p.roll) * w;
    faceFrame(this.#neutral, this.#nf);
    this.#neutralMouth = mouthOpenness(this.#neutral);
    if (n >= CALIB_MIN_FRAMES && tsMs - this.#calibStartTs >= CALIB_MS) this.calibrated = true;
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
    raw[L_CLOSE_L] = closure(eyeOpenness(cur, 36), this.#neutralEye[0]!);
    raw[L_CLOSE_R] = closure(eyeOpenness(cur, 42), this.#neutralEye[1]!);
    raw[L_GAZE_X] = clamp(track.gaze.x - this.#neutralGaze[0]!, -1, 1);
    raw[L_GAZE_Y] = clamp(track.gaze.y - this.#neutralGaze[1]!, -1, 1);
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
  // A dead zone around neutral (tracker noise, and a neutral taken while the eyes were a little wide); closed at a
  // third of the neutral opening (blinks reach ~0.2-0.3); wider than neutral: negative.
  const r = open / neutral;
  if (r < 0.8) return Math.min(1, (0.8 - r) / 0.47);
  if (r > 1.1) return Math.max(-0.5, -(r - 1.1) / 0.6);
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

/** Limits on the head motion applied to the portrait (a 2D warp cannot show more without tearing). */
const MAX_ANGLE = 0.35;
/** Fraction of the performer's yaw/pitch given to the portrait: a 2D warp folds the far cheek beyond ~20 degrees. */
const ROTATION_GAIN = 0.65;
const MAX_ROLL = 0.3;
const MAX_SHIFT = 0.15;
/** Leaning in or back: the head scales with the performer's, up to the margin the outer ellipse leaves (prepare.ts). */
const MAX_LOG_ZOOM = 0.15;

/** Lips and chin: which landmarks close the mouth by moving up (lower lip, chin) or down (upper lip). */
const CLOSES_UP = new Set([5, 6, 7, 8, 9, 10, 11, 55, 56, 57, 58, 59, 65, 66, 67]);
const CLOSES_DOWN = new Set([49, 50, 51, 52, 53, 61, 62, 63]);

/**
 * Maps `latent` onto the portrait: writes 68 target landmarks then the ring points into `out` (grid units).
 * `performerPose` is the neutral's absolute pose (used in poseMode 'absolute'); `performerMouthOpen` the neutral's
 * mouth openness: a performer whose neutral has the mouth open (they started mid-word) can close it by more than
 * the portrait's own opening, so the closing part of the lip and chin motion is scaled by portrait / performer
 * opening (the lips would cross and the chin fold into them otherwise).
 */
export function retarget(
  geo: PortraitGeometry,
  latent: Float64Array,
  settings: AvatarSettings,
  performerPose: { yaw: number; pitch: number; roll: number },
  out: Float64Array,
  performerMouthOpen = 0,
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
  const minGap = 0.004 * f.height;
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
  yaw = clamp(yaw * ROTATION_GAIN, -MAX_ANGLE, MAX_ANGLE);
  pitch = clamp(pitch * ROTATION_GAIN, -MAX_ANGLE, MAX_ANGLE);
  roll = clamp(roll, -MAX_ROLL, MAX_ROLL);
  const zoom = Math.exp(clamp(latent[L_ZOOM]!, -MAX_LOG_ZOOM, MAX_LOG_ZOOM));
  const tx = clamp(latent[L_TX]!, -MAX_SHIFT, MAX_SHIFT) * f.width;
  const ty = clamp(latent[L_TY]!, -MAX_SHIFT, MAX_SHIFT) * f.width;
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
