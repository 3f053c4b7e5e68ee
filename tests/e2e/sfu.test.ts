/**
 * The SFU end to end with a real mediasoup worker pool (two workers, one viewer per router so that the second viewer
 * consumes on a router piped to the other worker): a real Chromium viewer page (the client library's mediasoup-client
 * path) and a wrtc viewer, both over real socket.io signaling, consume the avatar through the routers. Then the
 * worker under the room's primary router is killed (SIGKILL): the room survives, the pool replaces the worker, both
 * viewers are told to consume again (viewReset) and get frames again without a reload. Deleting the room closes
 * every router it created.
 */
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { portraitFile } from '../../scripts/testData.js';
import type { MediasoupFanoutFactory } from '../../server/media/mediasoupFanout.js';
import { buildClient, ChromiumBrowser, chromiumPath } from '../helpers/chromium.js';
import { createTestRoom, startTestServer, type TestServer } from '../helpers/server.js';
import { SocketSfuViewer } from '../helpers/sfuViewer.js';
import { call, connectClient } from '../helpers/socket.js';
import { waitFor } from '../helpers/wait.js';

const workerBin = process.env.MEDIASOUP_WORKER_BIN;
const skip = !workerBin || !existsSync(chromiumPath);
if (skip)
  console.log(`SFU e2e skipped: ${!workerBin ? 'no mediasoup worker (MEDIASOUP_WORKER_BIN)' : `no ${chromiumPath}`}`);

type Win = { __avatar: { frames: number; width: number; state: string; lastError: unknown } };

describe.skipIf(skip)('SFU end to end: Chromium and wrtc viewers through mediasoup routers', () => {
  let ts: TestServer;
  let browser: ChromiumBrowser | null = null;
  const viewers: SocketSfuViewer[] = [];

  beforeAll(async () => {
    await buildClient();
    ts = await startTestServer({
      avatar: { engine: 'portrait', outputSize: 256 },
      fanout: { mode: 'sfu', mediasoupWorkerBin: workerBin ?? null, workers: 2, viewersPerRouter: 1 },
    });
  });
  afterAll(async () => {
    for (const v of viewers.splice(0)) v.close();
    await browser?.close();
    await ts?.stop();
  });

  it('both viewers get the avatar, survive a worker death, and the room closes everything', async () => {
    const room = await createTestRoom(ts.url, portraitFile('real_woman_dark_hair.png'));
    const r = ts.server.rooms.get(room.roomId)!;
    expect(r.fanoutKind).toBe('sfu');

    // Chromium first: it consumes on the primary router.
    browser = await ChromiumBrowser.launch();
    const page = browser.page;
    await page.goto(room.viewerUrl);
    const av = (): Promise<Win['__avatar']> => page.evaluate(() => (window as unknown as Win).__avatar);
    await waitFor(async () => (await av()).frames >= 5, 60_000, 'Chromium viewer frames through the SFU');
    expect((await av()).width).toBe(256);

    // The wrtc viewer: on a router piped to the other worker (viewersPerRouter 1).
    const s = await connectClient(ts.url);
    await call(s, 'join', { token: room.viewerToken });
    const v = new SocketSfuViewer(s);
    viewers.push(v);
    await v.view();
    await waitFor(() => v.frames >= 3 && v.width === 256, 30_000, 'wrtc viewer frames on the piped router');
    const routers = r.sfu!.routers();
    expect(routers.map((x) => x.viewers)).toEqual([1, 1]);
    expect(routers[0]!.workerPid).not.toBe(routers[1]!.workerPid);

    // Kill the worker under the primary router.
    const factory = ts.server.fanout as MediasoupFanoutFactory;
    const dead = routers[0]!.workerPid;
    process.kill(dead, 'SIGKILL');
    await waitFor(() => v.resets >= 1, 15_000, 'the wrtc viewer told to consume again');
    const chromeBefore = (await av()).frames;
    const wrtcBefore = v.frames;
    await waitFor(async () => (await av()).frames >= chromeBefore + 5, 60_000, 'Chromium frames after the worker died');
    await waitFor(() => v.frames >= wrtcBefore + 3, 30_000, 'wrtc frames after the worker died');
    expect(r.closed).toBe(false);
    expect(r.sfu!.routers().every((x) => x.workerPid !== dead)).toBe(true);
    await waitFor(() => factory.workers().length === 2, 15_000, 'a replacement worker');
    expect(factory.pool.deaths).toBe(1);
    expect(v.failures).toEqual([]);

    // Deleting the room closes every router, on every worker.
    const del = await fetch(`${ts.url}/api/rooms/${room.roomId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${room.performerToken}` },
    });
    expect(del.status).toBe(204);
    await waitFor(() => v.closedReason === 'room-deleted', 10_000, 'viewer told the room ended');
    for (const w of factory.pool.workersForDump()) expect((await w.dump()).routerIds).toEqual([]);
    await waitFor(
      async () => (await av()).state === 'closed' || /ended|deleted/i.test((await page.textContent('body')) ?? ''),
      10_000,
      'page shows the end',
    );
  });
});
