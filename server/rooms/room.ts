/**
 * Room: the media plane of one room. It owns
 * - the avatar session (engine in a worker thread),
 * - the performer's ingest peer (replaced by a new publish),
 * - the publisher (synthesized video + delayed performer audio),
 * - the direct fan-out (always) and the SFU room (when the process runs mediasoup).
 *
 * Frame path: ingest sink -> AvatarSession.pushFrame (latest frame wins) -> worker renders -> 'frame' ->
 * Publisher.publishVideo -> viewers. See doc/closures.md for who emits what on close and on crash.
 *
 * Refiner steps: AvatarSettings.steps is the performer's wish and is echoed as set, also when the engine has no
 * refiner (RoomInfo.refiner says so); the session runs at most that many, fewer under overload, and
 * RoomStats.refinerSteps reports what runs.
 *
 * Events: RoomEvents.
 */
import type { Config } from '../config.js';
import type { RgbImage } from '../types/image.js';
import type {
  AvatarSettings,
  CloseReason,
  FanoutKind,
  IceCandidate,
  IceServer,
  PublicError,
  RoomInfo,
  RoomStats,
  PublishMode,
  SessionDescription,
  SfuConsumerInfo,
  SfuTransportOptions,
  FaceIssue,
} from '../types/protocol.js';
import { defaultAvatarSettings } from '../types/protocol.js';
import type { ExpressionRefusal } from '../types/expressionWire.js';
import { AppError, InvalidStateError, toPublicError } from '../errors.js';
import { createLogger, type Logger } from '../logger.js';
import { AvatarSession, type SessionFrame } from '../avatar/session.js';
import type { AvatarWorkerPool } from '../avatar/workerPool.js';
import type { FanoutFactory, SfuRoomFanout } from '../media/fanoutTypes.js';
import { DirectFanout } from '../media/directFanout.js';
import { iceServersFor } from '../media/iceConfig.js';
import { IngestPeer } from '../media/ingest.js';
import { Publisher } from '../media/publisher.js';
import { FrameStamper } from '../provenance/stamper.js';
import { SafeEventEmitter } from '../util/events.js';

export interface RoomDeps {
  roomId: string;
  /** The whole config; the room reads the media, avatar and fanout slices. */
  config: Config;
  fanout: FanoutFactory;
  /** Provided by the portrait store; throws AppError('NOT_FOUND'). */
  loadPortrait: (portraitId: string) => Promise<RgbImage>;
  /** Consent log: called after a portrait was prepared for this room. */
  onPortraitUsed?: (portraitId: string) => void;
  /** Parent logger; default createLogger('room'). */
  log?: Logger;
  /** Avatar workers shared by the server's rooms (warm spares, reuse); default none: the room starts its own. */
  workers?: AvatarWorkerPool | null;
}

/** Per synthesized frame, ms. */
export interface FrameTimings {
  /** Mean decode time of the ingest (libwebrtc stats, refreshed once a second). */
  decodeMs: number;
  /** Waiting in the mailbox for the worker. */
  queueMs: number;
  trackMs: number;
  latentMs: number;
  generateMs: number;
  pasteMs: number;
  /** Engine render time inside the worker. */
  engineMs: number;
  /** Handing the frame to the video source. */
  publishMs: number;
  /** Ingest receive -> published. */
  endToEndMs: number;
  face: boolean;
}

