/**
 * Room with real wrtc peers: a performer client publishes a moving pattern and a tone, a viewer receives the
 * synthesized stream through the direct fan-out. The engine is the portrait engine, so the viewer must see the
 * portrait (not the pattern) at the portrait's size, and hear the tone.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../server/config.js';
import { createLogger } from '../../server/logger.js';
import { Room, type FrameTimings } from '../../server/rooms/room.js';
import { createFanoutFactory } from '../../server/media/fanout.js';
import { type FanoutFactory } from '../../server/media/fanoutTypes.js';
import type { RgbImage } from '../../server/types/image.js';
import type { RoomStats } from '../../server/types/protocol.js';
import { AppError } from '../../server/errors.js';
import { rgbToI420 } from '../../server/util/image.js';
import { fitRgb } from '../../server/avatar/engines/size.js';
import { loadPortrait, lumaMad, lumaStd, makeI420, drawPattern, waitFor } from './helpers.js';
import { PerformerClient, ViewerClient } from './rtcClients.js';
import { decodeMarker } from '../helpers/media.js';

const log = createLogger('test.room');
let config: Config;
let fanout: FanoutFactory;
let portrait: RgbImage;
const rooms: Room[] = [];
const clients: { close(): void }[] = [];

beforeAll(async () => {
  config = loadConfig(
    {},
    {
      logLevel: 'warn',
      avatar: { engine: 'portrait', outputSize: 256 },
      media: { iceAddressAllowList: ['127.0.0.1'] },
      fanout: { mode: 'direct' },
    },
  );
  fanout = await createFanoutFactory(config, log);
  portrait = await loadPortrait('real_woman_dark_hair.png');
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const r of rooms.splice(0)) {
    r.close('room-deleted');
    await r.whenClosed();
  }
});

afterAll(async () => {
  await fanout.close();
});

async function openRoom(cfg: Config = config): Promise<Room> {
  const used: string[] = [];
  const room = await Room.create({
    roomId: `r${rooms.length}`,
    config: cfg,
    fanout,
    loadPortrait: (id) =>
      id === 'p1' ? Promise.resolve(portrait) : Promise.reject(new AppError('NOT_FOUND', 'no such portrait')),
    onPortraitUsed: (id) => used.push(id),
  });
  rooms.push(room);
  return room;
}

describe('Room (real wrtc peers, direct fan-out)', () => {
  it('performer -> portrait engine -> viewer: the viewer sees the portrait at its size and hears the performer', async () => {
    const room = await openRoom();
    expect(room.fanoutKind).toBe('direct');
    const info = await room.setPortrait('p1');
    expect(info.portraitId).toBe('p1');
    expect(Math.max(info.width, info.height)).toBe(256);
    await expect(room.setPortrait('nope')).rejects.toMatchObject({ code: 'NOT_FOUND' });

    const timings: FrameTimings[] = [];
    const stats: RoomStats[] = [];
    const viewerCounts: number[] = [];
    room.on('frame', (t: FrameTimings) => timings.push(t));
    // Frames synthesized before each stats message: a message's fps counts exactly the frames since the one before.
    const framesAtStats: number[] = [];
    room.on('stats', (s: RoomStats) => {
      stats.push(s);
      framesAtStats.push(timings.length);
    });
    room.on('viewers', (n: number) => viewerCounts.push(n));

    const performer = new PerformerClient();
    clients.push(performer);
    await performer.accept(await room.publish(await performer.offer()));
    performer.start();

    const viewer = new ViewerClient();
    clients.push(viewer);
    await viewer.accept(await room.addViewer('v1', await viewer.offer()));
    expect(room.viewerCount).toBe(1);

    await waitFor(() => timings.length >= 60, 20_000, '60 synthesized frames');
    await waitFor(() => viewer.frames >= 30 && viewer.last?.width === info.width, 20_000, 'frames at the viewer');
    await waitFor(() => viewer.audioChunks >= 100 && viewer.audioPeak > 2000, 20_000, 'the tone at the viewer');
    await waitFor(() => stats.length >= 2, 5000, 'room stats');

    // The viewer's picture is the portrait (VP8 is lossy: compare with a tolerance), not the driving pattern.
    const last = viewer.last!;
    expect([last.width, last.height]).toEqual([info.width, info.height]);
    const expected = rgbToI420(fitRgb(portrait, info.width, info.height));
    const n = info.width * info.height;
    const madPortrait = lumaMad(last.data, expected.data, n);
    const driving = makeI420(info.width, info.height);
    drawPattern(driving, performer.framesSent);
    const madPattern = lumaMad(last.data, driving.data, n);
    expect(lumaStd(last.data, n)).toBeGreaterThan(20);
    expect(madPortrait).toBeLessThan(6);
    expect(madPattern).toBeGreaterThan(4 * madPortrait);

    const t = timings.at(-1)!;
    expect(t.endToEndMs).toBeGreaterThan(0);
    expect(t.endToEndMs).toBeGreaterThanOrEqual(t.queueMs);
    const s = stats.at(-1)!;
    for (let i = 1; i < stats.length; i++) expect(stats[i]!.fps).toBe(framesAtStats[i]! - framesAtStats[i - 1]!);
    expect(stats.slice(1).some((x) => x.fps > 0)).toBe(true);
    expect(s.viewers).toBe(1);
    expect(viewerCounts).toContain(1);
    // The voice is held back by whole 10 ms chunks to follow the video's latency (receive -> publish, a few to tens
    // of ms here, plus the configured offset; never below 0): the delay comes near that target (it moves one chunk
    // per 200 ms towards a target that itself moves with the machine's load, so "near" is within 30 ms or half the
    // target).
    const pub = room.parts.publisher;
    await waitFor(
      () => {
        const target = Math.max(0, pub.videoLatencyMs + config.media.audioDelayOffsetMs);
        return pub.audioDelayMs >= 0 && Math.abs(pub.audioDelayMs - target) <= Math.max(30, 0.5 * target);
      },
      20_000,
      'audio delay following the video latency',
    );
    expect(pub.audioDelayMs % 10).toBe(0);

    const lat = timings
      .slice(-60)
      .map((x) => x.endToEndMs)
      .sort((a, b) => a - b);
    log.warn('room media numbers', {
      fps: s.fps,
      latencyP50Ms: +lat[lat.length >> 1]!.toFixed(1),
      engineMs: +s.engineMs.toFixed(2),
      dropped: s.droppedFrames,
      audioDelayMs: room.parts.publisher.audioDelayMs,
      viewerFrames: viewer.frames,
    });

    room.removeViewer('v1');
    expect(room.viewerCount).toBe(0);
    expect(viewerCounts.at(-1)).toBe(0);
  });

  it("diagnostic passthrough: the performer's moving picture reaches the viewer (glass-to-glass latency)", async () => {
    const cfg = loadConfig(
      {},
      {
        logLevel: 'warn',
        avatar: { engine: 'passthrough', outputSize: 320 },
        media: { iceAddressAllowList: ['127.0.0.1'] },
        fanout: { mode: 'direct' },
      },
    );
    const room = await openRoom(cfg);
    const info = await room.setPortrait('p1');
    const performer = new PerformerClient(640, 480, true);
    clients.push(performer);
    await performer.accept(await room.publish(await performer.offer()));
    const viewer = new ViewerClient();
    clients.push(viewer);
    const latencies: number[] = [];
    const seen = new Set<number>();
    viewer.onFrame = (f) => {
      if (f.width !== info.width) return;
      const idx = decodeMarker((fx, fy) => f.data[Math.floor(fy * f.height) * f.width + Math.floor(fx * f.width)]!);
      if (idx === null || seen.has(idx)) return;
      seen.add(idx);
      const sent = performer.sentAt.get(idx);
      if (sent !== undefined) latencies.push(f.at - sent);
    };
    await viewer.accept(await room.addViewer('v1', await viewer.offer()));
    performer.start();
    await waitFor(() => latencies.length >= 60, 30_000, '60 marked frames at the viewer');
    // Distinct, increasing frame indices: the picture moves, frames are not repeats of one.
    expect(seen.size).toBeGreaterThanOrEqual(60);
    const sorted = [...latencies].sort((a, b) => a - b);
    const p50 = sorted[sorted.length >> 1]!;
    const p95 = sorted[Math.floor(sorted.length * 0.95)]!;
    expect(p50).toBeGreaterThan(0);
    log.warn('glass-to-glass (performer source -> viewer sink, passthrough 320 px)', {
      frames: latencies.length,
      p50Ms: +p50.toFixed(1),
      p95Ms: +p95.toFixed(1),
      dropped: room.parts.session.dropped,
    });
  });

  it("caps each viewer's video bitrate at config.media.maxVideoBitrate", async () => {
    const cap = 150_000;
    const cfg = loadConfig(
      {},
      {
        logLevel: 'warn',
        avatar: { engine: 'passthrough', outputSize: 480 },
        media: { iceAddressAllowList: ['127.0.0.1'], maxVideoBitrate: cap },
        fanout: { mode: 'direct' },
      },
    );
    const room = await openRoom(cfg);
    await room.setPortrait('p1');
    const performer = new PerformerClient();
    clients.push(performer);
    await performer.accept(await room.publish(await performer.offer()));
    performer.start(); // a busy moving pattern: uncapped, VP8 would use well over 1 Mbit/s for it
    const viewer = new ViewerClient();
    clients.push(viewer);
    await viewer.accept(await room.addViewer('v1', await viewer.offer()));
    const videoBytes = async (): Promise<number> => {
      let bytes = 0;
      (await viewer.pc.getStats()).forEach((r: { type?: string; kind?: string; bytesReceived?: number }) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') bytes = r.bytesReceived ?? 0;
      });
      return bytes;
    };
    await waitFor(() => viewer.frames >= 30, 20_000, 'viewer frames');
    const b0 = await videoBytes();
    const t0 = performance.now();
    await waitFor(() => performance.now() - t0 >= 3000, 5000, '3 s of video');
    const kbps = (((await videoBytes()) - b0) * 8) / (performance.now() - t0);
    expect(kbps).toBeGreaterThan(10);
    expect(kbps).toBeLessThan((cap / 1000) * 1.5);
  });

  it('refuses an offer without video (INVALID_SDP) and garbage SDP', async () => {
    const room = await openRoom();
    const pc = new PerformerClient();
    clients.push(pc);
    const audioOnly = (await pc.offer()).sdp.replace(/m=video[\s\S]*?(?=m=audio|$)/, '');
    await expect(room.publish({ type: 'offer', sdp: audioOnly })).rejects.toMatchObject({ code: 'INVALID_SDP' });
    await expect(room.publish({ type: 'offer', sdp: 'v=0\r\nm=video 9 nonsense\r\n' })).rejects.toMatchObject({
      code: 'INVALID_SDP',
    });
    await expect(room.addViewer('v', { type: 'offer', sdp: 'hello' })).rejects.toMatchObject({ code: 'INVALID_SDP' });
  });

  it('viewers see the portrait before anyone publishes; a second publish replaces the first', async () => {
    const room = await openRoom();
    const info = await room.setPortrait('p1');
    const viewer = new ViewerClient();
    clients.push(viewer);
    await viewer.accept(await room.addViewer('v1', await viewer.offer()));
    await waitFor(() => viewer.frames >= 3, 20_000, 'idle portrait frames');
    expect([viewer.last!.width, viewer.last!.height]).toEqual([info.width, info.height]);
    expect(lumaStd(viewer.last!.data, info.width * info.height)).toBeGreaterThan(20);

    const p1 = new PerformerClient();
    clients.push(p1);
    await p1.accept(await room.publish(await p1.offer()));
    const first = room.parts.ingest!;
    const p2 = new PerformerClient();
    clients.push(p2);
    await p2.accept(await room.publish(await p2.offer()));
    expect(first.closed).toBe(true);
    expect(room.parts.ingest).not.toBe(first);
    p2.start();
    await waitFor(() => (room.parts.ingest?.frames ?? 0) >= 10, 20_000, 'frames from the second performer');
  });

  it('close() cascades to the ingest peer, viewers, publisher and worker, once', async () => {
    const room = await openRoom();
    await room.setPortrait('p1');
    const performer = new PerformerClient();
    clients.push(performer);
    await performer.accept(await room.publish(await performer.offer()));
    performer.start();
    const viewer = new ViewerClient();
    clients.push(viewer);
    await viewer.accept(await room.addViewer('v1', await viewer.offer()));
    await waitFor(() => viewer.frames >= 5, 20_000, 'viewer frames');

    const { session, publisher, direct, ingest } = room.parts;
    const closes: string[] = [];
    room.on('close', (r: string) => closes.push(r));
    room.close('room-deleted');
    room.close('error');
    expect(closes).toEqual(['room-deleted']);
    expect(room.closed).toBe(true);
    expect(ingest!.closed).toBe(true);
    expect(direct.closed).toBe(true);
    expect(direct.viewerCount).toBe(0);
    expect(publisher.closed).toBe(true);
    await room.whenClosed();
    expect(session.closed).toBe(true);
    expect(session.workerThreadId).toBeNull();
    await expect(room.publish(await performer.offer())).rejects.toMatchObject({ code: 'INVALID_STATE' });
    // The viewer's peer sees the server side go away.
    await waitFor(
      () => ['disconnected', 'failed', 'closed'].includes(viewer.pc.connectionState),
      20_000,
      'viewer disconnected',
    );
  });
});
