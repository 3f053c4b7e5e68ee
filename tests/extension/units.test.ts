/**
 * Pure parts of the avatar camera: which getUserMedia calls the extension serves (planGetUserMedia), which frames may
 * use it (frameVerdict) and how a site is named (siteOrigin), which kinds an offer receives (offeredKinds), how a
 * viewer link is read (parseAvatarLink), and the WHIP module's token check and ICE-server Link headers.
 */
import { describe, expect, it } from 'vitest';
import { parseAvatarLink, whepEndpoint } from '../../client/lib/avatarStream.js';
import { ClientError } from '../../client/lib/errors.js';
import {
  AVATAR_CAMERA,
  AVATAR_MICROPHONE,
  frameVerdict,
  namedDeviceIds,
  offeredKinds,
  planGetUserMedia,
  siteOrigin,
  type ApprovedSite,
} from '../../client/extension/src/protocol.js';
import { signToken } from '../../server/auth/tokens.js';
import { AppError } from '../../server/errors.js';
import { assertDecodableVideo, authorize, iceServerLinks, offeredVideoCodecs } from '../../server/http/whip.js';

const CAM = AVATAR_CAMERA.deviceId;
const MIC = AVATAR_MICROPHONE.deviceId;

describe('planGetUserMedia', () => {
  it('reads device ids from every constraint shape', () => {
    expect(namedDeviceIds(true)).toEqual([]);
    expect(namedDeviceIds(undefined)).toEqual([]);
    expect(namedDeviceIds({ deviceId: 'a' })).toEqual(['a']);
    expect(namedDeviceIds({ deviceId: ['a', 'b'] })).toEqual(['a', 'b']);
    expect(namedDeviceIds({ deviceId: { exact: 'a' } })).toEqual(['a']);
    expect(namedDeviceIds({ deviceId: { ideal: ['a', 'b'] } })).toEqual(['a', 'b']);
    expect(namedDeviceIds({ width: 640 })).toEqual([]);
  });

  it('leaves every other request to the browser, unchanged', () => {
    const c = { video: { deviceId: { exact: 'real-cam' } }, audio: true };
    expect(planGetUserMedia(c)).toEqual({ avatarVideo: false, avatarAudio: false, real: c });
    expect(planGetUserMedia({ video: true })).toEqual({
      avatarVideo: false,
      avatarAudio: false,
      real: { video: true },
    });
  });

  it('serves the avatar camera, with the avatar voice for an unspecified microphone', () => {
    expect(planGetUserMedia({ video: { deviceId: { exact: CAM } } })).toEqual({
      avatarVideo: true,
      avatarAudio: false,
      real: null,
    });
    expect(planGetUserMedia({ video: { deviceId: CAM }, audio: true })).toEqual({
      avatarVideo: true,
      avatarAudio: true,
      real: null,
    });
    expect(planGetUserMedia({ video: { deviceId: CAM }, audio: { echoCancellation: true } })).toMatchObject({
      avatarAudio: true,
      real: null,
    });
  });

  it('mixes the avatar with a real device the page names', () => {
    const audio = { deviceId: { exact: 'real-mic' } };
    expect(planGetUserMedia({ video: { deviceId: CAM }, audio })).toEqual({
      avatarVideo: true,
      avatarAudio: false,
      real: { audio },
    });
    expect(planGetUserMedia({ video: true, audio: { deviceId: MIC } })).toEqual({
      avatarVideo: false,
      avatarAudio: true,
      real: { video: true },
    });
    expect(planGetUserMedia({ audio: { deviceId: { exact: MIC } } })).toEqual({
      avatarVideo: false,
      avatarAudio: true,
      real: null,
    });
  });
});

describe('which frames may use the avatar', () => {
  const sites: ApprovedSite[] = [
    { origin: 'https://meet.example', frames: false, approvedAt: 1 },
    { origin: 'https://embed.example:8443', frames: true, approvedAt: 2 },
  ];
  const v = (origin: string | undefined, frameId: number | undefined, topOrigin: string | null = null): string =>
    frameVerdict(sites, { origin, frameId, topOrigin });

  it('serves top frames of approved sites only', () => {
    expect(v('https://meet.example', 0)).toBe('allowed');
    expect(v('https://evil.example', 0)).toBe('not-approved');
    // Same host, another scheme or port: another site.
    expect(v('http://meet.example', 0)).toBe('not-approved');
    expect(v('https://meet.example:444', 0)).toBe('not-approved');
    expect(v(undefined, 0)).toBe('not-approved');
    expect(v('null', 0)).toBe('not-approved');
  });

  it('serves a subframe only inside its own site, or when approved for frames', () => {
    expect(v('https://meet.example', 3, 'https://meet.example')).toBe('allowed');
    expect(v('https://meet.example', 3, 'https://evil.example')).toBe('frame-not-approved');
    expect(v('https://meet.example', 3, null)).toBe('frame-not-approved');
    expect(v('https://meet.example', undefined, 'https://meet.example')).toBe('allowed');
    expect(v('https://evil.example', 3, 'https://meet.example')).toBe('not-approved');
    expect(v('https://embed.example:8443', 5, 'https://anything.example')).toBe('allowed');
  });

  it('names a site by its origin, http(s) only', () => {
    expect(siteOrigin('https://meet.example/room/42?x=1')).toBe('https://meet.example');
    expect(siteOrigin('  meet.example ')).toBe('https://meet.example');
    expect(siteOrigin('http://127.0.0.1:8080/')).toBe('http://127.0.0.1:8080');
    expect(siteOrigin('HTTPS://Meet.Example:443')).toBe('https://meet.example');
    for (const bad of ['javascript:alert(1)', 'file:///etc/passwd', 'chrome-extension://abc/', 'http://', ''])
      expect(
        clientCode(() => siteOrigin(bad)),
        bad,
      ).toBe('BAD_REQUEST');
  });

  it('reads the kinds an offer receives from its m-lines', () => {
    expect(offeredKinds('v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n')).toEqual({
      video: true,
      audio: true,
    });
    expect(offeredKinds('v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n')).toEqual({ video: false, audio: true });
    expect(offeredKinds('v=0\r\na=x:m=video 9\r\n')).toEqual({ video: false, audio: false });
  });
});