function median(v: number[]): number {
  if (v.length === 0) return 0;
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** What a Room emits. */
export interface RoomEvents {
  /** About once a second while publishing. */
  stats: [stats: RoomStats];
  /** Per synthesized frame from a performer frame. */
  frame: [timings: FrameTimings];
  /** Frames newly dropped (a delta). */
  dropped: [n: number];
  /** Private mode: an expression message from the performer was refused (dropped), and why. */
  expressionRefused: [reason: ExpressionRefusal];
  /** The room's viewer count (direct and SFU) changed. */
  viewers: [count: number];
  /** These SFU viewers' routers went away (a mediasoup worker died): they must consume again. */
  viewersReset: [viewerIds: string[], why: string];
  /** The SFU room's primary router was rebuilt: the cluster's pipes to other nodes must be made again. */
  sfuRebuilt: [];
  /** The avatar failed (a frame, or the worker). */
  failure: [err: PublicError];
  /** Emitted once, by close(). */
  close: [reason: CloseReason];
}

export class Room extends SafeEventEmitter<RoomEvents> {
  readonly id: string;
  readonly #deps: RoomDeps;
  readonly #log: Logger;
  readonly #session: AvatarSession;
  readonly #publisher: Publisher;
  readonly #direct: DirectFanout;
  readonly #sfu: SfuRoomFanout | null;
  #ingest: IngestPeer | null = null;
  #portraitId: string | null = null;
  #width = 0;
  #height = 0;
  #settings: AvatarSettings = { ...defaultAvatarSettings };
  #closed = false;
  #closing: Promise<void> | null = null;
  #statsTimer: NodeJS.Timeout;
  /** Sequence numbers of frames pushed by the room itself (the portrait's idle frame), not by the performer. */
  #primeSeq = -1;
  #lastDropped = 0;
  #face = false;
  #faceIssue: FaceIssue | null = null;
  // One second of frame samples for 'stats'.
  #secFrames = 0;
  #secLatency: number[] = [];
  #secEngine: number[] = [];

  private constructor(deps: RoomDeps, session: AvatarSession, publisher: Publisher, sfu: SfuRoomFanout | null) {
    super();
    this.id = deps.roomId;
    this.#deps = deps;
    this.#log = deps.log ?? createLogger('room');
    this.#session = session;
    this.#publisher = publisher;
    const m = deps.config.media;
    this.#direct = new DirectFanout({
      publisher,
      iceAddressAllowList: m.iceAddressAllowList,
      iceServers: () => this.#serverIceServers(),
      maxVideoBitrate: m.maxVideoBitrate,
      connectTimeoutMs: m.viewerConnectTimeoutMs,
      log: this.#log.child('direct'),
    });
    this.#sfu = sfu;
    this.#direct.on('viewers', () => this.safeEmit('viewers', this.viewerCount));
    sfu?.on('viewers', () => this.safeEmit('viewers', this.viewerCount));
    // A worker died: these viewers consume again (signaling tells them); remote pipes are made again.
    sfu?.on('viewersReset', (ids: string[], why: string) => this.safeEmit('viewersReset', ids, why));
    sfu?.on('rebuilt', () => this.safeEmit('sfuRebuilt'));
    session.on('frame', (f: SessionFrame) => this.#onFrame(f));
    session.on('dropped', (total: number) => {
      const n = total - this.#lastDropped;
      this.#lastDropped = total;
      if (n > 0) this.safeEmit('dropped', n);
    });
    session.on('failure', (e: unknown) => this.#fail(e));
    // config.avatar.steps is the steps new rooms start with (AVATAR_STEPS).
    this.#settings.steps = deps.config.avatar.steps;
    session.updateSettings(this.#settings);
    this.#statsTimer = setInterval(() => this.#tick(), 1000);
    this.#statsTimer.unref();
  }

  /**
   * Starts the room's avatar worker (engine config.avatar.engine), its publisher and fan-outs.
   * @throws AppError('ENGINE_FAILED') when the engine does not start.
   */
  static async create(deps: RoomDeps): Promise<Room> {
    const log = deps.log ?? createLogger('room');
    const a = deps.config.avatar;
    const session = await AvatarSession.create({
      engine: a.engine,
      engineOptions: {
        modelPack: a.modelPack,
        executionProvider: a.executionProvider,
        intraOpThreads: a.intraOpThreads,
        outputSize: a.outputSize,
        tracker: a.tracker,
        // The engine starts warp only: steps come with the room's settings, so that a missing refiner pack never
        // stops a room from starting (the session reports refiner.available = false instead).
        refinerPack: a.refinerPack,
      },
      initTimeoutMs: a.initTimeoutMs,
      stepsPolicy: { budgetMs: a.stepsBudgetMs },
      pool: deps.workers ?? null,
      log: log.child('avatar'),
    });
    const publisher = new Publisher({
      log: log.child('publisher'),
      audioDelayOffsetMs: deps.config.media.audioDelayOffsetMs,
      stamper: new FrameStamper({ config: deps.config.provenance, id: deps.roomId }),
    });
    let sfu: SfuRoomFanout | null = null;
    if (deps.fanout.kind === 'sfu') {
      try {
        sfu = await deps.fanout.createSfuRoom({ roomId: deps.roomId, publisher, log: log.child('sfu') });
      } catch (err) {
        publisher.close();
        await session.close();
        throw err;
      }
    }
    return new Room(deps, session, publisher, sfu);
  }

  get info(): RoomInfo {
    return {
      roomId: this.id,
      publishMode: this.#ingest && !this.#ingest.closed ? this.#ingest.mode : null,
      privateMode: this.#session.expressions,
      portraitId: this.#portraitId,
      width: this.#width,
      height: this.#height,
      settings: { ...this.#settings },
      refiner: { ...this.#session.refiner },
    };
  }
  get closed(): boolean {
    return this.#closed;
  }
  get fanoutKind(): FanoutKind {
    return this.#sfu ? 'sfu' : 'direct';
  }
  get viewerCount(): number {
    return this.#direct.viewerCount + (this.#sfu?.viewerCount ?? 0);
  }
  /** Whether a performer's ingest peer is attached. */
  get publishing(): boolean {
    return this.#ingest !== null && !this.#ingest.closed;
  }
  /** For tests and diagnostics: the running parts. */
  get parts(): { session: AvatarSession; publisher: Publisher; direct: DirectFanout; ingest: IngestPeer | null } {
    return { session: this.#session, publisher: this.#publisher, direct: this.#direct, ingest: this.#ingest };
  }

  /**
   * Performer: answers a sendonly offer: video + audio, or in private mode audio + the expression data channel (see
   * PublishMode). A second publish replaces the first ingest peer: how a live room switches modes. Calibration,
   * settings and the portrait stay; the audio delay follows the new path's latency (receive -> publish).
   * @throws AppError('INVALID_SDP'), AppError('UNSUPPORTED') for private mode with an engine that cannot render from
   * expressions (passthrough, portrait).
   */
  /** ICE servers of a new server-side peer of this room (fresh TURN credentials), or none (serverPeersUseIce off). */
  #serverIceServers(): IceServer[] {
    const m = this.#deps.config.media;
    return m.serverPeersUseIce ? iceServersFor(m, `server.${this.id}`, Date.now()) : [];
  }

  async publish(offer: SessionDescription, mode: PublishMode = 'video'): Promise<SessionDescription> {
    this.#assertOpen();
    if (mode === 'private' && !this.#session.expressions)
      throw new AppError(
        'UNSUPPORTED',
        `private mode needs an engine that renders from expressions; engine "${this.#deps.config.avatar.engine}" does not`,
      );
    const ingest = await IngestPeer.create({
      offer,
      mode,
      config: this.#deps.config,
      iceServers: this.#serverIceServers(),
      log: this.#log.child('ingest'),
      onVideoFrame: (frame, receivedAt) => this.#session.pushFrame(frame, receivedAt),
      onAudio: (chunk) => this.#publisher.pushAudio(chunk),
      onExpression: (msg, decoded, receivedAt) =>
        this.#session.pushExpression(msg, decoded.localMs - performance.timeOrigin, receivedAt),
    });
    ingest.on('expressionRefused', (reason: ExpressionRefusal) => this.safeEmit('expressionRefused', reason));
    if (this.#closed) {
      ingest.close();
      throw new InvalidStateError('room closed');
    }
    const prev = this.#ingest;
    this.#ingest = ingest;
    if (prev) {
      prev.close();
      this.#publisher.resetAudio();
    }
    ingest.on('connectionstatechange', (s: RTCPeerConnectionState) => {
      if (s === 'failed' && this.#ingest === ingest) {
        this.#log.warn('performer connection failed', { roomId: this.id });
        void this.unpublish();
      }
    });
    this.#log.info('performer publishing', { roomId: this.id, mode });
    return ingest.answer;
  }

  /** Closes the ingest peer; viewers keep receiving the last frame. */
  unpublish(): Promise<void> {
    const ingest = this.#ingest;
    this.#ingest = null;
    if (ingest) {
      ingest.close();
      this.#publisher.resetAudio();
    }
    return Promise.resolve();
  }

  /** Direct fan-out viewer: recvonly offer -> answer. @throws AppError('INVALID_SDP') */
  async addViewer(viewerId: string, offer: SessionDescription): Promise<SessionDescription> {
    this.#assertOpen();
    return this.#direct.addViewer(viewerId, offer);
  }

  /** Removes a viewer from both fan-outs (no-op for unknown ids). */
  removeViewer(viewerId: string): void {
    this.#direct.removeViewer(viewerId);
    this.#sfu?.removeViewer(viewerId);
  }

  /** A trickled candidate from the performer ('publish') or a direct viewer ('view'). */
  async addIceCandidate(
    target: { kind: 'publish' } | { kind: 'view'; viewerId: string },
    c: IceCandidate | null,
  ): Promise<void> {
    this.#assertOpen();
    if (target.kind === 'publish') {
      if (!this.#ingest) throw new AppError('INVALID_STATE', 'not publishing');
      await this.#ingest.addIceCandidate(c);
    } else {
      await this.#direct.addIceCandidate(target.viewerId, c);
    }
  }

  /**
   * Loads and prepares a portrait; afterwards frames come out at its size and viewers see it while idle.
   * @throws AppError('NOT_FOUND'), ('NO_FACE') and other engine errors.
   */
  async setPortrait(portraitId: string): Promise<RoomInfo> {
    this.#assertOpen();
    const rgb = await this.#deps.loadPortrait(portraitId);
    const prepared = await this.#session.prepare(rgb);
    this.#portraitId = portraitId;
    this.#width = prepared.width;
    this.#height = prepared.height;
    this.#deps.onPortraitUsed?.(portraitId);
    this.#prime();
    this.#log.info('portrait set', { roomId: this.id, portraitId, width: prepared.width, height: prepared.height });
    return this.info;
  }

  /** Merges settings (already validated by signaling) and sends them to the engine. */
  updateSettings(p: Partial<AvatarSettings>): AvatarSettings {
    this.#assertOpen();
    this.#settings = { ...this.#settings, ...p };
    this.#session.updateSettings(this.#settings);
    return { ...this.#settings };
  }

  recalibrate(): void {
    this.#assertOpen();
    this.#session.recalibrate();
  }

  sfuCapabilities(): unknown {
    return this.#requireSfu().rtpCapabilities();
  }
  sfuCreateTransport(viewerId: string): Promise<SfuTransportOptions> {
    return this.#requireSfu().createTransport(viewerId);
  }
  sfuConnect(viewerId: string, transportId: string, dtlsParameters: unknown): Promise<void> {
    return this.#requireSfu().connect(viewerId, transportId, dtlsParameters);
  }
  sfuConsume(viewerId: string, transportId: string, rtpCapabilities: unknown): Promise<SfuConsumerInfo[]> {
    return this.#requireSfu().consume(viewerId, transportId, rtpCapabilities);
  }
  sfuResume(viewerId: string, consumerId: string): Promise<void> {
    return this.#requireSfu().resume(viewerId, consumerId);
  }
  /** The SFU side, for the cluster's pipes and diagnostics (null with direct fan-out). */
  get sfu(): SfuRoomFanout | null {
    return this.#sfu;
  }

  /**
   * Closes the ingest peer, the fan-outs (all viewers), the publisher and the avatar worker, then emits 'close'.
   * Idempotent. The worker's exit is asynchronous: await {@link whenClosed} to know it is gone.
   */
  close(reason: CloseReason): void {
    if (this.#closing) return;
    this.#closed = true;
    clearInterval(this.#statsTimer);
    const ingest = this.#ingest;
    this.#ingest = null;
    ingest?.close();
    this.#direct.close();
    this.#sfu?.close();
    this.#publisher.close();
    this.#closing = this.#session
      .close()
      .catch((err: unknown) => this.#log.warn('avatar session close failed', { roomId: this.id, err: err as Error }));
    this.#log.info('room media closed', { roomId: this.id, reason });
    this.safeEmit('close', reason);
  }

  /** Resolves when everything the room owned has closed (the worker thread has exited). */
  whenClosed(): Promise<void> {
    return this.#closing ?? Promise.reject(new InvalidStateError('room not closed'));
  }

  #assertOpen(): void {
    if (this.#closed) throw new InvalidStateError('room closed');
  }

  #requireSfu(): SfuRoomFanout {
    this.#assertOpen();
    if (!this.#sfu) throw new AppError('UNSUPPORTED', 'this room uses direct fan-out');
    return this.#sfu;
  }

  /**
   * Renders the portrait once from a neutral (mid-grey) driving frame, so that the engine's own rest picture becomes
   * the idle frame viewers see until the performer publishes. No main-thread image work.
   */
  #prime(): void {
    const w = this.#width;
    const h = this.#height;
    const grey = new Uint8Array(w * h + 2 * (w >> 1) * (h >> 1));
    grey.fill(128);
    this.#primeSeq = this.#session.pushFrame({ width: w, height: h, data: grey });
  }

  #onFrame(f: SessionFrame): void {
    if (this.#closed) return;
    if (f.seq === this.#primeSeq) {
      this.#publisher.setIdleFrame(f.frame);
      return;
    }
    const now = performance.now();
    const endToEndMs = now - f.receivedAt;
    const publishMs = this.#publisher.publishVideo(f.frame, endToEndMs);
    const s = f.stats;
    this.#face = s.face;
    this.#faceIssue = s.faceIssue ?? null;
    this.#secFrames++;
    this.#secLatency.push(endToEndMs + publishMs);
    this.#secEngine.push(f.engineMs);
    const t: FrameTimings = {
      decodeMs: this.#ingest?.decodeMs ?? 0,
      queueMs: f.queueMs,
      trackMs: s.trackMs,
      latentMs: s.latentMs,
      generateMs: s.generateMs,
      pasteMs: s.pasteMs,
      engineMs: f.engineMs,
      publishMs,
      endToEndMs: endToEndMs + publishMs,
      face: s.face,
    };
    this.safeEmit('frame', t);
  }

  #tick(): void {
    if (this.#closed) return;
    const ingest = this.#ingest;
    if (!ingest) return;
    ingest
      .updateStats()
      .catch((err: unknown) => this.#log.debug('ingest stats failed', { roomId: this.id, err: err as Error }));
    const stats: RoomStats = {
      fps: this.#secFrames,
      latencyMs: median(this.#secLatency),
      engineMs: median(this.#secEngine),
      droppedFrames: this.#session.dropped,
      viewers: this.viewerCount,
      face: this.#face,
      faceIssue: this.#faceIssue,
      refinerSteps: this.#session.steps,
    };
    this.#secFrames = 0;
    this.#secLatency = [];
    this.#secEngine = [];
    this.safeEmit('stats', stats);
  }

  #fail(e: unknown): void {
    const pub: PublicError = toPublicError(e);
    this.#log.warn('avatar failure', { roomId: this.id, code: pub.code, message: pub.message });
    this.safeEmit('failure', pub);
  }
}
