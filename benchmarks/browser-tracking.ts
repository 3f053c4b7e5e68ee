/**
 * `npm run bench -- browser-tracking [--frames-per-clip N] [--clips a.mp4,b.mp4]`
 *
 * The face tracker in the performer's browser (private mode) against the server's: the same consecutive frames of
 * the shared driving clips (640 wide, aspect kept, decoded by ffmpeg) tracked by
 * - server: MeshTracker.track (onnxruntime-node, 1 intra-op thread, synchronous);
 * - browser: BrowserFaceTracker in real Chromium (client/lib/tracker: onnxruntime-web WASM SIMD in a Web Worker),
 *   single-threaded (a page that is not cross-origin isolated, as the studio is today), and with WASM threads on a
 *   cross-origin isolated page (COOP + COEP).
 * Per tracked frame (BlazeFace frames apart): the worker's tracking time (`worker`: the networks and the shared
 * tracking code) and the page's round trip (`round_trip`: plus the frame's transfer, its pixel read-back and the
 * answer). Wall-clock ms, one warm-up pass first. Writes benchmarks/results/browser-tracking.json.
 */
import os from 'node:os';
import { readVideoFrames } from '../server/util/video.js';
import { MeshTracker } from '../server/vision/mesh/meshTracker.js';
import { drivingClip } from '../scripts/testData.js';
import { buildClient, ChromiumBrowser } from '../tests/helpers/chromium.js';
import { startTestServer } from '../tests/helpers/server.js';
import { openTrackerPage, trackInPage, type PageRun, type RgbFrame } from '../tests/helpers/trackerPage.js';
import { num, parseOptions } from './lib/args.js';
import { summarize, writeResult } from './lib/stats.js';

const spec = {
  framesPerClip: num(60, { min: 10, integer: true }),
  clips: {
    type: 'list',
    default: 'woman_speech_head_motion.mp4,young_woman_expressive_wink.mp4,man_glasses_talking_portrait.mp4',
  },
} as const;

function steady(run: Pick<PageRun, 'detected'>, ms: readonly number[]): number[] {
  return ms.filter((_, i) => !run.detected[i]);
}

export async function main(args: string[]): Promise<void> {
  const opts = parseOptions('browser-tracking', args, spec);
  const frames: RgbFrame[] = [];
  for (const clip of opts.clips)
    for await (const f of readVideoFrames(drivingClip(clip), {
      format: 'rgb24',
      maxFrames: opts.framesPerClip,
      width: 640,
    }))
      frames.push(f);
  const loadStart = os.loadavg();

  // The server: one warm-up pass, then the timed one.
  const server = await MeshTracker.create({ fallbackDetector: null });
  const gray = (f: RgbFrame): { width: number; height: number; data: Uint8Array } => ({
    ...f,
    data: new Uint8Array(0),
  });
  const serverRun = (): { ms: number[]; detected: boolean[] } => {
    server.reset();
    const ms: number[] = [];
    const detected: boolean[] = [];
    frames.forEach((f, i) => {
      const t0 = performance.now();
      server.track(gray(f), (i * 1000) / 30, { format: 'rgb', ...f });
      ms.push(performance.now() - t0);
      detected.push(server.timings.detected);
    });
    return { ms, detected };
  };
  serverRun();
  const srv = serverRun();
  server.models.close();

  await buildClient();
  const ts = await startTestServer({ avatar: { engine: 'portrait' } });
  const browser = await ChromiumBrowser.launch();
  const browserRuns: Record<string, unknown> = {};
  try {
    for (const isolated of [false, true]) {
      await openTrackerPage(browser.page, ts.url, frames, isolated);
      await trackInPage(browser.page, frames.slice(0, 30));
      const run = await trackInPage(browser.page, frames);
      browserRuns[isolated ? 'wasm_isolated' : 'wasm'] = {
        runtime: run.runtime,
        worker: summarize(steady(run, run.totalMs)),
        round_trip: summarize(steady(run, run.roundTripMs)),
        pixel_read: summarize(steady(run, run.frameMs)),
        detection_frames: summarize(run.totalMs.filter((_, i) => run.detected[i])),
        tracked_frames: run.tracks.filter((t) => t !== null).length,
      };
    }
  } finally {
    await browser.close();
    await ts.stop();
  }
  const s = summarize(steady(srv, srv.ms));
  const w = browserRuns['wasm'] as { worker: { p50: number; p95: number }; round_trip: { p50: number; p95: number } };
  const wi = browserRuns['wasm_isolated'] as typeof w & { runtime: { threads: number } };
  writeResult('browser-tracking', {
    machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, loadavg_start: loadStart, loadavg_end: os.loadavg() },
    input: { clips: opts.clips, frames: frames.length, frame_size: `${frames[0]?.width}x${frames[0]?.height} RGB` },
    server: {
      tracker: 'MeshTracker (onnxruntime-node 1.30, CPU, 1 intra-op thread)',
      track_steady: s,
      detection_frames: summarize(srv.ms.filter((_, i) => srv.detected[i])),
    },
    browser: { tracker: 'BrowserFaceTracker (onnxruntime-web 1.30 WASM SIMD, Web Worker, Chromium)', ...browserRuns },
    side_by_side: {
      'per tracked frame, ms p50 / p95': {
        server: [s.p50, s.p95],
        browser_worker: [w.worker.p50, w.worker.p95],
        browser_round_trip: [w.round_trip.p50, w.round_trip.p95],
        [`browser_worker_${wi.runtime.threads}_threads`]: [wi.worker.p50, wi.worker.p95],
      },
    },
  });
}
