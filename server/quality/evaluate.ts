/**
 * Offline quality evaluation of an engine on a driving clip, beside the frozen baseline (the unchanged portrait).
 *
 * Self-reenactment (`portrait: 'first-frame'`): the clip's first frame is the portrait; every later frame drives the
 * engine and is also the truth. Scores are taken on aligned 256×256 face crops: the FFHQ crop from the TRUE frame's
 * landmarks, the same crop cut from the output. l1 / ssim / psnr compare the crops; akd is the mean distance between
 * the output's landmarks and the truth's, over the truth's inter-ocular distance; pose_deg the mean |Δyaw|, |Δpitch|,
 * |Δroll| between output and truth.
 *
 * Cross-reenactment (a portrait and another person's clip): there is no true image, so l1 / ssim / psnr are null.
 * akd compares landmark MOTION: (output landmarks − output landmarks at the reference frame) / output inter-ocular
 * distance vs the same for the driver; pose_deg compares pose changes from the reference frame. The reference frame
 * is the first frame where both the driver and the output have a face.
 *
 * Landmarks come from one tracker per stream (truth/driver, model output, frozen output), fed the same timestamps,
 * so the model and the baseline are measured the same way; the scores use the raw (unsmoothed) landmarks and the
 * tracker's head pose.
 *
 * Frames where the tracker finds no face in the output are misses: counted, and left out of akd / pose_deg only.
 * Frames where the truth (or driver) has no face cannot be aligned or compared and are not scored; they are counted
 * too (`truth_misses`).
 *
 * Independent scores (id_sim, akd_mesh, aed_mesh, aed_mouth_mesh, blink_corr, gaze_corr, mouth_open_corr) come from
 * face models the engine never uses (faceModels.ts: MediaPipe FaceMesh with iris and the HSE FaceRes descriptor), run
 * in a worker pool while the engine renders the next frames; see `definitions` below and meshMetrics.ts. The eye and
 * mouth scores are also read from a second, different landmark network (face-api's 68-point net, on the FaceMesh face
 * box: blink_corr_68, mouth_open_corr_68, aed_mouth_68; landmarks68.ts), because the live engine itself tracks with
 * FaceMesh: where the two networks agree, a score is not the engine being graded on its own input. mouth_l1 / eyes_l1
 * are L1 on the mouth and eye regions of the aligned crop (regions from the truth's landmarks).
 *
 * Two more self-mode scores read the same aligned crops: `sharpness` (the output's Laplacian energy in the eye and mouth
 * boxes over the truth's: blur falls below 1) and `fpd`, the face-perceptual distance (channel-normalised activations
 * of four FaceRes layers, LPIPS-style; facePerceptual.ts, FaceRes as ONNX with the converter's taps), on the frames
 * that get descriptors.
 */
import path from 'node:path';
import type { AvatarEngine } from '../avatar/engineTypes.js';
import type { GrayImage, RgbImage } from '../types/image.js';
import { createGray, createI420, createRgb, i420ToRgb, resizeRgb, rgbToGray } from '../util/image.js';
import { probeVideo } from '../util/video.js';
import type { FaceTrack, HeadPose } from '../vision/types.js';
import { ffhqCrop, imageToCrop, warpCrop } from '../vision/faceCrop.js';
import { FACE_MODELS_LABEL, type FaceModelFace, type FaceModelPool } from './faceModels.js';
import type { FacePerceptual } from './facePerceptual.js';
import {
  eyeAspectRatio68,
  mouthMotion68,
  mouthOpenness68,
  mouthShapeDistance68,
  motionDistance2d,
  rigidRotation68,
} from './landmarks68.js';
import {
  alignedMeshDistance,
  cosineSimilarity,
  expressionMotion,
  eyeOpenness,
  irisPosition,
  irisPositionEyes,
  meanOrNull,
  MESH_LIPS,
  meshInterOcular,
  meshMotion2d,
  meshPointDistance,
  motionDistance3d,
  mouthOpennessMesh,
  pearson,
  percentile,
  eulerDeg,
  similarity3d,
} from './meshMetrics.js';
import { writeContactSheet, type SheetRow } from './sheet.js';
import {
  akd as akdOf,
  alignedPointDistance,
  faceRegionBoxes,
  angleDiff,
  interOcularDistance,
  l1 as l1Of,
  LANDMARK_REGIONS,
  type LandmarkRegion,
  Mean,
  meanPointDistance,
  poseDelta,
  poseErrorDeg,
  perceptualDistance,
  psnr as psnrOf,
  regionL1,
  relativeMotion,
  sharpnessRatio,
  ssim as ssimOf,
} from './metrics.js';
import { runOffline, type OfflineFrame } from './offline.js';
import { Progress, type ProgressStream } from './progress.js';

/** The face tracker as the evaluation uses it (server/vision/tracker.ts FaceTracker fits). */
export interface FaceAnalyzer {
  /** Tracks a face through a sequence (call in frame order). */
  track(gray: GrayImage, timestampMs: number): FaceTrack | null;
  close?(): void;
}

/** Per-frame PSNR is capped here before averaging (identical crops have infinite PSNR). */
export const PSNR_CAP_DB = 100;
/** Side of the aligned face crops. */
export const CROP_SIZE = 256;

/** Scores of one method (the model or the frozen baseline). null where a score does not apply or nothing was scored. */
export interface Scores {
  l1: number | null;
  ssim: number | null;
  psnr: number | null;
  akd: number | null;
  pose_deg: number | null;
  /** Scored frames where the tracker found no face in this method's output (left out of akd and pose_deg). */
  misses: number;
  /** akd per face region (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67), same normalisation. */
  akd_regions: Record<LandmarkRegion, number | null>;
  /**
   * Self mode: akd after the best similarity alignment of the output's landmarks onto the truth's (what is left is
   * expression error, not head position, size or roll). null in cross mode.
   */
  akd_aligned: number | null;
  /** pose_deg per axis: mean |Δyaw|, |Δpitch|, |Δroll| in degrees. */
  pose_axes_deg: { yaw: number | null; pitch: number | null; roll: number | null };
  /** Self: L1 on the mouth region of the aligned crop (region from the truth's landmarks). null in cross mode. */
  mouth_l1: number | null;
  /** Self: L1 on the two eye regions of the aligned crop. null in cross mode. */
  eyes_l1: number | null;
  /**
   * Self: face-perceptual distance of the output's aligned crop to the truth's (FaceRes activations at four depths,
   * channel-normalised, as LPIPS; lower is better), mean over the frames with descriptors. null in cross mode or
   * without the network.
   */
  fpd: number | null;
  /**
   * Self: Laplacian energy of the output's aligned crop in the eye and mouth boxes over the truth's (1: as sharp as the
   * truth; blur is below 1), mean over the scored frames. null in cross mode.
   */
  sharpness: number | null;
  /** Self: the same over the two eye boxes only. */
  sharpness_eyes: number | null;
  /** Self: the same over the mouth box only. */
  sharpness_mouth: number | null;
  /** Cosine similarity of face descriptors: self output vs truth, cross output vs the portrait. */
  id_sim: number | null;
  /** The 5th percentile of id_sim over the frames with descriptors: how far the worst frames fall (a melted face). */
  id_sim_p5: number | null;
  /**
   * Head pose error from FaceMesh's 3-D points (mean over roll, yaw and pitch, degrees): self, the rotation between the
   * output's and the truth's meshes; cross, the output's rotation from its first scored frame vs the driver's.
   */
  pose_err_deg: number | null;
  pose_err_axes_deg: { roll: number | null; yaw: number | null; pitch: number | null };
  /** Cross: cosine similarity of the output's descriptor to the DRIVER's (identity leakage; lower is better). null in self mode. */
  id_sim_driver: number | null;
  /** Independent landmark distance (FaceMesh): self output vs truth, cross motion agreement with the driver. */
  akd_mesh: number | null;
  /** Expression distance (FaceMesh, 3-D pose, position and scale removed). */
  aed_mesh: number | null;
  /** Correlation over time of eye openness, output vs driver/truth (null when either series is constant). */
  blink_corr: number | null;
  /** Correlation over time of the iris position in the eyes, output vs driver/truth. */
  gaze_corr: number | null;
  /**
   * gaze_corr per eye (each eye's iris against the same eye's, x and y, the four correlations averaged): crossed eyes
   * and a turned eye count, where the two eyes' mean hides them.
   */
  gaze_corr_eyes: number | null;
  /** Correlation over time of mouth openness (FaceMesh inner lips), output vs driver/truth. */
  mouth_open_corr: number | null;
  /** aed_mesh over the FaceMesh lip points only (mouth shape). */
  aed_mouth_mesh: number | null;
  /** blink_corr from the second landmark network (face-api 68 points). */
  blink_corr_68: number | null;
  /** mouth_open_corr from the second landmark network. */
  mouth_open_corr_68: number | null;
  /** Mouth shape distance from the second landmark network (2-D, rigid-point alignment). */
  aed_mouth_68: number | null;
  /** Scored frames where the independent face model found no face in this method's output. */
  mesh_misses: number;
}

