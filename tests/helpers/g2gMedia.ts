/**
 * Fake-camera clips built from chosen frames of a driving clip, for the default-engine e2e test and the
 * glass-to-glass benchmark: a clip's frames are decoded once (I420, scaled to fit with black bars like makeY4m), then
 * written in any order, held or ping-ponged, optionally with the frame-index marker of media.ts burned in (the index
 * is the frame's position in the written file, so the performer page can name the frame it captured).
 * Files go to a temp folder (never the repository); Chromium loops them.
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MARKER_VALUE_BITS, paintMarker } from './media.js';

export interface DecodeOptions {
  width?: number;
  height?: number;
  fps?: number;
  /** Extra ffmpeg filters before the scale (e.g. a crop). */
  preFilter?: string;
  /** Stop after this many frames. */
  maxFrames?: number;
}

/** Decodes a clip into planar I420 frames (width×height, default 640×480 at 30 fps). */
export async function decodeI420(source: string, opts: DecodeOptions = {}): Promise<Uint8Array[]> {
  const width = opts.width ?? 640;
  const height = opts.height ?? 480;
  const fps = opts.fps ?? 30;
  const vf = [
    ...(opts.preFilter ? [opts.preFilter] : []),
    `scale=${width}:${height}:force_original_aspect_ratio=decrease`,
    `pad=${width}:${height}:(ow-iw)/2:(oh-ih)/2`,
    `fps=${fps}`,
    'format=yuv420p',
  ].join(',');
  const args = ['-v', 'error', '-i', source, '-an', '-vf', vf];
  if (opts.maxFrames) args.push('-frames:v', String(opts.maxFrames));
  const ff = spawn('ffmpeg', [...args, '-f', 'rawvideo', 'pipe:1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  ff.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number>((resolve, reject) => {
    ff.on('error', reject);
    ff.on('close', (code) => resolve(code ?? -1));
  });
  const frameBytes = (width * height * 3) / 2;
  const frames: Uint8Array[] = [];
  let buf: Buffer = Buffer.alloc(0);
  for await (const chunk of ff.stdout as AsyncIterable<Buffer>) {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while (buf.length >= frameBytes) {
      frames.push(new Uint8Array(buf.subarray(0, frameBytes)));
      buf = buf.subarray(frameBytes);
    }
  }
  const code = await exited;
  if (code !== 0) throw new Error(`ffmpeg failed (${code}): ${stderr.trim()}`);
  if (frames.length === 0) throw new Error(`ffmpeg decoded no frames from ${source}`);
  return frames;
}

/** The Y plane of an I420 frame as a grayscale image. */
export function lumaOf(
  frame: Uint8Array,
  width: number,
  height: number,
): { width: number; height: number; data: Uint8Array } {
  return { width, height, data: frame.subarray(0, width * height) };
}

/** Source frame indices from..to (inclusive) played forward then back until `count` frames are listed. */
export function pingPong(from: number, to: number, count: number): number[] {
  if (to < from) throw new TypeError('pingPong: to < from');
  const cycle: number[] = [];
  for (let i = from; i <= to; i++) cycle.push(i);
  for (let i = to - 1; i > from; i--) cycle.push(i);
  return Array.from({ length: count }, (_, k) => cycle[k % cycle.length]!);
}

export interface SequenceY4mOptions {
  /** Decoded frames (decodeI420). */
  frames: readonly Uint8Array[];
  /** Indices into `frames`, in the order written. */
  sequence: readonly number[];
  width?: number;
  height?: number;
  fps?: number;
  /** Burn the written frame's position in as the 16-block marker (media.ts). */
  marker?: boolean;
  /** Output file; default a new temp folder. */
  out?: string;
}

/** Writes a .y4m of `frames[sequence[k]]`, k = 0..; returns its path. */
export async function writeSequenceY4m(opts: SequenceY4mOptions): Promise<string> {
  const width = opts.width ?? 640;
  const height = opts.height ?? 480;
  const fps = opts.fps ?? 30;
  if (opts.marker && opts.sequence.length > 1 << MARKER_VALUE_BITS)
    throw new RangeError(`a marked clip holds at most ${1 << MARKER_VALUE_BITS} frames`);
  const out = opts.out ?? path.join(await mkdtemp(path.join(os.tmpdir(), 'avatar-y4m-')), 'camera.y4m');
  const file = createWriteStream(out);
  const write = (b: Uint8Array | string): Promise<void> =>
    new Promise((resolve, reject) => file.write(b, (err) => (err ? reject(err) : resolve())));
  await write(`YUV4MPEG2 W${width} H${height} F${fps}:1 Ip A1:1 C420jpeg\n`);
  const scratch = new Uint8Array((width * height * 3) / 2);
  for (let k = 0; k < opts.sequence.length; k++) {
    const src = opts.frames[opts.sequence[k]!];
    if (!src || src.length !== scratch.length) throw new RangeError(`sequence[${k}] is not a ${width}×${height} frame`);
    scratch.set(src);
    if (opts.marker) paintMarker(scratch, width, height, k);
    await write('FRAME\n');
    await write(scratch);
  }
  await new Promise<void>((resolve, reject) => file.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return out;
}
