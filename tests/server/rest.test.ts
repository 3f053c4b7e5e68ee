/**
 * REST API against a real server on port 0: portraits (upload, list, fetch, delete, every refusal), rooms, health,
 * metrics, client pages, 404/405. Each test starts its own server and checks that its port is free after close.
 */
import { readFile, readdir } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import sharp from 'sharp';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyToken } from '../../server/auth/tokens.js';
import { isPortFree } from '../helpers/net.js';
import { portraitFile } from '../../scripts/testData.js';
import { startTestServer, TEST_TOKEN_SECRET, type TestServer, apiFetch, apiAuth } from '../helpers/server.js';

const PORTRAIT = portraitFile('real_asian_young_woman.jpg');

let ts: TestServer;
beforeEach(async () => {
  ts = await startTestServer({ upload: { maxBytes: 2 * 1024 * 1024, maxPixels: 4_000_000 } });
});
afterEach(async () => {
  await ts.stop();
  expect(await isPortFree(ts.port)).toBe(true);
});

async function upload(
  data: Buffer,
  opts: { filename?: string; consent?: string | null; name?: string; uploader?: string } = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const form = new FormData();
  if (opts.consent !== null) form.append('consent', opts.consent ?? 'true');
  if (opts.name) form.append('name', opts.name);
  if (opts.uploader) form.append('uploader', opts.uploader);
  form.append('file', new Blob([new Uint8Array(data)]), opts.filename ?? 'portrait.jpg');
  const res = await apiFetch(`${ts.url}/api/portraits`, { method: 'POST', body: form });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function portraitFiles(): Promise<string[]> {
  return (await readdir(path.join(ts.dataDir, 'portraits'))).sort();
}

describe('portraits', () => {
  it('uploads a real portrait, lists it, serves its image, records consent, and deletes it', async () => {
    const original = await readFile(PORTRAIT);
    const up = await upload(original, { filename: 'woman.jpg', uploader: 'tester' });
    expect(up.status).toBe(201);
    expect(up.body).toMatchObject({ name: 'woman', width: 512, height: 512 });
    const id = up.body.id as string;
    expect(id).toMatch(/^[a-f0-9]{32}$/);
    expect(up.body.url).toBe(`${ts.url}/api/portraits/${id}/image`);

    const list = (await (await apiFetch(`${ts.url}/api/portraits`)).json()) as { portraits: Record<string, unknown>[] };
    expect(list.portraits).toHaveLength(1);
    expect(list.portraits[0]).toMatchObject({ id, name: 'woman', uploader: 'tester', width: 512, height: 512 });
    expect(list.portraits[0]).not.toHaveProperty('uploaderIp');

    const img = await apiFetch(`${ts.url}/api/portraits/${id}/image`);
    expect(img.status).toBe(200);
    expect(img.headers.get('content-type')).toBe('image/png');
    const meta = await sharp(Buffer.from(await img.arrayBuffer())).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 512, 512]);
    const orig = await apiFetch(`${ts.url}/api/portraits/${id}/image?variant=original`);
    expect(orig.headers.get('content-type')).toBe('image/jpeg');
    expect(Buffer.compare(Buffer.from(await orig.arrayBuffer()), original)).toBe(0);

    const rec = JSON.parse(await readFile(path.join(ts.dataDir, 'portraits', `${id}.json`), 'utf8')) as Record<
      string,
      unknown
    >;
    expect(rec).toMatchObject({
      id,
      uploader: 'tester',
      uploaderIp: '127.0.0.1',
      consent: { given: true },
      usedInRooms: [],
    });
    // The consent log (consent.log) is the store's own file, not the portrait's.
    expect(await portraitFiles()).toEqual([`${id}.json`, `${id}.orig.jpg`, `${id}.png`, 'consent.log'].sort());

    const del = await apiFetch(`${ts.url}/api/portraits/${id}`, { method: 'DELETE' });
    expect(del.status).toBe(204);
    expect((await apiFetch(`${ts.url}/api/portraits/${id}/image`)).status).toBe(404);
    const again = await apiFetch(`${ts.url}/api/portraits/${id}`, { method: 'DELETE' });
    expect([again.status, ((await again.json()) as { code: string }).code]).toEqual([404, 'NOT_FOUND']);
    expect(await portraitFiles()).toEqual(['consent.log']);
  });

  it('keeps portraits across a restart on the same data folder', async () => {
    const up = await upload(await readFile(PORTRAIT));
    expect(up.status).toBe(201);
    const { createServer } = await import('../../server/app.js');
    await ts.server.close();
    const again = await createServer({ ...ts.config, port: 0 });
    try {
      const list = (await (await apiFetch(`${again.url}/api/portraits`)).json()) as { portraits: { id: string }[] };
      expect(list.portraits.map((p) => p.id)).toEqual([up.body.id]);
    } finally {
      await again.close();
    }
  });

  it('refuses an oversized upload with 413 without storing anything', async () => {
    const big = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff]), Buffer.alloc(3 * 1024 * 1024, 7)]);
    const up = await upload(big);
    expect([up.status, up.body.code]).toEqual([413, 'PAYLOAD_TOO_LARGE']);
    expect(await portraitFiles()).toEqual([]);
    // The server still serves after dropping that connection.
    expect((await fetch(`${ts.url}/healthz`)).status).toBe(200);
  });

  it('stops reading a chunked upload (no Content-Length) as soon as it passes the cap', async () => {
    // A raw HTTP client: the server answers 413 and closes while the client is still sending, so the client may
    // see the 413 or, when the close wins the race, a reset (EPIPE/ECONNRESET). Either way the server must have
    // stopped reading long before the 64 MiB this client would send, and stored nothing.
    const { request } = await import('node:http');
    const chunk = Buffer.alloc(64 * 1024, 1);
    let sent = 0;
    const outcome = await new Promise<{ status: number; body: string } | { error: string }>((resolve) => {
      const req = request(`${ts.url}/api/portraits`, {
        method: 'POST',
        headers: { 'content-type': 'multipart/form-data; boundary=xyz', 'transfer-encoding': 'chunked', ...apiAuth() },
      });
      let answered = false;
      req.on('response', (res) => {
        answered = true;
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (!answered) resolve({ error: err.code ?? err.message });
      });
      const pump = (): void => {
        while (!answered && !req.destroyed && sent < 64 * 1024 * 1024) {
          sent += chunk.length;
          if (!req.write(chunk)) {
            req.once('drain', pump);
            return;
          }
        }
        if (!req.destroyed && !answered) req.end();
      };
      pump();
    });
    if ('error' in outcome) expect(['EPIPE', 'ECONNRESET']).toContain(outcome.error);
    else
      expect([outcome.status, (JSON.parse(outcome.body) as { code: string }).code]).toEqual([413, 'PAYLOAD_TOO_LARGE']);
    expect(sent).toBeLessThan(16 * 1024 * 1024);
    expect(await portraitFiles()).toEqual([]);
    expect((await fetch(`${ts.url}/healthz`)).status).toBe(200);
  });

  it('refuses a text file named .jpg with 415, and a truncated image with 415', async () => {
    const up = await upload(Buffer.from('this is not an image, just text pretending to be one\n'.repeat(20)), {
      filename: 'photo.jpg',
    });
    expect([up.status, up.body.code]).toEqual([415, 'UNSUPPORTED_MEDIA_TYPE']);
    const jpeg = await readFile(PORTRAIT);
    const cut = await upload(jpeg.subarray(0, Math.floor(jpeg.length / 3)));
    expect([cut.status, cut.body.code]).toEqual([415, 'UNSUPPORTED_MEDIA_TYPE']);
    expect(await portraitFiles()).toEqual([]);
  });

  it('requires consent=true (422 CONSENT_REQUIRED)', async () => {
    const data = await readFile(PORTRAIT);
    for (const consent of [null, 'false', 'yes']) {
      const up = await upload(data, { consent });
      expect([up.status, up.body.code]).toEqual([422, 'CONSENT_REQUIRED']);
    }
    expect(await portraitFiles()).toEqual([]);
  });

  it('refuses too many pixels (IMAGE_TOO_LARGE) and too small a side (IMAGE_TOO_SMALL)', async () => {
    // 2500x2000 = 5 Mpx > the 4 Mpx limit of this server; a flat PNG compresses to a few KB.
    const big = await sharp({
      create: { width: 2500, height: 2000, channels: 3, background: { r: 90, g: 120, b: 150 } },
    })
      .png()
      .toBuffer();
    const up = await upload(big, { filename: 'big.png' });
    expect([up.status, up.body.code]).toEqual([413, 'IMAGE_TOO_LARGE']);
    const tiny = await sharp({ create: { width: 40, height: 200, channels: 3, background: { r: 1, g: 2, b: 3 } } })
      .webp()
      .toBuffer();
    const up2 = await upload(tiny, { filename: 'tiny.webp' });
    expect([up2.status, up2.body.code]).toEqual([422, 'IMAGE_TOO_SMALL']);
    expect(await portraitFiles()).toEqual([]);
  });

  it('refuses non-multipart uploads and a missing file', async () => {
    const res = await apiFetch(`${ts.url}/api/portraits`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    expect([res.status, ((await res.json()) as { code: string }).code]).toEqual([415, 'UNSUPPORTED_MEDIA_TYPE']);
    const form = new FormData();
    form.append('consent', 'true');
    const res2 = await apiFetch(`${ts.url}/api/portraits`, { method: 'POST', body: form });
    expect([res2.status, ((await res2.json()) as { code: string }).code]).toEqual([400, 'BAD_REQUEST']);
  });

  it('runs the injected face check and stores nothing when it refuses', async () => {
    await ts.stop();
    const { AppError } = await import('../../server/errors.js');
    let seen = 0;
    ts = await startTestServer(
      {},
      {
        checkFace: (rgb) => {
          seen = rgb.width * rgb.height;
          return Promise.reject(new AppError('NO_FACE', 'no face found in the portrait'));
        },
      },
    );
    const up = await upload(await readFile(PORTRAIT));
    expect([up.status, up.body.code]).toEqual([422, 'NO_FACE']);
    expect(seen).toBe(512 * 512);
    expect(await portraitFiles()).toEqual([]);
  });
});

