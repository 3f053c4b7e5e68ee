/**
 * RTP counters from RTCPeerConnection.getStats(), shared by the in-page probe (Chromium) and the transport
 * benchmark's server-side tap (@roamhq/wrtc peers): the same standard stats fields on both sides.
 */

/** One RTP stream's counters (cumulative, as getStats gives them; times in seconds). */
export interface RtpCounters {
  type: 'inbound-rtp' | 'outbound-rtp';
  kind: string;
  packets: number;
  bytes: number;
  /** framesDecoded (inbound) or framesEncoded (outbound). */
  frames: number;
  totalEncodeTime: number;
  totalDecodeTime: number;
  totalProcessingDelay: number;
  jitterBufferDelay: number;
  jitterBufferEmittedCount: number;
}

/** Reads the inbound/outbound RTP counters of every open peer connection in `peers`. */
export async function collectRtp(peers: readonly RTCPeerConnection[]): Promise<RtpCounters[]> {
  const out: RtpCounters[] = [];
  for (const pc of peers) {
    if (pc.connectionState === 'closed') continue;
    const report = await pc.getStats();
    report.forEach((s: Record<string, unknown>) => {
      if (s.type !== 'inbound-rtp' && s.type !== 'outbound-rtp') return;
      const n = (k: string): number => (typeof s[k] === 'number' ? s[k] : 0);
      const inbound = s.type === 'inbound-rtp';
      out.push({
        type: s.type,
        kind: String(s.kind),
        packets: n(inbound ? 'packetsReceived' : 'packetsSent'),
        bytes: n(inbound ? 'bytesReceived' : 'bytesSent'),
        frames: n(inbound ? 'framesDecoded' : 'framesEncoded'),
        totalEncodeTime: n('totalEncodeTime'),
        totalDecodeTime: n('totalDecodeTime'),
        totalProcessingDelay: n('totalProcessingDelay'),
        jitterBufferDelay: n('jitterBufferDelay'),
        jitterBufferEmittedCount: n('jitterBufferEmittedCount'),
      });
    });
  }
  return out;
}
