/**
 * WHIP ingest and WHEP egress over plain HTTP (fetch) with real wrtc peers: a WHIP performer drives the avatar (the
 * diagnostic passthrough engine keeps its frame-index marker, so the test sees that the viewer's picture follows the
 * WHIP performer frame by frame), a WHEP viewer receives it with the delayed audio; the error answers, the session
 * lifetime (DELETE, replaced by the studio, room closed, links revoked) and the room's performer presence.
 */
import wrtc from '@roamhq/wrtc';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { signToken } from '../../server/auth/tokens.js';
import type { DeepPartial, Config } from '../../server/config.js';
import { portraitFile } from '../../scripts/testData.js';
import { decodeMarker } from '../helpers/media.js';
import { isPortFree } from '../helpers/net.js';
import {
  apiAuth,
  createTestRoom,
  startTestServer,
  TEST_TOKEN_SECRET,
  type TestRoom,
  type TestServer,
} from '../helpers/server.js';
import { waitFor } from '../helpers/wait.js';
import { PerformerClient, ViewerClient } from '../media/rtcClients.js';

let ts: TestServer;
const peers: { close(): void }[] = [];

async function start(overrides: DeepPartial<Config> = {}): Promise<void> {
  ts = await startTestServer({ avatar: { engine: 'passthrough', outputSize: 320 }, ...overrides });
}

afterEach(async () => {
  // Peers first: wrtc must not outlive the test with live peers.
  for (const p of peers.splice(0)) p.close();
  await ts.stop();
  expect(await isPortFree(ts.port)).toBe(true);
});

const createRoom = (): Promise<TestRoom> => createTestRoom(ts.url, portraitFile('real_asian_young_woman.jpg'));

function post(
  kind: 'whip' | 'whep',
  roomId: string,
  token: string | null,
  sdp: string,
  contentType = 'application/sdp',
): Promise<Response> {
  const headers: Record<string, string> = { 'content-type': contentType };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  return fetch(`${ts.url}/${kind}/${encodeURIComponent(roomId)}`, { method: 'POST', headers, body: sdp });
}

async function errorCode(res: Response): Promise<string> {
  return ((await res.json()) as { code: string }).code;
}

/** WHIP-publishes a marked moving picture and a tone; returns the performer and the session URL. */
async function whipPublish(room: TestRoom): Promise<{ performer: PerformerClient; location: string }> {
  const performer = new PerformerClient(640, 480, true);
  peers.push(performer);
  const res = await post('whip', room.roomId, room.performerToken, (await performer.offer()).sdp);
  expect(res.status).toBe(201);
  expect(res.headers.get('content-type')).toBe('application/sdp');
  const location = res.headers.get('location') ?? '';
  expect(location).toMatch(new RegExp(`^${ts.url}/whip/${room.roomId}/[A-Za-z0-9_-]{22}$`));
  await performer.accept({ type: 'answer', sdp: await res.text() });
  performer.start();
  return { performer, location };
}

async function whepView(room: TestRoom, token = room.viewerToken): Promise<{ viewer: ViewerClient; location: string }> {
  const viewer = new ViewerClient();
  peers.push(viewer);
  const res = await post('whep', room.roomId, token, (await viewer.offer()).sdp);
  expect(res.status).toBe(201);
  expect(res.headers.get('access-control-allow-origin')).toBe('*');
  expect(res.headers.get('access-control-expose-headers')).toContain('location');
  const location = res.headers.get('location') ?? '';
  expect(location).toMatch(new RegExp(`^${ts.url}/whep/${room.roomId}/[A-Za-z0-9_-]{22}$`));
  await viewer.accept({ type: 'answer', sdp: await res.text() });
  return { viewer, location };
}

function del(location: string, token: string | null): Promise<Response> {
  return fetch(location, { method: 'DELETE', headers: token === null ? {} : { authorization: `Bearer ${token}` } });
}

