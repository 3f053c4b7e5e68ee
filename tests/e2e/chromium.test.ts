/**
 * End to end in real Chromium, one server and two browsers shared by the cases below (run one after the other, so
 * that a busy 2-core machine does not run four browsers at once):
 *
 * - the studio page alone: room creation, consent-gated upload with error codes, choosing a portrait, settings;
 * - the main path: a performer page publishes a fake webcam (a .y4m made from a shared driving clip,
 * plus Chromium's fake microphone beep) through a real server; a viewer page in a second browser receives the
 * avatar. Over a 10 s window frames keep arriving at the portrait's output size (no 2 s part of it without a new
 * frame; never more frames decoded than the server sent), the picture looks like the portrait and not like the
 * webcam and stays still (this engine re-renders the still portrait), and audio arrives with energy. How fast is a
 * benchmark matter (benchmarks/: the glass-to-glass benchmark measures the Chromium viewer's fps), not asserted here.
 *
 * - a viewer opened before the performer starts, and a performer stop/start;
 * - reconnects: both pages reach the server through a TCP proxy whose connections are cut; the client library must
 *   rejoin, re-publish and re-view without a reload.
 *
 * Engine: 'portrait' (re-renders the portrait through the whole media path) for the transport cases; the last two
 * cases run the model-pack engine (models/default) on servers of their own: the viewer sees the animated portrait
 * (not the webcam) and it moves with the performer, and with the learned refiner (models/refiner) asked for 1 step the
 * engine's frames report refiner time while the session runs 1 step. Both packs are committed: a missing one fails
 * these cases, it does not skip them.
 */
import { existsSync, readFileSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import sharp from 'sharp';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Probe } from '../../benchmarks/lib/browserProbe.js';
import type { AvatarSession, SessionFrame } from '../../server/avatar/session.js';
import { installProbe } from '../../benchmarks/lib/browserInject.js';
import { buildClient, ChromiumBrowser, chromiumPath } from '../helpers/chromium.js';
import { correlation, drivingClip, grayFrame, makeY4m, portraitFile, repoRoot } from '../helpers/media.js';
import { startTestServer, type TestServer, apiFetch, TEST_API_KEY } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

type Win = {
  __probe: Probe;
  __avatar: {
    frames: number;
    streams: number;
    width: number;
    height: number;
    lastError: unknown;
    state: string;
    socketId(): string | null;
  };
  __studio: {
    state: string;
    publishState: string;
    room: {
      roomId: string;
      portraitId: string | null;
      width: number;
      height: number;
      settings: Record<string, unknown>;
    } | null;
    lastError: { code: string } | null;
    stats: { refinerSteps: number; fps: number } | null;
  };
};

const CLIP = drivingClip('man_mouth_wide_open.mp4');
const PORTRAIT = portraitFile('real_older_man_glasses.jpg');
const STUDIO_PORTRAIT = portraitFile('real_woman_dark_hair.png');
const SMALL = 48; // side of the downscaled grayscale frames compared
/** The learned refiner's pack (committed). */
const refinerPackDir = path.join(repoRoot, 'models', 'refiner');
/**
 * Motion between two viewer samples: the largest mean absolute difference of their 48×48 grays (0..255). A still
 * picture through VP8 stays well under 1 (measured ~0.4 with the 'portrait' engine); the animated portrait driven by
 * the clip ~8.
 */
/** Frames by which the presented count may lead getStats()'s decoded count (read one after the other; stats may be a
 * few frames old on a loaded machine). */
const STATS_SLACK = 6;
const STILL_MOTION = 1;
/** Mean absolute differences between consecutive samples. */
const changes = (shots: readonly number[][]): number[] =>
  shots.slice(1).map((b, i) => b.reduce((sum, v, k) => sum + Math.abs(v - shots[i]![k]!), 0) / b.length);
const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? Number.NaN;
const haveTools = existsSync(chromiumPath) && existsSync(CLIP) && existsSync(PORTRAIT) && existsSync(STUDIO_PORTRAIT);
if (!haveTools) process.stdout.write(`chromium e2e skipped: ${chromiumPath} or the shared media is missing\n`);

