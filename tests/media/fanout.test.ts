/**
 * Fan-out selection, and the mediasoup path.
 * - Always: 'direct' never touches mediasoup; 'auto' falls back to direct with one log line when no worker starts;
 *   'sfu' fails clearly.
 * - Only with MEDIASOUP_WORKER_BIN: mediasoup-client's handler drives a wrtc peer into a real worker's
 *   WebRtcTransport (its real ICE/DTLS parameters); the router accepts the VP8 and Opus producers and the video's RTP
 *   arrives; a Room with SFU fan-out and a viewer consuming through mediasoup-client.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../server/config.js';
import { createLogger, type Logger } from '../../server/logger.js';
import { createFanoutFactory } from '../../server/media/fanout.js';
import { type FanoutFactory } from '../../server/media/fanoutTypes.js';
import { loadClientDevice, routerMediaCodecs } from '../../server/media/mediasoupFanout.js';
import { Publisher } from '../../server/media/publisher.js';
import { Room } from '../../server/rooms/room.js';
import { loadPortrait, waitFor } from './helpers.js';
import wrtc from '@roamhq/wrtc';
import type { types as msc } from 'mediasoup-client';
import * as mediasoup from 'mediasoup';
import type { types as ms } from 'mediasoup';
import { createI420 } from '../../server/util/image.js';

const workerBin = process.env.MEDIASOUP_WORKER_BIN;
if (!workerBin)
  console.log('mediasoup worker not available (MEDIASOUP_WORKER_BIN unset): SFU tests with a worker skipped');

/** A logger that records its lines (to count the start-up line). */
function recordingLog(lines: string[]): Logger {
  const l: Logger = {
    debug: () => undefined,
    info: (m, f) => lines.push(`${m} ${JSON.stringify(f ?? {})}`),
    warn: (m, f) => lines.push(`${m} ${JSON.stringify(f ?? {})}`),
    error: (m, f) => lines.push(`${m} ${JSON.stringify(f ?? {})}`),
    child: () => l,
  };
  return l;
}

const closers: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

describe('createFanoutFactory', () => {
  it("'direct' never tries mediasoup and logs one line", async () => {
    const lines: string[] = [];
    const f = await createFanoutFactory(loadConfig({}, { fanout: { mode: 'direct' } }), recordingLog(lines));
    closers.push(() => f.close());
    expect(f.kind).toBe('direct');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/direct/);
    await expect(f.createSfuRoom({} as never)).rejects.toMatchObject({ code: 'UNSUPPORTED' });
  });

  it("'auto' falls back to direct with ONE line saying why when the worker cannot start", async () => {
    const lines: string[] = [];
    const t0 = Date.now();
    const config = loadConfig({}, { fanout: { mode: 'auto', mediasoupWorkerBin: '/nonexistent/mediasoup-worker' } });
    const f = await createFanoutFactory(config, recordingLog(lines));
    closers.push(() => f.close());
    expect(f.kind).toBe('direct');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/fallback.*not executable.*nonexistent/);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it.skipIf(!!workerBin)(
    "'auto' without a worker binary: mediasoup's spawn fails (ENOENT) and direct is used",
    async () => {
      const lines: string[] = [];
      const f = await createFanoutFactory(loadConfig({}, { fanout: { mode: 'auto' } }), recordingLog(lines));
      closers.push(() => f.close());
      expect(f.kind).toBe('direct');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/ENOENT/);
    },
  );

  it("'sfu' fails start-up clearly without a worker", async () => {
    const config = loadConfig({}, { fanout: { mode: 'sfu', mediasoupWorkerBin: '/nonexistent/mediasoup-worker' } });
    const err: unknown = await createFanoutFactory(config, recordingLog([])).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'CONFIG_INVALID' });
    expect((err as Error).message).toMatch(/no mediasoup worker could be started/);
  });
});

