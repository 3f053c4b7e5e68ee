/**
 * The media plane through the real server (createServer, REST, socket.io) with real wrtc peers: a performer
 * publishes, a viewer views and receives the portrait at its size; a viewer token used to publish gets FORBIDDEN
 * and the room keeps streaming; closing the server closes the room's peers and worker.
 */
import { readFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JoinResponse, Result, RoomStats, SdpResponse } from '../../server/types/protocol.js';
import type { Room } from '../../server/rooms/room.js';
import { loadImageRgb, rgbToI420 } from '../../server/util/image.js';
import { fitRgb } from '../../server/avatar/engines/size.js';
import { isPortFree } from '../helpers/net.js';
import { startTestServer, type TestServer, apiFetch } from '../helpers/server.js';
import { call, connectClient, request, type ClientSocket } from '../helpers/socket.js';
import { waitFor } from '../helpers/wait.js';
import { PerformerClient, ViewerClient } from '../media/rtcClients.js';
import { lumaMad, portraitPath } from '../media/helpers.js';

const PORTRAIT = 'real_japanese_woman.png';
let ts: TestServer;
const sockets: ClientSocket[] = [];
const peers: { close(): void }[] = [];

beforeEach(async () => {
  ts = await startTestServer({ avatar: { engine: 'portrait', outputSize: 320 }, fanout: { mode: 'direct' } });
});
afterEach(async () => {
  for (const p of peers.splice(0)) p.close();
  for (const s of sockets.splice(0)) s.disconnect();
  await ts.stop();
  expect(await isPortFree(ts.port)).toBe(true);
});

async function client(): Promise<ClientSocket> {
  const s = await connectClient(ts.url);
  sockets.push(s);
  return s;
}

async function createRoom(): Promise<{
  roomId: string;
  performerToken: string;
  viewerToken: string;
  portraitId: string;
}> {
  const form = new FormData();
  form.append('consent', 'true');
  form.append('file', new Blob([new Uint8Array(await readFile(portraitPath(PORTRAIT)))]), PORTRAIT);
  const up = await apiFetch(`${ts.url}/api/portraits`, { method: 'POST', body: form });
  expect(up.status).toBeLessThan(300);
  const { id: portraitId } = (await up.json()) as { id: string };
  const res = await apiFetch(`${ts.url}/api/rooms`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ portraitId }),
  });
  expect(res.status).toBe(201);
  return { ...((await res.json()) as { roomId: string; performerToken: string; viewerToken: string }), portraitId };
}

describe('wrtc room through the real server', () => {
  it('performer publishes, viewer sees the portrait; a viewer token cannot publish and the stream goes on', async () => {
    const r = await createRoom();
    const ps = await client();
    const joined = await call<JoinResponse>(ps, 'join', { token: r.performerToken });
    expect(joined.role).toBe('performer');
    expect(joined.fanout).toBe('direct');
    const { width, height } = joined.room;
    expect(Math.max(width, height)).toBe(320);

    const performer = new PerformerClient();
    peers.push(performer);
    const pub = await call<SdpResponse>(ps, 'publish', { sdp: await performer.offer() }, 30_000);
    await performer.accept(pub.sdp);
    performer.start();

    const vs = await client();
    expect((await call<JoinResponse>(vs, 'join', { token: r.viewerToken })).role).toBe('viewer');
    // What the room computes and what reaches the viewer's socket: the same messages, forwarded as they are.
    const roomStats: RoomStats[] = [];
    const socketStats: RoomStats[] = [];
    ts.server.rooms.get(r.roomId)!.on('stats', (st: RoomStats) => roomStats.push(st));
    vs.on('stats', (st) => socketStats.push(st));
    const viewer = new ViewerClient();
    peers.push(viewer);
    await viewer.accept((await call<SdpResponse>(vs, 'view', { sdp: await viewer.offer() }, 30_000)).sdp);
    await waitFor(
      () => viewer.frames >= 20 && viewer.last?.width === width,
      30_000,
      'viewer frames at the portrait size',
    );
    await waitFor(
      () => socketStats.some((st) => st.fps > 0 && st.viewers === 1),
      20_000,
      'stats with frames and the viewer',
    );
    for (const st of socketStats) expect(roomStats).toContainEqual(st);

    // Content: the portrait (lossy VP8, so a tolerance), decoded the same way the server decodes uploads.
    const rgb = await loadImageRgb(portraitPath(PORTRAIT));
    const expected = rgbToI420(fitRgb(rgb, width, height));
    expect(lumaMad(viewer.last!.data, expected.data, width * height)).toBeLessThan(8);

    // A viewer socket trying to publish: FORBIDDEN, and nothing changes for the room.
    const intruder = new PerformerClient();
    peers.push(intruder);
    const denied: Result<SdpResponse> = await request(vs, 'publish', { sdp: await intruder.offer() }, 30_000);
    expect(denied.ok).toBe(false);
    if (!denied.ok) expect(denied.error.code).toBe('FORBIDDEN');
    // Another socket joining with the viewer token cannot publish either.
    const vs2 = await client();
    await call(vs2, 'join', { token: r.viewerToken });
    const denied2: Result<SdpResponse> = await request(vs2, 'publish', { sdp: await intruder.offer() }, 30_000);
    expect(!denied2.ok && denied2.error.code).toBe('FORBIDDEN');
    const before = viewer.frames;
    await waitFor(() => viewer.frames >= before + 20, 20_000, 'the stream continuing after the refused publish');
    expect(viewer.last!.width).toBe(width);

    // Server shutdown closes the room: the ingest peer, viewers and worker.
    const room: Room | undefined = ts.server.rooms.get(r.roomId);
    expect(room).toBeDefined();
    const { session, ingest, direct } = room!.parts;
    await ts.stop();
    expect(room!.closed).toBe(true);
    expect(ingest!.closed).toBe(true);
    expect(direct.viewerCount).toBe(0);
    await room!.whenClosed();
    expect(session.workerThreadId).toBeNull();
  });
});
