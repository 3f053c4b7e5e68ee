/**
 * Head pose from the 68 landmarks: a small Levenberg-Marquardt PnP against a generic 3D face.
 *
 * Camera: pinhole, focal length = frame width, principal point = frame centre, x right, y down, z forward.
 * The 3D face is a generic adult head in millimetres in the same axes (x towards the image right when facing the
 * camera, y down, z away from the camera), origin at the nose tip. Only points that expressions move little are
 * used (nose, eye corners, nasion), plus the mouth corners and the chin at half weight; the jaw contour is left out
 * because its landmarks slide along the cheek when the head turns.
 *
 * Angles (degrees): yaw > 0 when the nose points towards the image right, pitch > 0 when it points up,
 * roll > 0 when the face is rotated clockwise in the image. A mirrored image flips the signs of yaw and roll.
 */
import type { HeadPose } from './types.js';

/**
 * [landmark index, x, y, z (mm), weight]. x and y are dlib's own mean shape (the predictor's initial_shape, i.e.
 * the average training face, mostly frontal) scaled to 90 mm between the outer eye corners, so that a face looking
 * into the camera solves to about zero yaw, pitch and roll; z are typical adult depths behind the nose tip.
 */
const MODEL: readonly (readonly [number, number, number, number, number])[] = [
  [30, 0, 0, 0, 1], // nose tip
  [27, 0, -38, 22, 1], // nasion
  [31, -15, 8.7, 18, 1], // nostril wing (image left)
  [33, 0, 13.6, 14, 1], // subnasale
  [35, 15, 8.7, 18, 1], // nostril wing (image right)
  [36, -45, -36.4, 38, 1], // outer eye corner (image left)
  [39, -19, -34.5, 28, 1], // inner eye corner
  [42, 19, -34.5, 28, 1],
  [45, 45, -36.4, 38, 1],
  [48, -28.8, 32.1, 30, 0.5], // mouth corners
  [54, 28.8, 32.1, 30, 0.5],
  [8, 0, 82.2, 30, 0.5], // chin
];

/** The generic 3D face used by the solver (landmark index, x, y, z in mm, weight). */
export const POSE_MODEL = MODEL;

const N = MODEL.length;
const DEG = 180 / Math.PI;

/**
 * Solves head pose for a stream of frames. Keeps the previous solution as the starting point (warm start) and
 * all scratch in preallocated arrays: `solve` allocates nothing.
 */
export class PoseSolver {
  // Rotation matrix (row-major) and translation of the current estimate.
  readonly #R = new Float64Array(9);
  readonly #t = new Float64Array(3);
  readonly #Rn = new Float64Array(9);
  readonly #tn = new Float64Array(3);
  readonly #JtJ = new Float64Array(36);
  readonly #Jtr = new Float64Array(6);
  readonly #A = new Float64Array(36);
  readonly #dx = new Float64Array(6);
  readonly #obs = new Float64Array(2 * N);
  readonly #ju = new Float64Array(6);
  readonly #jv = new Float64Array(6);
  #warm = false;
  /** Root-mean-square reprojection error of the last solve, in pixels. */
  rmsError = 0;

  /** Forget the previous solution (next solve starts from a frontal face). */
  reset(): void {
    this.#warm = false;
  }

