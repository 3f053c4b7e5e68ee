/**
 * Viewer latency modes (pure logic, no DOM): what a viewer link's `latency=` asks for and how a receiver is tuned
 * for it.
 *
 * - `low` (the default, for calls): the avatar's audio and video are received as two separate streams, so the
 *   browser does not hold the video back to lip-sync it with the audio (the server already sends them in sync: it
 *   delays the voice by the measured video latency); the video is decoded and shown as soon as it arrives, past the
 *   receive jitter buffer (fastVideo.ts, where the browser can), else it asks for the smallest receive buffer
 *   (RTCRtpReceiver.jitterBufferTarget = 0).
 * - `smooth` (broadcast, OBS): the browser's defaults: one lip-synced stream, the adaptive jitter buffer.
 */
import { ClientError } from './errors.js';

export type LatencyMode = 'low' | 'smooth';
export const LATENCY_MODES: readonly LatencyMode[] = ['low', 'smooth'];
/** What a link without `latency=` gets. */
export const DEFAULT_LATENCY_MODE: LatencyMode = 'low';

/**
 * The mode named by a link's `latency` parameter (null or '' = the default).
 * @throws ClientError('BAD_REQUEST') for any other value.
 */
export function parseLatencyMode(value: string | null): LatencyMode {
  if (value === null || value === '') return DEFAULT_LATENCY_MODE;
  if ((LATENCY_MODES as readonly string[]).includes(value)) return value as LatencyMode;
  throw new ClientError('BAD_REQUEST', `unknown latency mode "${value}": use latency=low or latency=smooth`);
}

/** How the view's receivers are set up. */
export interface ReceiveTuning {
  /** Keep the audio and the video in one stream (the browser lip-syncs them, delaying whichever is early). */
  lipSync: boolean;
  /** RTCRtpReceiver.jitterBufferTarget for the video, ms; undefined = the browser's adaptive buffer. */
  videoJitterBufferTargetMs: number | undefined;
  /** The same for the audio. */
  audioJitterBufferTargetMs: number | undefined;
  /** Decode and show the video as it arrives, past the jitter buffer (fastVideo.ts), where the browser can. */
  fastVideo: boolean;
}

/**
 * The receive tuning of a mode. `bufferMs` (the link's `buffer=`, a diagnostic) overrides the jitter buffer target
 * of both kinds in either mode, and keeps the video in the browser's own receive path (so the buffer applies).
 */
export function receiveTuning(mode: LatencyMode, bufferMs?: number): ReceiveTuning {
  const video = bufferMs ?? (mode === 'low' ? 0 : undefined);
  return {
    lipSync: mode === 'smooth',
    videoJitterBufferTargetMs: video,
    audioJitterBufferTargetMs: bufferMs,
    fastVideo: mode === 'low' && bufferMs === undefined,
  };
}

/**
 * Rewrites the stream id of every audio section of an SDP (`a=msid:` and the legacy `a=ssrc:N msid:` lines) to one
 * of its own, so the receiving browser puts the audio in another sync group than the video and never delays one to
 * match the other. Sections other than audio, and audio sections without a stream id, are left as they are.
 */
export function separateAudioStream(sdp: string): string {
  const eol = sdp.includes('\r\n') ? '\r\n' : '\n';
  const lines = sdp.split(eol);
  let kind: string | null = null;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith('m=')) {
      kind = line.slice(2).split(' ')[0] ?? null;
      continue;
    }
    if (kind !== 'audio') continue;
    const msid = /^a=msid:(\S+)( .*)?$/.exec(line);
    if (msid && msid[1] !== '-') {
      lines[i] = `a=msid:${audioStreamId(msid[1]!)}${msid[2] ?? ''}`;
      continue;
    }
    const ssrc = /^(a=ssrc:\d+ msid:)(\S+)( .*)?$/.exec(line);
    if (ssrc && ssrc[2] !== '-') lines[i] = `${ssrc[1]!}${audioStreamId(ssrc[2]!)}${ssrc[3] ?? ''}`;
  }
  return lines.join(eol);
}

/** The audio's own stream id, derived from the shared one (stable across renegotiations). */
export function audioStreamId(streamId: string): string {
  return `${streamId}-audio`;
}
