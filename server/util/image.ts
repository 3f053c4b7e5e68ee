/**
 * Still-image I/O and pixel-format conversions (RGB, gray, I420).
 *
 * Decoding goes through sharp (JPEG, PNG, WebP, ...; the content is sniffed, not the extension). Conversions are
 * plain loops over typed arrays that take an optional output buffer, so per-frame callers allocate nothing.
 */
import path from 'node:path';
import sharp, { type OutputInfo } from 'sharp';
import { AppError } from '../errors.js';
import type { GrayImage, I420Frame, RgbImage } from '../types/image.js';

/**
 * Decodes an image file or buffer to packed 8-bit RGB.
 * EXIF orientation is applied; an alpha channel is composited onto white (for the common case of an opaque alpha
 * channel this equals dropping it). Grayscale input is expanded to three equal channels.
 * @throws AppError('UNSUPPORTED_MEDIA_TYPE') when the content is not a decodable image, ('NOT_FOUND') for a missing file.
 */
export async function loadImageRgb(input: string | Buffer | Uint8Array): Promise<RgbImage> {
  let result: { data: Buffer; info: OutputInfo };
  try {
    result = await sharp(input, { failOn: 'error', limitInputPixels: 268_402_689 })
      .rotate()
      .flatten({ background: { r: 255, g: 255, b: 255 } })
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (typeof input === 'string' && (e.code === 'ENOENT' || /missing|not exist/i.test(e.message ?? ''))) {
      throw new AppError('NOT_FOUND', `image not found: ${path.basename(input)}`, { cause: err });
    }
    throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'not a decodable image', { cause: err });
  }
  const { data, info } = result;
  const { width, height, channels } = info;
  if (channels === 3) return { width, height, data: new Uint8Array(data.buffer, data.byteOffset, width * height * 3) };
  // sharp may still hand back 1, 2 or 4 channels for some inputs: repack to RGB.
  const out = new Uint8Array(width * height * 3);
  for (let i = 0, n = width * height; i < n; i++) {
    const s = i * channels;
    if (channels < 3) {
      const v = data[s]!;
      out[i * 3] = v;
      out[i * 3 + 1] = v;
      out[i * 3 + 2] = v;
    } else {
      out[i * 3] = data[s]!;
      out[i * 3 + 1] = data[s + 1]!;
      out[i * 3 + 2] = data[s + 2]!;
    }
  }
  return { width, height, data: out };
}

/** Encodes RGB to PNG, JPEG or WebP, chosen by the file extension (.png, .jpg/.jpeg, .webp). */
export async function saveImage(file: string, img: RgbImage): Promise<void> {
  const ext = path.extname(file).toLowerCase();
  const s = sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.width * img.height * 3), {
    raw: { width: img.width, height: img.height, channels: 3 },
  });
  if (ext === '.png') await s.png().toFile(file);
  else if (ext === '.jpg' || ext === '.jpeg') await s.jpeg({ quality: 92 }).toFile(file);
  else if (ext === '.webp') await s.webp({ quality: 92 }).toFile(file);
  else throw new AppError('UNSUPPORTED_MEDIA_TYPE', `unsupported image extension "${ext}" (use .png, .jpg or .webp)`);
}

/** Encodes RGB to an in-memory PNG or JPEG. */
export async function encodeImage(img: RgbImage, format: 'png' | 'jpeg' = 'png'): Promise<Buffer> {
  const s = sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.width * img.height * 3), {
    raw: { width: img.width, height: img.height, channels: 3 },
  });
  return format === 'png' ? s.png().toBuffer() : s.jpeg({ quality: 92 }).toBuffer();
}

/** Allocates a gray image. */
export function createGray(width: number, height: number): GrayImage {
  return { width, height, data: new Uint8Array(width * height) };
}

/** Allocates an RGB image. */
export function createRgb(width: number, height: number): RgbImage {
  return { width, height, data: new Uint8Array(width * height * 3) };
}

/** Allocates an I420 frame (chroma planes of ceil(w/2) x ceil(h/2)). */
export function createI420(width: number, height: number): I420Frame {
  const cw = (width + 1) >> 1;
  const ch = (height + 1) >> 1;
  return { width, height, data: new Uint8Array(width * height + 2 * cw * ch) };
}

