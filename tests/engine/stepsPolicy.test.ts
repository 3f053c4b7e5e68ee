/**
 * Refiner steps in the engine path: RefinerStepsPolicy (server/avatar/stepsPolicy.ts), which lowers the steps under
 * overload before frames drop and raises them again only after a while with headroom (hysteresis), driven with
 * synthetic frame timings; and the default engine's updateSettings(), which runs steps as 0 without a refiner pack.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RefinerStepsPolicy } from '../../server/avatar/stepsPolicy.js';
import { DefaultEngine, MAX_STEPS } from '../../server/avatar/engines/default/engine.js';
import { projectRoot } from '../../server/config.js';
import { defaultAvatarSettings, MAX_REFINER_STEPS } from '../../server/types/protocol.js';

const BUDGET = 33;
const WINDOW = 30;

function policy(requested: number): RefinerStepsPolicy {
  const p = new RefinerStepsPolicy({
    budgetMs: BUDGET,
    window: WINDOW,
    headroom: 0.75,
    raiseAfter: 3,
    maxDropFraction: 0.1,
  });
  p.request(requested);
  return p;
}

/**
 * Renders `windows` windows of frames. Render time = base + perStep x effective steps (the refiner's share),
 * so that a lower k really is cheaper. Returns the effective steps after each window.
 */
function run(p: RefinerStepsPolicy, windows: number, baseMs: number, perStepMs: number, dropsPerWindow = 0): number[] {
  const seen: number[] = [];
  for (let w = 0; w < windows; w++) {
    p.dropped(dropsPerWindow);
    for (let i = 0; i < WINDOW; i++) {
      const k = p.effective;
      const refine = k > 0 ? perStepMs * k : undefined;
      p.rendered(baseMs + (refine ?? 0), refine);
    }
    seen.push(p.effective);
  }
  return seen;
}

