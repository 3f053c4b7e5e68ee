/**
 * Signaling with real WebRTC peers (@roamhq/wrtc): a performer publishes and a viewer views through socket.io only,
 * the viewer receives synthesized frames, stats reach the room's sockets, and /healthz and /metrics follow.
 */
import { readFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JoinResponse, Result, RoomStats, SdpResponse } from '../../server/types/protocol.js';
import { isPortFree } from '../helpers/net.js';
import { portraitFile } from '../../scripts/testData.js';
import { startTestServer, type TestServer, apiFetch } from '../helpers/server.js';
import { call, connectClient, request, type ClientSocket } from '../helpers/socket.js';
import { nextEvent, waitFor } from '../helpers/wait.js';
import { PerformerClient, ViewerClient } from '../media/rtcClients.js';

let ts: TestServer;
const sockets: ClientSocket[] = [];
const peers: { close(): void }[] = [];

beforeEach(async () => {
  ts = await startTestServer({ avatar: { engine: 'portrait' } });
});
afterEach(async () => {
  // Peers first: wrtc must not outlive the test with live peers.
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

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${ts.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : Number.NaN;
}

describe('signaling with real peers', () => {
  it('publishes, views, forwards stats, and counts frames and viewers', async () => {
    const form = new FormData();
    form.append('consent', 'true');
    form.append('file', new Blob([new Uint8Array(await readFile(portraitFile('real_asian_young_woman.jpg')))]), 'w.jpg');
    const portrait = (await (await apiFetch(`${ts.url}/api/portraits`, { method: 'POST', body: form })).json()) as { id: string };
    const created = await apiFetch(`${ts.url}/api/rooms`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ portraitId: portrait.id }),
    });
    expect(created.status).toBe(201);
    const room = (await created.json()) as { roomId: string; performerToken: string; viewerToken: string };
    await waitFor(() => ts.server.portraits.get(portrait.id).usedInRooms.some((u) => u.roomId === room.roomId), 5000, 'consent log entry');

    const ps = await client();
    const joined = await call<JoinResponse>(ps, 'join', { token: room.performerToken });
    expect(joined.room.portraitId).toBe(portrait.id);
    // Refiner steps asked for where there is no refiner: accepted and echoed, run as 0; the stream is unaffected.
    expect(joined.room.refiner.available).toBe(false);
    expect((await call<{ steps: number }>(ps, 'setSettings', { settings: { steps: 4 } })).steps).toBe(4);
    const performer = new PerformerClient();
    peers.push(performer);
    const pub = await call<SdpResponse>(ps, 'publish', { sdp: await performer.offer() }, 30_000);
    expect(pub.sdp.type).toBe('answer');
    await performer.accept(pub.sdp);
    performer.start();
    expect(await call(ps, 'ice', { target: 'publish', candidate: null })).toBeNull();

    const vs = await client();
    await call(vs, 'join', { token: room.viewerToken });
    const viewer = new ViewerClient();
    peers.push(viewer);
    const stats = nextEvent<[RoomStats]>(vs, 'stats', 20_000);
    const view = await call<SdpResponse>(vs, 'view', { sdp: await viewer.offer() }, 30_000);
    await viewer.accept(view.sdp);

    await waitFor(() => viewer.frames >= 15, 30_000, 'viewer frames');
    const [s] = await stats;
    expect([typeof s.fps, typeof s.viewers, typeof s.latencyMs]).toEqual(['number', 'number', 'number']);
    expect(s.refinerSteps).toBe(0);
    expect(s).toHaveProperty('faceIssue');
    await waitFor(async () => ((await (await fetch(`${ts.url}/healthz`)).json()) as { viewers: number }).viewers === 1, 10_000, 'healthz viewers');
    expect(await metric('avatar_frames_total')).toBeGreaterThan(0);
    expect(await metric('avatar_end_to_end_seconds_count')).toBeGreaterThan(0);
    expect(await metric('avatar_viewers')).toBe(1);
    const text = await (await fetch(`${ts.url}/metrics`)).text();
    expect(text).toContain(`avatar_room_fps{room="${room.roomId}"}`);
    expect(text).toContain(`avatar_refiner_steps{room="${room.roomId}"} 0`);

    // The viewer leaves: its peer is dropped and the count follows.
    vs.disconnect();
    await waitFor(async () => (await metric('avatar_viewers')) === 0, 10_000, 'viewer removed');
  });

  it('answers an SDP the WebRTC stack rejects with an error, and keeps serving', async () => {
    const room = (await (await apiFetch(`${ts.url}/api/rooms`, { method: 'POST' })).json()) as { performerToken: string; viewerToken: string };
    const ps = await client();
    await call(ps, 'join', { token: room.performerToken });
    // Well-formed enough for the validator, nonsense for the WebRTC stack (no ICE/DTLS attributes).
    const sdp = 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n';
    const r: Result<SdpResponse> = await request(ps, 'publish', { sdp: { type: 'offer', sdp } }, 30_000);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(['INVALID_SDP', 'BAD_REQUEST', 'INVALID_STATE']).toContain(r.error.code);
    const vs = await client();
    expect((await call<JoinResponse>(vs, 'join', { token: room.viewerToken })).role).toBe('viewer');
  });
});
