/**
 * Scores from the independent face models (faceModels.ts): MediaPipe FaceMesh points (478 × x, y, z with iris) and
 * face descriptors. Pure functions, tested directly.
 *
 * Point layout (MediaPipe FaceMesh, as `@vladmandic/human` returns it): 0-467 the face mesh, 468-477 the two irises
 * (centre first, then 4 points on the rim). Eye corners: 33 / 133 (the subject's right eye, image left on a frontal
 * face) and 362 / 263 (left eye); eye openness uses the six-point eye aspect ratio on the same eyes. Lips: 40 points
 * (MediaPipe's FACEMESH_LIPS), mouth corners 61 / 291, inner lip pairs 82-87, 13-14, 312-317.
 */

/** Points per face: 468 mesh + 10 iris. */
export const MESH_POINTS = 478;
/** Points of the face mesh proper (the iris points are left out of distances). */
export const MESH_FACE_POINTS = 468;

/** Six-point eye aspect ratio indices: corner, upper, upper, corner, lower, lower (Soukupová and Čech's p1..p6). */
const EYES = {
  right: [33, 160, 158, 133, 153, 144],
  left: [362, 385, 387, 263, 373, 380],
} as const;
const IRIS_CENTRES = [468, 473] as const;

/** The 40 lip points (outer and inner contours; MediaPipe's FACEMESH_LIPS). */
export const MESH_LIPS: readonly number[] = [
  61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409, 78, 95, 88, 178, 87, 14,
  317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415,
];
/** Upper / lower inner-lip point pairs, left to right, and the mouth corners. */
const INNER_LIP_PAIRS = [
  [82, 87],
  [13, 14],
  [312, 317],
] as const;
const MOUTH_CORNERS = [61, 291] as const;

function pt(m: ArrayLike<number>, i: number): [number, number, number] {
  return [m[3 * i]!, m[3 * i + 1]!, m[3 * i + 2]!];
}

function checkMesh(m: ArrayLike<number>, what = 'mesh'): void {
  if (m.length !== MESH_POINTS * 3)
    throw new TypeError(`${what} must hold ${MESH_POINTS} points × 3 (got ${m.length} numbers)`);
}

/** Cosine similarity of two descriptors. @throws TypeError for different lengths or a zero vector. */
export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length || a.length === 0) throw new TypeError('descriptors differ in length');
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  if (!(aa > 0 && bb > 0)) throw new TypeError('cosineSimilarity: zero descriptor');
  return ab / Math.sqrt(aa * bb);
}

