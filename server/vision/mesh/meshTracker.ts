/**
 * Face tracking with MediaPipe's networks (BlazeFace, FaceMesh, Iris) through onnxruntime-node: the default tracker.
 *
 * The tracking itself (regions, crops, decoding, filters, features) is meshCore.ts, shared with the browser's tracker
 * (client/lib/tracker); this class runs its network requests synchronously on the process's shared sessions
 * (inference/onnx.ts: no promise or macrotask per frame), and adds the OpenCV cascades as a fallback detector for
 * stills BlazeFace misses (cartoons, paintings). Not thread-safe: one tracker per stream; the sessions are shared per
 * process.
 */
import { FaceDetector } from '../detector.js';
import type { ColorFrame } from '../types.js';
import type { GrayImage } from '../../types/image.js';
import { Tensor, type OnnxModel } from '../../inference/onnx.js';
import {
  MAX_STILL_FACES,
  MeshTrackerCore,
  runMeshSync,
  type MeshFaceTrack,
  type MeshFilterOptions,
  type MeshNetInfo,
  type MeshNetName,
  type MeshRun,
  type MeshSteps,
  type MeshTrackTimings,
} from './meshCore.js';
import { MeshModels } from './models.js';

export { MAX_STILL_FACES, type MeshFaceTrack, type MeshTrackTimings };

/** Options for {@link MeshTracker.create}. */
export interface MeshTrackerOptions extends MeshFilterOptions {
  /** Loaded networks (default MeshModels.load()). */
  models?: MeshModels;
  /** Cascade detector for stills BlazeFace misses (default: FaceDetector.create()); null: BlazeFace only. */
  fallbackDetector?: FaceDetector | null;
}

/** What the shared core needs of a session: its file, input and outputs. */
export function meshNetInfo(m: OnnxModel): MeshNetInfo {
  return {
    file: m.file,
    inputName: m.inputs[0]!.name,
    inputShape: m.inputs[0]!.shape,
    outputs: m.outputs.map((o) => ({ name: o.name, shape: o.shape })),
  };
}

/** One network's feeds and fetches, built once around the core's input buffer. */
interface SyncNet {
  model: OnnxModel;
  feeds: Record<string, Tensor>;
  fetches: Record<string, null>;
  fetch: readonly string[];
  out: Float32Array[];
}

/** Face tracker for one video stream (FaceMesh + Iris). */
export class MeshTracker {
  readonly models: MeshModels;
  readonly fallbackDetector: FaceDetector | null;
  readonly #core: MeshTrackerCore;
  readonly #nets = new Map<MeshNetName, SyncNet>();
  readonly #runNet = (r: MeshRun): readonly Float32Array[] => this.#runSync(r);

  private constructor(models: MeshModels, fallback: FaceDetector | null, opts: MeshTrackerOptions) {
    this.models = models;
    this.fallbackDetector = fallback;
    this.#core = new MeshTrackerCore(
      { detector: meshNetInfo(models.detector), mesh: meshNetInfo(models.mesh), iris: meshNetInfo(models.iris) },
      opts,
    );
  }

  /** Loads what is not given. @throws AppError FACE_MODEL_INVALID when the converted networks are missing or stale */
  static async create(opts: MeshTrackerOptions = {}): Promise<MeshTracker> {
    const models = opts.models ?? (await MeshModels.load());
    const fallback = opts.fallbackDetector === undefined ? await FaceDetector.create() : opts.fallbackDetector;
    return new MeshTracker(models, fallback, opts);
  }

  /** Timings of the last track() call. */
  get timings(): MeshTrackTimings {
    return this.#core.timings;
  }

  /** Whether a face is being tracked. */
  get tracking(): boolean {
    return this.#core.tracking;
  }

  /** Drops the track and the smoothing history. */
  reset(): void {
    this.#core.reset();
  }

  /**
   * Tracks the face in one frame (`color` when the caller has it; the gray frame is read as colourless otherwise).
   * Returns the tracker's own track (overwritten by the next call) or null when there is no face.
   */
  track(gray: GrayImage, timestampMs: number, color?: ColorFrame): MeshFaceTrack | null {
    const frame: ColorFrame = color ?? { format: 'gray', width: gray.width, height: gray.height, data: gray.data };
    return this.#drive(this.#core.track(frame, timestampMs));
  }

  /**
   * The faces of a still image, best first (BlazeFace; the cascades when BlazeFace finds none), at most `maxFaces`
   * of them (see MeshTrackerCore.analyzeImage). Allocates its results; not for the per-frame path.
   */
  analyzeImage(gray: GrayImage, color?: ColorFrame, maxFaces = MAX_STILL_FACES): MeshFaceTrack[] {
    const frame: ColorFrame = color ?? { format: 'gray', width: gray.width, height: gray.height, data: gray.data };
    const fallback = this.fallbackDetector;
    return this.#drive(
      this.#core.analyzeImage(
        frame,
        maxFaces,
        fallback ? () => fallback.detect(gray, { thorough: true }).map((f) => ({ box: f.box, score: f.score })) : null,
      ),
    );
  }

  /** Nothing of its own to release (the sessions are shared); present for StreamTracker. */
  close(): void {
    this.reset();
  }

  #drive<T>(steps: MeshSteps<T>): T {
    return runMeshSync(steps, this.#runNet);
  }

  #runSync(r: MeshRun): readonly Float32Array[] {
    let n = this.#nets.get(r.net);
    if (!n) {
      const model =
        r.net === 'detector' ? this.models.detector : r.net === 'mesh' ? this.models.mesh : this.models.iris;
      n = {
        model,
        feeds: { [r.inputName]: new Tensor('float32', r.input, [...r.dims]) },
        fetches: Object.fromEntries(r.fetch.map((f) => [f, null])),
        fetch: r.fetch,
        out: [],
      };
      this.#nets.set(r.net, n);
    }
    const res = n.model.run(n.feeds, n.fetches);
    for (let i = 0; i < n.fetch.length; i++) n.out[i] = res[n.fetch[i]!]!.data as Float32Array;
    return n.out;
  }
}