describe('WHIP in, WHEP out', () => {
  beforeEach(() => start());

  it('the WHEP viewer sees the avatar follow the WHIP performer, with audio; DELETE ends each session', async () => {
    const room = await createRoom();
    const { performer, location: whip } = await whipPublish(room);
    const r = ts.server.rooms.require(room.roomId);
    expect(r.publishing).toBe(true);

    const { viewer, location: whep } = await whepView(room);
    // The marker that the WHIP performer paints into frame i comes out of the WHEP viewer as i: the picture follows
    // the performer through ingest, the avatar session and the fan-out, frame by frame and in order.
    const seen: number[] = [];
    viewer.onFrame = (f) => {
      const idx = decodeMarker((fx, fy) => f.data[Math.floor(fy * f.height) * f.width + Math.floor(fx * f.width)]!);
      if (idx !== null && idx !== seen.at(-1)) seen.push(idx);
    };
    await waitFor(() => seen.length >= 30, 30_000, '30 distinct marked frames at the WHEP viewer');
    expect([...viewer.sizes]).toContain(`${r.info.width}x${r.info.height}`);
    const increasing = seen.slice(1).filter((v, i) => v > seen[i]!).length;
    expect(increasing).toBeGreaterThanOrEqual(seen.length - 3);
    expect(Math.max(...seen)).toBeLessThan(performer.framesSent);
    // The performer's tone arrives (delayed to the video) as the stream's audio.
    await waitFor(() => viewer.audioPeak > 1000, 15_000, 'performer audio at the WHEP viewer');
    expect(r.viewerCount).toBe(1);

    // Trickle ICE is not supported: PATCH is 405 with Allow.
    const patch = await fetch(whep, {
      method: 'PATCH',
      headers: { authorization: `Bearer ${room.viewerToken}`, 'content-type': 'application/trickle-ice-sdpfrag' },
      body: 'a=end-of-candidates\r\n',
    });
    expect(patch.status).toBe(405);
    expect(patch.headers.get('allow')).toBe('DELETE, OPTIONS');
    expect(await errorCode(patch)).toBe('METHOD_NOT_ALLOWED');

    // A session is ended only with its room's token.
    expect((await del(whep, null)).status).toBe(401);
    expect(
      (await del(whep, signToken({ room: 'other', role: 'viewer', exp: Date.now() + 60_000 }, TEST_TOKEN_SECRET)))
        .status,
    ).toBe(403);
    expect((await del(whep, room.viewerToken)).status).toBe(200);
    await waitFor(() => r.viewerCount === 0, 5000, 'WHEP viewer removed');
    expect((await del(whep, room.viewerToken)).status).toBe(404);
    // A viewer token can neither publish nor end the performer's session.
    expect((await del(whip, room.viewerToken)).status).toBe(403);
    expect((await del(whip, room.performerToken)).status).toBe(200);
    expect(r.publishing).toBe(false);
    expect((await del(whip, room.performerToken)).status).toBe(404);
  });

  it('an AV1-only WHIP sender (OBS with an AV1 encoder offers AV1) drives the avatar; H.264-only is refused clearly', async () => {
    const room = await createRoom();
    const performer = new PerformerClient(320, 240, true);
    peers.push(performer);
    const av1 = wrtc.RTCRtpSender.getCapabilities('video')!.codecs.filter((c) =>
      /^video\/(AV1|rtx)$/i.test(c.mimeType),
    );
    const video = performer.pc.getTransceivers().find((t) => t.sender.track?.kind === 'video')!;
    video.setCodecPreferences(av1);
    const offer = (await performer.offer()).sdp;
    expect(offer).toMatch(/a=rtpmap:\d+ AV1\/90000/);
    expect(offer).not.toMatch(/a=rtpmap:\d+ VP8\//);
    const res = await post('whip', room.roomId, room.performerToken, offer);
    expect(res.status).toBe(201);
    await performer.accept({ type: 'answer', sdp: await res.text() });
    performer.start();
    const { viewer } = await whepView(room);
    const seen = new Set<number>();
    viewer.onFrame = (f) => {
      const idx = decodeMarker((fx, fy) => f.data[Math.floor(fy * f.height) * f.width + Math.floor(fx * f.width)]!);
      if (idx !== null) seen.add(idx);
    };
    await waitFor(() => seen.size >= 10, 30_000, 'AV1-published marked frames at the WHEP viewer');

    // The same offer with H.264 as its only video codec: refused before the media stack, saying what to send.
    const h264 = offer.replace(/a=rtpmap:(\d+) AV1\/90000/g, 'a=rtpmap:$1 H264/90000');
    const refused = await post('whip', room.roomId, room.performerToken, h264);
    expect(refused.status).toBe(400);
    const body = (await refused.json()) as { code: string; message: string };
    expect(body.code).toBe('INVALID_SDP');
    expect(body.message).toContain('offered H264');
    expect(body.message).toContain('VP8, VP9, AV1');
  });

  it('WHEP: an offer without VP8 gets 400 at once naming what the server sends; no answer advertises trickle ICE', async () => {
    const room = await createRoom();
    const { location } = await whipPublish(room);
    // A VP9-only viewer (before: 201 after ICE gathering, with the video section rejected, and nothing played).
    const viewer = new ViewerClient();
    peers.push(viewer);
    const vp9 = wrtc.RTCRtpSender.getCapabilities('video')!.codecs.filter((c) =>
      /^video\/(VP9|rtx)$/i.test(c.mimeType),
    );
    viewer.pc
      .getTransceivers()
      .find((t) => t.receiver.track.kind === 'video')!
      .setCodecPreferences(vp9);
    const offer = (await viewer.offer()).sdp;
    expect(offer).toMatch(/a=rtpmap:\d+ VP9\/90000/);
    expect(offer).not.toMatch(/a=rtpmap:\d+ VP8\//);
    const refused = await post('whep', room.roomId, room.viewerToken, offer);
    expect(refused.status).toBe(400);
    const body = (await refused.json()) as { code: string; message: string };
    expect(body.code).toBe('INVALID_SDP');
    expect(body.message).toContain('offered VP9');
    expect(body.message).toContain('sends VP8');
    expect(ts.server.rooms.viewerSlots.inRoom(room.roomId)).toBe(0);
    // PATCH is refused (405), so neither answer may advertise trickle (RFC 9725).
    const ok = new ViewerClient();
    peers.push(ok);
    const res = await post('whep', room.roomId, room.viewerToken, (await ok.offer()).sdp);
    expect(res.status).toBe(201);
    const answer = await res.text();
    expect(answer).not.toMatch(/a=ice-options:[^\r\n]*trickle/);
    await ok.accept({ type: 'answer', sdp: answer });
    await waitFor(() => ok.frames > 5, 30_000, 'frames at the WHEP viewer whose answer has no trickle option');
    expect(location).toContain('/whip/');
  });

  it('refuses bad requests with stable codes, CORS headers included', async () => {
    const room = await createRoom();
    const performer = new PerformerClient();
    peers.push(performer);
    const offer = (await performer.offer()).sdp;
    const expired = signToken({ room: room.roomId, role: 'performer', exp: Date.now() - 1 }, TEST_TOKEN_SECRET);
    const otherRoom = signToken(
      { room: 'someOtherRoom', role: 'performer', exp: Date.now() + 60_000 },
      TEST_TOKEN_SECRET,
    );

    const cases: [Promise<Response>, number, string][] = [
      [post('whip', room.roomId, null, offer), 401, 'TOKEN_INVALID'],
      [post('whip', room.roomId, 'not.a-token', offer), 401, 'TOKEN_INVALID'],
      [post('whip', room.roomId, expired, offer), 401, 'TOKEN_EXPIRED'],
      [post('whip', room.roomId, room.viewerToken, offer), 403, 'FORBIDDEN'],
      [post('whip', room.roomId, otherRoom, offer), 403, 'FORBIDDEN'],
      [post('whip', 'someOtherRoom', otherRoom, offer), 404, 'ROOM_NOT_FOUND'],
      [post('whip', room.roomId, room.performerToken, offer, 'application/json'), 415, 'UNSUPPORTED_MEDIA_TYPE'],
      [post('whip', room.roomId, room.performerToken, 'hello'), 400, 'INVALID_SDP'],
      // An offer without a video section.
      [
        post(
          'whip',
          room.roomId,
          room.performerToken,
          'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n',
        ),
        400,
        'INVALID_SDP',
      ],
      [post('whip', room.roomId, room.performerToken, 'v=0\r\n'.padEnd(70_000, 'x')), 413, 'PAYLOAD_TOO_LARGE'],
      [post('whep', room.roomId, null, offer), 401, 'TOKEN_INVALID'],
      [post('whep', room.roomId, room.viewerToken, 'v=0\r\nnonsense\r\n'), 400, 'INVALID_SDP'],
      [
        fetch(`${ts.url}/whep/${room.roomId}/nosuchsession`, {
          method: 'DELETE',
          headers: { authorization: `Bearer ${room.viewerToken}` },
        }),
        404,
        'NOT_FOUND',
      ],
      [
        fetch(`${ts.url}/whip/${room.roomId}/nosuchsession`, {
          method: 'PATCH',
          headers: { authorization: `Bearer ${room.performerToken}` },
        }),
        404,
        'NOT_FOUND',
      ],
    ];
    for (const [pending, status, code] of cases) {
      const res = await pending;
      expect({ status: res.status, code: await errorCode(res) }).toEqual({ status, code });
      // The 413 is sent by the HTTP layer from Content-Length before the route runs (no CORS: no browser sends that).
      if (status !== 413) expect(res.headers.get('access-control-allow-origin'), code).toBe('*');
    }
    expect(ts.server.rooms.require(room.roomId).publishing).toBe(false);

    // CORS preflight for a page on another origin.
    const pre = await fetch(`${ts.url}/whep/${room.roomId}`, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://meet.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, content-type',
      },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('accept-post')).toBe('application/sdp');
    expect(pre.headers.get('access-control-allow-headers')).toContain('authorization');
    expect(pre.headers.get('access-control-allow-methods')).toContain('DELETE');
  });

  it('409 while a performer publishes; the studio taking over ends the WHIP session; presence keeps the room', async () => {
    const room = await createRoom();
    const { location } = await whipPublish(room);
    const r = ts.server.rooms.require(room.roomId);
    const sessionId = location.split('/').at(-1)!;
    expect(ts.server.rooms.isPerformer(room.roomId, `whip:${sessionId}`)).toBe(true);

    const second = new PerformerClient();
    peers.push(second);
    const res = await post('whip', room.roomId, room.performerToken, (await second.offer()).sdp);
    expect(res.status).toBe(409);
    expect(await errorCode(res)).toBe('ALREADY_PUBLISHING');

    // The studio page publishes (signaling's publish replaces the ingest): the WHIP session is over.
    const studio = new PerformerClient();
    peers.push(studio);
    await studio.accept(await r.publish(await studio.offer()));
    await waitFor(async () => (await del(location, room.performerToken)).status === 404, 5000, 'WHIP session gone');
    expect(r.publishing).toBe(true);
    expect(ts.server.rooms.isPerformer(room.roomId, `whip:${sessionId}`)).toBe(false);
  });
});

describe('revoked links', () => {
  beforeEach(() => start());

  it("revoking the room's links ends the WHIP and WHEP sessions and refuses the old tokens", async () => {
    const room = await createRoom();
    const { location: whip } = await whipPublish(room);
    await whepView(room);
    const r = ts.server.rooms.require(room.roomId);
    expect([r.publishing, r.viewerCount]).toEqual([true, 1]);

    const revoked = await fetch(`${ts.url}/api/rooms/${room.roomId}/revoke`, { method: 'POST', headers: apiAuth() });
    expect(revoked.status).toBe(200);
    const fresh = (await revoked.json()) as TestRoom;
    await waitFor(() => !r.publishing && r.viewerCount === 0, 5000, 'sessions of the old links ended');
    expect((await del(whip, fresh.performerToken)).status).toBe(404);

    const p = new PerformerClient();
    peers.push(p);
    const offer = (await p.offer()).sdp;
    const old = await post('whip', room.roomId, room.performerToken, offer);
    expect({ status: old.status, code: await errorCode(old) }).toEqual({ status: 401, code: 'TOKEN_REVOKED' });
    const oldView = await post('whep', room.roomId, room.viewerToken, offer);
    expect({ status: oldView.status, code: await errorCode(oldView) }).toEqual({ status: 401, code: 'TOKEN_REVOKED' });
    const again = await post('whip', room.roomId, fresh.performerToken, offer);
    expect(again.status).toBe(201);
    await p.accept({ type: 'answer', sdp: await again.text() });
  });
});

describe('WHIP session lifetime', () => {
  beforeEach(() => start({ roomGraceMs: 200 }));

  it('ending the WHIP session starts the grace period; closing the room ends every session', async () => {
    const room = await createRoom();
    const { location } = await whipPublish(room);
    await del(location, room.performerToken);
    // The performer left and did not come back within roomGraceMs: the room ends ('performer-left').
    await waitFor(() => ts.server.rooms.get(room.roomId) === undefined, 5000, 'room closed after the grace period');

    const room2 = await createRoom();
    const { location: whip2 } = await whipPublish(room2);
    const { location: whep2 } = await whepView(room2, room2.performerToken);
    const ended = await fetch(`${ts.url}/api/rooms/${room2.roomId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${room2.performerToken}` },
    });
    expect(ended.status).toBe(204);
    expect((await del(whip2, room2.performerToken)).status).toBe(404);
    expect((await del(whep2, room2.performerToken)).status).toBe(404);
    // A WHIP offer for the ended room.
    const p = new PerformerClient();
    peers.push(p);
    const res = await post('whip', room2.roomId, room2.performerToken, (await p.offer()).sdp);
    expect(res.status).toBe(404);
    expect(await errorCode(res)).toBe('ROOM_NOT_FOUND');
  });
});
