/**
 * The One Euro filter (Casiez, Roussel, Vogel, CHI 2012): a low-pass filter whose cutoff rises with the signal's
 * speed, so a still signal is smoothed hard (no jitter) and a moving one is followed closely (little lag).
 *
 *   alpha(fc, dt) = 1 / (1 + 1 / (2 pi fc dt))
 *   dx' = lowpass(dx/dt, alpha(dCutoff)),  fc = minCutoff + beta * |dx'| / scale,  x' = lowpass(x, alpha(fc))
 *
 * This version filters a vector of channels at once (e.g. 136 landmark coordinates) and takes a per-call `scale`
 * that normalises speeds (e.g. the face size in pixels), so the same parameters work for near and far faces.
 */

/** Filter parameters. */
export interface OneEuroParams {
  /** Cutoff (Hz) when still: lower = less jitter, more lag at slow speeds. */
  minCutoff: number;
  /** Speed coefficient: higher = less lag when moving. Speed is in `scale` units per second. */
  beta: number;
  /** Cutoff (Hz) of the speed estimate (default 1). */
  dCutoff?: number;
}

/** Multi-channel One Euro filter. Allocation-free per call. */
export class OneEuroFilter {
  readonly channels: number;
  readonly #x: Float64Array;
  readonly #dx: Float64Array;
  #lastMs = Number.NaN;
  #params: Required<OneEuroParams>;

  constructor(channels: number, params: OneEuroParams) {
    if (!(Number.isInteger(channels) && channels > 0))
      throw new TypeError('OneEuroFilter: channels must be a positive integer');
    this.channels = channels;
    this.#x = new Float64Array(channels);
    this.#dx = new Float64Array(channels);
    this.#params = { dCutoff: 1, ...params };
  }

  /** Changes the parameters (keeps the state). */
  setParams(params: Partial<OneEuroParams>): void {
    this.#params = { ...this.#params, ...params };
  }

  /** Forget the history: the next sample passes through unfiltered. */
  reset(): void {
    this.#lastMs = Number.NaN;
  }

  /**
   * Filters one sample of all channels.
   * @param input the raw values (length >= channels).
   * @param timestampMs the sample time; a non-increasing time is treated as 1 ms after the previous sample.
   * @param out receives the filtered values (may be `input`).
   * @param scale speed normalisation (e.g. face size in px); default 1.
   */
  filter(input: ArrayLike<number>, timestampMs: number, out: { [i: number]: number; length: number }, scale = 1): void {
    const n = this.channels;
    const x = this.#x;
    const dx = this.#dx;
    if (Number.isNaN(this.#lastMs)) {
      for (let i = 0; i < n; i++) {
        x[i] = input[i]!;
        dx[i] = 0;
        out[i] = input[i]!;
      }
      this.#lastMs = timestampMs;
      return;
    }
    let dt = (timestampMs - this.#lastMs) / 1000;
    if (!(dt > 0)) dt = 0.001;
    this.#lastMs = timestampMs;
    const { minCutoff, beta, dCutoff } = this.#params;
    const ad = alpha(dCutoff, dt);
    const invScale = 1 / (scale > 0 ? scale : 1);
    for (let i = 0; i < n; i++) {
      const v = input[i]!;
      const prev = x[i]!;
      const d = dx[i]! + ad * ((v - prev) / dt - dx[i]!);
      dx[i] = d;
      const fc = minCutoff + beta * Math.abs(d) * invScale;
      const y = prev + alpha(fc, dt) * (v - prev);
      x[i] = y;
      out[i] = y;
    }
  }
}

function alpha(cutoff: number, dt: number): number {
  const r = 2 * Math.PI * cutoff * dt;
  return r / (r + 1);
}