export interface FrameScores {
  l1: number | null;
  ssim: number | null;
  psnr: number | null;
  akd: number | null;
  pose_deg: number | null;
  mouth_l1: number | null;
  eyes_l1: number | null;
  /** Only on the frames where descriptors were computed (every id_every-th scored frame). */
  fpd: number | null;
  sharpness: number | null;
  sharpness_eyes: number | null;
  sharpness_mouth: number | null;
  /** Only on the frames where descriptors were computed (every id_every-th scored frame). */
  id_sim: number | null;
  akd_mesh: number | null;
  aed_mesh: number | null;
  aed_mouth_mesh: number | null;
  aed_mouth_68: number | null;
  /** FaceMesh eye aspect ratio of this method's output, [image-right eye, image-left eye] (the blink_corr series). */
  eye_open?: [number, number];
  /** FaceMesh iris position in the eye, [along, across] (the gaze_corr series). */
  iris?: [number, number];
}

export interface PerFrame {
  /** Frame index in the clip. */
  index: number;
  /** Whether the truth (self) or driver (cross) frame had a face; frames without one are not scored. */
  truth_face: boolean;
  /** Mouth openness of the truth/driver frame (inner-lip gap / mouth width), when it had a face. */
  truth_mouth: number | null;
  /** The truth's (self) or driver's (cross) eye_open and iris series, as FrameScores has them for the outputs. */
  truth_eye_open?: [number, number];
  truth_iris?: [number, number];
  model: FrameScores | null;
  frozen: FrameScores | null;
}

export interface EvalReport {
  mode: 'self' | 'cross';
  engine: string;
  /** Refiner steps the engine was asked for (0 = warp only). */
  steps: number;
  /** Portrait file, or "first frame of <clip>" in self mode. */
  portrait: string;
  driving: string;
  /** Frames scored (rendered, with a face in the truth / driver frame). */
  frames: number;
  /** Frames rendered. */
  rendered: number;
  /** Rendered frames whose truth (self) or driver (cross) frame had no face: not scored. */
  truth_misses: number;
  model: Scores;
  frozen: Scores;
  /** The project's targets: akd(model) ≤ 0.6 × akd(frozen) and ssim(model) > ssim(frozen) (ssim only in self mode). */
  goal: { akd_ratio: number | null; akd_met: boolean | null; ssim_met: boolean | null };
  output: { width: number; height: number };
  /**
   * Rendered frames whose warp folded (a triangle of its node grid inside out, inside the paste mask) in the frame
   * that was rendered (`fold_frames`, 0 when the engine's fold check works) and frames the check had to take back
   * (`fold_fixed_frames`); 0 for engines without a warp.
   */
  fold_frames: number;
  fold_fixed_frames: number;
  /** The independent face models used for the mesh and identity scores (null: not run). */
  face_models: string | null;
  /** Descriptors (id_sim) are computed on every id_every-th scored frame. */
  id_every: number;
  /** How the scores are defined (so a JSON file explains itself). */
  definitions: Record<string, string>;
  timing: {
    prepare_ms: number;
    render_ms: { p50: number; p95: number; mean: number };
    /** Mean worker time per image of the independent face models (mesh + iris + 68 net, + descriptor on sampled frames). */
    face_models_ms_per_image: number | null;
    /** Of that, the 68-point landmark net's mean time per image. */
    landmarks68_ms_per_image: number | null;
    /** Mean time per crop of the fpd network (FaceRes with taps, onnxruntime, one thread); null when not run. */
    fpd_ms_per_image: number | null;
    total_s: number;
    eval_fps: number;
  };
  /** The contact sheet, when one was asked for. */
  sheet: { file: string; rows: number; every: number } | null;
  /** True when the run was stopped before the end of the clip. */
  stopped: boolean;
  per_frame?: PerFrame[];
}

export interface EvalOptions {
  /** Driving clip (absolute path). */
  driving: string;
  /** The portrait, or 'first-frame' for self-reenactment. */
  portrait: RgbImage | 'first-frame';
  /** Shown in the report. */
  portraitLabel: string;
  /**
   * Creates the engine under test and the frozen baseline engine for an output long side in pixels (self mode asks
   * for the clip's long side, so that output and truth have the same size).
   */
  createEngines: (outputSize: number | undefined) => Promise<{ model: AvatarEngine; frozen: AvatarEngine }>;
  /** Engine name for the report. */
  engineName: string;
  /** Refiner steps the model engine was created with (recorded in the report); default 0. */
  steps?: number;
  createAnalyzer: () => Promise<FaceAnalyzer>;
  /**
   * The independent face models (FaceMesh with iris, descriptors). null: the mesh and identity scores are null. The
   * caller owns the pool (one pool can serve many evaluations).
   */
  faceModels: FaceModelPool | null;
  /**
   * FaceRes with its tapped activations, for fpd (self mode, on the frames with descriptors). null or absent: fpd is
   * null. The caller owns it.
   */
  facePerceptual?: FacePerceptual | null;
  /** Compute descriptors (id_sim) and fpd on every N-th scored frame; default 5 (the descriptor is ~2/3 of the models' time). */
  idEvery?: number;
  /** Write a contact sheet (rows driver | frozen | output with the frame's scores) every `every` scored frames. */
  sheet?: { file: string; every?: number };
  /** Frames of the clip to skip first (in self mode the portrait is the frame after them). */
  startFrame?: number;
  /** Frames to use after startFrame (including the portrait frame in self mode). */
  maxFrames?: number;
  /** Keep per-frame scores in the report; default true. */
  perFrame?: boolean;
  progress?: ProgressStream;
  shouldStop?: () => boolean;
}

interface PoseAngles {
  yaw: number;
  pitch: number;
  roll: number;
}

interface Seen {
  lm: Float64Array;
  pose: PoseAngles;
  mouth: number;
}

/**
 * The landmarks the scores use: the predictor's raw per-frame output, so that temporal smoothing (which lags) does
 * not blur the comparison; the smoothed ones when a tracker does not provide raw points.
 */
function seen(t: FaceTrack | null | undefined): Seen | null {
  if (!t) return null;
  const src = t.rawLandmarks && t.rawLandmarks.length >= 136 ? t.rawLandmarks : t.landmarks;
  return { lm: Float64Array.from(src), pose: anglesOf(t.pose), mouth: t.mouth };
}

function anglesOf(p: HeadPose): PoseAngles {
  return { yaw: p.yaw, pitch: p.pitch, roll: p.roll };
}

