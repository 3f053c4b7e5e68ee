/**
 * Which tracked faces the avatar follows. A tracker can return a face where the performer's is not one the avatar
 * should copy: an extreme close-up (part of a face, its landmarks guessed off the frame), a box that jumps across
 * the frame in one frame (a second face, a poster), or points that no face could make. Following those is what melts
 * the portrait; the engine treats such frames as "no face" (the avatar eases towards neutral) and says why, so the
 * studio can tell the performer ("too close", "face lost").
 *
 * Pure and allocation-free per frame: one guard per stream.
 */
import type { FaceIssue } from '../../engineTypes.js';
import type { FaceTrack } from '../../../vision/types.js';

export type { FaceIssue };

/** The face's extent over the frame's shorter side beyond which it is too close to read whole. */
const MAX_FACE_FRACTION = 0.9;
/** How far (face sizes) the 68 points may reach outside the frame: beyond that the tracker is guessing. */
const MAX_OUTSIDE = 0.12;
/** A centre move of this many face widths, or a size change of this fraction, within one frame is a jump... */
const JUMP_SHIFT = 0.5;
const JUMP_SCALE = 0.35;
/** ...unless the face stays at its new place this many frames (then the performer really moved). */
const JUMP_CONFIRM = 3;

function dist(p: ArrayLike<number>, a: number, b: number): number {
  return Math.hypot(p[2 * a]! - p[2 * b]!, p[2 * a + 1]! - p[2 * b + 1]!);
}

/**
 * Whether 68 points make a face: in the frame of the eye line (eye centres), the nose tip lies below the eyes, the
 * mouth below the nose and the chin below the mouth; the mouth runs within 30 degrees of the eye line; the mouth's
 * width and the face's height are within human (and cartoon) proportions of the eye distance.
 */
export function faceShapeOk(p: ArrayLike<number>): boolean {
  const lx = (p[72]! + p[78]!) / 2,
    ly = (p[73]! + p[79]!) / 2,
    rx = (p[84]! + p[90]!) / 2,
    ry = (p[85]! + p[91]!) / 2;
  const iod = Math.hypot(rx - lx, ry - ly);
  if (!(iod > 1)) return false;
  const ux = (rx - lx) / iod,
    uy = (ry - ly) / iod;
  const cx = (lx + rx) / 2,
    cy = (ly + ry) / 2;
  const down = (i: number): number => (-(p[2 * i]! - cx) * uy + (p[2 * i + 1]! - cy) * ux) / iod;
  const nose = down(30);
  const mouth = (down(62) + down(66)) / 2;
  const chin = down(8);
  if (!(nose > 0.2 && mouth > nose && chin > mouth)) return false;
  if (!(chin > 0.8 && chin < 3.5)) return false;
  const mw = dist(p, 48, 54) / iod;
  if (!(mw > 0.35 && mw < 2)) return false;
  const mx = p[108]! - p[96]!,
    my = p[109]! - p[97]!;
  const cos = (mx * ux + my * uy) / Math.max(1e-9, Math.hypot(mx, my));
  return cos > Math.cos((30 * Math.PI) / 180);
}

/** Per-stream guard: call check() on every frame's track. */
export class TrackGuard {
  #has = false;
  #cx = 0;
  #cy = 0;
  #size = 0;
  #pending = 0;
  #pcx = 0;
  #pcy = 0;
  #psize = 0;

  /** Forgets the previous face (a new performer, a recalibration). */
  reset(): void {
    this.#has = false;
    this.#pending = 0;
  }

  /** The issue with this frame's face, or null when the avatar should follow it. `track` null: 'lost'. */
  check(track: FaceTrack | null, width: number, height: number): FaceIssue | null {
    if (!track) return 'lost';
    // The tracker's unsmoothed points where it has them: a jump or a zoom shows in them at once.
    const p = track.rawLandmarks.length >= 136 ? track.rawLandmarks : track.landmarks;
    let x0 = Infinity,
      y0 = Infinity,
      x1 = -Infinity,
      y1 = -Infinity;
    for (let i = 0; i < 68; i++) {
      const x = p[2 * i]!,
        y = p[2 * i + 1]!;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
    const size = Math.max(x1 - x0, y1 - y0);
    if (size > MAX_FACE_FRACTION * Math.min(width, height)) return 'too-close';
    const out = MAX_OUTSIDE * size;
    if (x0 < -out || y0 < -out || x1 > width + out || y1 > height + out) return 'too-close';
    if (!faceShapeOk(p)) return 'not-a-face';
    const cx = (x0 + x1) / 2,
      cy = (y0 + y1) / 2;
    if (this.#has) {
      const jumped =
        Math.hypot(cx - this.#cx, cy - this.#cy) > JUMP_SHIFT * this.#size ||
        Math.abs(size - this.#size) > JUMP_SCALE * this.#size;
      if (jumped) {
        // The same new place as the last jumped frames? Then it is where the face is now.
        const same =
          this.#pending > 0 &&
          Math.hypot(cx - this.#pcx, cy - this.#pcy) < 0.2 * this.#psize &&
          Math.abs(size - this.#psize) < 0.2 * this.#psize;
        this.#pending = same ? this.#pending + 1 : 1;
        this.#pcx = cx;
        this.#pcy = cy;
        this.#psize = size;
        if (this.#pending < JUMP_CONFIRM) return 'jump';
      }
    }
    this.#pending = 0;
    this.#has = true;
    this.#cx = cx;
    this.#cy = cy;
    this.#size = size;
    return null;
  }
}