/** A loopback TCP proxy whose connections can all be cut at once. */
class CuttableProxy {
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  #closed = false;
  private constructor(server: net.Server) {
    this.#server = server;
  }
  static async start(targetPort: number): Promise<CuttableProxy> {
    const server = net.createServer();
    const proxy = new CuttableProxy(server);
    server.on('connection', (client) => {
      const upstream = net.connect(targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        proxy.#sockets.add(s);
        s.on('close', () => proxy.#sockets.delete(s));
        // A cut connection errors on the other side (ECONNRESET): that is the point of the proxy.
        s.on('error', () => s.destroy());
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }
  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as net.AddressInfo).port}`;
  }
  /** Destroys every open connection (both directions). */
  cut(): number {
    const n = this.#sockets.size;
    for (const s of this.#sockets) s.destroy();
    return n;
  }
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.cut();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

async function upload(base: string, file: string): Promise<{ id: string }> {
  const form = new FormData();
  form.append('consent', 'true');
  form.append('file', new Blob([await readFile(file)], { type: 'image/jpeg' }), path.basename(file));
  const res = await apiFetch(`${base}/api/portraits`, { method: 'POST', body: form });
  const body = await res.text();
  expect(res.status, body).toBe(201);
  return JSON.parse(body) as { id: string };
}

async function createRoom(
  base: string,
  portraitId: string,
): Promise<{ roomId: string; performerUrl: string; viewerUrl: string }> {
  const res = await apiFetch(`${base}/api/rooms`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ portraitId }),
  });
  const body = await res.text();
  expect(res.status, body).toBe(201);
  return JSON.parse(body) as { roomId: string; performerUrl: string; viewerUrl: string };
}

/**
 * On a server of its own: uploads the portrait, creates a room, starts the performer's studio (fake webcam) and opens
 * the viewer, and waits until the viewer has decoded frames. Returns the portrait and the room info the studio got.
 */
async function goLive(
  url: string,
  pPage: Page,
  vPage: Page,
  onRoom?: (roomId: string) => void,
): Promise<{ portrait: { id: string }; roomId: string; out: NonNullable<Win['__studio']['room']> }> {
  const portrait = await upload(url, PORTRAIT);
  const room = await createRoom(url, portrait.id);
  onRoom?.(room.roomId);
  // The video path (where it can run, the studio defaults to private mode: tests/e2e/privateMode.test.ts).
  await pPage.goto(`${room.performerUrl}&preview=0&mode=video`);
  await waitFor(() => pPage.locator('#start:not([disabled])').count(), 15_000, 'start enabled');
  await pPage.locator('#start').click();
  await waitFor(
    () => pPage.evaluate(() => (window as unknown as Win).__studio.publishState === 'connected'),
    30_000,
    'performer connected',
  );
  const out = await pPage.evaluate(() => (window as unknown as Win).__studio.room!);
  await vPage.goto(room.viewerUrl);
  await waitFor(() => vPage.evaluate(() => (window as unknown as Win).__avatar.frames > 10), 60_000, 'viewer frames');
  return { portrait, roomId: room.roomId, out };
}

describe.runIf(haveTools)('end to end in Chromium', () => {
  let srv: TestServer | null = null;
  let proxy: CuttableProxy | null = null;
  let performer: ChromiumBrowser | null = null;
  let viewer: ChromiumBrowser | null = null;
  let y4m = '';

  beforeAll(async () => {
    // 640×480, 8 s: Chromium loops it as the webcam.
    y4m = await makeY4m({ source: CLIP, width: 640, height: 480, fps: 30, seconds: 8 });
    await buildClient();
    srv = await startTestServer({ avatar: { engine: 'portrait' } });
    proxy = await CuttableProxy.start(srv.port);
    [performer, viewer] = await Promise.all([ChromiumBrowser.launch({ fakeVideo: y4m }), ChromiumBrowser.launch()]);
    await installProbe(performer.page);
    await installProbe(viewer.page);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([performer?.close(), viewer?.close()]);
    await proxy?.close();
    await srv?.stop();
    if (y4m) await rm(path.dirname(y4m), { recursive: true, force: true });
  });

  it('studio page: creates a room, gates the upload on consent, shows error codes, picks a portrait and sends settings', async () => {
    const page = performer!.page;
    const studio = (): Promise<Win['__studio']> => page.evaluate(() => (window as unknown as Win).__studio);

    // Opened without a link: the page creates a room and rewrites its URL to the performer link.
    // The studio link signs the browser in (an HttpOnly cookie), then the studio creates a room.
    await page.goto(`${srv!.url}/?key=${encodeURIComponent(TEST_API_KEY)}`);
    await waitFor(async () => (await studio()).state === 'joined', 15_000, 'studio joined');
    const url = new URL(page.url());
    const roomId = url.searchParams.get('room');
    expect(roomId).toBeTruthy();
    expect(url.searchParams.get('token')).toBeTruthy();
    expect((await studio()).room?.roomId).toBe(roomId);
    const viewerLink = await page.locator('#viewer-link').inputValue();
    expect(new URL(viewerLink).pathname).toBe('/view');
    expect(new URL(viewerLink).searchParams.get('room')).toBe(roomId);
    expect(srv!.server.rooms.get(roomId!)).toBeDefined();

    // Upload is disabled until a file is chosen and consent is ticked.
    const upload = page.locator('#upload-btn');
    expect(await upload.isDisabled()).toBe(true);
    const junk = path.join(path.dirname(y4m), 'notes.png');
    await writeFile(junk, 'this is not an image');
    await page.locator('#file').setInputFiles(junk);
    expect(await upload.isDisabled()).toBe(true);
    await page.locator('#consent').check();
    expect(await upload.isDisabled()).toBe(false);

    // A file that is not an image: the server's code is shown.
    await upload.click();
    await waitFor(
      async () => (await page.locator('#upload-status').textContent())?.includes('UNSUPPORTED_MEDIA_TYPE'),
      10_000,
      'error code shown',
    );
    expect(await page.locator('#upload-status').getAttribute('class')).toContain('error');

    // A real portrait: uploaded, listed, chosen for the room.
    await page.locator('#file').setInputFiles(STUDIO_PORTRAIT);
    if (!(await page.locator('#consent').isChecked())) await page.locator('#consent').check();
    await upload.click();
    const chosen = await waitFor(async () => (await studio()).room?.portraitId, 20_000, 'portrait chosen');
    expect(await page.locator(`#gallery button[data-id="${chosen}"]`).getAttribute('aria-selected')).toBe('true');
    expect(srv!.server.portraits.list().map((p) => p.id)).toContain(chosen);
    // The form resets after a successful upload: consent must be given again for the next one.
    expect(await page.locator('#consent').isChecked()).toBe(false);
    expect(await upload.isDisabled()).toBe(true);

    // Settings go to the server and come back as the room's settings.
    await page.locator('#pose').selectOption('absolute');
    await page.locator('#lips').uncheck();
    await waitFor(
      async () => {
        const s = (await studio()).room?.settings;
        return s?.poseMode === 'absolute' && s.lipRetargeting === false;
      },
      10_000,
      'settings applied',
    );
    const serverSettings = srv!.server.rooms.get(roomId!)!.info.settings;
    expect(serverSettings.poseMode).toBe('absolute');
    expect(serverSettings.lipRetargeting).toBe(false);
    // The only error the page met is the refused upload.
    expect((await studio()).lastError?.code).toBe('UNSUPPORTED_MEDIA_TYPE');
  }, 90_000);

