import { describe, expect, it } from 'vitest';
import { AppError } from '../../server/errors.js';
import {
  validateEmpty,
  validateIce,
  validateJoin,
  validatePublish,
  validateSetPortrait,
  validateSetSettings,
  validateSfuConnect,
  validateView,
} from '../../server/signaling/validate.js';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return err instanceof AppError ? err.code : `non-AppError: ${String(err)}`;
  }
  return 'no error';
}

export const OFFER_SDP = [
  'v=0',
  'o=- 4611731400430051336 2 IN IP4 127.0.0.1',
  's=-',
  't=0 0',
  'a=group:BUNDLE 0',
  'm=video 9 UDP/TLS/RTP/SAVPF 96',
  'c=IN IP4 0.0.0.0',
  'a=mid:0',
  'a=sendonly',
  'a=rtpmap:96 VP8/90000',
  '',
].join('\r\n');

describe('signaling validators', () => {
  it('accept well-formed payloads', () => {
    expect(validateJoin({ token: 'a.b' })).toEqual({ token: 'a.b' });
    expect(validatePublish({ sdp: { type: 'offer', sdp: OFFER_SDP } }).sdp.type).toBe('offer');
    // The publish mode: 'video' by default, 'private' when asked; anything else is refused.
    expect(validatePublish({ sdp: { type: 'offer', sdp: OFFER_SDP } }).mode).toBe('video');
    expect(validatePublish({ sdp: { type: 'offer', sdp: OFFER_SDP }, mode: 'private' }).mode).toBe('private');
    expect(code(() => validatePublish({ sdp: { type: 'offer', sdp: OFFER_SDP }, mode: 'audio' }))).toBe(
      'INVALID_MESSAGE',
    );
    expect(validateView({ sdp: { type: 'offer', sdp: OFFER_SDP.replace(/\r\n/g, '\n') } }).sdp.sdp).toContain(
      'm=video',
    );
    expect(validateIce({ target: 'publish', candidate: null })).toEqual({ target: 'publish', candidate: null });
    const c = {
      candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 54321 typ host generation 0',
      sdpMid: '0',
      sdpMLineIndex: 0,
    };
    expect(validateIce({ target: 'view', candidate: c }).candidate).toEqual(c);
    expect(validateIce({ target: 'view', candidate: { candidate: '', sdpMid: '0' } }).candidate?.candidate).toBe('');
    expect(validateSetPortrait({ portraitId: 'a'.repeat(32) })).toEqual({ portraitId: 'a'.repeat(32) });
    expect(
      validateSetSettings({ settings: { expressionStrength: 1.5, headMotion: false, poseMode: 'absolute' } }).settings,
    ).toEqual({
      expressionStrength: 1.5,
      headMotion: false,
      poseMode: 'absolute',
    });
    for (const steps of [0, 1, 2, 4, 8])
      expect(validateSetSettings({ settings: { steps } }).settings).toEqual({ steps });
    expect(validateEmpty(undefined, 'x')).toEqual({});
    expect(validateEmpty({}, 'x')).toEqual({});
    expect(
      validateSfuConnect({ transportId: 'a1b2-c3', dtlsParameters: { role: 'client', fingerprints: [] } }).transportId,
    ).toBe('a1b2-c3');
  });

  it('refuse non-objects, missing and unknown fields, and wrong types with INVALID_MESSAGE', () => {
    for (const v of [undefined, null, 'x', 42, [], () => 1])
      expect(code(() => validateJoin(v))).toBe('INVALID_MESSAGE');
    expect(code(() => validateJoin({ token: 5 }))).toBe('INVALID_MESSAGE');
    expect(code(() => validateJoin({ token: 'a', extra: 1 }))).toBe('INVALID_MESSAGE');
    expect(code(() => validateIce({ target: 'other', candidate: null }))).toBe('INVALID_MESSAGE');
    expect(code(() => validateIce({ target: 'view' }))).toBe('INVALID_MESSAGE');
    expect(code(() => validateIce({ target: 'view', candidate: { candidate: 'hello' } }))).toBe('INVALID_MESSAGE');
    expect(code(() => validateSetPortrait({ portraitId: '../../etc/passwd' }))).toBe('INVALID_MESSAGE');
    expect(code(() => validateSetSettings({ settings: { expressionStrength: 3 } }))).toBe('INVALID_MESSAGE');
    expect(code(() => validateSetSettings({ settings: { expressionStrength: Number.NaN } }))).toBe('INVALID_MESSAGE');
    expect(code(() => validateSetSettings({ settings: { headMotion: 'yes' } }))).toBe('INVALID_MESSAGE');
    expect(code(() => validateSetSettings({ settings: { wings: true } }))).toBe('INVALID_MESSAGE');
    // Refiner steps: an integer 0..8, nothing else.
    for (const steps of [-1, 9, 1.5, '2', null, true, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(code(() => validateSetSettings({ settings: { steps } }))).toBe('INVALID_MESSAGE');
    }
    expect(code(() => validateEmpty('x', 'recalibrate'))).toBe('INVALID_MESSAGE');
    expect(code(() => validateSfuConnect({ transportId: 'a', dtlsParameters: 'x' }))).toBe('INVALID_MESSAGE');
  });

  it('refuse garbage SDP with INVALID_SDP', () => {
    const cases: unknown[] = [
      'v=0',
      { type: 'answer', sdp: OFFER_SDP },
      { type: 'offer' },
      { type: 'offer', sdp: '' },
      { type: 'offer', sdp: 'hello world' },
      { type: 'offer', sdp: OFFER_SDP.replace('v=0', 'v=1') },
      { type: 'offer', sdp: OFFER_SDP.replace(/m=video.*\r\n/, '') },
      { type: 'offer', sdp: OFFER_SDP.replace('m=video 9', 'm=video nine') },
      { type: 'offer', sdp: OFFER_SDP + 'garbage line\r\n' },
      { type: 'offer', sdp: OFFER_SDP + 'a=x\0\r\n' },
      { type: 'offer', sdp: OFFER_SDP + 'a='.padEnd(70_000, 'x') + '\r\n' },
      { type: 'offer', sdp: OFFER_SDP, extra: 1 },
    ];
    for (const sdp of cases) expect(code(() => validatePublish({ sdp }))).toBe('INVALID_SDP');
  });
});
