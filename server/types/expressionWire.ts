/**
 * The expression wire format of private mode: what the performer's browser sends per frame over its RTCDataChannel
 * instead of video. One binary message per tracked frame carries what the default engine's driving path reads from a
 * FaceTrack (box, the 68 smoothed and raw landmarks, head pose, eye and mouth openness, gaze and vergence, confidence), quantised,
 * plus the capture timestamp, a sequence number, the tracked frame's size and whether a face was found. The 478-point
 * mesh is left out: the driving path does not read it (only prepare() reads the portrait's).
 *
 * Shared by the browser bundle and the server: pure, no Node or browser APIs, no imports but types.
 *
 * Layout (version 1, little-endian; offsets in bytes):
 * ```
 *   0 u8   version (1)
 *   1 u8   flags: bit 0 = a face was tracked; other bits 0
 *   2 u16  frame width, px          4 u16  frame height, px
 *   6 u32  sequence number (strictly increasing per channel)
 *  10 f64  capture time, ms (the sender's clock: performance.timeOrigin + performance.now())
 *  18      end of a "no face" message (HEADER_BYTES)
 *  18 u8   confidence × 255         19 u8   reserved (0)
 *  20 i16  box l, t, r, b (px)
 *  28 i16  × 136 landmarks, 1/8 px (error ≤ 1/16 px)
 * 300 i16  × 136 raw landmarks, px (the tracker's integer points)
 * 572 i16  yaw, pitch, roll, 1/100 degree
 * 578 f32  tx, ty, tz
 * 590 u16  eye openness left, right, mouth openness, 1/10000
 * 596 i16  gaze x, y, 1/10000
 * 600 i16  vergence x, y, 1/10000 (each eye's own part of the gaze; 0 from a tracker without one)
 * 604      end of a face message (FACE_BYTES)
 * ```
 *
 * Decoding validates everything and answers a refusal code instead of throwing (a bad message costs a counter, not an
 * exception, on the per-frame path). {@link ExpressionStream} adds what needs the channel's history: sequence and
 * timestamp order, and capture times from the future.
 */
import type { FaceTrack } from '../vision/types.js';

export const EXPRESSION_WIRE_VERSION = 1;
/** Bytes of a message without a face. */
export const HEADER_BYTES = 18;
/** Bytes of a message with a face. */
export const FACE_BYTES = 604;
/** The largest message (what a receive buffer must hold). */
export const MAX_EXPRESSION_BYTES = FACE_BYTES;
/** The tracked frame's sides must lie in this range, px. */
export const MIN_FRAME_SIDE = 16;
export const MAX_FRAME_SIDE = 4096;
/** Landmark quantisation step, px (round-trip error at most half of it). */
export const LANDMARK_STEP = 1 / 8;
/** Angle quantisation step, degrees. */
export const ANGLE_STEP = 1 / 100;
/** Openness and gaze quantisation step. */
export const RATIO_STEP = 1 / 10000;
/** Largest eye or mouth openness accepted (open eyes are ~0.3, a wide-open mouth ~0.6). */
export const MAX_OPENNESS = 4;
/** Largest |gaze| component accepted (the tracker's are about -1..1). */
export const MAX_GAZE = 3;
/** Largest |tx|, |ty|, |tz| accepted (units of the generic face, ~mm). */
export const MAX_TRANSLATION = 1e5;
/** Points may lie this many frame sides outside the frame (a face half out of the picture) and no further. */
const OUTSIDE = 1;

const FLAG_FACE = 1;
const P2 = 136;
const OFF = {
  version: 0,
  flags: 1,
  width: 2,
  height: 4,
  seq: 6,
  capture: 10,
  confidence: 18,
  reserved: 19,
  box: 20,
  landmarks: 28,
  raw: 300,
  angles: 572,
  translation: 578,
  openness: 590,
  gaze: 596,
  vergence: 600,
} as const;

