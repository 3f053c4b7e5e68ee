/**
 * The face-perceptual distance (fpd) of the quality evaluation: how far apart two aligned face crops are in the
 * intermediate activations of the HSE FaceRes network, the same network (and weights) as the identity score's
 * descriptor, run as models/face/faceres.onnx in onnxruntime.
 *
 * onnxruntime returns graph outputs only, so the converter adds the activations of chosen FaceRes nodes as extra
 * outputs: the pin's `taps` in models/face/sources.json (four MobileNet blocks, at 112, 56, 28 and 14 pixels), each
 * output `NODE:0`, NHWC (models/tools/tfjs_convert/onnx_export.py). The file is checked against its pinned sha256
 * before it is loaded (vision/mesh/models.ts), so the taps the pin names are the ones the file has.
 *
 * The crop (any size) is resized to FaceRes's 224×224 input, in 0..255 as the network expects; the distance itself is
 * metrics.ts `perceptualDistance` (channel-normalised activations, as LPIPS). One session per process (OnnxModel
 * shares it), one intra-op thread, synchronous runs: the evaluation calls it between frames.
 */
import path from 'node:path';
import { AppError } from '../errors.js';
import { OnnxModel, Tensor } from '../inference/onnx.js';
import type { RgbImage } from '../types/image.js';
import { createRgb, resizeRgb } from '../util/image.js';
import { defaultMeshModelDir, loadChecked, pinnedHashes, readPins } from '../vision/mesh/models.js';
import { perceptualDistance, type ActivationMap } from './metrics.js';

/** The pinned model whose taps fpd reads. */
const MODEL = 'faceres';

/** The tfjs node names a pin taps (its `taps` field in sources.json). @throws AppError FACE_MODEL_INVALID */
export function pinnedTaps(dir: string, name: string): string[] {
  const { file, json } = readPins(dir);
  const pin = (json as { models?: Record<string, { taps?: unknown }> }).models?.[name];
  const taps = pin?.taps;
  if (!Array.isArray(taps) || taps.length === 0 || !taps.every((t): t is string => typeof t === 'string' && !!t))
    throw new AppError('FACE_MODEL_INVALID', `${file}: the ${name} pin names no taps (a list of tfjs node names)`);
  return taps;
}

/** FaceRes with its tapped activations, for fpd. Obtain with {@link FacePerceptual.load}. */
export class FacePerceptual {
  /** The tapped tfjs nodes, shallow to deep (the pin's order). */
  readonly taps: readonly string[];
  /** Side of the network's square input (224). */
  readonly size: number;
  readonly #model: OnnxModel;
  readonly #outputs: string[];
  readonly #channels: number[];
  readonly #resized: RgbImage;
  readonly #input: Float32Array;
  #closed = false;
  #runs = 0;
  #runMs = 0;

  private constructor(model: OnnxModel, taps: string[], size: number, channels: number[]) {
    this.#model = model;
    this.taps = taps;
    this.size = size;
    this.#outputs = taps.map((t) => `${t}:0`);
    this.#channels = channels;
    this.#resized = createRgb(size, size);
    this.#input = new Float32Array(size * size * 3);
  }

  /**
   * Verifies models/face/faceres.onnx (or `dir`'s) against its pin and loads it.
   * @throws AppError FACE_MODEL_INVALID when the file is missing or stale, or lacks the pinned taps.
   */
  static async load(dir = defaultMeshModelDir()): Promise<FacePerceptual> {
    const taps = pinnedTaps(dir, MODEL);
    loadChecked(dir, MODEL, pinnedHashes(dir));
    const file = path.join(dir, `${MODEL}.onnx`);
    let model: OnnxModel;
    try {
      model = await OnnxModel.load(file, { executionProvider: 'cpu', intraOpThreads: 1 });
    } catch (err) {
      throw new AppError('FACE_MODEL_INVALID', `cannot load ${file}`, { cause: err });
    }
    try {
      const input = model.inputs[0]?.shape ?? [];
      const size = input[1];
      if (input.length !== 4 || typeof size !== 'number' || input[2] !== size || input[3] !== 3)
        throw new AppError(
          'FACE_MODEL_INVALID',
          `${file}: expected a square NHWC RGB input, got [${input.join(', ')}]`,
        );
      const channels = taps.map((t) => {
        const out = model.outputs.find((o) => o.name === `${t}:0`);
        const c = out?.shape[3];
        if (!out || out.shape.length !== 4 || typeof c !== 'number')
          throw new AppError('FACE_MODEL_INVALID', `${file} has no 4-D output for the pinned tap ${t}`);
        return c;
      });
      return new FacePerceptual(model, taps, size, channels);
    } catch (err) {
      model.close();
      throw err;
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Runs so far and their mean time (ms), for reports. */
  get stats(): { runs: number; meanMs: number } {
    return { runs: this.#runs, meanMs: this.#runs ? this.#runMs / this.#runs : 0 };
  }

  /** The tapped activations of a face crop (resized to the input size), shallow to deep. */
  features(crop: RgbImage): ActivationMap[] {
    if (this.#closed) throw new AppError('INVALID_STATE', 'FacePerceptual is closed');
    const t0 = performance.now();
    const src =
      crop.width === this.size && crop.height === this.size
        ? crop
        : resizeRgb(crop, this.size, this.size, this.#resized);
    const x = this.#input;
    for (let i = 0; i < x.length; i++) x[i] = src.data[i]!;
    const fetches = Object.fromEntries(this.#outputs.map((o) => [o, null]));
    const out = this.#model.run({ input: new Tensor('float32', x, [1, this.size, this.size, 3]) }, fetches);
    const maps = this.#outputs.map((o, i) => ({ data: out[o]!.data as Float32Array, channels: this.#channels[i]! }));
    this.#runMs += performance.now() - t0;
    this.#runs++;
    return maps;
  }

  /** fpd of two crops (see metrics.ts perceptualDistance): 0 for the same crop. */
  distance(a: RgbImage, b: RgbImage): number {
    return perceptualDistance(this.features(a), this.features(b));
  }

  /** Drops the session handle. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#model.close();
  }
}
