/**
 * mediasoup (v3.18) SFU fan-out. One mediasoup Worker per process (started by startMediasoup), one Router per room
 * (Opus + VP8). The room's synthesized tracks are produced into the router by a server-side "client": a wrtc
 * RTCPeerConnection driven by mediasoup-client's Chrome74 handler over a WebRtcTransport. Viewers consume through
 * their own WebRtcTransports (createTransport -> connect -> consume (paused) -> resume), with mediasoup-client in
 * the browser.
 *
 * Why mediasoup-client in Node rather than hand-written SDP: the wrtc peer is libwebrtc M106, i.e. a Chrome peer,
 * and mediasoup-client's Chrome handler is the maintained code that turns a Chrome peer's SDP into producer
 * rtpParameters (payload types, SSRCs, RTX, header extension ids, RTCP feedback) and builds the matching remote
 * SDP from the transport's ICE/DTLS parameters. Re-implementing that would be the least tested part of the path.
 * Chrome74 rather than Chrome111: M106 predates the APIs the newer handler relies on.
 * The handler uses the `RTCPeerConnection` and `MediaStream` globals, which Node lacks: startMediasoup() installs
 * wrtc's classes there when they are absent (nothing else in the server uses those globals).
 *
 * The worker binary: mediasoup reads MEDIASOUP_WORKER_BIN itself, once, when its module loads. When the config
 * names a binary (config.fanout.mediasoupWorkerBin), it is handed to mediasoup through that variable before the
 * module is first imported.
 */
import { EventEmitter } from 'node:events';
import { access, constants } from 'node:fs/promises';
import type { types as ms } from 'mediasoup';
import type { Device as ClientDevice, types as msc } from 'mediasoup-client';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import type { FanoutKind, SfuConsumerInfo, SfuTransportOptions } from '../signaling/protocol.js';
import { AppError } from '../errors.js';
import type { FanoutFactory, SfuRoomFanout, SfuRoomOptions } from './fanout.js';
import { wrtc } from './rtc.js';

/** The room router's codecs: what the publisher sends (VP8 video, Opus audio). */
export const routerMediaCodecs: ms.RouterRtpCodecCapability[] = [
  { kind: 'audio', mimeType: 'audio/opus', clockRate: 48000, channels: 2 },
  { kind: 'video', mimeType: 'video/VP8', clockRate: 90000, parameters: {} },
];

/** Installs wrtc's RTCPeerConnection and MediaStream as globals for mediasoup-client, where Node has none. */
export function installWrtcGlobals(): void {
  const g = globalThis as Record<string, unknown>;
  if (g.RTCPeerConnection === undefined) g.RTCPeerConnection = wrtc.RTCPeerConnection;
  if (g.MediaStream === undefined) g.MediaStream = wrtc.MediaStream;
}

/** Creates a mediasoup-client Device for a wrtc peer, loaded with a router's capabilities. */
export async function loadClientDevice(routerRtpCapabilities: msc.RtpCapabilities): Promise<ClientDevice> {
  installWrtcGlobals();
  const { Device } = await import('mediasoup-client');
  const device = new Device({ handlerName: 'Chrome74' });
  await device.load({ routerRtpCapabilities });
  return device;
}

/**
 * Starts a mediasoup worker for this process.
 * @throws Error when the binary is missing (ENOENT) or the worker fails to start.
 */
export async function startMediasoup(config: Config, log: Logger): Promise<MediasoupFanoutFactory> {
  const f = config.fanout;
  if (f.mediasoupWorkerBin) {
    await access(f.mediasoupWorkerBin, constants.X_OK).catch((err: unknown) => {
      throw new Error(`mediasoup worker binary not executable: ${f.mediasoupWorkerBin}`, { cause: err });
    });
    // mediasoup reads this once at module load (see the module comment).
    process.env.MEDIASOUP_WORKER_BIN = f.mediasoupWorkerBin;
  }
  const mediasoup = await import('mediasoup');
  if (f.mediasoupWorkerBin && mediasoup.workerBin !== f.mediasoupWorkerBin) {
    log.warn('mediasoup was loaded before the configured worker binary could be set', { using: mediasoup.workerBin });
  }
  const worker = await mediasoup.createWorker({ logLevel: 'warn', rtcMinPort: f.rtcMinPort, rtcMaxPort: f.rtcMaxPort });
  return new MediasoupFanoutFactory(
    worker,
    config,
    log,
    `mediasoup worker ${worker.pid} started (${mediasoup.workerBin})`,
  );
}

