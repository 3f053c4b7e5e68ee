/**
 * wrtc viewers of the SFU fan-out (capabilities → createTransport → connect → consume → resume, with mediasoup-client's
 * Chrome74 handler driving a wrtc peer), counting decoded video frames:
 * - WrtcSfuViewer over any SfuSignal (e.g. a Room's sfu* methods called directly);
 * - SocketSfuViewer over real socket.io signaling (sfu:* messages); on 'viewReset' it consumes again, as the client
 *   library does.
 */
import wrtc from '@roamhq/wrtc';
import type { types as msc } from 'mediasoup-client';
import { loadClientDevice } from '../../server/media/mediasoupFanout.js';
import type { PublicError, SfuConsumerInfo, SfuTransportOptions } from '../../server/types/protocol.js';
import { call, type ClientSocket } from './socket.js';

/** What a viewer asks of the SFU (the sfu:* messages, or a Room's methods). */
export interface SfuSignal {
  capabilities(): Promise<msc.RtpCapabilities>;
  createTransport(): Promise<SfuTransportOptions>;
  connect(transportId: string, dtlsParameters: unknown): Promise<void>;
  consume(transportId: string, rtpCapabilities: unknown): Promise<SfuConsumerInfo[]>;
  resume(consumerId: string): Promise<void>;
}

export class WrtcSfuViewer {
  frames = 0;
  width = 0;
  height = 0;
  /** The Y plane of the last frame, kept only when `keepLuma` is set (a copy per frame). */
  lastLuma: Uint8Array | null = null;
  keepLuma = false;
  /** The receive transport of the last view(). */
  transportId = '';
  #recv: msc.Transport | null = null;
  #sink: { stop(): void } | null = null;
  constructor(readonly signal: SfuSignal) {}

  /** Consumes the room's producers (again: a previous transport is closed first). */
  async view(): Promise<void> {
    this.stopMedia();
    const device = await loadClientDevice(await this.signal.capabilities());
    const t = await this.signal.createTransport();
    this.transportId = t.id;
    const recv = device.createRecvTransport(t as unknown as msc.TransportOptions);
    this.#recv = recv;
    recv.on('connect', ({ dtlsParameters }, callback, errback) => {
      this.signal.connect(t.id, dtlsParameters).then(() => callback(), errback);
    });
    const infos = await this.signal.consume(t.id, device.recvRtpCapabilities);
    for (const info of infos) {
      const c = await recv.consume({
        id: info.id,
        producerId: info.producerId,
        kind: info.kind,
        rtpParameters: info.rtpParameters as msc.RtpParameters,
      });
      await this.signal.resume(c.id);
      if (info.kind === 'video') {
        const sink = new wrtc.nonstandard.RTCVideoSink(c.track);
        sink.onframe = ({ frame }: { frame: { width: number; height: number; data: Uint8Array } }) => {
          this.frames++;
          this.width = frame.width;
          this.height = frame.height;
          if (this.keepLuma) this.lastLuma = frame.data.slice(0, frame.width * frame.height);
        };
        this.#sink = sink;
      }
    }
  }

  stopMedia(): void {
    this.#sink?.stop();
    this.#sink = null;
    this.#recv?.close();
    this.#recv = null;
  }
}

/** A wrtc viewer doing the sfu:* signaling over socket.io. */
export class SocketSfuViewer extends WrtcSfuViewer {
  failures: PublicError[] = [];
  closedReason: string | null = null;
  /** viewReset events received (each followed by a fresh view(), as the client library does). */
  resets = 0;
  constructor(readonly socket: ClientSocket) {
    super({
      capabilities: async () =>
        (await call<{ routerRtpCapabilities: msc.RtpCapabilities }>(socket, 'sfu:capabilities', {}))
          .routerRtpCapabilities,
      createTransport: () => call<SfuTransportOptions>(socket, 'sfu:createTransport', {}),
      connect: async (transportId, dtlsParameters) => {
        await call(socket, 'sfu:connect', { transportId, dtlsParameters });
      },
      consume: (transportId, rtpCapabilities) =>
        call<SfuConsumerInfo[]>(socket, 'sfu:consume', { transportId, rtpCapabilities }),
      resume: async (consumerId) => {
        await call(socket, 'sfu:resume', { consumerId });
      },
    });
    socket.on('failure', (e) => this.failures.push(e));
    socket.on('closed', ({ reason }) => {
      this.closedReason = reason;
    });
    socket.on('viewReset', () => {
      this.resets++;
      this.view().catch((err: unknown) => this.failures.push({ code: 'INTERNAL', message: String(err) }));
    });
  }

  close(): void {
    this.stopMedia();
    this.socket.disconnect();
  }
}