  it('performer publishes; the viewer keeps getting the still portrait at its size, with sound', async () => {
    const s = srv!;
    const pPage = performer!.page;
    const vPage = viewer!.page;
    const logs = (): string => `\nperformer:\n${performer!.logs.join('\n')}\nviewer:\n${viewer!.logs.join('\n')}`;

    // Upload a portrait (with consent) and create a room through the REST API.
    const portrait = await upload(s.url, PORTRAIT);
    const room = await createRoom(s.url, portrait.id);
    const publisher = s.server.rooms.get(room.roomId)!.parts.publisher;

    // Performer: open the studio link, pick the portrait in the gallery, start.
    // The performer link plus the studio sign-in (&key=): the gallery lists the owner's portraits.
    await pPage.goto(`${room.performerUrl}&key=${encodeURIComponent(TEST_API_KEY)}`);
    await pPage.locator(`#gallery button[data-id="${portrait.id}"]`).click();
    await waitFor(
      () => pPage.evaluate(() => (window as unknown as Win).__studio.room?.portraitId),
      15_000,
      'portrait chosen',
    );
    await waitFor(() => pPage.locator('#start:not([disabled])').count(), 10_000, 'start enabled');
    await pPage.locator('#start').click();
    await waitFor(
      () => pPage.evaluate(() => (window as unknown as Win).__studio.publishState === 'connected'),
      20_000,
      'performer connected',
    ).catch((err: Error) => {
      throw new Error(err.message + logs());
    });
    const out = await pPage.evaluate(() => (window as unknown as Win).__studio.room!);

    // Viewer: open the viewer link and wait for frames.
    await vPage.goto(room.viewerUrl);
    await waitFor(
      () => vPage.evaluate(() => (window as unknown as Win).__avatar.frames > 5),
      30_000,
      'viewer frames',
    ).catch((err: Error) => {
      throw new Error(err.message + logs());
    });
    await vPage.evaluate(() => (window as unknown as Win).__probe.startAudioMeter('#video'));

    // A 10 s window in five 2 s parts: frames presented (counted by the page) and decoded (RTP), a sample of the
    // picture at the end of each part. Presented frames are read before the RTP counters: a frame is decoded before
    // it is presented.
    const inbound = async (): Promise<{ frames: number; audioPackets: number; audioBytes: number; decoded: number }> =>
      vPage.evaluate(async () => {
        const w = window as unknown as Win;
        const frames = w.__avatar.frames;
        const rtp = await w.__probe.rtpStats();
        const a = rtp.filter((r) => r.type === 'inbound-rtp' && r.kind === 'audio');
        const v = rtp.filter((r) => r.type === 'inbound-rtp' && r.kind === 'video');
        return {
          frames,
          audioPackets: a.reduce((n, r) => n + r.packets, 0),
          audioBytes: a.reduce((n, r) => n + r.bytes, 0),
          decoded: v.reduce((n, r) => n + r.frames, 0),
        };
      });
    const grab = (): Promise<number[]> =>
      vPage.evaluate((n) => (window as unknown as Win).__probe.grayFrame('#video', n, n), SMALL);
    const before = await inbound();
    const parts: number[] = [];
    const stills: number[][] = [await grab()];
    let last = before.frames;
    for (let i = 0; i < 5; i++) {
      const t0 = Date.now();
      await waitFor(() => Date.now() - t0 >= 2000, 5000, 'a 2 s part of the window', 100);
      const now = await vPage.evaluate(() => (window as unknown as Win).__avatar.frames);
      parts.push(now - last);
      last = now;
      stills.push(await grab());
    }
    const after = await inbound();
    const sent = publisher.framesSent;

    // What the viewer shows vs the portrait (as the server normalised it) and vs the webcam picture.
    const size = await vPage.evaluate(() => {
      const v = document.querySelector('#video') as HTMLVideoElement;
      return { w: v.videoWidth, h: v.videoHeight };
    });
    const portraitPng = await (await apiFetch(`${s.url}/api/portraits/${portrait.id}/image`)).arrayBuffer();
    const portraitGray = await sharp(Buffer.from(portraitPng))
      .resize(SMALL, SMALL, { fit: 'fill' })
      .grayscale()
      .raw()
      .toBuffer();
    // One grabbed frame can be a transitional one on a loaded machine (the encoder backing off under CPU pressure):
    // up to five grabs, 400 ms apart, keeping the one most like the portrait.
    let shown = await vPage.evaluate((n) => (window as unknown as Win).__probe.grayFrame('#video', n, n), SMALL);
    for (let i = 0; i < 4 && correlation(shown, portraitGray) < 0.9; i++) {
      await new Promise((r) => setTimeout(r, 400));
      const next = await vPage.evaluate((n) => (window as unknown as Win).__probe.grayFrame('#video', n, n), SMALL);
      if (correlation(next, portraitGray) > correlation(shown, portraitGray)) shown = next;
    }
    const webcamNow = await pPage.evaluate((n) => (window as unknown as Win).__probe.grayFrame('#camera', n, n), SMALL);
    const webcamFile = await grayFrame(CLIP, SMALL, SMALL, 1);
    const corrPortrait = correlation(shown, portraitGray);
    const corrWebcam = Math.max(Math.abs(correlation(shown, webcamNow)), Math.abs(correlation(shown, webcamFile)));
    const audio = await vPage.evaluate(() => (window as unknown as Win).__probe.audioLevel());

    const still = median(changes(stills));
    const result = {
      engine: 'portrait',
      framesPerPart: parts,
      presented: after.frames,
      decoded: after.decoded,
      sent,
      still: +still.toFixed(2),
      size,
      expected: { w: out.width, h: out.height },
      corrPortrait: +corrPortrait.toFixed(3),
      corrWebcam: +corrWebcam.toFixed(3),
      audioPackets: after.audioPackets - before.audioPackets,
      audio,
    };
    process.stdout.write(`e2e: ${JSON.stringify(result)}\n`);

    // Frames keep arriving: new ones in every 2 s part of the window (a stalled stream has a part with none).
    for (const n of parts) expect(n).toBeGreaterThan(0);
    // Counts agree along the path: the page cannot present more frames than it decoded, nor decode more than the
    // server handed to its video source. Slack: the two counters are read one after the other, and getStats() may
    // answer from a report up to a few frames old on a loaded machine (STATS_SLACK).
    expect(after.decoded).toBeGreaterThan(before.decoded);
    expect(after.frames).toBeLessThanOrEqual(after.decoded + STATS_SLACK);
    expect(after.decoded).toBeLessThanOrEqual(sent);
    // This engine re-renders the still portrait: the picture does not move (the model-pack case below: it does).
    expect(still).toBeLessThan(STILL_MOTION);
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
    const viewerState = (): Promise<string> =>
      vPage.evaluate(() => (window as unknown as { __avatar: { state: string } }).__avatar.state);

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
    await waitFor(
      () => pPage.evaluate(() => (window as unknown as Win).__studio.publishState === 'idle'),
      10_000,
      'performer stopped',
    );
    await waitFor(() => pPage.locator('#start:not([disabled])').count(), 10_000, 'start enabled again');
    await pPage.locator('#start').click();
    await waitFor(
      () => pPage.evaluate(() => (window as unknown as Win).__studio.publishState === 'connected'),
      20_000,
      'performer live again',
    );
    const resumedAt = await frames();
    await waitFor(async () => (await frames()) > resumedAt + 30, 30_000, 'viewer frames after the restart');
    expect(await vPage.evaluate(() => (window as unknown as Win).__avatar.lastError)).toBeNull();
  }, 120_000);

