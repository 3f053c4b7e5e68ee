/**
 * The viewer's SFU path (JoinResponse.fanout === 'sfu'): a mediasoup-client Device, one receive transport, and
 * one consumer per producer of the room's output (video + audio). The latency mode is applied here, on the client:
 * the consumers' stream ids decide whether the browser lip-syncs audio and video (one id) or not (one per kind), and
 * the receivers get the mode's jitter buffer targets.
 */
import { Device } from 'mediasoup-client';
import type { types as ms } from 'mediasoup-client';
import type { SfuCapabilitiesResponse, SfuConsumerInfo, SfuTransportOptions } from '../../server/types/protocol.js';
import { ClientError } from './errors.js';
import type { ReceiveTuning } from './latency.js';
import { showReceivedTrack, startFastVideo, type FastVideo } from './fastVideo.js';
import { receiverInfo, setJitterBufferTarget, type ReceiverInfo } from './peer.js';

export interface SfuSignal {
  capabilities(): Promise<SfuCapabilitiesResponse>;
  createTransport(): Promise<SfuTransportOptions>;
  connect(transportId: string, dtlsParameters: unknown): Promise<void>;
  consume(transportId: string, rtpCapabilities: unknown): Promise<SfuConsumerInfo[]>;
  resume(consumerId: string): Promise<void>;
}

export class SfuViewer {
  readonly stream = new MediaStream();
  readonly #signal: SfuSignal;
  readonly #iceServers: RTCIceServer[];
  readonly #onFailed: (why: string) => void;
  #transport: ms.Transport | null = null;
  #closed = false;
  #failed = false;

  readonly #tuning: ReceiveTuning | undefined;
  readonly #receivers: { receiver: RTCRtpReceiver; streamId: string; fast: FastVideo | null }[] = [];

  /** `tuning` (latency.ts): lip-sync or not, jitter buffer targets; default: the browser's defaults. */
  constructor(signal: SfuSignal, iceServers: RTCIceServer[], onFailed: (why: string) => void, tuning?: ReceiveTuning) {
    this.#tuning = tuning;
    this.#signal = signal;
    this.#iceServers = iceServers;
    this.#onFailed = onFailed;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Loads the device, creates the transport, consumes every producer and resumes it. */
  async view(audio = true): Promise<MediaStream> {
    const caps = await this.#signal.capabilities();
    const device = await Device.factory();
    await device.load({ routerRtpCapabilities: caps.routerRtpCapabilities as ms.RtpCapabilities });
    const t = await this.#signal.createTransport();
    if (this.#closed) throw new ClientError('CLOSED', 'viewer closed');
    const transport = device.createRecvTransport({
      id: t.id,
      iceParameters: t.iceParameters as ms.IceParameters,
      iceCandidates: t.iceCandidates as ms.IceCandidate[],
      dtlsParameters: t.dtlsParameters as ms.DtlsParameters,
      iceServers: this.#iceServers,
    });
    this.#transport = transport;
    transport.on('connect', ({ dtlsParameters }, callback, errback) => {
      this.#signal.connect(transport.id, dtlsParameters).then(callback, errback);
    });
    transport.on('connectionstatechange', (state) => {
      if ((state === 'failed' || state === 'closed') && !this.#closed && !this.#failed) {
        this.#failed = true;
        this.#onFailed(`SFU transport ${state}`);
      }
    });
    const infos = await this.#signal.consume(transport.id, device.recvRtpCapabilities);
    for (const info of infos) {
      if (!audio && info.kind === 'audio') continue;
      // The browser lip-syncs the tracks of one stream: one id for both kinds, or one per kind for no sync.
      const tuning = this.#tuning;
      const streamId = !tuning || tuning.lipSync ? 'avatar' : `avatar-${info.kind}`;
      let fast: FastVideo | null = null;
      const consumer = await transport.consume({
        id: info.id,
        producerId: info.producerId,
        kind: info.kind,
        rtpParameters: info.rtpParameters as ms.RtpParameters,
        streamId,
        // Before the receiver gets its first frame (a transform set later is never fed).
        onRtpReceiver: (r) => {
          if (info.kind === 'video') fast = startFastVideo(r, this.stream, tuning?.fastVideo ?? false);
        },
      });
      if (consumer.rtpReceiver) {
        if (tuning) {
          setJitterBufferTarget(
            consumer.rtpReceiver,
            info.kind === 'video' ? tuning.videoJitterBufferTargetMs : tuning.audioJitterBufferTargetMs,
          );
        }
        this.#receivers.push({ receiver: consumer.rtpReceiver, streamId, fast });
      }
      showReceivedTrack(this.stream, consumer.track, fast);
      await this.#signal.resume(consumer.id);
    }
    return this.stream;
  }

  /** The view's receivers: kind, stream id, jitter buffer target. */
  receivers(): ReceiverInfo[] {
    return this.#receivers.map(({ receiver, streamId, fast }) => receiverInfo(receiver, [streamId], fast ?? undefined));
  }

  /** The receive transport's stats (inbound-rtp etc.), or null before it exists. */
  async getStats(): Promise<RTCStatsReport | null> {
    return this.#transport ? this.#transport.getStats() : null;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const r of this.#receivers) r.fast?.close();
    this.#transport?.close();
    this.#transport = null;
  }
}
