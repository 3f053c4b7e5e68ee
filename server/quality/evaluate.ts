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
 */
import type { AvatarEngine, RgbImage } from '../avatar/engine.js';
import { createGray, createI420, createRgb, i420ToRgb, resizeRgb, rgbToGray } from '../util/image.js';
import { probeVideo } from '../util/video.js';
import type { FaceTrack, GrayImage, HeadPose } from '../vision/types.js';
import { ffhqCrop, warpCrop } from './align.js';
import {
  akd as akdOf,
  alignedPointDistance,
  angleDiff,
  interOcularDistance,
  l1 as l1Of,
  LANDMARK_REGIONS,
  type LandmarkRegion,
  Mean,
  meanPointDistance,
  poseDelta,
  poseErrorDeg,
  psnr as psnrOf,
  relativeMotion,
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
}

export interface FrameScores {
  l1: number | null;
  ssim: number | null;
  psnr: number | null;
  akd: number | null;
  pose_deg: number | null;
}

export interface PerFrame {
  /** Frame index in the clip. */
  index: number;
  /** Whether the truth (self) or driver (cross) frame had a face; frames without one are not scored. */
  truth_face: boolean;
  /** Mouth openness of the truth/driver frame (inner-lip gap / mouth width), when it had a face. */
  truth_mouth: number | null;
  model: FrameScores | null;
  frozen: FrameScores | null;
}

export interface EvalReport {
  mode: 'self' | 'cross';
  engine: string;
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
  /** How the scores are defined (so a JSON file explains itself). */
  definitions: Record<string, string>;
  timing: { prepare_ms: number; render_ms: { p50: number; p95: number; mean: number }; total_s: number; eval_fps: number };
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
  createAnalyzer: () => Promise<FaceAnalyzer>;
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

class MethodAcc {
  l1 = new Mean();
  ssim = new Mean();
  psnr = new Mean();
  akd = new Mean();
  pose = new Mean();
  aligned = new Mean();
  axes = { yaw: new Mean(), pitch: new Mean(), roll: new Mean() };
  regions = Object.fromEntries(Object.keys(LANDMARK_REGIONS).map((k) => [k, new Mean()])) as Record<LandmarkRegion, Mean>;
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