  it('reconnect: performer and viewer recover from a dropped connection without a reload', async () => {
    const base = proxy!.url;
    const { id } = await upload(base, PORTRAIT);
    const room = await createRoom(base, id);
    expect(room.viewerUrl.startsWith(base)).toBe(true);

    const pPage = performer!.page;
    const vPage = viewer!.page;
    const v = (): Promise<Win['__avatar']> => vPage.evaluate(() => (window as unknown as Win).__avatar);
    const p = (): Promise<Win['__studio']> => pPage.evaluate(() => (window as unknown as Win).__studio);

    await pPage.goto(`${room.performerUrl}&preview=0`);
    await waitFor(() => pPage.locator('#start:not([disabled])').count(), 15_000, 'start enabled');
    await pPage.locator('#start').click();
    await waitFor(async () => (await p()).publishState === 'connected', 20_000, 'performer connected');
    await vPage.goto(room.viewerUrl);
    await waitFor(async () => (await v()).frames > 20, 30_000, 'viewer playing');
    const streamsBefore = (await v()).streams;

    // The blip: every socket.io connection through the proxy is cut.
    expect(proxy!.cut()).toBeGreaterThanOrEqual(2);
    await waitFor(async () => (await v()).streams > streamsBefore, 30_000, 'viewer re-viewed');
    await waitFor(
      async () => (await p()).publishState === 'connected' && (await p()).state === 'joined',
      30_000,
      'performer re-published',
    );
    const after = (await v()).frames;
    await waitFor(async () => (await v()).frames > after + 30, 30_000, 'viewer frames after the reconnect');
    expect((await v()).state).toBe('playing');
    // The room survived (the performer came back within the grace period) and has the one viewer again.
    const live = srv!.server.rooms.get(room.roomId);
    expect(live).toBeDefined();
    await waitFor(() => live!.viewerCount === 1, 10_000, 'one viewer on the server');
  }, 150_000);

