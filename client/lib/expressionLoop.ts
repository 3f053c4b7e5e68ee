/**
 * ExpressionLoop: private mode's frame loop on the performer's page. It reads the camera's frames, tracks each with
 * the browser face tracker and hands every tracked face (null: no face) to `send` (AvatarClient.sendExpression),
 * so that only expressions leave the machine: the pixels go no further than the tracker's worker.
 *
 *   const loop = ExpressionLoop.start({ track: camera.getVideoTracks()[0], video, tracker, send, onError });
 *   loop.close();
 *
 * Frames come from a MediaStreamTrackProcessor (VideoFrames handed to the worker without a copy) where the browser
 * has one, else from the <video> element that shows the camera (requestVideoFrameCallback + createImageBitmap). The
 * tracker keeps the newest frame and drops a waiting one (its drops are the tracker's `droppedFrames`): a slow tracker
 * lowers the expression rate, it never builds a queue. The loop owns nothing but its reading of the camera (a clone
 * of the track, stopped on close): the tracker and the camera stay the caller's.
 */
import type { FaceTrack } from '../../server/vision/types.js';
import { ClientError } from './errors.js';
import type { BrowserFaceTracker } from './tracker/faceTracker.js';

/** Sends one frame's track: AvatarClient.sendExpression's shape. */
export type ExpressionSink = (track: FaceTrack | null, width: number, height: number, captureMs: number) => boolean;

export interface ExpressionLoopOptions {
  /** The camera's video track. */
  track: MediaStreamTrack;
  /** An element showing the camera: the frame source where the browser has no MediaStreamTrackProcessor. */
  video: HTMLVideoElement;
  tracker: BrowserFaceTracker;
  send: ExpressionSink;
  /** A frame that could not be tracked (the loop goes on), or the tracker closed (the loop ends). */
  onError?: (err: ClientError) => void;
}

/** What the loop has done so far. */
export interface ExpressionLoopStats {
  /** Frames handed to the tracker. */
  frames: number;
  /** Frames answered by the tracker (the others were replaced by newer ones). */
  tracked: number;
  /** Answers with a face. */
  faces: number;
  /** Expressions the sink sent (it drops them while the channel is not open or congested). */
  sent: number;
}

/** Chromium's MediaStreamTrackProcessor (mediacapture-transform): not in TypeScript's DOM library. */
type TrackProcessorCtor = new (init: { track: MediaStreamTrack; maxBufferSize?: number }) => {
  readonly readable: ReadableStream<VideoFrame>;
};

const wallClock = (): number => performance.timeOrigin + performance.now();

export class ExpressionLoop {
  readonly #opts: ExpressionLoopOptions;
  readonly #stats: ExpressionLoopStats = { frames: 0, tracked: 0, faces: 0, sent: 0 };
  #closed = false;
  #reading: MediaStreamTrack | null = null;
  #reader: ReadableStreamDefaultReader<VideoFrame> | null = null;
  #rvfc: number | null = null;
  #lastTs = 0;

  private constructor(opts: ExpressionLoopOptions) {
    this.#opts = opts;
  }

  /** Starts reading frames at once (the tracker's smoothing starts afresh). */
  static start(opts: ExpressionLoopOptions): ExpressionLoop {
    if (opts.track.kind !== 'video') throw new TypeError('ExpressionLoop: track must be a video track');
    const loop = new ExpressionLoop(opts);
    opts.tracker.reset();
    const Processor = (globalThis as { MediaStreamTrackProcessor?: TrackProcessorCtor }).MediaStreamTrackProcessor;
    if (Processor) loop.#readProcessor(Processor);
    else loop.#readVideo();
    return loop;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** A copy of the counters. */
  get stats(): ExpressionLoopStats {
    return { ...this.#stats };
  }

  /** Stops reading frames (idempotent); a frame in the tracker is answered but no longer sent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#rvfc !== null) this.#opts.video.cancelVideoFrameCallback(this.#rvfc);
    this.#reader?.cancel().catch(() => undefined); // the read loop ends either way
    this.#reading?.stop();
  }

  #readProcessor(Processor: TrackProcessorCtor): void {
    // A clone of its own: cancelling the reader must not end the caller's track.
    const track = this.#opts.track.clone();
    this.#reading = track;
    const reader = new Processor({ track, maxBufferSize: 1 }).readable.getReader();
    this.#reader = reader;
    const pump = async (): Promise<void> => {
      while (!this.#closed) {
        const { value: frame, done } = await reader.read();
        if (done) return;
        if (this.#closed) {
          frame.close();
          return;
        }
        this.#track(frame, frame.displayWidth, frame.displayHeight, wallClock());
      }
    };
    pump().catch((err: unknown) => this.#fail(err));
  }

  #readVideo(): void {
    const video = this.#opts.video;
    const onFrame = (_now: number, meta: VideoFrameCallbackMetadata): void => {
      if (this.#closed) return;
      this.#rvfc = video.requestVideoFrameCallback(onFrame);
      const captureMs = meta.captureTime !== undefined ? performance.timeOrigin + meta.captureTime : wallClock();
      createImageBitmap(video).then(
        (bitmap) => {
          if (this.#closed) bitmap.close();
          else this.#track(bitmap, meta.width, meta.height, captureMs);
        },
        (err: unknown) => this.#report(err),
      );
    };
    this.#rvfc = video.requestVideoFrameCallback(onFrame);
  }

  /** Hands one frame (transferred) to the tracker and its answer to the sink. */
  #track(frame: VideoFrame | ImageBitmap, width: number, height: number, captureMs: number): void {
    // The tracker's filters need increasing times (on the page's clock); the server gets the wall clock.
    const ts = Math.max(captureMs, this.#lastTs + 0.001);
    this.#lastTs = ts;
    this.#stats.frames++;
    this.#opts.tracker.track(frame, ts - performance.timeOrigin).then(
      (r) => {
        if (!r || this.#closed) return;
        this.#stats.tracked++;
        if (r.track) this.#stats.faces++;
        if (this.#opts.send(r.track, width, height, ts)) this.#stats.sent++;
      },
      (err: unknown) => this.#report(err),
    );
  }

  #report(err: unknown): void {
    if (this.#closed) return;
    const e =
      err instanceof ClientError ? err : new ClientError('MEDIA', err instanceof Error ? err.message : String(err));
    if (e.code === 'CLOSED' || this.#opts.tracker.closed) {
      this.#fail(e);
      return;
    }
    this.#opts.onError?.(e);
  }

  #fail(err: unknown): void {
    if (this.#closed) return;
    this.close();
    this.#opts.onError?.(
      err instanceof ClientError ? err : new ClientError('MEDIA', err instanceof Error ? err.message : String(err)),
    );
  }
}
