/**
 * Signaling: socket.io events → Room methods.
 *
 * Every socket must `join` with a signed token first; the token fixes the room and the role for the socket's life.
 * Viewer sockets may only view (direct or SFU) and send ICE for their own view peer; everything that changes the room
 * (publish, setPortrait, setSettings, recalibrate) is the performer's. Every payload goes through a validator, every
 * error goes through toPublicError, and one socket's requests run one at a time (at most MAX_PENDING queued), so a
 * misbehaving client can only slow itself down. A missing ack or a non-object payload is answered (or ignored) like
 * any other bad input.
 *
 * Room events are forwarded to the room's sockets (socket.io room `room:<id>`): 'stats', 'failure', and 'closed'.
 *
 * Limits (config.signaling, config.quotas): socket.io handshakes are rate limited per client address before any
 * socket exists (429 TOO_MANY_REQUESTS with Retry-After on the handshake request); a socket that has not joined within
 * `joinTimeoutMs` is sent the failure JOIN_TIMEOUT and dropped; a viewer socket takes a viewer slot of its room and
 * link (VIEWER_LIMIT when full) until it leaves. A joined socket ends with its link: when the token expires it is sent
 * the failure TOKEN_EXPIRED and 'closed' ('link-expired'), when the room's links are revoked TOKEN_REVOKED and 'closed'
 * ('links-revoked'), and it is dropped.
 */
import type { EventEmitter } from 'node:events';
import type { Server, Socket } from 'socket.io';
import { linkId, signToken, verifyToken } from '../auth/tokens.js';
import type { Config } from '../config.js';
import { iceServersFor } from '../media/iceConfig.js';
import { AppError, InvalidStateError, RateLimitError, toPublicError } from '../errors.js';
import type { Logger } from '../logger.js';
import { RateLimiter } from '../http/rateLimit.js';
import { atTime } from '../util/deadline.js';
import type { ClusterNode } from '../cluster/node.js';
import type { RelayEvents, RelayRoom } from '../cluster/relay.js';
import type { Room, RoomEvents } from '../rooms/room.js';
import type { RoomRegistry } from '../rooms/registry.js';
import type { ClientToServerEvents, JoinResponse, Result, Role, ServerToClientEvents } from '../types/protocol.js';
import {
  validateEmpty,
  validateIce,
  validateJoin,
  validatePublish,
  validateSetPortrait,
  validateSetSettings,
  validateSfuConnect,
  validateSfuConsume,
  validateSfuResume,
  validateView,
} from './validate.js';

/** Per-socket state, fixed by `join`. */
/** What signaling forwards to a room's sockets, as rooms (RoomEvents) and relays (RelayEvents) emit it. */
type ForwardedRoomEvents = Pick<RoomEvents, 'stats' | 'failure' | 'viewersReset' | 'close'> &
  Pick<RelayEvents, 'roomInfo'>;

export interface SocketData {
  roomId?: string;
  role?: Role;
  /** The link version of the token it joined with (revoking a room's links drops older sockets). */
  linkVersion?: number;
}

export type SignalingIo = Server<ClientToServerEvents, ServerToClientEvents, Record<string, never>, SocketData>;
type SignalingSocket = Socket<ClientToServerEvents, ServerToClientEvents, Record<string, never>, SocketData>;

/** Requests one socket may have queued before new ones are refused with TOO_MANY_REQUESTS. */
export const MAX_PENDING = 32;

export interface SignalingOptions {
  io: SignalingIo;
  registry: RoomRegistry;
  config: Config;
  log: Logger;
  /** Multi-node deployments: rooms owned by other nodes are viewed through relays (server/cluster). */
  cluster?: ClusterNode | null;
}

interface Joined {
  /** The room (a relay when another node owns it). */
  room: Room | RelayRoom;
  roomId: string;
  role: Role;
}

const roomKey = (id: string): string => `room:${id}`;
/** The viewer-slot holder id of a socket (WHEP sessions hold `whep:<id>`). */
const slotHolder = (socketId: string): string => `socket:${socketId}`;

/** What engine.io hands its middlewares under uWebSockets.js (its uServer): the parts read here. */
interface EngineRequest {
  _query?: Record<string, string>;
  connection?: { remoteAddress?: string };
}
interface EngineResponse {
  writeStatus(status: string): unknown;
  writeHeader(key: string, value: string): unknown;
  end(body: string): unknown;
}

export class SignalingServer {
  readonly #io: SignalingIo;
  readonly #registry: RoomRegistry;
  readonly #config: Config;
  readonly #log: Logger;
  readonly #cluster: ClusterNode | null;
  #closed = false;

