/**
 * AvatarClient: the browser side of the signaling protocol (server/types/protocol.ts).
 *
 * - `AvatarClient.connect({ token })` opens a socket.io connection and joins the room named by the token.
 * - `request(event, payload)` sends one request and resolves with its data, or throws a ClientError with the
 *   server's stable code.
 * - `publish(stream)` (performer) and `view()` (anyone) set up WebRTC peers; the SFU path is used for viewing when the
 *   server's fan-out is 'sfu'.
 * - Reconnects by itself: when the socket drops it rejoins (socket.io's backoff), then re-publishes and re-views;
 *   when a peer connection fails it rebuilds that peer with its own backoff. New received streams are announced
 *   with the 'stream' event.
 */
import { io, type Socket } from 'socket.io-client';
import type {
  AvatarSettings,
  ClientToServerEvents,
  CloseReason,
  FanoutKind,
  IceCandidate,
  JoinResponse,
  PublicError,
  Result,
  Role,
  RoomInfo,
  RoomStats,
  ServerToClientEvents,
  PublishMode,
} from '../../server/types/protocol.js';
import { Backoff, type BackoffOptions } from './backoff.js';
import { Emitter } from './emitter.js';
import { ClientError, isTerminal, toClientError } from './errors.js';
import { DEFAULT_LATENCY_MODE, receiveTuning, type LatencyMode } from './latency.js';
import { DirectPeer, type ReceiverInfo } from './peer.js';
import { ExpressionSender } from './expressionSender.js';
import type { FaceTrack } from '../../server/vision/types.js';
import type { SfuViewer } from './sfuViewer.js';

export type ClientState = 'connecting' | 'joined' | 'reconnecting' | 'closed';
/** State of one media leg (the performer's publish, or the view). */
export type MediaState = 'idle' | 'connecting' | 'connected' | 'retrying';

export type RequestEvent = keyof ClientToServerEvents;
export type RequestOf<E extends RequestEvent> = Parameters<ClientToServerEvents[E]>[0];
export type ResponseOf<E extends RequestEvent> = Parameters<ClientToServerEvents[E]>[1] extends (
  r: Result<infer T>,
) => void
  ? T
  : never;

export interface AvatarClientEvents {
  state: [ClientState];
  /** The room's live numbers (about once a second while publishing). */
  stats: [RoomStats];
  /** The room changed (portrait, settings, output size). */
  room: [RoomInfo];
  /** The server closed the room. */
  closed: [CloseReason];
  /** The engine or the room failed (not the answer to a request). */
  failure: [PublicError];
  /** Something went wrong in the background (a rejoin or a media rebuild); the client keeps retrying unless closed. */
  error: [ClientError];
  /** A new received stream (after view() and after every re-view): put it in the <video>. */
  stream: [MediaStream];
  publishState: [MediaState];
  viewState: [MediaState];
}

export interface AvatarClientOptions {
  /** Room token from the performer or viewer link. */
  token: string;
  /** Server origin; default: the page's origin. */
  url?: string;
  /** Request ack deadline; default 15 s. */
  requestTimeoutMs?: number;
  /** Backoff for rebuilding failed peers and rejoining; default 250 ms .. 5 s. */
  backoff?: BackoffOptions;
  /** Keep only local ICE candidates for which this returns true (tests keep loopback); default all. */
  candidateFilter?: (c: RTCIceCandidate) => boolean;
  /**
   * Receive jitter buffer target for the view's audio and video, ms; overrides the latency mode's (a diagnostic);
   * default: the mode's.
   */
  jitterBufferTargetMs?: number;
  /** Reconnect on disconnect or ICE failure; default true. */
  reconnect?: boolean;
}

