/**
 * The browser extension in real Chromium (loaded unpacked from client/extension with --load-extension, new headless
 * mode), one server, one browser, cases run in order:
 *
 * - before sign-in, pages list only the real cameras; the popup refuses a bad link with the server's code, then signs
 *   in with the studio's viewer link (checked against the server); the meeting page still lists no avatar until the
 *   popup allows its site ("Allow on this site");
 * - a plain meeting-like test page (tests/e2e/pages/meeting.html, on its own origin) lists "Live Avatar (AI avatar
 *   camera)" and the avatar microphone beside the fake webcam; picking the avatar camera gives frames that show the
 *   portrait (engine 'portrait'; the performer publishes with WHIP), not the webcam, with the server's visible
 *   "AI avatar" mark in its corner; the webcam still opens; the
 *   avatar microphone carries the performer's tone; stopping the tracks ends the server session;
 * - the meeting shape: the page sends the avatar stream over its own RTCPeerConnection to a second page, which shows
 *   the portrait;
 * - a browser without any camera or microphone of its own (no fake devices) lists and opens the avatar camera;
 * - closing a page that did not stop its tracks ends its session at once (not after an ICE timeout);
 * - after sign-out the avatar devices are gone and picking one fails as for any camera the browser does not have.
 *
 * What unapproved pages, forged messages and other sites' frames get (nothing): tests/security/extension.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { markBox } from '../../server/provenance/mark.js';
import { ChromiumBrowser, chromiumPath } from '../helpers/chromium.js';
import { correlation, drivingClip, makeY4m, repoRoot } from '../helpers/media.js';
import { isPortFree } from '../helpers/net.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import {
  avatarRoom,
  buildAll,
  grayOfPng,
  portraitGray,
  regionDiff,
  startPageServer,
  type AvatarRoom,
  type PageServer,
} from './avatarPages.js';

const EXTENSION = path.join(repoRoot, 'client', 'extension');
const CAMERA_LABEL = 'Live Avatar (AI avatar camera)';

interface Device {
  deviceId: string;
  kind: string;
  label: string;
  groupId: string;
}
interface Opened {
  index: number;
  tracks: { kind: string; label: string; deviceId: string; state: string }[];
}
type Meeting = {
  meeting: {
    devices(): Promise<Device[]>;
    open(c: MediaStreamConstraints): Promise<Opened>;
    openError(c: MediaStreamConstraints): Promise<{ name: string; message: string } | null>;
    frame(i: number): Promise<{ png: string; width: number; height: number }>;
    remoteFrame(): Promise<{ png: string; width: number; height: number }>;
    level(i: number, ms: number): Promise<number>;
    stop(i: number): string[];
    call(i: number): Promise<string>;
    accept(answer: string): Promise<void>;
    answer(offer: string): Promise<string>;
    hasRemote(): boolean;
    hangUp(): void;
  };
};

let ts: TestServer;
let pages: PageServer;
let browser: ChromiumBrowser;
let room: AvatarRoom;
let tmp: string;
let extensionId: string;
let portrait: Uint8Array;

beforeAll(async () => {
  await buildAll();
  tmp = await mkdtemp(path.join(os.tmpdir(), 'avatar-ext-'));
  // The webcam: a face clip (not the portrait), as Chromium's fake camera.
  const webcam = await makeY4m({
    source: drivingClip('man_mouth_wide_open.mp4'),
    width: 640,
    height: 480,
    fps: 15,
    seconds: 4,
    out: path.join(tmp, 'webcam.y4m'),
  });
  ts = await startTestServer({ avatar: { engine: 'portrait', outputSize: 320 } });
  pages = await startPageServer();
  room = await avatarRoom(ts);
  portrait = await portraitGray(ts, room.portraitId);
  browser = await ChromiumBrowser.launch({
    fakeVideo: webcam,
    args: [
      `--disable-extensions-except=${EXTENSION}`,
      `--load-extension=${EXTENSION}`,
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
  // The extension's service worker tells its id (polled: it may start before a listener could be attached).
  const worker = await waitFor(
    () => browser.context.serviceWorkers().find((w) => w.url().startsWith('chrome-extension://')),
    15_000,
    'the extension service worker',
  );
  extensionId = new URL(worker.url()).host;
});
afterAll(async () => {
  room?.performer?.close();
  await browser?.close();
  await pages?.close();
  await ts?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
  if (ts) expect(await isPortFree(ts.port)).toBe(true);
});

async function meetingPage(context: BrowserContext = browser.context): Promise<Page> {
  const page = await context.newPage();
  await page.goto(`${pages.url}/meeting.html`);
  return page;
}

async function popup(context: BrowserContext = browser.context, id = extensionId): Promise<Page> {
  const page = await context.newPage();
  await page.goto(`chrome-extension://${id}/popup.html`);
  return page;
}

async function signIn(link: string, context?: BrowserContext, id?: string): Promise<string> {
  const p = await popup(context, id);
  await p.fill('#link', link);
  await p.click('#signin-button');
  await waitFor(
    async () => !/Checking/.test((await p.textContent('#status')) ?? 'Checking'),
    15_000,
    'sign-in answered',
  );
  const text = (await p.textContent('#status')) ?? '';
  await p.close();
  return text;
}

/**
 * The popup's "Allow on this site" for the page tab used last (the popup opened as a tab offers that one); returns the
 * site it allowed.
 */
