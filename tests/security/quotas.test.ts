/**
 * Quotas, rate limits and sessions that end with their links (issue 20, item 3), each attack against a real server on
 * port 0 with real HTTP requests, real socket.io clients and real wrtc peers:
 * - one API key takes every room slot: it gets 403 QUOTA_EXCEEDED at quotas.roomsPerKey, and another key still gets
 *   a room; portraits and bytes stored per key alike;
 * - one viewer link opens unlimited viewers: 409 VIEWER_LIMIT beyond quotas.viewersPerLink / viewersPerRoom, for WHEP
 *   sessions and viewer sockets together; a slot comes back when a viewer leaves;
 * - WHIP/WHEP floods: 429 TOO_MANY_REQUESTS with Retry-After (and CORS) beyond whip.perAddressPerMinute;
 * - socket.io connection floods: the handshake is answered 429 beyond signaling.connectionsPerAddressPerMinute;
 * - sockets that never join: JOIN_TIMEOUT and dropped at signaling.joinTimeoutMs, while a joined one stays;
 * - sessions outliving their link: joined performer and viewer sockets, a WHEP viewer and a WHIP performer end when
 *   their token expires (TOKEN_EXPIRED, 'closed' link-expired) and when the room's links are revoked (TOKEN_REVOKED).
 * The pure parts (ViewerSlots, atTime, the config's validation, the quotas' environment variables) are tested directly.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { io as ioc } from 'socket.io-client';
import { portraitFile } from '../../scripts/testData.js';
import { signToken } from '../../server/auth/tokens.js';
import { defaultConfig, LIMIT_ENV, loadConfig, type Config, type DeepPartial } from '../../server/config.js';
import { ViewerSlots } from '../../server/rooms/viewerSlots.js';
import { atTime } from '../../server/util/deadline.js';
import type { CloseReason, PublicError } from '../../server/types/protocol.js';
import { PerformerClient, ViewerClient } from '../media/rtcClients.js';
import {
  apiAuth,
  createTestRoom,
  OTHER_API_KEY,
  repoRoot,
  startTestServer,
  TEST_TOKEN_SECRET,
  type TestRoom,
  type TestServer,
} from '../helpers/server.js';
import { call, connectClient, request, type ClientSocket } from '../helpers/socket.js';
import { waitFor } from '../helpers/wait.js';

let ts: TestServer | null = null;
const sockets: ClientSocket[] = [];
const peers: { close(): void }[] = [];

afterEach(async () => {
  // Peers first: wrtc must not outlive the test with live peers.
  for (const p of peers.splice(0)) p.close();
  for (const s of sockets.splice(0)) s.disconnect();
  await ts?.stop();
  ts = null;
});

async function start(overrides: DeepPartial<Config> = {}): Promise<TestServer> {
  ts = await startTestServer({ avatar: { engine: 'passthrough', outputSize: 256 }, ...overrides });
  return ts;
}

const codeOf = async (r: Response): Promise<[number, string]> => [r.status, ((await r.json()) as PublicError).code];

function createRoom(s: TestServer, key?: string): Promise<Response> {
  return fetch(`${s.url}/api/rooms`, {
    method: 'POST',
    headers: { ...apiAuth(key), 'content-type': 'application/json' },
    body: '{}',
  });
}

async function upload(s: TestServer, key?: string): Promise<Response> {
  const form = new FormData();
  form.append('consent', 'true');
  form.append('file', new Blob([new Uint8Array(await readFile(portraitFile('real_woman_dark_hair.png')))]), 'p.png');
  return fetch(`${s.url}/api/portraits`, { method: 'POST', body: form, headers: apiAuth(key) });
}

function sdpPost(s: TestServer, kind: 'whip' | 'whep', roomId: string, token: string | null, sdp: string) {
  const headers: Record<string, string> = { 'content-type': 'application/sdp' };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  return fetch(`${s.url}/${kind}/${encodeURIComponent(roomId)}`, { method: 'POST', headers, body: sdp });
}

/** A WHEP viewer (real wrtc peer) with `token`; resolves with the reply (and its session URL when 201). */
async function whep(s: TestServer, roomId: string, token: string): Promise<{ res: Response; location: string }> {
  const viewer = new ViewerClient();
  peers.push(viewer);
  const res = await sdpPost(s, 'whep', roomId, token, (await viewer.offer()).sdp);
  const location = res.headers.get('location') ?? '';
  if (res.status === 201) await viewer.accept({ type: 'answer', sdp: await res.text() });
  return { res, location };
}

