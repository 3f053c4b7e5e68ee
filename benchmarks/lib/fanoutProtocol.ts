/**
 * Requests and answers between the fan-out benchmark and its child processes (benchmarks/lib/child.ts carries them):
 * the viewer processes (benchmarks/lib/fanoutViewers.ts), the RTP receiver (benchmarks/lib/fanoutRtp.ts) and the
 * server (benchmarks/lib/fanoutServer.ts).
 */
import type { ViewerCounters } from './viewer.js';

export type { ViewerCounters };

export type ViewerMode = 'direct' | 'sfu';

export type ViewersRequest =
  /** Connects `count` more viewers to the room (signaling, then WebRTC), `parallel` at a time: ViewersAdded. */
  | { cmd: 'add'; url: string; token: string; mode: ViewerMode; count: number; parallel: number }
  /** Reads every viewer's inbound video counters: ViewersStats. */
  | { cmd: 'stats' }
  /** Closes every viewer (peer connections and sockets); the process stays. */
  | { cmd: 'close' };

export interface ViewersAdded {
  connected: number;
  failed: number;
  errors: string[];
  ms: number;
}

export interface ViewersStats {
  at: number;
  viewers: ViewerCounters[];
}

/**
 * The server's bench-only control channel (IPC, benchmarks/lib/fanoutServer.ts): RTP viewers, i.e. one mediasoup
 * PlainTransport (SRTP, comedia off) + video consumer per viewer, sending to `ports` on `ip`.
 */
export type ServerRequest = { cmd: 'addRtpViewers'; ip: string; ports: number[] };

/** The server's ready message. */
export interface ServerReady {
  url: string;
  pid: number;
  /** The bearer token of the management API (room and portrait calls). */
  apiKey: string;
}

export interface RtpViewersAdded {
  added: number;
  errors: string[];
  /** The consumers' VP8 payload type (what the receiver counts). */
  videoPt: number | null;
  /** The plain transports' SRTP crypto suite (null: not SRTP). */
  srtpCryptoSuite: string | null;
  /** The room's routers after the add: worker pid and viewers (WebRTC + RTP viewers), the primary first. */
  routers: { workerPid: number; viewers: number }[];
  ms: number;
}

/** The RTP receiver process (benchmarks/lib/fanoutRtp.ts): one UDP socket per RTP viewer. */
export type RtpRequest =
  /** Opens `count` more sockets on 127.0.0.1: RtpOpened. */
  | { cmd: 'open'; count: number }
  /** The payload type of the video RTP packets to count (others: RTCP, RTX, are counted apart). */
  | { cmd: 'watch'; pt: number }
  /** RtpStats. */
  | { cmd: 'stats' }
  | { cmd: 'close' };

export interface RtpOpened {
  ports: number[];
}

/** Per socket, in the order opened: framesReceived counts distinct RTP timestamps; nothing is decoded. */
export interface RtpStats extends ViewersStats {
  rtcpPackets: number;
  otherPackets: number;
}
