/**
 * The performer's browser reloads its page (the faults benchmark's third fault, here on a small passthrough room):
 * real Chromium on the studio page (performer link, a fake webcam), a real server in its own process
 * (benchmarks/lib/reliabilityServer.ts), one wrtc viewer. After page.reload() and Start, the studio publishes again
 * into the same room (within its grace period), synthesized frames come back, and the viewer was never dropped.
 */
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CountingViewer,
  ServerProc,
  TickLog,
  benchOverrides,
  connectViewer,
  countIn,
  createRoom,
  now,
  uploadPortrait,
  type Connected,
  type RoomLinks,
} from '../../benchmarks/lib/reliability.js';
import { ChromiumBrowser, chromiumPath } from '../helpers/chromium.js';
import { startPerformer } from '../helpers/g2g.js';
import { drivingClip, makeY4m, portraitFile } from '../helpers/media.js';
import { waitFor } from '../helpers/wait.js';

const haveChromium = existsSync(chromiumPath);
if (!haveChromium) process.stdout.write(`performer reload test skipped: ${chromiumPath} is missing\n`);

type StudioWin = { __studio: { publishState: string } };

let server: ServerProc;
let ticks: TickLog;
let browser: ChromiumBrowser | null = null;
let viewer: Connected<CountingViewer> | null = null;
let room: RoomLinks;
let y4m = '';
let minViewers = Infinity;
let tracking = false;

beforeAll(async () => {
  if (!haveChromium) return;
  y4m = await makeY4m({
    source: drivingClip('woman_speech_head_motion.mp4'),
    width: 320,
    height: 240,
    fps: 30,
    seconds: 3,
  });
  server = await ServerProc.start({
    overrides: benchOverrides('passthrough', { avatar: { engine: 'passthrough', outputSize: 256 } }),
    inspector: false,
  });
  ticks = new TickLog(server);
  server.onTick((_at, rooms) => {
    if (tracking) for (const r of rooms) minViewers = Math.min(minViewers, r.viewers);
  });
  room = await createRoom(server, await uploadPortrait(server, portraitFile('real_woman_dark_hair.png')));
  browser = await ChromiumBrowser.launch({ fakeVideo: y4m });
  await startPerformer(browser.page, room.performerUrl, 60_000);
  viewer = await connectViewer(server.url, room.viewerToken, new CountingViewer(true));
  await waitFor(
    () => countIn(ticks.times(room.roomId), now() - 1000, now()) > 10 && viewer!.peer.frames > 30,
    60_000,
    'frames flowing',
  );
  tracking = true;
});

afterAll(async () => {
  viewer?.close();
  await browser?.close();
  ticks?.close();
  if (server) expect(await server.close()).toBe(0);
  if (y4m) await rm(path.dirname(y4m), { recursive: true, force: true });
});

describe.skipIf(!haveChromium)('performer page reload', () => {
  it('publishes again into the same room; frames come back; the viewer stays', async () => {
    const page = browser!.page;
    const at = now();
    await page.reload();
    await waitFor(() => page.locator('#start:not([disabled])').count(), 60_000, 'Start enabled after the reload');
    await page.locator('#start').click();
    await waitFor(
      () => page.evaluate(() => (window as unknown as StudioWin).__studio.publishState === 'connected'),
      60_000,
      'publishing again',
    );
    await waitFor(
      () => countIn(ticks.times(room.roomId), now() - 1000, now()) > 10,
      30_000,
      'synthesized frames after the reload',
    );
    await waitFor(() => countIn(viewer!.peer.times, at + 1000, now()) > 30, 30_000, 'viewer frames after the reload');
    expect(ticks.last.get(room.roomId)?.publishing).toBe(true);
    expect(minViewers).toBe(1);
    expect(viewer!.disconnects).toBe(0);
    expect(viewer!.closedReasons).toEqual([]);
    expect(server.faults).toEqual([]);
  });
});
