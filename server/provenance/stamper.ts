/**
 * FrameStamper: what every synthesized frame goes through before it leaves the server (live: Publisher; offline:
 * `avatar render`): the visible mark first, then the invisible watermark over the whole frame (mark included).
 */
import type { I420Frame } from '../types/image.js';
import type { ProvenanceConfig } from './config.js';
import { VisibleMark } from './mark.js';
import { idHash, payloadHex, timeSlot, type WatermarkPayload } from './payload.js';
import { Watermarker } from './watermark.js';

export interface StamperOptions {
  config: ProvenanceConfig;
  /** The room id (live) or render id (offline); its 32-bit hash goes into the payload. */
  id: string;
  /**
   * The clock of the time slot, ms since the epoch; default Date.now. Live rooms read it per frame (the slot changes
   * every minute); an offline render passes a fixed time (its start) so that the whole file carries one payload.
   */
  now?: () => number;
}

export class FrameStamper {
  readonly #mark: VisibleMark | null;
  readonly #wm: Watermarker | null;
  readonly #id: number;
  readonly #now: () => number;

  constructor(opts: StamperOptions) {
    const c = opts.config;
    this.#mark = c.mark.enabled ? new VisibleMark({ corner: c.mark.corner, opacity: c.mark.opacity }) : null;
    this.#wm = c.watermark.enabled ? new Watermarker(c.watermark.strength) : null;
    this.#id = idHash(opts.id);
    this.#now = opts.now ?? Date.now;
  }

  /** Whether this stamper changes frames at all. */
  get active(): boolean {
    return this.#mark !== null || this.#wm !== null;
  }
  get watermarking(): boolean {
    return this.#wm !== null;
  }

  /** The payload a frame stamped now carries. */
  payload(): WatermarkPayload {
    return { id: this.#id, slot: timeSlot(this.#now()) };
  }
  payloadHex(): string {
    return payloadHex(this.payload());
  }

  /** Marks and watermarks the frame in place. */
  stamp(frame: I420Frame): void {
    this.#mark?.apply(frame);
    this.#wm?.apply(frame, this.payload());
  }
}