/**
 * RGB to gray with dlib's rule, gray = floor((R+G+B)/3): the 68-point model and the reference data use it.
 * Writes into `out` when given (same size), else allocates.
 */
export function rgbToGray(rgb: RgbImage, out?: GrayImage): GrayImage {
  const n = rgb.width * rgb.height;
  const dst = out ?? createGray(rgb.width, rgb.height);
  if (dst.width !== rgb.width || dst.height !== rgb.height) throw new TypeError('rgbToGray: output size mismatch');
  const s = rgb.data;
  const d = dst.data;
  for (let i = 0, j = 0; i < n; i++, j += 3) d[i] = ((s[j]! + s[j + 1]! + s[j + 2]!) / 3) | 0;
  return dst;
}

/** Gray to RGB (three equal channels). */
export function grayToRgb(gray: GrayImage, out?: RgbImage): RgbImage {
  const dst = out ?? createRgb(gray.width, gray.height);
  const n = gray.width * gray.height;
  for (let i = 0, j = 0; i < n; i++, j += 3) {
    const v = gray.data[i]!;
    dst.data[j] = v;
    dst.data[j + 1] = v;
    dst.data[j + 2] = v;
  }
  return dst;
}

function clamp255(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * I420 to RGB, BT.601 limited range (Y 16-235, UV 16-240): the convention of WebRTC's camera frames.
 * Fixed-point coefficients (8 fractional bits) as in libyuv's reference conversion.
 */
export function i420ToRgb(frame: I420Frame, out?: RgbImage): RgbImage {
  const { width: w, height: h, data } = frame;
  const dst = out ?? createRgb(w, h);
  if (dst.width !== w || dst.height !== h) throw new TypeError('i420ToRgb: output size mismatch');
  const cw = (w + 1) >> 1;
  const ch = (h + 1) >> 1;
  const uOff = w * h;
  const vOff = uOff + cw * ch;
  if (data.length < vOff + cw * ch) throw new TypeError('i420ToRgb: buffer too small for the frame size');
  const d = dst.data;
  for (let y = 0; y < h; y++) {
    const crow = (y >> 1) * cw;
    let o = y * w * 3;
    for (let x = 0; x < w; x++, o += 3) {
      const c = 298 * (data[y * w + x]! - 16) + 128;
      const du = data[uOff + crow + (x >> 1)]! - 128;
      const dv = data[vOff + crow + (x >> 1)]! - 128;
      d[o] = clamp255((c + 409 * dv) >> 8);
      d[o + 1] = clamp255((c - 100 * du - 208 * dv) >> 8);
      d[o + 2] = clamp255((c + 516 * du) >> 8);
    }
  }
  return dst;
}

/**
 * I420 to dlib gray, floor((R+G+B)/3) of the BT.601 RGB, without building the RGB image.
 * The tracker's input from a WebRTC frame.
 */
export function i420ToGray(frame: I420Frame, out?: GrayImage): GrayImage {
  const { width: w, height: h, data } = frame;
  const dst = out ?? createGray(w, h);
  if (dst.width !== w || dst.height !== h) throw new TypeError('i420ToGray: output size mismatch');
  const cw = (w + 1) >> 1;
  const ch = (h + 1) >> 1;
  const uOff = w * h;
  const vOff = uOff + cw * ch;
  const d = dst.data;
  for (let y = 0; y < h; y++) {
    const crow = (y >> 1) * cw;
    for (let x = 0; x < w; x++) {
      const c = 298 * (data[y * w + x]! - 16) + 128;
      const du = data[uOff + crow + (x >> 1)]! - 128;
      const dv = data[vOff + crow + (x >> 1)]! - 128;
      const r = clamp255((c + 409 * dv) >> 8);
      const g = clamp255((c - 100 * du - 208 * dv) >> 8);
      const b = clamp255((c + 516 * du) >> 8);
      d[y * w + x] = ((r + g + b) / 3) | 0;
    }
  }
  return dst;
}

/**
 * RGB to I420, BT.601 limited range. Chroma is computed from the 2x2 average of RGB (edge pixels repeat for odd sizes).
 */
export function rgbToI420(rgb: RgbImage, out?: I420Frame): I420Frame {
  const { width: w, height: h, data: s } = rgb;
  const dst = out ?? createI420(w, h);
  if (dst.width !== w || dst.height !== h) throw new TypeError('rgbToI420: output size mismatch');
  const cw = (w + 1) >> 1;
  const ch = (h + 1) >> 1;
  const uOff = w * h;
  const vOff = uOff + cw * ch;
  const d = dst.data;
  for (let i = 0, j = 0, n = w * h; i < n; i++, j += 3) {
    d[i] = ((66 * s[j]! + 129 * s[j + 1]! + 25 * s[j + 2]! + 128) >> 8) + 16;
  }
  for (let cy = 0; cy < ch; cy++) {
    const y0 = cy * 2;
    const y1 = Math.min(y0 + 1, h - 1);
    for (let cx = 0; cx < cw; cx++) {
      const x0 = cx * 2;
      const x1 = Math.min(x0 + 1, w - 1);
      const a = (y0 * w + x0) * 3;
      const b = (y0 * w + x1) * 3;
      const c = (y1 * w + x0) * 3;
      const e = (y1 * w + x1) * 3;
      const r = (s[a]! + s[b]! + s[c]! + s[e]! + 2) >> 2;
      const g = (s[a + 1]! + s[b + 1]! + s[c + 1]! + s[e + 1]! + 2) >> 2;
      const bl = (s[a + 2]! + s[b + 2]! + s[c + 2]! + s[e + 2]! + 2) >> 2;
      d[uOff + cy * cw + cx] = ((-38 * r - 74 * g + 112 * bl + 128) >> 8) + 128;
      d[vOff + cy * cw + cx] = ((112 * r - 94 * g - 18 * bl + 128) >> 8) + 128;
    }
  }
  return dst;
}

/**
 * Bilinear resize with pixel-centre alignment (as OpenCV INTER_LINEAR / sharp without antialiasing).
 * For strong downscales prefer sharp's resize or an area filter; this is meant for per-frame use on small ratios.
 */
export function resizeRgb(src: RgbImage, width: number, height: number, out?: RgbImage): RgbImage {
  if (!(width > 0 && height > 0)) throw new TypeError('resizeRgb: size must be positive');
  const dst = out ?? createRgb(width, height);
  if (dst.width !== width || dst.height !== height) throw new TypeError('resizeRgb: output size mismatch');
  resizeBilinear(src.data, src.width, src.height, dst.data, width, height, 3);
  return dst;
}

/** Bilinear resize of an interleaved 8-bit image with `ch` channels (pixel-centre alignment, edge clamp). */
export function resizeBilinear(
  s: Uint8Array,
  sw: number,
  sh: number,
  d: Uint8Array,
  dw: number,
  dh: number,
  ch: number,
): void {
  const fx = sw / dw;
  const fy = sh / dh;
  for (let y = 0; y < dh; y++) {
    let sy = (y + 0.5) * fy - 0.5;
    if (sy < 0) sy = 0;
    let y0 = Math.floor(sy);
    if (y0 > sh - 1) y0 = sh - 1;
    const y1 = y0 + 1 < sh ? y0 + 1 : sh - 1;
    const wy = sy - y0;
    const r0 = y0 * sw * ch;
    const r1 = y1 * sw * ch;
    let o = y * dw * ch;
    for (let x = 0; x < dw; x++) {
      let sx = (x + 0.5) * fx - 0.5;
      if (sx < 0) sx = 0;
      let x0 = Math.floor(sx);
      if (x0 > sw - 1) x0 = sw - 1;
      const x1 = x0 + 1 < sw ? x0 + 1 : sw - 1;
      const wx = sx - x0;
      const a = x0 * ch;
      const b = x1 * ch;
      for (let c = 0; c < ch; c++, o++) {
        const top = s[r0 + a + c]! + (s[r0 + b + c]! - s[r0 + a + c]!) * wx;
        const bot = s[r1 + a + c]! + (s[r1 + b + c]! - s[r1 + a + c]!) * wx;
        d[o] = (top + (bot - top) * wy + 0.5) | 0;
      }
    }
  }
}
