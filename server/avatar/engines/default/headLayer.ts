/**
 * The portrait's head as a layer over a background plate (pure; once per portrait, in prepare()).
 *
 * The head (face, hair, ears, a hat or a veil) moves as one piece with the performer's head; the expression warp
 * moves the face inside it. For that the portrait is split in two:
 * - the person layer: the portrait at output size with an alpha channel (the person mask from selfie segmentation,
 *   kept to the person's part around the face), and a motion weight per pixel: 1 on the head and everything level
 *   with it, fading to 0 down the neck and out to the shoulders. A pixel moves by its weight's share of the head's
 *   motion, so the neck and long hair bend smoothly between the moving head and the still shoulders: no seam, no
 *   torn hair, no ghost of a cut;
 * - the plate: what is behind the person where it may move. There it is filled from the surrounding background by
 *   push-pull interpolation (a pyramid of weighted averages, the person weighted down), so a head that moves away
 *   uncovers a plausible background, never stretched face texture; elsewhere it is the portrait itself, so the
 *   person at rest shows the portrait unchanged.
 *
 * Without a person mask (no segmentation model) the layer is the whole picture, opaque, and the plate the portrait:
 * the engine then pins the warp's outer anchors as before (the head does not move as one piece).
 */
import type { RgbImage } from '../../../types/image.js';
import type { FaceFrame } from './geometry.js';

/**
 * The motion weight along the face's y axis, in face heights (eye line to chin) below the eye line: 1 down to
 * NECK_TOP, 0 from NECK_BOTTOM (the shoulders' line). Below CHIN it also fades sideways, from NECK_HALF to NECK_SIDE
 * jaw widths off the face's centre line: the collar and the shoulders stay, long hair beside the neck bends.
 */
export const NECK_TOP = 1.0;
export const NECK_BOTTOM = 1.9;
const CHIN = 0.9;
const NECK_HALF = 0.45;
const NECK_SIDE = 1.0;
/** The person region's largest reach sideways from the face's centre line, in jaw widths (a second person is cut). */
const MAX_SIDE = 2.2;
/** Growth of the person mask (mask pixels, 1/256 of the picture each): thin tips of hair the network misses. */
const GROW = 2;
/** Person probability where the layer's alpha starts and reaches 1 (the mask is soft over a few pixels). */
const ALPHA_LO = 0.25;
const ALPHA_HI = 0.65;

export interface HeadLayer {
  /** The portrait at output size, RGBA: alpha is the person's (255 everywhere without segmentation). */
  image: Uint8Array;
  /** Each output pixel's share of the head's motion (0..1; all 1 without segmentation). */
  motion: Float32Array;
  /** What is behind the person, RGB at output size. */
  plate: RgbImage;
  /** Bounding box of the pixels that move (alpha > 0 and motion > 0; output pixels, x1, y1 exclusive). */
  box: [number, number, number, number];
  /** Whether a person mask cut the head out (false: the whole picture is the layer). */
  segmented: boolean;
}

function smooth01(t: number): number {
  const c = t < 0 ? 0 : t > 1 ? 1 : t;
  return c * c * (3 - 2 * c);
}

/**
 * Builds the head layer and plate. `full`: the portrait at output size; `person`: the person probability, size x
 * size over the whole picture (stretched), or null; `f`: the face frame in output pixels.
 */
