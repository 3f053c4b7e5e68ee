/** Shared helpers for the media tests: portraits of the test media, waitFor, synthetic I420 frames. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { portraitFile } from '../../scripts/testData.js';
import type { I420Frame, RgbImage } from '../../server/types/image.js';
import { loadImageRgb } from '../../server/util/image.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A portrait from the test media (never copied into the repo). */
export function portraitPath(name: string): string {
  return portraitFile(name);
}

export function loadPortrait(name = 'real_woman_dark_hair.png'): Promise<RgbImage> {
  return loadImageRgb(portraitPath(name));
}

/** Polls `cond` until it is truthy or `timeoutMs` passes (then throws with `what`). */
export async function waitFor(cond: () => unknown, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    if (await cond()) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A moving diagonal gradient with a bright square whose position depends on `t` (a synthetic camera). */
export function drawPattern(frame: I420Frame, t: number): void {
  const { width: w, height: h, data } = frame;
  const sx = Math.floor(((t * 7) % (w - 64)) | 0);
  const sy = Math.floor(((t * 3) % (h - 64)) | 0);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const inSq = x >= sx && x < sx + 64 && y >= sy && y < sy + 64;
      data[y * w + x] = inSq ? 235 : 16 + ((x + y + t * 4) % 200);
    }
  }
  const cw = w >> 1;
  const ch = h >> 1;
  data.fill(128 + ((t * 5) % 60) - 30, w * h, w * h + cw * ch);
  data.fill(128, w * h + cw * ch, w * h + 2 * cw * ch);
}

export function makeI420(width: number, height: number): I420Frame {
  return { width, height, data: new Uint8Array(width * height + 2 * (width >> 1) * (height >> 1)) };
}

/** Mean absolute difference of the Y planes of two frames of the same size. */
export function lumaMad(a: Uint8Array, b: Uint8Array, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.abs(a[i]! - b[i]!);
  return s / n;
}

/** Sample standard deviation of the Y plane (0 for a flat picture: black or grey screens). */
export function lumaStd(y: Uint8Array, n: number): number {
  let s = 0;
  let s2 = 0;
  for (let i = 0; i < n; i++) {
    s += y[i]!;
    s2 += y[i]! * y[i]!;
  }
  const m = s / n;
  return Math.sqrt(Math.max(0, s2 / n - m * m));
}
