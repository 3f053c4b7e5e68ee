/**
 * Fast face detection for the live path, built on the exact OpenCV cascade port (cascade.ts).
 *
 * Why these settings (24 reference frames at 640x480, 342 frames of the 10 shared clips, 16 shared portraits; see
 * tests/vision/detector.test.ts and benchmarks/tracking.ts; CPU ms on this shared 2-vCPU VM at load ~4-5):
 * - OpenCV's own settings (Haar, scaleFactor 1.1, minSize 48, full resolution) cost ~370 ms per frame in JS
 *   (OpenCV: ~45 ms) and add 2 false positives (dog, afro painting).
 * - The reference faces are >= 60 px at 640x480, so the frame is searched at half resolution (a 24 px Haar window
 *   = 48 px in the frame; minSize 28 = 56 px) with scaleFactor 1.2 and step 2 at every scale: ~14x fewer windows.
 * - A coarse-to-fine scan (the first 12 stages on a step-4 grid with OpenCV's stage-0 skip, the whole cascade at
 *   the step-2 positions next to the survivors) cuts the work by another ~2.5x (7 coarse stages: same faces, ~20%
 *   slower; 10 stages or more without a second pass lose 2 reference faces).
 * - minNeighbors 1 (a face needs 2 raw hits), and a denser second pass (scaleFactor 1.1) only when the first finds
 *   nothing: every reference face, every sampled clip frame and every portrait is found, no false positive.
 * - Large sizes first: the windows of >= 70 working pixels (faces of ~140 px and more in a 640x480 frame; the
 *   shared clips' faces are 150-350 px) are scanned first, the smaller sizes only when those give no face, their
 *   raw hits then grouped with the first ones (the same result as one scan over all sizes). ~13 ms CPU per frame
 *   before, ~4 ms CPU after on the shared clips' frames (Mona Lisa-size faces, ~73 px, pay both phases).
 * - Result: ~4 ms CPU per 640x480 frame with a webcam-size face (the stump loop is ~75% of it), ~90x less than
 *   the OpenCV settings in JS. LBP was tried the same way (it needs a 45 px window, i.e. a larger working image)
 *   and lost 3-4 faces, including the 3/4-profile Vermeer, at a higher cost.
 * Boxes are mapped to dlib-HOG-like boxes (what the 68-point model expects) with FORMAT.md §6.3's form
 * `l = x + a*w, t = y + b*h, side = s*w`, constants refit for these settings (see BOX_MAP).
 */
import {
  CASCADE_PATHS,
  CascadeClassifier,
  finishDetections,
  type CascadeDetections,
  type CvRect,
  type DetectParams,
} from './cascade.js';
import { downscale2x, resizeGray, sampleRegion } from './imageOps.js';
import type { Box } from './types.js';
import type { GrayImage } from '../types/image.js';

/** One detected face. */
export interface DetectedFace {
  /** dlib-convention box (inclusive corners), for the shape predictor. */
  box: Box;
  /** The cascade's own rectangle in frame pixels [x, y, w, h]. */
  rect: CvRect;
  /** Raw cascade hits grouped into this face (OpenCV's "neighbors"). */
  neighbors: number;
  /** 0..1, grows with the hit count: 1 - exp(-neighbors / 4). */
  score: number;
}

/** Options for FaceDetector.create. */
export interface FaceDetectorOptions {
  /** Haar cascade XML (default Debian's haarcascade_frontalface_default.xml). */
  cascadeFile?: string;
  /** LBP cascade XML for the still-image verification (default Debian's lbpcascade_frontalface_improved.xml). */
  verifyCascadeFile?: string;
  /** Smallest face searched by detect(), as a fraction of the frame's shorter side (default 56/480). */
  minFaceFraction?: number;
  /** Stages run on the coarse grid of the fast search before the fine grid is scanned (default 12). */
  coarseStages?: number;
  /** Skip the next coarse window after a stage-0 rejection (OpenCV's rule, on the coarse grid; default true). */
  coarseSkip?: boolean;
}

