/**
 * Reconnects in real Chromium: the performer and viewer pages reach the server through a TCP proxy; dropping every
 * proxied connection (a network blip) disconnects both sockets. The client library must rejoin, re-publish and
 * re-view by itself, and the viewer must play again without a reload.
 */
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildClient, ChromiumBrowser, chromiumPath } from '../helpers/chromium.js';
import { drivingClip, makeY4m, portraitFile } from '../helpers/media.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

type Viewer = { __avatar: { frames: number; streams: number; state: string } };
type Studio = { __studio: { publishState: string; state: string } };

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

const CLIP = drivingClip('young_man_talking_outdoor.mp4');
const PORTRAIT = portraitFile('cartoon_3d_boy.jpg');
const haveTools = existsSync(chromiumPath) && existsSync(CLIP) && existsSync(PORTRAIT);
if (!haveTools) process.stdout.write(`reconnect e2e skipped: ${chromiumPath} or the shared media is missing\n`);

describe.runIf(haveTools)('reconnect in Chromium', () => {
  let srv: TestServer | null = null;
  let proxy: CuttableProxy | null = null;
  let performer: ChromiumBrowser | null = null;
  let viewer: ChromiumBrowser | null = null;
  let y4m = '';

  beforeAll(async () => {
    y4m = await makeY4m({ source: CLIP, width: 640, height: 480, fps: 30, seconds: 6 });
    await buildClient();
    srv = await startTestServer({ avatar: { engine: 'portrait' } });
    proxy = await CuttableProxy.start(srv.port);
    [performer, viewer] = await Promise.all([ChromiumBrowser.launch({ fakeVideo: y4m }), ChromiumBrowser.launch()]);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([performer?.close(), viewer?.close()]);
    await proxy?.close();
    await srv?.stop();
    if (y4m) await rm(path.dirname(y4m), { recursive: true, force: true });
  });

  it('performer and viewer recover from a dropped connection without a reload', async () => {
    const base = proxy!.url;
    const form = new FormData();
    form.append('consent', 'true');
    form.append('file', new Blob([await readFile(PORTRAIT)], { type: 'image/jpeg' }), path.basename(PORTRAIT));
    const up = await fetch(`${base}/api/portraits`, { method: 'POST', body: form });
    expect(up.status).toBe(201);
    const { id } = (await up.json()) as { id: string };
    const res = await fetch(`${base}/api/rooms`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ portraitId: id }) });
    expect(res.status).toBe(201);
    const room = (await res.json()) as { roomId: string; performerUrl: string; viewerUrl: string };
    expect(room.viewerUrl.startsWith(base)).toBe(true);

    const pPage = performer!.page;
    const vPage = viewer!.page;
    const v = (): Promise<Viewer['__avatar']> => vPage.evaluate(() => (window as unknown as Viewer).__avatar);
    const p = (): Promise<Studio['__studio']> => pPage.evaluate(() => (window as unknown as Studio).__studio);

    await pPage.goto(`${room.performerUrl}&preview=0`);
    await waitFor(() => pPage.locator('#start:not([disabled])').count(), 15_000, 'start enabled');
    await pPage.locator('#start').click();
    await waitFor(async () => (await p()).publishState === 'connected', 20_000, 'performer connected');
    await vPage.goto(room.viewerUrl);
    await waitFor(async () => (await v()).frames > 20, 30_000, 'viewer playing');
    expect((await v()).streams).toBe(1);

    // The blip: every socket.io connection through the proxy is cut.
    expect(proxy!.cut()).toBeGreaterThanOrEqual(2);
    await waitFor(async () => (await v()).streams >= 2, 30_000, 'viewer re-viewed');
    await waitFor(async () => (await p()).publishState === 'connected' && (await p()).state === 'joined', 30_000, 'performer re-published');
    const after = (await v()).frames;
    await waitFor(async () => (await v()).frames > after + 30, 30_000, 'viewer frames after the reconnect');
    expect((await v()).state).toBe('playing');
    // The room survived (the performer came back within the grace period) and has the one viewer again.
    const live = srv!.server.rooms.get(room.roomId);
    expect(live).toBeDefined();
    await waitFor(() => live!.viewerCount === 1, 10_000, 'one viewer on the server');
  }, 150_000);
});