/** Centre of an eye: the midpoint of its two corners (image x, y). */
function eyeCentre(m: ArrayLike<number>, eye: readonly number[]): [number, number] {
  const a = pt(m, eye[0]!);
  const b = pt(m, eye[3]!);
  return [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
}

/** Inter-ocular distance of a mesh: distance between the two eye centres (corner midpoints), in image pixels. */
export function meshInterOcular(m: ArrayLike<number>): number {
  checkMesh(m);
  const r = eyeCentre(m, EYES.right);
  const l = eyeCentre(m, EYES.left);
  return Math.hypot(r[0] - l[0], r[1] - l[1]);
}

/**
 * Inter-ocular distance in 3-D (x, y and the mesh's depth): unlike the image-plane distance it does not shrink when
 * the head turns, so it normalises the 3-D (pose-free) scores.
 */
export function meshInterOcular3d(m: ArrayLike<number>): number {
  checkMesh(m);
  const c = (e: readonly number[]): [number, number, number] => {
    const a = pt(m, e[0]!);
    const b = pt(m, e[3]!);
    return [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2, (a[2] + b[2]) / 2];
  };
  const r = c(EYES.right);
  const l = c(EYES.left);
  return Math.hypot(r[0] - l[0], r[1] - l[1], r[2] - l[2]);
}

/** Mean 2-D distance between the 468 face points of two meshes (same image frame), divided by `norm`. */
export function meshPointDistance(a: ArrayLike<number>, b: ArrayLike<number>, norm: number): number {
  checkMesh(a);
  checkMesh(b);
  if (!(norm > 0)) throw new TypeError('meshPointDistance: norm must be > 0');
  let s = 0;
  for (let i = 0; i < MESH_FACE_POINTS; i++) s += Math.hypot(a[3 * i]! - b[3 * i]!, a[3 * i + 1]! - b[3 * i + 1]!);
  return s / MESH_FACE_POINTS / norm;
}

/**
 * 2-D landmark motion of the 468 face points from a reference mesh, divided by the reference's inter-ocular distance
 * (flat x, y pairs).
 */
export function meshMotion2d(m: ArrayLike<number>, ref: ArrayLike<number>, out?: Float64Array): Float64Array {
  checkMesh(m);
  const d = meshInterOcular(ref);
  if (!(d > 0)) throw new TypeError('meshMotion2d: degenerate reference face');
  const o = out ?? new Float64Array(MESH_FACE_POINTS * 2);
  for (let i = 0; i < MESH_FACE_POINTS; i++) {
    o[2 * i] = (m[3 * i]! - ref[3 * i]!) / d;
    o[2 * i + 1] = (m[3 * i + 1]! - ref[3 * i + 1]!) / d;
  }
  return o;
}

/** A 3-D similarity transform: y = s·R·x + t (R row-major 3×3). */
export interface Similarity3 {
  s: number;
  r: Float64Array;
  t: [number, number, number];
}

/** Largest-eigenvalue eigenvector of a symmetric 4×4 matrix (cyclic Jacobi). */
function topEigenvector4(a: Float64Array): [number, number, number, number] {
  const m = Float64Array.from(a);
  const v = new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
  for (let sweep = 0; sweep < 50; sweep++) {
    let off = 0;
    for (let p = 0; p < 4; p++) for (let q = p + 1; q < 4; q++) off += m[p * 4 + q]! ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < 4; p++) {
      for (let q = p + 1; q < 4; q++) {
        const apq = m[p * 4 + q]!;
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (m[q * 4 + q]! - m[p * 4 + p]!) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < 4; k++) {
          const akp = m[k * 4 + p]!;
          const akq = m[k * 4 + q]!;
          m[k * 4 + p] = c * akp - s * akq;
          m[k * 4 + q] = s * akp + c * akq;
        }
        for (let k = 0; k < 4; k++) {
          const apk = m[p * 4 + k]!;
          const aqk = m[q * 4 + k]!;
          m[p * 4 + k] = c * apk - s * aqk;
          m[q * 4 + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < 4; k++) {
          const vkp = v[k * 4 + p]!;
          const vkq = v[k * 4 + q]!;
          v[k * 4 + p] = c * vkp - s * vkq;
          v[k * 4 + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  let best = 0;
  for (let i = 1; i < 4; i++) if (m[i * 4 + i]! > m[best * 4 + best]!) best = i;
  return [v[best]!, v[4 + best]!, v[8 + best]!, v[12 + best]!];
}

/**
 * The least-squares similarity (rotation, uniform scale, translation) that maps the first `count` points of `src`
 * onto `dst` (Horn's closed form with quaternions; 3-D, so head yaw and pitch are removed too, not only roll).
 */
export function similarity3d(src: ArrayLike<number>, dst: ArrayLike<number>, count = MESH_FACE_POINTS): Similarity3 {
  if (src.length < count * 3 || dst.length < count * 3) throw new TypeError('similarity3d: not enough points');
  const cs = [0, 0, 0];
  const cd = [0, 0, 0];
  for (let i = 0; i < count; i++)
    for (let k = 0; k < 3; k++) {
      cs[k]! += src[3 * i + k]!;
      cd[k]! += dst[3 * i + k]!;
    }
  for (let k = 0; k < 3; k++) {
    cs[k]! /= count;
    cd[k]! /= count;
  }
  // Cross-covariance S[a][b] = Σ x_a y_b (centred), and the source spread.
  const S = new Float64Array(9);
  let ss = 0;
  for (let i = 0; i < count; i++) {
    const x = [src[3 * i]! - cs[0]!, src[3 * i + 1]! - cs[1]!, src[3 * i + 2]! - cs[2]!];
    const y = [dst[3 * i]! - cd[0]!, dst[3 * i + 1]! - cd[1]!, dst[3 * i + 2]! - cd[2]!];
    for (let a = 0; a < 3; a++) {
      ss += x[a]! * x[a]!;
      for (let b = 0; b < 3; b++) S[a * 3 + b]! += x[a]! * y[b]!;
    }
  }
  if (!(ss > 0)) throw new TypeError('similarity3d: degenerate points');
  const [sxx, sxy, sxz, syx, syy, syz, szx, szy, szz] = S as unknown as number[];
  const N = new Float64Array([
    sxx! + syy! + szz!,
    syz! - szy!,
    szx! - sxz!,
    sxy! - syx!,
    syz! - szy!,
    sxx! - syy! - szz!,
    sxy! + syx!,
    szx! + sxz!,
    szx! - sxz!,
    sxy! + syx!,
    -sxx! + syy! - szz!,
    syz! + szy!,
    sxy! - syx!,
    szx! + sxz!,
    syz! + szy!,
    -sxx! - syy! + szz!,
  ]);
  const [q0, qx, qy, qz] = topEigenvector4(N);
  const r = new Float64Array([
    q0 * q0 + qx * qx - qy * qy - qz * qz,
    2 * (qx * qy - q0 * qz),
    2 * (qx * qz + q0 * qy),
    2 * (qy * qx + q0 * qz),
    q0 * q0 - qx * qx + qy * qy - qz * qz,
    2 * (qy * qz - q0 * qx),
    2 * (qz * qx - q0 * qy),
    2 * (qz * qy + q0 * qx),
    q0 * q0 - qx * qx - qy * qy + qz * qz,
  ]);
  // Scale: Σ y·(R x) / Σ |x|².
  let num = 0;
  for (let a = 0; a < 3; a++) for (let b = 0; b < 3; b++) num += r[a * 3 + b]! * S[b * 3 + a]!;
  const s = num / ss;
  const t: [number, number, number] = [0, 0, 0];
  for (let a = 0; a < 3; a++)
    t[a] = cd[a]! - s * (r[a * 3]! * cs[0]! + r[a * 3 + 1]! * cs[1]! + r[a * 3 + 2]! * cs[2]!);
  return { s, r, t };
}

/** Applies a similarity to the first `count` points (flat x, y, z). */
export function applySimilarity3d(
  tf: Similarity3,
  pts: ArrayLike<number>,
  count = MESH_FACE_POINTS,
  out?: Float64Array,
): Float64Array {
  const o = out ?? new Float64Array(count * 3);
  const { s, r, t } = tf;
  for (let i = 0; i < count; i++) {
    const x = pts[3 * i]!;
    const y = pts[3 * i + 1]!;
    const z = pts[3 * i + 2]!;
    for (let a = 0; a < 3; a++) o[3 * i + a] = s * (r[a * 3]! * x + r[a * 3 + 1]! * y + r[a * 3 + 2]! * z) + t[a]!;
  }
  return o;
}

/**
 * Self-mode expression distance: the output's 468 face points after the best 3-D similarity alignment onto the
 * truth's (fitted on all 468), mean 3-D distance over the truth's 3-D inter-ocular distance. Head rotation (all three
 * axes), position and size are removed; what is left is the difference in expression (and face shape). With `points`
 * the mean is taken over those points only (e.g. MESH_LIPS), the alignment staying the same.
 */
export function alignedMeshDistance(
  out: ArrayLike<number>,
  truth: ArrayLike<number>,
  points?: readonly number[],
): number {
  checkMesh(out, 'output mesh');
  checkMesh(truth, 'truth mesh');
  const aligned = applySimilarity3d(similarity3d(out, truth), out);
  const d = (i: number): number =>
    Math.hypot(
      aligned[3 * i]! - truth[3 * i]!,
      aligned[3 * i + 1]! - truth[3 * i + 1]!,
      aligned[3 * i + 2]! - truth[3 * i + 2]!,
    );
  let s = 0;
  if (points) for (const i of points) s += d(i);
  else for (let i = 0; i < MESH_FACE_POINTS; i++) s += d(i);
  return s / (points ? points.length : MESH_FACE_POINTS) / meshInterOcular3d(truth);
}

/**
 * Expression motion with the head pose removed: the mesh aligned (3-D similarity) onto the reference mesh, minus the
 * reference, over the reference's 3-D inter-ocular distance (468 × x, y, z). When `frame` is given (a rotation, e.g. from
 * this stream's reference onto another stream's reference) the motion vectors are rotated by it, so that two streams'
 * motions can be compared in one frame.
 */
export function expressionMotion(m: ArrayLike<number>, ref: ArrayLike<number>, frame?: Float64Array): Float64Array {
  checkMesh(m);
  checkMesh(ref, 'reference mesh');
  const d = meshInterOcular3d(ref);
  if (!(d > 0)) throw new TypeError('expressionMotion: degenerate reference face');
  const aligned = applySimilarity3d(similarity3d(m, ref), m);
  const o = new Float64Array(MESH_FACE_POINTS * 3);
  for (let i = 0; i < MESH_FACE_POINTS; i++) {
    const v = [
      (aligned[3 * i]! - ref[3 * i]!) / d,
      (aligned[3 * i + 1]! - ref[3 * i + 1]!) / d,
      (aligned[3 * i + 2]! - ref[3 * i + 2]!) / d,
    ];
    for (let a = 0; a < 3; a++)
      o[3 * i + a] = frame ? frame[a * 3]! * v[0]! + frame[a * 3 + 1]! * v[1]! + frame[a * 3 + 2]! * v[2]! : v[a]!;
  }
  return o;
}

/** Mean 3-D distance between two expression motions (from expressionMotion), over all points or over `points`. */
export function motionDistance3d(a: Float64Array, b: Float64Array, points?: readonly number[]): number {
  if (a.length !== b.length || a.length % 3) throw new TypeError('motions differ in length');
  const n = a.length / 3;
  const d = (i: number): number =>
    Math.hypot(a[3 * i]! - b[3 * i]!, a[3 * i + 1]! - b[3 * i + 1]!, a[3 * i + 2]! - b[3 * i + 2]!);
  let s = 0;
  if (points) {
    for (const i of points) {
      if (!(i >= 0 && i < n)) throw new TypeError(`motionDistance3d: point ${i} out of range`);
      s += d(i);
    }
    return s / points.length;
  }
  for (let i = 0; i < n; i++) s += d(i);
  return s / n;
}

/** Eye aspect ratio (openness) of both eyes: (|p2−p6| + |p3−p5|) / (2 |p1−p4|), in the image plane. ~0.25-0.35 open, < 0.1 shut. */
export function eyeOpenness(m: ArrayLike<number>): { right: number; left: number } {
  checkMesh(m);
  const ear = (e: readonly number[]): number => {
    const p = e.map((i) => pt(m, i));
    const d = (a: number, b: number): number => Math.hypot(p[a]![0] - p[b]![0], p[a]![1] - p[b]![1]);
    const w = d(0, 3);
    return w > 0 ? (d(1, 5) + d(2, 4)) / (2 * w) : 0;
  };
  return { right: ear(EYES.right), left: ear(EYES.left) };
}

/**
 * Mouth openness from the FaceMesh inner lips: the mean gap of the three inner-lip pairs (82-87, 13-14, 312-317) over
 * the mouth width (corners 61-291), in the image plane; the same measure as the 68-point one (landmarks68.ts). 0
 * closed, ~0.5+ wide open.
 */
export function mouthOpennessMesh(m: ArrayLike<number>): number {
  checkMesh(m);
  const d = (a: number, b: number): number => Math.hypot(m[3 * a]! - m[3 * b]!, m[3 * a + 1]! - m[3 * b + 1]!);
  const w = d(MOUTH_CORNERS[0], MOUTH_CORNERS[1]);
  if (!(w > 0)) return 0;
  let gap = 0;
  for (const [u, l] of INNER_LIP_PAIRS) gap += d(u, l);
  return gap / INNER_LIP_PAIRS.length / w;
}

/**
 * Gaze: where each iris centre sits in its eye, in eye widths: x along the corner-to-corner axis (from the subject's
 * right to left in the image), y perpendicular to it (down), both from the corner midpoint; averaged over both eyes.
 * Each iris is matched to the nearer eye, whatever index order the model uses.
 */
export function irisPosition(m: ArrayLike<number>): { x: number; y: number } {
  let sx = 0;
  let sy = 0;
  for (const e of irisPositionEyes(m)) {
    if (!e) continue;
    sx += e.x;
    sy += e.y;
  }
  return { x: sx / 2, y: sy / 2 };
}

/**
 * The iris position of each eye as irisPosition measures it ([image-left eye, image-right eye]: the eye whose corners
 * are further left first; each iris the one nearer that eye's centre), null for an eye without width.
 */
export function irisPositionEyes(
  m: ArrayLike<number>,
): [{ x: number; y: number } | null, { x: number; y: number } | null] {
  checkMesh(m);
  const irises = IRIS_CENTRES.map((i) => pt(m, i));
  const res: ({ x: number; y: number; cx: number } | null)[] = [];
  for (const e of [EYES.right, EYES.left]) {
    const a = pt(m, e[0]);
    const b = pt(m, e[3]);
    const [p, q] = a[0] <= b[0] ? [a, b] : [b, a];
    const cx = (p[0] + q[0]) / 2;
    const cy = (p[1] + q[1]) / 2;
    const ux = q[0] - p[0];
    const uy = q[1] - p[1];
    const w2 = ux * ux + uy * uy;
    if (!(w2 > 0)) {
      res.push(null);
      continue;
    }
    const iris = irises.reduce((best, c) =>
      Math.hypot(c[0] - cx, c[1] - cy) < Math.hypot(best[0] - cx, best[1] - cy) ? c : best,
    );
    const dx = iris[0] - cx;
    const dy = iris[1] - cy;
    res.push({ x: (dx * ux + dy * uy) / w2, y: (-dx * uy + dy * ux) / w2, cx });
  }
  const [r, l] = res;
  const strip = (v: { x: number; y: number } | null | undefined): { x: number; y: number } | null =>
    v ? { x: v.x, y: v.y } : null;
  // Image order: FaceMesh's "right" eye is the person's right, on the image's left for a face towards the camera.
  if (r && l && r.cx > l.cx) return [strip(l), strip(r)];
  return [strip(r), strip(l)];
}

/**
 * Pearson correlation of two equally long series; null when shorter than 3 or when either is (nearly) constant (a
 * correlation is undefined there: a still portrait neither blinks nor looks around).
 */
export function pearson(a: ArrayLike<number>, b: ArrayLike<number>): number | null {
  if (a.length !== b.length) throw new TypeError('series differ in length');
  const n = a.length;
  if (n < 3) return null;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i]!;
    mb += b[i]!;
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    const x = a[i]! - ma;
    const y = b[i]! - mb;
    sab += x * y;
    saa += x * x;
    sbb += y * y;
  }
  // Relative to the series' scale: below this the series is constant up to float noise.
  const tiny = 1e-12 * n;
  if (saa <= tiny || sbb <= tiny) return null;
  return sab / Math.sqrt(saa * sbb);
}

/** Mean of the non-null values, or null. */
export function meanOrNull(values: (number | null)[]): number | null {
  const v = values.filter((x): x is number => x !== null);
  return v.length ? v.reduce((s, x) => s + x, 0) / v.length : null;
}

/**
 * Roll, yaw and pitch (degrees) of a rotation matrix (row-major 3x3, image axes: x right, y down, z away), as
 * R = Rz(roll) Ry(yaw) Rx(pitch).
 */
export function eulerDeg(r: ArrayLike<number>): { roll: number; yaw: number; pitch: number } {
  const d = 180 / Math.PI;
  return {
    roll: Math.atan2(r[3]!, r[0]!) * d,
    yaw: Math.asin(Math.max(-1, Math.min(1, -r[6]!))) * d,
    pitch: Math.atan2(r[7]!, r[8]!) * d,
  };
}

/** The p-th percentile (0..100, nearest rank) of the values; null for none. */
export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
