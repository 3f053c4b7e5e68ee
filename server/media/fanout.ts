/**
 * Fan-out selection, once per process at start-up (createFanoutFactory):
 * - 'direct': never tries mediasoup; every viewer gets its own server-side peer connection (DirectFanout).
 * - 'sfu': starts a mediasoup worker or fails start-up with a clear error.
 * - 'auto': tries a mediasoup worker, falls back to direct; ONE log line says which and why.
 * Rooms always keep a DirectFanout (it always works); with 'sfu' they also create an SFU room (a mediasoup Router
 * fed with the room's synthesized tracks) that viewers consume through their own WebRtcTransports.
 */
import type { EventEmitter } from 'node:events';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import type { FanoutKind, SfuConsumerInfo, SfuTransportOptions } from '../signaling/protocol.js';
import { AppError } from '../errors.js';
import type { PipeOut, ProducerSource, SfuWorkerInfo } from './mediasoupFanout.js';
import type { Publisher } from './publisher.js';

/** One room's SFU side. Events: 'viewers' (count), 'close'. */
export interface SfuRoomFanout extends EventEmitter {
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

class DirectOnlyFactory implements FanoutFactory {
  readonly kind = 'direct' as const;
  readonly reason: string;
  constructor(reason: string) {
    this.reason = reason;
  }
  createSfuRoom(): Promise<SfuRoomFanout> {
    return Promise.reject(new AppError('UNSUPPORTED', 'this server runs without an SFU (direct fan-out)'));
  }
  workers(): SfuWorkerInfo[] {
    return [];
  }
  close(): Promise<void> {
    // Nothing to release.
    return Promise.resolve();
  }
}

/**
 * Picks the fan-out for this process from config.fanout.mode (see the module comment).
 * @throws AppError('CONFIG_INVALID') in 'sfu' mode when no mediasoup worker can be started.
 */
export async function createFanoutFactory(config: Config, log: Logger): Promise<FanoutFactory> {
  const mode = config.fanout.mode;
  if (mode === 'direct') {
    const f = new DirectOnlyFactory('fanout.mode is "direct"');
    log.info('fan-out: direct peers', { reason: f.reason });
    return f;
  }
  try {
    // Loaded only when wanted: 'direct' servers never touch mediasoup.
    const { startMediasoup } = await import('./mediasoupFanout.js');
    const f = await startMediasoup(config, log);
    log.info('fan-out: mediasoup SFU', { reason: f.reason });
    return f;
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    if (mode === 'sfu') {
      throw new AppError(
        'CONFIG_INVALID',
        `fanout.mode is "sfu" but no mediasoup worker could be started: ${why} (run npm run mediasoup:worker, or set MEDIASOUP_WORKER_BIN)`,
        { cause: err },
      );
    }
    const f = new DirectOnlyFactory(`mediasoup worker not available (${why})`);
    log.info('fan-out: direct peers (fallback)', { reason: f.reason });
    return f;
  }
}
