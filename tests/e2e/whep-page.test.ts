/**
 * A tiny WHEP player page in real Chromium, on another origin than the avatar server: the public avatar-stream module
 * (getAvatarStream, client/dist/avatar-stream.js) turns the studio's viewer link into a MediaStream that shows the
 * portrait the room animates (engine 'portrait', performer publishing with WHIP); stopping it ends the server session;
 * a bad link and a bad token fail with the server's codes. And the other way: a tiny WHIP publisher page sends the
 * browser's (fake) camera as the performer's, cross-origin.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChromiumBrowser } from '../helpers/chromium.js';
import { correlation } from '../helpers/media.js';
import { isPortFree } from '../helpers/net.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import {
  avatarRoom,
  buildAll,
  grayOfPng,
  portraitGray,
  startPageServer,
  type AvatarRoom,
  type PageServer,
} from './avatarPages.js';

type Publisher = {
  publisher: {
    start(endpoint: string, token: string): Promise<{ status: number; location?: string; body?: string }>;
    state(): string;
    stop(): Promise<number>;
  };
};
type Player = {
  player: {
    play(
      link: string,
    ): Promise<{ tracks?: string[]; error?: { name: string; code: string; message: string; status: number | null } }>;
    frame(): Promise<{ png: string; width: number; height: number }>;
    stop(): string[];
  };
  ready?: boolean;
};

let ts: TestServer;
let pages: PageServer;
let browser: ChromiumBrowser;
let room: AvatarRoom;

beforeAll(async () => {
  await buildAll();
  ts = await startTestServer({ avatar: { engine: 'portrait', outputSize: 320 } });
  pages = await startPageServer();
  room = await avatarRoom(ts);
  browser = await ChromiumBrowser.launch({ args: ['--disable-features=WebRtcHideLocalIpsWithMdns'] });
});
afterAll(async () => {
  room?.performer?.close();
  await browser?.close();
  await pages?.close();
  await ts?.stop();
  if (ts) expect(await isPortFree(ts.port)).toBe(true);
});

describe('WHEP player page (getAvatarStream)', () => {
  it('shows the avatar from a viewer link; stopping ends the session; bad links fail with codes', async () => {
    const page = browser.page;
    await page.goto(`${pages.url}/whep.html`);
    await waitFor(() => page.evaluate(() => (window as unknown as Player).ready === true), 10_000, 'page ready');

    const played = await page.evaluate((link) => (window as unknown as Player).player.play(link), room.viewerUrl);
    expect(played, browser.logs.join('\n')).toEqual({ tracks: ['audio', 'video'] });
    const r = ts.server.rooms.require(room.roomId);
    expect(r.viewerCount).toBe(1);

    const frame = await page.evaluate(() => (window as unknown as Player).player.frame());
    expect({ w: frame.width, h: frame.height }).toEqual({ w: r.info.width, h: r.info.height });
    const shown = await grayOfPng(frame.png);
    const corr = correlation(shown, await portraitGray(ts, room.portraitId));
    expect(corr, `correlation with the portrait ${corr.toFixed(3)}`).toBeGreaterThan(0.9);

    const states = await page.evaluate(() => (window as unknown as Player).player.stop());
    expect(states).toEqual(['ended', 'ended']);
    await waitFor(() => r.viewerCount === 0, 10_000, 'WHEP session ended on the server');

    const badToken = room.viewerUrl.replace(/token=[^&]+/, 'token=abc.def');
    const refused = await page.evaluate((link) => (window as unknown as Player).player.play(link), badToken);
    expect(refused.error).toMatchObject({ name: 'ClientError', code: 'TOKEN_INVALID', status: 401 });
    const noRoom = await page.evaluate(
      (link) => (window as unknown as Player).player.play(link),
      `${ts.url}/view?token=x`,
    );
    expect(noRoom.error).toMatchObject({ code: 'BAD_REQUEST' });
  });

  it('a browser page publishes its camera with WHIP (cross-origin): the avatar runs on its frames; DELETE stops it', async () => {
    const room2 = await avatarRoom(ts, { whip: false });
    const r = ts.server.rooms.require(room2.roomId);
    let framesFromPerformer = 0;
    r.on('frame', () => framesFromPerformer++);
    const page = await browser.context.newPage();
    await page.goto(`${pages.url}/whip.html`);
    const started = await page.evaluate(
      ([endpoint, token]) => (window as unknown as Publisher).publisher.start(endpoint!, token!),
      [`${ts.url}/whip/${room2.roomId}`, room2.performerToken],
    );
    expect(started, JSON.stringify(started)).toMatchObject({ status: 201 });
    expect(started.location).toMatch(new RegExp(`^${ts.url}/whip/${room2.roomId}/`));
    expect(r.publishing).toBe(true);
    // Chromium's offer (VP8, VP9, AV1, H.264, ...) is decoded and every decoded frame goes through the avatar session.
    await waitFor(() => framesFromPerformer >= 30, 30_000, '30 avatar frames rendered from the browser camera');
    expect(await page.evaluate(() => (window as unknown as Publisher).publisher.state())).toBe('connected');
    expect(await page.evaluate(() => (window as unknown as Publisher).publisher.stop())).toBe(200);
    expect(r.publishing).toBe(false);
    await page.close();
  });
});
