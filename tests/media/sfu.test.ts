/**
 * The SFU against a real mediasoup worker (MEDIASOUP_WORKER_BIN, or ../shared/bin/mediasoup-worker found by
 * vitest.config.ts): a Room with two workers, wrtc viewers consuming through mediasoup-client.
 * - viewers past fanout.viewersPerRouter consume on a router piped to the other worker, and get frames there;
 * - a viewer leaving and rejoining;
 * - the room's worker killed (SIGKILL): the pool replaces it, the room rebuilds its router on a live worker, the
 *   viewers are told to consume again ('viewersReset') and do, the room itself stays open;
 * - closing the room closes every router, transport and pipe it created (the workers' dumps are empty again).
 */
import type { types as msc } from 'mediasoup-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../server/config.js';
import { createLogger } from '../../server/logger.js';
import { createFanoutFactory } from '../../server/media/fanout.js';
import type { MediasoupFanoutFactory, MediasoupRoom } from '../../server/media/mediasoupFanout.js';
import { WrtcSfuViewer } from '../helpers/sfuViewer.js';
import { Room } from '../../server/rooms/room.js';
import { loadPortrait, waitFor } from './helpers.js';

const workerBin = process.env.MEDIASOUP_WORKER_BIN;
if (!workerBin) console.log('mediasoup worker not available (MEDIASOUP_WORKER_BIN unset): SFU worker tests skipped');

/** A wrtc viewer of a Room, calling its sfu* methods directly (what signaling does for a socket). */
function roomViewer(room: Room, id: string): WrtcSfuViewer {
  return new WrtcSfuViewer({
    capabilities: () => Promise.resolve(room.sfuCapabilities() as msc.RtpCapabilities),
    createTransport: () => room.sfuCreateTransport(id),
    connect: (transportId, dtls) => room.sfuConnect(id, transportId, dtls),
    consume: (transportId, caps) => room.sfuConsume(id, transportId, caps),
    resume: (consumerId) => room.sfuResume(id, consumerId),
  });
}

