/**
 * The REST API, health, metrics and the client pages, as routes on a Router:
 *
 *   GET    /                          client/studio.html (the performer studio, cross-origin isolated: COOP + COEP);
 *                                     /?key=KEY signs the browser in (below)
 *   POST   /signin                    form {key, next}: the sign-in confirmed from the page /?key= shows (below)
 *   GET    /view                      client/viewer.html (viewer, OBS browser source)
 *   GET    /dist/*                    client/dist/* (bundles built by `npm run build:client`)
 *   GET    /models/face/:file         blazeface.onnx, facemesh.onnx, iris.onnx of models/face (the browser's face
 *                                     tracker; it checks them against their pins); any other name is 404
 *   GET    /healthz                   {status, rooms, viewers, fanout, sfuWorkers, node, engine, uptimeS} (liveness)
 *   GET    /readyz                    {ready: true}; 503 {ready: false, reason: 'draining'} once closing began
 *   GET    /metrics                   Prometheus text
 *   GET    /api/consent               {version, text}: what an upload agrees to (no key needed)
 *
 * Management calls need `Authorization: Bearer <API key>` (401 API_KEY_REQUIRED / API_KEY_INVALID) and see only
 * what their key owns (another owner's portrait or room is 404, nothing leaks); every /api call is rate limited per
 * key and per client address (429 TOO_MANY_REQUESTS with Retry-After):
 *   POST   /api/portraits             multipart upload: file, consent=true, consentVersion?, name?, uploader? → 201
 *   GET    /api/portraits             {portraits: summary[]} (the key's own)
 *   GET    /api/portraits/:id         summary
 *   GET    /api/portraits/:id/image   the normalised PNG (?variant=original: the uploaded bytes)
 *   GET    /api/portraits/:id/consent {consent: {given, at, version, text}, log: ConsentEvent[]}
 *   GET    /api/consent-log           {log: ConsentEvent[]}: the key's whole consent log (deleted portraits too)
 *   DELETE /api/portraits/:id         204; its files go, the rooms animating it close ('portrait-deleted')
 *   POST   /api/rooms                 JSON {portraitId?} → 201 {roomId, performerUrl, viewerUrl, performerToken,
 *                                     viewerToken, expiresAt} (links expire after config.tokenTtlMs)
 *   GET    /api/rooms                 {rooms: [{roomId, portraitId, viewers, publishing}]} (the key's own)
 *   POST   /api/rooms/:id/revoke      every link of the room stops working (joined sockets are dropped) → 200 with
 *                                     fresh links, as POST /api/rooms
 *   DELETE /api/rooms/:id             the owner's API key, or the room's performer token → 204
 *
 * The studio sign-in: the key becomes an HttpOnly, SameSite=Strict cookie (Secure when the public URL or the proxy
 * says https). A key in the address signs in only from a top-level navigation the user started (typed in, opened
 * from the terminal, or a link on this server's pages: Sec-Fetch-Site none / same-origin); any other request to
 * /?key= (another site sending the user here: login CSRF) gets a page that asks the user to confirm, and only its
 * same-origin POST to /signin sets the cookie. Both are rate limited per address (auth.signInPerMinute), so the
 * address cannot be used to guess keys. A change authenticated by the cookie (POST/PUT/PATCH/DELETE) must come from
 * this server's own pages (Origin, or Sec-Fetch-Site same-origin): 403 ORIGIN_REFUSED otherwise. `Authorization:
 * Bearer` is not a cookie, so scripts need no Origin.
 *
 * Quotas per key (config.quotas): rooms open, portraits and bytes stored; beyond them POST /api/rooms and POST
 * /api/portraits answer 403 QUOTA_EXCEEDED (and POST /api/rooms 409 ROOM_BUSY at maxRooms over all keys).
 *
 * Errors are `{code, message}` with the code's HTTP status (server/errors.ts).
 */
import path from 'node:path';
import type { ApiKeys } from '../auth/apiKeys.js';
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
import { isUserNavigation, requireSameOrigin, UNSAFE_METHODS } from './origin.js';
import type { Router } from './router.js';
import { RateLimiter } from './rateLimit.js';
import { serveFile } from './static.js';
import { MESH_MODEL_NAMES } from '../vision/mesh/pins.js';

export interface ApiDeps {
  config: Config;
  portraits: PortraitStore;
  registry: RoomRegistry;
  metrics: Metrics;
  fanoutKind: () => string;
  /** Folder with studio.html, viewer.html and dist/. */
  clientDir: string;
  /** Folder of the face tracker's ONNX files (models/face), served to the browser's tracker. */
  faceModelDir: string;
  startedAt: number;
  /** The server's own port, for links when neither publicUrl nor a Host header is available. */
  port: () => number;
  /** The API keys management calls need. */
  keys: ApiKeys;
  /** Live mediasoup workers (0 with direct fan-out). */
  sfuWorkers?: () => number;
  /** False once the server has begun to close (draining): /readyz then answers 503 so no new room is sent here. */
  ready?: () => boolean;
}

