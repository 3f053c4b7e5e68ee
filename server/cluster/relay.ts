/**
 * A relayed room: a viewer reached a node that does not own the room. The relay is an SFU room on this node whose
 * producers come from the owner node through a mediasoup PipeTransport pair (PipeSource), so that any number of
 * viewers on this node cost the owner one pipe. Viewers use the same sfu:* signaling as on the owner.
 *
 * The relay follows its owner through the directory (poll(), every heartbeat): owner gone → 'failure'
 * ROOM_OWNER_LOST then close('owner-lost'); owner's SFU rebuilt (epoch changed) → pipe again and tell the viewers to
 * consume again; room info changed → 'roomInfo'. With no viewer left for `lingerMs` it closes itself.
 */
import { randomBytes } from 'node:crypto';
import type { types as ms } from 'mediasoup';
import type { Config } from '../config.js';
import { AppError, toPublicError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { MediasoupFanoutFactory, MediasoupRoom } from '../media/mediasoupFanout.js';
import type { PipeOut, ProducerSource } from '../media/fanoutTypes.js';
import type { CloseReason, FanoutKind, RoomInfo, SfuConsumerInfo, SfuTransportOptions } from '../types/protocol.js';
import type { RoomDirectory, RoomLocation } from './directory.js';
import { NODE_AUTH_HEADER, signNodeRequest } from './nodeAuth.js';
import { SafeEventEmitter } from '../util/events.js';

/** Calls another node's internal API (signed), with a deadline. */
export async function callNode<T>(
  secret: string,
  selfId: string,
  baseUrl: string,
  method: 'POST' | 'DELETE',
  path: string,
  body: unknown,
  timeoutMs = 5000,
): Promise<T> {
  const text = body === undefined ? '' : JSON.stringify(body);
  let res: Response;
  try {
    res = await fetch(new URL(path, baseUrl), {
      method,
      headers: {
        ...(text ? { 'content-type': 'application/json' } : {}),
        [NODE_AUTH_HEADER]: signNodeRequest(secret, selfId, method, path, text),
      },
      ...(text ? { body: text } : {}),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    throw new AppError('ROOM_OWNER_LOST', `the node that owns this room does not answer (${baseUrl})`, { cause: err });
  }
  const reply = res.status === 204 ? null : ((await res.json().catch(() => null)) as unknown);
  if (!res.ok) {
    const e = reply as { code?: string; message?: string } | null;
    if (e?.code === 'ROOM_NOT_FOUND') throw new AppError('ROOM_NOT_FOUND', 'no such room (it may have ended)');
    throw new AppError(
      'ROOM_OWNER_LOST',
      `the owner node refused the pipe: ${res.status} ${e?.code ?? ''} ${e?.message ?? ''}`.trim(),
    );
  }
  return reply as T;
}

export interface PipeRequest {
  linkId: string;
  ip: string;
  port: number;
}
export interface PipeReply extends PipeOut {
  epoch: number;
}

export const pipePath = (roomId: string): string => `/internal/pipe/${encodeURIComponent(roomId)}`;
export const pipeLinkPath = (roomId: string, linkId: string): string =>
  `/internal/pipe/${encodeURIComponent(roomId)}/${encodeURIComponent(linkId)}`;

/** A relay's source: the owner's producers, through a PipeTransport pair between this router and the owner's. */
export class PipeSource implements ProducerSource {
  readonly #roomId: string;
  readonly #config: Config;
  readonly #location: () => RoomLocation;
  readonly #log: Logger;
  #transport: ms.PipeTransport | null = null;
  #link: { id: string; url: string } | null = null;
  /** The owner's epoch the current pipe was made at. */
  epoch = -1;

  constructor(roomId: string, config: Config, location: () => RoomLocation, log: Logger) {
    this.#roomId = roomId;
    this.#config = config;
    this.#location = location;
    this.#log = log;
  }

  async attach(router: ms.Router): Promise<ms.Producer[]> {
    this.detach();
    const c = this.#config;
    const announced = c.cluster.pipeAnnouncedIp ?? c.fanout.announcedIp;
    const t = await router.createPipeTransport({
      listenInfo: { protocol: 'udp', ip: c.fanout.listenIp, ...(announced ? { announcedAddress: announced } : {}) },
    });
    this.#transport = t;
    const loc = this.#location();
    const linkId = `${c.cluster.nodeId}-${randomBytes(6).toString('hex')}`;
    this.#link = { id: linkId, url: loc.node.internalUrl };
    try {
      const req: PipeRequest = {
        linkId,
        ip: announced ?? t.tuple.localAddress ?? c.fanout.listenIp,
        port: t.tuple.localPort,
      };
      const reply = await callNode<PipeReply>(
        c.tokenSecret,
        c.cluster.nodeId,
        loc.node.internalUrl,
        'POST',
        pipePath(this.#roomId),
        req,
      );
      await t.connect({ ip: reply.ip, port: reply.port });
      const producers: ms.Producer[] = [];
      for (const p of reply.producers) {
        producers.push(await t.produce({ kind: p.kind, rtpParameters: p.rtpParameters as ms.RtpParameters }));
      }
      this.epoch = reply.epoch;
      this.#log.info('relay piped from the owner node', {
        roomId: this.#roomId,
        owner: loc.nodeId,
        producers: producers.length,
      });
      return producers;
    } catch (err) {
      this.detach();
      throw err;
    }
  }

  detach(): void {
    this.#transport?.close();
    this.#transport = null;
    const link = this.#link;
    this.#link = null;
    if (link) {
      const c = this.#config;
      callNode(
        c.tokenSecret,
        c.cluster.nodeId,
        link.url,
        'DELETE',
        pipeLinkPath(this.#roomId, link.id),
        undefined,
        2000,
      ).catch((err: unknown) =>
        this.#log.debug('pipe delete on the owner failed (it cleans up by itself)', { err: err as Error }),
      );
    }
  }
}

export interface RelayEvents {
  viewers: [count: number];
  viewersReset: [ids: string[], why: string];
  roomInfo: [info: RoomInfo];
  linksRevoked: [roomId: string, version: number];
  failure: [err: { code: string; message: string }];
  close: [reason: CloseReason];
}

/** The viewer side of a room owned by another node. */
export class RelayRoom extends SafeEventEmitter<RelayEvents> {
  readonly id: string;
  readonly fanoutKind: FanoutKind = 'sfu';
  readonly #sfu: MediasoupRoom;
  readonly #source: PipeSource;
  readonly #log: Logger;
  readonly #lingerMs: number;
  /** Shared with the PipeSource, which pipes from wherever the owner now is. */
  readonly #where: { location: RoomLocation };
  #closed = false;
  #emptySince: number | null = Date.now();

  private constructor(
    id: string,
    sfu: MediasoupRoom,
    source: PipeSource,
    where: { location: RoomLocation },
    lingerMs: number,
    log: Logger,
  ) {
    super();
    this.id = id;
    this.#sfu = sfu;
    this.#source = source;
    this.#where = where;
    this.#lingerMs = lingerMs;
    this.#log = log;
    sfu.on('viewers', (n) => {
      this.#emptySince = n === 0 ? Date.now() : null;
      this.safeEmit('viewers', n);
    });
    sfu.on('viewersReset', (ids, why) => this.safeEmit('viewersReset', ids, why));
    sfu.on('close', () => this.close('error'));
  }

  /** Pipes the owner's producers into a router on this node. @throws AppError('ROOM_OWNER_LOST') */
  static async open(
    factory: MediasoupFanoutFactory,
    config: Config,
    location: RoomLocation,
    roomId: string,
    log: Logger,
    lingerMs = 30_000,
  ): Promise<RelayRoom> {
    const where = { location };
    const source = new PipeSource(roomId, config, () => where.location, log);
    const sfu = await factory.createSfuRoom({ roomId, source, log });
    return new RelayRoom(roomId, sfu, source, where, lingerMs, log);
  }

  get closed(): boolean {
    return this.#closed;
  }
  get info(): RoomInfo {
    return this.#where.location.info;
  }
  /** The room's link version as its owner last published it. */
  get linkVersion(): number {
    return this.#where.location.linkVersion ?? 0;
  }
  get ownerNodeId(): string {
    return this.#where.location.nodeId;
  }
  get viewerCount(): number {
    return this.#sfu.viewerCount;
  }
  get sfu(): MediasoupRoom {
    return this.#sfu;
  }

  sfuCapabilities(): unknown {
    return this.#sfu.rtpCapabilities();
  }
  sfuCreateTransport(viewerId: string): Promise<SfuTransportOptions> {
    return this.#sfu.createTransport(viewerId);
  }
  sfuConnect(viewerId: string, transportId: string, dtlsParameters: unknown): Promise<void> {
    return this.#sfu.connect(viewerId, transportId, dtlsParameters);
  }
  sfuConsume(viewerId: string, transportId: string, rtpCapabilities: unknown): Promise<SfuConsumerInfo[]> {
    return this.#sfu.consume(viewerId, transportId, rtpCapabilities);
  }
  sfuResume(viewerId: string, consumerId: string): Promise<void> {
    return this.#sfu.resume(viewerId, consumerId);
  }
  removeViewer(viewerId: string): void {
    this.#sfu.removeViewer(viewerId);
  }

  /** Follows the owner through the directory (called every heartbeat). */
  async poll(directory: RoomDirectory): Promise<void> {
    if (this.#closed) return;
    let loc: RoomLocation | null;
    try {
      loc = await directory.lookup(this.id);
    } catch (err) {
      this.#log.warn('directory lookup failed; relay kept', { roomId: this.id, err: err as Error });
      return;
    }
    if (this.#closed) return;
    if (!loc || loc.nodeId !== this.#where.location.nodeId) {
      const err = new AppError(
        'ROOM_OWNER_LOST',
        'the server that runs this room stopped answering; the room has ended',
      );
      this.#log.warn('relay owner lost', { roomId: this.id, owner: this.#where.location.nodeId });
      this.safeEmit('failure', toPublicError(err));
      this.close('owner-lost');
      return;
    }
    const infoChanged = JSON.stringify(loc.info) !== JSON.stringify(this.#where.location.info);
    const revoked = (loc.linkVersion ?? 0) > this.linkVersion;
    this.#where.location = loc;
    if (infoChanged) this.safeEmit('roomInfo', loc.info);
    if (revoked) this.safeEmit('linksRevoked', this.id, loc.linkVersion);
    if (loc.epoch !== this.#source.epoch) {
      this.#log.info('owner SFU rebuilt: piping again', { roomId: this.id, epoch: loc.epoch });
      await this.#sfu.rebuild('the SFU of this room was rebuilt on its owner node').catch((err: unknown) => {
        this.safeEmit('failure', toPublicError(err));
        this.close('owner-lost');
      });
      return;
    }
    if (this.#emptySince !== null && Date.now() - this.#emptySince > this.#lingerMs) this.close('room-deleted');
  }

  close(reason: CloseReason): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#sfu.close();
    this.safeEmit('close', reason);
  }
}