  it('ICE failure: when the server drops the viewer peer, the viewer rebuilds it on the same socket', async () => {
    const pPage = performer!.page;
    const vPage = viewer!.page;
    const room = await createRoom(srv!.url, (await upload(srv!.url, PORTRAIT)).id);
    const v = (): Promise<Win['__avatar']> => vPage.evaluate(() => (window as unknown as Win).__avatar);

    await pPage.goto(`${room.performerUrl}&preview=0`);
    await waitFor(() => pPage.locator('#start:not([disabled])').count(), 15_000, 'start enabled');
    await pPage.locator('#start').click();
    await waitFor(
      () => pPage.evaluate(() => (window as unknown as Win).__studio.publishState === 'connected'),
      20_000,
      'performer connected',
    );
    await vPage.goto(room.viewerUrl);
    await waitFor(async () => (await v()).frames > 20, 30_000, 'viewer playing');
    const socketId = await vPage.evaluate(() => (window as unknown as Win).__avatar.socketId());
    expect(socketId).toBeTruthy();
    const streamsBefore = (await v()).streams;
    const live = srv!.server.rooms.get(room.roomId)!;
    expect(live.viewerCount).toBe(1);

    // The server closes this viewer's peer; the socket stays up, so only the media leg must recover.
    live.removeViewer(socketId!);
    expect(live.viewerCount).toBe(0);
    await waitFor(async () => (await v()).streams > streamsBefore, 45_000, 'viewer peer rebuilt');
    const after = (await v()).frames;
    await waitFor(async () => (await v()).frames > after + 30, 30_000, 'frames on the rebuilt peer');
    expect(await vPage.evaluate(() => (window as unknown as Win).__avatar.socketId())).toBe(socketId);
    expect(live.viewerCount).toBe(1);
  }, 120_000);