/** Options for one detect() call. */
export interface DetectOptions {
  /** Search only around this (dlib) box, at sizes 0.6-1.6x of it: the tracker's re-acquisition. */
  near?: Box;
  /**
   * Still-image mode: OpenCV's dense scan (scaleFactor 1.1, OpenCV steps, minNeighbors 3) on a working image whose
   * shorter side is at most 480 px, smallest face 5% of the shorter side, and every face confirmed by the LBP
   * cascade (at least one raw LBP hit on the same face). Slower (~0.1-0.5 s), for portraits.
   */
  thorough?: boolean;
}

/**
 * Cascade rect -> dlib box: l = x + a*w, t = y + b*h, side = s*w (FORMAT.md §6.3 form). The fast scan's groups
 * average fewer, coarser hits than OpenCV's, so the constants were refit on the 23 reference faces against dlib's
 * HOG boxes; the thorough scan uses the constants measured for OpenCV's own Haar output on those frames.
 */
export const BOX_MAP = {
  fast: { a: 0.055, b: 0.148, s: 0.885 },
  thorough: { a: 0.059, b: 0.157, s: 0.867 },
} as const;

const WINDOW = 24;
/**
 * Smallest window (working-image pixels) of the fast search's first phase: ~2.4x the cascade window, i.e. faces of
 * ~140 px and more in a 640x480 frame (the shared clips' faces are 150-350 px). 58 (faces >= ~115 px): 5.4 ms CPU
 * per clip frame; 70: 4.1 ms; both find every reference and clip face.
 */
const LARGE_FACE_WINDOW = 70;

/**
 * Face detector. Not thread-safe: scan buffers are reused between calls (one instance per worker / session).
 */
export class FaceDetector {
  readonly #cascade: CascadeClassifier;
  readonly #minFaceFraction: number;
  readonly #coarseStages: number;
  readonly #coarseSkip: boolean;
  #work: GrayImage = { width: 0, height: 0, data: new Uint8Array(0) };
  #half: GrayImage = { width: 0, height: 0, data: new Uint8Array(0) };
  #nearImg: GrayImage = { width: 0, height: 0, data: new Uint8Array(0) };

  readonly #lbp: CascadeClassifier;
  #verifyImg: GrayImage = { width: 0, height: 0, data: new Uint8Array(0) };

  private constructor(cascade: CascadeClassifier, lbp: CascadeClassifier, opts: FaceDetectorOptions) {
    this.#cascade = cascade;
    this.#lbp = lbp;
    this.#minFaceFraction = opts.minFaceFraction ?? 56 / 480;
    this.#coarseStages = opts.coarseStages ?? 12;
    this.#coarseSkip = opts.coarseSkip ?? true;
  }

  /** Loads the cascade. */
  static async create(opts: FaceDetectorOptions = {}): Promise<FaceDetector> {
    const [cascade, lbp] = await Promise.all([
      CascadeClassifier.load(opts.cascadeFile ?? CASCADE_PATHS.haar),
      CascadeClassifier.load(opts.verifyCascadeFile ?? CASCADE_PATHS.lbp),
    ]);
    if (cascade.model.type !== 'HAAR') throw new TypeError('FaceDetector needs a HAAR cascade');
    if (lbp.model.type !== 'LBP') throw new TypeError('FaceDetector needs an LBP cascade for verification');
    return new FaceDetector(cascade, lbp, opts);
  }

  /** The underlying cascade (exact OpenCV detectMultiScale). */
  get cascade(): CascadeClassifier {
    return this.#cascade;
  }

  /** Faces sorted by score (then size), highest first. Empty for images smaller than the cascade window. */
  detect(img: GrayImage, opts: DetectOptions = {}): DetectedFace[] {
    if (img.width < WINDOW || img.height < WINDOW) return [];
    if (opts.near) return this.#detectNear(img, opts.near);
    return opts.thorough ? this.#detectThorough(img) : this.#detectFast(img);
  }

