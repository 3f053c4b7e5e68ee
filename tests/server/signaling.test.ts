/**
 * Signaling against a real server on port 0 with real socket.io clients: joining with performer and viewer tokens,
 * role checks, expired / tampered / foreign tokens, malformed messages, and room lifetime (grace timer, reconnect,
 * replacement, deletion). After every bad input a fresh client must still be able to join.
 * (Publishing and viewing with real WebRTC peers are covered by the media tests.)
 */
import { readFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { signToken } from '../../server/auth/tokens.js';
import type { AvatarSettings, JoinResponse, Result, RoomInfo } from '../../server/types/protocol.js';
import { defaultAvatarSettings } from '../../server/types/protocol.js';
import { isPortFree } from '../helpers/net.js';
import { portraitFile } from '../../scripts/testData.js';
import { startTestServer, TEST_TOKEN_SECRET, type TestServer, apiFetch } from '../helpers/server.js';
import { call, connectClient, request, type ClientSocket } from '../helpers/socket.js';
import { nextEvent, waitFor } from '../helpers/wait.js';

interface CreatedRoom {
  roomId: string;
  performerToken: string;
  viewerToken: string;
}

let ts: TestServer;
const sockets: ClientSocket[] = [];

async function client(): Promise<ClientSocket> {
  const s = await connectClient(ts.url);
  sockets.push(s);
  return s;
}

async function createRoom(): Promise<CreatedRoom> {
  const res = await apiFetch(`${ts.url}/api/rooms`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{}',
  });
  expect(res.status).toBe(201);
  return (await res.json()) as CreatedRoom;
}

function errorCode(r: Result<unknown>): string {
  return r.ok ? 'ok' : r.error.code;
}

/** A fresh client can still connect and join: the server was not hurt by what came before. */
async function stillServes(room: CreatedRoom): Promise<void> {
  const s = await client();
  const joined = await call<JoinResponse>(s, 'join', { token: room.viewerToken });
  expect(joined.role).toBe('viewer');
  s.disconnect();
}

beforeEach(async () => {
  // Direct fan-out: these cases check the direct path's answers (fanout 'direct', sfu:* UNSUPPORTED).
  ts = await startTestServer({ roomGraceMs: 400, avatar: { engine: 'portrait' }, fanout: { mode: 'direct' } });
});
afterEach(async () => {
  for (const s of sockets.splice(0)) s.disconnect();
  await ts.stop();
  expect(await isPortFree(ts.port)).toBe(true);
});

