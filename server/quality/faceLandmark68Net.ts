/**
 * The 68-point face landmark network of `@vladmandic/face-api` 1.7.15 (MIT; the FaceLandmark68Net of face-api.js:
 * four densely connected blocks of depthwise-separable convolutions on a 112×112 face crop, average pooling and one
 * fully connected layer giving 68 (x, y) points in iBUG order), run with TensorFlow.js ops on whatever backend the
 * caller's `tf` has (the face model workers: the WASM backend that `@vladmandic/human` already loaded).
 *
 * Why not face-api's own classes: its Node builds `require('@tensorflow/tfjs')` (the whole union package, not a
 * dependency here) and call chained tensor methods (`t.as4D()`, `t.sub()`) that the tfjs-core build shared with human
 * does not register. The forward pass is ~40 lines of core ops, so it is written out here, step for step as in
 * face-api's src/faceFeatureExtractor/FaceFeatureExtractor.ts, denseBlock.ts, common/depthwiseSeparableConv.ts,
 * faceProcessor/FaceProcessor.ts and faceLandmarkNet/FaceLandmark68NetBase.ts. Its input handling (the box clipped
 * to the image and floored, padded to a square with black, centred, bilinear resize to 112 without antialiasing, mean
 * RGB subtracted, / 255) is done in plain JS on the RGB bytes (prepareInput), sampling exactly where tfjs's
 * resizeBilinear samples: as tfjs ops on a whole face crop it took 5-10 ms per face on WASM, in JS ~0.3 ms.
 * tests/quality/landmarks68.test.ts checks the whole against face-api's own code.
 *
 * The weights are decoded from the package's model/face_landmark_68_model-weights_manifest.json + .bin, which the
 * pool has checked against pinned sha256s (faceModels.ts); nothing is fetched.
 */
import type * as Tf from '@tensorflow/tfjs-core';
import { AppError } from '../errors.js';

/** The tfjs-core namespace the net runs with. */
export type Tfjs = typeof Tf;

/** Side of the network's square input. */
export const LM68_INPUT_SIZE = 112;
/** Mean RGB subtracted from the input (face-api's FaceFeatureExtractor). */
const MEAN_RGB: number[] = [122.782, 117.001, 104.298];

/** An interleaved 8-bit RGB image (RgbImage fits). */
export interface RgbBytes {
  width: number;
  height: number;
  data: Uint8Array;
}

/** The face crop inside the image that the network saw: integer pixels, after clipping. */
export interface CropBox {
  x: number;
  y: number;
  w: number;
  h: number;
}

/**
 * The network input for the face in `box` ([x, y, w, h], image pixels), as face-api builds it from an image tensor:
 * the box clipped to the image and floored (Box.clipAtImageBorders), padded with black to a square (round(diff / 2)
 * after the crop on the short axis, the rest before it: padToSquare(…, true)), resized to 112×112 by tfjs's
 * resizeBilinear (alignCorners and halfPixelCenters false: source = destination × side / 112, the neighbours
 * clamped), mean RGB subtracted and / 255. Writes [112, 112, 3] floats into `out`; returns the crop, or null when the
 * clipped box is empty.
 */
