/**
 * WHIP ingest (RFC 9725) and WHEP egress over plain HTTP, so that a WHIP sender (OBS's WHIP output with an AV1
 * encoder, GStreamer's whipclientsink; not FFmpeg's H.264-only WHIP muxer) can be the performer's camera instead of the
 * studio page, and any WHEP player can watch the avatar:
 *
 *   POST    /whip/:roomId            Authorization: Bearer <performer token of that room>, Content-Type
 *                                    application/sdp, a sendonly offer with video (+ audio) → 201, the SDP answer,
 *                                    Location: <origin>/whip/:roomId/:sessionId
 *   DELETE  /whip/:roomId/:sessionId same token → 200; the performer's ingest stops (viewers keep the last frame)
 *   POST    /whep/:roomId            Bearer <viewer or performer token of that room>, a recvonly offer → 201, answer,
 *                                    Location: <origin>/whep/:roomId/:sessionId
 *   DELETE  /whep/:roomId/:sessionId same token → 200
 *   PATCH   either resource          405 (Allow: DELETE): no trickle ICE and no ICE restart; the server answers only
 *                                    after its own ICE gathering is complete, and clients send complete offers
 *                                    (OBS, GStreamer and FFmpeg do; a restart is a DELETE and a new POST)
 *   OPTIONS any of them              204 with CORS and Accept-Post: application/sdp
 *
 * Same token rules as signaling (server/signaling/server.ts `join`): a signed token naming the room and the role,
 * not revoked (RoomRegistry.checkLink); only the performer publishes, anyone of the room views. Revoking the room's
 * links (POST /api/rooms/:id/revoke) ends the WHIP and WHEP sessions opened with the older links. A WHIP session counts as the performer being present
 * (RoomRegistry.performerJoined with the id `whip:<sessionId>`): when it ends (DELETE, the peer failed, the studio
 * published instead, the room closed) the registry's grace period starts as for a studio page that went away.
 * WHEP uses the room's direct fan-out, which every room keeps, also when it has an SFU.
 *
 * Limits (config.whip, config.quotas): every POST, DELETE and PATCH is rate limited per client address (429
 * TOO_MANY_REQUESTS with Retry-After); a WHEP session takes a viewer slot of its room and link (409 VIEWER_LIMIT when
 * full) until it ends. A session ends with its link: at the token's expiry, as when the room's links are revoked, the
 * WHIP ingest stops or the WHEP viewer's peer is closed; the client learns the code from its next request with that
 * token (DELETE or PATCH: 401 TOKEN_EXPIRED / TOKEN_REVOKED).
 *
 * Video: the server decodes VP8, VP9 and AV1 (libwebrtc in @roamhq/wrtc has no H.264/HEVC); a WHIP offer with none
 * of them is refused with a message that says so (OBS's WHIP output: choose an AV1 encoder).
 *
 * Errors: `{code, message}` with the code's HTTP status, CORS headers included so a web page can read them:
 * 400 INVALID_SDP, 401 TOKEN_INVALID / TOKEN_EXPIRED / TOKEN_REVOKED, 403 FORBIDDEN (a token of another room, a viewer token for
 * WHIP), 404 ROOM_NOT_FOUND / NOT_FOUND (unknown session), 405 METHOD_NOT_ALLOWED (PATCH), 409 ALREADY_PUBLISHING /
 * VIEWER_LIMIT, 413 PAYLOAD_TOO_LARGE, 415 UNSUPPORTED_MEDIA_TYPE, 429 TOO_MANY_REQUESTS (with Retry-After).
 */
import { randomBytes } from 'node:crypto';
import { bearerToken, linkId, verifyToken, type TokenPayload } from '../auth/tokens.js';
import type { Config } from '../config.js';
import { AppError, httpStatus, RateLimitError, toPublicError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Room } from '../rooms/room.js';
import type { ClusterNode } from '../cluster/node.js';
import type { RoomRegistry } from '../rooms/registry.js';
import type { CloseReason, IceServer, Role } from '../types/protocol.js';
import { iceServersFor } from '../media/iceConfig.js';
import { atTime } from '../util/deadline.js';
import { baseUrl } from './api.js';
import { RateLimiter } from './rateLimit.js';
import type { Handler, HttpExchange } from './exchange.js';
import type { Router } from './router.js';

