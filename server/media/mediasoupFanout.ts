/**
 * mediasoup (v3.18) SFU fan-out.
 *
 * Workers: a pool of mediasoup workers per process (config.fanout.workers, default one per core). A worker that dies
 * is replaced; the rooms whose routers lived on it rebuild them on a live worker and tell the affected viewers to
 * consume again ('viewersReset'), so the room survives.
 *
 * Rooms: each room has a primary Router (Opus + VP8) on the least-loaded worker, into which its source produces:
 * - a local room's source is the room's synthesized tracks, produced by a server-side "client": a wrtc
 *   RTCPeerConnection driven by mediasoup-client's Chrome74 handler over a WebRtcTransport;
 * - a relay room (a viewer reached a node that does not own the room: server/cluster) gets its producers through a
 *   mediasoup PipeTransport from the owner node's primary router.
 * Viewers consume through their own WebRtcTransports (createTransport -> connect -> consume (paused) -> resume), with
 * mediasoup-client in the browser. When every router of a room holds config.fanout.viewersPerRouter viewers, the
 * room's producers are piped (router.pipeToRouter) to a new router on another worker, where new viewers consume.
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
import { access, constants } from 'node:fs/promises';
import os from 'node:os';
import type { types as ms } from 'mediasoup';
import type { Device as ClientDevice, types as msc } from 'mediasoup-client';
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import type { FanoutKind, SfuConsumerInfo, SfuTransportOptions } from '../types/protocol.js';
import { AppError } from '../errors.js';
import type {
  FanoutFactory,
  PipeOut,
  ProducerSource,
  SfuRoomEvents,
  SfuRoomFanout,
  SfuRoomOptions,
  SfuWorkerInfo,
} from './fanoutTypes.js';
import type { Publisher } from './publisher.js';
import { wrtc } from './rtc.js';
import { SafeEventEmitter } from '../util/events.js';

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

/** One worker of the pool and what runs on it. */
interface PoolWorker {
  worker: ms.Worker;
  routers: number;
  viewers: number;
}

/**
 * The process's mediasoup workers. Routers go to the worker with the fewest viewers (then routers). A worker that
 * dies is replaced (retried every second while the pool is open); its routers emit 'workerclose' to their rooms.
 */
export class WorkerPool extends SafeEventEmitter<{ replaced: [pid: number] }> {
  readonly #create: () => Promise<ms.Worker>;
  readonly #log: Logger;
  readonly #workers: PoolWorker[] = [];
  #closed = false;
  #deaths = 0;

  private constructor(create: () => Promise<ms.Worker>, log: Logger) {
    super();
    this.#create = create;
    this.#log = log;
  }

  static async start(n: number, create: () => Promise<ms.Worker>, log: Logger): Promise<WorkerPool> {
    const pool = new WorkerPool(create, log);
    try {
      for (let i = 0; i < n; i++) pool.#adopt(await create());
    } catch (err) {
      pool.close();
      throw err;
    }
    return pool;
  }

  get size(): number {
    return this.#workers.length;
  }
  /** Workers that died since start (each replaced). */
  get deaths(): number {
    return this.#deaths;
  }

  info(): SfuWorkerInfo[] {
    return this.#workers.map((w) => ({ pid: w.worker.pid, routers: w.routers, viewers: w.viewers }));
  }

  /** The live workers themselves (for dump() and getResourceUsage() in tests and benchmarks). */
  workersForDump(): ms.Worker[] {
    return this.#workers.map((w) => w.worker);
  }

  /** The least-loaded live worker, preferring ones not in `avoid`. @throws AppError('INVALID_STATE') when none. */
  pick(avoid: ReadonlySet<ms.Worker> = new Set()): PoolWorker {
    const live = this.#workers.filter((w) => !w.worker.closed);
    if (live.length === 0) throw new AppError('INVALID_STATE', 'no mediasoup worker is running');
    const fresh = live.filter((w) => !avoid.has(w.worker));
    const from = fresh.length > 0 ? fresh : live;
    return from.reduce((a, b) => (b.viewers < a.viewers || (b.viewers === a.viewers && b.routers < a.routers) ? b : a));
  }

  /** Creates a router on `pw`, counted until it closes. */
  async createRouter(pw: PoolWorker): Promise<ms.Router> {
    const router = await pw.worker.createRouter({ mediaCodecs: routerMediaCodecs });
    pw.routers++;
    router.observer.once('close', () => pw.routers--);
    return router;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#workers) w.worker.close();
    this.#workers.length = 0;
  }