describe('join', () => {
  it('joins with performer and viewer tokens', async () => {
    const room = await createRoom();
    const perf = await client();
    const pj = await call<JoinResponse>(perf, 'join', { token: room.performerToken });
    expect(pj).toMatchObject({ role: 'performer', fanout: 'direct', room: { roomId: room.roomId }, iceServers: [] });
    expect(typeof pj.room.settings.expressionStrength).toBe('number');
    const view = await client();
    const vj = await call<JoinResponse>(view, 'join', { token: room.viewerToken });
    expect(vj).toMatchObject({ role: 'viewer', room: { roomId: room.roomId } });
    // Only performers get a viewer link, and its token joins this room as a viewer.
    expect(vj.viewerPath).toBeUndefined();
    const link = new URL(pj.viewerPath ?? '', ts.url);
    expect([link.pathname, link.searchParams.get('room')]).toEqual(['/view', room.roomId]);
    const view2 = await client();
    const v2 = await call<JoinResponse>(view2, 'join', { token: link.searchParams.get('token') });
    expect(v2).toMatchObject({ role: 'viewer', room: { roomId: room.roomId } });
    expect(errorCode(await request(view, 'join', { token: room.viewerToken }))).toBe('INVALID_STATE');
  });

  it('works over HTTP long-polling too (socket.io fallback transport)', async () => {
    const room = await createRoom();
    const { io: ioc } = await import('socket.io-client');
    const s: ClientSocket = ioc(ts.url, { transports: ['polling'], reconnection: false, forceNew: true });
    sockets.push(s);
    const joined = await call<JoinResponse>(s, 'join', { token: room.viewerToken });
    expect(joined.role).toBe('viewer');
    expect(s.io.engine.transport.name).toBe('polling');
  });

  it('closes a room whose performer never joins within roomIdleMs', async () => {
    await ts.stop();
    ts = await startTestServer({ roomIdleMs: 1000, avatar: { engine: 'portrait' } });
    const room = await createRoom();
    const v = await client();
    await call(v, 'join', { token: room.viewerToken });
    const closed = nextEvent<[{ reason: string }]>(v, 'closed', 10_000);
    expect((await closed)[0].reason).toBe('performer-left');
    expect(ts.server.rooms.size).toBe(0);
  });

  it('refuses everything before join with INVALID_STATE', async () => {
    const s = await client();
    expect(errorCode(await request(s, 'recalibrate', {}))).toBe('INVALID_STATE');
    expect(errorCode(await request(s, 'setSettings', { settings: { headMotion: false } }))).toBe('INVALID_STATE');
    expect(errorCode(await request(s, 'ice', { target: 'view', candidate: null }))).toBe('INVALID_STATE');
  });

  it('refuses expired, tampered, foreign-secret and unknown-room tokens', async () => {
    const room = await createRoom();
    const s = await client();
    const expired = signToken({ room: room.roomId, role: 'performer', exp: Date.now() - 1000 }, TEST_TOKEN_SECRET);
    expect(errorCode(await request(s, 'join', { token: expired }))).toBe('TOKEN_EXPIRED');
    const [body, sig] = room.viewerToken.split('.') as [string, string];
    const forgedBody = Buffer.from(
      JSON.stringify({ room: room.roomId, role: 'performer', exp: Date.now() + 60_000 }),
    ).toString('base64url');
    expect(errorCode(await request(s, 'join', { token: `${forgedBody}.${sig}` }))).toBe('TOKEN_INVALID');
    expect(errorCode(await request(s, 'join', { token: `${body}.${sig.slice(0, -4)}AAAA` }))).toBe('TOKEN_INVALID');
    const foreign = signToken(
      { room: room.roomId, role: 'performer', exp: Date.now() + 60_000 },
      'some-other-secret-123456',
    );
    expect(errorCode(await request(s, 'join', { token: foreign }))).toBe('TOKEN_INVALID');
    const noRoom = signToken({ room: 'nosuchroom00', role: 'viewer', exp: Date.now() + 60_000 }, TEST_TOKEN_SECRET);
    expect(errorCode(await request(s, 'join', { token: noRoom }))).toBe('ROOM_NOT_FOUND');
    // Still not joined after all that.
    expect(errorCode(await request(s, 'recalibrate', {}))).toBe('INVALID_STATE');
    await stillServes(room);
  });

  it('expires tokens after tokenTtlMs', async () => {
    await ts.stop();
    ts = await startTestServer({ tokenTtlMs: 1000, avatar: { engine: 'portrait' } });
    const room = (await createRoom()) as CreatedRoom & { expiresAt: string };
    const exp = Date.parse(room.expiresAt);
    expect(exp - Date.now()).toBeLessThanOrEqual(1000);
    const s = await client();
    await waitFor(() => Date.now() > exp, 5000, 'token expiry time', 20);
    expect(errorCode(await request(s, 'join', { token: room.viewerToken }))).toBe('TOKEN_EXPIRED');
    expect(errorCode(await request(s, 'join', { token: room.performerToken }))).toBe('TOKEN_EXPIRED');
  });
});