describe.skipIf(!workerBin)('SFU with real mediasoup workers', () => {
  let factory: MediasoupFanoutFactory;
  let config: Config;
  const viewers: WrtcSfuViewer[] = [];
  const rooms: Room[] = [];

  beforeAll(async () => {
    config = loadConfig(
      {},
      {
        logLevel: 'warn',
        avatar: { engine: 'portrait', outputSize: 256 },
        media: { iceAddressAllowList: ['127.0.0.1'] },
        fanout: { mode: 'sfu', mediasoupWorkerBin: workerBin ?? null, workers: 2, viewersPerRouter: 2 },
      },
    );
    factory = (await createFanoutFactory(config, createLogger('test.sfu'))) as MediasoupFanoutFactory;
  });
  afterEach(async () => {
    for (const v of viewers.splice(0)) v.stopMedia();
    for (const r of rooms.splice(0)) {
      r.close('room-deleted');
      await r.whenClosed();
    }
  });
  afterAll(async () => {
    await factory?.close();
  });

  async function openRoom(id: string): Promise<{ room: Room; width: number }> {
    const portrait = await loadPortrait();
    const room = await Room.create({
      roomId: id,
      config,
      fanout: factory,
      loadPortrait: () => Promise.resolve(portrait),
    });
    rooms.push(room);
    const info = await room.setPortrait('p');
    return { room, width: info.width };
  }
  function viewer(room: Room, id: string): WrtcSfuViewer {
    const v = roomViewer(room, id);
    viewers.push(v);
    return v;
  }

  it('starts one worker per configured count and spreads viewers past viewersPerRouter to the other worker', async () => {
    expect(factory.kind).toBe('sfu');
    expect(factory.workers()).toHaveLength(2);
    const { room, width } = await openRoom('spread');
    const vs = ['a', 'b', 'c', 'd', 'e'].map((id) => viewer(room, id));
    for (const v of vs) await v.view();
    const routers = room.sfu!.routers();
    // 5 viewers, 2 per router: 3 routers, and the piped ones are on the worker the primary is not on first.
    expect(routers.map((r) => r.viewers)).toEqual([2, 2, 1]);
    expect(new Set(routers.map((r) => r.workerPid)).size).toBe(2);
    expect(routers[1]!.workerPid).not.toBe(routers[0]!.workerPid);
    // Every viewer, on every router, gets the room's frames (idle portrait frames at 4 fps at least).
    await waitFor(() => vs.every((v) => v.frames >= 3 && v.width === width), 30_000, 'frames on every router');
    expect(room.viewerCount).toBe(5);
    const load = factory.workers();
    expect(load.reduce((n, w) => n + w.viewers, 0)).toBe(5);
    expect(load.reduce((n, w) => n + w.routers, 0)).toBe(3);

    // Leaving empties a piped router, which is closed; the primary stays.
    room.removeViewer('e');
    vs[4]!.stopMedia();
    expect(room.sfu!.routers().map((r) => r.viewers)).toEqual([2, 2]);
  });

  it('stops sending into the SFU while nobody consumes, and starts again for the first viewer', async () => {
    const { room, width } = await openRoom('idle');
    const sfu = room.sfu as MediasoupRoom;
    // The video producer's received bytes, as the worker counts them.
    const bytes = async (): Promise<number> => {
      let n = 0;
      for (const st of await sfu.producerStats()) n += st.byteCount;
      return n;
    };
    expect(sfu.sourceActive).toBe(false);
    const b0 = await bytes();
    await new Promise((r) => setTimeout(r, 1500));
    // The idle portrait is re-sent at 4 fps by the publisher, but not encoded for the SFU.
    expect((await bytes()) - b0).toBeLessThan(2000);
    const v = viewer(room, 'first');
    await v.view();
    expect(sfu.sourceActive).toBe(true);
    await waitFor(() => v.frames >= 3 && v.width === width, 20_000, 'frames after the source resumed');
    expect((await bytes()) - b0).toBeGreaterThan(5000);
    room.removeViewer('first');
    v.stopMedia();
    expect(sfu.sourceActive).toBe(false);
  });

  it('spreads rooms over the workers', async () => {
    const { room: r1 } = await openRoom('r1');
    const { room: r2 } = await openRoom('r2');
    expect(r1.sfu!.routers()[0]!.workerPid).not.toBe(r2.sfu!.routers()[0]!.workerPid);
    expect(factory.workers().map((w) => w.routers)).toEqual([1, 1]);
  });

  it('a viewer who leaves and rejoins gets frames again', async () => {
    const { room, width } = await openRoom('rejoin');
    const v = viewer(room, 'v1');
    await v.view();
    await waitFor(() => v.frames >= 2, 20_000, 'first frames');
    room.removeViewer('v1');
    v.stopMedia();
    expect(room.viewerCount).toBe(0);
    await expect(room.sfuConnect('v1', v.transportId, {})).rejects.toMatchObject({ code: 'NOT_FOUND' });
    v.frames = 0;
    await v.view();
    await waitFor(() => v.frames >= 2 && v.width === width, 20_000, 'frames after rejoining');
    expect(room.viewerCount).toBe(1);
  });

  it('survives its worker being killed: the router is rebuilt elsewhere and the viewers consume again', async () => {
    const { room, width } = await openRoom('phoenix');
    const v1 = viewer(room, 'k1');
    const v2 = viewer(room, 'k2');
    await v1.view();
    await v2.view();
    await waitFor(() => v1.frames >= 2 && v2.frames >= 2, 20_000, 'frames before the kill');
    const deadPid = room.sfu!.routers()[0]!.workerPid;
    const resets: string[][] = [];
    room.on('viewersReset', (ids: string[]) => resets.push(ids));
    const deathsBefore = factory.pool.deaths;
    process.kill(deadPid, 'SIGKILL');

    await waitFor(() => resets.length > 0, 15_000, 'viewersReset after the kill');
    expect(resets.flat().sort()).toEqual(['k1', 'k2']);
    expect(room.closed).toBe(false);
    await waitFor(() => room.sfu!.routers().length === 1, 15_000, 'the rebuilt router');
    expect(room.sfu!.routers()[0]!.workerPid).not.toBe(deadPid);
    // The pool replaced the dead worker.
    await waitFor(() => factory.workers().length === 2, 15_000, 'a replacement worker');
    expect(factory.pool.deaths).toBe(deathsBefore + 1);
    expect(factory.workers().map((w) => w.pid)).not.toContain(deadPid);

    // What the client library does on 'viewReset': consume again.
    v1.frames = 0;
    await v1.view();
    await waitFor(() => v1.frames >= 2 && v1.width === width, 20_000, 'frames after the worker died');
    expect(room.viewerCount).toBe(1);
  });

  it('closing the room closes every router, transport and pipe it created', async () => {
    const { room } = await openRoom('tidy');
    const vs = ['x', 'y', 'z'].map((id) => viewer(room, id));
    for (const v of vs) await v.view();
    expect(room.sfu!.routers().length).toBe(2);
    const before = factory.workers().reduce((n, w) => n + w.routers, 0);
    expect(before).toBeGreaterThanOrEqual(2);
    const sfu = room.sfu!;
    rooms.splice(rooms.indexOf(room), 1);
    room.close('room-deleted');
    await room.whenClosed();
    expect(sfu.closed).toBe(true);
    expect(factory.workers().reduce((n, w) => n + w.routers, 0)).toBe(0);
    expect(factory.workers().reduce((n, w) => n + w.viewers, 0)).toBe(0);
    // The workers themselves agree: no router is left in either.
    for (const w of factory.pool.workersForDump()) {
      const dump = await w.dump();
      expect(dump.routerIds).toEqual([]);
    }
    for (const v of vs) v.stopMedia();
  });
});
