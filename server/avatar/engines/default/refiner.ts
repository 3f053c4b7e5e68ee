/**
 * The learned refiner at run time (models/refiner, trained by the models/tools/refiner package): an expression encoder on
 * the driving face and a few-step InDI refiner that turns the warp output into the real frame.
 *
 * Per portrait (prepare): the portrait's paste region resampled to R×R (the source) and the paste mask at R×R; for a
 * network whose manifest entry says "source": "aligned", also the portrait's canvas (refinerCrop.ts).
 * Per frame (run), after the warp has written the output frame:
 *   0. aligned networks: the source moved onto the warp's target head (the similarity of the control points);
 *   1. the driving face, FFHQ-aligned from the tracker's landmarks, grey 64×64 -> encoder -> expression code;
 *   2. the output's paste region -> RGB -> R×R (the warp image y);
 *   3. k InDI steps from t = 1: x <- (dt/t)·F(x, t | y, source, mask, code) + (1 - dt/t)·x, the last one x = F(...);
 *   4. the residual x - y, upsampled to the region, is added where the paste mask is non-zero, back into I420 (a
 *      network whose manifest entry says "residual": "features" keeps it around the eyes and the mouth only).
 * The same resampling as the training samples (refinerCrop.ts), so the network sees at run time what it saw in
 * training. All buffers are allocated in prepare(); run() allocates nothing.
 */
import type { GrayImage, I420Frame, RgbImage } from '../../../types/image.js';
import { ModelPackError } from '../../../errors.js';
import { ModelPack } from '../../../inference/modelPack.js';
import { Tensor, type OnnxModel } from '../../../inference/onnx.js';
import { ffhqCrop } from '../../../vision/faceCrop.js';
import type { PreparedFace } from './prepare.js';
import {
  canvasRegion,
  CANVAS_SCALE,
  featureMask,
  fitSourceAlignment,
  sampleAligned,
  sampleRegion,
  type AlignFace,
  type Region,
} from './refinerCrop.js';

/** Side of the driving crop the encoder reads. */
export const DRIVE_SIZE = 64;

interface RefinerState {
  region: Region;
  /** The paste region's bounds in the output frame (integers). */
  x0: number;
  y0: number;
  w: number;
  h: number;
  /** Paste mask at output resolution over the region (0..1). */
  pasteMask: Float32Array;
  /** The region grown by a 2 px margin (clamped to the frame), so that resampling near its border reads the same
   * neighbours as the training samples (which resampled the region from the whole frame). */
  ex0: number;
  ey0: number;
  regionRgb: RgbImage;
  crop: Uint8Array;
  drive: Float32Array;
  code: Float32Array;
  xt: Float32Array;
  warp: Float32Array;
  source: Float32Array;
  /** Aligned networks: the portrait's canvas (2R×2R RGB), the per-frame aligned source and its tensor. */
  canvas: Uint8Array | null;
  sourceAligned: Float32Array;
  sourceRegionT: Tensor;
  sourceAlignedT: Tensor;
  align: Float64Array;
  face: AlignFace;
  /** "residual": "features" networks: this frame's eye and mouth mask at R×R (null: the whole paste region). */
  features: Float32Array;
  useFeatures: boolean;
  mask: Float32Array;
  t: Float32Array;
  x0out: Float32Array;
  residual: Float32Array;
  /** Per output column of the region: the two residual columns and the weight of the second (bilinear taps). */
  rx0: Int32Array;
  rx1: Int32Array;
  rwx: Float32Array;
  encFeeds: Record<string, Tensor>;
  encFetches: Record<string, Tensor | null>;
  feeds: Record<string, Tensor>;
  fetches: Record<string, Tensor | null>;
}