/**
 * Why a message was refused (stable: they are metric labels and test expectations).
 * - bad-length: not HEADER_BYTES (no face) or FACE_BYTES (face) long, or not binary;
 * - bad-version: another wire version;
 * - bad-flags: unknown flag bits or a non-zero reserved byte;
 * - bad-frame-size: frame sides outside MIN_FRAME_SIDE..MAX_FRAME_SIDE;
 * - not-finite: NaN or an infinity (capture time, translation);
 * - out-of-range: a value no tracker makes (points far outside the frame, an inverted box, angles beyond ±180°,
 *   openness, gaze or translation beyond their bounds, a capture time ≤ 0);
 * - out-of-order: a sequence number or capture time not after the last accepted one (a late message);
 * - future: a capture time ahead of the receiver's clock (ExpressionStream).
 */
export type ExpressionRefusal =
  | 'bad-length'
  | 'bad-version'
  | 'bad-flags'
  | 'bad-frame-size'
  | 'not-finite'
  | 'out-of-range'
  | 'out-of-order'
  | 'future';

export const EXPRESSION_REFUSALS: readonly ExpressionRefusal[] = [
  'bad-length',
  'bad-version',
  'bad-flags',
  'bad-frame-size',
  'not-finite',
  'out-of-range',
  'out-of-order',
  'future',
];

/** One frame's expression, as encoded and as decoded. */
export interface ExpressionFrame {
  seq: number;
  /** Capture time on the sender's clock, ms. */
  captureMs: number;
  /** The tracked frame's size, px. */
  width: number;
  height: number;
  /** The tracked face, or null (no face in the frame). Its `mesh`, if any, is not sent. */
  track: FaceTrack | null;
}

/** A decode target whose track buffers are allocated once and reused for every message. */
export interface DecodedExpression extends ExpressionFrame {
  /** The reused track (valid when `track` is not null: then `track === face`). */
  readonly face: FaceTrack;
}

/** A decode target with its buffers allocated (one per receiver, reused). */
export function createDecodedExpression(): DecodedExpression {
  return {
    seq: 0,
    captureMs: 0,
    width: 0,
    height: 0,
    track: null,
    face: {
      box: { l: 0, t: 0, r: 0, b: 0 },
      landmarks: new Float32Array(P2),
      rawLandmarks: new Int32Array(P2),
      pose: { yaw: 0, pitch: 0, roll: 0, tx: 0, ty: 0, tz: 0 },
      eyes: { left: 0, right: 0 },
      mouth: 0,
      gaze: { x: 0, y: 0 },
      vergence: { x: 0, y: 0 },
      confidence: 0,
    },
  };
}

function q(v: number, step: number, lo: number, hi: number, what: string): number {
  if (!Number.isFinite(v)) throw new TypeError(`encodeExpression: ${what} is not finite`);
  return Math.min(hi, Math.max(lo, Math.round(v / step)));
}

/**
 * Encodes one frame into `out` (at least MAX_EXPRESSION_BYTES; default a new buffer) and returns the message (a view
 * on `out`). Values beyond what the format holds are clamped to its bounds; the decoder refuses those it does not
 * accept, so a sender sees such a frame dropped, never a crash.
 * @throws TypeError for a non-finite value, a frame size outside MIN..MAX_FRAME_SIDE, a bad seq or a short `out`.
 */
