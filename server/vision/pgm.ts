/**
 * Binary PGM (P5, 8-bit) read and write: the gray-frame format of the reference data
 * (../shared/reference/frames) and a convenient dump format for CLIs and tests.
 */
import { readFile, writeFile } from 'node:fs/promises';

import { AppError } from '../errors.js';
import type { GrayImage } from '../types/image.js';

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d || c === 0x0b || c === 0x0c;
}

/**
 * Decodes a binary PGM (magic P5, maxval 1..255, `#` comments allowed in the header). The pixels are a view into
 * `buf` (no copy).
 * @throws AppError UNSUPPORTED_MEDIA_TYPE when the data is not such a PGM or is truncated.
 */
export function decodePgm(buf: Uint8Array): GrayImage {
  let p = 0;
  const bad = (why: string): AppError => new AppError('UNSUPPORTED_MEDIA_TYPE', `not a binary 8-bit PGM: ${why}`);
  const token = (): string => {
    for (;;) {
      while (p < buf.length && isSpace(buf[p]!)) p++;
      if (buf[p] !== 0x23) break;
      while (p < buf.length && buf[p] !== 0x0a && buf[p] !== 0x0d) p++;
    }
    const start = p;
    while (p < buf.length && !isSpace(buf[p]!) && buf[p] !== 0x23) p++;
    return String.fromCharCode(...buf.subarray(start, p));
  };
  if (token() !== 'P5') throw bad('magic is not P5');
  const fields = [token(), token(), token()];
  const [width, height, maxval] = fields.map((f) => (/^\d{1,9}$/.test(f) ? Number(f) : NaN)) as [
    number,
    number,
    number,
  ];
  if (!(width > 0) || !(height > 0)) throw bad(`invalid size "${fields[0]} ${fields[1]}"`);
  if (!(maxval >= 1 && maxval <= 255)) throw bad(`maxval "${fields[2]}" (only 8-bit is supported)`);
  // Exactly one whitespace byte separates the header from the pixels.
  if (p >= buf.length || !isSpace(buf[p]!)) throw bad('missing whitespace after the header');
  p++;
  const n = width * height;
  if (buf.length - p < n) throw bad(`truncated pixel data (${buf.length - p} of ${n} bytes)`);
  return { width, height, data: buf.subarray(p, p + n) };
}

/** Encodes a gray image as a binary PGM (`P5\nW H\n255\n` + pixels). */
export function encodePgm(img: GrayImage): Buffer {
  const n = img.width * img.height;
  if (!Number.isInteger(n) || n <= 0 || img.data.length < n) throw new TypeError('invalid GrayImage');
  const header = Buffer.from(`P5\n${img.width} ${img.height}\n255\n`, 'latin1');
  return Buffer.concat([header, img.data.subarray(0, n)]);
}

/**
 * Reads a binary PGM file.
 * @throws AppError UNSUPPORTED_MEDIA_TYPE (naming the file) when it is not a binary 8-bit PGM; fs errors as is.
 */
export async function readPgm(file: string): Promise<GrayImage> {
  const buf = await readFile(file);
  try {
    return decodePgm(buf);
  } catch (err) {
    if (err instanceof AppError) throw new AppError(err.code, `${file}: ${err.message}`, { cause: err });
    throw err;
  }
}

/** Writes a gray image as a binary PGM file. */
export async function writePgm(file: string, img: GrayImage): Promise<void> {
  await writeFile(file, encodePgm(img));
}
