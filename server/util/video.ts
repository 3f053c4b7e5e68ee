/**
 * Video file I/O through the system ffmpeg/ffprobe (child processes piping raw frames).
 *
 * Reading yields frames at their display size (the sample aspect ratio applied), one per decoded frame (no frame
 * rate conversion). Writing encodes H.264 (libx264, yuv420p) into .mp4 and can carry over another file's audio.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { access } from 'node:fs/promises';
import path from 'node:path';
import { AppError, InvalidStateError } from '../errors.js';

/** What ffprobe says about a video file. */
export interface VideoInfo {
  /** Display size: the stored size with the sample aspect ratio (and any rotation) applied. */
  width: number;
  height: number;
  /** Stored (coded) size. */
  storedWidth: number;
  storedHeight: number;
  /** Frames per second (average frame rate). */
  fps: number;
  /** Number of video frames (from the container, or counted when it does not say). */
  frameCount: number;
  durationMs: number;
  hasAudio: boolean;
  /** Sample aspect ratio [num, den]; [1, 1] when absent. */
  sar: [number, number];
  codec: string;
}

function missingTool(tool: string, err: unknown): AppError {
  return new AppError('UNSUPPORTED', `${tool} is not installed or not on PATH (apt-get install ffmpeg)`, {
    cause: err,
  });
}

