/**
 * The browser extension as an attacker's page sees it (issue 20, item 1), in real Chromium with the unpacked extension
 * signed in to a live room. Two sites: the meeting site (pages on one port) and another site (another port: another
 * origin for the browser).
 *
 * - a page of a site the user did not approve lists no avatar device, gets the browser's own answer for the avatar
 *   camera, and finds the browser's own functions in place;
 * - a page that posts the extension's old bridge messages itself (status, an offer with a real SDP), or replays the
 *   bridge handshake, gets no answer: no server, no room, no SDP answer, no track, no server session (on an approved
 *   site too);
 * - another site's frame inside an approved page gets nothing either;
 * - a site approved for frames, framed without the camera permission, gets no avatar even when it fakes
 *   `navigator.permissions.query`; with the permission (allow="camera; microphone") it does;
 * - removing a site in the popup takes the devices, and the avatar streams already open, away from its pages.
 *
 * Negative checks watch for a bounded time (FORGED_WATCH_MS): the old extension answered these forgeries within a
 * few hundred milliseconds.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { BrowserContext, Frame, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChromiumBrowser, chromiumPath } from '../helpers/chromium.js';
import { repoRoot } from '../helpers/media.js';
import { isPortFree } from '../helpers/net.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { avatarRoom, buildAll, startPageServer, type AvatarRoom, type PageServer } from '../e2e/avatarPages.js';

const EXTENSION = path.join(repoRoot, 'client', 'extension');
const FORGED_WATCH_MS = 3000;
const haveChromium = existsSync(chromiumPath);
if (!haveChromium) process.stdout.write(`extension security tests skipped: ${chromiumPath} is missing\n`);

interface Device {
  deviceId: string;
  kind: string;
  label: string;
}
type Meeting = {
  meeting: {
    devices(): Promise<Device[]>;
    open(c: MediaStreamConstraints): Promise<{ index: number; tracks: { kind: string; label: string }[] }>;
    openError(c: MediaStreamConstraints): Promise<{ name: string; message: string } | null>;
    stop(i: number): string[];
  };
};
interface Forged {
  /** Window messages the page did not post itself. */
  replies: string[];
  /** What the bridge's handshake event carried when the page replayed the hello. */
  keys: string[];
  /** Tracks a page-made RTCPeerConnection received after applying any answer it got. */
  tracks: number;
}

let ts: TestServer;
let site: PageServer;
let other: PageServer;
let browser: ChromiumBrowser;
let room: AvatarRoom;
let extensionId: string;

