/**
 * IngestPeer: the server side of the performer's WebRTC connection. It answers the performer's sendonly offer,
 * decodes the video with libwebrtc (RTCVideoSink: I420 frames) and hands every decoded frame and every 10 ms audio
 * chunk to its owner through callbacks. It does not queue: the owner's frame callback must be cheap (the room puts
 * the frame into the avatar session's latest-frame-wins mailbox).
 *
 * Private mode (`mode: 'private'`): the offer has no video; the performer's browser opens an RTCDataChannel labelled
 * EXPRESSION_CHANNEL_LABEL (unordered, maxRetransmits 0) and sends one expression message per tracked frame
 * (server/types/expressionWire.ts). Each is validated here (an ExpressionStream: format, ranges, order, time); a bad
 * one is dropped and reported ('expressionRefused', with its reason), a good one goes to `onExpression`. A channel
 * with another label or reliable/ordered delivery is closed: a late expression must be dropped, never queued.
 */
import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import type { I420Frame } from '../types/image.js';
import type { IceCandidate, IceServer, PublishMode, SessionDescription } from '../types/protocol.js';
import { EXPRESSION_CHANNEL_LABEL } from '../types/protocol.js';
import {
  createDecodedStreamExpression,
  ExpressionStream,
  type DecodedStreamExpression,
  type ExpressionRefusal,
} from '../types/expressionWire.js';
import { AppError } from '../errors.js';
import { sdpMediaKinds } from './candidates.js';
import { addRemoteCandidate, answerOffer, createPeerConnection, wrtc } from './rtc.js';
import type { AudioChunk } from './audioDelay.js';
import { SafeEventEmitter } from '../util/events.js';

export interface IngestPeerOptions {
  offer: SessionDescription;
  config: Config;
  log: Logger;
  /** A decoded frame; `frame.data` is only valid during the call. `receivedAt` is performance.now(). */
  onVideoFrame: (frame: I420Frame, receivedAt: number) => void;
  /** A 10 ms chunk of the performer's audio; only valid during the call. */
  onAudio?: (chunk: AudioChunk) => void;
  /** Default 'video'. */
  mode?: PublishMode;
  /** ICE servers of this peer (STUN/TURN, with fresh TURN credentials); default none: host candidates only. */
  iceServers?: IceServer[];
  /**
   * Private mode: an accepted expression message (a view valid only during the call), `decoded` its content (its
   * `localMs`: the capture time on this process's wall clock), `receivedAt` performance.now() at arrival.
   */
  onExpression?: (msg: Uint8Array, decoded: DecodedStreamExpression, receivedAt: number) => void;
}

/** Checks what an ingest offer must hold before it reaches libwebrtc. @throws AppError('INVALID_SDP') */
export function validateIngestOffer(offer: SessionDescription, mode: PublishMode = 'video'): void {
  if (offer.type !== 'offer' || typeof offer.sdp !== 'string' || !offer.sdp.startsWith('v=')) {
    throw new AppError('INVALID_SDP', 'expected an SDP offer');
  }
  const kinds = sdpMediaKinds(offer.sdp);
  if (mode === 'video') {
    if (!kinds.includes('video')) throw new AppError('INVALID_SDP', 'the offer has no video track');
    return;
  }
  // Private mode's promise, enforced on this side too: no video leaves the performer's machine.
  if (kinds.includes('video')) throw new AppError('INVALID_SDP', 'private mode: the offer must not carry video');
  if (!kinds.includes('application'))
    throw new AppError('INVALID_SDP', 'private mode: the offer has no data channel for the expressions');
}

/** What an IngestPeer emits. */
export interface IngestPeerEvents {
  /** The peer connection's state changed (the room unpublishes on 'failed'). */
  connectionstatechange: [state: RTCPeerConnectionState];
  /** Private mode: an expression message was refused (dropped), and why. */
  expressionRefused: [reason: ExpressionRefusal];
  /** Emitted once, by close(). */
  close: [];
}

