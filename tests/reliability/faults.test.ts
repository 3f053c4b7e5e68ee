/**
 * The fault-injection parts of the reliability benchmarks, checked on a small room (the diagnostic passthrough
 * engine, 256 px): a real server in its own process (benchmarks/lib/reliabilityServer.ts), a wrtc performer sending
 * a driving clip, viewer A whose media goes through the cuttable UDP relay and whose signaling goes through the TCP
 * proxy, viewer B direct.
 * - a 3 s network cut: nothing reaches A while it lasts (the relay drops everything), B keeps getting frames, A gets
 *   frames again after the restore, nobody is dropped;
 * - the avatar worker crashed from inside (an uncaught exception injected through the inspector): the session
 *   restarts it and synthesized frames come back, the viewers stay.
 * The benchmarks (npm run bench -- faults) measure the same with the default engine and a Chromium performer.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ClipPerformer,
  CountingViewer,
  NetCut,
  ServerProc,
  TickLog,
  benchOverrides,
  connectPerformer,
  connectViewer,
  countIn,
  createRoom,
  loadClipFrames,
  now,
  sleep,
  uploadPortrait,
  type Connected,
  type RoomLinks,
} from '../../benchmarks/lib/reliability.js';
import { drivingClip, portraitFile } from '../helpers/media.js';
import { waitFor } from '../helpers/wait.js';

let server: ServerProc;
let ticks: TickLog;
let netcut: NetCut;
let room: RoomLinks;
let performer: Connected<ClipPerformer> | null = null;
const viewers: Connected<CountingViewer>[] = [];
/** The room's fewest viewers since both joined. */
let minViewers = Infinity;
let tracking = false;

beforeAll(async () => {
  server = await ServerProc.start({
    overrides: benchOverrides('passthrough', { avatar: { engine: 'passthrough', outputSize: 256 } }),
    inspector: true,
  });
  ticks = new TickLog(server);
  server.onTick((_at, rooms) => {
    if (tracking) for (const r of rooms) minViewers = Math.min(minViewers, r.viewers);
  });
  netcut = await NetCut.create(server.url);
  room = await createRoom(server, await uploadPortrait(server, portraitFile('real_woman_dark_hair.png')));
  const frames = await loadClipFrames(drivingClip('woman_speech_head_motion.mp4'), 320, 240, 1);
  performer = await connectPerformer(server.url, room.performerToken, new ClipPerformer(frames, 320, 240, 30));
  viewers.push(await connectViewer(netcut.url, room.viewerToken, new CountingViewer(true), netcut));
  viewers.push(await connectViewer(server.url, room.viewerToken, new CountingViewer(true)));
  await waitFor(() => viewers.every((v) => v.peer.frames > 30), 60_000, 'frames at both viewers');
  tracking = true;
});

afterAll(async () => {
  ticks?.close();
  performer?.close();
  for (const v of viewers) v.close();
  netcut?.close();
  const code = await server?.close();
  expect(code).toBe(0);
});

describe('fault injection', () => {
  it('a viewer network cut stops only that viewer, which recovers after the restore without being dropped', async () => {
    const [a, b] = viewers as [Connected<CountingViewer>, Connected<CountingViewer>];
    const relayedBefore = netcut.relayedPackets;
    expect(relayedBefore).toBeGreaterThan(0);
    const cutAt = now();
    netcut.cut();
    await sleep(3000);
    const restoredAt = now();
    netcut.restore();
    // Frames already inside the viewer's jitter buffer may come out just after the cut: look from 500 ms on.
    expect(countIn(a.peer.times, cutAt + 500, restoredAt)).toBe(0);
    // B is not touched by A's cut: its frames keep coming through the cut, also in its second half (how many per
    // second is the faults benchmark's matter).
    expect(countIn(b.peer.times, cutAt + 500, restoredAt)).toBeGreaterThan(0);
    expect(countIn(b.peer.times, (cutAt + restoredAt) / 2, restoredAt)).toBeGreaterThan(0);
    expect(netcut.droppedPackets).toBeGreaterThan(0);
    await waitFor(() => countIn(a.peer.times, restoredAt, now()) > 30, 20_000, 'frames at viewer A after the restore');
    expect(a.disconnects + b.disconnects).toBe(0);
    expect(a.closedReasons).toEqual([]);
    expect(minViewers).toBe(2);
  });

  it('a crashed avatar worker is restarted and frames come back; viewers stay', async () => {
    const killed = await server.request<{ threadId: number; at: number }>({ cmd: 'killWorker', roomId: room.roomId });
    await waitFor(() => (ticks.last.get(room.roomId)?.restarts ?? 0) >= 1, 30_000, 'worker restarted');
    await waitFor(
      () => countIn(ticks.times(room.roomId), killed.at + 100, now()) > 30,
      30_000,
      'synthesized frames after the restart',
    );
    const [a, b] = viewers as [Connected<CountingViewer>, Connected<CountingViewer>];
    await waitFor(
      () => countIn(a.peer.times, killed.at, now()) > 30 && countIn(b.peer.times, killed.at, now()) > 30,
      20_000,
      'viewer frames after the restart',
    );
    expect(ticks.last.get(room.roomId)?.failed).toBe(false);
    expect(minViewers).toBe(2);
    expect(a.disconnects + b.disconnects).toBe(0);
    expect(server.faults).toEqual([]);
  });
});
