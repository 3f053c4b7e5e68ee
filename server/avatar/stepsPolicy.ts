/**
 * RefinerStepsPolicy: under overload the avatar session lowers the learned refiner's steps before it drops frames.
 * Pure (no clock, no I/O): the session reports every rendered frame and every dropped one, and applies what comes
 * back.
 *
 * The rule, decided once per window of `window` rendered frames (about a second at 30 fps):
 * - Overloaded: the window's median render time is over `budgetMs` (one frame period), or more driving frames were
 *   dropped in the window than `maxDropFraction` of the frames rendered. Then k -> floor(k / 2) at once
 *   (8 -> 4 -> 2 -> 1 -> 0); at 0 there is nothing left to shed and frames drop as before.
 * - Headroom: no drop in the window, and the median render time plus what the next level would add (the last
 *   measured refiner cost per step times the extra steps) stays under `headroom` x `budgetMs`. After `raiseAfter`
 *   such windows in a row, k -> min(requested, max(1, 2k)).
 * - Anything else holds k (and ends a headroom streak).
 * The gap between the two thresholds, the streak of calm windows and the remembered cost per step are the
 * hysteresis: the policy does not climb straight back into an overload it has measured. Every change, and every new
 * request, starts a fresh window, so each decision sees only frames rendered at the current steps.
 */

export interface RefinerStepsPolicyOptions {
  /** The time one frame may take, ms; default 1000 / 30 (a 30 fps camera). */
  budgetMs?: number;
  /** Rendered frames per decision; default 30. */
  window?: number;
  /** Fraction of the budget that must stay free, with the next level's predicted cost, to raise; default 0.75. */
  headroom?: number;
  /** Calm windows in a row before raising; default 3. */
  raiseAfter?: number;
  /** Drops per rendered frame in a window above which it counts as overloaded; default 0.1. */
  maxDropFraction?: number;
}

export class RefinerStepsPolicy {
  readonly #budgetMs: number;
  readonly #window: number;
  readonly #headroom: number;
  readonly #raiseAfter: number;
  readonly #maxDropFraction: number;
  /** Render times of the current window (allocated once). */
  readonly #renderMs: Float64Array;
  #frames = 0;
  #drops = 0;
  #refineSum = 0;
  #refineFrames = 0;
  #calm = 0;
  /** Refiner ms per step, last measured (0 until then: the first raise is a try). */
  #perStepMs = 0;
  #requested = 0;
  #effective = 0;

  constructor(options: RefinerStepsPolicyOptions = {}) {
    this.#budgetMs = options.budgetMs ?? 1000 / 30;
    this.#window = options.window ?? 30;
    this.#headroom = options.headroom ?? 0.75;
    this.#raiseAfter = options.raiseAfter ?? 3;
    this.#maxDropFraction = options.maxDropFraction ?? 0.1;
    if (!(this.#budgetMs > 0)) throw new TypeError('budgetMs must be > 0');
    if (!Number.isInteger(this.#window) || this.#window < 1) throw new TypeError('window must be an integer >= 1');
    if (!(this.#headroom > 0 && this.#headroom <= 1)) throw new TypeError('headroom must be in (0, 1]');
    if (!Number.isInteger(this.#raiseAfter) || this.#raiseAfter < 1)
      throw new TypeError('raiseAfter must be an integer >= 1');
    if (!(this.#maxDropFraction >= 0)) throw new TypeError('maxDropFraction must be >= 0');
    this.#renderMs = new Float64Array(this.#window);
  }

  /** The steps asked for (the room's setting, 0 without a refiner). */
  get requested(): number {
    return this.#requested;
  }
  /** The steps to run now. */
  get effective(): number {
    return this.#effective;
  }

  /**
   * A new request: the performer's wish is tried as is (an overload lowers it again within a window).
   * @returns whether the effective steps changed.
   */
  request(steps: number): boolean {
    if (!Number.isInteger(steps) || steps < 0) throw new TypeError('steps must be a non-negative integer');
    const before = this.#effective;
    this.#requested = steps;
    this.#effective = steps;
    this.#calm = 0;
    this.#resetWindow();
    return this.#effective !== before;
  }

  /** Driving frames that were dropped (never rendered or never published). */
  dropped(n: number): void {
    if (n > 0) this.#drops += n;
  }

  /**
   * One rendered frame: its whole render time and the refiner's share (undefined when the refiner did not run).
   * @returns the new effective steps when this frame ended a window that changed them, else null.
   */
  rendered(renderMs: number, refineMs?: number): number | null {
    if (!Number.isFinite(renderMs) || renderMs < 0) return null;
    this.#renderMs[this.#frames++] = renderMs;
    if (refineMs !== undefined && Number.isFinite(refineMs) && refineMs >= 0) {
      this.#refineSum += refineMs;
      this.#refineFrames++;
    }
    if (this.#frames < this.#window) return null;
    return this.#decide();
  }

  #decide(): number | null {
    const k = this.#effective;
    if (k > 0 && this.#refineFrames > 0) this.#perStepMs = this.#refineSum / this.#refineFrames / k;
    const median = medianOf(this.#renderMs, this.#frames);
    const overloaded = median > this.#budgetMs || this.#drops > this.#maxDropFraction * this.#frames;
    let next = k;
    if (overloaded) {
      this.#calm = 0;
      next = k >> 1;
    } else if (k < this.#requested) {
      const up = Math.min(this.#requested, Math.max(1, 2 * k));
      const fits = this.#drops === 0 && median + this.#perStepMs * (up - k) <= this.#headroom * this.#budgetMs;
      this.#calm = fits ? this.#calm + 1 : 0;
      if (this.#calm >= this.#raiseAfter) {
        this.#calm = 0;
        next = up;
      }
    }
    this.#resetWindow();
    if (next === k) return null;
    this.#effective = next;
    return next;
  }

  #resetWindow(): void {
    this.#frames = 0;
    this.#drops = 0;
    this.#refineSum = 0;
    this.#refineFrames = 0;
  }
}

/** Median of the first n values (sorts them in place: they are discarded after). */
function medianOf(v: Float64Array, n: number): number {
  const s = v.subarray(0, n).sort();
  const m = n >> 1;
  return n % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
