/**
 * One direct WebRTC peer connection to the server, for publishing (sendonly) or viewing (recvonly).
 * It owns the RTCPeerConnection: trickles its own ICE candidates once the server's answer is applied (the server
 * only knows the peer after answering), and reports a failed connection once through `onFailed` so the client can
 * rebuild it with backoff.
 */
import type { IceCandidate, PublishMode, SessionDescription } from '../../server/types/protocol.js';
import { EXPRESSION_CHANNEL_LABEL } from '../../server/types/protocol.js';
import { ClientError } from './errors.js';
import { showReceivedTrack, startFastVideo, type FastVideo, type FastVideoStats } from './fastVideo.js';
import { separateAudioStream, type ReceiveTuning } from './latency.js';

export type PeerKind = 'publish' | 'view';

export interface DirectPeerOptions {
  kind: PeerKind;
  iceServers: RTCIceServer[];
  /** Sends one of our candidates (null = end of candidates) to the server. */
  sendCandidate: (c: IceCandidate | null) => void;
  /** Exchanges our offer for the server's answer. */
  negotiate: (offer: SessionDescription) => Promise<SessionDescription>;
  /** Called once when the connection fails (or stays disconnected past the grace period). */
  onFailed: (why: string) => void;
  /** Keep only local candidates for which this returns true; default all. */
  candidateFilter?: ((c: RTCIceCandidate) => boolean) | undefined;
  /** How long 'disconnected' may last before it counts as failed; default 5 s. */
  disconnectedGraceMs?: number | undefined;
  /**
   * How a view's receivers are set up (latency.ts: lip-sync or separate audio, jitter buffer targets); default: the
   * browser's defaults (one lip-synced stream, adaptive buffers).
   */
  tuning?: ReceiveTuning | undefined;
  /** How long connecting may take; default 20 s. */
  connectTimeoutMs?: number | undefined;
}

/** One receiver of a view, as the browser set it up (diagnostics and tests). */
export interface ReceiverInfo {
  kind: string;
  trackId: string;
  /** The remote stream ids the track came with: tracks in the same stream are lip-synced by the browser. */
  streamIds: string[];
  /** RTCRtpReceiver.jitterBufferTarget as the browser reports it, ms; null = adaptive (or not supported). */
  jitterBufferTargetMs: number | null;
  /** Who decodes and shows it: 'webcodecs' (fastVideo.ts, past the jitter buffer) or the 'browser's own path. */
  renderer: 'webcodecs' | 'browser';
  /** The fast path's counters, when it has one. */
  fastVideo?: FastVideoStats;
  /** Why the fast path gave up (the browser's own path shows the video again). */
  fastVideoFailure?: string;
}

export class DirectPeer {
  readonly pc: RTCPeerConnection;
  /** The received tracks (view) or the sent stream's tracks (publish). */
  readonly stream: MediaStream;
  readonly kind: PeerKind;
  readonly #opts: DirectPeerOptions;
  #closed = false;
  #failed = false;
  #answered = false;
  #channel: RTCDataChannel | null = null;
  readonly #pending: (IceCandidate | null)[] = [];
  #disconnectTimer: ReturnType<typeof setTimeout> | null = null;
  readonly #streamIds = new Map<MediaStreamTrack, string[]>();
  readonly #fast = new Map<RTCRtpReceiver, FastVideo>();

