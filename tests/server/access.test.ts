/**
 * Access and consent on a real server (port 0) with two API keys ('test' and 'other'):
 * - management calls need a key (401 API_KEY_REQUIRED / API_KEY_INVALID with WWW-Authenticate); each key sees only
 *   its own portraits and rooms (the other's are 404: nothing leaks, not even existence);
 * - rate limits per address and per key answer 429 TOO_MANY_REQUESTS with Retry-After;
 * - revoking a room's links: sockets joined with the old links are dropped (TOKEN_REVOKED, closed 'links-revoked'),
 *   old links are refused, the fresh ones work;
 * - consent: the text and version are stored with the record and in the append-only log; an upload naming an old
 *   version is refused; deleting a portrait removes its files, closes the rooms animating it ('portrait-deleted'),
 *   and the owner can still read the log (with the 'deleted' line); the other key cannot;
 * - no key configured: the server keeps one for the local operator in <dataDir>/operator-key (mode 0600, the same
 *   after a restart); `npm start`'s entry names the key file (the studio link with the key only on a terminal) and
 *   binds to loopback by default.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { portraitFile } from '../../scripts/testData.js';
import { createServer } from '../../server/app.js';
import { defaultConfig, loadConfig } from '../../server/config.js';
import type { JoinResponse, PublicError } from '../../server/types/protocol.js';
import { apiAuth, OTHER_API_KEY, repoRoot, startTestServer, TEST_API_KEY, type TestServer } from '../helpers/server.js';
import { call, connectClient, request, type ClientSocket } from '../helpers/socket.js';
import { waitFor } from '../helpers/wait.js';

let ts: TestServer | null = null;
const sockets: ClientSocket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.disconnect();
  await ts?.stop();
  ts = null;
});

async function start(overrides: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  ts = await startTestServer({ avatar: { engine: 'portrait' }, ...overrides });
  return ts;
}

async function upload(base: string, key: string | null, extra: Record<string, string> = {}): Promise<Response> {
  const form = new FormData();
  form.append('consent', 'true');
  for (const [k, v] of Object.entries(extra)) form.append(k, v);
  form.append('file', new Blob([new Uint8Array(await readFile(portraitFile('real_woman_dark_hair.png')))]), 'p.png');
  return fetch(`${base}/api/portraits`, { method: 'POST', body: form, headers: key ? apiAuth(key) : {} });
}

async function code(res: Response): Promise<[number, string]> {
  return [res.status, ((await res.json()) as { code: string }).code];
}

describe('API keys and owners', () => {
  it('refuses management calls without a valid key, and keeps each owner to its own portraits and rooms', async () => {
    const s = await start();
    // No key, a wrong key, a malformed header.
    const none = await fetch(`${s.url}/api/portraits`);
    expect(await code(none)).toEqual([401, 'API_KEY_REQUIRED']);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(await code(await fetch(`${s.url}/api/portraits`, { headers: apiAuth('not-a-key-0123456789') }))).toEqual([
      401,
      'API_KEY_INVALID',
    ]);
    expect(
      await code(await fetch(`${s.url}/api/rooms`, { method: 'POST', headers: { authorization: 'Basic abc' } })),
    ).toEqual([401, 'API_KEY_REQUIRED']);
    expect(await code(await upload(s.url, null))).toEqual([401, 'API_KEY_REQUIRED']);
    expect(s.server.portraits.size).toBe(0);

    // 'test' uploads and creates a room.
    const up = await upload(s.url, TEST_API_KEY);
    expect(up.status).toBe(201);
    const pid = ((await up.json()) as { id: string }).id;
    const made = await fetch(`${s.url}/api/rooms`, {
      method: 'POST',
      headers: { ...apiAuth(TEST_API_KEY), 'content-type': 'application/json' },
      body: JSON.stringify({ portraitId: pid }),
    });
    expect(made.status).toBe(201);
    const room = (await made.json()) as { roomId: string };

    // 'other' sees nothing of it: not in lists, 404 by id, cannot use it in a room, delete it or end the room.
    const other = apiAuth(OTHER_API_KEY);
    expect(
      ((await (await fetch(`${s.url}/api/portraits`, { headers: other })).json()) as { portraits: unknown[] })
        .portraits,
    ).toEqual([]);
    expect(
      ((await (await fetch(`${s.url}/api/rooms`, { headers: other })).json()) as { rooms: unknown[] }).rooms,
    ).toEqual([]);
    for (const p of [
      `/api/portraits/${pid}`,
      `/api/portraits/${pid}/image`,
      `/api/portraits/${pid}/image?variant=original`,
      `/api/portraits/${pid}/consent`,
    ]) {
      expect(await code(await fetch(`${s.url}${p}`, { headers: other }))).toEqual([404, 'NOT_FOUND']);
    }
    const unknown = await fetch(`${s.url}/api/portraits/${'0'.repeat(32)}`, { headers: other });
    expect(await code(unknown)).toEqual([404, 'NOT_FOUND']); // the same answer as for an id that exists
    expect(
      await code(
        await fetch(`${s.url}/api/rooms`, {
          method: 'POST',
          headers: { ...other, 'content-type': 'application/json' },
          body: JSON.stringify({ portraitId: pid }),
        }),
      ),
    ).toEqual([404, 'NOT_FOUND']);
    expect(await code(await fetch(`${s.url}/api/portraits/${pid}`, { method: 'DELETE', headers: other }))).toEqual([
      404,
      'NOT_FOUND',
    ]);
    expect(await code(await fetch(`${s.url}/api/rooms/${room.roomId}`, { method: 'DELETE', headers: other }))).toEqual([
      404,
      'ROOM_NOT_FOUND',
    ]);
    expect(
      await code(await fetch(`${s.url}/api/rooms/${room.roomId}/revoke`, { method: 'POST', headers: other })),
    ).toEqual([404, 'ROOM_NOT_FOUND']);
    expect(
      ((await (await fetch(`${s.url}/api/consent-log`, { headers: other })).json()) as { log: unknown[] }).log,
    ).toEqual([]);
    expect(s.server.portraits.size).toBe(1);
    expect(s.server.rooms.size).toBe(1);

    // The owner sees both, and may end the room with its key.
    const mine = (await (await fetch(`${s.url}/api/rooms`, { headers: apiAuth() })).json()) as {
      rooms: { roomId: string; portraitId: string }[];
    };
    expect(mine.rooms).toEqual([expect.objectContaining({ roomId: room.roomId, portraitId: pid })]);
    expect((await fetch(`${s.url}/api/rooms/${room.roomId}`, { method: 'DELETE', headers: apiAuth() })).status).toBe(
      204,
    );
    expect(s.server.rooms.size).toBe(0);
  });

  it('rate limits per address and per key with 429 and Retry-After', async () => {
    const s = await start({ auth: { perAddressPerMinute: 5, perKeyPerMinute: 1000 } });
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 8; i++) {
      const r = await fetch(`${s.url}/api/portraits`, { headers: apiAuth() });
      statuses.push(r.status);
      if (r.status === 429) {
        retryAfter = r.headers.get('retry-after');
        expect(((await r.json()) as PublicError).code).toBe('TOO_MANY_REQUESTS');
      }
    }
    expect(statuses.slice(0, 5)).toEqual([200, 200, 200, 200, 200]);
    expect(statuses.slice(5)).toEqual([429, 429, 429]);
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
    expect(Number(retryAfter)).toBeLessThanOrEqual(60);
    // Pages and health are not limited.
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    await s.stop();

    const k = await start({ auth: { perAddressPerMinute: 1000, perKeyPerMinute: 3 } });
    const perKey: number[] = [];
    for (let i = 0; i < 4; i++) perKey.push((await fetch(`${k.url}/api/rooms`, { headers: apiAuth() })).status);
    expect(perKey).toEqual([200, 200, 200, 429]);
    // Another key has its own bucket.
    expect((await fetch(`${k.url}/api/rooms`, { headers: apiAuth(OTHER_API_KEY) })).status).toBe(200);
  });
});

describe('room links', () => {
  it('revoking drops sockets joined with old links, refuses them, and the fresh links work', async () => {
    const s = await start();
    const res = await fetch(`${s.url}/api/rooms`, {
      method: 'POST',
      headers: { ...apiAuth(), 'content-type': 'application/json' },
      body: '{}',
    });
    const room = (await res.json()) as {
      roomId: string;
      performerToken: string;
      viewerToken: string;
      expiresAt: string;
    };
    // Links expire in hours by default.
    const hours = (Date.parse(room.expiresAt) - Date.now()) / 3600_000;
    expect(hours).toBeGreaterThan(1);
    expect(hours).toBeLessThanOrEqual(24);

    const viewer = await connectClient(s.url);
    sockets.push(viewer);
    await call<JoinResponse>(viewer, 'join', { token: room.viewerToken });
    const failures: PublicError[] = [];
    let closed: string | null = null;
    viewer.on('failure', (e) => failures.push(e));
    viewer.on('closed', ({ reason }) => (closed = reason));

    const rv = await fetch(`${s.url}/api/rooms/${room.roomId}/revoke`, { method: 'POST', headers: apiAuth() });
    expect(rv.status).toBe(200);
    const fresh = (await rv.json()) as { performerToken: string; viewerToken: string };
    expect(fresh.viewerToken).not.toBe(room.viewerToken);
    await waitFor(() => closed !== null && !viewer.connected, 5000, 'the old viewer dropped');
    expect(closed).toBe('links-revoked');
    expect(failures.map((f) => f.code)).toEqual(['TOKEN_REVOKED']);

    const again = await connectClient(s.url);
    sockets.push(again);
    const old = await request(again, 'join', { token: room.viewerToken });
    expect(old.ok ? null : old.error.code).toBe('TOKEN_REVOKED');
    const oldPerformer = await fetch(`${s.url}/api/rooms/${room.roomId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${room.performerToken}` },
    });
    expect(await code(oldPerformer)).toEqual([401, 'TOKEN_REVOKED']);
    const ok = await request(again, 'join', { token: fresh.viewerToken });
    expect(ok.ok).toBe(true);
  });
});

describe('consent', () => {
  it('stores the text and version, logs consent/use/deletion append-only, and deletion stops the rooms animating it', async () => {
    const s = await start();
    const terms = (await (await fetch(`${s.url}/api/consent`)).json()) as { version: string; text: string };
    expect(terms.version).toBe(defaultConfig().consent.version);
    expect(terms.text.length).toBeGreaterThan(50);
    expect(await code(await upload(s.url, TEST_API_KEY, { consentVersion: 'an-old-version' }))).toEqual([
      422,
      'CONSENT_REQUIRED',
    ]);

    const up = await upload(s.url, TEST_API_KEY, { consentVersion: terms.version });
    const pid = ((await up.json()) as { id: string }).id;
    const rec = JSON.parse(await readFile(path.join(s.dataDir, 'portraits', `${pid}.json`), 'utf8')) as Record<
      string,
      unknown
    >;
    expect(rec).toMatchObject({ owner: 'test', consent: { given: true, version: terms.version, text: terms.text } });

    const made = await fetch(`${s.url}/api/rooms`, {
      method: 'POST',
      headers: { ...apiAuth(), 'content-type': 'application/json' },
      body: JSON.stringify({ portraitId: pid }),
    });
    const room = (await made.json()) as { roomId: string; viewerToken: string };
    const viewer = await connectClient(s.url);
    sockets.push(viewer);
    await call(viewer, 'join', { token: room.viewerToken });
    let closed: string | null = null;
    viewer.on('closed', ({ reason }) => (closed = reason));
    await waitFor(
      async () =>
        (
          (await (await fetch(`${s.url}/api/portraits/${pid}/consent`, { headers: apiAuth() })).json()) as {
            log: unknown[];
          }
        ).log.length === 2,
      5000,
      'use logged',
    );

    const c = (await (await fetch(`${s.url}/api/portraits/${pid}/consent`, { headers: apiAuth() })).json()) as {
      consent: { version: string; text: string };
      log: { event: string; roomId?: string; version?: string }[];
    };
    expect(c.consent.version).toBe(terms.version);
    expect(c.log.map((e) => e.event)).toEqual(['consent', 'used']);
    expect(c.log[0]!.version).toBe(terms.version);
    expect(c.log[1]!.roomId).toBe(room.roomId);

    const logFile = path.join(s.dataDir, 'portraits', 'consent.log');
    const before = await readFile(logFile, 'utf8');
    expect((await fetch(`${s.url}/api/portraits/${pid}`, { method: 'DELETE', headers: apiAuth() })).status).toBe(204);
    // Its files are gone; the room animating it ended and told its sockets why.
    expect((await readdir(path.join(s.dataDir, 'portraits'))).filter((f) => f.startsWith(pid))).toEqual([]);
    await waitFor(() => closed !== null, 5000, 'room closed');
    expect(closed).toBe('portrait-deleted');
    expect(s.server.rooms.size).toBe(0);
    // Append-only: the old lines are untouched, a 'deleted' line follows; the owner can still read it.
    const after = await readFile(logFile, 'utf8');
    expect(after.startsWith(before)).toBe(true);
    const log = (
      (await (await fetch(`${s.url}/api/consent-log`, { headers: apiAuth() })).json()) as {
        log: { event: string; portraitId: string }[];
      }
    ).log;
    expect(log.filter((e) => e.portraitId === pid).map((e) => e.event)).toEqual(['consent', 'used', 'deleted']);
    expect(
      (
        (await (await fetch(`${s.url}/api/consent-log`, { headers: apiAuth(OTHER_API_KEY) })).json()) as {
          log: unknown[];
        }
      ).log,
    ).toEqual([]);
    expect(await code(await fetch(`${s.url}/api/portraits/${pid}/consent`, { headers: apiAuth() }))).toEqual([
      404,
      'NOT_FOUND',
    ]);
  });
});

describe('the local operator key', () => {
  it('is created once in the data folder (0600) when no key is configured, and kept across restarts', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'avatar-op-'));
    try {
      const config = loadConfig(
        {},
        { port: 0, logLevel: 'silent', dataDir, avatar: { engine: 'portrait' }, fanout: { mode: 'direct' } },
      );
      expect(config.host).toBe('127.0.0.1'); // loopback unless told otherwise
      const a = await createServer(config);
      const key = a.operatorKey;
      await a.close();
      expect(key).toMatch(/^ak_[A-Za-z0-9_-]{43}$/);
      const st = await stat(path.join(dataDir, 'operator-key'));
      expect(st.mode & 0o777).toBe(0o600);
      const b = await createServer(config);
      try {
        expect(b.operatorKey).toBe(key);
        expect((await fetch(`${b.url}/api/portraits`, { headers: apiAuth(key!) })).status).toBe(200);
        expect((await fetch(`${b.url}/api/portraits`)).status).toBe(401);
      } finally {
        await b.close();
      }
      // A configured key replaces it: the operator key no longer works.
      const c = await createServer({
        ...config,
        auth: { ...config.auth, apiKeys: [{ name: 'ops', secret: TEST_API_KEY }] },
      });
      try {
        expect(c.operatorKey).toBeNull();
        expect((await fetch(`${c.url}/api/portraits`, { headers: apiAuth(key!) })).status).toBe(401);
      } finally {
        await c.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it("npm start's entry prints the studio address and where the key is (the key itself only to a terminal)", async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'avatar-main-'));
    const proc = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'server', 'main.ts')], {
      cwd: repoRoot,
      env: {
        ...process.env,
        PORT: '0',
        AVATAR_DATA_DIR: dataDir,
        AVATAR_ENGINE: 'portrait',
        FANOUT: 'direct',
        LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      // Piped output (logs): the address and the key file, not the key (tests/security/redact.test.ts: a terminal).
      const studio = await waitFor(
        () => /Studio: (http:\/\/127\.0\.0\.1:\d+\/) .*the key is in (\S+)\)/.exec(out),
        60_000,
        'studio address',
      );
      const key = (await readFile(studio[2]!, 'utf8')).trim();
      expect(studio[2]).toBe(path.join(dataDir, 'operator-key'));
      expect(out).not.toContain(key);
      const origin = new URL(studio[1]!).origin;
      expect((await fetch(`${origin}/api/portraits`, { headers: apiAuth(key) })).status).toBe(200);
      expect((await fetch(studio[1]!)).status).toBe(200); // the studio page itself
    } finally {
      proc.kill('SIGTERM');
      await new Promise((r) => proc.once('exit', r));
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
