/**
 * The FaceMesh tracker's logic without a runtime: everything around the three networks (the region of interest, the
 * crops, BlazeFace decoding, mesh and iris decoding, the 68-point mapping, the one-euro filters, openness, gaze and
 * pose), shared by the server (meshTracker.ts: onnxruntime-node, synchronous) and the browser
 * (client/lib/tracker: onnxruntime-web in a Web Worker, asynchronous). Pure: no Node or DOM imports, so that the
 * browser bundle can take it as it is.
 *
 * Each operation is a generator of {@link MeshRun} requests: it yields "run this network on this input" and is
 * resumed with the outputs it asked for. The server drives it with {@link runMeshSync} (no promise, no macrotask per
 * frame), the browser with {@link runMeshAsync} (`await` per network). Which networks run, on what crops, and every
 * number computed from their outputs are the same on both sides.
 *
 * Per frame: the face's region of interest (from the previous frame's mesh, or from a detection when there is no
 * track) is cut rotated upright at 192 x 192 and FaceMesh gives 468 points and a face flag; each eye is cut at
 * 64 x 64 along the same axis (the image-right eye mirrored: the Iris model sees left eyes) and the Iris model
 * refines both lid contours and finds the iris. The result is a FaceTrack whose 68 iBUG points come from the mesh
 * (landmarks.ts), plus the whole mesh (`mesh`), eye openness from the refined lids and gaze from the iris centre.
 *
 * Smoothing never eats a blink: the 68 points are smoothed with a one-euro filter as the dlib tracker does, but eye
 * openness and gaze come from the unsmoothed mesh through their own fast filters, so a lid that closes in one frame
 * is closed in the track of that frame.
 */
import { OneEuroFilter, type OneEuroParams } from '../oneEuro.js';
import { emptyPose, filterPose, PoseSolver } from '../pose.js';
import type { Box, ColorFrame, FaceTrack } from '../types.js';
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

/** The three networks. */
export type MeshNetName = 'detector' | 'mesh' | 'iris';

/** What the core needs to know of one loaded network (from its session's metadata). */
export interface MeshNetInfo {
  /** File name, for error messages. */
  file: string;
  /** The one input's name and shape (NHWC [batch, side, side, 3]). */
  inputName: string;
  inputShape: readonly (number | string)[];
  /** Outputs in model order; a dimension may be symbolic (a name). */
  outputs: readonly { name: string; shape: readonly (number | string)[] }[];
}

/**
 * One request of the core to its runtime: run `net` on `input` (float32, dims `dims`; a buffer the core owns and
 * refills before each request, so a runtime may wrap it once) and resume the generator with the outputs named in
 * `fetch`, in that order, as float32 arrays. The request objects are the core's own (one per network, reused).
 */
export interface MeshRun {
  readonly net: MeshNetName;
  readonly inputName: string;
  readonly input: Float32Array;
  readonly dims: readonly number[];
  readonly fetch: readonly string[];
}

/** A tracking operation: yields network runs, receives their outputs, returns `T`. */
export type MeshSteps<T> = Generator<MeshRun, T, readonly Float32Array[]>;

/** Drives `steps` with a synchronous runtime (the server's onnxruntime-node sessions). */
export function runMeshSync<T>(steps: MeshSteps<T>, run: (r: MeshRun) => readonly Float32Array[]): T {
  let s = steps.next();
  while (!s.done) s = steps.next(run(s.value));
  return s.value;
}

/** Drives `steps` with an asynchronous runtime (onnxruntime-web). */
export async function runMeshAsync<T>(
  steps: MeshSteps<T>,
  run: (r: MeshRun) => Promise<readonly Float32Array[]>,
): Promise<T> {
  let s = steps.next();
  while (!s.done) s = steps.next(await run(s.value));
  return s.value;
}

/** Filter parameters of {@link MeshTrackerCore}. */
export interface MeshFilterOptions {
  /** Landmark smoothing (speeds in face sizes per second). Default { minCutoff: 1.5, beta: 6, dCutoff: 1 }. */
  landmarkFilter?: OneEuroParams;
  /** Pose smoothing. Default { minCutoff: 1.5, beta: 0.05, dCutoff: 1 }. */
  poseFilter?: OneEuroParams;
  /** Gaze smoothing (fast: a glance is a saccade). Default { minCutoff: 3, beta: 2, dCutoff: 5 }. */
  gazeFilter?: OneEuroParams;
  /** Eye and mouth openness smoothing (keeps blinks). Default { minCutoff: 3, beta: 10, dCutoff: 5 }. */
  opennessFilter?: OneEuroParams;
}

