/**
 * The avatar engine vocabulary: the engine interface and the options every engine is built with. An AvatarSession (running off the signaling loop, in a worker thread)
 * owns one engine: `prepare(portrait)` once per chosen portrait, then `render(driving, out)` per frame.
 * Engines never allocate per frame: `out` is allocated by the session once per portrait size.
 */
import type { AvatarSettings, FaceIssue } from '../types/protocol.js';
import type { I420Frame, RgbImage } from '../types/image.js';
import type { FaceTrack } from '../vision/types.js';

/** What prepare() learned about the portrait. */
export interface PreparedPortrait {
  /** Output video size (even numbers). */
  width: number;
  height: number;
  /** Whether a face was found (engines that animate a face refuse a portrait without one). */
  face: boolean;
  /**
   * What prepare() computed from the portrait (face analysis, crops, masks), for an engine of the same kind and
   * options to reuse: the session keeps it, and a worker that replaces a crashed one prepares the same portrait from it
   * without analysing it again. Opaque to the session; structured-cloneable. Absent when the engine has none.
   */
  cache?: PortraitCache;
}

/** See PreparedPortrait.cache. `engine` names the engine that made it; others ignore it. */
export interface PortraitCache {
  readonly engine: string;
  readonly data: unknown;
}

/** Per-frame timings (ms) and state, reported into the stage histograms. */
export interface RenderStats {
  trackMs: number;
  latentMs: number;
  generateMs: number;
  pasteMs: number;
  /** The learned refiner's time (encoder + k steps + paste back), when it ran. */
  refineMs?: number;
  /** A face was seen in the driving frame. */
  face: boolean;
  /**
   * Cells of the warp's node grid that fold in the rendered frame (0: fold-free; engines without a warp leave it
   * out), and whether a folding warp had to be taken back towards the portrait at rest this frame.
   */
  folds?: number;
  foldFixed?: boolean;
  /**
   * Why the avatar did not follow this frame's face (it eases towards neutral instead): no face ('lost'), a face too
   * close to read whole ('too-close'), a face that jumped across the frame ('jump'), points no face makes
   * ('not-a-face'). Absent when it was followed or the engine does not track.
   */
  faceIssue?: FaceIssue;
}

export type { FaceIssue };
/** The issues in a fixed order (their index + 1 travels between threads as a number). */
export const FACE_ISSUES: readonly FaceIssue[] = ['lost', 'too-close', 'jump', 'not-a-face'];

/** What every engine is constructed with (from config.avatar). */
export interface EngineOptions {
  /** Model pack folder (engines that use one). */
  modelPack: string;
  executionProvider: 'cpu' | 'cuda';
  intraOpThreads: number;
  /** Long side of the output video, even. */
  outputSize: number;
  /** Face tracker of the default engine (default 'mesh': FaceMesh + Iris; 'dlib': the 68-point predictor). */
  tracker?: 'mesh' | 'dlib';
  /**
   * Refiner steps (0 = warp only, the default). Only the default engine with a refiner pack accepts more; the others
   * refuse k > 0 with AppError('UNSUPPORTED') rather than silently ignoring it.
   */
  steps?: number;
  /** The learned refiner pack for the default engine (null: none). */
  refinerPack?: string | null;
  /** Which refiner network samples the steps: the distilled student (default) or the teacher (evaluation). */
  refinerNet?: 'student' | 'teacher';
}

/**
 * A module that the avatar worker thread loads to wrap every engine it creates: its `wrapEngine` export (a
 * WrapEngine) gets the engine and `options`. This is how tests give an engine a crash, a slow frame or a refiner's
 * cost (tests/helpers/testEngine.ts) without test code in the worker; the config never sets one.
 */
export interface EngineWrapper {
  /** The module's URL (file: URL), loaded with import() in the worker thread. */
  module: string;
  /** Structured-cloneable; passed to wrapEngine. */
  options: Record<string, unknown>;
}

/** The `wrapEngine` export of an EngineWrapper module. */
export type WrapEngine = (engine: AvatarEngine, options: Record<string, unknown>) => AvatarEngine;

/**
 * A face tracked outside the engine (private mode: the performer's browser tracked it and sent only the track), for
 * AvatarEngine.renderTrack.
 */
export interface TrackedFrame {
  /** Size of the frame the face was tracked in, px. */
  width: number;
  height: number;
  /** The tracked face (coordinates in that frame's pixels), or null: no face in the frame. */
  track: FaceTrack | null;
}

export interface AvatarEngine {
  readonly name: string;
  /**
   * The learned refiner this engine can run (AvatarSettings.steps > 0), or null / absent: steps are ignored. Only the
   * default engine with a refiner pack has one.
   */
  readonly refiner?: { defaultSteps: number } | null;
  /**
   * Per-portrait work: detection, landmarks, crops, masks. Throws AppError('NO_FACE') when needed. `cache`, when it
   * is this engine's (PreparedPortrait.cache from an earlier prepare() of the same portrait with the same options),
   * replaces the analysis.
   */
  prepare(portrait: RgbImage, cache?: PortraitCache): Promise<PreparedPortrait>;
  /** Synthesizes one output frame (size of the prepared portrait) from one driving frame. */
  render(driving: I420Frame, out: I420Frame, timestampMs: number): RenderStats;
  /**
   * Synthesizes one output frame from a face tracked elsewhere, without tracking (private mode). Engines that do not
   * drive from a face track (passthrough, portrait) leave it out: the room refuses private mode for them.
   */
  renderTrack?(input: TrackedFrame, out: I420Frame, timestampMs: number): RenderStats;
  /** Applies the settings; an engine without a refiner runs `steps` as 0 (never throws for it). */
  updateSettings(settings: AvatarSettings): void;
  /** Re-captures the performer's neutral face from the next frames. */
  recalibrate(): void;
  /**
   * Forgets the portrait, the performer (tracker, neutral) and the settings, keeping what was loaded (models): the
   * engine is as created, for the next room of a pooled worker (workerPool.ts). Engines without it are created anew.
   */
  reset?(): void;
  close(): void;
}