/** Bilinear sample of a grey image at (x, y), clamped to the edges. */
function grayAt(g: GrayImage, x: number, y: number): number {
  const cx = Math.min(g.width - 1, Math.max(0, x));
  const cy = Math.min(g.height - 1, Math.max(0, y));
  const x0 = Math.floor(cx);
  const y0 = Math.floor(cy);
  const x1 = Math.min(g.width - 1, x0 + 1);
  const y1 = Math.min(g.height - 1, y0 + 1);
  const fx = cx - x0;
  const fy = cy - y0;
  const d = g.data;
  const w = g.width;
  return (
    (1 - fy) * ((1 - fx) * d[y0 * w + x0]! + fx * d[y0 * w + x1]!) +
    fy * ((1 - fx) * d[y1 * w + x0]! + fx * d[y1 * w + x1]!)
  );
}

export class LearnedRefiner {
  readonly #pack: ModelPack;
  readonly #encoder: OnnxModel;
  /** The step networks: the model, whether it reads the aligned source, whether its change stays around the eyes and
   * the mouth (the manifest entry's "source" and "residual"). */
  readonly #nets: Map<'student' | 'teacher', { model: OnnxModel; aligned: boolean; features: boolean }>;
  /** Crop side R. */
  readonly size: number;
  /** The pack's default number of steps. */
  readonly defaultSteps: number;
  #state: RefinerState | null = null;

  private constructor(pack: ModelPack) {
    this.#pack = pack;
    this.#encoder = pack.model('encoder');
    const net = (role: string): { model: OnnxModel; aligned: boolean; features: boolean } => {
      const f = pack.file(role);
      return { model: pack.model(role), aligned: f.source === 'aligned', features: f.residual === 'features' };
    };
    this.#nets = new Map([['student', net('refiner')]]);
    if (pack.manifest.files.some((f) => f.role === 'refiner_teacher'))
      this.#nets.set('teacher', net('refiner_teacher'));
    this.size = pack.manifest.resolution;
    this.defaultSteps = pack.manifest.steps;
    const code = pack.file('encoder').outputs[0]?.shape[1];
    const xt = pack.file('refiner').inputs.find((v) => v.name === 'xt')?.shape;
    if (typeof code !== 'number' || !xt || xt[2] !== this.size || xt[3] !== this.size) {
      throw new ModelPackError(
        pack.name,
        'manifest.json',
        'refiner pack: encoder "code" or refiner "xt" shape does not match the resolution',
      );
    }
  }

  /** Loads and validates the refiner pack (ModelPackError when broken). */
  static async load(
    dir: string,
    options: { executionProvider: 'cpu' | 'cuda'; intraOpThreads: number },
  ): Promise<LearnedRefiner> {
    const pack = await ModelPack.load(dir, options);
    try {
      for (const role of ['encoder', 'refiner']) pack.model(role);
      return new LearnedRefiner(pack);
    } catch (err) {
      pack.close();
      throw err;
    }
  }

  get packName(): string {
    return this.#pack.name;
  }

  get hasTeacher(): boolean {
    return this.#nets.has('teacher');
  }

