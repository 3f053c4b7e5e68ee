/**
 * The shared offline driver of `avatar render` and `avatar eval`: decodes a driving clip, runs an engine on it frame
 * by frame in this process (the same `AvatarEngine.render` on I420 frames that the live session calls), and hands
 * every output frame to a callback.
 */
import type { AvatarEngine, PreparedPortrait, RenderStats } from '../avatar/engineTypes.js';
import type { I420Frame, RgbImage } from '../types/image.js';
import { AppError } from '../errors.js';
import { createI420, createRgb, i420ToRgb, rgbToI420 } from '../util/image.js';
import { probeVideo, readVideoFrames, type VideoInfo } from '../util/video.js';

/** One rendered frame, handed to `onFrame`. */
export interface OfflineFrame {
  /** Index of the driving frame in the clip. */
  index: number;
  /** Presentation time of the driving frame (index / fps), in ms. */
  timestampMs: number;
  /** The decoded driving frame (a fresh buffer: the callback may keep it). */
  driving: RgbImage;
  /** The engine's output converted to RGB. Reused for the next frame: copy it to keep it. */
  output: RgbImage;
  /** The engine's output as rendered (I420). Reused for the next frame. */
  outputI420: I420Frame;
  stats: RenderStats;
  /** Wall time of `engine.render` for this frame. */
  renderMs: number;
}

export interface OfflineOptions {
  engine: AvatarEngine;
  /** The driving clip. */
  driving: string;
  /** The portrait, or 'first-frame': the clip's first frame is the portrait (self-reenactment); the engine renders it
   * once as the performer's first frame (the reference of relative motion), but it is not handed to onFrame. */
  portrait: RgbImage | 'first-frame';
  /** Frames of the clip to skip before anything else (decoded and dropped); default 0. */
  startFrame?: number;
  /** Frames to use from the clip after `startFrame` (including the portrait frame in 'first-frame' mode); default all. */
  maxFrames?: number;
  /** Called once the portrait is prepared, before the first frame. */
  onPrepared?: (ctx: {
    portrait: RgbImage;
    prepared: PreparedPortrait;
    info: VideoInfo;
    frames: number;
  }) => void | Promise<void>;
  /** Called for each rendered frame, in order; awaited before the next frame is decoded further. */
  onFrame: (frame: OfflineFrame) => void | Promise<void>;
  /** Checked between frames: returning true stops the run early (e.g. on SIGINT). */
  shouldStop?: () => boolean;
}

export interface OfflineResult {
  info: VideoInfo;
  prepared: PreparedPortrait;
  portrait: RgbImage;
  /** Frames rendered. */
  frames: number;
  /** Rendered frames in which the engine saw a face in the driving frame. */
  drivingFaces: number;
  /** Rendered frames whose warp still folded (RenderStats.folds > 0; the engine's fold check should make it 0). */
  foldFrames: number;
  /** Rendered frames whose warp folded at first and was taken back by the engine's fold check. */
  foldFixedFrames: number;
  prepareMs: number;
  /** Per-frame render times (ms), in order. */
  renderMs: number[];
  wallMs: number;
  stopped: boolean;
}

/** How many frames a run over `info` renders (the clip's count after startFrame, capped by maxFrames, minus the
 * portrait frame). */
export function plannedFrames(
  info: VideoInfo,
  startFrame: number,
  maxFrames: number | undefined,
  firstFrameIsPortrait: boolean,
): number {
  const left = Math.max(0, info.frameCount - startFrame);
  const used = maxFrames === undefined ? left : Math.min(left, maxFrames);
  return Math.max(0, used - (firstFrameIsPortrait ? 1 : 0));
}

/**
 * Runs the engine over the clip. Prepares the portrait (engines throw AppError('NO_FACE') for a portrait without a
 * face), then renders every decoded frame with timestamp index·1000/fps.
 * @throws AppError('NOT_FOUND' | 'UNSUPPORTED_MEDIA_TYPE') for a missing clip or one without a video stream.
 */
