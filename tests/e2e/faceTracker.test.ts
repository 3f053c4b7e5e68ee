/**
 * The browser face tracker (client/lib/tracker: onnxruntime-web WASM in a Web Worker, the server's tracking code)
 * in real Chromium against the server's tracker (onnxruntime-node), on the same frames of real clips decoded by
 * ffmpeg at 512 x 512: the page loads the tracker from a real server (the bundles from /dist, the models from
 * /models/face, checked against their pins), fetches each frame's RGB pixels and tracks it; the 68 landmarks and
 * the whole mesh agree within 0.5 px, eye openness and gaze within a small tolerance (frames as ImageData with one
 * WASM thread, and as ImageBitmaps on a cross-origin isolated page with WASM threads). A frame replaced by a newer one
 * before it was tracked answers null and is counted. And the worker refuses a
 * corrupted model file (a server whose models/face holds a damaged iris.onnx) and a missing one with
 * FACE_MODEL_INVALID.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readVideoFrames } from '../../server/util/video.js';
import { MeshTracker } from '../../server/vision/mesh/meshTracker.js';
import { defaultMeshModelDir } from '../../server/vision/mesh/models.js';
import { MESH_MODEL_NAMES } from '../../server/vision/mesh/pins.js';
import { buildClient, ChromiumBrowser } from '../helpers/chromium.js';
import { drivingClip } from '../helpers/media.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { createInPage, dropsInPage, openTrackerPage, trackInPage, type RgbFrame } from '../helpers/trackerPage.js';

const SIDE = 512;
const FRAMES = 45;
/** Landmark and mesh agreement, px at 512 x 512. */
const MAX_PX = 0.5;
/** Eye openness (height over width) and gaze (eye half-widths) agreement. */
const MAX_OPENNESS = 0.01;
const MAX_GAZE = 0.03;

async function decode(clip: string, n: number): Promise<RgbFrame[]> {
  const out: RgbFrame[] = [];
  for await (const f of readVideoFrames(drivingClip(clip), {
    format: 'rgb24',
    maxFrames: n,
    width: SIDE,
    height: SIDE,
  }))
    out.push(f);
  return out;
}

let ts: TestServer;
let browser: ChromiumBrowser;

beforeAll(async () => {
  await buildClient();
  ts = await startTestServer({ avatar: { engine: 'portrait' } });
  browser = await ChromiumBrowser.launch();
});
afterAll(async () => {
  await browser?.close();
  await ts?.stop();
});