export class MediasoupFanoutFactory implements FanoutFactory {
  readonly kind: FanoutKind = 'sfu';
  readonly reason: string;
  readonly #worker: ms.Worker;
  readonly #config: Config;
  readonly #log: Logger;
  #closed = false;

  constructor(worker: ms.Worker, config: Config, log: Logger, reason: string) {
    this.#worker = worker;
    this.#config = config;
    this.#log = log;
    this.reason = reason;
    worker.on('died', (err) => {
      // mediasoup's advice is to restart the process; the rooms' routers are gone with it.
      this.#log.error('mediasoup worker died: SFU rooms stop receiving media', { err });
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  async createSfuRoom(opts: SfuRoomOptions): Promise<SfuRoomFanout> {
    if (this.#closed) throw new AppError('INVALID_STATE', 'fan-out closed');
    const router = await this.#worker.createRouter({ mediaCodecs: routerMediaCodecs });
    try {
      return await MediasoupRoom.create(router, this.#config, opts);
    } catch (err) {
      router.close();
      throw err;
    }
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#worker.close();
    }
    return Promise.resolve();
  }
}

interface SfuViewer {
  transports: Map<string, ms.WebRtcTransport>;
  consumers: Map<string, ms.Consumer>;
}

/** One room's router, its producers and its viewers' transports. Events: 'viewers' (count), 'close'. */
export class MediasoupRoom extends EventEmitter implements SfuRoomFanout {
  readonly kind = 'sfu' as const;
  readonly #router: ms.Router;
  readonly #config: Config;
  readonly #log: Logger;
  readonly #viewers = new Map<string, SfuViewer>();
  readonly #producers: ms.Producer[] = [];
  #ingestTransport: ms.WebRtcTransport | null = null;
  #clientTransport: msc.Transport | null = null;
  #closed = false;

  private constructor(router: ms.Router, config: Config, log: Logger) {
    super();
    this.#router = router;
    this.#config = config;
    this.#log = log;
    router.on('workerclose', () => this.close());
  }

  /** Creates the room's SFU side and produces the publisher's tracks into the router. */
  static async create(router: ms.Router, config: Config, opts: SfuRoomOptions): Promise<MediasoupRoom> {
    const room = new MediasoupRoom(router, config, opts.log);
    try {
      await room.#produce(opts);
    } catch (err) {
      room.close();
      throw err;
    }
    return room;
  }

  get closed(): boolean {
    return this.#closed;
  }
  get viewerCount(): number {
    return this.#viewers.size;
  }

  rtpCapabilities(): unknown {
    return this.#router.rtpCapabilities;
  }

  async createTransport(viewerId: string): Promise<SfuTransportOptions> {
    this.#assertOpen();
    const t = await this.#createWebRtcTransport();
    let v = this.#viewers.get(viewerId);
    if (!v) {
      v = { transports: new Map(), consumers: new Map() };
      this.#viewers.set(viewerId, v);
      this.emit('viewers', this.#viewers.size);
    }
    v.transports.set(t.id, t);
    t.on('dtlsstatechange', (s) => {
      if (s === 'failed' || s === 'closed') this.#log.debug('viewer transport dtls state', { viewerId, state: s });
    });
    return {
      id: t.id,
      iceParameters: t.iceParameters,
      iceCandidates: t.iceCandidates,
      dtlsParameters: t.dtlsParameters,
    };
  }

  async connect(viewerId: string, transportId: string, dtlsParameters: unknown): Promise<void> {
    const t = this.#transport(viewerId, transportId);
    await t.connect({ dtlsParameters: dtlsParameters as ms.DtlsParameters });
  }

  async consume(viewerId: string, transportId: string, rtpCapabilities: unknown): Promise<SfuConsumerInfo[]> {
    const t = this.#transport(viewerId, transportId);
    const v = this.#viewers.get(viewerId)!;
    const caps = rtpCapabilities as ms.RtpCapabilities;
    const out: SfuConsumerInfo[] = [];
    for (const p of this.#producers) {
      if (!this.#router.canConsume({ producerId: p.id, rtpCapabilities: caps })) continue;
      // Paused until the client has set up its side (mediasoup's documented order), then resume().
      const c = await t.consume({ producerId: p.id, rtpCapabilities: caps, paused: true });
      v.consumers.set(c.id, c);
      c.on('transportclose', () => v.consumers.delete(c.id));
      c.on('producerclose', () => v.consumers.delete(c.id));
      out.push({ id: c.id, producerId: p.id, kind: c.kind, rtpParameters: c.rtpParameters });
    }
    if (out.length === 0) throw new AppError('BAD_REQUEST', 'the viewer cannot receive VP8 or Opus');
    return out;
  }

  async resume(viewerId: string, consumerId: string): Promise<void> {
    this.#assertOpen();
    const c = this.#viewers.get(viewerId)?.consumers.get(consumerId);
    if (!c) throw new AppError('NOT_FOUND', 'no such consumer');
    await c.resume();
  }

  removeViewer(viewerId: string): void {
    const v = this.#viewers.get(viewerId);
    if (!v) return;
    this.#viewers.delete(viewerId);
    for (const t of v.transports.values()) t.close();
    this.emit('viewers', this.#viewers.size);
  }

  /** Closes the client peer, every transport and the router. Idempotent; emits 'close' once. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#clientTransport?.close();
    this.#clientTransport = null;
    for (const v of this.#viewers.values()) for (const t of v.transports.values()) t.close();
    this.#viewers.clear();
    this.#ingestTransport?.close();
    if (!this.#router.closed) this.#router.close();
    this.emit('close');
  }

  #assertOpen(): void {
    if (this.#closed) throw new AppError('INVALID_STATE', 'room closed');
  }

  #transport(viewerId: string, transportId: string): ms.WebRtcTransport {
    this.#assertOpen();
    const t = this.#viewers.get(viewerId)?.transports.get(transportId);
    if (!t) throw new AppError('NOT_FOUND', 'no such transport for this viewer');
    return t;
  }

  #createWebRtcTransport(): Promise<ms.WebRtcTransport> {
    const f = this.#config.fanout;
    return this.#router.createWebRtcTransport({
      listenInfos: [{ protocol: 'udp', ip: f.listenIp, ...(f.announcedIp ? { announcedAddress: f.announcedIp } : {}) }],
      enableUdp: true,
      initialAvailableOutgoingBitrate: Math.min(this.#config.media.maxVideoBitrate, 1_000_000),
    });
  }

  async #produce(opts: SfuRoomOptions): Promise<void> {
    const server = await this.#createWebRtcTransport();
    this.#ingestTransport = server;
    const device = await loadClientDevice(this.#router.rtpCapabilities);
    const client = device.createSendTransport({
      id: server.id,
      iceParameters: server.iceParameters,
      iceCandidates: server.iceCandidates,
      dtlsParameters: server.dtlsParameters,
    });
    this.#clientTransport = client;
    client.on('connect', ({ dtlsParameters }, callback, errback) => {
      server.connect({ dtlsParameters: dtlsParameters }).then(callback, errback);
    });
    client.on('produce', ({ kind, rtpParameters }, callback, errback) => {
      server.produce({ kind, rtpParameters: rtpParameters as ms.RtpParameters }).then((p) => {
        this.#producers.push(p);
        callback({ id: p.id });
      }, errback);
    });
    const maxBitrate = this.#config.media.maxVideoBitrate;
    // The publisher owns its tracks: the producers must not stop them when they close.
    await client.produce({ track: opts.publisher.videoTrack, encodings: [{ maxBitrate }], stopTracks: false });
    await client.produce({ track: opts.publisher.audioTrack, stopTracks: false });
    opts.log.info('synthesized tracks produced into the SFU', {
      roomId: opts.roomId,
      producers: this.#producers.length,
    });
  }
}
