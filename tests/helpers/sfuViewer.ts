/**
 * A wrtc viewer of the SFU fan-out over real socket.io signaling (sfu:capabilities → createTransport → consume →
 * resume, with mediasoup-client's Chrome74 handler driving a wrtc peer). Counts decoded video frames; on 'viewReset'
 * it consumes again, as the client library does.
 */
import wrtc from '@roamhq/wrtc';
import type { types as msc } from 'mediasoup-client';
import { loadClientDevice } from '../../server/media/mediasoupFanout.js';
import type { PublicError, SfuConsumerInfo, SfuTransportOptions } from '../../server/signaling/protocol.js';
import { call, type ClientSocket } from './socket.js';

/** A wrtc viewer doing the sfu:* signaling over socket.io; counts decoded video frames. */
export class SocketSfuViewer {
  frames = 0;
  width = 0;
  failures: PublicError[] = [];
  closedReason: string | null = null;
  #recv: msc.Transport | null = null;
  #sink: { stop(): void } | null = null;
  /** viewReset events received (each followed by a fresh view(), as the client library does). */
  resets = 0;
  constructor(readonly socket: ClientSocket) {
    socket.on('failure', (e) => this.failures.push(e));
    socket.on('closed', ({ reason }) => {
      this.closedReason = reason;
    });
    socket.on('viewReset', () => {
      this.resets++;
      this.view().catch((err: unknown) => this.failures.push({ code: 'INTERNAL', message: String(err) }));
    });
  }

  async view(): Promise<void> {
    this.#stopMedia();
    const s = this.socket;
    const caps = await call<{ routerRtpCapabilities: msc.RtpCapabilities }>(s, 'sfu:capabilities', {});
    const device = await loadClientDevice(caps.routerRtpCapabilities);
    const t = await call<SfuTransportOptions>(s, 'sfu:createTransport', {});
    const recv = device.createRecvTransport(t as unknown as msc.TransportOptions);
    this.#recv = recv;
    recv.on('connect', ({ dtlsParameters }, callback, errback) => {
      call(s, 'sfu:connect', { transportId: t.id, dtlsParameters }).then(() => callback(), errback);
    });
    const infos = await call<SfuConsumerInfo[]>(s, 'sfu:consume', { transportId: t.id, rtpCapabilities: device.recvRtpCapabilities });
    for (const info of infos) {
      const c = await recv.consume({
        id: info.id,
        producerId: info.producerId,
        kind: info.kind,
        rtpParameters: info.rtpParameters as msc.RtpParameters,
      });
      await call(s, 'sfu:resume', { consumerId: c.id });
      if (info.kind === 'video') {
        const sink = new wrtc.nonstandard.RTCVideoSink(c.track);
        sink.onframe = ({ frame }: { frame: { width: number } }) => {
          this.frames++;
          this.width = frame.width;
        };
        this.#sink = sink;
      }
    }
  }

  #stopMedia(): void {
    this.#sink?.stop();
    this.#sink = null;
    this.#recv?.close();
    this.#recv = null;
  }

  close(): void {
    this.#stopMedia();
    this.socket.disconnect();
  }
}