  scores(images: boolean): Scores {
    const r = (v: number | null, d = 6): number | null => (v === null ? null : Number(v.toFixed(d)));
    return {
      l1: images ? r(this.l1.value) : null,
      ssim: images ? r(this.ssim.value) : null,
      psnr: images ? r(this.psnr.value, 4) : null,
      akd: r(this.akd.value),
      pose_deg: r(this.pose.value, 4),
      misses: this.misses,
      akd_aligned: r(this.aligned.value),
      pose_axes_deg: { yaw: r(this.axes.yaw.value, 4), pitch: r(this.axes.pitch.value, 4), roll: r(this.axes.roll.value, 4) },
      akd_regions: Object.fromEntries(Object.entries(this.regions).map(([k, m]) => [k, r(m.value)])) as Record<LandmarkRegion, number | null>,
    };
  }
}

function summarizeMs(samples: number[]): { p50: number; p95: number; mean: number } {
  if (!samples.length) return { p50: 0, p95: 0, mean: 0 };
  const s = [...samples].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
  const r = (v: number): number => Math.round(v * 1000) / 1000;
  return { p50: r(q(50)), p95: r(q(95)), mean: r(s.reduce((a, b) => a + b, 0) / s.length) };
}

const definitions: Record<string, string> = {
  crop: `FFHQ alignment (eye centres + mouth corners) from the true frame's 68 landmarks, ${CROP_SIZE}x${CROP_SIZE}; the same crop is cut from the output`,
  l1: 'mean |a-b| / 255 over the RGB crop',
  ssim: 'Gaussian 11x11, sigma 1.5, K1 0.01, K2 0.03, valid region, per RGB channel then averaged',
  psnr: `dB, peak 255, over the RGB crop, per frame capped at ${PSNR_CAP_DB} dB then averaged`,
  akd_aligned: 'self: akd after a least-squares similarity alignment of the output landmarks onto the truth (expression error without head position, size and roll)',
  akd: 'self: mean landmark distance output vs truth / truth inter-ocular distance (eye centres); cross: mean distance between the output and driver landmark motions relative to the reference frame, each / its own inter-ocular distance',
  pose_deg: 'self: mean of |dyaw|, |dpitch|, |droll| output vs truth; cross: the same between pose changes from the reference frame',
  frozen: 'the baseline whose output is the unchanged portrait (the portrait engine at the same output size), measured like the model (its own tracker, every frame)',
  landmarks: "dlib 68 points from one FaceTracker per stream (truth/driver, model, frozen), raw per-frame points; pose is the tracker's",
  misses: 'scored frames where the tracker found no face in that output (left out of akd and pose_deg)',
};

/** Runs the evaluation. */
export async function evaluate(opts: EvalOptions): Promise<EvalReport> {
  const selfMode = opts.portrait === 'first-frame';
  const keepPerFrame = opts.perFrame ?? true;
  const truthTracker = await opts.createAnalyzer();
  const outTracker = await opts.createAnalyzer();
  // The frozen output is measured exactly like the model's: its own tracker, every frame.
  const frozenTracker = await opts.createAnalyzer();
  let engines: { model: AvatarEngine; frozen: AvatarEngine } | undefined;
  const model = new MethodAcc();
  const frozen = new MethodAcc();
  const perFrame: PerFrame[] = [];
  let truthMisses = 0;
  let scored = 0;

  // Filled in onPrepared.
  let frozenRgb: RgbImage | undefined;
  let frozenGray: GrayImage | undefined;
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

  const t0 = performance.now();
  try {
    const info = await probeVideo(opts.driving);
    const outputSize = selfMode ? Math.max(info.width, info.height) + (Math.max(info.width, info.height) % 2) : undefined;
    engines = await opts.createEngines(outputSize);
    const eng = engines;

    const scoreSelf = (f: OfflineFrame, output: RgbImage, truth: Seen | null, out: Seen | null, frozenSeen: Seen | null): void => {
      if (!truth) {
        truthMisses++;
        if (keepPerFrame) perFrame.push({ index: f.index, truth_face: false, truth_mouth: null, model: null, frozen: null });
        return;
      }
      scored++;
      const crop = ffhqCrop(truth.lm, CROP_SIZE);
      warpCrop(f.driving, crop, crops.truth);
      const one = (acc: MethodAcc, img: RgbImage, cropBuf: RgbImage, face: Seen | null): FrameScores => {
        warpCrop(img, crop, cropBuf);
        const s: FrameScores = {
          l1: l1Of(cropBuf, crops.truth),
          ssim: ssimOf(cropBuf, crops.truth),
          psnr: Math.min(PSNR_CAP_DB, psnrOf(cropBuf, crops.truth)),
          akd: face ? akdOf(face.lm, truth.lm) : null,
          pose_deg: face ? poseErrorDeg(face.pose, truth.pose) : null,
        };
        acc.l1.add(s.l1!);
        acc.ssim.add(s.ssim!);
        acc.psnr.add(s.psnr!);
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
      if (keepPerFrame) perFrame.push({ index: f.index, truth_face: true, truth_mouth: round(truth.mouth), model: roundScores(m), frozen: roundScores(z) });
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
        if (selfMode && (img.width !== info.width || img.height !== info.height)) img = resizeRgb(img, info.width, info.height);
        else if (!selfMode && (img.width !== prepared.width || img.height !== prepared.height)) img = resizeRgb(img, prepared.width, prepared.height);
        frozenRgb = img;
        frozenGray = rgbToGray(img);
        if (opts.progress) progress = new Progress({ label: 'eval', total: frames, stream: opts.progress });
      },
      onFrame: (f) => {
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
        if (selfMode) scoreSelf(f, output, truth, out, still);
        else cross.push({ index: f.index, driver: truth, model: out, frozen: still });
        progress?.tick();
      },
    });
    progress?.finish();

    if (!selfMode) {
      const r = scoreCross(cross, model, frozen, keepPerFrame ? perFrame : null);
      truthMisses = r.truthMisses;
      scored = r.scored;
    }

    const totalS = (performance.now() - t0) / 1000;
    const mScores = model.scores(selfMode);
    const fScores = frozen.scores(selfMode);
    const ratio = mScores.akd !== null && fScores.akd !== null && fScores.akd > 0 ? mScores.akd / fScores.akd : null;
    const report: EvalReport = {
      mode: selfMode ? 'self' : 'cross',
      engine: opts.engineName,
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
      definitions,
      timing: {
        prepare_ms: Math.round(result.prepareMs),
        render_ms: summarizeMs(result.renderMs),
        total_s: Math.round(totalS * 100) / 100,
        eval_fps: Math.round((result.frames / totalS) * 100) / 100,
      },
      stopped: result.stopped,
    };
    if (keepPerFrame) report.per_frame = perFrame;
    return report;
  } finally {
    engines?.model.close();
    engines?.frozen.close();
    truthTracker.close?.();
    outTracker.close?.();
    frozenTracker.close?.();
  }
}

function round(v: number, d = 6): number {
  return Number(v.toFixed(d));
}

function roundScores(s: FrameScores): FrameScores {
  const r = (v: number | null): number | null => (v === null ? null : round(v));
  return { l1: r(s.l1), ssim: r(s.ssim), psnr: r(s.psnr), akd: r(s.akd), pose_deg: r(s.pose_deg) };
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
  perFrame: PerFrame[] | null,
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
    const s: FrameScores = { l1: null, ssim: null, psnr: null, akd: meanPointDistance(om, dm), pose_deg: poseErrorDeg(oPose, dPose) };
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
      perFrame?.push({ index: f.index, truth_face: false, truth_mouth: null, model: null, frozen: null });
      continue;
    }
    scored++;
    const m = one('model', f, model);
    const z = one('frozen', f, frozen);
    perFrame?.push({
      index: f.index,
      truth_face: true,
      truth_mouth: round(f.driver.mouth),
      model: m ? roundScores(m) : null,
      frozen: z ? roundScores(z) : null,
    });
  }
  return { truthMisses, scored };
}