export function prepareInput(
  img: RgbBytes,
  box: readonly [number, number, number, number],
  out: Float32Array,
): CropBox | null {
  const n = LM68_INPUT_SIZE;
  if (out.length !== n * n * 3) throw new TypeError(`prepareInput: out must hold ${n}x${n}x3 floats`);
  if (img.data.length !== img.width * img.height * 3)
    throw new TypeError('prepareInput: image data length does not match width x height x 3');
  // Box.clipAtImageBorders(): clip the left/top edge, keep the right/bottom edge, then floor.
  const cx = Math.max(box[0], 0);
  const cy = Math.max(box[1], 0);
  const x = Math.floor(cx);
  const y = Math.floor(cy);
  const w = Math.floor(Math.min(box[0] + box[2] - cx, img.width - cx));
  const h = Math.floor(Math.min(box[1] + box[3] - cy, img.height - cy));
  if (!(w >= 1 && h >= 1)) return null;
  const side = Math.max(w, h);
  const before = Math.abs(w - h) - Math.round(Math.abs(w - h) / 2);
  const padX = h > w ? before : 0;
  const padY = w > h ? before : 0;
  const ratio = side / n;
  const { data, width } = img;
  // The padded square's pixel (row, col), channel ch: black outside the crop.
  const at = (row: number, col: number, ch: number): number => {
    const r = row - padY;
    const c = col - padX;
    return r >= 0 && r < h && c >= 0 && c < w ? data[((y + r) * width + x + c) * 3 + ch]! : 0;
  };
  let o = 0;
  for (let r = 0; r < n; r++) {
    const fr = ratio * r;
    const r0 = Math.max(0, Math.floor(fr));
    const rf = fr - r0;
    const r1 = Math.min(side - 1, Math.ceil(fr));
    for (let c = 0; c < n; c++) {
      const fc = ratio * c;
      const c0 = Math.max(0, Math.floor(fc));
      const cf = fc - c0;
      const c1 = Math.min(side - 1, Math.ceil(fc));
      for (let ch = 0; ch < 3; ch++) {
        const tl = at(r0, c0, ch);
        const tr = at(r0, c1, ch);
        const bl = at(r1, c0, ch);
        const br = at(r1, c1, ch);
        const top = tl + (tr - tl) * cf;
        const bottom = bl + (br - bl) * cf;
        out[o++] = (top + (bottom - top) * rf - MEAN_RGB[ch]!) / 255;
      }
    }
  }
  return { x, y, w, h };
}

/** One weight group of a tfjs weights manifest (the fields used here). */
interface ManifestGroup {
  paths: string[];
  weights: Tf.io.WeightsManifestEntry[];
}

/** The weight names the network reads, with their shapes. */
function expectedWeights(): Map<string, number[]> {
  const m = new Map<string, number[]>();
  // dense0: a plain 3×3 convolution 3 → 32, then three separable convolutions; dense1-3 widen to 64, 128, 256.
  const widths = [32, 64, 128, 256];
  let cin = 3;
  widths.forEach((c, b) => {
    for (let k = 0; k < 4; k++) {
      const p = `dense${b}/conv${k}`;
      const inC = k === 0 ? cin : c;
      if (b === 0 && k === 0) m.set(`${p}/filters`, [3, 3, inC, c]);
      else {
        m.set(`${p}/depthwise_filter`, [3, 3, inC, 1]);
        m.set(`${p}/pointwise_filter`, [1, 1, inC, c]);
      }
      m.set(`${p}/bias`, [c]);
    }
    cin = c;
  });
  m.set('fc/weights', [256, 136]);
  m.set('fc/bias', [136]);
  return m;
}

/**
 * The loaded network. `detect()` is synchronous (it reads the result with dataSync, fine on the CPU and WASM
 * backends the workers use). Not thread-safe: one per worker.
 */
export class FaceLandmark68Net {
  readonly #tf: Tfjs;
  readonly #w: Map<string, Tf.Tensor>;
  /** The input, reused from face to face. */
  readonly #input = new Float32Array(LM68_INPUT_SIZE * LM68_INPUT_SIZE * 3);
  #closed = false;

  private constructor(tf: Tfjs, weights: Map<string, Tf.Tensor>) {
    this.#tf = tf;
    this.#w = weights;
  }

