/**
 * The REST API, health, metrics and the client pages, as routes on a Router:
 *
 *   GET    /                          client/studio.html (the performer studio)
 *   GET    /view                      client/viewer.html (viewer, OBS browser source)
 *   GET    /dist/*                    client/dist/* (bundles built by `npm run build:client`)
 *   GET    /healthz                   {status, rooms, viewers, fanout, engine, uptimeS}
 *   GET    /metrics                   Prometheus text
 *   POST   /api/portraits             multipart upload: file, consent=true, name?, uploader? → 201 summary
 *   GET    /api/portraits             {portraits: summary[]}
 *   GET    /api/portraits/:id         summary
 *   GET    /api/portraits/:id/image   the normalised PNG (?variant=original: the uploaded bytes)
 *   DELETE /api/portraits/:id         204
 *   POST   /api/rooms                 JSON {portraitId?} → 201 {roomId, performerUrl, viewerUrl, performerToken,
 *                                     viewerToken, expiresAt}
 *   DELETE /api/rooms/:id             Authorization: Bearer <performer token of that room> → 204
 *
 * Errors are `{code, message}` with the code's HTTP status (server/errors.ts).
 */
import path from 'node:path';
import { bearerToken, signToken, verifyToken } from '../auth/tokens.js';
import type { Config } from '../config.js';
import { AppError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { PortraitStore } from '../portraits/store.js';
import { summarize } from '../portraits/store.js';
import type { RoomRegistry } from '../rooms/registry.js';
import { PORTRAIT_ID_RE } from '../signaling/validate.js';
import type { Handler, HttpExchange } from './exchange.js';
import { multipartBoundary, parseMultipart } from './multipart.js';
import type { Router } from './router.js';
import { serveFile } from './static.js';

export interface ApiDeps {
  config: Config;
  portraits: PortraitStore;
  registry: RoomRegistry;
  metrics: Metrics;
  fanoutKind: () => string;
  /** Folder with studio.html, viewer.html and dist/. */
  clientDir: string;
  startedAt: number;
  /** The server's own port, for links when neither publicUrl nor a Host header is available. */
  port: () => number;
}

/** Largest JSON body of the small API requests. */
export const MAX_JSON_BODY = 16 * 1024;
/** Room for the multipart envelope and the small fields around the file. */
const MULTIPART_OVERHEAD = 64 * 1024;

/** Parses a JSON object body; empty body → {}. */
async function jsonBody(ex: HttpExchange): Promise<Record<string, unknown>> {
  const body = await ex.body();
  if (body.length === 0) return {};
  const ct = ex.headers['content-type'] ?? '';
  if (!/^application\/json\b/i.test(ct)) throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'send application/json');
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new AppError('BAD_REQUEST', 'malformed JSON', { cause: err });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new AppError('BAD_REQUEST', 'body must be a JSON object');
  return v as Record<string, unknown>;
}

/** The base URL for links: config.publicUrl, else the request's Host (and X-Forwarded-Proto). */
export function baseUrl(config: Config, headers: Readonly<Record<string, string>>, port: number): string {
  if (config.publicUrl) return config.publicUrl.replace(/\/+$/, '');
  const host = headers['host'];
  const proto = headers['x-forwarded-proto'] === 'https' ? 'https' : 'http';
  if (host && /^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(host)) return `${proto}://${host}`;
  return `http://localhost:${port}`;
}

function portraitId(params: Record<string, string>): string {
  const id = params.id ?? '';
  if (!PORTRAIT_ID_RE.test(id)) throw new AppError('NOT_FOUND', 'no such portrait');
  return id;
}