  /** Per-portrait work: the source crop, the mask, and every per-frame buffer. `portrait` is the original image. */
  prepare(portrait: RgbImage, face: PreparedFace): void {
    const R = this.size;
    const kx = portrait.width / face.width;
    const ky = portrait.height / face.height;
    const { x0, y0, w, h } = face.paste;
    const region: Region = { x0: x0 * kx, y0: y0 * ky, w: w * kx, h: h * ky };
    const crop = new Uint8Array(R * R * 3);
    sampleRegion(portrait, region, R, crop);
    const source = new Float32Array(3 * R * R);
    toPlanar(crop, source, R);
    let canvas: Uint8Array | null = null;
    if ([...this.#nets.values()].some((n) => n.aligned)) {
      const C = CANVAS_SCALE * R;
      canvas = sampleRegion(portrait, canvasRegion(region), C, new Uint8Array(C * C * 3));
    }
    const sourceAligned = new Float32Array(3 * R * R);
    const mask = new Float32Array(R * R);
    for (let v = 0; v < R; v++) {
      for (let u = 0; u < R; u++) {
        const mx = Math.min(w - 1, Math.floor(((u + 0.5) * w) / R));
        const my = Math.min(h - 1, Math.floor(((v + 0.5) * h) / R));
        // Quantised as the training cache stores it.
        mask[v * R + u] = Math.round(255 * face.pasteMask[my * w + mx]!) / 255;
      }
    }
    const codeLen = this.#pack.file('encoder').outputs[0]!.shape[1] as number;
    const drive = new Float32Array(DRIVE_SIZE * DRIVE_SIZE);
    const code = new Float32Array(codeLen);
    const xt = new Float32Array(3 * R * R);
    const warp = new Float32Array(3 * R * R);
    const t = new Float32Array(1);
    const x0out = new Float32Array(3 * R * R);
    const img = [1, 3, R, R];
    const rx0 = new Int32Array(w);
    const rx1 = new Int32Array(w);
    const rwx = new Float32Array(w);
    for (let x = 0; x < w; x++) {
      const fx = Math.min(R - 1, Math.max(0, ((x + 0.5) * R) / w - 0.5));
      rx0[x] = Math.floor(fx);
      rx1[x] = Math.min(R - 1, rx0[x]! + 1);
      rwx[x] = fx - rx0[x]!;
    }
    const sourceRegionT = new Tensor('float32', source, img);
    const ex0 = Math.max(0, x0 - 2);
    const ey0 = Math.max(0, y0 - 2);
    const ew = Math.min(face.width, x0 + w + 2) - ex0;
    const eh = Math.min(face.height, y0 + h + 2) - ey0;
    this.#state = {
      region: { x0, y0, w, h },
      x0,
      y0,
      w,
      h,
      pasteMask: face.pasteMask,
      ex0,
      ey0,
      regionRgb: { width: ew, height: eh, data: new Uint8Array(ew * eh * 3) },
      crop: new Uint8Array(R * R * 3),
      drive,
      code,
      xt,
      warp,
      source,
      canvas,
      sourceAligned,
      sourceRegionT,
      sourceAlignedT: new Tensor('float32', sourceAligned, img),
      align: new Float64Array(4),
      face: { ctrlSource: face.ctrlSource, paste: face.paste },
      features: new Float32Array(R * R),
      useFeatures: false,
      mask,
      t,
      x0out,
      residual: new Float32Array(3 * R * R),
      rx0,
      rx1,
      rwx,
      encFeeds: { drive: new Tensor('float32', drive, [1, 1, DRIVE_SIZE, DRIVE_SIZE]) },
      encFetches: { code: new Tensor('float32', code, [1, codeLen]) },
      feeds: {
        xt: new Tensor('float32', xt, img),
        warp: new Tensor('float32', warp, img),
        source: sourceRegionT,
        mask: new Tensor('float32', mask, [1, 1, R, R]),
        t: new Tensor('float32', t, [1, 1]),
        code: new Tensor('float32', code, [1, codeLen]),
      },
      fetches: { x0: new Tensor('float32', x0out, img) },
    };
  }