/** Independent-model scores of one method, filled after the run (scoreMesh). */
interface MeshScores {
  id_sim: number | null;
  id_sim_p5: number | null;
  pose_err_deg: number | null;
  pose_err_axes_deg: { roll: number | null; yaw: number | null; pitch: number | null };
  id_sim_driver: number | null;
  akd_mesh: number | null;
  aed_mesh: number | null;
  blink_corr: number | null;
  gaze_corr: number | null;
  gaze_corr_eyes: number | null;
  mouth_open_corr: number | null;
  aed_mouth_mesh: number | null;
  blink_corr_68: number | null;
  mouth_open_corr_68: number | null;
  aed_mouth_68: number | null;
  mesh_misses: number;
}

const NO_MESH: MeshScores = {
  id_sim: null,
  id_sim_p5: null,
  pose_err_deg: null,
  pose_err_axes_deg: { roll: null, yaw: null, pitch: null },
  id_sim_driver: null,
  akd_mesh: null,
  aed_mesh: null,
  blink_corr: null,
  gaze_corr: null,
  gaze_corr_eyes: null,
  mouth_open_corr: null,
  aed_mouth_mesh: null,
  blink_corr_68: null,
  mouth_open_corr_68: null,
  aed_mouth_68: null,
  mesh_misses: 0,
};

class MethodAcc {
  l1 = new Mean();
  ssim = new Mean();
  psnr = new Mean();
  akd = new Mean();
  pose = new Mean();
  aligned = new Mean();
  mouthL1 = new Mean();
  eyesL1 = new Mean();
  fpd = new Mean();
  sharp = new Mean();
  sharpEyes = new Mean();
  sharpMouth = new Mean();
  axes = { yaw: new Mean(), pitch: new Mean(), roll: new Mean() };
  regions = Object.fromEntries(Object.keys(LANDMARK_REGIONS).map((k) => [k, new Mean()])) as Record<
    LandmarkRegion,
    Mean
  >;
  misses = 0;

  /** Adds a pose comparison (both poses absolute in self mode, changes from the reference in cross mode). */
  addPose(a: PoseAngles, b: PoseAngles): number {
    const e = poseErrorDeg(a, b);
    this.pose.add(e);
    this.axes.yaw.add(Math.abs(angleDiff(a.yaw, b.yaw)));
    this.axes.pitch.add(Math.abs(angleDiff(a.pitch, b.pitch)));
    this.axes.roll.add(Math.abs(angleDiff(a.roll, b.roll)));
    return e;
  }

  /** Adds the per-region distances between two landmark sets (or motions), divided by `norm`. */
  addRegions(a: ArrayLike<number>, b: ArrayLike<number>, norm: number): void {
    for (const [k, [from, to]] of Object.entries(LANDMARK_REGIONS) as [LandmarkRegion, readonly [number, number]][]) {
      this.regions[k].add(meanPointDistance(a, b, from, to) / norm);
    }
  }

  scores(images: boolean, mesh: MeshScores): Scores {
    return {
      l1: images ? r6(this.l1.value) : null,
      ssim: images ? r6(this.ssim.value) : null,
      psnr: images ? r6(this.psnr.value, 4) : null,
      akd: r6(this.akd.value),
      pose_deg: r6(this.pose.value, 4),
      misses: this.misses,
      akd_aligned: r6(this.aligned.value),
      pose_axes_deg: {
        yaw: r6(this.axes.yaw.value, 4),
        pitch: r6(this.axes.pitch.value, 4),
        roll: r6(this.axes.roll.value, 4),
      },
      akd_regions: Object.fromEntries(Object.entries(this.regions).map(([k, m]) => [k, r6(m.value)])) as Record<
        LandmarkRegion,
        number | null
      >,
      mouth_l1: images ? r6(this.mouthL1.value) : null,
      eyes_l1: images ? r6(this.eyesL1.value) : null,
      fpd: images ? r6(this.fpd.value) : null,
      sharpness: images ? r6(this.sharp.value, 4) : null,
      sharpness_eyes: images ? r6(this.sharpEyes.value, 4) : null,
      sharpness_mouth: images ? r6(this.sharpMouth.value, 4) : null,
      id_sim: r6(mesh.id_sim),
      id_sim_p5: r6(mesh.id_sim_p5),
      pose_err_deg: r6(mesh.pose_err_deg, 4),
      pose_err_axes_deg: {
        roll: r6(mesh.pose_err_axes_deg.roll, 4),
        yaw: r6(mesh.pose_err_axes_deg.yaw, 4),
        pitch: r6(mesh.pose_err_axes_deg.pitch, 4),
      },
      id_sim_driver: r6(mesh.id_sim_driver),
      akd_mesh: r6(mesh.akd_mesh),
      aed_mesh: r6(mesh.aed_mesh),
      blink_corr: r6(mesh.blink_corr, 4),
      gaze_corr: r6(mesh.gaze_corr, 4),
      gaze_corr_eyes: r6(mesh.gaze_corr_eyes, 4),
      mouth_open_corr: r6(mesh.mouth_open_corr, 4),
      aed_mouth_mesh: r6(mesh.aed_mouth_mesh),
      blink_corr_68: r6(mesh.blink_corr_68, 4),
      mouth_open_corr_68: r6(mesh.mouth_open_corr_68, 4),
      aed_mouth_68: r6(mesh.aed_mouth_68),
      mesh_misses: mesh.mesh_misses,
    };
  }
}

function r6(v: number | null, d = 6): number | null {
  return v === null ? null : Number(v.toFixed(d));
}

function summarizeMs(samples: number[]): { p50: number; p95: number; mean: number } {
  if (!samples.length) return { p50: 0, p95: 0, mean: 0 };
  const s = [...samples].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
  const r = (v: number): number => Math.round(v * 1000) / 1000;
  return { p50: r(q(50)), p95: r(q(95)), mean: r(s.reduce((a, b) => a + b, 0) / s.length) };
}

