/**
 * Watermark detection in files (an image or a clip): decoded with ffmpeg (area-downscaled to at most 512 px on the
 * long side, which the lattice does not mind), luma (BT.601) per frame, frames grouped into 1-second windows
 * (index / fps), each window decoded on its own. An image (JPEG, PNG, WebP: decoded with sharp at full size) is one
 * window of one frame.
 */
import type { RgbImage } from '../types/image.js';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { AppError } from '../errors.js';
import { sniffImage } from '../portraits/sniff.js';
import { loadImageRgb } from '../util/image.js';
import { probeVideo, readVideoFrames } from '../util/video.js';
import { WatermarkDetector, type WindowResult } from './watermark.js';

export interface FileDetection {
  /** At least one window decoded. */
  present: boolean;
  /** The payload decoded in most windows, or null. */
  payload: string | null;
  windows: number;
  detectedWindows: number;
  /** Per window, in order. */
  results: WindowResult[];
  fps: number;
  frames: number;
}

/** BT.601 studio-range luma of packed RGB (what an I420 encoder stores as Y). */
export function rgbLuma(img: RgbImage, out?: Uint8Array): Uint8Array {
  const n = img.width * img.height;
  const y = out && out.length >= n ? out : new Uint8Array(n);
  const d = img.data;
  for (let i = 0, j = 0; i < n; i++, j += 3)
    y[i] = (66 * d[j]! + 129 * d[j + 1]! + 25 * d[j + 2]! + 128 + (16 << 8)) >> 8;
  return y;
}

/** JPEG, PNG or WebP by its first bytes. @throws AppError('NOT_FOUND') for a missing file. */
async function isImageFile(file: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (err) {
    throw new AppError('NOT_FOUND', `file not found: ${path.basename(file)}`, { cause: err });
  }
  try {
    const head = new Uint8Array(32);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    return sniffImage(head.subarray(0, bytesRead)) !== null;
  } finally {
    await fh.close();
  }
}

/** Summarizes window results: present when any window decoded; the payload is the most frequent one. */
export function summarize(results: WindowResult[]): {
  present: boolean;
  payload: string | null;
  detectedWindows: number;
} {
  const counts = new Map<string, number>();
  for (const r of results) if (r.present && r.payload) counts.set(r.payload, (counts.get(r.payload) ?? 0) + 1);
  let payload: string | null = null;
  let best = 0;
  for (const [p, n] of counts) if (n > best) [payload, best] = [p, n];
  const detectedWindows = results.filter((r) => r.present).length;
  return { present: detectedWindows > 0, payload, detectedWindows };
}

export interface DetectOptions {
  /** Window length, ms; default 1000. */
  windowMs?: number;
  /** Decode at most this many frames; default all. */
  maxFrames?: number;
  /** Long side the frames are downscaled to (never up); default 512. */
  maxSide?: number;
}

/**
 * Detects the watermark in an image or a clip.
 * @throws AppError('NOT_FOUND' | 'UNSUPPORTED_MEDIA_TYPE') for a missing or undecodable file.
 */
export async function detectFile(file: string, opts: DetectOptions = {}): Promise<FileDetection> {
  if (await isImageFile(file)) {
    const img = await loadImageRgb(file);
    const det = new WatermarkDetector();
    det.addLuma(rgbLuma(img), img.width, img.height);
    const results = [det.result()];
    return { ...summarize(results), windows: 1, results, fps: 0, frames: 1 };
  }
  const info = await probeVideo(file);
  const maxSide = opts.maxSide ?? 512;
  const scale = Math.min(1, maxSide / Math.max(info.width, info.height));
  const size =
    info.width >= info.height
      ? { width: Math.max(2, Math.round((info.width * scale) / 2) * 2) }
      : { height: Math.max(2, Math.round((info.height * scale) / 2) * 2) };
  const fps = Number.isFinite(info.fps) && info.fps > 0 ? info.fps : 1;
  const perWindow = Math.max(1, Math.round((fps * (opts.windowMs ?? 1000)) / 1000));
  const det = new WatermarkDetector();
  const results: WindowResult[] = [];
  let luma: Uint8Array = new Uint8Array(0);
  let frames = 0;
  for await (const f of readVideoFrames(file, {
    format: 'rgb24',
    ...size,
    ...(opts.maxFrames !== undefined ? { maxFrames: opts.maxFrames } : {}),
  })) {
    luma = rgbLuma({ width: f.width, height: f.height, data: f.data }, luma);
    det.addLuma(luma, f.width, f.height);
    frames++;
    if (det.frames >= perWindow) {
      results.push(det.result());
      det.reset();
    }
  }
  // A last partial window counts when it holds at least half a window (or it is the only one: an image).
  if (det.frames > 0 && (det.frames * 2 >= perWindow || results.length === 0)) results.push(det.result());
  return { ...summarize(results), windows: results.length, results, fps, frames };
}