function clientCode(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    return err instanceof ClientError ? err.code : 'not a ClientError';
  }
  return 'no error';
}

describe('parseAvatarLink', () => {
  it('reads the studio viewer link and the performer link', () => {
    expect(parseAvatarLink('https://avatar.example:8443/view?room=R1&token=a.b')).toEqual({
      server: 'https://avatar.example:8443',
      room: 'R1',
      token: 'a.b',
    });
    expect(parseAvatarLink('  http://127.0.0.1:8080/?room=R%2F2&token=t.s  ')).toEqual({
      server: 'http://127.0.0.1:8080',
      room: 'R/2',
      token: 't.s',
    });
    expect(parseAvatarLink({ server: 'https://a.example/some/path', room: 'R', token: 'T' }).server).toBe(
      'https://a.example',
    );
    expect(whepEndpoint({ server: 'http://h:1', room: 'R/2', token: 't' })).toBe('http://h:1/whep/R%2F2');
  });

  it('refuses links without room or token, and non-http links', () => {
    for (const bad of [
      'nonsense',
      'https://a.example/view?room=R',
      'https://a.example/view?token=T',
      'ftp://a.example/?room=R&token=T',
    ]) {
      expect(
        clientCode(() => parseAvatarLink(bad, 'http://base.example/')),
        bad,
      ).toBe('BAD_REQUEST');
    }
    expect(clientCode(() => parseAvatarLink({ server: 'https://a.example', room: '', token: 'T' }))).toBe(
      'BAD_REQUEST',
    );
  });
});

describe('WHIP token check and ICE Link headers', () => {
  const secret = 'unit-secret';
  const tok = (room: string, role: 'performer' | 'viewer', exp = Date.now() + 60_000): string =>
    signToken({ room, role, exp }, secret);
  const code = (f: () => unknown): string => {
    try {
      f();
    } catch (err) {
      return err instanceof AppError ? err.code : 'not an AppError';
    }
    return 'no error';
  };

  it('takes the room token of the right role only', () => {
    expect(authorize(`Bearer ${tok('R', 'performer')}`, 'R', ['performer'], secret).role).toBe('performer');
    expect(authorize(`bearer ${tok('R', 'viewer')}`, 'R', ['performer', 'viewer'], secret).role).toBe('viewer');
    expect(code(() => authorize(undefined, 'R', ['performer'], secret))).toBe('TOKEN_INVALID');
    expect(code(() => authorize(`Basic ${tok('R', 'performer')}`, 'R', ['performer'], secret))).toBe('TOKEN_INVALID');
    expect(code(() => authorize(`Bearer ${tok('R', 'performer')}`, 'R', ['performer'], 'other-secret'))).toBe(
      'TOKEN_INVALID',
    );
    expect(code(() => authorize(`Bearer ${tok('R', 'performer', Date.now() - 1)}`, 'R', ['performer'], secret))).toBe(
      'TOKEN_EXPIRED',
    );
    expect(code(() => authorize(`Bearer ${tok('R', 'viewer')}`, 'R', ['performer'], secret))).toBe('FORBIDDEN');
    expect(code(() => authorize(`Bearer ${tok('S', 'performer')}`, 'R', ['performer'], secret))).toBe('FORBIDDEN');
  });

  it('writes RFC 9725 ice-server links', () => {
    expect(iceServerLinks([])).toEqual([]);
    expect(
      iceServerLinks([
        { urls: 'stun:stun.example.net' },
        { urls: ['turn:turn.example.net?transport=udp', 'turns:turn.example.net'], username: 'u"1', credential: 'p' },
      ]),
    ).toEqual([
      '<stun:stun.example.net>; rel="ice-server"',
      '<turn:turn.example.net?transport=udp>; rel="ice-server"; username="u\\"1"; credential="p"; credential-type="password"',
      '<turns:turn.example.net>; rel="ice-server"; username="u\\"1"; credential="p"; credential-type="password"',
    ]);
  });

  it('reads the offered video codecs and refuses video the server cannot decode', () => {
    const sdp = (video: string[]): string =>
      [
        'v=0',
        'm=audio 9 UDP/TLS/RTP/SAVPF 111',
        'a=rtpmap:111 opus/48000/2',
        `m=video 9 UDP/TLS/RTP/SAVPF ${video.map((_, i) => 96 + i).join(' ')}`,
        ...video.map((c, i) => `a=rtpmap:${96 + i} ${c}/90000`),
        '',
      ].join('\r\n');
    expect(offeredVideoCodecs(sdp(['VP8', 'rtx']))).toEqual(['VP8', 'RTX']);
    expect(offeredVideoCodecs(sdp(['H264', 'H265', 'AV1']))).toEqual(['H264', 'H265', 'AV1']);
    expect(offeredVideoCodecs('v=0\r\nm=audio 9 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n')).toEqual([]);
    expect(() => assertDecodableVideo(sdp(['H264', 'AV1']))).not.toThrow();
    expect(() => assertDecodableVideo(sdp(['vp9']))).not.toThrow();
    expect(code(() => assertDecodableVideo(sdp(['H264', 'rtx', 'H265'])))).toBe('INVALID_SDP');
  });
});
