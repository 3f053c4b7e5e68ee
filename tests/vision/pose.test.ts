import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { emptyPose, POSE_MODEL, PoseSolver, projectAxes } from '../../server/vision/pose.js';
import { dlibReference, frameName, referenceMissing } from './helpers.js';

const noRef = referenceMissing('the pose tests on dlib reference landmarks (pose.test.ts)');

/** Projects the generic model with a known pose (R = Rz(roll) Ry(-yaw) Rx(-pitch), degrees) into 68 landmarks. */
function synth(
  yaw: number,
  pitch: number,
  roll: number,
  t: [number, number, number],
  w: number,
  h: number,
): Float64Array {
  const d = Math.PI / 180;
  const [a, b, c] = [-yaw * d, -pitch * d, roll * d];
  const [cy, sy, cp, sp, cr, sr] = [Math.cos(a), Math.sin(a), Math.cos(b), Math.sin(b), Math.cos(c), Math.sin(c)];
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
  ];
  const lm = new Float64Array(136);
  for (const [k, x, y, z] of POSE_MODEL) {
    const X = R[0]! * x + R[1]! * y + R[2]! * z + t[0];
    const Y = R[3]! * x + R[4]! * y + R[5]! * z + t[1];
    const Z = R[6]! * x + R[7]! * y + R[8]! * z + t[2];
    lm[2 * k] = (w * X) / Z + w / 2;
    lm[2 * k + 1] = (w * Y) / Z + h / 2;
  }
  return lm;
}

// iBUG 68 left-right correspondence (for mirroring landmark sets).
const MIRROR = [
  16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 27, 28, 29, 30, 35,
  34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64,
  63, 62, 61, 60, 67, 66, 65,
];

describe('PoseSolver', () => {
  it('recovers known poses from exact projections (cold and warm starts)', () => {
    const solver = new PoseSolver();
    const out = emptyPose();
    for (const [yaw, pitch, roll] of [
      [0, 0, 0],
      [30, 0, 0],
      [-25, 10, 5],
      [10, -20, -15],
      [45, 15, 20],
    ] as const) {
      for (const warm of [false, true]) {
        if (!warm) solver.reset();
        solver.solve(synth(yaw, pitch, roll, [40, -20, 600], 640, 480), 640, 480, out);
        expect(out.yaw).toBeCloseTo(yaw, 1);
        expect(out.pitch).toBeCloseTo(pitch, 1);
        expect(out.roll).toBeCloseTo(roll, 1);
        expect(out.tz).toBeCloseTo(600, 0);
        expect(out.tx).toBeCloseTo(40, 0);
        expect(solver.rmsError).toBeLessThan(0.01);
      }
    }
  });

  it('sign conventions: nose to the image right = +yaw, nose up = +pitch, clockwise = +roll', () => {
    const solver = new PoseSolver();
    const out = emptyPose();
    const lm = synth(20, 0, 0, [0, 0, 500], 640, 480);
    // The nose tip (30) lies to the right of the midpoint of the outer eye corners (36, 45).
    expect(lm[60]!).toBeGreaterThan((lm[72]! + lm[90]!) / 2);
    solver.solve(lm, 640, 480, out);
    expect(out.yaw).toBeGreaterThan(15);
  });

  it.skipIf(noRef)('a mirrored face flips the sign of yaw and roll (all 23 reference faces)', () => {
    const solver = new PoseSolver();
    const a = emptyPose();
    const b = emptyPose();
    let strong = 0;
    for (const r of dlibReference()) {
      for (const f of r.faces) {
        const lm = f.landmarks.flat();
        const mirrored = new Float64Array(136);
        MIRROR.forEach((src, i) => {
          mirrored[2 * i] = 639 - f.landmarks[src]![0];
          mirrored[2 * i + 1] = f.landmarks[src]![1];
        });
        solver.reset();
        solver.solve(lm, 640, 480, a);
        solver.reset();
        solver.solve(mirrored, 640, 480, b);
        const name = frameName(path.basename(r.image));
        expect(Math.sign(b.yaw), name).toBe(-Math.sign(a.yaw));
        expect(b.yaw, name).toBeCloseTo(-a.yaw, 0);
        expect(b.roll, name).toBeCloseTo(-a.roll, 0);
        expect(b.pitch, name).toBeCloseTo(a.pitch, 0);
        if (Math.abs(a.yaw) > 5) strong++;
      }
    }
    expect(strong).toBeGreaterThanOrEqual(5);
  });

  it.skipIf(noRef)('the 3/4-profile Vermeer turns strongly, frontal portraits little', () => {
    const solver = new PoseSolver();
    const out = emptyPose();
    const byName = new Map(dlibReference().map((r) => [frameName(path.basename(r.image)), r]));
    solver.solve(
      byName.get('portrait-painting_pearl_earring_three_quarter')!.faces[0]!.landmarks.flat(),
      640,
      480,
      out,
    );
    expect(Math.abs(out.yaw)).toBeGreaterThan(25);
    solver.reset();
    solver.solve(byName.get('portrait-cartoon_3d_boy')!.faces[0]!.landmarks.flat(), 640, 480, out);
    expect(Math.abs(out.yaw)).toBeLessThan(8);
  });

  it('projectAxes puts the origin on the nose tip', () => {
    const lm = synth(10, 5, 0, [0, 0, 500], 640, 480);
    const solver = new PoseSolver();
    const pose = solver.solve(lm, 640, 480, emptyPose());
    const ax = projectAxes(pose, 640, 480, 50, new Float64Array(8));
    expect(ax[0]).toBeCloseTo(lm[60]!, 1);
    expect(ax[1]).toBeCloseTo(lm[61]!, 1);
    // The z axis (towards the camera) leans to the image right with positive yaw.
    expect(ax[6]!).toBeGreaterThan(ax[0]!);
  });
});
