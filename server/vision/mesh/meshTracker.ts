/**
 * Face tracking with MediaPipe's networks (BlazeFace, FaceMesh, Iris) through onnxruntime: the default tracker.
 *
 * Per frame: the face's region of interest (from the previous frame's mesh, or from a detection when there is no
 * track) is cut rotated upright at 192 x 192 and FaceMesh gives 468 points and a face flag; each eye is cut at
 * 64 x 64 along the same axis (the image-right eye mirrored: the Iris model sees left eyes) and the Iris model
 * refines both lid contours and finds the iris. The result is a FaceTrack whose 68 iBUG points come from the mesh
 * (landmarks.ts), so the rest of the engine is unchanged, plus the whole mesh (`mesh`), eye openness from the refined
 * lids and gaze from the iris centre.
 *
 * Smoothing never eats a blink: the 68 points are smoothed with a one-euro filter as the dlib tracker does, but eye
 * openness and gaze come from the unsmoothed mesh through their own fast filters, so a lid that closes in one frame
 * is closed in the track of that frame.
 *
 * Detection: BlazeFace (finds turned and small faces), and for stills the OpenCV cascades as a fallback for faces it
 * misses (cartoons, paintings). Not thread-safe: one tracker per stream; the sessions are shared per process.
 */
import { FaceDetector } from '../detector.js';
import { OneEuroFilter, type OneEuroParams } from '../oneEuro.js';
import { emptyPose, filterPose, PoseSolver } from '../pose.js';
import type { Box, ColorFrame, FaceTrack } from '../types.js';
import type { GrayImage } from '../../types/image.js';
import { Tensor } from '../../inference/onnx.js';
import { blazeAnchors, decodeBlazeFace, gatherBlazeRows, type BlazeDetection } from './blazeface.js';
import { cropRoi, roiToFrame, type Roi } from './crop.js';
import {
  EYE_CONTOUR,
  IRIS_LEFT,
  IRIS_RIGHT,
  MESH_FACE_POINTS,
  MESH_POINTS,
  meshEyeGaze,
  meshEyeOpenness,
  meshTo68,
  type EyeGaze,
} from './landmarks.js';
import { MeshModels } from './models.js';

const P2 = 136;
/** FaceMesh's face flag below this: no face in the region (MediaPipe's default). */
const MIN_FACE_FLAG = 0.5;
/** For stills found only by the cascades (cartoons, paintings): a lower bar, the mesh is checked for shape too. */
const MIN_FACE_FLAG_FALLBACK = 0.2;
/** Most faces a still image is analysed for (a crowd photo uploaded as a portrait costs at most 2x this many meshes). */
export const MAX_STILL_FACES = 8;
/** BlazeFace score for a detection. */
const MIN_DETECTION = 0.5;
/** Region of interest: the face's extent times this (MediaPipe's face landmark graphs use 1.5). */
const ROI_SCALE = 1.5;
/** Eye crop side over the corner-to-corner distance (MediaPipe's iris graph: 2.3). */
const EYE_SCALE = 2.3;
/** The region is kept while the face moved less than this (fractions of its side, radians): a still face keeps its
 * crop, so its landmarks stay still too. */
const ROI_HOLD_SHIFT = 0.02;
const ROI_HOLD_SIZE = 0.03;
const ROI_HOLD_ANGLE = 0.03;
/** The mesh found the face this far from where its region was (fractions of the side, radians): the crop was off (a
 * jump, a first frame from a detection), so the mesh is run again on the corrected region in the same frame. */
const ROI_REDO_SHIFT = 0.1;
const ROI_REDO_SIZE = 0.15;
const ROI_REDO_ANGLE = 0.12;
/**
 * Every this many tracked frames BlazeFace checks that the mesh is on the face it finds: a mesh can settle on a wrong
 * region that still looks face-like to FaceMesh (half a face after a jump), and its own face flag does not always
 * drop. Rare enough (once a second at 30 fps) to stay out of the tracked frame's p95.
 */