export interface WhipDeps {
  config: Config;
  registry: RoomRegistry;
  log: Logger;
  /** The server's own port, for absolute Location URLs when neither publicUrl nor a Host header is available. */
  port: () => number;
  /** Multi-node deployments: a room owned by another node is answered with a 307 to that node (RFC 9725 §4.5). */
  cluster?: ClusterNode | null;
}

/** Largest SDP offer read (a browser's offer with many codecs is ~6 KiB). */
export const MAX_SDP_BYTES = 64 * 1024;

export type WhipKind = 'whip' | 'whep';

/** CORS for web pages on other origins: tokens travel in Authorization, never in cookies, so any origin may call. */
export const WHIP_CORS_HEADERS: Readonly<Record<string, string>> = {
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'POST, DELETE, PATCH, OPTIONS',
  'access-control-allow-headers': 'authorization, content-type, if-match',
  'access-control-expose-headers': 'location, link, etag, accept-post',
  'access-control-max-age': '600',
};

/**
 * RFC 9725 §4.6 Link headers for the configured ICE servers (STUN/TURN), so that WHIP clients use the same relays
 * as the studio page. Pure.
 */
export function iceServerLinks(servers: readonly IceServer[]): string[] {
  const q = (s: string): string => `"${s.replace(/["\\]/g, '\\$&')}"`;
  const links: string[] = [];
  for (const s of servers) {
    for (const url of Array.isArray(s.urls) ? s.urls : [s.urls]) {
      let link = `<${url}>; rel="ice-server"`;
      if (s.username !== undefined) link += `; username=${q(s.username)}`;
      if (s.credential !== undefined) link += `; credential=${q(s.credential)}; credential-type="password"`;
      links.push(link);
    }
  }
  return links;
}

/**
 * Checks an HTTP request's token against the room in the path and the roles allowed.
 * @throws AppError('TOKEN_INVALID') without a Bearer token or with a bad one, ('TOKEN_EXPIRED'), ('FORBIDDEN') for
 * another room's token or a role not allowed.
 */
export function authorize(
  authorization: string | undefined,
  roomId: string,
  roles: readonly Role[],
  secret: string,
  now: number = Date.now(),
): TokenPayload {
  const token = bearerToken(authorization);
  if (!token) throw new AppError('TOKEN_INVALID', 'send the room token as Authorization: Bearer <token>');
  const t = verifyToken(token, secret, now);
  if (t.room !== roomId) throw new AppError('FORBIDDEN', 'the token is for another room');
  if (!roles.includes(t.role)) throw new AppError('FORBIDDEN', `a ${t.role} token cannot do this`);
  return t;
}

/** The link (token) a session was opened with: it ends when the link expires or is revoked. */
export interface SessionLink {
  /** The room's link version it was signed at (revoking the room's links ends older sessions). */
  version: number;
  /** Its expiry, ms since the epoch. */
  exp: number;
  /** linkId() of the token: what viewers per link are counted by. */
  id: string;
}

interface Session {
  id: string;
  kind: WhipKind;
  roomId: string;
  /** The link version of the token that opened it (revoking the room's links ends older sessions). */
  linkVersion: number;
  /** For WHIP: stops listening to the ingest peer; for WHEP: gives back the viewer slot. Both: cancel the expiry. */
  detach: () => void;
}

/**
 * The live WHIP and WHEP sessions by id. Owns only the bookkeeping: the media belong to the room (its ingest peer and
 * direct fan-out). A session is dropped when it is deleted, when its peer goes away, or when its room closes.
 */
export class WhipSessions {
  readonly #deps: WhipDeps;
  readonly #sessions = new Map<string, Session>();
  /** Rooms with a WHIP offer being answered (a second concurrent WHIP POST gets 409). */
  readonly #publishing = new Set<string>();
  /** Rooms whose 'viewers' event this object listens to (to prune WHEP sessions whose peer failed). */
  readonly #watched = new Map<string, () => void>();
  #closed = false;

