/**
 * Viewer latency modes, the pure part (client/lib/latency.ts): the link parameter, each mode's receive tuning, and
 * the SDP rewrite that puts the audio in a stream of its own (checked on a real answer shape, and that a real
 * browser takes it: tests/e2e/latencyMode.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { ClientError } from '../../client/lib/errors.js';
import {
  audioStreamId,
  DEFAULT_LATENCY_MODE,
  parseLatencyMode,
  receiveTuning,
  separateAudioStream,
} from '../../client/lib/latency.js';

const ANSWER = [
  'v=0',
  'o=- 1 2 IN IP4 127.0.0.1',
  's=-',
  't=0 0',
  'a=group:BUNDLE 0 1',
  'a=msid-semantic: WMS stream-1',
  'm=video 9 UDP/TLS/RTP/SAVPF 96',
  'a=mid:0',
  'a=sendonly',
  'a=msid:stream-1 video-track',
  'a=ssrc:111 cname:c',
  'a=ssrc:111 msid:stream-1 video-track',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111',
  'a=mid:1',
  'a=sendonly',
  'a=msid:stream-1 audio-track',
  'a=ssrc:222 cname:c',
  'a=ssrc:222 msid:stream-1 audio-track',
  '',
].join('\r\n');

describe('latency modes', () => {
  it('parses the link parameter: low by default, low or smooth, anything else BAD_REQUEST', () => {
    expect(DEFAULT_LATENCY_MODE).toBe('low');
    expect(parseLatencyMode(null)).toBe('low');
    expect(parseLatencyMode('')).toBe('low');
    expect(parseLatencyMode('low')).toBe('low');
    expect(parseLatencyMode('smooth')).toBe('smooth');
    for (const bad of ['LOW', 'fast', 'smooth ', '0']) {
      let err: unknown;
      try {
        parseLatencyMode(bad);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ClientError);
      expect((err as ClientError).code).toBe('BAD_REQUEST');
      expect((err as ClientError).message).toContain(`"${bad}"`);
    }
  });

  it('tunes low for delay (no lip-sync, video target 0, WebCodecs path) and smooth as the browser does', () => {
    expect(receiveTuning('low')).toEqual({
      lipSync: false,
      videoJitterBufferTargetMs: 0,
      audioJitterBufferTargetMs: undefined,
      fastVideo: true,
    });
    expect(receiveTuning('smooth')).toEqual({
      lipSync: true,
      videoJitterBufferTargetMs: undefined,
      audioJitterBufferTargetMs: undefined,
      fastVideo: false,
    });
    // buffer=MS (diagnostic) sets both targets and keeps the video in the browser's path, where it applies.
    expect(receiveTuning('low', 120)).toEqual({
      lipSync: false,
      videoJitterBufferTargetMs: 120,
      audioJitterBufferTargetMs: 120,
      fastVideo: false,
    });
  });

  it('moves only the audio section to a stream of its own (a=msid and a=ssrc msid lines)', () => {
    const out = separateAudioStream(ANSWER);
    const lines = out.split('\r\n');
    expect(lines).toContain('a=msid:stream-1 video-track');
    expect(lines).toContain('a=ssrc:111 msid:stream-1 video-track');
    expect(lines).toContain(`a=msid:${audioStreamId('stream-1')} audio-track`);
    expect(lines).toContain(`a=ssrc:222 msid:${audioStreamId('stream-1')} audio-track`);
    expect(audioStreamId('stream-1')).not.toBe('stream-1');
    // Nothing else changes: same line count, same line endings, every other line as it was.
    expect(lines.length).toBe(ANSWER.split('\r\n').length);
    const changed = lines.filter((l, i) => l !== ANSWER.split('\r\n')[i]);
    expect(changed).toHaveLength(2);
    // Idempotent enough for renegotiation: applied twice it still separates (a new, distinct id).
    expect(separateAudioStream(out)).not.toContain('a=msid:stream-1 audio-track');
  });

  it('leaves audio without a stream (msid "-") and LF-only SDPs intact', () => {
    const noStream = ANSWER.replace('a=msid:stream-1 audio-track', 'a=msid:- audio-track').replace(/\r\n/g, '\n');
    const out = separateAudioStream(noStream);
    expect(out).toContain('a=msid:- audio-track');
    expect(out).not.toContain('\r\n');
  });
});
