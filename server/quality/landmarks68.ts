/**
 * Scores from the second, independent landmark network (faceLandmark68Net.ts: face-api's 68-point net, iBUG 300-W
 * point order, the same layout as dlib's 68) and the face box it is run on. Pure functions over flat x, y arrays in
 * image pixels, tested directly.
 *
 * Why a second network: the live engine tracks faces with FaceMesh + Iris, so eye and mouth scores measured with
 * FaceMesh alone would partly grade the engine with its own input. The 68 net is a different network (other
 * architecture, other training data, other point definitions); where both agree, the score is not an artefact of one.
 *
 * Point layout: 36-41 the image-left eye (the subject's right; 36 outer corner, 37-38 upper lid, 39 inner corner,
 * 40-41 lower lid), 42-47 the other eye (42 inner corner), 48-59 the outer lip contour (48 and 54 the mouth corners),
 * 60-67 the inner lip contour (61-63 upper, 65-67 lower), 27-35 the nose.
 */
import { fitSimilarity } from '../avatar/engines/default/geometry.js';
import { interOcularDistance } from './metrics.js';

/** Points per face of the 68 net. */
export const LM68_POINTS = 68;

/** Mouth points (outer and inner lip contours). */
export const LM68_MOUTH: readonly number[] = Array.from({ length: 20 }, (_, i) => 48 + i);

/**
 * Points that move little with expression: the nose (27-35) and the four eye corners. The mouth-shape score aligns
 * on these rather than on all 68, because the jaw contour (the net's least precise part) and the lips move with the
 * mouth: aligning on them would hide part of the very difference the score measures.
 */
export const LM68_RIGID: readonly number[] = [27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45];

/**
 * The face box the 68 net is given, from the 468 FaceMesh face points: face-api runs the net on its SSD MobileNet
 * detector's box, which on 47 portraits and clip frames of the shared media (measured against the FaceMesh points'
 * extent) was on average 1.10 × as wide and 1.10 × as tall as the points, reaching ~10% of their height above them
 * (the forehead) and ending at the chin. The box here is that, centred on the points; the net then pads it to a
 * square with black, centred (as face-api does). Its points moved by 0.03 inter-ocular distances on average against
 * face-api's own detector box on those images, as they did for boxes 10% larger or smaller: the net is not sensitive
 * to the exact box.
 */
export const LM68_BOX = { widen: 1.1, above: 0.1, below: 0 } as const;

function check68(lm: ArrayLike<number>, what = '68-point landmarks'): void {
  if (lm.length !== LM68_POINTS * 2)
    throw new TypeError(`${what} must hold ${LM68_POINTS} points × 2 (got ${lm.length} numbers)`);
}

/**
 * The 68 net's face box [x, y, w, h] (image pixels, not clipped to the image) from a FaceMesh mesh (x, y, z per
 * point; the first `facePoints` points are the face, the iris points after them are left out). See LM68_BOX.
 * @throws TypeError when the mesh is too short or its points have no extent.
 */
export function landmarkBoxFromMesh(mesh: ArrayLike<number>, facePoints = 468): [number, number, number, number] {
  if (mesh.length < facePoints * 3 || facePoints < 2)
    throw new TypeError(`landmarkBoxFromMesh: the mesh needs ${facePoints} points × 3`);
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (let i = 0; i < facePoints; i++) {
    const x = mesh[3 * i]!;
    const y = mesh[3 * i + 1]!;
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }
  const w = x1 - x0;
  const h = y1 - y0;
  if (!(w > 0 && h > 0)) throw new TypeError('landmarkBoxFromMesh: the mesh points have no extent');
  const bw = w * LM68_BOX.widen;
  return [(x0 + x1) / 2 - bw / 2, y0 - LM68_BOX.above * h, bw, h * (1 + LM68_BOX.above + LM68_BOX.below)];
}

function dist(p: ArrayLike<number>, a: number, b: number): number {
  return Math.hypot(p[2 * a]! - p[2 * b]!, p[2 * a + 1]! - p[2 * b + 1]!);
}

/**
 * Six-point eye aspect ratio of both eyes, (|p2−p6| + |p3−p5|) / (2 |p1−p4|): `right` is 36-41 (the subject's right
 * eye, image left, as meshMetrics.eyeOpenness names them), `left` is 42-47. ~0.25-0.35 open, lower when shut (the
 * 68 net rarely closes the lids fully: ~0.1-0.2 on a closed eye).
 */