/** Stage timings of the last `track` call, in ms (a stage's time includes its network runs). */
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

/** A face box from another detector (the server's cascades for stills), with its score. */
export interface FallbackFace {
  box: Box;
  score: number;
}

export function newMeshTrack(): MeshFaceTrack {
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

/** Input side of an NHWC RGB network; a TypeError naming the file otherwise. */
export function meshInputSide(info: MeshNetInfo): number {
  const shape = info.inputShape;
  const h = shape[1];
  if (shape.length !== 4 || typeof h !== 'number' || shape[3] !== 3)
    throw new TypeError(`${info.file}: expected an NHWC RGB input, got [${shape.join(', ')}]`);
  return h;
}

/** The name of the output holding `n` values (symbolic dimensions count as 1). */
function outputBySize(info: MeshNetInfo, n: number): string {
  const o = info.outputs.find(
    (v) => v.shape.reduce<number>((a, d) => a * (typeof d === 'number' && d > 0 ? d : 1), 1) === n,
  );
  if (!o) throw new TypeError(`${info.file}: no output of ${n} values`);
  return o.name;
}

/**
 * The networks' inputs and outputs of one stream: detection, mesh and iris on a frame, no temporal state. Shared by
 * the stream tracker and still analysis.
 */
class MeshRunner {
  readonly detectorSize: number;
  readonly meshSize: number;
  readonly irisSize: number;
  readonly #anchors: Float32Array;
  readonly #detRows: Float32Array;
  readonly #detRun: MeshRun;
  readonly #meshRun: MeshRun;
  readonly #irisRun: MeshRun;
  readonly #pt: [number, number] = [0, 0];
  /** The iris output (76 x 3 per eye). */
  readonly #irisRaw = new Float32Array(2 * 228);
  readonly #eyeRois: [Roi, Roi] = [
    { cx: 0, cy: 0, side: 0, angle: 0 },
    { cx: 0, cy: 0, side: 0, angle: 0 },
  ];
  /** The last mesh's face flag. */
  flag = 0;

  constructor(nets: Readonly<Record<MeshNetName, MeshNetInfo>>) {
    const ds = (this.detectorSize = meshInputSide(nets.detector));
    const ms = (this.meshSize = meshInputSide(nets.mesh));
    const is = (this.irisSize = meshInputSide(nets.iris));
    this.#anchors = blazeAnchors(ds);
    this.#detRows = new Float32Array((this.#anchors.length / 2) * 17);
    this.#detRun = {
      net: 'detector',
      inputName: nets.detector.inputName,
      input: new Float32Array(ds * ds * 3),
      dims: [1, ds, ds, 3],
      fetch: nets.detector.outputs.map((o) => o.name),
    };
    this.#meshRun = {
      net: 'mesh',
      inputName: nets.mesh.inputName,
      input: new Float32Array(ms * ms * 3),
      dims: [1, ms, ms, 3],
      // The 468 x 3 points, then the face flag.
      fetch: [outputBySize(nets.mesh, 1404), outputBySize(nets.mesh, 1)],
    };
    // Both eyes in one batch: one run instead of two (the per-layer overhead dominates at 64 x 64).
    this.#irisRun = {
      net: 'iris',
      inputName: nets.iris.inputName,
      input: new Float32Array(2 * is * is * 3),
      dims: [2, is, is, 3],
      fetch: [nets.iris.outputs.length === 1 ? nets.iris.outputs[0]!.name : outputBySize(nets.iris, 228)],
    };
  }

  /** BlazeFace on the whole frame (letterboxed square): detections in frame pixels, best first. */
  *detect(frame: ColorFrame): MeshSteps<BlazeDetection[]> {
    const size = this.detectorSize;
    const side = Math.max(frame.width, frame.height);
    const req = this.#detRun;
    cropRoi(frame, { cx: frame.width / 2, cy: frame.height / 2, side, angle: 0 }, size, 1 / 127.5, -1, req.input);
    return this.#decodeDetections(frame, yield req);
  }

  /** BlazeFace's outputs as detections in frame pixels. */
  #decodeDetections(frame: ColorFrame, outs: readonly Float32Array[]): BlazeDetection[] {
    const size = this.detectorSize;
    const side = Math.max(frame.width, frame.height);
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
  *meshAt(frame: ColorFrame, roi: Roi, mesh: Float32Array, timings?: MeshTrackTimings): MeshSteps<number> {
    const ms = this.meshSize;
    let t = performance.now();
    const req = this.#meshRun;
    cropRoi(frame, roi, ms, 1 / 255, 0, req.input);
    const [raw, flags] = (yield req) as [Float32Array, Float32Array];
    const flag = flags[0]!;
    this.flag = flag;
    this.#decodeMesh(roi, raw, mesh);
    if (timings) {
      const now = performance.now();
      timings.meshMs += now - t;
      t = now;
    }
    if (flag >= MIN_FACE_FLAG_FALLBACK) yield* this.#iris(frame, mesh, roi.angle);
    if (timings) timings.irisMs += performance.now() - t;
    return flag;
  }

  /** FaceMesh's 468 points (crop pixels, x y z) into `mesh` (frame pixels). (Loops live outside the generators.) */
  #decodeMesh(roi: Roi, raw: Float32Array, mesh: Float32Array): void {
    const ms = this.meshSize;
    const pt = this.#pt;
    for (let i = 0; i < MESH_FACE_POINTS; i++) {
      roiToFrame(roi, ms, raw[3 * i]!, raw[3 * i + 1]!, false, pt);
      mesh[2 * i] = pt[0];
      mesh[2 * i + 1] = pt[1];
    }
  }

  /** Iris on both eyes (one batch): replaces their lid contours in `mesh` and writes their iris points. */
  *#iris(frame: ColorFrame, mesh: Float32Array, angle: number): MeshSteps<void> {
    const req = this.#irisRun;
    this.#cropEyes(frame, mesh, angle, req.input);
    const [out] = yield req;
    this.#decodeIris(out!, mesh);
  }

  /** Both eye crops, along the face's axis, into the iris input (the image-right eye mirrored). */
  #cropEyes(frame: ColorFrame, mesh: Float32Array, angle: number, input: Float32Array): void {
    const is = this.irisSize;
    const plane = is * is * 3;
    for (let b = 0; b < 2; b++) {
      const eye = b === 0 ? 'left' : 'right';
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
      cropRoi(frame, roi, is, 1 / 255, 0, input.subarray(b * plane, (b + 1) * plane), eye === 'right');
    }
  }

  /** The iris output (76 x 3 per eye, crop pixels) into `mesh`: both lid contours and both irises. */
  #decodeIris(out: Float32Array, mesh: Float32Array): void {
    const is = this.irisSize;
    this.#irisRaw.set(out.subarray(0, 2 * 228));
    const pt = this.#pt;
    for (let b = 0; b < 2; b++) {
      const eye = b === 0 ? 'left' : 'right';
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
    }
  }
}

