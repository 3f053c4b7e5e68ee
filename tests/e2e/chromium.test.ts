/**
 * End to end in real Chromium: a performer page publishes a fake webcam (a .y4m made from a shared driving clip,
 * plus Chromium's fake microphone beep) through a real server; a viewer page in a second browser receives the
 * avatar. Over a 10 s window the viewer must decode ≥ 10 fps at the portrait's output size, the picture must look
 * like the portrait and not like the webcam, and audio must arrive with energy.
 *
 * Engine: the model-pack engine when models/default/manifest.json exists, otherwise 'portrait' (re-renders the
 * portrait through the whole media path). Either way the output must resemble the portrait, not the performer.
 */
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Probe } from '../../benchmarks/lib/browserProbe.js';
import { installProbe } from '../../benchmarks/lib/browserInject.js';
import { buildClient, ChromiumBrowser, chromiumPath } from '../helpers/chromium.js';
import { correlation, drivingClip, grayFrame, makeY4m, portraitFile, repoRoot } from '../helpers/media.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

type Win = { __probe: Probe; __avatar: { frames: number; width: number; height: number; lastError: unknown; state: string }; __studio: { publishState: string; room: { portraitId: string | null; width: number; height: number } | null; lastError: unknown } };

const CLIP = drivingClip('man_mouth_wide_open.mp4');
const PORTRAIT = portraitFile('real_older_man_glasses.jpg');
const SMALL = 48; // side of the downscaled grayscale frames compared
const engine = existsSync(path.join(repoRoot, 'models', 'default', 'manifest.json')) ? 'default' : 'portrait';
const haveTools = existsSync(chromiumPath) && existsSync(CLIP) && existsSync(PORTRAIT);
if (!haveTools) process.stdout.write(`chromium e2e skipped: ${chromiumPath} or the shared media is missing\n`);

async function upload(base: string, file: string): Promise<{ id: string }> {
  const form = new FormData();
  form.append('consent', 'true');
  form.append('file', new Blob([await readFile(file)], { type: 'image/jpeg' }), path.basename(file));
  const res = await fetch(`${base}/api/portraits`, { method: 'POST', body: form });
  const body = await res.text();
  expect(res.status, body).toBe(201);
  return JSON.parse(body) as { id: string };
}

async function createRoom(base: string, portraitId: string): Promise<{ performerUrl: string; viewerUrl: string }> {
  const res = await fetch(`${base}/api/rooms`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ portraitId }),
  });
  const body = await res.text();
  expect(res.status, body).toBe(201);
  return JSON.parse(body) as { performerUrl: string; viewerUrl: string };
}