async function whip(s: TestServer, roomId: string, token: string): Promise<string> {
  const performer = new PerformerClient(320, 240);
  peers.push(performer);
  const res = await sdpPost(s, 'whip', roomId, token, (await performer.offer()).sdp);
  expect(res.status).toBe(201);
  await performer.accept({ type: 'answer', sdp: await res.text() });
  performer.start();
  return res.headers.get('location') ?? '';
}

const del = (location: string, token: string): Promise<Response> =>
  fetch(location, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });

/** The stable code `fn` throws with (null when it does not throw). */
function thrownCode(fn: () => unknown): string | null {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code ?? 'no code';
  }
  return null;
}

/** A connected socket that records the failures, 'closed' reasons and the disconnect reason the server sends. */
interface Watched {
  socket: ClientSocket;
  failures: string[];
  closed: CloseReason[];
  disconnect: string | null;
}
async function watchedSocket(s: TestServer): Promise<Watched> {
  const socket = await connectClient(s.url);
  sockets.push(socket);
  const w: Watched = { socket, failures: [], closed: [], disconnect: null };
  socket.on('failure', (e) => w.failures.push(e.code));
  socket.on('closed', (m) => w.closed.push(m.reason));
  socket.on('disconnect', (reason) => (w.disconnect = reason));
  return w;
}
async function joined(s: TestServer, token: string): Promise<Watched> {
  const w = await watchedSocket(s);
  await call(w.socket, 'join', { token });
  return w;
}

describe('quotas per key', () => {
  it('one key cannot take every room slot: QUOTA_EXCEEDED at roomsPerKey, another key still gets a room', async () => {
    const s = await start({ maxRooms: 3, quotas: { roomsPerKey: 2 } });
    const mine: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await createRoom(s);
      expect(r.status).toBe(201);
      mine.push(((await r.json()) as { roomId: string }).roomId);
    }
    // Before: the third room was granted, and the other key then got 409 ROOM_BUSY.
    expect(await codeOf(await createRoom(s))).toEqual([403, 'QUOTA_EXCEEDED']);
    expect((await createRoom(s, OTHER_API_KEY)).status).toBe(201);
    // Ending one of its rooms gives the key its slot back.
    expect((await fetch(`${s.url}/api/rooms/${mine[0]}`, { method: 'DELETE', headers: apiAuth() })).status).toBe(204);
    expect((await createRoom(s)).status).toBe(201);
    // maxRooms still holds over all keys.
    expect(await codeOf(await createRoom(s, OTHER_API_KEY))).toEqual([409, 'ROOM_BUSY']);
  });

  it('concurrent creations and uploads of one key cannot overshoot its quotas', async () => {
    const s = await start({ quotas: { roomsPerKey: 2, portraitsPerKey: 2 } });
    const rooms = await Promise.all([0, 1, 2, 3].map(() => createRoom(s)));
    expect(rooms.map((r) => r.status).sort()).toEqual([201, 201, 403, 403]);
    const uploads = await Promise.all([0, 1, 2, 3].map(() => upload(s)));
    expect(uploads.map((r) => r.status).sort()).toEqual([201, 201, 403, 403]);
    expect([s.server.rooms.roomsOf('test').length, s.server.portraits.usage('test').portraits]).toEqual([2, 2]);
  });

  it('portraits and bytes stored per key: QUOTA_EXCEEDED beyond them, other keys unaffected', async () => {
    let s = await start({ quotas: { portraitsPerKey: 2 } });
    expect((await upload(s)).status).toBe(201);
    expect((await upload(s)).status).toBe(201);
    expect(await codeOf(await upload(s))).toEqual([403, 'QUOTA_EXCEEDED']);
    expect((await upload(s, OTHER_API_KEY)).status).toBe(201);
    const one = s.server.portraits.usage('test').bytes / 2;
    expect(s.server.portraits.usage('test').portraits).toBe(2);
    await s.stop();

    // Room for one portrait and a half: the second upload would store more than the key may.
    s = await start({ quotas: { bytesPerKey: Math.round(one * 1.5) } });
    const first = await upload(s);
    expect(first.status).toBe(201);
    expect(await codeOf(await upload(s))).toEqual([403, 'QUOTA_EXCEEDED']);
    expect((await upload(s, OTHER_API_KEY)).status).toBe(201);
    // Deleting frees the bytes.
    const { id } = (await first.json()) as { id: string };
    expect((await fetch(`${s.url}/api/portraits/${id}`, { method: 'DELETE', headers: apiAuth() })).status).toBe(204);
    expect((await upload(s)).status).toBe(201);
  });
});

