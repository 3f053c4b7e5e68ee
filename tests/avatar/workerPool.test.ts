/**
 * The avatar worker pool and fast recovery, with real worker threads and real engines:
 * - a crashed session takes the pool's warm spare (a thread that was idle before the crash) and renders again;
 * - the restart budget (a token bucket): a crash loop stops the session, crashes the bucket refills for do not;
 * - a closed session's worker is reset and serves the next session; pool.close() ends every thread;
 * - the default engine (real ONNX, real tracker) prepared from another engine's PortraitCache does no face analysis
 *   and renders exactly the frames of an engine that analysed the portrait.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AvatarSession } from '../../server/avatar/session.js';
import { AvatarWorkerPool } from '../../server/avatar/workerPool.js';
import type { EngineOptions } from '../../server/avatar/engineTypes.js';
import { DefaultEngine, createDefaultVision, type FaceVision } from '../../server/avatar/engines/default/index.js';
import { fitRgb } from '../../server/avatar/engines/size.js';
import { projectRoot } from '../../server/config.js';
import { createLogger } from '../../server/logger.js';
import { createI420, rgbToI420 } from '../../server/util/image.js';
import { testEngine } from '../helpers/testEngine.js';
import { drawPattern, loadPortrait, makeI420, waitFor } from '../media/helpers.js';

const log = createLogger('test.pool');
const base: EngineOptions = { modelPack: 'unused', executionProvider: 'cpu', intraOpThreads: 1, outputSize: 256 };
let sessions: AvatarSession[] = [];
let pools: AvatarWorkerPool[] = [];

function pool(opts: Partial<ConstructorParameters<typeof AvatarWorkerPool>[0]> = {}): AvatarWorkerPool {
  const p = new AvatarWorkerPool({ spares: 1, spareDelayMs: 0, initTimeoutMs: 20_000, log, ...opts });
  pools.push(p);
  return p;
}

async function open(
  engine: string,
  extra: Partial<EngineOptions>,
  opts: Partial<Parameters<typeof AvatarSession.create>[0]> = {},
): Promise<AvatarSession> {
  const s = await AvatarSession.create({
    engine,
    engineOptions: { ...base, ...extra },
    initTimeoutMs: 20_000,
    log,
    ...opts,
  });
  sessions.push(s);
  return s;
}

/** Feeds moving driving frames (one per poll) until `cond` holds. */
async function drive(s: AvatarSession, cond: () => boolean, what: string): Promise<void> {
  const drv = makeI420(320, 240);
  let t = 0;
  await waitFor(
    () => {
      drawPattern(drv, t++);
      s.pushFrame(drv);
      return cond();
    },
    60_000,
    what,
  );
}

/** Threads of this process (worker threads included). */
async function threads(): Promise<number> {
  return Number(/^Threads:\s+(\d+)/m.exec(await readFile('/proc/self/status', 'utf8'))?.[1]);
}

afterEach(async () => {
  await Promise.all(sessions.map((s) => s.close()));
  await Promise.all(pools.map((p) => p.close()));
  sessions = [];
  pools = [];
});

