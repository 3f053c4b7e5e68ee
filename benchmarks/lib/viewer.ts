/**
 * The benchmarks' one viewer client: a recvonly @roamhq/wrtc peer (CountingViewer) that views a room through the real
 * signaling, from the server's direct fan-out ('view') or from mediasoup (sfu:* messages, mediasoup-client's Chrome74
 * handler driving a wrtc peer, as the server's own SFU test does); and libwebrtc's inbound video counters of any
 * receiving peer (getStats).
 *
 * Two ways of counting, as the benchmarks need them:
 * - with a sink (the default; the reliability benchmarks): every decoded frame is counted as it arrives, in 1 s bins
 *   and, when asked, with its arrival time; video and audio are received, as a viewer page would;
 * - without a sink (`{ sink: false, audio: false }`; the fan-out benchmark's viewer processes, hundreds of viewers):
 *   frames are counted from getStats only, no frame is copied into JavaScript, and no audio is received (libwebrtc
 *   would decode every received audio stream too). libwebrtc decodes every received video frame whether or not a
 *   sink is attached (framesDecoded follows framesReceived without one), so such a viewer still decodes.
 *
 * Every wrtc peer made here must be closed before the process exits (wrtc crashes at exit with live peers).
 */
import wrtc from '@roamhq/wrtc';
import type { types as msc } from 'mediasoup-client';
import { filterSdpCandidates } from '../../server/media/candidates.js';
import { loadClientDevice } from '../../server/media/mediasoupFanout.js';
import { waitIceGathering } from '../../server/media/rtc.js';
import type {
  JoinResponse,
  RoomStats,
  SdpResponse,
  SessionDescription,
  SfuCapabilitiesResponse,
  SfuConsumerInfo,
  SfuTransportOptions,
} from '../../server/types/protocol.js';
import { call, connectClient, type ClientSocket } from '../../tests/helpers/socket.js';

const ALLOW = ['127.0.0.1'];

/** Epoch ms with sub-ms precision, comparable across processes (the reliability server's tick times). */
export const now = (): number => performance.timeOrigin + performance.now();

/** Cumulative inbound video counters of a receiving peer (libwebrtc getStats; times in seconds). */
export interface InboundVideo {
  framesReceived: number;
  framesDecoded: number;
  framesDropped: number;
  keyFramesDecoded: number;
  freezeCount: number;
  totalDecodeTime: number;
  bytesReceived: number;
  packetsReceived: number;
  packetsLost: number;
  /** The widest decoded frame. */
  frameWidth: number;
}

/** A viewer's counters as the fan-out benchmark reads them, with whether its peer is connected. */
export interface ViewerCounters extends InboundVideo {
  connected: boolean;
}

/** Sums the inbound-rtp video streams of a peer's (or a mediasoup transport's) stats. */
export async function inboundVideo(pc: { getStats(): Promise<RTCStatsReport> }): Promise<InboundVideo> {
  const out: InboundVideo = {
    framesReceived: 0,
    framesDecoded: 0,
    framesDropped: 0,
    keyFramesDecoded: 0,
    freezeCount: 0,
    totalDecodeTime: 0,
    bytesReceived: 0,
    packetsReceived: 0,
    packetsLost: 0,
    frameWidth: 0,
  };
  const report = await pc.getStats();
  report.forEach((s: Record<string, unknown>) => {
    if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
    const n = (k: string): number => (typeof s[k] === 'number' ? s[k] : 0);
    for (const k of Object.keys(out) as (keyof InboundVideo)[]) {
      out[k] = k === 'frameWidth' ? Math.max(out.frameWidth, n(k)) : out[k] + n(k);
    }
  });
  return out;
}

/** A decoded frame (I420) as the sink gives it; `at`: performance.now() when it arrived. */
export interface ReceivedFrame {
  width: number;
  height: number;
  data: Uint8Array;
  at: number;
}

export interface ViewerOptions {
  /** Receive audio too (default true). */
  audio?: boolean;
  /** Attach sinks and count each decoded frame (default true). */
  sink?: boolean;
}

/** A recvonly wrtc viewer; see the module comment for its two ways of counting. */
export class CountingViewer {
  readonly pc = new wrtc.RTCPeerConnection({ iceServers: [] });
  /** Decoded frames (with a sink). */
  frames = 0;
  /** Every frame's arrival time, epoch ms (with a sink and `keepTimes`). */
  readonly times: number[] = [];
  /** Frames per epoch second (with a sink). */
  readonly bins = new Map<number, number>();
  width = 0;
  height = 0;
  audioChunks = 0;
  /** Peak absolute sample of the audio received (0 for silence). */
  audioPeak = 0;
  /** Called for every decoded frame (with a sink); the data is only valid during the call. */
  onFrame: ((f: ReceivedFrame) => void) | null = null;
  readonly #sinks: { stop(): void }[] = [];