/** How each score of the report is defined (the report carries them as `definitions`). */
export const EVAL_DEFINITIONS: Readonly<Record<string, string>> = {
  crop: `FFHQ alignment (eye centres + mouth corners) from the true frame's 68 landmarks, ${CROP_SIZE}x${CROP_SIZE}; the same crop is cut from the output`,
  l1: 'mean |a-b| / 255 over the RGB crop',
  ssim: 'Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, valid region, per RGB channel then averaged',
  psnr: `dB, peak 255, over the RGB crop, per frame capped at ${PSNR_CAP_DB} dB then averaged`,
  akd_aligned:
    'self: akd after a least-squares similarity alignment of the output landmarks onto the truth (expression error without head position, size and roll)',
  akd: 'self: mean landmark distance output vs truth / truth inter-ocular distance (eye centres); cross: mean distance between the output and driver landmark motions relative to the reference frame, each / its own inter-ocular distance',
  pose_deg:
    'self: mean of |dyaw|, |dpitch|, |droll| output vs truth; cross: the same between pose changes from the reference frame',
  frozen:
    'the baseline whose output is the unchanged portrait (the portrait engine at the same output size), measured like the model (its own tracker, every frame)',
  landmarks:
    "dlib 68 points from one FaceTracker per stream (truth/driver, model, frozen), raw per-frame points; pose is the tracker's",
  misses: 'scored frames where the tracker found no face in that output (left out of akd and pose_deg)',
  mouth_l1:
    'self: mean |a-b| / 255 over the mouth region of the aligned crop: the box of the truth landmarks 48-67 in the crop, padded by 25% of the mouth width on every side; null in cross mode',
  eyes_l1:
    'self: the same over the union of the two eye boxes (truth landmarks 36-41 and 42-47, each padded by 30% of that eye width); null in cross mode',
  fpd: "self: face-perceptual distance of the output's aligned crop to the truth's (lower is better): both crops resized to 224x224 (0..255) and run through HSE FaceRes (the id_sim network, as ONNX from the project's converter) with four intermediate activations tapped (MobileNet blocks conv_pw_1, 3, 5 and 11 after their ReLU6: 112x112x64, 56x56x128, 28x28x256, 14x14x512; models/face/sources.json `taps`); per tap, each spatial position's channel vector scaled to unit length (x / (|x| + 1e-10)), the squared distance between the two unit vectors summed over the channels and averaged over the positions (LPIPS with unit weights; 0..2 per tap), the taps averaged; mean over every id_every-th scored frame. 0 for identical crops; null in cross mode or without the network",
  sharpness:
    "self: Laplacian energy (variance of the 3x3 Laplacian [0 1 0; 1 -4 1; 0 1 0] of the grey crop, mean of R, G, B) of the output's aligned crop over the union of the eye and mouth boxes (those of eyes_l1 and mouth_l1), divided by the truth's over the same boxes; mean over the scored frames. 1: as sharp as the truth; below 1: blurred; above 1: more detail or noise than the truth; null in cross mode",
  sharpness_eyes: 'self: sharpness over the two eye boxes only',
  sharpness_mouth: 'self: sharpness over the mouth box only',
  face_models: `independent of the engine: ${FACE_MODELS_LABEL}; one analysis per image (no caching between frames), the most confident face`,
  id_sim:
    'cosine similarity of HSE FaceRes descriptors (1024-d). self: output vs truth frame; cross: output vs the portrait image. Mean over every id_every-th scored frame where both have a face. Reference values with these models: same image re-encoded ~1.0, different people ~0.3-0.45',
  id_sim_driver:
    "cross: cosine similarity of the output's descriptor to the driver frame's (how much of the driver's identity leaks into the avatar; lower is better); null in self mode",
  akd_mesh:
    "FaceMesh face points (468, iris excluded), 2-D. self: mean distance output vs truth / truth inter-ocular distance (mesh eye-corner midpoints); cross: mean distance between the output's and the driver's point motions from the reference frame (the first scored frame where both have a mesh), each / its own reference inter-ocular distance",
  aed_mesh:
    "expression distance, FaceMesh 468 points in 3-D with head rotation (yaw, pitch, roll), position and scale removed by a least-squares similarity alignment (Horn). self: output aligned onto the truth, mean 3-D distance / truth 3-D inter-ocular distance; cross: each stream's frame aligned onto its own reference frame, motion / reference 3-D inter-ocular distance, the output's motion rotated into the driver's reference frame, mean distance between the two motions",
  blink_corr:
    'Pearson correlation over the scored frames of the six-point eye aspect ratio (FaceMesh 33-160-158-133-153-144 and 362-385-387-263-373-380), output vs truth (self) or driver (cross), per eye, averaged over the two eyes; null when a series is constant (the frozen portrait never blinks)',
  gaze_corr:
    'Pearson correlation over the scored frames of the iris centre position in the eye (along and across the corner-to-corner axis, in eye widths, both eyes averaged), output vs truth/driver, the x and y correlations averaged; null when constant',
  gaze_corr_eyes:
    "as gaze_corr, per eye: each eye's iris position against the same eye's in the truth/driver (x and y), the four correlations averaged (crossed eyes or one turned eye count; the two eyes' mean hides them); null when constant",
  mouth_open_corr:
    'Pearson correlation over the scored frames of the FaceMesh mouth openness (mean inner-lip gap 82-87, 13-14, 312-317 over the mouth width 61-291, image plane), output vs truth (self) or driver (cross); null when a series is constant',
  aed_mouth_mesh:
    'aed_mesh with the mean taken over the 40 FaceMesh lip points only (the same alignment, fitted on all 468 points): mouth shape and opening',
  landmarks_68:
    "a second landmark network, different from FaceMesh (which the live engine itself tracks with): @vladmandic/face-api 1.7.15's 68-point net (face-api.js FaceLandmark68Net, iBUG 68 points), run in the same workers on the same image as FaceMesh, on a box from the FaceMesh face points (1.1x their width, centred; from 10% of their height above them down to their lowest point), padded to a square with black and resized to 112x112 as face-api does. Its scores use the same frames as the mesh scores",
  blink_corr_68:
    "as blink_corr, with the six-point eye aspect ratio of the 68 net's eyes (36-37-38-39-40-41 and 42-43-44-45-46-47), output vs truth/driver, per eye, averaged over the two eyes; null when a series is constant",
  mouth_open_corr_68:
    "as mouth_open_corr, with the 68 net's mouth openness (mean inner-lip gap 61-67, 62-66, 63-65 over the mouth width 48-54)",
  aed_mouth_68:
    "mouth shape distance from the 68 net, 2-D, with head position, size and roll removed by a least-squares similarity fitted on the nose (27-35) and eye corners (36, 39, 42, 45). self: the output's points aligned onto the truth's, mean distance over the 20 lip points 48-67 / truth inter-ocular distance (eye centres); cross: each stream's frame aligned onto its own reference frame (the first scored frame where both have 68 points), lip motion / reference inter-ocular distance, the output's motion rotated into the driver's reference frame, mean distance between the two motions",
  mesh_misses:
    'scored frames where the face model found no face in that output (left out of the mesh, 68-point and identity scores)',
  steps: 'refiner steps the engine was asked for (0 = warp only)',
  fold_frames:
    "rendered frames whose warp folded in the frame that was shown: a triangle of the warp's node grid (128 x 128 over the paste region) with a Jacobian determinant <= 0 inside the paste mask (the engine checks every frame and takes a folding warp back towards the portrait at rest, so this should be 0); 0 for engines without a warp",
  id_sim_p5:
    'the 5th percentile (nearest rank) of id_sim over the frames with descriptors (every id_every-th scored frame; use --id-every 1 or 2 for this score): how far the worst frames fall from the identity (a melted or folded face drops it far below the mean)',
  pose_err_deg:
    "head pose error from the independent FaceMesh's 3-D points, mean of the roll, yaw and pitch errors (degrees; per axis in pose_err_axes_deg), each angle from the 3-D similarity (Horn) between two meshes, R = Rz(roll) Ry(yaw) Rx(pitch): self, the rotation that takes the output's mesh onto the truth's (0 when the poses agree); cross, the output's rotation from its first scored frame against the driver's rotation from its first scored frame",
  fold_fixed_frames: 'rendered frames whose warp folded at first and which the engine took back before rendering',
};

interface MeshFrame {
  index: number;
  truth: FaceModelFace | null;
  model: FaceModelFace | null;
}

/** Two eyes' (or x and y) series of the output and of the truth/driver, for the correlations. */
interface Pair2 {
  out: [number[], number[]];
  ref: [number[], number[]];
}
/** One series of the output and of the truth/driver. */
interface Pair1 {
  out: number[];
  ref: number[];
}

interface Acc {
  poseErr: { roll: number[]; yaw: number[]; pitch: number[] };
  idSim: number[];
  idDriver: number[];
  akdMesh: number[];
  aedMesh: number[];
  aedMouthMesh: number[];
  aedMouth68: number[];
  eyes: Pair2;
  gaze: Pair2;
  gazeEyes: [Pair2, Pair2];
  mouth: Pair1;
  eyes68: Pair2;
  mouth68: Pair1;
  misses: number;
}

const pair2 = (): Pair2 => ({ out: [[], []], ref: [[], []] });
const corr2 = (p: Pair2): number | null => meanOrNull([pearson(p.out[0], p.ref[0]), pearson(p.out[1], p.ref[1])]);