describe('roles', () => {
  it('never lets a viewer publish, change the portrait or settings, or recalibrate', async () => {
    const room = await createRoom();
    const v = await client();
    await call(v, 'join', { token: room.viewerToken });
    const offer = {
      type: 'offer',
      sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n',
    };
    expect(errorCode(await request(v, 'publish', { sdp: offer }))).toBe('FORBIDDEN');
    expect(errorCode(await request(v, 'unpublish', {}))).toBe('FORBIDDEN');
    expect(errorCode(await request(v, 'setPortrait', { portraitId: 'a'.repeat(32) }))).toBe('FORBIDDEN');
    expect(errorCode(await request(v, 'setSettings', { settings: { headMotion: false } }))).toBe('FORBIDDEN');
    expect(errorCode(await request(v, 'setSettings', { settings: { steps: 2 } }))).toBe('FORBIDDEN');
    expect(errorCode(await request(v, 'recalibrate', {}))).toBe('FORBIDDEN');
    expect(errorCode(await request(v, 'ice', { target: 'publish', candidate: null }))).toBe('FORBIDDEN');
    await stillServes(room);
  });

  it('lets the performer change settings and tells the room', async () => {
    const room = await createRoom();
    const p = await client();
    await call(p, 'join', { token: room.performerToken });
    const v = await client();
    await call(v, 'join', { token: room.viewerToken });
    const roomEvent = nextEvent(v, 'room');
    const settings = await call<Record<string, unknown>>(p, 'setSettings', {
      settings: { expressionStrength: 1.5, headMotion: false },
    });
    expect(settings).toMatchObject({ expressionStrength: 1.5, headMotion: false });
    const [info] = await roomEvent;
    expect(info).toMatchObject({ roomId: room.roomId });
    expect(await call(p, 'recalibrate', {})).toBeNull();
  });

  it('carries refiner steps through the room settings: set by the performer, echoed to everybody, validated', async () => {
    const room = await createRoom();
    const p = await client();
    const pj = await call<JoinResponse>(p, 'join', { token: room.performerToken });
    // No refiner here (the portrait engine has none, whatever packs exist): the studio hides the control.
    expect(pj.room.settings.steps).toBe(0);
    expect(pj.room.refiner).toEqual({ available: false, defaultSteps: 0, maxSteps: 0 });
    const v = await client();
    await call<JoinResponse>(v, 'join', { token: room.viewerToken });
    const roomEvent = nextEvent<[RoomInfo]>(v, 'room');
    const settings = await call<AvatarSettings>(p, 'setSettings', { settings: { steps: 2 } });
    expect(settings).toEqual({ ...defaultAvatarSettings, steps: 2 });
    const [info] = await roomEvent;
    expect(info.settings.steps).toBe(2);
    expect(info.refiner.available).toBe(false);
    // Other settings keep it; a late joiner gets it.
    expect((await call<AvatarSettings>(p, 'setSettings', { settings: { headMotion: false } })).steps).toBe(2);
    const late = await client();
    expect((await call<JoinResponse>(late, 'join', { token: room.viewerToken })).room.settings).toMatchObject({
      steps: 2,
      headMotion: false,
    });
    for (const steps of [-1, 9, 1.5, '2']) {
      const r = await request(p, 'setSettings', { settings: { steps } });
      expect(errorCode(r)).toBe('INVALID_MESSAGE');
      if (!r.ok) expect(r.error.message).toMatch(/steps must be an integer in 0\.\.8/);
    }
    expect(ts.server.rooms.get(room.roomId)?.info.settings.steps).toBe(2);
    await stillServes(room);
  });

  it('sets a stored portrait for the room and records the room in its consent log', async () => {
    const form = new FormData();
    form.append('consent', 'true');
    form.append(
      'file',
      new Blob([new Uint8Array(await readFile(portraitFile('real_asian_young_woman.jpg')))]),
      'w.jpg',
    );
    const up = (await (await apiFetch(`${ts.url}/api/portraits`, { method: 'POST', body: form })).json()) as {
      id: string;
    };
    const room = await createRoom();
    const p = await client();
    await call(p, 'join', { token: room.performerToken });
    const info = await call<{ portraitId: string }>(p, 'setPortrait', { portraitId: up.id }, 60_000);
    expect(info.portraitId).toBe(up.id);
    await waitFor(
      () => ts.server.portraits.get(up.id).usedInRooms.some((u) => u.roomId === room.roomId),
      5000,
      'consent log entry',
    );
    expect(errorCode(await request(p, 'setPortrait', { portraitId: 'f'.repeat(32) }))).toBe('NOT_FOUND');
  });
});

