/**
 * ExpressionSender: private mode's sending end. It takes each frame's tracked face from the browser's tracker,
 * encodes it (server/types/expressionWire.ts: quantised, 18 bytes without a face, 600 with one) and sends it on the
 * performer's expression channel (unordered, maxRetransmits 0). A frame is dropped, never queued, while the channel
 * still holds more than `maxBufferedBytes` (a congested link): the newest expression is the only one worth sending.
 *
 * No allocation per frame: one buffer per message size, reused (RTCDataChannel.send copies).
 */
import type { FaceTrack } from '../../server/vision/types.js';
import { encodeExpression, FACE_BYTES, HEADER_BYTES } from '../../server/types/expressionWire.js';

/** What the sender needs of an RTCDataChannel (the browser's, or wrtc's in tests). */
export interface ExpressionChannel {
  readonly readyState: string;
  readonly bufferedAmount: number;
  send(data: Uint8Array<ArrayBuffer>): void;
}

export interface ExpressionSenderOptions {
  /** Drop a frame while the channel holds more than this many bytes unsent; default 1200 (two face messages). */
  maxBufferedBytes?: number;
  /** The wall clock, ms (default performance.timeOrigin + performance.now()): capture times default to it. */
  now?: () => number;
}

export class ExpressionSender {
  readonly #channel: ExpressionChannel;
  readonly #maxBuffered: number;
  readonly #now: () => number;
  readonly #face = new Uint8Array(FACE_BYTES);
  readonly #none = new Uint8Array(HEADER_BYTES);
  #seq = 0;
  #lastCapture = 0;
  #sent = 0;
  #dropped = 0;

  constructor(channel: ExpressionChannel, opts: ExpressionSenderOptions = {}) {
    this.#channel = channel;
    this.#maxBuffered = opts.maxBufferedBytes ?? 2 * FACE_BYTES;
    this.#now = opts.now ?? ((): number => performance.timeOrigin + performance.now());
  }

  /** Messages sent. */
  get sent(): number {
    return this.#sent;
  }
  /** Frames dropped: the channel was not open or held too much. */
  get dropped(): number {
    return this.#dropped;
  }

  /**
   * Sends one frame's track (null: no face in the frame), tracked in a frame of `width` × `height` px and captured at
   * `captureMs` (wall clock, ms; default now). Capture times must increase (the server drops a message that does not
   * come after the last one): a time not after the last sent is moved just after it.
   * @returns whether it was sent (false: dropped).
   * @throws TypeError for a track with non-finite values or a frame size out of range (expressionWire.ts).
   */
  send(track: FaceTrack | null, width: number, height: number, captureMs: number = this.#now()): boolean {
    const ch = this.#channel;
    if (ch.readyState !== 'open' || ch.bufferedAmount > this.#maxBuffered) {
      this.#dropped++;
      return false;
    }
    const t = Math.max(captureMs, this.#lastCapture + 0.001);
    encodeExpression({ seq: this.#seq, captureMs: t, width, height, track }, track ? this.#face : this.#none);
    ch.send(track ? this.#face : this.#none);
    this.#seq = (this.#seq + 1) >>> 0;
    this.#lastCapture = t;
    this.#sent++;
    return true;
  }
}