describe('viewers per room and per link', () => {
  it('one viewer link cannot open unlimited viewers: VIEWER_LIMIT for WHEP and sockets, slots come back', async () => {
    const s = await start({ quotas: { viewersPerRoom: 3, viewersPerLink: 2 } });
    const room = await createTestRoom(s.url, portraitFile('real_asian_young_woman.jpg'));
    const a = await whep(s, room.roomId, room.viewerToken);
    expect(a.res.status).toBe(201);
    const viewerSocket = await joined(s, room.viewerToken);
    // Before: every further WHEP offer with the link got a server peer and an encode.
    const over = await whep(s, room.roomId, room.viewerToken);
    expect(over.res.status).toBe(409);
    expect(await codeOf(over.res)).toEqual([409, 'VIEWER_LIMIT']);
    expect(over.res.headers.get('access-control-allow-origin')).toBe('*');
    const sock = await watchedSocket(s);
    const refused = await request(sock.socket, 'join', { token: room.viewerToken });
    expect(refused.ok ? null : refused.error.code).toBe('VIEWER_LIMIT');

    // The performer's link is another link, but the room holds 3 viewers at most.
    expect((await whep(s, room.roomId, room.performerToken)).res.status).toBe(201);
    const full = (await whep(s, room.roomId, room.performerToken)).res;
    expect(full.status).toBe(409);
    expect(await codeOf(full)).toEqual([409, 'VIEWER_LIMIT']);
    expect(s.server.rooms.viewerSlots.inRoom(room.roomId)).toBe(3);

    // A viewer that leaves gives its slot back: the refused socket can join now.
    expect((await del(a.location, room.viewerToken)).status).toBe(200);
    await call(sock.socket, 'join', { token: room.viewerToken });
    viewerSocket.socket.disconnect();
    await waitFor(() => s.server.rooms.viewerSlots.inRoom(room.roomId) === 2, 5000, 'socket slot given back');
    // Closing the room gives back every slot.
    expect((await fetch(`${s.url}/api/rooms/${room.roomId}`, { method: 'DELETE', headers: apiAuth() })).status).toBe(
      204,
    );
    await waitFor(() => s.server.rooms.viewerSlots.size === 0, 5000, 'all slots given back');
  });
});

describe('viewers that never connect', () => {
  it('a WHEP offer never followed by ICE is closed after media.viewerConnectTimeoutMs and gives its slot back; a connected viewer stays', async () => {
    // Before: each such offer held a server peer and an encode (~12 MB) until the room closed (the flood benchmark:
    // one link, 140 offers, +1.6 GB).
    const s = await start({ media: { viewerConnectTimeoutMs: 1500 } });
    const room = await createTestRoom(s.url, portraitFile('real_asian_young_woman.jpg'));
    const good = new ViewerClient();
    peers.push(good);
    const goodRes = await sdpPost(s, 'whep', room.roomId, room.viewerToken, (await good.offer()).sdp);
    expect(goodRes.status).toBe(201);
    await good.accept({ type: 'answer', sdp: await goodRes.text() });
    // The silent one offers and never takes the answer: its server peer can never connect.
    const silent = new ViewerClient();
    peers.push(silent);
    const silentRes = await sdpPost(s, 'whep', room.roomId, room.viewerToken, (await silent.offer()).sdp);
    expect(silentRes.status).toBe(201);
    const silentAt = silentRes.headers.get('location') ?? '';
    expect(s.server.rooms.viewerSlots.inRoom(room.roomId)).toBe(2);
    await waitFor(() => good.pc.connectionState === 'connected', 30_000, 'the good viewer connects');
    await waitFor(() => s.server.rooms.viewerSlots.inRoom(room.roomId) === 1, 30_000, 'the silent slot given back');
    // Its session is gone; the connected viewer's is not, and it still gets frames.
    expect((await del(silentAt, room.viewerToken)).status).toBe(404);
    const before = good.frames;
    await waitFor(() => good.frames > before + 5, 30_000, 'the connected viewer keeps getting frames');
    expect(s.server.rooms.viewerSlots.inRoom(room.roomId)).toBe(1);
  });
});