  /**
   * Decodes the weights from a parsed weights manifest and the bytes of its one .bin file.
   * @throws AppError('FACE_MODEL_INVALID') when the manifest or the weights are not those of the 68-point net.
   */
  static fromWeights(tf: Tfjs, manifest: unknown, bin: Uint8Array): FaceLandmark68Net {
    const groups = manifest as ManifestGroup[];
    if (
      !Array.isArray(groups) ||
      groups.length !== 1 ||
      !Array.isArray(groups[0]?.weights) ||
      groups[0].paths?.length !== 1
    ) {
      throw new AppError(
        'FACE_MODEL_INVALID',
        '68-point landmark manifest: expected one weight group with one .bin file',
      );
    }
    const buf = bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength) as ArrayBuffer;
    let map: Tf.NamedTensorMap;
    try {
      map = tf.io.decodeWeights(buf, groups[0].weights);
    } catch (err) {
      throw new AppError(
        'FACE_MODEL_INVALID',
        `68-point landmark weights do not decode: ${err instanceof Error ? err.message : String(err)}`,
        { cause: err },
      );
    }
    const weights = new Map<string, Tf.Tensor>();
    try {
      for (const [name, shape] of expectedWeights()) {
        const t = map[name];
        if (!t || t.shape.join('x') !== shape.join('x')) {
          throw new AppError(
            'FACE_MODEL_INVALID',
            `68-point landmark weights: ${name} ${t ? `has shape ${t.shape.join('x')}` : 'is missing'}, expected ${shape.join('x')}`,
          );
        }
        weights.set(name, t);
      }
    } catch (err) {
      tf.dispose(Object.values(map));
      throw err;
    }
    // Weights the network does not read (none in 1.7.15) are released.
    tf.dispose(
      Object.entries(map)
        .filter(([k]) => !weights.has(k))
        .map(([, t]) => t),
    );
    return new FaceLandmark68Net(tf, weights);
  }

  get closed(): boolean {
    return this.#closed;
  }

  #p(name: string): Tf.Tensor {
    return this.#w.get(name)!;
  }

  #separable(x: Tf.Tensor4D, p: string, stride: 1 | 2): Tf.Tensor4D {
    const tf = this.#tf;
    const dw = this.#p(`${p}/depthwise_filter`) as Tf.Tensor4D;
    const pw = this.#p(`${p}/pointwise_filter`) as Tf.Tensor4D;
    return tf.add(tf.separableConv2d(x, dw, pw, stride, 'same'), this.#p(`${p}/bias`));
  }

  /** face-api's denseBlock4: four convolutions, each fed the sum of the earlier outputs. */
  #denseBlock(x: Tf.Tensor4D, b: number): Tf.Tensor4D {
    const tf = this.#tf;
    const p = `dense${b}`;
    const out1 = tf.relu(
      b === 0
        ? tf.add<Tf.Tensor4D>(
            tf.conv2d(x, this.#p(`${p}/conv0/filters`) as Tf.Tensor4D, 2, 'same'),
            this.#p(`${p}/conv0/bias`),
          )
        : this.#separable(x, `${p}/conv0`, 2),
    );
    const out2 = this.#separable(out1, `${p}/conv1`, 1);
    // a + (b + (c + d)), in face-api's order.
    const sum = (...t: Tf.Tensor4D[]): Tf.Tensor4D => t.reduceRight((acc, v) => tf.add(v, acc));
    const out3 = this.#separable(tf.relu(sum(out1, out2)), `${p}/conv2`, 1);
    const out4 = this.#separable(tf.relu(sum(out1, out2, out3)), `${p}/conv3`, 1);
    return tf.relu(sum(out1, out2, out3, out4));
  }

  /**
   * The 68 points (flat x, y in image pixels, iBUG order) of the face in `box` ([x, y, w, h], image pixels; clipped
   * to the image and floored as face-api does) of an RGB image. null when the clipped box is empty.
   */
  detect(img: RgbBytes, box: readonly [number, number, number, number]): Float32Array | null {
    if (this.#closed) throw new AppError('INVALID_STATE', 'the 68-point landmark net is closed');
    const tf = this.#tf;
    const crop = prepareInput(img, box, this.#input);
    if (!crop) return null;
    const out = tf.tidy(() => {
      let f = tf.tensor4d(this.#input, [1, LM68_INPUT_SIZE, LM68_INPUT_SIZE, 3], 'float32');
      for (let b = 0; b < 4; b++) f = this.#denseBlock(f, b);
      f = tf.avgPool(f, [7, 7], [2, 2], 'valid');
      return tf.add(tf.matMul(tf.reshape(f, [1, -1]), this.#p('fc/weights') as Tf.Tensor2D), this.#p('fc/bias'));
    });
    let raw: Float32Array;
    try {
      raw = out.dataSync() as Float32Array;
    } finally {
      out.dispose();
    }
    // The outputs are relative to the padded square: back to the box, then to the image (FaceLandmark68NetBase).
    const { x, y, w, h } = crop;
    const side = Math.max(w, h);
    const padX = w < h ? (h - w) / 2 : 0;
    const padY = h < w ? (w - h) / 2 : 0;
    const pts = new Float32Array(136);
    for (let i = 0; i < 68; i++) {
      pts[2 * i] = x + raw[2 * i]! * side - padX;
      pts[2 * i + 1] = y + raw[2 * i + 1]! * side - padY;
    }
    return pts;
  }

  /** Releases the weights. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#tf.dispose([...this.#w.values()]);
    this.#w.clear();
  }
}