  #adopt(worker: ms.Worker): void {
    const pw: PoolWorker = { worker, routers: 0, viewers: 0 };
    this.#workers.push(pw);
    worker.on('died', (err) => {
      this.#deaths++;
      this.#log.error('mediasoup worker died: its rooms move to a new worker', { pid: worker.pid, err });
      const i = this.#workers.indexOf(pw);
      if (i >= 0) this.#workers.splice(i, 1);
      this.#replace(worker.pid);
    });
  }

  #replace(pid: number): void {
    if (this.#closed) return;
    this.#create().then(
      (w) => {
        if (this.#closed) {
          w.close();
          return;
        }
        this.#adopt(w);
        this.#log.info('mediasoup worker replaced', { died: pid, pid: w.pid });
        this.safeEmit('replaced', w.pid);
      },
      (err: unknown) => {
        this.#log.error('mediasoup worker restart failed; retrying in 1 s', { err });
        setTimeout(() => this.#replace(pid), 1000).unref();
      },
    );
  }
}

/**
 * Starts the mediasoup workers of this process (config.fanout.workers; 0 = one per core).
 * @throws Error when the binary is missing (ENOENT) or a worker fails to start.
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
  const n = f.workers > 0 ? f.workers : Math.max(1, os.availableParallelism());
  const pool = await WorkerPool.start(
    n,
    () => mediasoup.createWorker({ logLevel: 'warn', rtcMinPort: f.rtcMinPort, rtcMaxPort: f.rtcMaxPort }),
    log,
  );
  return new MediasoupFanoutFactory(
    pool,
    config,
    log,
    `${n} mediasoup worker(s) started (pids ${pool
      .info()
      .map((w) => w.pid)
      .join(', ')}; ${mediasoup.workerBin})`,
  );
}

export class MediasoupFanoutFactory implements FanoutFactory {
  readonly kind: FanoutKind = 'sfu';
  readonly reason: string;
  readonly pool: WorkerPool;
  readonly #config: Config;
  readonly #log: Logger;
  #closed = false;

  constructor(pool: WorkerPool, config: Config, log: Logger, reason: string) {
    this.pool = pool;
    this.#config = config;
    this.#log = log;
    this.reason = reason;
  }

  get closed(): boolean {
    return this.#closed;
  }

  workers(): SfuWorkerInfo[] {
    return this.pool.info();
  }

  /** A local room: its source is the publisher's synthesized tracks. */
  async createSfuRoom(opts: SfuRoomOptions): Promise<MediasoupRoom> {
    if (this.#closed) throw new AppError('INVALID_STATE', 'fan-out closed');
    const source = opts.source ?? (opts.publisher ? new PublisherSource(opts.publisher, this.#config, opts.log) : null);
    if (!source) throw new AppError('INVALID_STATE', 'an SFU room needs a publisher or a source');
    return MediasoupRoom.create(this.pool, this.#config, source, opts.roomId, opts.log);
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.pool.close();
    }
    return Promise.resolve();
  }
}

/** Options of a WebRtcTransport on the configured listen address. */
function webRtcTransportOptions(config: Config): ms.WebRtcTransportOptions {
  const f = config.fanout;
  return {
    listenInfos: [{ protocol: 'udp', ip: f.listenIp, ...(f.announcedIp ? { announcedAddress: f.announcedIp } : {}) }],
    enableUdp: true,
    initialAvailableOutgoingBitrate: Math.min(config.media.maxVideoBitrate, 1_000_000),
  };
}

/** A local room's source: the publisher's two tracks, produced by a wrtc mediasoup-client over a WebRtcTransport. */
export class PublisherSource implements ProducerSource {
  readonly #publisher: Publisher;
  readonly #config: Config;
  readonly #log: Logger;
  #client: msc.Transport | null = null;
  #clientProducers: msc.Producer[] = [];
  #active = true;
  /** Pause/resume renegotiate the wrtc peer: one at a time. */
  #toggle: Promise<void> = Promise.resolve();

  constructor(publisher: Publisher, config: Config, log: Logger) {
    this.#publisher = publisher;
    this.#config = config;
    this.#log = log;
  }

  async attach(router: ms.Router): Promise<ms.Producer[]> {
    this.detach();
    const server = await router.createWebRtcTransport(webRtcTransportOptions(this.#config));
    const device = await loadClientDevice(router.rtpCapabilities);
    const client = device.createSendTransport({
      id: server.id,
      iceParameters: server.iceParameters,
      iceCandidates: server.iceCandidates,
      dtlsParameters: server.dtlsParameters,
    });
    this.#client = client;
    const producers: ms.Producer[] = [];
    client.on('connect', ({ dtlsParameters }, callback, errback) => {
      server.connect({ dtlsParameters: dtlsParameters }).then(callback, errback);
    });
    client.on('produce', ({ kind, rtpParameters }, callback, errback) => {
      server.produce({ kind, rtpParameters: rtpParameters as ms.RtpParameters }).then((p) => {
        producers.push(p);
        callback({ id: p.id });
      }, errback);
    });
    try {
      const maxBitrate = this.#config.media.maxVideoBitrate;
      // The publisher owns its tracks: the producers must not stop them when they close, and a pause must not disable
      // them (direct viewers share them): pausing stops this sender only (zeroRtpOnPause: the transceiver goes inactive).
      const shared = { stopTracks: false, disableTrackOnPause: false, zeroRtpOnPause: true };
      this.#clientProducers = [
        await client.produce({ track: this.#publisher.videoTrack, encodings: [{ maxBitrate }], ...shared }),
        await client.produce({ track: this.#publisher.audioTrack, ...shared }),
      ];
      if (!this.#active) this.#apply(false);
    } catch (err) {
      this.detach();
      server.close();
      throw err;
    }
    this.#log.debug('synthesized tracks produced into the SFU', { producers: producers.length });
    return producers;
  }

  detach(): void {
    this.#client?.close();
    this.#client = null;
    this.#clientProducers = [];
  }

  setActive(active: boolean): void {
    if (active === this.#active) return;
    this.#active = active;
    this.#apply(active);
  }

  #apply(active: boolean): void {
    const producers = this.#clientProducers;
    this.#toggle = this.#toggle.then(() => {
      for (const p of producers) {
        if (p.closed || this.#active !== active) continue;
        if (active) p.resume();
        else p.pause();
      }
      this.#log.debug(active ? 'SFU source resumed (a consumer came)' : 'SFU source paused (no consumer)');
    });
  }
}

/**
 * Pipes `producers` of router `from` into router `to` over a pair of loopback PipeTransports and resolves with the
 * pipe producers (fresh ids). Like router.pipeToRouter, except that mediasoup 3.18's pipeToRouter always reuses the
 * producer's id, which fails on a worker that already holds that id (a second piped router of the room on the
 * primary's own worker, or on a worker that has one already). The pair closes when either router closes.
 */
export async function pipeBetween(from: ms.Router, to: ms.Router, producers: ms.Producer[]): Promise<ms.Producer[]> {
  const listenInfo: ms.TransportListenInfo = { protocol: 'udp', ip: '127.0.0.1' };
  const a = await from.createPipeTransport({ listenInfo });
  let b: ms.PipeTransport | null = null;
  try {
    b = await to.createPipeTransport({ listenInfo });
    await a.connect({ ip: b.tuple.localAddress, port: b.tuple.localPort });
    await b.connect({ ip: a.tuple.localAddress, port: a.tuple.localPort });
    const bb = b;
    a.observer.once('close', () => bb.close());
    b.observer.once('close', () => a.close());
    const out: ms.Producer[] = [];
    for (const p of producers) {
      const c = await a.consume({ producerId: p.id });
      const pp = await b.produce({ kind: c.kind, rtpParameters: c.rtpParameters, paused: c.producerPaused });
      c.observer.once('close', () => pp.close());
      out.push(pp);
    }
    return out;
  } catch (err) {
    a.close();
    b?.close();
    throw err;
  }
}

/** A router of the room and the viewers consuming on it. */
interface Slot {
  router: ms.Router;
  pw: PoolWorker;
  /** The room's producers as this router sees them (the primary's own, or the pipe producers of a piped router). */
  producers: ms.Producer[];
  viewers: Set<string>;
}

interface SfuViewer {
  slot: Slot;
  transports: Map<string, ms.WebRtcTransport>;
  consumers: Map<string, ms.Consumer>;
}

/**
 * One room's routers, producers and viewers' transports. Events: 'viewers' (count), 'viewersReset' (ids, why),
 * 'rebuilt', 'close'.
 */
export class MediasoupRoom extends SafeEventEmitter<SfuRoomEvents> implements SfuRoomFanout {
  readonly kind = 'sfu' as const;
  readonly roomId: string;
  readonly #pool: WorkerPool;
  readonly #config: Config;
  readonly #log: Logger;
  readonly #source: ProducerSource;
  readonly #viewers = new Map<string, SfuViewer>();
  readonly #pipes = new Map<string, ms.PipeTransport>();
  #slots: Slot[] = [];
  /** Serialises router changes (new piped routers, rebuilds) with consumes. */
  #chain: Promise<unknown> = Promise.resolve();
  #rebuilds = 0;
  #caps: ms.RtpCapabilities | null = null;
  #closed = false;

  private constructor(pool: WorkerPool, config: Config, source: ProducerSource, roomId: string, log: Logger) {
    super();
    this.#pool = pool;
    this.#config = config;
    this.#source = source;
    this.roomId = roomId;
    this.#log = log;
  }

  /** Creates the room's primary router and attaches the source to it. */
  static async create(
    pool: WorkerPool,
    config: Config,
    source: ProducerSource,
    roomId: string,
    log: Logger,
  ): Promise<MediasoupRoom> {
    const room = new MediasoupRoom(pool, config, source, roomId, log);
    // Nobody consumes yet: the source starts paused.
    source.setActive?.(false);
    try {
      await room.#buildPrimary();
    } catch (err) {
      room.close();
      throw err;
    }
    log.info('SFU room ready', {
      roomId,
      worker: room.#slots[0]?.pw.worker.pid,
      producers: room.#slots[0]?.producers.length,
    });
    return room;
  }

  get closed(): boolean {
    return this.#closed;
  }
  get viewerCount(): number {
    return this.#viewers.size;
  }
  /** How many times the primary router was rebuilt after a worker died. */
  get rebuilds(): number {
    return this.#rebuilds;
  }
  /** Per router: its worker's pid and its viewers (the primary first). */
  routers(): { workerPid: number; viewers: number }[] {
    return this.#slots.map((s) => ({ workerPid: s.pw.worker.pid, viewers: s.viewers.size }));
  }

  rtpCapabilities(): unknown {
    this.#assertOpen();
    // Every router has the same codecs, hence the same capabilities: kept from the first router, so that a viewer
    // asking while the primary is being rebuilt is answered (its createTransport then waits for the rebuild).
    return this.#caps;
  }

  createTransport(viewerId: string): Promise<SfuTransportOptions> {
    return this.#serial(async () => {
      this.#assertOpen();
      let v = this.#viewers.get(viewerId);
      if (!v) {
        const slot = await this.#slotForNewViewer();
        v = { slot, transports: new Map(), consumers: new Map() };
        this.#viewers.set(viewerId, v);
        slot.viewers.add(viewerId);
        slot.pw.viewers++;
        this.safeEmit('viewers', this.#viewers.size);
        this.#updateActivity();
      }
      const t = await v.slot.router.createWebRtcTransport(webRtcTransportOptions(this.#config));
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
    });
  }

  async connect(viewerId: string, transportId: string, dtlsParameters: unknown): Promise<void> {
    const t = this.#transport(viewerId, transportId);
    await t.connect({ dtlsParameters: dtlsParameters as ms.DtlsParameters });
  }

  consume(viewerId: string, transportId: string, rtpCapabilities: unknown): Promise<SfuConsumerInfo[]> {
    return this.#serial(async () => {
      const t = this.#transport(viewerId, transportId);
      const v = this.#viewers.get(viewerId)!;
      const caps = rtpCapabilities as ms.RtpCapabilities;
      const out: SfuConsumerInfo[] = [];
      for (const p of v.slot.producers) {
        if (p.closed || !v.slot.router.canConsume({ producerId: p.id, rtpCapabilities: caps })) continue;
        // Paused until the client has set up its side (mediasoup's documented order), then resume().
        const c = await t.consume({ producerId: p.id, rtpCapabilities: caps, paused: true });
        v.consumers.set(c.id, c);
        c.on('transportclose', () => v.consumers.delete(c.id));
        c.on('producerclose', () => v.consumers.delete(c.id));
        out.push({ id: c.id, producerId: p.id, kind: c.kind, rtpParameters: c.rtpParameters });
      }
      if (out.length === 0) throw new AppError('BAD_REQUEST', 'the viewer cannot receive VP8 or Opus');
      return out;
    });
  }

  async resume(viewerId: string, consumerId: string): Promise<void> {
    this.#assertOpen();
    const c = this.#viewers.get(viewerId)?.consumers.get(consumerId);
    if (!c) throw new AppError('NOT_FOUND', 'no such consumer');
    await c.resume();
    // A viewer joining mid-stream needs a key frame now, not at the encoder's next periodic one.
    if (c.kind === 'video') await c.requestKeyFrame().catch(() => undefined);
  }

  removeViewer(viewerId: string): void {
    const v = this.#viewers.get(viewerId);
    if (!v) return;
    this.#viewers.delete(viewerId);
    this.#forget(v, viewerId);
    for (const t of v.transports.values()) t.close();
    this.safeEmit('viewers', this.#viewers.size);
    this.#dropIdleSlots();
    this.#updateActivity();
  }

  /**
   * Pipes this room's producers to another node's PipeTransport at `remote` (server/cluster): creates a PipeTransport
   * on the primary router, connects it and consumes every producer on it. `linkId` names the pipe for closePipe().
   */
  pipeOut(linkId: string, remote: { ip: string; port: number }, announcedIp: string | null): Promise<PipeOut> {
    return this.#serial(async () => {
      this.#assertOpen();
      this.closePipe(linkId);
      const primary = this.#primary();
      const f = this.#config.fanout;
      const t = await primary.router.createPipeTransport({
        listenInfo: { protocol: 'udp', ip: f.listenIp, ...(announcedIp ? { announcedAddress: announcedIp } : {}) },
      });
      this.#pipes.set(linkId, t);
      this.#updateActivity();
      t.observer.once('close', () => {
        if (this.#pipes.get(linkId) === t) this.#pipes.delete(linkId);
        this.#updateActivity();
      });
      try {
        await t.connect({ ip: remote.ip, port: remote.port });
        const producers: PipeOut['producers'] = [];
        for (const p of primary.producers) {
          const c = await t.consume({ producerId: p.id });
          producers.push({ id: p.id, kind: c.kind, rtpParameters: c.rtpParameters });
        }
        return { ip: announcedIp ?? t.tuple.localAddress ?? f.listenIp, port: t.tuple.localPort, producers };
      } catch (err) {
        t.close();
        throw err;
      }
    });
  }

  /** Closes one pipe made by pipeOut (no-op for unknown ids). */
  closePipe(linkId: string): void {
    const t = this.#pipes.get(linkId);
    this.#pipes.delete(linkId);
    t?.close();
  }

  /** Pipes open to other nodes. */
  get pipeCount(): number {
    return this.#pipes.size;
  }

  /** The primary router's producers' receive stats (what the source sends into the SFU). */
  async producerStats(): Promise<{ kind: string; byteCount: number }[]> {
    const out: { kind: string; byteCount: number }[] = [];
    for (const p of this.#slots[0]?.producers ?? []) {
      for (const st of await p.getStats()) out.push({ kind: p.kind, byteCount: st.byteCount });
    }
    return out;
  }

  /** Whether the source is sending: only while a viewer or another node consumes. */
  get sourceActive(): boolean {
    return this.#viewers.size > 0 || this.#pipes.size > 0;
  }

  #updateActivity(): void {
    if (!this.#closed) this.#source.setActive?.(this.sourceActive);
  }

  /**
   * Rebuilds the primary router (and drops the piped ones) from the source: used when the source itself changed
   * (a relay whose owner rebuilt). Every viewer is told to consume again.
   */
  rebuild(why: string): Promise<void> {
    return this.#serial(() => this.#rebuild(why));
  }

  /** Closes the source, every transport and router. Idempotent; emits 'close' once. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#source.detach();
    for (const [id, v] of this.#viewers) {
      this.#forget(v, id);
      for (const t of v.transports.values()) t.close();
    }
    this.#viewers.clear();
    for (const t of this.#pipes.values()) t.close();
    this.#pipes.clear();
    for (const s of this.#slots) if (!s.router.closed) s.router.close();
    this.#slots = [];
    this.safeEmit('close');
  }

  #assertOpen(): void {
    if (this.#closed) throw new AppError('INVALID_STATE', 'room closed');
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#chain.then(fn, fn);
    this.#chain = p.catch(() => undefined);
    return p;
  }

  #primary(): Slot {
    const s = this.#slots[0];
    if (!s) throw new AppError('SFU_RESET', 'the SFU router is being rebuilt; try again');
    return s;
  }

  #transport(viewerId: string, transportId: string): ms.WebRtcTransport {
    this.#assertOpen();
    const t = this.#viewers.get(viewerId)?.transports.get(transportId);
    if (!t) throw new AppError('NOT_FOUND', 'no such transport for this viewer');
    return t;
  }

  #forget(v: SfuViewer, viewerId: string): void {
    if (v.slot.viewers.delete(viewerId)) v.slot.pw.viewers--;
  }

  #watch(slot: Slot): void {
    slot.router.on('workerclose', () => {
      if (this.#closed) return;
      void this.#serial(() => this.#onRouterLost(slot)).catch((err: unknown) => {
        this.#log.error('SFU room could not recover from a worker death; closing it', { roomId: this.roomId, err });
        this.close();
      });
    });
  }

  async #buildPrimary(): Promise<void> {
    const pw = this.#pool.pick();
    const router = await this.#pool.createRouter(pw);
    try {
      const producers = await this.#source.attach(router);
      const slot: Slot = { router, pw, producers, viewers: new Set() };
      this.#caps ??= router.rtpCapabilities;
      this.#slots = [slot, ...this.#slots];
      this.#watch(slot);
    } catch (err) {
      router.close();
      throw err;
    }
  }

  /** The least-loaded router with room for one more viewer, or a new router piped from the primary. */
  async #slotForNewViewer(): Promise<Slot> {
    const cap = this.#config.fanout.viewersPerRouter;
    const open = this.#slots.filter((s) => s.viewers.size < cap);
    if (open.length > 0) return open.reduce((a, b) => (b.viewers.size < a.viewers.size ? b : a));
    const primary = this.#primary();
    const pw = this.#pool.pick(new Set(this.#slots.map((s) => s.pw.worker)));
    const router = await this.#pool.createRouter(pw);
    try {
      const producers = await pipeBetween(primary.router, router, primary.producers);
      const slot: Slot = { router, pw, producers, viewers: new Set() };
      this.#slots.push(slot);
      this.#watch(slot);
      this.#log.info('SFU room piped to another router', {
        roomId: this.roomId,
        worker: pw.worker.pid,
        routers: this.#slots.length,
        viewers: this.#viewers.size,
      });
      return slot;
    } catch (err) {
      router.close();
      throw err;
    }
  }

  /** Closes piped routers nobody consumes from any more (the primary stays). */
  #dropIdleSlots(): void {
    for (const s of this.#slots.slice(1)) {
      if (s.viewers.size === 0) {
        this.#slots = this.#slots.filter((x) => x !== s);
        s.router.close();
      }
    }
  }

  async #onRouterLost(slot: Slot): Promise<void> {
    if (this.#closed || !this.#slots.includes(slot)) return;
    if (slot === this.#slots[0]) {
      await this.#rebuild('the SFU worker of this room stopped');
      return;
    }
    this.#slots = this.#slots.filter((s) => s !== slot);
    this.#resetViewers([...slot.viewers], 'the SFU worker of this viewer stopped');
  }

  async #rebuild(why: string): Promise<void> {
    if (this.#closed) return;
    this.#rebuilds++;
    const ids = [...this.#viewers.keys()];
    const old = this.#slots;
    this.#slots = [];
    this.#source.detach();
    for (const t of this.#pipes.values()) t.close();
    this.#pipes.clear();
    this.#resetViewers(ids, why);
    for (const s of old) if (!s.router.closed) s.router.close();
    await this.#buildPrimary();
    this.#log.warn('SFU room rebuilt', {
      roomId: this.roomId,
      why,
      worker: this.#slots[0]?.pw.worker.pid,
      viewersReset: ids.length,
    });
    this.safeEmit('rebuilt');
  }

  #resetViewers(ids: string[], why: string): void {
    for (const id of ids) {
      const v = this.#viewers.get(id);
      if (!v) continue;
      this.#viewers.delete(id);
      this.#forget(v, id);
      for (const t of v.transports.values()) if (!t.closed) t.close();
    }
    if (ids.length > 0) {
      this.safeEmit('viewers', this.#viewers.size);
      this.safeEmit('viewersReset', ids, why);
    }
    this.#updateActivity();
  }
}
