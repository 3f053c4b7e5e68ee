/**
 * The latest-frame-wins mailbox between two threads: a triple buffer in one SharedArrayBuffer.
 *
 * Video must never queue: a driving frame that was not processed before the next one arrived is worthless, so the
 * newest replaces it and a drop is counted. Three slots make the hand-over lock-free: the writer owns one slot, the
 * reader owns one, and the third ("middle") is swapped with a single Atomics.exchange by either side. The writer
 * fills its slot and swaps it into the middle, marked fresh; if the middle it got back was still fresh, the reader
 * never saw that frame: a drop. The reader swaps its slot for the middle only when the middle is fresh. Neither side
 * waits for the other, and a slot is never written while it is read. (Two slots cannot do this without a lock.)
 *
 * The Atomics.exchange on the control word orders the plain writes of the slot's bytes and metadata before it with
 * the plain reads after the other side's exchange (the JS memory model's synchronizes-with), so the payload needs no
 * atomics of its own.
 *
 * Buffers are allocated once per capacity (frame size) and reused for every frame.
 */

const FRESH = 4;
const SLOTS = 3;
/** Float64 metadata words per slot. */
export const META_WORDS = 18;

/** Metadata word indices shared by the session and the worker. */
export const Meta = {
  seq: 0,
  width: 1,
  height: 2,
  bytes: 3,
  /** Main-thread performance.now() at ingest. */
  receivedAt: 4,
  /** Main-thread clock when the worker started rendering. */
  startedAt: 5,
  renderMs: 6,
  trackMs: 7,
  latentMs: 8,
  generateMs: 9,
  pasteMs: 10,
  face: 11,
  /** Output frames the main thread never took (cumulative, written by the worker). */
  outDropped: 12,
  /** The learned refiner's time, ms; -1 when it did not run. */
  refineMs: 13,
  /** Why the frame's face was not followed (FACE_ISSUES index + 1; 0: it was, or the engine does not say). */
  faceIssue: 14,
  /** What the input slot holds: 0 an I420 driving frame, 1 an expression message (private mode: expressionWire.ts). */
  kind: 15,
  /** Expression messages: the capture time on the main thread's performance.now() clock (the engine's timestamp). */
  capturedAt: 16,
} as const;

/** Meta.kind values. */
export const SlotKind = { frame: 0, expression: 1 } as const;

/** A frame handed over: a view on its slot (valid until this side swaps again) and its metadata. */
export interface ExchangeFrame {
  slot: number;
  data: Uint8Array;
  meta: Float64Array;
}

/**
 * One direction of frame hand-over. Create it on one side with `new FrameExchange(capacity)`, send `buffer` and
 * `capacity` to the other thread, which wraps the same memory with `new FrameExchange(capacity, buffer)`. Each side
 * uses only its role's methods: the writer `writable()` / `publish()`, the reader `take()`.
 */
export class FrameExchange {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  readonly #ctrl: Int32Array;
  readonly #meta: Float64Array[];
  readonly #data: Uint8Array[];
  #w = 0;
  #r = 2;
  #dropped = 0;

  constructor(capacity: number, buffer?: SharedArrayBuffer) {
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new TypeError('FrameExchange: capacity must be a positive integer');
    const metaBytes = SLOTS * META_WORDS * 8;
    const size = 8 + metaBytes + SLOTS * capacity;
    if (buffer && buffer.byteLength < size) throw new TypeError('FrameExchange: buffer too small for the capacity');
    this.buffer = buffer ?? new SharedArrayBuffer(size);
    this.capacity = capacity;
    this.#ctrl = new Int32Array(this.buffer, 0, 1);
    this.#meta = Array.from(
      { length: SLOTS },
      (_, i) => new Float64Array(this.buffer, 8 + i * META_WORDS * 8, META_WORDS),
    );
    this.#data = Array.from(
      { length: SLOTS },
      (_, i) => new Uint8Array(this.buffer, 8 + metaBytes + i * capacity, capacity),
    );
    if (!buffer) Atomics.store(this.#ctrl, 0, 1);
  }

  /** Writer: the slot to fill next (its whole capacity) and its metadata. */
  writable(): ExchangeFrame {
    return { slot: this.#w, data: this.#data[this.#w]!, meta: this.#meta[this.#w]! };
  }

  /** Writer: hands the filled slot over. Returns true when it replaced a frame the reader never took (a drop). */
  publish(): boolean {
    const prev = Atomics.exchange(this.#ctrl, 0, this.#w | FRESH);
    this.#w = prev & 3;
    const dropped = (prev & FRESH) !== 0;
    if (dropped) this.#dropped++;
    return dropped;
  }

  /** Writer: frames replaced before the reader took them, since creation. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Reader: whether a frame is waiting. */
  get pending(): boolean {
    return (Atomics.load(this.#ctrl, 0) & FRESH) !== 0;
  }

  /** Reader: takes the newest frame, or returns null when none is waiting. The view is valid until the next take. */
  take(): ExchangeFrame | null {
    if (!this.pending) return null;
    this.#r = Atomics.exchange(this.#ctrl, 0, this.#r) & 3;
    const meta = this.#meta[this.#r]!;
    return { slot: this.#r, data: this.#data[this.#r]!.subarray(0, meta[Meta.bytes]), meta };
  }
}
