/**
 * The face tracker in the performer's browser (private mode): FaceMesh + Iris on onnxruntime-web in a Web Worker,
 * with the server's own tracking code, so the page can send the tracked face instead of the video.
 *
 *   const tracker = await BrowserFaceTracker.create();          // loads and checks the models (FACE_MODEL_INVALID)
 *   const r = await tracker.track(videoFrame, videoFrame.timestamp / 1000);   // or an ImageBitmap, or ImageData
 *   if (r && r.track) send(r.track.landmarks, r.track.eyes, r.track.gaze, ...);   // r === null: dropped
 *   tracker.close();
 *
 * A frame is transferred to the worker (a VideoFrame or ImageBitmap is closed there). One frame is tracked at a time
 * and at most one waits: a newer frame replaces the waiting one, whose track() answers null (keep the newest, count
 * the drops: `droppedFrames`). Errors are ClientErrors with stable codes: FACE_MODEL_INVALID (a model missing,
 * corrupted or unloadable), UNSUPPORTED (no WebAssembly SIMD, no WebGPU when asked for it), MEDIA (a bad frame),
 * TIMEOUT (the load took longer than loadTimeoutMs), CLOSED.
 */
import { ClientError } from '../errors.js';
import type {
  BrowserFaceTrackerOptions,
  BrowserTrackResult,
  FromTrackerWorker,
  ToTrackerWorker,
  TrackerFrame,
  TrackerRuntimeInfo,
} from './trackerTypes.js';

export type * from './trackerTypes.js';

interface Pending {
  id: number;
  frame: TrackerFrame;
  timestampMs: number;
  resolve: (r: BrowserTrackResult | null) => void;
  reject: (e: ClientError) => void;
}

/** One tracked stream: its own worker, networks and smoothing state. */
export class BrowserFaceTracker {
  /** How the runtime was set up (backend, threads). */
  readonly runtime: TrackerRuntimeInfo;
  readonly #worker: Worker;
  #nextId = 1;
  #inFlight: (Pending & { startedAt: number }) | null = null;
  #waiting: Pending | null = null;
  #dropped = 0;
  #closed = false;

  private constructor(worker: Worker, runtime: TrackerRuntimeInfo) {
    this.#worker = worker;
    this.runtime = runtime;
    worker.onmessage = (e: MessageEvent<FromTrackerWorker>) => this.#onMessage(e.data);
    worker.onerror = (e) => this.#fail(new ClientError('INTERNAL', `face tracker worker failed: ${e.message}`));
  }

