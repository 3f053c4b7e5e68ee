/**
 * The private-mode wire format (server/types/expressionWire.ts): round trips within the quantisation bounds, and
 * every refusal code from the stateless decoder and from ExpressionStream (order, future, resync).
 */
import { describe, expect, it } from 'vitest';
import type { FaceTrack } from '../../server/vision/types.js';
import {
  ANGLE_STEP,
  createDecodedExpression,
  createDecodedStreamExpression,
  decodeExpression,
  encodeExpression,
  EXPRESSION_REFUSALS,
  ExpressionStream,
  FACE_BYTES,
  HEADER_BYTES,
  LANDMARK_STEP,
  RATIO_STEP,
  type ExpressionFrame,
  type ExpressionRefusal,
} from '../../server/types/expressionWire.js';

/** A deterministic pseudo-random face in a 640x480 frame. */
function face(seed: number): FaceTrack {
  let s = seed >>> 0 || 1;
  const rnd = (): number => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
  const landmarks = new Float32Array(136);
  const rawLandmarks = new Int32Array(136);
  for (let i = 0; i < 136; i += 2) {
    landmarks[i] = 200 + 240 * rnd();
    landmarks[i + 1] = 120 + 260 * rnd();
    rawLandmarks[i] = Math.round(landmarks[i]! + 6 * (rnd() - 0.5));
    rawLandmarks[i + 1] = Math.round(landmarks[i + 1]! + 6 * (rnd() - 0.5));
  }
  return {
    box: { l: 190, t: 110, r: 450, b: 390 },
    landmarks,
    rawLandmarks,
    pose: {
      yaw: 60 * (rnd() - 0.5),
      pitch: 40 * (rnd() - 0.5),
      roll: 30 * (rnd() - 0.5),
      tx: 40 * (rnd() - 0.5),
      ty: 30 * (rnd() - 0.5),
      tz: 500 + 300 * rnd(),
    },
    eyes: { left: 0.35 * rnd(), right: 0.35 * rnd() },
    mouth: 0.6 * rnd(),
    gaze: { x: 2 * rnd() - 1, y: 2 * rnd() - 1 },
    vergence: { x: 0.6 * rnd() - 0.3, y: 0.6 * rnd() - 0.3 },
    confidence: rnd(),
  };
}

const NOW = 1_765_000_000_000;
/** Every code the decoder or a stream answered in these tests (the last test checks that all were). */
const seen = new Set<ExpressionRefusal | null>();

function frame(seq: number, track: FaceTrack | null, captureMs = NOW + 33 * seq): ExpressionFrame {
  return { seq, captureMs, width: 640, height: 480, track };
}

function encoded(f: ExpressionFrame): Uint8Array {
  return encodeExpression(f).slice();
}

function patch(msg: Uint8Array, edit: (dv: DataView) => void): Uint8Array {
  const m = msg.slice();
  edit(new DataView(m.buffer));
  return m;
}