beforeAll(async () => {
  if (!haveChromium) return;
  await buildAll();
  ts = await startTestServer({ avatar: { engine: 'portrait', outputSize: 160 } });
  site = await startPageServer();
  other = await startPageServer();
  room = await avatarRoom(ts);
  browser = await ChromiumBrowser.launch({
    args: [
      `--disable-extensions-except=${EXTENSION}`,
      `--load-extension=${EXTENSION}`,
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
  const worker = await waitFor(
    () => browser.context.serviceWorkers().find((w) => w.url().startsWith('chrome-extension://')),
    15_000,
    'the extension service worker',
  );
  extensionId = new URL(worker.url()).host;
  const p = await popup();
  await p.fill('#link', room.viewerUrl);
  await p.click('#signin-button');
  await waitFor(async () => /Signed in/.test((await p.textContent('#status')) ?? ''), 15_000, 'signed in');
  await p.close();
});
afterAll(async () => {
  room?.performer?.close();
  await browser?.close();
  await site?.close();
  await other?.close();
  await ts?.stop();
  if (ts) expect(await isPortFree(ts.port)).toBe(true);
});

async function popup(context: BrowserContext = browser.context): Promise<Page> {
  const page = await context.newPage();
  await page.goto(`chrome-extension://${extensionId}/popup.html`);
  return page;
}

/** Allows a site in the popup's "Another site" form (with `frames`: also inside other sites' pages). */
async function allowSite(origin: string, frames = false): Promise<void> {
  const p = await popup();
  await p.fill('#site', origin);
  if (frames) await p.check('#site-frames');
  await p.click('#add-site-button');
  await waitFor(async () => ((await p.textContent('#sites')) ?? '').includes(origin), 5000, 'site listed');
  await p.close();
}

async function removeSite(origin: string): Promise<void> {
  const p = await popup();
  await waitFor(async () => ((await p.textContent('#sites')) ?? '').includes(origin), 5000, 'site listed');
  await p.click(`#sites button[data-origin="${origin}"]`);
  await waitFor(async () => !((await p.textContent('#sites')) ?? '').includes(origin), 5000, 'site removed');
  await p.close();
}

const devices = (f: Page | Frame): Promise<Device[]> =>
  f.evaluate(() => (window as unknown as Meeting).meeting.devices());
const hasAvatar = (list: Device[]): boolean => list.some((d) => /Live Avatar/.test(d.label));

/** The meeting page inside another page's frame (`allow`: the frame's permissions policy). */
async function framed(host: string, src: string, allow = ''): Promise<{ page: Page; frame: Frame }> {
  const page = await browser.context.newPage();
  const q = new URLSearchParams({ src: `${src}/meeting.html`, allow });
  await page.goto(`${host}/frame-host.html?${q.toString()}`);
  const frame = await waitFor(
    () => page.frames().find((f) => f.url().startsWith(`${src}/meeting.html`)),
    10_000,
    'the framed page',
  );
  await frame.waitForFunction(() => 'meeting' in window);
  return { page, frame };
}

/**
 * What the attacker's probe did: post the bridge's messages from the page itself (the old window-message protocol:
 * status, and an offer made by the page's own RTCPeerConnection), and replay the new channel's handshake; then apply
 * any answer and count the tracks.
 */
function forge(f: Page | Frame): Promise<Forged> {
  return f.evaluate(async (watchMs) => {
    const posted = new Set<string>();
    const replies: string[] = [];
    const keys: string[] = [];
    window.addEventListener('message', (e) => {
      const s = JSON.stringify(e.data);
      if (!posted.has(s)) replies.push(s);
    });
    document.addEventListener('live-avatar-extension:ready', (e) => keys.push(String((e as CustomEvent).detail)));
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    let tracks = 0;
    pc.ontrack = () => tracks++;
    await pc.setLocalDescription(await pc.createOffer());
    const sdp = pc.localDescription?.sdp ?? '';
    const requests = [{ type: 'status' }, { type: 'offer', sdp }];
    requests.forEach((request, i) => {
      const m = { channel: 'live-avatar-extension', dir: 'to-extension', id: i + 1, request };
      posted.add(JSON.stringify(m));
      window.postMessage(m, '*');
    });
    document.dispatchEvent(new CustomEvent('live-avatar-extension:hello', { detail: 'hello' }));
    await new Promise((r) => setTimeout(r, watchMs));
    for (const r of replies) {
      const answer = (JSON.parse(r) as { reply?: { data?: { answer?: string } } }).reply?.data?.answer;
      if (answer) await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    }
    if (pc.remoteDescription) await new Promise((r) => setTimeout(r, watchMs));
    pc.close();
    return { replies, keys, tracks };
  }, FORGED_WATCH_MS);
}

function expectNothing(got: Forged): void {
  const all = JSON.stringify(got);
  expect(all).not.toContain(room.roomId);
  expect(all).not.toContain(ts.url);
  expect(got.replies).toEqual([]);
  expect(got.keys.filter((k) => k !== 'ready')).toEqual([]);
  expect(got.tracks).toBe(0);
  expect(ts.server.rooms.require(room.roomId).viewerCount).toBe(0);
}

describe.runIf(haveChromium)('browser extension: only pages the user approved', () => {
  it("an unapproved site's page sees no avatar device and the browser's own getUserMedia", async () => {
    const page = await browser.context.newPage();
    await page.goto(`${other.url}/meeting.html`);
    expect(hasAvatar(await devices(page))).toBe(false);
    const avatar = await page.evaluate(() =>
      (window as unknown as Meeting).meeting.openError({ video: { deviceId: { exact: 'live-avatar-camera' } } }),
    );
    const none = await page.evaluate(() =>
      (window as unknown as Meeting).meeting.openError({ video: { deviceId: { exact: 'no-such-camera' } } }),
    );
    expect(avatar).toEqual(none);
    // Once the extension knows the site is not approved, the browser's functions are back in place.
    await waitFor(
      () =>
        page.evaluate(
          () =>
            /\[native code\]/.test(
              Function.prototype.toString.call(Reflect.get(MediaDevices.prototype, 'getUserMedia')),
            ) &&
            /\[native code\]/.test(
              Function.prototype.toString.call(Reflect.get(MediaDevices.prototype, 'enumerateDevices')),
            ),
        ),
      5000,
      'native media functions',
    );
    expect(ts.server.rooms.require(room.roomId).viewerCount).toBe(0);
    await page.close();
  });

  it('forged bridge messages get nothing: no server, room, answer, track or session', async () => {
    const page = await browser.context.newPage();
    await page.goto(`${other.url}/meeting.html`);
    expectNothing(await forge(page));
    await page.close();
    // An approved site's page that skips getUserMedia gets nothing either.
    await allowSite(site.url);
    const approved = await browser.context.newPage();
    await approved.goto(`${site.url}/meeting.html`);
    expect(hasAvatar(await devices(approved))).toBe(true);
    expectNothing(await forge(approved));
    await approved.close();
  });

  it("another site's frame inside an approved page gets nothing", async () => {
    await allowSite(site.url);
    const { page, frame } = await framed(site.url, other.url, 'camera; microphone');
    // The approved top page itself has the avatar; the other site's frame in it has not.
    const top = await page.evaluate(async () =>
      (await navigator.mediaDevices.enumerateDevices()).map((d) => ({
        deviceId: d.deviceId,
        kind: d.kind,
        label: d.label,
      })),
    );
    expect(hasAvatar(top)).toBe(true);
    expect(hasAvatar(await devices(frame))).toBe(false);
    const avatar = await frame.evaluate(() =>
      (window as unknown as Meeting).meeting.openError({ video: { deviceId: { exact: 'live-avatar-camera' } } }),
    );
    const none = await frame.evaluate(() =>
      (window as unknown as Meeting).meeting.openError({ video: { deviceId: { exact: 'no-such-camera' } } }),
    );
    expect(avatar).toEqual(none);
    expectNothing(await forge(frame));
    await page.close();
  });

  it('a site approved for frames gets the avatar only with the camera permission, not by faking its query', async () => {
    await allowSite(other.url, true);
    // No permissions policy for the frame: the browser refuses the camera there.
    const denied = await framed(site.url, other.url);
    expect(hasAvatar(await devices(denied.frame))).toBe(true);
    const err = await denied.frame.evaluate(() => {
      const query = navigator.permissions.query.bind(navigator.permissions);
      navigator.permissions.query = (d: PermissionDescriptor) =>
        d.name === 'camera' || d.name === ('microphone' as PermissionName)
          ? Promise.resolve({ state: 'granted', name: d.name } as unknown as PermissionStatus)
          : query(d);
      return (window as unknown as Meeting).meeting.openError({
        video: { deviceId: { exact: 'live-avatar-camera' } },
        audio: true,
      });
    });
    expect(err?.name).toBe('NotAllowedError');
    expect(ts.server.rooms.require(room.roomId).viewerCount).toBe(0);
    await denied.page.close();

    // With the camera and microphone allowed to the frame, the approved frame gets the avatar.
    const allowed = await framed(site.url, other.url, 'camera; microphone');
    const opened = await allowed.frame.evaluate(() =>
      (window as unknown as Meeting).meeting.open({ video: { deviceId: { exact: 'live-avatar-camera' } } }),
    );
    expect(opened.tracks.map((t) => t.label)).toEqual(['Live Avatar (AI avatar camera)']);
    expect(ts.server.rooms.require(room.roomId).viewerCount).toBe(1);
    await allowed.frame.evaluate((i) => (window as unknown as Meeting).meeting.stop(i), opened.index);
    await waitFor(() => ts.server.rooms.require(room.roomId).viewerCount === 0, 10_000, 'session ended');
    await allowed.page.close();
    await removeSite(other.url);
  });

  it("removing a site in the popup takes the devices and the live avatar away from the site's open pages", async () => {
    await allowSite(site.url);
    const page = await browser.context.newPage();
    await page.goto(`${site.url}/meeting.html`);
    expect(hasAvatar(await devices(page))).toBe(true);
    await page.evaluate(() =>
      (window as unknown as Meeting).meeting.open({ video: { deviceId: { exact: 'live-avatar-camera' } } }),
    );
    expect(ts.server.rooms.require(room.roomId).viewerCount).toBe(1);
    await removeSite(site.url);
    await waitFor(async () => !hasAvatar(await devices(page)), 5000, 'avatar devices gone');
    await waitFor(() => ts.server.rooms.require(room.roomId).viewerCount === 0, 5000, 'the avatar session ended');
    await page.close();
  });
});
