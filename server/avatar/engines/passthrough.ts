/**
 * DiagnosticPassthroughEngine: returns the driving picture unchanged, only scaled to the output size. It exists to
 * check the media path (ingest -> worker -> publish -> viewers) with a moving picture; it shows the performer's own
 * face, so it is never the default and must only be chosen on purpose (config.avatar.engine = 'passthrough').
 */
import type { AvatarEngine, PreparedPortrait, RenderStats } from '../engineTypes.js';
import type { I420Frame, RgbImage } from '../../types/image.js';
import type { AvatarSettings } from '../../types/protocol.js';
import { resizeBilinear } from '../../util/image.js';
import { outputDims } from './size.js';

export interface PassthroughEngineOptions {
  outputSize: number;
}

export class DiagnosticPassthroughEngine implements AvatarEngine {
  readonly name = 'passthrough';
  readonly #outputSize: number;

  constructor(options: PassthroughEngineOptions) {
    this.#outputSize = options.outputSize;
  }

  prepare(portrait: RgbImage): Promise<PreparedPortrait> {
    const { width, height } = outputDims(portrait.width, portrait.height, this.#outputSize);
    return Promise.resolve({ width, height, face: false });
  }

  render(driving: I420Frame, out: I420Frame, _timestampMs: number): RenderStats {
    const t0 = performance.now();
    scaleI420(driving, out);
    return { trackMs: 0, latentMs: 0, generateMs: 0, pasteMs: performance.now() - t0, face: false };
  }

  updateSettings(_settings: AvatarSettings): void {
    // Diagnostic: settings do not apply.
  }

  recalibrate(): void {
    // Diagnostic: nothing to calibrate.
  }

  close(): void {
    // Holds no resources.
  }
}

/** Bilinear scale of each I420 plane into `out` (copies when the sizes match). */
export function scaleI420(src: I420Frame, out: I420Frame): void {
  const { width: sw, height: sh } = src;
  const { width: dw, height: dh } = out;
  if (sw === dw && sh === dh) {
    out.data.set(src.data.subarray(0, out.data.length));
    return;
  }
  const scw = (sw + 1) >> 1;
  const sch = (sh + 1) >> 1;
  const dcw = (dw + 1) >> 1;
  const dch = (dh + 1) >> 1;
  const s = src.data;
  const d = out.data;
  resizeBilinear(s.subarray(0, sw * sh), sw, sh, d.subarray(0, dw * dh), dw, dh, 1);
  const su = sw * sh;
  const du = dw * dh;
  resizeBilinear(s.subarray(su, su + scw * sch), scw, sch, d.subarray(du, du + dcw * dch), dcw, dch, 1);
  const sv = su + scw * sch;
  const dv = du + dcw * dch;
  resizeBilinear(s.subarray(sv, sv + scw * sch), scw, sch, d.subarray(dv, dv + dcw * dch), dcw, dch, 1);
}
