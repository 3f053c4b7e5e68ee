/**
 * The room registry: the rooms of this process by id, created from the REST API, dropped when they close.
 *
 * It also owns room lifetime by performer presence: a new room waits `config.roomIdleMs` for its performer's first
 * join; when the performer's socket goes, the room waits `config.roomGraceMs` for a reconnect, then closes with
 * 'performer-left'. A join within the window cancels the timer.
 *
 * Quotas (config.quotas): an API key has at most `roomsPerKey` rooms open (so that one key cannot take every slot of
 * `maxRooms`), and `viewerSlots` counts the viewers of each room and link for signaling and WHEP.
 *
 * Events: 'room' (room: Room) after a room is created; 'roomClosed' (roomId: string, reason: CloseReason) after a
 * room closed and was dropped. Listeners (signaling, metrics) only listen; the registry knows nothing of them.
 */
import { randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import { AppError, InvalidStateError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { FanoutFactory } from '../media/fanoutTypes.js';
import type { PortraitStore } from '../portraits/store.js';
import type { CloseReason } from '../types/protocol.js';
import type { Room } from './room.js';
import type { AvatarWorkerPool } from '../avatar/workerPool.js';
import { SafeEventEmitter } from '../util/events.js';
import { ViewerSlots } from './viewerSlots.js';

export interface RoomRegistryOptions {
  config: Config;
  fanout: FanoutFactory;
  portraits: PortraitStore;
  log: Logger;
  /** Avatar workers shared by the rooms (warm spares, reuse after a room closes); default none. */
  workers?: AvatarWorkerPool | null;
}

interface Entry {
  room: Room;
  /** The API key (name) that created the room. */
  owner: string;
  /** Links carry the version they were signed at; revoking raises it (older links get TOKEN_REVOKED). */
  linkVersion: number;
  /** socket id of the connected performer, if any. */
  performer: string | null;
  timer: NodeJS.Timeout | null;
}

export interface RoomRegistryEvents {
  room: [room: Room];
  roomClosed: [roomId: string, reason: CloseReason];
  /** The room's owner revoked its links: sockets joined with older links must go. */
  linksRevoked: [roomId: string, version: number];
}

export class RoomRegistry extends SafeEventEmitter<RoomRegistryEvents> {
  readonly #opts: RoomRegistryOptions;
  readonly #entries = new Map<string, Entry>();
  /** Rooms being created (counted against maxRooms, closed if the registry closes meanwhile). */
  #creating = 0;
  /** Rooms being created per owner (counted against quotas.roomsPerKey); an owner with none has no entry. */
  readonly #creatingBy = new Map<string, number>();
  #closed = false;
  /** Viewers per room and per link (config.quotas), taken and given back by signaling and WHEP. */
  readonly viewerSlots: ViewerSlots;

  constructor(opts: RoomRegistryOptions) {
    super();
    this.#opts = opts;
    this.viewerSlots = new ViewerSlots({
      perRoom: opts.config.quotas.viewersPerRoom,
      perLink: opts.config.quotas.viewersPerLink,
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Number of open rooms. */
  get size(): number {
    return this.#entries.size;
  }

  /** Viewers over all rooms. */
  viewerCount(): number {
    let n = 0;
    for (const e of this.#entries.values()) n += e.room.viewerCount;
    return n;
  }

  rooms(): Room[] {
    return [...this.#entries.values()].map((e) => e.room);
  }

  get(id: string): Room | undefined {
    return this.#entries.get(id)?.room;
  }

  /** @throws AppError('ROOM_NOT_FOUND') */
  require(id: string): Room {
    const room = this.get(id);
    if (!room || room.closed) throw new AppError('ROOM_NOT_FOUND', 'no such room (it may have ended)');
    return room;
  }

  /**
   * Creates a room, with a portrait when `portraitId` is given (the portrait is prepared before the room is listed:
   * a portrait the engine refuses, e.g. NO_FACE, fails the creation and nothing is left behind).
   * @throws AppError('NOT_FOUND') for an unknown portrait, ('QUOTA_EXCEEDED') when `owner` has quotas.roomsPerKey
   * rooms, ('ROOM_BUSY') at maxRooms, or what Room.create throws.
   */
  async create(opts: { portraitId?: string; owner?: string } = {}): Promise<Room> {
    if (this.#closed) throw new InvalidStateError('registry closed');
    const { config, portraits, fanout, log } = this.#opts;
    const owner = opts.owner ?? 'operator';
    // A room animates only its owner's portraits (another owner's id is NOT_FOUND).
    if (opts.portraitId !== undefined) portraits.get(opts.portraitId, owner);
    const mine = this.roomsOf(owner).length + (this.#creatingBy.get(owner) ?? 0);
    if (mine >= config.quotas.roomsPerKey) {
      throw new AppError(
        'QUOTA_EXCEEDED',
        `this API key has its most rooms open (${config.quotas.roomsPerKey}): delete one first`,
      );
    }
    if (this.#entries.size + this.#creating >= config.maxRooms)
      throw new AppError('ROOM_BUSY', 'too many rooms are open; try again later');
    const roomId = randomBytes(9).toString('base64url');
    this.#creating++;
    this.#creatingBy.set(owner, (this.#creatingBy.get(owner) ?? 0) + 1);
    let room: Room;
    try {
      // Imported on first use so that the REST API, portraits and health work even where the media stack fails to
      // load; a failure here is reported to the caller of POST /api/rooms.
      const { Room: RoomClass } = await import('./room.js');
      room = await RoomClass.create({
        roomId,
        config,
        fanout,
        workers: this.#opts.workers ?? null,
        loadPortrait: (id) => portraits.loadRgb(id, owner),
        onPortraitUsed: (id) => {
          portraits
            .markUsed(id, roomId)
            .catch((err: unknown) => log.warn('consent log write failed', { roomId, portraitId: id, err }));
        },
      });
      if (opts.portraitId !== undefined) {
        try {
          await room.setPortrait(opts.portraitId);
        } catch (err) {
          room.close('error');
          throw err;
        }
      }
    } finally {
      this.#creating--;
      const n = (this.#creatingBy.get(owner) ?? 1) - 1;
      if (n > 0) this.#creatingBy.set(owner, n);
      else this.#creatingBy.delete(owner);
    }
    if (this.#closed) {
      room.close('server-shutdown');
      throw new InvalidStateError('registry closed');
    }
    const entry: Entry = { room, owner, linkVersion: 0, performer: null, timer: null };
    this.#entries.set(roomId, entry);
    room.once('close', (reason: CloseReason) => this.#drop(roomId, reason));
    this.#arm(entry, config.roomIdleMs, 'performer never joined');
    log.info('room created', { roomId, fanout: room.fanoutKind });
    this.safeEmit('room', room);
    return room;
  }

  /** The API key name that owns a room. @throws AppError('ROOM_NOT_FOUND') */
  ownerOf(roomId: string): string {
    const e = this.#entries.get(roomId);
    if (!e || e.room.closed) throw new AppError('ROOM_NOT_FOUND', 'no such room (it may have ended)');
    return e.owner;
  }

  /** Open rooms owned by `owner`. */
  roomsOf(owner: string): Room[] {
    return [...this.#entries.values()].filter((e) => e.owner === owner && !e.room.closed).map((e) => e.room);
  }

  /** The link version new links of a room are signed with. @throws AppError('ROOM_NOT_FOUND') */
  linkVersion(roomId: string): number {
    const e = this.#entries.get(roomId);
    if (!e) throw new AppError('ROOM_NOT_FOUND', 'no such room (it may have ended)');
    return e.linkVersion;
  }

  /** Refuses a link of a room whose links were revoked after it was signed. @throws AppError('TOKEN_REVOKED') */
  checkLink(roomId: string, v: number | undefined): void {
    const e = this.#entries.get(roomId);
    if (e && (v ?? 0) !== e.linkVersion)
      throw new AppError('TOKEN_REVOKED', "this room link was revoked by the room's owner");
  }

  /** Revokes every link of a room (performer and viewer); returns the new version. @throws ROOM_NOT_FOUND */
  revokeLinks(roomId: string): number {
    const e = this.#entries.get(roomId);
    if (!e || e.room.closed) throw new AppError('ROOM_NOT_FOUND', 'no such room (it may have ended)');
    e.linkVersion++;
    this.#opts.log.info('room links revoked', { roomId, version: e.linkVersion });
    this.safeEmit('linksRevoked', roomId, e.linkVersion);
    return e.linkVersion;
  }

  /**
   * Records the performer's socket for a room and cancels a pending close. Returns the previous performer's socket
   * id when another socket held the role (the caller tells it it was replaced), else null.
   */
  performerJoined(roomId: string, socketId: string): string | null {
    const e = this.#entries.get(roomId);
    if (!e) throw new AppError('ROOM_NOT_FOUND', 'no such room (it may have ended)');
    const prev = e.performer !== socketId ? e.performer : null;
    e.performer = socketId;
    this.#disarm(e);
    return prev;
  }

  /** The performer's socket went away: arm the grace timer (a socket that was replaced changes nothing). */
  performerLeft(roomId: string, socketId: string): void {
    const e = this.#entries.get(roomId);
    if (!e || e.performer !== socketId) return;
    e.performer = null;
    this.#arm(e, this.#opts.config.roomGraceMs, 'performer left');
  }

  /** Whether `socketId` is the room's current performer socket. */
  isPerformer(roomId: string, socketId: string): boolean {
    return this.#entries.get(roomId)?.performer === socketId;
  }

  /** Closes the rooms animating a portrait (it was deleted); returns their ids. */
  closeRoomsUsing(portraitId: string, reason: CloseReason): string[] {
    const ids: string[] = [];
    for (const e of [...this.#entries.values()]) {
      if (e.room.closed || e.room.info.portraitId !== portraitId) continue;
      ids.push(e.room.id);
      e.room.close(reason);
    }
    return ids;
  }

  /** Closes one room. @throws AppError('ROOM_NOT_FOUND') */
  closeRoom(roomId: string, reason: CloseReason): void {
    this.require(roomId).close(reason);
  }

  /** Closes every room ('server-shutdown') and refuses new ones. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const e of [...this.#entries.values()]) {
      this.#disarm(e);
      e.room.close('server-shutdown');
    }
    // Rooms whose 'close' listener did not run (a Room that failed to emit) are dropped anyway.
    for (const id of [...this.#entries.keys()]) this.#drop(id, 'server-shutdown');
  }

  #arm(e: Entry, ms: number, why: string): void {
    this.#disarm(e);
    e.timer = setTimeout(() => {
      e.timer = null;
      this.#opts.log.info('room closing', { roomId: e.room.id, why });
      e.room.close('performer-left');
    }, ms);
    e.timer.unref();
  }

  #disarm(e: Entry): void {
    if (e.timer) clearTimeout(e.timer);
    e.timer = null;
  }

  #drop(roomId: string, reason: CloseReason): void {
    const e = this.#entries.get(roomId);
    if (!e) return;
    this.#disarm(e);
    this.#entries.delete(roomId);
    this.#opts.log.info('room closed', { roomId, reason });
    this.safeEmit('roomClosed', roomId, reason);
  }
}
