/**
 * `avatar track --input FILE --json OUT [--overlay OUT.mp4|png|jpg] [--max-frames N]`
 *
 * Face tracking on an image (all faces, still-image analysis) or a video (the live tracker, frame by frame).
 * Writes { input, width, height, fps, frames: [{ index, time_ms, faces: [{ box: [l,t,r,b], landmarks: [[x,y] x68],
 * pose: {yaw,pitch,roll,tx,ty,tz}, eyes: {left,right}, mouth, gaze: {x,y}, confidence }] }] }.
 * The overlay draws the box, the 68 points and the head axes (a video overlay keeps the input's audio).
 */
import { mkdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { AppError } from '../errors.js';
import type { GrayImage, RgbImage } from '../types/image.js';
import { loadImageRgb, rgbToGray, saveImage } from '../util/image.js';
import { probeVideo, readVideoFrames, VideoWriter, type VideoInfo } from '../util/video.js';
import { drawDot, drawLine, drawRect } from '../vision/imageOps.js';
import { projectAxes } from '../vision/pose.js';
import { FaceTracker } from '../vision/tracker.js';
import type { FaceTrack } from '../vision/types.js';

const USAGE = 'usage: avatar track --input FILE --json OUT.json [--overlay OUT.mp4|OUT.png] [--max-frames N]\n';

interface Args {
  input: string;
  json: string;
  overlay?: string;
  maxFrames?: number;
}

function parseArgs(argv: string[]): Args | string {
  const a: Partial<Args> = {};
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = argv[i + 1];
    const take = (): string | undefined => {
      i++;
      return v;
    };
    if (k === '--help' || k === '-h') return '';
    else if (k === '--input') a.input = take();
    else if (k === '--json') a.json = take();
    else if (k === '--overlay') a.overlay = take();
    else if (k === '--max-frames') {
      const n = Number(take());
      if (!(Number.isInteger(n) && n > 0)) return '--max-frames needs a positive integer';
      a.maxFrames = n;
    } else return `unknown option ${k}`;
  }
  if (!a.input) return 'missing --input';
  if (!a.json) return 'missing --json';
  if (a.overlay !== undefined && !/\.(mp4|png|jpe?g)$/i.test(a.overlay))
    return '--overlay must end in .mp4, .png or .jpg';
  return a as Args;
}

const r2 = (v: number): number => Math.round(v * 100) / 100;
const r3 = (v: number): number => Math.round(v * 1000) / 1000;

/** One face as written to the JSON. */
export function faceJson(t: FaceTrack): Record<string, unknown> {
  const landmarks: number[][] = [];
  for (let i = 0; i < 68; i++) landmarks.push([r2(t.landmarks[2 * i]!), r2(t.landmarks[2 * i + 1]!)]);
  return {
    box: [t.box.l, t.box.t, t.box.r, t.box.b],
    landmarks,
    pose: {
      yaw: r2(t.pose.yaw),
      pitch: r2(t.pose.pitch),
      roll: r2(t.pose.roll),
      tx: r2(t.pose.tx),
      ty: r2(t.pose.ty),
      tz: r2(t.pose.tz),
    },
    eyes: { left: r3(t.eyes.left), right: r3(t.eyes.right) },
    mouth: r3(t.mouth),
    gaze: { x: r3(t.gaze.x), y: r3(t.gaze.y) },
    confidence: r3(t.confidence),
  };
}

const axesScratch = new Float64Array(8);

/** Draws one face onto an RGB frame. */
export function drawFace(rgb: RgbImage, t: FaceTrack): void {
  const th = Math.max(1, Math.round(Math.min(rgb.width, rgb.height) / 320));
  drawRect(rgb, t.box.l, t.box.t, t.box.r, t.box.b, [0, 220, 0], th);
  for (let i = 0; i < 68; i++) drawDot(rgb, t.landmarks[2 * i]!, t.landmarks[2 * i + 1]!, th, [255, 40, 40]);
  const side = t.box.r - t.box.l;
  // Axis length in mm, from the pose's own scale: half a face width on screen.
  const len = (0.5 * side * t.pose.tz) / rgb.width;
  const a = projectAxes(t.pose, rgb.width, rgb.height, len, axesScratch);
  drawLine(rgb, a[0]!, a[1]!, a[2]!, a[3]!, [255, 0, 0], th + 1);
  drawLine(rgb, a[0]!, a[1]!, a[4]!, a[5]!, [0, 255, 0], th + 1);
  drawLine(rgb, a[0]!, a[1]!, a[6]!, a[7]!, [40, 120, 255], th + 1);
}

