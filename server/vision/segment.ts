/**
 * Person segmentation of a still portrait: MediaPipe's selfie segmentation network (256 x 256 RGB in [0, 1], one
 * sigmoid probability per pixel), converted to ONNX by the project's converter at set-up (models/face/selfie.onnx,
 * pinned in models/face/sources.json like the tracker's networks; models/face/README.md). The default engine uses it
 * once per portrait to cut the head (face, hair, ears, hat or veil) from the background, so that the head can move
 * as one piece over a background plate (engines/default/headLayer.ts).
 *
 * It reads photos, paintings, cartoons and anime alike well enough for a layer mask (the network was trained on
 * webcam selfies; hair and hats are part of the person). A missing or altered file is refused with
 * FACE_MODEL_INVALID, never half loaded.
 */
import path from 'node:path';
import type { RgbImage } from '../types/image.js';
import { AppError } from '../errors.js';
import { OnnxModel, Tensor } from '../inference/onnx.js';
import { defaultMeshModelDir, loadChecked, pinnedHashes } from './mesh/models.js';

/** A person mask: probability 0..1 per pixel, row-major, `size` x `size` over the whole (stretched) picture. */
export interface PersonMask {
  size: number;
  data: Float32Array;
}

export class PersonSegmenter {
  readonly #model: OnnxModel;
  readonly #size: number;
  readonly #input: string;
  readonly #output: string;
  #closed = false;

  private constructor(model: OnnxModel) {
    this.#model = model;
    const shape = model.inputs[0]?.shape ?? [];
    const side = shape[1];
    if (shape.length !== 4 || typeof side !== 'number' || shape[2] !== side || shape[3] !== 3)
      throw new AppError(
        'FACE_MODEL_INVALID',
        `${path.basename(model.file)}: expected a square NHWC RGB input, got [${shape.join(', ')}]`,
      );
    this.#size = side;
    this.#input = model.inputNames[0]!;
    this.#output = model.outputNames[0]!;
  }

  /** Verifies and loads models/face/selfie.onnx (or `dir`'s). @throws AppError FACE_MODEL_INVALID */
  static async load(dir = defaultMeshModelDir()): Promise<PersonSegmenter> {
    loadChecked(dir, 'selfie', pinnedHashes(dir));
    let model: OnnxModel;
    try {
      model = await OnnxModel.load(path.join(dir, 'selfie.onnx'), { executionProvider: 'cpu', intraOpThreads: 1 });
    } catch (err) {
      throw new AppError('FACE_MODEL_INVALID', `cannot load the segmentation model in ${dir}`, { cause: err });
    }
    try {
      return new PersonSegmenter(model);
    } catch (err) {
      model.close();
      throw err;
    }
  }

  /** The network's input side (pixels). */
  get size(): number {
    return this.#size;
  }

  /** The person mask of `small`: the picture already scaled to size x size (aspect not kept). */
  segment(small: RgbImage): PersonMask {
    if (this.#closed) throw new Error('PersonSegmenter is closed');
    const n = this.#size;
    if (small.width !== n || small.height !== n) throw new TypeError(`segment: the picture must be ${n} x ${n}`);
    const x = new Float32Array(n * n * 3);
    for (let i = 0; i < x.length; i++) x[i] = small.data[i]! / 255;
    const res = this.#model.run({ [this.#input]: new Tensor('float32', x, [1, n, n, 3]) }, { [this.#output]: null });
    const out = res[this.#output]!;
    const data = Float32Array.from(out.data as Float32Array);
    if (data.length !== n * n)
      throw new AppError('FACE_MODEL_INVALID', `selfie.onnx: expected ${n * n} outputs, got ${data.length}`);
    for (let i = 0; i < data.length; i++) data[i] = Number.isFinite(data[i]!) ? Math.min(1, Math.max(0, data[i]!)) : 0;
    return { size: n, data };
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#model.close();
  }
}