  it('model-pack engine: the viewer sees the animated portrait, not the webcam, and it moves with the performer', async () => {
    const pPage = performer!.page;
    const vPage = viewer!.page;
    const s2 = await startTestServer({ avatar: { engine: 'default' } });
    try {
      const { portrait, out, roomId } = await goLive(s2.url, pPage, vPage);
      const publisher = s2.server.rooms.get(roomId)!.parts.publisher;

      // Sample the shown picture a few times while the driving face moves.
      const portraitPng = await (await apiFetch(`${s2.url}/api/portraits/${portrait.id}/image`)).arrayBuffer();
      const portraitGray = await sharp(Buffer.from(portraitPng))
        .resize(SMALL, SMALL, { fit: 'fill' })
        .grayscale()
        .raw()
        .toBuffer();
      const shots: number[][] = [];
      const webcam: number[][] = [];
      while (shots.length < 8) {
        shots.push(await vPage.evaluate((n) => (window as unknown as Win).__probe.grayFrame('#video', n, n), SMALL));
        webcam.push(await pPage.evaluate((n) => (window as unknown as Win).__probe.grayFrame('#camera', n, n), SMALL));
        const next = Date.now() + 400;
        await waitFor(() => Date.now() >= next, 2000, 'sampling interval', 50);
      }
      const size = await vPage.evaluate(() => (window as unknown as Win).__avatar);
      const decoded = await vPage.evaluate(async () =>
        (await (window as unknown as Win).__probe.rtpStats())
          .filter((r) => r.type === 'inbound-rtp' && r.kind === 'video')
          .reduce((n, r) => n + r.frames, 0),
      );
      const sent = publisher.framesSent;
      const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
      const corrPortrait = mean(shots.map((f) => correlation(f, portraitGray)));
      const corrWebcam = mean(shots.map((f, i) => Math.abs(correlation(f, webcam[i]!))));
      // Motion: the largest change between two consecutive samples (the still 'portrait' engine's median stays under
      // STILL_MOTION, asserted in the case above).
      const motion = Math.max(...changes(shots));
      const result = {
        engine: 'default',
        presented: size.frames,
        decoded,
        sent,
        size: { w: size.width, h: size.height },
        corrPortrait: +corrPortrait.toFixed(3),
        corrWebcam: +corrWebcam.toFixed(3),
        motion: +motion.toFixed(2),
      };
      process.stdout.write(`e2e model pack: ${JSON.stringify(result)}\n`);

      expect(size.frames).toBeLessThanOrEqual(decoded + STATS_SLACK);
      expect(decoded).toBeLessThanOrEqual(sent);
      expect({ w: size.width, h: size.height }).toEqual({ w: out.width, h: out.height });
      expect(corrPortrait).toBeGreaterThan(0.6);
      expect(corrPortrait - corrWebcam).toBeGreaterThan(0.2);
      // The portrait moves with the performer (measured: ~7.8 here; the 'portrait' engine's still picture ~0.4).
      expect(motion).toBeGreaterThan(STILL_MOTION);
    } finally {
      // Leave the second server before it stops, so that no page keeps reconnecting to it.
      await Promise.all([pPage.goto('about:blank'), vPage.goto('about:blank')]);
      await s2.stop();
    }
  }, 180_000);