async function isImage(file: string): Promise<boolean> {
  // Sniff the content (portraits may carry the wrong extension): sharp reads the header only.
  const sharp = (await import('sharp')).default;
  try {
    const meta = await sharp(file).metadata();
    return meta.width !== undefined && meta.pages === undefined;
  } catch {
    return false;
  }
}

/** Runs the command; returns the exit code. */
export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  if (typeof args === 'string') {
    process.stderr.write((args ? `avatar track: ${args}\n` : '') + USAGE);
    return args ? 2 : 0;
  }
  try {
    const st = await stat(args.input);
    if (!st.isFile()) throw new AppError('BAD_REQUEST', `not a file: ${args.input}`);
  } catch (err) {
    if (err instanceof AppError) throw err;
    throw new AppError('NOT_FOUND', `input not found: ${args.input}`, { cause: err });
  }
  await mkdir(path.dirname(path.resolve(args.json)), { recursive: true });
  if (args.overlay) await mkdir(path.dirname(path.resolve(args.overlay)), { recursive: true });
  // Check the input before loading the models (a second or two).
  const image = await isImage(args.input);
  const info = image ? undefined : await probeVideo(args.input);
  const tracker = await FaceTracker.create();
  const result = info ? await trackVideo(tracker, args, info) : await trackImage(tracker, args);
  await writeFile(args.json, JSON.stringify(result) + '\n');
  return 0;
}

async function trackImage(tracker: FaceTracker, args: Args): Promise<Record<string, unknown>> {
  if (args.overlay && !/\.(png|jpe?g)$/i.test(args.overlay)) {
    throw new AppError('BAD_REQUEST', 'the overlay of an image input must be .png or .jpg');
  }
  const rgb = await loadImageRgb(args.input);
  const gray = rgbToGray(rgb);
  const faces = tracker.analyzeImage(gray);
  if (args.overlay) {
    for (const f of faces) drawFace(rgb, f);
    await saveImage(args.overlay, rgb);
  }
  process.stderr.write(`avatar track: ${faces.length} face(s) in ${path.basename(args.input)}\n`);
  return {
    input: args.input,
    width: rgb.width,
    height: rgb.height,
    fps: null,
    frames: [{ index: 0, time_ms: 0, faces: faces.map(faceJson) }],
  };
}

async function trackVideo(tracker: FaceTracker, args: Args, info: VideoInfo): Promise<Record<string, unknown>> {
  if (args.overlay && !/\.mp4$/i.test(args.overlay))
    throw new AppError('BAD_REQUEST', 'the overlay of a video input must be .mp4');
  const total = args.maxFrames !== undefined ? Math.min(args.maxFrames, info.frameCount) : info.frameCount;
  const writer = args.overlay
    ? await VideoWriter.open(args.overlay, {
        width: info.width,
        height: info.height,
        fps: info.fps,
        audioFrom: args.input,
      })
    : undefined;
  const frames: Record<string, unknown>[] = [];
  const gray: GrayImage = { width: info.width, height: info.height, data: new Uint8Array(info.width * info.height) };
  const started = Date.now();
  let lastReport = started;
  let found = 0;
  try {
    for await (const f of readVideoFrames(args.input, { format: 'rgb24', maxFrames: args.maxFrames })) {
      const rgb: RgbImage = { width: f.width, height: f.height, data: f.data };
      rgbToGray(rgb, gray);
      const timeMs = (f.index * 1000) / info.fps;
      const t = tracker.track(gray, timeMs);
      if (t) found++;
      frames.push({ index: f.index, time_ms: r2(timeMs), faces: t ? [faceJson(t)] : [] });
      if (writer) {
        if (t) drawFace(rgb, t);
        await writer.write(rgb.data);
      }
      const now = Date.now();
      // About once a second, and always for the last frame, so that even a short, fast run shows where it got to.
      if (now - lastReport >= 1000 || f.index + 1 === total) {
        lastReport = now;
        const fps = (f.index + 1) / ((now - started) / 1000);
        process.stderr.write(`avatar track: frame ${f.index + 1}/${total} (${fps.toFixed(1)} fps)\n`);
      }
    }
    if (writer) await writer.close();
  } finally {
    // On an error in the loop, that error is the one to report; the encoder is only shut down.
    if (writer && !writer.closed) await writer.close().catch(() => undefined);
  }
  process.stderr.write(`avatar track: ${frames.length} frames, a face in ${found}\n`);
  return { input: args.input, width: info.width, height: info.height, fps: info.fps, frames };
}