describe('RefinerStepsPolicy', () => {
  it('keeps the requested steps while frames fit the budget', () => {
    const p = policy(4);
    expect(run(p, 10, 10, 4)).toEqual(Array<number>(10).fill(4)); // 26 ms per frame
  });

  it('halves the steps once per overloaded window, down to 0 (warp only), and no further', () => {
    const p = policy(8);
    // 20 ms warp + 6 ms per step: k=8 -> 68 ms, 4 -> 44 ms, 2 -> 32 ms (fits).
    expect(run(p, 4, 20, 6)).toEqual([4, 2, 2, 2]);
    const q = policy(4);
    // The warp alone is over budget: nothing but the refiner can be shed.
    expect(run(q, 5, 40, 5)).toEqual([2, 1, 0, 0, 0]);
  });

  it('a window decides on the median: one slow frame is not an overload', () => {
    const p = policy(2);
    for (let i = 0; i < WINDOW; i++) p.rendered(i === 3 ? 500 : 20, 5);
    expect(p.effective).toBe(2);
  });

  it('counts drops as overload even when the median fits', () => {
    const p = policy(4);
    // 4 drops in 30 rendered frames > 10 %.
    expect(run(p, 1, 10, 2, 4)).toEqual([2]);
    // 3 drops (10 %) is tolerated.
    const q = policy(4);
    expect(run(q, 2, 10, 2, 3)).toEqual([4, 4]);
  });

  it('raises again only after three calm windows with room for the next level, one doubling at a time', () => {
    const p = policy(4);
    // A passing load (another room's portrait being prepared): 30 ms more per frame for two windows.
    expect(run(p, 2, 40, 2)).toEqual([2, 1]);
    // Load gone: 10 ms + 2 ms per step. Measured 2 ms per step, so 1 -> 2 predicts 14 ms (fits 0.75 x 33).
    expect(run(p, 3, 10, 2)).toEqual([1, 1, 2]);
    expect(run(p, 3, 10, 2)).toEqual([2, 2, 4]);
    // Never above the request.
    expect(run(p, 6, 10, 2)).toEqual(Array<number>(6).fill(4));
  });

  it('does not climb back into an overload it has measured (hysteresis)', () => {
    const p = policy(4);
    // 12 ms warp + 6 ms per step: 4 -> 36 ms (over), 2 -> 24 ms (fits, but 24 + 12 > 0.75 x 33 for 4).
    const seen = run(p, 20, 12, 6);
    expect(seen[0]).toBe(2);
    expect(new Set(seen.slice(1))).toEqual(new Set([2]));
  });

  it('a drop in a window ends a calm streak', () => {
    const p = policy(2);
    run(p, 1, 40, 1); // over budget -> 1
    expect(p.effective).toBe(1);
    // Calm, calm, a window with one drop (under the overload threshold, but not headroom), calm, calm: no raise yet.
    expect(run(p, 2, 10, 1)).toEqual([1, 1]);
    expect(run(p, 1, 10, 1, 1)).toEqual([1]);
    expect(run(p, 2, 10, 1)).toEqual([1, 1]);
    expect(run(p, 1, 10, 1)).toEqual([2]);
  });

  it('a new request is tried at once and starts a fresh window; only a change of effective steps is reported', () => {
    const p = policy(4);
    run(p, 1, 40, 2);
    expect(p.effective).toBe(2);
    // Half a window of slow frames, then a new request: those frames do not count against it.
    for (let i = 0; i < WINDOW / 2; i++) p.rendered(80, 4);
    expect(p.request(8)).toBe(true);
    expect([p.requested, p.effective]).toEqual([8, 8]);
    for (let i = 0; i < WINDOW - 1; i++) expect(p.rendered(10, 4)).toBeNull();
    expect(p.rendered(10, 4)).toBeNull();
    expect(p.request(8)).toBe(false);
    expect(p.request(0)).toBe(true);
    // At 0 an overload changes nothing.
    expect(run(p, 3, 100, 0, 30)).toEqual([0, 0, 0]);
  });

  it('returns the new steps from the frame that ended the window', () => {
    const p = policy(4);
    const results: (number | null)[] = [];
    for (let i = 0; i < WINDOW; i++) results.push(p.rendered(50, 20));
    expect(results.slice(0, -1).every((r) => r === null)).toBe(true);
    expect(results.at(-1)).toBe(2);
  });

  it('refuses bad options and requests', () => {
    expect(() => new RefinerStepsPolicy({ budgetMs: 0 })).toThrow(TypeError);
    expect(() => new RefinerStepsPolicy({ window: 0 })).toThrow(TypeError);
    expect(() => new RefinerStepsPolicy({ headroom: 1.5 })).toThrow(TypeError);
    expect(() => new RefinerStepsPolicy({ raiseAfter: 0.5 })).toThrow(TypeError);
    expect(() => new RefinerStepsPolicy().request(-1)).toThrow(TypeError);
    expect(() => new RefinerStepsPolicy().request(1.5)).toThrow(TypeError);
    // Non-finite timings are ignored, not counted.
    const p = policy(2);
    for (let i = 0; i < WINDOW; i++) expect(p.rendered(Number.NaN)).toBeNull();
    expect(p.effective).toBe(2);
  });
});

describe('DefaultEngine.updateSettings and steps', () => {
  it('without a refiner pack runs any steps as 0 (a settings message never throws), and the protocol bound is the engine bound', async () => {
    expect(MAX_REFINER_STEPS).toBe(MAX_STEPS);
    // No face work happens here: a vision stub is enough.
    const engine = await DefaultEngine.create({
      modelPack: path.join(projectRoot, 'models', 'default'),
      refinerPack: path.join(projectRoot, 'models', 'no-such-refiner'),
      vision: { analyzeImage: () => [], createTracker: () => ({ track: () => null }) },
    });
    try {
      expect(engine.refiner).toBeNull();
      for (const steps of [2, MAX_STEPS, 0, 4]) {
        engine.updateSettings({ ...defaultAvatarSettings, steps });
        expect(engine.steps).toBe(0);
      }
      expect(() => engine.setSteps(2)).toThrow(/no refiner pack/);
    } finally {
      engine.close();
    }
  });
});