/**
 * The independent-model scores of one method over the scored frames (see `definitions`). `outOf(frame)` is that
 * method's mesh for the frame; `identityRef` is the descriptor its id_sim is measured against in cross mode (the
 * portrait's). Fills `perFrame(index)` with the per-frame values.
 */
function scoreMesh(
  frames: MeshFrame[],
  selfMode: boolean,
  outOf: (f: MeshFrame) => FaceModelFace | null,
  identityRef: FaceModelFace | null,
  perFrame: (index: number) => FrameScores | null,
  truthEntry?: (index: number) => PerFrame | undefined,
): MeshScores {
  const acc: Acc = {
    poseErr: { roll: [], yaw: [], pitch: [] },
    idSim: [],
    idDriver: [],
    akdMesh: [],
    aedMesh: [],
    aedMouthMesh: [],
    aedMouth68: [],
    eyes: pair2(),
    gaze: pair2(),
    gazeEyes: [pair2(), pair2()],
    mouth: { out: [], ref: [] },
    eyes68: pair2(),
    mouth68: { out: [], ref: [] },
    misses: 0,
  };
  let ref: { truth: FaceModelFace; out: FaceModelFace; rot: Float64Array } | null = null;
  // Cross mode, 68 points: the first frame where both streams have them, and the roll from the output's onto the driver's.
  let ref68: { truth: Float32Array; out: Float32Array; rot: number } | null = null;
  for (const f of frames) {
    if (!f.truth) continue;
    const out = outOf(f);
    if (!out) {
      acc.misses++;
      continue;
    }
    const pf = perFrame(f.index);
    const t = f.truth;
    // Identity, on the sampled frames (those where the truth/driver frame got a descriptor; the frozen output's one
    // descriptor serves all of them).
    if (out.descriptor && t.descriptor) {
      const against = selfMode ? t.descriptor : identityRef?.descriptor;
      if (against) {
        const v = cosineSimilarity(out.descriptor, against);
        acc.idSim.push(v);
        if (pf) pf.id_sim = r6(v);
      }
      if (!selfMode) acc.idDriver.push(cosineSimilarity(out.descriptor, t.descriptor));
    }
    // Landmarks and expression.
    let akdV: number;
    let aedV: number;
    let aedMouthV: number;
    if (selfMode) {
      akdV = meshPointDistance(out.mesh, t.mesh, meshInterOcular(t.mesh));
      aedV = alignedMeshDistance(out.mesh, t.mesh);
      aedMouthV = alignedMeshDistance(out.mesh, t.mesh, MESH_LIPS);
    } else {
      ref ??= { truth: t, out, rot: similarity3d(out.mesh, t.mesh).r };
      const dm = meshMotion2d(t.mesh, ref.truth.mesh);
      const om = meshMotion2d(out.mesh, ref.out.mesh);
      let s = 0;
      for (let i = 0; i < dm.length; i += 2) s += Math.hypot(om[i]! - dm[i]!, om[i + 1]! - dm[i + 1]!);
      akdV = s / (dm.length / 2);
      const oe = expressionMotion(out.mesh, ref.out.mesh, ref.rot);
      const de = expressionMotion(t.mesh, ref.truth.mesh);
      aedV = motionDistance3d(oe, de);
      aedMouthV = motionDistance3d(oe, de, MESH_LIPS);
    }
    // Head pose: self, the output's mesh rotated onto the truth's; cross, each stream's rotation from its first frame.
    const rot = selfMode ? similarity3d(out.mesh, t.mesh).r : null;
    const eo3 = rot ? eulerDeg(rot) : eulerDeg(similarity3d(ref!.out.mesh, out.mesh).r);
    const et3 = rot ? { roll: 0, yaw: 0, pitch: 0 } : eulerDeg(similarity3d(ref!.truth.mesh, t.mesh).r);
    acc.poseErr.roll.push(Math.abs(eo3.roll - et3.roll));
    acc.poseErr.yaw.push(Math.abs(eo3.yaw - et3.yaw));
    acc.poseErr.pitch.push(Math.abs(eo3.pitch - et3.pitch));
    acc.akdMesh.push(akdV);
    acc.aedMesh.push(aedV);
    acc.aedMouthMesh.push(aedMouthV);
    if (pf) {
      pf.akd_mesh = r6(akdV);
      pf.aed_mesh = r6(aedV);
      pf.aed_mouth_mesh = r6(aedMouthV);
    }
    // Time series for the correlations.
    const eo = eyeOpenness(out.mesh);
    const et = eyeOpenness(t.mesh);
    acc.eyes.out[0].push(eo.right);
    acc.eyes.out[1].push(eo.left);
    acc.eyes.ref[0].push(et.right);
    acc.eyes.ref[1].push(et.left);
    const go = irisPosition(out.mesh);
    const gt = irisPosition(t.mesh);
    acc.gaze.out[0].push(go.x);
    acc.gaze.out[1].push(go.y);
    acc.gaze.ref[0].push(gt.x);
    acc.gaze.ref[1].push(gt.y);
    const goE = irisPositionEyes(out.mesh);
    const gtE = irisPositionEyes(t.mesh);
    for (let e = 0; e < 2; e++) {
      const o = goE[e];
      const r = gtE[e];
      if (!o || !r) continue;
      acc.gazeEyes[e]!.out[0].push(o.x);
      acc.gazeEyes[e]!.out[1].push(o.y);
      acc.gazeEyes[e]!.ref[0].push(r.x);
      acc.gazeEyes[e]!.ref[1].push(r.y);
    }
    if (pf) {
      pf.eye_open = [r6(eo.right, 4)!, r6(eo.left, 4)!];
      pf.iris = [r6(go.x, 4)!, r6(go.y, 4)!];
    }
    const te = truthEntry?.(f.index);
    if (te) {
      te.truth_eye_open = [r6(et.right, 4)!, r6(et.left, 4)!];
      te.truth_iris = [r6(gt.x, 4)!, r6(gt.y, 4)!];
    }
    acc.mouth.out.push(mouthOpennessMesh(out.mesh));
    acc.mouth.ref.push(mouthOpennessMesh(t.mesh));
    // The same eye and mouth measures from the second landmark network.
    const o68 = out.landmarks68;
    const t68 = t.landmarks68;
    if (o68 && t68) {
      const ea = eyeAspectRatio68(o68);
      const eb = eyeAspectRatio68(t68);
      acc.eyes68.out[0].push(ea.right);
      acc.eyes68.out[1].push(ea.left);
      acc.eyes68.ref[0].push(eb.right);
      acc.eyes68.ref[1].push(eb.left);
      acc.mouth68.out.push(mouthOpenness68(o68));
      acc.mouth68.ref.push(mouthOpenness68(t68));
      let v: number;
      if (selfMode) v = mouthShapeDistance68(o68, t68);
      else {
        ref68 ??= { truth: t68, out: o68, rot: rigidRotation68(o68, t68) };
        v = motionDistance2d(mouthMotion68(o68, ref68.out, ref68.rot), mouthMotion68(t68, ref68.truth));
      }
      acc.aedMouth68.push(v);
      if (pf) pf.aed_mouth_68 = r6(v);
    }
  }
  const mean = (v: number[]): number | null => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : null);
  const pr = mean(acc.poseErr.roll);
  const py = mean(acc.poseErr.yaw);
  const pp = mean(acc.poseErr.pitch);
  return {
    id_sim: mean(acc.idSim),
    id_sim_p5: percentile(acc.idSim, 5),
    pose_err_deg: pr === null || py === null || pp === null ? null : (pr + py + pp) / 3,
    pose_err_axes_deg: { roll: pr, yaw: py, pitch: pp },
    id_sim_driver: selfMode ? null : mean(acc.idDriver),
    akd_mesh: mean(acc.akdMesh),
    aed_mesh: mean(acc.aedMesh),
    blink_corr: corr2(acc.eyes),
    gaze_corr: corr2(acc.gaze),
    gaze_corr_eyes: meanOrNull([corr2(acc.gazeEyes[0]), corr2(acc.gazeEyes[1])]),
    mouth_open_corr: pearson(acc.mouth.out, acc.mouth.ref),
    aed_mouth_mesh: mean(acc.aedMouthMesh),
    blink_corr_68: corr2(acc.eyes68),
    mouth_open_corr_68: pearson(acc.mouth68.out, acc.mouth68.ref),
    aed_mouth_68: mean(acc.aedMouth68),
    mesh_misses: acc.misses,
  };
}