describe('malformed messages', () => {
  it('answers bad payloads with INVALID_MESSAGE / INVALID_SDP and survives missing acks', async () => {
    const room = await createRoom();
    const p = await client();
    for (const payload of [undefined, null, 42, 'token', [], { token: 7 }, { token: 'x', more: 1 }]) {
      expect(errorCode(await request(p, 'join', payload))).toBe('INVALID_MESSAGE');
    }
    await call(p, 'join', { token: room.performerToken });
    const emit = (p.emit as (ev: string, ...args: unknown[]) => void).bind(p);
    // No ack, no payload, extra arguments, unknown events: ignored or refused, never a crash.
    emit('publish');
    emit('publish', { sdp: 'garbage' });
    emit('setSettings', 'x', 'y', 'z');
    emit('no-such-event', { a: 1 });
    emit('join', (r: unknown) => r);
    for (const sdp of [
      undefined,
      'v=0',
      { type: 'offer', sdp: 'garbage' },
      { type: 'answer', sdp: 'v=0\r\n' },
      { type: 'offer', sdp: 'v=0\r\nm=nonsense\r\n' },
    ]) {
      const r = await request(p, 'publish', { sdp });
      expect(errorCode(r)).toBe('INVALID_SDP');
      if (!r.ok) expect(r.error.message.length).toBeLessThan(120);
    }
    expect(errorCode(await request(p, 'publish', 'not an object'))).toBe('INVALID_MESSAGE');
    expect(errorCode(await request(p, 'setSettings', { settings: { expressionStrength: 'max' } }))).toBe(
      'INVALID_MESSAGE',
    );
    expect(errorCode(await request(p, 'setSettings', { settings: { expressionStrength: 99 } }))).toBe(
      'INVALID_MESSAGE',
    );
    expect(errorCode(await request(p, 'ice', { target: 'publish', candidate: { candidate: 'rubbish' } }))).toBe(
      'INVALID_MESSAGE',
    );
    expect(errorCode(await request(p, 'setPortrait', { portraitId: '../../../etc/passwd' }))).toBe('INVALID_MESSAGE');
    expect(errorCode(await request(p, 'sfu:capabilities', {}))).toBe('UNSUPPORTED');
    // The same socket still works, and so does a fresh one.
    expect(await call(p, 'recalibrate', {})).toBeNull();
    await stillServes(room);
  });

  it('refuses a flood from one socket without affecting another', async () => {
    const room = await createRoom();
    const bad = await client();
    const flood = Promise.all(Array.from({ length: 500 }, () => request(bad, 'join', { token: 'nope' }, 30_000)));
    await stillServes(room);
    const codes = new Set((await flood).map(errorCode));
    // Every request is answered: refused for its token, or for the flood (MAX_PENDING in flight).
    expect([...codes].every((c) => c === 'TOO_MANY_REQUESTS' || c === 'TOKEN_INVALID')).toBe(true);
    expect(codes.has('TOKEN_INVALID')).toBe(true);
  });
});