export function eyeAspectRatio68(lm: ArrayLike<number>): { right: number; left: number } {
  check68(lm);
  const ear = (f: number): number => {
    const w = dist(lm, f, f + 3);
    return w > 0 ? (dist(lm, f + 1, f + 5) + dist(lm, f + 2, f + 4)) / (2 * w) : 0;
  };
  return { right: ear(36), left: ear(42) };
}

/** Mouth openness: mean inner-lip gap (61-67, 62-66, 63-65) over the mouth width (48-54). 0 closed, ~0.5+ wide open. */
export function mouthOpenness68(lm: ArrayLike<number>): number {
  check68(lm);
  const w = dist(lm, 48, 54);
  return w > 0 ? (dist(lm, 61, 67) + dist(lm, 62, 66) + dist(lm, 63, 65)) / (3 * w) : 0;
}

/** The 2-D similarity (x' = a·x − b·y + tx, y' = b·x + a·y + ty) fitted on the rigid points of `src` onto `dst`. */
function rigidFit(src: ArrayLike<number>, dst: ArrayLike<number>): { a: number; b: number; tx: number; ty: number } {
  return fitSimilarity(src, dst, LM68_RIGID, { a: 1, b: 0, tx: 0, ty: 0 });
}

/**
 * Self-mode mouth shape distance: the output's points aligned onto the truth's by the similarity fitted on the rigid
 * points (LM68_RIGID), then the mean distance over the 20 lip points, divided by the truth's inter-ocular distance
 * (eye centres). Head position, size and roll are removed; mouth shape and opening are what is left.
 * @throws TypeError for arrays of the wrong size or a degenerate truth face.
 */
export function mouthShapeDistance68(out: ArrayLike<number>, truth: ArrayLike<number>): number {
  check68(out, 'output landmarks');
  check68(truth, 'truth landmarks');
  const iod = interOcularDistance(truth);
  if (!(iod > 0)) throw new TypeError('mouthShapeDistance68: degenerate truth face');
  const { a, b, tx, ty } = rigidFit(out, truth);
  let s = 0;
  for (const i of LM68_MOUTH) {
    const x = out[2 * i]!;
    const y = out[2 * i + 1]!;
    s += Math.hypot(a * x - b * y + tx - truth[2 * i]!, b * x + a * y + ty - truth[2 * i + 1]!);
  }
  return s / LM68_MOUTH.length / iod;
}

/** Rotation angle (radians) of the rigid-point similarity from `src` onto `dst`. */
export function rigidRotation68(src: ArrayLike<number>, dst: ArrayLike<number>): number {
  check68(src);
  check68(dst);
  const { a, b } = rigidFit(src, dst);
  return Math.atan2(b, a);
}

/**
 * Mouth motion with the head pose removed (cross mode): the frame's points aligned onto the reference frame's by the
 * rigid-point similarity, minus the reference, over the reference's inter-ocular distance, for the 20 lip points
 * (flat x, y). `rotation` (radians; e.g. rigidRotation68 from this stream's reference onto another stream's) turns
 * the motion vectors, so that two streams' motions are compared in one frame.
 */
export function mouthMotion68(lm: ArrayLike<number>, ref: ArrayLike<number>, rotation = 0): Float64Array {
  check68(lm);
  check68(ref, 'reference landmarks');
  const iod = interOcularDistance(ref);
  if (!(iod > 0)) throw new TypeError('mouthMotion68: degenerate reference face');
  const { a, b, tx, ty } = rigidFit(lm, ref);
  const c = Math.cos(rotation);
  const s = Math.sin(rotation);
  const o = new Float64Array(LM68_MOUTH.length * 2);
  LM68_MOUTH.forEach((i, k) => {
    const x = lm[2 * i]!;
    const y = lm[2 * i + 1]!;
    const dx = (a * x - b * y + tx - ref[2 * i]!) / iod;
    const dy = (b * x + a * y + ty - ref[2 * i + 1]!) / iod;
    o[2 * k] = c * dx - s * dy;
    o[2 * k + 1] = s * dx + c * dy;
  });
  return o;
}

/** Mean 2-D distance between two motions (flat x, y; from mouthMotion68). */
export function motionDistance2d(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length || a.length % 2 || a.length === 0) throw new TypeError('motions differ in length');
  let s = 0;
  for (let i = 0; i < a.length; i += 2) s += Math.hypot(a[i]! - b[i]!, a[i + 1]! - b[i + 1]!);
  return s / (a.length / 2);
}
