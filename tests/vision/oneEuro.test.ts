import { describe, expect, it } from 'vitest';
import { OneEuroFilter } from '../../server/vision/oneEuro.js';

/** Deterministic pseudo-random noise in [-1, 1]. */
function noise(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32) * 2 - 1;
  };
}

describe('OneEuroFilter', () => {
  it('passes the first sample through', () => {
    const f = new OneEuroFilter(2, { minCutoff: 1, beta: 0 });
    const out = new Float64Array(2);
    f.filter([3, 4], 0, out);
    expect(Array.from(out)).toEqual([3, 4]);
  });

  it('removes most jitter from a still signal', () => {
    const f = new OneEuroFilter(1, { minCutoff: 1.5, beta: 6 });
    const rnd = noise(1);
    const out = new Float64Array(1);
    let inDev = 0;
    let outDev = 0;
    for (let i = 0; i < 300; i++) {
      const v = 100 + rnd();
      f.filter([v], (i * 1000) / 30, out, 200);
      if (i >= 30) {
        inDev += (v - 100) ** 2;
        outDev += (out[0]! - 100) ** 2;
      }
    }
    // A first-order low-pass at 1.5 Hz and 30 fps keeps ~37% of white noise; beta adds a little.
    expect(Math.sqrt(outDev / inDev)).toBeLessThan(0.45);
  });

  it('follows fast motion with little lag (beta raises the cutoff)', () => {
    const fast = new OneEuroFilter(1, { minCutoff: 1.5, beta: 6 });
    const plain = new OneEuroFilter(1, { minCutoff: 1.5, beta: 0 });
    const a = new Float64Array(1);
    const b = new Float64Array(1);
    // A face of 200 px moving 2 face sizes per second.
    for (let i = 0; i <= 30; i++) {
      const v = (400 * i) / 30;
      fast.filter([v], (i * 1000) / 30, a, 200);
      plain.filter([v], (i * 1000) / 30, b, 200);
    }
    const lagFast = 400 - a[0]!;
    const lagPlain = 400 - b[0]!;
    expect(lagFast).toBeLessThan(lagPlain / 3);
    expect(lagFast).toBeLessThan(20);
  });

  it('reset() restarts from the next sample; repeated timestamps do not blow up', () => {
    const f = new OneEuroFilter(1, { minCutoff: 1, beta: 1 });
    const out = new Float64Array(1);
    f.filter([0], 0, out);
    f.filter([10], 0, out);
    expect(Number.isFinite(out[0]!)).toBe(true);
    f.reset();
    f.filter([50], 100, out);
    expect(out[0]).toBe(50);
    expect(() => new OneEuroFilter(0, { minCutoff: 1, beta: 0 })).toThrow(TypeError);
  });
});