describe('browser face tracker', () => {
  it('serves only the tracker models, as bytes', async () => {
    const ok = await fetch(`${ts.url}/models/face/iris.onnx`);
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toBe('application/octet-stream');
    expect(
      Buffer.from(await ok.arrayBuffer()).equals(readFileSync(path.join(defaultMeshModelDir(), 'iris.onnx'))),
    ).toBe(true);
    for (const bad of ['faceres.onnx', 'sources.json', '..%2Fdefault%2Fmanifest.json'])
      expect((await fetch(`${ts.url}/models/face/${bad}`)).status).toBe(404);
    const wasm = await fetch(`${ts.url}/dist/ort/ort-wasm-simd-threaded.wasm`, { method: 'GET' });
    expect(wasm.headers.get('content-type')).toBe('application/wasm');
    // COEP on the bundles: an isolated page may start the worker and its WASM threads from them.
    expect(wasm.headers.get('cross-origin-embedder-policy')).toBe('require-corp');
    await wasm.arrayBuffer();
  });

  // The first clip as ImageData on a plain page (one WASM thread, as the studio today); the second as ImageBitmaps on
  // a cross-origin isolated page (WASM threads).
  for (const [clip, isolated] of [
    ['woman_wink_frown_surprise.mp4', false],
    ['woman_speech_head_motion.mp4', true],
  ] as const) {
    const how = isolated ? 'ImageBitmaps, WASM threads' : 'ImageData, one WASM thread';
    it(`tracks ${clip} (${how}) as the server does: landmarks within ${MAX_PX} px at ${SIDE} x ${SIDE}`, async () => {
      const frames = await decode(clip, FRAMES);
      expect(frames).toHaveLength(FRAMES);
      const server = await MeshTracker.create({ fallbackDetector: null });
      const want = frames.map((f, i) => {
        const t = server.track({ width: SIDE, height: SIDE, data: new Uint8Array(0) }, (i * 1000) / 30, {
          format: 'rgb',
          ...f,
        });
        return (
          t && {
            landmarks: Array.from(t.landmarks),
            mesh: Array.from(t.mesh),
            eyes: { ...t.eyes },
            gaze: { ...t.gaze },
          }
        );
      });
      await openTrackerPage(browser.page, ts.url, frames, isolated);
      const got = await trackInPage(browser.page, frames, { frames: isolated ? 'bitmap' : 'imagedata' });
      expect(got.runtime).toMatchObject({ backend: 'wasm', crossOriginIsolated: isolated });
      if (!isolated) expect(got.runtime.threads).toBe(1);
      let max = 0;
      let sum = 0;
      let count = 0;
      let maxMesh = 0;
      let maxOpen = 0;
      let maxGaze = 0;
      for (let i = 0; i < FRAMES; i++) {
        const a = want[i];
        const b = got.tracks[i];
        expect(a, `the server finds the face in frame ${i}`).toBeTruthy();
        expect(b, `the browser finds the face in frame ${i}`).toBeTruthy();
        for (let k = 0; k < 136; k++) {
          const d = Math.abs(a!.landmarks[k]! - b!.landmarks[k]!);
          max = Math.max(max, d);
          sum += d;
          count++;
        }
        for (let k = 0; k < a!.mesh.length; k++) maxMesh = Math.max(maxMesh, Math.abs(a!.mesh[k]! - b!.mesh[k]!));
        maxOpen = Math.max(maxOpen, Math.abs(a!.eyes.left - b!.eyes.left), Math.abs(a!.eyes.right - b!.eyes.right));
        maxGaze = Math.max(maxGaze, Math.abs(a!.gaze.x - b!.gaze.x), Math.abs(a!.gaze.y - b!.gaze.y));
      }
      const summary = `68 points max ${max.toFixed(4)} px mean ${(sum / count).toFixed(5)} px; mesh max ${maxMesh.toFixed(4)} px; openness max ${maxOpen.toFixed(5)}; gaze max ${maxGaze.toFixed(5)}`;
      expect(max, summary).toBeLessThan(MAX_PX);
      expect(maxMesh, summary).toBeLessThan(MAX_PX);
      expect(maxOpen, summary).toBeLessThan(MAX_OPENNESS);
      expect(maxGaze, summary).toBeLessThan(MAX_GAZE);
    });
  }

  it('reads a webcam VideoFrame as the same pixels', async () => {
    const frames = await decode('woman_wink_frown_surprise.mp4', 3);
    await openTrackerPage(browser.page, ts.url, frames);
    const a = await trackInPage(browser.page, frames);
    const b = await trackInPage(browser.page, frames, { frames: 'videoframe' });
    for (let i = 0; i < frames.length; i++) {
      expect(b.tracks[i], `frame ${i}`).toBeTruthy();
      const d = a.tracks[i]!.landmarks.map((v, k) => Math.abs(v - b.tracks[i]!.landmarks[k]!));
      expect(Math.max(...d)).toBeLessThan(MAX_PX);
    }
  });

  it('keeps the newest frame (a replaced one answers null and is counted); a bad frame fails alone (MEDIA)', async () => {
    const [frame] = await decode('woman_wink_frown_surprise.mp4', 1);
    await openTrackerPage(browser.page, ts.url, [frame!]);
    expect(await dropsInPage(browser.page, frame!)).toEqual({
      answered: [true, false, true],
      dropped: 1,
      badCode: 'MEDIA',
      trackedAfterBad: true,
      closedCode: 'CLOSED',
    });
  });

  it('refuses a corrupted model and a missing one with FACE_MODEL_INVALID', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'face-models-'));
    let bad: TestServer | undefined;
    try {
      for (const n of MESH_MODEL_NAMES)
        copyFileSync(path.join(defaultMeshModelDir(), `${n}.onnx`), path.join(dir, `${n}.onnx`));
      const iris = readFileSync(path.join(dir, 'iris.onnx'));
      iris[iris.length >> 1] = 0xff - iris[iris.length >> 1]!;
      writeFileSync(path.join(dir, 'iris.onnx'), iris);
      bad = await startTestServer({ avatar: { engine: 'portrait' } }, { faceModelDir: dir });
      const page = browser.page;
      await openTrackerPage(page, bad.url, []);
      const create = (): ReturnType<typeof createInPage> => createInPage(page);
      const corrupted = await create();
      expect(corrupted).toMatchObject({ code: 'FACE_MODEL_INVALID' });
      expect((corrupted as { message: string }).message).toMatch(/iris\.onnx does not match its pinned sha256/);
      rmSync(path.join(dir, 'iris.onnx'));
      const missing = await create();
      expect(missing).toMatchObject({ code: 'FACE_MODEL_INVALID' });
      expect((missing as { message: string }).message).toMatch(/face model missing: .*iris\.onnx answered 404/);
    } finally {
      await bad?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