describe('expression wire format', () => {
  it('round-trips a frame without a face in HEADER_BYTES', () => {
    const msg = encoded(frame(7, null));
    expect(msg.length).toBe(HEADER_BYTES);
    const out = createDecodedExpression();
    expect(decodeExpression(msg, out)).toBeNull();
    expect(out).toMatchObject({ seq: 7, captureMs: NOW + 231, width: 640, height: 480, track: null });
  });

  it('round-trips faces within the quantisation bounds, in FACE_BYTES', () => {
    const out = createDecodedExpression();
    for (let k = 1; k <= 50; k++) {
      const t = face(k);
      const msg = encoded(frame(k, t));
      expect(msg.length).toBe(FACE_BYTES);
      expect(decodeExpression(msg, out)).toBeNull();
      const d = out.track!;
      expect(d).toBe(out.face);
      expect(out.seq).toBe(k);
      expect(out.captureMs).toBe(NOW + 33 * k);
      expect(d.box).toEqual(t.box);
      let lm = 0;
      for (let i = 0; i < 136; i++) lm = Math.max(lm, Math.abs(d.landmarks[i]! - t.landmarks[i]!));
      expect(lm).toBeLessThanOrEqual(LANDMARK_STEP / 2 + 1e-4);
      expect(Array.from(d.rawLandmarks)).toEqual(Array.from(t.rawLandmarks));
      for (const a of ['yaw', 'pitch', 'roll'] as const)
        expect(Math.abs(d.pose[a] - t.pose[a])).toBeLessThanOrEqual(ANGLE_STEP / 2 + 1e-9);
      for (const a of ['tx', 'ty', 'tz'] as const) expect(d.pose[a]).toBeCloseTo(t.pose[a], 3);
      const ratio = RATIO_STEP / 2 + 1e-9;
      expect(Math.abs(d.eyes.left - t.eyes.left)).toBeLessThanOrEqual(ratio);
      expect(Math.abs(d.eyes.right - t.eyes.right)).toBeLessThanOrEqual(ratio);
      expect(Math.abs(d.mouth - t.mouth)).toBeLessThanOrEqual(ratio);
      expect(Math.abs(d.gaze.x - t.gaze.x)).toBeLessThanOrEqual(ratio);
      expect(Math.abs(d.gaze.y - t.gaze.y)).toBeLessThanOrEqual(ratio);
      expect(Math.abs(d.vergence!.x - t.vergence!.x)).toBeLessThanOrEqual(ratio);
      expect(Math.abs(d.vergence!.y - t.vergence!.y)).toBeLessThanOrEqual(ratio);
      expect(Math.abs(d.confidence - t.confidence)).toBeLessThanOrEqual(1 / 510 + 1e-9);
    }
  });

  it('the encoder refuses non-finite values and bad sizes with a TypeError', () => {
    const t = face(3);
    t.pose.yaw = NaN;
    expect(() => encodeExpression(frame(1, t))).toThrow(TypeError);
    const u = face(4);
    u.pose.tz = Infinity;
    expect(() => encodeExpression(frame(1, u))).toThrow(TypeError);
    expect(() => encodeExpression({ ...frame(1, null), width: 8 })).toThrow(TypeError);
    expect(() => encodeExpression(frame(1, null, NaN))).toThrow(TypeError);
    expect(() => encodeExpression(frame(1, face(5)), new Uint8Array(100))).toThrow(TypeError);
  });

  it('refuses every malformed message with its code', () => {
    const good = encoded(frame(1, face(9)));
    const none = encoded(frame(1, null));
    const cases: [ExpressionRefusal, Uint8Array][] = [
      ['bad-length', new Uint8Array(0)],
      ['bad-length', none.subarray(0, HEADER_BYTES - 1)],
      ['bad-length', good.subarray(0, FACE_BYTES - 1)],
      ['bad-length', new Uint8Array([...good, 0])],
      ['bad-length', patch(none, (dv) => dv.setUint8(1, 1))],
      ['bad-version', patch(good, (dv) => dv.setUint8(0, 2))],
      ['bad-flags', patch(good, (dv) => dv.setUint8(1, 3))],
      ['bad-flags', patch(good, (dv) => dv.setUint8(19, 1))],
      ['bad-frame-size', patch(good, (dv) => dv.setUint16(2, 8, true))],
      ['bad-frame-size', patch(none, (dv) => dv.setUint16(4, 5000, true))],
      ['not-finite', patch(none, (dv) => dv.setFloat64(10, NaN, true))],
      ['not-finite', patch(good, (dv) => dv.setFloat64(10, Infinity, true))],
      ['not-finite', patch(good, (dv) => dv.setFloat32(578, NaN, true))],
      ['not-finite', patch(good, (dv) => dv.setFloat32(586, -Infinity, true))],
      ['out-of-range', patch(none, (dv) => dv.setFloat64(10, -5, true))],
      ['out-of-range', patch(good, (dv) => dv.setFloat32(586, 1e7, true))],
      // A landmark three frame widths out, a raw one too, an inverted box.
      ['out-of-range', patch(good, (dv) => dv.setInt16(28, 3 * 640 * 8, true))],
      ['out-of-range', patch(good, (dv) => dv.setInt16(302, -3 * 480, true))],
      ['out-of-range', patch(good, (dv) => dv.setInt16(24, 100, true))],
      ['out-of-range', patch(good, (dv) => dv.setInt16(572, 18_100, true))],
      ['out-of-range', patch(good, (dv) => dv.setUint16(590, 50_000, true))],
      ['out-of-range', patch(good, (dv) => dv.setInt16(598, -31_000, true))],
    ];
    const out = createDecodedExpression();
    for (const [code, msg] of cases) {
      const got = decodeExpression(msg, out);
      seen.add(got);
      expect([code, got]).toEqual([code, code]);
    }
    // The same messages through a stream are refused the same way.
    const stream = new ExpressionStream();
    const so = createDecodedStreamExpression();
    for (const [code, msg] of cases) expect(stream.accept(msg, NOW, so)).toBe(code);
  });

  it('a stream drops late, repeated and future messages and maps capture times onto its clock', () => {
    const stream = new ExpressionStream({ maxAheadMs: 250, maxSkewMs: 60_000 });
    const out = createDecodedStreamExpression();
    const sender = NOW - 5000; // the sender's clock runs 5 s behind
    const send = (seq: number, capture: number, arrive: number): ExpressionRefusal | null => {
      const got = stream.accept(encoded(frame(seq, face(seq), sender + capture)), NOW + arrive, out);
      seen.add(got);
      return got;
    };
    expect(send(1, 0, 20)).toBeNull();
    expect(out.localMs).toBeCloseTo(NOW + 20, 6);
    expect(send(3, 66, 80)).toBeNull();
    // Transit 14 ms < 20 ms: the offset estimate follows the fastest message.
    expect(out.localMs).toBeCloseTo(NOW + 80, 6);
    expect(stream.offsetMs).toBeCloseTo(5014, 6);
    // Seq 2 arrives after seq 3 (unordered channel): late, dropped.
    expect(send(2, 33, 90)).toBe('out-of-order');
    // A repeat of seq 3, and a newer seq with an older capture time.
    expect(send(3, 66, 95)).toBe('out-of-order');
    expect(send(4, 50, 100)).toBe('out-of-order');
    // Captured "later" than it arrived by far more than the clocks' learnt offset allows: from the future.
    expect(send(5, 2000, 110)).toBe('future');
    // Ahead of the receiver's wall clock by more than any skew: future even as a first message.
    const fresh = new ExpressionStream();
    expect(fresh.accept(encoded(frame(1, null, NOW + 120_000)), NOW, out)).toBe('future');
    // The stream keeps going.
    expect(send(6, 132, 150)).toBeNull();
    expect(out.seq).toBe(6);
    expect(out.localMs).toBeGreaterThan(NOW + 80);
  });

  it('a stream starts afresh after a run of refusals, so one bad timestamp cannot stop it', () => {
    const stream = new ExpressionStream({ resyncAfter: 5 });
    const out = createDecodedStreamExpression();
    // A sender whose clock jumped forward 10 s, then back.
    expect(stream.accept(encoded(frame(100, null, NOW + 10_000)), NOW, out)).toBeNull();
    const before = out.localMs;
    let refused = 0;
    for (let k = 1; k <= 5; k++)
      if (stream.accept(encoded(frame(100 + k, null, NOW + 33 * k)), NOW + 33 * k, out) === 'out-of-order') refused++;
    expect(refused).toBe(5);
    expect(stream.accept(encoded(frame(200, null, NOW + 300)), NOW + 300, out)).toBeNull();
    expect(out.localMs).toBeGreaterThan(before);
  });

  it('every refusal code was answered by the tests above', () => {
    seen.delete(null);
    expect([...seen].sort()).toEqual([...EXPRESSION_REFUSALS].sort());
  });
});
