/**
 * Gaze from the pupils: the darkest part of each eye polygon (68-point landmarks) of the gray frame, expressed in the
 * eye's own frame. "Left" is the eye on the image's left (landmarks 36-41).
 */
import type { GrayImage } from '../types/image.js';

/** Result of the pupil search in one eye. */
export interface PupilResult {
  /** Offset of the pupil from the eye centre along the eye axis / its half-width (+ = image right). */
  x: number;
  /** Offset across the eye axis / half the eye height (+ = down). */
  y: number;
  /** 0..1: contrast between the pupil and the rest of the eye (low for closed eyes, glare, tiny eyes). */
  quality: number;
}

/**
 * Finds the pupil of one eye: the intensity-weighted centroid of the darkest pixels inside the eye polygon
 * (landmarks first..first+5), expressed in the eye's own frame (corner-to-corner axis). Allocation-free.
 */
export class PupilFinder {
  // Histogram for the dark threshold.
  readonly #hist = new Int32Array(256);
  readonly #poly = new Float64Array(12);

  find(img: GrayImage, p: ArrayLike<number>, first: 36 | 42, out: PupilResult): PupilResult {
    out.x = 0;
    out.y = 0;
    out.quality = 0;
    const poly = this.#poly;
    let minX = Infinity;
    let minY = Infinity;
    let maxX = -Infinity;
    let maxY = -Infinity;
    for (let i = 0; i < 6; i++) {
      const x = p[2 * (first + i)]!;
      const y = p[2 * (first + i) + 1]!;
      poly[2 * i] = x;
      poly[2 * i + 1] = y;
      if (x < minX) minX = x;
      if (x > maxX) maxX = x;
      if (y < minY) minY = y;
      if (y > maxY) maxY = y;
    }
    const x0 = Math.max(0, Math.floor(minX));
    const y0 = Math.max(0, Math.floor(minY));
    const x1 = Math.min(img.width - 1, Math.ceil(maxX));
    const y1 = Math.min(img.height - 1, Math.ceil(maxY));
    if (x1 - x0 < 3 || y1 - y0 < 1) return out;
    const hist = this.#hist;
    hist.fill(0);
    let count = 0;
    let sum = 0;
    const d = img.data;
    const w = img.width;
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        if (!inside(poly, x + 0.5, y + 0.5)) continue;
        const v = d[y * w + x]!;
        hist[v] = hist[v]! + 1;
        count++;
        sum += v;
      }
    }
    if (count < 6) return out;
    // Dark threshold: the 25th percentile of the eye's pixels (the iris and pupil fill roughly a third of an open eye).
    const target = Math.max(1, Math.floor(count * 0.25));
    let acc = 0;
    let thr = 0;
    for (; thr < 256; thr++) {
      acc += hist[thr]!;
      if (acc >= target) break;
    }
    let sw = 0;
    let sx = 0;
    let sy = 0;
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const v = d[y * w + x]!;
        if (v > thr || !inside(poly, x + 0.5, y + 0.5)) continue;
        const wt = thr - v + 1;
        sw += wt;
        sx += wt * (x + 0.5);
        sy += wt * (y + 0.5);
      }
    }
    if (!(sw > 0)) return out;
    const px = sx / sw;
    const py = sy / sw;
    // Eye frame: x along corner 0 -> corner 3, centred on the mean of the six points (the upper lid arcs higher
    // than the lower one, so the visible eye's centre lies above the corner line).
    const ax = poly[6]! - poly[0]!;
    const ay = poly[7]! - poly[1]!;
    const len = Math.hypot(ax, ay);
    if (!(len > 0)) return out;
    const ux = ax / len;
    const uy = ay / len;
    let cx = 0;
    let cy = 0;
    for (let i = 0; i < 6; i++) {
      cx += poly[2 * i]!;
      cy += poly[2 * i + 1]!;
    }
    cx /= 6;
    cy /= 6;
    const halfH = Math.max(
      0.5,
      (Math.hypot(poly[2]! - poly[10]!, poly[3]! - poly[11]!) + Math.hypot(poly[4]! - poly[8]!, poly[5]! - poly[9]!)) /
        4,
    );
    const rx = px - cx;
    const ry = py - cy;
    out.x = clamp((rx * ux + ry * uy) / (len / 2), -1.5, 1.5);
    out.y = clamp((-rx * uy + ry * ux) / halfH, -1.5, 1.5);
    const mean = sum / count;
    // Contrast of the dark part against the eye's mean, saturating at 40 grey levels.
    out.quality = clamp((mean - thr) / 40, 0, 1);
    return out;
  }
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/** Point in polygon (even-odd rule) for a 6-vertex polygon stored x0,y0,... */
function inside(poly: Float64Array, x: number, y: number): boolean {
  let c = false;
  for (let i = 0, j = 5; i < 6; j = i++) {
    const xi = poly[2 * i]!;
    const yi = poly[2 * i + 1]!;
    const xj = poly[2 * j]!;
    const yj = poly[2 * j + 1]!;
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) c = !c;
  }
  return c;
}