  #detectFast(img: GrayImage): DetectedFace[] {
    const minSide = Math.min(img.width, img.height);
    // Downscale so that the smallest face wanted is ~28 px (a bit above the 24 px window).
    const d = Math.max(1, (this.#minFaceFraction * minSide) / 28);
    const work = this.#downscale(img, d);
    const params: DetectParams = {
      scaleFactor: 1.2,
      minNeighbors: 1,
      minSize: 28,
      stepSmall: 2,
      stepLarge: 2,
      coarse: { stages: this.#coarseStages, skip: this.#coarseSkip },
    };
    const faces = this.#largeFirst(work, img, params);
    if (faces.length > 0) return faces;
    // Second pass, only when the first found nothing: twice the scales. On the shared clips and portraits the first
    // pass misses ~1 frame in 10 of the hardest clip (a face gets a single raw hit) and two small cartoons; this
    // pass finds them all (3-7 hits). It doubles the cost of frames without a face, not of frames with one.
    return this.#largeFirst(work, img, { ...params, scaleFactor: 1.1, coarse: { stages: 7 } });
  }

  /**
   * One fast scan, large faces first: a webcam face fills a good part of the frame, and the window sizes from
   * LARGE_FACE_WINDOW up hold a fraction of the windows (their pyramid levels are small). The small sizes are
   * scanned only when the large ones give no face, and their raw hits are then grouped together with the large
   * ones' hits, so that case gives the result of one scan over all sizes.
   */
  #largeFirst(work: GrayImage, img: GrayImage, params: DetectParams): DetectedFace[] {
    const minSize = params.minSize ?? 0;
    const minNeighbors = params.minNeighbors ?? 3;
    const split = Math.max(minSize, LARGE_FACE_WINDOW);
    const raw = this.#cascade.candidates(work, { ...params, minSize: split });
    const faces = this.#group(raw, work, img, minNeighbors, BOX_MAP.fast);
    if (faces.length > 0 || split <= minSize) return faces;
    for (const r of this.#cascade.candidates(work, { ...params, maxSize: split - 1 })) raw.push(r);
    return this.#group(raw, work, img, minNeighbors, BOX_MAP.fast);
  }

  #detectThorough(img: GrayImage): DetectedFace[] {
    const minSide = Math.min(img.width, img.height);
    const d = Math.max(1, minSide / 480);
    const work = this.#downscale(img, d);
    const minSize = Math.max(WINDOW, Math.round(0.05 * Math.min(work.width, work.height)));
    const faces = this.#run(work, img, { scaleFactor: 1.1, minNeighbors: 3, minSize }, BOX_MAP.thorough);
    return faces.filter((f) => this.lbpAgreement(img, f) > 0);
  }

  /**
   * Number of raw LBP-cascade hits (mapped to dlib boxes with FORMAT.md §6.3's LBP constants) that overlap the
   * face's box with IoU > 0.3. The two cascades fail on different things: on the reference frames the Haar false
   * positives (the dog, a patch of the afro painting) have 0 LBP hits, every true face 4 or more.
   */
  lbpAgreement(img: GrayImage, face: DetectedFace): number {
    const [x, y, w] = face.rect;
    // Resample a square of twice the Haar rect so that the face's LBP rect (~0.65 of the Haar rect) is ~52 px.
    const region = 2 * w;
    const N = 160;
    const x0 = x + w / 2 - region / 2;
    const y0 = y + w / 2 - region / 2;
    if (this.#verifyImg.data.length < N * N) this.#verifyImg = { width: N, height: N, data: new Uint8Array(N * N) };
    const crop = sampleRegion(img, x0, y0, region, N, this.#verifyImg, 127);
    const k = region / N;
    const res = this.#lbp.detectMultiScale(crop, { scaleFactor: 1.1, minNeighbors: 0, minSize: 45, maxSize: 120 });
    let n = 0;
    for (const r of res.rects) {
      const l = x0 + (r[0] - 0.165 * r[2]) * k;
      const t = y0 + (r[1] - 0.13 * r[3]) * k;
      const side = 1.332 * r[2] * k;
      if (boxIou(face.box, l, t, l + side, t + side) > 0.3) n++;
    }
    return n;
  }

  #detectNear(img: GrayImage, near: Box): DetectedFace[] {
    const side = Math.max(1, near.r - near.l, near.b - near.t);
    // The cascade rect is ~1/0.867 of the dlib box: search a square of 2.2 box sides around its centre, scaled so
    // that the expected cascade rect is ~40 px in a 88x88 working image.
    const cx = (near.l + near.r) / 2;
    const cy = (near.t + near.b) / 2;
    const region = Math.round(2.2 * side);
    const x0 = Math.round(cx - region / 2);
    const y0 = Math.round(cy - region / 2);
    const N = Math.min(88, region);
    const small = sampleRegion(img, x0, y0, region, N, this.#reuse('near', N, N), 127);
    const k = region / N;
    const expected = side / BOX_MAP.fast.s / k;
    const params: DetectParams = {
      scaleFactor: 1.2,
      minNeighbors: 1,
      minSize: Math.max(WINDOW, Math.floor(expected * 0.6)),
      maxSize: Math.ceil(expected * 1.6),
      stepSmall: 2,
      stepLarge: 2,
      coarse: { stages: 7 },
    };
    let res = this.#cascade.detectMultiScale(small, params);
    // As in the full-frame search: a denser second pass when the first finds nothing (cheap on an 88x88 image).
    if (res.rects.length === 0)
      res = this.#cascade.detectMultiScale(small, { ...params, scaleFactor: 1.1, coarse: undefined });
    const out: DetectedFace[] = [];
    res.rects.forEach((r, i) => {
      const rect: CvRect = [r[0] * k + x0, r[1] * k + y0, r[2] * k, r[3] * k];
      out.push(toFace(rect, res.neighbors[i]!, BOX_MAP.fast));
    });
    return sortFaces(out);
  }

  /**
   * Cheap "is the face still in this box?" test for the tracker: the first `stages` (default 12 of 25) Haar stages
   * at step-2 positions and three scales (0.85-1.2x) around the cascade rect expected for `box`. Returns the number
   * of windows that pass, up to 4 (the scan stops there; 0 = no face there).
   */
  verify(img: GrayImage, box: Box, stages = 12): number {
    const side = Math.max(1, box.r - box.l, box.b - box.t);
    const rectSide = side / BOX_MAP.fast.s;
    // Expected Haar rect centre: the dlib box starts a*w right of and b*w below the rect's corner.
    const rx = box.l - BOX_MAP.fast.a * rectSide;
    const ry = box.t - BOX_MAP.fast.b * rectSide;
    const cx = rx + rectSide / 2;
    const cy = ry + rectSide / 2;
    const region = 1.5 * rectSide;
    const N = Math.max(WINDOW + 2, Math.min(56, Math.round(region)));
    const small = sampleRegion(img, cx - region / 2, cy - region / 2, region, N, this.#reuse('near', N, N), 127);
    const expected = (rectSide * N) / region;
    const res = this.#cascade.detectMultiScale(small, {
      scaleFactor: 1.15,
      minNeighbors: 0,
      minSize: Math.max(WINDOW, Math.floor(expected * 0.85)),
      maxSize: Math.ceil(expected * 1.2),
      stepSmall: 2,
      stepLarge: 2,
      maxStages: stages,
      stopAfter: 4,
    });
    return res.rects.length;
  }

  #run(
    work: GrayImage,
    img: GrayImage,
    params: DetectParams,
    map: { a: number; b: number; s: number },
  ): DetectedFace[] {
    return this.#toFaces(this.#cascade.detectMultiScale(work, params), work, img, map);
  }

  #group(
    raw: readonly CvRect[],
    work: GrayImage,
    img: GrayImage,
    minNeighbors: number,
    map: { a: number; b: number; s: number },
  ): DetectedFace[] {
    return this.#toFaces(finishDetections(raw, minNeighbors, work.width, work.height), work, img, map);
  }

