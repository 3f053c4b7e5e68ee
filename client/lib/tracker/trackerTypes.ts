/**
 * Vocabulary of the browser face tracker: its options, its result, and the messages between the page
 * (faceTracker.ts) and its Web Worker (worker.ts). Imports nothing of its users.
 */
import type { MeshFaceTrack, MeshFilterOptions, MeshTrackTimings } from '../../../server/vision/mesh/meshCore.js';
import type { ClientErrorCode } from '../errors.js';

/**
 * Which onnxruntime-web backend runs the networks: 'wasm' (SIMD, threads where the page is cross-origin isolated),
 * 'webgpu' (fails when the browser has no WebGPU adapter), or 'auto' (WebGPU when there is an adapter, else WASM).
 */
export type TrackerBackend = 'wasm' | 'webgpu' | 'auto';

/** Options of BrowserFaceTracker.create; every URL may be relative to the page. */
export interface BrowserFaceTrackerOptions {
  /** The worker bundle. Default '/dist/face-tracker-worker.js' (built by scripts/build-client.mjs). */
  workerUrl?: string | URL;
  /** Folder of blazeface.onnx, facemesh.onnx and iris.onnx. Default '/models/face/' (the server serves them). */
  modelBaseUrl?: string | URL;
  /** Folder of onnxruntime-web's .mjs and .wasm files. Default 'ort/' next to the worker bundle. */
  ortBaseUrl?: string | URL;
  /** Default 'wasm' (see TrackerBackend). */
  backend?: TrackerBackend;
  /** WASM threads: 0 (default) picks up to 4 when the page is cross-origin isolated, 1 otherwise. */
  threads?: number;
  /** sha256 of each model file by name; default the pins of models/face/sources.json built into the worker. */
  pins?: Record<string, string>;
  /** Smoothing parameters (the server's defaults otherwise). */
  filters?: MeshFilterOptions;
  /** Longest wait for the worker to load the runtime and the networks, ms. Default 60000. */
  loadTimeoutMs?: number;
}

/** A frame as raw RGBA pixels (an ImageData, or its fields). */
export interface RgbaFrame {
  width: number;
  height: number;
  data: Uint8ClampedArray | Uint8Array;
}

/** What track() accepts: a webcam frame (VideoFrame), a bitmap, or RGBA pixels. */
export type TrackerFrame = VideoFrame | ImageBitmap | RgbaFrame;

/** Where the time of one tracked frame went, ms. */
export interface BrowserTrackTimings extends MeshTrackTimings {
  /** Reading the frame's pixels in the worker (canvas draw + read back, RGBA to RGB). */
  frameMs: number;
  /** From track() to its answer, on the page (includes the worker's queue and the messages). */
  roundTripMs: number;
}

/** One answered frame. */
export interface BrowserTrackResult {
  /** The frame's capture timestamp, as given to track(). */
  timestampMs: number;
  /** The tracked face (MeshFaceTrack's shape: box, 68 landmarks, raw landmarks, pose, eyes, mouth, gaze, confidence,
   * mesh), or null when there is no face. A fresh object per frame: the caller may keep it. */
  track: MeshFaceTrack | null;
  timings: BrowserTrackTimings;
}

/** How the runtime was set up. */
export interface TrackerRuntimeInfo {
  backend: 'wasm' | 'webgpu';
  /** WASM threads in use (1 without cross-origin isolation). */
  threads: number;
  crossOriginIsolated: boolean;
  /** Fetching, checking and loading the three networks, ms. */
  loadMs: number;
}

/** Page → worker. */
export type ToTrackerWorker =
  | {
      type: 'init';
      modelBaseUrl: string;
      ortBaseUrl: string;
      backend: TrackerBackend;
      threads: number;
      pins: Record<string, string> | null;
      filters: MeshFilterOptions;
    }
  | { type: 'track'; id: number; frame: TrackerFrame; timestampMs: number }
  | { type: 'reset' };

/** Worker → page. */
export type FromTrackerWorker =
  | ({ type: 'ready' } & TrackerRuntimeInfo)
  | {
      type: 'result';
      id: number;
      track: MeshFaceTrack | null;
      timings: Omit<BrowserTrackTimings, 'roundTripMs'>;
    }
  | { type: 'error'; id: number | null; code: ClientErrorCode; message: string };
