/**
 * Training samples for the learned refiner, made with the project's own tracker and warp (the default engine), cached
 * outside the repository (the clips are third-party content: neither they nor anything made from them is committed).
 *
 * Per clip, self-reenactment as `avatar eval --self` runs it: the clip's first frame is the portrait (and the
 * performer's first frame); every `stride`-th later frame t drives the engine. A sample holds, in the portrait's
 * paste region resampled to R×R (refinerCrop.ts, the same view the live engine gives the refiner):
 * - warp: the engine's output for frame t (the warp of the portrait driven to t),
 * - truth: frame t itself,
 * and the driving face for the expression encoder: frame t's FFHQ-aligned crop (from its own 68 landmarks), grey
 * 64×64; plus the truth's mouth and eye boxes in the R×R crop (for loss weights) and the alignment of frame t (the
 * similarity carrying the portrait's head onto the warp's target head, refinerCrop.ts fitSourceAlignment, which an
 * aligned refiner's source follows). Once per clip: the source (the portrait's region), the paste mask at R×R and the
 * portrait's canvas (the region grown to twice its size, 2R×2R, refinerCrop.ts canvasRegion).
 *
 * Files: <cache>/<clip>.json (meta) and <cache>/<clip>.bin: source R·R·3 | mask R·R | n × (warp R·R·3 | truth R·R·3 |
 * drive 64·64) | canvas 2R·2R·3, all uint8.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { AvatarEngine } from '../avatar/engineTypes.js';
import type { RgbImage } from '../types/image.js';
import { DefaultEngine } from '../avatar/engines/default/engine.js';
import {
  CANVAS_SCALE,
  canvasRegion,
  fitSourceAlignment,
  sampleRegion,
  type Region,
} from '../avatar/engines/default/refinerCrop.js';
import { AppError } from '../errors.js';
import { ffhqCrop, warpCrop } from '../vision/faceCrop.js';
import { runOffline } from '../quality/offline.js';
import { createGray, createRgb, resizeRgb, rgbToGray } from '../util/image.js';
import { probeVideo } from '../util/video.js';
import { FaceTracker } from '../vision/tracker.js';

/** Bumped when the sample format or its meaning changes (old caches are rebuilt). */
export const DATASET_VERSION = 2;
/** Side of the driving crop the expression encoder sees. */
export const DRIVE_SIZE = 64;

export interface ClipMeta {
  version: number;
  clip: string;
  /** sha256 of the clip file (a changed file is rebuilt). */
  sha256: string;
  size: number;
  frames: number[];
  /** Per sample: mouth box then left and right eye boxes, [x0, y0, x1, y1] each, in crop pixels. */
  boxes: number[][];
  /** Per sample: the source alignment [a, b, tx, ty] in crop pixels (target = [a -b; b a]·source + t). */
  align: number[][];
  /** The canvas's side over R (the canvas follows the samples in the .bin). */
  canvasScale: number;
  region: Region;
  fps: number;
  buildMs: number;
}

export interface BuildOptions {
  /** Crop side (R). */
  size: number;
  /** Use every stride-th frame after the portrait frame. */
  stride: number;
  /** At most this many samples per clip. */
  maxSamples: number;
  /** Creates the engine for an output long side (the clip's). */
  createEngine: (outputSize: number) => Promise<AvatarEngine>;
}

async function sha256File(file: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(file))
    .digest('hex');
}

/** Reads a clip's cached meta, or null when missing, outdated or built with other options. */
export async function cachedMeta(cacheDir: string, clip: string, size: number): Promise<ClipMeta | null> {
  const name = path.parse(clip).name;
  try {
    const meta = JSON.parse(await readFile(path.join(cacheDir, `${name}.json`), 'utf8')) as ClipMeta;
    if (meta.version !== DATASET_VERSION || meta.size !== size) return null;
    if (meta.sha256 !== (await sha256File(clip))) return null;
    return meta;
  } catch {
    return null;
  }
}

function box(lm: ArrayLike<number>, from: number, to: number, region: Region, size: number, pad: number): number[] {
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (let i = from; i < to; i++) {
    const x = ((lm[2 * i]! + 0.5 - region.x0) * size) / region.w;
    const y = ((lm[2 * i + 1]! + 0.5 - region.y0) * size) / region.h;
    x0 = Math.min(x0, x);
    x1 = Math.max(x1, x);
    y0 = Math.min(y0, y);
    y1 = Math.max(y1, y);
  }
  const p = Math.max(1, (x1 - x0) * pad);
  const c = (v: number): number => Math.max(0, Math.min(size, Math.round(v)));
  return [c(x0 - p), c(y0 - p), c(x1 + p), c(y1 + p)];
}

/**
 * Builds (or reuses) one clip's samples and returns its meta; a clip that gave no usable sample (no face in its first
 * frame) has no frames and is remembered as such.
 */