describe.skipIf(!workerBin)('mediasoup-client driving a wrtc peer into a real mediasoup worker', () => {
  it('produces VP8 and Opus that a real router accepts, and the producer receives the video', async () => {
    const worker = await mediasoup.createWorker({ logLevel: 'warn' });
    closers.push(() => worker.close());
    const router = await worker.createRouter({ mediaCodecs: structuredClone(routerMediaCodecs) });
    const device = await loadClientDevice(router.rtpCapabilities);
    expect(device.canProduce('video')).toBe(true);
    expect(device.canProduce('audio')).toBe(true);

    const publisher = new Publisher({ log: createLogger('test.pub'), audioDelayOffsetMs: 0 });
    closers.push(() => publisher.close());
    // The send transport's ICE/DTLS parameters are the ones a real WebRtcTransport announces on loopback.
    const server = await router.createWebRtcTransport({ listenInfos: [{ protocol: 'udp', ip: '127.0.0.1' }] });
    const transport = device.createSendTransport({
      id: server.id,
      iceParameters: server.iceParameters,
      iceCandidates: server.iceCandidates,
      dtlsParameters: server.dtlsParameters,
    });
    closers.push(() => transport.close());
    const produced: { kind: string; rtpParameters: msc.RtpParameters }[] = [];
    const producers: ms.Producer[] = [];
    transport.on('connect', ({ dtlsParameters }, callback, errback) => {
      server.connect({ dtlsParameters: dtlsParameters }).then(callback, errback);
    });
    transport.on('produce', ({ kind, rtpParameters }, callback, errback) => {
      produced.push({ kind, rtpParameters });
      // The router's own validation: it refuses parameters it cannot map to its codecs.
      server.produce({ kind, rtpParameters: rtpParameters as ms.RtpParameters }).then((p) => {
        producers.push(p);
        callback({ id: p.id });
      }, errback);
    });
    const video = await transport.produce({
      track: publisher.videoTrack,
      encodings: [{ maxBitrate: 1_000_000 }],
      stopTracks: false,
    });
    const audio = await transport.produce({ track: publisher.audioTrack, stopTracks: false });
    closers.push(() => {
      video.close();
      audio.close();
    });
    expect(produced.map((p) => p.kind)).toEqual(['video', 'audio']);
    const v = produced[0]!.rtpParameters;
    expect(v.codecs[0]!.mimeType.toLowerCase()).toBe('video/vp8');
    expect(v.encodings?.[0]?.ssrc).toBeGreaterThan(0);
    expect(producers.map((p) => [p.kind, p.id])).toEqual([
      ['video', video.id],
      ['audio', audio.id],
    ]);
    // Frames published through the wrtc peer reach the worker: ICE and DTLS completed, RTP arrives at the producer.
    const frame = createI420(256, 256);
    frame.data.fill(90);
    const feed = setInterval(() => publisher.publishVideo(frame), 33);
    try {
      await waitFor(
        async () => (await producers[0]!.getStats()).some((st) => st.byteCount > 0),
        20_000,
        'video RTP at the mediasoup producer',
      );
    } finally {
      clearInterval(feed);
    }
    expect(server.dtlsState).toBe('connected');
    expect(wrtc.RTCPeerConnection).toBe((globalThis as Record<string, unknown>).RTCPeerConnection);
  });
});

describe.skipIf(!workerBin)('Room with SFU fan-out (needs MEDIASOUP_WORKER_BIN)', () => {
  let factory: FanoutFactory | null = null;
  afterAll(async () => {
    await factory?.close();
  });

  it('a viewer consumes the synthesized video through mediasoup', async () => {
    const config = loadConfig(
      {},
      {
        logLevel: 'warn',
        avatar: { engine: 'portrait', outputSize: 256 },
        media: { iceAddressAllowList: ['127.0.0.1'] },
        fanout: { mode: 'sfu', mediasoupWorkerBin: workerBin ?? null },
      },
    );
    factory = await createFanoutFactory(config, createLogger('test.sfu'));
    expect(factory.kind).toBe('sfu');
    const portrait = await loadPortrait();
    const room = await Room.create({
      roomId: 'sfu1',
      config,
      fanout: factory,
      loadPortrait: () => Promise.resolve(portrait),
    });
    closers.push(async () => {
      room.close('room-deleted');
      await room.whenClosed();
    });
    expect(room.fanoutKind).toBe('sfu');
    const info = await room.setPortrait('p');

    const device = await loadClientDevice(room.sfuCapabilities() as msc.RtpCapabilities);
    const t = await room.sfuCreateTransport('v1');
    const recv = device.createRecvTransport(t as unknown as msc.TransportOptions);
    closers.push(() => recv.close());
    recv.on('connect', ({ dtlsParameters }, callback, errback) => {
      room.sfuConnect('v1', t.id, dtlsParameters).then(callback, errback);
    });
    const infos = await room.sfuConsume('v1', t.id, device.recvRtpCapabilities);
    expect(infos.map((i) => i.kind).sort()).toEqual(['audio', 'video']);
    const videoInfo = infos.find((i) => i.kind === 'video')!;
    const consumer = await recv.consume({
      id: videoInfo.id,
      producerId: videoInfo.producerId,
      kind: 'video',
      rtpParameters: videoInfo.rtpParameters as msc.RtpParameters,
    });
    await room.sfuResume('v1', consumer.id);
    const sink = new wrtc.nonstandard.RTCVideoSink(consumer.track);
    closers.push(() => sink.stop());
    let frames = 0;
    let lastW = 0;
    sink.onframe = ({ frame }: { frame: { width: number } }) => {
      frames++;
      lastW = frame.width;
    };
    await waitFor(() => frames >= 3 && lastW === info.width, 20_000, 'idle portrait frames through the SFU');
    expect(room.viewerCount).toBe(1);
  });
});
