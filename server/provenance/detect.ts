/**
 * Watermark detection in files (an image or a clip): decoded with ffmpeg (area-downscaled to at most 512 px on the
 * long side, which the lattice does not mind), luma (BT.601) per frame, frames grouped into 1-second windows
 * (index / fps), each window decoded on its own. An image (JPEG, PNG, WebP: decoded with sharp, at full size or, when
 * the caller gives `maxSide`, shrunk while decoding) is one window of one frame. The pixel count is read from the header (sharp's metadata(),
 * ffprobe) and checked before anything is decoded.
 */
import sharp, { type Metadata, type OutputInfo } from 'sharp';
import type { RgbImage } from '../types/image.js';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { AppError } from '../errors.js';
import { sniffImage } from '../portraits/sniff.js';
import { probeVideo, readVideoFrames, type InputRestriction } from '../util/video.js';
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
  /**
   * Long side the frames are downscaled to (never up); default 512 for a clip, full size for an image (a public
   * caller gives it to shrink images while decoding).
   */
  maxSide?: number;
  /**
   * Largest picture (w*h) decoded, read from the header first: bigger is AppError('IMAGE_TOO_LARGE') before any
   * decoding. Default 268_402_689 (sharp's own limit).
   */
  maxPixels?: number;
  /** What ffmpeg may open for a clip (an untrusted upload); default anything. */
  restrict?: InputRestriction;
}

function tooLarge(width: number, height: number, maxPixels: number): AppError {
  return new AppError(
    'IMAGE_TOO_LARGE',
    `picture of ${width}x${height} pixels: at most ${(maxPixels / 1e6).toFixed(1)} megapixels are checked`,
  );
}

/**
 * Decodes an image at most `maxSide` on its long side (null: full size): the size is read from the header and refused when over
 * `maxPixels`; sharp then decodes sequentially and shrinks while decoding (JPEG: in the DCT), so a large image never
 * exists in memory at full size.
 */
async function imageLuma(file: string, maxSide: number | null, maxPixels: number): Promise<RgbImage> {
  let meta: Metadata;
  try {
    meta = await sharp(file, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'not a decodable image', { cause: err });
  }
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  if (w * h > maxPixels) throw tooLarge(w, h, maxPixels);
  let out: { data: Buffer; info: OutputInfo };
  try {
    let img = sharp(file, { failOn: 'error', limitInputPixels: maxPixels, sequentialRead: true }).rotate();
    if (maxSide !== null)
      img = img.resize({ width: maxSide, height: maxSide, fit: 'inside', withoutEnlargement: true });
    out = await img
      .flatten({ background: { r: 255, g: 255, b: 255 } })
      .toColourspace('srgb')
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'not a decodable image', { cause: err });
  }
  const { width, height, channels } = out.info;
  if (channels !== 3) throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'not a decodable image');
  return { width, height, data: new Uint8Array(out.data.buffer, out.data.byteOffset, width * height * 3) };
}

/**
 * Detects the watermark in an image or a clip.
 * @throws AppError('NOT_FOUND' | 'UNSUPPORTED_MEDIA_TYPE') for a missing or undecodable file.
 */
export async function detectFile(file: string, opts: DetectOptions = {}): Promise<FileDetection> {
  const maxPixels = opts.maxPixels ?? 268_402_689;
  if (await isImageFile(file)) {
    const img = await imageLuma(file, opts.maxSide ?? null, maxPixels);
    const det = new WatermarkDetector();
    det.addLuma(rgbLuma(img), img.width, img.height);
    const results = [det.result()];
    return { ...summarize(results), windows: 1, results, fps: 0, frames: 1 };
  }
  const maxSide = opts.maxSide ?? 512;
  const restrict = opts.restrict ?? {};
  const info = await probeVideo(file, restrict);
  if (info.storedWidth * info.storedHeight > maxPixels) throw tooLarge(info.storedWidth, info.storedHeight, maxPixels);
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
    restrict,
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