  #toFaces(
    res: CascadeDetections,
    work: GrayImage,
    img: GrayImage,
    map: { a: number; b: number; s: number },
  ): DetectedFace[] {
    const kx = img.width / work.width;
    const ky = img.height / work.height;
    const out: DetectedFace[] = [];
    res.rects.forEach((r, i) => {
      const rect: CvRect = [r[0] * kx, r[1] * ky, r[2] * kx, r[3] * ky];
      out.push(toFace(rect, res.neighbors[i]!, map));
    });
    return sortFaces(out);
  }

  #reuse(which: 'work' | 'half' | 'near', w: number, h: number): GrayImage {
    const field = which === 'work' ? this.#work : which === 'half' ? this.#half : this.#nearImg;
    if (field.data.length < w * h) {
      field.data = new Uint8Array(w * h);
    }
    field.width = w;
    field.height = h;
    return field;
  }

  /** Downscale by `d` >= 1: exact halvings first (fast box filter), then an area resize for the rest. */
  #downscale(img: GrayImage, d: number): GrayImage {
    if (d < 1.02) return img;
    let cur = img;
    let left = d;
    let useHalf = true;
    while (left >= 1.999) {
      const dst = this.#reuse(useHalf ? 'half' : 'work', cur.width >> 1, cur.height >> 1);
      // Alternate buffers: the source of a halving must not be its destination.
      cur = downscale2x(cur, dst);
      useHalf = !useHalf;
      left /= 2;
    }
    if (left < 1.02) return cur;
    const w = Math.max(1, Math.round(cur.width / left));
    const h = Math.max(1, Math.round(cur.height / left));
    return resizeGray(cur, w, h, this.#reuse(useHalf ? 'half' : 'work', w, h));
  }
}