  constructor(opts: SignalingOptions) {
    this.#io = opts.io;
    this.#registry = opts.registry;
    this.#config = opts.config;
    this.#log = opts.log;
    this.#cluster = opts.cluster ?? null;
    this.#registry.on('room', this.#onRoom);
    this.#registry.on('linksRevoked', this.#onRevoked);
    this.#cluster?.on('relay', this.#onRoom);
    this.#cluster?.on('linksRevoked', this.#onRevoked);
    this.#limitHandshakes();
    this.#io.on('connection', (socket) => this.#onConnection(socket));
  }

  /**
   * Refuses socket.io handshakes beyond config.signaling.connectionsPerAddressPerMinute per client address, at the
   * engine.io level (before a socket or a session exists): 429 TOO_MANY_REQUESTS, Retry-After and `{code, message}`.
   * Requests of an established connection (polling with a sid, its upgrade) are not counted.
   */
  #limitHandshakes(): void {
    const limiter = new RateLimiter(
      this.#config.signaling.connectionsPerAddressPerMinute,
      'address (socket.io connections)',
    );
    this.#io.engine.use((req: EngineRequest, res: EngineResponse, next: () => void) => {
      if (req._query?.sid) return next();
      try {
        limiter.take(req.connection?.remoteAddress ?? '');
      } catch (err) {
        const pub = toPublicError(err);
        this.#log.debug('socket.io handshake refused', { code: pub.code });
        res.writeStatus('429 Too Many Requests');
        res.writeHeader('retry-after', String(err instanceof RateLimitError ? err.retryAfterS : 60));
        res.writeHeader('content-type', 'application/json; charset=utf-8');
        res.writeHeader('cache-control', 'no-store');
        res.end(JSON.stringify(pub));
        return;
      }
      next();
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stops listening to the registry (socket.io itself is closed by its owner). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#registry.off('room', this.#onRoom);
    this.#registry.off('linksRevoked', this.#onRevoked);
    this.#cluster?.off('relay', this.#onRoom);
    this.#cluster?.off('linksRevoked', this.#onRevoked);
  }

  /** A room's links were revoked: sockets that joined with an older link are told and dropped. */
  readonly #onRevoked = (roomId: string, version: number): void => {
    const ids = this.#io.of('/').adapter.rooms.get(roomKey(roomId));
    for (const id of ids ? [...ids] : []) {
      const s = this.#io.of('/').sockets.get(id);
      if (!s || (s.data.linkVersion ?? 0) >= version) continue;
      s.emit('failure', { code: 'TOKEN_REVOKED', message: "this room link was revoked by the room's owner" });
      s.emit('closed', { reason: 'links-revoked' });
      s.disconnect(true);
    }
  };

  /** A room of this node, or a relay already open here. */
  #find(roomId: string): Room | RelayRoom | undefined {
    return this.#registry.get(roomId) ?? this.#cluster?.relay(roomId);
  }

  readonly #onRoom = (r: Room | RelayRoom): void => {
    const key = roomKey(r.id);
    // Rooms and relays emit these events alike (a relay has no 'stats', a room no 'roomInfo'): one listener set.
    const room = r as unknown as EventEmitter<ForwardedRoomEvents>;
    // A relay learns of portrait changes from the directory.
    room.on('roomInfo', (info) => this.#io.to(key).emit('room', info));
    room.on('stats', (s) => this.#io.to(key).emit('stats', s));
    room.on('failure', (e) => this.#io.to(key).emit('failure', { code: e.code, message: e.message }));
    // Viewer ids are socket ids (each socket is in a socket.io room of its own id).
    room.on('viewersReset', (ids, why) => {
      for (const id of ids) this.#io.to(id).emit('viewReset', { code: 'SFU_RESET', message: why });
    });
    room.once('close', (reason) => {
      this.#io.to(key).emit('closed', { reason });
      // The sockets stay connected (the page shows why the room ended) but are no longer joined to anything.
      const ids = this.#io.of('/').adapter.rooms.get(key);
      for (const id of ids ? [...ids] : []) {
        const s = this.#io.of('/').sockets.get(id);
        if (s) {
          s.data = {};
          this.#registry.viewerSlots.release(slotHolder(s.id));
          void s.leave(key);
        }
      }
    });
  };

  #onConnection(socket: SignalingSocket): void {
    socket.data = {};
    let pending = 0;
    let chain: Promise<void> = Promise.resolve();
    // A socket must join soon: one that never does (a flood of idle connections) is told why and dropped.
    let joinDeadline: NodeJS.Timeout | null = setTimeout(() => {
      joinDeadline = null;
      if (socket.data.roomId || !socket.connected) return;
      this.#log.debug('socket dropped: no join', { socket: socket.id });
      socket.emit('failure', {
        code: 'JOIN_TIMEOUT',
        message: `no room joined within ${this.#config.signaling.joinTimeoutMs} ms`,
      });
      socket.disconnect(true);
    }, this.#config.signaling.joinTimeoutMs);
    joinDeadline.unref();
    /** Cancels the drop at the joined link's expiry. */
    let cancelExpiry: (() => void) | null = null;

    const on = (event: keyof ClientToServerEvents, handler: (payload: unknown) => unknown): void => {
      (socket.on as (ev: string, fn: (...args: unknown[]) => void) => void)(event, (...args: unknown[]) => {
        const last = args[args.length - 1];
        const ack = typeof last === 'function' ? (args.pop() as (r: Result<unknown>) => void) : null;
        const payload = args[0];
        const reply = (r: Result<unknown>): void => {
          if (!ack) return;
          try {
            ack(r);
          } catch (err) {
            this.#log.warn('ack failed', { event, err });
          }
        };
        if (pending >= MAX_PENDING) {
          reply({ ok: false, error: { code: 'TOO_MANY_REQUESTS', message: 'too many requests in flight' } });
          return;
        }
        pending++;
        chain = chain.then(async () => {
          try {
            const data = await handler(payload);
            reply({ ok: true, data: data === undefined ? null : data });
          } catch (err) {
            if (!(err instanceof AppError))
              this.#log.error('signaling handler failed', { event, socket: socket.id, err });
            else this.#log.debug('signaling request refused', { event, socket: socket.id, code: err.code });
            reply({ ok: false, error: toPublicError(err) });
          } finally {
            pending--;
          }
        });
      });
    };

    const joined = (): Joined => {
      const { roomId, role } = socket.data;
      if (!roomId || !role) throw new InvalidStateError('join a room first');
      const room = this.#find(roomId);
      if (!room || room.closed) throw new AppError('ROOM_NOT_FOUND', 'the room has ended');
      return { room, roomId, role };
    };
    const performer = (): Joined & { room: Room } => {
      const j = joined();
      if (j.role !== 'performer') throw new AppError('FORBIDDEN', 'only the performer can do this');
      const local = this.#registry.get(j.roomId);
      if (local !== j.room || !local) throw new AppError('WRONG_NODE', 'this room runs on another server');
      return { ...j, room: local };
    };
    /** Direct fan-out and ICE for a view peer need the room's own node. */
    const local = (): Joined & { room: Room } => {
      const j = joined();
      const room = this.#registry.get(j.roomId);
      if (room !== j.room || !room)
        throw new AppError('UNSUPPORTED', 'this room is relayed through the SFU here: use sfu:* messages');
      return { ...j, room };
    };
    const sfu = (): Joined => {
      const j = joined();
      if (j.room.fanoutKind !== 'sfu') throw new AppError('UNSUPPORTED', 'this room does not use the SFU fan-out');
      return j;
    };

    on('join', async (p) => {
      const req = validateJoin(p);
      if (socket.data.roomId) throw new InvalidStateError('already joined');
      const tok = verifyToken(req.token, this.#config.tokenSecret);
      let room: Room | RelayRoom | undefined = this.#registry.get(tok.room);
      if ((!room || room.closed) && this.#cluster) {
        // Another node owns it: viewers get a relay, a performer is told where the room runs.
        room =
          tok.role === 'performer' ? await this.#cluster.redirect(tok.room) : await this.#cluster.viewerRoom(tok.room);
      }
      if (!room || room.closed) throw new AppError('ROOM_NOT_FOUND', 'no such room (it may have ended)');
      if (socket.data.roomId) throw new InvalidStateError('already joined');
      // Dropped while the room was looked up (the join deadline, the client went away): nothing to join.
      if (!socket.connected) throw new InvalidStateError('the socket disconnected');
      // A revoked link: the room's owner made new ones.
      if (this.#registry.get(tok.room)) this.#registry.checkLink(tok.room, tok.v);
      else if ((tok.v ?? 0) !== (room as RelayRoom).linkVersion)
        throw new AppError('TOKEN_REVOKED', "this room link was revoked by the room's owner");
      if (tok.role === 'viewer') this.#registry.viewerSlots.take(slotHolder(socket.id), tok.room, linkId(req.token));
      socket.data = { roomId: tok.room, role: tok.role, linkVersion: tok.v ?? 0 };
      if (joinDeadline) clearTimeout(joinDeadline);
      joinDeadline = null;
      cancelExpiry?.();
      cancelExpiry = atTime(tok.exp, () => {
        cancelExpiry = null;
        this.#log.info('socket link expired', { roomId: tok.room, role: tok.role, socket: socket.id });
        socket.emit('failure', { code: 'TOKEN_EXPIRED', message: 'this room link expired; ask for a new one' });
        if (socket.data.roomId) socket.emit('closed', { reason: 'link-expired' });
        socket.disconnect(true);
      });
      void socket.join(roomKey(tok.room));
      if (tok.role === 'performer') {
        const prev = this.#registry.performerJoined(tok.room, socket.id);
        if (prev) {
          const old = this.#io.of('/').sockets.get(prev);
          if (old) {
            old.emit('closed', { reason: 'replaced' });
            old.data = {};
            old.disconnect(true);
          }
        }
      }
      this.#log.info('socket joined', { roomId: tok.room, role: tok.role, socket: socket.id });
      const res: JoinResponse = {
        role: tok.role,
        room: room.info,
        fanout: room.fanoutKind,
        // Fresh TURN credentials per join, expiring with the link at the latest; never the TURN secret itself.
        iceServers: iceServersFor(this.#config.media, `${tok.role}.${tok.room}`, Date.now(), tok.exp),
      };
      if (tok.role === 'performer') {
        const viewerToken = signToken(
          { room: tok.room, role: 'viewer', exp: tok.exp, v: tok.v ?? 0 },
          this.#config.tokenSecret,
        );
        res.viewerPath = `/view?room=${encodeURIComponent(tok.room)}&token=${encodeURIComponent(viewerToken)}`;
      }
      return res;
    });

    on('publish', async (p) => {
      const req = validatePublish(p);
      const { room, roomId } = performer();
      const sdp = await room.publish(req.sdp, req.mode);
      // The mode is part of the room's info (RoomInfo.publishMode): everyone in the room learns of a switch.
      this.#io.to(roomKey(roomId)).emit('room', room.info);
      return { sdp };
    });
    on('unpublish', async (p) => {
      validateEmpty(p, 'unpublish');
      await performer().room.unpublish();
      return null;
    });
    on('view', async (p) => {
      const req = validateView(p);
      const { room } = local();
      if (room.fanoutKind !== 'direct')
        throw new AppError('UNSUPPORTED', 'this room uses the SFU fan-out: use sfu:* messages');
      return { sdp: await room.addViewer(socket.id, req.sdp) };
    });
    on('ice', async (p) => {
      const req = validateIce(p);
      const { room } = req.target === 'publish' ? performer() : local();
      await room.addIceCandidate(
        req.target === 'publish' ? { kind: 'publish' } : { kind: 'view', viewerId: socket.id },
        req.candidate,
      );
      return null;
    });
    on('setPortrait', async (p) => {
      const req = validateSetPortrait(p);
      const { room, roomId } = performer();
      const info = await room.setPortrait(req.portraitId);
      this.#io.to(roomKey(roomId)).emit('room', info);
      return info;
    });
    on('setSettings', (p) => {
      const req = validateSetSettings(p);
      const { room, roomId } = performer();
      const settings = room.updateSettings(req.settings);
      this.#io.to(roomKey(roomId)).emit('room', room.info);
      return settings;
    });
    on('recalibrate', (p) => {
      validateEmpty(p, 'recalibrate');
      performer().room.recalibrate();
      return null;
    });
    on('sfu:capabilities', (p) => {
      validateEmpty(p, 'sfu:capabilities');
      return { routerRtpCapabilities: sfu().room.sfuCapabilities() };
    });
    on('sfu:createTransport', (p) => {
      validateEmpty(p, 'sfu:createTransport');
      return sfu().room.sfuCreateTransport(socket.id);
    });
    on('sfu:connect', async (p) => {
      const req = validateSfuConnect(p);
      await sfu().room.sfuConnect(socket.id, req.transportId, req.dtlsParameters);
      return null;
    });
    on('sfu:consume', (p) => {
      const req = validateSfuConsume(p);
      return sfu().room.sfuConsume(socket.id, req.transportId, req.rtpCapabilities);
    });
    on('sfu:resume', async (p) => {
      const req = validateSfuResume(p);
      await sfu().room.sfuResume(socket.id, req.consumerId);
      return null;
    });

    socket.on('disconnect', () => {
      if (joinDeadline) clearTimeout(joinDeadline);
      joinDeadline = null;
      cancelExpiry?.();
      cancelExpiry = null;
      this.#registry.viewerSlots.release(slotHolder(socket.id));
      const { roomId, role } = socket.data;
      socket.data = {};
      if (!roomId) return;
      const room = this.#find(roomId);
      if (!room || room.closed) return;
      try {
        // Any socket may have a view peer (the performer can preview); drop it.
        room.removeViewer(socket.id);
      } catch (err) {
        this.#log.warn('removeViewer failed', { roomId, err });
      }
      if (role === 'performer' && this.#registry.get(roomId)) this.#registry.performerLeft(roomId, socket.id);
    });
  }
}
