/** Exponential backoff with full jitter, for reconnects. */
export interface BackoffOptions {
  /** First delay, ms; default 250. */
  minDelayMs?: number;
  /** Largest delay, ms; default 5000. */
  maxDelayMs?: number;
}

export class Backoff {
  readonly #min: number;
  readonly #max: number;
  #attempt = 0;
  constructor(opts: BackoffOptions = {}) {
    this.#min = opts.minDelayMs ?? 250;
    this.#max = opts.maxDelayMs ?? 5000;
  }
  get attempt(): number {
    return this.#attempt;
  }
  /** The next delay: grows ×2 per attempt up to the cap, jittered into [50%, 100%] so clients do not stampede. */
  next(): number {
    const base = Math.min(this.#max, this.#min * 2 ** this.#attempt);
    this.#attempt++;
    return Math.round(base * (0.5 + Math.random() * 0.5));
  }
  reset(): void {
    this.#attempt = 0;
  }
}