  /**
   * Refines `out` (the warp output, I420 at the prepared size) in place with `steps` InDI steps. `driving` is the
   * grey driving frame and `landmarks` its 68 tracked points (null: no face, and the frame is left as the warp made
   * it: there is no expression to read). `net` picks the student (default) or the teacher. `ctrl`: the warp's target
   * control points of this frame (grid units), which an aligned network's source follows (without them it reads the
   * portrait unmoved). Returns whether it ran.
   */
  run(
    out: I420Frame,
    driving: GrayImage,
    landmarks: ArrayLike<number> | null,
    steps: number,
    net: 'student' | 'teacher' = 'student',
    ctrl: ArrayLike<number> | null = null,
  ): boolean {
    const st = this.#state;
    if (!st || steps <= 0 || !landmarks) return false;
    const nn = this.#nets.get(net);
    if (!nn) return false;
    const model = nn.model;
    const R = this.size;
    // 0. The source this network reads.
    if (nn.aligned && st.canvas) {
      if (ctrl) fitSourceAlignment(st.face, ctrl, R, st.align);
      else st.align.set([1, 0, 0, 0]);
      sampleAligned(st.canvas, R, st.align, st.sourceAligned);
      st.feeds.source = st.sourceAlignedT;
    } else {
      st.feeds.source = st.sourceRegionT;
    }
    st.useFeatures = nn.features && ctrl !== null;
    if (st.useFeatures) featureMask(st.face, ctrl!, R, st.features);
    // 1. Expression code from the aligned driving face.
    const c = ffhqCrop(landmarks, DRIVE_SIZE);
    for (let v = 0; v < DRIVE_SIZE; v++) {
      for (let u = 0; u < DRIVE_SIZE; u++) {
        const x = c.ox + (u + 0.5) * c.ax + (v + 0.5) * c.bx;
        const y = c.oy + (u + 0.5) * c.ay + (v + 0.5) * c.by;
        st.drive[v * DRIVE_SIZE + u] = Math.round(grayAt(driving, x, y)) / 255;
      }
    }
    this.#encoder.run(st.encFeeds, st.encFetches);
    // 2. The warp output's region, as the training samples saw it.
    regionToRgb(out, st.ex0, st.ey0, st.regionRgb.width, st.regionRgb.height, st.regionRgb);
    sampleRegion(st.regionRgb, { x0: st.x0 - st.ex0, y0: st.y0 - st.ey0, w: st.w, h: st.h }, R, st.crop);
    toPlanar(st.crop, st.warp, R);
    // 3. InDI steps from t = 1.
    st.xt.set(st.warp);
    for (let i = 0; i < steps; i++) {
      const t = 1 - i / steps;
      const dt = 1 / steps;
      st.t[0] = t;
      model.run(st.feeds, st.fetches);
      if (i === steps - 1) break;
      const a = dt / t;
      for (let j = 0; j < st.xt.length; j++) st.xt[j] = a * st.x0out[j]! + (1 - a) * st.xt[j]!;
    }
    // 4. Residual back into the frame.
    addResidual(out, st, R);
    return true;
  }

  close(): void {
    this.#state = null;
    this.#pack.close();
  }
}

function toPlanar(rgb: Uint8Array, out: Float32Array, R: number): void {
  const plane = R * R;
  for (let i = 0; i < plane; i++) {
    out[i] = rgb[3 * i]! / 255;
    out[plane + i] = rgb[3 * i + 1]! / 255;
    out[2 * plane + i] = rgb[3 * i + 2]! / 255;
  }
}

const clamp255 = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : Math.round(v));

/** The output frame's region as RGB, with the same integer BT.601 as util/image.ts i420ToRgb (exported for the parity test). */
export function regionToRgb(f: I420Frame, x0: number, y0: number, w: number, h: number, out: RgbImage): void {
  const W = f.width;
  const H = f.height;
  const cw = W >> 1;
  const uOff = W * H;
  const vOff = uOff + cw * (H >> 1);
  const d = f.data;
  for (let y = 0; y < h; y++) {
    const yy = y0 + y;
    for (let x = 0; x < w; x++) {
      const xx = x0 + x;
      // The same integer BT.601 as util/image.ts i420ToRgb (what the training samples went through).
      const c = 298 * (d[yy * W + xx]! - 16) + 128;
      const ci = (yy >> 1) * cw + (xx >> 1);
      const du = d[uOff + ci]! - 128;
      const dv = d[vOff + ci]! - 128;
      const o = (y * w + x) * 3;
      out.data[o] = clamp255((c + 409 * dv) >> 8);
      out.data[o + 1] = clamp255((c - 100 * du - 208 * dv) >> 8);
      out.data[o + 2] = clamp255((c + 516 * du) >> 8);
    }
  }
}

