/**
 * Fuzz of private mode's expression channel: a real wrtc performer publishes in private mode and sends valid
 * expression messages (server/types/expressionWire.ts) interleaved with mutated ones (random bytes, truncations,
 * bit flips, NaN and infinities, replays, timestamps from the future, wrong versions and flags, text) over its data
 * channel. The server must refuse every bad one with a counted reason and keep rendering the good ones.
 */
import type { JoinResponse, Result, SdpResponse } from '../../server/types/protocol.js';
import { encodeExpression, FACE_BYTES, type ExpressionFrame } from '../../server/types/expressionWire.js';
import type { FaceTrack } from '../../server/vision/types.js';
import { connectClient, request } from '../../tests/helpers/socket.js';
import { PrivatePerformerClient } from '../../tests/media/rtcClients.js';
import { openRoom } from './loopback.js';

export interface ChannelFuzzTarget {
  url: string;
  apiKey: string;
  portraitFile: string;
}

export interface ChannelFuzzReport {
  messages: number;
  valid_sent: number;
  mutations: Record<string, number>;
  /** Refusals the server counted (avatar_expression_messages_refused_total deltas), by reason. */
  refused_by_reason: Record<string, number>;
  refused_total: number;
  /** Synthesized frames the server counted meanwhile (avatar_frames_total delta). */
  frames_rendered: number;
  seconds: number;
}

const W = 640;
const H = 480;

/** A plausible face (an oval of 68 points in the middle of the frame): valid on the wire. */
function syntheticFace(k: number): FaceTrack {
  const landmarks = new Float32Array(136);
  const rawLandmarks = new Int32Array(136);
  for (let i = 0; i < 68; i++) {
    const a = (2 * Math.PI * i) / 68;
    landmarks[2 * i] = 320 + 90 * Math.cos(a) + Math.sin(k / 10);
    landmarks[2 * i + 1] = 240 + 120 * Math.sin(a);
    rawLandmarks[2 * i] = Math.round(landmarks[2 * i]!);
    rawLandmarks[2 * i + 1] = Math.round(landmarks[2 * i + 1]!);
  }
  return {
    box: { l: 220, t: 110, r: 420, b: 370 },
    landmarks,
    rawLandmarks,
    pose: { yaw: 5 * Math.sin(k / 20), pitch: 0, roll: 0, tx: 0, ty: 0, tz: 600 },
    eyes: { left: 0.3, right: 0.3 },
    mouth: 0.2 + 0.2 * Math.sin(k / 7),
    gaze: { x: 0, y: 0 },
    confidence: 0.9,
  };
}

/** Reads `name{reason="..."} value` lines (or the bare `name value`) from the metrics text. */
function metric(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  const re = new RegExp(`^${name}(?:\\{reason="([^"]+)"\\})? (\\S+)$`, 'gm');
  for (const m of text.matchAll(re)) out.set(m[1] ?? '', Number(m[2]));
  return out;
}