describe('AvatarWorkerPool (real worker threads)', () => {
  it('a crashed worker is replaced by the warm spare, which prepares the portrait and renders again', async () => {
    const p = pool();
    const s = await open('passthrough', {}, { pool: p, engineWrapper: testEngine({ crashAfterFrames: 20 }) });
    await s.prepare(await loadPortrait());
    await waitFor(() => p.stats.idle === 1, 30_000, 'a warm spare');
    const spare = p.idleThreadIds()[0];
    const first = s.workerThreadId;
    const afterRestart: (number | null)[] = [];
    s.on('restarted', () => afterRestart.push(s.workerThreadId));
    let frames = 0;
    s.on('frame', () => frames++);
    await drive(s, () => s.restarts >= 1, 'a restart');
    expect(afterRestart[0]).toBe(spare);
    expect(afterRestart[0]).not.toBe(first);
    const at = frames;
    await drive(s, () => frames >= at + 3, 'frames from the spare');
    expect(s.failed).toBe(false);
  });

  it('restart budget: a crash loop spends the burst and stops the session; crashes the bucket refills for do not', async () => {
    const loop = await open(
      'passthrough',
      {},
      { maxRestarts: 2, restartRefillMs: 3_600_000, engineWrapper: testEngine({ crashAfterFrames: 1 }) },
    );
    await loop.prepare(await loadPortrait());
    const failures: string[] = [];
    loop.on('failure', (e: Error) => failures.push(e.message));
    await drive(loop, () => loop.failed, 'the session to give up');
    expect(loop.restarts).toBe(2);
    expect(failures.at(-1)).toMatch(/crashed repeatedly and was stopped/);

    // One token back every millisecond: an engine that crashes now and then is restarted every time.
    const periodic = await open(
      'passthrough',
      {},
      { maxRestarts: 1, restartRefillMs: 1, pool: pool(), engineWrapper: testEngine({ crashAfterFrames: 2 }) },
    );
    await periodic.prepare(await loadPortrait());
    await drive(periodic, () => periodic.restarts >= 4, 'four restarts');
    expect(periodic.failed).toBe(false);
  });

  it("a closed session's worker is reset and serves the next session; pool.close() ends every thread", async () => {
    const portrait = await loadPortrait();
    const other = await loadPortrait('painting_mona_lisa.jpg');
    const before = await threads();
    const p = pool({ spares: 0 });
    const a = await open('portrait', {}, { pool: p });
    await a.prepare(portrait);
    let framesA = 0;
    a.on('frame', () => framesA++);
    await drive(a, () => framesA >= 2, 'frames in the first session');
    const tid = a.workerThreadId;
    await a.close();
    expect(p.idleThreadIds()).toEqual([tid]);

    const b = await open('portrait', {}, { pool: p });
    expect(b.workerThreadId).toBe(tid);
    expect(p.stats).toMatchObject({ started: 1, reused: 1, idle: 0 });
    // Nothing of the first session is left: no portrait until this one prepares its own.
    expect(b.prepared).toBeNull();
    expect(b.pushFrame(makeI420(320, 240))).toBe(-1);
    const prepared = await b.prepare(other);
    const sizes: string[] = [];
    b.on('frame', (f: { frame: { width: number; height: number } }) =>
      sizes.push(`${f.frame.width}x${f.frame.height}`),
    );
    await drive(b, () => sizes.length >= 2, 'frames in the second session');
    expect(new Set(sizes)).toEqual(new Set([`${prepared.width}x${prepared.height}`]));

    await b.close();
    await p.close();
    expect(p.stats).toMatchObject({ idle: 0, starting: 0, live: 0 });
    await waitFor(async () => (await threads()) <= before, 10_000, 'the worker threads to end');
  });

  it('close() while a spare is starting: its thread ends too', async () => {
    const p = pool({ spares: 1, spareDelayMs: 0 });
    const s = await open('passthrough', {}, { pool: p });
    await waitFor(() => p.stats.starting + p.stats.idle >= 1, 10_000, 'a spare starting');
    expect(p.stats.live).toBeGreaterThanOrEqual(1);
    await s.close();
    await p.close();
    expect(p.stats).toMatchObject({ idle: 0, starting: 0, live: 0 });
  });
});

describe('default engine: PortraitCache (real ONNX, real tracker)', () => {
  it('an engine prepared from the cache skips the face analysis and renders the same frames', async () => {
    const vision = await createDefaultVision();
    let analysed = 0;
    const counting: FaceVision = {
      analyzeImage: (g) => {
        analysed++;
        return vision.analyzeImage(g);
      },
      createTracker: () => vision.createTracker(),
    };
    const modelPack = path.join(projectRoot, 'models', 'default');
    const engines = await Promise.all(
      [0, 1, 2].map((i) => DefaultEngine.create({ modelPack, vision: counting, outputSize: i === 2 ? 256 : 512 })),
    );
    const [a, b, small] = engines as [DefaultEngine, DefaultEngine, DefaultEngine];
    try {
      const portrait = await loadPortrait();
      const pa = await a.prepare(portrait);
      expect(analysed).toBe(1);
      // As it travels to another worker thread.
      const cache = structuredClone(pa.cache);
      expect(cache?.engine).toBe('default');
      const pb = await b.prepare(portrait, cache);
      expect(analysed).toBe(1);
      expect([pb.width, pb.height]).toEqual([pa.width, pa.height]);
      // A cache made for another output size is not used: that engine analyses the portrait.
      await small.prepare(portrait, cache);
      expect(analysed).toBe(2);

      // The performer: the portrait itself, as a driving picture (a face the tracker finds).
      const drv = rgbToI420(fitRgb(portrait, 640, 480));
      const outA = createI420(pa.width, pa.height);
      const outB = createI420(pb.width, pb.height);
      let maxDiff = 0;
      for (let i = 0; i < 4; i++) {
        const sa = a.render(drv, outA, i * 33);
        const sb = b.render(drv, outB, i * 33);
        expect(sb.face).toBe(sa.face);
        for (let k = 0; k < outA.data.length; k++) maxDiff = Math.max(maxDiff, Math.abs(outA.data[k]! - outB.data[k]!));
      }
      expect(maxDiff).toBe(0);

      // reset(): the engine is as created (no portrait), with its models still loaded.
      b.reset();
      expect(() => b.render(drv, outB, 200)).toThrow(/before prepare/);
      await b.prepare(portrait, cache);
      expect(b.render(drv, outB, 233).face).toBe(true);
    } finally {
      for (const e of engines) e.close();
    }
  });
});