async function allowThisSite(context?: BrowserContext, id?: string): Promise<string> {
  const p = await popup(context, id);
  await waitFor(async () => await p.isEnabled('#allow-this'), 5000, 'the tab site shown');
  const origin = (await p.textContent('#this-site')) ?? '';
  await p.click('#allow-this');
  await waitFor(async () => ((await p.textContent('#sites')) ?? '').includes(origin), 5000, 'site listed');
  await p.close();
  return origin;
}

function looksLikePortrait(gray: Uint8Array): number {
  return correlation(gray, portrait);
}

describe('browser extension: the avatar as a camera', () => {
  it('lists no avatar before sign-in and approval; the popup refuses a bad link, signs in, allows the site', async () => {
    const page = await meetingPage();
    const before = await page.evaluate(() => (window as unknown as Meeting).meeting.devices());
    expect(before.some((d) => d.label === CAMERA_LABEL)).toBe(false);
    expect(before.some((d) => d.kind === 'videoinput')).toBe(true);

    const bad = await signIn(room.viewerUrl.replace(/token=[^&]+/, 'token=abc.def'));
    expect(bad).toContain('TOKEN_INVALID');
    const ok = await signIn(room.viewerUrl);
    expect(ok).toContain(`Signed in: room ${room.roomId}`);
    // Signed in, but the site is not allowed yet: still no avatar.
    const unapproved = await page.evaluate(() => (window as unknown as Meeting).meeting.devices());
    expect(unapproved.some((d) => /Live Avatar/.test(d.label))).toBe(false);
    expect(await allowThisSite()).toBe(pages.url);
    // An open page learns of the approval (devicechange) and lists the avatar from then on.
    await waitFor(
      async () =>
        (await page.evaluate(() => (window as unknown as Meeting).meeting.devices())).some(
          (d) => d.label === CAMERA_LABEL,
        ),
      5000,
      'avatar camera listed',
    );
    await page.close();
  });

  it('a page picks the avatar camera and gets the portrait, not the webcam; other cameras keep working', async () => {
    const page = await meetingPage();
    const devices = await page.evaluate(() => (window as unknown as Meeting).meeting.devices());
    const avatarCam = devices.find((d) => d.kind === 'videoinput' && d.label === CAMERA_LABEL);
    const avatarMic = devices.find((d) => d.kind === 'audioinput' && /Live Avatar/.test(d.label));
    const webcam = devices.find((d) => d.kind === 'videoinput' && d.label !== CAMERA_LABEL);
    expect(avatarCam, JSON.stringify(devices)).toBeDefined();
    expect(avatarMic?.label).toMatch(/AI avatar/);
    expect(webcam).toBeDefined();

    const r = ts.server.rooms.require(room.roomId);
    const opened = await page.evaluate(
      (id) => (window as unknown as Meeting).meeting.open({ video: { deviceId: { exact: id } } }),
      avatarCam!.deviceId,
    );
    expect(opened.tracks).toEqual([
      { kind: 'video', label: CAMERA_LABEL, deviceId: avatarCam!.deviceId, state: 'live' },
    ]);
    expect(r.viewerCount).toBe(1);
    const avatarFrame = await page.evaluate((i) => (window as unknown as Meeting).meeting.frame(i), opened.index);
    expect({ w: avatarFrame.width, h: avatarFrame.height }).toEqual({ w: r.info.width, h: r.info.height });

    // The real webcam through the same patched API.
    const cam = await page.evaluate(
      (id) => (window as unknown as Meeting).meeting.open({ video: { deviceId: { exact: id } } }),
      webcam!.deviceId,
    );
    expect(cam.tracks[0]!.label).toBe(webcam!.label);
    const webcamFrame = await page.evaluate((i) => (window as unknown as Meeting).meeting.frame(i), cam.index);
    expect(webcamFrame.width).toBe(640);

    const shown = await grayOfPng(avatarFrame.png);
    const camGray = await grayOfPng(webcamFrame.png);
    const corrPortrait = looksLikePortrait(shown);
    const corrWebcam = correlation(shown, camGray);
    expect(corrPortrait, `portrait ${corrPortrait.toFixed(3)} webcam ${corrWebcam.toFixed(3)}`).toBeGreaterThan(0.9);
    expect(corrWebcam).toBeLessThan(corrPortrait - 0.2);
    // The server's visible "AI avatar" mark is in the picture the page gets (its corner differs from the portrait),
    // while the opposite corner is the portrait itself.
    const corner = ts.config.provenance.mark.corner;
    const box = markBox(avatarFrame.width, avatarFrame.height, corner);
    const mirror = { ...box, x: avatarFrame.width - box.x - box.width, y: avatarFrame.height - box.y - box.height };
    const inMark = await regionDiff(ts, room.portraitId, avatarFrame.png, box);
    const elsewhere = await regionDiff(ts, room.portraitId, avatarFrame.png, mirror);
    expect(inMark, `mark region ${inMark.toFixed(1)}, opposite corner ${elsewhere.toFixed(1)}`).toBeGreaterThan(
      elsewhere + 25,
    );

    // The avatar microphone: the performer's voice (the WHIP performer's 440 Hz tone), delayed to the video.
    const mic = await page.evaluate(
      (id) => (window as unknown as Meeting).meeting.open({ audio: { deviceId: { exact: id } } }),
      avatarMic!.deviceId,
    );
    expect(mic.tracks.map((t) => t.kind)).toEqual(['audio']);
    expect(mic.tracks[0]!.label).toBe(avatarMic!.label);
    const level = await page.evaluate((i) => (window as unknown as Meeting).meeting.level(i, 1500), mic.index);
    expect(level).toBeGreaterThan(0.01);

    // Avatar camera + `audio: true`: the voice that matches the avatar's delayed picture.
    const both = await page.evaluate(
      (id) => (window as unknown as Meeting).meeting.open({ video: { deviceId: id }, audio: true }),
      avatarCam!.deviceId,
    );
    expect(both.tracks.map((t) => t.label).sort()).toEqual([avatarMic!.label, CAMERA_LABEL].sort());
    expect(r.viewerCount).toBe(3);

    // Stopping the tracks ends each server session; the webcam is unaffected.
    for (const i of [opened.index, mic.index, both.index])
      await page.evaluate((n) => (window as unknown as Meeting).meeting.stop(n), i);
    await waitFor(() => r.viewerCount === 0, 10_000, 'avatar sessions ended');
    await page.evaluate((i) => (window as unknown as Meeting).meeting.stop(i), cam.index);
    await page.close();
  });

  it('a meeting-shaped page sends the avatar over its own RTCPeerConnection to a second page', async () => {
    const sender = await meetingPage();
    const receiver = await meetingPage();
    const devices = await sender.evaluate(() => (window as unknown as Meeting).meeting.devices());
    const avatarCam = devices.find((d) => d.label === CAMERA_LABEL)!;
    const opened = await sender.evaluate(
      (id) => (window as unknown as Meeting).meeting.open({ video: { deviceId: { exact: id } }, audio: true }),
      avatarCam.deviceId,
    );
    const offer = await sender.evaluate((i) => (window as unknown as Meeting).meeting.call(i), opened.index);
    const answer = await receiver.evaluate((o) => (window as unknown as Meeting).meeting.answer(o), offer);
    await sender.evaluate((a) => (window as unknown as Meeting).meeting.accept(a), answer);
    await waitFor(
      () => receiver.evaluate(() => (window as unknown as Meeting).meeting.hasRemote()),
      15_000,
      'the second page receives the stream',
    );
    const got = await receiver.evaluate(() => (window as unknown as Meeting).meeting.remoteFrame());
    const corr = looksLikePortrait(await grayOfPng(got.png));
    expect(corr, `correlation with the portrait ${corr.toFixed(3)}`).toBeGreaterThan(0.85);
    await receiver.evaluate(() => (window as unknown as Meeting).meeting.hangUp());
    await sender.evaluate(() => (window as unknown as Meeting).meeting.hangUp());
    await waitFor(() => ts.server.rooms.require(room.roomId).viewerCount === 0, 10_000, 'session ended on hang-up');
    await sender.close();
    await receiver.close();
  });

  it('closing a page that did not stop its avatar tracks ends the server session', async () => {
    const page = await meetingPage();
    const r = ts.server.rooms.require(room.roomId);
    await page.evaluate(
      (id) => (window as unknown as Meeting).meeting.open({ video: { deviceId: { exact: id } }, audio: true }),
      'live-avatar-camera',
    );
    expect(r.viewerCount).toBe(1);
    await page.close();
    // Well before ICE would time out on the server (~30 s): the extension DELETEs the session on pagehide.
    await waitFor(() => r.viewerCount === 0, 5000, 'session ended when the page closed');
  });

  it('a machine without any camera or microphone of its own gets the avatar camera too', async () => {
    // No fake devices: this VM has no real camera or microphone, like a meeting laptop whose performer publishes
    // from elsewhere (OBS over WHIP). There is no browser permission to ask for; choosing the avatar is enough.
    const profile = await mkdtemp(path.join(os.tmpdir(), 'avatar-ext-nodev-'));
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: chromiumPath,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--allow-loopback-in-peer-connection',
        '--disable-features=WebRtcHideLocalIpsWithMdns',
        `--disable-extensions-except=${EXTENSION}`,
        `--load-extension=${EXTENSION}`,
      ],
    });
    try {
      const worker = await waitFor(
        () => context.serviceWorkers().find((w) => w.url().startsWith('chrome-extension://')),
        15_000,
        'the extension service worker',
      );
      const id = new URL(worker.url()).host;
      expect(await signIn(room.viewerUrl, context, id)).toContain('Signed in');
      const page = await meetingPage(context);
      expect(await allowThisSite(context, id)).toBe(pages.url);
      const devices = await page.evaluate(() => (window as unknown as Meeting).meeting.devices());
      expect(devices.filter((d) => d.kind === 'videoinput').map((d) => d.label)).toEqual([CAMERA_LABEL]);
      const opened = await page.evaluate(() =>
        (window as unknown as Meeting).meeting.open({ video: { deviceId: { exact: 'live-avatar-camera' } } }),
      );
      const frame = await page.evaluate((i) => (window as unknown as Meeting).meeting.frame(i), opened.index);
      expect(looksLikePortrait(await grayOfPng(frame.png))).toBeGreaterThan(0.9);
      await page.evaluate((i) => (window as unknown as Meeting).meeting.stop(i), opened.index);
      await waitFor(() => ts.server.rooms.require(room.roomId).viewerCount === 0, 10_000, 'session ended');
    } finally {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    }
  });

  it('after sign-out the avatar devices are gone and asking for one fails', async () => {
    const page = await meetingPage();
    const p = await popup();
    await waitFor(async () => await p.isVisible('#signout'), 5000, 'sign-out button');
    await p.click('#signout');
    await waitFor(async () => /Not signed in/.test((await p.textContent('#status')) ?? ''), 5000, 'signed out');
    await p.close();
    await waitFor(
      async () =>
        !(await page.evaluate(() => (window as unknown as Meeting).meeting.devices())).some((d) =>
          /Live Avatar/.test(d.label),
        ),
      5000,
      'avatar devices gone',
    );
    // The browser's own answer for a camera it does not have: the page cannot tell the extension is there.
    const err = await page.evaluate(() =>
      (window as unknown as Meeting).meeting.openError({ video: { deviceId: { exact: 'live-avatar-camera' } } }),
    );
    const none = await page.evaluate(() =>
      (window as unknown as Meeting).meeting.openError({ video: { deviceId: { exact: 'no-such-camera' } } }),
    );
    expect(err?.name).toBeDefined();
    expect(err).toEqual(none);
    await page.close();
  });
});
