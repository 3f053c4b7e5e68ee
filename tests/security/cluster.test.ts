/**
 * Attacks on the cluster (issue 20, item 5), with real nodes (direct fan-out: no SFU needed for these) and a real
 * redis-server started with a password:
 * - Redis without the password: refused (NOAUTH); a node given a URL without it (or a wrong one) does not start, and
 *   the error does not show the password;
 * - the internal API: a captured signed request replayed to the same node, or to another node, within its window is
 *   401 REQUEST_REPLAYED; a request dated 10 s ahead (inside the old ±30 s window) is 401 REQUEST_STALE;
 * - a node record planted in Redis (unsigned, or with a forged signature) does not make WHEP redirect (307) a viewer
 *   to the attacker's host: the room is not found; a signed record outside cluster.nodeUrls is ignored too; a real
 *   node's record still gets the 307.
 */
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { signToken } from '../../server/auth/tokens.js';
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

  it('a signed internal request is served once: replays (to this node or another) and future dates are refused', async () => {
    const a = await node('node-ra');
    const b = await node('node-rb');
    const p = '/internal/pipe/someroom0001/link-1';
    const del = (url: string, header: string): Promise<Response> =>
      fetch(`${url}${p}`, { method: 'DELETE', headers: { [NODE_AUTH_HEADER]: header } });
    const code = async (r: Response): Promise<string> => `${r.status} ${((await r.json()) as { code: string }).code}`;

    const captured = signNodeRequest(TEST_TOKEN_SECRET, 'node-x', 'DELETE', p, '');
    expect((await del(a.url, captured)).status).toBe(204);
    expect(await code(await del(a.url, captured))).toBe('401 REQUEST_REPLAYED');
    // The same request sent to another node of the cluster: Redis remembers its nonce.
    expect(await code(await del(b.url, captured))).toBe('401 REQUEST_REPLAYED');

    // Dated 10 s ahead: inside the ±30 s window that a replay could use for longer.
    const ahead = signNodeRequest(TEST_TOKEN_SECRET, 'node-x', 'DELETE', p, '', Date.now() + 10_000);
    expect(await code(await del(a.url, ahead))).toBe('401 REQUEST_STALE');
    // A little clock skew between nodes is fine.
    const skewed = signNodeRequest(TEST_TOKEN_SECRET, 'node-x', 'DELETE', p, '', Date.now() + 500);
    expect((await del(a.url, skewed)).status).toBe(204);
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
    const evil = { nodeId: 'evil', url: 'http://attacker.example', fanout: 'sfu' as const };
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
    await plant({
      ...evil,
      url: 'http://10.0.0.9:8080',
      sig: signNodeRecord(TEST_TOKEN_SECRET, { ...evil, url: 'http://10.0.0.9:8080' }),
    });
    const ok = await whep();
    expect(ok.status).toBe(307);
    expect(ok.headers.get('location')).toBe(`http://10.0.0.9:8080/whep/${roomId}`);
  });

  it('with cluster.nodeUrls, only those URLs are redirected to, even with a valid signature', async () => {
    const b = await node('node-lb', { nodeUrls: ['http://10.0.0.9:8080'] });
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
    for (const [url, status] of [
      ['http://10.0.0.66:8080', 404],
      ['http://10.0.0.9:8080', 307],
    ] as const) {
      const rec = { nodeId: 'n2', url, fanout: 'direct' as const };
      await client.set('avatar:node:n2', JSON.stringify({ ...rec, sig: signNodeRecord(TEST_TOKEN_SECRET, rec) }));
      expect((await whep()).status, url).toBe(status);
    }
  });
});
