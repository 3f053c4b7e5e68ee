/**
 * This process as a node of a multi-node deployment (config.cluster.redisUrl set; `npm start` without it runs the
 * single-process embedded default and never loads this module).
 *
 * - Directory: every heartbeat, this node's record and the rooms it owns go to Redis with a TTL (directory.ts).
 * - A viewer whose signaling reaches this node for a room owned elsewhere gets a RelayRoom: this node's SFU, fed from
 *   the owner through a mediasoup PipeTransport pair (relay.ts). A node without an SFU answers WRONG_NODE naming the
 *   owner's URL instead (a clear redirect); so does any node to a performer of another node's room.
 * - Internal API for the owner side of a pipe, signed with the shared secret, fresh and used once (nodeAuth.ts), served
 *   on the node's internal listener only (config.cluster.internalHost/internalPort; the public port answers 404):
 *     POST   /internal/pipe/:roomId           {linkId, ip, port} → {ip, port, producers, epoch}
 *     DELETE /internal/pipe/:roomId/:linkId   → 204
 *   Pipes whose remote node left the directory are closed at the next heartbeat.
 */
import type { Config } from '../config.js';
import { AppError } from '../errors.js';
import type { Handler, HttpExchange } from '../http/exchange.js';
import type { Router } from '../http/router.js';
import type { Logger } from '../logger.js';
import type { FanoutFactory } from '../media/fanoutTypes.js';
import type { MediasoupFanoutFactory } from '../media/mediasoupFanout.js';
import type { Room } from '../rooms/room.js';
import type { RoomRegistry } from '../rooms/registry.js';
import { RoomDirectory, type NodeRecord, type RoomRecord } from './directory.js';
import { NonceGuard, verifyNodeRequest, NODE_AUTH_HEADER } from './nodeAuth.js';
import { RelayRoom, type PipeReply, type PipeRequest } from './relay.js';
import { SafeEventEmitter } from '../util/events.js';

export interface ClusterNodeOptions {
  config: Config;
  registry: RoomRegistry;
  fanout: FanoutFactory;
  log: Logger;
  /** This node's public address for clients sent here (config.cluster.nodePublicUrl, else the listen URL once known). */
  url: () => string;
  /** This node's internal API for other nodes (config.cluster.nodeUrl, else the internal listener's URL once known). */
  internalUrl: () => string;
}

const MAX_PIPE_BODY = 4096;

/** What a ClusterNode emits. */
export interface ClusterNodeEvents {
  /** A relay (the viewer side of a room owned by another node) opened on this node. */
  relay: [relay: RelayRoom];
  /** A room's owner revoked its links (relayed from the directory). */
  linksRevoked: [roomId: string, version: number];
}

export class ClusterNode extends SafeEventEmitter<ClusterNodeEvents> {
  readonly nodeId: string;
  readonly #opts: ClusterNodeOptions;
  readonly #directory: RoomDirectory;
  readonly #log: Logger;
  readonly #epochs = new Map<string, number>();
  readonly #relays = new Map<string, RelayRoom>();
  readonly #opening = new Map<string, Promise<RelayRoom>>();
  /** Pipes this node serves as the owner: linkId → the room and the remote node. */
  readonly #links = new Map<string, { roomId: string; nodeId: string }>();
  /** Nonces of the internal API requests served here (and, through Redis, anywhere in the cluster). */
  readonly #nonces: NonceGuard;
  #timer: NodeJS.Timeout | null = null;
  #beating = false;
  #closed = false;