describe('rate limits per address', () => {
  it('a WHIP/WHEP flood gets 429 TOO_MANY_REQUESTS with Retry-After', async () => {
    const s = await start({ whip: { perAddressPerMinute: 5 } });
    const room = await createTestRoom(s.url, portraitFile('real_asian_young_woman.jpg'));
    const replies: number[] = [];
    let last: Response | null = null;
    for (let i = 0; i < 8; i++) {
      last = await sdpPost(s, i % 2 ? 'whep' : 'whip', room.roomId, null, 'v=0\r\n');
      replies.push(last.status);
    }
    // Before: every request was answered (401 here), as many as the client sent.
    expect(replies).toEqual([401, 401, 401, 401, 401, 429, 429, 429]);
    expect(await codeOf(last!)).toEqual([429, 'TOO_MANY_REQUESTS']);
    expect(Number(last!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(last!.headers.get('access-control-allow-origin')).toBe('*');
    // A DELETE of the same address is limited too; the REST API has its own limits.
    const d = await del(`${s.url}/whep/${room.roomId}/x`, room.viewerToken);
    expect(d.status).toBe(429);
    expect((await fetch(`${s.url}/api/rooms`, { headers: apiAuth() })).status).toBe(200);
  });

  it('a socket.io connection flood is refused at the handshake with 429', async () => {
    const s = await start({ signaling: { connectionsPerAddressPerMinute: 4 } });
    for (let i = 0; i < 4; i++) sockets.push(await connectClient(s.url));
    // Before: every connection was accepted.
    await expect(connectClient(s.url)).rejects.toThrow();
    const polling = await fetch(`${s.url}/socket.io/?EIO=4&transport=polling`);
    expect(await codeOf(polling)).toEqual([429, 'TOO_MANY_REQUESTS']);
    expect(Number(polling.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // A refused websocket handshake too, as socket.io-client sees it.
    const refused = ioc(s.url, { transports: ['websocket'], reconnection: false, forceNew: true });
    const err = await new Promise<Error>((resolve) => refused.once('connect_error', resolve));
    refused.close();
    expect(err.message).toMatch(/websocket error/);
    // Connections already open keep working.
    expect(sockets.every((c) => c.connected)).toBe(true);
    const res = await request(sockets[0]!, 'join', { token: 'x.y' });
    expect(res.ok ? null : res.error.code).toBe('TOKEN_INVALID');
  });

  it('a socket that never joins is sent JOIN_TIMEOUT and dropped; a joined one stays', async () => {
    const s = await start({ signaling: { joinTimeoutMs: 400 } });
    const room = await createTestRoom(s.url, portraitFile('real_asian_young_woman.jpg'));
    const idle = await watchedSocket(s);
    const viewer = await joined(s, room.viewerToken);
    // Before: the idle socket stayed connected for as long as its client liked.
    await waitFor(() => idle.disconnect !== null, 5000, 'idle socket dropped');
    expect(idle.failures).toEqual(['JOIN_TIMEOUT']);
    expect(idle.disconnect).toBe('io server disconnect');
    expect(viewer.socket.connected).toBe(true);
    expect(viewer.disconnect).toBeNull();
    const res = await request(viewer.socket, 'join', { token: room.viewerToken });
    expect(res.ok ? null : res.error.code).toBe('INVALID_STATE');
  });
});

describe('sessions end with their links', () => {
  const short = (room: TestRoom, role: 'performer' | 'viewer', exp: number): string =>
    signToken({ room: room.roomId, role, exp, v: 0 }, TEST_TOKEN_SECRET);

  it('expiry: joined performer and viewer sockets, a WHEP viewer and a WHIP performer end with TOKEN_EXPIRED', async () => {
    const s = await start();
    const room = await createTestRoom(s.url, portraitFile('real_asian_young_woman.jpg'));
    const room2 = await createTestRoom(s.url, portraitFile('real_asian_young_woman.jpg'));
    const exp = Date.now() + 4000;
    const performer = await joined(s, short(room, 'performer', exp));
    const viewer = await joined(s, short(room, 'viewer', exp));
    const viewerToken = short(room, 'viewer', exp);
    const w = await whep(s, room.roomId, viewerToken);
    expect(w.res.status).toBe(201);
    const performerToken2 = short(room2, 'performer', exp);
    const whipLocation = await whip(s, room2.roomId, performerToken2);
    const r = s.server.rooms.require(room.roomId);
    const r2 = s.server.rooms.require(room2.roomId);
    // Everything was live before the links expired.
    expect([r.viewerCount, r2.publishing, performer.socket.connected, viewer.socket.connected]).toEqual([
      1,
      true,
      true,
      true,
    ]);
    expect(Date.now()).toBeLessThan(exp);

    // Before: all of them went on after the expiry.
    await waitFor(
      () => performer.disconnect && viewer.disconnect && r.viewerCount === 0 && !r2.publishing,
      exp - Date.now() + 5000,
      'sessions ended at the expiry',
    );
    expect(Date.now()).toBeGreaterThanOrEqual(exp);
    for (const sock of [performer, viewer]) {
      expect(sock.failures).toEqual(['TOKEN_EXPIRED']);
      expect(sock.closed).toEqual(['link-expired']);
      expect(sock.disconnect).toBe('io server disconnect');
    }
    // WHIP/WHEP clients learn the code from their next request with the link.
    expect(await codeOf(await del(w.location, viewerToken))).toEqual([401, 'TOKEN_EXPIRED']);
    expect(await codeOf(await del(whipLocation, performerToken2))).toEqual([401, 'TOKEN_EXPIRED']);
    expect(s.server.rooms.viewerSlots.size).toBe(0);
  });

  it('revocation: joined sockets, a WHEP viewer and a WHIP performer end with TOKEN_REVOKED', async () => {
    const s = await start();
    const room = await createTestRoom(s.url, portraitFile('real_asian_young_woman.jpg'));
    const performer = await joined(s, room.performerToken);
    const viewer = await joined(s, room.viewerToken);
    const w = await whep(s, room.roomId, room.viewerToken);
    expect(w.res.status).toBe(201);
    const r = s.server.rooms.require(room.roomId);
    expect(r.viewerCount).toBe(1);

    const revoked = await fetch(`${s.url}/api/rooms/${room.roomId}/revoke`, { method: 'POST', headers: apiAuth() });
    expect(revoked.status).toBe(200);
    const fresh = (await revoked.json()) as TestRoom;
    await waitFor(
      () => performer.disconnect && viewer.disconnect && r.viewerCount === 0,
      5000,
      'sessions ended at the revocation',
    );
    for (const sock of [performer, viewer]) {
      expect(sock.failures).toEqual(['TOKEN_REVOKED']);
      expect(sock.closed).toEqual(['links-revoked']);
    }
    expect(await codeOf(await del(w.location, room.viewerToken))).toEqual([401, 'TOKEN_REVOKED']);
    expect(s.server.rooms.viewerSlots.size).toBe(0);

    // The fresh performer link publishes over WHIP; revoking again ends that session too.
    const location = await whip(s, room.roomId, fresh.performerToken);
    expect(r.publishing).toBe(true);
    expect(
      (await fetch(`${s.url}/api/rooms/${room.roomId}/revoke`, { method: 'POST', headers: apiAuth() })).status,
    ).toBe(200);
    await waitFor(() => !r.publishing, 5000, 'WHIP session ended at the revocation');
    expect(await codeOf(await del(location, fresh.performerToken))).toEqual([401, 'TOKEN_REVOKED']);
  });
});

describe('the pure parts', () => {
  it('ViewerSlots counts per room and per link, refuses beyond either, and forgets what is given back', () => {
    const slots = new ViewerSlots({ perRoom: 3, perLink: 2 });
    slots.take('a', 'r1', 'L1');
    slots.take('b', 'r1', 'L1');
    expect(thrownCode(() => slots.take('c', 'r1', 'L1'))).toBe('VIEWER_LIMIT');
    slots.take('c', 'r1', 'L2');
    expect(thrownCode(() => slots.take('d', 'r1', 'L3'))).toBe('VIEWER_LIMIT');
    // Another room has its own count; a link's count spans rooms (a link names one room in practice).
    slots.take('d', 'r2', 'L3');
    expect([slots.inRoom('r1'), slots.inRoom('r2'), slots.onLink('L1'), slots.size]).toEqual([3, 1, 2, 4]);
    // Taking again under the same holder moves it; releasing twice is a no-op.
    slots.take('a', 'r2', 'L3');
    expect([slots.inRoom('r1'), slots.inRoom('r2'), slots.onLink('L1')]).toEqual([2, 2, 1]);
    for (const h of ['a', 'b', 'c', 'd', 'a']) slots.release(h);
    expect([slots.size, slots.inRoom('r1'), slots.onLink('L3')]).toEqual([0, 0, 0]);
  });

  it('atTime fires once at the moment, at once when it has passed, and can be cancelled', async () => {
    const fired: string[] = [];
    atTime(Date.now() - 1000, () => fired.push('past'));
    const at = Date.now() + 50;
    atTime(at, () => fired.push(Date.now() >= at ? 'on time' : 'early'));
    const cancel = atTime(Date.now() + 20, () => fired.push('cancelled'));
    cancel();
    await waitFor(() => fired.length === 2, 2000, 'two timers fired');
    expect(fired).toEqual(['past', 'on time']);
  });

  it('the config validates quotas and limits and defaults them generously', () => {
    const d = defaultConfig();
    expect(d.quotas).toEqual({
      roomsPerKey: 10,
      portraitsPerKey: 100,
      bytesPerKey: 1024 ** 3,
      viewersPerRoom: 200,
      viewersPerLink: 200,
    });
    expect(d.signaling).toEqual({ connectionsPerAddressPerMinute: 300, joinTimeoutMs: 10_000 });
    expect(d.whip).toEqual({ perAddressPerMinute: 120 });
    for (const bad of [
      { quotas: { roomsPerKey: 0 } },
      { quotas: { viewersPerLink: 1.5 } },
      { quotas: { bytesPerKey: -1 } },
      { signaling: { joinTimeoutMs: 10 } },
      { signaling: { connectionsPerAddressPerMinute: 0 } },
      { whip: { perAddressPerMinute: 0 } },
    ] as DeepPartial<Config>[]) {
      expect(thrownCode(() => loadConfig({}, bad))).toBe('CONFIG_INVALID');
    }
  });

  it('every quota and rate limit is settable from the environment, checked as in the file, and documented', async () => {
    const readme = await readFile(path.join(repoRoot, 'README.md'), 'utf8');
    const get = (c: Config, option: string): unknown =>
      option.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], c);
    for (const [env, option] of LIMIT_ENV) {
      const c = loadConfig({ [env]: '7000' });
      expect(get(c, option), env).toBe(7000);
      // Out of range or not a number: refused at start-up, naming the option or the variable.
      expect(() => loadConfig({ [env]: '0' }), env).toThrow(option);
      expect(() => loadConfig({ [env]: 'lots' }), env).toThrow(env);
      expect(readme, env).toContain(`\`${option}\` (\`${env}\`)`);
    }
    const names = LIMIT_ENV.map(([e]) => e);
    for (const n of [
      'AVATAR_ROOMS_PER_KEY',
      'AVATAR_VIEWERS_PER_ROOM',
      'AVATAR_VIEWERS_PER_LINK',
      'AVATAR_BYTES_PER_KEY',
    ])
      expect(names).toContain(n);
  });
});