/** Inbound numbers of the view, from RTCPeerConnection.getStats(). */
export interface ReceiveStats {
  video: {
    framesDecoded: number;
    framesDropped: number;
    framesPerSecond: number;
    frameWidth: number;
    frameHeight: number;
    bytesReceived: number;
    packetsReceived: number;
    packetsLost: number;
    jitterBufferDelayMs: number;
  } | null;
  audio: { packetsReceived: number; bytesReceived: number; totalAudioEnergy: number } | null;
}

type LooseSocket = {
  timeout(ms: number): {
    emit(event: string, payload: unknown, ack: (err: Error | null, res: Result<unknown>) => void): void;
  };
};

export class AvatarClient extends Emitter<AvatarClientEvents> {
  readonly #opts: AvatarClientOptions;
  readonly #socket: Socket<ServerToClientEvents, ClientToServerEvents>;
  readonly #mediaBackoff: Record<'publish' | 'view', Backoff>;
  readonly #joinBackoff: Backoff;
  #state: ClientState = 'connecting';
  #join: JoinResponse | null = null;
  #publishStream: MediaStream | null = null;
  #publishMode: PublishMode = 'video';
  #publisher: DirectPeer | null = null;
  #sender: ExpressionSender | null = null;
  #wantView = false;
  #viewAudio = true;
  #viewLatency: LatencyMode = DEFAULT_LATENCY_MODE;
  #viewer: DirectPeer | SfuViewer | null = null;
  #viewStream: MediaStream | null = null;
  readonly #timers: Record<'publish' | 'view' | 'join', ReturnType<typeof setTimeout> | null> = {
    publish: null,
    view: null,
    join: null,
  };
  readonly #mediaState: Record<'publish' | 'view', MediaState> = { publish: 'idle', view: 'idle' };

  private constructor(opts: AvatarClientOptions, socket: Socket<ServerToClientEvents, ClientToServerEvents>) {
    super();
    this.#opts = opts;
    this.#socket = socket;
    this.#mediaBackoff = { publish: new Backoff(opts.backoff), view: new Backoff(opts.backoff) };
    this.#joinBackoff = new Backoff(opts.backoff);
  }

  /** Connects and joins; rejects (and closes) with a ClientError if the first join fails. */
  static async connect(opts: AvatarClientOptions): Promise<AvatarClient> {
    const url = opts.url ?? location.origin;
    const maxDelay = opts.backoff?.maxDelayMs ?? 5000;
    const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url, {
      transports: ['websocket'],
      reconnection: opts.reconnect ?? true,
      reconnectionDelay: opts.backoff?.minDelayMs ?? 250,
      reconnectionDelayMax: maxDelay,
      timeout: opts.requestTimeoutMs ?? 15_000,
    });
    const client = new AvatarClient(opts, socket);
    try {
      await client.#firstJoin();
    } catch (err) {
      client.close();
      throw toClientError(err, 'NETWORK');
    }
    return client;
  }

  get state(): ClientState {
    return this.#state;
  }
  get closed(): boolean {
    return this.#state === 'closed';
  }
  get role(): Role | null {
    return this.#join?.role ?? null;
  }
  get room(): RoomInfo | null {
    return this.#join?.room ?? null;
  }
  get fanout(): FanoutKind | null {
    return this.#join?.fanout ?? null;
  }

  /** Performers: the viewer page's path with a viewer token (from the join answer); null for viewers. */
  get viewerPath(): string | null {
    return this.#join?.viewerPath ?? null;
  }
  get publishState(): MediaState {
    return this.#mediaState.publish;
  }
  get viewState(): MediaState {
    return this.#mediaState.view;
  }
  /** The socket.io connection id (the server's viewer id for this client's view); null while disconnected. */
  get socketId(): string | null {
    return this.#socket.id ?? null;
  }
  /** The current received stream, if viewing. */
  get viewStream(): MediaStream | null {
    return this.#viewStream;
  }

  /** Sends one request; resolves with its data or throws a ClientError with the server's code. */
  request<E extends RequestEvent>(event: E, payload: RequestOf<E>): Promise<ResponseOf<E>> {
    if (this.closed) return Promise.reject(new ClientError('CLOSED', 'client closed'));
    const timeoutMs = this.#opts.requestTimeoutMs ?? 15_000;
    return new Promise((resolve, reject) => {
      (this.#socket as unknown as LooseSocket).timeout(timeoutMs).emit(event, payload, (err, res) => {
        if (err) reject(new ClientError('TIMEOUT', `no answer to "${event}" in ${timeoutMs} ms`));
        else if (!res || typeof res !== 'object') reject(new ClientError('INTERNAL', `bad answer to "${event}"`));
        else if (res.ok) resolve(res.data as ResponseOf<E>);
        else reject(new ClientError(res.error.code, res.error.message));
      });
    });
  }

  /**
   * Performer: publishes the camera (+ microphone) stream; resolves once the peer is connected. `mode` 'private'
   * sends the microphone only, and the face as expressions: feed {@link sendExpression} with the browser tracker's
   * output. Calling it again with another mode switches a live room (a new connection; no reload).
   */
  async publish(stream: MediaStream, mode: PublishMode = 'video'): Promise<void> {
    this.#assertOpen();
    this.#publishStream = stream;
    this.#publishMode = mode;
    this.#mediaBackoff.publish.reset();
    await this.#startPublish();
  }

  /** How the performer publishes (or last asked to). */
  get publishMode(): PublishMode {
    return this.#publishMode;
  }

  /**
   * Private mode: sends one frame's tracked face (null: no face) over the expression channel (ExpressionSender:
   * dropped, never queued, while the channel is congested or not open). Returns whether it was sent.
   */
  sendExpression(track: FaceTrack | null, width: number, height: number, captureMs?: number): boolean {
    return this.#sender ? this.#sender.send(track, width, height, captureMs) : false;
  }

  /** Performer: stops publishing. */
  async unpublish(): Promise<void> {
    this.#publishStream = null;
    this.#clearTimer('publish');
    this.#publisher?.close();
    this.#publisher = null;
    this.#sender = null;
    this.#setMedia('publish', 'idle');
    if (!this.closed && this.#state === 'joined') await this.request('unpublish', {});
  }

  /**
   * Views the room's output (direct peer or SFU); resolves with the stream once connected.
   * `{ audio: false }` receives the video only (a silent monitor; no audio/video sync delay).
   * `latency` (latency.ts): 'low' (default; calls: audio and video not lip-synced by the browser, the smallest video
   * buffer) or 'smooth' (broadcast, OBS: the browser's lip-sync and adaptive buffers).
   */
  async view(opts: { audio?: boolean; latency?: LatencyMode } = {}): Promise<MediaStream> {
    this.#assertOpen();
    this.#wantView = true;
    this.#viewAudio = opts.audio ?? true;
    this.#viewLatency = opts.latency ?? DEFAULT_LATENCY_MODE;
    this.#mediaBackoff.view.reset();
    return this.#startView();
  }

  /** Stops viewing (locally; the server drops the viewer peer when the socket leaves or re-views). */
  stopView(): void {
    this.#wantView = false;
    this.#clearTimer('view');
    this.#viewer?.close();
    this.#viewer = null;
    this.#viewStream = null;
    this.#setMedia('view', 'idle');
  }

  setPortrait(portraitId: string): Promise<RoomInfo> {
    return this.request('setPortrait', { portraitId }).then((room) => this.#updateRoom(room));
  }
  setSettings(settings: Partial<AvatarSettings>): Promise<AvatarSettings> {
    return this.request('setSettings', { settings }).then((s) => {
      if (this.#join) this.#updateRoom({ ...this.#join.room, settings: s });
      return s;
    });
  }
  recalibrate(): Promise<null> {
    return this.request('recalibrate', {});
  }

  /** The latency mode of the view (the last view() call's). */
  get viewLatency(): LatencyMode {
    return this.#viewLatency;
  }

  /** The view's receivers (kind, remote stream ids, jitter buffer target), or [] when not viewing. */
  viewReceivers(): ReceiverInfo[] {
    return this.#viewer?.receivers() ?? [];
  }

  /** Inbound stats of the view (video frames decoded, audio packets), or null when not viewing. */
  async receiveStats(): Promise<ReceiveStats | null> {
    const v = this.#viewer;
    if (!v) return null;
    const report = v instanceof DirectPeer ? await v.pc.getStats() : await v.getStats();
    if (!report) return null;
    const out: ReceiveStats = { video: null, audio: null };
    report.forEach((s: Record<string, unknown>) => {
      if (s.type !== 'inbound-rtp') return;
      const n = (k: string): number => (typeof s[k] === 'number' ? s[k] : 0);
      if (s.kind === 'video') {
        const emitted = n('jitterBufferEmittedCount');
        out.video = {
          framesDecoded: n('framesDecoded'),
          framesDropped: n('framesDropped'),
          framesPerSecond: n('framesPerSecond'),
          frameWidth: n('frameWidth'),
          frameHeight: n('frameHeight'),
          bytesReceived: n('bytesReceived'),
          packetsReceived: n('packetsReceived'),
          packetsLost: n('packetsLost'),
          jitterBufferDelayMs: emitted > 0 ? (n('jitterBufferDelay') / emitted) * 1000 : 0,
        };
      } else if (s.kind === 'audio') {
        out.audio = {
          packetsReceived: n('packetsReceived'),
          bytesReceived: n('bytesReceived'),
          totalAudioEnergy: n('totalAudioEnergy'),
        };
      }
    });
    return out;
  }

  /** Closes the peers and the socket. Idempotent. Does not stop the caller's camera tracks. */
  close(): void {
    if (this.#state === 'closed') return;
    for (const k of ['publish', 'view', 'join'] as const) this.#clearTimer(k);
    this.#publisher?.close();
    this.#publisher = null;
    this.#viewer?.close();
    this.#viewer = null;
    this.#publishStream = null;
    this.#wantView = false;
    this.#socket.removeAllListeners();
    this.#socket.close();
    this.#setState('closed');
    this.removeAllListeners();
  }

  // ---- internals ----

  #firstJoin(): Promise<void> {
    const s = this.#socket;
    s.on('stats', (st) => this.emit('stats', st));
    s.on('room', (room) => this.#updateRoom(room));
    s.on('failure', (e) => this.emit('failure', e));
    s.on('closed', ({ reason }) => this.#onRoomClosed(reason));
    // The SFU router this viewer consumed from went away (a worker died): consume again at once.
    s.on('viewReset', (e) => {
      const v = this.#viewer;
      if (v) this.#peerFailed('view', v, `${e.code}: ${e.message}`, 0);
    });
    s.on('ice', (msg) => this.#onServerCandidate(msg.target, msg.candidate));
    s.on('disconnect', (reason) => this.#onDisconnect(reason));
    return new Promise((resolve, reject) => {
      let first = true;
      const onConnectError = (err: Error): void => {
        if (!first) return;
        first = false;
        reject(new ClientError('NETWORK', `cannot connect: ${err.message}`, { cause: err }));
      };
      s.once('connect_error', onConnectError);
      s.on('connect', () => {
        if (first) {
          first = false;
          s.off('connect_error', onConnectError);
          this.#doJoin().then(resolve, reject);
        } else {
          void this.#rejoin();
        }
      });
    });
  }

  async #doJoin(): Promise<void> {
    const res = await this.request('join', { token: this.#opts.token });
    this.#join = res;
    this.#setState('joined');
    this.emit('room', res.room);
  }

  /** After a socket reconnect: join again, then restore publish and view. */
  async #rejoin(): Promise<void> {
    this.#clearTimer('join');
    try {
      await this.#doJoin();
    } catch (err) {
      const e = toClientError(err);
      this.emit('error', e);
      if (isTerminal(e)) {
        this.close();
        return;
      }
      this.#timers.join = setTimeout(() => void this.#rejoin(), this.#joinBackoff.next());
      return;
    }
    this.#joinBackoff.reset();
    if (this.#publishStream) this.#scheduleMedia('publish', 0);
    if (this.#wantView) this.#scheduleMedia('view', 0);
  }

  #onDisconnect(reason: string): void {
    if (this.closed) return;
    // The server forgets this socket's peers when it leaves: drop ours and rebuild them after the rejoin.
    this.#publisher?.close();
    this.#publisher = null;
    this.#viewer?.close();
    this.#viewer = null;
    if (this.#publishStream) this.#setMedia('publish', 'retrying');
    if (this.#wantView) this.#setMedia('view', 'retrying');
    if (this.#opts.reconnect === false) {
      this.close();
      return;
    }
    this.#setState('reconnecting');
    // socket.io reconnects by itself except after a server-side disconnect.
    if (reason === 'io server disconnect') {
      this.#clearTimer('join');
      this.#timers.join = setTimeout(() => this.#socket.connect(), this.#joinBackoff.next());
    }
  }

  #onRoomClosed(reason: CloseReason): void {
    this.emit('closed', reason);
    this.#publisher?.close();
    this.#publisher = null;
    this.#viewer?.close();
    this.#viewer = null;
    if (reason === 'replaced') {
      // Another performer connection took over this room: retrying would fight it.
      this.close();
    }
  }

  #onServerCandidate(target: 'publish' | 'view', c: IceCandidate | null): void {
    const peer = target === 'publish' ? this.#publisher : this.#viewer;
    if (peer instanceof DirectPeer)
      peer.addRemoteCandidate(c).catch((err) => this.emit('error', toClientError(err, 'MEDIA')));
  }

  async #startPublish(): Promise<void> {
    const stream = this.#publishStream;
    const join = this.#join;
    if (!stream || !join) return;
    this.#publisher?.close();
    this.#setMedia('publish', 'connecting');
    const mode = this.#publishMode;
    const peer: DirectPeer = new DirectPeer({
      kind: 'publish',
      iceServers: join.iceServers,
      candidateFilter: this.#opts.candidateFilter,
      sendCandidate: (candidate) => this.#sendCandidate('publish', candidate, peer),
      negotiate: async (offer) => (await this.request('publish', { sdp: offer, mode })).sdp,
      onFailed: (why) => this.#peerFailed('publish', peer, why),
    });
    this.#publisher = peer;
    this.#sender = null;
    try {
      await peer.publish(stream, mode);
      const ch = peer.expressionChannel;
      if (ch && this.#publisher === peer) this.#sender = new ExpressionSender(ch);
    } catch (err) {
      if (this.#publisher === peer) {
        peer.close();
        this.#publisher = null;
        this.#scheduleMedia('publish');
      }
      throw toClientError(err, 'MEDIA');
    }
    this.#mediaBackoff.publish.reset();
    this.#setMedia('publish', 'connected');
  }

  async #startView(): Promise<MediaStream> {
    const join = this.#join;
    if (!join) throw new ClientError('INVALID_STATE', 'not joined');
    this.#viewer?.close();
    this.#setMedia('view', 'connecting');
    let viewer: DirectPeer | SfuViewer;
    const tuning = receiveTuning(this.#viewLatency, this.#opts.jitterBufferTargetMs);
    if (join.fanout === 'sfu') {
      // mediasoup-client is loaded only when the server runs an SFU: direct viewers do not download it.
      const { SfuViewer } = await import('./sfuViewer.js');
      viewer = new SfuViewer(
        {
          capabilities: () => this.request('sfu:capabilities', {}),
          createTransport: () => this.request('sfu:createTransport', {}),
          connect: async (transportId, dtlsParameters) => {
            await this.request('sfu:connect', { transportId, dtlsParameters });
          },
          consume: (transportId, rtpCapabilities) => this.request('sfu:consume', { transportId, rtpCapabilities }),
          resume: async (consumerId) => {
            await this.request('sfu:resume', { consumerId });
          },
        },
        join.iceServers,
        (why) => this.#peerFailed('view', viewer, why),
        tuning,
      );
    } else {
      const peer: DirectPeer = new DirectPeer({
        kind: 'view',
        iceServers: join.iceServers,
        candidateFilter: this.#opts.candidateFilter,
        sendCandidate: (candidate) => this.#sendCandidate('view', candidate, peer),
        negotiate: async (offer) => (await this.request('view', { sdp: offer })).sdp,
        tuning,
        onFailed: (why) => this.#peerFailed('view', peer, why),
      });
      viewer = peer;
    }
    this.#viewer = viewer;
    let stream: MediaStream;
    try {
      stream = await viewer.view(this.#viewAudio);
    } catch (err) {
      if (this.#viewer === viewer) {
        viewer.close();
        this.#viewer = null;
        this.#scheduleMedia('view');
      }
      throw toClientError(err, 'MEDIA');
    }
    this.#mediaBackoff.view.reset();
    this.#viewStream = stream;
    this.#setMedia('view', 'connected');
    this.emit('stream', stream);
    return stream;
  }

  #sendCandidate(target: 'publish' | 'view', candidate: IceCandidate | null, peer: DirectPeer): void {
    if (peer.closed) return;
    this.request('ice', { target, candidate }).catch((err) => {
      if (!peer.closed) this.emit('error', toClientError(err));
    });
  }

  #peerFailed(kind: 'publish' | 'view', peer: DirectPeer | SfuViewer, why: string, retryInMs?: number): void {
    const current = kind === 'publish' ? this.#publisher : this.#viewer;
    if (current !== peer || this.closed) return;
    this.emit('error', new ClientError('MEDIA', `${kind}: ${why}`));
    peer.close();
    if (kind === 'publish') this.#publisher = null;
    else this.#viewer = null;
    this.#scheduleMedia(kind, retryInMs);
  }

  /** Rebuilds one media leg after a backoff delay (one pending rebuild per leg). */
  #scheduleMedia(kind: 'publish' | 'view', delayMs?: number): void {
    if (this.closed || this.#opts.reconnect === false) return;
    if (kind === 'publish' && !this.#publishStream) return;
    if (kind === 'view' && !this.#wantView) return;
    this.#clearTimer(kind);
    this.#setMedia(kind, 'retrying');
    const delay = delayMs ?? this.#mediaBackoff[kind].next();
    this.#timers[kind] = setTimeout(() => {
      this.#timers[kind] = null;
      if (this.#state !== 'joined') return; // the rejoin restarts it
      const p = kind === 'publish' ? this.#startPublish() : this.#startView();
      p.catch((err: unknown) => this.emit('error', toClientError(err, 'MEDIA')));
    }, delay);
  }

  #updateRoom(room: RoomInfo): RoomInfo {
    if (this.#join) this.#join = { ...this.#join, room };
    this.emit('room', room);
    return room;
  }

  #setState(s: ClientState): void {
    if (this.#state === s) return;
    this.#state = s;
    this.emit('state', s);
  }

  #setMedia(kind: 'publish' | 'view', s: MediaState): void {
    if (this.#mediaState[kind] === s) return;
    this.#mediaState[kind] = s;
    this.emit(kind === 'publish' ? 'publishState' : 'viewState', s);
  }

  #clearTimer(k: 'publish' | 'view' | 'join'): void {
    const t = this.#timers[k];
    if (t) clearTimeout(t);
    this.#timers[k] = null;
  }

  #assertOpen(): void {
    if (this.closed) throw new ClientError('CLOSED', 'client closed');
    if (!this.#join) throw new ClientError('INVALID_STATE', 'not joined');
  }
}
