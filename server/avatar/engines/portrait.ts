/**
 * PortraitEngine: the interim engine until the model-pack engine lands. prepare() scales the portrait to the output
 * size once and converts it to I420; render() writes that picture into each output frame, so viewers see the chosen
 * portrait at the performer's frame rate through the whole real pipeline (ingest, session, publish, fan-out).
 * It does not animate the face and does not detect one (PreparedPortrait.face is false: "not checked").
 */
import type { AvatarEngine, PreparedPortrait, RenderStats } from '../engineTypes.js';
import type { I420Frame, RgbImage } from '../../types/image.js';
import type { AvatarSettings } from '../../types/protocol.js';
import { InvalidStateError } from '../../errors.js';
import { rgbToI420 } from '../../util/image.js';
import { fitRgb, outputDims } from './size.js';

export interface PortraitEngineOptions {
  /** Long side of the output video. */
  outputSize: number;
}

export class PortraitEngine implements AvatarEngine {
  readonly name = 'portrait';
  readonly #outputSize: number;
  #frame: I420Frame | null = null;

  constructor(options: PortraitEngineOptions) {
    this.#outputSize = options.outputSize;
  }

  prepare(portrait: RgbImage): Promise<PreparedPortrait> {
    const { width, height } = outputDims(portrait.width, portrait.height, this.#outputSize);
    this.#frame = rgbToI420(fitRgb(portrait, width, height));
    return Promise.resolve({ width, height, face: false });
  }

  render(_driving: I420Frame, out: I420Frame, _timestampMs: number): RenderStats {
    const f = this.#frame;
    if (!f) throw new InvalidStateError('portrait engine: render() before prepare()');
    if (out.width !== f.width || out.height !== f.height) throw new TypeError('portrait engine: output size mismatch');
    out.data.set(f.data);
    return { trackMs: 0, latentMs: 0, generateMs: 0, pasteMs: 0, face: false };
  }

  updateSettings(_settings: AvatarSettings): void {
    // Nothing to retarget: the picture does not move.
  }

  recalibrate(): void {
    // No neutral face to capture.
  }

  close(): void {
    this.#frame = null;
  }
}