export function encodeExpression(
  f: ExpressionFrame,
  out: Uint8Array = new Uint8Array(MAX_EXPRESSION_BYTES),
): Uint8Array {
  const t = f.track;
  const n = t ? FACE_BYTES : HEADER_BYTES;
  if (out.length < n) throw new TypeError(`encodeExpression: out holds ${out.length} bytes, ${n} needed`);
  for (const [k, v] of [
    ['width', f.width],
    ['height', f.height],
  ] as const) {
    if (!Number.isInteger(v) || v < MIN_FRAME_SIDE || v > MAX_FRAME_SIDE)
      throw new TypeError(`encodeExpression: ${k} must be an integer in ${MIN_FRAME_SIDE}..${MAX_FRAME_SIDE}`);
  }
  if (!Number.isInteger(f.seq) || f.seq < 0 || f.seq > 0xffffffff)
    throw new TypeError('encodeExpression: seq must be a 32-bit unsigned integer');
  if (!Number.isFinite(f.captureMs) || f.captureMs <= 0)
    throw new TypeError('encodeExpression: captureMs must be a positive finite number');
  const dv = new DataView(out.buffer, out.byteOffset, n);
  dv.setUint8(OFF.version, EXPRESSION_WIRE_VERSION);
  dv.setUint8(OFF.flags, t ? FLAG_FACE : 0);
  dv.setUint16(OFF.width, f.width, true);
  dv.setUint16(OFF.height, f.height, true);
  dv.setUint32(OFF.seq, f.seq, true);
  dv.setFloat64(OFF.capture, f.captureMs, true);
  if (!t) return out.subarray(0, n);
  if (t.landmarks.length < P2 || t.rawLandmarks.length < P2)
    throw new TypeError('encodeExpression: a track needs 68 landmarks and 68 raw landmarks');
  dv.setUint8(OFF.confidence, q(t.confidence, 1 / 255, 0, 255, 'confidence'));
  dv.setUint8(OFF.reserved, 0);
  const b = t.box;
  [b.l, b.t, b.r, b.b].forEach((v, i) => dv.setInt16(OFF.box + 2 * i, q(v, 1, -32768, 32767, 'box'), true));
  for (let i = 0; i < P2; i++) {
    dv.setInt16(OFF.landmarks + 2 * i, q(t.landmarks[i]!, LANDMARK_STEP, -32768, 32767, 'landmarks'), true);
    dv.setInt16(OFF.raw + 2 * i, q(t.rawLandmarks[i]!, 1, -32768, 32767, 'rawLandmarks'), true);
  }
  const p = t.pose;
  [p.yaw, p.pitch, p.roll].forEach((v, i) =>
    dv.setInt16(OFF.angles + 2 * i, q(v, ANGLE_STEP, -32768, 32767, 'pose'), true),
  );
  [p.tx, p.ty, p.tz].forEach((v, i) => {
    if (!Number.isFinite(v)) throw new TypeError('encodeExpression: pose translation is not finite');
    dv.setFloat32(OFF.translation + 4 * i, Math.min(3e38, Math.max(-3e38, v)), true);
  });
  [t.eyes.left, t.eyes.right, t.mouth].forEach((v, i) =>
    dv.setUint16(OFF.openness + 2 * i, q(v, RATIO_STEP, 0, 65535, 'openness'), true),
  );
  [t.gaze.x, t.gaze.y].forEach((v, i) => dv.setInt16(OFF.gaze + 2 * i, q(v, RATIO_STEP, -32768, 32767, 'gaze'), true));
  [t.vergence?.x ?? 0, t.vergence?.y ?? 0].forEach((v, i) =>
    dv.setInt16(OFF.vergence + 2 * i, q(v, RATIO_STEP, -32768, 32767, 'vergence'), true),
  );
  return out.subarray(0, n);
}

function inFrame(x: number, y: number, w: number, h: number): boolean {
  return x >= -OUTSIDE * w && x <= (1 + OUTSIDE) * w && y >= -OUTSIDE * h && y <= (1 + OUTSIDE) * h;
}

/**
 * Decodes and validates one message into `out` (its buffers reused). Stateless: order and time checks are
 * ExpressionStream's. Returns null when accepted, else why not (then `out` holds garbage).
 */
