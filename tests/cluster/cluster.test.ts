/**
 * Two nodes and a real Redis on loopback (Debian's redis-server, started on a free port), each node with its own real
 * mediasoup worker:
 * - a room created on node A is in the directory; a viewer whose signaling reaches node B gets the avatar through a
 *   mediasoup pipe from A (B's relay), with frames at the portrait's size; A serves exactly one pipe for any number
 *   of B's viewers; a performer reaching B is told where the room runs (WRONG_NODE with A's URL);
 * - a node with direct fan-out only answers a viewer of another node's room with a clear redirect (WRONG_NODE); a
 *   validly signed token for a room no node owns gets ROOM_NOT_FOUND, a token with a broken signature TOKEN_INVALID;
 * - the internal pipe API (node to node) refuses unsigned, malformed, foreign-secret, tampered and stale requests
 *   (401 TOKEN_INVALID / REQUEST_STALE, no pipe opened) and serves the same request signed with the shared secret;
 * - node loss: the owner runs as its own process and is killed (SIGKILL); its directory entries expire, B's viewers
 *   get ROOM_OWNER_LOST and 'closed' (owner-lost), and a new join on B gets ROOM_NOT_FOUND.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { portraitFile } from '../../scripts/testData.js';
import { signToken } from '../../server/auth/tokens.js';
import { MAX_FUTURE_SKEW_MS, MAX_SKEW_MS, NODE_AUTH_HEADER, signNodeRequest } from '../../server/cluster/nodeAuth.js';
import type { MediasoupRoom } from '../../server/media/mediasoupFanout.js';
import type { JoinResponse } from '../../server/types/protocol.js';
import { SocketSfuViewer } from '../helpers/sfuViewer.js';
import { startRedis, haveRedis, type TestRedis } from '../helpers/redis.js';
import {
  createTestRoom,
  repoRoot,
  startTestServer,
  TEST_API_KEY,
  TEST_TOKEN_SECRET,
  type TestRoom,
  type TestServer,
} from '../helpers/server.js';
import { call, connectClient, request, type ClientSocket } from '../helpers/socket.js';
import { waitFor } from '../helpers/wait.js';

const workerBin = process.env.MEDIASOUP_WORKER_BIN;
const skip = !workerBin || !haveRedis;
if (skip)
  console.log(
    `cluster tests skipped: ${!workerBin ? 'no mediasoup worker (MEDIASOUP_WORKER_BIN)' : 'no /usr/bin/redis-server'}`,
  );

const HEARTBEAT_MS = 300;
const TTL_MS = 1200;

const createRoom = (baseUrl: string): Promise<TestRoom> =>
  createTestRoom(baseUrl, portraitFile('real_woman_dark_hair.png'));

describe.skipIf(skip)('two nodes and a Redis room directory', () => {
  let redis: TestRedis;
  const servers: TestServer[] = [];
  const viewers: SocketSfuViewer[] = [];
  const sockets: ClientSocket[] = [];

  beforeAll(async () => {
    redis = await startRedis();
  });
  afterEach(async () => {
    for (const v of viewers.splice(0)) v.close();
    for (const s of sockets.splice(0)) s.disconnect();
    for (const s of servers.splice(0)) await s.stop();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  async function node(nodeId: string, mode: 'sfu' | 'direct' = 'sfu'): Promise<TestServer> {
    const ts = await startTestServer({
      logLevel: (process.env.CLUSTER_LOG ?? 'silent') as 'silent',
      avatar: { engine: 'portrait', outputSize: 256 },
      fanout: { mode, workers: 1, mediasoupWorkerBin: mode === 'sfu' ? (workerBin ?? null) : null },
      cluster: { redisUrl: redis.url, nodeId, heartbeatMs: HEARTBEAT_MS, ttlMs: TTL_MS },
    });
    servers.push(ts);
    return ts;
  }
  async function socketTo(url: string): Promise<ClientSocket> {
    const s = await connectClient(url);
    sockets.push(s);
    return s;
  }

  it('a viewer on the non-owner node gets the avatar through a pipe transport from the owner', async () => {
    const a = await node('node-a');
    const b = await node('node-b');
    const room = await createRoom(a.url);
    const loc = await waitFor(() => a.server.cluster!.directory.lookup(room.roomId), 5000, 'room in the directory');
    expect(loc.nodeId).toBe('node-a');
    expect(loc.node.url).toBe(a.url);
    expect(loc.node.internalUrl).toBe(a.server.internalUrl);
    expect(a.server.internalUrl).not.toBe(a.url);
    expect(loc.info.width).toBe(256);

    // Two viewers on B: one relay, one pipe on A.
    for (let i = 0; i < 2; i++) {
      const s = await connectClient(b.url);
      const joined = await call<JoinResponse>(s, 'join', { token: room.viewerToken });
      expect(joined.fanout).toBe('sfu');
      expect(joined.room.roomId).toBe(room.roomId);
      expect(joined.room.width).toBe(256);
      const v = new SocketSfuViewer(s);
      viewers.push(v);
      await v.view();
    }
    await waitFor(
      () => viewers.every((v) => v.frames >= 3 && v.width === 256),
      30_000,
      'frames on node B through the pipe',
    );
    expect(b.server.rooms.size).toBe(0); // B runs no room of its own
    expect(b.server.cluster!.relays().map((r) => r.id)).toEqual([room.roomId]);
    expect(b.server.cluster!.relays()[0]!.viewerCount).toBe(2);
    expect(a.server.cluster!.pipeCount).toBe(1);
    expect((a.server.rooms.get(room.roomId)!.sfu as MediasoupRoom).pipeCount).toBe(1);

    // The performer belongs on A: B says so, naming A.
    const ps = await socketTo(b.url);
    const res = await request(ps, 'join', { token: room.performerToken });
    expect(res.ok).toBe(false);
    if (!res.ok) {
      expect(res.error.code).toBe('WRONG_NODE');
      expect(res.error.message).toContain(a.url);
    }

    // WHIP/WHEP reaching B are redirected to the owner (307, RFC 9725 §4.5), the token unchanged.
    const whep = await fetch(`${b.url}/whep/${room.roomId}`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/sdp', authorization: `Bearer ${room.viewerToken}` },
      body: 'v=0\r\n',
    });
    expect(whep.status).toBe(307);
    expect(whep.headers.get('location')).toBe(`${a.url}/whep/${room.roomId}`);

    // B going away releases its pipe on A.
    for (const v of viewers.splice(0)) v.close();
    await b.stop();
    await waitFor(
      () => (a.server.rooms.get(room.roomId)!.sfu as MediasoupRoom).pipeCount === 0,
      10_000,
      'pipe closed on A',
    );
  });

  it('a node without an SFU redirects a viewer of another node’s room (WRONG_NODE)', async () => {
    const a = await node('node-a2');
    const d = await node('node-direct', 'direct');
    const room = await createRoom(a.url);
    await waitFor(() => d.server.cluster!.directory.lookup(room.roomId), 5000, 'room in the directory');
    const s = await socketTo(d.url);
    const res = await request(s, 'join', { token: room.viewerToken });
    expect(res.ok).toBe(false);
    if (!res.ok) {
      expect(res.error.code).toBe('WRONG_NODE');
      expect(res.error.message).toContain(a.url);
    }
    // A room nobody owns (a validly signed token for an id no node put in the directory) is simply not found.
    const unknown = signToken({ room: 'nosuchroom00', role: 'viewer', exp: Date.now() + 60_000 }, TEST_TOKEN_SECRET);
    expect(await d.server.cluster!.directory.lookup('nosuchroom00')).toBeNull();
    const other = await request(s, 'join', { token: unknown });
    expect(other.ok ? 'ok' : other.error.code).toBe('ROOM_NOT_FOUND');
    // A token for the real room with a broken signature is refused before any directory look-up.
    const [body, sig] = room.viewerToken.split('.') as [string, string];
    const forged = await request(s, 'join', { token: `${body}.${sig.slice(0, -4)}AAAA` });
    expect(forged.ok ? 'ok' : forged.error.code).toBe('TOKEN_INVALID');
  });

  it('the internal pipe API refuses unsigned, forged and stale requests, and serves a signed one', async () => {
    const a = await node('node-a4');
    const room = await createRoom(a.url);
    const pipePath = `/internal/pipe/${room.roomId}`;
    const body = JSON.stringify({ linkId: 'link-test-1', ip: '127.0.0.1', port: 40000 });
    const internal = a.server.internalUrl!;
    const post = (headers: Record<string, string>, text = body): Promise<Response> =>
      fetch(`${internal}${pipePath}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: text,
      });
    const refused = async (res: Response): Promise<string> => {
      const j = (await res.json()) as { code?: string };
      return `${res.status} ${j.code ?? '?'}`;
    };
    const sign = (
      opts: { secret?: string; now?: number; text?: string; path?: string } = {},
    ): Record<string, string> => ({
      [NODE_AUTH_HEADER]: signNodeRequest(
        opts.secret ?? TEST_TOKEN_SECRET,
        'node-x',
        'POST',
        opts.path ?? pipePath,
        opts.text ?? body,
        opts.now,
      ),
    });

    // Unsigned, malformed, signed with another secret, signed for another body or path, too old, from the future.
    expect(await refused(await post({}))).toBe('401 TOKEN_INVALID');
    expect(await refused(await post({ [NODE_AUTH_HEADER]: 'node-x.123.abc' }))).toBe('401 TOKEN_INVALID');
    expect(await refused(await post(sign({ secret: 'some-other-secret-123456' })))).toBe('401 TOKEN_INVALID');
    expect(await refused(await post(sign(), body.replace('40000', '40001')))).toBe('401 TOKEN_INVALID');
    expect(await refused(await post(sign({ path: '/internal/pipe/otherroom00' })))).toBe('401 TOKEN_INVALID');
    expect(await refused(await post(sign({ now: Date.now() - MAX_SKEW_MS - 5000 })))).toBe('401 REQUEST_STALE');
    expect(await refused(await post(sign({ now: Date.now() + MAX_FUTURE_SKEW_MS + 5000 })))).toBe('401 REQUEST_STALE');
    const unsignedDelete = await fetch(`${internal}${pipePath}/link-test-1`, { method: 'DELETE' });
    expect(await refused(unsignedDelete)).toBe('401 TOKEN_INVALID');
    expect(a.server.cluster!.pipeCount).toBe(0);
    expect((a.server.rooms.get(room.roomId)!.sfu as MediasoupRoom).pipeCount).toBe(0);

    // The same request, signed now with the shared secret, opens a pipe; a signed DELETE closes it.
    const ok = await post(sign());
    expect(ok.status).toBe(201);
    const reply = (await ok.json()) as { ip: string; port: number; producers: unknown[]; epoch: number };
    expect(reply.port).toBeGreaterThan(0);
    expect(reply.producers.length).toBeGreaterThan(0);
    expect(a.server.cluster!.pipeCount).toBe(1);
    const delPath = `${pipePath}/link-test-1`;
    const del = await fetch(`${internal}${delPath}`, {
      method: 'DELETE',
      headers: { [NODE_AUTH_HEADER]: signNodeRequest(TEST_TOKEN_SECRET, 'node-x', 'DELETE', delPath, '') },
    });
    expect(del.status).toBe(204);
    expect(a.server.cluster!.pipeCount).toBe(0);
  });

  it('node loss: the owner process is killed; the directory drops its rooms and B’s viewers get a clear error', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'avatar-node-'));
    const cfg = path.join(dataDir, 'config.json');
    await writeFile(
      cfg,
      JSON.stringify({
        media: { iceAddressAllowList: ['127.0.0.1'] },
        cluster: { heartbeatMs: HEARTBEAT_MS, ttlMs: TTL_MS },
        avatar: { outputSize: 256 },
      }),
    );
    // `node --import tsx`, not the tsx binary: that one runs the server in a child process, which a SIGKILL would miss.
    const proc: ChildProcess = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'server', 'main.ts')], {
      cwd: repoRoot,
      env: {
        ...process.env,
        PORT: '0',
        HOST: '127.0.0.1',
        AVATAR_CONFIG: cfg,
        AVATAR_DATA_DIR: dataDir,
        AVATAR_ENGINE: 'portrait',
        AVATAR_TOKEN_SECRET: TEST_TOKEN_SECRET,
        AVATAR_API_KEYS: `test:${TEST_API_KEY}`,
        AVATAR_REDIS_URL: redis.url,
        AVATAR_NODE_ID: 'node-doomed',
        AVATAR_INTERNAL_PORT: '0',
        AVATAR_SFU_WORKERS: '1',
        FANOUT: 'sfu',
        MEDIASOUP_WORKER_BIN: workerBin,
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    let exited = false;
    proc.on('exit', () => (exited = true));
    try {
      const ownerUrl = await waitFor(
        () => {
          if (exited) throw new Error(`owner process exited:\n${out}`);
          return /"msg":"server ready".*?"url":"(http:\/\/[^"]+)"/.exec(out)?.[1];
        },
        60_000,
        'owner node ready',
      );
      const b = await node('node-b3');
      const room = await createRoom(ownerUrl);
      await waitFor(() => b.server.cluster!.directory.lookup(room.roomId), 5000, 'room in the directory');
      const s = await connectClient(b.url);
      await call(s, 'join', { token: room.viewerToken });
      const v = new SocketSfuViewer(s);
      viewers.push(v);
      await v.view();
      await waitFor(() => v.frames >= 3, 30_000, 'frames through the pipe from the owner process');

      proc.kill('SIGKILL');
      await waitFor(() => exited, 10_000, 'owner process gone');
      const t0 = Date.now();
      await waitFor(() => v.closedReason !== null, TTL_MS + 10 * HEARTBEAT_MS + 5000, 'viewer told the room ended');
      const lossMs = Date.now() - t0;
      console.log(
        `node loss noticed by the viewer after ${lossMs} ms (ttl ${TTL_MS} ms, heartbeat ${HEARTBEAT_MS} ms)`,
      );
      expect(v.closedReason).toBe('owner-lost');
      expect(v.failures.map((f) => f.code)).toContain('ROOM_OWNER_LOST');
      expect(await b.server.cluster!.directory.lookup(room.roomId)).toBeNull();
      expect(b.server.cluster!.relays()).toEqual([]);
      const s2 = await socketTo(b.url);
      const res = await request(s2, 'join', { token: room.viewerToken });
      expect(res.ok).toBe(false);
      if (!res.ok) expect(res.error.code).toBe('ROOM_NOT_FOUND');
    } finally {
      if (!exited) proc.kill('SIGKILL');
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