  /**
   * Starts the worker, loads onnxruntime-web and the three networks (each checked against its pinned sha256).
   * @throws ClientError FACE_MODEL_INVALID, UNSUPPORTED, TIMEOUT
   */
  static async create(opts: BrowserFaceTrackerOptions = {}): Promise<BrowserFaceTracker> {
    const base = globalThis.location?.href;
    const workerUrl = new URL(opts.workerUrl ?? '/dist/face-tracker-worker.js', base);
    const worker = new Worker(workerUrl, { type: 'module', name: 'face-tracker' });
    const init: ToTrackerWorker = {
      type: 'init',
      modelBaseUrl: dirUrl(opts.modelBaseUrl ?? '/models/face/', base),
      ortBaseUrl: dirUrl(opts.ortBaseUrl ?? new URL('ort/', workerUrl), base),
      backend: opts.backend ?? 'wasm',
      threads: opts.threads ?? 0,
      pins: opts.pins ?? null,
      filters: opts.filters ?? {},
    };
    const timeoutMs = opts.loadTimeoutMs ?? 60_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const runtime = await new Promise<TrackerRuntimeInfo>((resolve, reject) => {
        timer = setTimeout(
          () => reject(new ClientError('TIMEOUT', `the face tracker did not load within ${timeoutMs} ms`)),
          timeoutMs,
        );
        worker.onmessage = (e: MessageEvent<FromTrackerWorker>) => {
          const m = e.data;
          if (m.type === 'ready') {
            resolve({
              backend: m.backend,
              threads: m.threads,
              crossOriginIsolated: m.crossOriginIsolated,
              loadMs: m.loadMs,
            });
          } else if (m.type === 'error') reject(new ClientError(m.code, m.message));
        };
        worker.onerror = (e) =>
          reject(new ClientError('UNSUPPORTED', `the face tracker worker could not start: ${e.message || workerUrl}`));
        worker.postMessage(init);
      });
      return new BrowserFaceTracker(worker, runtime);
    } catch (err) {
      worker.terminate();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Frames replaced by a newer one before they were tracked. */
  get droppedFrames(): number {
    return this.#dropped;
  }

  /**
   * Tracks one frame captured at `timestampMs` (ms, increasing: the filters use it). The frame is transferred (the
   * caller must not use it afterwards). Answers the result, or null when a newer frame replaced this one first.
   * @throws ClientError MEDIA (bad frame), CLOSED
   */
  track(frame: TrackerFrame, timestampMs: number): Promise<BrowserTrackResult | null> {
    if (this.#closed) return Promise.reject(new ClientError('CLOSED', 'the face tracker is closed'));
    if (!Number.isFinite(timestampMs))
      return Promise.reject(new ClientError('MEDIA', 'track: timestampMs must be a finite number'));
    return new Promise((resolve, reject) => {
      const p: Pending = { id: this.#nextId++, frame, timestampMs, resolve, reject };
      if (this.#waiting) {
        this.#dropped++;
        closeFrame(this.#waiting.frame);
        this.#waiting.resolve(null);
      }
      this.#waiting = p;
      this.#pump();
    });
  }

  /** Drops the track and the smoothing history (a new performer, a camera switch). */
  reset(): void {
    if (!this.#closed) this.#post({ type: 'reset' });
  }

  /** Stops the worker (idempotent); pending track() calls fail with CLOSED. */
  close(): void {
    if (this.#closed) return;
    this.#fail(new ClientError('CLOSED', 'the face tracker is closed'));
  }

  #pump(): void {
    if (this.#inFlight || !this.#waiting) return;
    const p = this.#waiting;
    this.#waiting = null;
    this.#inFlight = { ...p, startedAt: performance.now() };
    const transfer: Transferable[] = 'data' in p.frame ? [] : [p.frame];
    this.#post({ type: 'track', id: p.id, frame: p.frame, timestampMs: p.timestampMs }, transfer);
  }

  #post(msg: ToTrackerWorker, transfer: Transferable[] = []): void {
    this.#worker.postMessage(msg, transfer);
  }

  #onMessage(m: FromTrackerWorker): void {
    const cur = this.#inFlight;
    if (m.type === 'ready') return;
    if (m.id === null || !cur || m.id !== cur.id) {
      if (m.type === 'error' && m.id === null) this.#fail(new ClientError(m.code, m.message));
      return;
    }
    this.#inFlight = null;
    if (m.type === 'result')
      cur.resolve({
        timestampMs: cur.timestampMs,
        track: m.track,
        timings: { ...m.timings, roundTripMs: performance.now() - cur.startedAt },
      });
    else cur.reject(new ClientError(m.code, m.message));
    this.#pump();
  }

  /** Ends the tracker: the worker stops and every pending call fails with `err`. */
  #fail(err: ClientError): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#worker.terminate();
    for (const p of [this.#inFlight, this.#waiting]) {
      if (!p) continue;
      closeFrame(p.frame);
      p.reject(err);
    }
    this.#inFlight = null;
    this.#waiting = null;
  }
}

function closeFrame(f: TrackerFrame): void {
  if ('close' in f) f.close();
}

/** An absolute folder URL (with its trailing slash). */
function dirUrl(u: string | URL, base: string | undefined): string {
  const s = new URL(u, base).href;
  return s.endsWith('/') ? s : `${s}/`;
}