export function addApiRoutes(router: Router<Handler>, d: ApiDeps): void {
  const { config, portraits, registry } = d;
  const base = (ex: HttpExchange): string => baseUrl(config, ex.headers, d.port());

  router.add('GET', '/', (ex) => serveFile(ex, d.clientDir, 'studio.html'));
  router.add('GET', '/view', (ex) => serveFile(ex, d.clientDir, 'viewer.html'));
  router.add('GET', '/dist/*', (ex, p) => serveFile(ex, path.join(d.clientDir, 'dist'), p['*'] ?? ''));

  router.add('GET', '/healthz', (ex) => {
    ex.json(200, {
      status: 'ok',
      rooms: registry.size,
      viewers: registry.viewerCount(),
      fanout: d.fanoutKind(),
      engine: config.avatar.engine,
      uptimeS: Math.round((Date.now() - d.startedAt) / 1000),
    });
  });
  router.add('GET', '/metrics', async (ex) => {
    const text = await d.metrics.text();
    ex.send(200, { 'content-type': d.metrics.contentType, 'cache-control': 'no-store' }, text);
  });

  router.add(
    'POST',
    '/api/portraits',
    async (ex) => {
      const boundary = multipartBoundary(ex.headers['content-type']);
      if (!boundary) throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'send multipart/form-data');
      const parts = parseMultipart(await ex.body(), boundary);
      const field = (name: string): string | undefined => {
        const found = parts.filter((p) => p.name === name);
        if (found.length > 1) throw new AppError('BAD_REQUEST', `field "${name}" given more than once`);
        return found[0]?.data.toString('utf8');
      };
      const files = parts.filter((p) => p.name === 'file');
      if (files.length > 1) throw new AppError('BAD_REQUEST', 'send one file');
      const consent = field('consent') === 'true';
      const file = files[0];
      if (!file && consent) throw new AppError('BAD_REQUEST', 'the "file" field is required');
      const rec = await portraits.add({
        data: file?.data ?? Buffer.alloc(0),
        filename: file?.filename,
        name: field('name'),
        uploader: field('uploader'),
        uploaderIp: ex.remoteIp,
        consent,
      });
      const s = summarize(rec, base(ex));
      ex.json(201, { id: s.id, name: s.name, width: s.width, height: s.height, url: s.url });
    },
    { maxBody: config.upload.maxBytes + MULTIPART_OVERHEAD },
  );
  router.add('GET', '/api/portraits', (ex) => {
    const b = base(ex);
    ex.json(200, { portraits: portraits.list().map((r) => summarize(r, b)) });
  });
  router.add('GET', '/api/portraits/:id', (ex, p) => {
    ex.json(200, summarize(portraits.get(portraitId(p)), base(ex)));
  });
  router.add('GET', '/api/portraits/:id/image', async (ex, p) => {
    const variant = ex.query.get('variant') === 'original' ? 'original' : 'normalized';
    const img = await portraits.image(portraitId(p), variant);
    ex.send(200, { 'content-type': img.contentType, 'cache-control': 'private, max-age=3600' }, img.data);
  });
  router.add('DELETE', '/api/portraits/:id', async (ex, p) => {
    await portraits.delete(portraitId(p));
    ex.send(204, {});
  });

  router.add(
    'POST',
    '/api/rooms',
    async (ex) => {
      const body = await jsonBody(ex);
      for (const k of Object.keys(body)) if (k !== 'portraitId') throw new AppError('BAD_REQUEST', `unknown field "${k}"`);
      let pid: string | undefined;
      if (body.portraitId !== undefined && body.portraitId !== null) {
        if (typeof body.portraitId !== 'string') throw new AppError('BAD_REQUEST', 'portraitId must be a string');
        if (!PORTRAIT_ID_RE.test(body.portraitId)) throw new AppError('NOT_FOUND', 'no such portrait');
        pid = body.portraitId;
      }
      const room = await registry.create(pid === undefined ? {} : { portraitId: pid });
      const exp = Date.now() + config.tokenTtlMs;
      const performerToken = signToken({ room: room.id, role: 'performer', exp }, config.tokenSecret);
      const viewerToken = signToken({ room: room.id, role: 'viewer', exp }, config.tokenSecret);
      const b = base(ex);
      const q = (t: string): string => `room=${encodeURIComponent(room.id)}&token=${encodeURIComponent(t)}`;
      ex.json(201, {
        roomId: room.id,
        performerUrl: `${b}/?${q(performerToken)}`,
        viewerUrl: `${b}/view?${q(viewerToken)}`,
        performerToken,
        viewerToken,
        expiresAt: new Date(exp).toISOString(),
      });
    },
    { maxBody: MAX_JSON_BODY },
  );
  router.add('DELETE', '/api/rooms/:id', (ex, p) => {
    const token = bearerToken(ex.headers['authorization']);
    if (!token) throw new AppError('TOKEN_INVALID', 'send the performer token as Authorization: Bearer <token>');
    const t = verifyToken(token, config.tokenSecret);
    const id = p.id ?? '';
    if (t.room !== id || t.role !== 'performer') throw new AppError('FORBIDDEN', 'only the room\'s performer can end it');
    registry.closeRoom(id, 'room-deleted');
    ex.send(204, {});
  });
}