export function decodeExpression(msg: Uint8Array, out: DecodedExpression): ExpressionRefusal | null {
  if (msg.length < HEADER_BYTES) return 'bad-length';
  const dv = new DataView(msg.buffer, msg.byteOffset, msg.length);
  if (dv.getUint8(OFF.version) !== EXPRESSION_WIRE_VERSION) return 'bad-version';
  const flags = dv.getUint8(OFF.flags);
  if ((flags & ~FLAG_FACE) !== 0) return 'bad-flags';
  const face = (flags & FLAG_FACE) !== 0;
  if (msg.length !== (face ? FACE_BYTES : HEADER_BYTES)) return 'bad-length';
  const w = dv.getUint16(OFF.width, true);
  const h = dv.getUint16(OFF.height, true);
  if (w < MIN_FRAME_SIDE || w > MAX_FRAME_SIDE || h < MIN_FRAME_SIDE || h > MAX_FRAME_SIDE) return 'bad-frame-size';
  const captureMs = dv.getFloat64(OFF.capture, true);
  if (!Number.isFinite(captureMs)) return 'not-finite';
  if (captureMs <= 0) return 'out-of-range';
  out.width = w;
  out.height = h;
  out.seq = dv.getUint32(OFF.seq, true);
  out.captureMs = captureMs;
  out.track = null;
  if (!face) return null;
  if (dv.getUint8(OFF.reserved) !== 0) return 'bad-flags';
  const t = out.face;
  t.confidence = dv.getUint8(OFF.confidence) / 255;
  const b = t.box;
  b.l = dv.getInt16(OFF.box, true);
  b.t = dv.getInt16(OFF.box + 2, true);
  b.r = dv.getInt16(OFF.box + 4, true);
  b.b = dv.getInt16(OFF.box + 6, true);
  if (b.l > b.r || b.t > b.b || !inFrame(b.l, b.t, w, h) || !inFrame(b.r, b.b, w, h)) return 'out-of-range';
  for (let i = 0; i < P2; i += 2) {
    const x = dv.getInt16(OFF.landmarks + 2 * i, true) * LANDMARK_STEP;
    const y = dv.getInt16(OFF.landmarks + 2 * i + 2, true) * LANDMARK_STEP;
    const rx = dv.getInt16(OFF.raw + 2 * i, true);
    const ry = dv.getInt16(OFF.raw + 2 * i + 2, true);
    if (!inFrame(x, y, w, h) || !inFrame(rx, ry, w, h)) return 'out-of-range';
    t.landmarks[i] = x;
    t.landmarks[i + 1] = y;
    t.rawLandmarks[i] = rx;
    t.rawLandmarks[i + 1] = ry;
  }
  const p = t.pose;
  p.yaw = dv.getInt16(OFF.angles, true) * ANGLE_STEP;
  p.pitch = dv.getInt16(OFF.angles + 2, true) * ANGLE_STEP;
  p.roll = dv.getInt16(OFF.angles + 4, true) * ANGLE_STEP;
  if (Math.abs(p.yaw) > 180 || Math.abs(p.pitch) > 180 || Math.abs(p.roll) > 180) return 'out-of-range';
  p.tx = dv.getFloat32(OFF.translation, true);
  p.ty = dv.getFloat32(OFF.translation + 4, true);
  p.tz = dv.getFloat32(OFF.translation + 8, true);
  if (!Number.isFinite(p.tx) || !Number.isFinite(p.ty) || !Number.isFinite(p.tz)) return 'not-finite';
  if (Math.max(Math.abs(p.tx), Math.abs(p.ty), Math.abs(p.tz)) > MAX_TRANSLATION) return 'out-of-range';
  t.eyes.left = dv.getUint16(OFF.openness, true) * RATIO_STEP;
  t.eyes.right = dv.getUint16(OFF.openness + 2, true) * RATIO_STEP;
  t.mouth = dv.getUint16(OFF.openness + 4, true) * RATIO_STEP;
  if (t.eyes.left > MAX_OPENNESS || t.eyes.right > MAX_OPENNESS || t.mouth > MAX_OPENNESS) return 'out-of-range';
  t.gaze.x = dv.getInt16(OFF.gaze, true) * RATIO_STEP;
  t.gaze.y = dv.getInt16(OFF.gaze + 2, true) * RATIO_STEP;
  if (Math.abs(t.gaze.x) > MAX_GAZE || Math.abs(t.gaze.y) > MAX_GAZE) return 'out-of-range';
  const vg = (t.vergence ??= { x: 0, y: 0 });
  vg.x = dv.getInt16(OFF.vergence, true) * RATIO_STEP;
  vg.y = dv.getInt16(OFF.vergence + 2, true) * RATIO_STEP;
  if (Math.abs(vg.x) > MAX_GAZE || Math.abs(vg.y) > MAX_GAZE) return 'out-of-range';
  out.track = t;
  return null;
}