export function buildHeadLayer(
  full: RgbImage,
  person: { size: number; data: Float32Array } | null,
  f: FaceFrame,
): HeadLayer {
  const { width: W, height: H } = full;
  const image = new Uint8Array(W * H * 4);
  for (let i = 0, n = W * H; i < n; i++) {
    image[4 * i] = full.data[3 * i]!;
    image[4 * i + 1] = full.data[3 * i + 1]!;
    image[4 * i + 2] = full.data[3 * i + 2]!;
    image[4 * i + 3] = 255;
  }
  if (!person)
    return {
      image,
      motion: new Float32Array(W * H).fill(1),
      plate: { width: W, height: H, data: Uint8Array.from(full.data) },
      box: [0, 0, W, H],
      segmented: false,
    };

  const S = person.size;
  const P = keepFaceComponent(person, f, W, H);
  const vx = -f.uy;
  const vy = f.ux;
  const motion = new Float32Array(W * H);
  const fill = new Uint8Array(W * H);
  const known = new Float32Array(W * H);
  let bx0 = W,
    by0 = H,
    bx1 = 0,
    by1 = 0;
  for (let y = 0; y < H; y++) {
    // Bilinear lookup of the mask at this pixel centre.
    const my = Math.min(S - 1, Math.max(0, ((y + 0.5) * S) / H - 0.5));
    const iy = Math.min(S - 2, Math.floor(my));
    const fy = my - iy;
    for (let x = 0; x < W; x++) {
      const mx = Math.min(S - 1, Math.max(0, ((x + 0.5) * S) / W - 0.5));
      const ix = Math.min(S - 2, Math.floor(mx));
      const fx = mx - ix;
      const o = iy * S + ix;
      const p =
        P[o]! * (1 - fx) * (1 - fy) + P[o + 1]! * fx * (1 - fy) + P[o + S]! * (1 - fx) * fy + P[o + S + 1]! * fx * fy;
      const along = ((x - f.ox) * vx + (y - f.oy) * vy) / f.height;
      const across = Math.abs((x - f.ox) * f.ux + (y - f.oy) * f.uy) / f.width;
      const side = smooth01((across - NECK_HALF) / (NECK_SIDE - NECK_HALF)) * smooth01((along - CHIN) / 0.3);
      const m = (1 - smooth01((along - NECK_TOP) / (NECK_BOTTOM - NECK_TOP))) * (1 - side);
      const a = smooth01((p - ALPHA_LO) / (ALPHA_HI - ALPHA_LO));
      const i = y * W + x;
      image[4 * i + 3] = Math.round(255 * a);
      motion[i] = m;
      if (a > 0.002 && m > 0.002) {
        if (x < bx0) bx0 = x;
        if (y < by0) by0 = y;
        if (x + 1 > bx1) bx1 = x + 1;
        if (y + 1 > by1) by1 = y + 1;
        // Filled where the person may move away from; the background is the best source of the fill, the person a
        // poor one (a little weight, so a head with no background beside it still gets a fill).
        fill[i] = 1;
      }
      known[i] = 1 - p + 0.02;
    }
  }
  // One pixel more around the filled region: the mask's soft edge keeps some hair colour just outside it.
  const grown = Uint8Array.from(fill);
  for (let y = 1; y < H - 1; y++)
    for (let x = 1; x < W - 1; x++) {
      const i = y * W + x;
      if (!fill[i] && (fill[i - 1] || fill[i + 1] || fill[i - W] || fill[i + W])) grown[i] = 1;
    }
  const plate = pushPullFill(full, grown, known);
  if (bx1 <= bx0)
    return {
      image,
      motion,
      plate: { width: W, height: H, data: Uint8Array.from(full.data) },
      box: [0, 0, 0, 0],
      segmented: true,
    };
  return { image, motion, plate, box: [bx0, by0, bx1, by1], segmented: true };
}

/**
 * The person mask kept to the connected part (probability > 0.5) that holds the face, within MAX_SIDE jaw widths of
 * the face's centre line: another person, or a hand apart from the head, is not part of this head.
 */
function keepFaceComponent(
  person: { size: number; data: Float32Array },
  f: FaceFrame,
  W: number,
  H: number,
): Float32Array {
  const S = person.size;
  const src = person.data;
  const keep = new Uint8Array(S * S);
  const sx = S / W;
  const sy = S / H;
  const seedX = Math.min(S - 1, Math.max(0, Math.round((f.ox - f.uy * f.height * 0.4) * sx)));
  const seedY = Math.min(S - 1, Math.max(0, Math.round((f.oy + f.ux * f.height * 0.4) * sy)));
  const stack: number[] = [];
  // Seed: the face's centre, or the most person-like pixel near it when the mask misses that one point.
  let seed = seedY * S + seedX;
  if (src[seed]! <= 0.5) {
    let best = -1;
    const r = Math.max(2, Math.round(0.3 * f.width * sx));
    for (let y = Math.max(0, seedY - r); y <= Math.min(S - 1, seedY + r); y++)
      for (let x = Math.max(0, seedX - r); x <= Math.min(S - 1, seedX + r); x++)
        if (src[y * S + x]! > best) {
          best = src[y * S + x]!;
          seed = y * S + x;
        }
    if (best <= 0.5) return new Float32Array(S * S);
  }
  const ux = f.ux;
  const uy = f.uy;
  const limit = MAX_SIDE * f.width;
  const inside = (i: number): boolean => {
    const x = ((i % S) + 0.5) / sx;
    const y = (Math.floor(i / S) + 0.5) / sy;
    return Math.abs((x - f.ox) * ux + (y - f.oy) * uy) <= limit;
  };
  keep[seed] = 1;
  stack.push(seed);
  while (stack.length) {
    const i = stack.pop()!;
    const x = i % S;
    const y = (i - x) / S;
    for (const j of [x > 0 ? i - 1 : -1, x < S - 1 ? i + 1 : -1, y > 0 ? i - S : -1, y < S - 1 ? i + S : -1]) {
      if (j < 0 || keep[j] || src[j]! <= 0.5 || !inside(j)) continue;
      keep[j] = 1;
      stack.push(j);
    }
  }
  // The kept part with its soft edge (pixels next to it keep their probability), then grown by GROW mask pixels (a
  // maximum filter): the network misses thin tips of hair, which would otherwise stay behind on the plate.
  const edge = new Float32Array(S * S);
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++) {
      let near = false;
      for (let dy = -2; dy <= 2 && !near; dy++)
        for (let dx = -2; dx <= 2 && !near; dx++) {
          const xx = x + dx;
          const yy = y + dy;
          if (xx >= 0 && yy >= 0 && xx < S && yy < S && keep[yy * S + xx]) near = true;
        }
      if (near && inside(y * S + x)) edge[y * S + x] = src[y * S + x]!;
    }
  const out = new Float32Array(S * S);
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++) {
      let m = 0;
      for (let dy = -GROW; dy <= GROW; dy++)
        for (let dx = -GROW; dx <= GROW; dx++) {
          const xx = x + dx;
          const yy = y + dy;
          if (xx >= 0 && yy >= 0 && xx < S && yy < S && dx * dx + dy * dy <= GROW * GROW)
            m = Math.max(m, edge[yy * S + xx]!);
        }
      out[y * S + x] = m;
    }
  return out;
}