  constructor(deps: WhipDeps) {
    this.#deps = deps;
    deps.registry.on('roomClosed', this.#onRoomClosed);
    deps.registry.on('linksRevoked', this.#onLinksRevoked);
  }

  get closed(): boolean {
    return this.#closed;
  }
  get size(): number {
    return this.#sessions.size;
  }
  /** Session ids of one kind (diagnostics and tests). */
  ids(kind: WhipKind): string[] {
    return [...this.#sessions.values()].filter((s) => s.kind === kind).map((s) => s.id);
  }

  /**
   * Answers a performer's WHIP offer: the room's ingest becomes this session.
   * @throws AppError('ALREADY_PUBLISHING') while the room has a publishing performer, ('INVALID_SDP') and what
   * Room.publish throws.
   */
  async publish(room: Room, offerSdp: string, link: SessionLink): Promise<{ id: string; answer: string }> {
    this.#assertOpen();
    if (room.publishing || this.#publishing.has(room.id)) {
      throw new AppError(
        'ALREADY_PUBLISHING',
        'a performer is already publishing in this room; DELETE that session first',
      );
    }
    this.#publishing.add(room.id);
    let answer: string;
    try {
      answer = (await room.publish({ type: 'offer', sdp: offerSdp })).sdp;
    } finally {
      this.#publishing.delete(room.id);
    }
    const ingest = room.parts.ingest;
    // The room's ingest must still be the one that gave this answer (not closed, not replaced by a studio publish).
    if (!ingest || ingest.closed || ingest.answer.sdp !== answer) {
      throw new AppError('INVALID_STATE', 'the ingest was closed or replaced while it was set up');
    }
    const id = newSessionId();
    const presence = `whip:${id}`;
    const { registry, log } = this.#deps;
    const onIngestClose = (): void => {
      if (this.#sessions.get(id)?.kind !== 'whip') return;
      this.#drop(id);
      registry.performerLeft(room.id, presence);
      log.info('whip session ended', { roomId: room.id, session: id });
    };
    ingest.once('close', onIngestClose);
    const cancelExpiry = this.#expireAt(link.exp, 'whip', room.id, id);
    this.#sessions.set(id, {
      id,
      kind: 'whip',
      roomId: room.id,
      linkVersion: link.version,
      detach: () => {
        ingest.off('close', onIngestClose);
        cancelExpiry();
      },
    });
    registry.performerJoined(room.id, presence);
    log.info('whip session started', { roomId: room.id, session: id });
    return { id, answer };
  }

  /**
   * Answers a WHEP viewer's offer from the room's direct fan-out.
   * @throws AppError('VIEWER_LIMIT') when the room or the link has its most viewers, ('INVALID_SDP')
   */
  async view(room: Room, offerSdp: string, link: SessionLink): Promise<{ id: string; answer: string }> {
    this.#assertOpen();
    const id = newSessionId();
    const slots = this.#deps.registry.viewerSlots;
    const holder = `whep:${id}`;
    slots.take(holder, room.id, link.id);
    this.#watch(room);
    const cancelExpiry = this.#expireAt(link.exp, 'whep', room.id, id);
    // Listed before addViewer, whose synchronous part adds the viewer to the fan-out and emits 'viewers': the prune
    // above then finds both.
    this.#sessions.set(id, {
      id,
      kind: 'whep',
      roomId: room.id,
      linkVersion: link.version,
      detach: () => {
        slots.release(holder);
        cancelExpiry();
      },
    });
    try {
      const answer = (await room.addViewer(holder, { type: 'offer', sdp: offerSdp })).sdp;
      this.#deps.log.info('whep session started', { roomId: room.id, session: id });
      return { id, answer };
    } catch (err) {
      this.#drop(id);
      throw err;
    }
  }

  /** Ends a session when its link expires (as DELETE does); returns the cancel. */
  #expireAt(exp: number, kind: WhipKind, roomId: string, id: string): () => void {
    return atTime(exp, () => {
      if (!this.#sessions.has(id)) return;
      this.#deps.log.info(`${kind} session link expired`, { roomId, session: id });
      this.delete(kind, roomId, id).catch((err: unknown) =>
        this.#deps.log.warn('ending an expired session failed', { roomId, session: id, err }),
      );
    });
  }

