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