  private constructor(opts: ClusterNodeOptions, directory: RoomDirectory) {
    super();
    this.#opts = opts;
    this.nodeId = opts.config.cluster.nodeId;
    this.#directory = directory;
    this.#log = opts.log;
    this.#nonces = new NonceGuard((nonce, ttlMs) => directory.claimNonce(nonce, ttlMs));
    opts.registry.on('room', this.#onRoom);
    opts.registry.on('roomClosed', this.#onRoomClosed);
    opts.registry.on('linksRevoked', this.#onRevoked);
  }

  /** Relays see the new link version at once, and drop their viewers joined with older links at their next poll. */
  readonly #onRevoked = (roomId: string): void => {
    const room = this.#opts.registry.get(roomId);
    if (room) this.#put(room);
  };

  /** Connects to the directory. @throws AppError('CONFIG_INVALID') when Redis cannot be reached. */
  static async create(opts: ClusterNodeOptions): Promise<ClusterNode> {
    const c = opts.config.cluster;
    if (!c.redisUrl) throw new AppError('CONFIG_INVALID', 'cluster.redisUrl is not set');
    const directory = await RoomDirectory.connect(c.redisUrl, c.ttlMs, opts.log, {
      secret: opts.config.tokenSecret,
      nodeUrls: c.nodeUrls,
    });
    return new ClusterNode(opts, directory);
  }

  get directory(): RoomDirectory {
    return this.#directory;
  }
  /** Open relays (rooms of other nodes viewed here). */
  relays(): RelayRoom[] {
    return [...this.#relays.values()];
  }
  /** Pipes served to other nodes. */
  get pipeCount(): number {
    return this.#links.size;
  }

  /** Registers the internal pipe API (on the internal listener's router: never the public one). */
  addRoutes(router: Router<Handler>): void {
    router.add('POST', '/internal/pipe/:roomId', (ex, p) => this.#pipe(ex, p.roomId ?? ''), { maxBody: MAX_PIPE_BODY });
    router.add('DELETE', '/internal/pipe/:roomId/:linkId', (ex, p) => this.#unpipe(ex, p.roomId ?? '', p.linkId ?? ''));
  }

  /** Starts the heartbeat (first beat now, so that the rooms and this node are in the directory at once). */
  async start(): Promise<void> {
    await this.#beat();
    this.#timer = setInterval(() => void this.#beat(), this.#opts.config.cluster.heartbeatMs);
    this.#timer.unref();
    this.#log.info('cluster node up', {
      nodeId: this.nodeId,
      url: this.#opts.url(),
      internalUrl: this.#opts.internalUrl(),
      fanout: this.#opts.fanout.kind,
    });
  }

  /**
   * The room a viewer joins on this node when the registry does not have it: a relay from its owner.
   * @throws AppError('ROOM_NOT_FOUND') when no live node owns it, ('WRONG_NODE') naming the owner when this node has
   * no SFU, ('ROOM_OWNER_LOST') when the owner does not answer.
   */
  async viewerRoom(roomId: string): Promise<RelayRoom> {
    const open = this.#relays.get(roomId);
    if (open && !open.closed) return open;
    const pending = this.#opening.get(roomId);
    if (pending) return pending;
    const p = this.#openRelay(roomId).finally(() => this.#opening.delete(roomId));
    this.#opening.set(roomId, p);
    return p;
  }

  /** A relay already open here (no directory call). */
  relay(roomId: string): RelayRoom | undefined {
    const r = this.#relays.get(roomId);
    return r && !r.closed ? r : undefined;
  }

  /**
   * For a performer (or anything only the owner can serve) reaching the wrong node.
   * @throws AppError('WRONG_NODE') naming the owner's URL, or ('ROOM_NOT_FOUND').
   */
  async redirect(roomId: string): Promise<never> {
    const loc = await this.#directory.lookup(roomId);
    if (!loc || loc.nodeId === this.nodeId) throw new AppError('ROOM_NOT_FOUND', 'no such room (it may have ended)');
    throw new AppError('WRONG_NODE', `this room runs on another server: connect to ${loc.node.url}`);
  }

  /** Stops the heartbeat, closes relays, removes this node and its rooms from the directory. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#opts.registry.off('room', this.#onRoom);
    this.#opts.registry.off('roomClosed', this.#onRoomClosed);
    this.#opts.registry.off('linksRevoked', this.#onRevoked);
    for (const r of this.#relays.values()) r.close('server-shutdown');
    this.#relays.clear();
    try {
      for (const room of this.#opts.registry.rooms()) await this.#directory.dropRoom(room.id, this.nodeId);
      await this.#directory.dropNode(this.nodeId);
    } catch (err) {
      this.#log.warn('directory clean-up failed (entries expire by themselves)', { err: err as Error });
    }
    await this.#directory.close();
  }

  #record(room: Room): RoomRecord {
    let linkVersion = 0;
    try {
      linkVersion = this.#opts.registry.linkVersion(room.id);
    } catch {
      // closing: the record is about to go
    }
    return { nodeId: this.nodeId, epoch: this.#epochs.get(room.id) ?? 0, linkVersion, info: room.info };
  }

  #nodeRecord(): NodeRecord {
    return {
      nodeId: this.nodeId,
      url: this.#opts.url(),
      internalUrl: this.#opts.internalUrl(),
      fanout: this.#opts.fanout.kind,
    };
  }

  readonly #onRoom = (room: Room): void => {
    this.#epochs.set(room.id, 0);
    room.on('sfuRebuilt', () => {
      // Relays see the new epoch at their next poll and pipe again.
      this.#epochs.set(room.id, (this.#epochs.get(room.id) ?? 0) + 1);
      this.#put(room);
    });
    this.#put(room);
  };

  readonly #onRoomClosed = (roomId: string): void => {
    this.#epochs.delete(roomId);
    for (const [id, l] of this.#links) if (l.roomId === roomId) this.#links.delete(id);
    this.#directory
      .dropRoom(roomId, this.nodeId)
      .catch((err: unknown) =>
        this.#log.warn('directory drop failed (the entry expires)', { roomId, err: err as Error }),
      );
  };

  #put(room: Room): void {
    if (this.#closed || room.closed) return;
    this.#directory
      .putRoom(room.id, this.#record(room))
      .catch((err: unknown) => this.#log.warn('directory write failed', { roomId: room.id, err: err as Error }));
  }

  async #beat(): Promise<void> {
    if (this.#closed || this.#beating) return;
    this.#beating = true;
    try {
      const rooms = this.#opts.registry.rooms().filter((r) => !r.closed);
      await this.#directory.heartbeat(
        this.#nodeRecord(),
        rooms.map((r) => this.#record(r)),
        rooms.map((r) => r.id),
      );
      for (const relay of [...this.#relays.values()]) await relay.poll(this.#directory);
      // Pipes to nodes that left the directory.
      const remotes = new Set([...this.#links.values()].map((l) => l.nodeId));
      for (const nodeId of remotes) {
        if (await this.#directory.node(nodeId)) continue;
        for (const [linkId, l] of [...this.#links]) {
          if (l.nodeId !== nodeId) continue;
          this.#links.delete(linkId);
          this.#opts.registry.get(l.roomId)?.sfu?.closePipe(linkId);
          this.#log.info('pipe to a lost node closed', { roomId: l.roomId, nodeId, linkId });
        }
      }
    } catch (err) {
      this.#log.warn('cluster heartbeat failed', { err: err as Error });
    } finally {
      this.#beating = false;
    }
  }

  async #openRelay(roomId: string): Promise<RelayRoom> {
    const loc = await this.#directory.lookup(roomId);
    if (!loc || loc.nodeId === this.nodeId) throw new AppError('ROOM_NOT_FOUND', 'no such room (it may have ended)');
    if (this.#opts.fanout.kind !== 'sfu') {
      throw new AppError('WRONG_NODE', `this room runs on another server: connect to ${loc.node.url}`);
    }
    const relay = await RelayRoom.open(
      this.#opts.fanout as MediasoupFanoutFactory,
      this.#opts.config,
      loc,
      roomId,
      this.#log.child('relay'),
    );
    if (this.#closed) {
      relay.close('server-shutdown');
      throw new AppError('INVALID_STATE', 'server shutting down');
    }
    this.#relays.set(roomId, relay);
    relay.on('linksRevoked', (id, v) => this.safeEmit('linksRevoked', id, v));
    relay.once('close', () => {
      if (this.#relays.get(roomId) === relay) this.#relays.delete(roomId);
    });
    this.safeEmit('relay', relay);
    return relay;
  }

  async #authBody(ex: HttpExchange): Promise<{ nodeId: string; text: string }> {
    const text = (await ex.body()).toString('utf8');
    const req = verifyNodeRequest(
      this.#opts.config.tokenSecret,
      ex.headers[NODE_AUTH_HEADER],
      ex.method,
      ex.path,
      text,
    );
    await this.#nonces.claim(req);
    return { nodeId: req.nodeId, text };
  }

  async #pipe(ex: HttpExchange, roomId: string): Promise<void> {
    const { nodeId, text } = await this.#authBody(ex);
    let req: PipeRequest;
    try {
      req = JSON.parse(text) as PipeRequest;
    } catch {
      throw new AppError('BAD_REQUEST', 'pipe request: invalid JSON');
    }
    if (
      typeof req.linkId !== 'string' ||
      !/^[A-Za-z0-9_-]{1,100}$/.test(req.linkId) ||
      typeof req.ip !== 'string' ||
      req.ip.length > 64 ||
      !Number.isInteger(req.port) ||
      req.port < 1 ||
      req.port > 65535
    ) {
      throw new AppError('BAD_REQUEST', 'pipe request: expected {linkId, ip, port}');
    }
    const room = this.#opts.registry.require(decodeURIComponent(roomId));
    if (!room.sfu) throw new AppError('UNSUPPORTED', 'this room has no SFU to pipe from');
    const c = this.#opts.config;
    const out = await room.sfu.pipeOut(
      req.linkId,
      { ip: req.ip, port: req.port },
      c.cluster.pipeAnnouncedIp ?? c.fanout.announcedIp,
    );
    this.#links.set(req.linkId, { roomId: room.id, nodeId });
    const reply: PipeReply = { ...out, epoch: this.#epochs.get(room.id) ?? 0 };
    this.#log.info('pipe to another node', { roomId: room.id, nodeId, linkId: req.linkId });
    ex.json(201, reply);
  }

  async #unpipe(ex: HttpExchange, roomId: string, linkId: string): Promise<void> {
    await this.#authBody(ex);
    const id = decodeURIComponent(linkId);
    const link = this.#links.get(id);
    if (link && link.roomId === decodeURIComponent(roomId)) {
      this.#links.delete(id);
      this.#opts.registry.get(link.roomId)?.sfu?.closePipe(id);
    }
    ex.send(204, {});
  }
}