describe('rooms', () => {
  it("creates a room with signed performer and viewer links, and deletes it with the performer token (not the viewer's)", async () => {
    const res = await apiFetch(`${ts.url}/api/rooms`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    expect(res.status).toBe(201);
    const room = (await res.json()) as Record<string, string>;
    expect(room.roomId).toMatch(/^[A-Za-z0-9_-]{12}$/);
    expect(room.performerUrl).toBe(`${ts.url}/?room=${room.roomId}&token=${room.performerToken}`);
    expect(room.viewerUrl).toBe(`${ts.url}/view?room=${room.roomId}&token=${room.viewerToken}`);
    expect(verifyToken(room.performerToken, TEST_TOKEN_SECRET)).toMatchObject({ room: room.roomId, role: 'performer' });
    expect(verifyToken(room.viewerToken, TEST_TOKEN_SECRET)).toMatchObject({ room: room.roomId, role: 'viewer' });
    expect(Date.parse(room.expiresAt!)).toBeGreaterThan(Date.now());

    const health = (await (await fetch(`${ts.url}/healthz`)).json()) as Record<string, unknown>;
    expect(health.rooms).toBe(1);

    const noAuth = await fetch(`${ts.url}/api/rooms/${room.roomId}`, { method: 'DELETE' });
    expect([noAuth.status, ((await noAuth.json()) as { code: string }).code]).toEqual([401, 'API_KEY_REQUIRED']);
    const asViewer = await apiFetch(`${ts.url}/api/rooms/${room.roomId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${room.viewerToken}` },
    });
    expect([asViewer.status, ((await asViewer.json()) as { code: string }).code]).toEqual([403, 'FORBIDDEN']);
    const ok = await apiFetch(`${ts.url}/api/rooms/${room.roomId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${room.performerToken}` },
    });
    expect(ok.status).toBe(204);
    expect(ts.server.rooms.size).toBe(0);
    const gone = await apiFetch(`${ts.url}/api/rooms/${room.roomId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${room.performerToken}` },
    });
    expect([gone.status, ((await gone.json()) as { code: string }).code]).toEqual([404, 'ROOM_NOT_FOUND']);
  });

  it('refuses an unknown portrait, bad JSON and unknown fields', async () => {
    const post = (body: string, ct = 'application/json'): Promise<Response> =>
      apiFetch(`${ts.url}/api/rooms`, { method: 'POST', headers: { 'content-type': ct }, body });
    const cases: [Response, number, string][] = [
      [await post(JSON.stringify({ portraitId: 'f'.repeat(32) })), 404, 'NOT_FOUND'],
      [await post('{nope'), 400, 'BAD_REQUEST'],
      [await post('[1]'), 400, 'BAD_REQUEST'],
      [await post(JSON.stringify({ portraitId: 7 })), 400, 'BAD_REQUEST'],
      [await post(JSON.stringify({ owner: 'x' })), 400, 'BAD_REQUEST'],
      [await post('{}', 'text/plain'), 415, 'UNSUPPORTED_MEDIA_TYPE'],
      [await post(JSON.stringify({ pad: 'x'.repeat(20_000) })), 413, 'PAYLOAD_TOO_LARGE'],
    ];
    for (const [res, status, code] of cases)
      expect([res.status, ((await res.json()) as { code: string }).code]).toEqual([status, code]);
    expect(ts.server.rooms.size).toBe(0);
  });
});