export interface ExpressionStreamOptions {
  /**
   * How far a capture time may run ahead of the receiver's clock, ms; default 250. The two clocks are different
   * machines': the stream learns their offset from the fastest message so far, so a message counts as from the future
   * when it arrived this much faster than any before it (a sender clock that jumps, or a forged timestamp).
   */
  maxAheadMs?: number;
  /** Largest difference between the sender's and the receiver's wall clocks, ms; default 60_000. A capture time
   * further ahead of the receiver's clock than this is from the future even as the first message. */
  maxSkewMs?: number;
  /**
   * After this many refusals in a row for order or time (default 30: a second at 30 fps), the stream starts afresh
   * from the next message, so that one bad timestamp cannot stop a channel for good.
   */
  resyncAfter?: number;
}

/**
 * The receiving end of one channel: decodes, validates, and keeps the order. Sequence numbers and capture times must
 * increase (an unordered channel delivers a late message after a newer one: it is dropped, never rendered out of
 * order), and a capture time must not come from the future. Both clocks are wall clocks in ms (the sender's and the
 * receiver's `performance.timeOrigin + performance.now()`); an accepted message's capture time mapped onto the
 * receiver's clock is `out.localMs`, strictly increasing.
 */
export class ExpressionStream {
  readonly #maxAheadMs: number;
  readonly #maxSkewMs: number;
  readonly #resyncAfter: number;
  #lastSeq = -1;
  #lastCapture = -Infinity;
  #lastLocal = -Infinity;
  /** receiver clock − sender clock, the smallest seen (the fastest transit); NaN before the first message. */
  #offset = NaN;
  #refusedInRow = 0;

  constructor(opts: ExpressionStreamOptions = {}) {
    this.#maxAheadMs = opts.maxAheadMs ?? 250;
    this.#maxSkewMs = opts.maxSkewMs ?? 60_000;
    this.#resyncAfter = opts.resyncAfter ?? 30;
  }

  /** Receiver clock − sender clock as learnt so far (NaN before the first accepted message). */
  get offsetMs(): number {
    return this.#offset;
  }

  /** Decodes one message received at `nowMs` (the receiver's wall clock, ms) into `out`. Null when accepted. */
  accept(msg: Uint8Array, nowMs: number, out: DecodedStreamExpression): ExpressionRefusal | null {
    const refusal = decodeExpression(msg, out);
    if (refusal) return refusal;
    const timing = this.#check(out, nowMs);
    if (timing) {
      if (++this.#refusedInRow >= this.#resyncAfter) this.#resync();
      return timing;
    }
    this.#refusedInRow = 0;
    const transit = nowMs - out.captureMs;
    if (Number.isNaN(this.#offset) || transit < this.#offset) this.#offset = transit;
    this.#lastSeq = out.seq;
    this.#lastCapture = out.captureMs;
    // Strictly increasing even while the offset estimate still falls (the first messages).
    out.localMs = Math.max(out.captureMs + this.#offset, this.#lastLocal + 0.001);
    this.#lastLocal = out.localMs;
    return null;
  }

  #check(out: DecodedExpression, nowMs: number): ExpressionRefusal | null {
    if (out.captureMs > nowMs + this.#maxSkewMs) return 'future';
    if (out.seq <= this.#lastSeq || out.captureMs <= this.#lastCapture) return 'out-of-order';
    if (!Number.isNaN(this.#offset) && nowMs - out.captureMs < this.#offset - this.#maxAheadMs) return 'future';
    return null;
  }

  #resync(): void {
    this.#lastSeq = -1;
    this.#lastCapture = -Infinity;
    this.#offset = NaN;
    this.#refusedInRow = 0;
  }
}

/** A decode target for ExpressionStream: with the capture time on the receiver's clock. */
export interface DecodedStreamExpression extends DecodedExpression {
  /** The capture time mapped onto the receiver's clock (ms), strictly increasing; set when accepted. */
  localMs: number;
}

/** A decode target for ExpressionStream, its buffers allocated. */
export function createDecodedStreamExpression(): DecodedStreamExpression {
  return { ...createDecodedExpression(), localMs: 0 };
}