/** Adds the upsampled residual (x0out - warp) where the paste mask is non-zero, converting back to I420. */
function addResidual(f: I420Frame, st: RefinerState, R: number): void {
  const { x0, y0, w, h, pasteMask } = st;
  const W = f.width;
  const H = f.height;
  const cw = W >> 1;
  const uOff = W * H;
  const vOff = uOff + cw * (H >> 1);
  const d = f.data;
  const plane = R * R;
  const img = st.regionRgb.data;
  // regionRgb holds the grown region: pixel (x, y) of the paste region is at (x + ox, y + oy) there.
  const ew = st.regionRgb.width;
  const ox = x0 - st.ex0;
  const oy = y0 - st.ey0;
  // The residual x0out - warp, once per frame (not per output pixel).
  const res = st.residual;
  for (let i = 0; i < res.length; i++) res[i] = st.x0out[i]! - st.warp[i]!;
  if (st.useFeatures) {
    // "residual": "features": the change is kept around the eyes and the mouth only.
    const fm = st.features;
    for (let base = 0; base < res.length; base += plane)
      for (let i = 0; i < plane; i++) res[base + i] = res[base + i]! * fm[i]!;
  }
  // New RGB of the region in regionRgb (only where the mask is non-zero): bilinear upsampling of the residual with
  // the column taps precomputed in prepare().
  const { rx0, rx1, rwx } = st;
  for (let y = 0; y < h; y++) {
    const fy = Math.min(R - 1, Math.max(0, ((y + 0.5) * R) / h - 0.5));
    const ry0 = Math.floor(fy);
    const r0 = ry0 * R;
    const r1 = Math.min(R - 1, ry0 + 1) * R;
    const wy = fy - ry0;
    for (let x = 0; x < w; x++) {
      const m = pasteMask[y * w + x]!;
      if (m <= 0) continue;
      const a = rx0[x]!;
      const b = rx1[x]!;
      const wx = rwx[x]!;
      const w00 = (1 - wy) * (1 - wx) * 255 * m;
      const w01 = (1 - wy) * wx * 255 * m;
      const w10 = wy * (1 - wx) * 255 * m;
      const w11 = wy * wx * 255 * m;
      const o = ((y + oy) * ew + x + ox) * 3;
      for (let ch = 0, base = 0; ch < 3; ch++, base += plane) {
        const delta =
          w00 * res[base + r0 + a]! + w01 * res[base + r0 + b]! + w10 * res[base + r1 + a]! + w11 * res[base + r1 + b]!;
        img[o + ch] = clamp255(img[o + ch]! + delta);
      }
    }
  }
  // Back to I420: luma per pixel, chroma per 2×2 block, only where the mask is non-zero.
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (pasteMask[y * w + x]! <= 0) continue;
      const o = ((y + oy) * ew + x + ox) * 3;
      d[(y0 + y) * W + x0 + x] = ((66 * img[o]! + 129 * img[o + 1]! + 25 * img[o + 2]! + 128) >> 8) + 16;
    }
  }
  for (let y = 0; y + 1 < h; y += 2) {
    for (let x = 0; x + 1 < w; x += 2) {
      if (pasteMask[y * w + x]! <= 0 && pasteMask[(y + 1) * w + x + 1]! <= 0) continue;
      let r = 0;
      let g = 0;
      let b = 0;
      for (const [dx, dy] of [
        [0, 0],
        [1, 0],
        [0, 1],
        [1, 1],
      ] as const) {
        const o = ((y + dy + oy) * ew + x + dx + ox) * 3;
        r += img[o]!;
        g += img[o + 1]!;
        b += img[o + 2]!;
      }
      r = (r + 2) >> 2;
      g = (g + 2) >> 2;
      b = (b + 2) >> 2;
      const ci = ((y0 + y) >> 1) * cw + ((x0 + x) >> 1);
      d[uOff + ci] = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
      d[vOff + ci] = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    }
  }
}
