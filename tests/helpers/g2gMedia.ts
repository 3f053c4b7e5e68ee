/**
 * Fake-camera clips built from chosen frames of a driving clip, for the default-engine e2e test and the
 * glass-to-glass benchmark: a clip's frames are decoded once (I420, scaled to fit with black bars like makeY4m), then
 * written in any order, held or ping-ponged, optionally with the frame-index marker of media.ts burned in (the index
 * is the frame's position in the written file, so the performer page can name the frame it captured).
 * Files go to a temp folder (never the repository); Chromium loops them. A matching fake-microphone .wav with tone
 * bursts (writeBurstWav) times the audio for audio/video offset measurements.
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
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

export interface BurstWavOptions {
  /** Output file (.wav). */
  out: string;
  /** Length in samples: make it the fake camera clip's length so both loops stay aligned. */
  samples: number;
  /** Default 48000. */
  sampleRate?: number;
  /** Burst start times, in samples. */
  onsets: readonly number[];
  /** Burst length, ms; default 80. */
  burstMs?: number;
}

/**
 * Writes a mono 16-bit PCM .wav for Chromium's fake microphone (--use-file-for-fake-audio-capture): silence with a
 * short voiced burst (a 220 Hz tone with its first harmonics, a 1 ms rise) at each onset, for audio/video offset
 * measurements. Harmonics rather than one sine: noise suppression leaves a voice-like sound alone.
 */
export async function writeBurstWav(opts: BurstWavOptions): Promise<string> {
  const rate = opts.sampleRate ?? 48_000;
  const burst = Math.round(((opts.burstMs ?? 80) * rate) / 1000);
  const rise = Math.round(rate / 1000);
  const pcm = new Int16Array(opts.samples);
  for (const start of opts.onsets) {
    if (!Number.isInteger(start) || start < 0 || start >= opts.samples)
      throw new RangeError(`burst onset ${start} is outside the ${opts.samples} samples`);
    for (let i = 0; i < burst && start + i < opts.samples; i++) {
      const t = i / rate;
      const env = Math.min(1, i / rise) * Math.min(1, (burst - i) / rise);
      let v = 0;
      for (let h = 1; h <= 4; h++) v += Math.sin(2 * Math.PI * 220 * h * t) / h;
      pcm[start + i] = Math.round(0.25 * env * v * 32767); // peak about 0.5
    }
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + pcm.byteLength, 4);
  header.write('WAVE', 8);
  header.write('fmt ', 12);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(1, 22);
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(pcm.byteLength, 40);
  await writeFile(opts.out, Buffer.concat([header, Buffer.from(pcm.buffer, pcm.byteOffset, pcm.byteLength)]));
  return opts.out;
}