/**
 * The tracking state of one video stream (region, filters, pose) and its per-frame logic, as generators of network
 * runs. Not thread-safe: one per stream.
 */
export class MeshTrackerCore {
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
  readonly #vergFilter: OneEuroFilter;
  readonly #vergVec = new Float64Array(2);
  readonly #openFilter: OneEuroFilter;
  readonly #pose = new PoseSolver();
  readonly #track = newMeshTrack();
  readonly #raw68 = new Float32Array(P2);
  readonly #roi: Roi = { cx: 0, cy: 0, side: 0, angle: 0 };
  readonly #next: Roi = { cx: 0, cy: 0, side: 0, angle: 0 };
  readonly #poseVec = new Float64Array(6);
  readonly #openVec = new Float64Array(3);
  readonly #gazeVec = new Float64Array(2);
  readonly #gl: EyeGaze = { x: 0, y: 0 };
  readonly #gr: EyeGaze = { x: 0, y: 0 };
  #active = false;
  #sinceVerify = 0;

  /** @throws TypeError when a network's inputs or outputs are not the expected ones */
  constructor(nets: Readonly<Record<MeshNetName, MeshNetInfo>>, opts: MeshFilterOptions = {}) {
    this.#run = new MeshRunner(nets);
    this.#lmFilter = new OneEuroFilter(P2, opts.landmarkFilter ?? { minCutoff: 1.5, beta: 6, dCutoff: 1 });
    this.#poseFilter = new OneEuroFilter(6, opts.poseFilter ?? { minCutoff: 1.5, beta: 0.05, dCutoff: 1 });
    this.#gazeFilter = new OneEuroFilter(2, opts.gazeFilter ?? { minCutoff: 3, beta: 2, dCutoff: 5 });
    this.#vergFilter = new OneEuroFilter(2, opts.gazeFilter ?? { minCutoff: 3, beta: 2, dCutoff: 5 });
    this.#openFilter = new OneEuroFilter(3, opts.opennessFilter ?? { minCutoff: 3, beta: 10, dCutoff: 5 });
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
   * Tracks the face in one frame. Returns the core's own track (overwritten by the next call) or null when there is
   * no face.
   */
  *track(frame: ColorFrame, timestampMs: number): MeshSteps<MeshFaceTrack | null> {
    const t0 = performance.now();
    const tm = this.timings;
    tm.detectMs = 0;
    tm.meshMs = 0;
    tm.irisMs = 0;
    tm.featuresMs = 0;
    tm.detected = false;
    if (frame.width < 2 || frame.height < 2) {
      this.reset();
      tm.totalMs = performance.now() - t0;
      return null;
    }
    const mesh = this.#track.mesh;
    if (this.#active && ++this.#sinceVerify >= VERIFY_EVERY) {
      this.#sinceVerify = 0;
      yield* this.#verify(frame);
    }
    // A region from a detection is only roughly where the mesh puts the face: the frame is meshed again from the
    // mesh's own region (as every later frame is), so that the first frames of a track agree with the next ones.
    let fresh = !this.#active;
    let ok = this.#active || (yield* this.#acquire(frame));
    if (ok) {
      ok = (yield* this.#run.meshAt(frame, this.#roi, mesh, tm)) >= MIN_FACE_FLAG;
      if (!ok && this.#active) {
        // Lost: one detection on this frame.
        this.reset();
        fresh = true;
        ok = (yield* this.#acquire(frame)) && (yield* this.#run.meshAt(frame, this.#roi, mesh, tm)) >= MIN_FACE_FLAG;
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
      if ((yield* this.#run.meshAt(frame, r, mesh, tm)) < MIN_FACE_FLAG) {
        this.reset();
        tm.totalMs = performance.now() - t0;
        return null;
      }
      n = this.#run.roiFromMesh(mesh, this.#next);
    }
    const out = this.#finish(frame, timestampMs);
    // The next frame's region, kept when the face barely moved (a still face gets the same crop).
    if (moved()) {
      r.cx = n.cx;
      r.cy = n.cy;
      r.side = n.side;
      r.angle = n.angle;
    }
    tm.totalMs = performance.now() - t0;
    return out;
  }

  /**
   * The faces of a still image, best first (BlazeFace; `fallback`'s boxes when BlazeFace finds none), each meshed
   * twice (the second time from the first mesh's region), at most `maxFaces` of them: the candidates looked at are
   * capped too (2 x maxFaces), so a picture of a crowd costs a bounded number of network runs. Allocates its results;
   * not for the per-frame path.
   */
  *analyzeImage(
    frame: ColorFrame,
    maxFaces = MAX_STILL_FACES,
    fallback: (() => FallbackFace[]) | null = null,
  ): MeshSteps<MeshFaceTrack[]> {
    if (!(Number.isInteger(maxFaces) && maxFaces >= 1))
      throw new TypeError('analyzeImage: maxFaces must be an integer >= 1');
    const run = this.#run;
    const rois: { roi: Roi; min: number; score: number }[] = (yield* run.detect(frame)).map((d) => ({
      roi: run.roiFromDetection(d, { cx: 0, cy: 0, side: 0, angle: 0 }),
      min: MIN_FACE_FLAG,
      score: d.score,
    }));
    if (rois.length === 0 && fallback) {
      for (const f of fallback())
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
      const t = newMeshTrack();
      if ((yield* run.meshAt(frame, roi, t.mesh)) < min) continue;
      run.roiFromMesh(t.mesh, roi);
      const flag = yield* run.meshAt(frame, roi, t.mesh);
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

  /**
   * BlazeFace on the whole frame: when no detection sits where the mesh is (by centre and size), the track restarts
   * from the best detection (or from scratch when there is none: the next track() detects again).
   */
  *#verify(frame: ColorFrame): MeshSteps<void> {
    const td = performance.now();
    const found = yield* this.#run.detect(frame);
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

  *#acquire(frame: ColorFrame): MeshSteps<boolean> {
    const td = performance.now();
    const found = yield* this.#run.detect(frame);
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