  constructor(
    readonly keepTimes = false,
    o: ViewerOptions = {},
  ) {
    this.pc.addTransceiver('video', { direction: 'recvonly' });
    if (o.audio ?? true) this.pc.addTransceiver('audio', { direction: 'recvonly' });
    if (o.sink ?? true) this.pc.addEventListener('track', (e: RTCTrackEvent) => this.#attach(e.track));
  }

  #attach(track: MediaStreamTrack): void {
    if (track.kind === 'video') {
      const sink = new wrtc.nonstandard.RTCVideoSink(track);
      this.#sinks.push(sink);
      // Counts only: no copy of the frame (a benchmark viewer receives hundreds of 512² frames a second).
      sink.onframe = ({ frame }: { frame: { width: number; height: number; data: Uint8Array } }) => {
        const t = now();
        this.frames++;
        this.width = frame.width;
        this.height = frame.height;
        if (this.keepTimes) this.times.push(t);
        const s = Math.floor(t / 1000);
        this.bins.set(s, (this.bins.get(s) ?? 0) + 1);
        this.onFrame?.({ width: frame.width, height: frame.height, data: frame.data, at: performance.now() });
      };
    } else {
      const sink = new wrtc.nonstandard.RTCAudioSink(track);
      this.#sinks.push(sink);
      sink.ondata = (d: { samples: Int16Array }) => {
        this.audioChunks++;
        for (const s of d.samples) if (Math.abs(s) > this.audioPeak) this.audioPeak = Math.abs(s);
      };
    }
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

  close(): void {
    for (const s of this.#sinks.splice(0)) s.stop();
    this.pc.close();
  }
}

/** Rewrites a viewer's offer and the server's answer (a relay in the media path: reliability.ts NetCut). */
export interface SdpRewriter {
  rewriteLocal(sdp: string): Promise<string>;
  rewriteRemote(sdp: string): Promise<string>;
}

export interface Timeouts {
  connectMs: number;
  joinMs: number;
  /** Each signaling request after the join. */
  requestMs: number;
}

/** A signaling connection joined to a room with `token`. */
export async function joinRoom(
  url: string,
  token: string,
  t: Timeouts,
): Promise<{ socket: ClientSocket; joined: JoinResponse }> {
  const socket = await connectClient(url, t.connectMs);
  try {
    return { socket, joined: await call<JoinResponse>(socket, 'join', { token }, t.joinMs) };
  } catch (err) {
    socket.disconnect();
    throw err;
  }
}

/** Views the room from the direct fan-out ('view'); `cut` routes the media through its relay. */
export async function viewDirect(
  socket: ClientSocket,
  viewer: CountingViewer,
  requestMs: number,
  cut?: SdpRewriter,
): Promise<void> {
  let offer = await viewer.offer();
  if (cut) offer = { type: 'offer', sdp: await cut.rewriteLocal(offer.sdp) };
  const res = await call<SdpResponse>(socket, 'view', { sdp: offer }, requestMs);
  await viewer.accept(cut ? { type: 'answer', sdp: await cut.rewriteRemote(res.sdp.sdp) } : res.sdp);
}

/** A viewer of the SFU: a mediasoup-client recv transport on a wrtc peer, consuming the room's video only. */
export interface SfuViewer {
  getStats(): Promise<RTCStatsReport>;
  readonly connected: boolean;
  close(): void;
}

export async function viewSfu(socket: ClientSocket, requestMs: number): Promise<SfuViewer> {
  const caps = await call<SfuCapabilitiesResponse>(socket, 'sfu:capabilities', {}, requestMs);
  const device = await loadClientDevice(caps.routerRtpCapabilities as msc.RtpCapabilities);
  const t = await call<SfuTransportOptions>(socket, 'sfu:createTransport', {}, requestMs);
  const recv = device.createRecvTransport(t as unknown as msc.TransportOptions);
  let state = 'new';
  recv.on('connectionstatechange', (s) => (state = s));
  recv.on('connect', ({ dtlsParameters }, callback, errback) => {
    call(socket, 'sfu:connect', { transportId: t.id, dtlsParameters }, requestMs).then(() => callback(), errback);
  });
  try {
    const infos = await call<SfuConsumerInfo[]>(
      socket,
      'sfu:consume',
      { transportId: t.id, rtpCapabilities: device.recvRtpCapabilities },
      requestMs,
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
    await call(socket, 'sfu:resume', { consumerId: consumer.id }, requestMs);
  } catch (err) {
    recv.close();
    throw err;
  }
  return {
    getStats: () => recv.getStats(),
    get connected() {
      return state === 'connected';
    },
    close: () => recv.close(),
  };
}

/** A client (performer or viewer) with its signaling socket and what the server pushed to it. */
export interface Connected<P> {
  socket: ClientSocket;
  peer: P;
  /** RoomStats pushed to this socket with their arrival time (epoch ms), newest last. */
  stats: (RoomStats & { at: number })[];
  closedReasons: string[];
  disconnects: number;
  close(): void;
}

/** Records what the server pushes to `socket`; close() closes the peer and the socket. */
export function watch<P extends { close(): void }>(socket: ClientSocket, peer: P): Connected<P> {
  const c: Connected<P> = {
    socket,
    peer,
    stats: [],
    closedReasons: [],
    disconnects: 0,
    close: () => {
      peer.close();
      socket.disconnect();
    },
  };
  socket.on('stats', (s) => {
    c.stats.push({ ...s, at: now() });
    if (c.stats.length > 4000) c.stats.shift();
  });
  socket.on('closed', (m) => c.closedReasons.push(m.reason));
  socket.on('disconnect', () => c.disconnects++);
  return c;
}

/**
 * A viewer: joins with the viewer token and views (direct fan-out). `cut`, when given, routes the viewer's media
 * through its UDP relay (the offer's and answer's candidates rewritten).
 */
export async function connectViewer(
  signalUrl: string,
  token: string,
  viewer: CountingViewer,
  cut?: SdpRewriter,
): Promise<Connected<CountingViewer>> {
  try {
    const { socket } = await joinRoom(signalUrl, token, { connectMs: 15_000, joinMs: 30_000, requestMs: 60_000 });
    try {
      await viewDirect(socket, viewer, 60_000, cut);
    } catch (err) {
      socket.disconnect();
      throw err;
    }
    return watch(socket, viewer);
  } catch (err) {
    viewer.close();
    throw err;
  }
}