/** A copy of an image (the evaluation's buffers are reused between frames). */
function copyRgb(img: RgbImage): RgbImage {
  return { width: img.width, height: img.height, data: img.data.slice() };
}

interface SheetCapture {
  index: number;
  tiles: (RgbImage | null)[];
}

/** Runs the evaluation. */
export async function evaluate(opts: EvalOptions): Promise<EvalReport> {
  const selfMode = opts.portrait === 'first-frame';
  const keepPerFrame = opts.perFrame ?? true;
  const idEvery = opts.idEvery ?? 5;
  if (!Number.isInteger(idEvery) || idEvery < 1) throw new TypeError('idEvery must be a positive integer');
  const pool = opts.faceModels;
  const perceptual = opts.facePerceptual ?? null;
  const truthTracker = await opts.createAnalyzer();
  const outTracker = await opts.createAnalyzer();
  // The frozen output is measured exactly like the model's: its own tracker, every frame.
  const frozenTracker = await opts.createAnalyzer();
  let engines: { model: AvatarEngine; frozen: AvatarEngine } | undefined;
  const model = new MethodAcc();
  const frozen = new MethodAcc();
  // Every rendered frame's entry (also when perFrame is off: the sheet's labels and the mesh scores read them).
  const perFrame: PerFrame[] = [];
  const entryOf = new Map<number, PerFrame>();
  let truthMisses = 0;
  let scored = 0;

  // Filled in onPrepared.
  let frozenRgb: RgbImage | undefined;
  let frozenGray: GrayImage | undefined;
  let frozenFace: FaceModelFace | null = null;
  let portraitFace: FaceModelFace | null = null;
  let sheetEvery = opts.sheet?.every ?? 0;
  let progress: Progress | undefined;
  let resized: RgbImage | undefined;
  let outGray: GrayImage | undefined;
  let truthGray: GrayImage | undefined;
  const crops = {
    truth: createRgb(CROP_SIZE, CROP_SIZE),
    model: createRgb(CROP_SIZE, CROP_SIZE),
    frozen: createRgb(CROP_SIZE, CROP_SIZE),
  };
  // Cross mode: landmarks are kept per frame and compared after the run (the reference frame is chosen then).
  const cross: CrossFrame[] = [];
  // Cross mode: frames with a driver face so far (the sampling index of descriptors and sheet rows).
  let crossScored = 0;
  // Independent face-model jobs run in the pool while the engine renders the next frames.
  const meshFrames: MeshFrame[] = [];
  const inflight: Promise<void>[] = [];
  let meshError: Error | null = null;
  // A closure, so that TypeScript does not narrow meshError to null across the awaits that set it.
  const checkMesh = (): void => {
    if (meshError) throw meshError;
  };
  const sheetRows: SheetCapture[] = [];
  let frozenCrop: ReturnType<typeof ffhqCrop> | null = null;

  const record = (entry: PerFrame): void => {
    perFrame.push(entry);
    entryOf.set(entry.index, entry);
  };

  const submitMesh = async (index: number, truthImg: RgbImage, outImg: RgbImage, scoredIdx: number): Promise<void> => {
    if (!pool) return;
    const descriptor = scoredIdx % idEvery === 0;
    // analyze() copies the images before it returns: the caller's buffers may be reused at once.
    const job = Promise.all([pool.analyze(truthImg, { descriptor }), pool.analyze(outImg, { descriptor })]).then(
      ([truth, m]) => {
        meshFrames.push({ index, truth, model: m });
      },
      (err: unknown) => {
        meshError ??= err instanceof Error ? err : new Error(String(err));
      },
    );
    inflight.push(job);
    // Bounded: at most a few jobs per worker wait, so frames are not piled up in memory.
    if (inflight.length >= 3 * pool.size) await inflight.shift();
    checkMesh();
  };

  const t0 = performance.now();
  try {
    const info = await probeVideo(opts.driving);
    const outputSize = selfMode
      ? Math.max(info.width, info.height) + (Math.max(info.width, info.height) % 2)
      : undefined;
    engines = await opts.createEngines(outputSize);
    const eng = engines;

    const scoreSelf = (
      f: OfflineFrame,
      output: RgbImage,
      truth: Seen | null,
      out: Seen | null,
      frozenSeen: Seen | null,
      scoredIdx: number,
    ): boolean => {
      if (!truth) {
        truthMisses++;
        record({ index: f.index, truth_face: false, truth_mouth: null, model: null, frozen: null });
        return false;
      }
      scored++;
      const crop = ffhqCrop(truth.lm, CROP_SIZE);
      warpCrop(f.driving, crop, crops.truth);
      const regions = faceRegionBoxes(imageToCrop(crop, truth.lm), CROP_SIZE);
      const eyesMouth = [...regions.eyes, ...regions.mouth];
      // fpd on the frames that get descriptors: the truth's activations serve both methods.
      const truthFeatures = perceptual && scoredIdx % idEvery === 0 ? perceptual.features(crops.truth) : null;
      const fpdOf = (c: RgbImage): number | null =>
        perceptual && truthFeatures ? perceptualDistance(perceptual.features(c), truthFeatures) : null;
      const one = (acc: MethodAcc, img: RgbImage, cropBuf: RgbImage, face: Seen | null): FrameScores => {
        warpCrop(img, crop, cropBuf);
        const s: FrameScores = {
          l1: l1Of(cropBuf, crops.truth),
          ssim: ssimOf(cropBuf, crops.truth),
          psnr: Math.min(PSNR_CAP_DB, psnrOf(cropBuf, crops.truth)),
          akd: face ? akdOf(face.lm, truth.lm) : null,
          pose_deg: face ? poseErrorDeg(face.pose, truth.pose) : null,
          mouth_l1: regionL1(cropBuf, crops.truth, regions.mouth),
          eyes_l1: regionL1(cropBuf, crops.truth, regions.eyes),
          fpd: fpdOf(cropBuf),
          sharpness: sharpnessRatio(cropBuf, crops.truth, eyesMouth),
          sharpness_eyes: sharpnessRatio(cropBuf, crops.truth, regions.eyes),
          sharpness_mouth: sharpnessRatio(cropBuf, crops.truth, regions.mouth),
          id_sim: null,
          akd_mesh: null,
          aed_mesh: null,
          aed_mouth_mesh: null,
          aed_mouth_68: null,
        };
        acc.l1.add(s.l1!);
        acc.ssim.add(s.ssim!);
        acc.psnr.add(s.psnr!);
        if (s.mouth_l1 !== null) acc.mouthL1.add(s.mouth_l1);
        if (s.eyes_l1 !== null) acc.eyesL1.add(s.eyes_l1);
        if (s.fpd !== null) acc.fpd.add(s.fpd);
        if (s.sharpness !== null) acc.sharp.add(s.sharpness);
        if (s.sharpness_eyes !== null) acc.sharpEyes.add(s.sharpness_eyes);
        if (s.sharpness_mouth !== null) acc.sharpMouth.add(s.sharpness_mouth);
        if (s.akd === null) acc.misses++;
        else {
          acc.akd.add(s.akd);
          acc.addPose(face!.pose, truth.pose);
          const iod = interOcularDistance(truth.lm);
          acc.addRegions(face!.lm, truth.lm, iod);
          acc.aligned.add(alignedPointDistance(face!.lm, truth.lm) / iod);
        }
        return s;
      };
      const m = one(model, output, crops.model, out);
      const z = one(frozen, frozenRgb!, crops.frozen, frozenSeen);
      record({
        index: f.index,
        truth_face: true,
        truth_mouth: round(truth.mouth),
        model: roundScores(m),
        frozen: roundScores(z),
      });
      return true;
    };

    const result = await runOffline({
      engine: eng.model,
      driving: opts.driving,
      portrait: opts.portrait,
      startFrame: opts.startFrame,
      maxFrames: opts.maxFrames,
      shouldStop: opts.shouldStop,
      onPrepared: async ({ portrait, prepared, frames }) => {
        // The frozen output: the unchanged portrait through the same output path (I420 at the same size).
        const fp = await eng.frozen.prepare(portrait);
        const fOut = createI420(fp.width, fp.height);
        // The driving frame is ignored by the frozen engine; any valid frame will do.
        eng.frozen.render(createI420(2, 2), fOut, 0);
        let img = i420ToRgb(fOut);
        if (selfMode && (img.width !== info.width || img.height !== info.height))
          img = resizeRgb(img, info.width, info.height);
        else if (!selfMode && (img.width !== prepared.width || img.height !== prepared.height))
          img = resizeRgb(img, prepared.width, prepared.height);
        frozenRgb = img;
        frozenGray = rgbToGray(img);
        if (pool) {
          // The frozen output never changes: one analysis serves every frame. In cross mode id_sim is measured
          // against the portrait as the user gave it.
          frozenFace = await pool.analyze(img, { descriptor: true });
          if (!selfMode) portraitFace = await pool.analyze(portrait, { descriptor: true });
        }
        if (opts.sheet && !sheetEvery) sheetEvery = Math.max(1, Math.ceil(frames / 8));
        if (opts.progress) progress = new Progress({ label: 'eval', total: frames, stream: opts.progress });
      },
      onFrame: async (f) => {
        let output = f.output;
        if (selfMode && (output.width !== f.driving.width || output.height !== f.driving.height)) {
          resized ??= createRgb(f.driving.width, f.driving.height);
          output = resizeRgb(output, f.driving.width, f.driving.height, resized);
        }
        truthGray ??= createGray(f.driving.width, f.driving.height);
        outGray ??= createGray(output.width, output.height);
        const truth = seen(truthTracker.track(rgbToGray(f.driving, truthGray), f.timestampMs));
        const out = seen(outTracker.track(rgbToGray(output, outGray), f.timestampMs));
        const still = seen(frozenTracker.track(frozenGray!, f.timestampMs));
        const scoredIdx = selfMode ? scored : crossScored;
        let isScored: boolean;
        if (selfMode) isScored = scoreSelf(f, output, truth, out, still, scoredIdx);
        else {
          cross.push({ index: f.index, driver: truth, model: out, frozen: still });
          isScored = truth !== null;
          if (isScored) crossScored++;
        }
        if (isScored && opts.sheet && scoredIdx % sheetEvery === 0) {
          if (selfMode)
            sheetRows.push({
              index: f.index,
              tiles: [copyRgb(crops.truth), copyRgb(crops.frozen), copyRgb(crops.model)],
            });
          else {
            // Cross: the driver in its own crop; the frozen and model outputs in the portrait's crop (a fixed
            // viewport, so the head's motion shows).
            frozenCrop ??= still ? ffhqCrop(still.lm, CROP_SIZE) : null;
            const cut = (img: RgbImage, crop: ReturnType<typeof ffhqCrop> | null): RgbImage =>
              crop ? warpCrop(img, crop) : copyRgb(img);
            sheetRows.push({
              index: f.index,
              tiles: [
                cut(f.driving, ffhqCrop(truth!.lm, CROP_SIZE)),
                cut(frozenRgb!, frozenCrop),
                cut(output, frozenCrop),
              ],
            });
          }
        }
        if (isScored) await submitMesh(f.index, f.driving, output, scoredIdx);
        progress?.tick();
      },
    });
    await Promise.all(inflight);
    checkMesh();
    progress?.finish();

    if (!selfMode) {
      const r = scoreCross(cross, model, frozen, record);
      truthMisses = r.truthMisses;
      scored = r.scored;
    }

    // Independent-model scores over the scored frames, in frame order.
    meshFrames.sort((a, b) => a.index - b.index);
    const pf =
      (which: 'model' | 'frozen') =>
      (index: number): FrameScores | null =>
        entryOf.get(index)?.[which] ?? null;
    const meshModel = pool
      ? scoreMesh(
          meshFrames,
          selfMode,
          (f) => f.model,
          portraitFace,
          pf('model'),
          (i) => entryOf.get(i),
        )
      : NO_MESH;
    const meshFrozen = pool ? scoreMesh(meshFrames, selfMode, () => frozenFace, portraitFace, pf('frozen')) : NO_MESH;

    let sheet: EvalReport['sheet'] = null;
    const mScores = model.scores(selfMode, meshModel);
    const fScores = frozen.scores(selfMode, meshFrozen);
    if (opts.sheet) {
      await writeContactSheet(opts.sheet.file, {
        title: sheetTitle(opts, selfMode, mScores, fScores),
        columns: [selfMode ? 'truth' : 'driver', 'frozen', `${opts.engineName} k=${opts.steps ?? 0}`],
        rows: sheetRows.map((row): SheetRow => ({
          tiles: row.tiles,
          label: frameLabel(entryOf.get(row.index), selfMode),
        })),
      });
      sheet = { file: opts.sheet.file, rows: sheetRows.length, every: sheetEvery };
    }

    const totalS = (performance.now() - t0) / 1000;
    const ratio = mScores.akd !== null && fScores.akd !== null && fScores.akd > 0 ? mScores.akd / fScores.akd : null;
    const report: EvalReport = {
      mode: selfMode ? 'self' : 'cross',
      engine: opts.engineName,
      steps: opts.steps ?? 0,
      portrait: opts.portraitLabel,
      driving: opts.driving,
      frames: scored,
      rendered: result.frames,
      truth_misses: truthMisses,
      model: mScores,
      frozen: fScores,
      goal: {
        akd_ratio: ratio === null ? null : round(ratio),
        akd_met: ratio === null ? null : ratio <= 0.6,
        ssim_met: mScores.ssim === null || fScores.ssim === null ? null : mScores.ssim > fScores.ssim,
      },
      output: { width: result.prepared.width, height: result.prepared.height },
      fold_frames: result.foldFrames,
      fold_fixed_frames: result.foldFixedFrames,
      face_models: pool ? FACE_MODELS_LABEL : null,
      id_every: idEvery,
      definitions: { ...EVAL_DEFINITIONS },
      timing: {
        prepare_ms: Math.round(result.prepareMs),
        render_ms: summarizeMs(result.renderMs),
        face_models_ms_per_image: pool ? Math.round(pool.stats.meanMs * 10) / 10 : null,
        landmarks68_ms_per_image: pool ? Math.round(pool.stats.meanMs68 * 10) / 10 : null,
        fpd_ms_per_image: perceptual?.stats.runs ? Math.round(perceptual.stats.meanMs * 10) / 10 : null,
        total_s: Math.round(totalS * 100) / 100,
        eval_fps: Math.round((result.frames / totalS) * 100) / 100,
      },
      sheet,
      stopped: result.stopped,
    };
    if (keepPerFrame) report.per_frame = perFrame;
    return report;
  } finally {
    // Jobs still running (an error stopped the run) finish or fail without anyone waiting.
    await Promise.allSettled(inflight);
    engines?.model.close();
    engines?.frozen.close();
    truthTracker.close?.();
    outTracker.close?.();
    frozenTracker.close?.();
  }
}

