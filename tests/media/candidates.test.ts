import { describe, expect, it } from 'vitest';
import {
  candidateAddress,
  candidateAllowed,
  filterSdpCandidates,
  sdpMediaKinds,
  setVideoBandwidth,
} from '../../server/media/candidates.js';

const sdp = [
  'v=0',
  'o=- 1 2 IN IP4 127.0.0.1',
  's=-',
  't=0 0',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111',
  'c=IN IP4 0.0.0.0',
  'a=candidate:1 1 udp 2122260223 10.0.0.5 50000 typ host generation 0',
  'a=candidate:2 1 udp 2122194687 127.0.0.1 50001 typ host generation 0',
  'a=candidate:3 1 udp 2122129151 fd00::1 50002 typ host generation 0',
  'm=video 9 UDP/TLS/RTP/SAVPF 96',
  'c=IN IP4 0.0.0.0',
  'b=AS:30000',
  'a=candidate:2 1 udp 2122194687 127.0.0.1 50001 typ host generation 0',
  'a=rtpmap:96 VP8/90000',
  '',
].join('\r\n');

describe('candidate filtering', () => {
  it('parses the address of a candidate line', () => {
    expect(candidateAddress('candidate:1 1 udp 2122260223 10.0.0.5 50000 typ host')).toBe('10.0.0.5');
    expect(candidateAddress('a=candidate:1 1 udp 1 fd00::1 5 typ host')).toBe('fd00::1');
    expect(candidateAddress('garbage')).toBeNull();
  });

  it('allows everything without a list, only listed addresses with one', () => {
    const c = 'candidate:1 1 udp 2122260223 10.0.0.5 50000 typ host';
    expect(candidateAllowed(c, null)).toBe(true);
    expect(candidateAllowed(c, ['127.0.0.1'])).toBe(false);
    expect(candidateAllowed(c, ['10.0.0.5'])).toBe(true);
  });

  it('removes disallowed candidate lines from an SDP and keeps the rest', () => {
    const out = filterSdpCandidates(sdp, ['127.0.0.1']);
    expect(out).not.toContain('10.0.0.5');
    expect(out).not.toContain('fd00::1');
    expect(out.match(/a=candidate:/g)!.length).toBe(2);
    expect(out).toContain('a=rtpmap:96 VP8/90000');
    expect(out.includes('\r\n')).toBe(true);
    expect(filterSdpCandidates(sdp, null)).toBe(sdp);
  });

  it('sets b=AS in video sections only, replacing an existing one', () => {
    const out = setVideoBandwidth(sdp, 1_500_000);
    expect(out.match(/b=AS:/g)!.length).toBe(1);
    expect(out).toContain('m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\nb=AS:1500');
    expect(sdpMediaKinds(out)).toEqual(['audio', 'video']);
  });
});
