/**
 * Viewer latency modes in real Chromium: one server (the 'portrait' engine: the portrait re-rendered through the
 * whole media path), a performer page publishing a fake webcam and Chromium's fake microphone, and a viewer browser
 * that opens the viewer link with each `latency=` value in turn.
 *
 * - `low` (and no parameter, the default): frames arrive, the picture is the portrait, the video is decoded by the
 *   WebCodecs path past the jitter buffer (its decoded count grows), the audio is a stream of its own (no lip-sync
 *   hold-back) and the video receiver's jitter buffer target is 0;
 * - `smooth`: frames arrive through the browser's own path, audio and video share one stream (lip-synced), no target;
 * - no parameter inside OBS's browser source (window.obsstudio): smooth;
 * - an unknown value: the page stops with BAD_REQUEST and says what is allowed, and never joins.
 *
 * Both with the direct fan-out and, when a mediasoup worker is there (MEDIASOUP_WORKER_BIN), through the SFU.
 */
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReceiverInfo } from '../../client/lib/peer.js';
import type { Probe } from '../../benchmarks/lib/browserProbe.js';
import { installProbe } from '../../benchmarks/lib/browserInject.js';
import { buildClient, ChromiumBrowser, chromiumPath } from '../helpers/chromium.js';
import { openRoom, startPerformer, startViewer, type OpenedRoom } from '../helpers/g2g.js';
import { correlation, drivingClip, makeY4m, portraitFile } from '../helpers/media.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';

type Win = {
  __probe: Probe;
  __avatar: {
    frames: number;
    streams: number;
    state: string;
    latency: string | null;
    lastError: { code: string; message: string } | null;
    socketId(): string | null;
    receivers(): ReceiverInfo[];
  };
};

const CLIP = drivingClip('man_mouth_wide_open.mp4');
const PORTRAIT = portraitFile('real_older_man_glasses.jpg');
const SMALL = 48;
const haveTools = existsSync(chromiumPath) && existsSync(CLIP) && existsSync(PORTRAIT);
if (!haveTools) process.stdout.write(`latency mode e2e skipped: ${chromiumPath} or the shared media is missing\n`);
// The SFU viewer applies the modes on the client side too (mediasoup-client consumers): tested with a real worker.
const workerBin = process.env.MEDIASOUP_WORKER_BIN;
if (!workerBin)
  process.stdout.write('latency mode e2e through the SFU skipped: no mediasoup worker (MEDIASOUP_WORKER_BIN)\n');