function toFace(rect: CvRect, neighbors: number, map: { a: number; b: number; s: number }): DetectedFace {
  const [x, y, w, h] = rect;
  const l = Math.floor(x + map.a * w + 0.5);
  const t = Math.floor(y + map.b * h + 0.5);
  const side = Math.floor(map.s * w + 0.5);
  return {
    box: { l, t, r: l + side, b: t + side },
    rect: [Math.round(x), Math.round(y), Math.round(w), Math.round(h)],
    neighbors,
    score: 1 - Math.exp(-neighbors / 4),
  };
}

function boxIou(a: Box, l: number, t: number, r: number, b: number): number {
  const ix = Math.max(0, Math.min(a.r, r) - Math.max(a.l, l));
  const iy = Math.max(0, Math.min(a.b, b) - Math.max(a.t, t));
  const i = ix * iy;
  const u = (a.r - a.l) * (a.b - a.t) + (r - l) * (b - t) - i;
  return u > 0 ? i / u : 0;
}

/**
 * Sorts by hit count (then size) and drops a face that mostly lies on a better one: groupRectangles only removes
 * nested groups when the outer one has more than 3 hits, which the sparse fast scan rarely gives.
 */
function sortFaces(faces: DetectedFace[]): DetectedFace[] {
  faces.sort((p, q) => q.neighbors - p.neighbors || q.rect[2] - p.rect[2]);
  return faces.filter((f, i) => !faces.some((g, j) => j < i && overlapOfSmaller(f.box, g.box) > 0.6));
}

function overlapOfSmaller(a: Box, b: Box): number {
  const ix = Math.max(0, Math.min(a.r, b.r) - Math.max(a.l, b.l));
  const iy = Math.max(0, Math.min(a.b, b.b) - Math.max(a.t, b.t));
  const small = Math.min((a.r - a.l) * (a.b - a.t), (b.r - b.l) * (b.b - b.t));
  return small > 0 ? (ix * iy) / small : 0;
}
