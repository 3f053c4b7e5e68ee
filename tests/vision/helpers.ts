/**
 * Shared test helpers for the vision tests: test data paths ($AVATAR_TEST_DATA, see scripts/testData.ts), PGM
 * frames, box overlap.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Box } from '../../server/vision/types.js';
import type { GrayImage } from '../../server/types/image.js';
import { mediaDir, referenceAvailable, referenceDir, referenceSkipMessage } from '../../scripts/testData.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const refDir = referenceDir;
export { mediaDir };

/**
 * Whether the dlib/OpenCV reference data is missing; when it is, prints (once per test file) that `what` is
 * skipped and why. The media are checked before any test runs (tests/globalSetup.ts); the reference folder is not
 * publicly downloadable, so the tests that need it skip instead of failing.
 */
export function referenceMissing(what: string): boolean {
  if (referenceAvailable()) return false;
  process.stdout.write(`${referenceSkipMessage(what)}\n`);
  return true;
}

/** Throws a clear error when a test data file is missing (the test needs it). */
export function requireShared(p: string): string {
  if (!existsSync(p)) {
    throw new Error(`test data missing: ${p} (see test-data/README.md)`);
  }
  return p;
}

/** Reads a binary P5 PGM (the reference frames' format). */
export function readPgm(file: string): GrayImage {
  const buf = readFileSync(requireShared(file));
  const header = buf.subarray(0, 64).toString('latin1');
  const m = /^P5\s+(\d+)\s+(\d+)\s+(\d+)\s/.exec(header);
  if (!m) throw new Error(`not a P5 PGM: ${file}`);
  const w = Number(m[1]);
  const h = Number(m[2]);
  const off = m[0].length;
  return { width: w, height: h, data: new Uint8Array(buf.buffer, buf.byteOffset + off, w * h).slice() };
}

export interface DlibRefFace {
  box: [number, number, number, number];
  score: number;
  landmarks: [number, number][];
}
export interface DlibRefFrame {
  image: string;
  upsample: number;
  faces: DlibRefFace[];
}

/** dlib_landmarks.jsonl, upsample-0 lines (the HOG detector's faces and their landmarks). */
export function dlibReference(): DlibRefFrame[] {
  return readFileSync(requireShared(path.join(refDir, 'dlib_landmarks.jsonl')), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as DlibRefFrame)
    .filter((r) => r.upsample === 0);
}

export function frameName(image: string): string {
  return path.basename(image, '.pgm');
}

export function iou(a: Box, b: Box): number {
  const ix = Math.max(0, Math.min(a.r, b.r) - Math.max(a.l, b.l));
  const iy = Math.max(0, Math.min(a.b, b.b) - Math.max(a.t, b.t));
  const i = ix * iy;
  const u = (a.r - a.l) * (a.b - a.t) + (b.r - b.l) * (b.b - b.t) - i;
  return u > 0 ? i / u : 0;
}

export function boxOf(b: readonly number[]): Box {
  return { l: b[0]!, t: b[1]!, r: b[2]!, b: b[3]! };
}

/** Mean landmark distance over the interocular distance (eye centres of `ref`). */
export function landmarkError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  const eye = (first: number): [number, number] => {
    let x = 0;
    let y = 0;
    for (let i = first; i < first + 6; i++) {
      x += ref[2 * i]!;
      y += ref[2 * i + 1]!;
    }
    return [x / 6, y / 6];
  };
  const [lx, ly] = eye(36);
  const [rx, ry] = eye(42);
  const io = Math.hypot(rx - lx, ry - ly);
  let s = 0;
  for (let i = 0; i < 68; i++) s += Math.hypot(a[2 * i]! - ref[2 * i]!, a[2 * i + 1]! - ref[2 * i + 1]!);
  return s / 68 / io;
}