  /** Forgets a session and lets go of what it holds (listeners, viewer slot, expiry timer). */
  #drop(id: string): void {
    const s = this.#sessions.get(id);
    if (!s) return;
    this.#sessions.delete(id);
    s.detach();
  }

  /**
   * Ends a session of `kind` in `roomId`: WHIP stops the performer's ingest (if it is still this session's), WHEP
   * removes the viewer. @throws AppError('NOT_FOUND') for an unknown session.
   */
  async delete(kind: WhipKind, roomId: string, id: string): Promise<void> {
    this.#require(kind, roomId, id);
    this.#drop(id);
    const room = this.#deps.registry.get(roomId);
    if (kind === 'whep') {
      room?.removeViewer(`whep:${id}`);
    } else {
      this.#deps.registry.performerLeft(roomId, `whip:${id}`);
      if (room && !room.closed) await room.unpublish();
    }
    this.#deps.log.info(`${kind} session deleted`, { roomId, session: id });
  }

  /** @throws AppError('NOT_FOUND') when there is no such session of that kind in that room. */
  assertSession(kind: WhipKind, roomId: string, id: string): void {
    this.#require(kind, roomId, id);
  }

  /** Stops listening to the registry and the rooms; the media are the rooms'. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#deps.registry.off('roomClosed', this.#onRoomClosed);
    this.#deps.registry.off('linksRevoked', this.#onLinksRevoked);
    for (const s of this.#sessions.values()) s.detach();
    this.#sessions.clear();
    for (const off of this.#watched.values()) off();
    this.#watched.clear();
  }

  #require(kind: WhipKind, roomId: string, id: string): Session {
    const s = this.#sessions.get(id);
    if (!s || s.kind !== kind || s.roomId !== roomId)
      throw new AppError('NOT_FOUND', `no such ${kind.toUpperCase()} session`);
    return s;
  }

  #assertOpen(): void {
    if (this.#closed) throw new AppError('INVALID_STATE', 'server closing');
  }

  /** Drops WHEP sessions whose peer the fan-out removed (failed or closed connection). */
  #watch(room: Room): void {
    if (this.#watched.has(room.id)) return;
    const onViewers = (): void => {
      const live = new Set(room.parts.direct.viewerIds());
      for (const s of [...this.#sessions.values()]) {
        if (s.kind === 'whep' && s.roomId === room.id && !live.has(`whep:${s.id}`)) this.#drop(s.id);
      }
    };
    room.on('viewers', onViewers);
    this.#watched.set(room.id, () => room.off('viewers', onViewers));
  }

  /** The room's owner revoked its links: sessions opened with an older link end, as signaling drops such sockets. */
  readonly #onLinksRevoked = (roomId: string, version: number): void => {
    for (const s of [...this.#sessions.values()]) {
      if (s.roomId !== roomId || s.linkVersion >= version) continue;
      this.delete(s.kind, roomId, s.id).catch((err: unknown) =>
        this.#deps.log.warn('ending a revoked session failed', { roomId, session: s.id, err }),
      );
    }
  };

  readonly #onRoomClosed = (roomId: string, _reason: CloseReason): void => {
    for (const s of [...this.#sessions.values()]) if (s.roomId === roomId) this.#drop(s.id);
    this.#watched.get(roomId)?.();
    this.#watched.delete(roomId);
  };
}

function newSessionId(): string {
  return randomBytes(16).toString('base64url');
}

/** Codec names that are not media codecs (retransmission, redundancy, FEC). */
const NOT_MEDIA = ['RTX', 'RED', 'ULPFEC', 'FLEXFEC-03'];

/** Video codecs the server's media stack decodes (@roamhq/wrtc's libwebrtc has no H.264 or HEVC). */
export const DECODABLE_VIDEO = ['VP8', 'VP9', 'AV1'] as const;

/** The codec names (upper case) of an SDP's video sections, from their rtpmap lines. Pure. */
export function offeredVideoCodecs(sdp: string): string[] {
  const codecs = new Set<string>();
  let inVideo = false;
  for (const line of sdp.split(/\r?\n/)) {
    if (line.startsWith('m=')) inVideo = line.startsWith('m=video');
    const m = inVideo ? /^a=rtpmap:\d+ ([^/\s]+)\//.exec(line) : null;
    if (m) codecs.add(m[1]!.toUpperCase());
  }
  return [...codecs];
}

/**
 * Refuses a WHIP offer whose video the server cannot decode, with a message that says what to change (OBS's WHIP
 * output offers H.264 unless an AV1 encoder is chosen). @throws AppError('INVALID_SDP')
 */
export function assertDecodableVideo(sdp: string): void {
  const offered = offeredVideoCodecs(sdp);
  if (offered.length === 0 || offered.some((c) => (DECODABLE_VIDEO as readonly string[]).includes(c))) return;
  throw new AppError(
    'INVALID_SDP',
    `no video codec the server decodes: offered ${offered.filter((c) => !NOT_MEDIA.includes(c)).join(', ')}; ` +
      `send ${DECODABLE_VIDEO.join(', ')} (in OBS: an AV1 encoder)`,
  );
}

/** Video codecs the server sends to WHEP viewers (the direct fan-out encodes VP8 only: rtc.ts preferVp8). */
export const SENDABLE_VIDEO = ['VP8'] as const;

/**
 * Refuses a WHEP offer without a video codec the server sends, at once and saying what it sends (libwebrtc would
 * answer it with a rejected video section after gathering, and the viewer would play nothing).
 * @throws AppError('INVALID_SDP')
 */
export function assertSendableVideo(sdp: string): void {
  const offered = offeredVideoCodecs(sdp);
  if (offered.length === 0 || offered.some((c) => (SENDABLE_VIDEO as readonly string[]).includes(c))) return;
  throw new AppError(
    'INVALID_SDP',
    `no video codec the server sends: offered ${offered.filter((c) => !NOT_MEDIA.includes(c)).join(', ')}; ` +
      `the server sends ${SENDABLE_VIDEO.join(', ')}`,
  );
}

/**
 * An answer without the trickle ICE option: these endpoints refuse PATCH (no trickle, no ICE restart), so the answer
 * must not advertise it (RFC 9725: a client may only trickle to a server that said it can). Pure.
 */
export function withoutTrickle(sdp: string): string {
  return sdp
    .split('\r\n')
    .flatMap((line) => {
      if (!line.startsWith('a=ice-options:')) return [line];
      const opts = line
        .slice('a=ice-options:'.length)
        .split(' ')
        .filter((o) => o && o !== 'trickle');
      return opts.length > 0 ? [`a=ice-options:${opts.join(' ')}`] : [];
    })
    .join('\r\n');
}

/** Reads the SDP offer of a WHIP/WHEP POST. @throws AppError('UNSUPPORTED_MEDIA_TYPE'), ('INVALID_SDP') */
async function sdpBody(ex: HttpExchange): Promise<string> {
  const ct = ex.headers['content-type'] ?? '';
  if (!/^application\/sdp\s*(;|$)/i.test(ct))
    throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'send the SDP offer as application/sdp');
  const sdp = (await ex.body()).toString('utf8');
  if (!sdp.startsWith('v=0')) throw new AppError('INVALID_SDP', 'the body is not an SDP offer');
  return sdp;
}

