import { afterEach, describe, expect, it } from 'vitest';
import { AvatarSession, type SessionFrame } from '../../server/avatar/session.js';
import type { EngineOptions } from '../../server/avatar/engineTypes.js';
import { createLogger } from '../../server/logger.js';
import { rgbToI420 } from '../../server/util/image.js';
import { fitRgb } from '../../server/avatar/engines/size.js';
import { defaultAvatarSettings } from '../../server/types/protocol.js';
import { testEngine, type TestEngineHooks } from '../helpers/testEngine.js';
import { drawPattern, loadPortrait, lumaMad, makeI420, waitFor } from './helpers.js';

const log = createLogger('test.session');
const base: EngineOptions = { modelPack: 'unused', executionProvider: 'cpu', intraOpThreads: 1, outputSize: 256 };
let sessions: AvatarSession[] = [];

async function open(
  engine: string,
  extra: Partial<EngineOptions> = {},
  hooks?: TestEngineHooks,
): Promise<AvatarSession> {
  const s = await AvatarSession.create({
    engine,
    engineOptions: { ...base, ...extra },
    ...(hooks ? { engineWrapper: testEngine(hooks) } : {}),
    initTimeoutMs: 20_000,
    log,
  });
  sessions.push(s);
  return s;
}

afterEach(async () => {
  await Promise.all(sessions.map((s) => s.close()));
  sessions = [];
});

