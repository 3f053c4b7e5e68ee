/**
 * `npm run bench -- session [--seconds 10] [--slow-ms 150] [--interval-ms 20] [--size 320x240]`
 *
 * Avatar sessions side by side, off the main thread: a slow session (the passthrough engine made to hold its worker
 * thread --slow-ms per frame, as a slow engine would) and a normal one, both fed the same synthetic driving frames
 * every --interval-ms from this (main) thread for --seconds. The speed figures that tests/media/session.test.ts used
 * to assert (the fast session keeps up and renders several times what the slow one does; the main thread's timer
 * ticks stay on time) are measured here:
 *
 * - per session: frames rendered, dropped, rendered fps, and the render latency (pushFrame → 'frame' event) p50/p95;
 * - fast_to_slow_ratio: frames of the fast session / frames of the slow one (the test's old goal: ≥ 3);
 * - event_loop_lag_ms: how late each feeding tick ran vs its interval, p50/p95 (the old goal: p50 < 50 ms; a render
 *   on the main thread would make every tick --slow-ms late).
 *
 * Writes benchmarks/results/session.json.
 */
import os from 'node:os';
import { AvatarSession, type SessionFrame } from '../server/avatar/session.js';
import type { EngineOptions } from '../server/avatar/engineTypes.js';
import { testEngine, type TestEngineHooks } from '../tests/helpers/testEngine.js';
import { createLogger, setLogLevel } from '../server/logger.js';
import { createI420, loadImageRgb } from '../server/util/image.js';
import { portraitFile } from '../scripts/testData.js';
import { num, parseOptions, str } from './lib/args.js';
import { summarize, writeResult } from './lib/stats.js';

/** A moving gradient: every driving frame differs from the last. */
function fill(data: Uint8Array, width: number, height: number, t: number): void {
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data[y * width + x] = 16 + ((x + y + t * 4) % 200);
  data.fill(128, width * height);
}

interface Tracked {
  session: AvatarSession;
  /** pushFrame time by sequence number. */
  pushedAt: Map<number, number>;
  latency: number[];
  frames: number;
}

/** The flags (see the header). */
export const OPTIONS = {
  seconds: num(10),
  slowMs: num(150),
  intervalMs: num(20),
  size: str('320x240'),
};

export async function main(args: string[]): Promise<void> {
  const opts = parseOptions('session', args, OPTIONS);
  setLogLevel('warn');
  const { seconds, slowMs, intervalMs } = opts;
  const [w, h] = opts.size.split('x').map(Number) as [number, number];
  if (!(seconds > 0 && slowMs >= 0 && intervalMs > 0 && w > 0 && h > 0)) throw new TypeError('session: bad arguments');
  const log = createLogger('bench.session');
  const base: EngineOptions = { modelPack: 'unused', executionProvider: 'cpu', intraOpThreads: 1, outputSize: 256 };
  // The slow engine is the passthrough engine behind the test hooks' wrapper (a render held busy slowMs).
  const open = async (hooks: TestEngineHooks | null): Promise<Tracked> => {
    const session = await AvatarSession.create({
      engine: 'passthrough',
      engineOptions: base,
      ...(hooks ? { engineWrapper: testEngine(hooks) } : {}),
      initTimeoutMs: 30_000,
      log,
    });
    const t: Tracked = { session, pushedAt: new Map(), latency: [], frames: 0 };
    session.on('frame', (f: SessionFrame) => {
      t.frames++;
      const at = t.pushedAt.get(f.seq);
      if (at !== undefined) t.latency.push(performance.now() - at);
      t.pushedAt.delete(f.seq);
    });
    return t;
  };
  const slow = await open({ slowRenderMs: slowMs });
  const fast = await open(null);
  try {
    const portrait = await loadImageRgb(portraitFile('real_woman_dark_hair.png'));
    await Promise.all([slow.session.prepare(portrait), fast.session.prepare(portrait)]);
    const drv = createI420(w, h);
    const lags: number[] = [];
    const load0 = os.loadavg()[0]!;
    let pushed = 0;
    const total = Math.round((seconds * 1000) / intervalMs);
    await new Promise<void>((resolve) => {
      let last = performance.now();
      const feed = setInterval(() => {
        const now = performance.now();
        lags.push(Math.max(0, now - last - intervalMs));
        last = now;
        fill(drv.data, w, h, pushed++);
        for (const t of [slow, fast]) {
          const seq = t.session.pushFrame(drv, now);
          if (seq > 0) t.pushedAt.set(seq, now);
        }
        if (pushed >= total) {
          clearInterval(feed);
          resolve();
        }
      }, intervalMs);
    });
    // Let the last frames out (or be counted as dropped).
    const deadline = Date.now() + 5000 + 2 * slowMs;
    while (Date.now() < deadline && [slow, fast].some((t) => t.frames + t.session.dropped < pushed)) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const per = (t: Tracked): Record<string, unknown> => ({
      frames: t.frames,
      dropped: t.session.dropped,
      fps: Math.round((t.frames / seconds) * 10) / 10,
      render_latency_ms: summarize(t.latency),
    });
    writeResult('session', {
      seconds,
      interval_ms: intervalMs,
      slow_render_ms: slowMs,
      driving: `${w}x${h}`,
      pushed,
      cpus: os.cpus().length,
      load_average_1m: { start: load0, end: os.loadavg()[0]! },
      fast: per(fast),
      slow: per(slow),
      fast_to_slow_ratio: Math.round((fast.frames / Math.max(1, slow.frames)) * 10) / 10,
      event_loop_lag_ms: summarize(lags),
      goal: { fast_to_slow_ratio: 3, event_loop_lag_p50_ms: 50 },
    });
  } finally {
    await Promise.all([slow.session.close(), fast.session.close()]);
  }
}