const fmt = (v: number | null, d = 3): string => (v === null ? '-' : v.toFixed(d));

function sheetTitle(opts: EvalOptions, selfMode: boolean, m: Scores, z: Scores): string[] {
  const pair = (name: string, a: number | null, b: number | null, d = 3): string =>
    `${name} ${fmt(a, d)} / ${fmt(b, d)}`;
  const lines = [
    `${selfMode ? 'self-reenactment' : 'cross-reenactment'} | engine ${opts.engineName} | steps ${opts.steps ?? 0} | driving ${path.basename(opts.driving)}${selfMode ? '' : ` | portrait ${path.basename(opts.portraitLabel)}`}`,
    'model / frozen (whole clip):',
  ];
  if (selfMode) {
    lines.push(
      `${pair('l1', m.l1, z.l1)} | ${pair('ssim', m.ssim, z.ssim)} | ${pair('mouth_l1', m.mouth_l1, z.mouth_l1)} | ${pair('eyes_l1', m.eyes_l1, z.eyes_l1)} | ${pair('fpd', m.fpd, z.fpd)} | ${pair('sharpness', m.sharpness, z.sharpness, 2)}`,
    );
  }
  lines.push(
    `${pair('id_sim', m.id_sim, z.id_sim)} | ${pair('akd_mesh', m.akd_mesh, z.akd_mesh)} | ${pair('aed_mesh', m.aed_mesh, z.aed_mesh)} | ${pair('blink_corr', m.blink_corr, z.blink_corr, 2)} | ${pair('gaze_corr', m.gaze_corr, z.gaze_corr, 2)}`,
    `${pair('mouth_open_corr', m.mouth_open_corr, z.mouth_open_corr, 2)} | ${pair('aed_mouth_mesh', m.aed_mouth_mesh, z.aed_mouth_mesh)} | 68 net: ${pair('blink_corr_68', m.blink_corr_68, z.blink_corr_68, 2)} | ${pair('mouth_open_corr_68', m.mouth_open_corr_68, z.mouth_open_corr_68, 2)} | ${pair('aed_mouth_68', m.aed_mouth_68, z.aed_mouth_68)}`,
  );
  return lines;
}

