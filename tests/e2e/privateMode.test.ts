/**
 * Private mode end to end in real Chromium: the studio page (a fake webcam playing a real driving clip) tracks the
 * face in the browser (BrowserFaceTracker: onnxruntime-web in a Web Worker, WASM threads on the cross-origin isolated
 * studio page) and sends only expressions over the 'expressions' data channel, with the voice; a viewer page in a
 * second browser sees the avatar (the model-pack engine, models/default) move with the clip's face.
 *
 * - The toggle "Send expressions only" is on by default once the tracker has loaded, and the page says what leaves the
 *   machine; the studio is served with COOP + COEP (crossOriginIsolated in the page).
 * - Live in private mode, the performer's peer connections send no video: no video sender with a track, no
 *   outbound-rtp of kind video in getStats, no video m-line in the local SDP; while the audio goes out (packets
 *   counted) and the studio counts expressions sent. The server's room publishes in 'private' mode, and its session
 *   renders frames with a face.
 * - The viewer's picture changes over time (the clip's mouth and head move): the largest change between 400 ms
 *   samples is well above what a still picture through VP8 shows.
 * - Switching the toggle while live re-publishes without a page reload: video mode sends video (outbound video packets
 *   grow), and back in private mode no video is sent again; the viewer keeps receiving frames throughout.
 * - On a server whose engine cannot render from expressions ('portrait'), the toggle is off and disabled, and the
 *   page says why.
 *
 * How fast the browser tracks is a benchmark matter (benchmarks/browser-tracking.ts), not asserted here.
 */
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Probe } from '../../benchmarks/lib/browserProbe.js';
import { installProbe } from '../../benchmarks/lib/browserInject.js';
import type { SessionFrame } from '../../server/avatar/session.js';
import { buildClient, ChromiumBrowser, chromiumPath } from '../helpers/chromium.js';
import { drivingClip, makeY4m, portraitFile } from '../helpers/media.js';
import { apiFetch, startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

const CLIP = drivingClip('man_mouth_wide_open.mp4');
const PORTRAIT = portraitFile('real_older_man_glasses.jpg');
const SMALL = 48;
/** A still picture through VP8 changes by ~0.4 between samples (tests/e2e/chromium.test.ts); the driven avatar ~8. */
const STILL_MOTION = 1;

type StudioWin = {
  __probe: Probe;
  __studio: {
    state: string;
    publishState: string;
    publishMode: 'private' | 'video' | null;
    room: { roomId: string; privateMode: boolean } | null;
    privateMode: {
      available: boolean | null;
      reason: string | null;
      runtime: { backend: string; threads: number; crossOriginIsolated: boolean } | null;
    };
    expressions: { frames: number; tracked: number; faces: number; sent: number } | null;
    lastError: { code: string; message: string } | null;
  };
  __pcs: RTCPeerConnection[];
  __notReloaded?: boolean;
};
type ViewerWin = { __probe: Probe; __avatar: { frames: number } };

/** What the performer's open peer connections send. */
interface SendReport {
  connections: number;
  videoSenders: number;
  videoMLines: number;
  outboundVideo: { packets: number }[];
  outboundAudio: { packets: number }[];
  dataChannels: boolean;
}

/** Keeps every RTCPeerConnection the page makes in window.__pcs (installed before the page's scripts run). */
const TRACK_PCS = `(() => {
  const pcs = [];
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); pcs.push(this); }
  };
  window.__pcs = pcs;
})();`;

function sendReport(page: Page): Promise<SendReport> {
  return page.evaluate(async () => {
    const pcs = (window as unknown as StudioWin).__pcs.filter((pc) => pc.connectionState !== 'closed');
    const r: SendReport = {
      connections: pcs.length,
      videoSenders: 0,
      videoMLines: 0,
      outboundVideo: [],
      outboundAudio: [],
      dataChannels: false,
    };
    for (const pc of pcs) {
      r.videoSenders += pc.getSenders().filter((s) => s.track?.kind === 'video').length;
      const sdp = pc.localDescription?.sdp ?? '';
      r.videoMLines += sdp.split('\n').filter((l) => l.startsWith('m=video')).length;
      if (sdp.includes('m=application')) r.dataChannels = true;
      (await pc.getStats()).forEach((s: { type: string; kind?: string; packetsSent?: number }) => {
        if (s.type !== 'outbound-rtp') return;
        (s.kind === 'video' ? r.outboundVideo : r.outboundAudio).push({ packets: s.packetsSent ?? 0 });
      });
    }
    return r;
  });
}

const studio = (page: Page): Promise<StudioWin['__studio']> =>
  page.evaluate(() => (window as unknown as StudioWin).__studio);
const viewerFrames = (page: Page): Promise<number> =>
  page.evaluate(() => (window as unknown as ViewerWin).__avatar.frames);
const sum = (xs: { packets: number }[]): number => xs.reduce((n, x) => n + x.packets, 0);

/** Eight 48×48 grays of the viewer's picture, 400 ms apart; returns the largest mean change between two in a row. */
async function viewerMotion(page: Page): Promise<number> {
  const shots: number[][] = [];
  while (shots.length < 8) {
    shots.push(await page.evaluate((n) => (window as unknown as ViewerWin).__probe.grayFrame('#video', n, n), SMALL));
    const next = Date.now() + 400;
    await waitFor(() => Date.now() >= next, 2000, 'sampling interval', 50);
  }
  const changes = shots.slice(1).map((b, i) => b.reduce((s, v, k) => s + Math.abs(v - shots[i]![k]!), 0) / b.length);
  return Math.max(...changes);
}

/** Waits until the studio publishes in `mode` (connected), and its server room says so too. */
async function waitLive(page: Page, srv: TestServer, roomId: string, mode: 'private' | 'video'): Promise<void> {
  await waitFor(
    async () => {
      const s = await studio(page);
      return s.publishState === 'connected' && s.publishMode === mode;
    },
    60_000,
    `the studio publishing in ${mode} mode`,
    100,
  );
  await waitFor(
    () => srv.server.rooms.get(roomId)?.info.publishMode === mode,
    30_000,
    `the server's room publishing in ${mode} mode`,
    100,
  );
}

const haveTools = existsSync(chromiumPath) && existsSync(CLIP) && existsSync(PORTRAIT);
if (!haveTools) process.stdout.write(`private mode e2e skipped: ${chromiumPath} or the shared media is missing\n`);

describe.runIf(haveTools)('private mode in Chromium', () => {
  let srv: TestServer | null = null;
  let performer: ChromiumBrowser | null = null;
  let viewer: ChromiumBrowser | null = null;
  let y4m = '';

  beforeAll(async () => {
    y4m = await makeY4m({ source: CLIP, width: 640, height: 480, fps: 30, seconds: 8 });
    await buildClient();
    srv = await startTestServer({ avatar: { engine: 'default' } });
    [performer, viewer] = await Promise.all([ChromiumBrowser.launch({ fakeVideo: y4m }), ChromiumBrowser.launch()]);
    await performer.page.addInitScript({ content: TRACK_PCS });
    await installProbe(viewer.page);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([performer?.close(), viewer?.close()]);
    await srv?.stop();
    if (y4m) await rm(path.dirname(y4m), { recursive: true, force: true });
  });

  it('the studio sends expressions only, the viewer sees the avatar move, and the toggle switches modes live', async () => {
    const pPage = performer!.page;
    const vPage = viewer!.page;
    const s = srv!;
    const fail = (what: string) => (err: unknown) => {
      throw new Error(`${what}\nperformer console:\n${performer!.logs.join('\n')}`, { cause: err });
    };

    const form = new FormData();
    form.append('consent', 'true');
    form.append('file', new Blob([await readFile(PORTRAIT)], { type: 'image/jpeg' }), path.basename(PORTRAIT));
    const up = await apiFetch(`${s.url}/api/portraits`, { method: 'POST', body: form });
    expect(up.status, await up.clone().text()).toBe(201);
    const portrait = (await up.json()) as { id: string };
    const created = await apiFetch(`${s.url}/api/rooms`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ portraitId: portrait.id }),
    });
    expect(created.status).toBe(201);
    const room = (await created.json()) as { roomId: string; performerUrl: string; viewerUrl: string };

    // No mode in the link: private mode is the default once the browser has loaded the tracker.
    await pPage.goto(`${room.performerUrl}&preview=0`);
    await waitFor(
      async () => (await studio(pPage)).privateMode.available !== null,
      90_000,
      'the studio to find out whether it can track the face',
      200,
    ).catch(fail('tracker check'));
    const check = (await studio(pPage)).privateMode;
    expect(check, JSON.stringify(check)).toMatchObject({ available: true, reason: null });
    // Served cross-origin isolated: the tracker's worker runs WASM threads.
    expect(await pPage.evaluate(() => crossOriginIsolated)).toBe(true);
    expect(check.runtime?.crossOriginIsolated).toBe(true);
    expect(await pPage.locator('#private').isChecked()).toBe(true);
    expect(await pPage.locator('#private').isDisabled()).toBe(false);
    expect(await pPage.locator('#private-what').textContent()).toMatch(/camera picture stays on this computer/);
    expect(await pPage.locator('#private-why').isHidden()).toBe(true);

    const session = s.server.rooms.get(room.roomId)!.parts.session;
    const frames: boolean[] = [];
    session.on('frame', (f: SessionFrame) => frames.push(f.stats.face));

    await waitFor(() => pPage.locator('#start:not([disabled])').count(), 15_000, 'start enabled');
    await pPage.evaluate(() => ((window as unknown as StudioWin).__notReloaded = true));
    await pPage.locator('#start').click();
    await waitLive(pPage, s, room.roomId, 'private').catch(fail('going live in private mode'));

    // Expressions flow: the studio tracks faces and sends them, the server renders frames with a face.
    await waitFor(
      async () => ((await studio(pPage)).expressions?.sent ?? 0) >= 20,
      60_000,
      'twenty expressions sent',
      200,
    ).catch(fail('expressions'));
    await waitFor(() => frames.filter(Boolean).length >= 10, 60_000, 'ten rendered frames with a face', 100);

    // No video leaves the performer, while its audio does.
    await waitFor(async () => sum((await sendReport(pPage)).outboundAudio) > 20, 30_000, 'audio packets sent', 200);
    const priv = await sendReport(pPage);
    expect(priv.connections, JSON.stringify(priv)).toBe(1);
    expect(priv.videoSenders, JSON.stringify(priv)).toBe(0);
    expect(priv.videoMLines, JSON.stringify(priv)).toBe(0);
    expect(priv.outboundVideo, JSON.stringify(priv)).toEqual([]);
    expect(priv.dataChannels).toBe(true);

    // The viewer sees the avatar move with the clip's face.
    await vPage.goto(room.viewerUrl);
    await waitFor(async () => (await viewerFrames(vPage)) > 10, 60_000, 'viewer frames');
    const motionPrivate = await viewerMotion(vPage);
    const st = await studio(pPage);
    process.stdout.write(
      `e2e private mode: ${JSON.stringify({ motionPrivate: +motionPrivate.toFixed(2), runtime: check.runtime, expressions: st.expressions, framesWithFace: frames.filter(Boolean).length, frames: frames.length })}\n`,
    );
    expect(motionPrivate).toBeGreaterThan(STILL_MOTION);

    // Switch to video mode while live: the studio re-publishes, now with video.
    await pPage.locator('#private').click();
    await waitLive(pPage, s, room.roomId, 'video').catch(fail('switching to video mode'));
    expect(await pPage.locator('#private-what').textContent()).toMatch(/camera video/);
    await waitFor(
      async () => sum((await sendReport(pPage)).outboundVideo) > 30,
      30_000,
      'video packets sent in video mode',
      200,
    );
    const video = await sendReport(pPage);
    expect(video.videoSenders, JSON.stringify(video)).toBe(1);
    let seen = await viewerFrames(vPage);
    await waitFor(async () => (await viewerFrames(vPage)) > seen + 10, 60_000, 'viewer frames in video mode', 100);

    // And back to private mode: no video again.
    await pPage.locator('#private').click();
    await waitLive(pPage, s, room.roomId, 'private').catch(fail('switching back to private mode'));
    await waitFor(async () => sum((await sendReport(pPage)).outboundAudio) > 20, 30_000, 'audio packets sent', 200);
    const back = await sendReport(pPage);
    expect(back.connections, JSON.stringify(back)).toBe(1);
    expect(back.videoSenders).toBe(0);
    expect(back.videoMLines).toBe(0);
    expect(back.outboundVideo).toEqual([]);
    seen = await viewerFrames(vPage);
    await waitFor(
      async () => (await viewerFrames(vPage)) > seen + 10,
      60_000,
      'viewer frames back in private mode',
      100,
    );
    // Never reloaded: the marker set before Start is still there.
    expect(await pPage.evaluate(() => (window as unknown as StudioWin).__notReloaded)).toBe(true);
    expect((await studio(pPage)).lastError).toBeNull();

    await Promise.all([pPage.goto('about:blank'), vPage.goto('about:blank')]);
  }, 420_000);

  it('a server whose engine cannot render from expressions: the toggle is off and the page says why', async () => {
    const pPage = performer!.page;
    const s2 = await startTestServer({ avatar: { engine: 'portrait' } });
    try {
      const created = await apiFetch(`${s2.url}/api/rooms`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({}),
      });
      expect(created.status).toBe(201);
      const room = (await created.json()) as { performerUrl: string };
      await pPage.goto(`${room.performerUrl}&mode=private`);
      await waitFor(async () => (await studio(pPage)).state === 'joined', 15_000, 'studio joined');
      const st = await studio(pPage);
      expect(st.room?.privateMode).toBe(false);
      expect(st.privateMode).toMatchObject({ available: false });
      expect(await pPage.locator('#private').isChecked()).toBe(false);
      expect(await pPage.locator('#private').isDisabled()).toBe(true);
      expect(await pPage.locator('#private-why').textContent()).toMatch(/renders from video only/);
      expect(await pPage.locator('#private-what').textContent()).toMatch(/camera video/);
    } finally {
      await pPage.goto('about:blank');
      await s2.stop();
    }
  }, 60_000);
});