  it('learned refiner asked for 1 step: the session runs 1 step, the engine reports refiner time on its frames', async () => {
    const pPage = performer!.page;
    const vPage = viewer!.page;
    const manifest = JSON.parse(readFileSync(path.join(refinerPackDir, 'manifest.json'), 'utf8')) as { steps: number };
    // The refiner on at k = 1. On a busy machine the overload policy may lower the steps (to 0 from 1) once a window
    // of frames took longer than the budget, by design (tests/avatar: stepsPolicy). So what is asserted is how the
    // steps and the refiner's work go together: while the session runs the 1 step asked, the engine's frames carry
    // refiner time (RenderStats.refineMs); once it runs 0, they do not. Speed is a benchmark matter.
    const s3 = await startTestServer({ avatar: { engine: 'default', refinerPack: refinerPackDir, steps: 1 } });
    // The room's session, from its creation: every rendered frame with the steps the session ran when it arrived.
    const seen: { steps: number; refineMs: number | undefined; followed: boolean }[] = [];
    const stepChanges: number[] = [];
    const onRoom = (room: { parts: { session: AvatarSession } }): void => {
      const session = room.parts.session;
      session.on('frame', (f: SessionFrame) =>
        seen.push({ steps: session.steps, refineMs: f.stats.refineMs, followed: f.stats.face && !f.stats.faceIssue }),
      );
      session.on('steps', (k: number) => stepChanges.push(k));
    };
    try {
      const { roomId } = await goLive(s3.url, pPage, vPage, (id) => onRoom(s3.server.rooms.get(id)!));
      const live = s3.server.rooms.get(roomId)!;
      expect(live.info.settings.steps).toBe(1);
      // The studio shows what the server reports: 1 step running, at least once.
      await waitFor(
        () => pPage.evaluate(() => (window as unknown as Win).__studio.stats?.refinerSteps === 1),
        30_000,
        'refinerSteps 1 in the room stats',
        100,
      );
      // Frames with a face rendered while the session ran 1 step: the refiner ran on them.
      await waitFor(
        () => seen.filter((f) => f.steps === 1 && f.refineMs !== undefined).length >= 5,
        60_000,
        'five refined frames',
        100,
      );
      const presented = await vPage.evaluate(() => (window as unknown as Win).__avatar.frames);
      await waitFor(
        () => vPage.evaluate((n) => (window as unknown as Win).__avatar.frames > n + 10, presented),
        30_000,
        'viewer frames with the refiner on',
        100,
      );
      // Frames with a followed face (the engine refines only those), leaving out the two after each change of the
      // steps: rendered before the worker took the new setting.
      const settled: typeof seen = [];
      seen.forEach((f, i) => {
        const changedAt = seen.slice(Math.max(0, i - 2), i).some((g) => g.steps !== f.steps);
        if (f.followed && !changedAt) settled.push(f);
      });
      const atOne = settled.filter((f) => f.steps === 1);
      const atZero = settled.filter((f) => f.steps === 0);
      const refined = atOne.filter((f) => f.refineMs !== undefined);
      const result = {
        asked: 1,
        packDefault: manifest.steps,
        stepChanges,
        frames: seen.length,
        atOne: atOne.length,
        refined: refined.length,
        refineMs: +median(refined.map((f) => f.refineMs!)).toFixed(1),
        atZero: atZero.length,
        refinedAtZero: atZero.filter((f) => f.refineMs !== undefined).length,
      };
      process.stdout.write(`e2e refiner: ${JSON.stringify(result)}\n`);
      // The refiner ran on every followed frame at the 1 step asked, and on none once the session ran 0.
      expect(atOne.length).toBeGreaterThanOrEqual(5);
      expect(refined.length).toBe(atOne.length);
      for (const f of refined) expect(f.refineMs!).toBeGreaterThan(0);
      expect(result.refinedAtZero).toBe(0);
    } finally {
      await Promise.all([pPage.goto('about:blank'), vPage.goto('about:blank')]);
      await s3.stop();
    }
  }, 180_000);
});