describe('room lifetime', () => {
  it('closes the room when the performer stays away longer than the grace period', async () => {
    const room = await createRoom();
    const p = await client();
    await call(p, 'join', { token: room.performerToken });
    const v = await client();
    await call(v, 'join', { token: room.viewerToken });
    const closed = nextEvent<[{ reason: string }]>(v, 'closed', 5000);
    p.disconnect();
    const [msg] = await closed;
    expect(msg.reason).toBe('performer-left');
    expect(ts.server.rooms.size).toBe(0);
    // The viewer socket is still connected but no longer in a room.
    expect(errorCode(await request(v, 'ice', { target: 'view', candidate: null }))).toBe('INVALID_STATE');
  });

  it('keeps the room when the performer reconnects within the grace period', async () => {
    // A grace far longer than a loopback reconnect (tens of ms), so that the test checks that a join cancels the
    // timer, not how fast a reconnect is; room b's close below is the clock that says a's window has passed.
    await ts.stop();
    ts = await startTestServer({ roomGraceMs: 3000, avatar: { engine: 'portrait' } });
    const a = await createRoom();
    const b = await createRoom();
    const pa = await client();
    await call(pa, 'join', { token: a.performerToken });
    const paId = pa.id!;
    const pb = await client();
    await call(pb, 'join', { token: b.performerToken });
    const roomA = ts.server.rooms.get(a.roomId);
    pa.disconnect();
    // The server saw the performer go (the grace timer is armed) before the performer comes back.
    await waitFor(() => !ts.server.rooms.isPerformer(a.roomId, paId), 5000, 'performer of a gone');
    const pa2 = await client();
    await call(pa2, 'join', { token: a.performerToken });
    expect(ts.server.rooms.isPerformer(a.roomId, pa2.id!)).toBe(true);
    // Room b's grace timer starts after room a's would have: once b has closed, a's window has passed too.
    pb.disconnect();
    await waitFor(() => !ts.server.rooms.get(b.roomId), 10_000, 'room b closed');
    expect(ts.server.rooms.get(a.roomId)).toBe(roomA);
    expect(roomA?.closed).toBe(false);
  });

  it('replaces an older performer socket and tells it', async () => {
    const room = await createRoom();
    const p1 = await client();
    await call(p1, 'join', { token: room.performerToken });
    const replaced = nextEvent<[{ reason: string }]>(p1, 'closed');
    const p2 = await client();
    await call(p2, 'join', { token: room.performerToken });
    expect((await replaced)[0].reason).toBe('replaced');
    await waitFor(() => p1.disconnected, 5000, 'old performer disconnected');
    expect(await call(p2, 'recalibrate', {})).toBeNull();
    expect(ts.server.rooms.get(room.roomId)?.closed).toBe(false);
  });

  it('tells every socket when the room is deleted', async () => {
    const room = await createRoom();
    const p = await client();
    await call(p, 'join', { token: room.performerToken });
    const v = await client();
    await call(v, 'join', { token: room.viewerToken });
    const pc = nextEvent<[{ reason: string }]>(p, 'closed');
    const vc = nextEvent<[{ reason: string }]>(v, 'closed');
    const res = await apiFetch(`${ts.url}/api/rooms/${room.roomId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${room.performerToken}` },
    });
    expect(res.status).toBe(204);
    expect((await pc)[0].reason).toBe('room-deleted');
    expect((await vc)[0].reason).toBe('room-deleted');
    expect(errorCode(await request(v, 'join', { token: room.viewerToken }))).toBe('ROOM_NOT_FOUND');
  });

  it('refuses rooms beyond maxRooms with ROOM_BUSY, also for concurrent creations, and frees a slot when one ends', async () => {
    await ts.stop();
    ts = await startTestServer({ maxRooms: 2, avatar: { engine: 'portrait' } });
    const post = (): Promise<Response> =>
      apiFetch(`${ts.url}/api/rooms`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    // Three at once for two slots: rooms still being created count against the limit.
    const first = await Promise.all([post(), post(), post()]);
    expect(first.map((r) => r.status).sort()).toEqual([201, 201, 409]);
    const busy = first.find((r) => r.status === 409)!;
    expect(((await busy.json()) as { code: string }).code).toBe('ROOM_BUSY');
    const rooms = (await Promise.all(first.filter((r) => r.status === 201).map((r) => r.json()))) as CreatedRoom[];
    expect(ts.server.rooms.size).toBe(2);
    const again = await post();
    expect([again.status, ((await again.json()) as { code: string }).code]).toEqual([409, 'ROOM_BUSY']);
    // The open rooms are not hurt by the refusals.
    for (const r of rooms) await stillServes(r);
    // One room ends: its slot is free again, and only one.
    const del = await apiFetch(`${ts.url}/api/rooms/${rooms[0]!.roomId}`, { method: 'DELETE' });
    expect(del.status).toBe(204);
    expect((await post()).status).toBe(201);
    expect((await post()).status).toBe(409);
  });

  it('closes rooms and disconnects sockets when the server closes', async () => {
    const room = await createRoom();
    const p = await client();
    await call(p, 'join', { token: room.performerToken });
    const closed = nextEvent<[{ reason: string }]>(p, 'closed');
    await ts.server.close();
    expect((await closed)[0].reason).toBe('server-shutdown');
    await waitFor(() => p.disconnected, 5000, 'client disconnected');
    expect(ts.server.rooms.size).toBe(0);
  });
});