/** Runs a tool and collects its output; a missing tool is AppError('UNSUPPORTED') naming the package to install. */
export function runCapture(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', (err) => reject((err as NodeJS.ErrnoException).code === 'ENOENT' ? missingTool(cmd, err) : err));
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

async function assertReadable(file: string): Promise<void> {
  try {
    await access(file);
  } catch (err) {
    throw new AppError('NOT_FOUND', `file not found: ${path.basename(file)}`, { cause: err });
  }
}

/** Restricts what ffmpeg/ffprobe may open for an untrusted file. */
export interface InputRestriction {
  /**
   * Demuxers allowed (ffmpeg's -format_whitelist, e.g. ['mov', 'matroska']); the input is then also limited to the
   * local file itself (-protocol_whitelist file, a `file:` URL), so that a playlist or concat list in an upload
   * cannot make ffmpeg open other files or the network.
   */
  formats?: readonly string[];
}

/** The input arguments (ending with the input itself) for `file` under `r`. */
function inputArgs(file: string, r: InputRestriction): string[] {
  if (!r.formats) return [file];
  return ['-protocol_whitelist', 'file', '-format_whitelist', r.formats.join(','), `file:${path.resolve(file)}`];
}

function parseRatio(s: string | undefined): number {
  if (!s) return Number.NaN;
  const [a, b] = s.split('/').map(Number);
  if (a === undefined || !Number.isFinite(a)) return Number.NaN;
  if (b === undefined) return a;
  return b ? a / b : Number.NaN;
}

interface ProbeStream {
  codec_type?: string;
  codec_name?: string;
  width?: number;
  height?: number;
  avg_frame_rate?: string;
  r_frame_rate?: string;
  nb_frames?: string;
  nb_read_packets?: string;
  sample_aspect_ratio?: string;
  duration?: string;
  tags?: { rotate?: string };
  side_data_list?: { rotation?: number }[];
}

/**
 * Probes a video file.
 * @throws AppError('NOT_FOUND') for a missing file, ('UNSUPPORTED_MEDIA_TYPE') when it has no video stream,
 *   ('UNSUPPORTED') when ffprobe is not installed.
 */
export async function probeVideo(file: string, restrict: InputRestriction = {}): Promise<VideoInfo> {
  await assertReadable(file);
  const input = inputArgs(file, restrict);
  const res = await runCapture('ffprobe', ['-v', 'error', '-show_streams', '-show_format', '-of', 'json', ...input]);
  if (res.code !== 0) throw new AppError('UNSUPPORTED_MEDIA_TYPE', `not a readable media file: ${path.basename(file)}`);
  const json = JSON.parse(res.stdout) as {
    streams?: ProbeStream[];
    format?: { duration?: string; format_name?: string };
  };
  const streams = json.streams ?? [];
  const v = streams.find((s) => s.codec_type === 'video');
  // Still images probe as a one-frame "video" (image2 demuxer, or png/mjpeg pipes): not a video for our purposes.
  const fmt = json.format?.format_name ?? '';
  if (!v || !v.width || !v.height || /image2|_pipe$/.test(fmt)) {
    throw new AppError('UNSUPPORTED_MEDIA_TYPE', `not a video file: ${path.basename(file)}`);
  }
  let sarNum = 1;
  let sarDen = 1;
  const sarParts = (v.sample_aspect_ratio ?? '').split(':').map(Number);
  if (sarParts.length === 2 && sarParts[0]! > 0 && sarParts[1]! > 0) {
    sarNum = sarParts[0]!;
    sarDen = sarParts[1]!;
  }
  let fps = parseRatio(v.avg_frame_rate);
  if (!(fps > 0)) fps = parseRatio(v.r_frame_rate);
  if (!(fps > 0)) fps = 25;
  const durationS = Number(v.duration ?? json.format?.duration ?? Number.NaN);
  let frameCount = Number(v.nb_frames ?? Number.NaN);
  if (!(frameCount > 0)) {
    const cnt = await runCapture('ffprobe', [
      '-v',
      'error',
      '-select_streams',
      'v:0',
      '-count_packets',
      '-show_entries',
      'stream=nb_read_packets',
      '-of',
      'csv=p=0',
      ...input,
    ]);
    frameCount = Number.parseInt(cnt.stdout.trim(), 10);
    if (!(frameCount > 0)) frameCount = Number.isFinite(durationS) ? Math.round(durationS * fps) : 0;
  }
  let dw = Math.max(1, Math.round((v.width * sarNum) / sarDen));
  let dh = v.height;
  const rotation = Number(v.tags?.rotate ?? v.side_data_list?.find((s) => s.rotation !== undefined)?.rotation ?? 0);
  if (Math.abs(rotation) % 180 === 90) [dw, dh] = [dh, dw];
  return {
    width: dw,
    height: dh,
    storedWidth: v.width,
    storedHeight: v.height,
    fps,
    frameCount,
    durationMs: Number.isFinite(durationS) ? durationS * 1000 : (frameCount / fps) * 1000,
    hasAudio: streams.some((s) => s.codec_type === 'audio'),
    sar: [sarNum, sarDen],
    codec: v.codec_name ?? 'unknown',
  };
}

/** Options for readVideoFrames. */
export interface ReadFramesOptions {
  /** 'rgb24' (3 bytes per pixel) or 'gray' (dlib's floor((R+G+B)/3) of the decoded RGB). */
  format: 'rgb24' | 'gray';
  /** Stop after this many frames. */
  maxFrames?: number;
  /** Output size; default the display size. Give one to keep the aspect ratio (rounded to even). */
  width?: number;
  height?: number;
  /** What ffmpeg may open (untrusted files); default anything. */
  restrict?: InputRestriction;
}

/** One decoded frame. `data` is a fresh buffer per frame (the consumer may keep it). */
export interface VideoFrame {
  index: number;
  width: number;
  height: number;
  data: Uint8Array;
}

/**
 * Decodes a video file frame by frame (an ffmpeg child process writing rawvideo to a pipe).
 * Breaking out of the loop kills the decoder.
 */
export async function* readVideoFrames(file: string, opts: ReadFramesOptions): AsyncGenerator<VideoFrame> {
  const restrict = opts.restrict ?? {};
  const info = await probeVideo(file, restrict);
  let w = opts.width ?? 0;
  let h = opts.height ?? 0;
  if (w && !h) h = Math.max(2, Math.round((info.height * w) / info.width / 2) * 2);
  if (h && !w) w = Math.max(2, Math.round((info.width * h) / info.height / 2) * 2);
  if (!w) w = info.width;
  if (!h) h = info.height;
  const frameBytes = w * h * 3;
  const input = inputArgs(file, restrict);
  const args = ['-v', 'error', '-nostdin', ...input.slice(0, -1), '-i', input.at(-1)!, '-map', '0:v:0', '-an', '-sn'];
  if (w !== info.storedWidth || h !== info.storedHeight || info.sar[0] !== info.sar[1]) {
    args.push(
      '-vf',
      `scale=${w}:${h}:flags=${w * h < info.storedWidth * info.storedHeight ? 'area' : 'bicubic'},setsar=1`,
    );
  }
  args.push('-fps_mode', 'passthrough');
  if (opts.maxFrames !== undefined) args.push('-frames:v', String(Math.max(0, opts.maxFrames)));
  args.push('-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1');
  const proc = spawn('ffmpeg', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 4000) stderr += d;
  });
  const exited = new Promise<number>((resolve, reject) => {
    proc.on('error', (err) =>
      reject((err as NodeJS.ErrnoException).code === 'ENOENT' ? missingTool('ffmpeg', err) : err),
    );
    proc.on('close', (code) => resolve(code ?? -1));
  });
  let index = 0;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  try {
    for await (const chunk of proc.stdout as AsyncIterable<Buffer>) {
      pending.push(chunk);
      pendingBytes += chunk.length;
      while (pendingBytes >= frameBytes) {
        const all = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
        const rgb = new Uint8Array(frameBytes);
        rgb.set(all.subarray(0, frameBytes));
        const rest = all.subarray(frameBytes);
        pending = rest.length ? [rest] : [];
        pendingBytes = rest.length;
        if (opts.format === 'gray') {
          const gray = new Uint8Array(w * h);
          for (let i = 0, j = 0; i < gray.length; i++, j += 3)
            gray[i] = ((rgb[j]! + rgb[j + 1]! + rgb[j + 2]!) / 3) | 0;
          yield { index: index++, width: w, height: h, data: gray };
        } else {
          yield { index: index++, width: w, height: h, data: rgb };
        }
      }
    }
    const code = await exited;
    if (code !== 0)
      throw new AppError(
        'UNSUPPORTED_MEDIA_TYPE',
        `ffmpeg could not decode ${path.basename(file)}: ${stderr.trim().split('\n').pop() ?? ''}`,
      );
  } finally {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited.catch(() => -1);
  }
}

