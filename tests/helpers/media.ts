/**
 * Fake-camera media for Chromium: .y4m files made at test time (in a temp folder, never committed) from the test
 * media's driving clips. Chromium's --use-file-for-fake-video-capture loops the file.
 *
 * With `marker: true` every frame carries its index as a row of 16 black/white blocks across the top (12 bits of
 * index + a 4-bit check), big enough to survive VP8 at low bitrates; `decodeMarker` reads it back from luma.
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Files of the test media ($AVATAR_TEST_DATA/media, read in place; see test-data/README.md). */
export { drivingClip, portraitFile } from '../../scripts/testData.js';

export const MARKER_BLOCKS = 16;
export const MARKER_VALUE_BITS = 12;
/** Marker band height as a fraction of the frame height. */
export const MARKER_BAND = 1 / 12;

/** 4-bit check of a 12-bit value: xor of its nibbles, so a misread block almost always fails the check. */
export function markerCheck(v: number): number {
  return (v ^ (v >> 4) ^ (v >> 8) ^ 0b1010) & 15;
}

/** The 16 block bits (LSB first) for a frame index. */
export function markerBits(index: number): number[] {
  const v = index & ((1 << MARKER_VALUE_BITS) - 1);
  const word = v | (markerCheck(v) << MARKER_VALUE_BITS);
  return Array.from({ length: MARKER_BLOCKS }, (_, i) => (word >> i) & 1);
}

/** Paints the marker into a planar I420 frame (luma blocks, neutral chroma in the band). */
export function paintMarker(frame: Uint8Array, width: number, height: number, index: number): void {
  const bits = markerBits(index);
  const bandH = Math.max(8, Math.round(height * MARKER_BAND)) & ~1;
  const blockW = width / MARKER_BLOCKS;
  for (let y = 0; y < bandH; y++) {
    const row = y * width;
    for (let x = 0; x < width; x++)
      frame[row + x] = bits[Math.min(MARKER_BLOCKS - 1, Math.floor(x / blockW))] ? 235 : 16;
  }
  const cw = width >> 1;
  const uOff = width * height;
  const vOff = uOff + cw * (height >> 1);
  for (let y = 0; y < bandH >> 1; y++) {
    frame.fill(128, uOff + y * cw, uOff + (y + 1) * cw);
    frame.fill(128, vOff + y * cw, vOff + (y + 1) * cw);
  }
}

/**
 * Reads a marker from luma samples: `lumaAt(fx, fy)` returns 0..255 at fractional frame coordinates. Returns the
 * frame index, or null when the check fails (no marker, or a block was misread).
 */
export function decodeMarker(lumaAt: (fx: number, fy: number) => number): number | null {
  let word = 0;
  for (let i = 0; i < MARKER_BLOCKS; i++) {
    if (lumaAt((i + 0.5) / MARKER_BLOCKS, MARKER_BAND / 2) > 128) word |= 1 << i;
  }
  const v = word & ((1 << MARKER_VALUE_BITS) - 1);
  return word >> MARKER_VALUE_BITS === markerCheck(v) ? v : null;
}

export interface Y4mOptions {
  /** Source clip (any format ffmpeg reads). */
  source: string;
  width?: number;
  height?: number;
  fps?: number;
  /** Length; the source is looped when shorter. */
  seconds?: number;
  /** Burn the frame-index marker in. */
  marker?: boolean;
  /** Output file; default a new temp folder. */
  out?: string;
}

/**
 * Writes a .y4m (yuv420p) from a clip: scaled to fit width×height with black bars, at `fps`, `seconds` long.
 * Returns the file path. A 640×480 clip is ~13.8 MB per second: keep it in os.tmpdir().
 */
export async function makeY4m(opts: Y4mOptions): Promise<string> {
  const width = opts.width ?? 640;
  const height = opts.height ?? 480;
  const fps = opts.fps ?? 30;
  const seconds = opts.seconds ?? 8;
  const out = opts.out ?? path.join(await mkdtemp(path.join(os.tmpdir(), 'avatar-y4m-')), 'camera.y4m');
  const vf = `scale=${width}:${height}:force_original_aspect_ratio=decrease,pad=${width}:${height}:(ow-iw)/2:(oh-ih)/2,fps=${fps},format=yuv420p`;
  const args = ['-v', 'error', '-stream_loop', '-1', '-i', opts.source, '-t', String(seconds), '-an', '-vf', vf];
  if (!opts.marker) {
    await run('ffmpeg', [...args, '-f', 'yuv4mpegpipe', '-y', out]);
    return out;
  }
  // Raw frames through Node so that each one gets its index painted in.
  const frameBytes = (width * height * 3) / 2;
  const file = createWriteStream(out);
  const write = (b: Uint8Array | string): Promise<void> =>
    new Promise((resolve, reject) => file.write(b, (err) => (err ? reject(err) : resolve())));
  await write(`YUV4MPEG2 W${width} H${height} F${fps}:1 Ip A1:1 C420jpeg\n`);
  const ff = spawn('ffmpeg', [...args, '-f', 'rawvideo', '-pix_fmt', 'yuv420p', 'pipe:1'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  ff.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number>((resolve, reject) => {
    ff.on('error', reject);
    ff.on('close', (code) => resolve(code ?? -1));
  });
  let buf: Buffer = Buffer.alloc(0);
  let index = 0;
  for await (const chunk of ff.stdout as AsyncIterable<Buffer>) {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while (buf.length >= frameBytes) {
      const frame = new Uint8Array(buf.subarray(0, frameBytes));
      paintMarker(frame, width, height, index++);
      await write('FRAME\n');
      await write(frame);
      buf = buf.subarray(frameBytes);
    }
  }
  const code = await exited;
  await new Promise<void>((resolve, reject) => file.end((err?: Error | null) => (err ? reject(err) : resolve())));
  if (code !== 0) throw new Error(`ffmpeg failed (${code}): ${stderr.trim()}`);
  return out;
}

/** Decodes one frame of a clip to 8-bit grayscale at width×height (scaled to fit with black bars, like makeY4m). */
export async function grayFrame(source: string, width: number, height: number, atSeconds = 0): Promise<Uint8Array> {
  const vf = `scale=${width}:${height}:force_original_aspect_ratio=decrease,pad=${width}:${height}:(ow-iw)/2:(oh-ih)/2,format=gray`;
  const data = await run('ffmpeg', [
    '-v',
    'error',
    '-ss',
    String(atSeconds),
    '-i',
    source,
    '-frames:v',
    '1',
    '-vf',
    vf,
    '-f',
    'rawvideo',
    'pipe:1',
  ]);
  if (data.length !== width * height) throw new Error(`expected ${width * height} bytes, got ${data.length}`);
  return new Uint8Array(data);
}

function run(cmd: string, args: string[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => chunks.push(d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0 ? resolve(Buffer.concat(chunks)) : reject(new Error(`${cmd} failed (${code}): ${stderr.trim()}`)),
    );
  });
}

/** Pearson correlation of two equally long sample arrays (1 = same picture up to brightness/contrast). */
export function correlation(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length || a.length === 0)
    throw new TypeError('correlation: arrays must have the same non-zero length');
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < a.length; i++) {
    ma += a[i]!;
    mb += b[i]!;
  }
  ma /= a.length;
  mb /= b.length;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < a.length; i++) {
    const da = a[i]! - ma;
    const db = b[i]! - mb;
    sab += da * db;
    saa += da * da;
    sbb += db * db;
  }
  return saa === 0 || sbb === 0 ? 0 : sab / Math.sqrt(saa * sbb);
}
