/**
 * `npm run bench -- tracking [--frames-per-clip N] [--reps R]`
 *
 * Face tracking speed on frames of the shared driving clips, letterboxed to 640x480 (as the reference frames):
 * - detect: FaceDetector.detect (the fast full-frame search) per frame;
 * - landmarks: ShapePredictor.predict on each detected box (R reps), and in the same run dlib's own C++ predictor
 *   (g++ -O2, benchmarks/lib/dlibCpp.ts) on exactly the same frames and boxes, with a parity count;
 * - pose: PoseSolver.solve on those landmarks;
 * - track: FaceTracker.track on consecutive frames of each clip (the whole per-frame path: landmarks, the periodic
 *   cascade check, smoothing, pose, features); the first frame of each clip (a full detection) is reported apart.
 * - mesh: the default tracker, MeshTracker.track (FaceMesh + Iris through onnxruntime, server/vision/mesh) on the
 *   same consecutive frames in colour (RGB, the same letterbox), with its stages (mesh, iris) and its detection frames
 *   (BlazeFace) apart; `side_by_side` puts the two trackers' per-frame costs next to each other.
 * Wall-clock ms (performance.now) and, because the machine is shared, process CPU ms where it helps.
 * Writes benchmarks/results/tracking.json.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readVideoFrames } from '../server/util/video.js';
import { FaceDetector } from '../server/vision/detector.js';
import { resizeGray } from '../server/vision/imageOps.js';
import { writePgm } from '../server/vision/pgm.js';
import { emptyPose, PoseSolver } from '../server/vision/pose.js';
import { ShapePredictor } from '../server/vision/shapePredictor.js';
import { MeshTracker } from '../server/vision/mesh/meshTracker.js';
import { FaceTracker } from '../server/vision/tracker.js';
import type { Box, ColorFrame } from '../server/vision/types.js';
import type { GrayImage } from '../server/types/image.js';
import { mediaDir } from '../scripts/testData.js';
import { num, parseOptions } from './lib/args.js';
import { runDlibBench } from './lib/dlibCpp.js';
import { summarize, writeResult } from './lib/stats.js';

const drivingDir = path.join(mediaDir, 'driving');

/** Fits the frame into 640x480 keeping its aspect, padded with grey 127 (the reference frames' letterbox). */
function letterbox(src: GrayImage): GrayImage {
  const s = Math.min(640 / src.width, 480 / src.height);
  const nw = Math.round(src.width * s);
  const nh = Math.round(src.height * s);
  const scaled = nw === src.width && nh === src.height ? src : resizeGray(src, nw, nh);
  const out: GrayImage = { width: 640, height: 480, data: new Uint8Array(640 * 480).fill(127) };
  const ox = (640 - nw) >> 1;
  const oy = (480 - nh) >> 1;
  for (let y = 0; y < nh; y++) out.data.set(scaled.data.subarray(y * nw, y * nw + nw), (y + oy) * 640 + ox);
  return out;
}

/** The same letterbox in colour (grey 127 padding). */
function letterboxRgb(src: ColorFrame): ColorFrame {
  const s = Math.min(640 / src.width, 480 / src.height);
  const nw = Math.round(src.width * s);
  const nh = Math.round(src.height * s);
  const out: ColorFrame = { format: 'rgb', width: 640, height: 480, data: new Uint8Array(640 * 480 * 3).fill(127) };
  const ox = (640 - nw) >> 1;
  const oy = (480 - nh) >> 1;
  for (let y = 0; y < nh; y++) {
    const sy = Math.min(src.height - 1, Math.floor(((y + 0.5) * src.height) / nh));
    for (let x = 0; x < nw; x++) {
      const sx = Math.min(src.width - 1, Math.floor(((x + 0.5) * src.width) / nw));
      const si = 3 * (sy * src.width + sx);
      const di = 3 * ((y + oy) * 640 + x + ox);
      out.data[di] = src.data[si]!;
      out.data[di + 1] = src.data[si + 1]!;
      out.data[di + 2] = src.data[si + 2]!;
    }
  }
  return out;
}

function cpuMs(): number {
  return process.cpuUsage().user / 1000;
}

/** The flags (see the header). */
export const OPTIONS = { framesPerClip: num(40, { min: 1, integer: true }), reps: num(5, { min: 1, integer: true }) };