  constructor(opts: DirectPeerOptions) {
    this.#opts = opts;
    this.kind = opts.kind;
    this.stream = new MediaStream();
    this.pc = new RTCPeerConnection({
      iceServers: opts.iceServers,
      bundlePolicy: 'max-bundle',
      rtcpMuxPolicy: 'require',
    });
    this.pc.onicecandidate = (e) => this.#onCandidate(e.candidate);
    this.pc.onconnectionstatechange = () => this.#onState();
    this.pc.ontrack = (e) => {
      const t = opts.tuning;
      if (t) {
        setJitterBufferTarget(
          e.receiver,
          e.track.kind === 'video' ? t.videoJitterBufferTargetMs : t.audioJitterBufferTargetMs,
        );
      }
      this.#streamIds.set(
        e.track,
        e.streams.map((s) => s.id),
      );
      showReceivedTrack(this.stream, e.track, this.#fast.get(e.receiver));
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Offers `stream`'s tracks sendonly and waits until connected. In private mode only its audio goes (no video track
   * is offered at all) and an expression channel is opened instead: {@link expressionChannel}.
   */
  async publish(stream: MediaStream, mode: PublishMode = 'video'): Promise<void> {
    if (mode === 'private') {
      // Unordered, no retransmits: a late expression is dropped by the network, never queued behind a lost one.
      this.#channel = this.pc.createDataChannel(EXPRESSION_CHANNEL_LABEL, { ordered: false, maxRetransmits: 0 });
      this.#channel.binaryType = 'arraybuffer';
    }
    for (const track of stream.getTracks()) {
      if (mode === 'private' && track.kind !== 'audio') continue;
      // One stream id per track: in one stream the server's receiver would hold video back to lip-sync it with the
      // audio (tens of ms); the server syncs the output itself (it delays the audio by the measured video latency).
      this.pc.addTransceiver(track, { direction: 'sendonly', streams: [new MediaStream([track])] });
      this.stream.addTrack(track);
    }
    await this.#negotiate();
  }

  /** Private mode: the expression channel (open once the peer connected), else null. */
  get expressionChannel(): RTCDataChannel | null {
    return this.#channel;
  }

  /** Offers recvonly video (+ audio unless `audio` is false) and waits until connected; tracks land in `stream`. */
  async view(audio = true): Promise<MediaStream> {
    const video = this.pc.addTransceiver('video', { direction: 'recvonly' });
    const fast = startFastVideo(video.receiver, this.stream, this.#opts.tuning?.fastVideo ?? false);
    if (fast) this.#fast.set(video.receiver, fast);
    if (audio) this.pc.addTransceiver('audio', { direction: 'recvonly' });
    await this.#negotiate();
    return this.stream;
  }

  /** The view's receivers: kind, remote stream ids, jitter buffer target. */
  receivers(): ReceiverInfo[] {
    return this.pc.getReceivers().flatMap((r) => {
      const ids = this.#streamIds.get(r.track);
      return ids ? [receiverInfo(r, ids, this.#fast.get(r))] : [];
    });
  }

  /** A candidate the server sent for this peer. */
  async addRemoteCandidate(c: IceCandidate | null): Promise<void> {
    if (this.#closed) return;
    await this.pc.addIceCandidate(c ?? undefined);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#disconnectTimer) clearTimeout(this.#disconnectTimer);
    this.pc.onicecandidate = null;
    this.pc.onconnectionstatechange = null;
    this.pc.ontrack = null;
    this.#channel?.close();
    this.#channel = null;
    for (const f of this.#fast.values()) f.close();
    this.#fast.clear();
    this.pc.close();
  }

  async #negotiate(): Promise<void> {
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    const local = this.pc.localDescription;
    if (!local) throw new ClientError('MEDIA', 'no local description');
    let answer = await this.#opts.negotiate({ type: 'offer', sdp: local.sdp });
    if (this.#closed) throw new ClientError('CLOSED', 'peer closed while negotiating');
    // The server sends audio and video in one stream (lip-synced). Without lip-sync the audio becomes a stream of
    // its own: the browser syncs only tracks of one stream, so the video is no longer held back for the audio.
    if (this.kind === 'view' && this.#opts.tuning && !this.#opts.tuning.lipSync)
      answer = { type: answer.type, sdp: separateAudioStream(answer.sdp) };
    await this.pc.setRemoteDescription(answer);
    this.#answered = true;
    for (const c of this.#pending.splice(0)) this.#opts.sendCandidate(c);
    await this.#waitConnected();
  }

  #waitConnected(): Promise<void> {
    const timeoutMs = this.#opts.connectTimeoutMs ?? 20_000;
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const s = this.pc.connectionState;
        if (s === 'connected') {
          done();
          resolve();
          return true;
        }
        if (this.#closed || s === 'failed' || s === 'closed') {
          done();
          reject(
            new ClientError(
              this.#closed ? 'CLOSED' : 'MEDIA',
              `${this.kind} connection ${this.#closed ? 'closed' : s}`,
            ),
          );
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(new ClientError('TIMEOUT', `${this.kind} connection did not connect in ${timeoutMs} ms`));
      }, timeoutMs);
      const poll = setInterval(check, 50);
      const done = (): void => {
        clearTimeout(timer);
        clearInterval(poll);
      };
      check();
    });
  }

  #onCandidate(c: RTCIceCandidate | null): void {
    if (this.#closed) return;
    if (c && this.#opts.candidateFilter && !this.#opts.candidateFilter(c)) return;
    const msg: IceCandidate | null = c
      ? { candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
      : null;
    if (this.#answered) this.#opts.sendCandidate(msg);
    else this.#pending.push(msg);
  }

  #onState(): void {
    const s = this.pc.connectionState;
    if (s === 'connected') {
      if (this.#disconnectTimer) clearTimeout(this.#disconnectTimer);
      this.#disconnectTimer = null;
    } else if (s === 'failed') {
      this.#fail('ICE/DTLS failed');
    } else if (s === 'disconnected' && !this.#disconnectTimer) {
      // 'disconnected' often heals by itself (a lost packet burst); only rebuild when it lasts.
      this.#disconnectTimer = setTimeout(() => {
        this.#disconnectTimer = null;
        if (this.pc.connectionState !== 'connected') this.#fail('disconnected too long');
      }, this.#opts.disconnectedGraceMs ?? 5000);
    }
  }

  #fail(why: string): void {
    if (this.#closed || this.#failed) return;
    this.#failed = true;
    this.#opts.onFailed(why);
  }
}

/** A receiver's kind, stream ids and jitter buffer target. */
export function receiverInfo(r: RTCRtpReceiver, streamIds: string[], fast?: FastVideo): ReceiverInfo {
  const target = 'jitterBufferTarget' in r ? r.jitterBufferTarget : null;
  const info: ReceiverInfo = {
    kind: r.track.kind,
    trackId: r.track.id,
    streamIds,
    jitterBufferTargetMs: target,
    renderer: fast && !fast.failure ? 'webcodecs' : 'browser',
    ...(fast?.failure ? { fastVideoFailure: fast.failure } : {}),
  };
  if (fast) info.fastVideo = fast.stats;
  return info;
}

/** Sets RTCRtpReceiver.jitterBufferTarget where the browser has it (Chrome 114+, Firefox 125+, Safari 18+). */
export function setJitterBufferTarget(receiver: RTCRtpReceiver, ms: number | undefined): void {
  if (ms === undefined || !('jitterBufferTarget' in receiver)) return;
  receiver.jitterBufferTarget = Math.max(0, Math.min(4000, ms));
}