const VERIFY_EVERY = 30;
/** A detection whose centre is this far from the mesh's (fractions of the detection's size) disagrees with it. */
const VERIFY_MAX_SHIFT = 0.35;

/** Options for {@link MeshTracker.create}. */
export interface MeshTrackerOptions {
  /** Loaded networks (default MeshModels.load()). */
  models?: MeshModels;
  /** Cascade detector for stills BlazeFace misses (default: FaceDetector.create()); null: BlazeFace only. */
  fallbackDetector?: FaceDetector | null;
  /** Landmark smoothing (speeds in face sizes per second). Default { minCutoff: 1.5, beta: 6, dCutoff: 1 }. */
  landmarkFilter?: OneEuroParams;
  /** Pose smoothing. Default { minCutoff: 1.5, beta: 0.05, dCutoff: 1 }. */
  poseFilter?: OneEuroParams;
  /** Gaze smoothing (fast: a glance is a saccade). Default { minCutoff: 3, beta: 2, dCutoff: 5 }. */
  gazeFilter?: OneEuroParams;
  /** Eye and mouth openness smoothing (keeps blinks). Default { minCutoff: 3, beta: 10, dCutoff: 5 }. */
  opennessFilter?: OneEuroParams;
}

/** Stage timings of the last `track` call, in ms. */
export interface MeshTrackTimings {
  detectMs: number;
  meshMs: number;
  irisMs: number;
  featuresMs: number;
  totalMs: number;
  detected: boolean;
}

/** One tracked face with its whole mesh (see landmarks.ts for the layout). */
export interface MeshFaceTrack extends FaceTrack {
  mesh: Float32Array;
  vergence: { x: number; y: number };
}

function newTrack(): MeshFaceTrack {
  return {
    box: { l: 0, t: 0, r: 0, b: 0 },
    landmarks: new Float32Array(P2),
    rawLandmarks: new Int32Array(P2),
    pose: emptyPose(),
    eyes: { left: 0, right: 0 },
    mouth: 0,
    gaze: { x: 0, y: 0 },
    vergence: { x: 0, y: 0 },
    confidence: 0,
    mesh: new Float32Array(2 * MESH_POINTS),
  };
}

/** Mouth openness from the inner lips (as features.ts measures it on the 68 points). */
function mouthOpen68(p: ArrayLike<number>): number {
  const dd = (a: number, b: number): number => Math.hypot(p[2 * a]! - p[2 * b]!, p[2 * a + 1]! - p[2 * b + 1]!);
  const w = dd(48, 54);
  return w > 0 ? (dd(61, 67) + dd(62, 66) + dd(63, 65)) / (3 * w) : 0;
}

/** The dlib-convention box of a set of 68 points: the square around their extent. */
function boxOf(p: ArrayLike<number>, out: Box): Box {
  let x0 = Infinity,
    y0 = Infinity,
    x1 = -Infinity,
    y1 = -Infinity;
  for (let i = 0; i < 68; i++) {
    const x = p[2 * i]!;
    const y = p[2 * i + 1]!;
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }
  const side = Math.max(x1 - x0, y1 - y0);
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  out.l = Math.round(cx - side / 2);
  out.t = Math.round(cy - side / 2);
  out.r = out.l + Math.round(side);
  out.b = out.t + Math.round(side);
  return out;
}

/**
 * The networks and buffers of one stream: detection, mesh and iris on a frame, no temporal state. Shared by the
 * stream tracker and still analysis.
 */