export class IngestPeer extends SafeEventEmitter<IngestPeerEvents> {
  readonly #pc: RTCPeerConnection;
  readonly #log: Logger;
  readonly #allow: readonly string[] | null;
  readonly #opts: IngestPeerOptions;
  #videoSink: InstanceType<typeof wrtc.nonstandard.RTCVideoSink> | null = null;
  #audioSink: InstanceType<typeof wrtc.nonstandard.RTCAudioSink> | null = null;
  #tracks: MediaStreamTrack[] = [];
  #closed = false;
  #answer: SessionDescription | null = null;
  #frames = 0;
  #expressions = 0;
  #channel: RTCDataChannel | null = null;
  readonly #stream = new ExpressionStream();
  readonly #decoded = createDecodedStreamExpression();
  #decodeMs = 0;
  #lastDecode = { total: 0, frames: 0 };
  readonly #frame: I420Frame = { width: 0, height: 0, data: new Uint8Array(0) };
  readonly #chunk: AudioChunk = {
    samples: new Int16Array(0),
    sampleRate: 48000,
    bitsPerSample: 16,
    channelCount: 1,
    numberOfFrames: 480,
  };

  private constructor(opts: IngestPeerOptions) {
    super();
    this.#opts = opts;
    this.#log = opts.log;
    this.#allow = opts.config.media.iceAddressAllowList;
    this.#pc = createPeerConnection(opts.iceServers);
  }

  /**
   * Creates the peer and answers the offer (after ICE gathering, candidates filtered by
   * config.media.iceAddressAllowList).
   * @throws AppError('INVALID_SDP') for an offer without video or one that libwebrtc refuses.
   */
  static async create(opts: IngestPeerOptions): Promise<IngestPeer> {
    validateIngestOffer(opts.offer, opts.mode ?? 'video');
    const peer = new IngestPeer(opts);
    try {
      peer.#answer = await peer.#negotiate();
    } catch (err) {
      peer.close();
      throw err;
    }
    return peer;
  }

  get answer(): SessionDescription {
    return this.#answer!;
  }
  get closed(): boolean {
    return this.#closed;
  }
  get connectionState(): RTCPeerConnectionState {
    return this.#pc.connectionState;
  }
  /** Decoded video frames delivered so far. */
  get frames(): number {
    return this.#frames;
  }
  /** How the performer publishes on this peer. */
  get mode(): PublishMode {
    return this.#opts.mode ?? 'video';
  }
  /** Private mode: expression messages accepted so far. */
  get expressions(): number {
    return this.#expressions;
  }
  /** Mean decode time per frame over the last {@link updateStats} interval, ms (from libwebrtc's stats). */
  get decodeMs(): number {
    return this.#decodeMs;
  }

  async addIceCandidate(c: IceCandidate | null): Promise<void> {
    if (this.#closed) return;
    await addRemoteCandidate(this.#pc, c, this.#allow);
  }

  /** Reads libwebrtc's inbound video stats (totalDecodeTime / framesDecoded) to refresh {@link decodeMs}. */
  async updateStats(): Promise<void> {
    if (this.#closed) return;
    const report = await this.#pc.getStats();
    report.forEach((s: { type?: string; kind?: string; totalDecodeTime?: number; framesDecoded?: number }) => {
      if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
      const total = s.totalDecodeTime ?? 0;
      const frames = s.framesDecoded ?? 0;
      const df = frames - this.#lastDecode.frames;
      if (df > 0) this.#decodeMs = ((total - this.#lastDecode.total) * 1000) / df;
      this.#lastDecode = { total, frames };
    });
  }

  /** Stops the sinks and closes the peer connection. Idempotent; emits 'close' once. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Order matters for libwebrtc's finalizers: sinks, then tracks, then the peer connection.
    this.#videoSink?.stop();
    this.#audioSink?.stop();
    this.#videoSink = null;
    this.#audioSink = null;
    if (this.#channel) {
      this.#channel.onmessage = null;
      this.#channel.close();
      this.#channel = null;
    }
    for (const t of this.#tracks) t.stop();
    this.#tracks = [];
    this.#pc.close();
    this.safeEmit('close');
  }

  async #negotiate(): Promise<SessionDescription> {
    const pc = this.#pc;
    pc.addEventListener('track', (e: RTCTrackEvent) => this.#onTrack(e.track));
    if (this.mode === 'private')
      pc.addEventListener('datachannel', (e: RTCDataChannelEvent) => this.#onChannel(e.channel));
    pc.addEventListener('connectionstatechange', () => {
      this.#log.debug('ingest connection state', { state: pc.connectionState });
      this.safeEmit('connectionstatechange', pc.connectionState);
    });
    return answerOffer(pc, this.#opts.offer.sdp, this.#allow, () => {
      // The performer only sends: answer recvonly on every m-line.
      for (const t of pc.getTransceivers()) t.direction = 'recvonly';
    });
  }

  #onChannel(ch: RTCDataChannel): void {
    if (this.#closed) return;
    const unreliable = ch.ordered === false && ch.maxRetransmits === 0;
    if (ch.label !== EXPRESSION_CHANNEL_LABEL || !unreliable || this.#channel) {
      this.#log.warn('data channel refused', { label: ch.label.slice(0, 40), ordered: ch.ordered });
      ch.close();
      return;
    }
    this.#channel = ch;
    ch.binaryType = 'arraybuffer';
    ch.onmessage = (ev: MessageEvent) => this.#onExpression(ev.data);
  }

  #onExpression(data: unknown): void {
    if (this.#closed) return;
    const receivedAt = performance.now();
    // Text messages are not the format (binary only): refused as of the wrong length.
    const bytes =
      data instanceof ArrayBuffer
        ? new Uint8Array(data)
        : ArrayBuffer.isView(data)
          ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
          : null;
    const d = this.#decoded;
    const refusal = bytes
      ? this.#stream.accept(bytes, performance.timeOrigin + receivedAt, d)
      : ('bad-length' as ExpressionRefusal);
    if (refusal) {
      this.safeEmit('expressionRefused', refusal);
      return;
    }
    this.#expressions++;
    this.#opts.onExpression?.(bytes!, d, receivedAt);
  }

  #onTrack(track: MediaStreamTrack): void {
    if (this.#closed) return;
    this.#tracks.push(track);
    if (track.kind === 'video' && !this.#videoSink && this.mode === 'video') {
      const sink = new wrtc.nonstandard.RTCVideoSink(track);
      sink.onframe = (ev: { frame: { width: number; height: number; data: Uint8Array } }) => {
        if (this.#closed) return;
        const receivedAt = performance.now();
        this.#frames++;
        this.#frame.width = ev.frame.width;
        this.#frame.height = ev.frame.height;
        this.#frame.data = ev.frame.data;
        this.#opts.onVideoFrame(this.#frame, receivedAt);
      };
      this.#videoSink = sink;
    } else if (track.kind === 'audio' && !this.#audioSink && this.#opts.onAudio) {
      const onAudio = this.#opts.onAudio;
      const sink = new wrtc.nonstandard.RTCAudioSink(track);
      sink.ondata = (d: {
        samples: Int16Array;
        sampleRate: number;
        bitsPerSample?: number;
        channelCount?: number;
        numberOfFrames?: number;
      }) => {
        if (this.#closed) return;
        const c = this.#chunk;
        c.samples = d.samples;
        c.sampleRate = d.sampleRate;
        c.bitsPerSample = d.bitsPerSample ?? 16;
        c.channelCount = d.channelCount ?? 1;
        c.numberOfFrames = d.numberOfFrames ?? d.samples.length / c.channelCount;
        onAudio(c);
      };
      this.#audioSink = sink;
    }
  }
}