export async function main(args: string[]): Promise<void> {
  const { framesPerClip: perClip, reps } = parseOptions('tracking', args, OPTIONS);
  const clips = readdirSync(drivingDir)
    .filter((f) => f.endsWith('.mp4'))
    .sort();
  if (clips.length === 0) throw new Error(`no clips in ${drivingDir}`);
  const loadStart = os.loadavg();

  // Consecutive frames of every clip.
  const sequences: GrayImage[][] = [];
  for (const clip of clips) {
    const seq: GrayImage[] = [];
    for await (const f of readVideoFrames(path.join(drivingDir, clip), { format: 'gray', maxFrames: perClip })) {
      seq.push(letterbox({ width: f.width, height: f.height, data: f.data }));
    }
    sequences.push(seq);
  }
  // The same frames in colour for the mesh tracker.
  const colorSeqs: ColorFrame[][] = [];
  for (const clip of clips) {
    const seq: ColorFrame[] = [];
    for await (const f of readVideoFrames(path.join(drivingDir, clip), { format: 'rgb24', maxFrames: perClip })) {
      seq.push(letterboxRgb({ format: 'rgb', width: f.width, height: f.height, data: f.data }));
    }
    colorSeqs.push(seq);
  }
  const predictor = await ShapePredictor.load();
  const detector = await FaceDetector.create();

  // Warm-up (JIT, scan plans) on a few frames of every clip: not timed.
  for (const seq of sequences) for (const img of seq.slice(0, 3)) detector.detect(img);

  // Detection on every 4th frame.
  const stills = sequences.flatMap((seq) => seq.filter((_, i) => i % 4 === 0));
  const detectMs: number[] = [];
  const detectCpu: number[] = [];
  const boxes: { img: GrayImage; box: Box }[] = [];
  let noFace = 0;
  for (const img of stills) {
    const c0 = cpuMs();
    const t0 = performance.now();
    const faces = detector.detect(img);
    detectMs.push(performance.now() - t0);
    detectCpu.push(cpuMs() - c0);
    if (faces[0]) boxes.push({ img, box: faces[0].box });
    else noFace++;
  }

  // Landmarks (TS) on the detected boxes; pose on the result.
  const lm = new Int32Array(136);
  const lmMs: number[] = [];
  const lmCpu: number[] = [];
  const poseMs: number[] = [];
  const ours: Int32Array[] = [];
  const solver = new PoseSolver();
  const pose = emptyPose();
  for (const { img, box } of boxes.slice(0, 5)) predictor.predict(img, box, lm);
  for (const { img, box } of boxes) {
    for (let r = 0; r < reps; r++) {
      const c0 = cpuMs();
      const t0 = performance.now();
      predictor.predict(img, box, lm);
      lmMs.push(performance.now() - t0);
      lmCpu.push(cpuMs() - c0);
    }
    ours.push(Int32Array.from(lm));
    solver.reset();
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      solver.solve(lm, img.width, img.height, pose);
      poseMs.push(performance.now() - t0);
    }
  }

  // dlib C++ on the same frames and boxes.
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'bench-tracking-'));
  let dlib: { msPerCall: number[]; cpuMsPerItem: number[]; landmarks: number[][][] } | undefined;
  let dlibError: string | undefined;
  try {
    const items: { pgmPath: string; box: Box }[] = [];
    for (let i = 0; i < boxes.length; i++) {
      const p = path.join(tmp, `f${i}.pgm`);
      await writePgm(p, boxes[i]!.img);
      items.push({ pgmPath: p, box: boxes[i]!.box });
    }
    dlib = await runDlibBench(items, reps);
  } catch (err) {
    dlibError = (err as Error).message;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  let identical = 0;
  if (dlib) {
    ours.forEach((o, i) => {
      const ref = dlib.landmarks[i]!;
      if (ref.every(([x, y], j) => o[2 * j] === x && o[2 * j + 1] === y)) identical++;
    });
  }

  // Whole tracked frames, clip by clip.
  const tracker = await FaceTracker.create({ predictor, detector });
  const trackMs: number[] = [];
  const trackCpu: number[] = [];
  const acquireMs: number[] = [];
  const stage = { landmarks: [] as number[], pose: [] as number[], features: [] as number[], verify: [] as number[] };
  let tracked = 0;
  let trackFrames = 0;
  for (const seq of sequences) {
    tracker.reset();
    seq.forEach((img, i) => {
      const c0 = cpuMs();
      const t0 = performance.now();
      const t = tracker.track(img, (i * 1000) / 30);
      const dt = performance.now() - t0;
      const dc = cpuMs() - c0;
      if (t) tracked++;
      trackFrames++;
      if (tracker.timings.detected) {
        acquireMs.push(dt);
        return;
      }
      trackMs.push(dt);
      trackCpu.push(dc);
      stage.landmarks.push(tracker.timings.landmarksMs);
      stage.pose.push(tracker.timings.poseMs);
      stage.features.push(tracker.timings.featuresMs);
      if (tracker.timings.detectMs > 0) stage.verify.push(tracker.timings.detectMs);
    });
  }

  // The mesh tracker on the same sequences (one warm-up pass over the first clip, not timed).
  const mesh = await MeshTracker.create({ fallbackDetector: null });
  const grayOf = (c: ColorFrame): GrayImage => ({ width: c.width, height: c.height, data: new Uint8Array(0) });
  for (const [i, f] of (colorSeqs[0] ?? []).entries()) mesh.track(grayOf(f), (i * 1000) / 30, f);
  const meshMs: number[] = [];
  const meshCpu: number[] = [];
  const meshAcquire: number[] = [];
  const meshStage = { mesh: [] as number[], iris: [] as number[], features: [] as number[] };
  let meshTracked = 0;
  for (const seq of colorSeqs) {
    mesh.reset();
    seq.forEach((f, i) => {
      const c0 = cpuMs();
      const t0 = performance.now();
      const t = mesh.track(grayOf(f), (i * 1000) / 30, f);
      const dt = performance.now() - t0;
      const dc = cpuMs() - c0;
      if (t) meshTracked++;
      if (mesh.timings.detected) {
        meshAcquire.push(dt);
        return;
      }
      meshMs.push(dt);
      meshCpu.push(dc);
      meshStage.mesh.push(mesh.timings.meshMs);
      meshStage.iris.push(mesh.timings.irisMs);
      meshStage.features.push(mesh.timings.featuresMs);
    });
  }
  mesh.models.close();
  const m = { track: summarize(meshMs), cpu: summarize(meshCpu), acquire: summarize(meshAcquire) };

  const s = {
    detect: summarize(detectMs),
    detectCpu: summarize(detectCpu),
    landmarks: summarize(lmMs),
    landmarksCpu: summarize(lmCpu),
    pose: summarize(poseMs),
    track: summarize(trackMs),
    trackCpu: summarize(trackCpu),
    acquire: summarize(acquireMs),
  };
  const dlibWall = dlib ? summarize(dlib.msPerCall) : undefined;
  const dlibCpu = dlib ? summarize(dlib.cpuMsPerItem) : undefined;
  writeResult('tracking', {
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, loadavg_start: loadStart, loadavg_end: os.loadavg() },
    input: {
      clips: clips.length,
      frames_per_clip: perClip,
      frame_size: '640x480 letterboxed gray (dlib rule)',
      detect_frames: stills.length,
      landmark_boxes: boxes.length,
      reps,
    },
    detect_ms_p50: s.detect.p50,
    detect_ms_p95: s.detect.p95,
    landmarks_ms_p50: s.landmarks.p50,
    landmarks_ms_p95: s.landmarks.p95,
    dlib_cpp_landmarks_ms_p50: dlibWall?.p50 ?? null,
    dlib_cpp_landmarks_ms_p95: dlibWall?.p95 ?? null,
    landmarks_vs_dlib_ratio_p50: dlibWall ? Math.round((s.landmarks.p50 / dlibWall.p50) * 100) / 100 : null,
    pose_ms_p50: s.pose.p50,
    pose_ms_p95: s.pose.p95,
    track_ms_p50: s.track.p50,
    track_ms_p95: s.track.p95,
    stages: {
      detect: s.detect,
      detect_cpu: s.detectCpu,
      landmarks: s.landmarks,
      landmarks_cpu: s.landmarksCpu,
      dlib_cpp_landmarks: dlibWall ?? null,
      dlib_cpp_landmarks_cpu_per_box: dlibCpu ?? null,
      pose: s.pose,
      track_steady: s.track,
      track_steady_cpu: s.trackCpu,
      track_acquire_frame: s.acquire,
      track_landmarks: summarize(stage.landmarks),
      track_pose: summarize(stage.pose),
      track_features: summarize(stage.features),
      track_verify_frames: summarize(stage.verify),
    },
    quality: {
      detect_frames_without_face: noFace,
      tracked_frames: tracked,
      track_frames: trackFrames,
      landmarks_identical_to_dlib: dlib ? `${identical}/${boxes.length}` : null,
    },
    mesh: {
      tracker: 'MeshTracker: BlazeFace + FaceMesh (468) + Iris (2 x 76), ONNX via onnxruntime-node, 1 intra-op thread',
      frame_size: '640x480 letterboxed RGB',
      track_ms_p50: m.track.p50,
      track_ms_p95: m.track.p95,
      stages: {
        track_steady: m.track,
        track_steady_cpu: m.cpu,
        track_acquire_frame: m.acquire,
        mesh: summarize(meshStage.mesh),
        iris: summarize(meshStage.iris),
        features: summarize(meshStage.features),
      },
      tracked_frames: meshTracked,
    },
    side_by_side: {
      'per tracked frame, ms p50 / p95': { dlib: [s.track.p50, s.track.p95], mesh: [m.track.p50, m.track.p95] },
      'per tracked frame, CPU ms p50 / p95': { dlib: [s.trackCpu.p50, s.trackCpu.p95], mesh: [m.cpu.p50, m.cpu.p95] },
      'first frame (detection), ms p50': { dlib: s.acquire.p50, mesh: m.acquire.p50 },
      'tracked frames': { dlib: tracked, mesh: meshTracked, of: trackFrames },
    },
    dlib_error: dlibError ?? null,
    goals: {
      'mesh + iris tracked frame <= 4 ms (p95)': m.track.p95 <= 4,
      'landmarks <= 2x dlib C++ and <= 2 ms': dlibWall
        ? s.landmarks.p50 <= 2 * dlibWall.p50 && s.landmarks.p50 <= 2
        : null,
      'detect <= 10 ms (p50)': s.detect.p50 <= 10,
      'tracked frame <= 5 ms (p95)': s.track.p95 <= 5,
    },
  });
}
