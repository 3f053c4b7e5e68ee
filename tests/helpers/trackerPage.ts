/**
 * A page that runs the browser face tracker (client/dist/face-tracker.js) on frames the test hands it: an empty page
 * on the avatar server's own origin (the tracker's worker, runtime and models come from the server), with each
 * frame's raw RGB pixels served to it at /__frames/i. Used by the parity test and the browser-tracking benchmark.
 */
import type { Page } from 'playwright-core';
import type { TrackerBackend } from '../../client/lib/tracker/trackerTypes.js';

/** A frame's pixels (packed RGB). */
export interface RgbFrame {
  width: number;
  height: number;
  data: Uint8Array;
}

/** What the page answers per frame (plain arrays; null: no face). */
export interface PageTrack {
  landmarks: number[];
  mesh: number[];
  eyes: { left: number; right: number };
  gaze: { x: number; y: number };
  mouth: number;
  yaw: number;
  confidence: number;
}
export interface PageRun {
  runtime: { backend: string; threads: number; crossOriginIsolated: boolean; loadMs: number };
  tracks: (PageTrack | null)[];
  /** Per frame: the worker's tracking time, the page's round trip, reading the pixels, whether BlazeFace ran. */
  totalMs: number[];
  roundTripMs: number[];
  frameMs: number[];
  detected: boolean[];
}

/** The page's global: the tracker module, imported by the page itself (a module script). */
type Win = { tracker: typeof import('../../client/lib/tracker/faceTracker.js') };
const PAGE =
  '<!doctype html><title>tracker</title><script type="module">' +
  "import * as m from '/dist/face-tracker.js'; window.tracker = m;</script>";
/** Cross-origin isolation (SharedArrayBuffer: WASM threads). */
const ISOLATION = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };

/**
 * Opens the page on `base`'s origin. With `isolated`, the page is served cross-origin isolated (COOP + COEP; the server
 * sends COEP with the bundles), so that the worker may run WASM threads.
 */
export async function openTrackerPage(
  page: Page,
  base: string,
  frames: readonly RgbFrame[],
  isolated = false,
): Promise<void> {
  await page.unrouteAll();
  await page.route(`${base}/__tracker`, (r) =>
    r.fulfill({ contentType: 'text/html', body: PAGE, headers: isolated ? ISOLATION : {} }),
  );
  await page.route(`${base}/__frames/*`, (r) => {
    const i = Number(new URL(r.request().url()).pathname.split('/').pop());
    return r.fulfill({ contentType: 'application/octet-stream', body: Buffer.from(frames[i]!.data) });
  });
  await page.goto(`${base}/__tracker`);
  await page.waitForFunction(() => (window as unknown as Partial<Win>).tracker !== undefined);
}

/**
 * Creates a tracker in the page, tracks frames 0..n-1 at 30 fps timestamps (handed over as ImageData, or as
 * ImageBitmaps or VideoFrames made from it), closes it.
 */
export async function trackInPage(
  page: Page,
  frames: readonly RgbFrame[],
  opts: { backend?: TrackerBackend; threads?: number; frames?: 'imagedata' | 'bitmap' | 'videoframe' } = {},
): Promise<PageRun> {
  const sizes = frames.map((f) => [f.width, f.height] as const);
  return page.evaluate(
    async ({ sizes, opts }) => {
      const { BrowserFaceTracker } = (window as unknown as Win).tracker;
      const tracker = await BrowserFaceTracker.create({ backend: opts.backend, threads: opts.threads });
      const run: Omit<PageRun, 'runtime'> = { tracks: [], totalMs: [], roundTripMs: [], frameMs: [], detected: [] };
      for (const [i, [w, h]] of sizes.entries()) {
        const rgb = new Uint8Array(await (await fetch(`/__frames/${i}`)).arrayBuffer());
        const rgba = new Uint8ClampedArray(w * h * 4);
        for (let p = 0, q = 0; p < rgb.length; p += 3, q += 4) {
          rgba[q] = rgb[p]!;
          rgba[q + 1] = rgb[p + 1]!;
          rgba[q + 2] = rgb[p + 2]!;
          rgba[q + 3] = 255;
        }
        const image = new ImageData(rgba, w, h);
        const frame =
          opts.frames === 'bitmap'
            ? await createImageBitmap(image)
            : opts.frames === 'videoframe'
              ? new VideoFrame(await createImageBitmap(image), { timestamp: (i * 1e6) / 30 })
              : image;
        const r = await tracker.track(frame, (i * 1000) / 30);
        if (!r) throw new Error(`frame ${i} was dropped`);
        run.totalMs.push(r.timings.totalMs);
        run.roundTripMs.push(r.timings.roundTripMs);
        run.frameMs.push(r.timings.frameMs);
        run.detected.push(r.timings.detected);
        const t = r.track;
        run.tracks.push(
          t && {
            landmarks: Array.from(t.landmarks),
            mesh: Array.from(t.mesh),
            eyes: t.eyes,
            gaze: t.gaze,
            mouth: t.mouth,
            yaw: t.pose.yaw,
            confidence: t.confidence,
          },
        );
      }
      tracker.close();
      return { runtime: tracker.runtime, ...run };
    },
    { sizes, opts },
  );
}

/** Tries to create a tracker in the page: 'created', or the error's code and message. */
export function createInPage(page: Page): Promise<{ code?: string; message: string } | 'created'> {
  return page.evaluate(async () => {
    const { BrowserFaceTracker } = (window as unknown as Win).tracker;
    try {
      (await BrowserFaceTracker.create()).close();
      return 'created' as const;
    } catch (err) {
      return { code: (err as { code?: string }).code, message: (err as Error).message };
    }
  });
}

/**
 * Three frames handed to one tracker without waiting: the middle one is replaced by the last before it is tracked.
 * Answers which calls got a result (null: dropped) and the tracker's drop count; then a bad frame's error code, whether
 * the next good frame was tracked, and the error code of a call after close().
 */
export function dropsInPage(
  page: Page,
  frame: RgbFrame,
): Promise<{
  answered: boolean[];
  dropped: number;
  badCode: string | null;
  trackedAfterBad: boolean;
  closedCode: string | null;
}> {
  return page.evaluate(
    async ({ w, h }) => {
      const { BrowserFaceTracker } = (window as unknown as Win).tracker;
      const tracker = await BrowserFaceTracker.create();
      const rgb = new Uint8Array(await (await fetch('/__frames/0')).arrayBuffer());
      const rgba = new Uint8ClampedArray(w * h * 4).fill(255);
      for (let p = 0, q = 0; p < rgb.length; p += 3, q += 4) rgba.set(rgb.subarray(p, p + 3), q);
      const calls = [0, 1, 2].map((i) => tracker.track(new ImageData(rgba, w, h), i * 33));
      const answered = (await Promise.all(calls)).map((r) => r !== null);
      const dropped = tracker.droppedFrames;
      // A bad frame fails its own call only.
      const badCode = await tracker.track({ width: 4, height: 4, data: new Uint8ClampedArray(5) }, 200).then(
        () => null,
        (err: { code?: string }) => err.code ?? 'none',
      );
      const after = await tracker.track(new ImageData(rgba, w, h), 233);
      tracker.close();
      const closedCode = await tracker.track(new ImageData(rgba, w, h), 266).then(
        () => null,
        (err: { code?: string }) => err.code ?? 'none',
      );
      return { answered, dropped, badCode, trackedAfterBad: after?.track != null, closedCode };
    },
    { w: frame.width, h: frame.height },
  );
}
