/**
 * Messages between the fan-out benchmark and its child processes: the viewer processes (benchmarks/lib/fanoutViewers.ts,
 * over IPC) and the server (benchmarks/lib/fanoutServer.ts, one ready line on stdout).
 */

/** The server's stdout line when it listens: READY_PREFIX + JSON { url, pid }. */
export const READY_PREFIX = 'FANOUT_SERVER ';

export type ViewerMode = 'direct' | 'sfu';

export type ToViewers =
  /** Connects `count` more viewers to the room (signaling, then WebRTC), `parallel` at a time. */
  | { type: 'add'; url: string; token: string; mode: ViewerMode; count: number; parallel: number }
  /** Reads every viewer's inbound video counters. */
  | { type: 'stats' }
  /** Closes every viewer (peer connections and sockets); the process stays. */
  | { type: 'close' }
  /** Exits the process (after close). */
  | { type: 'exit' };

/** One viewer's cumulative inbound-rtp video counters (libwebrtc getStats). */
export interface ViewerCounters {
  framesReceived: number;
  framesDecoded: number;
  /** Seconds spent decoding, cumulative. */
  totalDecodeTime: number;
  bytesReceived: number;
  packetsReceived: number;
  packetsLost: number;
  frameWidth: number;
  /** Whether the viewer's peer connection is 'connected'. */
  connected: boolean;
}

export type FromViewers =
  | { type: 'added'; connected: number; failed: number; errors: string[]; ms: number }
  | { type: 'stats'; at: number; viewers: ViewerCounters[] }
  | { type: 'closed' }
  | { type: 'error'; message: string };

/**
 * The server's bench-only control channel (IPC, benchmarks/lib/fanoutServer.ts): RTP viewers, i.e. one mediasoup
 * PlainTransport (SRTP, comedia off) + video consumer per viewer, sending to `ports` on `ip`.
 */
export type ToServer = { type: 'addRtpViewers'; ip: string; ports: number[] };

export type FromServer =
  | {
      type: 'rtpViewersAdded';
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
  | { type: 'error'; message: string };

/** The RTP receiver process (benchmarks/lib/fanoutRtp.ts): one UDP socket per RTP viewer. */
export type ToRtp =
  /** Opens `count` more sockets on 127.0.0.1. */
  | { type: 'open'; count: number }
  /** The payload type of the video RTP packets to count (others: RTCP, RTX, are counted apart). */
  | { type: 'watch'; pt: number }
  | { type: 'stats' }
  | { type: 'close' }
  | { type: 'exit' };

export type FromRtp =
  | { type: 'opened'; ports: number[] }
  | { type: 'watching' }
  /** Per socket, in the order opened: framesReceived counts distinct RTP timestamps; nothing is decoded. */
  | { type: 'stats'; at: number; viewers: ViewerCounters[]; rtcpPackets: number; otherPackets: number }
  | { type: 'closed' }
  | { type: 'error'; message: string };