class MeshRunner {
  readonly models: MeshModels;
  readonly #anchors: Float32Array;
  readonly #detIn: Float32Array;
  readonly #detRows: Float32Array;
  readonly #meshIn: Float32Array;
  readonly #irisIn: Float32Array;
  readonly #detFeed: Record<string, Tensor>;
  readonly #meshFeed: Record<string, Tensor>;
  readonly #irisFeed: Record<string, Tensor>;
  readonly #meshOut: string;
  readonly #flagOut: string;
  readonly #irisOut: string;
  readonly #pt: [number, number] = [0, 0];
  /** Raw FaceMesh output (468 x 3, crop pixels) and the iris output (76 x 3). */
  readonly #irisRaw = new Float32Array(2 * 228);
  readonly #eyeRois: [Roi, Roi] = [
    { cx: 0, cy: 0, side: 0, angle: 0 },
    { cx: 0, cy: 0, side: 0, angle: 0 },
  ];
  /** The last mesh's face flag. */
  flag = 0;

  constructor(models: MeshModels) {
    this.models = models;
    const ds = models.detectorSize;
    const ms = models.meshSize;
    const is = models.irisSize;
    this.#anchors = blazeAnchors(ds);
    this.#detIn = new Float32Array(ds * ds * 3);
    this.#detRows = new Float32Array((this.#anchors.length / 2) * 17);
    this.#meshIn = new Float32Array(ms * ms * 3);
    // Both eyes in one batch: one run instead of two (the per-layer overhead dominates at 64 x 64).
    this.#irisIn = new Float32Array(2 * is * is * 3);
    this.#detFeed = { [models.detector.inputNames[0]!]: new Tensor('float32', this.#detIn, [1, ds, ds, 3]) };
    this.#meshFeed = { [models.mesh.inputNames[0]!]: new Tensor('float32', this.#meshIn, [1, ms, ms, 3]) };
    this.#irisFeed = { [models.iris.inputNames[0]!]: new Tensor('float32', this.#irisIn, [2, is, is, 3]) };
    const bySize = (m: typeof models.mesh, n: number): string => {
      const o = m.outputs.find(
        (v) => v.shape.reduce<number>((a, d) => a * (typeof d === 'number' && d > 0 ? d : 1), 1) === n,
      );
      if (!o) throw new TypeError(`${m.file}: no output of ${n} values`);
      return o.name;
    };
    this.#meshOut = bySize(models.mesh, 1404);
    this.#flagOut = bySize(models.mesh, 1);
    this.#irisOut = models.iris.outputs.length === 1 ? models.iris.outputNames[0]! : bySize(models.iris, 228);
  }

  /** BlazeFace on the whole frame (letterboxed square): detections in frame pixels, best first. */
  detect(frame: ColorFrame): BlazeDetection[] {
    const size = this.models.detectorSize;
    const side = Math.max(frame.width, frame.height);
    cropRoi(frame, { cx: frame.width / 2, cy: frame.height / 2, side, angle: 0 }, size, 1 / 127.5, -1, this.#detIn);
    const res = this.models.detector.run(
      this.#detFeed,
      Object.fromEntries(this.models.detector.outputNames.map((n) => [n, null])),
    );
    const outs = this.models.detector.outputNames.map((n) => res[n]!.data as Float32Array);
    gatherBlazeRows(outs, this.#anchors.length / 2, this.#detRows);
    const found = decodeBlazeFace(this.#detRows, this.#anchors, MIN_DETECTION);
    const k = side / size;
    const ox = frame.width / 2 - side / 2;
    const oy = frame.height / 2 - side / 2;
    for (const f of found) {
      f.cx = ox + f.cx * k;
      f.cy = oy + f.cy * k;
      f.w *= k;
      f.h *= k;
      for (let i = 0; i < 12; i += 2) {
        f.keypoints[i] = ox + f.keypoints[i]! * k;
        f.keypoints[i + 1] = oy + f.keypoints[i + 1]! * k;
      }
    }
    return found;
  }

  /** The FaceMesh region for a detection: upright along the eyes, 1.5 x the box. */
  roiFromDetection(d: BlazeDetection, out: Roi): Roi {
    const kp = d.keypoints;
    out.cx = d.cx;
    out.cy = d.cy;
    out.side = ROI_SCALE * Math.max(d.w, d.h);
    out.angle = Math.atan2(kp[3]! - kp[1]!, kp[2]! - kp[0]!);
    return out;
  }

  /** The region of a box (cascade detections): its centre and 1.5 x its side, upright. */
  roiFromBox(b: Box, out: Roi): Roi {
    out.cx = (b.l + b.r) / 2;
    out.cy = (b.t + b.b) / 2;
    out.side = ROI_SCALE * (b.r - b.l);
    out.angle = 0;
    return out;
  }

  /** The next region from a mesh (frame pixels): its extent along the eye axis, 1.5 x the longer side. */
  roiFromMesh(mesh: Float32Array, out: Roi): Roi {
    const [l, r] = [EYE_CONTOUR.left.lower[0], EYE_CONTOUR.right.lower[0]];
    const angle = Math.atan2(mesh[2 * r + 1]! - mesh[2 * l + 1]!, mesh[2 * r]! - mesh[2 * l]!);
    const cs = Math.cos(angle);
    const sn = Math.sin(angle);
    let u0 = Infinity,
      u1 = -Infinity,
      v0 = Infinity,
      v1 = -Infinity;
    for (let i = 0; i < MESH_FACE_POINTS; i++) {
      const x = mesh[2 * i]!;
      const y = mesh[2 * i + 1]!;
      const u = x * cs + y * sn;
      const v = -x * sn + y * cs;
      if (u < u0) u0 = u;
      if (u > u1) u1 = u;
      if (v < v0) v0 = v;
      if (v > v1) v1 = v;
    }
    const uc = (u0 + u1) / 2;
    const vc = (v0 + v1) / 2;
    out.cx = uc * cs - vc * sn;
    out.cy = uc * sn + vc * cs;
    out.side = ROI_SCALE * Math.max(u1 - u0, v1 - v0);
    out.angle = angle;
    return out;
  }

  /**
   * FaceMesh at `roi`, then Iris on both eyes: writes the 478-point mesh (frame pixels) into `mesh` and returns the
   * face flag (0..1).
   */
  meshAt(frame: ColorFrame, roi: Roi, mesh: Float32Array, timings?: MeshTrackTimings): number {
    const ms = this.models.meshSize;
    let t = performance.now();
    cropRoi(frame, roi, ms, 1 / 255, 0, this.#meshIn);
    const res = this.models.mesh.run(this.#meshFeed, { [this.#meshOut]: null, [this.#flagOut]: null });
    const raw = res[this.#meshOut]!.data as Float32Array;
    const flag = (res[this.#flagOut]!.data as Float32Array)[0]!;
    this.flag = flag;
    const pt = this.#pt;
    for (let i = 0; i < MESH_FACE_POINTS; i++) {
      roiToFrame(roi, ms, raw[3 * i]!, raw[3 * i + 1]!, false, pt);
      mesh[2 * i] = pt[0];
      mesh[2 * i + 1] = pt[1];
    }
    if (timings) {
      const now = performance.now();
      timings.meshMs += now - t;
      t = now;
    }
    if (flag >= MIN_FACE_FLAG_FALLBACK) this.#iris(frame, mesh, roi.angle);
    if (timings) timings.irisMs += performance.now() - t;
    return flag;
  }

  /** Iris on both eyes (one batch): replaces their lid contours in `mesh` and writes their iris points. */
  #iris(frame: ColorFrame, mesh: Float32Array, angle: number): void {
    const is = this.models.irisSize;
    const plane = is * is * 3;
    (['left', 'right'] as const).forEach((eye, b) => {
      const c = EYE_CONTOUR[eye];
      const a = c.lower[0];
      const e = c.lower[8];
      const ax = mesh[2 * a]!,
        ay = mesh[2 * a + 1]!,
        bx = mesh[2 * e]!,
        by = mesh[2 * e + 1]!;
      const roi = this.#eyeRois[b]!;
      roi.cx = (ax + bx) / 2;
      roi.cy = (ay + by) / 2;
      roi.side = EYE_SCALE * Math.max(1, Math.abs((bx - ax) * Math.cos(angle) + (by - ay) * Math.sin(angle)));
      roi.angle = angle;
      // The image-right eye (the subject's left) is mirrored: the network was trained on one side.
      cropRoi(frame, roi, is, 1 / 255, 0, this.#irisIn.subarray(b * plane, (b + 1) * plane), eye === 'right');
    });
    const res = this.models.iris.run(this.#irisFeed, { [this.#irisOut]: null });
    this.#irisRaw.set((res[this.#irisOut]!.data as Float32Array).subarray(0, 2 * 228));
    const pt = this.#pt;
    (['left', 'right'] as const).forEach((eye, b) => {
      const c = EYE_CONTOUR[eye];
      const flip = eye === 'right';
      const roi = this.#eyeRois[b]!;
      const r = this.#irisRaw.subarray(b * 228, (b + 1) * 228);
      const put = (k: number, idx: number): void => {
        roiToFrame(roi, is, r[3 * k]!, r[3 * k + 1]!, flip, pt);
        mesh[2 * idx] = pt[0];
        mesh[2 * idx + 1] = pt[1];
      };
      for (let k = 0; k < 9; k++) put(k, c.lower[k]!);
      for (let k = 0; k < 7; k++) put(9 + k, c.upper[k]!);
      const iris = eye === 'left' ? IRIS_LEFT : IRIS_RIGHT;
      for (let k = 0; k < 5; k++) put(71 + k, iris + k);
    });
  }
}

/** Face tracker for one video stream (FaceMesh + Iris). */
export class MeshTracker {
  readonly models: MeshModels;
  readonly fallbackDetector: FaceDetector | null;
  /** Timings of the last track() call. */
  readonly timings: MeshTrackTimings = {
    detectMs: 0,
    meshMs: 0,
    irisMs: 0,
    featuresMs: 0,
    totalMs: 0,
    detected: false,
  };
  readonly #run: MeshRunner;
  readonly #lmFilter: OneEuroFilter;
  readonly #poseFilter: OneEuroFilter;
  readonly #gazeFilter: OneEuroFilter;
  readonly #openFilter: OneEuroFilter;
  readonly #pose = new PoseSolver();
  readonly #track = newTrack();
  readonly #raw68 = new Float32Array(P2);
  readonly #roi: Roi = { cx: 0, cy: 0, side: 0, angle: 0 };
  readonly #next: Roi = { cx: 0, cy: 0, side: 0, angle: 0 };
  readonly #poseVec = new Float64Array(6);
  readonly #openVec = new Float64Array(3);
  readonly #gazeVec = new Float64Array(2);
  readonly #vergFilter: OneEuroFilter;
  readonly #vergVec = new Float64Array(2);
  readonly #gl: EyeGaze = { x: 0, y: 0 };
  readonly #gr: EyeGaze = { x: 0, y: 0 };
  #active = false;
  #sinceVerify = 0;

  private constructor(models: MeshModels, fallback: FaceDetector | null, opts: MeshTrackerOptions) {
    this.models = models;
    this.fallbackDetector = fallback;
    this.#run = new MeshRunner(models);
    this.#lmFilter = new OneEuroFilter(P2, opts.landmarkFilter ?? { minCutoff: 1.5, beta: 6, dCutoff: 1 });
    this.#poseFilter = new OneEuroFilter(6, opts.poseFilter ?? { minCutoff: 1.5, beta: 0.05, dCutoff: 1 });
    this.#gazeFilter = new OneEuroFilter(2, opts.gazeFilter ?? { minCutoff: 3, beta: 2, dCutoff: 5 });
    this.#vergFilter = new OneEuroFilter(2, opts.gazeFilter ?? { minCutoff: 3, beta: 2, dCutoff: 5 });
    this.#openFilter = new OneEuroFilter(3, opts.opennessFilter ?? { minCutoff: 3, beta: 10, dCutoff: 5 });
  }

  /** Loads what is not given. @throws AppError FACE_MODEL_INVALID when the converted networks are missing or stale */
  static async create(opts: MeshTrackerOptions = {}): Promise<MeshTracker> {
    const models = opts.models ?? (await MeshModels.load());
    const fallback = opts.fallbackDetector === undefined ? await FaceDetector.create() : opts.fallbackDetector;
    return new MeshTracker(models, fallback, opts);
  }

  /** Whether a face is being tracked. */
  get tracking(): boolean {
    return this.#active;
  }

  /** Drops the track and the smoothing history. */
  reset(): void {
    this.#active = false;
    this.#sinceVerify = 0;
    this.#lmFilter.reset();
    this.#poseFilter.reset();
    this.#gazeFilter.reset();
    this.#vergFilter.reset();
    this.#vergVec.fill(0);
    this.#openFilter.reset();
    this.#pose.reset();
  }

  /**
   * Tracks the face in one frame (`color` when the caller has it; the gray frame is read as colourless otherwise).
   * Returns the tracker's own track (overwritten by the next call) or null when there is no face.
   */
  track(gray: GrayImage, timestampMs: number, color?: ColorFrame): MeshFaceTrack | null {
    const t0 = performance.now();
    const tm = this.timings;
    tm.detectMs = 0;
    tm.meshMs = 0;
    tm.irisMs = 0;
    tm.featuresMs = 0;
    tm.detected = false;
    const frame: ColorFrame = color ?? { format: 'gray', width: gray.width, height: gray.height, data: gray.data };
    if (frame.width < 2 || frame.height < 2) {
      this.reset();
      tm.totalMs = performance.now() - t0;
      return null;
    }
    const mesh = this.#track.mesh;
    if (this.#active && ++this.#sinceVerify >= VERIFY_EVERY) {
      this.#sinceVerify = 0;
      this.#verify(frame);
    }
    // A region from a detection is only roughly where the mesh puts the face: the frame is meshed again from the
    // mesh's own region (as every later frame is), so that the first frames of a track agree with the next ones.
    let fresh = !this.#active;
    let ok = this.#active || this.#acquire(frame);
    if (ok) {
      ok = this.#run.meshAt(frame, this.#roi, mesh, tm) >= MIN_FACE_FLAG;
      if (!ok && this.#active) {
        // Lost: one detection on this frame.
        this.reset();
        fresh = true;
        ok = this.#acquire(frame) && this.#run.meshAt(frame, this.#roi, mesh, tm) >= MIN_FACE_FLAG;
      }
    }
    if (!ok) {
      this.reset();
      tm.totalMs = performance.now() - t0;
      return null;
    }
    this.#active = true;
    const r = this.#roi;
    let n = this.#run.roiFromMesh(mesh, this.#next);
    // A crop well off the face gives a worse mesh: mesh again where the face is, in the same frame. A fresh track
    // (from a detection) settles its region completely (up to 3 passes, until it holds), so that the first frames
    // of a track, which a calibration takes as the neutral, are the frames every later one is compared with.
    const far = (): boolean =>
      Math.hypot(n.cx - r.cx, n.cy - r.cy) > ROI_REDO_SHIFT * r.side ||
      Math.abs(n.side - r.side) > ROI_REDO_SIZE * r.side ||
      Math.abs(n.angle - r.angle) > ROI_REDO_ANGLE;
    const moved = (): boolean =>
      Math.hypot(n.cx - r.cx, n.cy - r.cy) > ROI_HOLD_SHIFT * r.side ||
      Math.abs(n.side - r.side) > ROI_HOLD_SIZE * r.side ||
      Math.abs(n.angle - r.angle) > ROI_HOLD_ANGLE;
    for (let pass = 0; pass < (fresh ? 3 : 1) && (far() || (fresh && moved())); pass++) {
      r.cx = n.cx;
      r.cy = n.cy;
      r.side = n.side;
      r.angle = n.angle;
      if (this.#run.meshAt(frame, r, mesh, tm) < MIN_FACE_FLAG) {
        this.reset();
        tm.totalMs = performance.now() - t0;
        return null;
      }
      n = this.#run.roiFromMesh(mesh, this.#next);
    }
    const out = this.#finish(frame, timestampMs);
    // The next frame's region, kept when the face barely moved (a still face gets the same crop).
    if (
      Math.hypot(n.cx - r.cx, n.cy - r.cy) > ROI_HOLD_SHIFT * r.side ||
      Math.abs(n.side - r.side) > ROI_HOLD_SIZE * r.side ||
      Math.abs(n.angle - r.angle) > ROI_HOLD_ANGLE
    ) {
      r.cx = n.cx;
      r.cy = n.cy;
      r.side = n.side;
      r.angle = n.angle;
    }
    tm.totalMs = performance.now() - t0;
    return out;
  }

  /**
   * The faces of a still image, best first (BlazeFace; the cascades when BlazeFace finds none), each meshed twice
   * (the second time from the first mesh's region), at most `maxFaces` of them: the candidates looked at are capped
   * too (2 x maxFaces), so a picture of a crowd costs a bounded number of network runs. Allocates its results; not for
   * the per-frame path.
   */
  analyzeImage(gray: GrayImage, color?: ColorFrame, maxFaces = MAX_STILL_FACES): MeshFaceTrack[] {
    if (!(Number.isInteger(maxFaces) && maxFaces >= 1))
      throw new TypeError('analyzeImage: maxFaces must be an integer >= 1');
    const frame: ColorFrame = color ?? { format: 'gray', width: gray.width, height: gray.height, data: gray.data };
    const run = this.#run;
    const rois: { roi: Roi; min: number; score: number }[] = run.detect(frame).map((d) => ({
      roi: run.roiFromDetection(d, { cx: 0, cy: 0, side: 0, angle: 0 }),
      min: MIN_FACE_FLAG,
      score: d.score,
    }));
    if (rois.length === 0 && this.fallbackDetector) {
      for (const f of this.fallbackDetector.detect(gray, { thorough: true }))
        rois.push({
          roi: run.roiFromBox(f.box, { cx: 0, cy: 0, side: 0, angle: 0 }),
          min: MIN_FACE_FLAG_FALLBACK,
          score: f.score,
        });
    }
    const out: MeshFaceTrack[] = [];
    const pose = new PoseSolver();
    for (const { roi, min, score } of rois.slice(0, 2 * maxFaces)) {
      if (out.length >= maxFaces) break;
      const t = newTrack();
      if (run.meshAt(frame, roi, t.mesh) < min) continue;
      run.roiFromMesh(t.mesh, roi);
      const flag = run.meshAt(frame, roi, t.mesh);
      if (flag < min) continue;
      meshTo68(t.mesh, t.landmarks);
      for (let i = 0; i < P2; i++) t.rawLandmarks[i] = Math.floor(t.landmarks[i]! + 0.5);
      boxOf(t.landmarks, t.box);
      pose.reset();
      pose.solve(t.landmarks, frame.width, frame.height, t.pose);
      t.eyes.left = meshEyeOpenness(t.mesh, 'left');
      t.eyes.right = meshEyeOpenness(t.mesh, 'right');
      t.mouth = mouthOpen68(t.landmarks);
      const gl = meshEyeGaze(t.mesh, 'left', { x: 0, y: 0 });
      const gr = meshEyeGaze(t.mesh, 'right', { x: 0, y: 0 });
      t.gaze.x = (gl.x + gr.x) / 2;
      t.gaze.y = (gl.y + gr.y) / 2;
      t.confidence = Math.min(1, flag) * Math.min(1, 0.3 + 0.7 * score);
      if (!out.some((u) => overlap(u.box, t.box) > 0.5)) out.push(t);
    }
    return out;
  }

  /** Nothing of its own to release (the sessions are shared); present for StreamTracker. */
  close(): void {
    this.reset();
  }

  /**
   * BlazeFace on the whole frame: when no detection sits where the mesh is (by centre and size), the track restarts
   * from the best detection (or from scratch when there is none: the next track() detects again).
   */
  #verify(frame: ColorFrame): void {
    const td = performance.now();
    const found = this.#run.detect(frame);
    this.timings.detectMs += performance.now() - td;
    this.timings.detected = true;
    const r = this.#roi;
    const agrees = found.some((d) => {
      const size = Math.max(d.w, d.h);
      return (
        Math.hypot(d.cx - r.cx, d.cy - r.cy) < VERIFY_MAX_SHIFT * size &&
        Math.abs(ROI_SCALE * size - r.side) < 0.35 * r.side
      );
    });
    if (agrees) return;
    this.reset();
    const best = found[0];
    if (!best) return;
    this.#run.roiFromDetection(best, this.#roi);
    this.#active = true;
  }

  #acquire(frame: ColorFrame): boolean {
    const td = performance.now();
    const found = this.#run.detect(frame);
    this.timings.detectMs += performance.now() - td;
    this.timings.detected = true;
    const best = found[0];
    if (!best) return false;
    this.#run.roiFromDetection(best, this.#roi);
    this.#lmFilter.reset();
    this.#poseFilter.reset();
    this.#gazeFilter.reset();
    this.#vergFilter.reset();
    this.#vergVec.fill(0);
    this.#openFilter.reset();
    this.#pose.reset();
    return true;
  }

  #finish(frame: ColorFrame, ts: number): MeshFaceTrack {
    const t = this.#track;
    const tf = performance.now();
    const raw = this.#raw68;
    meshTo68(t.mesh, raw);
    for (let i = 0; i < P2; i++) t.rawLandmarks[i] = Math.floor(raw[i]! + 0.5);
    const side = this.#roi.side / ROI_SCALE;
    this.#lmFilter.filter(raw, ts, t.landmarks, Math.max(1, side));
    boxOf(raw, t.box);
    this.#pose.solve(t.landmarks, frame.width, frame.height, t.pose);
    filterPose(this.#poseFilter, t.pose, ts, this.#poseVec);
    // Openness and gaze from the unsmoothed mesh, each with a fast filter of its own (blinks and saccades survive).
    const ov = this.#openVec;
    ov[0] = meshEyeOpenness(t.mesh, 'left');
    ov[1] = meshEyeOpenness(t.mesh, 'right');
    ov[2] = mouthOpen68(raw);
    this.#openFilter.filter(ov, ts, ov);
    t.eyes.left = ov[0]!;
    t.eyes.right = ov[1]!;
    t.mouth = ov[2]!;
    const gl = meshEyeGaze(t.mesh, 'left', this.#gl);
    const gr = meshEyeGaze(t.mesh, 'right', this.#gr);
    // Each eye weighted by its openness: a closing lid hides the iris and the network guesses.
    const wl = Math.min(1, t.eyes.left / 0.2);
    const wr = Math.min(1, t.eyes.right / 0.2);
    const g = this.#gazeVec;
    if (wl + wr > 0.1) {
      g[0] = (gl.x * wl + gr.x * wr) / (wl + wr);
      g[1] = (gl.y * wl + gr.y * wr) / (wl + wr);
      this.#gazeFilter.filter(g, ts, g);
    }
    // (Both eyes closed: the previous gaze is held.)
    t.gaze.x = g[0]!;
    t.gaze.y = g[1]!;
    // Each eye's own direction (crossed eyes, one eye turned): only while both irises are in view.
    const vg = this.#vergVec;
    if (wl >= 0.75 && wr >= 0.75) {
      vg[0] = (gl.x - gr.x) / 2;
      vg[1] = (gl.y - gr.y) / 2;
      this.#vergFilter.filter(vg, ts, vg);
    }
    t.vergence.x = vg[0]!;
    t.vergence.y = vg[1]!;
    t.confidence = Math.min(1, this.#run.flag);
    this.timings.featuresMs += performance.now() - tf;
    return t;
  }
}

function overlap(a: Box, b: Box): number {
  const ix = Math.max(0, Math.min(a.r, b.r) - Math.max(a.l, b.l));
  const iy = Math.max(0, Math.min(a.b, b.b) - Math.max(a.t, b.t));
  const i = ix * iy;
  const u = (a.r - a.l) * (a.b - a.t) + (b.r - b.l) * (b.b - b.t) - i;
  return u > 0 ? i / u : 0;
}