/** Options for VideoWriter.open. */
export interface VideoWriterOptions {
  width: number;
  height: number;
  fps: number;
  /** A media file whose first audio track (if any) is muxed in (copied when AAC, else encoded to AAC). */
  audioFrom?: string;
  /** x264 CRF (default 20) and preset (default 'veryfast'). */
  crf?: number;
  preset?: string;
}

/**
 * Encodes RGB frames to an H.264 .mp4 (yuv420p). Odd sizes are padded by one pixel to even.
 * `write` resolves when ffmpeg has taken the frame (backpressure); `close` finishes the file and is idempotent.
 */
export class VideoWriter {
  readonly width: number;
  readonly height: number;
  readonly file: string;
  #proc: ChildProcessWithoutNullStreams;
  #exited: Promise<number>;
  #stderr = '';
  #closed = false;
  #closing: Promise<void> | undefined;
  #frames = 0;
  #failure: Error | undefined;

  private constructor(file: string, width: number, height: number, proc: ChildProcessWithoutNullStreams) {
    this.file = file;
    this.width = width;
    this.height = height;
    this.#proc = proc;
    proc.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (this.#stderr.length < 8000) this.#stderr += d;
    });
    // EPIPE when ffmpeg dies early: reported by write()/close() through #failure.
    proc.stdin.on('error', (err) => (this.#failure ??= err));
    this.#exited = new Promise((resolve) => {
      proc.on('error', (err) => {
        this.#failure ??= (err as NodeJS.ErrnoException).code === 'ENOENT' ? missingTool('ffmpeg', err) : err;
        resolve(-1);
      });
      proc.on('close', (code) => resolve(code ?? -1));
    });
  }

  /** Starts the encoder. */
  static async open(file: string, opts: VideoWriterOptions): Promise<VideoWriter> {
    const { width, height, fps } = opts;
    if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) {
      throw new TypeError('VideoWriter: width and height must be positive integers');
    }
    if (!(fps > 0)) throw new TypeError('VideoWriter: fps must be positive');
    let audio = false;
    let copyAudio = false;
    if (opts.audioFrom) {
      await assertReadable(opts.audioFrom);
      const res = await runCapture('ffprobe', [
        '-v',
        'error',
        '-select_streams',
        'a:0',
        '-show_entries',
        'stream=codec_name',
        '-of',
        'csv=p=0',
        opts.audioFrom,
      ]);
      const codec = res.stdout.trim();
      audio = res.code === 0 && codec.length > 0;
      copyAudio = codec === 'aac';
    }
    const args = [
      '-v',
      'error',
      '-y',
      '-f',
      'rawvideo',
      '-pix_fmt',
      'rgb24',
      '-s',
      `${width}x${height}`,
      '-r',
      String(fps),
      '-i',
      'pipe:0',
    ];
    if (audio && opts.audioFrom) args.push('-i', opts.audioFrom, '-map', '0:v:0', '-map', '1:a:0');
    if (width % 2 || height % 2) args.push('-vf', 'pad=ceil(iw/2)*2:ceil(ih/2)*2');
    args.push(
      '-c:v',
      'libx264',
      '-preset',
      opts.preset ?? 'veryfast',
      '-crf',
      String(opts.crf ?? 20),
      '-pix_fmt',
      'yuv420p',
    );
    if (audio) args.push('-c:a', copyAudio ? 'copy' : 'aac', '-shortest');
    args.push('-movflags', '+faststart', file);
    const proc = spawn('ffmpeg', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const w = new VideoWriter(file, width, height, proc);
    // Surface a missing ffmpeg here rather than at the first write.
    await new Promise<void>((resolve) => {
      proc.once('spawn', () => resolve());
      proc.once('error', () => resolve());
    });
    if (w.#failure) throw w.#failure;
    return w;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Frames written so far. */
  get frames(): number {
    return this.#frames;
  }

  /** Queues one RGB frame (width*height*3 bytes); resolves once the pipe has room again. */
  async write(rgb: Uint8Array): Promise<void> {
    if (this.#closed) throw new InvalidStateError('VideoWriter is closed');
    if (this.#failure) throw this.#fail();
    if (rgb.length !== this.width * this.height * 3) throw new TypeError('VideoWriter.write: frame size mismatch');
    this.#frames++;
    // Copy: the caller usually reuses its frame buffer.
    const ok = this.#proc.stdin.write(Buffer.from(rgb));
    if (!ok) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.#proc.stdin.off('drain', done);
          this.#proc.off('close', done);
          resolve();
        };
        this.#proc.stdin.on('drain', done);
        this.#proc.on('close', done);
      });
    }
    if (this.#failure) throw this.#fail();
  }

  /** Finishes the file. Rejects when ffmpeg failed. Idempotent. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    this.#closed = true;
    this.#closing = (async () => {
      this.#proc.stdin.end();
      const code = await this.#exited;
      if (code !== 0 || this.#failure) throw this.#fail();
    })();
    return this.#closing;
  }

  #fail(): Error {
    if (this.#failure instanceof AppError) return this.#failure;
    const last = this.#stderr.trim().split('\n').pop() ?? '';
    return new AppError(
      'ENGINE_FAILED',
      `video encoding failed for ${path.basename(this.file)}${last ? `: ${last}` : ''}`,
      {
        cause: this.#failure,
      },
    );
  }
}

/** Writes the YUV4MPEG2 stream header (4:2:0) for raw I420 frames, e.g. for Chromium's fake camera. */
export function y4mHeader(width: number, height: number, fps: number): Buffer {
  const [num, den] = Number.isInteger(fps) ? [fps, 1] : [Math.round(fps * 1001), 1001];
  return Buffer.from(`YUV4MPEG2 W${width} H${height} F${num}:${den} Ip A1:1 C420jpeg\n`, 'ascii');
}

/** The per-frame marker that precedes each I420 frame in a .y4m stream. */
export const Y4M_FRAME_MARKER = Buffer.from('FRAME\n', 'ascii');

/**
 * Converts (part of) a video file to a .y4m file with ffmpeg (I420), optionally resized, for fake-camera tests.
 * @returns the output info.
 */
export async function writeY4m(
  input: string,
  output: string,
  opts: { width?: number; height?: number; fps?: number; maxFrames?: number } = {},
): Promise<void> {
  await assertReadable(input);
  const args = ['-v', 'error', '-y', '-nostdin', '-i', input, '-an'];
  const filters: string[] = [];
  if (opts.width && opts.height) filters.push(`scale=${opts.width}:${opts.height}`, 'setsar=1');
  if (opts.fps) filters.push(`fps=${opts.fps}`);
  if (filters.length) args.push('-vf', filters.join(','));
  if (opts.maxFrames !== undefined) args.push('-frames:v', String(opts.maxFrames));
  args.push('-pix_fmt', 'yuv420p', '-f', 'yuv4mpegpipe', output);
  const res = await runCapture('ffmpeg', args);
  if (res.code !== 0) throw new AppError('UNSUPPORTED_MEDIA_TYPE', `could not convert ${path.basename(input)} to y4m`);
}