/** The studio's sign-in cookie (set from the /?key= link). */
export const KEY_COOKIE = 'avatar_key';

/** The key in the studio's sign-in cookie, as an Authorization value, or undefined. */
function cookieKey(ex: HttpExchange): string | undefined {
  const m = new RegExp(`(?:^|;\\s*)${KEY_COOKIE}=([^;]+)`).exec(ex.headers['cookie'] ?? '');
  if (!m) return undefined;
  try {
    return `Bearer ${decodeURIComponent(m[1]!)}`;
  } catch {
    return undefined;
  }
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
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new AppError('BAD_REQUEST', 'body must be a JSON object');
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

const escapeHtml = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/** The confirmation page cannot be framed (no clickjacking), runs no script, and posts only to this server. */
const confirmHeaders: Record<string, string> = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  // Not no-referrer: with it the browser sends `Origin: null` on the form's POST, which /signin must refuse.
  'referrer-policy': 'same-origin',
  'x-frame-options': 'DENY',
  'content-security-policy':
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
};

/** The studio page's headers: cross-origin isolation (WASM threads for the browser face tracker). */
const STUDIO_ISOLATION: Readonly<Record<string, string>> = {
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
};

/** The page a studio link opened from another site shows: signing in needs the user's click (a same-origin POST). */
function confirmPage(key: string, next: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in to the studio?</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em}button{font:inherit;padding:.4em 1.2em}</style>
</head><body>
<h1>Sign in to the studio?</h1>
<p>This link signs this browser in to the live avatar studio with the key it carries. It was opened from another
site, so it needs your confirmation: sign in only if the server's operator gave you this link. Portraits you upload
afterwards belong to the key's owner.</p>
<form method="post" action="/signin">
<input type="hidden" name="key" value="${escapeHtml(key)}">
<input type="hidden" name="next" value="${escapeHtml(next)}">
<button type="submit" id="confirm">Sign in</button>
</form>
</body></html>
`;
}

export function addApiRoutes(router: Router<Handler>, d: ApiDeps): void {
  const { config, portraits, registry } = d;
  const base = (ex: HttpExchange): string => baseUrl(config, ex.headers, d.port());
  const perKey = new RateLimiter(config.auth.perKeyPerMinute, 'API key');
  const perAddress = new RateLimiter(config.auth.perAddressPerMinute, 'address');
  const signIns = new RateLimiter(config.auth.signInPerMinute, 'address (sign-in attempts)');
  // The face models are public (the studio's tracker loads them before any sign-in) and a few MB each: a stranger's
  // request costs the server a file read and the bytes, so each address gets a bounded number a minute.
  const modelDownloads = new RateLimiter(config.auth.modelDownloadsPerMinute, 'address (face model downloads)');
  /**
   * The request's credentials: the Authorization header, else the sign-in cookie, which a change (POST, DELETE...)
   * may use only from this server's own pages. @throws AppError('ORIGIN_REFUSED')
   */
  const credentials = (ex: HttpExchange): string | undefined => {
    const header = ex.headers['authorization'];
    if (header !== undefined) return header;
    const cookie = cookieKey(ex);
    if (cookie !== undefined && UNSAFE_METHODS.has(ex.method)) requireSameOrigin(ex.headers, config.publicUrl);
    return cookie;
  };
  /** Rate limits by address, then authenticates and rate limits by key; returns the key's name (the owner). */
  const owner = (ex: HttpExchange): string => {
    perAddress.take(ex.remoteIp);
    const name = d.keys.authenticate(credentials(ex));
    perKey.take(name);
    return name;
  };
  /** 303 to the studio at `query` (a query string only: never another place), with the cookie when `key` is valid. */
  const signIn = (ex: HttpExchange, key: string, query: URLSearchParams): void => {
    query.delete('key');
    const headers: Record<string, string> = {
      location: `/${query.size > 0 ? `?${query.toString()}` : ''}`,
      'cache-control': 'no-store',
      'referrer-policy': 'no-referrer',
    };
    if (d.keys.match(key) !== null) {
      const secure =
        ex.headers['x-forwarded-proto'] === 'https' || config.publicUrl?.startsWith('https:') ? '; Secure' : '';
      headers['set-cookie'] =
        `${KEY_COOKIE}=${encodeURIComponent(key)}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${30 * 86400}${secure}`;
    }
    ex.send(303, headers);
  };
  /** Fresh links for a room at its current link version. */
  const links = (ex: HttpExchange, roomId: string): Record<string, string> => {
    const exp = Date.now() + config.tokenTtlMs;
    const v = registry.linkVersion(roomId);
    const performerToken = signToken({ room: roomId, role: 'performer', exp, v }, config.tokenSecret);
    const viewerToken = signToken({ room: roomId, role: 'viewer', exp, v }, config.tokenSecret);
    const b = base(ex);
    const q = (t: string): string => `room=${encodeURIComponent(roomId)}&token=${encodeURIComponent(t)}`;
    return {
      roomId,
      performerUrl: `${b}/?${q(performerToken)}`,
      viewerUrl: `${b}/view?${q(viewerToken)}`,
      performerToken,
      viewerToken,
      expiresAt: new Date(exp).toISOString(),
    };
  };
  const roomId = (p: Record<string, string>): string => {
    const id = p.id ?? '';
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new AppError('ROOM_NOT_FOUND', 'no such room (it may have ended)');
    return id;
  };
  /** A room of `who`: another owner's room is ROOM_NOT_FOUND, as an unknown one. */
  const ownRoom = (id: string, who: string): void => {
    if (registry.ownerOf(id) !== who) throw new AppError('ROOM_NOT_FOUND', 'no such room (it may have ended)');
  };

  router.add('GET', '/', (ex) => {
    // The studio link `npm start` prints (/?key=...): the key becomes the sign-in cookie (so the page's fetches and
    // <img> requests carry it) and leaves the address bar (a redirect without it). Only when the user opened the link
    // themselves; another site sending them here gets the confirmation page (login CSRF).
    const key = ex.query.get('key');
    if (key !== null) {
      signIns.take(ex.remoteIp);
      if (isUserNavigation(ex.headers)) return signIn(ex, key, new URLSearchParams(ex.query));
      const next = new URLSearchParams(ex.query);
      next.delete('key');
      ex.send(200, confirmHeaders, confirmPage(key, next.toString()));
      return;
    }
    // Cross-origin isolated (COOP + COEP), so that private mode's face tracker may run WASM threads
    // (SharedArrayBuffer). Everything the studio loads is same-origin (bundles, API, portrait images, socket.io), so
    // COEP require-corp refuses nothing it needs; COOP only cuts window.opener links, which the studio does not use.
    return serveFile(ex, d.clientDir, 'studio.html', 'no-cache', STUDIO_ISOLATION);
  });
  router.add(
    'POST',
    '/signin',
    async (ex) => {
      signIns.take(ex.remoteIp);
      requireSameOrigin(ex.headers, config.publicUrl);
      if (!/^application\/x-www-form-urlencoded\b/i.test(ex.headers['content-type'] ?? ''))
        throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'send the sign-in form');
      const form = new URLSearchParams((await ex.body()).toString('utf8'));
      const key = form.get('key');
      if (key === null) throw new AppError('BAD_REQUEST', 'the "key" field is required');
      signIn(ex, key, new URLSearchParams(form.get('next') ?? ''));
    },
    { maxBody: 4096 },
  );
  router.add('GET', '/view', (ex) => serveFile(ex, d.clientDir, 'viewer.html'));
  // COEP on the bundles: a cross-origin isolated page (COOP + COEP) may then start the face tracker's worker and
  // onnxruntime-web's thread workers from them (WASM threads); on other pages it changes nothing.
  router.add('GET', '/dist/*', (ex, p) =>
    serveFile(ex, path.join(d.clientDir, 'dist'), p['*'] ?? '', 'no-cache', {
      'cross-origin-embedder-policy': 'require-corp',
    }),
  );
  const faceModelFiles = new Set<string>(MESH_MODEL_NAMES.map((n) => `${n}.onnx`));
  router.add('GET', '/models/face/:file', (ex, p) => {
    const file = p['file'] ?? '';
    if (!faceModelFiles.has(file)) throw new AppError('NOT_FOUND', 'no such file');
    modelDownloads.take(ex.remoteIp);
    return serveFile(ex, d.faceModelDir, file);
  });

  router.add('GET', '/healthz', (ex) => {
    ex.json(200, {
      status: 'ok',
      rooms: registry.size,
      viewers: registry.viewerCount(),
      fanout: d.fanoutKind(),
      sfuWorkers: d.sfuWorkers?.() ?? 0,
      node: config.cluster.redisUrl ? config.cluster.nodeId : null,
      engine: config.avatar.engine,
      uptimeS: Math.round((Date.now() - d.startedAt) / 1000),
    });
  });
  // Readiness, apart from liveness (/healthz): a draining server is alive but must get no new rooms.
  router.add('GET', '/readyz', (ex) => {
    if (d.ready?.() === false) ex.json(503, { ready: false, reason: 'draining' });
    else ex.json(200, { ready: true });
  });
  router.add('GET', '/metrics', async (ex) => {
    const text = await d.metrics.text();
    ex.send(200, { 'content-type': d.metrics.contentType, 'cache-control': 'no-store' }, text);
  });

  router.add('GET', '/api/consent', (ex) => {
    perAddress.take(ex.remoteIp);
    ex.json(200, { version: config.consent.version, text: config.consent.text });
  });

  router.add(
    'POST',
    '/api/portraits',
    async (ex) => {
      const who = owner(ex);
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
        consentVersion: field('consentVersion'),
        owner: who,
      });
      const s = summarize(rec, base(ex));
      ex.json(201, { id: s.id, name: s.name, width: s.width, height: s.height, url: s.url });
    },
    { maxBody: config.upload.maxBytes + MULTIPART_OVERHEAD },
  );
  router.add('GET', '/api/portraits', (ex) => {
    const who = owner(ex);
    const b = base(ex);
    ex.json(200, { portraits: portraits.list(who).map((r) => summarize(r, b)) });
  });
  router.add('GET', '/api/portraits/:id', (ex, p) => {
    const who = owner(ex);
    ex.json(200, summarize(portraits.get(portraitId(p), who), base(ex)));
  });
  router.add('GET', '/api/portraits/:id/image', async (ex, p) => {
    const who = owner(ex);
    const variant = ex.query.get('variant') === 'original' ? 'original' : 'normalized';
    const img = await portraits.image(portraitId(p), variant, who);
    // no-cache: a deleted portrait must not keep being shown from a browser cache without asking.
    ex.send(200, { 'content-type': img.contentType, 'cache-control': 'private, no-cache' }, img.data);
  });
  router.add('GET', '/api/portraits/:id/consent', async (ex, p) => {
    const who = owner(ex);
    const rec = portraits.get(portraitId(p), who);
    ex.json(200, { consent: rec.consent, log: await portraits.readConsentLog(who, rec.id) });
  });
  router.add('GET', '/api/consent-log', async (ex) => {
    const who = owner(ex);
    ex.json(200, { log: await portraits.readConsentLog(who) });
  });
  router.add('DELETE', '/api/portraits/:id', async (ex, p) => {
    const who = owner(ex);
    const id = portraitId(p);
    await portraits.delete(id, who);
    // Nothing may keep animating it: its rooms close (the prepared portrait and idle frame go with them).
    registry.closeRoomsUsing(id, 'portrait-deleted');
    ex.send(204, {});
  });

  router.add(
    'POST',
    '/api/rooms',
    async (ex) => {
      const who = owner(ex);
      const body = await jsonBody(ex);
      for (const k of Object.keys(body))
        if (k !== 'portraitId') throw new AppError('BAD_REQUEST', `unknown field "${k}"`);
      let pid: string | undefined;
      if (body.portraitId !== undefined && body.portraitId !== null) {
        if (typeof body.portraitId !== 'string') throw new AppError('BAD_REQUEST', 'portraitId must be a string');
        if (!PORTRAIT_ID_RE.test(body.portraitId)) throw new AppError('NOT_FOUND', 'no such portrait');
        pid = body.portraitId;
      }
      const room = await registry.create(pid === undefined ? { owner: who } : { portraitId: pid, owner: who });
      ex.json(201, links(ex, room.id));
    },
    { maxBody: MAX_JSON_BODY },
  );
  router.add('GET', '/api/rooms', (ex) => {
    const who = owner(ex);
    ex.json(200, {
      rooms: registry.roomsOf(who).map((r) => ({
        roomId: r.id,
        portraitId: r.info.portraitId,
        viewers: r.viewerCount,
        publishing: r.publishing,
      })),
    });
  });
  router.add('POST', '/api/rooms/:id/revoke', (ex, p) => {
    const who = owner(ex);
    const id = roomId(p);
    ownRoom(id, who);
    registry.revokeLinks(id);
    ex.json(200, links(ex, id));
  });
  router.add('DELETE', '/api/rooms/:id', (ex, p) => {
    perAddress.take(ex.remoteIp);
    const id = roomId(p);
    const token = bearerToken(ex.headers['authorization']);
    if (!token && !cookieKey(ex))
      throw new AppError(
        'API_KEY_REQUIRED',
        "send the owner's API key or the performer token as Authorization: Bearer <...>",
      );
    // A room token (two base64url parts) or an API key.
    if (token && /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token) && !d.keys.match(token)) {
      const t = verifyToken(token, config.tokenSecret);
      if (t.room !== id || t.role !== 'performer')
        throw new AppError('FORBIDDEN', "only the room's performer or owner can end it");
      registry.checkLink(id, t.v);
    } else {
      const who = d.keys.authenticate(credentials(ex));
      perKey.take(who);
      ownRoom(id, who);
    }
    registry.closeRoom(id, 'room-deleted');
    ex.send(204, {});
  });
}