/**
 * Adds the WHIP and WHEP routes to `router` and returns the session table (close it with the server).
 */
export function addWhipRoutes(router: Router<Handler>, deps: WhipDeps): WhipSessions {
  const { config, registry } = deps;
  const sessions = new WhipSessions(deps);
  /** One bucket per client address for WHIP and WHEP together (each POST sets up a server peer). */
  const perAddress = new RateLimiter(config.whip.perAddressPerMinute, 'address (WHIP/WHEP)');

  /** Every reply of these routes carries CORS headers, errors included (a page must be able to read them). */
  const withCors =
    (h: (ex: HttpExchange, p: Record<string, string>) => Promise<void> | void): Handler =>
    async (ex, p) => {
      try {
        await h(ex, p);
      } catch (err) {
        if (!(err instanceof AppError))
          deps.log.error('whip request failed', { method: ex.method, path: ex.path, err });
        const pub = toPublicError(err);
        const close = pub.code === 'PAYLOAD_TOO_LARGE';
        const extra: Record<string, string> = pub.code === 'METHOD_NOT_ALLOWED' ? { allow: 'DELETE, OPTIONS' } : {};
        if (err instanceof RateLimitError) extra['retry-after'] = String(err.retryAfterS);
        ex.send(
          httpStatus[pub.code],
          {
            ...WHIP_CORS_HEADERS,
            ...extra,
            'content-type': 'application/json; charset=utf-8',
            'cache-control': 'no-store',
          },
          JSON.stringify(pub),
          close,
        );
      }
    };
  const preflight: Handler = (ex) => {
    ex.send(204, { ...WHIP_CORS_HEADERS, 'accept-post': 'application/sdp', 'cache-control': 'no-store' });
  };

  for (const kind of ['whip', 'whep'] as const) {
    const roles: readonly Role[] = kind === 'whip' ? ['performer'] : ['performer', 'viewer'];
    /**
     * The address's rate limit, then the token's checks, as signaling's `join`: signature, expiry, room, role, and not
     * revoked.
     */
    const auth = (ex: HttpExchange, roomId: string): SessionLink => {
      perAddress.take(ex.remoteIp);
      const t = authorize(ex.headers['authorization'], roomId, roles, config.tokenSecret);
      registry.checkLink(roomId, t.v);
      return { version: t.v ?? 0, exp: t.exp, id: linkId(bearerToken(ex.headers['authorization']) ?? '') };
    };
    router.add('OPTIONS', `/${kind}/:roomId`, preflight);
    router.add('OPTIONS', `/${kind}/:roomId/:sessionId`, preflight);
    router.add(
      'POST',
      `/${kind}/:roomId`,
      withCors(async (ex, p) => {
        const roomId = p.roomId ?? '';
        const link = auth(ex, roomId);
        if (!registry.get(roomId) && deps.cluster) {
          // Another node owns the room: redirect there (WHIP/WHEP clients follow 307 with the same body and token).
          const loc = await deps.cluster.directory.lookup(roomId);
          if (loc && loc.nodeId !== deps.cluster.nodeId) {
            ex.send(307, {
              ...WHIP_CORS_HEADERS,
              location: `${loc.node.url}/${kind}/${encodeURIComponent(roomId)}`,
              'cache-control': 'no-store',
            });
            return;
          }
        }
        const room = registry.require(roomId);
        const offer = await sdpBody(ex);
        if (kind === 'whip') assertDecodableVideo(offer);
        else assertSendableVideo(offer);
        const { id, answer } =
          kind === 'whip' ? await sessions.publish(room, offer, link) : await sessions.view(room, offer, link);
        const location = `${baseUrl(config, ex.headers, deps.port())}/${kind}/${encodeURIComponent(roomId)}/${id}`;
        const headers: Record<string, string> = {
          ...WHIP_CORS_HEADERS,
          'content-type': 'application/sdp',
          'cache-control': 'no-store',
          location,
          etag: `"${id}"`,
        };
        // Fresh TURN credentials per session, expiring with its link at the latest (iceServersFor).
        const links = iceServerLinks(iceServersFor(config.media, `${kind}.${roomId}`, Date.now(), link.exp));
        if (links.length > 0) headers.link = links.join(', ');
        if (ex.aborted) {
          // The client went away while the offer was answered: nobody can DELETE this session, so end it now.
          await sessions.delete(kind, roomId, id);
          return;
        }
        ex.send(201, headers, withoutTrickle(answer));
      }),
      { maxBody: MAX_SDP_BYTES },
    );
    router.add(
      'DELETE',
      `/${kind}/:roomId/:sessionId`,
      withCors(async (ex, p) => {
        const roomId = p.roomId ?? '';
        auth(ex, roomId);
        await sessions.delete(kind, roomId, p.sessionId ?? '');
        ex.send(200, { ...WHIP_CORS_HEADERS, 'cache-control': 'no-store' });
      }),
    );
    router.add(
      'PATCH',
      `/${kind}/:roomId/:sessionId`,
      withCors((ex, p) => {
        const roomId = p.roomId ?? '';
        auth(ex, roomId);
        sessions.assertSession(kind, roomId, p.sessionId ?? '');
        throw new AppError(
          'METHOD_NOT_ALLOWED',
          'trickle ICE and ICE restarts are not supported: send a complete offer',
        );
      }),
      { maxBody: MAX_SDP_BYTES },
    );
  }
  return sessions;
}
