/**
 * Token-bucket rate limits for the REST API: one bucket per API key and one per client address. A bucket holds up
 * to `perMinute` requests and refills continuously; an empty bucket refuses with RateLimitError (429 with
 * Retry-After: the seconds until one request is allowed again). Buckets idle for two minutes are forgotten, so
 * memory stays bounded by the number of recently active keys and addresses.
 */
import { RateLimitError } from '../errors.js';

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  readonly #perMinute: number;
  readonly #what: string;
  readonly #buckets = new Map<string, Bucket>();
  #lastSweep = 0;

  constructor(perMinute: number, what: string) {
    this.#perMinute = perMinute;
    this.#what = what;
  }

  get size(): number {
    return this.#buckets.size;
  }

  /** Takes one request from `id`'s bucket. @throws RateLimitError when it is empty. */
  take(id: string, now = Date.now()): void {
    this.#sweep(now);
    const rate = this.#perMinute / 60_000;
    const b = this.#buckets.get(id) ?? { tokens: this.#perMinute, at: now };
    b.tokens = Math.min(this.#perMinute, b.tokens + (now - b.at) * rate);
    b.at = now;
    this.#buckets.set(id, b);
    if (b.tokens < 1)
      throw new RateLimitError(`too many requests for this ${this.#what}; slow down`, (1 - b.tokens) / rate / 1000);
    b.tokens -= 1;
  }

  #sweep(now: number): void {
    if (now - this.#lastSweep < 30_000) return;
    this.#lastSweep = now;
    for (const [id, b] of this.#buckets) if (now - b.at > 120_000) this.#buckets.delete(id);
  }
}
