/**
 * Latest-frame-wins mailboxes. Video must never queue: a driving frame that was not processed before the next one
 * arrived is worthless, so the newest replaces it and a drop is counted. Both classes hold at most one pending item.
 */

/** A one-item mailbox over arbitrary values. */
export class LatestMailbox<T> {
  #item: T | undefined;
  #has = false;
  #dropped = 0;

  /** Puts `item`; returns the item it replaced (counted as dropped), if any. */
  put(item: T): T | undefined {
    const prev = this.#has ? this.#item : undefined;
    if (this.#has) this.#dropped++;
    this.#item = item;
    this.#has = true;
    return prev;
  }

  /** Takes the pending item, leaving the mailbox empty. */
  take(): T | undefined {
    if (!this.#has) return undefined;
    const item = this.#item;
    this.#item = undefined;
    this.#has = false;
    return item;
  }

  get pending(): boolean {
    return this.#has;
  }

  /** Items replaced before they were taken, since creation. */
  get dropped(): number {
    return this.#dropped;
  }

  clear(): void {
    this.#item = undefined;
    this.#has = false;
  }
}

/** Header layout of one slot in a {@link FrameSlots} buffer (Int32 words). */
const H_SEQ = 0;
const H_WIDTH = 1;
const H_HEIGHT = 2;
const H_BYTES = 3;
const HEADER_WORDS = 4;

/** The metadata of a frame written into a slot. */
export interface SlotFrame {
  seq: number;
  width: number;
  height: number;
  /** A view on the slot's bytes (shared memory): valid until the slot is written again. */
  data: Uint8Array;
}

/**
 * A fixed set of frame slots in one SharedArrayBuffer, shared by the main thread and the avatar worker.
 * Allocated once per frame size (capacity); frames are copied in with a sequence number that is stored last with
 * Atomics, so a reader that loads the sequence with Atomics sees the bytes that were written before it.
 */
export class FrameSlots {
  readonly buffer: SharedArrayBuffer;
  readonly slotCount: number;
  readonly capacity: number;
  readonly #header: Int32Array;
  readonly #bytes: Uint8Array;

  /** Creates slots, or wraps an existing buffer (the worker side). */
  constructor(slotCount: number, capacity: number, buffer?: SharedArrayBuffer) {
    if (!Number.isInteger(slotCount) || slotCount < 1) throw new TypeError('FrameSlots: slotCount must be >= 1');
    if (!Number.isInteger(capacity) || capacity < 1) throw new TypeError('FrameSlots: capacity must be >= 1');
    const headerBytes = slotCount * HEADER_WORDS * 4;
    const size = headerBytes + slotCount * capacity;
    if (buffer && buffer.byteLength < size) throw new TypeError('FrameSlots: buffer too small');
    this.buffer = buffer ?? new SharedArrayBuffer(size);
    this.slotCount = slotCount;
    this.capacity = capacity;
    this.#header = new Int32Array(this.buffer, 0, slotCount * HEADER_WORDS);
    this.#bytes = new Uint8Array(this.buffer, headerBytes, slotCount * capacity);
  }

  /** The writable bytes of a slot (for writers that render in place). */
  view(slot: number, bytes = this.capacity): Uint8Array {
    this.#check(slot);
    if (bytes > this.capacity) throw new RangeError('FrameSlots: frame larger than the slot');
    return this.#bytes.subarray(slot * this.capacity, slot * this.capacity + bytes);
  }

  /** Copies a frame into a slot and publishes its header. */
  write(slot: number, seq: number, width: number, height: number, data: Uint8Array): void {
    const dst = this.view(slot, data.length);
    dst.set(data);
    this.commit(slot, seq, width, height, data.length);
  }

  /** Publishes the header of a slot whose bytes were written through {@link view}. */
  commit(slot: number, seq: number, width: number, height: number, bytes: number): void {
    this.#check(slot);
    const h = slot * HEADER_WORDS;
    Atomics.store(this.#header, h + H_WIDTH, width);
    Atomics.store(this.#header, h + H_HEIGHT, height);
    Atomics.store(this.#header, h + H_BYTES, bytes);
    // The sequence number goes last: it is what readers check.
    Atomics.store(this.#header, h + H_SEQ, seq);
  }

  /** Reads a slot's frame (a view, no copy). */
  read(slot: number): SlotFrame {
    this.#check(slot);
    const h = slot * HEADER_WORDS;
    const seq = Atomics.load(this.#header, h + H_SEQ);
    const width = Atomics.load(this.#header, h + H_WIDTH);
    const height = Atomics.load(this.#header, h + H_HEIGHT);
    const bytes = Atomics.load(this.#header, h + H_BYTES);
    return { seq, width, height, data: this.#bytes.subarray(slot * this.capacity, slot * this.capacity + bytes) };
  }

  #check(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount)
      throw new RangeError(`FrameSlots: bad slot ${slot}`);
  }
}

/** Bytes of an I420 frame of this size (chroma planes rounded up). */
export function i420Bytes(width: number, height: number): number {
  return width * height + 2 * ((width + 1) >> 1) * ((height + 1) >> 1);
}
