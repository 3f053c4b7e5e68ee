/**
 * Test clients made of real wrtc peers: a performer that sends a synthetic moving picture and a tone, and a viewer
 * that records what it receives. Both keep traffic on 127.0.0.1 and must be closed before the test file ends
 * (wrtc crashes at exit with live peers).
 */
import wrtc from '@roamhq/wrtc';
import type { IceCandidate, SessionDescription } from '../../server/types/protocol.js';
import { filterSdpCandidates } from '../../server/media/candidates.js';
import { waitIceGathering } from '../../server/media/rtc.js';
import { drawPattern, makeI420 } from './helpers.js';
import { paintMarker } from '../helpers/media.js';
import { EXPRESSION_CHANNEL_LABEL } from '../../server/types/protocol.js';
import { ExpressionSender } from '../../client/lib/expressionSender.js';

const ALLOW = ['127.0.0.1'];

/** Sends a 640x480 moving pattern at ~30 fps and a 440 Hz tone (48 kHz mono, 10 ms chunks). */
export class PerformerClient {
  readonly pc = new wrtc.RTCPeerConnection({ iceServers: [] });
  readonly #video = new wrtc.nonstandard.RTCVideoSource();
  readonly #audio = new wrtc.nonstandard.RTCAudioSource();
  readonly #tracks: MediaStreamTrack[];
  #videoTimer: NodeJS.Timeout | null = null;
  #audioTimer: NodeJS.Timeout | null = null;
  framesSent = 0;
  /** With `marker`, each frame carries its index (tests/helpers/media.ts) and its send time is kept here. */
  readonly sentAt = new Map<number, number>();
  /** Trickled local candidates (tests that trickle send them to the server). */
  readonly candidates: IceCandidate[] = [];

  constructor(
    readonly width = 640,
    readonly height = 480,
    readonly marker = false,
  ) {
    const v = this.#video.createTrack();
    const a = this.#audio.createTrack();
    this.#tracks = [v, a];
    const stream = new wrtc.MediaStream([v, a]);
    this.pc.addTrack(v, stream);
    this.pc.addTrack(a, stream);
    this.pc.addEventListener('icecandidate', (e: RTCPeerConnectionIceEvent) => {
      if (e.candidate)
        this.candidates.push({
          candidate: e.candidate.candidate,
          sdpMid: e.candidate.sdpMid,
          sdpMLineIndex: e.candidate.sdpMLineIndex,
        });
    });
  }

  /** An offer with all candidates (gathering complete), filtered to 127.0.0.1. */
  async offer(): Promise<SessionDescription> {
    const o = await this.pc.createOffer();
    await this.pc.setLocalDescription(o);
    await waitIceGathering(this.pc);
    return { type: 'offer', sdp: filterSdpCandidates(this.pc.localDescription!.sdp, ALLOW) };
  }

  async accept(answer: SessionDescription): Promise<void> {
    await this.pc.setRemoteDescription(answer);
  }