export async function runOffline(opts: OfflineOptions): Promise<OfflineResult> {
  const t0 = performance.now();
  const info = await probeVideo(opts.driving);
  const selfMode = opts.portrait === 'first-frame';
  const start = opts.startFrame ?? 0;
  if (!(Number.isInteger(start) && start >= 0)) throw new TypeError('startFrame must be a non-negative integer');
  if (start >= info.frameCount) {
    throw new AppError('BAD_REQUEST', `the clip has ${info.frameCount} frames: nothing left after skipping ${start}`);
  }
  if (selfMode && plannedFrames(info, start, opts.maxFrames, true) < 1) {
    throw new AppError('BAD_REQUEST', 'self-reenactment needs at least 2 frames (the portrait and one driving frame)');
  }
  const frames = readVideoFrames(opts.driving, {
    format: 'rgb24',
    ...(opts.maxFrames !== undefined ? { maxFrames: start + opts.maxFrames } : {}),
  });
  let portrait: RgbImage | undefined = opts.portrait === 'first-frame' ? undefined : opts.portrait;
  let prepared: PreparedPortrait | undefined;
  let prepareMs = 0;
  let drivingI420: I420Frame | undefined;
  let out: I420Frame | undefined;
  let outRgb: RgbImage | undefined;
  const renderMs: number[] = [];
  let foldFrames = 0;
  let foldFixedFrames = 0;
  let drivingFaces = 0;
  let stopped = false;

  const prepare = async (p: RgbImage): Promise<void> => {
    const tp = performance.now();
    prepared = await opts.engine.prepare(p);
    prepareMs = performance.now() - tp;
    out = createI420(prepared.width, prepared.height);
    outRgb = createRgb(prepared.width, prepared.height);
    await opts.onPrepared?.({
      portrait: p,
      prepared,
      info,
      frames: plannedFrames(info, start, opts.maxFrames, selfMode),
    });
  };

  try {
    if (portrait) await prepare(portrait);
    for await (const f of frames) {
      if (opts.shouldStop?.()) {
        stopped = true;
        break;
      }
      if (f.index < start) continue;
      const rgb: RgbImage = { width: f.width, height: f.height, data: f.data };
      if (!portrait) {
        portrait = rgb;
        await prepare(rgb);
        // The portrait frame is also the performer's first frame (the reference of relative motion): the engine sees
        // it, unscored, before the frames it is scored on.
        drivingI420 = createI420(f.width, f.height);
        rgbToI420(rgb, drivingI420);
        opts.engine.render(drivingI420, out!, (f.index * 1000) / info.fps);
        continue;
      }
      if (!drivingI420 || drivingI420.width !== f.width || drivingI420.height !== f.height) {
        drivingI420 = createI420(f.width, f.height);
      }
      rgbToI420(rgb, drivingI420);
      const timestampMs = (f.index * 1000) / info.fps;
      const tr = performance.now();
      const stats = opts.engine.render(drivingI420, out!, timestampMs);
      const ms = performance.now() - tr;
      renderMs.push(ms);
      if (stats.face) drivingFaces++;
      if ((stats.folds ?? 0) > 0) foldFrames++;
      if (stats.foldFixed) foldFixedFrames++;
      i420ToRgb(out!, outRgb);
      await opts.onFrame({
        index: f.index,
        timestampMs,
        driving: rgb,
        output: outRgb!,
        outputI420: out!,
        stats,
        renderMs: ms,
      });
    }
  } finally {
    // Ends the decoder when we stopped early or a callback threw.
    await frames.return(undefined);
  }
  if (!prepared || !portrait) throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'the driving clip has no decodable frames');
  return {
    info,
    prepared,
    portrait,
    frames: renderMs.length,
    drivingFaces,
    foldFrames,
    foldFixedFrames,
    prepareMs,
    renderMs,
    wallMs: performance.now() - t0,
    stopped,
  };
}
