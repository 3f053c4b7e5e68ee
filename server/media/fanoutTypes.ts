/**
 * The fan-out vocabulary: what rooms, signaling and the cluster know of a room's SFU side and of the process's
 * fan-out factory. The implementations (fanout.ts: the choice and the direct-only factory; mediasoupFanout.ts: the
 * mediasoup SFU) import this file; it imports nothing of them.
 */
import type { EventEmitter } from 'node:events';
import type { types as ms } from 'mediasoup';
import type { Logger } from '../logger.js';
import type { FanoutKind, SfuConsumerInfo, SfuTransportOptions } from '../types/protocol.js';
import type { Publisher } from './publisher.js';

/** A pipe from this room's primary router to another node (server/cluster). */
export interface PipeOut {
  /** Where the remote side sends to. */
  ip: string;
  port: number;
  producers: { id: string; kind: 'audio' | 'video'; rtpParameters: unknown }[];
}

/** What an SFU room emits. */
export interface SfuRoomEvents {
  /** Its viewer count changed. */
  viewers: [count: number];
  /** These viewers' routers went away: they must consume again (signaling tells them). */
  viewersReset: [viewerIds: string[], why: string];
  /** The primary router was rebuilt (a worker died): remote pipes must be made again. */
  rebuilt: [];
  /** Emitted once, by close(). */
  close: [];
}

/** One room's SFU side; its events are SfuRoomEvents. */
export interface SfuRoomFanout extends EventEmitter<SfuRoomEvents> {
  readonly kind: 'sfu';
  readonly closed: boolean;
  readonly viewerCount: number;
  /** The router's RTP capabilities (for the viewer's mediasoup-client Device.load). */
  rtpCapabilities(): unknown;
  createTransport(viewerId: string): Promise<SfuTransportOptions>;
  connect(viewerId: string, transportId: string, dtlsParameters: unknown): Promise<void>;
  /** Consumers for the room's video and audio producers, created paused (resume after the client's consume). */
  consume(viewerId: string, transportId: string, rtpCapabilities: unknown): Promise<SfuConsumerInfo[]>;
  resume(viewerId: string, consumerId: string): Promise<void>;
  removeViewer(viewerId: string): void;
  /** Pipes the room's producers to another node's PipeTransport (server/cluster). */
  pipeOut(linkId: string, remote: { ip: string; port: number }, announcedIp: string | null): Promise<PipeOut>;
  closePipe(linkId: string): void;
  /** Per router: its worker's pid and viewers (the primary first). */
  routers(): { workerPid: number; viewers: number }[];
  close(): void;
}

export interface SfuRoomOptions {
  roomId: string;
  /** A local room: its synthesized tracks are produced into the primary router. */
  publisher?: Publisher;
  /** Or any other source of producers (a relay's pipe from the owner node). */
  source?: ProducerSource;
  log: Logger;
}

export interface FanoutFactory {
  readonly kind: FanoutKind;
  /** Why this kind was chosen (also logged once at start-up). */
  readonly reason: string;
  /** Creates a room's SFU side. @throws AppError('UNSUPPORTED') when kind is 'direct'. */
  createSfuRoom(opts: SfuRoomOptions): Promise<SfuRoomFanout>;
  /** The mediasoup workers and their load (none with direct fan-out). */
  workers(): SfuWorkerInfo[];
  /** Closes the mediasoup workers (if any). Idempotent. */
  close(): Promise<void>;
}

/** Where a room's primary router gets its producers from (re-attached when that router is rebuilt). */
export interface ProducerSource {
  /** Produces the room's tracks into `router`; resolves with the producers (video first). */
  attach(router: ms.Router): Promise<ms.Producer[]>;
  /** Releases what attach() created (the router's own objects close with the router). Idempotent. */
  detach(): void;
  /**
   * Whether anybody consumes (viewers or pipes): a source may stop sending while nobody does (the local source stops
   * its encoder: an idle SFU room otherwise encodes for nobody, ~15 % of a core here).
   */
  setActive?(active: boolean): void;
}

/** A worker's figures for /healthz, metrics and benchmarks. */
export interface SfuWorkerInfo {
  pid: number;
  routers: number;
  viewers: number;
}