export async function buildClip(clip: string, cacheDir: string, opts: BuildOptions): Promise<ClipMeta> {
  const cached = await cachedMeta(cacheDir, clip, opts.size);
  if (cached) return cached;
  const t0 = performance.now();
  const R = opts.size;
  const info = await probeVideo(clip);
  const long = Math.max(info.width, info.height) + (Math.max(info.width, info.height) % 2);
  const engine = await opts.createEngine(long);
  if (!(engine instanceof DefaultEngine))
    throw new TypeError('the dataset needs the default engine (its paste region)');
  const tracker = await FaceTracker.create();
  const chunks: Buffer[] = [];
  const frames: number[] = [];
  const boxes: number[][] = [];
  const align: number[][] = [];
  const alignBuf = new Float64Array(4);
  let canvas: Uint8Array | null = null;
  let region: Region | null = null;
  const warpBuf = new Uint8Array(R * R * 3);
  const truthBuf = new Uint8Array(R * R * 3);
  const driveRgb = createRgb(DRIVE_SIZE, DRIVE_SIZE);
  const driveGray = createGray(DRIVE_SIZE, DRIVE_SIZE);
  let gray: ReturnType<typeof createGray> | null = null;
  let resized: RgbImage | null = null;
  let seen = 0;
  let noFace = false;
  try {
    await runOffline({
      engine,
      driving: clip,
      portrait: 'first-frame',
      // The portrait frame + stride frames per sample; frames without a face make a run end early.
      maxFrames: 1 + opts.stride * opts.maxSamples,
      shouldStop: () => frames.length >= opts.maxSamples,
      onPrepared: ({ portrait }) => {
        const p = engine.prepared!;
        // The output has the clip's size here (output long side = the clip's); map the region to the frame if not.
        const kx = portrait.width / p.width;
        const ky = portrait.height / p.height;
        region = { x0: p.paste.x0 * kx, y0: p.paste.y0 * ky, w: p.paste.w * kx, h: p.paste.h * ky };
        const src = sampleRegion(portrait, region, R, new Uint8Array(R * R * 3));
        const C = CANVAS_SCALE * R;
        canvas = sampleRegion(portrait, canvasRegion(region), C, new Uint8Array(C * C * 3));
        // The paste mask at R×R (nearest sample of the region's mask).
        const mask = new Uint8Array(R * R);
        for (let v = 0; v < R; v++) {
          for (let u = 0; u < R; u++) {
            const mx = Math.min(p.paste.w - 1, Math.floor(((u + 0.5) * p.paste.w) / R));
            const my = Math.min(p.paste.h - 1, Math.floor(((v + 0.5) * p.paste.h) / R));
            mask[v * R + u] = Math.round(255 * p.pasteMask[my * p.paste.w + mx]!);
          }
        }
        chunks.push(Buffer.from(src), Buffer.from(mask));
      },
      onFrame: (f) => {
        seen++;
        if ((seen - 1) % opts.stride !== 0 || frames.length >= opts.maxSamples) return;
        let out = f.output;
        if (out.width !== f.driving.width || out.height !== f.driving.height) {
          resized = resizeRgb(out, f.driving.width, f.driving.height, resized ?? undefined);
          out = resized;
        }
        if (!gray || gray.width !== f.driving.width || gray.height !== f.driving.height)
          gray = createGray(f.driving.width, f.driving.height);
        const t = tracker.track(rgbToGray(f.driving, gray), f.timestampMs);
        if (!t) return;
        const lm = t.rawLandmarks && t.rawLandmarks.length >= 136 ? t.rawLandmarks : t.landmarks;
        warpCrop(f.driving, ffhqCrop(lm, DRIVE_SIZE), driveRgb);
        rgbToGray(driveRgb, driveGray);
        sampleRegion(out, region!, R, warpBuf);
        sampleRegion(f.driving, region!, R, truthBuf);
        chunks.push(Buffer.from(warpBuf), Buffer.from(truthBuf), Buffer.from(driveGray.data));
        frames.push(f.index);
        const ctrl = engine.lastControl;
        align.push(ctrl ? [...fitSourceAlignment(engine.prepared!, ctrl, R, alignBuf)] : [1, 0, 0, 0]);
        boxes.push([
          ...box(lm, 48, 68, region!, R, 0.25),
          ...box(lm, 36, 42, region!, R, 0.3),
          ...box(lm, 42, 48, region!, R, 0.3),
        ]);
      },
    });
  } catch (err) {
    // A clip whose first frame shows no face cannot be a portrait: it is skipped (and remembered as such).
    if (!(err instanceof AppError && err.code === 'NO_FACE')) throw err;
    noFace = true;
  } finally {
    engine.close();
  }
  if (noFace || !region || frames.length === 0) {
    chunks.length = 0;
    frames.length = 0;
    boxes.length = 0;
    align.length = 0;
  } else if (canvas) {
    chunks.push(Buffer.from(canvas));
  }
  const name = path.parse(clip).name;
  await mkdir(cacheDir, { recursive: true });
  const meta: ClipMeta = {
    version: DATASET_VERSION,
    clip: path.basename(clip),
    sha256: await sha256File(clip),
    size: R,
    frames,
    boxes,
    align,
    canvasScale: CANVAS_SCALE,
    region: region ?? { x0: 0, y0: 0, w: 0, h: 0 },
    fps: info.fps,
    buildMs: Math.round(performance.now() - t0),
  };
  const bin = path.join(cacheDir, `${name}.bin`);
  const json = path.join(cacheDir, `${name}.json`);
  await writeFile(`${bin}.partial`, Buffer.concat(chunks));
  await rename(`${bin}.partial`, bin);
  // The meta is written last: a clip counts as cached only once both files are complete.
  await writeFile(`${json}.partial`, JSON.stringify(meta));
  await rename(`${json}.partial`, json);
  await rm(`${bin}.partial`, { force: true });
  return meta;
}
