/**
 * The room directory of a multi-node deployment, in Redis: which node owns each room, and how to reach each node.
 *
 *   avatar:node:<nodeId>  JSON NodeRecord   (PX ttl, refreshed by the node's heartbeat)
 *   avatar:room:<roomId>  JSON RoomRecord   (PX ttl, refreshed by the owner's heartbeat; deleted when the room closes)
 *
 * Node loss: a node that stops (crash, partition) stops refreshing, its keys expire after config.cluster.ttlMs, and
 * lookups then say the room is gone; a relay polling its owner's entry closes with ROOM_OWNER_LOST. A room whose
 * owner's node key has expired is treated as gone even while its own key lives (they expire independently).
 */
import { Redis } from 'ioredis';
import { AppError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { RoomInfo } from '../types/protocol.js';
import { redactText, redactUrl } from '../util/redact.js';
import { signNodeRecord, verifyNodeRecord } from './nodeAuth.js';

export interface NodeRecord {
  nodeId: string;
  /**
   * The node's public address, for clients another node sends there (WHIP/WHEP 307, WRONG_NODE), e.g.
   * http://10.0.0.5:8080 (config.cluster.nodePublicUrl).
   */
  url: string;
  /** Base URL of the node's internal listener (the node-to-node API), e.g. http://10.0.0.5:8081 (config.cluster.nodeUrl). */
  internalUrl: string;
  /** Whether the node runs mediasoup ('sfu') or direct fan-out only. */
  fanout: 'sfu' | 'direct';
}

/** What nodes trust in the directory (Redis itself is not trusted). */
export interface DirectoryTrust {
  /** The cluster's shared secret: node records are signed with it, and unsigned or forged ones are ignored. */
  secret: string;
  /** When not empty, the only node URLs accepted (config.cluster.nodeUrls), signed or not. */
  nodeUrls: readonly string[];
}

export interface RoomRecord {
  nodeId: string;
  /** Incremented by the owner whenever its SFU router was rebuilt (relays must pipe again). */
  epoch: number;
  /** The room's link version (links signed at another version are revoked). */
  linkVersion: number;
  info: RoomInfo;
}

export interface RoomLocation extends RoomRecord {
  node: NodeRecord;
}

const nodeKey = (id: string): string => `avatar:node:${id}`;
const roomKey = (id: string): string => `avatar:room:${id}`;

export class RoomDirectory {
  readonly #redis: Redis;
  readonly #ttlMs: number;
  readonly #log: Logger;
  readonly #trust: DirectoryTrust;
  #closed = false;

  private constructor(redis: Redis, ttlMs: number, log: Logger, trust: DirectoryTrust) {
    this.#redis = redis;
    this.#ttlMs = ttlMs;
    this.#log = log;
    this.#trust = trust;
  }

  /**
   * Connects to Redis (fails within `connectTimeoutMs` with a clear CONFIG_INVALID error when it is unreachable or
   * refuses the password; the error names the URL without its password).
   */
  static async connect(
    url: string,
    ttlMs: number,
    log: Logger,
    trust: DirectoryTrust,
    connectTimeoutMs = 5000,
  ): Promise<RoomDirectory> {
    const redis = new Redis(url, {
      lazyConnect: true,
      connectTimeout: connectTimeoutMs,
      maxRetriesPerRequest: 2,
      enableOfflineQueue: true,
      // After start-up, keep retrying (a Redis restart must not kill the node), at most every 2 s.
      retryStrategy: (times) => Math.min(times * 200, 2000),
    });
    let lastError: unknown = null;
    redis.on('error', (err: Error) => {
      lastError = err;
      log.debug('redis connection error', { err });
    });
    try {
      await redis.connect();
      await redis.ping();
    } catch (err) {
      redis.disconnect();
      const why = redactText(err instanceof Error ? err.message : String(lastError ?? err));
      throw new AppError('CONFIG_INVALID', `cluster.redisUrl: cannot reach Redis at ${redactUrl(url)} (${why})`);
    }
    return new RoomDirectory(redis, ttlMs, log, trust);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** One heartbeat: this node's record and every room it owns, with a fresh TTL. */
  async heartbeat(node: NodeRecord, rooms: RoomRecord[], roomIds: string[]): Promise<void> {
    const m = this.#redis.multi();
    const signed = { ...node, sig: signNodeRecord(this.#trust.secret, node) };
    m.set(nodeKey(node.nodeId), JSON.stringify(signed), 'PX', this.#ttlMs);
    rooms.forEach((r, i) => m.set(roomKey(roomIds[i]!), JSON.stringify(r), 'PX', this.#ttlMs));
    await m.exec();
  }

  async putRoom(roomId: string, rec: RoomRecord): Promise<void> {
    await this.#redis.set(roomKey(roomId), JSON.stringify(rec), 'PX', this.#ttlMs);
  }

  /** Removes a room, only if `nodeId` still owns it. */
  async dropRoom(roomId: string, nodeId: string): Promise<void> {
    const raw = await this.#redis.get(roomKey(roomId));
    if (raw && (JSON.parse(raw) as RoomRecord).nodeId === nodeId) await this.#redis.del(roomKey(roomId));
  }

  async dropNode(nodeId: string): Promise<void> {
    await this.#redis.del(nodeKey(nodeId));
  }

  /**
   * A live node's record, or null: also when the record is not signed with the cluster's secret or names a URL
   * outside config.cluster.nodeUrls (planted in Redis: nobody is sent there).
   */
  async node(nodeId: string): Promise<NodeRecord | null> {
    const raw = await this.#redis.get(nodeKey(nodeId));
    if (!raw) return null;
    let rec: Partial<NodeRecord> & { sig?: unknown };
    try {
      rec = JSON.parse(raw) as Partial<NodeRecord> & { sig?: unknown };
    } catch {
      rec = {};
    }
    const { nodeId: id, url, internalUrl, fanout, sig } = rec;
    const fields =
      typeof url === 'string' &&
      typeof internalUrl === 'string' &&
      (fanout === 'sfu' || fanout === 'direct') &&
      id === nodeId;
    if (!fields || !verifyNodeRecord(this.#trust.secret, { nodeId, url, internalUrl, fanout }, sig)) {
      this.#log.warn('node record without a valid signature ignored', { nodeId });
      return null;
    }
    const listed = this.#trust.nodeUrls;
    if (listed.length > 0 && !(listed.includes(url) && listed.includes(internalUrl))) {
      this.#log.warn('node record with a URL outside cluster.nodeUrls ignored', { nodeId });
      return null;
    }
    return { nodeId, url, internalUrl, fanout };
  }

  /**
   * Claims a node request's nonce for `ttlMs` across the cluster (SET NX). @returns false when it was claimed before.
   */
  async claimNonce(nonce: string, ttlMs: number): Promise<boolean> {
    return (await this.#redis.set(`avatar:nonce:${nonce}`, '1', 'PX', Math.ceil(ttlMs), 'NX')) === 'OK';
  }

  /** Where a room lives, or null when no live node owns it. */
  async lookup(roomId: string): Promise<RoomLocation | null> {
    const raw = await this.#redis.get(roomKey(roomId));
    if (!raw) return null;
    const rec = JSON.parse(raw) as RoomRecord;
    const node = await this.node(rec.nodeId);
    if (!node) return null;
    return { ...rec, node };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#redis.quit();
    } catch (err) {
      this.#log.debug('redis quit failed', { err: err as Error });
      this.#redis.disconnect();
    }
  }
}