describe('AvatarSession (real worker thread)', () => {
  it('passthrough: driving frames in, scaled driving frames out at the portrait size', async () => {
    const s = await open('passthrough');
    const portrait = await loadPortrait();
    const prepared = await s.prepare(portrait);
    expect(prepared.width).toBe(256);
    expect(prepared.height % 2).toBe(0);
    const outs: { seq: number; w: number; h: number; y0: number; copy: Uint8Array }[] = [];
    s.on('frame', (f: SessionFrame) =>
      outs.push({ seq: f.seq, w: f.frame.width, h: f.frame.height, y0: f.frame.data[0]!, copy: f.frame.data.slice() }),
    );
    const drv = makeI420(prepared.width, prepared.height);
    for (let t = 0; t < 5; t++) {
      drawPattern(drv, t);
      s.pushFrame(drv);
      await waitFor(() => outs.length === t + 1 - s.dropped, 5000, 'a rendered frame');
    }
    expect(outs.length).toBeGreaterThanOrEqual(1);
    const last = outs.at(-1)!;
    expect([last.w, last.h]).toEqual([prepared.width, prepared.height]);
    // Same size in and out: passthrough must return the driving picture exactly.
    drawPattern(drv, 4);
    expect(lumaMad(last.copy, drv.data, drv.width * drv.height)).toBe(0);
  });

  it('portrait: every output frame is the prepared portrait', async () => {
    const s = await open('portrait');
    const portrait = await loadPortrait('painting_mona_lisa.jpg');
    const prepared = await s.prepare(portrait);
    expect(Math.max(prepared.width, prepared.height)).toBe(256);
    const expected = rgbToI420(fitRgb(portrait, prepared.width, prepared.height));
    const got: Uint8Array[] = [];
    s.on('frame', (f: SessionFrame) => got.push(f.frame.data.slice()));
    const drv = makeI420(320, 240);
    for (let t = 0; t < 3; t++) {
      drawPattern(drv, t);
      s.pushFrame(drv);
      await waitFor(() => got.length + s.dropped >= t + 1, 5000, 'a rendered frame');
    }
    for (const g of got) expect(Buffer.compare(Buffer.from(g), Buffer.from(expected.data))).toBe(0);
  });

  it('counts drops when flooded and never queues more than one frame', async () => {
    const s = await open('passthrough', { outputSize: 1024 });
    await s.prepare(await loadPortrait());
    let frames = 0;
    s.on('frame', () => frames++);
    const drv = makeI420(640, 480);
    const pushed = 200;
    for (let t = 0; t < pushed; t++) {
      drawPattern(drv, t);
      s.pushFrame(drv); // synchronous burst: the worker cannot keep up
    }
    await waitFor(() => frames + s.dropped === pushed, 10_000, 'every frame rendered or dropped');
    expect(s.dropped).toBeGreaterThan(pushed / 2);
    expect(frames).toBeGreaterThanOrEqual(1);
    expect(frames).toBeLessThan(pushed / 4);
  });

  it('restarts the worker after a crash, prepares the portrait again and keeps rendering', async () => {
    const s = await open('passthrough', {}, { crashAfterFrames: 3 });
    await s.prepare(await loadPortrait());
    const failures: string[] = [];
    s.on('failure', (e: Error) => failures.push(e.message));
    let frames = 0;
    s.on('frame', () => frames++);
    const preparedAtRestart: boolean[] = [];
    s.on('restarted', () => preparedAtRestart.push(s.prepared !== null));
    const firstThread = s.workerThreadId;
    const drv = makeI420(256, 256);
    const feed = setInterval(() => {
      drawPattern(drv, frames);
      s.pushFrame(drv);
    }, 15);
    try {
      await waitFor(() => s.restarts >= 1, 20_000, 'a restart');
      const after = frames;
      await waitFor(() => frames >= after + 2, 10_000, 'frames after the restart');
    } finally {
      clearInterval(feed);
    }
    expect(failures.some((m) => /crashed: restarting/.test(m))).toBe(true);
    expect(s.workerThreadId).not.toBe(firstThread);
    expect(preparedAtRestart[0]).toBe(true);
  });

  it('an engine without a refiner says so, and runs refiner steps > 0 as 0 without a hitch', async () => {
    const s = await open('passthrough');
    expect(s.refiner).toEqual({ available: false, defaultSteps: 0, maxSteps: 0 });
    const changes: number[] = [];
    s.on('steps', (k: number) => changes.push(k));
    s.updateSettings({ ...defaultAvatarSettings, steps: 4 });
    expect(s.steps).toBe(0);
    const prepared = await s.prepare(await loadPortrait());
    const stats: SessionFrame['stats'][] = [];
    s.on('frame', (f: SessionFrame) => stats.push(f.stats));
    const drv = makeI420(prepared.width, prepared.height);
    for (let t = 0; t < 5; t++) {
      drawPattern(drv, t);
      s.pushFrame(drv);
      await waitFor(() => stats.length + s.dropped >= t + 1, 5000, 'a rendered frame');
    }
    expect(stats.length).toBeGreaterThanOrEqual(1);
    expect(stats.every((st) => st.refineMs === undefined)).toBe(true);
    expect([s.steps, changes]).toEqual([0, []]);
  });

  it('lowers refiner steps when frames take longer than the budget, and the engine renders with fewer', async () => {
    // A stand-in refiner that costs 40 ms per step; budget 120 ms: 4 steps (160 ms) are too many, 2 (80 ms) fit with
    // 40 ms to spare for the rest of the render (at 10 ms per step and a 30 ms budget, a CI run under load rendered
    // the rest slowly enough to go down to 1).
    const s = await AvatarSession.create({
      engine: 'passthrough',
      engineOptions: base,
      engineWrapper: testEngine({ fakeRefinerMsPerStep: 40 }),
      initTimeoutMs: 20_000,
      stepsPolicy: { budgetMs: 120, window: 5, raiseAfter: 2 },
      log,
    });
    sessions.push(s);
    expect(s.refiner).toMatchObject({ available: true, maxSteps: 8 });
    s.updateSettings({ ...defaultAvatarSettings, steps: 4 });
    expect(s.steps).toBe(4);
    const changes: number[] = [];
    s.on('steps', (k: number) => changes.push(k));
    const prepared = await s.prepare(await loadPortrait());
    const refine: number[] = [];
    s.on('frame', (f: SessionFrame) => refine.push(f.stats.refineMs ?? -1));
    const drv = makeI420(prepared.width, prepared.height);
    // Paced: one frame at a time, so that nothing drops and only the render time speaks.
    for (let t = 0; t < 16; t++) {
      drawPattern(drv, t);
      s.pushFrame(drv);
      await waitFor(() => refine.length + s.dropped >= t + 1, 5000, 'a rendered frame');
    }
    expect(changes).toEqual([2]);
    expect(s.steps).toBe(2);
    // The first frames ran 4 steps, the last ones 2.
    expect(refine[0]).toBeGreaterThanOrEqual(160);
    expect(refine.at(-1)).toBeGreaterThanOrEqual(80);
    expect(refine.at(-1)).toBeLessThan(160);
  });

  it('close() ends the worker, is idempotent and emits close once', async () => {
    const s = await open('portrait');
    await s.prepare(await loadPortrait());
    let closes = 0;
    s.on('close', () => closes++);
    expect(s.workerThreadId).not.toBeNull();
    await Promise.all([s.close(), s.close()]);
    await s.close();
    expect(closes).toBe(1);
    expect(s.closed).toBe(true);
    expect(s.workerThreadId).toBeNull();
    await expect(s.prepare(await loadPortrait())).rejects.toThrow(/closed/);
  });

  it('a slow engine blocks neither the main thread nor another session', async () => {
    // The slow session's render holds its worker thread for 2.5 s. Everything below happens during that one render:
    // the fast session renders frames pushed one at a time, and their events reach this (main) thread. Were the
    // render on the main thread, or did it hold the other session, the slow frame would come out first. (How fast
    // the fast session goes next to a slow one, and the event-loop lag, are measured by `npm run bench -- session`.)
    const slow = await open('passthrough', {}, { slowRenderMs: 2500 });
    const fast = await open('passthrough');
    const portrait = await loadPortrait();
    await Promise.all([slow.prepare(portrait), fast.prepare(portrait)]);
    let slowFrames = 0;
    const fastSeqs: number[] = [];
    slow.on('frame', () => slowFrames++);
    fast.on('frame', (f: SessionFrame) => fastSeqs.push(f.seq));
    const drv = makeI420(320, 240);
    drawPattern(drv, 0);
    let slowPushed = 0;
    expect(slow.pushFrame(drv)).toBeGreaterThan(0);
    slowPushed++;
    const pushedSeqs: number[] = [];
    for (let t = 1; t <= 5; t++) {
      drawPattern(drv, t);
      pushedSeqs.push(fast.pushFrame(drv));
      slow.pushFrame(drv);
      slowPushed++;
      await waitFor(() => fastSeqs.length === t, 10_000, 'a fast frame');
      expect(slowFrames).toBe(0);
    }
    // Paced: every fast frame rendered, none dropped, in order.
    expect(fastSeqs).toEqual(pushedSeqs);
    expect(fast.dropped).toBe(0);
    // The slow session keeps the newest frame only (latest-frame-wins): of the 6 frames, at most the first and the
    // newest are rendered, the others are counted as dropped.
    await waitFor(
      () => slowFrames + slow.dropped === slowPushed && slowFrames >= 1,
      15_000,
      'the slow session to finish',
    );
    expect(slowFrames).toBeLessThanOrEqual(2);
    expect(slow.dropped).toBeGreaterThanOrEqual(slowPushed - 2);
  });

  it('enforces the init deadline: a worker that is not ready in time is terminated', async () => {
    // Starting a worker (thread + module loading) takes far longer than 1 ms.
    const err: unknown = await AvatarSession.create({
      engine: 'portrait',
      engineOptions: base,
      initTimeoutMs: 1,
      log,
    }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'ENGINE_FAILED' });
    expect((err as Error).message).toMatch(/did not start within 1 ms/);
  });

  it('fails init cleanly for an unknown engine', async () => {
    await expect(open('no-such-engine')).rejects.toThrow(/unknown avatar engine/);
  });
});