export async function fuzzExpressionChannel(
  target: ChannelFuzzTarget,
  opts: { count: number; seed: number },
): Promise<ChannelFuzzReport> {
  let s = opts.seed >>> 0 || 1;
  const rnd = (): number => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
  const int = (n: number): number => Math.floor(rnd() * n);
  const links = await openRoom(target.url, target.apiKey, target.portraitFile);
  const socket = await connectClient(target.url, 15_000);
  const performer = new PrivatePerformerClient();
  try {
    const joined: Result<JoinResponse> = await request(socket, 'join', { token: links.performerToken }, 15_000);
    if (!joined.ok) throw new Error(`channel fuzz: join refused: ${joined.error.code}`);
    const pub: Result<SdpResponse> = await request(
      socket,
      'publish',
      { sdp: await performer.offer(), mode: 'private' },
      30_000,
    );
    if (!pub.ok) throw new Error(`channel fuzz: private publish refused: ${pub.error.code}`);
    await performer.accept(pub.data.sdp);
    const t0 = performance.now();
    while (performance.now() - t0 < 20_000 && performer.channel.readyState !== 'open')
      await new Promise((r) => setTimeout(r, 20));
    if (performer.channel.readyState !== 'open') throw new Error('channel fuzz: the expression channel did not open');
    performer.startAudio();

    const before = await (await fetch(`${target.url}/metrics`)).text();
    const mutations: Record<string, number> = {};
    let seq = 0;
    let last: Uint8Array<ArrayBuffer> = new Uint8Array(0);
    let valid = 0;
    const clock = (): number => performance.timeOrigin + performance.now();
    const encode = (f: Partial<ExpressionFrame>): Uint8Array<ArrayBuffer> =>
      encodeExpression({
        seq: seq++,
        captureMs: clock(),
        width: W,
        height: H,
        track: syntheticFace(seq),
        ...f,
      }).slice();
    const start = performance.now();
    for (let i = 0; i < opts.count; i++) {
      let msg: Uint8Array<ArrayBuffer> | string;
      if (i % 3 === 0) {
        msg = encode({});
        last = msg;
        valid++;
      } else {
        const base = encode({});
        const dv = new DataView(base.buffer);
        const kinds = [
          'random-bytes',
          'truncate',
          'extend',
          'bit-flip',
          'nan',
          'infinity',
          'replay',
          'future',
          'zero-time',
          'version',
          'flags',
          'frame-size',
          'text',
          'far-point',
        ] as const;
        const kind = kinds[int(kinds.length)]!;
        mutations[kind] = (mutations[kind] ?? 0) + 1;
        switch (kind) {
          case 'random-bytes':
            msg = Uint8Array.from({ length: int(2 * FACE_BYTES) }, () => int(256));
            break;
          case 'truncate':
            msg = base.slice(0, int(base.length));
            break;
          case 'extend':
            msg = Uint8Array.from([...base, ...Array.from({ length: 1 + int(64) }, () => int(256))]);
            break;
          case 'bit-flip':
            for (let k = 0, n = 1 + int(8); k < n; k++) base[int(base.length)]! ^= 1 << int(8);
            msg = base;
            break;
          case 'nan':
            dv.setFloat64(10, NaN, true);
            msg = base;
            break;
          case 'infinity':
            dv.setFloat32(578 + 4 * int(3), rnd() < 0.5 ? Infinity : -Infinity, true);
            msg = base;
            break;
          case 'replay':
            msg = last;
            break;
          case 'future':
            dv.setFloat64(10, clock() + 1000 + rnd() * 1e9, true);
            msg = base;
            break;
          case 'zero-time':
            dv.setFloat64(10, rnd() < 0.5 ? 0 : -rnd() * 1e12, true);
            msg = base;
            break;
          case 'version':
            dv.setUint8(0, 2 + int(254));
            msg = base;
            break;
          case 'flags':
            dv.setUint8(1, 2 + int(254));
            msg = base;
            break;
          case 'frame-size':
            dv.setUint16(2 + 2 * int(2), rnd() < 0.5 ? int(16) : 4097 + int(60000), true);
            msg = base;
            break;
          case 'text':
            msg = 'x'.repeat(int(1000));
            break;
          case 'far-point':
            dv.setInt16(28 + 2 * int(136), rnd() < 0.5 ? 32767 : -32768, true);
            msg = base;
            break;
        }
      }
      if (performer.channel.readyState !== 'open') throw new Error('channel fuzz: the server closed the channel');
      if (typeof msg === 'string') performer.channel.send(msg);
      else performer.channel.send(msg);
      // ~30 messages per 33 ms: bursts far above a camera's rate, paced so that SCTP's buffers never overflow.
      if (i % 30 === 29) await new Promise((r) => setTimeout(r, 33));
    }
    await new Promise((r) => setTimeout(r, 1000));
    const seconds = (performance.now() - start) / 1000;
    const after = await (await fetch(`${target.url}/metrics`)).text();
    const name = 'avatar_expression_messages_refused_total';
    const b = metric(before, name);
    const refused: Record<string, number> = {};
    for (const [reason, v] of metric(after, name)) refused[reason] = v - (b.get(reason) ?? 0);
    const frames =
      (metric(after, 'avatar_frames_total').get('') ?? 0) - (metric(before, 'avatar_frames_total').get('') ?? 0);
    return {
      messages: opts.count,
      valid_sent: valid,
      mutations,
      refused_by_reason: refused,
      refused_total: Object.values(refused).reduce((x, y) => x + y, 0),
      frames_rendered: frames,
      seconds: Math.round(seconds * 10) / 10,
    };
  } finally {
    performer.close();
    socket.disconnect();
    await fetch(`${target.url}/api/rooms/${links.roomId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${target.apiKey}` },
    }).then(
      (r) => r.arrayBuffer(),
      () => null,
    );
  }
}
