/**
 * Attacks on the cluster (issue 20, item 5), with real nodes (direct fan-out: no SFU needed for these) and a real
 * redis-server started with a password:
 * - Redis without the password: refused (NOAUTH); a node given a URL without it (or a wrong one) does not start, and
 *   the error does not show the password;
 * - the internal API is served on each node's own internal listener only: the public port answers /internal/* 404
 *   (even signed), the internal listener serves the signed request and nothing public;
 * - the internal API: a captured signed request replayed to the same node, or to another node, within its window is
 *   401 REQUEST_REPLAYED; a request dated 10 s ahead (inside the old ±30 s window) is 401 REQUEST_STALE;
 * - a node record planted in Redis (unsigned, or with a forged signature) does not make WHEP redirect (307) a viewer
 *   to the attacker's host: the room is not found; a signed record outside cluster.nodeUrls is ignored too; a real
 *   node's record still gets the 307; with cluster.nodeUrls, a record is accepted only when both its URLs (public and
 *   internal) are listed.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { signToken } from '../../server/auth/tokens.js';
import { loadConfig } from '../../server/config.js';
import { NODE_AUTH_HEADER, signNodeRecord, signNodeRequest } from '../../server/cluster/nodeAuth.js';
import { haveRedis, startRedis, type TestRedis } from '../helpers/redis.js';
import { startTestServer, TEST_TOKEN_SECRET, type TestServer } from '../helpers/server.js';

if (!haveRedis) console.log('cluster security tests skipped: no /usr/bin/redis-server');

describe.skipIf(!haveRedis)('cluster: Redis password, replays, planted node records', () => {
  let redis: TestRedis;
  let client: Redis;
  const servers: TestServer[] = [];

  beforeAll(async () => {
    redis = await startRedis();
    client = new Redis(redis.url);
  });
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.stop();
    await client.flushall();
  });
  afterAll(async () => {
    client?.disconnect();
    await redis?.stop();
  });

  async function node(nodeId: string, extra: { nodeUrls?: string[]; redisUrl?: string } = {}): Promise<TestServer> {
    const ts = await startTestServer({
      avatar: { engine: 'portrait' },
      fanout: { mode: 'direct' },
      cluster: {
        redisUrl: extra.redisUrl ?? redis.url,
        nodeId,
        heartbeatMs: 300,
        ttlMs: 5000,
        ...(extra.nodeUrls ? { nodeUrls: extra.nodeUrls } : {}),
      },
    });
    servers.push(ts);
    return ts;
  }

  it('Redis refuses a client without the password; a node without it (or with a wrong one) does not start', async () => {
    const anon = new Redis(redis.urlWithoutPassword, { maxRetriesPerRequest: 0 });
    anon.on('error', () => undefined);
    await expect(anon.get('avatar:node:x')).rejects.toThrow(/NOAUTH/);
    anon.disconnect();
    await expect(node('node-nopass', { redisUrl: redis.urlWithoutPassword })).rejects.toMatchObject({
      code: 'CONFIG_INVALID',
    });
    const wrong = `redis://:wrong-password-123@127.0.0.1:${redis.port}`;
    const err = (await node('node-wrongpass', { redisUrl: wrong }).catch((e: unknown) => e)) as Error;
    expect((err as { code?: string }).code).toBe('CONFIG_INVALID');
    expect(err.message).not.toContain('wrong-password-123');
    expect(err.message).toContain(`127.0.0.1:${redis.port}`);
  });

  it('the internal API is not on the public port: 404 there, served on the internal listener only', async () => {
    const a = await node('node-ia');
    expect(a.server.internalUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(a.server.internalUrl).not.toBe(a.url);
    const p = '/internal/pipe/someroom0002/link-2';
    const del = (base: string): Promise<Response> =>
      fetch(`${base}${p}`, {
        method: 'DELETE',
        headers: { [NODE_AUTH_HEADER]: signNodeRequest(TEST_TOKEN_SECRET, 'node-x', 'DELETE', p, '') },
      });
    const body = JSON.stringify({ linkId: 'link-2', ip: '127.0.0.1', port: 40000 });
    const pipe = '/internal/pipe/someroom0002';
    const post = (base: string): Promise<Response> =>
      fetch(`${base}${pipe}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          [NODE_AUTH_HEADER]: signNodeRequest(TEST_TOKEN_SECRET, 'node-x', 'POST', pipe, body),
        },
        body,
      });
    // The public port: a correctly signed request is not found, nor is any other /internal path.
    for (const r of [await del(a.url), await post(a.url), await fetch(`${a.url}/internal/`)]) {
      expect(r.status).toBe(404);
      expect(((await r.json()) as { code: string }).code).toBe('NOT_FOUND');
    }
    // The internal listener: the signed request is served (204), a signed pipe for a room that is not here is
    // ROOM_NOT_FOUND (the route exists), an unsigned one 401; nothing public is served there.
    expect((await del(a.server.internalUrl!)).status).toBe(204);
    const missing = await post(a.server.internalUrl!);
    expect(`${missing.status} ${((await missing.json()) as { code: string }).code}`).toBe('404 ROOM_NOT_FOUND');
    const unsigned = await fetch(`${a.server.internalUrl}${p}`, { method: 'DELETE' });
    expect(unsigned.status).toBe(401);
    for (const pub of ['/healthz', '/api/rooms', '/metrics', '/']) {
      expect((await fetch(`${a.server.internalUrl}${pub}`)).status, pub).toBe(404);
    }
    // The directory tells other nodes the internal URL, and clients (redirects) the public one.
    const rec = await a.server.cluster!.directory.node('node-ia');
    expect(rec).toMatchObject({ url: a.url, internalUrl: a.server.internalUrl });
  });

  it('the internal listener needs its own port: the public port is refused for it', () => {
    expect(() =>
      loadConfig(
        { AVATAR_REDIS_URL: 'redis://:pw@127.0.0.1:6379', AVATAR_INTERNAL_PORT: '8080', PORT: '8080' },
        { tokenSecret: TEST_TOKEN_SECRET },
      ),
    ).toThrow(/cluster\.internalPort/);
    const c = loadConfig({ AVATAR_INTERNAL_HOST: '10.0.0.5', AVATAR_INTERNAL_PORT: '9443' });
    expect(c.cluster).toMatchObject({ internalHost: '10.0.0.5', internalPort: 9443 });
    expect(loadConfig().cluster.internalPort).toBe(8081);
  });

  it('a signed internal request is served once: replays (to this node or another) and future dates are refused', async () => {
    const a = await node('node-ra');
    const b = await node('node-rb');
    const p = '/internal/pipe/someroom0001/link-1';
    const del = (url: string, header: string): Promise<Response> =>
      fetch(`${url}${p}`, { method: 'DELETE', headers: { [NODE_AUTH_HEADER]: header } });
    const code = async (r: Response): Promise<string> => `${r.status} ${((await r.json()) as { code: string }).code}`;

    const ai = a.server.internalUrl!;
    const captured = signNodeRequest(TEST_TOKEN_SECRET, 'node-x', 'DELETE', p, '');
    expect((await del(ai, captured)).status).toBe(204);
    expect(await code(await del(ai, captured))).toBe('401 REQUEST_REPLAYED');
    // The same request sent to another node of the cluster: Redis remembers its nonce.
    expect(await code(await del(b.server.internalUrl!, captured))).toBe('401 REQUEST_REPLAYED');

    // Dated 10 s ahead: inside the ±30 s window that a replay could use for longer.
    const ahead = signNodeRequest(TEST_TOKEN_SECRET, 'node-x', 'DELETE', p, '', Date.now() + 10_000);
    expect(await code(await del(ai, ahead))).toBe('401 REQUEST_STALE');
    // A little clock skew between nodes is fine.
    const skewed = signNodeRequest(TEST_TOKEN_SECRET, 'node-x', 'DELETE', p, '', Date.now() + 500);
    expect((await del(ai, skewed)).status).toBe(204);
  });

  it('WHEP never redirects to a node record planted in Redis; a real node still gets the 307', async () => {
    const b = await node('node-pb');
    const roomId = 'plantedroom01';
    const token = signToken({ room: roomId, role: 'viewer', exp: Date.now() + 60_000, v: 0 }, TEST_TOKEN_SECRET);
    const whep = (): Promise<Response> =>
      fetch(`${b.url}/whep/${roomId}`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
        body: 'v=0\r\n',
      });
    const room = JSON.stringify({ nodeId: 'evil', epoch: 0, linkVersion: 0, info: { roomId } });
    const evil = {
      nodeId: 'evil',
      url: 'http://attacker.example',
      internalUrl: 'http://attacker.example:8081',
      fanout: 'sfu' as const,
    };
    const plant = async (rec: Record<string, unknown>): Promise<void> => {
      await client.set('avatar:node:evil', JSON.stringify(rec), 'PX', 60_000);
      await client.set(`avatar:room:${roomId}`, room, 'PX', 60_000);
    };

    // Unsigned, and signed with a key the attacker made up.
    for (const rec of [evil, { ...evil, sig: signNodeRecord('attacker-secret-0123456789', evil) }]) {
      await plant(rec);
      const r = await whep();
      expect(r.headers.get('location')).toBeNull();
      expect(r.status).toBe(404);
      expect(((await r.json()) as { code: string }).code).toBe('ROOM_NOT_FOUND');
    }

    // A record signed with the shared secret is a real node's: redirected there.
    const real = { ...evil, url: 'http://10.0.0.9:8080', internalUrl: 'http://10.0.0.9:8081' };
    await plant({ ...real, sig: signNodeRecord(TEST_TOKEN_SECRET, real) });
    const ok = await whep();
    expect(ok.status).toBe(307);
    expect(ok.headers.get('location')).toBe(`http://10.0.0.9:8080/whep/${roomId}`);
  });

  it('with cluster.nodeUrls, only those URLs are redirected to, even with a valid signature', async () => {
    const b = await node('node-lb', { nodeUrls: ['http://10.0.0.9:8080', 'http://10.0.0.9:8081'] });
    const roomId = 'listedroom01';
    const token = signToken({ room: roomId, role: 'viewer', exp: Date.now() + 60_000, v: 0 }, TEST_TOKEN_SECRET);
    const whep = (): Promise<Response> =>
      fetch(`${b.url}/whep/${roomId}`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/sdp', authorization: `Bearer ${token}` },
        body: 'v=0\r\n',
      });
    await client.set(`avatar:room:${roomId}`, JSON.stringify({ nodeId: 'n2', epoch: 0, linkVersion: 0, info: {} }));
    for (const [url, internalUrl, status] of [
      ['http://10.0.0.66:8080', 'http://10.0.0.9:8081', 404],
      // A listed public URL with an unlisted internal one: other nodes would call it.
      ['http://10.0.0.9:8080', 'http://10.0.0.66:8081', 404],
      ['http://10.0.0.9:8080', 'http://10.0.0.9:8081', 307],
    ] as const) {
      const rec = { nodeId: 'n2', url, internalUrl, fanout: 'direct' as const };
      await client.set('avatar:node:n2', JSON.stringify({ ...rec, sig: signNodeRecord(TEST_TOKEN_SECRET, rec) }));
      expect((await whep()).status, `${url} ${internalUrl}`).toBe(status);
    }
  });
});