describe.runIf(haveTools)(`end to end in Chromium (engine ${engine})`, () => {
  let srv: TestServer | null = null;
  let performer: ChromiumBrowser | null = null;
  let viewer: ChromiumBrowser | null = null;
  let y4m = '';

  beforeAll(async () => {
    // 640×480, 8 s: Chromium loops it as the webcam.
    y4m = await makeY4m({ source: CLIP, width: 640, height: 480, fps: 30, seconds: 8 });
    await buildClient();
    srv = await startTestServer({ avatar: { engine } });
    [performer, viewer] = await Promise.all([ChromiumBrowser.launch({ fakeVideo: y4m }), ChromiumBrowser.launch()]);
    await installProbe(performer.page);
    await installProbe(viewer.page);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([performer?.close(), viewer?.close()]);
    await srv?.stop();
    if (y4m) await rm(path.dirname(y4m), { recursive: true, force: true });
  });

  it('performer publishes; the viewer sees the portrait at ≥ 10 fps with sound', async () => {
    const s = srv!;
    const pPage = performer!.page;
    const vPage = viewer!.page;
    const logs = (): string => `\nperformer:\n${performer!.logs.join('\n')}\nviewer:\n${viewer!.logs.join('\n')}`;

    // Upload a portrait (with consent) and create a room through the REST API.
    const portrait = await upload(s.url, PORTRAIT);
    const room = await createRoom(s.url, portrait.id);

    // Performer: open the studio link, pick the portrait in the gallery, start.
    await pPage.goto(room.performerUrl);
    await pPage.locator(`#gallery button[data-id="${portrait.id}"]`).click();
    await waitFor(() => pPage.evaluate(() => (window as unknown as Win).__studio.room?.portraitId), 15_000, 'portrait chosen');
    await waitFor(() => pPage.locator('#start:not([disabled])').count(), 10_000, 'start enabled');
    await pPage.locator('#start').click();
    await waitFor(
      () => pPage.evaluate(() => (window as unknown as Win).__studio.publishState === 'connected'),
      20_000,
      'performer connected' + logs(),
    ).catch((err: Error) => {
      throw new Error(err.message + logs());
    });
    const out = await pPage.evaluate(() => (window as unknown as Win).__studio.room!);

    // Viewer: open the viewer link and wait for frames.
    await vPage.goto(room.viewerUrl);
    await waitFor(() => vPage.evaluate(() => (window as unknown as Win).__avatar.frames > 5), 30_000, 'viewer frames').catch(
      (err: Error) => {
        throw new Error(err.message + logs());
      },
    );
    await vPage.evaluate(() => (window as unknown as Win).__probe.startAudioMeter('#video'));

    // A 10 s measuring window: frames presented, RTP counters before and after.
    const inbound = async (): Promise<{ frames: number; audioPackets: number; audioBytes: number; decoded: number }> =>
      vPage.evaluate(async () => {
        const w = window as unknown as Win;
        const rtp = await w.__probe.rtpStats();
        const a = rtp.filter((r) => r.type === 'inbound-rtp' && r.kind === 'audio');
        const v = rtp.filter((r) => r.type === 'inbound-rtp' && r.kind === 'video');
        return {
          frames: w.__avatar.frames,
          audioPackets: a.reduce((n, r) => n + r.packets, 0),
          audioBytes: a.reduce((n, r) => n + r.bytes, 0),
          decoded: v.reduce((n, r) => n + r.frames, 0),
        };
      });
    const before = await inbound();
    const t0 = Date.now();
    await waitFor(() => Date.now() - t0 >= 10_000, 15_000, 'measuring window', 250);
    const after = await inbound();
    const seconds = (Date.now() - t0) / 1000;
    const fps = (after.frames - before.frames) / seconds;
    const decodedFps = (after.decoded - before.decoded) / seconds;

    // What the viewer shows vs the portrait (as the server normalised it) and vs the webcam picture.
    const size = await vPage.evaluate(() => {
      const v = document.querySelector('#video') as HTMLVideoElement;
      return { w: v.videoWidth, h: v.videoHeight };
    });
    const shown = await vPage.evaluate((n) => (window as unknown as Win).__probe.grayFrame('#video', n, n), SMALL);
    const portraitPng = await (await fetch(`${s.url}/api/portraits/${portrait.id}/image`)).arrayBuffer();
    const portraitGray = await sharp(Buffer.from(portraitPng)).resize(SMALL, SMALL, { fit: 'fill' }).grayscale().raw().toBuffer();
    const webcamNow = await pPage.evaluate((n) => (window as unknown as Win).__probe.grayFrame('#camera', n, n), SMALL);
    const webcamFile = await grayFrame(CLIP, SMALL, SMALL, 1);
    const corrPortrait = correlation(shown, portraitGray);
    const corrWebcam = Math.max(Math.abs(correlation(shown, webcamNow)), Math.abs(correlation(shown, webcamFile)));
    const audio = await vPage.evaluate(() => (window as unknown as Win).__probe.audioLevel());

    const result = {
      engine,
      fps: +fps.toFixed(1),
      decodedFps: +decodedFps.toFixed(1),
      size,
      expected: { w: out.width, h: out.height },
      corrPortrait: +corrPortrait.toFixed(3),
      corrWebcam: +corrWebcam.toFixed(3),
      audioPackets: after.audioPackets - before.audioPackets,
      audio,
    };
    process.stdout.write(`e2e: ${JSON.stringify(result)}\n`);

    expect(fps).toBeGreaterThanOrEqual(10);
    expect(decodedFps).toBeGreaterThanOrEqual(10);
    expect(size).toEqual({ w: out.width, h: out.height });
    expect(corrPortrait).toBeGreaterThan(0.8);
    expect(corrWebcam).toBeLessThan(0.5);
    expect(corrPortrait - corrWebcam).toBeGreaterThan(0.3);
    expect(after.audioPackets - before.audioPackets).toBeGreaterThan(100); // Opus: 50 packets/s
    expect(after.audioBytes).toBeGreaterThan(before.audioBytes);
    expect(audio).not.toBeNull();
    expect(audio!.peakRms).toBeGreaterThan(0.01);
    expect(audio!.loudWindows).toBeGreaterThan(0);
  }, 120_000);

  it('a viewer opened before the performer starts waits, then plays, and keeps playing across stop/start', async () => {
    const s = srv!;
    const pPage = performer!.page;
    const vPage = viewer!.page;
    const frames = (): Promise<number> => vPage.evaluate(() => (window as unknown as Win).__avatar.frames);
    const viewerState = (): Promise<string> => vPage.evaluate(() => (window as unknown as { __avatar: { state: string } }).__avatar.state);

    const room = await createRoom(s.url, (await upload(s.url, PORTRAIT)).id);

    await vPage.goto(room.viewerUrl);
    await waitFor(async () => (await viewerState()) !== 'connecting', 15_000, 'viewer joined');
    expect(await frames()).toBe(0);
    expect(await viewerState()).not.toBe('playing');

    await pPage.goto(`${room.performerUrl}&preview=0`);
    await waitFor(() => pPage.locator('#start:not([disabled])').count(), 15_000, 'start enabled');
    await pPage.locator('#start').click();
    await waitFor(async () => (await frames()) > 30, 30_000, 'viewer plays after the performer starts');
    expect(await viewerState()).toBe('playing');

    // Stop and start again: the viewer's stream continues without a reload.
    await pPage.locator('#start').click();
    await waitFor(() => pPage.evaluate(() => (window as unknown as Win).__studio.publishState === 'idle'), 10_000, 'performer stopped');
    await waitFor(() => pPage.locator('#start:not([disabled])').count(), 10_000, 'start enabled again');
    await pPage.locator('#start').click();
    await waitFor(() => pPage.evaluate(() => (window as unknown as Win).__studio.publishState === 'connected'), 20_000, 'performer live again');
    const resumedAt = await frames();
    await waitFor(async () => (await frames()) > resumedAt + 30, 30_000, 'viewer frames after the restart');
    expect(await vPage.evaluate(() => (window as unknown as Win).__avatar.lastError)).toBeNull();
  }, 120_000);
});