for (const fanout of ['direct', 'sfu'] as const)
  describe.skipIf(!haveTools || (fanout === 'sfu' && !workerBin))(
    `viewer latency modes (real Chromium, ${fanout} fan-out)`,
    () => {
      let srv: TestServer | null = null;
      let performer: ChromiumBrowser | null = null;
      let viewer: ChromiumBrowser | null = null;
      let y4m: string | null = null;
      let room: OpenedRoom | null = null;
      let portraitGray: Buffer | null = null;

      beforeAll(async () => {
        y4m = await makeY4m({ source: CLIP, width: 640, height: 480, fps: 30, seconds: 4 });
        await buildClient();
        srv = await startTestServer(
          fanout === 'sfu'
            ? { avatar: { engine: 'portrait' }, fanout: { mode: 'sfu', mediasoupWorkerBin: workerBin ?? null } }
            : { avatar: { engine: 'portrait' }, fanout: { mode: 'direct' } },
        );
        expect(srv.config.fanout.mode).toBe(fanout);
        [performer, viewer] = await Promise.all([ChromiumBrowser.launch({ fakeVideo: y4m }), ChromiumBrowser.launch()]);
        await installProbe(viewer.page);
        // The management calls' key: the first configured one, else the server's own operator key.
        const key = srv.config.auth.apiKeys[0]?.secret ?? srv.server.operatorKey;
        room = await openRoom(srv.url, PORTRAIT, key);
        await startPerformer(performer.page, room.performerUrl);
        const png = await (
          await fetch(`${srv.url}/api/portraits/${room.portraitId}/image`, {
            headers: key ? { authorization: `Bearer ${key}` } : {},
          })
        ).arrayBuffer();
        portraitGray = await sharp(Buffer.from(png)).resize(SMALL, SMALL, { fit: 'fill' }).grayscale().raw().toBuffer();
      }, 120_000);

      afterAll(async () => {
        await Promise.all([performer?.close(), viewer?.close()]);
        await srv?.stop();
        if (y4m) await rm(path.dirname(y4m), { recursive: true, force: true });
      });

      const hooks = (): Promise<Omit<Win['__avatar'], 'socketId' | 'receivers'> & { receivers: ReceiverInfo[] }> =>
        viewer!.page.evaluate(() => {
          const a = (window as unknown as Win).__avatar;
          return {
            frames: a.frames,
            streams: a.streams,
            state: a.state,
            latency: a.latency,
            lastError: a.lastError,
            receivers: a.receivers(),
          };
        });

      /**
       * The viewer shows the portrait (not a black or broken picture): the median, over five frames 200 ms apart, of
       * the correlation of a small gray copy with the portrait. The median, because one frame can be a transient
       * (one sample read 0.60 in a CI run, one 0.91 in a local run, against 0.997 for every other frame; not reproduced
       * under two CPU burners in 18 samples, its cause not found).
       */
      async function showsPortrait(): Promise<number> {
        const samples: number[] = [];
        for (let i = 0; i < 5; i++) {
          if (i > 0) await new Promise((r) => setTimeout(r, 200));
          const shown = await viewer!.page.evaluate(
            (n) => (window as unknown as Win).__probe.grayFrame('#video', n, n),
            SMALL,
          );
          samples.push(correlation(shown, portraitGray!));
        }
        return samples.sort((a, b) => a - b)[2]!;
      }

      for (const link of ['&latency=low', ''] as const) {
        it(`low latency (${link === '' ? 'the default, no parameter' : link}): WebCodecs video past the jitter buffer, audio in a stream of its own`, async () => {
          await startViewer(viewer!.page, `${room!.viewerUrl}${link}`, 30);
          const h = await hooks();
          expect(h.latency).toBe('low');
          expect(h.lastError).toBeNull();
          const video = h.receivers.find((r) => r.kind === 'video');
          const audio = h.receivers.find((r) => r.kind === 'audio');
          expect(video?.renderer).toBe('webcodecs');
          expect(video?.jitterBufferTargetMs).toBe(0);
          expect(audio?.renderer).toBe('browser');
          // Tracks of one stream are lip-synced by the browser: the audio must be in another one.
          expect(video?.streamIds.length).toBe(1);
          expect(audio?.streamIds.length).toBe(1);
          expect(audio?.streamIds[0]).not.toBe(video?.streamIds[0]);
          // The WebCodecs path keeps decoding (the frames shown come from it), and without loss skips nothing.
          const decoded0 = video!.fastVideo!.decoded;
          await waitFor(
            async () =>
              ((await hooks()).receivers.find((r) => r.kind === 'video')?.fastVideo?.decoded ?? 0) > decoded0 + 20,
            20_000,
            'fast path decoding',
          );
          expect((await hooks()).receivers.find((r) => r.kind === 'video')?.fastVideo?.skipped).toBe(0);
          expect(await showsPortrait()).toBeGreaterThan(0.6);
          // The audio still arrives.
          const audioPackets = async (): Promise<number> =>
            (await viewer!.page.evaluate(() => (window as unknown as Win).__probe.rtpStats()))
              .filter((r) => r.type === 'inbound-rtp' && r.kind === 'audio')
              .reduce((n, r) => n + r.packets, 0);
          const p0 = await audioPackets();
          await waitFor(async () => (await audioPackets()) > p0 + 20, 10_000, 'audio packets');
        });
      }

      it('smooth: the browser path, audio and video in one lip-synced stream, adaptive buffers', async () => {
        await startViewer(viewer!.page, `${room!.viewerUrl}&latency=smooth`, 30);
        const h = await hooks();
        expect(h.latency).toBe('smooth');
        const video = h.receivers.find((r) => r.kind === 'video');
        const audio = h.receivers.find((r) => r.kind === 'audio');
        expect(video?.renderer).toBe('browser');
        expect(video?.fastVideo).toBeUndefined();
        expect(video?.jitterBufferTargetMs).toBeNull();
        expect(audio?.streamIds).toEqual(video?.streamIds);
        expect(await showsPortrait()).toBeGreaterThan(0.6);
      });

      it('inside OBS (window.obsstudio) a link without latency= plays smooth; latency=low still wins', async () => {
        const obs = await ChromiumBrowser.launch();
        try {
          await obs.context.addInitScript(() => {
            (window as unknown as { obsstudio: object }).obsstudio = {};
          });
          await startViewer(obs.page, room!.viewerUrl, 5);
          const smooth = await obs.page.evaluate(() => (window as unknown as Win).__avatar.latency);
          expect(smooth).toBe('smooth');
          await startViewer(obs.page, `${room!.viewerUrl}&latency=low`, 5);
          expect(await obs.page.evaluate(() => (window as unknown as Win).__avatar.latency)).toBe('low');
        } finally {
          await obs.close();
        }
      });

      it('an unknown latency mode stops the page with BAD_REQUEST and a message naming the allowed values', async () => {
        const page = viewer!.page;
        await page.goto(`${room!.viewerUrl}&latency=fast`);
        await waitFor(
          () => page.evaluate(() => (window as unknown as Win).__avatar.lastError !== null),
          10_000,
          'viewer error',
        );
        const h = await hooks();
        expect(h.lastError?.code).toBe('BAD_REQUEST');
        expect(h.lastError?.message).toMatch(/latency=low or latency=smooth/);
        expect(h.latency).toBeNull();
        expect(await page.locator('#status').textContent()).toMatch(/unknown latency mode "fast"/);
        // The page never joined: no signaling connection, no stream.
        expect(await page.evaluate(() => (window as unknown as Win).__avatar.socketId())).toBeNull();
        expect(h.streams).toBe(0);
      });
    },
  );