  /**
   * @param landmarks 68 points x0,y0,x1,y1,... in frame pixels.
   * @param out receives yaw/pitch/roll (degrees) and tx/ty/tz (mm, camera frame).
   */
  solve(landmarks: ArrayLike<number>, width: number, height: number, out: HeadPose): HeadPose {
    const f = width;
    const cx = width / 2;
    const cy = height / 2;
    const obs = this.#obs;
    for (let i = 0; i < N; i++) {
      const k = MODEL[i]![0];
      obs[2 * i] = landmarks[2 * k]!;
      obs[2 * i + 1] = landmarks[2 * k + 1]!;
    }
    const R = this.#R;
    const t = this.#t;
    if (!this.#warm || !(t[2]! > 0)) this.#init(f, cx, cy);
    let err = this.#cost(R, t, f, cx, cy);
    let lambda = 1e-3;
    for (let it = 0; it < 20; it++) {
      this.#normalEquations(f, cx, cy);
      const A = this.#A;
      const JtJ = this.#JtJ;
      let improved = false;
      for (let tries = 0; tries < 6; tries++) {
        for (let i = 0; i < 36; i++) A[i] = JtJ[i]!;
        for (let i = 0; i < 6; i++) A[i * 7] = JtJ[i * 7]! * (1 + lambda) + 1e-9;
        if (!solve6(A, this.#Jtr, this.#dx)) break;
        this.#apply(this.#dx);
        const e2 = this.#cost(this.#Rn, this.#tn, f, cx, cy);
        if (e2 < err && this.#tn[2]! > 0) {
          R.set(this.#Rn);
          t.set(this.#tn);
          const gain = err - e2;
          err = e2;
          lambda = Math.max(lambda / 10, 1e-7);
          improved = true;
          if (gain < 1e-6 * err + 1e-9) it = 100;
          break;
        }
        lambda *= 10;
      }
      if (!improved) break;
    }
    this.#warm = true;
    let wsum = 0;
    for (let i = 0; i < N; i++) wsum += MODEL[i]![4];
    this.rmsError = Math.sqrt(err / wsum);
    // R = Rz(roll) * Ry(yawY) * Rx(pitchX): pitchX = atan2(R21, R22), yawY = asin(-R20), roll = atan2(R10, R00).
    const r20 = Math.max(-1, Math.min(1, R[6]!));
    const yawY = Math.asin(-r20);
    const pitchX = Math.atan2(R[7]!, R[8]!);
    const rollZ = Math.atan2(R[3]!, R[0]!);
    // Model forward is -z: a positive rotation about y turns the nose towards -x (image left), about x towards +y
    // (down); the public signs are "nose right" and "nose up".
    out.yaw = -yawY * DEG;
    out.pitch = -pitchX * DEG;
    out.roll = rollZ * DEG;
    out.tx = t[0]!;
    out.ty = t[1]!;
    out.tz = t[2]!;
    return out;
  }

  /** Frontal start: identity rotation, depth from the outer-eye-corner distance, position from the nose tip. */
  #init(f: number, cx: number, cy: number): void {
    const obs = this.#obs;
    const R = this.#R;
    R.fill(0);
    R[0] = R[4] = R[8] = 1;
    const ex = obs[2 * 8]! - obs[2 * 5]!;
    const ey = obs[2 * 8 + 1]! - obs[2 * 5 + 1]!;
    const eyePx = Math.max(1, Math.hypot(ex, ey));
    const z = (f * 90) / eyePx;
    const t = this.#t;
    t[2] = z;
    t[0] = ((obs[0]! - cx) * z) / f;
    t[1] = ((obs[1]! - cy) * z) / f;
  }

  #cost(R: Float64Array, t: Float64Array, f: number, cx: number, cy: number): number {
    const obs = this.#obs;
    let e = 0;
    for (let i = 0; i < N; i++) {
      const m = MODEL[i]!;
      const X = R[0]! * m[1] + R[1]! * m[2] + R[2]! * m[3] + t[0]!;
      const Y = R[3]! * m[1] + R[4]! * m[2] + R[5]! * m[3] + t[1]!;
      const Z = R[6]! * m[1] + R[7]! * m[2] + R[8]! * m[3] + t[2]!;
      if (!(Z > 1e-6)) return Infinity;
      const du = (f * X) / Z + cx - obs[2 * i]!;
      const dv = (f * Y) / Z + cy - obs[2 * i + 1]!;
      e += m[4] * (du * du + dv * dv);
    }
    return e;
  }

  /** J^T J and J^T r for the parameters (rotation increment w applied on the left: R <- exp([w]x) R, then t). */
  #normalEquations(f: number, cx: number, cy: number): void {
    const R = this.#R;
    const t = this.#t;
    const JtJ = this.#JtJ;
    const Jtr = this.#Jtr;
    const obs = this.#obs;
    JtJ.fill(0);
    Jtr.fill(0);
    for (let i = 0; i < N; i++) {
      const m = MODEL[i]!;
      const w = m[4];
      // Q = R P (rotated point), X = Q + t.
      const qx = R[0]! * m[1] + R[1]! * m[2] + R[2]! * m[3];
      const qy = R[3]! * m[1] + R[4]! * m[2] + R[5]! * m[3];
      const qz = R[6]! * m[1] + R[7]! * m[2] + R[8]! * m[3];
      const X = qx + t[0]!;
      const Y = qy + t[1]!;
      const Z = qz + t[2]!;
      const iz = 1 / Z;
      const ru = f * X * iz + cx - obs[2 * i]!;
      const rv = f * Y * iz + cy - obs[2 * i + 1]!;
      // d(u)/dX = (f/Z, 0, -fX/Z^2); d(v)/dX = (0, f/Z, -fY/Z^2). dX/dw = -[Q]x, dX/dt = I.
      const ax = f * iz;
      const az = -f * X * iz * iz;
      const by = f * iz;
      const bz = -f * Y * iz * iz;
      // -[Q]x = [[0, qz, -qy], [-qz, 0, qx], [qy, -qx, 0]]
      const ju0 = ax * 0 + az * qy;
      const ju1 = ax * qz + az * -qx;
      const ju2 = ax * -qy;
      const jv0 = by * -qz + bz * qy;
      const jv1 = bz * -qx;
      const jv2 = by * qx;
      const ju = this.#ju;
      const jv = this.#jv;
      ju[0] = ju0;
      ju[1] = ju1;
      ju[2] = ju2;
      ju[3] = ax;
      ju[4] = 0;
      ju[5] = az;
      jv[0] = jv0;
      jv[1] = jv1;
      jv[2] = jv2;
      jv[3] = 0;
      jv[4] = by;
      jv[5] = bz;
      for (let a = 0; a < 6; a++) {
        Jtr[a] = Jtr[a]! + w * (ju[a]! * ru + jv[a]! * rv);
        for (let b = a; b < 6; b++) JtJ[a * 6 + b] = JtJ[a * 6 + b]! + w * (ju[a]! * ju[b]! + jv[a]! * jv[b]!);
      }
    }
    for (let a = 0; a < 6; a++) for (let b = 0; b < a; b++) JtJ[a * 6 + b] = JtJ[b * 6 + a]!;
  }

  /** Candidate = current estimate moved by -dx (Gauss-Newton step solves JtJ dx = Jt r). */
  #apply(dx: Float64Array): void {
    const wx = -dx[0]!;
    const wy = -dx[1]!;
    const wz = -dx[2]!;
    const th = Math.hypot(wx, wy, wz);
    const Rn = this.#Rn;
    const R = this.#R;
    // Rodrigues: exp([w]x)
    let r00 = 1;
    let r01 = 0;
    let r02 = 0;
    let r10 = 0;
    let r11 = 1;
    let r12 = 0;
    let r20 = 0;
    let r21 = 0;
    let r22 = 1;
    if (th > 1e-12) {
      const kx = wx / th;
      const ky = wy / th;
      const kz = wz / th;
      const c = Math.cos(th);
      const s = Math.sin(th);
      const v = 1 - c;
      r00 = c + kx * kx * v;
      r01 = kx * ky * v - kz * s;
      r02 = kx * kz * v + ky * s;
      r10 = ky * kx * v + kz * s;
      r11 = c + ky * ky * v;
      r12 = ky * kz * v - kx * s;
      r20 = kz * kx * v - ky * s;
      r21 = kz * ky * v + kx * s;
      r22 = c + kz * kz * v;
    }
    for (let c = 0; c < 3; c++) {
      const a = R[c]!;
      const b = R[3 + c]!;
      const d = R[6 + c]!;
      Rn[c] = r00 * a + r01 * b + r02 * d;
      Rn[3 + c] = r10 * a + r11 * b + r12 * d;
      Rn[6 + c] = r20 * a + r21 * b + r22 * d;
    }
    this.#tn[0] = this.#t[0]! - dx[3]!;
    this.#tn[1] = this.#t[1]! - dx[4]!;
    this.#tn[2] = this.#t[2]! - dx[5]!;
  }
}

/** Solves the 6x6 system A x = b in place (Gaussian elimination with partial pivoting). False when singular. */
function solve6(A: Float64Array, b: Float64Array, x: Float64Array): boolean {
  for (let i = 0; i < 6; i++) x[i] = b[i]!;
  for (let c = 0; c < 6; c++) {
    let p = c;
    for (let r = c + 1; r < 6; r++) if (Math.abs(A[r * 6 + c]!) > Math.abs(A[p * 6 + c]!)) p = r;
    const piv = A[p * 6 + c]!;
    if (!(Math.abs(piv) > 1e-300)) return false;
    if (p !== c) {
      for (let k = 0; k < 6; k++) {
        const tmp = A[c * 6 + k]!;
        A[c * 6 + k] = A[p * 6 + k]!;
        A[p * 6 + k] = tmp;
      }
      const tb = x[c]!;
      x[c] = x[p]!;
      x[p] = tb;
    }
    for (let r = c + 1; r < 6; r++) {
      const fct = A[r * 6 + c]! / piv;
      if (fct === 0) continue;
      for (let k = c; k < 6; k++) A[r * 6 + k] = A[r * 6 + k]! - fct * A[c * 6 + k]!;
      x[r] = x[r]! - fct * x[c]!;
    }
  }
  for (let c = 5; c >= 0; c--) {
    let s = x[c]!;
    for (let k = c + 1; k < 6; k++) s -= A[c * 6 + k]! * x[k]!;
    x[c] = s / A[c * 6 + c]!;
  }
  return true;
}

/** A zero pose object (to preallocate). */
export function emptyPose(): HeadPose {
  return { yaw: 0, pitch: 0, roll: 0, tx: 0, ty: 0, tz: 0 };
}

/**
 * Projects the head's axes for drawing: writes [ox, oy, xx, xy, yx, yy, zx, zy] in pixels, the nose tip and the
 * ends of the x (image right), y (down) and z (towards the camera) axes of `length` mm.
 */
export function projectAxes(
  pose: HeadPose,
  width: number,
  height: number,
  length: number,
  out: Float64Array,
): Float64Array {
  const yawY = (-pose.yaw * Math.PI) / 180;
  const pitchX = (-pose.pitch * Math.PI) / 180;
  const roll = (pose.roll * Math.PI) / 180;
  const [cy, sy] = [Math.cos(yawY), Math.sin(yawY)];
  const [cp, sp] = [Math.cos(pitchX), Math.sin(pitchX)];
  const [cr, sr] = [Math.cos(roll), Math.sin(roll)];
  // R = Rz(roll) * Ry(yawY) * Rx(pitchX)
  const R = [
    cr * cy,
    cr * sy * sp - sr * cp,
    cr * sy * cp + sr * sp,
    sr * cy,
    sr * sy * sp + cr * cp,
    sr * sy * cp - cr * sp,
    -sy,
    cy * sp,
    cy * cp,
  ] as const;
  const f = width;
  const pts = [0, 0, 0, length, 0, 0, 0, length, 0, 0, 0, -length] as const;
  for (let i = 0; i < 4; i++) {
    const x = pts[3 * i]!;
    const y = pts[3 * i + 1]!;
    const z = pts[3 * i + 2]!;
    const X = R[0] * x + R[1] * y + R[2] * z + pose.tx;
    const Y = R[3] * x + R[4] * y + R[5] * z + pose.ty;
    const Z = Math.max(1e-3, R[6] * x + R[7] * y + R[8] * z + pose.tz);
    out[2 * i] = (f * X) / Z + width / 2;
    out[2 * i + 1] = (f * Y) / Z + height / 2;
  }
  return out;
}

/**
 * Smooths a head pose in place with a 6-channel one-euro filter (yaw, pitch, roll, tx, ty, tz); `scratch` holds the
 * six values while they pass through (no allocation).
 */
export function filterPose(
  filter: { filter(v: Float64Array, ts: number, out: Float64Array): void },
  pose: HeadPose,
  timestampMs: number,
  scratch: Float64Array,
): void {
  scratch[0] = pose.yaw;
  scratch[1] = pose.pitch;
  scratch[2] = pose.roll;
  scratch[3] = pose.tx;
  scratch[4] = pose.ty;
  scratch[5] = pose.tz;
  filter.filter(scratch, timestampMs, scratch);
  pose.yaw = scratch[0]!;
  pose.pitch = scratch[1]!;
  pose.roll = scratch[2]!;
  pose.tx = scratch[3]!;
  pose.ty = scratch[4]!;
  pose.tz = scratch[5]!;
}