function frameLabel(e: PerFrame | undefined, selfMode: boolean): string[] {
  if (!e) return [];
  const m = e.model;
  const z = e.frozen;
  const pair = (name: string, a: number | null | undefined, b: number | null | undefined): string =>
    `${name} ${fmt(a ?? null)} / ${fmt(b ?? null)}`;
  const lines = [
    `frame ${e.index}${e.truth_mouth !== null ? ` | driver mouth ${fmt(e.truth_mouth, 2)}` : ''} | model / frozen:`,
  ];
  if (selfMode)
    lines.push(
      `${pair('l1', m?.l1, z?.l1)} | ${pair('ssim', m?.ssim, z?.ssim)}`,
      `${pair('mouth_l1', m?.mouth_l1, z?.mouth_l1)} | ${pair('eyes_l1', m?.eyes_l1, z?.eyes_l1)}`,
      `${pair('sharpness', m?.sharpness, z?.sharpness)}${m?.fpd != null || z?.fpd != null ? ` | ${pair('fpd', m?.fpd, z?.fpd)}` : ''}`,
    );
  lines.push(`${pair('akd_mesh', m?.akd_mesh, z?.akd_mesh)} | ${pair('aed_mesh', m?.aed_mesh, z?.aed_mesh)}`);
  if (m?.id_sim != null || z?.id_sim != null) lines.push(pair('id_sim', m?.id_sim, z?.id_sim));
  return lines;
}

function round(v: number, d = 6): number {
  return Number(v.toFixed(d));
}

function roundScores(s: FrameScores): FrameScores {
  const r = (v: number | null): number | null => (v === null ? null : round(v));
  return {
    l1: r(s.l1),
    ssim: r(s.ssim),
    psnr: r(s.psnr),
    akd: r(s.akd),
    pose_deg: r(s.pose_deg),
    mouth_l1: r(s.mouth_l1),
    eyes_l1: r(s.eyes_l1),
    fpd: r(s.fpd),
    sharpness: r(s.sharpness),
    sharpness_eyes: r(s.sharpness_eyes),
    sharpness_mouth: r(s.sharpness_mouth),
    id_sim: r(s.id_sim),
    akd_mesh: r(s.akd_mesh),
    aed_mesh: r(s.aed_mesh),
    aed_mouth_mesh: r(s.aed_mouth_mesh),
    aed_mouth_68: r(s.aed_mouth_68),
  };
}

interface CrossFrame {
  index: number;
  driver: Seen | null;
  model: Seen | null;
  frozen: Seen | null;
}

/**
 * Cross-reenactment scores from the per-frame landmarks (see the module comment). Each method's reference frame is
 * the first frame where both the driver and that method's output have a face; both motions are taken from it.
 */
function scoreCross(
  frames: CrossFrame[],
  model: MethodAcc,
  frozen: MethodAcc,
  record: (entry: PerFrame) => void,
): { truthMisses: number; scored: number } {
  const refs = {
    model: frames.find((f) => f.driver && f.model),
    frozen: frames.find((f) => f.driver && f.frozen),
  };
  const dm = new Float64Array(136);
  const om = new Float64Array(136);
  const one = (which: 'model' | 'frozen', f: CrossFrame, acc: MethodAcc): FrameScores | null => {
    const ref = refs[which];
    const out = f[which];
    if (!ref || !out || !f.driver) {
      acc.misses++;
      return null;
    }
    relativeMotion(f.driver.lm, ref.driver!.lm, dm);
    relativeMotion(out.lm, ref[which]!.lm, om);
    const dPose = poseDelta(f.driver.pose, ref.driver!.pose);
    const oPose = poseDelta(out.pose, ref[which]!.pose);
    const s: FrameScores = {
      l1: null,
      ssim: null,
      psnr: null,
      akd: meanPointDistance(om, dm),
      pose_deg: poseErrorDeg(oPose, dPose),
      mouth_l1: null,
      eyes_l1: null,
      fpd: null,
      sharpness: null,
      sharpness_eyes: null,
      sharpness_mouth: null,
      id_sim: null,
      akd_mesh: null,
      aed_mesh: null,
      aed_mouth_mesh: null,
      aed_mouth_68: null,
    };
    acc.akd.add(s.akd!);
    acc.addPose(oPose, dPose);
    acc.addRegions(om, dm, 1);
    return s;
  };
  let truthMisses = 0;
  let scored = 0;
  for (const f of frames) {
    if (!f.driver) {
      truthMisses++;
      record({ index: f.index, truth_face: false, truth_mouth: null, model: null, frozen: null });
      continue;
    }
    scored++;
    const m = one('model', f, model);
    const z = one('frozen', f, frozen);
    // A method without landmarks in this frame still gets an entry, for its mesh and identity scores.
    const empty = (): FrameScores => ({
      l1: null,
      ssim: null,
      psnr: null,
      akd: null,
      pose_deg: null,
      mouth_l1: null,
      eyes_l1: null,
      fpd: null,
      sharpness: null,
      sharpness_eyes: null,
      sharpness_mouth: null,
      id_sim: null,
      akd_mesh: null,
      aed_mesh: null,
      aed_mouth_mesh: null,
      aed_mouth_68: null,
    });
    record({
      index: f.index,
      truth_face: true,
      truth_mouth: round(f.driver.mouth),
      model: m ? roundScores(m) : empty(),
      frozen: z ? roundScores(z) : empty(),
    });
  }
  return { truthMisses, scored };
}
