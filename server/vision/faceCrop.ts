/**
 * Face geometry shared by the live engine (the refiner's crop), the training dataset builder and the evaluation:
 * aligned face crops by the FFHQ alignment (Karras et al., also used by LivePortrait's evaluation) from
 * 68 landmarks. The crop is a square oriented along the eyes, centred a little below the eyes towards the mouth,
 * sized from the eye distance and the eye-to-mouth distance, then resampled to size×size (default 256).
 *
 * The transform is a similarity (rotation + uniform scale + translation), so the same crop can be cut from another
 * image of the same size (the model's output is cut with the crop of the true frame).
 */
import type { RgbImage } from '../types/image.js';

/** Centre (mean) of landmarks [from, to) of a flat x0,y0,x1,y1,... array. */
export function landmarkCentre(lm: ArrayLike<number>, from: number, to: number): [number, number] {
  let sx = 0;
  let sy = 0;
  for (let i = from; i < to; i++) {
    sx += lm[2 * i]!;
    sy += lm[2 * i + 1]!;
  }
  const k = to - from;
  return [sx / k, sy / k];
}

/** A similarity transform from crop pixel coordinates (u, v) to image coordinates:
 * x = ox + u*ax + v*bx, y = oy + u*ay + v*by, with (bx, by) = (-ay, ax). */
export interface FaceCrop {
  /** Output side in pixels. */
  size: number;
  /** Image position of the crop's top-left corner (of pixel (0,0)'s outer corner). */
  ox: number;
  oy: number;
  /** Image step per crop pixel along u (to the right in the crop). */
  ax: number;
  ay: number;
  /** Image step per crop pixel along v (down in the crop). */
  bx: number;
  by: number;
}

/**
 * The FFHQ crop from 68 iBUG landmarks (x0,y0,...): eye centres (points 36-41, 42-47) and mouth corners (48, 54).
 * @throws TypeError for fewer than 68 points or a degenerate face.
 */
export function ffhqCrop(lm: ArrayLike<number>, size = 256): FaceCrop {
  if (lm.length < 136) throw new TypeError('ffhqCrop needs 68 landmarks');
  const [elx, ely] = landmarkCentre(lm, 36, 42);
  const [erx, ery] = landmarkCentre(lm, 42, 48);
  const eyeAvgX = (elx + erx) / 2;
  const eyeAvgY = (ely + ery) / 2;
  const eeX = erx - elx;
  const eeY = ery - ely;
  const mouthX = (lm[96]! + lm[108]!) / 2;
  const mouthY = (lm[97]! + lm[109]!) / 2;
  const emX = mouthX - eyeAvgX;
  const emY = mouthY - eyeAvgY;
  // x = eye_to_eye - flipud(eye_to_mouth) * [-1, 1]: the horizontal axis, averaging the eye line and the normal of
  // the eye-mouth line so that neither a tilted eye line nor a sideways mouth alone decides the rotation.
  let xX = eeX + emY;
  let xY = eeY - emX;
  const xn = Math.hypot(xX, xY);
  const half = Math.max(Math.hypot(eeX, eeY) * 2.0, Math.hypot(emX, emY) * 1.8);
  if (!(xn > 0) || !(half > 0)) throw new TypeError('ffhqCrop: degenerate landmarks');
  xX = (xX / xn) * half;
  xY = (xY / xn) * half;
  // y = flipud(x) * [-1, 1]: x rotated by +90° (down in image coordinates).
  const yX = -xY;
  const yY = xX;
  const cX = eyeAvgX + emX * 0.1;
  const cY = eyeAvgY + emY * 0.1;
  const step = 2 / size;
  return {
    size,
    ox: cX - xX - yX,
    oy: cY - xY - yY,
    ax: xX * step,
    ay: xY * step,
    bx: yX * step,
    by: yY * step,
  };
}

/** Image coordinates of the centre of crop pixel (u, v). */
export function cropToImage(crop: FaceCrop, u: number, v: number): [number, number] {
  const uu = u + 0.5;
  const vv = v + 0.5;
  return [crop.ox + uu * crop.ax + vv * crop.bx, crop.oy + uu * crop.ay + vv * crop.by];
}

/** Maps landmarks from image coordinates into crop pixel coordinates (inverse of cropToImage). */
export function imageToCrop(crop: FaceCrop, lm: ArrayLike<number>, out?: Float64Array): Float64Array {
  const o = out ?? new Float64Array(lm.length);
  const det = crop.ax * crop.by - crop.bx * crop.ay;
  for (let i = 0; i + 1 < lm.length; i += 2) {
    const dx = lm[i]! - crop.ox;
    const dy = lm[i + 1]! - crop.oy;
    o[i] = (dx * crop.by - dy * crop.bx) / det - 0.5;
    o[i + 1] = (crop.ax * dy - crop.ay * dx) / det - 0.5;
  }
  return o;
}

/**
 * Cuts the crop out of an RGB image: bilinear sampling, black outside the image. When the crop shrinks the image by
 * more than 1.5×, each output pixel averages k×k bilinear samples (k = ceil(scale), at most 4) to limit aliasing.
 */
export function warpCrop(img: RgbImage, crop: FaceCrop, out?: RgbImage): RgbImage {
  const { size } = crop;
  const dst = out ?? { width: size, height: size, data: new Uint8Array(size * size * 3) };
  if (dst.width !== size || dst.height !== size) throw new TypeError('warpCrop: output size mismatch');
  const scale = Math.hypot(crop.ax, crop.ay);
  const k = scale > 1.5 ? Math.min(4, Math.ceil(scale)) : 1;
  const { width: w, height: h, data: s } = img;
  const d = dst.data;
  for (let v = 0; v < size; v++) {
    for (let u = 0; u < size; u++) {
      let ar = 0;
      let ag = 0;
      let ab = 0;
      for (let sv = 0; sv < k; sv++) {
        for (let su = 0; su < k; su++) {
          const uu = u + (su + 0.5) / k;
          const vv = v + (sv + 0.5) / k;
          // Image coordinates are landmark coordinates: pixel (i, j) has its centre at (i, j).
          const x = crop.ox + uu * crop.ax + vv * crop.bx;
          const y = crop.oy + uu * crop.ay + vv * crop.by;
          const x0 = Math.floor(x);
          const y0 = Math.floor(y);
          const fx = x - x0;
          const fy = y - y0;
          for (let dy = 0; dy < 2; dy++) {
            const yy = y0 + dy;
            if (yy < 0 || yy >= h) continue;
            const wy = dy ? fy : 1 - fy;
            for (let dx = 0; dx < 2; dx++) {
              const xx = x0 + dx;
              if (xx < 0 || xx >= w) continue;
              const wgt = wy * (dx ? fx : 1 - fx);
              const p = (yy * w + xx) * 3;
              ar += wgt * s[p]!;
              ag += wgt * s[p + 1]!;
              ab += wgt * s[p + 2]!;
            }
          }
        }
      }
      const o = (v * size + u) * 3;
      const kk = k * k;
      d[o] = Math.min(255, Math.round(ar / kk));
      d[o + 1] = Math.min(255, Math.round(ag / kk));
      d[o + 2] = Math.min(255, Math.round(ab / kk));
    }
  }
  return dst;
}