/**
 * Fills the pixels marked in `fill` from the others (weighted by `weight`) by push-pull: a pyramid of weighted sums
 * down to one pixel, then each level's missing colour from the coarser one, coarse to fine. Returns a new picture.
 */
export function pushPullFill(img: RgbImage, fill: Uint8Array, weight: Float32Array): RgbImage {
  const levels: { w: number; h: number; c: Float32Array; n: Float32Array }[] = [];
  let w = img.width;
  let h = img.height;
  let c = new Float32Array(w * h * 3);
  let n = new Float32Array(w * h);
  for (let i = 0; i < w * h; i++) {
    const k = fill[i] ? 0 : weight[i]!;
    n[i] = k;
    c[3 * i] = img.data[3 * i]! * k;
    c[3 * i + 1] = img.data[3 * i + 1]! * k;
    c[3 * i + 2] = img.data[3 * i + 2]! * k;
  }
  levels.push({ w, h, c, n });
  while (w > 1 || h > 1) {
    const w2 = Math.max(1, (w + 1) >> 1);
    const h2 = Math.max(1, (h + 1) >> 1);
    const c2 = new Float32Array(w2 * h2 * 3);
    const n2 = new Float32Array(w2 * h2);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        const j = (y >> 1) * w2 + (x >> 1);
        n2[j] = n2[j]! + n[i]!;
        c2[3 * j] = c2[3 * j]! + c[3 * i]!;
        c2[3 * j + 1] = c2[3 * j + 1]! + c[3 * i + 1]!;
        c2[3 * j + 2] = c2[3 * j + 2]! + c[3 * i + 2]!;
      }
    w = w2;
    h = h2;
    c = c2;
    n = n2;
    levels.push({ w, h, c, n });
  }
  // Coarse to fine: a level's colour is its own weighted mean where it has enough weight, blended towards the
  // coarser level's (bilinearly upsampled) where it has little.
  let prev: { w: number; h: number; rgb: Float32Array } | null = null;
  for (let l = levels.length - 1; l >= 0; l--) {
    const L = levels[l]!;
    const rgb = new Float32Array(L.w * L.h * 3);
    for (let y = 0; y < L.h; y++)
      for (let x = 0; x < L.w; x++) {
        const i = y * L.w + x;
        let ur = 0,
          ug = 0,
          ub = 0;
        if (prev) {
          const px = Math.min(prev.w - 1, Math.max(0, (x + 0.5) / 2 - 0.5));
          const py = Math.min(prev.h - 1, Math.max(0, (y + 0.5) / 2 - 0.5));
          const x0 = Math.floor(px);
          const y0 = Math.floor(py);
          const x1 = Math.min(prev.w - 1, x0 + 1);
          const y1 = Math.min(prev.h - 1, y0 + 1);
          const fx = px - x0;
          const fy = py - y0;
          for (let k = 0; k < 3; k++) {
            const v =
              prev.rgb[3 * (y0 * prev.w + x0) + k]! * (1 - fx) * (1 - fy) +
              prev.rgb[3 * (y0 * prev.w + x1) + k]! * fx * (1 - fy) +
              prev.rgb[3 * (y1 * prev.w + x0) + k]! * (1 - fx) * fy +
              prev.rgb[3 * (y1 * prev.w + x1) + k]! * fx * fy;
            if (k === 0) ur = v;
            else if (k === 1) ug = v;
            else ub = v;
          }
        }
        const wt = L.n[i]!;
        const t = prev ? Math.min(1, wt) : 1;
        const d = wt > 1e-6 ? wt : 1;
        rgb[3 * i] = (L.c[3 * i]! / d) * t + ur * (1 - t);
        rgb[3 * i + 1] = (L.c[3 * i + 1]! / d) * t + ug * (1 - t);
        rgb[3 * i + 2] = (L.c[3 * i + 2]! / d) * t + ub * (1 - t);
      }
    prev = { w: L.w, h: L.h, rgb };
  }
  const out = Uint8Array.from(img.data);
  const fine = prev!.rgb;
  for (let i = 0; i < img.width * img.height; i++)
    if (fill[i]) {
      out[3 * i] = Math.round(fine[3 * i]!);
      out[3 * i + 1] = Math.round(fine[3 * i + 1]!);
      out[3 * i + 2] = Math.round(fine[3 * i + 2]!);
    }
  return { width: img.width, height: img.height, data: out };
}
