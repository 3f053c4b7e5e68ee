/**
 * A viewer process of the fan-out benchmark (forked with IPC; messages in fanoutProtocol.ts). Each viewer is a real
 * viewer of the room: its own socket.io connection joined with the viewer token, and its own @roamhq/wrtc peer
 * connection that receives the room's video, either from the server's direct fan-out ('view' with a recvonly offer)
 * or from mediasoup (sfu:* messages, mediasoup-client's Chrome74 handler driving the wrtc peer, as the server's own
 * SFU test does). Viewers receive video only: the benchmark is about video frame rate, and libwebrtc would decode
 * every received audio stream too.
 *
 * Frames are counted from getStats (inbound-rtp framesReceived and framesDecoded). libwebrtc decodes every received
 * video frame whether or not a sink is attached (checked: framesDecoded follows framesReceived with no
 * RTCVideoSink, and stopping or disabling the remote track does not stop it), so these viewers decode: there is no
 * way to receive frames without decoding them in wrtc. No sink is attached, so no frame is copied into JavaScript.
 */
import wrtc from '@roamhq/wrtc';
import type { types as msc } from 'mediasoup-client';
import { filterSdpCandidates } from '../../server/media/candidates.js';
import { loadClientDevice } from '../../server/media/mediasoupFanout.js';
import { waitIceGathering } from '../../server/media/rtc.js';
import type {
  JoinResponse,
  SdpResponse,
  SfuCapabilitiesResponse,
  SfuConsumerInfo,
  SfuTransportOptions,
} from '../../server/types/protocol.js';
import { call, connectClient, type ClientSocket } from '../../tests/helpers/socket.js';
import type { FromViewers, ToViewers, ViewerCounters, ViewerMode } from './fanoutProtocol.js';

const ALLOW = ['127.0.0.1'];

interface Viewer {
  socket: ClientSocket;
  /** The peer connection whose stats hold the video (direct: ours; SFU: the recv transport's). */
  stats: () => Promise<RTCStatsReport>;
  connected: () => boolean;
  close: () => void;
}

async function directViewer(socket: ClientSocket): Promise<Viewer> {
  const pc = new wrtc.RTCPeerConnection({ iceServers: [] });
  const close = (): void => pc.close();
  try {
    pc.addTransceiver('video', { direction: 'recvonly' });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await waitIceGathering(pc);
    const sdp = { type: 'offer' as const, sdp: filterSdpCandidates(pc.localDescription!.sdp, ALLOW) };
    const answer = await call<SdpResponse>(socket, 'view', { sdp }, 60_000);
    await pc.setRemoteDescription(answer.sdp);
  } catch (err) {
    close();
    throw err;
  }
  return { socket, stats: () => pc.getStats(), connected: () => pc.connectionState === 'connected', close };
}

async function sfuViewer(socket: ClientSocket): Promise<Viewer> {
  const caps = await call<SfuCapabilitiesResponse>(socket, 'sfu:capabilities', {}, 60_000);
  const device = await loadClientDevice(caps.routerRtpCapabilities as msc.RtpCapabilities);
  const t = await call<SfuTransportOptions>(socket, 'sfu:createTransport', {}, 60_000);
  const recv = device.createRecvTransport(t as unknown as msc.TransportOptions);
  let state = 'new';
  recv.on('connectionstatechange', (s) => (state = s));
  recv.on('connect', ({ dtlsParameters }, callback, errback) => {
    call(socket, 'sfu:connect', { transportId: t.id, dtlsParameters }, 60_000).then(() => callback(), errback);
  });
  try {
    const infos = await call<SfuConsumerInfo[]>(
      socket,
      'sfu:consume',
      { transportId: t.id, rtpCapabilities: device.recvRtpCapabilities },
      60_000,
    );
    const video = infos.find((i) => i.kind === 'video');
    if (!video) throw new Error('sfu:consume returned no video consumer');
    // The audio consumer stays paused (never resumed): the server sends it nothing.
    const consumer = await recv.consume({
      id: video.id,
      producerId: video.producerId,
      kind: 'video',
      rtpParameters: video.rtpParameters as msc.RtpParameters,
    });
    await call(socket, 'sfu:resume', { consumerId: consumer.id }, 60_000);
  } catch (err) {
    recv.close();
    throw err;
  }
  return { socket, stats: () => recv.getStats(), connected: () => state === 'connected', close: () => recv.close() };
}

async function addViewer(url: string, token: string, mode: ViewerMode): Promise<Viewer> {
  const socket = await connectClient(url, 30_000);
  try {
    const joined = await call<JoinResponse>(socket, 'join', { token }, 60_000);
    if (joined.fanout !== mode) throw new Error(`the room's fan-out is ${joined.fanout}, not ${mode}`);
    return await (mode === 'direct' ? directViewer(socket) : sfuViewer(socket));
  } catch (err) {
    socket.disconnect();
    throw err;
  }
}

async function counters(v: Viewer): Promise<ViewerCounters> {
  const out: ViewerCounters = {
    framesReceived: 0,
    framesDecoded: 0,
    totalDecodeTime: 0,
    bytesReceived: 0,
    packetsReceived: 0,
    packetsLost: 0,
    frameWidth: 0,
    connected: v.connected(),
  };
  const report = await v.stats();
  report.forEach((s: Record<string, unknown>) => {
    if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
    const n = (k: string): number => (typeof s[k] === 'number' ? s[k] : 0);
    out.framesReceived += n('framesReceived');
    out.framesDecoded += n('framesDecoded');
    out.totalDecodeTime += n('totalDecodeTime');
    out.bytesReceived += n('bytesReceived');
    out.packetsReceived += n('packetsReceived');
    out.packetsLost += n('packetsLost');
    out.frameWidth = Math.max(out.frameWidth, n('frameWidth'));
  });
  return out;
}

const viewers: Viewer[] = [];

function send(m: FromViewers): void {
  process.send?.(m);
}

function closeAll(): void {
  for (const v of viewers.splice(0)) {
    v.close();
    v.socket.disconnect();
  }
}

async function handle(m: ToViewers): Promise<void> {
  switch (m.type) {
    case 'add': {
      const t0 = performance.now();
      const errors: string[] = [];
      let next = 0;
      let connected = 0;
      const lane = async (): Promise<void> => {
        while (next < m.count) {
          next++;
          try {
            viewers.push(await addViewer(m.url, m.token, m.mode));
            connected++;
          } catch (err) {
            errors.push(err instanceof Error ? err.message : String(err));
          }
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, m.parallel) }, lane));
      send({
        type: 'added',
        connected,
        failed: errors.length,
        errors: [...new Set(errors)],
        ms: performance.now() - t0,
      });
      return;
    }
    case 'stats': {
      const list = await Promise.all(viewers.map(counters));
      send({ type: 'stats', at: Date.now(), viewers: list });
      return;
    }
    case 'close':
      closeAll();
      send({ type: 'closed' });
      return;
    case 'exit':
      closeAll();
      // wrtc's finalizers crash at a natural exit: exit explicitly once every peer is closed.
      setTimeout(() => process.exit(0), 200);
      return;
  }
}

process.on('message', (m: ToViewers) => {
  handle(m).catch((err: unknown) => send({ type: 'error', message: err instanceof Error ? err.message : String(err) }));
});
process.on('disconnect', () => {
  closeAll();
  setTimeout(() => process.exit(0), 200);
});