  start(): void {
    const frame = makeI420(this.width, this.height);
    this.#videoTimer = setInterval(() => {
      const i = this.framesSent++;
      drawPattern(frame, i);
      if (this.marker) {
        paintMarker(frame.data, this.width, this.height, i);
        this.sentAt.set(i & 4095, performance.now());
      }
      this.#video.onFrame(frame);
    }, 33);
    const samples = new Int16Array(480);
    let n = 0;
    const t0 = performance.now();
    let sent = 0;
    this.#audioTimer = setInterval(() => {
      // Catch up with the clock: timers are coarse, audio must be steady.
      const due = Math.floor((performance.now() - t0) / 10);
      for (; sent < due; sent++) {
        for (let i = 0; i < 480; i++, n++) samples[i] = Math.round(8000 * Math.sin((2 * Math.PI * 440 * n) / 48000));
        this.#audio.onData({ samples, sampleRate: 48000, bitsPerSample: 16, channelCount: 1, numberOfFrames: 480 });
      }
    }, 10);
  }

  close(): void {
    if (this.#videoTimer) clearInterval(this.#videoTimer);
    if (this.#audioTimer) clearInterval(this.#audioTimer);
    for (const t of this.#tracks) t.stop();
    this.pc.close();
  }
}

export interface ReceivedFrame {
  width: number;
  height: number;
  data: Uint8Array;
  at: number;
}

/**
 * Receives video and audio (recvonly) and keeps the last frame plus counters. `config` is its RTCPeerConnection's
 * (e.g. TURN servers and iceTransportPolicy 'relay'); default: no ICE servers, host candidates.
 */
export class ViewerClient {
  readonly pc: RTCPeerConnection;
  #videoSink: InstanceType<typeof wrtc.nonstandard.RTCVideoSink> | null = null;
  #audioSink: InstanceType<typeof wrtc.nonstandard.RTCAudioSink> | null = null;
  frames = 0;
  audioChunks = 0;
  /** Peak absolute sample of the audio received (0 for silence). */
  audioPeak = 0;
  last: ReceivedFrame | null = null;
  readonly sizes = new Set<string>();
  /** Called for every received frame (the data is only valid during the call). */
  onFrame: ((f: ReceivedFrame) => void) | null = null;

  constructor(config: RTCConfiguration = { iceServers: [] }) {
    this.pc = new wrtc.RTCPeerConnection(config);
    this.pc.addTransceiver('video', { direction: 'recvonly' });
    this.pc.addTransceiver('audio', { direction: 'recvonly' });
    this.pc.addEventListener('track', (e: RTCTrackEvent) => {
      if (e.track.kind === 'video') {
        this.#videoSink = new wrtc.nonstandard.RTCVideoSink(e.track);
        this.#videoSink.onframe = ({ frame }: { frame: { width: number; height: number; data: Uint8Array } }) => {
          this.frames++;
          this.received({ width: frame.width, height: frame.height, data: frame.data, at: performance.now() });
        };
      } else {
        this.#audioSink = new wrtc.nonstandard.RTCAudioSink(e.track);
        this.#audioSink.ondata = (d: { samples: Int16Array }) => {
          this.audioChunks++;
          for (const s of d.samples) if (Math.abs(s) > this.audioPeak) this.audioPeak = Math.abs(s);
        };
      }
    });
  }

  /** Every received frame (the data is only valid during the call): kept as `last`. Subclasses that only count
   * frames override it and skip the copy. */
  protected received(f: ReceivedFrame): void {
    this.sizes.add(`${f.width}x${f.height}`);
    this.onFrame?.(f);
    this.last = { ...f, data: f.data.slice() };
  }

  /** An offer with the candidates gathered within `gatherTimeoutMs` (default 3 s), filtered to 127.0.0.1. */
  async offer(gatherTimeoutMs?: number): Promise<SessionDescription> {
    const o = await this.pc.createOffer();
    await this.pc.setLocalDescription(o);
    await waitIceGathering(this.pc, gatherTimeoutMs);
    return { type: 'offer', sdp: filterSdpCandidates(this.pc.localDescription!.sdp, ALLOW) };
  }

  async accept(answer: SessionDescription): Promise<void> {
    await this.pc.setRemoteDescription(answer);
  }

  close(): void {
    this.#videoSink?.stop();
    this.#audioSink?.stop();
    this.pc.close();
  }
}

/**
 * A performer in private mode: a real wrtc peer that sends a 440 Hz tone as its only track and the tracked face over
 * an expression data channel (unordered, maxRetransmits 0) through the client library's ExpressionSender.
 */
export class PrivatePerformerClient {
  readonly pc = new wrtc.RTCPeerConnection({ iceServers: [] });
  readonly channel: RTCDataChannel;
  readonly sender: ExpressionSender;
  readonly #audio = new wrtc.nonstandard.RTCAudioSource();
  readonly #track: MediaStreamTrack;
  #audioTimer: NodeJS.Timeout | null = null;

  constructor() {
    this.#track = this.#audio.createTrack();
    this.pc.addTrack(this.#track, new wrtc.MediaStream([this.#track]));
    this.channel = this.pc.createDataChannel(EXPRESSION_CHANNEL_LABEL, { ordered: false, maxRetransmits: 0 });
    this.channel.binaryType = 'arraybuffer';
    this.sender = new ExpressionSender(this.channel);
  }

  async offer(): Promise<SessionDescription> {
    const o = await this.pc.createOffer();
    await this.pc.setLocalDescription(o);
    await waitIceGathering(this.pc);
    return { type: 'offer', sdp: filterSdpCandidates(this.pc.localDescription!.sdp, ALLOW) };
  }

  async accept(answer: SessionDescription): Promise<void> {
    await this.pc.setRemoteDescription(answer);
  }

  /** Starts the tone (48 kHz mono, 10 ms chunks, kept steady against the clock). */
  startAudio(): void {
    const samples = new Int16Array(480);
    let n = 0;
    let sent = 0;
    const t0 = performance.now();
    this.#audioTimer = setInterval(() => {
      const due = Math.floor((performance.now() - t0) / 10);
      for (; sent < due; sent++) {
        for (let i = 0; i < 480; i++, n++) samples[i] = Math.round(8000 * Math.sin((2 * Math.PI * 440 * n) / 48000));
        this.#audio.onData({ samples, sampleRate: 48000, bitsPerSample: 16, channelCount: 1, numberOfFrames: 480 });
      }
    }, 10);
  }

  close(): void {
    if (this.#audioTimer) clearInterval(this.#audioTimer);
    this.channel.close();
    this.#track.stop();
    this.pc.close();
  }
}