describe('health, metrics, pages and errors', () => {
  it('reports health', async () => {
    const res = await fetch(`${ts.url}/healthz`);
    expect(res.status).toBe(200);
    const h = (await res.json()) as Record<string, unknown>;
    expect(h).toMatchObject({
      status: 'ok',
      rooms: 0,
      viewers: 0,
      fanout: process.env.MEDIASOUP_WORKER_BIN ? 'sfu' : 'direct',
      engine: ts.config.avatar.engine,
    });
    expect(typeof h.uptimeS).toBe('number');
  });

  it('exposes Prometheus metrics with the stage histograms and process metrics', async () => {
    const res = await fetch(`${ts.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    for (const stage of [
      'decode',
      'queue',
      'track',
      'latent',
      'generate',
      'paste',
      'engine',
      'publish',
      'end_to_end',
    ]) {
      expect(text).toContain(`# TYPE avatar_${stage}_seconds histogram`);
    }
    for (const name of [
      'avatar_room_fps',
      'avatar_frames_total',
      'avatar_dropped_frames_total',
      'avatar_rooms 0',
      'avatar_viewers 0',
      'process_cpu_user_seconds_total',
    ]) {
      expect(text).toContain(name);
    }
  });

  it('serves the client pages with their content types and no traversal', async () => {
    const studio = await fetch(`${ts.url}/`);
    expect(studio.status).toBe(200);
    expect(studio.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(await studio.text()).toContain('<html');
    // The studio is cross-origin isolated (its face tracker runs WASM threads); the viewer (an OBS source, embeddable)
    // is not.
    expect([
      studio.headers.get('cross-origin-opener-policy'),
      studio.headers.get('cross-origin-embedder-policy'),
    ]).toEqual(['same-origin', 'require-corp']);
    const viewer = await fetch(`${ts.url}/view`);
    expect([viewer.status, viewer.headers.get('content-type')]).toEqual([200, 'text/html; charset=utf-8']);
    expect(viewer.headers.get('cross-origin-opener-policy')).toBeNull();
    expect(viewer.headers.get('cross-origin-embedder-policy')).toBeNull();
    for (const p of [
      '/dist/../studio.html',
      '/dist/%2e%2e/studio.html',
      '/dist/%2e%2e%2f%2e%2e%2fpackage.json',
      '/dist/..%2F..%2Fpackage.json',
    ]) {
      const res = await fetch(`${ts.url}${p}`);
      expect(res.status, p).toBe(404);
      expect(((await res.json()) as { code: string }).code).toBe('NOT_FOUND');
    }
  });

  it('answers unknown routes with 404 and wrong methods with 405, as {code, message}', async () => {
    const nf = await fetch(`${ts.url}/no/such/thing`);
    expect([nf.status, await nf.json()]).toEqual([404, { code: 'NOT_FOUND', message: 'no such resource' }]);
    const na = await apiFetch(`${ts.url}/api/portraits`, { method: 'PUT' });
    expect(na.status).toBe(405);
    expect(na.headers.get('allow')).toContain('GET');
    expect(((await na.json()) as { code: string }).code).toBe('METHOD_NOT_ALLOWED');
  });

  it('refuses to start on a port in use with a clear error', async () => {
    const { createServer } = await import('../../server/app.js');
    await expect(createServer({ ...ts.config, port: ts.port })).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
    expect((await fetch(`${ts.url}/healthz`)).status).toBe(200);
  });

  it('survives a client that goes away in the middle of an upload', async () => {
    const req = http.request(`${ts.url}/api/portraits`, {
      method: 'POST',
      headers: { 'content-type': 'multipart/form-data; boundary=xyz', 'content-length': String(1024 * 1024) },
    });
    const gone = new Promise<void>((resolve) => req.once('close', () => resolve()));
    req.on('error', () => undefined);
    req.write(
      Buffer.concat([
        Buffer.from('--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'),
        Buffer.alloc(64 * 1024, 1),
      ]),
    );
    await new Promise<void>((resolve) => req.once('socket', (sock) => sock.once('connect', () => resolve())));
    req.destroy();
    await gone;
    expect((await fetch(`${ts.url}/healthz`)).status).toBe(200);
    expect(await portraitFiles()).toEqual([]);
  });

  it('close() is idempotent and frees the port', async () => {
    await Promise.all([ts.server.close(), ts.server.close()]);
    expect(ts.server.closed).toBe(true);
    expect(await isPortFree(ts.port)).toBe(true);
  });
});
